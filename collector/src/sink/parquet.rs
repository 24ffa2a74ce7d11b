//! Writes batches as Parquet files, one per batch and hour, in Hive-style
//! partitions: `<dir>/date=YYYY-MM-DD/hour=HH/<token>.parquet`.
//!
//! A file is written under `<name>.parquet.tmp`, fsynced, renamed into
//! place and its directory fsynced: a reader never sees a half-written
//! file. Its name is the batch's token (origin, run id, sequence), unique
//! per cluster, node and batch; a batch resent after a crash writes the same
//! names again, replacing rather than duplicating. On start, leftover
//! `.tmp` files (writes a crash interrupted, whose batches are still in the
//! spool) are removed.
//!
//! Columns follow the schema crate's Arrow schema: ZSTD, dictionary
//! encoding, column statistics. IPs are text in ClickHouse's IPv6 form
//! (`toIPv6(remote_ip)` turns them back into `IPv6`).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::TimestampMillisecondArray;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tollgate_schema::flow::arrow_schema;

use crate::sink::{Batch, Sink, WriteError};

/// Records per Arrow batch handed to the writer (a few MiB of records).
pub const CHUNK_ROWS: usize = 4096;

/// The Parquet sink.
pub struct ParquetSink {
    dir: PathBuf,
    properties: WriterProperties,
}

impl ParquetSink {
    /// Write under `dir` (created if missing), after removing the leftovers
    /// of interrupted writes.
    pub fn open(dir: &Path) -> Result<Self, WriteError> {
        fs::create_dir_all(dir).map_err(|e| failure(dir, "creating the directory", &e))?;
        remove_unfinished(dir)?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| {
                WriteError {
                    sink: "parquet",
                    message: e.to_string(),
                    transient: false,
                }
            })?))
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by("tollgate".to_owned())
            .build();
        Ok(Self {
            dir: dir.to_owned(),
            properties,
        })
    }

    /// Write one batch; returns the files written.
    pub fn write_batch(&self, batch: &Batch) -> Result<Vec<PathBuf>, WriteError> {
        // Keyed by the hour since the epoch; usually one.
        let mut files: BTreeMap<u32, PartitionFile> = BTreeMap::new();
        let written = self
            .write_records(batch, &mut files)
            .and_then(|()| finish(&mut files));
        // Never leave a partial file behind, even a temporary one.
        for file in files.values() {
            let _ = fs::remove_file(&file.tmp);
        }
        written
    }

    /// The batch's records, turned into Arrow columns straight from their
    /// compact form a chunk at a time (the batch is never held as full
    /// records, and each chunk's columns are built from bytes still in the
    /// cache), each chunk split where the hour changes.
    fn write_records(
        &self,
        batch: &Batch,
        files: &mut BTreeMap<u32, PartitionFile>,
    ) -> Result<(), WriteError> {
        for columns in batch.rows.record_batches(CHUNK_ROWS) {
            let columns =
                columns.map_err(|e| WriteError::unreadable_batch("parquet", batch.seq, &e))?;
            let times = columns
                .column_by_name("observed_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
                .ok_or_else(|| WriteError {
                    sink: "parquet",
                    message: "the Arrow schema has no millisecond `observed_at` column".into(),
                    transient: false,
                })?;
            let hours: Vec<u32> = times
                .values()
                .iter()
                .map(|ms| u32::try_from(ms / 3_600_000).unwrap_or(0))
                .collect();
            let mut start = 0;
            for run in hours.chunk_by(|a, b| a == b) {
                let file = match files.entry(run[0]) {
                    Entry::Occupied(file) => file.into_mut(),
                    Entry::Vacant(slot) => slot.insert(self.create(&batch.token, run[0])?),
                };
                file.writer
                    .write(&columns.slice(start, run.len()))
                    .map_err(|e| failure(&file.tmp, "writing", &e))?;
                start += run.len();
            }
        }
        Ok(())
    }

    /// A new temporary file in the partition of `hour_since_epoch`.
    fn create(&self, token: &str, hour_since_epoch: u32) -> Result<PartitionFile, WriteError> {
        let (date, hour) = partition(hour_since_epoch * 3600);
        let dir = self
            .dir
            .join(format!("date={date}"))
            .join(format!("hour={hour}"));
        fs::create_dir_all(&dir).map_err(|e| failure(&dir, "creating a partition", &e))?;
        let path = dir.join(format!("{token}.parquet"));
        let tmp = dir.join(format!("{token}.parquet.tmp"));
        let file = File::create(&tmp).map_err(|e| failure(&tmp, "creating", &e))?;
        let writer = ArrowWriter::try_new(
            file,
            Arc::new(arrow_schema()),
            Some(self.properties.clone()),
        )
        .map_err(|e| failure(&tmp, "starting", &e))?;
        Ok(PartitionFile {
            tmp,
            path,
            dir,
            writer,
        })
    }
}

/// A file being written into one partition.
struct PartitionFile {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    writer: ArrowWriter<File>,
}

/// Close, sync and rename every file into place; the files finished are
/// taken out of `files`, so what is left there is to be removed.
fn finish(files: &mut BTreeMap<u32, PartitionFile>) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    while let Some((_, file)) = files.pop_first() {
        let PartitionFile {
            tmp,
            path,
            dir,
            writer,
        } = file;
        let done = writer
            .into_inner()
            .map_err(|e| failure(&tmp, "finishing", &e))
            .and_then(|f| f.sync_all().map_err(|e| failure(&tmp, "syncing", &e)))
            .and_then(|()| {
                fs::rename(&tmp, &path).map_err(|e| failure(&path, "renaming into place", &e))
            })
            .and_then(|()| {
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| failure(&dir, "syncing the directory", &e))
            });
        if let Err(error) = done {
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        written.push(path);
    }
    Ok(written)
}

impl Sink for ParquetSink {
    fn name(&self) -> &'static str {
        "parquet"
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        self.write_batch(batch).map(drop)
    }
}

/// `(YYYY-MM-DD, HH)` of a UTC timestamp.
fn partition(observed_at: u32) -> (String, String) {
    let time = chrono::DateTime::from_timestamp(i64::from(observed_at), 0).unwrap_or_default();
    (
        time.format("%Y-%m-%d").to_string(),
        time.format("%H").to_string(),
    )
}

fn failure(path: &Path, action: &str, error: &dyn std::fmt::Display) -> WriteError {
    WriteError {
        sink: "parquet",
        message: format!("{action} {}: {error}", path.display()),
        // A full disk or a permission problem may be fixed while the
        // batches wait in the spool.
        transient: true,
    }
}

fn remove_unfinished(dir: &Path) -> Result<(), WriteError> {
    let entries = fs::read_dir(dir).map_err(|e| failure(dir, "listing", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| failure(dir, "listing", &e))?;
        let path = entry.path();
        if path.is_dir() {
            remove_unfinished(&path)?;
        } else if path.to_string_lossy().ends_with(".parquet.tmp") {
            tracing::info!(file = %path.display(), "removing a file an interrupted write left");
            fs::remove_file(&path).map_err(|e| failure(&path, "removing", &e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_date_and_hour() {
        assert_eq!(partition(0), ("1970-01-01".to_owned(), "00".to_owned()));
        // 2026-11-22 23:59:59 UTC
        assert_eq!(
            partition(1_795_391_999),
            ("2026-11-22".to_owned(), "23".to_owned())
        );
    }
}
