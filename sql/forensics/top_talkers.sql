-- Top talkers: the workloads that moved the most bytes in a time range, split by category.
-- Parameters: from DateTime, to DateTime (UTC, half-open [from, to)), limit UInt32.
-- Example: clickhouse-client --database tollgate --param_from '2026-11-22 02:00:00' \
--          --param_to '2026-11-22 04:00:00' --param_limit 20 --queries-file top_talkers.sql
SELECT
    cluster,
    local_namespace AS namespace,
    local_workload_kind AS workload_kind,
    local_workload AS workload,
    local_team AS team,
    sum(bytes_sent) AS sent,
    sum(bytes_received) AS received,
    sumIf(bytes_sent, category = 'cross_zone') AS cross_zone_sent,
    sumIf(bytes_sent, category = 'cross_region') AS cross_region_sent,
    sumIf(bytes_sent, category = 'internet') AS internet_sent
FROM flows_1m
WHERE period >= {from:DateTime} AND period < {to:DateTime}
GROUP BY cluster, namespace, workload_kind, workload, team
ORDER BY sent + received DESC
LIMIT {limit:UInt32};
