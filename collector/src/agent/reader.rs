//! The interval loop: on every wall-clock multiple of the interval, the
//! connections that ended since the last read and a zeroing dump of the
//! table become enriched records in the batcher. Entries idle since the
//! last read are counted, not recorded: they meter nothing, and a node
//! holding a million idle connections would otherwise write a million
//! empty rows per interval. An ended connection is always recorded.
//! Entries without counters (connections that began before accounting was
//! turned on: the kernel adds counters only to new entries) can never meter
//! a byte: they are counted too, never recorded.

use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_schema::Category;

use super::batcher::Batcher;
use super::coverage::{Coverage, Judgement, WINDOW_INTERVALS};
use super::ended;
use super::handover;
use super::holder::{self, Holder};
use super::http::Health;
use super::journal::{self, ReadTime};
use super::metrics::{BytesLabels, CategoryLabels, Metrics, SettingLabels};
use super::routes;
use super::workloads::PerWorkload;
use crate::classify::Classifier;
use crate::conntrack::sysctl::{self, Outcome};
use crate::conntrack::{
    ConntrackError, EndedConnections, Entry, EventCounts, ReadMode, TableReader,
};
use crate::enrich::{EnrichStats, Enricher};
use crate::inventory::Inventory;

/// Turns entries into records and counts them.
pub struct Metering {
    enricher: Enricher,
    classifier: Classifier,
    inventory: Arc<RwLock<Inventory>>,
    batcher: Batcher,
    metrics: Arc<Metrics>,
    /// Per-workload counters and top talkers, if either is wanted.
    per_workload: Option<PerWorkload>,
    /// Entries waiting to be enriched together, under one read lock of the
    /// inventory.
    pending: Vec<Entry>,
    /// Entries whose local pod the inventory did not know yet, enriched
    /// again at the next reads: [`Metering::retry_late`].
    late: Vec<Late>,
}

/// An entry held for its pod, with the read it came from.
#[derive(serde::Serialize, serde::Deserialize)]
struct Late {
    entry: Entry,
    observed_at: u32,
    interval: u32,
}

/// How long an entry waits for its local pod to reach the inventory, at
/// least: the kubelet reports a pod's address a second or so after it
/// starts, often after a short Job's pod has finished. At least one
/// interval: every held entry is enriched again at the next read.
pub const LATE_POD_SECONDS: u32 = 10;

/// How many entries the agent enriches together: enough that the kernel's
/// zeroing work between two runs does not leave every run to start with
/// cold caches (runs of 128 cost the agent about 14% more user time), few enough
/// to hold (about 700 KiB).
pub const PENDING: usize = 4096;

/// Per-interval sums, added to the metrics once per interval rather than
/// once per record.
#[derive(Default)]
struct Tally {
    records: [u64; Category::ALL.len()],
    sent: [u64; Category::ALL.len()],
    received: [u64; Category::ALL.len()],
    /// Bytes of records whose remote end is off this node: they crossed
    /// an uplink ([`Coverage`]).
    off_node: u64,
}

impl Metering {
    /// This node's enricher and rules, the inventory (kept current
    /// elsewhere), where records go and what is counted.
    pub fn new(
        enricher: Enricher,
        classifier: Classifier,
        inventory: Arc<RwLock<Inventory>>,
        batcher: Batcher,
        metrics: Arc<Metrics>,
        per_workload: Option<PerWorkload>,
    ) -> Self {
        Self {
            enricher,
            classifier,
            inventory,
            batcher,
            metrics,
            per_workload,
            pending: Vec::with_capacity(PENDING),
            late: Vec::new(),
        }
    }

    /// Meters `entry` (now or with the next entries: [`Metering::finish`]
    /// meters what is left).
    fn meter(&mut self, entry: &Entry, observed_at: u32, interval: u32, tally: &mut Tally) {
        self.pending.push(*entry);
        if self.pending.len() == PENDING {
            self.finish(observed_at, interval, tally);
        }
    }

    /// Meters the entries still pending.
    fn finish(&mut self, observed_at: u32, interval: u32, tally: &mut Tally) {
        let pending = std::mem::take(&mut self.pending);
        self.enricher.hold_unknown();
        self.enrich(&pending, observed_at, interval, tally);
        self.late
            .extend(self.enricher.take_held().into_iter().map(|entry| Late {
                entry,
                observed_at,
                interval,
            }));
        self.pending = pending;
        self.pending.clear();
    }

    /// Enriches the held entries again with the inventory as it is now: an
    /// entry whose pod is still unknown waits until [`LATE_POD_SECONDS`]
    /// (at least an interval) after its read, or until the `last` read,
    /// then is recorded without pod details.
    fn retry_late(&mut self, now: u32, last: bool, tally: &mut Tally) {
        for late in std::mem::take(&mut self.late) {
            let waited = now.saturating_sub(late.observed_at);
            let wait_more = !last && waited < LATE_POD_SECONDS.max(late.interval);
            if wait_more {
                self.enricher.hold_unknown();
            }
            self.enrich(&[late.entry], late.observed_at, late.interval, tally);
            if wait_more && !self.enricher.take_held().is_empty() {
                self.late.push(late);
            }
        }
    }

    /// What the spool keeps with a commit: the entries held for their pods
    /// and how far the ended connections were metered, so a killed agent
    /// takes both up again at its next start.
    fn carry(&self, ended: ended::Position) -> Vec<u8> {
        postcard::to_stdvec(&(&self.late, ended)).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot encode the entries held for their pods");
            Vec::new()
        })
    }

    /// Holds again the entries of the last commit's carry; returns where
    /// the ended connections are to be metered from.
    fn restore(&mut self, carry: &[u8]) -> ended::Position {
        if carry.is_empty() {
            return ended::Position::default();
        }
        match postcard::from_bytes::<(Vec<Late>, ended::Position)>(carry) {
            Ok((late, position)) => {
                self.late = late;
                position
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "the spool's commit holds entries this version cannot read; they are not metered"
                );
                ended::Position::default()
            }
        }
    }

    /// Commits what the batcher staged, with the entries held for their
    /// pods and the ended connections' position; the reads and events it
    /// covers no longer need their files. Returns whether it committed.
    fn commit(&mut self, ended: &ended::Queue) -> bool {
        let position = ended.position();
        let Some(step) = self.batcher.commit(self.carry(position)) else {
            return false;
        };
        let dir = self.batcher.dir();
        // A successor reads the files of what this agent metered, to skip
        // the connections both received.
        let keep_ended = handover::successor_waiting(dir);
        let removed = journal::remove_through(dir, step).and_then(|()| {
            if keep_ended {
                Ok(())
            } else {
                ended.forget_before(position)
            }
        });
        if let Err(error) = removed {
            tracing::error!(%error, "cannot remove a committed read's files");
        }
        true
    }

    /// Records of `entries`, into the batcher and the counts.
    fn enrich(&mut self, entries: &[Entry], observed_at: u32, interval: u32, tally: &mut Tally) {
        let inventory = self
            .inventory
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let batcher = &mut self.batcher;
        let mut per_workload = self.per_workload.as_mut();
        self.enricher.enrich_many(
            entries,
            observed_at,
            interval,
            &inventory,
            &self.classifier,
            |record| {
                let i = record.category as usize;
                tally.records[i] += 1;
                tally.sent[i] += record.bytes_sent;
                tally.received[i] += record.bytes_received;
                if **record.remote_node != **record.node {
                    tally.off_node += record.bytes_sent + record.bytes_received;
                }
                if let Some(per_workload) = per_workload.as_mut() {
                    per_workload.add(record);
                }
                batcher.add(record);
            },
        );
    }

    /// Meter the ended connections received so far; returns how many.
    fn meter_ended(
        &mut self,
        ended: &mut ended::Queue,
        observed_at: u32,
        interval: u32,
        tally: &mut Tally,
    ) -> u64 {
        let metrics = self.metrics.clone();
        let drained = ended.drain(|entry| {
            if uncounted(entry) {
                metrics.uncounted_entries.inc();
            } else {
                self.meter(entry, observed_at, interval, tally);
            }
        });
        self.finish(observed_at, interval, tally);
        drained.unwrap_or_else(|error| {
            metrics.journal_errors.inc();
            tracing::error!(%error, "cannot read the ended connections' queue; the ones after the error wait");
            0
        })
    }

    fn publish(&mut self, tally: &Tally, before: EnrichStats, observed_at: u32) {
        if let Some(per_workload) = &mut self.per_workload {
            per_workload.publish(observed_at);
        }
        for (i, category) in Category::ALL.iter().enumerate() {
            let category = category.as_str();
            if tally.records[i] > 0 {
                self.metrics
                    .records
                    .get_or_create(&CategoryLabels { category })
                    .inc_by(tally.records[i]);
            }
            for (direction, bytes) in [("out", tally.sent[i]), ("in", tally.received[i])] {
                if bytes > 0 {
                    self.metrics
                        .bytes
                        .get_or_create(&BytesLabels {
                            category,
                            direction,
                        })
                        .inc_by(bytes);
                }
            }
        }
        let now = self.enricher.stats;
        let m = &self.metrics;
        m.not_local_entries.inc_by(now.not_local - before.not_local);
        m.unknown_local
            .inc_by(now.unknown_local - before.unknown_local);
        m.unknown_remote
            .inc_by(now.unknown_remote - before.unknown_remote);
        m.tunnel_entries.inc_by(now.tunnel - before.tunnel);
        m.tunnel_bytes
            .inc_by(now.tunnel_bytes - before.tunnel_bytes);
    }
}

/// The reading side of the agent, run on its own thread.
pub struct Reader {
    /// The zeroing reader.
    pub table: TableReader,
    /// Ended connections from the [`EventListener`].
    pub ended: ended::Queue,
    /// The listener.
    pub listener: EventListener,
    /// Set if this agent waited for the one it replaces: its listener
    /// queued in `handover/` meanwhile.
    pub waiting: Option<handover::Waiting>,
    /// Entries to records.
    pub metering: Metering,
    /// Seconds between reads.
    pub interval: u32,
    /// Reports each finished read.
    pub health: Arc<Health>,
    /// Metered bytes against the uplinks' counters.
    pub coverage: Coverage,
    /// Which kernel settings were on at the last check.
    pub settings_on: [bool; sysctl::ALL.len()],
    /// Why the last read was postponed, if it was.
    pub postponed: Option<&'static str>,
    /// Keeps the zeroing socket open across a kill, if configured.
    pub holder: Option<Holder>,
}

impl Reader {
    /// Read on every interval boundary until `stop` receives (or its sender
    /// is dropped); then read once more, collect the ended connections
    /// queued so far and spool everything. Returns the listener, still
    /// running: what it queues until the agent exits is metered by the
    /// next one, so the node goes unwatched only between two processes.
    pub fn run(mut self, stop: Receiver<()>) -> EventListener {
        let interval = u64::from(self.interval);
        let started = unix_seconds();
        let mut last_read = None;
        self.coverage.start(&routes::Table::read().uplinks());
        loop {
            let now = SystemTime::now();
            let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let boundary = (seconds / interval + 1) * interval;
            let wait = (UNIX_EPOCH + Duration::from_secs(boundary))
                .duration_since(now)
                .unwrap_or_default();
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {
                    // After postponed reads, the counters span them all.
                    let since = last_read.map_or(self.interval, |last| clamp(boundary - last));
                    if self.read(clamp(boundary), since) {
                        last_read = Some(boundary);
                    }
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = unix_seconds();
        let elapsed = clamp(now.saturating_sub(last_read.unwrap_or(started)).max(1));
        self.read(clamp(now), elapsed);
        // Connections that ended up to that last dump.
        self.listener.wait_emptied(Duration::from_secs(1));
        let mut tally = Tally::default();
        let before = self.metering.enricher.stats;
        self.metering
            .meter_ended(&mut self.ended, clamp(now), elapsed, &mut tally);
        self.metering.retry_late(clamp(now), true, &mut tally);
        let committed = self.metering.commit(&self.ended);
        self.metering.publish(&tally, before, clamp(now));
        if committed {
            tracing::info!("final read spooled");
        } else {
            tracing::error!("the final read could not be spooled: the next start meters what its journal and the ended connections' queue hold");
        }
        self.listener
    }

    /// Meters the reads a kill cut short, from their journals, once: their
    /// staged batches were discarded when the spool opened. The commit
    /// also removes journals a kill left behind their read's commit. Run
    /// before [`Reader::run`]. A take-over from the previous agent that
    /// fails is an error: its queue stays for the next start to take over.
    pub fn recover(&mut self) -> Result<(), handover::HandoverError> {
        let carry = self.metering.batcher.carry();
        let dir = self.metering.batcher.dir().to_owned();
        let position = self.metering.restore(&carry);
        self.ended = ended::Queue::new(&dir, position);
        let mut tally = Tally::default();
        let before = self.metering.enricher.stats;
        let taken = self.take_over(position, &mut tally)?;
        self.journal_zeroed_leftovers(&dir, &mut tally);
        let committed = self.metering.batcher.next_step() - 1;
        let journals = match journal::list(&dir) {
            Ok(journals) => journals,
            Err(error) => {
                tracing::error!(%error, "cannot list the journals of reads cut short; their bytes are not metered");
                return Ok(());
            }
        };
        let mut replayed = 0;
        let mut observed_at = 0;
        for journal in journals.iter().filter(|journal| journal.step > committed) {
            let metering = &mut self.metering;
            let mut time = None;
            let done = journal::replay(&journal.path, |entry, read| {
                time = Some(read);
                if !entry.is_idle() && !uncounted(entry) {
                    metering.meter(entry, read.observed_at, read.interval, &mut tally);
                }
            });
            if let Some(time) = time {
                metering.finish(time.observed_at, time.interval, &mut tally);
                observed_at = time.observed_at;
            }
            match done {
                Ok(done) => {
                    replayed += done.entries;
                    tracing::warn!(
                        journal = %journal.path.display(),
                        entries = done.entries,
                        cut_short = done.cut,
                        "a read was cut short (the agent was killed): its zeroed entries are metered from its journal"
                    );
                }
                Err(error) => {
                    self.metering.metrics.journal_errors.inc();
                    tracing::error!(%error, "cannot replay a journal; the entries after the error are not metered");
                }
            }
        }
        self.metering.metrics.replayed_entries.inc_by(replayed);
        // Connections that ended before the kill and were never committed,
        // with those that ended since this agent subscribed.
        let now = clamp(unix_seconds());
        self.metering
            .meter_ended(&mut self.ended, now, self.interval, &mut tally);
        if self.metering.commit(&self.ended) {
            if let Some(taken) = taken {
                taken.finish();
            }
        }
        self.metering.publish(&tally, before, observed_at.max(now));
        Ok(())
    }

    /// Puts what a killed agent left in its zeroing inbox and socket (kept
    /// by the holder) into the journal of its cut read, which the recovery
    /// then meters: the answers it received and had not journaled, and
    /// those it never received. Their counters were zeroed, and these held
    /// their only copy. What no journal can take is metered now, and lost
    /// if this agent is killed before its first commit.
    fn journal_zeroed_leftovers(&mut self, dir: &std::path::Path, tally: &mut Tally) {
        let time = ReadTime {
            observed_at: clamp(unix_seconds()),
            interval: self.interval,
        };
        let step = self.metering.batcher.next_step();
        let mut recovery = match journal::Recovery::new(dir, step, time) {
            Ok(recovery) => recovery,
            Err(error) => {
                self.metering.metrics.journal_errors.inc();
                tracing::error!(%error, "cannot read the journal of the read a kill cut short: the zeroing answers the killed agent received are lost; those it left on the socket go to this agent's first read");
                return;
            }
        };
        let received = self.table.recover_received(&mut recovery);
        let received_unjournaled = recovery.appended;
        let unreceived = received.and_then(|()| self.table.recover_unreceived(&mut recovery));
        if let Err(error) = unreceived {
            tracing::error!(%error, "cannot read the zeroing answers a killed agent left: their bytes are not metered");
        }
        if received_unjournaled > 0 {
            tracing::warn!(
                entries = received_unjournaled,
                journaled_before_the_kill = recovery.already_kept,
                "zeroing answers a killed agent had received and not journaled were kept in its inbox by the holder: metered with its cut read"
            );
        }
        if recovery.appended > received_unjournaled {
            tracing::warn!(
                entries = recovery.appended - received_unjournaled,
                "the zeroing answers a killed agent never received were kept by the holder: metered with its cut read"
            );
        }
        if let Some(error) = recovery.error {
            self.metering.metrics.journal_errors.inc();
            tracing::error!(%error, entries = recovery.unkept.len(), "cannot journal the zeroing answers a killed agent left: metered now, and lost if this agent is killed before its first commit");
            for entry in recovery.unkept.iter().filter(|entry| !uncounted(entry)) {
                self.metering
                    .meter(entry, time.observed_at, time.interval, tally);
            }
            self.metering.finish(time.observed_at, time.interval, tally);
        }
    }

    /// Meters the connections this agent's listener received before the
    /// agent it replaces stopped, except those that agent received too
    /// ([`handover`]); returns what to remove once committed.
    fn take_over(
        &mut self,
        committed: ended::Position,
        tally: &mut Tally,
    ) -> Result<Option<handover::TakenOver>, handover::HandoverError> {
        let dir = self.metering.batcher.dir().to_owned();
        let now = clamp(unix_seconds());
        let interval = self.interval;
        let writer = &self.listener.writer;
        let metering = &mut self.metering;
        let metrics = metering.metrics.clone();
        let result = handover::take_over(
            &dir,
            committed,
            self.waiting.take(),
            || {
                writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .move_to(&dir)
            },
            |entry| {
                if uncounted(entry) {
                    metrics.uncounted_entries.inc();
                } else {
                    metering.meter(entry, now, interval, tally);
                }
            },
        );
        metering.finish(now, interval, tally);
        if let Ok(Some(taken)) = &result {
            tracing::info!(
                ended_connections = taken.entries,
                metered_by_the_previous_agent = taken.skipped,
                "took over from the previous agent: the connections that ended meanwhile are metered once"
            );
        }
        result
    }

    /// Starts the journal of the read about to zero entries.
    fn start_journal(&self, time: ReadTime) -> Option<journal::Writer> {
        let batcher = &self.metering.batcher;
        match journal::Writer::create(batcher.dir(), batcher.next_step(), time) {
            Ok(writer) => Some(writer),
            Err(error) => {
                self.metering.metrics.journal_errors.inc();
                tracing::error!(%error, "cannot start this read's journal");
                None
            }
        }
    }

    /// Why no read can be written now, if so: the spool is full, or the
    /// records of an earlier read still cannot be written (tried again).
    fn blocked(&mut self) -> Option<&'static str> {
        if self.metering.batcher.unwritable() && !self.metering.commit(&self.ended) {
            return Some("the spool cannot be written (full disk?)");
        }
        if self.metering.batcher.full() {
            return Some(
                "the spool is full: the sinks have not taken its batches (sinks.spool.cap_mib)",
            );
        }
        None
    }

    /// A read not done: what it would have zeroed keeps counting in the
    /// kernel, and the ended connections wait in their queue on disk.
    fn postpone(&mut self, why: &'static str) {
        self.metering.metrics.reads_postponed.inc();
        if self.postponed.is_none() {
            tracing::error!(why, "READS POSTPONED: nothing is lost, the kernel keeps counting until the spool can take a read");
        }
        self.postponed = Some(why);
        // Alive and doing what it must: a restart would not help.
        self.health.read_done();
    }

    /// One interval: what ended since the last read, then the table.
    /// Returns whether the table was read: a read that cannot be spooled
    /// is postponed rather than zeroing what it could not keep.
    fn read(&mut self, observed_at: u32, interval: u32) -> bool {
        let started = Instant::now();
        self.check_settings();
        if let Some(holder) = &mut self.holder {
            holder.rehand_if_restarted();
        }
        if let Some(why) = self.blocked() {
            self.postpone(why);
            return false;
        }
        if let Some(why) = self.postponed.take() {
            tracing::warn!(why, "reads resume");
        }
        let routes = routes::Table::read();
        self.metering.enricher.set_routed_here(routes.routed_here());
        let mut tally = Tally::default();
        let before = self.metering.enricher.stats;
        self.metering.retry_late(observed_at, false, &mut tally);
        let ended = self
            .metering
            .meter_ended(&mut self.ended, observed_at, interval, &mut tally);
        // The ended connections are committed on their own: the dump's
        // journal holds only the dump.
        let committed = self.metering.commit(&self.ended);
        let journal = committed
            .then(|| {
                self.start_journal(ReadTime {
                    observed_at,
                    interval,
                })
            })
            .flatten();
        let Some(mut journal) = journal else {
            self.metering.publish(&tally, before, observed_at);
            self.postpone("this read's records or journal cannot be written to the spool");
            return false;
        };
        let metering = &mut self.metering;
        let idle_before = self.table.idle_entries();
        let mut without_counters = 0;
        // A journal or spool that fails ends the dump: what was zeroed is
        // kept, the rest waits in the kernel for a read that can keep it.
        let result = self
            .table
            .dump_keeping(ReadMode::ZeroActive, &mut journal, |entry| {
                if uncounted(entry) {
                    without_counters += 1;
                } else {
                    metering.meter(entry, observed_at, interval, &mut tally);
                }
                if metering.batcher.unwritable() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        let idle = self.table.idle_entries() - idle_before;
        self.metering.finish(observed_at, interval, &mut tally);
        if let Some(error) = journal.take_error() {
            self.metering.metrics.journal_errors.inc();
            tracing::error!(%error, "cannot write this read's journal: the read stopped, and a kill before its commit would lose the last entries it zeroed");
        }
        self.metering.commit(&self.ended);
        let m = self.metering.metrics.clone();
        m.idle_entries.inc_by(idle);
        m.uncounted_entries.inc_by(without_counters);
        match result {
            Ok(summary) => {
                m.entries_read.inc_by(summary.entries);
                if summary.interrupted {
                    m.dumps_interrupted.inc();
                    tracing::warn!(
                        entries = summary.entries,
                        "the kernel flagged the dump as interrupted: the table changed during the walk"
                    );
                }
                tracing::debug!(
                    entries = summary.entries,
                    idle,
                    zeroed = summary.zeroing.zeroed,
                    ended_before_zeroing = summary.zeroing.vanished,
                    ended,
                    "interval read"
                );
            }
            Err(error) => {
                m.read_errors.inc();
                tracing::error!(%error, "conntrack read failed; the entries read before the failure are kept");
                if let ConntrackError::Overrun { entries_before }
                | ConntrackError::Decode { entries_before, .. } = &error
                {
                    m.entries_read.inc_by(*entries_before);
                }
                match TableReader::open() {
                    Ok(table) => {
                        self.table = table;
                        holder::keep_zeroing(self.holder.as_mut(), &self.table);
                    }
                    Err(error) => tracing::error!(%error, "cannot reopen the conntrack socket"),
                }
            }
        }
        self.metering.publish(&tally, before, observed_at);
        self.judge_coverage(tally.off_node, &routes.uplinks());
        if let Some(count) = read_number("/proc/sys/net/netfilter/nf_conntrack_count") {
            m.table_entries.set(count);
        }
        if let Some(max) = read_number("/proc/sys/net/netfilter/nf_conntrack_max") {
            m.table_max.set(max);
        }
        m.read_duration.observe(started.elapsed().as_secs_f64());
        m.last_read
            .set(i64::try_from(unix_seconds()).unwrap_or(i64::MAX));
        self.health.read_done();
        true
    }
}

impl Reader {
    /// The kernel settings metering needs, checked every interval: one
    /// turned off by someone else is counted, said loudly and turned back
    /// on; one that cannot be turned back on is said once and kept at 0 in
    /// a gauge.
    fn check_settings(&mut self) {
        let m = &self.metering.metrics;
        for (setting, was_on) in sysctl::ALL.iter().zip(&mut self.settings_on) {
            let labels = SettingLabels {
                setting: setting.name,
            };
            let on = match sysctl::ensure(*setting) {
                Ok(Outcome::AlreadySet) => true,
                Ok(Outcome::Enabled) => {
                    m.settings_reset.get_or_create(&labels).inc();
                    tracing::error!(
                        sysctl = setting.name,
                        "KERNEL SETTING TURNED OFF by someone else, and turned back on: {}; \
                         connections opened meanwhile are not metered",
                        setting.why
                    );
                    true
                }
                Err(error) => {
                    if *was_on {
                        m.settings_reset.get_or_create(&labels).inc();
                        tracing::error!(
                            sysctl = setting.name,
                            %error,
                            "KERNEL SETTING TURNED OFF by someone else, and tollgate may not turn it back on"
                        );
                    }
                    false
                }
            };
            m.setting_enabled.get_or_create(&labels).set(i64::from(on));
            *was_on = on;
        }
    }

    /// Compares the interval's off-node metered bytes with the uplinks'
    /// counters; low coverage is said once, loudly, and kept in a gauge.
    fn judge_coverage(&mut self, off_node: u64, uplinks: &[String]) {
        let m = &self.metering.metrics;
        let (sample, judgement) = self.coverage.observe_interval(off_node, uplinks);
        m.offnode_bytes.inc_by(sample.metered);
        m.uplink_bytes.inc_by(sample.interface);
        match judgement {
            Judgement::TooLittle => {}
            Judgement::Covered(ratio) => {
                m.coverage_ratio.set(ratio);
                m.coverage_low.set(0);
            }
            Judgement::Low { ratio, first } => {
                m.coverage_ratio.set(ratio);
                m.coverage_low.set(1);
                if first {
                    tracing::error!(
                        ratio = format!("{ratio:.3}"),
                        "LOW COVERAGE: tollgate metered far fewer bytes than this node's uplinks counted \
                         over the last {WINDOW_INTERVALS} intervals; traffic is bypassing conntrack, and \
                         tollgate cannot meter it. Likely cause: an eBPF datapath (Cilium with \
                         bpf.hostLegacyRouting=false, Calico's eBPF data plane), XDP, or `notrack` rules"
                    );
                }
            }
        }
    }
}

/// The thread receiving ended connections: it appends each batch the
/// socket holds to the queue on disk the reader meters from.
pub struct EventListener {
    /// Where it appends: moved by an agent taking over ([`handover`]).
    writer: Arc<Mutex<ended::Writer>>,
    stop: Arc<AtomicBool>,
    /// Times it found the socket empty, everything before written.
    emptied: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl EventListener {
    /// Receives `events` into `writer` from now on.
    pub fn start(
        mut events: EndedConnections,
        mut writer: ended::Writer,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        recover_received(&mut events, &mut writer);
        let writer = Arc::new(Mutex::new(writer));
        let stop = Arc::new(AtomicBool::new(false));
        let emptied = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("conntrack-events".into())
            .spawn({
                let (writer, stop, emptied) = (writer.clone(), stop.clone(), emptied.clone());
                move || listen(events, &writer, &stop, &emptied, &metrics)
            })?;
        Ok(Self {
            writer,
            stop,
            emptied,
            thread,
        })
    }

    /// Waits, at most `limit`, until what the socket held is on disk: two
    /// receive timeouts with nothing to read. On a node where connections
    /// never stop ending, the rest waits for the next read (or agent).
    fn wait_emptied(&self, limit: Duration) {
        let (from, deadline) = (self.emptied.load(Ordering::Relaxed), Instant::now() + limit);
        while self.emptied.load(Ordering::Relaxed) < from + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Receives what the socket still holds, then ends.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the conntrack event listener panicked");
        }
    }
}

/// Queues the ended connections a killed agent received and may not have
/// queued: its inbox, kept by the holder, holds them. If the killed agent's
/// file cannot be checked, they are queued again: a connection counted
/// twice is safer than one lost.
fn recover_received(events: &mut EndedConnections, writer: &mut ended::Writer) {
    let mut received = Vec::new();
    let mark = match events.recover_received(|entry| received.push(*entry)) {
        Ok(Some(mark)) => mark,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot decode the ended connections a killed agent had received: their bytes are not metered");
            return;
        }
    };
    match writer.recover(mark, &received) {
        Ok(written) if written < received.len() as u64 => tracing::warn!(
            connections = received.len() as u64 - written,
            queued_before_the_kill = written,
            "ended connections a killed agent had received and not queued were kept in its inbox by the holder: queued now"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::error!(%error, connections = received.len(), "cannot check which ended connections a killed agent queued: all it had received last are queued again, and may count twice");
            if let Err(error) = writer.append(&received) {
                tracing::error!(%error, "nor can they be queued: their bytes are not metered");
            }
        }
    }
}

/// Receive ended connections until `stop` is set and the socket is empty,
/// appending each batch to `writer`.
fn listen(
    mut events: EndedConnections,
    writer: &Mutex<ended::Writer>,
    stop: &AtomicBool,
    emptied: &AtomicU64,
    metrics: &Metrics,
) {
    let mut seen = EventCounts::default();
    let mut received = Vec::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        received.clear();
        let mark = writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kept_up_to();
        let read = events.read(mark, |entry| received.push(*entry));
        let mut queue = writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = queue.append(&received) {
            metrics.journal_errors.inc();
            tracing::error!(
                %error,
                waiting = queue.unwritten(),
                "cannot queue ended connections on disk; they wait in memory, and a kill would lose them"
            );
        }
        match read {
            Ok(count) => {
                if count == 0 {
                    emptied.fetch_add(1, Ordering::Relaxed);
                }
                let counts = events.counts();
                metrics.ended_connections.inc_by(counts.ended - seen.ended);
                metrics
                    .event_overruns
                    .inc_by(counts.overruns - seen.overruns);
                metrics
                    .events_repeated
                    .inc_by(counts.repeated - seen.repeated);
                seen = counts;
                if stopping && count == 0 {
                    if queue.unwritten() > 0 {
                        tracing::error!(
                            connections = queue.unwritten(),
                            "ended connections could not be queued on disk before the agent stopped; their bytes are lost"
                        );
                    }
                    queue.mark_stopped();
                    return;
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot read conntrack events");
                if stopping {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The kernel keeps no counters for this entry: it began before
/// `nf_conntrack_acct` was on.
fn uncounted(entry: &Entry) -> bool {
    entry.orig_counters.is_none() && entry.reply_counters.is_none()
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Seconds fit the schema's `u32` until 2106.
fn clamp(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// Seconds since the epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
