-- External destinations (internet and cloud services) first seen in the last N days, with who
-- talked to them. "First seen" looks back over everything the raw table keeps.
-- Parameters: days UInt32 (1 = the last day).
SELECT
    remote_ip,
    any(remote_kind) AS kind,
    any(remote_cloud_provider) AS cloud_provider,
    any(remote_cloud_service) AS cloud_service,
    min(observed_at) AS first_seen,
    groupUniqArray(10)(concat(local_namespace, '/', local_workload)) AS workloads,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received
FROM flows
WHERE remote_kind IN ('internet', 'cloud_service')
GROUP BY remote_ip
HAVING first_seen >= now() - toIntervalDay({days:UInt32})
ORDER BY first_seen DESC;
