//! Per-workload byte counters for Prometheus
//! (`tollgate_workload_bytes_total`): the records the sinks get, summed by
//! local workload, category and direction, within a cap on series.
//!
//! Three rules keep `increase()` over any window equal to the metering
//! views for that window:
//! - **Born at zero.** A new series is exposed at 0 by the first scrape
//!   that sees it and carries its bytes from the next one. Prometheus
//!   never counts a series' first sample, so a series appearing with its
//!   first interval's bytes already in it would lose them.
//! - **Nothing leaves unseen.** A series ages out (leaves the exposition,
//!   freeing its place) only once it has been idle for the configured time
//!   *and* a scrape has seen its last value. If the workload comes back it
//!   is born at zero again, which Prometheus reads as a counter reset.
//! - **Overflow, never loss.** Past the cap, new series are refused in
//!   order of size, the smallest first, and their bytes go to one overflow
//!   series per category and direction (`workload="(overflow)"`); each
//!   refusal is counted.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::HashTable;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use tollgate_schema::{Category, FlowView, Name};

use super::metrics::encode_gauge;
use super::talkers::TopTalkers;

/// The `workload` label of the overflow series.
pub const OVERFLOW: &str = "(overflow)";

/// A (category, direction) pair's place in [`Sums`]: category * 2, plus 1
/// for received bytes.
const CELLS: usize = Category::ALL.len() * 2;

/// Bytes per (category, direction) of one workload.
pub type Sums = [u64; CELLS];

const DIRECTIONS: [&str; 2] = ["out", "in"];

/// A local workload: the labels a series carries besides cluster, category
/// and direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    /// The workload's team.
    pub team: Name,
    /// Its namespace.
    pub namespace: Name,
    /// Deployment, StatefulSet, ..., Node.
    pub kind: Name,
    /// Its name.
    pub workload: Name,
}

impl WorkloadKey {
    fn of(record: &FlowView<'_>) -> Self {
        Self {
            team: record.local_team.clone(),
            namespace: record.local_namespace.clone(),
            kind: record.local_workload_kind.clone(),
            workload: record.local_workload.clone(),
        }
    }

    fn is_of(&self, record: &FlowView<'_>) -> bool {
        *self.workload == **record.local_workload
            && *self.namespace == **record.local_namespace
            && *self.kind == **record.local_workload_kind
            && *self.team == **record.local_team
    }
}

/// One interval's bytes per local workload, summed record by record on the
/// reader thread. Its tables keep their memory from one interval to the
/// next.
#[derive(Default)]
pub struct IntervalSums {
    hasher: foldhash::fast::FixedState,
    index: HashTable<usize>,
    sums: Vec<(WorkloadKey, Sums)>,
}

impl IntervalSums {
    /// Adds `record`'s bytes to its workload's sums.
    pub fn add(&mut self, record: &FlowView<'_>) {
        let hash = hash_of(
            &self.hasher,
            [
                record.local_team,
                record.local_namespace,
                record.local_workload_kind,
                record.local_workload,
            ],
        );
        let sums = &self.sums;
        let slot = match self.index.find(hash, |&i| sums[i].0.is_of(record)) {
            Some(&i) => i,
            None => {
                let i = self.sums.len();
                self.sums.push((WorkloadKey::of(record), [0; CELLS]));
                let (hasher, sums) = (&self.hasher, &self.sums);
                self.index.insert_unique(hash, i, |&j| {
                    let key = &sums[j].0;
                    hash_of(
                        hasher,
                        [&key.team, &key.namespace, &key.kind, &key.workload],
                    )
                });
                i
            }
        };
        let cell = record.category as usize * 2;
        let sums = &mut self.sums[slot].1;
        sums[cell] += record.bytes_sent;
        sums[cell + 1] += record.bytes_received;
    }

    /// Each workload with its sums, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &(WorkloadKey, Sums)> {
        self.sums.iter()
    }

    /// Forget the sums, keep the memory.
    pub fn clear(&mut self) {
        self.index.clear();
        self.sums.clear();
    }
}

/// The hash of a workload's four names, the same from a record or a key.
fn hash_of(hasher: &foldhash::fast::FixedState, parts: [&Name; 4]) -> u64 {
    let mut h = hasher.build_hasher();
    for part in parts {
        part.hash(&mut h);
    }
    h.finish()
}

/// What the agent sums per local workload each interval, when asked: the
/// Prometheus counters and the top talkers' log lines.
pub struct PerWorkload {
    sums: IntervalSums,
    series: Option<Arc<Mutex<WorkloadSeries>>>,
    talkers: Option<TopTalkers>,
}

impl PerWorkload {
    /// Feeds `series` (per-workload counters) and `talkers`, either or
    /// both; `None` when neither is wanted (nothing is summed then).
    pub fn new(
        series: Option<Arc<Mutex<WorkloadSeries>>>,
        talkers: Option<TopTalkers>,
    ) -> Option<Self> {
        (series.is_some() || talkers.is_some()).then(|| Self {
            sums: IntervalSums::default(),
            series,
            talkers,
        })
    }

    pub(super) fn add(&mut self, record: &FlowView<'_>) {
        self.sums.add(record);
        if let Some(talkers) = &mut self.talkers {
            talkers.add(record);
        }
    }

    /// The interval ending at `observed_at` is metered.
    pub(super) fn publish(&mut self, observed_at: u32) {
        if let Some(series) = &self.series {
            series
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .absorb(&self.sums, super::unix_seconds());
        }
        if let Some(talkers) = &mut self.talkers {
            talkers.log(&self.sums, observed_at);
        }
        self.sums.clear();
    }
}

/// Never shown by a scrape yet.
const UNSEEN: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Cell {
    bytes: u64,
    /// What the last scrape showed ([`UNSEEN`] before the first).
    shown: u64,
    /// When bytes were last added (unix seconds).
    active_at: u64,
}

impl Cell {
    fn new(now: u64) -> Self {
        Self {
            bytes: 0,
            shown: UNSEEN,
            active_at: now,
        }
    }

    /// What a scrape shows now; remembered as shown.
    fn show(&mut self) -> u64 {
        self.shown = if self.shown == UNSEEN { 0 } else { self.bytes };
        self.shown
    }
}

type Cells = [Option<Cell>; CELLS];

/// The series as scrapes see them: shared by the reader (once per
/// interval) and the HTTP server (once per scrape).
#[derive(Debug)]
pub struct WorkloadSeries {
    cluster: Name,
    max_series: usize,
    idle_seconds: u64,
    workloads: std::collections::HashMap<WorkloadKey, Cells>,
    overflow: Cells,
    /// Series in `workloads` (the overflow's are not counted).
    live: usize,
    /// New series sent to the overflow for want of room.
    refused: u64,
}

impl WorkloadSeries {
    /// No series yet; at most `max_series` of them (besides the overflow's),
    /// each aged out after `idle_seconds` without bytes.
    pub fn new(cluster: &str, max_series: usize, idle_seconds: u64) -> Self {
        Self {
            cluster: cluster.into(),
            max_series,
            idle_seconds,
            workloads: Default::default(),
            overflow: [None; CELLS],
            live: 0,
            refused: 0,
        }
    }

    /// Adds one interval's sums at `now` (unix seconds): existing series
    /// grow; idle ones that scrapes have fully seen leave; new ones are
    /// admitted largest first while there is room, the rest go to the
    /// overflow.
    pub fn absorb(&mut self, interval: &IntervalSums, now: u64) {
        self.age_out(now);
        let mut new: Vec<(u64, &WorkloadKey, usize)> = Vec::new();
        for (key, sums) in interval.iter() {
            let mut cells = self.workloads.get_mut(key);
            for (i, &bytes) in sums.iter().enumerate().filter(|(_, b)| **b > 0) {
                match cells.as_mut().and_then(|c| c[i].as_mut()) {
                    Some(cell) => {
                        cell.bytes += bytes;
                        cell.active_at = now;
                    }
                    None => new.push((bytes, key, i)),
                }
            }
        }
        new.sort_unstable_by_key(|&(bytes, _, _)| std::cmp::Reverse(bytes));
        for (bytes, key, i) in new {
            let cell = if self.live < self.max_series {
                self.live += 1;
                let cells = self.workloads.entry(key.clone()).or_insert([None; CELLS]);
                cells[i].insert(Cell::new(now))
            } else {
                self.refused += 1;
                self.overflow[i].get_or_insert(Cell::new(now))
            };
            cell.bytes += bytes;
            cell.active_at = now;
        }
    }

    fn age_out(&mut self, now: u64) {
        let idle_seconds = self.idle_seconds;
        let mut removed = 0;
        self.workloads.retain(|_, cells| {
            for slot in cells.iter_mut() {
                if slot.is_some_and(|c| {
                    now.saturating_sub(c.active_at) >= idle_seconds && c.shown == c.bytes
                }) {
                    *slot = None;
                    removed += 1;
                }
            }
            cells.iter().any(Option::is_some)
        });
        self.live -= removed;
    }

    /// Series in the exposition, the overflow's excepted.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether the last scrape showed every series' bytes (none is new,
    /// none grew since).
    pub fn fully_shown(&self) -> bool {
        self.workloads
            .values()
            .chain(std::iter::once(&self.overflow))
            .flatten()
            .flatten()
            .all(|cell| cell.shown == cell.bytes)
    }
}

/// Exposes the series at each scrape.
#[derive(Debug)]
pub struct WorkloadCollector(pub Arc<Mutex<WorkloadSeries>>);

impl Collector for WorkloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let WorkloadSeries {
            cluster,
            workloads,
            overflow,
            ..
        } = &mut *series;
        let mut family = encoder.encode_descriptor(
            "workload",
            "Bytes metered by local workload, transfer category and direction (a new series starts at 0; see docs/metrics.md)",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        let overflow_key = WorkloadKey {
            team: Name::from(""),
            namespace: Name::from(""),
            kind: Name::from(""),
            workload: Name::from(OVERFLOW),
        };
        let all = workloads
            .iter_mut()
            .chain(std::iter::once((&overflow_key, overflow)));
        for (key, cells) in all {
            for (i, cell) in cells.iter_mut().enumerate() {
                let Some(cell) = cell else { continue };
                let labels = [
                    ("cluster", &**cluster),
                    ("team", &*key.team),
                    ("namespace", &*key.namespace),
                    ("workload_kind", &*key.kind),
                    ("workload", &*key.workload),
                    ("category", Category::ALL[i / 2].as_str()),
                    ("direction", DIRECTIONS[i % 2]),
                ];
                ConstCounter::new(cell.show()).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges = [
            (
                "workload_series",
                "Per-workload series exposed, the overflow's excepted",
                series.live as i64,
            ),
            (
                "workload_series_max",
                "The cap on per-workload series (agent.workload_metrics.max_series)",
                series.max_series as i64,
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(&mut encoder, name, help, None, value)?;
        }
        let refused = ConstCounter::new(series.refused);
        refused.encode(encoder.encode_descriptor(
            "workload_overflow_series",
            "New per-workload series refused for want of room; their bytes went to the workload=\"(overflow)\" series",
            None,
            refused.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use tollgate_schema::FlowRecord;

    fn record(workload: &str, category: Category, sent: u64, received: u64) -> FlowRecord {
        let mut record: FlowRecord =
            serde_json::from_str(crate::test_support::SAMPLE_RECORD).expect("a record");
        record.local_workload = workload.into();
        record.category = category;
        record.bytes_sent = sent;
        record.bytes_received = received;
        record
    }

    fn interval(records: &[FlowRecord]) -> IntervalSums {
        let mut sums = IntervalSums::default();
        for record in records {
            sums.add(&record.view());
        }
        sums
    }

    /// `(workload, category, direction) -> value` of one scrape.
    fn scrape(series: &Arc<Mutex<WorkloadSeries>>) -> Vec<(String, String, String, u64)> {
        let mut registry = Registry::default();
        registry
            .sub_registry_with_prefix("tollgate")
            .register_collector(Box::new(WorkloadCollector(series.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoded");
        let label = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\"")).expect("label") + name.len() + 2;
            line[start..start + line[start..].find('"').expect("quote")].to_owned()
        };
        let mut samples: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("tollgate_workload_bytes_total{"))
            .map(|l| {
                assert_eq!(label(l, "cluster"), "c");
                let value = l
                    .rsplit(' ')
                    .next()
                    .expect("value")
                    .parse()
                    .expect("number");
                (
                    label(l, "workload"),
                    label(l, "category"),
                    label(l, "direction"),
                    value,
                )
            })
            .collect();
        samples.sort();
        samples
    }

    fn sample(
        workload: &str,
        category: &str,
        direction: &str,
        value: u64,
    ) -> (String, String, String, u64) {
        (workload.into(), category.into(), direction.into(), value)
    }

    #[test]
    fn a_new_series_shows_zero_first_then_everything() {
        let series = Arc::new(Mutex::new(WorkloadSeries::new("c", 10, 3600)));
        let sums = interval(&[
            record("w", Category::CrossZone, 100, 40),
            record("w", Category::CrossZone, 1, 0),
        ]);
        series.lock().expect("lock").absorb(&sums, 1000);
        assert_eq!(
            scrape(&series),
            [
                sample("w", "cross_zone", "in", 0),
                sample("w", "cross_zone", "out", 0)
            ]
        );
        series
            .lock()
            .expect("lock")
            .absorb(&interval(&[record("w", Category::CrossZone, 9, 0)]), 1010);
        assert_eq!(
            scrape(&series),
            [
                sample("w", "cross_zone", "in", 40),
                sample("w", "cross_zone", "out", 110)
            ]
        );
    }

    #[test]
    fn fully_shown_once_a_scrape_showed_every_byte() {
        let series = Arc::new(Mutex::new(WorkloadSeries::new("c", 10, 3600)));
        let shown = || series.lock().expect("lock").fully_shown();
        assert!(shown());
        let sums = interval(&[record("w", Category::Internet, 5, 0)]);
        series.lock().expect("lock").absorb(&sums, 1000);
        assert!(!shown());
        scrape(&series);
        assert!(!shown(), "a new series shows 0 first");
        scrape(&series);
        assert!(shown());
        series.lock().expect("lock").absorb(&sums, 1010);
        assert!(!shown());
    }

    #[test]
    fn past_the_cap_the_smallest_new_series_go_to_the_overflow() {
        let series = Arc::new(Mutex::new(WorkloadSeries::new("c", 2, 3600)));
        let first = interval(&[
            record("small", Category::Internet, 100, 0),
            record("big", Category::Internet, 300, 0),
            record("middle", Category::Internet, 200, 0),
        ]);
        series.lock().expect("lock").absorb(&first, 1000);
        scrape(&series);
        let second = interval(&[
            record("big", Category::Internet, 5, 0),
            record("late", Category::Internet, 7, 0),
        ]);
        series.lock().expect("lock").absorb(&second, 1010);
        assert_eq!(
            scrape(&series),
            [
                sample(OVERFLOW, "internet", "out", 107),
                sample("big", "internet", "out", 305),
                sample("middle", "internet", "out", 200),
            ]
        );
        let locked = series.lock().expect("lock");
        assert_eq!((locked.live(), locked.refused), (2, 2));
    }

    #[test]
    fn idle_series_leave_once_scraped_and_come_back_from_zero() {
        let series = Arc::new(Mutex::new(WorkloadSeries::new("c", 1, 60)));
        let sums = interval(&[record("w", Category::SameZone, 10, 0)]);
        series.lock().expect("lock").absorb(&sums, 1000);
        scrape(&series);
        // Idle long enough, but its 10 bytes were never shown: it stays.
        series
            .lock()
            .expect("lock")
            .absorb(&IntervalSums::default(), 1100);
        assert_eq!(scrape(&series), [sample("w", "same_zone", "out", 10)]);
        series
            .lock()
            .expect("lock")
            .absorb(&IntervalSums::default(), 1101);
        assert_eq!(scrape(&series), []);
        assert_eq!(series.lock().expect("lock").live(), 0);
        // Its place is free again, and it starts over at zero.
        let other = interval(&[record("v", Category::SameZone, 3, 0)]);
        series.lock().expect("lock").absorb(&other, 1102);
        assert_eq!(scrape(&series), [sample("v", "same_zone", "out", 0)]);
        assert_eq!(scrape(&series), [sample("v", "same_zone", "out", 3)]);
    }

    #[test]
    fn sums_keep_workloads_apart_by_every_label() {
        let mut other_team = record("w", Category::SameZone, 5, 0);
        other_team.local_team = "t2".into();
        let sums = interval(&[
            record("w", Category::SameZone, 1, 2),
            other_team,
            record("w", Category::SameZone, 3, 4),
        ]);
        let mut found: Vec<_> = sums
            .iter()
            .map(|(k, s)| {
                (
                    k.team.to_string(),
                    s[Category::SameZone as usize * 2],
                    s[Category::SameZone as usize * 2 + 1],
                )
            })
            .collect();
        found.sort();
        assert_eq!(found, [("t".into(), 4, 6), ("t2".into(), 5, 0)]);
    }
}
