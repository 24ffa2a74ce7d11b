//! A routed test network with the oracle installed and a traffic server
//! running: the fixture of the kernel suites and of the demo.

use std::process::Child;
use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::netns::{Netns, Routed};
use crate::oracle;
use crate::repo_root;
use crate::tollgate::{self, Line};

/// The server's TCP sink port.
pub const TCP_PORT: &str = "5001";
/// The server's UDP echo port.
pub const UDP_PORT: &str = "5002";

/// Router settings under which closed TCP connections leave the table
/// within about a second, so that some end between two reads and are
/// reported only by their DESTROY event.
pub const FAST_TCP_EXPIRY: &str = "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
     net.netfilter.nf_conntrack_tcp_timeout_close=1 \
     net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1 \
     net.netfilter.nf_conntrack_tcp_timeout_last_ack=1";

/// Start `traffic.py serve` in `ns` (a TCP sink and a UDP echo on both
/// families) and wait until it listens.
pub fn serve_traffic(ns: &Netns, tcp_port: &str, udp_port: &str) -> anyhow::Result<Child> {
    let script = repo_root().join("tests/scripts/traffic.py");
    let mut server = ns.spawn(
        "python3",
        &[
            script.to_str().context("script path")?,
            "serve",
            "--tcp-port",
            tcp_port,
            "--udp-port",
            udp_port,
        ],
    )?;
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().context("server stdout")?),
        &mut ready,
    )?;
    if ready.trim() != "ready" {
        let _ = server.kill();
        let _ = server.wait();
        anyhow::bail!("traffic server did not start: {ready:?}");
    }
    Ok(server)
}

/// A routed test network with the oracle installed and a server running.
pub struct Bench {
    /// The namespaces.
    pub net: Routed,
    server: Child,
}

impl Bench {
    /// Build the network, install the oracle in the router, apply
    /// `router_sysctls` (`name=value ...`) there and start the server.
    pub fn new(router_sysctls: &str) -> anyhow::Result<Self> {
        let net = Routed::create()?;
        oracle::install(&net.router)?;
        if !router_sysctls.is_empty() {
            net.router.sh(&format!("sysctl -qw {router_sysctls}"))?;
        }
        let server = serve_traffic(&net.server, TCP_PORT, UDP_PORT)?;
        Ok(Self { net, server })
    }

    /// Upload `bytes` over one TCP connection from source port `sport`, in
    /// `chunks` separated by `pause` seconds.
    pub fn tcp_upload(
        &self,
        dst: &str,
        sport: u16,
        bytes: u64,
        chunks: u32,
        pause: f64,
    ) -> anyhow::Result<Child> {
        self.client(&[
            "tcp",
            "--dst",
            dst,
            "--port",
            TCP_PORT,
            "--sport",
            &sport.to_string(),
            "--bytes",
            &bytes.to_string(),
            "--chunks",
            &chunks.to_string(),
            "--pause",
            &pause.to_string(),
        ])
    }

    /// `count` UDP datagrams of `size` bytes from `sport`, each echoed back.
    pub fn udp_exchange(
        &self,
        dst: &str,
        sport: u16,
        count: u32,
        size: u32,
        pause: f64,
    ) -> anyhow::Result<Child> {
        self.client(&[
            "udp",
            "--dst",
            dst,
            "--port",
            UDP_PORT,
            "--sport",
            &sport.to_string(),
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
            "--pause",
            &pause.to_string(),
        ])
    }

    /// `n` TCP connections one after another from source ports
    /// `sport_base..`, each sending `bytes` and closing.
    pub fn short_connections(
        &self,
        dst: &str,
        sport_base: u16,
        n: u32,
        bytes: u64,
    ) -> anyhow::Result<Child> {
        self.client(&[
            "short",
            "--dst",
            dst,
            "--port",
            TCP_PORT,
            "--sport-base",
            &sport_base.to_string(),
            "--n",
            &n.to_string(),
            "--bytes",
            &bytes.to_string(),
        ])
    }

    /// One UDP datagram of `size` bytes to `port` from each of the source
    /// ports `sport_base..sport_base + n` (nothing answers).
    pub fn udp_one_way(
        &self,
        dst: &str,
        port: u16,
        sport_base: u16,
        n: u32,
        size: u32,
    ) -> anyhow::Result<Child> {
        self.client(&[
            "udp-many",
            "--dst",
            dst,
            "--port",
            &port.to_string(),
            "--sport-base",
            &sport_base.to_string(),
            "--n",
            &n.to_string(),
            "--size",
            &size.to_string(),
        ])
    }

    /// Start a client command from `traffic.py` in the client namespace.
    fn client(&self, args: &[&str]) -> anyhow::Result<Child> {
        let script = repo_root().join("tests/scripts/traffic.py");
        let mut all = vec![script.to_str().context("script path")?];
        all.extend_from_slice(args);
        self.net.client.spawn("python3", &all)
    }

    /// Start `count` pings of 300 bytes from the client to `target`.
    pub fn ping(&self, target: &str, count: &str) -> anyhow::Result<Child> {
        self.net.client.spawn(
            "ping",
            &["-q", "-c", count, "-i", "0.2", "-s", "300", target],
        )
    }

    /// Zeroing dumps every `every` until all `clients` have exited.
    pub fn dump_while_running(
        &self,
        mut clients: Vec<Child>,
        every: Duration,
    ) -> anyhow::Result<Vec<Vec<Line>>> {
        let mut dumps = Vec::new();
        loop {
            dumps.push(tollgate::dump(&self.net.router, true)?);
            let mut running = Vec::new();
            for mut child in clients {
                match child.try_wait()? {
                    Some(status) => ensure!(status.success(), "traffic client failed: {status}"),
                    None => running.push(child),
                }
            }
            if running.is_empty() {
                return Ok(dumps);
            }
            clients = running;
            thread::sleep(every);
        }
    }

    /// End every remaining connection (`conntrack -F`), so that an entry
    /// the dumps skipped (expired, awaiting garbage collection) reports its
    /// bytes through its DESTROY event.
    pub fn flush_router(&self) -> anyhow::Result<()> {
        self.net.router.sh("conntrack -F 2>/dev/null")?;
        Ok(())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
