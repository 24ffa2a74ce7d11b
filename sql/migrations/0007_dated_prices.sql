-- Dated prices. Every price applies from its valid_from day (UTC) until a newer one for the same
-- key; a day is priced by the prices in force on it, so a later edit never reprices a past month.
-- Nothing merges history away (plain MergeTree). Edit prices by inserting rows: without
-- valid_from a row applies from today; a row with an earlier valid_from corrects the past on
-- purpose. For the same key and valid_from the newest inserted_at wins.
--
-- remote_region prices a pair of regions (cross-region transfer from region to remote_region);
-- '*' in region or remote_region matches any. The most specific row applies: one naming the
-- region beats '*', then one naming the remote region beats '*', then the latest valid_from.
CREATE TABLE IF NOT EXISTS $db.price_list$local$on_cluster
(
    provider LowCardinality(String),
    region LowCardinality(String),
    remote_region LowCardinality(String) DEFAULT '*',
    category LowCardinality(String),
    direction LowCardinality(String),
    valid_from Date DEFAULT toDate(now(), 'UTC'),
    price_per_gib Decimal(18, 9),
    currency LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ${replicated}MergeTree
ORDER BY (provider, region, remote_region, category, direction, valid_from);
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.price_list$on_cluster AS $db.price_list_local
ENGINE = Distributed('$cluster', '$db', 'price_list_local', cityHash64(provider, region, remote_region, category, direction));
-- Rows inserted into the earlier, undated prices table (the way documented before) become prices
-- from the day they were inserted, so they too leave past months alone.
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.price_list_from_prices_mv$on_cluster TO $db.price_list$local AS
SELECT
    provider, region, '*' AS remote_region, category, direction,
    toDate(updated_at, 'UTC') AS valid_from, price_per_gib, currency,
    toDateTime64(updated_at, 3, 'UTC') AS inserted_at
FROM $db.prices$local;
-- The prices in force when this migration runs apply to every earlier day, as they did before:
-- upgrading changes no export. Keys already copied are left alone (a re-run copies nothing).
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, price_per_gib, currency, inserted_at)
SELECT provider, region, '*', category, direction, toDate('1970-01-01'),
    argMax(price_per_gib, updated_at), argMax(currency, updated_at), toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM $db.prices
WHERE (provider, region, category, direction) NOT IN
    (SELECT provider, region, category, direction FROM $db.price_list
     WHERE remote_region = '*' AND valid_from = toDate('1970-01-01'))
GROUP BY provider, region, category, direction;
-- One row per key and valid_from: the newest insert.
CREATE VIEW IF NOT EXISTS $db.price_versions$on_cluster AS
SELECT
    provider, region, remote_region, category, direction, valid_from,
    argMax(price_per_gib, inserted_at) AS price_per_gib,
    argMax(currency, inserted_at) AS currency
FROM $db.price_list
GROUP BY provider, region, remote_region, category, direction, valid_from;
-- The prices in force today (UTC).
CREATE OR REPLACE VIEW $db.current_prices$on_cluster AS
SELECT
    provider, region, category, direction,
    argMax(price_per_gib, valid_from) AS price_per_gib,
    argMax(currency, valid_from) AS currency,
    remote_region
FROM $db.price_versions
WHERE valid_from <= toDate(now(), 'UTC')
GROUP BY provider, region, remote_region, category, direction;
-- Metering as in 0004, with the remote region (region pairs are priced by it).
CREATE OR REPLACE VIEW $db.metering_daily$on_cluster AS
SELECT
    toDate(period) AS day,
    cluster,
    local_team AS team,
    local_namespace AS namespace,
    local_workload_kind AS workload_kind,
    local_workload AS workload,
    local_region AS region,
    category,
    direction,
    sum(bytes) AS bytes,
    remote_region
FROM $db.flows_1d
ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS bytes
GROUP BY ALL;
-- Metering priced by the prices in force on each day (the rule above). cost = bytes / 2^30 *
-- price_per_gib, exact: Decimal(76, 39) holds bytes x price x 10^39 / 2^30 without rounding
-- for any UInt64 bytes at any Decimal(18, 9) price; its sums stay exact up to 10^37.
-- A row nothing prices (a cluster without a provider, a category without a price) has a NULL
-- price and cost and says why in unpriced_reason; unpriced_daily lists them.
CREATE OR REPLACE VIEW $db.cost_daily$on_cluster AS
SELECT
    day, cluster, team, namespace, workload_kind, workload, region, category, direction, bytes,
    provider,
    countIf(applies) > 0 AS priced,
    if(priced, argMaxIf(candidate_price, precedence, applies), NULL) AS price_per_gib,
    if(priced, argMaxIf(candidate_currency, precedence, applies), '') AS currency,
    if(priced, toDecimal256(bytes, 30) * price_per_gib / toDecimal256(1073741824, 0), NULL) AS cost,
    remote_region,
    multiIf(priced, '',
        provider = '', concat('cluster ', cluster, ' has no provider'),
        concat('no price for provider ', provider, ', category ', category, ', direction ', direction))
        AS unpriced_reason
FROM
(
    SELECT
        m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
        m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
        m.category AS category, m.direction AS direction, m.bytes AS bytes,
        m.remote_region AS remote_region, c.provider AS provider,
        p.provider != '' AND (p.region = m.region OR p.region = '*')
            AND (p.remote_region = m.remote_region OR p.remote_region = '*')
            AND p.valid_from <= m.day AS applies,
        (p.region != '*', p.remote_region != '*', p.valid_from) AS precedence,
        p.price_per_gib AS candidate_price,
        p.currency AS candidate_currency
    FROM $db.metering_daily AS m
    LEFT JOIN $db.current_clusters AS c ON c.cluster = m.cluster
    LEFT JOIN $db.price_versions AS p
        ON p.provider = c.provider AND p.category = m.category AND p.direction = m.direction
)
GROUP BY day, cluster, team, namespace, workload_kind, workload, region, category, direction, bytes,
    remote_region, provider;
-- Bytes that have no price, and why: never priced 0 in silence.
CREATE VIEW IF NOT EXISTS $db.unpriced_daily$on_cluster AS
SELECT
    day, cluster, team, namespace, workload_kind, workload, region, remote_region, category,
    direction, bytes, provider, unpriced_reason AS reason
FROM $db.cost_daily
WHERE NOT priced AND bytes > 0;
