//! Where records go.
//!
//! A sink implements one small trait, [`Sink`]: write a batch, and say
//! whether a failure is worth retrying. Everything that makes delivery
//! exactly-once is shared by every sink: [`batch`] (a batch's identity is
//! fixed when it is formed), [`spool`] (batches are durable before they are
//! sent and deleted only once acknowledged) and [`deliver`] (the oldest
//! batch first, retried with capped, jittered exponential backoff, never
//! dropped).

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

/// The sinks a configuration asks for (ClickHouse, Parquet files, or
/// both), fed the same batches: a batch is delivered once every one has
/// it. Each makes a resend harmless, so retrying after only one succeeded
/// rewrites that one idempotently.
pub struct Configured {
    /// ClickHouse, if configured.
    pub clickhouse: Option<clickhouse::ClickHouseSink>,
    /// Parquet files, if configured.
    pub parquet: Option<parquet::ParquetSink>,
}

impl Sink for Configured {
    fn name(&self) -> &'static str {
        match (&self.clickhouse, &self.parquet) {
            (Some(_), Some(_)) => "clickhouse+parquet",
            (Some(_), None) => "clickhouse",
            _ => "parquet",
        }
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        if let Some(sink) = &self.clickhouse {
            sink.write(batch).await?;
        }
        if let Some(sink) = &self.parquet {
            sink.write(batch).await?;
        }
        Ok(())
    }
}
