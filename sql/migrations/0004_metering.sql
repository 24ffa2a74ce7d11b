-- Metering: bytes and cost per day, cluster, team, namespace, workload, category and direction.
--
-- Each record describes one local endpoint. Its bytes_sent are that endpoint's egress
-- (direction 'out'), its bytes_received its ingress ('in'). Every endpoint lives on exactly one
-- node and only that node records it, so each byte moved between two metered endpoints appears
-- exactly once as 'out' (in its sender's record) and once as 'in' (in its receiver's record).
-- Prices are per direction, so a provider that bills both sides of a cross-zone transfer (AWS)
-- charges the sender and the receiver, and one that bills egress only charges the sender.
-- See docs/metering.md.
CREATE VIEW IF NOT EXISTS $db.metering_daily$on_cluster AS
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
    sum(bytes) AS bytes
FROM $db.flows_1d
ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS bytes
GROUP BY ALL;

-- Prices as of now: the newest row per key.
CREATE VIEW IF NOT EXISTS $db.current_prices$on_cluster AS
SELECT
    provider, region, category, direction,
    argMax(price_per_gib, updated_at) AS price_per_gib,
    argMax(currency, updated_at) AS currency
FROM $db.prices
GROUP BY provider, region, category, direction;

CREATE VIEW IF NOT EXISTS $db.current_clusters$on_cluster AS
SELECT cluster, argMax(provider, updated_at) AS provider
FROM $db.clusters
GROUP BY cluster;

-- Metering priced: the region's price where one is set, else the provider's default ('*').
-- cost = bytes / 2^30 * price_per_gib, exact in Decimal(38, 12); rounding is the reader's choice.
CREATE VIEW IF NOT EXISTS $db.cost_daily$on_cluster AS
SELECT
    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
    m.category AS category, m.direction AS direction, m.bytes AS bytes,
    c.provider AS provider,
    if(exact.currency != '', exact.price_per_gib, fallback.price_per_gib) AS price_per_gib,
    if(exact.currency != '', exact.currency, fallback.currency) AS currency,
    toDecimal128(m.bytes, 12) * toDecimal128(price_per_gib, 12) / toDecimal128(1073741824, 0) AS cost
FROM $db.metering_daily AS m
LEFT JOIN $db.current_clusters AS c ON c.cluster = m.cluster
LEFT JOIN $db.current_prices AS exact
    ON exact.provider = c.provider AND exact.region = m.region
    AND exact.category = m.category AND exact.direction = m.direction
LEFT JOIN $db.current_prices AS fallback
    ON fallback.provider = c.provider AND fallback.region = '*'
    AND fallback.category = m.category AND fallback.direction = m.direction;
