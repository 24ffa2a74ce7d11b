-- The provider on each record. A record names the cloud provider of the node that observed it
-- (local_provider: the scheme of the Node's spec.providerID, or the static inventory's provider;
-- '' when unknown), and prices follow it; a row without one is priced by its cluster's
-- `clusters` row, as before. Rows stored before this migration read '' in every table, so no
-- past day changes price.
--
-- Raw tables: DEFAULT '' so that agents of the previous version, which do not send the column,
-- keep inserting until they are upgraded (migrate first, then the agents).
ALTER TABLE $db.flows$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String) DEFAULT '' AFTER local_region;

ALTER TABLE $db.flows_repair$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String) DEFAULT '' AFTER local_region;

-- cluster-only
ALTER TABLE $db.flows$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String) DEFAULT '' AFTER local_region;
-- cluster-only
ALTER TABLE $db.flows_repair$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String) DEFAULT '' AFTER local_region;

-- Rollups: the provider ends the sorting key (a new key column is added in the same ALTER,
-- without a default; rows stored before read '').
ALTER TABLE $db.flows_1m$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator,
    local_provider);

ALTER TABLE $db.flows_1h$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator,
    local_provider);

ALTER TABLE $db.flows_1d$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator,
    local_provider);

-- cluster-only
ALTER TABLE $db.flows_1m$on_cluster ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String);
-- cluster-only
ALTER TABLE $db.flows_1h$on_cluster ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String);
-- cluster-only
ALTER TABLE $db.flows_1d$on_cluster ADD COLUMN IF NOT EXISTS local_provider LowCardinality(String);

-- The views of 0013, carrying local_provider (markers copy the insert's first row in the new key
-- order).

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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfMinute(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfHour(period) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfDay(period) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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

ALTER TABLE $db.flows_1m_repair_mv$on_cluster MODIFY QUERY
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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfMinute(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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

ALTER TABLE $db.flows_1h_repair_mv$on_cluster MODIFY QUERY
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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfHour(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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

ALTER TABLE $db.flows_1d_repair_mv$on_cluster MODIFY QUERY
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
        category, initiator, local_provider,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator, local_provider) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfDay(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator, local_provider,
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

-- 0010's repair of raw rows, with the new column (else a repaired batch's rows would read '').
ALTER TABLE $db.flows_repair_raw_mv$on_cluster MODIFY QUERY
WITH cityHash64(replaceOne(getSetting('insert_deduplication_token'), '#repair', '')) AS batch_hash
SELECT
    observed_at, interval_seconds, cluster, node, family, protocol, local_ip, local_port,
    local_pod, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, local_provider, remote_ip, remote_port, remote_kind, remote_pod, remote_namespace,
    remote_workload_kind, remote_workload, remote_team, remote_node, remote_zone, remote_region,
    remote_cloud_provider, remote_cloud_service, remote_service, initiator, bytes_sent,
    bytes_received, packets_sent, packets_received, category, ended, conntrack_id,
    batch_hash AS batch
FROM $db.flows_repair$local
WHERE toDate(observed_at) NOT IN
    (SELECT DISTINCT toDate(observed_at) FROM $db.flows$local WHERE batch = batch_hash);

-- Metering as in 0013, with the provider the records name ('' when they name none).
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
    sum(counted) AS bytes,
    remote_region,
    sumIf(counted, initiator = 'local') AS initiated_bytes,
    local_provider AS record_provider
FROM $db.flows_1d
ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS counted
GROUP BY ALL;

-- The gateway's bytes, as in 0013, with the records' provider.
CREATE OR REPLACE VIEW $db.nat_metering_daily$on_cluster AS
WITH (SELECT groupArray((cluster, valid_from, inserted_at, nat)) FROM $db.cluster_nat) AS nat_rows
SELECT
    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
    'nat_gateway' AS category, m.direction AS direction, m.initiated_bytes AS bytes,
    m.remote_region AS remote_region, m.record_provider AS record_provider
FROM $db.metering_daily AS m
WHERE m.category IN ('internet', 'cloud_service', 'public_in_region') AND m.initiated_bytes > 0
    AND arrayLast(x -> true, arraySort(x -> (x.2, x.3),
        arrayFilter(x -> x.1 = m.cluster AND x.2 <= m.day, nat_rows))).4;

-- As in 0013, keyed by the records' provider too: a key is priced by its records' provider, or
-- when they name none by its cluster's `clusters` row (the provider column says which was used).
CREATE OR REPLACE VIEW $db.priced_keys_daily$on_cluster AS
WITH
    (SELECT groupArray((cluster, valid_from, inserted_at, account)) FROM $db.cluster_accounts) AS account_rows,
    (SELECT groupArray((cluster, valid_from, inserted_at, nat)) FROM $db.cluster_nat) AS nat_rows
SELECT
    day, cluster, region, remote_region, category, direction, bytes, provider, record_provider,
    ifNull(nullIf(arrayLast(x -> true, arraySort(x -> (x.2, x.3),
        arrayFilter(x -> x.1 = cluster AND x.2 <= toStartOfMonth(day), account_rows))).4, ''), cluster)
        AS account,
    countIf(applies) > 0 AS found,
    argMaxIf(candidate_tiers, precedence, applies) AS tiers,
    argMaxIf(candidate_currencies, precedence, applies) AS currencies,
    argMaxIf(candidate_region, precedence, applies) AS schedule_region,
    argMaxIf(candidate_remote_region, precedence, applies) AS schedule_remote_region,
    found AND tiers[1].1 = 0 AND length(currencies) = 1 AS priced,
    if(priced, currencies[1], '') AS currency,
    multiIf(NOT priced, 'unpriced', length(tiers) = 1, 'flat', 'tiered') AS pricing,
    multiIf(priced, '',
        provider = '', concat('cluster ', cluster, ' has no provider'),
        NOT found, concat('no price for provider ', provider, ', category ', category,
            ', direction ', direction),
        concat('the ', provider, ' ', category, '/', direction, ' prices for ',
            schedule_region, ' to ', schedule_remote_region, ' from ',
            toString(argMaxIf(candidate_valid_from, precedence, applies)),
            if(tiers[1].1 != 0, ' have no tier from 0 GiB', ' mix currencies')))
        AS unpriced_reason
FROM
(
    SELECT
        k.day AS day, k.cluster AS cluster, k.region AS region, k.remote_region AS remote_region,
        k.category AS category, k.direction AS direction, k.bytes AS bytes, k.provider AS provider,
        k.record_provider AS record_provider,
        p.provider != '' AND (p.region = k.region OR p.region = '*')
            AND (p.remote_region = k.remote_region OR p.remote_region = '*')
            AND p.valid_from <= k.day AS applies,
        (p.region != '*', p.remote_region != '*', p.valid_from) AS precedence,
        p.tiers AS candidate_tiers,
        p.currencies AS candidate_currencies,
        p.region AS candidate_region,
        p.remote_region AS candidate_remote_region,
        p.valid_from AS candidate_valid_from
    FROM
    (
        SELECT k.*, if(k.record_provider != '', k.record_provider, c.provider) AS provider
        FROM
        (
            -- metering_daily's and nat_metering_daily's bytes per key, from the rollup.
            SELECT day, cluster, region, remote_region, record_provider,
                if(through_nat, 'nat_gateway', flow_category) AS category, direction,
                sum(if(through_nat, initiated, counted)) AS bytes
            FROM
            (
                SELECT toDate(period) AS day, cluster, local_region AS region, remote_region,
                    local_provider AS record_provider,
                    category AS flow_category, direction, sum(counted_bytes) AS counted,
                    sumIf(counted_bytes, initiator = 'local') AS initiated
                FROM $db.flows_1d
                ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS counted_bytes
                GROUP BY day, cluster, region, remote_region, record_provider, flow_category, direction
            )
            ARRAY JOIN if(flow_category IN ('internet', 'cloud_service', 'public_in_region')
                AND initiated > 0
                AND arrayLast(x -> true, arraySort(x -> (x.2, x.3),
                    arrayFilter(x -> x.1 = cluster AND x.2 <= day, nat_rows))).4,
                [false, true], [false]) AS through_nat
            GROUP BY day, cluster, region, remote_region, record_provider, category, direction
        ) AS k
        LEFT JOIN $db.current_clusters AS c ON c.cluster = k.cluster
    ) AS k
    LEFT JOIN $db.price_schedules AS p
        ON p.provider = k.provider AND p.category = k.category AND p.direction = k.direction
)
GROUP BY day, cluster, region, remote_region, category, direction, bytes, provider, record_provider;

-- As in 0013, each row joined to its key by the records' provider too. `provider` is the
-- provider that priced the row, `record_provider` the one its records named.
CREATE OR REPLACE VIEW $db.cost_daily$on_cluster AS
SELECT
    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
    m.category AS category, m.direction AS direction, m.bytes AS bytes,
    k.provider AS provider, k.priced AS priced,
    multiIf(NOT k.priced, NULL, k.pricing = 'flat', k.tiers[1].2,
        toDecimal64(u.unit_cost * toDecimal256(1073741824, 0) / toDecimal256(greatest(u.unit_bytes, 1), 0), 9))
        AS price_per_gib,
    k.currency AS currency,
    multiIf(NOT k.priced, NULL, k.pricing = 'flat',
        toDecimal256(m.bytes, 30) * k.tiers[1].2 / toDecimal256(1073741824, 0),
        toDecimal256(m.bytes, 0) * u.unit_cost / toDecimal256(greatest(u.unit_bytes, 1), 0)) AS cost,
    m.remote_region AS remote_region, k.unpriced_reason AS unpriced_reason, k.account AS account,
    k.pricing AS pricing, m.record_provider AS record_provider
FROM
(
    SELECT day, cluster, team, namespace, workload_kind, workload, region, category, direction,
        bytes, remote_region, record_provider
    FROM $db.metering_daily
    UNION ALL
    SELECT day, cluster, team, namespace, workload_kind, workload, region, category, direction,
        bytes, remote_region, record_provider
    FROM $db.nat_metering_daily
) AS m
LEFT JOIN $db.priced_keys_daily AS k
    ON k.day = m.day AND k.cluster = m.cluster AND k.region = m.region
    AND k.remote_region = m.remote_region AND k.category = m.category AND k.direction = m.direction
    AND k.record_provider = m.record_provider
LEFT JOIN $db.tier_units_monthly AS u
    ON u.account = k.account AND u.month = toStartOfMonth(m.day) AND u.provider = k.provider
    AND u.schedule_region = k.schedule_region AND u.schedule_remote_region = k.schedule_remote_region
    AND u.category = k.category AND u.direction = k.direction AND u.currency = k.currency;
