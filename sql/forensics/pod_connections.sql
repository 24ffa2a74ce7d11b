-- Every connection of one pod in a time range, newest first, from the raw records.
-- Parameters: namespace String, pod String, from DateTime, to DateTime (UTC, [from, to)).
SELECT
    observed_at,
    node,
    protocol,
    local_ip,
    local_port,
    remote_ip,
    remote_port,
    remote_kind,
    remote_namespace,
    remote_workload,
    remote_service,
    initiator,
    category,
    bytes_sent,
    bytes_received,
    ended,
    conntrack_id
FROM flows
WHERE local_namespace = {namespace:String}
  AND local_pod = {pod:String}
  AND observed_at >= {from:DateTime} AND observed_at < {to:DateTime}
ORDER BY observed_at DESC, bytes_sent + bytes_received DESC;
