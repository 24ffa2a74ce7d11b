-- Distributed tables made by migrations 0001 and 0003 before they were corrected: prices and
-- clusters had no sharding key (ClickHouse refuses to insert into them across shards) and flows
-- was sharded at random (a resent batch split differently from the first attempt). They hold
-- no rows, so they are replaced with the keys 0001 and 0003 now give; where those already
-- made them, this changes nothing.
-- cluster-only
CREATE OR REPLACE TABLE $db.flows$on_cluster AS $db.flows_local
ENGINE = Distributed('$cluster', '$db', 'flows_local', cityHash64(node));

-- cluster-only
CREATE OR REPLACE TABLE $db.prices$on_cluster AS $db.prices_local
ENGINE = Distributed('$cluster', '$db', 'prices_local', cityHash64(provider, region, category, direction));

-- cluster-only
CREATE OR REPLACE TABLE $db.clusters$on_cluster AS $db.clusters_local
ENGINE = Distributed('$cluster', '$db', 'clusters_local', cityHash64(cluster));
