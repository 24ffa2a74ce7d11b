//! Benchmark of `tollgate reconcile` on large bills (run by
//! `tests/scripts/bench-reconcile.sh`): peak memory and time for a Cost
//! and Usage Report of 100,000 line items and one of 1,000,000, the same
//! 500 instances and usage types over more hours. Memory must stay flat in
//! the bill's size; the reference, measured in the same run, is `gzip -dc`
//! of the same file (the decompression every reading pays).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context};
use tollgate_tests::bills::{self, CurLine};

const INSTANCES: usize = 500;

/// Line items of `hours` hours of October 2026: per instance and hour,
/// cross-zone out and in, internet out and an instance-hour.
fn bill(hours: usize) -> impl Iterator<Item = CurLine> {
    const START: i64 = 1_790_812_800; // 2026-10-01T00:00:00Z
    (0..hours).flat_map(|hour| {
        (0..INSTANCES).flat_map(move |instance| {
            let resource = format!("i-{:017x}", instance + 1);
            let start = START + hour as i64 * 3600;
            [
                ("EUW1-DataTransfer-Regional-Bytes", "InterZone-Out", "GB"),
                ("EUW1-DataTransfer-Regional-Bytes", "InterZone-In", "GB"),
                ("EUW1-DataTransfer-Out-Bytes", "RunInstances", "GB"),
                ("EUW1-BoxUsage:m6i.large", "RunInstances", "Hrs"),
            ]
            .map(|(usage_type, operation, unit)| {
                let mut line = bills::ec2_line(usage_type, operation, &resource, start);
                line.unit = unit;
                line.amount = bills::gigabytes(((instance as u64 + 1) * 7_919 + hour as u64) << 12);
                line.cost = bills::cost(&line.amount, "0.01");
                line
            })
        })
    })
}

/// Peak resident memory (KiB) and seconds of `command`, by `time -f`,
/// and the line before them on standard error (tollgate's summary).
fn measured(command: &mut Command) -> anyhow::Result<(u64, f64, String)> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M %e"])
        .arg(command.get_program())
        .args(command.get_args());
    let output = timed.output().context("/usr/bin/time")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "{command:?}: {stderr}");
    let mut lines = stderr.lines().rev();
    let last = lines.next().context("no time output")?;
    let (kib, seconds) = last.split_once(' ').context("time output")?;
    Ok((
        kib.parse()?,
        seconds.parse()?,
        lines.next().unwrap_or_default().to_owned(),
    ))
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-reconcile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("metering"))?;
    let tollgate = tollgate_tests::tollgate::binary();
    println!("| line items | bill (gzip) | tollgate reconcile: peak RSS | time | gzip -dc (reference) | time / reference |");
    println!("|---|---|---|---|---|---|");
    for lines in [100_000, 1_000_000] {
        let path = dir.join(format!("cur-{lines}.csv.gz"));
        bills::write_cur_csv(&path, bill(lines / (4 * INSTANCES)))?;
        let size = std::fs::metadata(&path)?.len();
        let (kib, seconds, summary) = measured(
            Command::new(&tollgate)
                .args(["reconcile", "--month", "2026-10", "--bill"])
                .arg(&path)
                .args(["--parquet"])
                .arg(dir.join("metering"))
                .arg("--out")
                .arg(dir.join(format!("out-{lines}"))),
        )?;
        ensure!(
            summary.contains(&format!("{} network line items", lines * 3 / 4)),
            "not every line item was read: {summary}"
        );
        let (_, reference, _) = measured(
            Command::new("sh").args(["-c", &format!("gzip -dc {} > /dev/null", path.display())]),
        )?;
        println!(
            "| {lines} | {:.1} MiB | {:.1} MiB | {seconds:.2} s | {reference:.2} s | {:.1} |",
            size as f64 / 1_048_576.0,
            kib as f64 / 1024.0,
            seconds / reference.max(0.01)
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    Ok(())
}
