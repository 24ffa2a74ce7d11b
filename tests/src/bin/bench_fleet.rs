//! Fleet benchmark of the sharded ClickHouse store (run by
//! `tests/scripts/bench-fleet.sh AGENTS RECORDS INTERVAL SECONDS`):
//!
//! AGENTS simulated agents, each with its own origin, durable spool and
//! `ClickHouseSink` (the agent's delivery code: spool, retries, tokens),
//! each forming a batch of RECORDS records every INTERVAL seconds (starts
//! staggered over the first interval) for SECONDS, through the three nodes
//! of a real 3-shard cluster in turn. Reported: rows/s stored, against
//! ClickHouse's own `INSERT ... FORMAT RowBinary` of the same rows in
//! batches of the same size (curl, 4 at a time) in the same run; parts
//! written per second and the most active parts in one partition; insert
//! latency percentiles; retries; the spools' backlog every interval.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use tollgate::sink::batch::TokenMaker;
use tollgate::sink::clickhouse::{ClickHouseSink, Connection};
use tollgate::sink::deliver::{drain, DeliveryCounts, RetryPolicy};
use tollgate::sink::spool::Spool;
use tollgate::sink::{Batch, Sink, WriteError};
use tollgate_schema::compact::Rows;
use tollgate_tests::clickhouse::{ClickHouse, Shards};
use tollgate_tests::synthetic;
use tollgate_tests::tollgate::binary;

/// The sink, timing each write that succeeds and keeping the first line
/// of each failure.
struct Timed {
    sink: ClickHouseSink,
    latencies: Mutex<Vec<f64>>,
    failures: Mutex<Vec<String>>,
}

impl Sink for Timed {
    fn name(&self) -> &'static str {
        self.sink.name()
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        let started = Instant::now();
        let written = self.sink.write(batch).await;
        let seconds = started.elapsed().as_secs_f64();
        match &written {
            Ok(()) => locked(&self.latencies).push(seconds),
            Err(error) => {
                let message = error.message.lines().next().unwrap_or_default();
                locked(&self.failures).push(message.chars().take(120).collect());
            }
        }
        written
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn arg(n: usize, default: u64) -> anyhow::Result<u64> {
    std::env::args()
        .nth(n)
        .map_or(Ok(default), |a| a.parse().context("arguments are numbers"))
}

/// (active parts in `database`, most active parts in one partition of one
/// table, parts written by inserts so far) on one node.
fn parts(node: &ClickHouse, database: &str) -> anyhow::Result<(u64, u64, u64)> {
    let text = node.query(&format!(
        "SELECT (SELECT count() FROM system.parts WHERE database = '{database}' AND active), \
         (SELECT max(c) FROM (SELECT count() AS c FROM system.parts \
            WHERE database = '{database}' AND active GROUP BY table, partition)), \
         (SELECT value FROM system.events WHERE event = 'MergeTreeDataWriterBlocks')"
    ))?;
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    ensure!(v.len() == 3, "unexpected answer {text}");
    Ok((v[0], v[1], v[2]))
}

/// A sink into `database` on `node`, as the default user.
fn sink_to(node: &ClickHouse, database: &str) -> anyhow::Result<ClickHouseSink> {
    Ok(ClickHouseSink::new(&Connection {
        url: node.url().to_owned(),
        database: database.into(),
        user: "default".into(),
        password: None,
        ca_file: None,
    })?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Distinct node names among the agents' records: enough that sharding by
/// node spreads them over the shards (each agent still has its own origin).
const NODES: usize = 30;

/// One agent: its spool, sink and counts.
struct Agent {
    spool: Arc<Mutex<Spool>>,
    sink: Arc<Timed>,
    counts: Arc<DeliveryCounts>,
}

/// Inserts `files` (RowBinary) into `database.flows` through the nodes in
/// turn, 4 at a time; returns the seconds taken.
fn reference_insert(
    nodes: &[&ClickHouse],
    database: &str,
    files: &[PathBuf],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for (g, group) in files.chunks(4).enumerate() {
        let children: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(i, file)| {
                let url = format!(
                    "{}/?query=INSERT%20INTO%20{database}.flows%20FORMAT%20RowBinary\
                     &distributed_foreground_insert=1&async_insert=0&insert_deduplication_token=ref-{g}-{i}",
                    nodes[i % nodes.len()].url(),
                );
                Command::new("curl")
                    .args(["-sS", "--fail-with-body", &url, "--data-binary"])
                    .arg(format!("@{}", file.display()))
                    .output()
            })
            .collect();
        for child in children {
            let child = child?;
            ensure!(
                child.status.success(),
                "reference insert: {}",
                String::from_utf8_lossy(&child.stdout)
            );
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let agents = arg(1, 500)?;
    let records = arg(2, 10_000)? as usize;
    let interval = Duration::from_secs(arg(3, 10)?);
    let seconds = arg(4, 180)?;
    let shards = Shards::start("bench-fleet", 3)?;
    let nodes: Vec<&ClickHouse> = shards.nodes().iter().map(|n| n.server()).collect();
    for database in ["fleet", "reference"] {
        let mut migrate = Command::new(binary());
        migrate.args([
            "migrate",
            "--cluster",
            Shards::CLUSTER,
            "--database",
            database,
        ]);
        for node in &nodes {
            migrate.args(["--shard", node.url()]);
        }
        ensure!(migrate.status()?.success(), "migrate failed");
    }
    let seeded = Command::new(binary())
        .args([
            "migrate",
            "--clickhouse",
            nodes[0].url(),
            "--database",
            "seed",
        ])
        .status()?;
    ensure!(seeded.success(), "migrate failed");
    let work = std::env::temp_dir().join(format!("tollgate-bench-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);

    // One batch's records of the synthetic cluster, under each of NODES
    // node names, observed now.
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let template = synthetic::cluster_records(now - 600);
    ensure!(template.len() >= records, "not enough synthetic records");
    let batches_by_node: Vec<Rows> = (0..NODES)
        .map(|n| {
            let mut set = template[..records].to_vec();
            for r in &mut set {
                r.node = format!("node-{n}").as_str().into();
                r.observed_at = now;
            }
            set.iter().collect()
        })
        .collect();
    drop(template);

    // The reference first, on an idle cluster: the same rows as ClickHouse's
    // own RowBinary (read back from a single-node seed database, without
    // the batch hash the Distributed table does not carry), in batches of
    // the same size.
    let seed = sink_to(nodes[0], "seed")?;
    for (n, rows) in batches_by_node.iter().enumerate() {
        seed.write(&Batch {
            seq: n as u64,
            token: format!("seed-{n}"),
            resume_at: Default::default(),
            rows: rows.clone(),
        })
        .await
        .context("seed insert")?;
    }
    let dir = work.join("reference");
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for n in 0..NODES {
        let file = dir.join(format!("{n}.rowbinary"));
        let status = Command::new("curl")
            .args(["-sS", "--fail-with-body", nodes[0].url(), "--data-binary"])
            .arg(format!(
                "SELECT * EXCEPT (batch) FROM seed.flows WHERE node = 'node-{n}' FORMAT RowBinary"
            ))
            .arg("-o")
            .arg(&file)
            .status()?;
        ensure!(status.success(), "reading the seed rows back failed");
        // Each node's batch twice: 60 INSERTs, enough to measure.
        files.push(file.clone());
        files.push(file);
    }
    let reference_seconds = reference_insert(&nodes, "reference", &files)?;
    let reference_rows = (files.len() * records) as f64;
    let reference_rate = reference_rows / reference_seconds;
    println!(
        "reference (curl RowBinary, {} batches of {records}, 4 at a time): {reference_rows} rows in {reference_seconds:.1}s = {reference_rate:.0} rows/s",
        files.len()
    );

    let fleet: Vec<Agent> = (0..agents)
        .map(|k| {
            Ok(Agent {
                spool: Arc::new(Mutex::new(Spool::open(
                    &work.join(format!("agent-{k}")),
                    512 << 20,
                    &["clickhouse"],
                )?)),
                sink: Arc::new(Timed {
                    sink: sink_to(nodes[k as usize % nodes.len()], "fleet")?,
                    latencies: Mutex::new(Vec::new()),
                    failures: Mutex::new(Vec::new()),
                }),
                counts: Arc::new(DeliveryCounts::default()),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "{agents} agents x {records} records every {}s for {seconds}s: {:.0} rows/s offered",
        interval.as_secs(),
        agents as f64 * records as f64 / interval.as_secs_f64()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (k, agent) in fleet.iter().enumerate() {
        let tokens = TokenMaker::new(&format!("agent-{k}"))?;
        let rows = batches_by_node[k % NODES].clone();
        let offset = interval.mul_f64(k as f64 / agents as f64);
        // The agent's reads: a batch per interval into the spool.
        let (spool, stop_producing) = (Arc::clone(&agent.spool), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                if stop_producing.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut spool = locked(&spool);
                let seq = spool.next_seq();
                spool.push(&Batch {
                    seq,
                    token: tokens.token(seq),
                    resume_at: Default::default(),
                    rows: rows.clone(),
                })?;
            }
        }));
        // The agent's delivery: drain the spool, then wait a little.
        let (spool, sink, counts, stop_delivering) = (
            Arc::clone(&agent.spool),
            Arc::clone(&agent.sink),
            Arc::clone(&agent.counts),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            while !stop_delivering.load(Ordering::Relaxed) {
                drain(&spool, &*sink, RetryPolicy::default(), &counts).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }

    let stored = || -> u64 {
        fleet
            .iter()
            .map(|a| a.counts.records.load(Ordering::Relaxed))
            .sum()
    };
    let sample = |label: String| -> anyhow::Result<(u64, u64)> {
        let (mut backlog_batches, mut backlog_bytes) = (0, 0);
        for agent in &fleet {
            let spool = locked(&agent.spool);
            backlog_batches += spool.len() as u64;
            backlog_bytes += spool.used_bytes();
        }
        let (mut written, mut most) = (0, 0);
        for node in &nodes {
            let (_, max_in_partition, blocks) = parts(node, "fleet")?;
            written += blocks;
            most = most.max(max_in_partition);
        }
        println!(
            "{label:>6}  stored {:>10} rows  backlog {:>5} batches {:>7.1} MiB  parts written {:>7}  most active parts in a partition {:>4}",
            stored(),
            backlog_batches,
            backlog_bytes as f64 / 1048576.0,
            written,
            most
        );
        Ok((written, most))
    };
    let started = Instant::now();
    let stored_at_start = stored();
    let (parts_at_start, _) = sample("0s".to_owned())?;
    let mut most_parts = 0;
    while started.elapsed().as_secs() < seconds {
        tokio::time::sleep(interval.min(Duration::from_secs(10))).await;
        let (_, most) = sample(format!("{}s", started.elapsed().as_secs()))?;
        most_parts = most_parts.max(most);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored_rows = stored() - stored_at_start;
    let (parts_at_end, _) = sample("end".to_owned())?;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }

    let mut latencies: Vec<f64> = fleet
        .iter()
        .flat_map(|a| locked(&a.sink.latencies).clone())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut failures: Vec<String> = fleet
        .iter()
        .flat_map(|a| locked(&a.sink.failures).clone())
        .collect();
    failures.sort();
    let fleet_rate = stored_rows as f64 / elapsed;

    println!();
    println!("stored by the fleet: {stored_rows} rows in {elapsed:.0}s = {fleet_rate:.0} rows/s");
    println!(
        "ratio fleet / reference: {:.2}x",
        fleet_rate / reference_rate
    );
    println!(
        "parts written by inserts: {:.1}/s; most active parts in one partition: {most_parts}",
        (parts_at_end - parts_at_start) as f64 / elapsed
    );
    println!(
        "insert latency: p50 {:.3}s  p90 {:.3}s  p99 {:.3}s  max {:.3}s  ({} inserts)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!("failed writes (retried): {}", failures.len());
    let mut i = 0;
    while i < failures.len() {
        let same = failures[i..]
            .iter()
            .take_while(|f| **f == failures[i])
            .count();
        println!("  {same} x {}", failures[i]);
        i += same;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
