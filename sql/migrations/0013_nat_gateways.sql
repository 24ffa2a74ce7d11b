-- NAT gateways. A cluster declared to reach the internet through a NAT gateway pays the gateway's
-- processing charge on the bytes it sends and receives through it: on connections its own
-- endpoints opened (initiator 'local'; a connection opened from outside arrives through a load
-- balancer or a public address, not the gateway) to the internet, a cloud service or a public
-- address in the region. Those bytes are metered again as category 'nat_gateway', in both
-- directions, and priced like any other row (AWS bills processing both ways:
-- aws.amazon.com/vpc/pricing/, "NAT Gateway Pricing"; GCP, cloud.google.com/nat/pricing, and
-- Azure, azure.microsoft.com/pricing/details/azure-nat-gateway/, alike, 0.045 a GB).
--
-- The rollups keep which endpoint opened each connection (`initiator`, ending the sorting key;
-- '' for rows stored before this migration, which no gateway charge counts).
ALTER TABLE $db.flows_1m$local$on_cluster
    ADD COLUMN IF NOT EXISTS initiator LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator);

ALTER TABLE $db.flows_1h$local$on_cluster
    ADD COLUMN IF NOT EXISTS initiator LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator);

ALTER TABLE $db.flows_1d$local$on_cluster
    ADD COLUMN IF NOT EXISTS initiator LowCardinality(String),
    MODIFY ORDER BY (cluster, period, local_team, local_namespace, local_workload_kind, local_workload, local_zone,
    local_region, category, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, batch_run, initiator);

-- cluster-only
ALTER TABLE $db.flows_1m$on_cluster ADD COLUMN IF NOT EXISTS initiator LowCardinality(String);
-- cluster-only
ALTER TABLE $db.flows_1h$on_cluster ADD COLUMN IF NOT EXISTS initiator LowCardinality(String);
-- cluster-only
ALTER TABLE $db.flows_1d$on_cluster ADD COLUMN IF NOT EXISTS initiator LowCardinality(String);

-- The views of 0010, carrying initiator (markers copy the insert's first row in the new key
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfMinute(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfHour(period) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfDay(period) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfMinute(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfHour(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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
        category, initiator,
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
            remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, initiator) = 1 AS first_in_partition
    FROM
    (
        SELECT
            toStartOfDay(observed_at) AS period,
            cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
            local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
            remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
            category, initiator,
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

-- Which clusters reach the internet through a NAT gateway: a row applies from its valid_from
-- (default: today) until a newer one for the cluster; for one cluster and day the newest insert
-- wins. A cluster no row names has none.
CREATE TABLE IF NOT EXISTS $db.cluster_nat$local$on_cluster
(
    cluster String,
    nat Bool DEFAULT true,
    valid_from Date DEFAULT toDate(now(), 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ${replicated}MergeTree
ORDER BY (cluster, valid_from);
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.cluster_nat$on_cluster AS $db.cluster_nat_local
ENGINE = Distributed('$cluster', '$db', 'cluster_nat_local', cityHash64(cluster));

-- Metering as in 0007, with the bytes of connections the local endpoint opened.
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
    sumIf(counted, initiator = 'local') AS initiated_bytes
FROM $db.flows_1d
ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS counted
GROUP BY ALL;

-- The gateway's bytes: metering_daily's rows through a NAT gateway on their day, as category
-- nat_gateway. A cluster's NAT state on a day is its newest cluster_nat row from that day or
-- before (none: no gateway); the table is small and read once per query.
CREATE OR REPLACE VIEW $db.nat_metering_daily$on_cluster AS
WITH (SELECT groupArray((cluster, valid_from, inserted_at, nat)) FROM $db.cluster_nat) AS nat_rows
SELECT
    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
    'nat_gateway' AS category, m.direction AS direction, m.initiated_bytes AS bytes,
    m.remote_region AS remote_region
FROM $db.metering_daily AS m
WHERE m.category IN ('internet', 'cloud_service', 'public_in_region') AND m.initiated_bytes > 0
    AND arrayLast(x -> true, arraySort(x -> (x.2, x.3),
        arrayFilter(x -> x.1 = m.cluster AND x.2 <= m.day, nat_rows))).4;

-- Processing prices (0.045 a GB both ways on each provider), for every day: no row had this
-- category before, so no past export changes. Keys already present are left alone.
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, tier_from_gib, price_per_gib, currency, inserted_at)
SELECT provider, '*', '*', 'nat_gateway', direction, toDate('1970-01-01'), 0, toDecimal64(0.045, 9), 'USD',
    toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM values('provider String, direction String',
    ('aws', 'out'), ('aws', 'in'), ('gcp', 'out'), ('gcp', 'in'), ('azure', 'out'), ('azure', 'in'))
WHERE (provider, 'nat_gateway', direction) NOT IN
    (SELECT provider, category, direction FROM $db.price_list);

-- How each day's bytes are priced, per cluster, region, remote region, category and
-- direction (the key prices depend on): the schedule 0007's rule picks, the cluster's provider
-- and account (its cluster_accounts row in force on the month's first day, else the cluster),
-- and the key's bytes, NAT gateways' included. Looking prices up per key rather than per
-- workload keeps it small, whatever the number of workloads.
CREATE OR REPLACE VIEW $db.priced_keys_daily$on_cluster AS
WITH
    (SELECT groupArray((cluster, valid_from, inserted_at, account)) FROM $db.cluster_accounts) AS account_rows,
    (SELECT groupArray((cluster, valid_from, inserted_at, nat)) FROM $db.cluster_nat) AS nat_rows
SELECT
    day, cluster, region, remote_region, category, direction, bytes, provider,
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
        SELECT k.*, c.provider AS provider
        FROM
        (
            -- metering_daily's and nat_metering_daily's bytes per key, from the rollup.
            SELECT day, cluster, region, remote_region,
                if(through_nat, 'nat_gateway', flow_category) AS category, direction,
                sum(if(through_nat, initiated, counted)) AS bytes
            FROM
            (
                SELECT toDate(period) AS day, cluster, local_region AS region, remote_region,
                    category AS flow_category, direction, sum(counted_bytes) AS counted,
                    sumIf(counted_bytes, initiator = 'local') AS initiated
                FROM $db.flows_1d
                ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS counted_bytes
                GROUP BY day, cluster, region, remote_region, flow_category, direction
            )
            ARRAY JOIN if(flow_category IN ('internet', 'cloud_service', 'public_in_region')
                AND initiated > 0
                AND arrayLast(x -> true, arraySort(x -> (x.2, x.3),
                    arrayFilter(x -> x.1 = cluster AND x.2 <= day, nat_rows))).4,
                [false, true], [false]) AS through_nat
            GROUP BY day, cluster, region, remote_region, category, direction
        ) AS k
        LEFT JOIN $db.current_clusters AS c ON c.cluster = k.cluster
    ) AS k
    LEFT JOIN $db.price_schedules AS p
        ON p.provider = k.provider AND p.category = k.category AND p.direction = k.direction
)
GROUP BY day, cluster, region, remote_region, category, direction, bytes, provider;

-- Tiered schedules' units: the bytes one tiered schedule prices in one account over a month
-- (account, month, provider, the schedule's region and remote region, category, direction and
-- currency) and their exact cost, each day's bytes priced tier by tier from the bytes of the
-- month's earlier days.
CREATE OR REPLACE VIEW $db.tier_units_monthly$on_cluster AS
SELECT
    account, month, provider, schedule_region, schedule_remote_region, category, direction, currency,
    sum(day_cost) AS unit_cost, sum(day_bytes) AS unit_bytes
FROM
(
    SELECT *,
        arraySum(arrayMap((tier, i) -> toDecimal256(greatest(0,
                toInt256(least(bytes_before + day_bytes,
                    if(i = length(tiers), toUInt128(bitNot(toUInt128(0))), toUInt128(tiers[i + 1].1) * 1073741824)))
                - toInt256(greatest(bytes_before, toUInt128(tier.1) * 1073741824))), 30)
                * tier.2 / toDecimal256(1073741824, 0),
            tiers, arrayEnumerate(tiers))) AS day_cost
    FROM
    (
        SELECT *,
            toUInt128(sum(day_bytes) OVER (PARTITION BY account, month, provider, schedule_region,
                schedule_remote_region, category, direction, currency ORDER BY day
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) - day_bytes AS bytes_before
        FROM
        (
            SELECT
                account, toStartOfMonth(day) AS month, provider, schedule_region,
                schedule_remote_region, category, direction, currency, day,
                any(tiers) AS tiers, sum(bytes) AS day_bytes
            FROM $db.priced_keys_daily
            WHERE pricing = 'tiered'
            GROUP BY account, month, provider, schedule_region, schedule_remote_region, category,
                direction, currency, day
        )
    )
)
GROUP BY account, month, provider, schedule_region, schedule_remote_region, category, direction,
    currency;

-- Metering priced by the schedules in force on each day, with the gateways' rows.
-- Flat rows: cost = bytes / 2^30 * price_per_gib, exact in Decimal(76, 39) (see 0007).
-- Tiered rows: cost = bytes x unit cost / unit bytes, the row's share of its unit's month
-- (tier_units_monthly; truncated at 39 decimals), and price_per_gib that blended rate,
-- truncated to 9 decimals. In a month not over, the rate is the month's so far. tollgate export
-- rounds each unit's total to cents once and splits it by largest remainder (docs/export.md).
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
    k.pricing AS pricing
FROM
(
    SELECT day, cluster, team, namespace, workload_kind, workload, region, category, direction,
        bytes, remote_region
    FROM $db.metering_daily
    UNION ALL
    SELECT day, cluster, team, namespace, workload_kind, workload, region, category, direction,
        bytes, remote_region
    FROM $db.nat_metering_daily
) AS m
LEFT JOIN $db.priced_keys_daily AS k
    ON k.day = m.day AND k.cluster = m.cluster AND k.region = m.region
    AND k.remote_region = m.remote_region AND k.category = m.category AND k.direction = m.direction
LEFT JOIN $db.tier_units_monthly AS u
    ON u.account = k.account AND u.month = toStartOfMonth(m.day) AND u.provider = k.provider
    AND u.schedule_region = k.schedule_region AND u.schedule_remote_region = k.schedule_remote_region
    AND u.category = k.category AND u.direction = k.direction AND u.currency = k.currency;
