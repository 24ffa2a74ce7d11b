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
//! Columns follow the schema crate's Arrow schema (stored in the file, so
//! readers restore its types): zstd, dictionary encoding, column
//! statistics; `encode` builds the pages from the batch's compact form.
//! IPs are text in ClickHouse's IPv6 form (`toIPv6(remote_ip)` turns them
//! back into `IPv6`).

mod encode;
mod hybrid;

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;
use tollgate_schema::columns::ColumnValues;
use tollgate_schema::flow::arrow_schema;

use self::encode::RowGroup;
use crate::sink::{Batch, Sink, WriteError};

/// Records decoded from the compact form at a time (their columns stay in
/// the cache while they are encoded).
pub const CHUNK_ROWS: usize = 4096;

/// The Parquet sink.
pub struct ParquetSink {
    dir: PathBuf,
    schema: Arc<SchemaDescriptor>,
    properties: Arc<WriterProperties>,
    /// Position of `observed_at`, which decides a row's partition.
    observed_at: usize,
}

impl ParquetSink {
    /// Write under `dir` (created if missing), after removing the leftovers
    /// of interrupted writes.
    pub fn open(dir: &Path) -> Result<Self, WriteError> {
        let broken = |message: String| WriteError {
            sink: "parquet",
            message,
            transient: false,
        };
        fs::create_dir_all(dir).map_err(|e| failure(dir, "creating the directory", &e))?;
        remove_unfinished(dir)?;
        let arrow = arrow_schema();
        let schema = ArrowSchemaConverter::new()
            .convert(&arrow)
            .map_err(|e| broken(e.to_string()))?;
        let mut properties = WriterProperties::builder()
            .set_created_by("tollgate".to_owned())
            .build();
        add_encoded_arrow_schema_to_metadata(&arrow, &mut properties);
        let observed_at = tollgate_schema::COLUMNS
            .iter()
            .position(|c| c.name == "observed_at")
            .ok_or_else(|| broken("the flow record has no `observed_at` column".into()))?;
        Ok(Self {
            dir: dir.to_owned(),
            schema: Arc::new(schema),
            properties: Arc::new(properties),
            observed_at,
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

    /// The batch's records, read from their compact form a chunk at a time
    /// (the batch is never held as full records), each chunk split where
    /// the hour changes.
    fn write_records(
        &self,
        batch: &Batch,
        files: &mut BTreeMap<u32, PartitionFile>,
    ) -> Result<(), WriteError> {
        let names = batch.rows.names();
        let mut chunks = batch.rows.chunks(CHUNK_ROWS);
        while let Some(columns) = chunks.next_chunk() {
            let columns =
                columns.map_err(|e| WriteError::unreadable_batch("parquet", batch.seq, &e))?;
            let values = columns.values();
            let ColumnValues::Timestamp(seconds) = values[self.observed_at] else {
                return Err(WriteError {
                    sink: "parquet",
                    message: "`observed_at` is not a timestamp column".into(),
                    transient: false,
                });
            };
            let mut start = 0;
            for run in seconds.chunk_by(|a, b| a / 3600 == b / 3600) {
                let hour = run[0] / 3600;
                let file = match files.entry(hour) {
                    Entry::Occupied(file) => file.into_mut(),
                    Entry::Vacant(slot) => slot.insert(self.create(&batch.token, hour)?),
                };
                let slice = values.map(|v| v.slice(start..start + run.len()));
                file.write(&slice, names)?;
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
        let writer =
            SerializedFileWriter::new(file, self.schema.root_schema_ptr(), self.properties.clone())
                .map_err(|e| failure(&tmp, "starting", &e))?;
        let group = RowGroup::new(&self.schema).map_err(|e| failure(&tmp, "starting", &e))?;
        Ok(PartitionFile {
            tmp,
            path,
            dir,
            writer,
            group,
        })
    }
}

/// A file being written into one partition.
struct PartitionFile {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    writer: SerializedFileWriter<File>,
    group: RowGroup,
}

impl PartitionFile {
    /// Adds rows, writing the row group out when it is full.
    fn write(
        &mut self,
        values: &[ColumnValues<'_>],
        names: &[tollgate_schema::Name],
    ) -> Result<(), WriteError> {
        self.group
            .push(values, names)
            .map_err(|e| failure(&self.tmp, "encoding", &e))?;
        if self.group.is_full() {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Writes out the rows still held.
    fn finish(&mut self) -> Result<(), WriteError> {
        if self.group.rows() > 0 {
            self.write_row_group()?;
        }
        Ok(())
    }

    fn write_row_group(&mut self) -> Result<(), WriteError> {
        let mut group = self
            .writer
            .next_row_group()
            .map_err(|e| failure(&self.tmp, "starting a row group", &e))?;
        self.group
            .write_to(&mut group)
            .and_then(|()| group.close().map(drop))
            .map_err(|e| failure(&self.tmp, "writing", &e))
    }
}

/// Close, sync and rename every file into place; the files finished are
/// taken out of `files`, so what is left there is to be removed.
fn finish(files: &mut BTreeMap<u32, PartitionFile>) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    while let Some((_, mut file)) = files.pop_first() {
        let done = file.finish();
        let PartitionFile {
            tmp,
            path,
            dir,
            writer,
            ..
        } = file;
        let done = done
            .and_then(|()| {
                writer
                    .into_inner()
                    .map_err(|e| failure(&tmp, "finishing", &e))
            })
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
        super::PARQUET
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
    use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tollgate_schema::{Category, FlowRecord, Initiator, Name, Protocol, RemoteKind};

    /// Records that reach every value kind's corners: many distinct names
    /// and addresses (enough for the address dictionary to fill and start
    /// a second row group), IPv4 and IPv6, every category, the largest
    /// counters and ids, both flags, runs of repeats.
    fn varied_records(count: u32, observed_at: u32) -> Vec<FlowRecord> {
        let pods: Vec<Name> = (0..500).map(|i| Name::from(format!("pod-{i}"))).collect();
        let empty = Name::from("");
        let name = |s: &str| Name::from(s);
        (0..count)
            .map(|i| {
                let remote = if i % 3 == 0 {
                    Ipv4Addr::from(0x0a00_0000 + i).to_ipv6_mapped()
                } else {
                    Ipv6Addr::from(
                        0x2001_0db8_u128 << 96 | u128::from(i.wrapping_mul(2_654_435_761)),
                    )
                };
                FlowRecord {
                    observed_at: observed_at + (i / 7000) * 10,
                    interval_seconds: 10,
                    cluster: name("c"),
                    node: name(if i % 2 == 0 { "node-a" } else { "node-b" }),
                    family: if i % 3 == 0 {
                        tollgate_schema::Family::Ipv4
                    } else {
                        tollgate_schema::Family::Ipv6
                    },
                    protocol: [Protocol::TCP, Protocol::UDP, Protocol(47)][(i % 3) as usize],
                    local_ip: Ipv4Addr::from(0x0a01_0000 + i / 40).to_ipv6_mapped(),
                    local_port: (i % 65_536) as u16,
                    local_pod: pods[(i / 40 % 500) as usize].clone(),
                    local_namespace: name("ns"),
                    local_workload_kind: name("Deployment"),
                    local_workload: name("w"),
                    local_team: name("t"),
                    local_zone: name("z1"),
                    local_region: name("r1"),
                    local_provider: name("aws"),
                    local_provider_id: name("aws:///r1-a/i-0abc"),
                    remote_ip: remote,
                    remote_port: 443,
                    remote_kind: RemoteKind::ALL[(i % 6) as usize],
                    remote_pod: if i % 5 == 0 {
                        pods[(i % 500) as usize].clone()
                    } else {
                        empty.clone()
                    },
                    remote_namespace: empty.clone(),
                    remote_workload_kind: empty.clone(),
                    remote_workload: empty.clone(),
                    remote_team: empty.clone(),
                    remote_node: empty.clone(),
                    remote_zone: empty.clone(),
                    remote_region: empty.clone(),
                    remote_cloud_provider: empty.clone(),
                    remote_cloud_service: empty.clone(),
                    remote_service: empty.clone(),
                    initiator: if i % 4 == 0 {
                        Initiator::Remote
                    } else {
                        Initiator::Local
                    },
                    bytes_sent: if i == 5 {
                        u64::MAX
                    } else {
                        u64::from(i) * 1500
                    },
                    bytes_received: u64::from(i % 7),
                    packets_sent: 1,
                    packets_received: u64::from(i / 1000),
                    category: Category::ALL[(i % 6) as usize],
                    ended: i % 9 == 0,
                    conntrack_id: u32::MAX - i,
                }
            })
            .collect()
    }

    #[test]
    fn files_read_back_as_the_records_arrow_columns() {
        let dir = std::env::temp_dir().join(format!("tollgate-parquet-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let sink = ParquetSink::open(&dir).unwrap();
        // 1,800,000,000 is 500,000 whole hours: one partition.
        let records = varied_records(70_000, 1_800_000_000);
        let batch = Batch {
            seq: 1,
            token: "t-1".into(),
            resume_at: Default::default(),
            rows: records.iter().collect(),
        };
        let files = sink.write_batch(&batch).unwrap();
        assert_eq!(files.len(), 1);

        let reader = SerializedFileReader::new(File::open(&files[0]).unwrap()).unwrap();
        let metadata = reader.metadata();
        assert!(
            metadata.num_row_groups() >= 2,
            "the address dictionary's limit splits row groups"
        );
        let column = |name: &str| {
            tollgate_schema::COLUMNS
                .iter()
                .position(|c| c.name == name)
                .unwrap()
        };
        let chunk = metadata.row_group(0).column(column("remote_ip"));
        assert!(chunk.dictionary_page_offset().is_some());
        assert_eq!(chunk.statistics().unwrap().null_count_opt(), Some(0));
        // Unsigned statistics read back as unsigned: the ids lie above
        // i32::MAX.
        let arrow = arrow_schema();
        let ids = StatisticsConverter::try_new(
            "conntrack_id",
            &arrow,
            metadata.file_metadata().schema_descr(),
        )
        .unwrap();
        let row_groups = metadata.row_groups().iter();
        let mins = ids.row_group_mins(row_groups.clone()).unwrap();
        let maxes = ids.row_group_maxes(row_groups).unwrap();
        let mins = mins
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap();
        let maxes = maxes
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap();
        assert_eq!(maxes.value(0), u32::MAX);
        assert_eq!(mins.iter().flatten().min(), Some(u32::MAX - 69_999));
        assert!(mins.iter().zip(maxes.iter()).all(|(a, b)| a <= b));

        let read = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap())
            .unwrap()
            .with_batch_size(1000)
            .build()
            .unwrap();
        let expected = batch.rows.record_batches(1000);
        let mut rows = 0;
        for (read, expected) in read.zip(expected) {
            let (read, expected) = (read.unwrap(), expected.unwrap());
            assert_eq!(read.schema(), expected.schema());
            for (i, column) in tollgate_schema::COLUMNS.iter().enumerate() {
                assert_eq!(
                    read.column(i),
                    expected.column(i),
                    "column {} at row {rows}",
                    column.name
                );
            }
            rows += read.num_rows();
        }
        assert_eq!(rows, records.len());
        fs::remove_dir_all(&dir).unwrap();
    }

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
