//! Records into batches, batches into the spool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_schema::compact::Rows;
use tollgate_schema::FlowView;

use super::metrics::Metrics;
use crate::sink::batch::{Batch, Resume, TokenMaker};
use crate::sink::spool::Spool;

/// Collects records (each in compact form as it arrives, its names found
/// by address: they come from the agent's interners,
/// [`Rows::of_interned_names`]) and stages them in the spool `rows` at a
/// time; a commit makes the staged batches
/// deliverable and wakes the delivery tasks. A spool that cannot be
/// written leaves the records pending, in memory, never dropped: the
/// reader stops zeroing at once ([`Batcher::unwritable`]), so a dump adds
/// at most a batch and a zeroing request's answers to them, and reads
/// are postponed until they are staged. The ended connections metered
/// before the dump (or a restart's journals) are kept whole.
pub struct Batcher {
    spool: Arc<Mutex<Spool>>,
    dir: PathBuf,
    tokens: TokenMaker,
    rows: usize,
    pending: Rows,
    /// The last stage failed: `pending` waits for the spool.
    unwritable: bool,
    wakes: Vec<Arc<tokio::sync::Notify>>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Batches of `rows` records into `spool`; each of `wakes` (one per
    /// sink's delivery) is notified after each one.
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        tokens: TokenMaker,
        rows: usize,
        wakes: Vec<Arc<tokio::sync::Notify>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let dir = spool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dir()
            .to_owned();
        Self {
            spool,
            dir,
            tokens,
            rows,
            pending: Rows::of_interned_names(),
            unwritable: false,
            wakes,
            metrics,
        }
    }

    /// The spool directory, where the reads' journals go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The step the next commit will be.
    pub fn next_step(&self) -> u64 {
        self.spool().committed_step() + 1
    }

    /// The carry of the last commit.
    pub fn carry(&self) -> Vec<u8> {
        self.spool().carry().to_vec()
    }

    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the spool holds as much as it may: the sinks are behind.
    pub fn full(&self) -> bool {
        self.spool().full()
    }

    /// Whether the last attempt to stage failed: records wait in memory.
    pub fn unwritable(&self) -> bool {
        self.unwritable
    }

    /// Stages what is pending and commits everything staged with `carry`;
    /// returns the step committed, or `None` when the spool failed (said
    /// loudly; the batches stay staged, the records pending, for the next
    /// commit). Records still pending are not committed: the journals
    /// hold them until they are staged.
    pub fn commit(&mut self, carry: Vec<u8>) -> Option<u64> {
        self.flush();
        if self.unwritable {
            self.metrics.spool_errors.inc();
            return None;
        }
        let committed = self.spool().commit(carry);
        match committed {
            Ok(step) => {
                for wake in &self.wakes {
                    wake.notify_one();
                }
                Some(step)
            }
            Err(error) => {
                self.metrics.spool_errors.inc();
                tracing::error!(%error, "cannot commit the read to the spool; trying again at the next read");
                None
            }
        }
    }

    /// Add one record; a full batch is staged.
    pub fn add(&mut self, record: &FlowView<'_>) {
        self.pending.push(record);
        if self.pending.len().is_multiple_of(self.rows) {
            self.flush();
        }
    }

    /// Stage what is pending.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = spool.next_seq();
        let batch = Batch {
            seq,
            token: self.tokens.token(seq),
            resume_at: Resume::default(),
            rows: std::mem::replace(&mut self.pending, Rows::of_interned_names()),
        };
        match spool.stage(&batch) {
            Ok(()) => self.unwritable = false,
            Err(error) => {
                if !self.unwritable {
                    tracing::error!(%error, records = batch.rows.len(), "cannot write to the spool; the records wait in memory and reads stop until it can be written");
                }
                self.unwritable = true;
                self.pending = batch.rows;
            }
        }
    }
}
