-- What transfer costs. One row per (provider, region, category, direction): the price per GiB
-- (2^30 bytes) of bytes sent ('out') or received ('in') by a metered endpoint. Region '*' is the
-- provider's default, used where no row names the region. Edit prices by inserting rows: the
-- newest updated_at wins.
CREATE TABLE IF NOT EXISTS $db.prices$local$on_cluster
(
    provider LowCardinality(String),
    region LowCardinality(String),
    category LowCardinality(String),
    direction LowCardinality(String),
    price_per_gib Decimal(18, 9),
    currency LowCardinality(String),
    updated_at DateTime('UTC') DEFAULT now()
)
ENGINE = ${replicated}ReplacingMergeTree(updated_at)
ORDER BY (provider, region, category, direction);

-- Which provider each cluster runs on, to pick its prices. Edit like prices.
CREATE TABLE IF NOT EXISTS $db.clusters$local$on_cluster
(
    cluster LowCardinality(String),
    provider LowCardinality(String),
    updated_at DateTime('UTC') DEFAULT now()
)
ENGINE = ${replicated}ReplacingMergeTree(updated_at)
ORDER BY cluster;

-- Sharded by key, so rows that replace each other meet on one shard; reads gather every shard.
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.prices$on_cluster AS $db.prices_local
ENGINE = Distributed('$cluster', '$db', 'prices_local', cityHash64(provider, region, category, direction));

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.clusters$on_cluster AS $db.clusters_local
ENGINE = Distributed('$cluster', '$db', 'clusters_local', cityHash64(cluster));

-- Shipped defaults: public list prices in USD for the common case (first volume tier,
-- intra-continent). Same-zone transfer is free everywhere. Cross-zone: AWS bills both the
-- sender and the receiver; GCP bills egress; Azure does not bill it. Cross-region and
-- internet: billed on egress. Cloud services reached in-region (object storage through a
-- gateway endpoint): free. Rows already present are left alone, so re-running keeps edits.
INSERT INTO $db.prices (provider, region, category, direction, price_per_gib, currency, updated_at)
SELECT provider, '*', category, direction, toDecimal64(price, 9), 'USD', toDateTime('2026-01-01 00:00:00', 'UTC')
FROM values('provider String, category String, direction String, price Float64',
    ('aws',   'same_zone',     'out', 0.00), ('aws',   'same_zone',     'in', 0.00),
    ('aws',   'cross_zone',    'out', 0.01), ('aws',   'cross_zone',    'in', 0.01),
    ('aws',   'cross_region',  'out', 0.02), ('aws',   'cross_region',  'in', 0.00),
    ('aws',   'internet',      'out', 0.09), ('aws',   'internet',      'in', 0.00),
    ('aws',   'cloud_service', 'out', 0.00), ('aws',   'cloud_service', 'in', 0.00),
    ('gcp',   'same_zone',     'out', 0.00), ('gcp',   'same_zone',     'in', 0.00),
    ('gcp',   'cross_zone',    'out', 0.01), ('gcp',   'cross_zone',    'in', 0.00),
    ('gcp',   'cross_region',  'out', 0.02), ('gcp',   'cross_region',  'in', 0.00),
    ('gcp',   'internet',      'out', 0.12), ('gcp',   'internet',      'in', 0.00),
    ('gcp',   'cloud_service', 'out', 0.00), ('gcp',   'cloud_service', 'in', 0.00),
    ('azure', 'same_zone',     'out', 0.00), ('azure', 'same_zone',     'in', 0.00),
    ('azure', 'cross_zone',    'out', 0.00), ('azure', 'cross_zone',    'in', 0.00),
    ('azure', 'cross_region',  'out', 0.02), ('azure', 'cross_region',  'in', 0.00),
    ('azure', 'internet',      'out', 0.087), ('azure', 'internet',     'in', 0.00),
    ('azure', 'cloud_service', 'out', 0.00), ('azure', 'cloud_service', 'in', 0.00))
WHERE (provider, '*', category, direction) NOT IN
    (SELECT provider, region, category, direction FROM $db.prices);
