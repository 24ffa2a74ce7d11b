//! Where records go.
//!
//! A sink implements one small trait, [`Sink`]: write a batch, and say
//! whether a failure is worth retrying. Everything that makes delivery
//! exactly-once is shared by every sink: [`batch`] (a batch's identity is
//! fixed when it is formed), [`spool`] (batches are durable before they are
//! sent and deleted only once every sink acknowledged them, each sink's
//! progress kept apart) and [`deliver`] (per sink, the oldest batch first,
//! retried with capped, jittered exponential backoff, never dropped).

pub mod batch;
pub mod clickhouse;
pub mod deliver;
pub mod parquet;
pub mod spool;

use std::future::Future;

pub use batch::Batch;

/// A failed write.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct WriteError {
    /// Which sink.
    pub sink: &'static str,
    /// What happened.
    pub message: String,
    /// Whether trying again later can succeed (a network error, a server
    /// restarting) or needs a person (a schema mismatch, bad credentials).
    /// Either way the batch stays in the spool; this decides how loudly the
    /// failure is reported.
    pub transient: bool,
}

impl WriteError {
    /// `sink` could not read spooled batch `seq` back (a corrupt file): no
    /// retry helps.
    pub fn unreadable_batch(sink: &'static str, seq: u64, error: &dyn std::fmt::Display) -> Self {
        Self {
            sink,
            message: format!("spooled batch {seq} cannot be read: {error}"),
            transient: false,
        }
    }
}

/// A destination for batches of flow records.
pub trait Sink {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Write `batch` completely, or fail without a partial write visible
    /// twice: sinks make a resent batch harmless (ClickHouse deduplicates by
    /// the batch's token).
    fn write(&self, batch: &Batch) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// The ClickHouse sink's name (logs, the spool's cursor, metrics).
pub const CLICKHOUSE: &str = "clickhouse";
/// The Parquet sink's name.
pub const PARQUET: &str = "parquet";

/// The names of the sinks a configuration asks for, ClickHouse first.
pub fn names(clickhouse: bool, parquet: bool) -> Vec<&'static str> {
    [clickhouse.then_some(CLICKHOUSE), parquet.then_some(PARQUET)]
        .into_iter()
        .flatten()
        .collect()
}

/// The sinks a configuration asks for (ClickHouse, Parquet files, or
/// both), fed the same batches, each at its own pace: a batch is forgotten
/// once every one has it, and one failing never makes another write a
/// batch again.
pub struct Configured {
    /// ClickHouse, if configured.
    pub clickhouse: Option<clickhouse::ClickHouseSink>,
    /// Parquet files, if configured.
    pub parquet: Option<parquet::ParquetSink>,
}

/// One of the [`Configured`] sinks.
pub enum OneSink<'a> {
    /// ClickHouse.
    ClickHouse(&'a clickhouse::ClickHouseSink),
    /// Parquet files.
    Parquet(&'a parquet::ParquetSink),
}

impl Configured {
    /// Each sink, ClickHouse first.
    pub fn each(&self) -> Vec<OneSink<'_>> {
        let clickhouse = self.clickhouse.as_ref().map(OneSink::ClickHouse);
        let parquet = self.parquet.as_ref().map(OneSink::Parquet);
        clickhouse.into_iter().chain(parquet).collect()
    }

    /// Their names.
    pub fn names(&self) -> Vec<&'static str> {
        names(self.clickhouse.is_some(), self.parquet.is_some())
    }
}

impl Sink for OneSink<'_> {
    fn name(&self) -> &'static str {
        match self {
            OneSink::ClickHouse(sink) => sink.name(),
            OneSink::Parquet(sink) => sink.name(),
        }
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        match self {
            OneSink::ClickHouse(sink) => sink.write(batch).await,
            OneSink::Parquet(sink) => sink.write(batch).await,
        }
    }
}
