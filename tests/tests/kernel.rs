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
use std::thread;
use std::time::{Duration, Instant};

use anyhow::ensure;
use tollgate_tests::bench::{Bench, FAST_TCP_EXPIRY};
use tollgate_tests::netns::addr;
use tollgate_tests::oracle::{self, Count, FlowKey};
use tollgate_tests::require_root;
use tollgate_tests::tollgate::{self, Ledger, Line, Watch};

/// Every flow direction the oracle counted must match what tollgate
/// reported, and tollgate must report nothing the oracle did not count.
fn assert_exact(oracle: &HashMap<FlowKey, Count>, ledger: &Ledger) {
    let differences = ledger.differences(oracle);
    assert!(
        differences.is_empty(),
        "{} of {} flow directions differ:\n{}",
        differences.len(),
        oracle.len(),
        differences
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let oracle_total: u64 = oracle.values().map(|c| c.bytes).sum();
    assert_eq!(ledger.total().bytes, oracle_total, "total bytes");
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
    let bench = Bench::new(FAST_TCP_EXPIRY)?;
    let watch = Watch::start(&bench.net.router)?;
    let clients = vec![
        // Long transfers: 4 chunks 0.6 s apart, so each spans several reads.
        bench.tcp_upload(addr::SERVER4, 41001, 4_000_000, 4, 0.6)?,
        bench.tcp_upload(addr::SERVER6, 41002, 3_000_000, 4, 0.6)?,
        bench.udp_exchange(addr::SERVER4, 41003, 20, 700, 0.1)?,
        bench.udp_exchange(addr::SERVER6, 41004, 20, 900, 0.1)?,
        bench.ping(addr::SERVER4, "10")?,
        bench.ping(addr::SERVER6, "10")?,
    ];
    let dumps = bench.dump_while_running(clients, Duration::from_millis(300))?;
    let last = tollgate::dump(&bench.net.router, true)?;
    let after_last = tollgate::dump(&bench.net.router, true)?;
    bench.flush_router()?;
    thread::sleep(Duration::from_millis(500));
    let (ended, _) = watch.stop()?;
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
    let bench = Bench::new(FAST_TCP_EXPIRY)?;
    let watch = Watch::start(&bench.net.router)?;
    let before = tollgate::dump(&bench.net.router, true)?;

    // Hundreds of connections that open, transfer and close between two reads.
    let mut v4 = bench.short_connections(addr::SERVER4, 20000, 300, 2000)?;
    let mut v6 = bench.short_connections(addr::SERVER6, 30000, 100, 3000)?;
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
    let (ended, _) = watch.stop()?;
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

/// Namespaces whose UDP entries live 600 s, the server dropping datagrams
/// to port 9 silently (no ICMP errors), so every entry stays a one-way UDP
/// flow with known packets.
fn one_way_udp_bench() -> anyhow::Result<Bench> {
    let bench = Bench::new(
        "net.netfilter.nf_conntrack_udp_timeout=600 \
         net.netfilter.nf_conntrack_udp_timeout_stream=600",
    )?;
    bench
        .net
        .server
        .sh("nft add table inet sink; nft add chain inet sink in '{ type filter hook input priority 0; }'; nft add rule inet sink in udp dport 9 drop")?;
    Ok(bench)
}

#[test]
fn fifty_thousand_live_entries_are_zeroed_exactly_across_reply_datagrams() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    const FLOWS: usize = 50_000;
    let bench = one_way_udp_bench()?;
    let round = |size| bench.udp_one_way(addr::SERVER4, 9, 10000, FLOWS as u32, size);

    ensure!(round(64)?.wait()?.success(), "first round failed");
    let first = tollgate::dump(&bench.net.router, true)?;
    assert!(
        first.len() >= FLOWS,
        "only {} entries in the table",
        first.len()
    );
    // Second round while zeroing dumps run concurrently.
    let during = bench.dump_while_running(vec![round(100)?], Duration::from_millis(50))?;
    let last = tollgate::dump(&bench.net.router, true)?;
    let after_last = tollgate::dump(&bench.net.router, true)?;
    let oracle = oracle::read(&bench.net.router)?;

    // Ending all 50,000 at once overflows the event socket: the overrun is
    // counted and logged, the kernel redelivers, and every event arrives once.
    let watch = Watch::start(&bench.net.router)?;
    bench.flush_router()?;
    watch.wait_for(after_last.len(), Duration::from_secs(120))?;
    let (ended, log) = watch.stop()?;
    let overruns = log
        .iter()
        .filter(|l| l.contains("event socket overflowed"))
        .count();
    eprintln!("{} DESTROY events, {overruns} overruns logged", ended.len());
    // 50,000 events (about 1 KiB of socket memory each) against an 8 MiB
    // buffer overflow whatever the reader's speed.
    assert!(overruns > 0, "the flush did not overflow the event socket");
    assert_eq!(
        ended.len(),
        after_last.len(),
        "every ended connection exactly once"
    );
    assert_unique(&ended);
    assert!(
        ended.iter().all(|l| l.bytes() == 0),
        "bytes after the last zeroing read"
    );

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

/// The oracle checks itself: with sets too small for the traffic (4 flow
/// directions for 10 flows), the packets of the flows it could not add are
/// counted by its counter but by no set, and reading it fails, naming the
/// loss, instead of handing on counts that would blame tollgate.
#[test]
fn an_oracle_that_lost_packets_refuses_to_judge() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and nftables") {
        return Ok(());
    }
    let bench = one_way_udp_bench()?;
    bench
        .net
        .router
        .sh("nft delete table inet tollgate_oracle")?;
    oracle::install_holding(&bench.net.router, 4)?;
    ensure!(
        bench
            .udp_one_way(addr::SERVER4, 9, 10000, 10, 64)?
            .wait()?
            .success(),
        "traffic failed"
    );
    let error = oracle::read(&bench.net.router)
        .expect_err("an oracle whose set missed 6 flows must not be read")
        .to_string();
    assert!(
        error.contains("its counter ports4 saw 10, its set ports4 holds 4"),
        "{error}"
    );
    Ok(())
}

/// Two listeners at once (an agent and its successor in a handover, or an
/// agent and any other reliable subscriber): when one's socket overflows,
/// the kernel sends each event it could not deliver again, to every
/// subscriber, and the other receives events it already had. Each listener
/// must still hand on every ended connection exactly once.
#[test]
fn two_listeners_overflowing_each_hand_on_every_ended_connection_once() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    const FLOWS: u32 = 50_000;
    let bench = one_way_udp_bench()?;
    ensure!(
        bench
            .udp_one_way(addr::SERVER4, 9, 10000, FLOWS, 64)?
            .wait()?
            .success(),
        "traffic failed"
    );
    let table = tollgate::dump(&bench.net.router, false)?;
    ensure!(
        table.len() >= FLOWS as usize,
        "only {} entries",
        table.len()
    );
    let watches = [
        Watch::start(&bench.net.router)?,
        Watch::start(&bench.net.router)?,
    ];
    bench.flush_router()?;
    let mut overruns = 0;
    for watch in watches {
        watch.wait_for(table.len(), Duration::from_secs(120))?;
        // Redeliveries come in rounds: give the last ones time to arrive.
        thread::sleep(Duration::from_secs(2));
        let (ended, log) = watch.stop()?;
        overruns += log
            .iter()
            .filter(|l| l.contains("event socket overflowed"))
            .count();
        let summary = log.iter().find(|l| l.contains("watch complete"));
        eprintln!("{} DESTROY events; {summary:?}", ended.len());
        assert_unique(&ended);
        assert_eq!(ended.len(), table.len(), "every ended connection once");
    }
    assert!(overruns > 0, "the flush overflowed no event socket");
    Ok(())
}

/// Run the binary in `ns` as an unprivileged user (uid 65534, no
/// capabilities) and return (exit code, stderr).
fn run_unprivileged(ns: &tollgate_tests::netns::Netns, args: &[&str]) -> (Option<i32>, String) {
    let output = ns
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tollgate::binary())
        .args(args)
        .output()
        .expect("setpriv runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_cap_net_admin_the_error_names_the_sysctl_and_the_capability() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and setpriv") {
        return Ok(());
    }
    let ns = tollgate_tests::netns::Netns::create("unpriv")?;
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_acct=0")?;
    let (code, stderr) = run_unprivileged(&ns, &["conntrack", "dump"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("net.netfilter.nf_conntrack_acct"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");

    // With the settings already on, the kernel itself refuses the dump.
    ns.sh(
        "sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 \
         net.netfilter.nf_conntrack_events=1",
    )?;
    let (code, stderr) = run_unprivileged(&ns, &["conntrack", "dump"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    let (code, stderr) = run_unprivileged(&ns, &["conntrack", "watch", "--duration", "1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
    Ok(())
}

/// A namespace with accounting and timestamps off and events in the
/// kernel's default listener-only mode.
fn with_settings_off(role: &str) -> anyhow::Result<tollgate_tests::netns::Netns> {
    let ns = tollgate_tests::netns::Netns::create(role)?;
    ns.sh(
        "sysctl -qw net.netfilter.nf_conntrack_acct=0 net.netfilter.nf_conntrack_timestamp=0 \
         net.netfilter.nf_conntrack_events=2",
    )?;
    Ok(ns)
}

#[test]
fn the_reader_enables_accounting_timestamps_and_events_itself() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces") {
        return Ok(());
    }
    let ns = with_settings_off("sysctl")?;
    tollgate::dump(&ns, true)?;
    let values = ns.sh(
        "cat /proc/sys/net/netfilter/nf_conntrack_acct /proc/sys/net/netfilter/nf_conntrack_timestamp",
    )?;
    assert_eq!(values.split_whitespace().collect::<Vec<_>>(), ["1", "1"]);
    let _ = Watch::start(&ns)?.stop()?;
    assert_eq!(
        ns.sh("cat /proc/sys/net/netfilter/nf_conntrack_events")?
            .trim(),
        "1"
    );
    Ok(())
}

/// The DaemonSet's init container: `/proc/sys` read-only as in any
/// unprivileged container, the host's `/proc/sys/net/netfilter` mounted at
/// another path (a hostPath volume), only CAP_NET_ADMIN. The agent's own
/// attempt is refused with a hint; `conntrack enable --proc-sys` succeeds.
#[test]
fn conntrack_enable_works_through_a_mounted_proc_sys_with_only_cap_net_admin() -> anyhow::Result<()>
{
    if !require_root("kernel", "network and mount namespaces") {
        return Ok(());
    }
    let ns = with_settings_off("enable")?;
    let host_sys = std::env::temp_dir().join(format!("tollgate-host-sys-{}", std::process::id()));
    std::fs::create_dir_all(host_sys.join("net/netfilter"))?;
    let container = |command: &str| {
        ns.command("unshare")
            .args(["--mount", "sh", "-ec"])
            .arg(format!(
                "mount --bind /proc/sys/net/netfilter {dir}/net/netfilter
                 mount --bind /proc/sys /proc/sys
                 mount -o remount,bind,ro /proc/sys
                 exec setpriv --bounding-set=-all,+net_admin --inh-caps=-all {binary} {command}",
                dir = host_sys.display(),
                binary = tollgate::binary().display(),
            ))
            .output()
            .expect("unshare runs")
    };
    let refused = container("conntrack dump");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("conntrack enable --proc-sys"), "{stderr}");

    let enabled = container(&format!(
        "conntrack enable --proc-sys {}",
        host_sys.display()
    ));
    assert!(
        enabled.status.success(),
        "{}",
        String::from_utf8_lossy(&enabled.stderr)
    );
    let values = ns.sh(
        "cat /proc/sys/net/netfilter/nf_conntrack_acct /proc/sys/net/netfilter/nf_conntrack_timestamp \
         /proc/sys/net/netfilter/nf_conntrack_events",
    )?;
    assert_eq!(
        values.split_whitespace().collect::<Vec<_>>(),
        ["1", "1", "1"]
    );
    // With the settings on, the agent's read needs nothing more.
    let dump = container("conntrack dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    Ok(())
}

/// Sends one packet per line of stdin (`tcp|udp src sport dst dport`) in
/// the direction that opened the connection, through raw sockets.
const ONE_PACKET_EACH: &str = r#"
import socket, struct, sys
v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin:
    proto, src, sport, dst, dport = line.split()
    sport, dport = int(sport), int(dport)
    if proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x10, 65535, 0, 0)
        number = 6
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8, 0)
        number = 17
    try:
        if ":" in src:
            head = struct.pack("!IHBB16s16s", 6 << 28, len(l4), number, 64,
                               socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
            v6.sendto(head + l4, (dst, 0))
        else:
            head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, number, 0,
                               socket.inet_aton(src), socket.inet_aton(dst))
            v4.sendto(head + l4, (dst, 0))
    except PermissionError:
        pass  # the nftables drop right after conntrack counted it
"#;

/// A table whose entries differ in size (TCP and UDP, IPv4 and IPv6) puts
/// datagram boundaries at every offset inside an entry. The kernel's own
/// zeroing dump loses the counters of an entry cut after its counters
/// (it is sent again, zeroed, in the next datagram); tollgate must report
/// every entry's bytes exactly, as conntrack-tools lists them, and leave
/// nothing behind.
#[test]
fn a_mixed_table_is_zeroed_exactly_at_every_datagram_boundary() -> anyhow::Result<()> {
    if !require_root("kernel", "network namespaces and conntrack") {
        return Ok(());
    }
    const ENTRIES: usize = 20_000;
    let ns = tollgate_tests::netns::Netns::create("mixed")?;
    // Packets leave through lo; conntrack counts them at OUTPUT and the
    // filter drops them there (the `ct` rule makes the kernel track this
    // namespace). Mid-stream TCP is accepted without a handshake.
    ns.sh(
        "ip link set lo up; ip route add default dev lo; ip -6 route add default dev lo
         sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_tcp_be_liberal=1
         nft -f - <<'RULES'
table inet sink {
  chain out { type filter hook output priority filter; ct state established counter; drop; }
}
RULES",
    )?;
    let mut inject = String::new();
    let mut packets = String::new();
    let mut sizes: HashMap<(String, u16), u64> = HashMap::new();
    for i in 0..ENTRIES {
        let (proto, v6) = [("tcp", false), ("udp", false), ("tcp", true), ("udp", true)][i % 4];
        let (src, dst) = if v6 {
            (
                format!("fd00::{:x}", i % 500 + 1),
                format!("2001:db8::{:x}", i + 1),
            )
        } else {
            (
                format!("10.0.{}.{}", i % 2, i % 250 + 1),
                format!("52.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            )
        };
        let sport = 1024 + (i / 4) as u16;
        let dport = if proto == "tcp" { 443 } else { 53 };
        let state = if proto == "tcp" {
            " --state ESTABLISHED"
        } else {
            ""
        };
        inject.push_str(&format!(
            "-I -s {src} -d {dst} -p {proto} --sport {sport} --dport {dport} --reply-src {dst} \
             --reply-dst {src} --reply-port-src {dport} --reply-port-dst {sport}{state} --timeout 600\n"
        ));
        packets.push_str(&format!("{proto} {src} {sport} {dst} {dport}\n"));
        let size = match (proto, v6) {
            ("tcp", false) => 40,
            ("udp", false) => 28,
            ("tcp", true) => 60,
            _ => 48,
        };
        sizes.insert((src, sport), size);
    }
    let file = std::env::temp_dir().join(format!("tollgate-mixed-{}", std::process::id()));
    std::fs::write(&file, inject)?;
    ns.sh(&format!("conntrack -R {} 2>/dev/null", file.display()))?;
    std::fs::write(&file, packets)?;
    ns.sh(&format!(
        "python3 -c '{ONE_PACKET_EACH}' < {}",
        file.display()
    ))?;
    let _ = std::fs::remove_file(&file);

    // The independent view: conntrack-tools' plain listing.
    let listing = ns.sh("conntrack -L 2>/dev/null")?;
    let counted = listing.lines().filter(|l| l.contains("packets=1 ")).count();
    assert_eq!(
        counted,
        ENTRIES,
        "every entry counted its packet:\n{}",
        &listing[..listing.len().min(2000)]
    );

    let first = tollgate::dump(&ns, true)?;
    assert_eq!(first.len(), ENTRIES);
    let wrong: Vec<String> = first
        .iter()
        .filter(|l| {
            let expected = sizes[&(l.orig_src.to_string(), l.orig_sport.unwrap_or(0))];
            (l.orig_packets, l.orig_bytes, l.reply_bytes) != (Some(1), Some(expected), Some(0))
        })
        .map(|l| format!("{l:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {ENTRIES} entries read wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    let second = tollgate::dump(&ns, true)?;
    assert!(
        second.iter().all(|l| l.bytes() == 0),
        "bytes left after the zeroing read"
    );
    Ok(())
}
