-- Every batch leaves evidence of itself in the same part as its rows, in every table it
-- reaches, so that a batch whose fate is unknown (a write failed, or the process restarted) is
-- completed exactly: what is stored is found, what is missing is added, whatever ClickHouse's
-- deduplication log says. (A non-replicated MergeTree logs a block's id before the part is in
-- place: a server killed between the two drops the batch's resend as a duplicate of a part that
-- never appeared. See docs/clickhouse.md, "Exactly once".)
--
-- Tokens of this tollgate are `<origin>-m<run id>-<seq>`, and a run sends its batches in order,
-- one at a time.
--
-- * The raw table: each row keeps a hash of its batch's token (`batch`, filled by ClickHouse).
--   Rows stored before this migration read a hash of the reading query's own token.
-- * Each rollup: every insert adds one marker row per partition it touches: the dimensions of
--   its first row in key order (so a run's markers merge while that row recurs), all sums 0,
--   `batch_run` = a hash of the run, `seq_max` = seq + 1 and `batches` = 1 (so
--   SummingMergeTree keeps it). Merges keep one marker per run and key, with
--   the largest `seq_max`: the batch is in a partition when its run's markers there reach
--   seq + 1. Sums, and the dimensions a reader sees, are unchanged.
-- * `flows_repair` takes a batch's rows again under the token `<token>#repair` and stores
--   nothing itself: its views add the batch to each table, per shard and partition, only where
--   that table lacks it. The chain views ignore `#repair` inserts.

ALTER TABLE $db.flows$local$on_cluster
    ADD COLUMN IF NOT EXISTS batch UInt64 DEFAULT cityHash64(getSetting('insert_deduplication_token')) CODEC(ZSTD(1)),
    ADD INDEX IF NOT EXISTS batch_bloom batch TYPE bloom_filter GRANULARITY 1;

ALTER TABLE $db.flows_1m$local$on_cluster
    ADD COLUMN IF NOT EXISTS batch_run UInt64,
    ADD COLUMN IF NOT EXISTS seq_max SimpleAggregateFunction(max, UInt64) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS batches UInt64 DEFAULT 0,
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run);

ALTER TABLE $db.flows_1h$local$on_cluster
    ADD COLUMN IF NOT EXISTS batch_run UInt64,
    ADD COLUMN IF NOT EXISTS seq_max SimpleAggregateFunction(max, UInt64) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS batches UInt64 DEFAULT 0,
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run);

ALTER TABLE $db.flows_1d$local$on_cluster
    ADD COLUMN IF NOT EXISTS batch_run UInt64,
    ADD COLUMN IF NOT EXISTS seq_max SimpleAggregateFunction(max, UInt64) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS batches UInt64 DEFAULT 0,
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run);

ALTER TABLE $db.flows_1m_mv$on_cluster MODIFY QUERY
WITH
    getSetting('insert_deduplication_token') AS token,
    match(token, '-m[0-9a-f]{16}-[0-9]+\\z') AS marked,
    splitByChar('-', token) AS parts
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, cityHash64(arrayStringConcat(arrayPopBack(parts), '-')), 0) AS batch_run,
    if(mark, toUInt64OrZero(parts[-1]) + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toDate(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
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
        WHERE NOT endsWith(token, '#repair')
        GROUP BY ALL
    )
)
ARRAY JOIN if(marked AND first_in_partition, [0, 1], [0]) AS mark;

ALTER TABLE $db.flows_1h_mv$on_cluster MODIFY QUERY
WITH
    getSetting('insert_deduplication_token') AS token,
    match(token, '-m[0-9a-f]{16}-[0-9]+\\z') AS marked,
    splitByChar('-', token) AS parts
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, cityHash64(arrayStringConcat(arrayPopBack(parts), '-')), 0) AS batch_run,
    if(mark, toUInt64OrZero(parts[-1]) + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toYYYYMM(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
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
        WHERE NOT endsWith(token, '#repair') AND batch_run = 0
        GROUP BY ALL
    )
)
ARRAY JOIN if(marked AND first_in_partition, [0, 1], [0]) AS mark;

ALTER TABLE $db.flows_1d_mv$on_cluster MODIFY QUERY
WITH
    getSetting('insert_deduplication_token') AS token,
    match(token, '-m[0-9a-f]{16}-[0-9]+\\z') AS marked,
    splitByChar('-', token) AS parts
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, cityHash64(arrayStringConcat(arrayPopBack(parts), '-')), 0) AS batch_run,
    if(mark, toUInt64OrZero(parts[-1]) + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toYear(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
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
        WHERE NOT endsWith(token, '#repair') AND batch_run = 0
        GROUP BY ALL
    )
)
ARRAY JOIN if(marked AND first_in_partition, [0, 1], [0]) AS mark;

ALTER TABLE $db.delivered_batches_mv$on_cluster MODIFY QUERY
SELECT
    getSetting('insert_deduplication_token') AS token,
    sum(records) AS records,
    now() AS delivered_at
FROM $db.flows_1d$local
WHERE token != '' AND NOT endsWith(token, '#repair') AND batch_run = 0
GROUP BY token;

CREATE TABLE IF NOT EXISTS $db.flows_repair$local$on_cluster AS $db.flows$local
ENGINE = Null;

-- Routed as `flows` is, so each shard receives exactly its own rows of the batch.
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.flows_repair$on_cluster AS $db.flows_repair_local
ENGINE = Distributed('$cluster', '$db', 'flows_repair_local', cityHash64(node));

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_repair_raw_mv$on_cluster TO $db.flows$local AS
WITH cityHash64(replaceOne(getSetting('insert_deduplication_token'), '#repair', '')) AS batch_hash
SELECT
    observed_at, interval_seconds, cluster, node, family, protocol, local_ip, local_port,
    local_pod, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, remote_ip, remote_port, remote_kind, remote_pod, remote_namespace,
    remote_workload_kind, remote_workload, remote_team, remote_node, remote_zone, remote_region,
    remote_cloud_provider, remote_cloud_service, remote_service, initiator, bytes_sent,
    bytes_received, packets_sent, packets_received, category, ended, conntrack_id,
    batch_hash AS batch
FROM $db.flows_repair$local
WHERE toDate(observed_at) NOT IN
    (SELECT DISTINCT toDate(observed_at) FROM $db.flows$local WHERE batch = batch_hash);

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1m_repair_mv$on_cluster TO $db.flows_1m$local AS
WITH
    replaceOne(getSetting('insert_deduplication_token'), '#repair', '') AS token,
    splitByChar('-', token) AS parts,
    cityHash64(arrayStringConcat(arrayPopBack(parts), '-')) AS run,
    toUInt64OrZero(parts[-1]) AS seq
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, run, 0) AS batch_run,
    if(mark, seq + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toDate(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
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
        FROM $db.flows_repair$local
        WHERE toDate(observed_at) NOT IN
            (SELECT toDate(period) AS stored FROM $db.flows_1m$local WHERE batch_run = run
             GROUP BY stored HAVING max(seq_max) > seq)
        GROUP BY ALL
    )
)
ARRAY JOIN if(first_in_partition, [0, 1], [0]) AS mark;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1h_repair_mv$on_cluster TO $db.flows_1h$local AS
WITH
    replaceOne(getSetting('insert_deduplication_token'), '#repair', '') AS token,
    splitByChar('-', token) AS parts,
    cityHash64(arrayStringConcat(arrayPopBack(parts), '-')) AS run,
    toUInt64OrZero(parts[-1]) AS seq
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, run, 0) AS batch_run,
    if(mark, seq + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toYYYYMM(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfHour(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category,
            sum(bytes_sent) AS bytes_sent,
            sum(bytes_received) AS bytes_received,
            sum(packets_sent) AS packets_sent,
            sum(packets_received) AS packets_received,
            count() AS records
        FROM $db.flows_repair$local
        WHERE toYYYYMM(observed_at) NOT IN
            (SELECT toYYYYMM(period) AS stored FROM $db.flows_1h$local WHERE batch_run = run
             GROUP BY stored HAVING max(seq_max) > seq)
        GROUP BY ALL
    )
)
ARRAY JOIN if(first_in_partition, [0, 1], [0]) AS mark;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.flows_1d_repair_mv$on_cluster TO $db.flows_1d$local AS
WITH
    replaceOne(getSetting('insert_deduplication_token'), '#repair', '') AS token,
    splitByChar('-', token) AS parts,
    cityHash64(arrayStringConcat(arrayPopBack(parts), '-')) AS run,
    toUInt64OrZero(parts[-1]) AS seq
SELECT
    period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
        local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
        remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
        category,
    if(mark, 0, bytes_sent) AS bytes_sent,
    if(mark, 0, bytes_received) AS bytes_received,
    if(mark, 0, packets_sent) AS packets_sent,
    if(mark, 0, packets_received) AS packets_received,
    if(mark, 0, records) AS records,
    if(mark, run, 0) AS batch_run,
    if(mark, seq + 1, 0) AS seq_max,
    toUInt64(mark) AS batches
FROM
(
    SELECT
        *,
        row_number() OVER (PARTITION BY toYear(period) ORDER BY
            cluster, period, local_team, local_namespace, local_workload_kind,
            local_workload, local_zone, local_region, category, remote_kind,
            remote_namespace, remote_workload_kind, remote_workload, remote_team,
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfDay(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category,
            sum(bytes_sent) AS bytes_sent,
            sum(bytes_received) AS bytes_received,
            sum(packets_sent) AS packets_sent,
            sum(packets_received) AS packets_received,
            count() AS records
        FROM $db.flows_repair$local
        WHERE toYear(observed_at) NOT IN
            (SELECT toYear(period) AS stored FROM $db.flows_1d$local WHERE batch_run = run
             GROUP BY stored HAVING max(seq_max) > seq)
        GROUP BY ALL
    )
)
ARRAY JOIN if(first_in_partition, [0, 1], [0]) AS mark;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.delivered_batches_repair_mv$on_cluster TO $db.delivered_batches$local AS
WITH replaceOne(getSetting('insert_deduplication_token'), '#repair', '') AS batch_token
SELECT
    batch_token AS token,
    count() AS records,
    now() AS delivered_at
FROM $db.flows_repair$local
WHERE (SELECT count() FROM $db.delivered_batches$local WHERE token = batch_token) = 0
GROUP BY token;
