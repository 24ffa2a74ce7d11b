//! Writes entries as JSON lines, the output of `tollgate conntrack dump` and
//! `tollgate conntrack watch`, without allocating per entry.
//!
//! One object per line, always the same keys in the same order:
//!
//! `family, proto, orig_src, orig_dst, orig_sport, orig_dport, orig_packets,
//! orig_bytes, reply_src, reply_dst, reply_sport, reply_dport, reply_packets,
//! reply_bytes, id, zone, mark, status, tcp_state, start_ns, stop_ns, ended`
//!
//! ICMP and ICMPv6 entries add `orig_icmp_type, orig_icmp_code,
//! orig_icmp_id, reply_icmp_type, reply_icmp_code, reply_icmp_id`. Ports
//! are `null` for protocols without ports, counters are `null` when the
//! kernel sent none (accounting off), `tcp_state` is `null` except for TCP,
//! and timestamps are `null` unless `nf_conntrack_timestamp` is on.

use std::io::{self, Write};
use std::net::IpAddr;

use super::{Counters, Entry, Origin, Tuple, L4};

/// A JSON-lines writer for entries.
pub struct JsonLines<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    /// Write to `out` (wrap it in a `BufWriter`: every entry is one write).
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(512),
        }
    }

    /// Write one entry as one line.
    pub fn write(&mut self, entry: &Entry) -> io::Result<()> {
        self.line.clear();
        encode(&mut self.line, entry);
        self.out.write_all(&self.line)
    }

    /// Flush the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Append `entry` as one JSON object and a newline to `line`.
pub fn encode(line: &mut Vec<u8>, entry: &Entry) {
    line.extend_from_slice(b"{\"family\":\"");
    line.extend_from_slice(entry.family.as_str().as_bytes());
    line.extend_from_slice(b"\",\"proto\":");
    match entry.proto.name() {
        Some(name) => {
            line.push(b'"');
            line.extend_from_slice(name.as_bytes());
            line.push(b'"');
        }
        None => number(line, entry.proto.0),
    }
    tuple(line, "orig", &entry.orig, entry.orig_counters);
    tuple(line, "reply", &entry.reply, entry.reply_counters);
    if let (L4::Icmp { .. }, L4::Icmp { .. }) = (entry.orig.l4, entry.reply.l4) {
        icmp(line, "orig", entry.orig.l4);
        icmp(line, "reply", entry.reply.l4);
    }
    line.extend_from_slice(b",\"id\":");
    number(line, entry.id);
    line.extend_from_slice(b",\"zone\":");
    number(line, entry.zone);
    line.extend_from_slice(b",\"mark\":");
    number(line, entry.mark);
    line.extend_from_slice(b",\"status\":");
    number(line, entry.status);
    line.extend_from_slice(b",\"tcp_state\":");
    match entry.tcp_state {
        Some(state) => match state.name() {
            Some(name) => {
                line.push(b'"');
                line.extend_from_slice(name.as_bytes());
                line.push(b'"');
            }
            None => number(line, state.0),
        },
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"start_ns\":");
    optional(line, entry.start_ns);
    line.extend_from_slice(b",\"stop_ns\":");
    optional(line, entry.stop_ns);
    line.extend_from_slice(match entry.origin {
        Origin::Dump => b",\"ended\":false}\n".as_slice(),
        Origin::Ended => b",\"ended\":true}\n".as_slice(),
    });
}

fn tuple(line: &mut Vec<u8>, side: &str, tuple: &Tuple, counters: Option<Counters>) {
    key(line, side, "src");
    address(line, tuple.src);
    key(line, side, "dst");
    address(line, tuple.dst);
    let ports = tuple.l4.ports();
    key(line, side, "sport");
    optional(line, ports.map(|(src, _)| src));
    key(line, side, "dport");
    optional(line, ports.map(|(_, dst)| dst));
    key(line, side, "packets");
    optional(line, counters.map(|c| c.packets));
    key(line, side, "bytes");
    optional(line, counters.map(|c| c.bytes));
}

fn icmp(line: &mut Vec<u8>, side: &str, l4: L4) {
    if let L4::Icmp { kind, code, id } = l4 {
        key(line, side, "icmp_type");
        number(line, kind);
        key(line, side, "icmp_code");
        number(line, code);
        key(line, side, "icmp_id");
        number(line, id);
    }
}

fn key(line: &mut Vec<u8>, side: &str, name: &str) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(side.as_bytes());
    line.push(b'_');
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b"\":");
}

fn address(line: &mut Vec<u8>, ip: IpAddr) {
    line.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            number(line, a);
            line.push(b'.');
            number(line, b);
            line.push(b'.');
            number(line, c);
            line.push(b'.');
            number(line, d);
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
    line.push(b'"');
}

fn number<N: itoa::Integer>(line: &mut Vec<u8>, n: N) {
    line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn optional<N: itoa::Integer>(line: &mut Vec<u8>, n: Option<N>) {
    match n {
        Some(n) => number(line, n),
        None => line.extend_from_slice(b"null"),
    }
}
