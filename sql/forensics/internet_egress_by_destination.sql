-- Internet egress by destination address and port in a time range: what is sending where.
-- Parameters: from DateTime, to DateTime (UTC, [from, to)), limit UInt32.
SELECT
    remote_ip,
    remote_port,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received,
    groupUniqArray(10)(concat(local_namespace, '/', local_workload)) AS workloads,
    min(observed_at) AS first_seen,
    max(observed_at) AS last_seen
FROM flows
WHERE category = 'internet'
  AND observed_at >= {from:DateTime} AND observed_at < {to:DateTime}
GROUP BY remote_ip, remote_port
ORDER BY bytes_sent DESC
LIMIT {limit:UInt32};
