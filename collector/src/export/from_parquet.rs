//! A month's usage from a directory of the Parquet sink's files: the same
//! sums as the metering view, read batch by batch (only the thirteen
//! columns metering needs), never the whole month in memory.
//!
//! Only `date=YYYY-MM-DD` partitions of the month are opened; within them
//! each record is counted by its `observed_at`, as the view counts it.
//! Files written before records carried `local_provider` read it as empty.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{Month, Usage};

/// The text columns a usage row is keyed by, in [`Usage`]'s order (the
/// day comes from `observed_at`, the direction from which byte column is
/// read).
const USAGE_LABELS: [&str; 9] = [
    "cluster",
    "local_team",
    "local_namespace",
    "local_workload_kind",
    "local_workload",
    "local_region",
    "remote_region",
    "category",
    "local_provider",
];

/// Columns files of earlier versions may lack (empty there).
const OPTIONAL_LABELS: [&str; 2] = ["local_provider", "local_provider_id"];

const MILLIS_PER_DAY: i64 = 86_400_000;

/// A file or directory that cannot be read as the Parquet sink's output.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ReadError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn error(path: &Path, message: impl ToString) -> ReadError {
    ReadError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The `.parquet` files of the month's partitions under `dir`, sorted.
/// Files still being written (`.parquet.tmp`) are not among them.
pub fn month_files(dir: &Path, month: Month) -> Result<Vec<PathBuf>, ReadError> {
    let prefix = format!("date={month}-");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| error(dir, e))? {
        let entry = entry.map_err(|e| error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            collect_parquet(&entry.path(), &mut files)?;
        }
    }
    files.sort();
    Ok(files)
}

fn collect_parquet(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| error(path, e))? {
            collect_parquet(&entry.map_err(|e| error(path, e))?.path(), files)?;
        }
    } else if path.extension().is_some_and(|e| e == "parquet") {
        files.push(path.to_owned());
    }
    Ok(())
}

/// Bytes of one file set summed per day, direction and `N` text columns
/// (the labels): what metering sums, for any choice of labels.
#[derive(Debug)]
pub struct LabelSums<const N: usize> {
    labels: [&'static str; N],
    /// Bytes, and those of connections the local endpoint opened, per
    /// label values, direction (`out`, `in`) and day (days since
    /// 1970-01-01).
    sums: HashMap<([String; N], &'static str, i64), (u64, u64)>,
    /// Records read (all of them, also those outside the month).
    pub records: u64,
}

/// One sum of a [`LabelSums`]: the label values, the direction, the day,
/// the bytes and those of connections the local endpoint opened.
pub type LabelSum<const N: usize> = ([String; N], &'static str, chrono::NaiveDate, u64, u64);

impl<const N: usize> LabelSums<N> {
    /// Sums keyed by the columns `labels`.
    pub fn new(labels: [&'static str; N]) -> Self {
        LabelSums {
            labels,
            sums: HashMap::new(),
            records: 0,
        }
    }

    /// Adds one file's records observed in `month`.
    pub fn add_file(&mut self, path: &Path, month: Month) -> Result<(), ReadError> {
        let file = File::open(path).map_err(|e| error(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| error(path, e))?;
        let wanted = self
            .labels
            .iter()
            .chain(&["observed_at", "bytes_sent", "bytes_received", "initiator"])
            .filter_map(|name| match builder.schema().index_of(name) {
                Ok(index) => Some(Ok(index)),
                Err(_) if OPTIONAL_LABELS.contains(name) => None,
                Err(_) => Some(Err(error(
                    path,
                    format!("no column {name}: not a tollgate flows file"),
                ))),
            })
            .collect::<Result<Vec<usize>, ReadError>>()?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(65_536)
            .build()
            .map_err(|e| error(path, e))?;
        let (start, end) = month.unix_range();
        let range = start * 1000..end * 1000;
        for batch in reader {
            let batch = batch.map_err(|e| error(path, e))?;
            self.add_batch(&batch, &range).map_err(|m| error(path, m))?;
        }
        Ok(())
    }

    /// Sums a batch by the dictionary keys of its labels first (a few
    /// distinct keys per batch), then merges those few sums by name.
    fn add_batch(
        &mut self,
        batch: &RecordBatch,
        range: &std::ops::Range<i64>,
    ) -> Result<(), String> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name}"))
        };
        let labels = self
            .labels
            .iter()
            .map(|name| match batch.column_by_name(name) {
                None if OPTIONAL_LABELS.contains(name) => Ok(Labels::Absent),
                _ => Labels::new(name, column(name)?.as_ref()),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let observed = column("observed_at")?;
        if observed.data_type() != &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())) {
            return Err(format!(
                "observed_at is {}, not a UTC millisecond timestamp",
                observed.data_type()
            ));
        }
        let observed = observed.as_primitive::<TimestampMillisecondType>();
        let bytes = |name: &str| -> Result<_, String> {
            column(name)?
                .as_primitive_opt::<UInt64Type>()
                .cloned()
                .ok_or_else(|| format!("{name} is not UInt64"))
        };
        let (sent, received) = (bytes("bytes_sent")?, bytes("bytes_received")?);
        let initiator = Labels::new("initiator", column("initiator")?.as_ref())?;
        // Sent and received, then the same of connections opened locally.
        let mut by_keys: HashMap<([u32; N], i64), [u64; 4]> = HashMap::new();
        for row in 0..batch.num_rows() {
            let at = observed.value(row);
            if !range.contains(&at) {
                continue;
            }
            let key = (
                std::array::from_fn(|i| labels[i].key(row)),
                at.div_euclid(MILLIS_PER_DAY),
            );
            let sum = by_keys.entry(key).or_default();
            let (sent, received) = (sent.value(row), received.value(row));
            sum[0] += sent;
            sum[1] += received;
            if initiator.text(initiator.key(row)) == "local" {
                sum[2] += sent;
                sum[3] += received;
            }
        }
        self.records += batch.num_rows() as u64;
        for ((key, day), [sent, received, sent_opened, received_opened]) in by_keys {
            for (direction, bytes, initiated) in [
                ("out", sent, sent_opened),
                ("in", received, received_opened),
            ] {
                let names = std::array::from_fn(|i| labels[i].text(key[i]).to_owned());
                let sum = self.sums.entry((names, direction, day)).or_default();
                sum.0 += bytes;
                sum.1 += initiated;
            }
        }
        Ok(())
    }

    /// The sums with bytes.
    pub fn into_sums(self) -> impl Iterator<Item = LabelSum<N>> {
        self.sums
            .into_iter()
            .filter(|(_, (bytes, _))| *bytes > 0)
            .map(|((names, direction, day), (bytes, initiated))| {
                (
                    names,
                    direction,
                    super::month::unix_day(day),
                    bytes,
                    initiated,
                )
            })
    }
}

/// Sums of one file set, keyed like [`Usage`] without its bytes.
#[derive(Debug)]
pub struct UsageSums(LabelSums<9>);

impl Default for UsageSums {
    fn default() -> Self {
        UsageSums(LabelSums::new(USAGE_LABELS))
    }
}

impl UsageSums {
    /// Adds one file's records observed in `month`.
    pub fn add_file(&mut self, path: &Path, month: Month) -> Result<(), ReadError> {
        self.0.add_file(path, month)
    }

    /// Records read (all of them, also those outside the month).
    pub fn records(&self) -> u64 {
        self.0.records
    }

    /// The usage rows with bytes.
    pub fn into_usage(self) -> impl Iterator<Item = Usage> {
        self.0.into_sums().map(
            |(labels, direction, day, bytes, initiated_bytes)| {
                let [cluster, team, namespace, workload_kind, workload, region, remote_region, category, provider] =
                    labels;
                Usage {
                    day,
                    remote_region,
                    cluster,
                    team,
                    namespace,
                    workload_kind,
                    workload,
                    region,
                    category,
                    direction: direction.to_owned(),
                    bytes,
                    initiated_bytes,
                    provider,
                }
            },
        )
    }
}

/// One text column, as the sink writes it (dictionary-encoded) or plain
/// (files rewritten by another tool): each row's value as a small key.
enum Labels<'a> {
    Dictionary {
        keys: &'a arrow_array::PrimitiveArray<Int32Type>,
        values: &'a arrow_array::StringArray,
    },
    Plain(&'a arrow_array::StringArray),
    /// A column the file does not have: empty in every row.
    Absent,
}

impl<'a> Labels<'a> {
    fn new(name: &str, array: &'a dyn Array) -> Result<Labels<'a>, String> {
        if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>() {
            if let Some(values) = dictionary.values().as_string_opt::<i32>() {
                return Ok(Labels::Dictionary {
                    keys: dictionary.keys(),
                    values,
                });
            }
        }
        array
            .as_string_opt::<i32>()
            .map(Labels::Plain)
            .ok_or_else(|| format!("{name} is {}, not text", array.data_type()))
    }

    /// A key that equals another row's exactly when their texts are equal
    /// (dictionary keys may repeat a value; merging by text fixes that).
    fn key(&self, row: usize) -> u32 {
        match self {
            Labels::Dictionary { keys, .. } => keys.value(row) as u32,
            Labels::Plain(_) => row as u32,
            Labels::Absent => 0,
        }
    }

    fn text(&self, key: u32) -> &str {
        match self {
            Labels::Dictionary { values, .. } => values.value(key as usize),
            Labels::Plain(values) => values.value(key as usize),
            Labels::Absent => "",
        }
    }
}
