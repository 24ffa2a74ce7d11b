//! Records into batches, batches into the spool.

use std::sync::{Arc, Mutex, PoisonError};

use tollgate_schema::compact::Rows;
use tollgate_schema::FlowView;

use super::metrics::Metrics;
use crate::sink::batch::{Batch, Resume, TokenMaker};
use crate::sink::spool::{Pushed, Spool};

/// A spool write that failed keeps its records for the next attempt, up
/// to this many batches' worth; beyond it they are dropped and counted.
const HELD_BATCHES: usize = 8;

/// Collects records (each in compact form as it arrives) and spools them
/// `rows` at a time, waking the delivery tasks after each batch.
pub struct Batcher {
    spool: Arc<Mutex<Spool>>,
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
        Self {
            spool,
            tokens,
            rows,
            pending: Rows::default(),
            wakes,
            metrics,
        }
    }

    /// Add one record; a full batch goes to the spool.
    pub fn add(&mut self, record: &FlowView<'_>) {
        self.pending.push(record);
        if self.pending.len().is_multiple_of(self.rows) {
            self.flush();
        }
    }

    /// Spool what is pending (the end of an interval).
    pub fn flush(&mut self) {
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
        match spool.push(&batch) {
            Ok(Pushed::Spooled) => {
                drop(spool);
                for wake in &self.wakes {
                    wake.notify_one();
                }
            }
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
