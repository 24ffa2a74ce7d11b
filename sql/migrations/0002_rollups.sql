-- Rollups at workload granularity, each with its own retention. flows_1m is fed from the raw
-- table, flows_1h from flows_1m and flows_1d from flows_1h, by materialized views; each level
-- is a SummingMergeTree, so rows with the same key add up as parts merge. Always read them
-- with sum() and GROUP BY: unmerged parts may hold several rows for one key.
CREATE TABLE IF NOT EXISTS $db.flows_1m$local$on_cluster
(
    period DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    cluster LowCardinality(String),
    local_namespace LowCardinality(String),
    local_workload_kind LowCardinality(String),
    local_workload LowCardinality(String),
    local_team LowCardinality(String),
    local_zone LowCardinality(String),
    local_region LowCardinality(String),
    remote_kind LowCardinality(String),
    remote_namespace LowCardinality(String),
    remote_workload_kind LowCardinality(String),
    remote_workload LowCardinality(String),
    remote_team LowCardinality(String),
    remote_zone LowCardinality(String),
    remote_region LowCardinality(String),
    remote_cloud_provider LowCardinality(String),
    remote_cloud_service LowCardinality(String),
    category LowCardinality(String),
    bytes_sent UInt64 CODEC(T64, ZSTD(1)),
    bytes_received UInt64 CODEC(T64, ZSTD(1)),
    packets_sent UInt64 CODEC(T64, ZSTD(1)),
    packets_received UInt64 CODEC(T64, ZSTD(1)),
    records UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = ${replicated}SummingMergeTree
PARTITION BY toDate(period)
ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
          local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
          remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service)
TTL period + INTERVAL $ttl_1m_days DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.flows_1h$local$on_cluster AS $db.flows_1m$local
ENGINE = ${replicated}SummingMergeTree
PARTITION BY toYYYYMM(period)
ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
          local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
          remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service)
TTL period + INTERVAL $ttl_1h_days DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.flows_1d$local$on_cluster AS $db.flows_1m$local
ENGINE = ${replicated}SummingMergeTree
PARTITION BY toYear(period)
ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
          local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
          remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service)
TTL period + INTERVAL $ttl_1d_days DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1m_mv$on_cluster TO $db.flows_1m$local AS
SELECT
    toStartOfMinute(observed_at) AS period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
    category,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent,
    sum(packets_received) AS packets_received,
    count() AS records
FROM $db.flows$local
GROUP BY ALL;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1h_mv$on_cluster TO $db.flows_1h$local AS
SELECT
    toStartOfHour(period) AS period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
    category,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent,
    sum(packets_received) AS packets_received,
    sum(records) AS records
FROM $db.flows_1m$local
GROUP BY ALL;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1d_mv$on_cluster TO $db.flows_1d$local AS
SELECT
    toStartOfDay(period) AS period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
    category,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent,
    sum(packets_received) AS packets_received,
    sum(records) AS records
FROM $db.flows_1h$local
GROUP BY ALL;

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.flows_1m$on_cluster AS $db.flows_1m_local
ENGINE = Distributed('$cluster', '$db', 'flows_1m_local', rand());

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.flows_1h$on_cluster AS $db.flows_1h_local
ENGINE = Distributed('$cluster', '$db', 'flows_1h_local', rand());

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.flows_1d$on_cluster AS $db.flows_1d_local
ENGINE = Distributed('$cluster', '$db', 'flows_1d_local', rand());
