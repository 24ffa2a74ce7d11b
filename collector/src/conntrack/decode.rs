//! Decodes ctnetlink datagrams into [`Entry`] values: bytes in, entries out,
//! no I/O and no allocation on the success path.
//!
//! Framing (netlink headers, attribute headers and their bounds) is checked
//! by `netlink-packet-core`'s zero-copy buffers; the conntrack attributes
//! themselves (`CTA_*`, from `linux/netfilter/nfnetlink_conntrack.h`) are
//! read here, including the ones `netlink-packet-netfilter` leaves opaque:
//! counters, `CTA_ID`, `CTA_ZONE` and `CTA_TIMESTAMP`. Every malformed or
//! truncated input becomes a [`DecodeError`] naming the byte offset of the
//! message and the attribute path (with [`messages_skipping_idle`], an idle
//! entry's tuples are not read, so only their presence is checked); nothing
//! here panics on any input (the fuzz target in `fuzz/` holds it to that).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator, NLA_TYPE_MASK};
use tollgate_schema::{Family, Protocol};

use super::entry::{Counters, Entry, Origin, TcpState, Tuple, L4};

/// The ctnetlink subsystem id (`NFNL_SUBSYS_CTNETLINK`).
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
/// `IPCTNL_MSG_CT_NEW`: dump rows and NEW/UPDATE events.
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
/// `IPCTNL_MSG_CT_GET`: a plain (read-only) dump request.
pub const IPCTNL_MSG_CT_GET: u8 = 1;
/// `IPCTNL_MSG_CT_DELETE`: DESTROY events.
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
/// `IPCTNL_MSG_CT_GET_CTRZERO`: a read that zeroes each entry's counters as
/// it writes them into the reply (tollgate sends it for one entry at a time).
pub const IPCTNL_MSG_CT_GET_CTRZERO: u8 = 3;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// `NLM_F_DUMP_INTR`: the dump was interrupted by a table change and may be
/// inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;

const NFGENMSG_LEN: usize = 4;

pub(super) const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
pub(super) const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;

pub(super) const CTA_TUPLE_IP: u16 = 1;
pub(super) const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;

pub(super) const CTA_IP_V4_SRC: u16 = 1;
pub(super) const CTA_IP_V4_DST: u16 = 2;
pub(super) const CTA_IP_V6_SRC: u16 = 3;
pub(super) const CTA_IP_V6_DST: u16 = 4;

pub(super) const CTA_PROTO_NUM: u16 = 1;
pub(super) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(super) const CTA_PROTO_DST_PORT: u16 = 3;
pub(super) const CTA_PROTO_ICMP_ID: u16 = 4;
pub(super) const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub(super) const CTA_PROTO_ICMP_CODE: u16 = 6;
pub(super) const CTA_PROTO_ICMPV6_ID: u16 = 7;
pub(super) const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub(super) const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;

const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;

/// Why a ctnetlink datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ctnetlink message at byte {offset} of the datagram: {kind}")]
pub struct DecodeError {
    /// Offset of the offending netlink message within the datagram.
    pub offset: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// The ways a ctnetlink message can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// A netlink or attribute header is truncated or its length is wrong.
    #[error("bad framing in {path}: {detail}")]
    Framing {
        /// Where: `netlink header` or an attribute path.
        path: &'static str,
        /// What `netlink-packet-core` reported.
        detail: String,
    },
    /// An attribute's payload has the wrong size for its type.
    #[error("{attr} has {got} bytes, expected {expected}")]
    AttributeLength {
        /// Attribute path, e.g. `CTA_TUPLE_ORIG/CTA_TUPLE_IP/CTA_IP_V4_SRC`.
        attr: &'static str,
        /// Size the kernel ABI defines.
        expected: usize,
        /// Size found.
        got: usize,
    },
    /// A mandatory attribute is absent.
    #[error("missing {0}")]
    MissingAttribute(&'static str),
    /// The message is shorter than its fixed header.
    #[error("payload of {got} bytes is shorter than the {expected}-byte nfgenmsg header")]
    ShortPayload {
        /// Minimum size.
        expected: usize,
        /// Size found.
        got: usize,
    },
    /// The entry's address family is neither IPv4 nor IPv6.
    #[error("unsupported address family {0}")]
    Family(u8),
    /// The tuple's addresses do not match the message's family.
    #[error("{0} addresses do not match the message's address family")]
    FamilyMismatch(&'static str),
}

/// One netlink message of a ctnetlink datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A conntrack entry: a dump row (`IPCTNL_MSG_CT_NEW`) or, on an event
    /// socket, a DESTROY event (`IPCTNL_MSG_CT_DELETE`).
    Entry {
        /// The entry.
        entry: Entry,
        /// Netlink flags (carries `NLM_F_DUMP_INTR`).
        flags: u16,
    },
    /// A dumped entry that counted no packet in either direction, its tuples
    /// left undecoded by [`messages_skipping_idle`].
    Idle {
        /// Netlink flags (carries `NLM_F_DUMP_INTR`).
        flags: u16,
    },
    /// `NLMSG_DONE`: the end of a dump; `error` is the kernel's final status
    /// (0 on success, a negative errno otherwise).
    Done {
        /// Netlink flags (carries `NLM_F_DUMP_INTR`).
        flags: u16,
        /// 0 or a negative errno.
        error: i32,
    },
    /// `NLMSG_ERROR`: an acknowledgement (`errno == 0`) or a failure
    /// (negative errno).
    Error {
        /// 0 or a negative errno.
        errno: i32,
    },
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
    /// A message tollgate does not use (NOOP, other ctnetlink types).
    Ignored {
        /// The netlink message type.
        message_type: u16,
    },
}

/// Iterates over the netlink messages of one received datagram.
///
/// After the first error the iterator ends: the rest of the datagram cannot
/// be framed reliably.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    skip_idle: bool,
}

/// Iterate over the messages of one datagram as received from the kernel.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages {
        buf: datagram,
        pos: 0,
        skip_idle: false,
    }
}

/// [`messages`], but a dumped entry whose counters say it is idle comes as
/// [`Message::Idle`], its tuples never decoded: a reader that meters only
/// traffic pays for an idle entry little more than the kernel's walk.
pub fn messages_skipping_idle(datagram: &[u8]) -> Messages<'_> {
    Messages {
        buf: datagram,
        pos: 0,
        skip_idle: true,
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos;
        let fail = |kind| DecodeError { offset, kind };
        let header = match NetlinkBuffer::new_checked(&self.buf[offset..]) {
            Ok(header) => header,
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(fail(DecodeErrorKind::Framing {
                    path: "netlink header",
                    detail: e.to_string(),
                })));
            }
        };
        let length = header.length() as usize;
        self.pos = offset.saturating_add(align4(length));
        let message_type = header.message_type();
        let flags = header.flags();
        let payload = header.payload();
        let message = match message_type {
            NLMSG_DONE => Ok(Message::Done {
                flags,
                error: read_i32_ne(payload).unwrap_or(0),
            }),
            NLMSG_ERROR => match read_i32_ne(payload) {
                Some(errno) => Ok(Message::Error { errno }),
                None => Err(DecodeErrorKind::AttributeLength {
                    attr: "nlmsgerr",
                    expected: 4,
                    got: payload.len(),
                }),
            },
            NLMSG_OVERRUN => Ok(Message::Overrun),
            NLMSG_NOOP => Ok(Message::Ignored { message_type }),
            _ => {
                let [subsystem, kind] = message_type.to_be_bytes();
                let origin = match kind {
                    IPCTNL_MSG_CT_NEW => Some(Origin::Dump),
                    IPCTNL_MSG_CT_DELETE => Some(Origin::Ended),
                    _ => None,
                };
                match origin {
                    Some(origin) if subsystem == NFNL_SUBSYS_CTNETLINK => {
                        let skip_idle = self.skip_idle && origin == Origin::Dump;
                        decode_unless_idle(origin, payload, skip_idle).map(|entry| match entry {
                            Some(entry) => Message::Entry { entry, flags },
                            None => Message::Idle { flags },
                        })
                    }
                    _ => Ok(Message::Ignored { message_type }),
                }
            }
        };
        if message.is_err() {
            self.pos = self.buf.len();
        }
        Some(message.map_err(fail))
    }
}

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn read_i32_ne(bytes: &[u8]) -> Option<i32> {
    bytes
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decode the payload (nfgenmsg + attributes) of one conntrack message.
pub fn decode_entry(origin: Origin, payload: &[u8]) -> Result<Entry, DecodeErrorKind> {
    decode_unless_idle(origin, payload, false)
        .map(|entry| entry.expect("decoded when idle entries are not skipped"))
}

/// [`decode_entry`], or `None` for an idle entry when `skip_idle`: its
/// tuples, the costly part, are decoded last, and only if it is not.
fn decode_unless_idle(
    origin: Origin,
    payload: &[u8],
    skip_idle: bool,
) -> Result<Option<Entry>, DecodeErrorKind> {
    if payload.len() < NFGENMSG_LEN {
        return Err(DecodeErrorKind::ShortPayload {
            expected: NFGENMSG_LEN,
            got: payload.len(),
        });
    }
    let family = Family::from_af(payload[0]).ok_or(DecodeErrorKind::Family(payload[0]))?;
    let mut orig = None;
    let mut reply = None;
    let mut entry_zone = None;
    let mut orig_counters = None;
    let mut reply_counters = None;
    let mut id = 0;
    let mut mark = 0;
    let mut status = 0;
    let mut tcp_state = None;
    let mut start_ns = None;
    let mut stop_ns = None;

    for nla in attributes(&payload[NFGENMSG_LEN..], "conntrack attributes") {
        let nla = nla?;
        let kind = nla.kind() & NLA_TYPE_MASK;
        let value = value_of(nla);
        match kind {
            CTA_TUPLE_ORIG => orig = Some(value),
            CTA_TUPLE_REPLY => reply = Some(value),
            CTA_STATUS => status = be32(value, "CTA_STATUS")?,
            CTA_MARK => mark = be32(value, "CTA_MARK")?,
            CTA_ID => id = be32(value, "CTA_ID")?,
            CTA_ZONE => entry_zone = Some(be16(value, "CTA_ZONE")?),
            CTA_COUNTERS_ORIG => orig_counters = Some(decode_counters(value, "CTA_COUNTERS_ORIG")?),
            CTA_COUNTERS_REPLY => {
                reply_counters = Some(decode_counters(value, "CTA_COUNTERS_REPLY")?)
            }
            CTA_PROTOINFO => tcp_state = decode_tcp_state(value)?,
            CTA_TIMESTAMP => {
                for nla in attributes(value, "CTA_TIMESTAMP") {
                    let nla = nla?;
                    match nla.kind() & NLA_TYPE_MASK {
                        CTA_TIMESTAMP_START => {
                            start_ns = Some(be64(nla.value(), "CTA_TIMESTAMP/START")?)
                        }
                        CTA_TIMESTAMP_STOP => {
                            stop_ns = Some(be64(nla.value(), "CTA_TIMESTAMP/STOP")?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    let orig = orig.ok_or(DecodeErrorKind::MissingAttribute("CTA_TUPLE_ORIG"))?;
    let reply = reply.ok_or(DecodeErrorKind::MissingAttribute("CTA_TUPLE_REPLY"))?;
    if skip_idle && Counters::idle(orig_counters, reply_counters) {
        return Ok(None);
    }
    let (orig, proto, orig_zone) = decode_tuple(orig, family, "CTA_TUPLE_ORIG")?;
    let (reply, _, reply_zone) = decode_tuple(reply, family, "CTA_TUPLE_REPLY")?;
    let tuple_zone = orig_zone.or(reply_zone);
    Ok(Some(Entry {
        origin,
        family,
        proto,
        orig,
        reply,
        orig_counters,
        reply_counters,
        id,
        zone: entry_zone.or(tuple_zone).unwrap_or(0),
        mark,
        status,
        tcp_state,
        start_ns,
        stop_ns,
    }))
}

/// An attribute's value, borrowed from the datagram rather than from the
/// attribute (its framing was checked when it was read).
fn value_of(nla: NlaBuffer<&[u8]>) -> &[u8] {
    let end = usize::from(nla.length());
    &nla.into_inner()[4..end]
}

/// Attribute iterator whose framing errors carry the path being decoded.
fn attributes<'a>(
    buf: &'a [u8],
    path: &'static str,
) -> impl Iterator<Item = Result<NlaBuffer<&'a [u8]>, DecodeErrorKind>> + 'a {
    NlasIterator::new(buf).map(move |nla| {
        nla.map_err(|e| DecodeErrorKind::Framing {
            path,
            detail: e.to_string(),
        })
    })
}

fn decode_tuple(
    buf: &[u8],
    family: Family,
    path: &'static str,
) -> Result<(Tuple, Protocol, Option<u16>), DecodeErrorKind> {
    let mut addrs = None;
    let mut proto = None;
    let mut zone = None;
    for nla in attributes(buf, path) {
        let nla = nla?;
        match nla.kind() & NLA_TYPE_MASK {
            CTA_TUPLE_IP => addrs = Some(decode_addrs(nla.value(), family, path)?),
            CTA_TUPLE_PROTO => proto = Some(decode_proto(nla.value(), path)?),
            CTA_TUPLE_ZONE => zone = Some(be16(nla.value(), "CTA_TUPLE_ZONE")?),
            _ => {}
        }
    }
    let (src, dst) = addrs.ok_or(DecodeErrorKind::MissingAttribute("CTA_TUPLE_IP"))?;
    let (proto, l4) = proto.ok_or(DecodeErrorKind::MissingAttribute("CTA_TUPLE_PROTO"))?;
    Ok((Tuple { src, dst, l4 }, proto, zone))
}

fn decode_addrs(
    buf: &[u8],
    family: Family,
    path: &'static str,
) -> Result<(IpAddr, IpAddr), DecodeErrorKind> {
    let mut src = None;
    let mut dst = None;
    for nla in attributes(buf, path) {
        let nla = nla?;
        let value = nla.value();
        match (nla.kind() & NLA_TYPE_MASK, family) {
            (CTA_IP_V4_SRC, Family::Ipv4) => src = Some(ipv4(value, "CTA_IP_V4_SRC")?),
            (CTA_IP_V4_DST, Family::Ipv4) => dst = Some(ipv4(value, "CTA_IP_V4_DST")?),
            (CTA_IP_V6_SRC, Family::Ipv6) => src = Some(ipv6(value, "CTA_IP_V6_SRC")?),
            (CTA_IP_V6_DST, Family::Ipv6) => dst = Some(ipv6(value, "CTA_IP_V6_DST")?),
            (CTA_IP_V4_SRC | CTA_IP_V4_DST, Family::Ipv6) => {
                return Err(DecodeErrorKind::FamilyMismatch("IPv4"))
            }
            (CTA_IP_V6_SRC | CTA_IP_V6_DST, Family::Ipv4) => {
                return Err(DecodeErrorKind::FamilyMismatch("IPv6"))
            }
            _ => {}
        }
    }
    Ok((
        src.ok_or(DecodeErrorKind::MissingAttribute("CTA_IP_*_SRC"))?,
        dst.ok_or(DecodeErrorKind::MissingAttribute("CTA_IP_*_DST"))?,
    ))
}

fn decode_proto(buf: &[u8], path: &'static str) -> Result<(Protocol, L4), DecodeErrorKind> {
    let mut num = None;
    let (mut sport, mut dport) = (0, 0);
    let (mut icmp_type, mut icmp_code, mut icmp_id) = (0, 0, 0);
    for nla in attributes(buf, path) {
        let nla = nla?;
        let value = nla.value();
        match nla.kind() & NLA_TYPE_MASK {
            CTA_PROTO_NUM => num = Some(u8v(value, "CTA_PROTO_NUM")?),
            CTA_PROTO_SRC_PORT => sport = be16(value, "CTA_PROTO_SRC_PORT")?,
            CTA_PROTO_DST_PORT => dport = be16(value, "CTA_PROTO_DST_PORT")?,
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => icmp_id = be16(value, "CTA_PROTO_ICMP_ID")?,
            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                icmp_type = u8v(value, "CTA_PROTO_ICMP_TYPE")?
            }
            CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                icmp_code = u8v(value, "CTA_PROTO_ICMP_CODE")?
            }
            _ => {}
        }
    }
    let proto = Protocol(num.ok_or(DecodeErrorKind::MissingAttribute("CTA_PROTO_NUM"))?);
    let l4 = if proto.has_ports() {
        L4::Ports {
            src: sport,
            dst: dport,
        }
    } else if proto.is_icmp() {
        L4::Icmp {
            kind: icmp_type,
            code: icmp_code,
            id: icmp_id,
        }
    } else {
        L4::None
    };
    Ok((proto, l4))
}

fn decode_counters(buf: &[u8], path: &'static str) -> Result<Counters, DecodeErrorKind> {
    let mut counters = Counters::default();
    for nla in attributes(buf, path) {
        let nla = nla?;
        let value = nla.value();
        match nla.kind() & NLA_TYPE_MASK {
            CTA_COUNTERS_PACKETS => counters.packets = be64(value, "CTA_COUNTERS_PACKETS")?,
            CTA_COUNTERS_BYTES => counters.bytes = be64(value, "CTA_COUNTERS_BYTES")?,
            CTA_COUNTERS32_PACKETS => {
                counters.packets = u64::from(be32(value, "CTA_COUNTERS32_PACKETS")?)
            }
            CTA_COUNTERS32_BYTES => {
                counters.bytes = u64::from(be32(value, "CTA_COUNTERS32_BYTES")?)
            }
            _ => {}
        }
    }
    Ok(counters)
}

fn decode_tcp_state(buf: &[u8]) -> Result<Option<TcpState>, DecodeErrorKind> {
    for nla in attributes(buf, "CTA_PROTOINFO") {
        let nla = nla?;
        if nla.kind() & NLA_TYPE_MASK != CTA_PROTOINFO_TCP {
            continue;
        }
        for inner in attributes(nla.value(), "CTA_PROTOINFO_TCP") {
            let inner = inner?;
            if inner.kind() & NLA_TYPE_MASK == CTA_PROTOINFO_TCP_STATE {
                return Ok(Some(TcpState(u8v(
                    inner.value(),
                    "CTA_PROTOINFO_TCP_STATE",
                )?)));
            }
        }
    }
    Ok(None)
}

fn fixed<const N: usize>(value: &[u8], attr: &'static str) -> Result<[u8; N], DecodeErrorKind> {
    value
        .try_into()
        .map_err(|_| DecodeErrorKind::AttributeLength {
            attr,
            expected: N,
            got: value.len(),
        })
}

fn u8v(value: &[u8], attr: &'static str) -> Result<u8, DecodeErrorKind> {
    fixed::<1>(value, attr).map(|b| b[0])
}

fn be16(value: &[u8], attr: &'static str) -> Result<u16, DecodeErrorKind> {
    fixed(value, attr).map(u16::from_be_bytes)
}

fn be32(value: &[u8], attr: &'static str) -> Result<u32, DecodeErrorKind> {
    fixed(value, attr).map(u32::from_be_bytes)
}

fn be64(value: &[u8], attr: &'static str) -> Result<u64, DecodeErrorKind> {
    fixed(value, attr).map(u64::from_be_bytes)
}

fn ipv4(value: &[u8], attr: &'static str) -> Result<IpAddr, DecodeErrorKind> {
    fixed::<4>(value, attr).map(|b| IpAddr::V4(Ipv4Addr::from(b)))
}

fn ipv6(value: &[u8], attr: &'static str) -> Result<IpAddr, DecodeErrorKind> {
    fixed::<16>(value, attr).map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-only dump datagram captured from the kernel (6.18) in a
    /// namespace holding one TCP connection in TIME_WAIT, one unreplied UDP
    /// datagram over IPv6 and one ping. `conntrack -L -o extended` printed,
    /// for the same table:
    ///
    /// ```text
    /// ipv4 tcp TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=36618 dport=8080 packets=5 bytes=1268
    ///     src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=36618 packets=3 bytes=164 [ASSURED]
    /// ipv6 udp src=::1 dst=::1 sport=51646 dport=5353 packets=1 bytes=54 [UNREPLIED]
    ///     src=::1 dst=::1 sport=5353 dport=51646 packets=0 bytes=0
    /// ipv4 icmp src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=5655 packets=1 bytes=84
    ///     src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=5655 packets=1 bytes=84
    /// ```
    const CAPTURED: &[u8] = include_bytes!("testdata/dump-tcp-udp6-icmp.bin");

    fn entries(datagram: &[u8]) -> Vec<Entry> {
        messages(datagram)
            .map(|m| m.expect("captured datagram decodes"))
            .filter_map(|m| match m {
                Message::Entry { entry, .. } => Some(entry),
                _ => None,
            })
            .collect()
    }

    fn find(entries: &[Entry], proto: Protocol) -> Entry {
        *entries
            .iter()
            .find(|e| e.proto == proto)
            .expect("entry present")
    }

    #[test]
    fn captured_dump_matches_conntrack_tools() {
        let entries = entries(CAPTURED);
        assert_eq!(entries.len(), 3);

        let tcp = find(&entries, Protocol::TCP);
        assert_eq!(tcp.origin, Origin::Dump);
        assert_eq!(tcp.family, Family::Ipv4);
        assert_eq!(tcp.orig.src, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            tcp.orig.l4,
            L4::Ports {
                src: 36618,
                dst: 8080
            }
        );
        assert_eq!(
            tcp.reply.l4,
            L4::Ports {
                src: 8080,
                dst: 36618
            }
        );
        assert_eq!(
            tcp.orig_counters,
            Some(Counters {
                packets: 5,
                bytes: 1268
            })
        );
        assert_eq!(
            tcp.reply_counters,
            Some(Counters {
                packets: 3,
                bytes: 164
            })
        );
        assert_eq!(tcp.tcp_state.and_then(TcpState::name), Some("time_wait"));
        assert_ne!(tcp.status & (1 << 2), 0, "IPS_ASSURED");
        assert!(tcp.start_ns.is_some() && tcp.stop_ns.is_none());
        assert_ne!(tcp.id, 0);

        let udp = find(&entries, Protocol::UDP);
        assert_eq!(udp.family, Family::Ipv6);
        assert_eq!(udp.orig.dst, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            udp.orig.l4,
            L4::Ports {
                src: 51646,
                dst: 5353
            }
        );
        assert_eq!(
            udp.orig_counters,
            Some(Counters {
                packets: 1,
                bytes: 54
            })
        );
        assert_eq!(
            udp.reply_counters,
            Some(Counters {
                packets: 0,
                bytes: 0
            })
        );
        assert_eq!(udp.tcp_state, None);

        let icmp = find(&entries, Protocol::ICMP);
        assert_eq!(
            icmp.orig.l4,
            L4::Icmp {
                kind: 8,
                code: 0,
                id: 5655
            }
        );
        assert_eq!(
            icmp.reply.l4,
            L4::Icmp {
                kind: 0,
                code: 0,
                id: 5655
            }
        );
        assert_eq!(icmp.total_bytes(), 168);
    }

    #[test]
    fn every_truncation_is_an_error_or_fewer_entries_never_a_panic() {
        for len in 0..CAPTURED.len() {
            let mut good = 0;
            for message in messages(&CAPTURED[..len]) {
                match message {
                    Ok(Message::Entry { .. }) => good += 1,
                    Ok(_) => {}
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
            assert!(
                good < 3,
                "a truncated datagram ({len} bytes) cannot hold all 3 entries"
            );
        }
    }

    #[test]
    fn every_corrupted_byte_decodes_or_fails_cleanly() {
        let mut datagram = CAPTURED.to_vec();
        for pos in 0..datagram.len() {
            let original = datagram[pos];
            for value in [0x00, 0x01, 0x03, 0x7f, 0x80, 0xff] {
                datagram[pos] = value;
                for message in messages(&datagram) {
                    let _ = message;
                }
            }
            datagram[pos] = original;
        }
    }

    /// Builds one ctnetlink message by hand, for the cases the kernel never
    /// sends on its own.
    fn message(message_type: u16, family: u8, attributes: &[u8]) -> Vec<u8> {
        let len = 16 + 4 + attributes.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&message_type.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend_from_slice(attributes);
        out
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn v4_tuple(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ip = [attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)].concat();
        let proto = [
            attr(CTA_PROTO_NUM, &[17]),
            attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
            attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
        ]
        .concat();
        attr(
            kind | 0x8000,
            &[
                attr(CTA_TUPLE_IP | 0x8000, &ip),
                attr(CTA_TUPLE_PROTO | 0x8000, &proto),
            ]
            .concat(),
        )
    }

    fn udp_entry(extra: &[u8]) -> Vec<u8> {
        [
            v4_tuple(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 53),
            v4_tuple(CTA_TUPLE_REPLY, [10, 0, 0, 2], [10, 0, 0, 1], 53, 1000),
            extra.to_vec(),
        ]
        .concat()
    }

    #[test]
    fn destroy_events_are_ended_entries_with_32_bit_counters_and_zones() {
        let counters = [
            attr(CTA_COUNTERS32_PACKETS, &3u32.to_be_bytes()),
            attr(CTA_COUNTERS32_BYTES, &300u32.to_be_bytes()),
        ]
        .concat();
        let extra = [
            attr(CTA_COUNTERS_ORIG | 0x8000, &counters),
            attr(CTA_ZONE, &7u16.to_be_bytes()),
            attr(CTA_MARK, &0x42u32.to_be_bytes()),
            attr(
                CTA_TIMESTAMP | 0x8000,
                &[
                    attr(CTA_TIMESTAMP_START, &10u64.to_be_bytes()),
                    attr(CTA_TIMESTAMP_STOP, &20u64.to_be_bytes()),
                ]
                .concat(),
            ),
        ]
        .concat();
        let datagram = message(0x0102, 2, &udp_entry(&extra));
        let entries = entries(&datagram);
        let entry = entries[0];
        assert_eq!(entry.origin, Origin::Ended);
        assert_eq!(
            entry.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 300
            })
        );
        assert_eq!(entry.reply_counters, None);
        assert_eq!((entry.zone, entry.mark), (7, 0x42));
        assert_eq!((entry.start_ns, entry.stop_ns), (Some(10), Some(20)));
    }

    #[test]
    fn only_dumped_entries_idle_both_ways_are_skipped_undecoded() {
        let counters = |packets: u64| {
            [
                attr(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
                attr(CTA_COUNTERS_BYTES, &(packets * 100).to_be_bytes()),
            ]
            .concat()
        };
        let both = |orig: u64, reply: u64| {
            [
                attr(CTA_COUNTERS_ORIG | 0x8000, &counters(orig)),
                attr(CTA_COUNTERS_REPLY | 0x8000, &counters(reply)),
            ]
            .concat()
        };
        let skipped = |message_type: u16, attributes: &[u8]| {
            let datagram = message(message_type, 2, attributes);
            match messages_skipping_idle(&datagram).next() {
                Some(Ok(Message::Idle { flags })) => Some(Ok(flags)),
                Some(Ok(Message::Entry { entry, .. })) => {
                    assert_eq!(entry, decode_entry(entry.origin, &datagram[16..]).unwrap());
                    None
                }
                Some(Err(error)) => Some(Err(error.kind)),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(skipped(0x0100, &udp_entry(&both(0, 0))), Some(Ok(2)));
        assert_eq!(skipped(0x0100, &udp_entry(&both(0, 1))), None);
        assert_eq!(skipped(0x0100, &udp_entry(&both(2, 0))), None);
        // Accounting off: nothing says it is idle.
        assert_eq!(skipped(0x0100, &udp_entry(&[])), None);
        // A DESTROY event is never skipped.
        assert_eq!(skipped(0x0102, &udp_entry(&both(0, 0))), None);
        // An idle entry is still an entry: without its tuples it is an error.
        assert_eq!(
            skipped(0x0100, &both(0, 0)),
            Some(Err(DecodeErrorKind::MissingAttribute("CTA_TUPLE_ORIG")))
        );
        // The plain iterator hands every entry on.
        let datagram = message(0x0100, 2, &udp_entry(&both(0, 0)));
        assert!(entries(&datagram)[0].is_idle());
    }

    #[test]
    fn errors_name_the_attribute_and_offset() {
        let bad_status = udp_entry(&attr(CTA_STATUS, &[1, 2]));
        let mut datagram = message(0x0100, 2, &udp_entry(&[]));
        let offset = datagram.len();
        datagram.extend(message(0x0100, 2, &bad_status));
        let results: Vec<_> = messages(&datagram).collect();
        assert!(results[0].is_ok());
        let err = results[1].clone().unwrap_err();
        assert_eq!(err.offset, offset);
        assert_eq!(
            err.kind,
            DecodeErrorKind::AttributeLength {
                attr: "CTA_STATUS",
                expected: 4,
                got: 2
            }
        );
        assert!(
            err.to_string()
                .contains("CTA_STATUS has 2 bytes, expected 4"),
            "{err}"
        );
    }

    #[test]
    fn missing_tuples_and_foreign_families_are_errors() {
        let only_orig = v4_tuple(CTA_TUPLE_ORIG, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let err = messages(&message(0x0100, 2, &only_orig))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::MissingAttribute("CTA_TUPLE_REPLY")
        );

        let err = messages(&message(0x0100, 7, &udp_entry(&[])))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::Family(7));

        let err = messages(&message(0x0100, 10, &udp_entry(&[])))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::FamilyMismatch("IPv4"));
    }

    #[test]
    fn control_messages_are_recognised() {
        let mut done = Vec::new();
        done.extend_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&(2 | NLM_F_DUMP_INTR).to_ne_bytes());
        done.extend_from_slice(&[0; 8]);
        done.extend_from_slice(&(-4i32).to_ne_bytes());
        assert_eq!(
            messages(&done).next().unwrap().unwrap(),
            Message::Done {
                flags: 2 | NLM_F_DUMP_INTR,
                error: -4
            }
        );
        // Other netfilter subsystems (e.g. nftables, 10) are skipped.
        assert_eq!(
            messages(&message(0x0a00, 2, &[])).next().unwrap().unwrap(),
            Message::Ignored {
                message_type: 0x0a00
            }
        );
    }
}
