-- Monthly volume tiers, free allowances and the accounts that share them.
--
-- A schedule is the price_list rows sharing provider, region, remote_region, category,
-- direction and valid_from. One row is a flat price; several are tiers, each from its
-- tier_from_gib (GiB of the month; the first tier from 0). A tier priced 0 is a free allowance.
-- A new valid_from starts a new schedule: list all its tiers again.
--
-- Tiers count an account's bytes over a calendar month (UTC), per schedule: every row a
-- schedule prices in the month, in every cluster of the account, day after day. Each day's bytes
-- are priced by that day's tiers from where the month's earlier days left off. A tiered row's
-- cost is its share of the month's total, pro rata to bytes (the month's blended rate).
ALTER TABLE $db.price_list$local$on_cluster
    ADD COLUMN IF NOT EXISTS tier_from_gib UInt64 DEFAULT 0 AFTER valid_from;
-- cluster-only
ALTER TABLE $db.price_list$on_cluster
    ADD COLUMN IF NOT EXISTS tier_from_gib UInt64 DEFAULT 0 AFTER valid_from;
-- Which clusters are billed to one cloud account (and share its tiers). A row applies to the
-- months whose first day is on or after valid_from (default: this month), so a month is tiered
-- with the accounts of its first day; for one cluster and valid_from the newest insert wins. A
-- cluster no row names is an account of its own, named after it.
CREATE TABLE IF NOT EXISTS $db.cluster_accounts$local$on_cluster
(
    cluster String,
    account String,
    valid_from Date DEFAULT toStartOfMonth(toDate(now(), 'UTC')),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ${replicated}MergeTree
ORDER BY (cluster, valid_from);
-- cluster-only
CREATE TABLE IF NOT EXISTS $db.cluster_accounts$on_cluster AS $db.cluster_accounts_local
ENGINE = Distributed('$cluster', '$db', 'cluster_accounts_local', cityHash64(cluster));
-- One row per key, valid_from and tier: the newest insert.
CREATE OR REPLACE VIEW $db.price_versions$on_cluster AS
SELECT
    provider, region, remote_region, category, direction, valid_from,
    argMax(price_per_gib, inserted_at) AS price_per_gib,
    argMax(currency, inserted_at) AS currency,
    tier_from_gib
FROM $db.price_list
GROUP BY provider, region, remote_region, category, direction, valid_from, tier_from_gib;
-- The schedules: each one's tiers as (tier_from_gib, price_per_gib), ascending, and the
-- currencies they use (one, unless the list is broken).
CREATE OR REPLACE VIEW $db.price_schedules$on_cluster AS
SELECT
    provider, region, remote_region, category, direction, valid_from,
    arraySort(groupArray((tier_from_gib, price_per_gib))) AS tiers,
    arraySort(groupUniqArray(currency)) AS currencies
FROM $db.price_versions
GROUP BY provider, region, remote_region, category, direction, valid_from;
-- The prices in force today (UTC): every tier of each key's newest schedule.
CREATE OR REPLACE VIEW $db.current_prices$on_cluster AS
SELECT provider, region, category, direction, price_per_gib, currency, remote_region, tier_from_gib
FROM $db.price_versions
WHERE (provider, region, remote_region, category, direction, valid_from) IN
    (SELECT provider, region, remote_region, category, direction, max(valid_from)
     FROM $db.price_versions
     WHERE valid_from <= toDate(now(), 'UTC')
     GROUP BY provider, region, remote_region, category, direction);
-- Metering priced by the schedules in force on each day (0007's rule picks the schedule).
-- Flat rows: cost = bytes / 2^30 * price_per_gib, exact in Decimal(76, 39) (see 0007).
-- Tiered rows: the unit (account, month, provider, the schedule's region and remote region,
-- category, direction) costs the sum of its days, each day's bytes priced tier by tier from
-- the bytes of the month's earlier days, exactly; a row costs bytes x unit cost / unit bytes,
-- truncated at 39 decimals; price_per_gib is that blended rate, rounded to 9 decimals. In a
-- month not over, the rate is the month's so far. tollgate export rounds each unit's total
-- to cents once and splits it by largest remainder (docs/export.md).
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
                    FROM $db.metering_daily AS m
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
