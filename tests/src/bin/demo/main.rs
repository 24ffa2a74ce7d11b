//! tollgate's demo: who moved which bytes, in which billing category, at
//! what cost, from real ClickHouse's metering views, checked against
//! nftables counters kept independently.
//!
//!   demo                 a simulated three-node cluster in network
//!                        namespaces, one `tollgate agent` process per node
//!   demo --kubernetes    a real three-node Kubernetes, tollgate deployed
//!                        with `kubectl apply -k` (tests/scripts/demo.sh
//!                        picks this when the cluster's build is cached)

mod kubernetes;
mod simulated;

use std::path::PathBuf;

use anyhow::{ensure, Context};
use tollgate_tests::clickhouse::{ClickHouse, Dedicated};

/// Where the demo keeps its data.
const HOME: &str = "/var/tmp/tollgate-demo";

/// The bill's prices in the demo, times AWS's list prices: the demo moves
/// megabytes, and its cents must show.
const PRICES: u32 = 10_000;

fn main() -> anyhow::Result<()> {
    ensure!(
        tollgate_tests::require_root("demo", "network namespaces and conntrack"),
        "run the demo as root"
    );
    match std::env::args().nth(1).as_deref() {
        None => simulated::run(),
        Some("--kubernetes") => kubernetes::run(),
        Some(other) => {
            eprintln!("demo: unknown argument {other:?}\nusage: demo [--kubernetes]");
            std::process::exit(2)
        }
    }
}

/// An empty [`HOME`], and a ClickHouse keeping its data there.
fn fresh_home() -> anyhow::Result<(PathBuf, Dedicated)> {
    let home = PathBuf::from(HOME);
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home)?;
    println!("Starting ClickHouse (its data: {HOME}/clickhouse) ...");
    let server = Dedicated::start_in(home.join("clickhouse"), true)?;
    Ok((home, server))
}

/// This month (`YYYY-MM`, UTC) and the directory its reports go to.
fn exports_of_this_month(home: &std::path::Path) -> anyhow::Result<(String, PathBuf)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let month = ::tollgate::export::Month::of_unix(i64::try_from(now.as_secs())?)
        .context("clock out of range")?
        .to_string();
    let dir = home.join("exports");
    std::fs::create_dir_all(&dir)?;
    Ok((month, dir))
}

/// The month's bytes and cost per team, from `cost_daily`.
fn print_per_team(ch: &ClickHouse, database: &str) -> anyhow::Result<()> {
    println!("\nPer team, this month (from the view cost_daily; AWS list prices, USD):\n");
    table(
        ch,
        &format!(
            "SELECT team, \
               formatReadableSize(sumIf(bytes, category = 'same_zone')) AS same_zone, \
               formatReadableSize(sumIf(bytes, category = 'cross_zone')) AS cross_zone, \
               formatReadableSize(sumIf(bytes, category = 'cross_region')) AS cross_region, \
               formatReadableSize(sumIf(bytes, category = 'internet')) AS internet, \
               toString(round(sum(cost), 8)) AS cost_usd \
             FROM {database}.cost_daily WHERE toStartOfMonth(day) = toStartOfMonth(today()) \
             GROUP BY team ORDER BY sum(cost) DESC, team"
        ),
    )?;
    println!(
        "\n  Bytes are each team's sent plus received. AWS bills a cross-zone byte on both\n  \
         sides, internet and cross-region egress on the sending side; same zone is free."
    );
    Ok(())
}

/// Forensics: which pods sent to the internet (`hosts` names it).
fn print_internet_senders(ch: &ClickHouse, database: &str, hosts: &str) -> anyhow::Result<()> {
    println!("\nForensics: what was sending to {hosts}? (from the flows table)\n");
    table(
        ch,
        &format!(
            "SELECT local_pod AS pod, node, replaceOne(toString(local_ip), '::ffff:', '') AS local_ip, \
               replaceOne(toString(remote_ip), '::ffff:', '') AS remote_ip, remote_port, protocol, \
               sum(bytes_sent) AS sent, sum(bytes_received) AS received, \
               min(observed_at) AS first_seen, max(observed_at) AS last_seen \
             FROM {database}.flows WHERE category = 'internet' GROUP BY ALL ORDER BY sent DESC"
        ),
    )
}

/// Run `sql` and print the result as an aligned table.
fn table(ch: &ClickHouse, sql: &str) -> anyhow::Result<()> {
    let text = ch.query(&format!("{sql} FORMAT TabSeparatedWithNames"))?;
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let columns = rows.first().context("no header")?.len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
        if n == 0 {
            println!(
                "  {}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1))
            );
        }
    }
    Ok(())
}

/// 1234567 -> "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A reconciliation's coverage and allocation (in `out`), their main
/// columns.
fn print_reconciliation(out: &std::path::Path) -> anyhow::Result<()> {
    println!("\nCoverage, billed bytes against metered bytes per instance:\n");
    columns(
        &out.join("coverage.csv"),
        &[
            "resource",
            "nodes",
            "billed_category",
            "direction",
            "billed_bytes",
            "metered_bytes",
            "ratio",
            "status",
        ],
    )?;
    println!("\nAllocation, each line item's cost split over the teams whose bytes make it up:\n");
    columns(
        &out.join("allocation.csv"),
        &[
            "resource",
            "billed_category",
            "direction",
            "team",
            "bytes",
            "cost",
            "unallocated_reason",
        ],
    )?;
    println!(
        "\n  (Both tables also as JSON or Parquet; in {}.)",
        out.display()
    );
    Ok(())
}

/// The columns `keep` of a CSV file, aligned.
fn columns(path: &std::path::Path, keep: &[&str]) -> anyhow::Result<()> {
    let mut reader = csv::Reader::from_path(path)?;
    let header = reader.headers()?.clone();
    let index: Vec<usize> = keep
        .iter()
        .filter_map(|k| header.iter().position(|h| h == *k))
        .collect();
    let mut rows = vec![keep.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>()];
    for record in reader.records() {
        let record = record?;
        rows.push(index.iter().map(|&i| record[i].to_owned()).collect());
    }
    let widths: Vec<usize> = (0..keep.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(field, width)| format!("{field:<width$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    }
    Ok(())
}
