//! Conntrack entries to flow records: who is on each end, and the category.
//!
//! A conntrack entry knows the two real endpoints even through NAT: the
//! original tuple's source is the initiator (before any SNAT), the reply
//! tuple's source is the responder (after DNAT, so the backend pod behind a
//! ClusterIP, not the ClusterIP). The [`Enricher`] emits one record for each
//! endpoint that lives on this node, from that endpoint's side:
//!
//! - a pod of this node (by address, or, when the inventory does not know
//!   the address yet, by this node's pod ranges or its host route to one of
//!   this node's devices);
//! - this node itself, or the host-network pod that declares the port;
//! - neither, but the node translated the connection for a Service's
//!   backend on another node (a NodePort, a load balancer): the backend, at
//!   this node's place, on both halves (the client's leg, and this node's
//!   side of the hop, which the cloud bills this node for);
//! - neither, and no known backend (a masquerade for another host): the
//!   node, on both halves.
//!
//! Entries with no endpoint here (traffic this node only routed) are
//! counted in [`EnrichStats::not_local`] and left to the nodes of their
//! endpoints. An overlay's outer flow between two nodes (VXLAN, Geneve,
//! WireGuard, IPIP...: the classifier's tunnel rules) carries pods' packets
//! whose own entries bill them: it is counted in [`EnrichStats::tunnel`],
//! never billed twice. Both ends are looked up in the inventory as they were when
//! the connection began (see `attributed_at`), the remote classified by the
//! [`Classifier`].

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};

use tollgate_schema::{Category, FlowView, Initiator, Name, RemoteKind};

use crate::classify::{Classifier, Place, Remote};
use crate::conntrack::{Counters, Entry, Origin};
use crate::inventory::{Holder, Inventory, NodeInfo, PodInfo, When};
use crate::prefetch::prefetch_name;

/// Counts of what the enricher saw, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrichStats {
    /// Entries read.
    pub entries: u64,
    /// Records produced.
    pub records: u64,
    /// Entries with no endpoint on this node (skipped).
    pub not_local: u64,
    /// Their bytes, both directions.
    pub not_local_bytes: u64,
    /// Local endpoints in this node's pod ranges that the inventory does not
    /// know (recorded without pod details).
    pub unknown_local: u64,
    /// Remote addresses the inventory does not know (classified by the
    /// rules).
    pub unknown_remote: u64,
    /// Entries that were a tunnel's outer flow between two nodes (not
    /// billed: the pods' records inside it are).
    pub tunnel: u64,
    /// Their bytes, both directions: the encapsulation's cost on top.
    pub tunnel_bytes: u64,
}

/// The names of this node that records borrow.
#[derive(Debug)]
struct Fixed {
    cluster: Name,
    node: Name,
    node_team: Name,
    empty: Name,
    node_kind: Name,
    /// Addresses this node routes as single hosts to its own devices: its
    /// pods, known before the inventory hears of them (CNIs without pod
    /// ranges on the Node, such as AWS VPC CNI).
    routed_here: HashSet<IpAddr>,
}

/// Turns entries into records for one node.
#[derive(Debug)]
pub struct Enricher {
    fixed: Fixed,
    /// Counts since creation.
    pub stats: EnrichStats,
    /// While set, an entry with a local endpoint the inventory does not know
    /// goes here instead of becoming records: [`Enricher::hold_unknown`].
    held: Option<Vec<Entry>>,
}

/// One endpoint of a connection, resolved.
#[derive(Debug, Clone, Copy)]
enum Party<'a> {
    Pod(&'a PodInfo, Option<&'a NodeInfo>),
    Node(&'a NodeInfo),
    Service(&'a Name),
    /// An address of this node's pod range that no known pod holds: a pod
    /// the inventory has not heard of yet, or the node's overlay device.
    InPodRange(&'a NodeInfo),
    Unknown,
}

impl Enricher {
    /// An enricher for `node` of `cluster`; node-level traffic is billed to
    /// `node_team`.
    pub fn new(cluster: &str, node: &str, node_team: &str) -> Self {
        Self {
            fixed: Fixed {
                cluster: Arc::from(cluster),
                node: Arc::from(node),
                node_team: Arc::from(node_team),
                empty: Arc::from(""),
                node_kind: Arc::from("Node"),
                routed_here: HashSet::new(),
            },
            stats: EnrichStats::default(),
            held: None,
        }
    }

    /// From now on, keep entries with a local endpoint the inventory does
    /// not know yet (in this node's pod ranges, or routed to one of its
    /// devices), rather than record them: a pod's address reaches the API (and the inventory) when the
    /// kubelet reports it, which can be after a short-lived pod's traffic
    /// (a Job's pod is often first reported finished). The caller enriches
    /// them again later.
    pub fn hold_unknown(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// The entries held since [`Enricher::hold_unknown`]; stops holding.
    pub fn take_held(&mut self) -> Vec<Entry> {
        self.held.take().unwrap_or_default()
    }

    /// The addresses this node now routes as single hosts to its own
    /// devices (its routing table's host routes, read each interval): an
    /// endpoint there that the inventory does not know is a local pod.
    pub fn set_routed_here(&mut self, addresses: Vec<IpAddr>) {
        self.fixed.routed_here = addresses.into_iter().collect();
    }

    /// The records of one entry, observed at `observed_at` (seconds) at the
    /// end of an interval of `interval_seconds`, passed to `emit`.
    pub fn enrich(
        &mut self,
        entry: &Entry,
        observed_at: u32,
        interval_seconds: u32,
        inventory: &Inventory,
        classifier: &Classifier,
        emit: impl FnMut(&FlowView<'_>),
    ) {
        self.enrich_many(
            std::slice::from_ref(entry),
            observed_at,
            interval_seconds,
            inventory,
            classifier,
            emit,
        );
    }

    /// The records of `entries`, in order, as [`Enricher::enrich`] makes
    /// them; what every entry shares (this node) is looked up once.
    pub fn enrich_many(
        &mut self,
        entries: &[Entry],
        observed_at: u32,
        interval_seconds: u32,
        inventory: &Inventory,
        classifier: &Classifier,
        mut emit: impl FnMut(&FlowView<'_>),
    ) {
        let this_node = inventory.node(&self.fixed.node).map(Arc::as_ref);
        // The addresses of a chunk of entries are looked up together, so
        // their memory reads overlap, each at its entry's time.
        let mut addresses = [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); LOOKED_UP * CHUNK];
        let mut times = [When {
            at: 0,
            started: None,
        }; LOOKED_UP * CHUNK];
        let mut entry_times = [0u64; CHUNK];
        let mut holders: [Option<&Holder>; LOOKED_UP * CHUNK] = [None; LOOKED_UP * CHUNK];
        for chunk in entries.chunks(CHUNK) {
            // Each entry's initiator and responder, and the address the
            // initiator asked for when it was translated.
            let mut count = 0;
            for (k, entry) in chunk.iter().enumerate() {
                let at = attributed_at(entry, observed_at);
                entry_times[k] = at.at;
                addresses[count] = entry.orig.src;
                addresses[count + 1] = entry.reply.src;
                times[count] = at;
                times[count + 1] = at;
                count += 2;
                if translated(entry) {
                    addresses[count] = entry.orig.dst;
                    times[count] = at;
                    count += 1;
                }
            }
            let addresses = &addresses[..count];
            // Addresses outside the cluster are classified by prefix, the
            // prefix search's reads asked for one step at a time.
            inventory.lookup_many(
                addresses,
                |i| times[i],
                |i, holder| {
                    holders[i] = holder;
                    if holder.is_none() {
                        classifier.prefetch(addresses[i], 0);
                    }
                },
            );
            for step in 1..Classifier::PREFETCH_STEPS {
                for (&ip, holder) in addresses.iter().zip(&holders) {
                    if holder.is_none() {
                        classifier.prefetch(ip, step);
                    }
                }
            }
            // Each pod's name and workload: a remote pod's are mostly new
            // to the batch, which then touches their allocations, asked
            // for here all at once (the pods themselves were, by the
            // lookup; a local pod's, met already, are asked for in vain).
            for holder in holders[..count].iter().flatten() {
                if let Holder::Pod(pod) = holder {
                    prefetch_name(&pod.name);
                    prefetch_name(&pod.workload);
                }
            }
            let mut holders = holders.iter().copied();
            for (entry, &at) in chunk.iter().zip(&entry_times) {
                let side = Side {
                    entry,
                    observed_at,
                    at,
                    interval_seconds,
                    classifier,
                };
                let mut next = || holders.next().flatten();
                let ends = Ends::of(
                    entry,
                    [next(), next(), translated(entry).then(next).flatten()],
                    inventory,
                );
                self.records(&side, &ends, this_node, inventory, &mut emit);
            }
        }
    }

    /// The records of one entry whose ends are resolved.
    fn records<'a>(
        &'a mut self,
        side: &Side<'a>,
        ends: &Ends<'a>,
        this_node: Option<&'a NodeInfo>,
        inventory: &'a Inventory,
        emit: &mut impl FnMut(&FlowView<'_>),
    ) {
        let fixed = &self.fixed;
        let stats = &mut self.stats;
        let entry = side.entry;
        stats.entries += 1;
        let at = side.at;
        let zero = Counters::default();
        let forward = entry.orig_counters.unwrap_or(zero);
        let backward = entry.reply_counters.unwrap_or(zero);
        let Ends {
            initiator,
            initiator_port,
            responder,
            responder_port,
            service,
        } = *ends;
        if let (Party::Node(_), Party::Node(_)) = (initiator, responder) {
            if side
                .classifier
                .is_tunnel(entry.proto.0, entry.orig.l4.ports())
            {
                stats.tunnel += 1;
                stats.tunnel_bytes += forward.bytes + backward.bytes;
                return;
            }
        }
        let initiator_ip = entry.orig.src;
        let responder_ip = entry.reply.src;
        let initiator_local = fixed.is_local(initiator, initiator_ip, this_node);
        let responder_local = fixed.is_local(responder, responder_ip, this_node);
        if let Some(held) = &mut self.held {
            let unknown =
                |party, local| local && matches!(party, Party::Unknown | Party::InPodRange(_));
            if unknown(initiator, initiator_local) || unknown(responder, responder_local) {
                held.push(*entry);
                return;
            }
        }
        let before = stats.records;
        if initiator_local {
            let record = fixed.record(
                stats,
                side,
                (initiator, initiator_ip, initiator_port),
                (responder, responder_ip, responder_port),
                service,
                Initiator::Local,
                (forward, backward),
                this_node,
            );
            emit(&record);
            stats.records += 1;
        }
        // A client reached a Service's backend on another node through this
        // node (a NodePort, a load balancer with externalTrafficPolicy
        // Cluster): this node translated for them both. The client's leg is
        // the backend's, at this node's place; so is this node's side of
        // the hop to the backend's node, which the cloud bills this node
        // for as it bills the backend's node for the other side (recorded
        // there as the backend's traffic with this node).
        let backend_reached_here = !initiator_local
            && !responder_local
            && this_node.is_some()
            && service.is_some()
            && matches!(responder, Party::Pod(..));
        if responder_local || backend_reached_here {
            let record = fixed.record(
                stats,
                side,
                (responder, responder_ip, responder_port),
                (initiator, initiator_ip, initiator_port),
                service,
                Initiator::Remote,
                (backward, forward),
                this_node,
            );
            emit(&record);
            stats.records += 1;
        }
        // This node's side toward the responder, from the address it
        // translated the connection to, as `local`'s.
        let toward_responder = |stats: &mut EnrichStats, local| {
            fixed.record(
                stats,
                side,
                (
                    local,
                    entry.reply.dst,
                    entry.reply.l4.ports().map_or(0, |p| p.1),
                ),
                (responder, responder_ip, responder_port),
                service,
                Initiator::Local,
                (forward, backward),
                this_node,
            )
        };
        if backend_reached_here {
            emit(&toward_responder(stats, responder));
            stats.records += 1;
        }
        if stats.records == before {
            // Translated here: the node received from one side and sent to
            // the other (a NodePort, or a masquerade for another host).
            let node_addressed = |ip: IpAddr| matches!(inventory.lookup(ip, at), Some(Holder::Node(n)) if fixed.is_this_node(&n.name, this_node));
            match this_node {
                Some(node) if node_addressed(entry.orig.dst) || node_addressed(entry.reply.dst) => {
                    let me = Party::Node(node);
                    let first = fixed.record(
                        stats,
                        side,
                        (me, entry.orig.dst, entry.orig.l4.ports().map_or(0, |p| p.1)),
                        (initiator, initiator_ip, initiator_port),
                        None,
                        Initiator::Remote,
                        (backward, forward),
                        this_node,
                    );
                    emit(&first);
                    emit(&toward_responder(stats, me));
                    stats.records += 2;
                }
                _ => {
                    stats.not_local += 1;
                    stats.not_local_bytes += forward.bytes + backward.bytes;
                }
            }
        }
    }
}

/// When an entry's addresses are looked up: at the connection's start
/// (with `nf_conntrack_timestamp` on), so that a pod that took an address
/// over after a connection began is never charged for it, however late
/// the connection is read; without a start, an ended connection at its end
/// (the DESTROY event's timestamp) and a live one at the read.
fn attributed_at(entry: &Entry, observed_at: u32) -> When {
    let read = u64::from(observed_at);
    if let Some(start) = entry.start_ns {
        let started = (start / 1_000_000_000).min(read);
        return When {
            at: started,
            started: Some(started),
        };
    }
    let at = match (entry.origin, entry.stop_ns) {
        (Origin::Ended, Some(stop)) => (stop / 1_000_000_000).min(read),
        _ => read,
    };
    When { at, started: None }
}

/// Entries whose addresses are looked up together.
const CHUNK: usize = 64;

/// Addresses looked up per entry: the initiator, the responder, and the
/// address the initiator asked for (a ClusterIP when translated).
const LOOKED_UP: usize = 3;

/// Whether the initiator asked for another address than the responder's
/// (a ClusterIP, a NodePort): a destination NAT.
fn translated(entry: &Entry) -> bool {
    entry.orig.dst != entry.reply.src
}

/// Both ends of an entry, resolved, and the Service the initiator
/// addressed.
struct Ends<'a> {
    initiator: Party<'a>,
    initiator_port: u16,
    responder: Party<'a>,
    responder_port: u16,
    service: Option<&'a Name>,
}

impl<'a> Ends<'a> {
    /// From the holders of the entry's original source, reply source and,
    /// when it was translated, original destination.
    fn of(
        entry: &Entry,
        [initiator, responder, addressed]: [Option<&'a Holder>; LOOKED_UP],
        inventory: &'a Inventory,
    ) -> Self {
        let (initiator_port, responder_port) = match (entry.orig.l4.ports(), entry.reply.l4.ports())
        {
            (Some((src, _)), Some((reply_src, _))) => (src, reply_src),
            _ => (0, 0),
        };
        Ends {
            initiator: party(inventory, initiator, entry.orig.src, initiator_port, entry),
            initiator_port,
            responder: party(inventory, responder, entry.reply.src, responder_port, entry),
            responder_port,
            // The Service the initiator addressed, when it was translated:
            // by a ClusterIP or load-balancer address, or by a node's
            // address and a NodePort.
            service: addressed.and_then(|holder| match holder {
                Holder::Service(s) => Some(&s.name),
                Holder::Node(_) => {
                    let port = entry.orig.l4.ports()?.1;
                    inventory.node_port(entry.proto, port).map(|s| &s.name)
                }
                Holder::Pod(_) => None,
            }),
        }
    }
}

/// Who the holder of an address is, on `port`.
fn party<'a>(
    inventory: &'a Inventory,
    holder: Option<&'a Holder>,
    ip: IpAddr,
    port: u16,
    entry: &Entry,
) -> Party<'a> {
    match holder {
        Some(Holder::Pod(pod)) => Party::Pod(pod, inventory.node_of(pod).map(Arc::as_ref)),
        Some(Holder::Node(node)) => match inventory.host_pod(&node.name, entry.proto, port) {
            Some(pod) => Party::Pod(pod, Some(node)),
            None => Party::Node(node),
        },
        Some(Holder::Service(service)) => Party::Service(&service.name),
        None => inventory
            .pod_range_node(ip)
            .map_or(Party::Unknown, Party::InPodRange),
    }
}

impl Fixed {
    fn is_local(&self, party: Party<'_>, ip: IpAddr, this_node: Option<&NodeInfo>) -> bool {
        match party {
            Party::Pod(pod, _) => self.is_this_node(&pod.node, this_node),
            Party::Node(node) => self.is_this_node(&node.name, this_node),
            Party::Service(_) => false,
            Party::InPodRange(node) => self.is_this_node(&node.name, this_node),
            Party::Unknown => !self.routed_here.is_empty() && self.routed_here.contains(&ip),
        }
    }

    /// Whether `name`, a node's name from the inventory, is this node's.
    fn is_this_node(&self, name: &Name, this_node: Option<&NodeInfo>) -> bool {
        match this_node {
            // The inventory's names are interned: the same copy or another
            // name.
            Some(node) => Arc::ptr_eq(name, &node.name),
            None => **name == *self.node,
        }
    }

    /// The record of `local`'s side of the connection.
    #[allow(clippy::too_many_arguments)]
    fn record<'r>(
        &'r self,
        stats: &mut EnrichStats,
        side: &Side<'r>,
        (local, local_ip, local_port): (Party<'r>, IpAddr, u16),
        (remote, remote_ip, remote_port): (Party<'r>, IpAddr, u16),
        service: Option<&'r Name>,
        initiator: Initiator,
        (sent, received): (Counters, Counters),
        this_node: Option<&'r NodeInfo>,
    ) -> FlowView<'r> {
        let empty = &self.empty;
        let (zone, region, provider, provider_id) = this_node
            .map_or((empty, empty, empty, empty), |n| {
                (&n.zone, &n.region, &n.provider, &n.provider_id)
            });
        let (pod, namespace, workload_kind, workload, team) = match local {
            Party::Pod(p, _) => (
                &p.name,
                &p.namespace,
                &p.workload_kind,
                &p.workload,
                &p.team,
            ),
            Party::Node(n) => (empty, empty, &self.node_kind, &n.name, &self.node_team),
            Party::Service(_) | Party::InPodRange(_) | Party::Unknown => {
                stats.unknown_local += 1;
                (empty, empty, empty, empty, empty)
            }
        };
        let local_place = Place {
            zone,
            region,
            provider,
        };
        let mut remote_pod = empty;
        let mut remote_namespace = empty;
        let mut remote_workload_kind = empty;
        let mut remote_workload = empty;
        let mut remote_team = empty;
        let mut remote_node = empty;
        let mut remote_zone = empty;
        let mut remote_region = empty;
        let mut remote_cloud_provider = empty;
        let mut remote_cloud_service = empty;
        let (kind, category) = match remote {
            Party::Pod(p, node) => {
                remote_pod = &p.name;
                remote_namespace = &p.namespace;
                remote_workload_kind = &p.workload_kind;
                remote_workload = &p.workload;
                remote_team = &p.team;
                remote_node = &p.node;
                if let Some(node) = node {
                    remote_zone = &node.zone;
                    remote_region = &node.region;
                }
                (RemoteKind::Pod, self.peer(side, local_place, node))
            }
            Party::Node(n) => {
                remote_workload_kind = &self.node_kind;
                remote_workload = &n.name;
                remote_team = &self.node_team;
                remote_node = &n.name;
                remote_zone = &n.zone;
                remote_region = &n.region;
                (RemoteKind::Node, self.peer(side, local_place, Some(n)))
            }
            Party::InPodRange(n) => {
                stats.unknown_remote += 1;
                remote_node = &n.name;
                remote_zone = &n.zone;
                remote_region = &n.region;
                (RemoteKind::Unknown, self.peer(side, local_place, Some(n)))
            }
            Party::Service(_) => (
                RemoteKind::Service,
                side.classifier
                    .classify(local_place, Remote::ServiceAddress)
                    .category,
            ),
            Party::Unknown => {
                stats.unknown_remote += 1;
                let verdict = side
                    .classifier
                    .classify(local_place, Remote::External(remote_ip));
                if let Some(zone) = verdict.zone {
                    remote_zone = zone;
                }
                if let Some(region) = verdict.region {
                    remote_region = region;
                }
                if let Some(tag) = verdict.cloud {
                    remote_cloud_provider = &tag.provider;
                    remote_cloud_service = &tag.service;
                }
                (verdict.external_kind(), verdict.category)
            }
        };
        FlowView {
            observed_at: side.observed_at,
            interval_seconds: side.interval_seconds,
            cluster: &self.cluster,
            node: &self.node,
            family: side.entry.family,
            protocol: side.entry.proto,
            local_ip: v6(local_ip),
            local_port,
            local_pod: pod,
            local_namespace: namespace,
            local_workload_kind: workload_kind,
            local_workload: workload,
            local_team: team,
            local_zone: zone,
            local_region: region,
            local_provider: provider,
            local_provider_id: provider_id,
            remote_ip: v6(remote_ip),
            remote_port,
            remote_kind: kind,
            remote_pod,
            remote_namespace,
            remote_workload_kind,
            remote_workload,
            remote_team,
            remote_node,
            remote_zone,
            remote_region,
            remote_cloud_provider,
            remote_cloud_service,
            remote_service: match remote {
                Party::Service(name) => name,
                _ => service.unwrap_or(empty),
            },
            initiator,
            bytes_sent: sent.bytes,
            bytes_received: received.bytes,
            packets_sent: sent.packets,
            packets_received: received.packets,
            category,
            ended: side.entry.origin == Origin::Ended,
            conntrack_id: side.entry.id,
        }
    }

    fn peer(&self, side: &Side<'_>, local: Place<'_>, node: Option<&NodeInfo>) -> Category {
        let place = node.map_or(Place::default(), |n| Place {
            zone: &n.zone,
            region: &n.region,
            provider: &n.provider,
        });
        side.classifier
            .classify(local, Remote::InCluster(place))
            .category
    }
}

/// What every record of one entry shares.
struct Side<'a> {
    entry: &'a Entry,
    observed_at: u32,
    /// When its addresses are looked up: [`attributed_at`].
    at: u64,
    interval_seconds: u32,
    classifier: &'a Classifier,
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests;
