//! Decoding throughput of ctnetlink dump datagrams, against the generic
//! parser of `netlink-packet-netfilter` on the same bytes (the reference),
//! and the cost of the JSON-lines encoding `tollgate conntrack dump` adds.
//!
//! Input: the datagram captured from the kernel in `src/conntrack/testdata`
//! (TCP, UDP over IPv6, ICMP entries, with counters and timestamps),
//! repeated to a 32 KiB datagram like the ones a large dump delivers.

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage};
use netlink_packet_netfilter::NetfilterMessage;
use tollgate::conntrack::decode::{messages, Message};
use tollgate::conntrack::jsonl;

const CAPTURED: &[u8] = include_bytes!("../src/conntrack/testdata/dump-tcp-udp6-icmp.bin");

fn datagram() -> (Vec<u8>, u64) {
    let per_copy = messages(CAPTURED)
        .filter(|m| matches!(m, Ok(Message::Entry { .. })))
        .count();
    let copies = 32 * 1024 / CAPTURED.len();
    (CAPTURED.repeat(copies), (per_copy * copies) as u64)
}

fn decode(c: &mut Criterion) {
    let (datagram, entries) = datagram();
    let mut group = c.benchmark_group("decode 32 KiB dump datagram");
    group.throughput(Throughput::Elements(entries));
    group.bench_function("tollgate (zero-copy, no allocation)", |b| {
        b.iter(|| {
            let mut bytes = 0u64;
            for message in messages(black_box(&datagram)) {
                if let Ok(Message::Entry { entry, .. }) = message {
                    bytes += entry.total_bytes();
                }
            }
            bytes
        })
    });
    group.bench_function("reference: netlink-packet-netfilter", |b| {
        b.iter(|| {
            let mut count = 0u64;
            let mut offset = 0;
            let buf = black_box(&datagram[..]);
            while offset < buf.len() {
                let Ok(header) = NetlinkBuffer::new_checked(&buf[offset..]) else {
                    break;
                };
                let len = header.length() as usize;
                let message =
                    NetlinkMessage::<NetfilterMessage>::deserialize(&buf[offset..offset + len]);
                count += u64::from(message.is_ok());
                offset += (len + 3) & !3;
            }
            count
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode + JSON line");
    group.throughput(Throughput::Elements(entries));
    let mut line = Vec::with_capacity(1 << 20);
    group.bench_function("tollgate conntrack dump's per-entry work", |b| {
        b.iter(|| {
            line.clear();
            for message in messages(black_box(&datagram)) {
                if let Ok(Message::Entry { entry, .. }) = message {
                    jsonl::encode(&mut line, &entry);
                }
            }
            line.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
