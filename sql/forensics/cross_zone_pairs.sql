-- Cross-zone workload pairs in a time range: who sends to whom across zones, and how much.
-- Each pair's bytes are those its local side sent (the egress it is billed for); the reverse
-- direction appears as the pair with the sides swapped.
-- Parameters: from DateTime, to DateTime (UTC, [from, to)), limit UInt32.
SELECT
    cluster,
    concat(local_namespace, '/', local_workload) AS source,
    local_zone AS source_zone,
    concat(remote_namespace, '/', remote_workload) AS destination,
    remote_zone AS destination_zone,
    sum(bytes_sent) AS bytes
FROM flows_1h
WHERE category = 'cross_zone'
  AND period >= toStartOfHour({from:DateTime}) AND period < {to:DateTime}
GROUP BY cluster, source, source_zone, destination, destination_zone
HAVING bytes > 0
ORDER BY bytes DESC
LIMIT {limit:UInt32};
