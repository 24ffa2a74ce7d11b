//! Benchmark of the Parquet sink (run by `tests/scripts/bench-parquet.sh`):
//! rows per second written on one core and bytes per row, against ClickHouse
//! writing the same rows, in the same order, with `SELECT ... FORMAT Parquet`
//! (the reference), in the same run.
//!
//! Data: [`synthetic::cluster_records`] (1,242,000 records).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use tollgate::sink::parquet::ParquetSink;
use tollgate::sink::Batch;
use tollgate_tests::clickhouse::Dedicated;
use tollgate_tests::synthetic;

fn size(paths: &[std::path::PathBuf]) -> anyhow::Result<u64> {
    paths.iter().map(|p| Ok(std::fs::metadata(p)?.len())).sum()
}

/// The rows written by the `parquet` crate's `ArrowWriter`, from Arrow
/// batches of the sink's chunk size, then fsynced.
fn arrow_writer(batch: &Batch, path: &Path) -> anyhow::Result<()> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build();
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        file,
        std::sync::Arc::new(tollgate_schema::flow::arrow_schema()),
        Some(properties),
    )?;
    for columns in batch
        .rows
        .record_batches(tollgate::sink::parquet::CHUNK_ROWS)
    {
        writer.write(&columns?)?;
    }
    writer.into_inner()?.sync_all()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let rows = synthetic::cluster_records(u32::try_from(now - 3 * 3600)?);
    let n = rows.len() as f64;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-parquet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = ParquetSink::open(&dir.join("tollgate"))?;
    let batch = Batch {
        seq: 1,
        token: "bench-1".into(),
        resume_at: Default::default(),
        rows: rows.iter().collect(),
    };

    drop(rows);
    // Where the time goes: reading the batch's compact form into columns
    // alone, in the sink's chunks.
    let started = Instant::now();
    let mut chunks = batch.rows.chunks(tollgate::sink::parquet::CHUNK_ROWS);
    while let Some(columns) = chunks.next_chunk() {
        columns?;
    }
    let columns_seconds = started.elapsed().as_secs_f64();

    // A second reference: the `parquet` crate's own Arrow writer over the
    // same rows as Arrow batches (zstd level 3, dictionaries, statistics).
    let mut arrow_writer_best = f64::MAX;
    let arrow_writer_file = dir.join("arrow-writer.parquet");
    for _ in 0..3 {
        let started = Instant::now();
        arrow_writer(&batch, &arrow_writer_file)?;
        arrow_writer_best = arrow_writer_best.min(started.elapsed().as_secs_f64());
    }
    let arrow_writer_size = std::fs::metadata(&arrow_writer_file)?.len();

    // Best of three: the machine is shared.
    let mut best = f64::MAX;
    let mut files = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        files = sink.write_batch(&batch)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    let ours = size(&files)?;

    // ClickHouse rewrites exactly those rows, in that order, as Parquet.
    let server = Dedicated::start("bench-parquet")?;
    let reference = dir.join("clickhouse.parquet");
    let mut reference_best = f64::MAX;
    for _ in 0..3 {
        let query = format!(
            "SELECT * EXCEPT (date, hour) FROM file('{}/**/*.parquet', Parquet) FORMAT Parquet",
            dir.join("tollgate").display()
        );
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-sS", "--fail", "-o"])
            .arg(&reference)
            .arg(format!(
                "{}/?output_format_parquet_compression_method=zstd",
                server.server().url()
            ))
            .args(["--data-binary", &query])
            .status()
            .context("curl")?;
        ensure!(status.success(), "ClickHouse could not write Parquet");
        reference_best = reference_best.min(started.elapsed().as_secs_f64());
    }
    let theirs = std::fs::metadata(Path::new(&reference))?.len();

    println!("{} rows, {} file(s)", batch.rows.len(), files.len());
    println!("  reference: ClickHouse SELECT ... FORMAT Parquet (zstd)  {reference_best:>6.2} s {:>10.0} rows/s {:>6.2} bytes/row", n / reference_best, theirs as f64 / n);
    println!("  tollgate ParquetSink (one core)                        {best:>6.2} s {:>10.0} rows/s {:>6.2} bytes/row", n / best, ours as f64 / n);
    println!("  of which reading the compact form into columns         {columns_seconds:>6.2} s");
    println!("  the parquet crate's ArrowWriter, same rows             {arrow_writer_best:>6.2} s {:>10.0} rows/s {:>6.2} bytes/row", n / arrow_writer_best, arrow_writer_size as f64 / n);
    let mut compact = Vec::new();
    batch.rows.write_to(&mut compact);
    println!(
        "  the batch in compact form: {:.1} bytes/record (a FlowRecord: {} bytes plus shared names)",
        compact.len() as f64 / n,
        std::mem::size_of::<tollgate_schema::FlowRecord>()
    );
    println!(
        "  size ratio tollgate / ClickHouse: {:.2}x; speed ratio: {:.2}x",
        ours as f64 / theirs as f64,
        reference_best / best
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
