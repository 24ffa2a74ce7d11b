-- Batches that reached every table, so that a sink which lost an acknowledgement (a timeout, a
-- restart, an outage) can ask before it sends a batch again. ClickHouse's own deduplication
-- remembers the last non_replicated_deduplication_window blocks of a table, which a fleet
-- fills in minutes (1,000 agents inserting every 10 s write 10,000 blocks in 100 s); this
-- remembers every batch for as long as raw records are kept. See docs/clickhouse.md.
--
-- One row per batch and shard, written by a materialized view on the last table of the rollup
-- chain (raw -> 1m -> 1h -> 1d): a row exists only once the batch is in the raw table and in
-- every rollup. records counts the batch's raw records on that shard.
CREATE TABLE IF NOT EXISTS $db.delivered_batches$local$on_cluster
(
    token String,
    records UInt64,
    delivered_at DateTime('UTC') DEFAULT now()
)
ENGINE = ${replicated}MergeTree
ORDER BY token
TTL delivered_at + INTERVAL $raw_ttl_days DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.delivered_batches_mv$on_cluster TO $db.delivered_batches$local AS
SELECT
    getSetting('insert_deduplication_token') AS token,
    sum(records) AS records,
    now() AS delivered_at
FROM $db.flows_1d$local
WHERE token != ''
GROUP BY token;

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.delivered_batches$on_cluster AS $db.delivered_batches_local
ENGINE = Distributed('$cluster', '$db', 'delivered_batches_local');
