//! Benchmark of the ClickHouse store (run by
//! `tests/scripts/bench-clickhouse-sink.sh`):
//!
//! 1. insert rate of tollgate's sink (`ClickHouseSink`, RowBinary + LZ4,
//!    batches of 100,000) against ClickHouse's own HTTP
//!    `INSERT ... FORMAT RowBinary` of the same rows from a file, sent with
//!    curl (the reference), in the same run;
//! 2. on-disk bytes per raw row, after merges;
//! 3. how many rows each rollup keeps per raw row.
//!
//! The data imitates one cluster for 45 minutes: 200 pods in 10 namespaces,
//! each with 20 long-lived connections reported every 10 s and 3 new short
//! ones per interval, to 5,000 remote addresses.

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use tollgate::sink::clickhouse::{ClickHouseSink, Connection};
use tollgate::sink::{Batch, Sink};
use tollgate_schema::{Category, Family, FlowRecord, Initiator, Protocol, RemoteKind};
use tollgate_tests::clickhouse::Dedicated;
use tollgate_tests::tollgate::binary;

const BATCH: usize = 100_000;

/// xorshift64*: repeatable pseudo-random numbers.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed sizes: mostly small, sometimes large, like real transfers.
    fn size(&mut self, max_bits: u64) -> u64 {
        let bits = 8 + self.below(max_bits);
        60 + self.below(1 << bits)
    }
}

struct Connection4 {
    remote: u32,
    remote_port: u16,
    local_port: u16,
    id: u32,
}

fn records(start: u32) -> Vec<FlowRecord> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let categories = [
        Category::SameZone,
        Category::CrossZone,
        Category::CrossZone,
        Category::Internet,
    ];
    let ports = [443, 5432, 6379, 8080, 9092];
    let pods: Vec<(String, String, String, String)> = (0..200)
        .map(|p| {
            let ns = format!("team-{}", p / 20);
            let workload = format!("svc-{}", p / 4 % 5);
            (
                ns.clone(),
                workload.clone(),
                format!("{workload}-{:x}", random.next() % 0xfffff),
                format!("owner-{}", p / 20),
            )
        })
        .collect();
    let mut long_lived: Vec<Vec<Connection4>> = (0..200)
        .map(|_| {
            (0..20)
                .map(|_| Connection4 {
                    remote: random.below(5000) as u32,
                    remote_port: ports[random.below(5) as usize],
                    local_port: 32768 + random.below(28000) as u16,
                    id: random.next() as u32,
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for interval in 0..270u32 {
        for (p, pod) in pods.iter().enumerate() {
            for _ in 0..3 {
                long_lived[p].push(Connection4 {
                    remote: random.below(5000) as u32,
                    remote_port: ports[random.below(5) as usize],
                    local_port: 32768 + random.below(28000) as u16,
                    id: random.next() as u32,
                });
            }
            for (c, conn) in long_lived[p].iter().enumerate() {
                let category = categories[(conn.remote % 4) as usize];
                let internet = category == Category::Internet;
                out.push(FlowRecord {
                    observed_at: start + interval * 10,
                    interval_seconds: 10,
                    cluster: "prod-eu".into(),
                    node: format!("node-{}", p % 12),
                    family: Family::Ipv4,
                    protocol: Protocol::TCP,
                    local_ip: std::net::Ipv4Addr::new(10, 4, (p / 250) as u8, (p % 250) as u8)
                        .to_ipv6_mapped(),
                    local_port: conn.local_port,
                    local_pod: pod.2.clone(),
                    local_namespace: pod.0.clone(),
                    local_workload_kind: "Deployment".into(),
                    local_workload: pod.1.clone(),
                    local_team: pod.3.clone(),
                    local_zone: format!("eu-west-1{}", ["a", "b", "c"][p % 3]),
                    local_region: "eu-west-1".into(),
                    remote_ip: if internet {
                        Ipv6Addr::from(
                            0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(conn.remote),
                        )
                    } else {
                        std::net::Ipv4Addr::from(0x0a05_0000 + conn.remote).to_ipv6_mapped()
                    },
                    remote_port: conn.remote_port,
                    remote_kind: if internet {
                        RemoteKind::Internet
                    } else {
                        RemoteKind::Pod
                    },
                    remote_pod: if internet {
                        String::new()
                    } else {
                        format!("peer-{}", conn.remote % 300)
                    },
                    remote_namespace: if internet {
                        String::new()
                    } else {
                        format!("team-{}", conn.remote % 10)
                    },
                    remote_workload_kind: if internet {
                        String::new()
                    } else {
                        "Deployment".into()
                    },
                    remote_workload: if internet {
                        String::new()
                    } else {
                        format!("svc-{}", conn.remote % 5)
                    },
                    remote_team: if internet {
                        String::new()
                    } else {
                        format!("owner-{}", conn.remote % 10)
                    },
                    remote_node: if internet {
                        String::new()
                    } else {
                        format!("node-{}", conn.remote % 12)
                    },
                    remote_zone: if internet {
                        String::new()
                    } else {
                        format!("eu-west-1{}", ["a", "b", "c"][(conn.remote % 3) as usize])
                    },
                    remote_region: if internet {
                        String::new()
                    } else {
                        "eu-west-1".into()
                    },
                    remote_cloud_provider: String::new(),
                    remote_cloud_service: String::new(),
                    remote_service: String::new(),
                    initiator: Initiator::Local,
                    bytes_sent: random.size(12),
                    bytes_received: random.size(14),
                    packets_sent: 1 + random.below(40),
                    packets_received: 1 + random.below(60),
                    category,
                    ended: c >= 20,
                    conntrack_id: conn.id,
                });
            }
            long_lived[p].truncate(20);
        }
    }
    out
}

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
    let rows = records(u32::try_from(now - 3 * 3600)?);
    println!("{} records", rows.len());

    let connection = Connection {
        url: url.clone(),
        database: "bench_sink".into(),
        user: "default".into(),
        password: None,
        ca_file: None,
    };
    let sink = ClickHouseSink::new(&connection);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let batches: Vec<Batch> = rows
        .chunks(BATCH)
        .enumerate()
        .map(|(i, chunk)| Batch {
            seq: i as u64 + 1,
            token: format!("bench-{i}"),
            resume_at: Default::default(),
            records: chunk.to_vec(),
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
        "  tollgate ClickHouseSink (RowBinary, LZ4)               {:>6.2} s  {:>10.0} rows/s",
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
