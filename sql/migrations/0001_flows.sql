-- The raw flow records: one row per local endpoint, connection and interval.
-- Columns follow the schema crate's flow record (tollgate-schema, flow.rs) exactly; a test
-- holds this table's DESCRIBE against it on real ClickHouse.
--
-- Sorted for the forensics queries: a pod's connections and a team's traffic read a narrow
-- key range, time ranges prune daily partitions, and bloom filters find an IP in any range.
CREATE TABLE IF NOT EXISTS $db.flows$local$on_cluster
(
    observed_at DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    interval_seconds UInt32 CODEC(T64, ZSTD(1)),
    cluster LowCardinality(String),
    node LowCardinality(String),
    family LowCardinality(String),
    protocol LowCardinality(String),
    local_ip IPv6 CODEC(ZSTD(1)),
    local_port UInt16 CODEC(T64, ZSTD(1)),
    local_pod LowCardinality(String),
    local_namespace LowCardinality(String),
    local_workload_kind LowCardinality(String),
    local_workload LowCardinality(String),
    local_team LowCardinality(String),
    local_zone LowCardinality(String),
    local_region LowCardinality(String),
    remote_ip IPv6 CODEC(ZSTD(1)),
    remote_port UInt16 CODEC(T64, ZSTD(1)),
    remote_kind LowCardinality(String),
    remote_pod LowCardinality(String),
    remote_namespace LowCardinality(String),
    remote_workload_kind LowCardinality(String),
    remote_workload LowCardinality(String),
    remote_team LowCardinality(String),
    remote_node LowCardinality(String),
    remote_zone LowCardinality(String),
    remote_region LowCardinality(String),
    remote_cloud_provider LowCardinality(String),
    remote_cloud_service LowCardinality(String),
    remote_service LowCardinality(String),
    initiator LowCardinality(String),
    bytes_sent UInt64 CODEC(T64, ZSTD(1)),
    bytes_received UInt64 CODEC(T64, ZSTD(1)),
    packets_sent UInt64 CODEC(T64, ZSTD(1)),
    packets_received UInt64 CODEC(T64, ZSTD(1)),
    category LowCardinality(String),
    ended Bool,
    conntrack_id UInt32 CODEC(ZSTD(1)),
    INDEX remote_ip_bloom remote_ip TYPE bloom_filter GRANULARITY 4,
    INDEX local_ip_bloom local_ip TYPE bloom_filter GRANULARITY 4
)
ENGINE = ${replicated}MergeTree
PARTITION BY toDate(observed_at)
ORDER BY (cluster, local_namespace, local_workload, local_pod, observed_at)
TTL observed_at + INTERVAL $raw_ttl_days DAY
-- The sink tags every batch with an insert_deduplication_token: a retried batch is dropped.
SETTINGS non_replicated_deduplication_window = 10000;

-- Sharded by node: an agent's batch holds its own node's records only, so it lands whole on one
-- shard, where a retry meets its deduplication token (rand() would split a retry differently).
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.flows$on_cluster AS $db.flows_local
ENGINE = Distributed('$cluster', '$db', 'flows_local', cityHash64(node));
