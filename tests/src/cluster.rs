//! A simulated three-node cluster in network namespaces: nodes that route
//! their pods' traffic through their own conntrack, a ClusterIP Service
//! DNATed by nftables the way kube-proxy's nftables mode does it, an
//! "internet" host reached through masquerade, and the static inventory
//! that describes it all. One `tollgate agent` runs inside each node.
//!
//! ```text
//!   pods --veth-- node-a (r1, zone r1-a) --+
//!   pods --veth-- node-b (r1, zone r1-b) --+-- vpc (router) -- internet 203.0.113.10
//!   pods --veth-- node-c (r2, zone r2-c) --+
//! ```
//!
//! Pods reach the pods of other nodes over one of three [`Underlay`]s: the
//! VPC routes the pod ranges (Calico's routed mode), or the nodes tunnel
//! them to each other as overlay CNIs do: VXLAN on UDP 8472 (flannel's
//! device, with its static forwarding entries), or a UDP tunnel between
//! ports 51820 (WireGuard's outer flows; this kernel has no WireGuard, so
//! a userspace tunnel through TUN devices carries the packets).
//!
//! Each node's nftables oracle counts, in prerouting just after conntrack,
//! every TCP and UDP packet by its headers; [`Cluster::expected`] turns
//! those counts into the metering a correct agent must produce, using only
//! what the test itself set up (who holds which address, which client port
//! belongs to which flow).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::clickhouse::ClickHouse;
use crate::netns::Netns;
use crate::oracle;
use crate::{repo_root, sh};

/// The TCP sink every pod and the internet host serve.
pub const TCP_PORT: u16 = 5001;
/// The UDP echo they serve.
pub const UDP_PORT: u16 = 5002;
/// The Service's port, DNATed to the api pod's [`TCP_PORT`].
pub const SERVICE_PORT: u16 = 80;
/// The Service's ClusterIPs.
pub const SERVICE4: &str = "10.96.0.10";
/// The Service's NodePort with externalTrafficPolicy Cluster: open on every
/// node, DNATed to the api pod and SNATed to the node (IPv4).
pub const NODE_PORT_CLUSTER: u16 = 30080;
/// The Service's NodePort with externalTrafficPolicy Local: open on the
/// api pod's node only, DNATed without SNAT (IPv4).
pub const NODE_PORT_LOCAL: u16 = 30081;
/// The Service's IPv6 ClusterIP.
pub const SERVICE6: &str = "fd96::10";
/// The internet host.
pub const INTERNET4: &str = "203.0.113.10";
/// The internet host's IPv6 address.
pub const INTERNET6: &str = "2001:db8:113::10";
/// The cluster's name in records.
pub const CLUSTER: &str = "sim";

/// (name, zone, region) of the three nodes.
const NODES: [(&str, &str, &str); 3] = [
    ("node-a", "r1-a", "r1"),
    ("node-b", "r1-b", "r1"),
    ("node-c", "r2-c", "r2"),
];

/// A pod: name, namespace, workload kind, workload, team, node index.
struct PodSpec(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    usize,
);

const PODS: [PodSpec; 6] = [
    PodSpec(
        "frontend-7f9c4-x2k8p",
        "shop",
        "Deployment",
        "frontend",
        "web",
        0,
    ),
    PodSpec(
        "report-29123-q7z",
        "analytics",
        "CronJob",
        "report",
        "data",
        0,
    ),
    PodSpec(
        "api-5d8f6-m4n2b",
        "shop",
        "Deployment",
        "api",
        "payments",
        1,
    ),
    PodSpec("db-0", "data", "StatefulSet", "db", "data", 1),
    PodSpec(
        "db-replica-0",
        "data",
        "StatefulSet",
        "db-replica",
        "data",
        2,
    ),
    PodSpec(
        "log-shipper-h5j2",
        "monitoring",
        "DaemonSet",
        "log-shipper",
        "platform",
        2,
    ),
];

/// A simulated node.
pub struct Node {
    /// Its namespace (where its conntrack and its agent live).
    pub ns: Netns,
    /// Its name.
    pub name: &'static str,
    /// Its zone.
    pub zone: &'static str,
    /// Its region.
    pub region: &'static str,
    /// Its IPv4 address on the VPC.
    pub ip4: String,
    /// Its IPv6 address on the VPC.
    pub ip6: String,
}

/// A simulated pod.
pub struct Pod {
    /// Its namespace.
    pub ns: Netns,
    /// Pod name.
    pub name: &'static str,
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Owner kind.
    pub kind: &'static str,
    /// Owner name.
    pub workload: &'static str,
    /// Team label.
    pub team: &'static str,
    /// Index of its node.
    pub node: usize,
    /// IPv4 address.
    pub ip4: String,
    /// IPv6 address.
    pub ip6: String,
}

/// Where a flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A pod, by name.
    Pod(&'static str),
    /// The api Service's ClusterIP.
    Service,
    /// The internet host.
    Internet,
}

impl Flow {
    /// A flow from `client` to `target` over `n` client ports from `port`.
    pub fn new(
        client: &'static str,
        target: Target,
        proto: &'static str,
        v6: bool,
        port: u16,
        n: u16,
    ) -> Self {
        Self {
            client,
            target,
            proto,
            v6,
            ports: port..port + n,
        }
    }
}

/// Traffic the test starts: from `client` (a pod name) to `target`, over
/// client ports `ports` (each flow owns its ports, so an oracle counter
/// names its flow).
#[derive(Debug, Clone)]
pub struct Flow {
    /// Client pod.
    pub client: &'static str,
    /// Server.
    pub target: Target,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// IPv6 rather than IPv4.
    pub v6: bool,
    /// Client source ports used.
    pub ports: Range<u16>,
}

/// A metering key: team, namespace, workload, category, direction.
pub type Key = (String, String, String, String, String);

/// How pods' packets travel between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// The VPC routes each node's pod ranges to it.
    Routed,
    /// A VXLAN device per node (UDP 8472), as flannel sets it up.
    Vxlan,
    /// A UDP tunnel per pair of nodes between their ports 51820, shaped
    /// like WireGuard's.
    UdpTunnel,
}

impl Underlay {
    /// The UDP port of its outer packets between nodes.
    pub fn tunnel_port(self) -> Option<u16> {
        match self {
            Underlay::Routed => None,
            Underlay::Vxlan => Some(8472),
            Underlay::UdpTunnel => Some(51820),
        }
    }

    /// Pods' MTU: an overlay leaves room for its outer headers.
    fn pod_mtu(self) -> u32 {
        match self {
            Underlay::Routed => 1500,
            Underlay::Vxlan => 1450,
            Underlay::UdpTunnel => 1400,
        }
    }
}

/// Numbers clusters made by one process, so that each has its own files.
static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The cluster, torn down when dropped.
pub struct Cluster {
    /// The router between nodes and the internet host.
    pub vpc: Netns,
    /// The internet host.
    pub internet: Netns,
    /// Nodes, in `NODES` order.
    pub nodes: Vec<Node>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Inventory and configuration files.
    pub dir: PathBuf,
    /// How pods reach the pods of other nodes.
    pub underlay: Underlay,
    servers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kill_all(&mut self.servers);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill_all(children: &mut [Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Cluster {
    /// Build the namespaces, routes, NAT and oracle, write the inventory,
    /// and start a traffic server in every pod and in the internet host.
    /// Each node's conntrack table is empty when this returns.
    pub fn create() -> anyhow::Result<Self> {
        Self::create_with(Underlay::Routed)
    }

    /// [`Cluster::create`] over `underlay`.
    pub fn create_with(underlay: Underlay) -> anyhow::Result<Self> {
        let vpc = Netns::create("vpc")?;
        let internet = Netns::create("inet")?;
        let v = vpc.name();
        let mut script = format!(
            "ip netns exec {v} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
             ip link add up0 netns {i} type veth peer name inet0 netns {v}
             ip -n {v} addr add 203.0.113.1/24 dev inet0
             ip -n {v} addr add 2001:db8:113::1/64 dev inet0 nodad
             ip -n {i} addr add {INTERNET4}/24 dev up0
             ip -n {i} addr add {INTERNET6}/64 dev up0 nodad
             ip -n {v} link set inet0 up
             ip -n {i} link set up0 up
             ip -n {i} route add default via 203.0.113.1
             ip -n {i} -6 route add default via 2001:db8:113::1
",
            i = internet.name()
        );
        let mut nodes = Vec::new();
        for (index, &(name, zone, region)) in NODES.iter().enumerate() {
            let ns = Netns::create(name)?;
            let n = ns.name();
            let k = index + 1;
            write!(
                script,
                "ip link add up0 netns {n} type veth peer name n{k} netns {v}
                 ip -n {v} addr add 10.90.{k}.1/24 dev n{k}
                 ip -n {v} addr add fd90:{k}::1/64 dev n{k} nodad
                 ip -n {n} addr add 10.90.{k}.2/24 dev up0
                 ip -n {n} addr add fd90:{k}::2/64 dev up0 nodad
                 ip -n {v} link set n{k} up
                 ip -n {n} link set up0 up
                 ip -n {n} route add default via 10.90.{k}.1
                 ip -n {n} -6 route add default via fd90:{k}::1
                 ip netns exec {n} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
                     net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 \
                     net.netfilter.nf_conntrack_events=1
"
            )?;
            if underlay == Underlay::Routed {
                write!(
                    script,
                    "ip -n {v} route add 10.91.{k}.0/24 via 10.90.{k}.2
                     ip -n {v} -6 route add fd91:{k}::/64 via fd90:{k}::2
"
                )?;
            }
            nodes.push(Node {
                ns,
                name,
                zone,
                region,
                ip4: format!("10.90.{k}.2"),
                ip6: format!("fd90:{k}::2"),
            });
        }
        let mut pods = Vec::new();
        let mut per_node = [0usize; 3];
        for &PodSpec(name, namespace, kind, workload, team, node) in &PODS {
            per_node[node] += 1;
            let (k, slot) = (node + 1, 10 + per_node[node]);
            let ns = Netns::create(&format!("pod{k}{slot}"))?;
            let (p, n) = (ns.name(), nodes[node].ns.name());
            // Routed pod interfaces, as Calico does: the node answers for
            // the pod's gateway on every pod link and routes each pod by
            // its /32 (/128). No bridge, so every packet meets the node's
            // conntrack.
            write!(
                script,
                "ip link add p{slot} netns {n} type veth peer name eth0 netns {p}
                 ip -n {n} addr add 10.91.{k}.1/32 dev p{slot}
                 ip -n {n} addr add fe80::1/64 dev p{slot} nodad
                 ip -n {n} link set p{slot} up
                 ip -n {p} addr add 10.91.{k}.{slot}/32 dev eth0
                 ip -n {p} addr add fd91:{k}::{slot}/128 dev eth0 nodad
                 ip -n {p} link set eth0 up mtu {mtu}
                 ip -n {n} link set p{slot} mtu {mtu}
                 ip -n {n} route add 10.91.{k}.{slot}/32 dev p{slot}
                 ip -n {n} -6 route add fd91:{k}::{slot}/128 dev p{slot}
                 ip -n {p} route add 10.91.{k}.1 dev eth0
                 ip -n {p} route add default via 10.91.{k}.1
                 ip -n {p} -6 route add default via fe80::1 dev eth0
",
                mtu = underlay.pod_mtu()
            )?;
            pods.push(Pod {
                ns,
                name,
                namespace,
                kind,
                workload,
                team,
                node,
                ip4: format!("10.91.{k}.{slot}"),
                ip6: format!("fd91:{k}::{slot}"),
            });
        }
        if underlay == Underlay::Vxlan {
            script.push_str(&vxlan(&nodes)?);
        }
        sh(&script)?;
        let dir = std::env::temp_dir().join(format!(
            "tollgate-cluster-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            vpc,
            internet,
            nodes,
            pods,
            dir,
            underlay,
            servers: Vec::new(),
        };
        if underlay == Underlay::UdpTunnel {
            cluster.start_udp_tunnels()?;
        }
        cluster.install_rules()?;
        cluster.warm_up()?;
        for node in &cluster.nodes {
            oracle::install(&node.ns)?;
        }
        std::fs::write(cluster.dir.join("inventory.yaml"), cluster.inventory())?;
        let (tcp, udp) = (TCP_PORT.to_string(), UDP_PORT.to_string());
        let hosts: Vec<&Netns> = cluster
            .pods
            .iter()
            .map(|p| &p.ns)
            .chain([&cluster.internet])
            .collect();
        for ns in hosts {
            let server = crate::bench::serve_traffic(ns, &tcp, &udp)?;
            cluster.servers.push(server);
        }
        Ok(cluster)
    }

    /// A tunnel between every pair of nodes, each end a TUN device fed by
    /// socat over UDP from its node's port 51820 to the peer's: the outer
    /// flows WireGuard makes, carrying the pods' packets. Each end's socket
    /// is connected to its peer, so the kernel hands it that peer's
    /// datagrams although every end binds port 51820.
    fn start_udp_tunnels(&mut self) -> anyhow::Result<()> {
        let (mut wait, mut routes) = (String::new(), String::new());
        for (a, node) in self.nodes.iter().enumerate() {
            for (b, peer) in self.nodes.iter().enumerate() {
                if a == b {
                    continue;
                }
                let device = format!("wg{}", b + 1);
                let child = node
                    .ns
                    .command("socat")
                    .arg(format!(
                        "UDP-CONNECT:{}:51820,bind={}:51820,reuseaddr",
                        peer.ip4, node.ip4
                    ))
                    .arg(format!("TUN,tun-type=tun,tun-name={device},iff-no-pi"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start socat (apt-get install socat)")?;
                self.servers.push(child);
                let (n, k) = (node.ns.name(), b + 1);
                writeln!(
                    wait,
                    "until ip -n {n} link show {device} >/dev/null 2>&1; do sleep 0.05; done"
                )?;
                write!(
                    routes,
                    "ip -n {n} link set {device} mtu 1400 up
                     ip -n {n} route add 10.91.{k}.0/24 dev {device}
                     ip -n {n} -6 route add fd91:{k}::/64 dev {device}
"
                )?;
            }
        }
        // Every end must be listening before any device comes up: a
        // connected UDP socket that meets an ICMP port unreachable fails
        // its next read, and socat exits.
        sh(&format!("timeout 10 sh -ec '{wait}'"))?;
        sh(&routes)?;
        Ok(())
    }

    /// kube-proxy's nftables mode (a map from ClusterIP, protocol and port
    /// to a service chain that picks an endpoint chain, which DNATs) and
    /// ip-masq-agent's rule (masquerade what leaves the private ranges).
    fn install_rules(&self) -> anyhow::Result<()> {
        let api = self.pod("api-5d8f6-m4n2b");
        for (index, node) in self.nodes.iter().enumerate() {
            let mut rules = String::new();
            for (family, addr, cluster_ip, backend, private) in [
                ("ip", "ipv4_addr", SERVICE4, api.ip4.clone(), "10.0.0.0/8"),
                (
                    "ip6",
                    "ipv6_addr",
                    SERVICE6,
                    format!("[{}]", api.ip6),
                    "fd00::/8",
                ),
            ] {
                let daddr = if family == "ip" {
                    "ip daddr"
                } else {
                    "ip6 daddr"
                };
                // NodePorts (IPv4): Cluster policy on every node, marked for
                // SNAT; Local policy only where the backend runs, no SNAT.
                let nodeports = if family == "ip" {
                    let mut rules = format!(
                        "ip daddr {} tcp dport {NODE_PORT_CLUSTER} meta mark set 0x4000 goto endpoint-shop-api-1;",
                        node.ip4
                    );
                    if api.node == index {
                        rules.push_str(&format!(
                            " ip daddr {} tcp dport {NODE_PORT_LOCAL} goto endpoint-shop-api-1;",
                            node.ip4
                        ));
                    }
                    rules
                } else {
                    String::new()
                };
                write!(
                    rules,
                    "table {family} kube-proxy {{
  map service-ips {{
    type {addr} . inet_proto . inet_service : verdict
    elements = {{ {cluster_ip} . tcp . {SERVICE_PORT} : goto service-shop-api-tcp }}
  }}
  chain services {{ {daddr} . meta l4proto . th dport vmap @service-ips; }}
  chain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; {nodeports} }}
  chain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
  chain service-shop-api-tcp {{ numgen random mod 1 vmap {{ 0 : goto endpoint-shop-api-1 }}; }}
  chain endpoint-shop-api-1 {{ meta l4proto tcp dnat to {backend}:{TCP_PORT}; }}
}}
table {family} ip-masq {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 masquerade
    oifname up0 {daddr} != {private} masquerade
  }}
}}
"
                )?;
            }
            let path = self.dir.join(format!("rules-{}.nft", node.name));
            std::fs::write(&path, rules)?;
            crate::run(node.ns.command("nft").arg("-f").arg(&path))?;
        }
        Ok(())
    }

    /// Resolve every neighbour, then empty the nodes' tables.
    fn warm_up(&self) -> anyhow::Result<()> {
        for pod in &self.pods {
            pod.ns.sh(&format!(
                "ping -q -c1 -W5 {INTERNET4} >/dev/null; ping -q -c1 -W5 {INTERNET6} >/dev/null"
            ))?;
            for other in &self.pods {
                pod.ns.sh(&format!(
                    "ping -q -c1 -W5 {} >/dev/null; ping -q -c1 -W5 {} >/dev/null",
                    other.ip4, other.ip6
                ))?;
            }
        }
        for node in &self.nodes {
            node.ns.sh("conntrack -F 2>/dev/null")?;
        }
        Ok(())
    }

    /// The static inventory describing the cluster.
    fn inventory(&self) -> String {
        let mut text = String::from("nodes:\n");
        for (k, node) in self.nodes.iter().enumerate() {
            let k = k + 1;
            let _ = writeln!(
                text,
                "  - {{name: {}, zone: {}, region: {}, provider_id: 'aws:///{}/{}', addresses: [{}, '{}'], pod_cidrs: [10.91.{k}.0/24, 'fd91:{k}::/64']}}",
                node.name, node.zone, node.region, node.zone, instance_id(k - 1), node.ip4, node.ip6
            );
        }
        text.push_str("pods:\n");
        for pod in &self.pods {
            let _ = writeln!(
                text,
                "  - {{name: {}, namespace: {}, node: {}, ips: [{}, '{}'], workload: {{kind: {}, name: {}}}, labels: {{team: {}}}}}",
                pod.name,
                pod.namespace,
                self.nodes[pod.node].name,
                pod.ip4,
                pod.ip6,
                pod.kind,
                pod.workload,
                pod.team
            );
        }
        let _ = writeln!(
            text,
            "services:\n  - {{name: api, namespace: shop, cluster_ips: [{SERVICE4}, '{SERVICE6}'], node_ports: [{{port: {NODE_PORT_CLUSTER}}}, {{port: {NODE_PORT_LOCAL}}}]}}"
        );
        text
    }

    /// An agent configuration for `node`, sending to ClickHouse at `url`
    /// (as seen from inside the node) into `database`, and to Parquet files
    /// under `parquet` if given, reading every `interval` seconds.
    pub fn agent_config(
        &self,
        node: usize,
        url: &str,
        database: &str,
        parquet: Option<&Path>,
        interval: u32,
    ) -> anyhow::Result<PathBuf> {
        let parquet = parquet.map_or_else(String::new, |dir| {
            format!("  parquet: {{dir: '{}'}}\n", dir.display())
        });
        let name = self.nodes[node].name;
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "cluster: {CLUSTER}
node: {name}
inventory:
  file: inventory.yaml
network:
  in_region: [10.0.0.0/8, 'fd00::/8']
agent:
  interval_seconds: {interval}
  listen: 127.0.0.1:9102
  batch_rows: 1000
sinks:
  clickhouse: {{url: '{url}', database: {database}}}
{parquet}  spool: {{dir: spool-{name}}}
"
            ),
        )?;
        Ok(path)
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Where `flow` connects to.
    pub fn destination(&self, flow: &Flow) -> String {
        match (flow.target, flow.v6) {
            (Target::Pod(name), false) => self.pod(name).ip4.clone(),
            (Target::Pod(name), true) => self.pod(name).ip6.clone(),
            (Target::Service, false) => SERVICE4.into(),
            (Target::Service, true) => SERVICE6.into(),
            (Target::Internet, false) => INTERNET4.into(),
            (Target::Internet, true) => INTERNET6.into(),
        }
    }

    /// Start `flow`'s client: `args` are traffic.py's command and sizes;
    /// destination and port are filled in.
    pub fn start(&self, flow: &Flow, args: &[&str]) -> anyhow::Result<Child> {
        let script = repo_root().join("tests/scripts/traffic.py");
        let port = match (flow.target, flow.proto) {
            (Target::Service, _) => SERVICE_PORT,
            (_, "udp") => UDP_PORT,
            _ => TCP_PORT,
        };
        let (command, rest) = args.split_first().context("no traffic command")?;
        let port_flag = if matches!(*command, "short" | "udp-many" | "udp-rounds") {
            "--sport-base"
        } else {
            "--sport"
        };
        let mut child = self.pod(flow.client).ns.command("python3");
        child
            .arg(script)
            .arg(command)
            .args(["--dst", &self.destination(flow)])
            .args(["--port", &port.to_string()])
            .args([port_flag, &flow.ports.start.to_string()])
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(child.spawn()?)
    }

    /// Whether the oracle's `key` is the underlay's outer packets between
    /// two nodes.
    pub fn is_tunnel(&self, key: &oracle::FlowKey) -> bool {
        self.underlay.tunnel_port().is_some_and(|port| {
            key.proto.starts_with("udp") && (key.sport == port || key.dport == port)
        })
    }

    /// Starts `flow`'s UDP flows together, one per client port, each
    /// sending one 100-byte datagram (echoed by the server) per round:
    /// `rounds` rounds, `pause` seconds apart.
    pub fn start_udp_rounds(&self, flow: &Flow, rounds: u32, pause: &str) -> anyhow::Result<Child> {
        let n = flow.ports.len().to_string();
        let rounds = rounds.to_string();
        self.start(
            flow,
            &[
                "udp-rounds",
                "--n",
                &n,
                "--size",
                "100",
                "--rounds",
                &rounds,
                "--pause",
                pause,
            ],
        )
    }

    /// Start traffic.py's `args` from the internet host to `dst`:`port`
    /// from source port `sport`.
    pub fn start_from_internet(
        &self,
        dst: &str,
        port: u16,
        sport: u16,
        args: &[&str],
    ) -> anyhow::Result<Child> {
        let script = repo_root().join("tests/scripts/traffic.py");
        let (command, rest) = args.split_first().context("no traffic command")?;
        let mut child = self.internet.command("python3");
        child
            .arg(script)
            .arg(command)
            .args(["--dst", dst])
            .args(["--port", &port.to_string()])
            .args(["--sport", &sport.to_string()])
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(child.spawn()?)
    }

    /// The category a transfer between these two nodes has.
    fn category(&self, a: usize, b: usize) -> &'static str {
        let (a, b) = (&self.nodes[a], &self.nodes[b]);
        if a.zone == b.zone {
            "same_zone"
        } else if a.region == b.region {
            "cross_zone"
        } else {
            "cross_region"
        }
    }

    /// The metering a correct agent produces, from the nodes' nftables
    /// counters: each counted packet direction is matched to its flow by
    /// the client port; a pod's bytes are taken from its own node's
    /// counters (its node is the one that meters it).
    pub fn expected(&self, flows: &[Flow]) -> anyhow::Result<BTreeMap<Key, u64>> {
        let mut expected = BTreeMap::new();
        for ((_, key), bytes) in self.expected_per_node(flows)? {
            *expected.entry(key).or_insert(0) += bytes;
        }
        Ok(expected)
    }

    /// [`Cluster::expected`], per node (its index): what each node's
    /// agent meters, and what a cloud bills each node's instance for.
    pub fn expected_per_node(&self, flows: &[Flow]) -> anyhow::Result<BTreeMap<(usize, Key), u64>> {
        let mut expected = BTreeMap::new();
        let mut add = |pod: &Pod, category: &str, direction: &str, bytes: u64| {
            *expected
                .entry((
                    pod.node,
                    (
                        pod.team.to_owned(),
                        pod.namespace.to_owned(),
                        pod.workload.to_owned(),
                        category.to_owned(),
                        direction.to_owned(),
                    ),
                ))
                .or_insert(0) += bytes;
        };
        for (index, node) in self.nodes.iter().enumerate() {
            for (key, count) in oracle::read(&node.ns)? {
                if !key.proto.starts_with("tcp") && !key.proto.starts_with("udp") {
                    continue;
                }
                if key.src.is_loopback() || key.dst.is_loopback() {
                    continue; // the agent's own ClickHouse and metrics traffic
                }
                if self.is_tunnel(&key) {
                    continue; // an overlay's outer packets, not a pod's flow
                }
                let owner = |port: u16| flows.iter().find(|f| f.ports.contains(&port));
                let (flow, client_sent) = match (owner(key.sport), owner(key.dport)) {
                    (Some(flow), None) => (flow, true),
                    (None, Some(flow)) => (flow, false),
                    _ => bail!("node {}: no single flow for {key:?}", node.name),
                };
                let client = self.pod(flow.client);
                let server = match flow.target {
                    Target::Pod(name) => Some(self.pod(name)),
                    Target::Service => Some(self.pod("api-5d8f6-m4n2b")),
                    Target::Internet => None,
                };
                let category = match server {
                    Some(server) => self.category(client.node, server.node),
                    None => "internet",
                };
                let (client_dir, server_dir) = if client_sent {
                    ("out", "in")
                } else {
                    ("in", "out")
                };
                if client.node == index {
                    add(client, category, client_dir, count.bytes);
                }
                if let Some(server) = server.filter(|s| s.node == index) {
                    add(server, category, server_dir, count.bytes);
                }
            }
        }
        Ok(expected)
    }
}

/// The EC2 instance id the node of this index runs on (its
/// `spec.providerID` is `aws:///<zone>/<id>`).
pub fn instance_id(node: usize) -> String {
    format!("i-{:017x}", node + 1)
}

/// flannel's VXLAN backend: a device per node with a fixed address, the
/// node's pod range's first address on it, and for every other node a
/// route, a neighbour and a forwarding entry to its VPC address.
fn vxlan(nodes: &[Node]) -> anyhow::Result<String> {
    let mut script = String::new();
    for (a, node) in nodes.iter().enumerate() {
        let (n, k) = (node.ns.name(), a + 1);
        write!(
            script,
            "ip -n {n} link add vxlan0 address 02:00:00:00:00:0{k} type vxlan id 1 dstport 8472 local {ip} dev up0 nolearning
             ip -n {n} addr add 10.91.{k}.0/32 dev vxlan0
             ip -n {n} addr add fd91:{k}::ffff/128 dev vxlan0 nodad
             ip -n {n} link set vxlan0 up
",
            ip = node.ip4
        )?;
        for (b, peer) in nodes.iter().enumerate() {
            if a == b {
                continue;
            }
            let j = b + 1;
            write!(
                script,
                "ip -n {n} route add 10.91.{j}.0/24 via 10.91.{j}.0 dev vxlan0 onlink
                 ip -n {n} neigh add 10.91.{j}.0 lladdr 02:00:00:00:00:0{j} dev vxlan0
                 ip -n {n} -6 route add fd91:{j}::/64 via fd91:{j}::ffff dev vxlan0 onlink
                 ip -n {n} -6 neigh add fd91:{j}::ffff lladdr 02:00:00:00:00:0{j} dev vxlan0
                 bridge -n {n} fdb append 02:00:00:00:00:0{j} dev vxlan0 dst {ip}
",
                ip = peer.ip4
            )?;
        }
    }
    Ok(script)
}

/// `metering_daily` of `database` summed per team, namespace, workload,
/// category and direction (rows with bytes only).
pub fn metering(ch: &ClickHouse, database: &str) -> anyhow::Result<BTreeMap<Key, u64>> {
    metering_of(ch, database, CLUSTER)
}

/// [`metering`] of the records of `cluster`.
pub fn metering_of(
    ch: &ClickHouse,
    database: &str,
    cluster: &str,
) -> anyhow::Result<BTreeMap<Key, u64>> {
    let text = ch.query(&format!(
        "SELECT team, namespace, workload, category, direction, sum(bytes) \
         FROM {database}.metering_daily WHERE cluster = '{cluster}' \
         GROUP BY ALL HAVING sum(bytes) > 0 FORMAT TabSeparated"
    ))?;
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            ensure!(f.len() == 6, "unexpected metering row {line:?}");
            let key = (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].to_owned(),
                f[4].to_owned(),
            );
            Ok((key, f[5].parse()?))
        })
        .collect()
}

/// How many of `workload`'s UDP flows (by client port) on node `node`
/// tollgate metered N packets more than nftables counted, for each N: a
/// kill that doubled a read shows as hundreds of flows off by a read's
/// packets, an oracle that missed packets as scattered small differences.
pub fn per_flow_differences(
    cluster: &Cluster,
    node: usize,
    ch: &ClickHouse,
    database: &str,
    workload: &str,
) -> anyhow::Result<BTreeMap<i64, u64>> {
    let oracle = oracle::read(&cluster.nodes[node].ns)?;
    let metered = ch.query(&format!(
        "SELECT local_port, sum(packets_sent) FROM {database}.flows \
         WHERE local_workload = '{workload}' AND protocol = 'udp' GROUP BY local_port FORMAT TSV"
    ))?;
    let mut differences = BTreeMap::new();
    for line in metered.lines() {
        let (port, packets) = line.split_once('\t').context("a TSV row")?;
        let port: u16 = port.parse()?;
        let packets: i64 = packets.parse()?;
        let counted: u64 = oracle
            .iter()
            .filter(|(key, _)| key.sport == port && key.proto.starts_with("udp"))
            .map(|(_, count)| count.packets)
            .sum();
        *differences
            .entry(packets - i64::try_from(counted)?)
            .or_insert(0) += 1;
    }
    Ok(differences)
}

/// One line per key where tollgate's metering and nftables' differ.
pub fn differences(expected: &BTreeMap<Key, u64>, metered: &BTreeMap<Key, u64>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&Key> = expected.keys().chain(metered.keys()).collect();
    keys.into_iter()
        .filter(|key| expected.get(*key) != metered.get(*key))
        .map(|key| {
            format!(
                "{key:?}: tollgate {:?}, nftables {:?}",
                metered.get(key),
                expected.get(key)
            )
        })
        .collect()
}

/// A `tollgate agent` inside a node, stopped with SIGTERM when dropped.
pub struct Agent {
    child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

impl Agent {
    /// Start the agent of `node` with `config` and wait until it is ready.
    pub fn start(node: &Node, config: &Path) -> anyhow::Result<Self> {
        let log = config.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = node
            .ns
            .command(crate::tollgate::binary().to_str().context("binary path")?)
            .args(["agent", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start tollgate agent")?;
        let mut agent = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "agent of {} exited ({status}):\n{}",
                    node.name,
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                );
            }
            let ready = node
                .ns
                .command("curl")
                .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:9102/readyz"])
                .status()?;
            if ready.success() {
                return Ok(agent);
            }
            ensure!(
                Instant::now() < deadline,
                "agent of {} not ready in 30 s",
                node.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for the final read and flush; the exit status
    /// must be success.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        // `ip netns exec` execs the agent, so this pid is the agent's.
        crate::run(Command::new("kill").args(["-TERM", &pid]))?;
        let status = self.child.wait()?;
        ensure!(
            status.success(),
            "agent exited with {status}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        Ok(())
    }
}

impl Agent {
    /// SIGKILL, as the OOM killer sends it: no final read, no flush.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGKILL at a moment the kernel has zeroed a batch of entries and
    /// queued its answers, which the agent has not received yet: one of
    /// its netlink sockets that `holder` keeps too (so not the dump's) has
    /// answers waiting while no dump runs on it (`/proc/PID/net/netlink`).
    /// A stop sent while the agent is inside the zeroing request's `send`
    /// takes effect as it returns, so such moments come often. Returns the
    /// stops it took; fails after `attempts` without one.
    pub fn kill_inside_zeroing(mut self, attempts: u32, holder: &Holder) -> anyhow::Result<u32> {
        let holder = holder.child.id();
        self.kill_when(attempts, |pid| zeroing_answers_waiting(pid, holder))?
            .context("no stop found zeroing answers waiting")
    }

    /// SIGKILL at a moment the agent has received a batch of `what` and
    /// the file it keeps them in has none of them yet: its inbox (read
    /// through `/proc/PID/fd`) holds datagrams, and the file in `spool`
    /// the inbox's mark names is as long as the mark says it was before
    /// that receive. Returns the stops it took, or `None` (the agent
    /// running on) after `attempts` without one.
    pub fn kill_between_receipt_and_keeping(
        &mut self,
        what: Inbox,
        attempts: u32,
        spool: &Path,
    ) -> anyhow::Result<Option<u32>> {
        self.kill_when(attempts, |pid| received_not_kept(pid, what, spool))
    }

    /// Stops the agent (SIGSTOP) at moments apart until `now` holds of the
    /// stopped process, then SIGKILLs it; returns the stops it took, or
    /// `None` after `attempts` without one.
    fn kill_when(
        &mut self,
        attempts: u32,
        now: impl Fn(u32) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Option<u32>> {
        let pid = self.child.id();
        let signal = |signal| {
            // SAFETY: kill(2) with a pid this test started and still holds.
            #[allow(unsafe_code)]
            let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
            ensure!(
                sent == 0,
                "cannot signal the agent: {}",
                std::io::Error::last_os_error()
            );
            Ok(())
        };
        // Every thread stopped, not only the main one: the reader and the
        // listener are threads of their own.
        let stopped = || -> anyhow::Result<bool> {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                let stat = std::fs::read_to_string(task?.path().join("stat"))?;
                if !stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
                {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        for attempt in 1..=attempts {
            signal(libc::SIGSTOP)?;
            while !stopped()? {
                std::thread::sleep(Duration::from_micros(50));
            }
            let found = now(pid);
            if found.as_ref().is_ok_and(|found| *found) {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(Some(attempt));
            }
            signal(libc::SIGCONT)?;
            found?;
            std::thread::sleep(Duration::from_micros(u64::from(attempt % 7) * 300));
        }
        signal(libc::SIGCONT)?;
        Ok(None)
    }
}

/// What an agent receives into an inbox: each names the memfd and the
/// files in the spool directory that keep it.
#[derive(Debug, Clone, Copy)]
pub enum Inbox {
    /// Answers to zeroing requests, kept in the read's journal.
    ZeroingAnswers,
    /// DESTROY events, kept in the ended connections' files.
    EndedConnections,
}

impl Inbox {
    fn memfd(self) -> &'static str {
        match self {
            Inbox::ZeroingAnswers => "/memfd:tollgate-zeroing-answers",
            Inbox::EndedConnections => "/memfd:tollgate-ended-connections",
        }
    }

    /// The start of the name of the file numbered `file`.
    fn file(self, file: u64) -> String {
        match self {
            Inbox::ZeroingAnswers => format!("journal-{file:020}-"),
            Inbox::EndedConnections => format!("ended-{file:020}"),
        }
    }
}

/// The socket inodes among the descriptors of process `pid`.
fn socket_inodes(pid: u32) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut sockets = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            sockets.insert(inode.to_owned());
        }
    }
    Ok(sockets)
}

/// Whether a NETLINK_NETFILTER socket of process `pid` that `holder` also
/// holds, subscribed to no group and running no dump, has bytes waiting
/// to be received: answers to zeroing requests.
fn zeroing_answers_waiting(pid: u32, holder: u32) -> anyhow::Result<bool> {
    let sockets = socket_inodes(pid)?;
    let held = socket_inodes(holder)?;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))?;
    Ok(table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 10
            && fields[1] == "12"
            && fields[3].trim_start_matches('0').is_empty()
            && fields[4] != "0"
            && fields[6] == "0"
            && sockets.contains(fields[9])
            && held.contains(fields[9])
    }))
}

/// Whether the inbox `what` of process `pid` holds datagrams received when
/// the file its mark names (in `spool`) had the length it has now. The
/// inbox's layout: `TGINBOX1`, the mark's file and offset (u64), then at
/// byte 64 the `mmsghdr`s, each a 56-byte `msghdr` followed by the
/// `msg_len` the kernel wrote (64-bit Linux).
fn received_not_kept(pid: u32, what: Inbox, spool: &Path) -> anyhow::Result<bool> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let fd = fd?.path();
        let target = std::fs::read_link(&fd).unwrap_or_default();
        if !target.to_string_lossy().starts_with(what.memfd()) {
            continue;
        }
        let mut head = [0u8; 124];
        std::io::Read::read_exact(&mut std::fs::File::open(&fd)?, &mut head)?;
        let word = |at: usize| u64::from_ne_bytes(head[at..at + 8].try_into().unwrap_or_default());
        let (file, offset) = (word(8), word(16));
        let first_len = u32::from_ne_bytes(head[120..124].try_into().unwrap_or_default());
        if &head[..8] != b"TGINBOX1" || file == 0 || first_len == 0 {
            continue;
        }
        let name = what.file(file);
        for entry in std::fs::read_dir(spool)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&name)
                && entry.metadata()?.len() == offset
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tollgate hold` beside a node's agent, killed when dropped.
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Start a holder for the agent configured by `config`, and name its
    /// socket in that configuration (`agent.holder_socket`).
    pub fn start(config: &Path) -> anyhow::Result<Self> {
        let socket = config.with_extension("holder.sock");
        let log = config.with_extension("holder.log");
        let child = Command::new(crate::tollgate::binary())
            .args(["hold", "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start tollgate hold")?;
        let mut holder = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = holder.child.try_wait()? {
                bail!(
                    "tollgate hold exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "tollgate hold not serving in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(config)?;
        ensure!(
            text.contains("\nagent:\n"),
            "no agent section in {config:?}"
        );
        std::fs::write(
            config,
            text.replace(
                "\nagent:\n",
                &format!("\nagent:\n  holder_socket: '{}'\n", socket.display()),
            ),
        )?;
        Ok(holder)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ClickHouse reachable as `http://127.0.0.1:8123` inside each node: socat
/// listens there and forwards through a Unix socket (which every namespace
/// can reach) to the server on the host's loopback. Servers stay on
/// 127.0.0.1.
pub struct Relay {
    children: Vec<Child>,
    socket: PathBuf,
}

impl Relay {
    /// Relay `url` (`http://127.0.0.1:PORT`) into every node.
    pub fn start(cluster: &Cluster, url: &str) -> anyhow::Result<Self> {
        let target = url
            .strip_prefix("http://")
            .context("ClickHouse URL is not http://")?
            .trim_end_matches('/');
        let socket = cluster.dir.join("clickhouse.sock");
        let mut children = vec![Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:{target}"))
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start socat (apt-get install socat)")?];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            ensure!(Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in &cluster.nodes {
            children.push(
                node.ns
                    .command("socat")
                    .arg("TCP-LISTEN:8123,bind=127.0.0.1,fork,reuseaddr")
                    .arg(format!("UNIX-CONNECT:{}", socket.display()))
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        for node in &cluster.nodes {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !node
                .ns
                .command("curl")
                .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:8123/ping"])
                .status()?
                .success()
            {
                ensure!(Instant::now() < deadline, "relay into {} failed", node.name);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(Self { children, socket })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        kill_all(&mut self.children);
        let _ = std::fs::remove_file(&self.socket);
    }
}
