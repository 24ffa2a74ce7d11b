//! Records into batches, batches into the spool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_schema::compact::Rows;
use tollgate_schema::FlowView;

use super::metrics::Metrics;
use crate::sink::batch::{Batch, Resume, TokenMaker};
use crate::sink::spool::{Pushed, Spool};

/// A spool write that failed keeps its records for the next attempt, up
/// to this many batches' worth; beyond it they are dropped and counted.
const HELD_BATCHES: usize = 8;

/// Collects records (each in compact form as it arrives) and stages them
/// in the spool `rows` at a time; a commit makes the staged batches
/// deliverable and wakes the delivery tasks.
pub struct Batcher {
    spool: Arc<Mutex<Spool>>,
    dir: PathBuf,
    tokens: TokenMaker,
    rows: usize,
    pending: Rows,
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
            pending: Rows::default(),
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

    /// Stages what is pending and commits everything staged with `carry`;
    /// returns the step committed, or `None` when the spool failed (said
    /// loudly; the batches stay staged for the next commit).
    pub fn commit(&mut self, carry: Vec<u8>) -> Option<u64> {
        self.flush();
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
            rows: std::mem::take(&mut self.pending),
        };
        match spool.stage(&batch) {
            Ok(Pushed::Spooled) => {}
            Ok(Pushed::Dropped) => {
                self.metrics.records_dropped.inc_by(batch.rows.len() as u64);
            }
            Err(error) => {
                let held = batch.rows.len();
                if held >= self.rows * HELD_BATCHES {
                    tracing::error!(%error, records = held, "cannot write to the spool; records dropped");
                    self.metrics.records_dropped.inc_by(held as u64);
                } else {
                    tracing::error!(%error, records = held, "cannot write to the spool; holding the records to try again");
                    self.pending = batch.rows;
                }
            }
        }
    }
}
