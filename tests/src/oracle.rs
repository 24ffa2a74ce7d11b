//! nftables counters as the independent oracle: one counter per flow and
//! direction, kept by the kernel in dynamic sets, read back as JSON.
//!
//! The rules sit in a router's prerouting hook (or a pod's output and
//! prerouting hooks) just after conntrack (priority -150 > -200) and count
//! exactly the packets conntrack accounts (on a node's uplink, each time
//! such a packet crosses it: a NodePort's forwarded packet twice, in and
//! out, as the cloud bills it):
//! those of new and established connections (conntrack does not account
//! invalid packets, nor ICMP errors related to a connection).
//!
//! The oracle checks itself: each rule also counts its packets in a plain
//! named counter, which needs no allocation, before it updates the set,
//! whose new elements the kernel allocates in the packet path. A set that
//! holds fewer packets than its counter lost some, and [`read`] says so
//! rather than hand on counts that would blame tollgate for the oracle's
//! loss.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netns::Netns;

/// How many flow directions each of the oracle's sets holds. A set's
/// `size` is also the kernel's hint for its hash table's first size, read
/// as 16 bits: 65,535 makes the table that large at once (1,048,576 read
/// as 0 and left it at its minimum, growing in the background while a
/// burst of new flows inserted), and still holds the 50,000 flows of the
/// largest test.
pub const CAPACITY: u16 = u16::MAX;

/// The sets of `capacity` elements, and the named counter beside each.
fn sets(capacity: u16) -> String {
    format!(
        r#"
  set ports4 {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service; flags dynamic; counter; size {capacity}; }}
  set ports6 {{ type ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service; flags dynamic; counter; size {capacity}; }}
  set icmp4 {{ typeof ip saddr . ip daddr . icmp id; flags dynamic; counter; size {capacity}; }}
  set icmp6 {{ typeof ip6 saddr . ip6 daddr . icmpv6 id; flags dynamic; counter; size {capacity}; }}
  counter ports4 {{}}
  counter ports6 {{}}
  counter icmp4 {{}}
  counter icmp6 {{}}
"#
    )
}

/// The rules, each counting the packets that also match `only` (nft
/// expressions, or nothing).
fn rules(only: &str) -> String {
    let only = if only.is_empty() {
        String::new()
    } else {
        format!("{only} ")
    };
    format!(
        r#"
    {only}ct state {{ new, established }} meta nfproto ipv4 meta l4proto {{ tcp, udp }} counter name "ports4" update @ports4 {{ ip saddr . ip daddr . meta l4proto . th sport . th dport }}
    {only}ct state {{ new, established }} meta nfproto ipv6 meta l4proto {{ tcp, udp }} counter name "ports6" update @ports6 {{ ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport }}
    {only}ct state {{ new, established }} icmp type {{ echo-request, echo-reply }} counter name "icmp4" update @icmp4 {{ ip saddr . ip daddr . icmp id }}
    {only}ct state {{ new, established }} icmpv6 type {{ echo-request, echo-reply }} counter name "icmp6" update @icmp6 {{ ip6 saddr . ip6 daddr . icmpv6 id }}
"#
    )
}

/// A base chain of the oracle: its hook, its priority, a rule of its own
/// before the counting ones (or none), and what else a packet must match
/// to count (`None`: the chain counts nothing).
struct Chain<'a> {
    hook: &'a str,
    priority: i32,
    first: &'a str,
    only: Option<&'a str>,
}

impl Chain<'_> {
    /// Just after conntrack, every packet.
    fn after_conntrack(hook: &str) -> Chain<'_> {
        Chain {
            hook,
            priority: -150,
            first: "",
            only: Some(""),
        }
    }
}

/// The ruleset counting in `chains` into sets of `capacity` elements.
fn ruleset(chains: &[Chain], capacity: u16) -> String {
    let mut text = format!("table inet tollgate_oracle {{{}", sets(capacity));
    for Chain {
        hook,
        priority,
        first,
        only,
    } in chains
    {
        let first = if first.is_empty() {
            String::new()
        } else {
            format!("\n    {first}")
        };
        let rules = only.map(rules).unwrap_or_else(|| "\n".to_owned());
        text.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority {priority}; policy accept;{first}{rules}  }}\n"
        ));
    }
    text.push_str("}\n");
    text
}

/// One direction of one flow: what a packet's headers say.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    pub proto: String,
    /// Source port, or the ICMP id.
    pub sport: u16,
    /// Destination port, or 0 for ICMP.
    pub dport: u16,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, other: Count) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Install the oracle's counters in a router's `ns` (before any traffic),
/// counting what it forwards and receives.
pub fn install(ns: &Netns) -> anyhow::Result<()> {
    install_holding(ns, CAPACITY)
}

/// [`install`] with sets of `capacity` elements: a flow beyond them goes
/// uncounted, which [`read`] must notice.
pub fn install_holding(ns: &Netns, capacity: u16) -> anyhow::Result<()> {
    load(
        ns.name(),
        || ns.command("nft"),
        &ruleset(&[Chain::after_conntrack("prerouting")], capacity),
    )
}

/// Install the oracle's counters in the network namespace of process
/// `pid` (a pod's), counting what it sends and what it receives.
pub fn install_in_process(pid: u32) -> anyhow::Result<()> {
    load(
        &pid.to_string(),
        || in_process(pid),
        &ruleset(
            &[
                Chain::after_conntrack("output"),
                Chain::after_conntrack("prerouting"),
            ],
            CAPACITY,
        ),
    )
}

/// The connection mark bit the uplink's counters set on the connections
/// they count (kube-proxy marks packets, not connections).
const COUNTED: &str = "0x00800000";

/// Install the oracle's counters on `device`, the uplink of the node whose
/// `nft` this runs, counting what enters it (before the node's DNAT) and
/// what leaves it (after its masquerade), as a cloud counts an instance's
/// transfer: of the connections conntrack keeps byte counters for, as
/// tollgate can meter no others. A rule that reads those counters makes
/// the kernel turn `nf_conntrack_acct` on, so each connection opened from
/// the moment this is installed has them: its first packet marks it
/// (`COUNTED`), and every packet of a marked connection counts. (A test of
/// the counters on each packet would miss those that follow an agent's
/// zeroing in the direction the counters were not zeroed by.)
pub fn install_on_uplink(
    name: &str,
    nft: impl Fn() -> Command,
    device: &str,
) -> anyhow::Result<()> {
    let mark = format!("ct state new ct bytes > 0 ct mark set ct mark or {COUNTED}");
    let entering = format!("iifname \"{device}\" ct mark & {COUNTED} == {COUNTED}");
    let leaving = format!("oifname \"{device}\" ct mark & {COUNTED} == {COUNTED}");
    load(
        name,
        nft,
        &ruleset(
            &[
                // Connections this node opens.
                Chain {
                    first: &mark,
                    only: None,
                    ..Chain::after_conntrack("output")
                },
                // Connections opened to or through it, and what enters.
                Chain {
                    first: &mark,
                    only: Some(&entering),
                    ..Chain::after_conntrack("prerouting")
                },
                // After source NAT (100): the address the packet leaves with.
                Chain {
                    hook: "postrouting",
                    priority: 200,
                    first: "",
                    only: Some(&leaving),
                },
            ],
            CAPACITY,
        ),
    )
}

fn in_process(pid: u32) -> Command {
    let mut command = Command::new("nsenter");
    command.args(["-t", &pid.to_string(), "-n", "nft"]);
    command
}

fn load(name: &str, nft: impl Fn() -> Command, ruleset: &str) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("tollgate-oracle-{name}.nft"));
    std::fs::write(&path, ruleset)?;
    let result = crate::run(nft().arg("-f").arg(&path));
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

/// Every flow direction the oracle counted in `ns`.
pub fn read(ns: &Netns) -> anyhow::Result<HashMap<FlowKey, Count>> {
    read_with(|| ns.command("nft"))
}

/// Every flow direction the oracle counted in the namespace of `pid`.
pub fn read_in_process(pid: u32) -> anyhow::Result<HashMap<FlowKey, Count>> {
    read_with(|| in_process(pid))
}

/// Every flow direction the oracle counted where `nft` runs.
pub fn read_with(nft: impl Fn() -> Command) -> anyhow::Result<HashMap<FlowKey, Count>> {
    let mut flows = HashMap::new();
    for set in ["ports4", "ports6", "icmp4", "icmp6"] {
        // The counter first: a packet counted after it only adds to the set.
        let counted = counter_packets(&nft, set)?;
        let mut held = 0;
        let json = crate::run(nft().args(["-j", "list", "set", "inet", "tollgate_oracle", set]))?;
        let doc: Value = serde_json::from_str(&json).context("nft printed invalid JSON")?;
        let elements = doc["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["set"]["elem"].as_array()))
            .cloned()
            .unwrap_or_default();
        for element in elements {
            let element = &element["elem"];
            let parts = element["val"]["concat"]
                .as_array()
                .context("set element without concatenation")?;
            let key = flow_key(set, parts)?;
            let count = Count {
                packets: element["counter"]["packets"]
                    .as_u64()
                    .context("no packets")?,
                bytes: element["counter"]["bytes"].as_u64().context("no bytes")?,
            };
            held += count.packets;
            if flows.insert(key.clone(), count).is_some() {
                bail!("oracle counted {key:?} twice");
            }
        }
        if held < counted {
            bail!(
                "the nftables oracle lost packets: its counter {set} saw {counted}, its set \
                 {set} holds {held}; the kernel could not add {} flows' elements in the \
                 packet path, so these counts cannot judge tollgate",
                counted - held
            );
        }
    }
    Ok(flows)
}

/// The packets the oracle's named counter `name` saw.
fn counter_packets(nft: impl Fn() -> Command, name: &str) -> anyhow::Result<u64> {
    let json = crate::run(nft().args(["-j", "list", "counter", "inet", "tollgate_oracle", name]))?;
    let doc: Value = serde_json::from_str(&json).context("nft printed invalid JSON")?;
    doc["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .with_context(|| format!("no counter {name} in the oracle's table"))
}

fn flow_key(set: &str, parts: &[Value]) -> anyhow::Result<FlowKey> {
    let ip = |v: &Value| -> anyhow::Result<IpAddr> {
        v.as_str()
            .context("address is not a string")?
            .parse()
            .context("bad address")
    };
    let port = |v: &Value| -> anyhow::Result<u16> {
        u16::try_from(v.as_u64().context("port is not a number")?).context("port out of range")
    };
    Ok(if set.starts_with("ports") {
        FlowKey {
            src: ip(&parts[0])?,
            dst: ip(&parts[1])?,
            proto: parts[2]
                .as_str()
                .context("protocol is not a name")?
                .to_owned(),
            sport: port(&parts[3])?,
            dport: port(&parts[4])?,
        }
    } else {
        FlowKey {
            src: ip(&parts[0])?,
            dst: ip(&parts[1])?,
            proto: if set == "icmp4" { "icmp" } else { "icmpv6" }.to_owned(),
            sport: port(&parts[2])?,
            dport: 0,
        }
    })
}
