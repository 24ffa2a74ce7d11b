//! Benchmark of the ClickHouse store (run by
//! `tests/scripts/bench-clickhouse-sink.sh`):
//!
//! 1. insert rate of tollgate's sink (`ClickHouseSink`, Native blocks + LZ4,
//!    batches of 100,000) against ClickHouse's own HTTP
//!    `INSERT ... FORMAT RowBinary` of the same rows from a file, sent with
//!    curl (the reference), in the same run;
//! 2. on-disk bytes per raw row, after merges;
//! 3. how many rows each rollup keeps per raw row.
//!
//! The data is [`synthetic::cluster_records`].

use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use tollgate::sink::batch::TokenMaker;
use tollgate::sink::clickhouse::{ClickHouseSink, Connection};
use tollgate::sink::{Batch, Sink};
use tollgate_tests::clickhouse::Dedicated;
use tollgate_tests::synthetic;
use tollgate_tests::tollgate::binary;

const BATCH: usize = 100_000;

fn curl(url: &str, sql_or_file: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", url])
        .args(sql_or_file)
        .output()?;
    ensure!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(output.stdout)
}

fn query(url: &str, sql: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8(curl(url, &["--data-binary", sql])?)?
        .trim()
        .to_owned())
}

fn main() -> anyhow::Result<()> {
    let server = Dedicated::start("bench")?;
    let url = server.server().url().to_owned();
    for database in ["bench_sink", "bench_reference"] {
        let status = Command::new(binary())
            .args(["migrate", "--clickhouse", &url, "--database", database])
            .status()?;
        ensure!(status.success(), "migrate failed");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let rows = synthetic::cluster_records(u32::try_from(now - 3 * 3600)?);
    println!("{} records", rows.len());

    let connection = Connection {
        url: url.clone(),
        database: "bench_sink".into(),
        user: "default".into(),
        password: None,
        ca_file: None,
    };
    let sink = ClickHouseSink::new(&connection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Tokens as an agent makes them, so every table stores its markers.
    let tokens = TokenMaker::new("bench")?;
    let batches: Vec<Batch> = rows
        .chunks(BATCH)
        .enumerate()
        .map(|(i, chunk)| Batch {
            seq: i as u64 + 1,
            token: tokens.token(i as u64 + 1),
            resume_at: Default::default(),
            rows: chunk.iter().collect(),
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        runtime.block_on(sink.write(batch)).context("sink write")?;
    }
    let sink_seconds = started.elapsed().as_secs_f64();

    let file =
        std::env::temp_dir().join(format!("tollgate-bench-{}.rowbinary", std::process::id()));
    let bytes = curl(
        &url,
        &[
            "--data-binary",
            "SELECT * FROM bench_sink.flows FORMAT RowBinary",
        ],
    )?;
    std::fs::write(&file, &bytes)?;
    let insert_url =
        format!("{url}/?query=INSERT%20INTO%20bench_reference.flows%20FORMAT%20RowBinary");
    let started = Instant::now();
    curl(
        &insert_url,
        &["--data-binary", &format!("@{}", file.display())],
    )?;
    let reference_seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);

    let n = rows.len() as f64;
    println!("insert, {} rows in batches of {BATCH}:", rows.len());
    println!(
        "  reference: curl INSERT FORMAT RowBinary ({} MiB file)   {:>6.2} s  {:>10.0} rows/s",
        bytes.len() >> 20,
        reference_seconds,
        n / reference_seconds
    );
    println!(
        "  tollgate ClickHouseSink (Native, LZ4)                  {:>6.2} s  {:>10.0} rows/s",
        sink_seconds,
        n / sink_seconds
    );
    println!(
        "  ratio tollgate / reference: {:.2}x",
        reference_seconds / sink_seconds
    );

    for table in ["flows", "flows_1m", "flows_1h", "flows_1d"] {
        query(&url, &format!("OPTIMIZE TABLE bench_sink.{table} FINAL"))?;
    }
    let on_disk = query(
        &url,
        "SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts \
         WHERE database = 'bench_sink' AND table = 'flows' AND active FORMAT TSV",
    )?;
    let v: Vec<f64> = on_disk
        .split('\t')
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    println!(
        "raw table on disk: {:.2} bytes/row ({:.0} MiB for {} rows; uncompressed {:.1} bytes/row)",
        v[1] / v[0],
        v[1] / 1048576.0,
        v[0],
        v[2] / v[0]
    );
    for table in ["flows_1m", "flows_1h", "flows_1d"] {
        let kept: f64 = query(&url, &format!("SELECT count() FROM bench_sink.{table}"))?.parse()?;
        println!("{table}: {kept} rows, {:.1}x fewer than raw", v[0] / kept);
    }
    Ok(())
}
