//! The sharded layout on a real 3-shard ClickHouse cluster: three
//! ClickHouse 26.9 servers forming one cluster, Distributed tables over
//! per-node MergeTree, the schema applied node by node (no Keeper, no
//! `ON CLUSTER` here). The same records loaded into the cluster and into
//! one node give the same metering, costs and exports, read from any node;
//! a shard killed in the middle of the load loses and duplicates nothing.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::export::Month;
use tollgate_schema::{Category, FlowRecord};
use tollgate_tests::clickhouse::{ClickHouse, Shards};
use tollgate_tests::fixtures::{record, unix_now};
use tollgate_tests::not_run;
use tollgate_tests::tollgate::{binary, load, migrate};

/// Records in the test.
const N: u64 = 12_000;

fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-fleet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// The cluster, or `None` with a loud message outside CI.
fn shards(name: &str) -> Option<Shards> {
    match Shards::start(name, 3) {
        Ok(shards) => Some(shards),
        Err(error) => {
            not_run(&format!(
                "suite `shards` needs ClickHouse and was NOT RUN: {error:#}"
            ));
            None
        }
    }
}

fn last_month() -> (Month, u32) {
    let this_month = Month::of_unix(i64::from(unix_now())).unwrap();
    let start_of_this = u32::try_from(this_month.unix_range().0).unwrap();
    let last = Month::of_unix(i64::from(start_of_this) - 1).unwrap();
    (last, u32::try_from(last.unix_range().0).unwrap())
}

/// Records of nine nodes (so sharding by node reaches every shard), four
/// workloads and every priced category, spread over three days of last
/// month (three partitions; beyond the raw table's 30 days, so the
/// rollups, which metering reads, hold them).
fn records(start: u32) -> Vec<FlowRecord> {
    let (start, end) = (start + 9 * 86_400, start + 12 * 86_400);
    const WORKLOADS: [(&str, &str, &str); 4] = [
        ("shop", "web", "storefront"),
        ("shop", "report", "storefront"),
        ("data", "db", "platform"),
        ("jobs", "etl", "analytics"),
    ];
    const CATEGORIES: [Category; 4] = [
        Category::SameZone,
        Category::CrossZone,
        Category::CrossRegion,
        Category::Internet,
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..N)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let local = WORKLOADS[(seed % 4) as usize];
            let category = CATEGORIES[(seed >> 8) as usize % 4];
            let remote = if category == Category::Internet {
                ("", "", "")
            } else {
                WORKLOADS[(seed >> 16) as usize % 4]
            };
            let mut r = record(&format!("n-{}", i % 9), local, remote, category);
            r.observed_at = start + u32::try_from((seed >> 20) % u64::from(end - start)).unwrap();
            r.bytes_sent = (seed >> 24) % 50_000_000;
            r.bytes_received = (seed >> 30) % 9_000_000;
            r.packets_sent = r.bytes_sent.div_ceil(1500);
            r.packets_received = r.bytes_received.div_ceil(1500);
            r.conntrack_id = u32::try_from(i).unwrap();
            r
        })
        .collect()
}

fn count(node: &ClickHouse, table: &str) -> u64 {
    node.query(&format!("SELECT count() FROM {table}"))
        .map(|t| t.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Records that reached the last rollup of `table` (a `flows_1d`).
fn records_in(node: &ClickHouse, table: &str) -> u64 {
    node.query(&format!("SELECT sum(records) FROM {table}"))
        .map(|t| t.trim().parse().unwrap())
        .unwrap_or(0)
}

fn tollgate(args: &[&str]) -> String {
    let output = Command::new(binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "tollgate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The same statement through a Distributed table must reach every shard
/// before it returns (clickhouse-local never sends in the background).
fn insert(node: &ClickHouse, sql: &str) {
    node.query_with(sql, &[("distributed_foreground_insert", "1")])
        .unwrap();
}

#[test]
fn three_shards_meter_price_and_export_what_one_node_does_and_a_killed_shard_loses_nothing() {
    let Some(shards) = shards("fleet") else {
        return;
    };
    let nodes = shards.nodes();
    let urls: Vec<&str> = nodes.iter().map(|n| n.server().url()).collect();
    let first = nodes[0].server();

    // A shard left out would have no tables: refused before anything is
    // created, naming the counts.
    let partial = Command::new(binary())
        .args([
            "migrate",
            "--cluster",
            Shards::CLUSTER,
            "--database",
            "fleet",
        ])
        .args(["--shard", urls[0], "--shard", urls[1]])
        .output()
        .unwrap();
    assert_eq!(partial.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&partial.stderr)
        .contains("cluster tollgate_shards has 3 shards and --shard names 2 nodes"));
    assert_eq!(count(first, "system.databases WHERE name = 'fleet'"), 0);

    // The schema, node by node; and a single-node database on the first
    // node for the same records.
    let mut migrate_fleet = vec!["migrate", "--cluster", Shards::CLUSTER];
    for url in &urls {
        migrate_fleet.extend(["--shard", url]);
    }
    migrate_fleet.extend(["--database", "fleet"]);
    let applied = tollgate(&migrate_fleet);
    assert!(applied.contains("0005_delivered_batches"), "{applied}");
    assert!(tollgate(&migrate_fleet).contains("up to date"));
    migrate(urls[0], "single");

    // The shipped prices are readable in full on every node, once each.
    let single_prices = first
        .query("SELECT * FROM single.price_versions ORDER BY ALL")
        .unwrap();
    assert_eq!(single_prices.lines().count(), 53);
    for node in nodes {
        assert_eq!(
            node.server()
                .query("SELECT * FROM fleet.price_versions ORDER BY ALL")
                .unwrap(),
            single_prices
        );
        assert_eq!(count(node.server(), "fleet.prices"), 30);
    }

    let dir = temp("fleet");
    let (month, start) = last_month();
    let input = dir.join("records.jsonl");
    let text: String = records(start)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();

    let output = load(
        &input,
        &dir.join("spool-single"),
        &[
            "--clickhouse",
            urls[0],
            "--database",
            "single",
            "--batch-rows",
            "500",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Into the cluster through the first node, in small batches; the
    // second shard is killed part-way and started again 3 s later.
    let log = std::fs::File::create(dir.join("load-fleet.log")).unwrap();
    let mut loader = Command::new(binary())
        .arg("load")
        .arg(&input)
        .arg("--spool")
        .arg(dir.join("spool-fleet"))
        .args([
            "--clickhouse",
            urls[0],
            "--database",
            "fleet",
            "--batch-rows",
            "100",
            "-v",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while records_in(first, "fleet.flows_1d_local") < N / 12 {
        assert!(Instant::now() < deadline, "the load did not start");
        assert!(loader.try_wait().unwrap().is_none(), "the loader stopped");
        thread::sleep(Duration::from_millis(20));
    }
    let stored_before_kill = records_in(first, "fleet.flows_1d");
    nodes[1].kill().unwrap();
    thread::sleep(Duration::from_secs(3));
    assert!(
        loader.try_wait().unwrap().is_none(),
        "the loader finished while a shard was down"
    );
    nodes[1].restart().unwrap();
    assert!(loader.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("load-fleet.log")).unwrap();
    assert!(
        log.contains("will retry"),
        "no write failed while the shard was down: {log}"
    );
    // After a failure, the batch is completed through `flows_repair`'s
    // Distributed table, which gives each shard its own rows.
    assert!(
        log.contains("completed where it was missing"),
        "no batch was completed after the failures: {log}"
    );
    assert!(stored_before_kill < N, "killed before the end");

    // Exactly once, in the rollups that keep last month (the raw table keeps 30 days, the
    // minute rollup 14), spread over all three shards.
    let totals = |db: &str, node: &ClickHouse, rollup: &str| {
        node.query(&format!(
            "SELECT sum(records), sum(bytes_sent), sum(bytes_received), sum(packets_sent) FROM {db}.{rollup}"
        ))
        .unwrap()
    };
    for rollup in ["flows_1h", "flows_1d"] {
        let expected = totals("single", first, rollup);
        assert!(
            expected.starts_with(&format!("{N}\t")),
            "{rollup}: {expected}"
        );
        for node in nodes {
            assert_eq!(totals("fleet", node.server(), rollup), expected, "{rollup}");
        }
    }
    for node in nodes {
        assert!(records_in(node.server(), "fleet.flows_1d_local") > N / 6);
    }
    // Every batch is in delivered_batches, read through the Distributed
    // table from any node as the sink reads it: per batch and shard its
    // count, summed over the shards, is the batch's size.
    for node in nodes {
        let per_batch = node
            .server()
            .query(
                "SELECT count(), min(records), max(records) FROM (SELECT token, sum(records) AS records \
                 FROM (SELECT token, max(records) AS records FROM fleet.delivered_batches \
                 GROUP BY token, shardNum()) GROUP BY token)",
            )
            .unwrap();
        assert_eq!(per_batch.trim(), format!("{}\t100\t100", N / 100));
    }

    // Prices edited through any node, as a user would.
    for (db, node) in [("single", first), ("fleet", nodes[2].server())] {
        insert(
            node,
            &format!("INSERT INTO {db}.clusters (cluster, provider) VALUES ('c1', 'aws')"),
        );
        // A correction of every day, and an edit from today the earlier
        // way (through the undated table and its materialized view).
        insert(
            node,
            &format!(
                "INSERT INTO {db}.price_list (provider, region, category, direction, valid_from, price_per_gib, currency) \
                 VALUES ('aws', 'r1', 'internet', 'out', '1970-01-01', 0.05, 'USD')"
            ),
        );
        insert(
            node,
            &format!(
                "INSERT INTO {db}.prices (provider, region, category, direction, price_per_gib, currency) \
                 VALUES ('aws', 'r1', 'cross_zone', 'out', 0.02, 'USD')"
            ),
        );
    }
    for node in nodes {
        let in_force = node
            .server()
            .query("SELECT toString(price_per_gib) FROM fleet.current_prices WHERE region = 'r1' AND category = 'cross_zone' AND direction = 'out'")
            .unwrap();
        assert_eq!(in_force.trim(), "0.02", "{}", node.server().url());
    }

    // Metering and costs: the same rows from every node.
    for view in ["metering_daily", "cost_daily"] {
        let single = first
            .query(&format!("SELECT * FROM single.{view} ORDER BY ALL"))
            .unwrap();
        assert!(single.lines().count() > 50, "{view}: {single:.300}");
        for node in nodes {
            assert_eq!(
                node.server()
                    .query(&format!("SELECT * FROM fleet.{view} ORDER BY ALL"))
                    .unwrap(),
                single,
                "{view} from {}",
                node.server().url()
            );
        }
    }
    let region_priced = first
        .query("SELECT count() FROM fleet.cost_daily WHERE category = 'internet' AND direction = 'out' AND price_per_gib = 0.05")
        .unwrap();
    assert_ne!(region_priced.trim(), "0");

    // Exports: byte for byte, whichever node answers.
    let month = month.to_string();
    for by in ["team", "namespace", "workload"] {
        let export = |url: &str, db: &str| {
            let out = dir.join(format!("{db}-{by}.csv"));
            tollgate(&[
                "export",
                "--clickhouse",
                url,
                "--database",
                db,
                "--month",
                &month,
                "--by",
                by,
                "--format",
                "csv",
                "--out",
                out.to_str().unwrap(),
            ]);
            std::fs::read(out).unwrap()
        };
        let single = export(urls[0], "single");
        assert!(single.len() > 100);
        for url in &urls {
            assert_eq!(export(url, "fleet"), single, "--by {by} from {url}");
        }
    }
}
