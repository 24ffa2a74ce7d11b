//! tollgate's demo: real traffic through a real kernel, read by tollgate,
//! counted independently by nftables, compared byte for byte.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use anyhow::ensure;
use tollgate_tests::bench::{Bench, FAST_TCP_EXPIRY};
use tollgate_tests::netns::addr;
use tollgate_tests::oracle;
use tollgate_tests::tollgate::{self, Ledger, Line, Watch};

/// Per connection: how tollgate saw it.
#[derive(Default)]
struct Seen {
    reads: u32,
    ended: bool,
    bytes: u64,
    nftables: u64,
}

fn main() -> anyhow::Result<()> {
    ensure!(
        tollgate_tests::require_root("demo", "network namespaces and conntrack"),
        "run the demo as root"
    );
    println!(
        "\ntollgate demo: exact network metering from the kernel's conntrack table\n\
         =======================================================================\n\n\
         A small routed network in namespaces on this machine:\n\n  \
         client {c4} / {c6}  ->  router (conntrack, tollgate)  ->  server {s4} / {s6}\n\n\
         tollgate reads the router's conntrack table once a second with a zeroing dump\n\
         (each byte is reported by exactly one read) and listens for connections that end\n\
         in between. nftables counts the same packets in the router, independently.\n",
        c4 = addr::CLIENT4,
        c6 = addr::CLIENT6,
        s4 = addr::SERVER4,
        s6 = addr::SERVER6,
    );
    let bench = Bench::new(FAST_TCP_EXPIRY)?;
    let watch = Watch::start(&bench.net.router)?;
    println!(
        "Traffic for about 5 s: TCP uploads (IPv4 6 MB, IPv6 3 MB), UDP request/response,\n\
         ping (both families) and 200 short TCP connections.\n"
    );
    let clients = vec![
        bench.tcp_upload(addr::SERVER4, 41001, 6_000_000, 8, 0.6)?,
        bench.tcp_upload(addr::SERVER6, 41002, 3_000_000, 6, 0.6)?,
        bench.udp_exchange(addr::SERVER4, 41003, 40, 500, 0.1)?,
        bench.udp_exchange(addr::SERVER6, 41004, 40, 800, 0.1)?,
        bench.ping(addr::SERVER4, "20")?,
        bench.ping(addr::SERVER6, "20")?,
        bench.short_connections(addr::SERVER4, 20000, 200, 5000)?,
    ];
    let mut reads = bench.dump_while_running(clients, Duration::from_secs(1))?;
    reads.push(tollgate::dump(&bench.net.router, true)?);
    bench.flush_router()?;
    thread::sleep(Duration::from_millis(500));
    let (ended, _) = watch.stop()?;
    let oracle = oracle::read(&bench.net.router)?;

    for (i, read) in reads.iter().enumerate() {
        let bytes: u64 = read.iter().map(Line::bytes).sum();
        println!(
            "  read {:>2}: {:>4} entries, {:>12} bytes zeroed",
            i + 1,
            read.len(),
            group(bytes)
        );
    }
    let ended_bytes: u64 = ended.iter().map(Line::bytes).sum();
    println!(
        "  ended connections reported between reads: {}, carrying {} bytes\n",
        ended.len(),
        group(ended_bytes)
    );

    let mut connections: BTreeMap<String, Seen> = BTreeMap::new();
    let reads_and_ended = reads.iter().flatten().map(|l| (l, true));
    for (line, from_read) in reads_and_ended.chain(ended.iter().map(|l| (l, false))) {
        let [(orig, _), _] = line.directions();
        let seen = connections
            .entry(connection(
                &orig.proto,
                orig.src,
                orig.dst,
                orig.sport,
                orig.dport,
            ))
            .or_default();
        if line.bytes() > 0 {
            if from_read {
                seen.reads += 1;
            } else {
                seen.ended = true;
            }
        }
        seen.bytes += line.bytes();
    }
    // nftables' bytes per connection: both directions, named from the client.
    for (key, count) in &oracle {
        let from_client =
            key.src.to_string() == addr::CLIENT4 || key.src.to_string() == addr::CLIENT6;
        let name = if from_client {
            connection(&key.proto, key.src, key.dst, key.sport, key.dport)
        } else {
            connection(&key.proto, key.dst, key.src, key.dport, key.sport)
        };
        connections.entry(name).or_default().nftables += count.bytes;
    }

    println!(
        "  {:<58} {:>6} {:>6} {:>12} {:>12}",
        "connection (client -> server)", "reads", "ended", "tollgate", "nftables"
    );
    for (name, seen) in &connections {
        println!(
            "  {:<58} {:>6} {:>6} {:>12} {:>12}  {}",
            name,
            seen.reads,
            if seen.ended { "yes" } else { "-" },
            group(seen.bytes),
            group(seen.nftables),
            if seen.bytes == seen.nftables {
                "equal"
            } else {
                "DIFFERENT"
            }
        );
    }

    let mut ledger = Ledger::default();
    for read in &reads {
        ledger.add(read);
    }
    ledger.add(&ended);
    let differences = ledger.differences(&oracle);
    let total = ledger.total().bytes;
    let counted: u64 = oracle.values().map(|c| c.bytes).sum();
    println!();
    if differences.is_empty() {
        println!(
            "Total: tollgate metered {} bytes, nftables counted {} bytes, in every one of\n\
             the {} flow directions: each byte was metered exactly once.",
            group(total),
            group(counted),
            oracle.len()
        );
    } else {
        println!(
            "tollgate and nftables DISAGREE:\n{}",
            differences.join("\n")
        );
    }
    println!(
        "\nThe raw data is JSON lines: `tollgate conntrack dump` (add --no-zero to only look)\n\
         and `tollgate conntrack watch` print one object per connection. Try them in any\n\
         network namespace as root. The demo's namespaces are removed now.\n"
    );
    ensure!(differences.is_empty(), "metering was not exact");
    Ok(())
}

/// A display name for a connection; the short connections share one row.
fn connection(proto: &str, client: IpAddr, server: IpAddr, cport: u16, sport: u16) -> String {
    if proto == "tcp" && (20000..20200).contains(&cport) {
        return "tcp   200 short connections (IPv4)".to_owned();
    }
    format!(
        "{proto:<5} {} -> {}",
        endpoint(&client, cport, proto),
        endpoint(&server, sport, proto)
    )
}

fn endpoint(ip: &IpAddr, port: u16, proto: &str) -> String {
    let host = if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    if proto.starts_with("icmp") {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// 1234567 -> "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
