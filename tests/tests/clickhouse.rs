//! The ClickHouse store against a real ClickHouse 26.x: migrations, the
//! schema crate's columns, drift refusal, rollups, metering and cost views,
//! and deduplication of a resent batch.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tollgate_schema::{Category, FlowRecord, COLUMNS};
use tollgate_tests::clickhouse::{self, ClickHouse};
use tollgate_tests::fixtures::{day_before_yesterday, ip, record, unix_now};
use tollgate_tests::tollgate::binary;

const GIB: u64 = 1 << 30;

fn migrate(ch: &ClickHouse, database: &str, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .args(["migrate", "--clickhouse", ch.url(), "--database", database])
        .args(extra)
        .output()
        .expect("tollgate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn migrated(ch: &ClickHouse, test: &str) -> String {
    let database = ch.fresh_database(test);
    let (code, text) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(0), "{text}");
    database
}

fn insert(ch: &ClickHouse, database: &str, records: &[FlowRecord], settings: &[(&str, &str)]) {
    let mut body = format!("INSERT INTO {database}.flows FORMAT JSONEachRow\n");
    for r in records {
        body.push_str(&serde_json::to_string(r).unwrap());
        body.push('\n');
    }
    ch.query_with(&body, settings).unwrap();
}

fn rows(ch: &ClickHouse, sql: &str) -> Vec<Vec<String>> {
    ch.query(sql)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn migrations_apply_once_and_reapply_nothing() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = ch.fresh_database("reapply");
    let (code, first) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(0), "{first}");
    assert!(
        first.contains(
            "applied 0001_flows, 0002_rollups, 0003_prices, 0004_metering, \
             0005_delivered_batches, 0006_distributed_keys, 0007_dated_prices, \
             0008_public_in_region, 0009_region_pairs, 0010_batch_markers, \
             0011_tiers_and_accounts, 0012_internet_tiers_2026, \
             0013_nat_gateways, 0014_local_provider, 0015_local_provider_id"
        ),
        "{first}"
    );
    let (code, second) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(0), "{second}");
    assert!(
        second.contains("up to date (15 migrations already applied)"),
        "{second}"
    );
    let recorded = ch
        .query(&format!("SELECT count() FROM {database}.schema_migrations"))
        .unwrap();
    assert_eq!(recorded.trim(), "15");
    // Shipped prices are inserted once, not once per run.
    let prices = ch
        .query(&format!(
            "SELECT (SELECT count() FROM {database}.prices), count() FROM {database}.price_list \
             FORMAT TSV"
        ))
        .unwrap();
    assert_eq!(prices.trim(), "30\t53");
}

#[test]
fn describe_flows_matches_the_schema_crate() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "describe");
    let described = rows(
        ch,
        &format!("DESCRIBE TABLE {database}.flows FORMAT TSVRaw"),
    );
    let found: Vec<(&str, &str)> = described
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    // The record's columns, then the batch's hash ClickHouse fills in
    // (migration 0010).
    let expected: Vec<(&str, &str)> = COLUMNS
        .iter()
        .map(|c| (c.name, c.clickhouse_type))
        .chain([("batch", "UInt64")])
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn retention_converges_to_the_requested_days() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "ttl");
    let (code, text) = migrate(ch, &database, &["--raw-ttl-days", "45"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("retention of flows: 45 days"), "{text}");
    let create = ch
        .query(&format!("SELECT create_table_query FROM system.tables WHERE database = '{database}' AND name = 'flows'"))
        .unwrap();
    assert!(create.contains("toIntervalDay(45)"), "{create}");
    let (_, again) = migrate(ch, &database, &["--raw-ttl-days", "45"]);
    assert!(!again.contains("retention of"), "{again}");
}

#[test]
fn a_drifted_database_is_refused_and_left_alone() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };

    let database = migrated(ch, "drift_view");
    ch.query(&format!("DROP VIEW {database}.cost_daily"))
        .unwrap();
    let (code, text) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("has drifted")
            && text.contains("cost_daily, created by migration 0004_metering, is missing"),
        "{text}"
    );
    let views = ch.query(&format!("SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'cost_daily'")).unwrap();
    assert_eq!(views.trim(), "0", "nothing was changed");

    let database = migrated(ch, "drift_column");
    ch.query(&format!(
        "ALTER TABLE {database}.flows MODIFY COLUMN local_port UInt32"
    ))
    .unwrap();
    let (code, text) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("column 8 should be local_port UInt16 but is local_port UInt32"),
        "{text}"
    );

    let database = migrated(ch, "drift_newer");
    ch.query(&format!("INSERT INTO {database}.schema_migrations (version, name, checksum) VALUES (99, '0099_future', 'x')")).unwrap();
    let (code, text) = migrate(ch, &database, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("migration 99 (0099_future) was applied by a newer tollgate"),
        "{text}"
    );
}

#[test]
fn the_cluster_layout_parses_on_real_clickhouse() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let output = Command::new(binary())
        .args([
            "migrate",
            "--clickhouse",
            "http://unused:1",
            "--database",
            "metering",
            "--cluster",
            "prod",
            "--print",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let sql = String::from_utf8(output.stdout).unwrap();
    let statements: Vec<&str> = sql
        .split(";\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    assert!(statements
        .iter()
        .any(|s| s.contains("ReplicatedSummingMergeTree")));
    // One ledger for the whole cluster: its Keeper path names no shard.
    assert!(statements.iter().any(|s| s.contains(
        "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', '{replica}')"
    )));
    assert!(
        statements
            .iter()
            .filter(|s| s.contains("ENGINE = Distributed"))
            .count()
            >= 6
    );
    for statement in &statements {
        ch.query(&format!("EXPLAIN AST {statement}"))
            .unwrap_or_else(|e| panic!("does not parse: {statement}\n{e}"));
    }
}

/// 2026-11-02 00:00 UTC.
const NOVEMBER_2ND_2026: u32 = 1_793_577_600;

#[test]
fn metering_and_cost_match_hand_computed_figures_and_cross_node_counts_once() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "metering");
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES ('c1', 'aws')"
    ))
    .unwrap();

    let web = ("shop", "web", "storefront");
    let db = ("data", "db", "platform");
    // One connection between web (node n-a, zone a) and db (node n-b, zone b),
    // recorded by both nodes, each from its own endpoint's side.
    let mut web_side = record("n-a", web, db, Category::CrossZone);
    web_side.bytes_sent = 3 * GIB;
    web_side.bytes_received = GIB;
    let mut db_side = record("n-b", db, web, Category::CrossZone);
    db_side.bytes_sent = GIB;
    db_side.bytes_received = 3 * GIB;
    let mut internet = record("n-a", web, ("", "", ""), Category::Internet);
    internet.bytes_sent = 2 * GIB;
    internet.bytes_received = 10 * GIB;
    let mut same_zone = record(
        "n-a",
        web,
        ("shop", "cache", "storefront"),
        Category::SameZone,
    );
    same_zone.bytes_sent = 5 * GIB;
    same_zone.bytes_received = 5 * GIB;
    same_zone.observed_at += 3600;
    let mut records = [web_side, db_side, internet, same_zone];
    // A day the shipped flat prices price (internet is tiered from
    // 2026-12-01), so the figures below hold whatever day it is; the
    // daily rollup, which metering reads, keeps it until 2031.
    for record in &mut records {
        record.observed_at = record.observed_at % 86_400 + NOVEMBER_2ND_2026;
    }
    insert(ch, &database, &records, &[]);

    let metering = rows(
        ch,
        &format!(
            "SELECT team, category, direction, sum(bytes) / {GIB} FROM {database}.metering_daily \
             GROUP BY ALL HAVING sum(bytes) > 0 ORDER BY team, category, direction"
        ),
    );
    let expected: Vec<Vec<String>> = [
        ("platform", "cross_zone", "in", "3"),
        ("platform", "cross_zone", "out", "1"),
        ("storefront", "cross_zone", "in", "1"),
        ("storefront", "cross_zone", "out", "3"),
        ("storefront", "internet", "in", "10"),
        ("storefront", "internet", "out", "2"),
        ("storefront", "same_zone", "in", "5"),
        ("storefront", "same_zone", "out", "5"),
    ]
    .iter()
    .map(|(a, b, c, d)| vec![a.to_string(), b.to_string(), c.to_string(), d.to_string()])
    .collect();
    assert_eq!(metering, expected);

    // The cross-node connection moved 3 + 1 GiB: metered once per direction.
    let cross_out = ch
        .query(&format!("SELECT sum(bytes) / {GIB} FROM {database}.metering_daily WHERE category = 'cross_zone' AND direction = 'out'"))
        .unwrap();
    assert_eq!(cross_out.trim(), "4");

    // AWS list prices: cross-zone 0.01/GiB each side, internet egress 0.09/GiB.
    let cost = rows(
        ch,
        &format!(
            "SELECT team, toString(round(sum(cost), 6)), any(currency) FROM {database}.cost_daily \
             GROUP BY team ORDER BY team"
        ),
    );
    assert_eq!(
        cost,
        vec![
            vec!["platform".to_owned(), "0.04".to_owned(), "USD".to_owned()],
            vec!["storefront".to_owned(), "0.22".to_owned(), "USD".to_owned()],
        ]
    );

    // A region's own price wins over the provider default; inserted the
    // way the docs say for an edit, it applies from today, so these
    // records (of an earlier day) keep their price...
    ch.query(&format!(
        "INSERT INTO {database}.prices (provider, region, category, direction, price_per_gib, currency) \
         VALUES ('aws', 'r1', 'internet', 'out', 0.05, 'USD')"
    ))
    .unwrap();
    let internet_cost = || {
        ch.query(&format!("SELECT toString(round(sum(cost), 6)) FROM {database}.cost_daily WHERE category = 'internet'"))
            .unwrap()
    };
    assert_eq!(internet_cost().trim(), "0.18");
    // ...and dated from before them (a correction), it reprices them.
    ch.query(&format!(
        "INSERT INTO {database}.price_list (provider, region, category, direction, valid_from, price_per_gib, currency) \
         VALUES ('aws', 'r1', 'internet', 'out', '1970-01-01', 0.05, 'USD')"
    ))
    .unwrap();
    assert_eq!(internet_cost().trim(), "0.1");
}

/// A run's batches leave markers that merge: five batches whose rollup rows
/// recur (each with one workload of its own) keep one marker per rollup,
/// which knows the last batch, and the sums are those of the five batches.
/// (A marker copied from whichever row came first split them: 2 in
/// `flows_1h` and `flows_1d`.)
#[test]
fn a_runs_markers_merge_into_one_per_rollup_key() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "markers");
    for seq in 1..=5 {
        ch.query_with(
            &format!(
                "INSERT INTO {database}.flows (observed_at, cluster, node, local_namespace, \
                 local_workload, local_team, category, bytes_sent, local_provider) \
                 SELECT toStartOfHour(now()) + n, 'c1', 'n1', concat('ns', toString(n % 3)), \
                 if(n = 99, 'x{seq}', concat('w', toString(n % 20))), 't', 'internet', 1, \
                 if(number < 100, '', 'aws') \
                 FROM numbers(200) ARRAY JOIN [number % 100] AS n"
            ),
            &[(
                "insert_deduplication_token",
                &format!("n1-m0123456789abcdef-{seq}"),
            )],
        )
        .unwrap();
    }
    for rollup in ["flows_1m", "flows_1h", "flows_1d"] {
        ch.query(&format!("OPTIMIZE TABLE {database}.{rollup} FINAL"))
            .unwrap();
        let markers = ch
            .query(&format!(
                "SELECT count(), max(seq_max), sum(batches), sum(bytes_sent), any(local_provider) \
                 FROM {database}.{rollup} WHERE batch_run != 0"
            ))
            .unwrap();
        let rows = ch
            .query(&format!(
                "SELECT sum(bytes_sent), sum(records) FROM {database}.{rollup} WHERE batch_run = 0"
            ))
            .unwrap();
        // One marker, on the key that sorts first: its records name no
        // provider ('' before 'aws').
        assert_eq!(markers, "1\t6\t5\t0\t\n", "{rollup}");
        assert_eq!(rows.trim(), "1000\t1000", "{rollup}");
        let by_provider = ch
            .query(&format!(
                "SELECT local_provider, sum(bytes_sent) FROM {database}.{rollup} \
                 WHERE batch_run = 0 GROUP BY local_provider ORDER BY local_provider"
            ))
            .unwrap();
        assert_eq!(by_provider, "\t500\naws\t500\n", "{rollup}");
    }
}

#[test]
fn rollups_equal_raw_sums_and_a_resent_batch_counts_once() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "rollups");
    let teams = [
        ("shop", "web", "storefront"),
        ("data", "db", "platform"),
        ("ml", "trainer", "research"),
    ];
    let categories = [
        Category::SameZone,
        Category::CrossZone,
        Category::Internet,
        Category::CrossRegion,
    ];
    // 5 batches of 2,000 records over two days, with bytes that differ per record.
    for batch in 0..5u64 {
        let records: Vec<FlowRecord> = (0..2000u64)
            .map(|i| {
                let n = batch * 2000 + i;
                let local = teams[(n % 3) as usize];
                let remote = teams[((n / 3) % 3) as usize];
                let mut r = record(
                    if n % 2 == 0 { "n-a" } else { "n-b" },
                    local,
                    remote,
                    categories[(n % 4) as usize],
                );
                r.observed_at += (n * 17 % 172_800) as u32;
                r.bytes_sent = 1000 + n * 7;
                r.bytes_received = 500 + n * 3;
                r.packets_sent = 1 + n % 5;
                r
            })
            .collect();
        let token = format!("batch-{batch}");
        insert(
            ch,
            &database,
            &records,
            &[("insert_deduplication_token", &token)],
        );
        if batch == 2 {
            // The same batch again, as a sink retrying after a timeout would.
            insert(
                ch,
                &database,
                &records,
                &[("insert_deduplication_token", &token)],
            );
        }
    }
    let raw = ch.query(&format!("SELECT count(), sum(bytes_sent), sum(bytes_received), sum(packets_sent) FROM {database}.flows")).unwrap();
    let expected_sent: u64 = (0..10_000u64).map(|n| 1000 + n * 7).sum();
    assert_eq!(
        raw.split('\t').next().unwrap(),
        "10000",
        "the resent batch was stored once"
    );
    assert_eq!(raw.split('\t').nth(1).unwrap(), expected_sent.to_string());
    for (rollup, bucket) in [
        ("flows_1m", "toStartOfMinute"),
        ("flows_1h", "toStartOfHour"),
        ("flows_1d", "toStartOfDay"),
    ] {
        let totals = ch
            .query(&format!("SELECT sum(records), sum(bytes_sent), sum(bytes_received), sum(packets_sent) FROM {database}.{rollup}"))
            .unwrap();
        assert_eq!(totals, raw, "{rollup} totals");
        let differences = ch
            .query(&format!(
                "SELECT count() FROM (
                   SELECT {bucket}(observed_at) AS period, local_team, category, sum(bytes_sent) AS b
                   FROM {database}.flows GROUP BY ALL) AS raw
                 FULL OUTER JOIN (
                   SELECT period, local_team, category, sum(bytes_sent) AS b
                   FROM {database}.{rollup} GROUP BY ALL) AS rolled
                 USING (period, local_team, category)
                 WHERE raw.b != rolled.b"
            ))
            .unwrap();
        assert_eq!(
            differences.trim(),
            "0",
            "{rollup} differs from raw per period, team, category"
        );
    }
    // After merges, the rollups hold far fewer rows than raw.
    ch.query(&format!("OPTIMIZE TABLE {database}.flows_1h FINAL"))
        .unwrap();
    let rows_1h = ch
        .query(&format!("SELECT count() FROM {database}.flows_1h"))
        .unwrap();
    assert!(
        rows_1h.trim().parse::<u64>().unwrap() < 10_000 / 4,
        "{rows_1h}"
    );
}

fn forensics(
    ch: &ClickHouse,
    database: &str,
    file: &str,
    params: &[(&str, String)],
) -> Vec<Vec<String>> {
    let sql = std::fs::read_to_string(tollgate_tests::repo_root().join("sql/forensics").join(file))
        .unwrap();
    let mut settings: Vec<(String, String)> = vec![("database".into(), database.into())];
    for (name, value) in params {
        settings.push((format!("param_{name}"), value.replace(' ', "%20")));
    }
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    ch.query_with(
        &format!("{} FORMAT TSVRaw", sql.trim().trim_end_matches(';')),
        &settings,
    )
    .unwrap_or_else(|e| panic!("{file}: {e}"))
    .lines()
    .map(|l| l.split('\t').map(str::to_owned).collect())
    .collect()
}

fn datetime(ch: &ClickHouse, unix: u32) -> String {
    ch.query(&format!("SELECT toDateTime({unix}, 'UTC') FORMAT TSVRaw"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn forensics_queries_answer_over_fixture_data() {
    let Some(ch) = clickhouse::require("clickhouse") else {
        return;
    };
    let database = migrated(ch, "forensics");
    let web = ("shop", "web", "storefront");
    let db = ("data", "db", "platform");
    // The queries that look back "N days" count from ClickHouse's now(), so the fixture's
    // recent records sit just before the real clock, whatever the time of day.
    let now = unix_now();

    let mut to_db = record("n-a", web, db, Category::CrossZone);
    to_db.bytes_sent = 3 * GIB;
    let mut from_db = record("n-b", db, web, Category::CrossZone);
    from_db.bytes_sent = GIB;
    let mut new_destination = record("n-a", web, ("", "", ""), Category::Internet);
    new_destination.remote_ip = ip("203.0.113.7");
    new_destination.remote_port = 443;
    new_destination.bytes_sent = 2 * GIB;
    new_destination.observed_at = now - 3600;
    let mut old_destination = new_destination.clone();
    old_destination.remote_ip = ip("198.51.100.1");
    old_destination.remote_port = 80;
    old_destination.bytes_sent = GIB / 2;
    old_destination.observed_at = now - 3 * 86_400;
    let mut old_again = old_destination.clone();
    old_again.observed_at = now - 1800;
    insert(
        ch,
        &database,
        &[to_db, from_db, new_destination, old_destination, old_again],
        &[],
    );

    let range = [
        ("from", datetime(ch, day_before_yesterday())),
        ("to", datetime(ch, now)),
        ("limit", "10".to_owned()),
    ];

    let top = forensics(ch, &database, "top_talkers.sql", &range);
    assert_eq!(top[0][3], "web", "{top:?}");
    assert_eq!(
        top[0][5],
        (3 * GIB + GIB / 2 + 2 * GIB).to_string(),
        "web's bytes sent in range: {top:?}"
    );

    let connections = forensics(
        ch,
        &database,
        "pod_connections.sql",
        &[
            ("namespace", "shop".into()),
            ("pod", "web-0".into()),
            range[0].clone(),
            range[1].clone(),
        ],
    );
    assert_eq!(connections.len(), 3, "{connections:?}");
    assert_eq!(
        connections[0][5], "::ffff:198.51.100.1",
        "newest first: {connections:?}"
    );

    let new = forensics(
        ch,
        &database,
        "new_external_destinations.sql",
        &[("days", "1".into())],
    );
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0][0], "::ffff:203.0.113.7");

    let egress = forensics(ch, &database, "internet_egress_by_destination.sql", &range);
    assert_eq!(
        egress[0][..3],
        ["::ffff:203.0.113.7", "443", &(2 * GIB).to_string()]
    );
    assert_eq!(egress.len(), 2);

    let pairs = forensics(ch, &database, "cross_zone_pairs.sql", &range);
    let pairs: Vec<(&str, &str, &str)> = pairs
        .iter()
        .map(|p| (p[1].as_str(), p[3].as_str(), p[5].as_str()))
        .collect();
    let (three, one) = ((3 * GIB).to_string(), GIB.to_string());
    assert_eq!(
        pairs,
        vec![
            ("shop/web", "data/db", three.as_str()),
            ("data/db", "shop/web", one.as_str())
        ]
    );
}
