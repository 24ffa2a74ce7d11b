//! Network namespaces joined by veth pairs: a tiny routed network per test.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a namespace with a unique name built from `role`.
    pub fn create(role: &str) -> anyhow::Result<Self> {
        let name = format!(
            "tg{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // No duplicate address detection: while a link-local address is
        // tentative, neighbour discovery stalls for a second, TCP retransmits
        // its SYN, and conntrack (by design) does not account the duplicate
        // SYN-ACKs that follow; nftables would count bytes conntrack never saw.
        sh(&format!(
            "ip netns add {name}
             ip netns exec {name} sysctl -qw net.ipv6.conf.all.accept_dad=0 \
                 net.ipv6.conf.default.accept_dad=0
             ip -n {name} link set lo up"
        ))?;
        Ok(Self { name })
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Run a shell snippet inside this namespace.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        crate::run(self.command("sh").arg("-ec").arg(script))
    }

    /// Start a long-running process inside this namespace.
    pub fn spawn(&self, program: &str, args: &[&str]) -> anyhow::Result<Child> {
        Ok(self
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// Addresses of the routed test network.
pub mod addr {
    /// The client's IPv4 address.
    pub const CLIENT4: &str = "10.77.1.2";
    /// The server's IPv4 address.
    pub const SERVER4: &str = "10.77.2.2";
    /// The client's IPv6 address.
    pub const CLIENT6: &str = "fd77:1::2";
    /// The server's IPv6 address.
    pub const SERVER6: &str = "fd77:2::2";
}

/// client <-> router <-> server, IPv4 and IPv6. The router forwards and
/// tracks connections, like a Kubernetes node routing its pods' traffic.
#[derive(Debug)]
pub struct Routed {
    /// Where traffic starts.
    pub client: Netns,
    /// Where conntrack runs and tollgate reads.
    pub router: Netns,
    /// Where traffic ends.
    pub server: Netns,
}

impl Routed {
    /// Build the network. Conntrack accounting, timestamps and events are
    /// on in the router before any packet flows; neighbours are resolved and
    /// the router's table is empty when this returns.
    pub fn create() -> anyhow::Result<Self> {
        let client = Netns::create("client")?;
        let router = Netns::create("router")?;
        let server = Netns::create("server")?;
        let (c, r, s) = (client.name(), router.name(), server.name());
        sh(&format!(
            "ip link add c0 netns {c} type veth peer name rc netns {r}
             ip link add s0 netns {s} type veth peer name rs netns {r}
             ip -n {c} addr add 10.77.1.2/24 dev c0
             ip -n {c} addr add fd77:1::2/64 dev c0 nodad
             ip -n {r} addr add 10.77.1.1/24 dev rc
             ip -n {r} addr add fd77:1::1/64 dev rc nodad
             ip -n {r} addr add 10.77.2.1/24 dev rs
             ip -n {r} addr add fd77:2::1/64 dev rs nodad
             ip -n {s} addr add 10.77.2.2/24 dev s0
             ip -n {s} addr add fd77:2::2/64 dev s0 nodad
             for ns in {c} {r} {s}; do for l in $(ip -n $ns -o link show | awk -F': ' '{{print $2}}' | cut -d@ -f1); do ip -n $ns link set $l up; done; done
             ip -n {c} route add default via 10.77.1.1
             ip -n {c} -6 route add default via fd77:1::1
             ip -n {s} route add default via 10.77.2.1
             ip -n {s} -6 route add default via fd77:2::1
             ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
             ip netns exec {r} sysctl -qw net.netfilter.nf_conntrack_acct=1 \
                 net.netfilter.nf_conntrack_timestamp=1 net.netfilter.nf_conntrack_events=1
             ip netns exec {c} ping -q -c1 -W5 10.77.2.2 >/dev/null
             ip netns exec {c} ping -q -c1 -W5 fd77:2::2 >/dev/null
             ip netns exec {r} conntrack -F 2>/dev/null"
        ))?;
        Ok(Self {
            client,
            router,
            server,
        })
    }
}
