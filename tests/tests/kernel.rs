//! The conntrack reader against the real kernel.
//!
//! Each test builds client <-> router <-> server namespaces, runs traffic of
//! known shape through the router, and reads the router's conntrack table
//! with the real `tollgate` binary: zeroing dumps while traffic flows, and
//! `tollgate conntrack watch` for connections that end between reads. The
//! expected numbers come from nftables counters in the router, kept per flow
//! and direction by the kernel itself: every byte tollgate reports must be
//! one the oracle counted, exactly once.

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use tollgate_tests::netns::{addr, Routed};
use tollgate_tests::oracle::{self, Count, FlowKey};
use tollgate_tests::tollgate::{self, Ledger, Line, Watch};
use tollgate_tests::{repo_root, require_root};

const TCP_PORT: &str = "5001";
const UDP_PORT: &str = "5002";

/// A routed test network with the oracle installed and a server running.
struct Bench {
    net: Routed,
    server: Child,
}

impl Bench {
    fn new(router_sysctls: &str) -> anyhow::Result<Self> {
        let net = Routed::create()?;
        oracle::install(&net.router)?;
        if !router_sysctls.is_empty() {
            net.router.sh(&format!("sysctl -qw {router_sysctls}"))?;
        }
        let script = repo_root().join("tests/scripts/traffic.py");
        let mut server = net.server.spawn(
            "python3",
            &[
                script.to_str().context("script path")?,
                "serve",
                "--tcp-port",
                TCP_PORT,
                "--udp-port",
                UDP_PORT,
            ],
        )?;
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.as_mut().context("server stdout")?),
            &mut ready,
        )?;
        ensure!(
            ready.trim() == "ready",
            "traffic server did not start: {ready:?}"
        );
        Ok(Self { net, server })
    }

    /// Start a client command from `traffic.py` in the client namespace.
    fn client(&self, args: &[&str]) -> anyhow::Result<Child> {
        let script = repo_root().join("tests/scripts/traffic.py");
        let mut all = vec![script.to_str().context("script path")?];
        all.extend_from_slice(args);
        self.net.client.spawn("python3", &all)
    }

    fn ping(&self, target: &str, count: &str) -> anyhow::Result<Child> {
        self.net.client.spawn(
            "ping",
            &["-q", "-c", count, "-i", "0.2", "-s", "300", target],
        )
    }

    /// Zeroing dumps every `every` until all `clients` have exited.
    fn dump_while_running(
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
    fn flush_router(&self) -> anyhow::Result<()> {
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

/// Every flow direction the oracle counted must match what tollgate
/// reported, and tollgate must report nothing the oracle did not count.
fn assert_exact(oracle: &HashMap<FlowKey, Count>, ledger: &Ledger) {
    let mut mismatches = Vec::new();
    for (key, expected) in oracle {
        let got = ledger.flows.get(key).copied().unwrap_or_default();
        if got != *expected {
            mismatches.push(format!("{key:?}: oracle {expected:?}, tollgate {got:?}"));
        }
    }
    for (key, got) in &ledger.flows {
        if got.bytes > 0 && !oracle.contains_key(key) {
            mismatches.push(format!("{key:?}: tollgate {got:?}, oracle counted nothing"));
        }
    }
    mismatches.sort();
    assert!(
        mismatches.is_empty(),
        "{} of {} flow directions differ:\n{}",
        mismatches.len(),
        oracle.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let oracle_total: u64 = oracle.values().map(|c| c.bytes).sum();
    let ledger_total: u64 = ledger.flows.values().map(|c| c.bytes).sum();
    assert_eq!(ledger_total, oracle_total, "total bytes");
}

/// No entry appears twice in one dump.
fn assert_unique(dump: &[Line]) {
    let mut seen = HashSet::new();
    for line in dump {
        let key = line.directions()[0].0.clone();
        assert!(
            seen.insert((key.clone(), line.id)),
            "entry {key:?} twice in one dump"
        );
    }
}

fn oracle_bytes_for(oracle: &HashMap<FlowKey, Count>, keep: impl Fn(&FlowKey) -> bool) -> u64 {
    oracle
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(_, c)| c.bytes)
        .sum()
}

#[test]
fn mixed_traffic_is_metered_exactly_across_zeroing_reads() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    // Closed TCP connections leave the table within about a second, so
    // some end between two reads and are reported by DESTROY events.
    let bench = Bench::new(
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
         net.netfilter.nf_conntrack_tcp_timeout_close=1",
    )?;
    let watch = Watch::start(&bench.net.router)?;
    let clients = vec![
        // Long transfers: 4 chunks 0.6 s apart, so each spans several reads.
        bench.client(&[
            "tcp",
            "--dst",
            addr::SERVER4,
            "--port",
            TCP_PORT,
            "--sport",
            "41001",
            "--bytes",
            "4000000",
            "--chunks",
            "4",
            "--pause",
            "0.6",
        ])?,
        bench.client(&[
            "tcp",
            "--dst",
            addr::SERVER6,
            "--port",
            TCP_PORT,
            "--sport",
            "41002",
            "--bytes",
            "3000000",
            "--chunks",
            "4",
            "--pause",
            "0.6",
        ])?,
        bench.client(&[
            "udp",
            "--dst",
            addr::SERVER4,
            "--port",
            UDP_PORT,
            "--sport",
            "41003",
            "--count",
            "20",
            "--size",
            "700",
            "--pause",
            "0.1",
        ])?,
        bench.client(&[
            "udp",
            "--dst",
            addr::SERVER6,
            "--port",
            UDP_PORT,
            "--sport",
            "41004",
            "--count",
            "20",
            "--size",
            "900",
            "--pause",
            "0.1",
        ])?,
        bench.ping(addr::SERVER4, "10")?,
        bench.ping(addr::SERVER6, "10")?,
    ];
    let dumps = bench.dump_while_running(clients, Duration::from_millis(300))?;
    let last = tollgate::dump(&bench.net.router, true)?;
    let after_last = tollgate::dump(&bench.net.router, true)?;
    bench.flush_router()?;
    thread::sleep(Duration::from_millis(500));
    let ended = watch.stop()?;
    let oracle = oracle::read(&bench.net.router)?;

    // A zeroing dump right after another reads zero.
    for line in &after_last {
        assert_eq!(
            line.bytes(),
            0,
            "bytes after a zeroing read with no traffic: {line:?}"
        );
    }
    for dump in &dumps {
        assert_unique(dump);
    }

    let mut ledger = Ledger::default();
    for dump in dumps.iter().chain([&last, &after_last]) {
        ledger.add(dump);
    }
    ledger.add(&ended);
    assert_exact(&oracle, &ledger);

    // Every family and protocol was seen.
    for proto in ["tcp", "udp", "icmp", "icmpv6"] {
        assert!(
            oracle.keys().any(|k| k.proto == proto),
            "the oracle saw no {proto} traffic"
        );
    }
    assert!(oracle.keys().any(|k| k.src.is_ipv6() && k.proto == "tcp"));
    // The long IPv4 transfer was read by several zeroing dumps.
    let reads_with_bulk = dumps
        .iter()
        .filter(|dump| {
            dump.iter()
                .any(|l| l.orig_sport == Some(41001) && l.orig_bytes.unwrap_or(0) > 0)
        })
        .count();
    assert!(
        reads_with_bulk >= 3,
        "the bulk transfer spanned only {reads_with_bulk} reads"
    );
    Ok(())
}

#[test]
fn short_connections_between_reads_are_metered_by_end_events() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    let bench = Bench::new(
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
         net.netfilter.nf_conntrack_tcp_timeout_close=1 \
         net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1 \
         net.netfilter.nf_conntrack_tcp_timeout_last_ack=1",
    )?;
    let watch = Watch::start(&bench.net.router)?;
    let before = tollgate::dump(&bench.net.router, true)?;

    // Hundreds of connections that open, transfer and close between two reads.
    let mut v4 = bench.client(&[
        "short",
        "--dst",
        addr::SERVER4,
        "--port",
        TCP_PORT,
        "--sport-base",
        "20000",
        "--n",
        "300",
        "--bytes",
        "2000",
    ])?;
    let mut v6 = bench.client(&[
        "short",
        "--dst",
        addr::SERVER6,
        "--port",
        TCP_PORT,
        "--sport-base",
        "30000",
        "--n",
        "100",
        "--bytes",
        "3000",
    ])?;
    ensure!(
        v4.wait()?.success() && v6.wait()?.success(),
        "short clients failed"
    );

    // Wait until the kernel has destroyed them all (TIME_WAIT lasts 1 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = tollgate::dump(&bench.net.router, false)?;
        if !live.iter().any(|l| l.proto_name() == "tcp") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "short connections still tracked after 60 s"
        );
        thread::sleep(Duration::from_millis(500));
    }
    let next = tollgate::dump(&bench.net.router, true)?;
    bench.flush_router()?;
    thread::sleep(Duration::from_millis(500));
    let ended = watch.stop()?;
    let oracle = oracle::read(&bench.net.router)?;

    let mut ledger = Ledger::default();
    ledger.add(&before);
    ledger.add(&next);
    ledger.add(&ended);
    assert_exact(&oracle, &ledger);

    // None of their bytes was in a dump: the end events alone metered them.
    let short_bytes = oracle_bytes_for(&oracle, |k| k.proto == "tcp");
    assert!(
        short_bytes > 400 * 2000,
        "oracle saw only {short_bytes} TCP bytes"
    );
    assert_eq!(ledger.ended_bytes, short_bytes);
    assert!(
        ledger.ended_entries >= 400,
        "only {} ended entries",
        ledger.ended_entries
    );
    for line in &ended {
        assert!(
            line.ended && line.stop_ns.is_some() && line.start_ns.is_some(),
            "{line:?}"
        );
    }
    Ok(())
}

#[test]
fn fifty_thousand_live_entries_are_zeroed_exactly_across_reply_datagrams() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    const FLOWS: usize = 50_000;
    let bench = Bench::new(
        "net.netfilter.nf_conntrack_udp_timeout=600 \
         net.netfilter.nf_conntrack_udp_timeout_stream=600",
    )?;
    // The server drops the datagrams silently (no ICMP errors), so every
    // entry stays a one-way UDP flow with known packets.
    bench
        .net
        .server
        .sh("nft add table inet sink; nft add chain inet sink in '{ type filter hook input priority 0; }'; nft add rule inet sink in udp dport 9 drop")?;
    let flows = FLOWS.to_string();
    let round = |size: &str| -> anyhow::Result<Child> {
        bench.client(&[
            "udp-many",
            "--dst",
            addr::SERVER4,
            "--port",
            "9",
            "--sport-base",
            "10000",
            "--n",
            &flows,
            "--size",
            size,
        ])
    };

    ensure!(round("64")?.wait()?.success(), "first round failed");
    let first = tollgate::dump(&bench.net.router, true)?;
    assert!(
        first.len() >= FLOWS,
        "only {} entries in the table",
        first.len()
    );
    // Second round while zeroing dumps run concurrently.
    let during = bench.dump_while_running(vec![round("100")?], Duration::from_millis(50))?;
    let last = tollgate::dump(&bench.net.router, true)?;
    let after_last = tollgate::dump(&bench.net.router, true)?;
    let oracle = oracle::read(&bench.net.router)?;

    assert_unique(&first);
    assert_unique(&last);
    assert!(after_last.len() >= FLOWS);
    assert!(
        after_last.iter().all(|l| l.bytes() == 0),
        "a second zeroing read saw bytes"
    );

    let mut ledger = Ledger::default();
    ledger.add(&first);
    for dump in &during {
        ledger.add(dump);
    }
    ledger.add(&last);
    ledger.add(&after_last);
    assert_eq!(
        oracle.values().filter(|c| c.packets == 2).count(),
        FLOWS,
        "every flow sent two packets"
    );
    assert_exact(&oracle, &ledger);
    Ok(())
}
