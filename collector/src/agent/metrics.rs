//! The agent's Prometheus metrics: one registry, encoded on each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::sink::deliver::DeliveryCounts;
use crate::sink::spool::Spool;

/// Labels of per-category counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// `same_zone`, `cross_zone`, ...
    pub category: &'static str,
}

/// Labels of the metered bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// The transfer category.
    pub category: &'static str,
    /// `out` (sent by a local endpoint) or `in` (received).
    pub direction: &'static str,
}

/// Labels of per-setting metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// The sysctl, e.g. `net.netfilter.nf_conntrack_acct`.
    pub setting: &'static str,
}

/// Everything the agent counts.
#[derive(Debug)]
pub struct Metrics {
    /// Entries read by zeroing dumps.
    pub entries_read: Counter,
    /// Entries read with no traffic since the last read (not recorded).
    pub idle_entries: Counter,
    /// Entries without counters (older than accounting; not recorded).
    pub uncounted_entries: Counter,
    /// Ended connections received (DESTROY events).
    pub ended_connections: Counter,
    /// Event socket overflows (the kernel resends those events).
    pub event_overruns: Counter,
    /// Events the kernel sent again to every subscriber after one socket
    /// overflowed, which this agent had received already (dropped).
    pub events_repeated: Counter,
    /// Dumps that failed part-way (entries before the failure are kept).
    pub read_errors: Counter,
    /// Dumps the kernel flagged as interrupted by table changes.
    pub dumps_interrupted: Counter,
    /// Seconds one interval's read took (ended connections, dump,
    /// enrichment, spooling).
    pub read_duration: Histogram,
    /// Records produced, by category.
    pub records: Family<CategoryLabels, Counter>,
    /// Bytes metered, by category and direction.
    pub bytes: Family<BytesLabels, Counter>,
    /// Entries with no endpoint on this node (routed through, skipped).
    pub not_local_entries: Counter,
    /// Local endpoints the inventory did not know.
    pub unknown_local: Counter,
    /// Remote addresses the inventory did not know.
    pub unknown_remote: Counter,
    /// Times a kernel setting metering needs was found turned off.
    pub settings_reset: Family<SettingLabels, Counter>,
    /// 1 while a kernel setting metering needs is on.
    pub setting_enabled: Family<SettingLabels, Gauge>,
    /// Bytes metered whose remote end is off this node.
    pub offnode_bytes: Counter,
    /// Bytes the uplinks (the default routes' interfaces) counted.
    pub uplink_bytes: Counter,
    /// Off-node metered bytes over uplink bytes, over the coverage window.
    pub coverage_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while coverage is low.
    pub coverage_low: Gauge,
    /// Tunnels' outer flows between nodes (not billed).
    pub tunnel_entries: Counter,
    /// Their bytes: what the encapsulation adds to the pods' bytes.
    pub tunnel_bytes: Counter,
    /// Reads not done because the spool was full or unwritable.
    pub reads_postponed: Counter,
    /// Reads committed to the spool late because a commit failed.
    pub spool_errors: Counter,
    /// Reads whose journal could not be written: a kill during them would
    /// lose bytes.
    pub journal_errors: Counter,
    /// Entries of killed reads metered again from their journals.
    pub replayed_entries: Counter,
    /// Entries in this namespace's conntrack table after the last read.
    pub table_entries: Gauge,
    /// The table's limit (`nf_conntrack_max`).
    pub table_max: Gauge,
    /// When the last read finished (seconds since the epoch).
    pub last_read: Gauge,
    /// Seconds between two reads (`agent.interval_seconds`).
    pub read_interval: Gauge,
    /// Seconds no agent listened for ended connections before this one.
    pub unwatched: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// The metrics, all at zero: counted from the agent's start, and
    /// exposed once [`Metrics::register`]ed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries_read: Counter::default(),
            idle_entries: Counter::default(),
            uncounted_entries: Counter::default(),
            ended_connections: Counter::default(),
            event_overruns: Counter::default(),
            events_repeated: Counter::default(),
            read_errors: Counter::default(),
            dumps_interrupted: Counter::default(),
            read_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            records: Family::default(),
            bytes: Family::default(),
            not_local_entries: Counter::default(),
            unknown_local: Counter::default(),
            unknown_remote: Counter::default(),
            settings_reset: Family::default(),
            setting_enabled: Family::default(),
            offnode_bytes: Counter::default(),
            uplink_bytes: Counter::default(),
            coverage_ratio: Gauge::default(),
            coverage_low: Gauge::default(),
            tunnel_entries: Counter::default(),
            tunnel_bytes: Counter::default(),
            reads_postponed: Counter::default(),
            spool_errors: Counter::default(),
            journal_errors: Counter::default(),
            replayed_entries: Counter::default(),
            table_entries: Gauge::default(),
            table_max: Gauge::default(),
            last_read: Gauge::default(),
            read_interval: Gauge::default(),
            unwatched: Gauge::default(),
        })
    }

    /// Registers the metrics in `registry` under `tollgate_`, with each
    /// sink's delivery counts (by name) and the spool read at each scrape.
    pub fn register(
        self: &Arc<Self>,
        registry: &mut Registry,
        spool: Arc<Mutex<Spool>>,
        delivery: Vec<(&'static str, Arc<DeliveryCounts>)>,
    ) {
        let m = self;
        let r = registry.sub_registry_with_prefix("tollgate");
        r.register(
            "conntrack_entries_read",
            "Entries read by zeroing dumps of the conntrack table",
            m.entries_read.clone(),
        );
        r.register(
            "conntrack_idle_entries",
            "Entries read with no traffic since the last read; they meter nothing and are not recorded",
            m.idle_entries.clone(),
        );
        r.register(
            "conntrack_uncounted_entries",
            "Entries (read or ended) without byte counters: connections that began before nf_conntrack_acct was on; their bytes cannot be metered and are not recorded",
            m.uncounted_entries.clone(),
        );
        r.register(
            "conntrack_ended_connections",
            "Connections reported by DESTROY events as they ended",
            m.ended_connections.clone(),
        );
        r.register(
            "conntrack_event_overruns",
            "Times the event socket overflowed; the kernel resends those events",
            m.event_overruns.clone(),
        );
        r.register(
            "conntrack_events_repeated",
            "DESTROY events received again after a subscriber's socket overflowed; dropped, not metered twice",
            m.events_repeated.clone(),
        );
        r.register(
            "conntrack_read_errors",
            "Table reads that failed part-way (entries before the failure are kept)",
            m.read_errors.clone(),
        );
        r.register(
            "conntrack_dumps_interrupted",
            "Dumps the kernel flagged as interrupted by changes to the table",
            m.dumps_interrupted.clone(),
        );
        r.register_with_unit(
            "interval_read_duration",
            "Time to read, enrich and spool one interval",
            Unit::Seconds,
            m.read_duration.clone(),
        );
        r.register(
            "conntrack_table_entries",
            "Entries in the conntrack table after the last read",
            m.table_entries.clone(),
        );
        r.register(
            "conntrack_table_max",
            "The conntrack table's limit, nf_conntrack_max",
            m.table_max.clone(),
        );
        r.register(
            "records",
            "Flow records produced, by transfer category",
            m.records.clone(),
        );
        r.register_with_unit(
            "metered",
            "Bytes metered, by transfer category and direction",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "enrich_not_local_entries",
            "Entries with no endpoint on this node (traffic routed through it)",
            m.not_local_entries.clone(),
        );
        r.register(
            "enrich_unknown_local",
            "Local endpoints the inventory does not know (recorded without pod details)",
            m.unknown_local.clone(),
        );
        r.register(
            "enrich_unknown_remote",
            "Remote addresses the inventory does not know (classified by the network rules)",
            m.unknown_remote.clone(),
        );
        r.register(
            "conntrack_settings_reset",
            "Times a kernel setting metering needs (accounting, timestamps, events) was found turned off by someone else, checked every interval",
            m.settings_reset.clone(),
        );
        r.register(
            "conntrack_setting_enabled",
            "1 while the kernel setting is on; 0 when it is off and tollgate may not turn it back on",
            m.setting_enabled.clone(),
        );
        r.register_with_unit(
            "metered_offnode",
            "Bytes metered whose remote end is off this node (both directions): what crossed its uplinks",
            Unit::Bytes,
            m.offnode_bytes.clone(),
        );
        r.register_with_unit(
            "uplink",
            "Bytes the interfaces of this node's default routes received and sent",
            Unit::Bytes,
            m.uplink_bytes.clone(),
        );
        r.register(
            "coverage_ratio",
            "Off-node metered bytes over uplink bytes, over the last 6 intervals (near 1: everything is metered; link headers and encapsulation keep it a little under)",
            m.coverage_ratio.clone(),
        );
        r.register(
            "coverage_low",
            "1 while coverage is under 0.5 with at least 1 MiB through the uplinks: traffic bypasses conntrack",
            m.coverage_low.clone(),
        );
        r.register(
            "tunnel_entries",
            "Tunnels' outer flows between two nodes (VXLAN, Geneve, WireGuard, IPIP...), not billed: the pods' own records are",
            m.tunnel_entries.clone(),
        );
        r.register_with_unit(
            "tunnel",
            "Bytes of tunnels' outer flows between nodes: the pods' bytes inside plus the encapsulation the cloud bills on top",
            Unit::Bytes,
            m.tunnel_bytes.clone(),
        );
        r.register(
            "reads_postponed",
            "Reads not done because the spool was full or could not be written; the kernel kept counting",
            m.reads_postponed.clone(),
        );
        r.register(
            "spool_commit_errors",
            "Commits to the spool that failed (each attempt); their records wait for the next",
            m.spool_errors.clone(),
        );
        r.register(
            "journal_errors",
            "Reads whose journal could not be written: a kill during such a read loses its zeroed bytes",
            m.journal_errors.clone(),
        );
        r.register(
            "journal_replayed_entries",
            "Entries of reads cut short by a kill, metered at the next start from their journals",
            m.replayed_entries.clone(),
        );
        r.register(
            "last_read_timestamp_seconds",
            "When the last interval's read finished",
            m.last_read.clone(),
        );
        r.register_with_unit(
            "read_interval",
            "Seconds between two reads of the conntrack table (agent.interval_seconds)",
            Unit::Seconds,
            m.read_interval.clone(),
        );
        r.register_with_unit(
            "unwatched",
            "Seconds between the previous agent's last sign of life (its listener's stop; if it was killed, its last commit or queued ended connection) and this agent's subscription to ended connections; 0 when it subscribed while the previous one still ran",
            Unit::Seconds,
            m.unwatched.clone(),
        );
        r.register_collector(Box::new(SinkCollector { spool, delivery }));
    }
}

/// Which of a sink's delivery counts.
type CountOf = fn(&DeliveryCounts) -> &AtomicU64;

/// The spool and delivery figures, read when scraped.
#[derive(Debug)]
struct SinkCollector {
    spool: Arc<Mutex<Spool>>,
    delivery: Vec<(&'static str, Arc<DeliveryCounts>)>,
}

impl Collector for SinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (bytes, batches, cap) = {
            let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
            (spool.used_bytes(), spool.len() as u64, spool.cap_bytes())
        };
        let counters: [(&str, &str, CountOf); 3] = [
            ("sink_batches", "Batches the sink acknowledged", |c| {
                &c.batches
            }),
            ("sink_records", "Records the sink acknowledged", |c| {
                &c.records
            }),
            (
                "sink_retries",
                "Failed batch writes to the sink that were retried",
                |c| &c.retries,
            ),
        ];
        for (name, help, field) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (sink, counts) in &self.delivery {
                let counter = ConstCounter::new(field(counts).load(Ordering::Relaxed));
                counter.encode(family.encode_family(&[("sink", *sink)])?)?;
            }
        }
        let bytes_unit = Some(&Unit::Bytes);
        let gauges = [
            (
                "spool",
                "Bytes of batches waiting in the spool",
                bytes_unit,
                i64::try_from(bytes).unwrap_or(i64::MAX),
            ),
            (
                "spool_max",
                "The spool's cap (sinks.spool.cap_mib); from it, reads are postponed until the sinks catch up",
                bytes_unit,
                i64::try_from(cap).unwrap_or(i64::MAX),
            ),
            (
                "spool_batches",
                "Batches waiting in the spool",
                None,
                i64::try_from(batches).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, unit, value) in gauges {
            encode_gauge(&mut encoder, name, help, unit, value)?;
        }
        Ok(())
    }
}

/// Encodes a gauge whose value is read at scrape time.
pub(super) fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)
}
