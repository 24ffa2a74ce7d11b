//! The real cluster's bill: each node's transfer as a cloud counts it, on
//! the node's uplink (`eth0`, its network interface in the VPC), by the
//! nftables oracle, placed by the topology kubernetes.sh builds, written
//! into a Cost and Usage Report that `tollgate reconcile` is held against.
//!
//! A live cluster never stops talking (kubelets, kube-proxy, the agents'
//! watches and inserts), so no moment has the bill and the metering equal:
//! the check is that the metering, read once every agent has read and
//! delivered what the bill counted, reaches every billed figure, and stays
//! within what the counters say after it was read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use crate::bills::{self, UnitBytes};
use crate::clickhouse::ClickHouse;
use crate::cluster::instance_id;
use crate::kubernetes::{Kubernetes, INTERNET, INTERNET6, NODES, NODE_IPS};
use crate::oracle::{self, FlowKey};
use crate::tollgate;

/// Where an address of the cluster's network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A node's own address or its pods' range, by index in [`NODES`].
    Node(usize),
    /// The control plane and ClickHouse's relay (172.30.0.1): in region
    /// r1, in a zone of no node's (as the deployed configuration places
    /// it, and a managed control plane's addresses in a VPC would be).
    ControlPlane,
    /// The internet host.
    Internet,
}

fn place(ip: IpAddr) -> anyhow::Result<Place> {
    let text = ip.to_string();
    if text == INTERNET || ip == INTERNET6.parse::<IpAddr>()? {
        return Ok(Place::Internet);
    }
    if text == "172.30.0.1" || text == "fd00:172:30::1" {
        return Ok(Place::ControlPlane);
    }
    for (index, node_ip) in NODE_IPS.iter().enumerate() {
        let n = index + 1;
        let own = [(*node_ip).to_owned(), format!("fd00:172:30::1{n}")];
        let pods4 = format!("10.244.{n}.");
        let pods6 = format!("fd00:10:244:{n}:");
        if own.contains(&text) || text.starts_with(&pods4) || text.starts_with(&pods6) {
            return Ok(Place::Node(index));
        }
    }
    bail!("{ip} is no address of the cluster's network")
}

/// The category a cloud bills transfer between node `node` and `remote`
/// under, by the nodes' zones and regions.
fn category(node: usize, remote: Place) -> &'static str {
    let (_, zone, region) = NODES[node];
    let (remote_zone, remote_region) = match remote {
        Place::Node(other) => (NODES[other].1, NODES[other].2),
        Place::ControlPlane => ("r1-cp", "r1"),
        Place::Internet => return "internet",
    };
    if remote_zone == zone {
        "same_zone"
    } else if remote_region == region {
        "cross_zone"
    } else {
        "cross_region"
    }
}

fn nft<'a>(k8s: &'a Kubernetes, node: &'static str) -> impl Fn() -> Command + 'a {
    move || k8s.on_node(node, "nft")
}

/// Count every node's uplink from now on, before the agents start: this
/// turns conntrack's accounting on (the counters need it), so the
/// connections the agents can meter are those opened from now on, each
/// counted from its first packet; the older ones (the kubelets' first)
/// have no byte counters, for the bill as for tollgate.
pub fn install(k8s: &Kubernetes) -> anyhow::Result<()> {
    for (node, _, _) in NODES {
        let accounting = crate::run(
            k8s.on_node(node, "cat")
                .arg("/proc/sys/net/netfilter/nf_conntrack_acct"),
        )?;
        ensure!(
            accounting.trim() == "0",
            "{node}: conntrack's accounting is on already ({accounting:?}): the connections \
             opened before the uplink's counters would be metered and not billed"
        );
        oracle::install_on_uplink(&format!("uplink-{node}"), nft(k8s, node), "eth0")?;
    }
    Ok(())
}

/// One unit of the bill: instance, category, direction.
type Unit = (String, String, String);

/// Every flow direction that crossed the nodes' uplinks so far, with the
/// unit it is billed under.
fn flows(k8s: &Kubernetes) -> anyhow::Result<Vec<(Unit, FlowKey, u64)>> {
    let mut flows = Vec::new();
    for (index, (node, _, _)) in NODES.iter().enumerate() {
        for (key, count) in oracle::read_with(nft(k8s, node))? {
            let (direction, remote) = match (place(key.src)?, place(key.dst)?) {
                (Place::Node(n), remote) if n == index => ("out", remote),
                (remote, Place::Node(n)) if n == index => ("in", remote),
                _ => bail!("{node}'s uplink carried {key:?}, which is not the node's"),
            };
            let unit = (
                instance_id(index),
                category(index, remote).to_owned(),
                direction.to_owned(),
            );
            flows.push((unit, key, count.bytes));
        }
    }
    Ok(flows)
}

/// What crossed the nodes' uplinks so far, per unit.
pub fn counted(k8s: &Kubernetes) -> anyhow::Result<UnitBytes> {
    let mut bytes = UnitBytes::new();
    for (unit, _, count) in flows(k8s)? {
        *bytes.entry(unit).or_default() += count;
    }
    Ok(bytes)
}

/// For a unit whose metering and counters disagree: the counters' flows
/// and tollgate's records of it, side by side.
fn both_sides(
    k8s: &Kubernetes,
    ch: &ClickHouse,
    database: &str,
    unit: &Unit,
) -> anyhow::Result<String> {
    let (instance, category, direction) = unit;
    let mut text = String::from("the uplink's flows:\n");
    let mut counted: Vec<_> = flows(k8s)?
        .into_iter()
        .filter(|(of, _, _)| of == unit)
        .collect();
    counted.sort_by(|a, b| a.1.cmp(&b.1));
    for (_, key, bytes) in counted {
        text.push_str(&format!("  {key:?} {bytes}\n"));
    }
    let bytes = if direction == "out" {
        "bytes_sent"
    } else {
        "bytes_received"
    };
    text.push_str("tollgate's records:\n");
    text.push_str(&ch.query(&format!(
        "SELECT local_ip, local_port, remote_ip, remote_port, protocol, local_workload, \
           remote_workload, initiator, sum({bytes}) AS bytes FROM {database}.flows \
         WHERE endsWith(local_provider_id, '/{instance}') AND category = '{category}' \
         GROUP BY ALL HAVING bytes > 0 ORDER BY ALL FORMAT PrettyCompactMonoBlock"
    ))?);
    text.push_str("tollgate's busiest record of it, read by read:\n");
    text.push_str(&ch.query(&format!(
        "WITH (SELECT local_port FROM {database}.flows \
           WHERE endsWith(local_provider_id, '/{instance}') AND category = '{category}' \
           GROUP BY local_port ORDER BY sum({bytes}) DESC LIMIT 1) AS busiest \
         SELECT observed_at, node, conntrack_id, ended, bytes_sent, bytes_received \
         FROM {database}.flows WHERE endsWith(local_provider_id, '/{instance}') \
           AND category = '{category}' AND local_port = busiest \
         ORDER BY observed_at FORMAT PrettyCompactMonoBlock"
    ))?);
    text.push_str(&format!(
        "rows stored more than once: {}",
        ch.query(&format!(
            "SELECT count() - uniqExact(observed_at, node, conntrack_id, local_ip, local_port, \
               remote_ip, remote_port, category, initiator) FROM {database}.flows"
        ))?
    ));
    Ok(text)
}

/// A reconciliation of the metering in ClickHouse against the bill of the
/// nodes' uplinks.
pub struct Reconciled {
    /// The Cost and Usage Report written from the counters.
    pub bill: PathBuf,
    /// The report's directory (coverage.csv, allocation.csv).
    pub out: PathBuf,
    /// What `tollgate reconcile` said.
    pub summary: String,
    /// Bytes billed over all the instances' transfer.
    pub billed: u64,
    /// How far the metering went beyond the bill, at most what the
    /// counters saw after the bill was written.
    pub beyond: u64,
}

/// Write this month's CUR from the uplinks' counters (at `multiplier`
/// times the list prices, plus the line items tollgate must ignore or
/// cannot explain) into `dir`, and reconcile the metering in `database`
/// against it once every agent has read and delivered what was counted:
/// every unit's metering must reach its billed bytes, and stay within what
/// its counters say after it was read; each unit's line items must be
/// allocated in full, to the cent.
pub fn reconcile(
    k8s: &Kubernetes,
    ch: &ClickHouse,
    database: &str,
    dir: &Path,
    multiplier: u32,
) -> anyhow::Result<Reconciled> {
    let month = bills::this_month();
    let billed = counted(k8s)?;
    // Everything counted is metered once each agent has made a read begun
    // after the count (the one under way may have begun before it), and
    // delivered it: its next read has ended and nothing waits in its spool.
    let reads = agent_metric(k8s, "tollgate_interval_read_duration_seconds_count")?;
    let (bill, costs) = bills::write_month_cur(dir, &billed, multiplier)?;
    let out = dir.join(format!("{month}-reconciliation"));
    let instances: Vec<String> = (0..NODES.len()).map(instance_id).collect();
    k8s.wait_until(
        "each agent read since the bill was counted, and delivered",
        Duration::from_secs(60),
        || {
            let now = agent_metric(k8s, "tollgate_interval_read_duration_seconds_count")?;
            let pending = agent_metric(k8s, "tollgate_spool_batches")?;
            Ok(now.iter().zip(&reads).all(|(now, then)| *now >= then + 3.0)
                && pending.iter().all(|&batches| batches == 0.0))
        },
    )?;
    let output = Command::new(tollgate::binary())
        .args(["reconcile", "--month", &month, "--by", "team", "--bill"])
        .arg(&bill)
        .args(["--clickhouse", ch.url(), "--database", database, "--out"])
        .arg(&out)
        .output()?;
    let summary = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    ensure!(
        output.status.success(),
        "tollgate reconcile failed: {summary}"
    );
    let rows = coverage(&out.join("coverage.csv"))?;
    if let Some(short) = rows
        .iter()
        .find(|c| instances.contains(&c.resource) && c.metered < c.billed)
    {
        bail!(
            "{short:?}: metered less than the uplink counted before\n{}",
            both_sides(k8s, ch, database, &short.unit())?
        );
    }
    let now = counted(k8s)?;
    let mut beyond = 0;
    for row in rows.iter().filter(|c| instances.contains(&c.resource)) {
        let key = row.unit();
        let billed_bytes = billed.get(&key).copied().unwrap_or(0);
        ensure!(
            row.billed == billed_bytes,
            "{row:?}: the bill says {billed_bytes}"
        );
        let counted_now = now.get(&key).copied().unwrap_or(0);
        if row.metered > counted_now {
            bail!(
                "{row:?}: metered more than the uplink's counters say even now ({counted_now})\n{}",
                both_sides(k8s, ch, database, &key)?
            );
        }
        beyond += row.metered.saturating_sub(row.billed);
    }
    allocated_to_the_cent(&out.join("allocation.csv"), &instances, &costs)?;
    Ok(Reconciled {
        bill,
        out,
        summary,
        billed: billed.values().sum(),
        beyond,
    })
}

/// Each instance's line items, allocated in full (nothing `unallocated`)
/// and to the cent of their cost (`costs`, billionths per unit).
fn allocated_to_the_cent(
    path: &Path,
    instances: &[String],
    costs: &BTreeMap<String, i128>,
) -> anyhow::Result<()> {
    let mut allocated = BTreeMap::<String, i128>::new();
    for row in bills::report_rows(path)? {
        let field = |name: &str| column(path, &row, name);
        let resource = field("resource")?;
        if !instances.iter().any(|i| i == resource) {
            continue;
        }
        ensure!(
            field("unallocated_reason")?.is_empty(),
            "{}: {row:?} is unallocated",
            path.display()
        );
        let unit = format!(
            "{resource} {} {}",
            field("billed_category")?,
            field("direction")?
        );
        *allocated.entry(unit).or_default() += bills::cents(field("cost")?)?;
    }
    for (unit, billionths) in costs {
        let cost = (billionths + 5_000_000) / 10_000_000;
        let sum = allocated.get(unit).copied().unwrap_or(0);
        ensure!(
            sum == cost,
            "{unit}: allocated {sum} cents, billed {cost} cents"
        );
    }
    Ok(())
}

/// The value of a report row's column `name`.
fn column<'r>(
    path: &Path,
    row: &'r BTreeMap<String, String>,
    name: &str,
) -> anyhow::Result<&'r str> {
    row.get(name)
        .map(String::as_str)
        .with_context(|| format!("{}: no column {name}", path.display()))
}

/// The sum of the samples of `name` on each node's agent (its /metrics,
/// over the node's loopback: no traffic on the uplink).
fn agent_metric(k8s: &Kubernetes, name: &str) -> anyhow::Result<Vec<f64>> {
    NODES
        .iter()
        .map(|(node, _, _)| {
            let text = crate::run(
                k8s.on_node(node, "curl")
                    .args(["-sf", "http://127.0.0.1:9102/metrics"]),
            )?;
            crate::exposition::sum(&text, name)
                .with_context(|| format!("{node}'s /metrics"))?
                .with_context(|| format!("{node}'s agent has no {name}"))
        })
        .collect()
}

/// One row of coverage.csv.
#[derive(Debug)]
struct Coverage {
    resource: String,
    category: String,
    direction: String,
    billed: u64,
    metered: u64,
}

impl Coverage {
    fn unit(&self) -> Unit {
        (
            self.resource.clone(),
            self.category.clone(),
            self.direction.clone(),
        )
    }
}

fn coverage(path: &Path) -> anyhow::Result<Vec<Coverage>> {
    bills::report_rows(path)?
        .iter()
        .map(|row| {
            let field = |name: &str| column(path, row, name);
            Ok(Coverage {
                resource: field("resource")?.to_owned(),
                category: field("billed_category")?.to_owned(),
                direction: field("direction")?.to_owned(),
                billed: field("billed_bytes")?.parse()?,
                metered: field("metered_bytes")?.parse()?,
            })
        })
        .collect()
}
