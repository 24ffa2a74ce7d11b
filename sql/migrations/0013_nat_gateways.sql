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
-- nat_gateway.
CREATE OR REPLACE VIEW $db.nat_metering_daily$on_cluster AS
SELECT
    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
    'nat_gateway' AS category, m.direction AS direction, m.initiated_bytes AS bytes,
    m.remote_region AS remote_region
FROM $db.metering_daily AS m
LEFT JOIN $db.cluster_nat AS n ON n.cluster = m.cluster
WHERE m.category IN ('internet', 'cloud_service', 'public_in_region') AND m.initiated_bytes > 0
GROUP BY m.day, m.cluster, m.team, m.namespace, m.workload_kind, m.workload, m.region,
    m.category, m.direction, m.bytes, m.remote_region, m.initiated_bytes
HAVING argMaxIf(n.nat, (n.valid_from, n.inserted_at), n.cluster != '' AND n.valid_from <= m.day);

-- Processing prices (0.045 a GB both ways on each provider), for every day: no row had this
-- category before, so no past export changes. Keys already present are left alone.
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, tier_from_gib, price_per_gib, currency, inserted_at)
SELECT provider, '*', '*', 'nat_gateway', direction, toDate('1970-01-01'), 0, toDecimal64(0.045, 9), 'USD',
    toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM values('provider String, direction String',
    ('aws', 'out'), ('aws', 'in'), ('gcp', 'out'), ('gcp', 'in'), ('azure', 'out'), ('azure', 'in'))
WHERE (provider, 'nat_gateway', direction) NOT IN
    (SELECT provider, category, direction FROM $db.price_list);

-- Costs as in 0011, with the gateway's rows.
CREATE OR REPLACE VIEW $db.cost_daily$on_cluster AS
SELECT
    day, cluster, team, namespace, workload_kind, workload, region, category, direction, bytes,
    provider, priced,
    multiIf(NOT priced, NULL, pricing = 'flat', tiers[1].2,
        toDecimal64(unit_cost * toDecimal256(1073741824, 0) / toDecimal256(greatest(unit_bytes, 1), 0), 9))
        AS price_per_gib,
    currency,
    multiIf(NOT priced, NULL, pricing = 'flat',
        toDecimal256(bytes, 30) * tiers[1].2 / toDecimal256(1073741824, 0),
        toDecimal256(bytes, 0) * unit_cost / toDecimal256(greatest(unit_bytes, 1), 0)) AS cost,
    remote_region, unpriced_reason, account, pricing
FROM
(
    SELECT *,
        sum(if(first_of_day, day_cost, toDecimal256(0, 39))) OVER unit AS unit_cost,
        sum(bytes) OVER unit AS unit_bytes
    FROM
    (
        SELECT *,
            row_number() OVER (PARTITION BY account, toStartOfMonth(day), provider, schedule_region,
                schedule_remote_region, category, direction, pricing, day) = 1 AS first_of_day,
            sum(bytes) OVER (PARTITION BY account, toStartOfMonth(day), provider, schedule_region,
                schedule_remote_region, category, direction, pricing, day) AS day_bytes,
            toUInt128(sum(bytes) OVER (PARTITION BY account, toStartOfMonth(day), provider,
                schedule_region, schedule_remote_region, category, direction, pricing ORDER BY day)) - day_bytes
                AS bytes_before,
            if(pricing = 'tiered',
                arraySum(arrayMap((tier, i) -> toDecimal256(greatest(0,
                        toInt256(least(bytes_before + day_bytes, if(i = length(tiers), toUInt128(bitNot(toUInt128(0))), toUInt128(tiers[i + 1].1) * 1073741824)))
                        - toInt256(greatest(bytes_before, toUInt128(tier.1) * 1073741824))), 30)
                        * tier.2 / toDecimal256(1073741824, 0),
                    tiers, arrayEnumerate(tiers))),
                toDecimal256(0, 39)) AS day_cost
        FROM
        (
            SELECT
                day, cluster, team, namespace, workload_kind, workload, region, category, direction,
                bytes, remote_region, provider, account,
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
                    m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
                    m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
                    m.category AS category, m.direction AS direction, m.bytes AS bytes,
                    m.remote_region AS remote_region, m.provider AS provider, m.account AS account,
                    p.provider != '' AND (p.region = m.region OR p.region = '*')
                        AND (p.remote_region = m.remote_region OR p.remote_region = '*')
                        AND p.valid_from <= m.day AS applies,
                    (p.region != '*', p.remote_region != '*', p.valid_from) AS precedence,
                    p.tiers AS candidate_tiers,
                    p.currencies AS candidate_currencies,
                    p.region AS candidate_region,
                    p.remote_region AS candidate_remote_region,
                    p.valid_from AS candidate_valid_from
                FROM
                (
                    SELECT
                        m.day AS day, m.cluster AS cluster, m.team AS team, m.namespace AS namespace,
                        m.workload_kind AS workload_kind, m.workload AS workload, m.region AS region,
                        m.category AS category, m.direction AS direction, m.bytes AS bytes,
                        m.remote_region AS remote_region, any(c.provider) AS provider,
                        if(countIf(a.cluster != '' AND a.valid_from <= toStartOfMonth(m.day)) > 0,
                            argMaxIf(a.account, (a.valid_from, a.inserted_at),
                                a.cluster != '' AND a.valid_from <= toStartOfMonth(m.day)),
                            m.cluster) AS account
                    FROM
                    (
                        SELECT day, cluster, team, namespace, workload_kind, workload, region,
                            category, direction, bytes, remote_region
                        FROM $db.metering_daily
                        UNION ALL
                        SELECT day, cluster, team, namespace, workload_kind, workload, region,
                            category, direction, bytes, remote_region
                        FROM $db.nat_metering_daily
                    ) AS m
                    LEFT JOIN $db.current_clusters AS c ON c.cluster = m.cluster
                    LEFT JOIN $db.cluster_accounts AS a ON a.cluster = m.cluster
                    GROUP BY day, cluster, team, namespace, workload_kind, workload, region, category,
                        direction, bytes, remote_region
                ) AS m
                LEFT JOIN $db.price_schedules AS p
                    ON p.provider = m.provider AND p.category = m.category AND p.direction = m.direction
            )
            GROUP BY day, cluster, team, namespace, workload_kind, workload, region, category,
                direction, bytes, remote_region, provider, account
        )
    )
    WINDOW unit AS (PARTITION BY account, toStartOfMonth(day), provider, schedule_region,
        schedule_remote_region, category, direction, pricing)
);
