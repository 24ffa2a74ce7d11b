//! Sends spooled batches to each sink, oldest first, until the sink has
//! every one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::spool::{Spool, SpoolError};
use super::{Configured, Sink, WriteError};

/// How retries back off.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First wait.
    pub min_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
    /// Stop retrying a batch after waiting this long in total (it stays in
    /// the spool); `None` retries without end.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            give_up_after: None,
        }
    }
}

/// What delivery to one sink has done, readable while it runs (for
/// metrics).
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// Batches the sink acknowledged.
    pub batches: AtomicU64,
    /// Their records.
    pub records: AtomicU64,
    /// Failed writes that were retried.
    pub retries: AtomicU64,
}

/// Why delivery stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A batch could not be delivered within the policy's time; it is still
    /// in the spool.
    #[error("gave up delivering batch {seq} (it stays in the spool for the next run)")]
    GaveUp {
        /// The batch.
        seq: u64,
        /// The last failure.
        source: WriteError,
    },
}

/// Deliver every spooled batch `sink` does not have yet, in order. A
/// failing write is retried (jittered exponential backoff, capped) without
/// end, or until the policy gives up: the spool's cursor for the sink moves
/// only when the sink has the batch, and the batch leaves the spool when
/// every sink has it.
/// The spool is locked only to read or forget a batch, never while the sink
/// writes, so batches can be added meanwhile. Cancelling the returned future
/// is safe: an unacknowledged batch stays spooled and its resend is
/// harmless. Returns the number of batches delivered.
pub async fn drain<S: Sink + Sync>(
    spool: &Mutex<Spool>,
    sink: &S,
    policy: RetryPolicy,
    counts: &DeliveryCounts,
) -> Result<u64, DeliveryError> {
    let lock = || spool.lock().unwrap_or_else(PoisonError::into_inner);
    let mut delivered = 0;
    loop {
        let Some(batch) = lock().next_for(sink.name())? else {
            return Ok(delivered);
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_jitter()
            .without_max_times()
            .with_total_delay(policy.give_up_after);
        (|| sink.write(&batch))
            .retry(backoff)
            .notify(|error: &WriteError, wait: Duration| {
                counts.retries.fetch_add(1, Ordering::Relaxed);
                let sink = sink.name();
                if error.transient {
                    tracing::warn!(sink, %error, seq = batch.seq, retry_in = ?wait, "batch not delivered; will retry");
                } else {
                    tracing::error!(sink, %error, seq = batch.seq, retry_in = ?wait, "batch refused; it stays spooled and is retried until this is fixed");
                }
            })
            .await
            .map_err(|source| DeliveryError::GaveUp {
                seq: batch.seq,
                source,
            })?;
        lock().ack(sink.name(), batch.seq)?;
        counts.batches.fetch_add(1, Ordering::Relaxed);
        counts
            .records
            .fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
        delivered += 1;
    }
}

/// Deliver every spooled batch to every sink in `sinks`, the sinks side by
/// side: one that fails holds back and re-sends nothing to the others.
/// Returns the batches delivered, summed over the sinks; the first error
/// once every sink has stopped.
/// `counts` go with the sinks in [`Configured::each`]'s order.
pub async fn drain_each(
    spool: &Mutex<Spool>,
    sinks: &Configured,
    policy: RetryPolicy,
    counts: &[&DeliveryCounts],
) -> Result<u64, DeliveryError> {
    let each = sinks.each();
    let results = futures::future::join_all(
        each.iter()
            .zip(counts)
            .map(|(sink, counts)| drain(spool, sink, policy, counts)),
    )
    .await;
    let mut delivered = 0;
    for result in results {
        delivered += result?;
    }
    Ok(delivered)
}
