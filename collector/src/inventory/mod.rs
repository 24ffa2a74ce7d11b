//! Who holds which IP address: pods, nodes and Services, with history.
//!
//! The [`Inventory`] is a trimmed copy of what the enrichment needs from the
//! cluster: for each pod its workload, team and node; for each node its zone,
//! region and provider; for each Service its ClusterIPs. It is filled from a
//! static YAML file ([`static_file`]) or kept current from the Kubernetes API
//! ([`kube`]); both feed it the same [`PodInfo`], [`NodeInfo`] and
//! [`ServiceInfo`] values.
//!
//! Pod IPs are reused. The index keeps, per address, who held it from when
//! until when; a connection is attributed to whoever held the address when
//! it began, and a departed holder is kept for a grace period so the
//! records of its last interval still find it. An address nobody held stays
//! unknown: the inventory never guesses.

mod addresses;
pub mod kube;
pub mod static_file;

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};
use ipnet::IpNet;
use smallvec::SmallVec;
use tollgate_schema::{Name, Protocol};

use crate::prefetch::prefetch;
use addresses::AddressMap;

/// One copy of each distinct name, shared by every holder of it.
#[derive(Debug, Default)]
pub struct Interner {
    names: HashSet<Name>,
}

impl Interner {
    /// The shared copy of `text`.
    pub fn name(&mut self, text: &str) -> Name {
        if let Some(name) = self.names.get(text) {
            return name.clone();
        }
        let name: Name = Arc::from(text);
        self.names.insert(name.clone());
        name
    }

    /// Forget names no holder uses any more.
    fn prune(&mut self) {
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }
}

/// A pod, as enrichment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: Name,
    /// Namespace.
    pub namespace: Name,
    /// Node the pod runs on.
    pub node: Name,
    /// Kind of the owning workload (Deployment, StatefulSet, DaemonSet,
    /// CronJob, Job, ReplicaSet), or `Pod` for a bare pod.
    pub workload_kind: Name,
    /// Name of the owning workload (the pod's own name for a bare pod).
    pub workload: Name,
    /// Team the pod is billed to.
    pub team: Name,
    /// The pod shares its node's network namespace.
    pub host_network: bool,
    /// Ports a host-network pod declares: traffic on the node's address and
    /// one of these ports is the pod's.
    pub host_ports: Vec<(Protocol, u16)>,
}

/// A node, as enrichment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: Name,
    /// `topology.kubernetes.io/zone`, or empty.
    pub zone: Name,
    /// `topology.kubernetes.io/region`, or empty.
    pub region: Name,
    /// Cloud provider (aws, gcp, azure), or empty.
    pub provider: Name,
    /// Its `spec.providerID` (the instance a bill names), or empty.
    pub provider_id: Name,
    /// Pod address ranges assigned to the node: an address in them that no
    /// pod is known to hold is still a pod of this node.
    pub pod_cidrs: Vec<IpNet>,
}

/// A Service reached through its ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `namespace/name`.
    pub name: Name,
    /// Its NodePorts (of a NodePort or LoadBalancer Service): open on every
    /// node's addresses.
    pub node_ports: Vec<(Protocol, u16)>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A pod's own address.
    Pod(Arc<PodInfo>),
    /// A node's address (host network).
    Node(Arc<NodeInfo>),
    /// A Service's virtual ClusterIP.
    Service(Arc<ServiceInfo>),
}

/// Which object an entry of the inventory is (kind plus `namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// A pod.
    Pod(String),
    /// A node.
    Node(String),
    /// A Service.
    Service(String),
}

/// One holder of an address from `since` to `until`, both included
/// (seconds since the epoch; `until` is `u64::MAX` while it still holds it).
#[derive(Debug, Clone)]
struct Holding {
    object: u64,
    since: u64,
    until: u64,
    holder: Holder,
}

#[derive(Debug)]
struct Object {
    id: u64,
    ips: Vec<IpAddr>,
    holder: Holder,
}

/// The IP index with history, plus nodes by name and host-network pods by
/// node and port. Looked up for both ends of every connection: the address
/// map is built for lookups in batches, and the other maps use a fast hash
/// (their keys come from the cluster's API, which an attacker does not
/// choose; lookups never insert).
#[derive(Debug)]
pub struct Inventory {
    /// Almost every address has had one holder: kept inline, a lookup
    /// touches the address's value only, not a second allocation.
    ips: AddressMap<SmallVec<[Holding; 1]>>,
    objects: HashMap<ObjectKey, Object>,
    /// Nodes by where their name's interned copy lives: pods name their
    /// node with the same copy, so a pod's node is found without reading
    /// or hashing the name's text.
    nodes: HashMap<usize, Arc<NodeInfo>>,
    /// Every node's pod ranges with their node, sorted by first address
    /// (ranges never overlap): rebuilt when a node changes.
    pod_ranges: Vec<(IpNet, Arc<NodeInfo>)>,
    host_ports: HashMap<Name, HashMap<(Protocol, u16), Arc<PodInfo>>>,
    /// (protocol, NodePort) -> its Service.
    node_ports: HashMap<(Protocol, u16), Arc<ServiceInfo>>,
    next_id: u64,
    grace_seconds: u64,
    /// The shared copies of names; sources intern through it.
    pub names: Interner,
}

impl Inventory {
    /// An empty inventory that keeps departed holders for `grace_seconds`.
    pub fn new(grace_seconds: u64) -> Self {
        Self {
            ips: AddressMap::new(),
            objects: HashMap::new(),
            nodes: HashMap::new(),
            pod_ranges: Vec::new(),
            host_ports: HashMap::new(),
            node_ports: HashMap::new(),
            next_id: 0,
            grace_seconds,
            names: Interner::default(),
        }
    }

    /// Who held `ip` at `at` (seconds since the epoch): the most recent
    /// holder that took it at or before `at`, including one that has since
    /// let it go (within the grace period).
    pub fn lookup(&self, ip: IpAddr, at: u64) -> Option<&Holder> {
        held_at(self.ips.get(ip)?, When { at, started: None })
    }

    /// Who held each of `ips` at its time `at(i)`, as [`Inventory::lookup`]
    /// says, passed to `found` with the address's position in `ips`, in
    /// order. The memory reads of many addresses overlap instead of waiting
    /// for one another, and each holder's details are fetched ahead of
    /// their use.
    pub fn lookup_many<'a>(
        &'a self,
        ips: &[IpAddr],
        at: impl Fn(usize) -> When,
        mut found: impl FnMut(usize, Option<&'a Holder>),
    ) {
        self.ips.get_many(ips, |i, holdings| {
            let holder = holdings.and_then(|holdings| held_at(holdings, at(i)));
            match holder {
                Some(Holder::Pod(pod)) => prefetch(Arc::as_ptr(pod)),
                Some(Holder::Node(node)) => prefetch(Arc::as_ptr(node)),
                Some(Holder::Service(service)) => prefetch(Arc::as_ptr(service)),
                None => {}
            }
            found(i, holder);
        });
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(&copy_key(self.names.names.get(name)?))
    }

    /// The node `pod` runs on.
    pub fn node_of(&self, pod: &PodInfo) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(&copy_key(&pod.node))
    }

    /// The host-network pod of `node` that declares `port`, if any.
    pub fn host_pod(&self, node: &Name, protocol: Protocol, port: u16) -> Option<&Arc<PodInfo>> {
        self.host_ports.get(node)?.get(&(protocol, port))
    }

    /// The Service whose NodePort is `port`, if any.
    pub fn node_port(&self, protocol: Protocol, port: u16) -> Option<&Arc<ServiceInfo>> {
        self.node_ports.get(&(protocol, port))
    }

    /// The node whose pod range holds `ip` (a pod the inventory does not
    /// know yet, or the node's own overlay device, whose address flannel,
    /// Calico and Cilium take from the node's range).
    pub fn pod_range_node(&self, ip: IpAddr) -> Option<&NodeInfo> {
        let ip = canonical(ip);
        let after = self
            .pod_ranges
            .partition_point(|(net, _)| net.network() <= ip);
        let (net, node) = self.pod_ranges.get(after.checked_sub(1)?)?;
        net.contains(&ip).then_some(node.as_ref())
    }

    fn index_pod_ranges(&mut self) {
        self.pod_ranges = self
            .nodes
            .values()
            .flat_map(|node| node.pod_cidrs.iter().map(|net| (*net, node.clone())))
            .collect();
        self.pod_ranges.sort_by_key(|(net, _)| net.network());
    }

    /// Number of addresses indexed (current and departed holders).
    pub fn addresses(&self) -> usize {
        self.ips.len()
    }

    /// Number of objects (pods, nodes, Services) currently present.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Adds or updates a pod that holds `ips` since `since`.
    pub fn upsert_pod(&mut self, mut pod: PodInfo, ips: &[IpAddr], since: u64, now: u64) {
        let key = ObjectKey::Pod(format!("{}/{}", pod.namespace, pod.name));
        pod.node = self.names.name(&pod.node);
        let pod = Arc::new(pod);
        self.remove_host_ports(&key);
        if pod.host_network {
            let ports = self.host_ports.entry(pod.node.clone()).or_default();
            for &(protocol, port) in &pod.host_ports {
                ports.insert((protocol, port), pod.clone());
            }
            // A host-network pod's addresses are its node's.
            self.upsert(key, Holder::Pod(pod), &[], Some(since), now);
        } else {
            self.upsert(key, Holder::Pod(pod), ips, Some(since), now);
        }
    }

    /// A pod already finished (Succeeded or Failed) held `ips` from `since`
    /// until `until`. A watch may first see a short Job's pod when it has
    /// finished: its traffic is still its own. A holder that took the
    /// address after `since` keeps it from then on.
    pub fn finished_pod(&mut self, pod: PodInfo, ips: &[IpAddr], since: u64, until: u64, now: u64) {
        let key = ObjectKey::Pod(format!("{}/{}", pod.namespace, pod.name));
        if self.objects.get(&key).is_some_and(|o| !o.ips.is_empty()) {
            // Seen running: its addresses are let go when it finished.
            return self.upsert_pod(pod, &[], since, until.min(now).max(since));
        }
        // A host-network pod's addresses are its node's.
        let ips = if pod.host_network { &[][..] } else { ips };
        let mut pod = pod;
        pod.node = self.names.name(&pod.node);
        let holder = Holder::Pod(Arc::new(pod));
        self.remove_host_ports(&key);
        let id = match self.objects.get(&key) {
            Some(object) => object.id,
            None => {
                self.next_id += 1;
                self.next_id
            }
        };
        for &ip in ips {
            let holdings = self.ips.get_or_default(canonical(ip));
            if holdings.iter().any(|h| h.object == id) {
                continue;
            }
            for earlier in holdings
                .iter_mut()
                .filter(|h| h.since <= since && h.until == u64::MAX)
            {
                earlier.until = since;
            }
            holdings.push(Holding {
                object: id,
                since,
                until: until.max(since),
                holder: holder.clone(),
            });
        }
        self.objects.insert(
            key,
            Object {
                id,
                ips: Vec::new(),
                holder,
            },
        );
    }

    /// Adds or updates a node and its addresses.
    pub fn upsert_node(&mut self, mut node: NodeInfo, ips: &[IpAddr], now: u64) {
        let key = ObjectKey::Node(node.name.to_string());
        node.name = self.names.name(&node.name);
        let node = Arc::new(node);
        self.nodes.insert(copy_key(&node.name), node.clone());
        self.index_pod_ranges();
        self.upsert(key, Holder::Node(node), ips, None, now);
    }

    /// Adds or updates a Service: its ClusterIPs and load-balancer
    /// ingress addresses (`ips`) and its NodePorts.
    pub fn upsert_service(&mut self, service: ServiceInfo, ips: &[IpAddr], now: u64) {
        let key = ObjectKey::Service(service.name.to_string());
        self.remove_node_ports(&key);
        let service = Arc::new(service);
        for &port in &service.node_ports {
            self.node_ports.insert(port, service.clone());
        }
        self.upsert(key, Holder::Service(service), ips, None, now);
    }

    /// An object is gone: its addresses are released at `now` (kept for the
    /// grace period).
    pub fn remove(&mut self, key: &ObjectKey, now: u64) {
        self.remove_host_ports(key);
        self.remove_node_ports(key);
        if let ObjectKey::Node(name) = key {
            if let Some(interned) = self.names.names.get(name.as_str()) {
                self.nodes.remove(&copy_key(interned));
                self.index_pod_ranges();
            }
        }
        if let Some(object) = self.objects.remove(key) {
            for ip in object.ips {
                self.release(ip, object.id, now);
            }
        }
    }

    /// Keys of the objects currently present.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.objects.keys()
    }

    /// The current holder recorded for `key`.
    pub fn holder(&self, key: &ObjectKey) -> Option<&Holder> {
        self.objects.get(key).map(|o| &o.holder)
    }

    /// Forgets holders that let their address go more than the grace period
    /// before `now`, and names nobody uses any more.
    pub fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.grace_seconds);
        self.ips.retain(|holdings| {
            holdings.retain(|h| h.until >= horizon);
            !holdings.is_empty()
        });
        self.names.prune();
    }

    /// Adds or updates an object holding `ips`: since `since` (a pod, as
    /// the API says), or, without one (a node, a Service), since ever if the
    /// address was free and since `now` if it takes it over, so that it
    /// never inherits its predecessor's past.
    fn upsert(
        &mut self,
        key: ObjectKey,
        holder: Holder,
        ips: &[IpAddr],
        since: Option<u64>,
        now: u64,
    ) {
        let ips: Vec<IpAddr> = ips.iter().map(|&ip| canonical(ip)).collect();
        let id = match self.objects.get(&key) {
            Some(object) => object.id,
            None => {
                self.next_id += 1;
                self.next_id
            }
        };
        let old_ips = self
            .objects
            .get(&key)
            .map(|o| o.ips.clone())
            .unwrap_or_default();
        for ip in old_ips.iter().filter(|ip| !ips.contains(ip)) {
            self.release(*ip, id, now);
        }
        for &ip in &ips {
            let holdings = self.ips.get_or_default(ip);
            match holdings
                .iter_mut()
                .find(|h| h.object == id && h.until == u64::MAX)
            {
                Some(current) => current.holder = holder.clone(),
                None => {
                    // Whoever still holds the address has lost it: its
                    // deletion may simply not have arrived yet.
                    let start = match since {
                        Some(since) => since,
                        None if holdings.is_empty() => 0,
                        None => now,
                    };
                    let taken = start.max(holdings.iter().map(|h| h.since).max().unwrap_or(0));
                    for other in holdings.iter_mut().filter(|h| h.until == u64::MAX) {
                        other.until = taken;
                    }
                    holdings.push(Holding {
                        object: id,
                        since: taken,
                        until: u64::MAX,
                        holder: holder.clone(),
                    });
                }
            }
        }
        self.objects.insert(key, Object { id, ips, holder });
    }

    fn release(&mut self, ip: IpAddr, object: u64, now: u64) {
        if let Some(holdings) = self.ips.get_mut(ip) {
            for h in holdings
                .iter_mut()
                .filter(|h| h.object == object && h.until == u64::MAX)
            {
                h.until = now.max(h.since);
            }
        }
    }

    fn remove_node_ports(&mut self, key: &ObjectKey) {
        if let Some(Holder::Service(old)) = self.objects.get(key).map(|o| &o.holder) {
            self.node_ports
                .retain(|_, service| !Arc::ptr_eq(service, old));
        }
    }

    fn remove_host_ports(&mut self, key: &ObjectKey) {
        if let Some(Holder::Pod(old)) = self.objects.get(key).map(|o| &o.holder) {
            if let Some(ports) = self.host_ports.get_mut(&old.node) {
                ports.retain(|_, pod| !Arc::ptr_eq(pod, old));
                if ports.is_empty() {
                    self.host_ports.remove(&old.node);
                }
            }
        }
    }
}

/// Where the copy of a name lives: interned names are equal exactly when
/// their copies are the same (a copy in use is never freed, so never
/// reused for another name).
fn copy_key(name: &Name) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}

/// When a connection's addresses are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    /// Whose address it was then (seconds since the epoch): the
    /// connection's start, else its end or the read.
    pub at: u64,
    /// When the connection began, if the kernel stamped it: a holder that
    /// had let the address go by then never had the connection (its
    /// successor, not known yet, did).
    pub started: Option<u64>,
}

/// The most recent of `holdings` taken at or before `when.at`, not let go
/// before the connection began. At a connection's start, a holder known to
/// have let the address go only later held it then: it wins over one still
/// holding it, whose `since` (a pod's `startTime`) may precede the moment it
/// really got the address.
fn held_at(holdings: &[Holding], when: When) -> Option<&Holder> {
    holdings
        .iter()
        .filter(|h| h.since <= when.at && when.started.is_none_or(|s| h.until >= s))
        .max_by_key(|h| (when.started.is_some() && h.until != u64::MAX, h.since))
        .map(|h| &h.holder)
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry: the kernel
/// reports an IPv4 flow as IPv4, and inventories may list either form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(inventory: &mut Inventory, name: &str) -> PodInfo {
        PodInfo {
            name: inventory.names.name(name),
            namespace: inventory.names.name("shop"),
            node: inventory.names.name("node-a"),
            workload_kind: inventory.names.name("Deployment"),
            workload: inventory.names.name("web"),
            team: inventory.names.name("payments"),
            host_network: false,
            host_ports: Vec::new(),
        }
    }

    fn name_of(holder: &Holder) -> String {
        match holder {
            Holder::Pod(p) => p.name.to_string(),
            Holder::Node(n) => format!("node {}", n.name),
            Holder::Service(s) => format!("service {}", s.name),
        }
    }

    fn held_by(inventory: &Inventory, ip: &str, at: u64) -> Option<String> {
        inventory.lookup(ip.parse().unwrap(), at).map(name_of)
    }

    /// Who held `ip` when a connection began at `started`.
    fn held_at_start(inventory: &Inventory, ip: &str, started: u64) -> Option<String> {
        let mut found = None;
        let when = When {
            at: started,
            started: Some(started),
        };
        inventory.lookup_many(
            &[ip.parse().unwrap()],
            |_| when,
            |_, holder| {
                found = holder.map(name_of);
            },
        );
        found
    }

    /// A full pool: the next pod is taken on (its `startTime`) while the
    /// address is still the old pod's, and gets it when the old pod goes.
    /// What began in between is the old pod's; what began after, the next's.
    #[test]
    fn a_pod_taken_on_before_its_address_was_free_gets_only_what_began_after() {
        let mut inv = Inventory::new(300);
        let old = pod(&mut inv, "web-old");
        inv.upsert_pod(old, &["10.1.0.5".parse().unwrap()], 100, 100);
        inv.remove(&ObjectKey::Pod("shop/web-old".into()), 170);
        let new = pod(&mut inv, "web-new");
        inv.upsert_pod(new, &["10.1.0.5".parse().unwrap()], 150, 175);

        assert_eq!(
            held_at_start(&inv, "10.1.0.5", 120).as_deref(),
            Some("web-old")
        );
        assert_eq!(
            held_at_start(&inv, "10.1.0.5", 160).as_deref(),
            Some("web-old")
        );
        assert_eq!(
            held_at_start(&inv, "10.1.0.5", 171).as_deref(),
            Some("web-new")
        );
    }

    /// A pod seen running, then finished: its address is let go when its
    /// last container ended, not when the watch said so.
    #[test]
    fn a_finished_pod_lets_its_address_go_when_it_ended() {
        let mut inv = Inventory::new(300);
        let job = pod(&mut inv, "report-1");
        inv.upsert_pod(job.clone(), &["10.1.0.6".parse().unwrap()], 100, 100);
        inv.finished_pod(job, &["10.1.0.6".parse().unwrap()], 100, 130, 140);
        assert_eq!(
            held_at_start(&inv, "10.1.0.6", 130).as_deref(),
            Some("report-1")
        );
        assert_eq!(
            held_at_start(&inv, "10.1.0.6", 135),
            None,
            "free after it ended"
        );
    }

    #[test]
    fn a_reused_address_belongs_to_whoever_held_it_at_the_time() {
        let mut inv = Inventory::new(300);
        let old = pod(&mut inv, "web-old");
        inv.upsert_pod(old, &["10.1.0.5".parse().unwrap()], 100, 100);
        inv.remove(&ObjectKey::Pod("shop/web-old".into()), 200);
        let new = pod(&mut inv, "web-new");
        inv.upsert_pod(new, &["10.1.0.5".parse().unwrap()], 250, 250);

        assert_eq!(held_by(&inv, "10.1.0.5", 99), None, "before anyone held it");
        assert_eq!(held_by(&inv, "10.1.0.5", 150).as_deref(), Some("web-old"));
        // Released at 200, not yet reused: the departed pod's last records.
        assert_eq!(held_by(&inv, "10.1.0.5", 220).as_deref(), Some("web-old"));
        assert_eq!(held_by(&inv, "10.1.0.5", 260).as_deref(), Some("web-new"));
        // The IPv4-mapped form is the same address.
        assert_eq!(
            held_by(&inv, "::ffff:10.1.0.5", 260).as_deref(),
            Some("web-new")
        );

        inv.prune(200 + 300 + 1);
        assert_eq!(
            held_by(&inv, "10.1.0.5", 150),
            None,
            "forgotten after the grace period"
        );
        assert_eq!(held_by(&inv, "10.1.0.5", 260).as_deref(), Some("web-new"));
    }

    /// A short Job's pod the watch first sees finished held its address
    /// while it ran; a pod that took the address since keeps it from then.
    #[test]
    fn a_pod_first_seen_finished_held_its_address_while_it_ran() {
        let mut inv = Inventory::new(300);
        let job = pod(&mut inv, "report-x1");
        inv.finished_pod(job, &["10.1.0.7".parse().unwrap()], 100, 104, 110);
        assert_eq!(held_by(&inv, "10.1.0.7", 99), None);
        assert_eq!(held_by(&inv, "10.1.0.7", 102).as_deref(), Some("report-x1"));
        assert_eq!(held_by(&inv, "10.1.0.7", 108).as_deref(), Some("report-x1"));

        // Heard of after the address went to web-9 at 120.
        let web = pod(&mut inv, "web-9");
        inv.upsert_pod(web, &["10.1.0.8".parse().unwrap()], 120, 120);
        let late = pod(&mut inv, "report-x0");
        inv.finished_pod(late, &["10.1.0.8".parse().unwrap()], 90, 95, 130);
        assert_eq!(held_by(&inv, "10.1.0.8", 92).as_deref(), Some("report-x0"));
        assert_eq!(held_by(&inv, "10.1.0.8", 125).as_deref(), Some("web-9"));

        // Heard of again: nothing changes.
        let again = pod(&mut inv, "report-x1");
        inv.finished_pod(again, &["10.1.0.7".parse().unwrap()], 100, 104, 140);
        assert_eq!(held_by(&inv, "10.1.0.7", 102).as_deref(), Some("report-x1"));

        inv.prune(104 + 300 + 1);
        assert_eq!(
            held_by(&inv, "10.1.0.7", 102),
            None,
            "forgotten after the grace period"
        );
    }

    /// A Service or a node that takes over a departed pod's address holds
    /// it from then on, not over the pod's past; one that found it free
    /// holds it from the start.
    #[test]
    fn a_node_or_service_taking_over_an_address_does_not_inherit_its_past() {
        let mut inv = Inventory::new(300);
        let old = pod(&mut inv, "web-old");
        inv.upsert_pod(old, &["10.1.0.5".parse().unwrap()], 100, 100);
        inv.remove(&ObjectKey::Pod("shop/web-old".into()), 200);
        let service = ServiceInfo {
            name: inv.names.name("shop/web"),
            node_ports: Vec::new(),
        };
        inv.upsert_service(service, &["10.1.0.5".parse().unwrap()], 250);
        assert_eq!(held_by(&inv, "10.1.0.5", 150).as_deref(), Some("web-old"));
        assert_eq!(held_by(&inv, "10.1.0.5", 240).as_deref(), Some("web-old"));
        assert_eq!(
            held_by(&inv, "10.1.0.5", 250).as_deref(),
            Some("service shop/web")
        );
        let node = NodeInfo {
            name: inv.names.name("node-z"),
            zone: inv.names.name("z"),
            region: inv.names.name("r"),
            provider: inv.names.name(""),
            provider_id: inv.names.name(""),
            pod_cidrs: Vec::new(),
        };
        inv.upsert_node(node.clone(), &["10.9.9.9".parse().unwrap()], 500);
        assert_eq!(
            held_by(&inv, "10.9.9.9", 1).as_deref(),
            Some("node node-z"),
            "a free address: held from the start"
        );
        let other = pod(&mut inv, "squatter");
        inv.upsert_pod(other, &["10.9.9.8".parse().unwrap()], 600, 600);
        inv.upsert_node(node, &["10.9.9.8".parse().unwrap()], 700);
        assert_eq!(held_by(&inv, "10.9.9.8", 650).as_deref(), Some("squatter"));
        assert_eq!(
            held_by(&inv, "10.9.9.8", 700).as_deref(),
            Some("node node-z")
        );
    }

    #[test]
    fn a_new_holder_ends_the_old_one_even_before_its_deletion_arrives() {
        let mut inv = Inventory::new(300);
        let a = pod(&mut inv, "a");
        inv.upsert_pod(a, &["fd00::5".parse().unwrap()], 10, 10);
        let b = pod(&mut inv, "b");
        inv.upsert_pod(b, &["fd00::5".parse().unwrap()], 50, 50);
        assert_eq!(held_by(&inv, "fd00::5", 40).as_deref(), Some("a"));
        assert_eq!(held_by(&inv, "fd00::5", 60).as_deref(), Some("b"));
        // The late deletion of `a` does not end `b`'s holding.
        inv.remove(&ObjectKey::Pod("shop/a".into()), 70);
        assert_eq!(held_by(&inv, "fd00::5", 80).as_deref(), Some("b"));
    }

    #[test]
    fn a_pod_finds_its_node_whatever_copy_of_the_name_it_was_given() {
        let mut inv = Inventory::new(300);
        let node = |name: &str, zone: &str| NodeInfo {
            // Fresh copies, not the inventory's: it interns them itself.
            name: Arc::from(name),
            zone: Arc::from(zone),
            region: Arc::from("r1"),
            provider: Arc::from(""),
            provider_id: Arc::from(""),
            pod_cidrs: Vec::new(),
        };
        inv.upsert_node(node("node-a", "r1-a"), &["192.168.0.1".parse().unwrap()], 0);
        let mut p = pod(&mut inv, "p");
        p.node = Arc::from("node-a");
        inv.upsert_pod(p, &["10.0.0.1".parse().unwrap()], 0, 0);
        let Some(Holder::Pod(p)) = inv.lookup("10.0.0.1".parse().unwrap(), 5).cloned() else {
            panic!("the pod holds its address");
        };
        assert_eq!(inv.node_of(&p).map(|n| &*n.zone), Some("r1-a"));
        assert_eq!(inv.node("node-a").map(|n| &*n.zone), Some("r1-a"));
        assert!(inv.node("node-b").is_none());

        // Updated, then gone, then back: the pod follows.
        inv.upsert_node(node("node-a", "r1-b"), &["192.168.0.1".parse().unwrap()], 1);
        assert_eq!(inv.node_of(&p).map(|n| &*n.zone), Some("r1-b"));
        inv.remove(&ObjectKey::Node("node-a".into()), 2);
        assert!(inv.node_of(&p).is_none());
        assert!(inv.node("node-a").is_none());
        inv.upsert_node(node("node-a", "r1-c"), &["192.168.0.1".parse().unwrap()], 3);
        assert_eq!(inv.node_of(&p).map(|n| &*n.zone), Some("r1-c"));
    }

    #[test]
    fn updates_keep_the_holding_and_changed_addresses_move() {
        let mut inv = Inventory::new(300);
        let mut p = pod(&mut inv, "p");
        inv.upsert_pod(p.clone(), &["10.0.0.1".parse().unwrap()], 10, 10);
        p.team = inv.names.name("search");
        inv.upsert_pod(p.clone(), &["10.0.0.1".parse().unwrap()], 10, 20);
        match inv.lookup("10.0.0.1".parse().unwrap(), 15) {
            Some(Holder::Pod(p)) => assert_eq!(&*p.team, "search"),
            other => panic!("{other:?}"),
        }
        inv.upsert_pod(p, &["10.0.0.2".parse().unwrap()], 10, 30);
        assert_eq!(held_by(&inv, "10.0.0.1", 25).as_deref(), Some("p"));
        assert_eq!(held_by(&inv, "10.0.0.2", 35).as_deref(), Some("p"));
        inv.prune(30 + 301);
        assert_eq!(held_by(&inv, "10.0.0.1", 25), None);
        assert_eq!(inv.addresses(), 1);
    }

    #[test]
    fn host_network_pods_are_found_by_node_and_port() {
        let mut inv = Inventory::new(300);
        let mut p = pod(&mut inv, "node-exporter-x");
        p.host_network = true;
        p.host_ports = vec![(Protocol::TCP, 9100)];
        inv.upsert_pod(p, &["192.168.0.10".parse().unwrap()], 0, 0);
        let node = inv.names.name("node-a");
        assert!(inv.host_pod(&node, Protocol::TCP, 9100).is_some());
        assert!(inv.host_pod(&node, Protocol::UDP, 9100).is_none());
        assert_eq!(
            held_by(&inv, "192.168.0.10", 5),
            None,
            "the node's address, not the pod's"
        );
        inv.remove(&ObjectKey::Pod("shop/node-exporter-x".into()), 10);
        assert!(inv.host_pod(&node, Protocol::TCP, 9100).is_none());
    }
}
