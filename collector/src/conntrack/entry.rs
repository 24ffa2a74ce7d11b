//! One conntrack entry as the kernel reports it, in plain Rust values.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use tollgate_schema::{Family, Protocol};

/// One direction's identity of a connection: addresses and the layer-4 part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Ports, ICMP identity, or nothing, depending on the protocol.
    pub l4: L4,
}

/// The layer-4 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum L4 {
    /// TCP, UDP, SCTP, DCCP, UDP-Lite.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP and ICMPv6.
    Icmp {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
        /// ICMP identifier.
        id: u16,
    },
    /// A protocol whose tuple has no layer-4 fields (e.g. GRE without helper).
    None,
}

impl L4 {
    /// Source and destination port, for protocols that have ports.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            L4::Ports { src, dst } => Some((src, dst)),
            _ => None,
        }
    }
}

/// Packets and bytes counted in one direction (`CTA_COUNTERS_ORIG|REPLY`).
///
/// Bytes are layer-3 bytes: IP header plus payload, exactly what nftables'
/// `counter` statement counts for the same packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Counters {
    /// Whether an entry with these counters is idle ([`Entry::is_idle`]).
    pub(crate) fn idle(orig: Option<Counters>, reply: Option<Counters>) -> bool {
        matches!(
            (orig, reply),
            (Some(orig), Some(reply)) if orig.packets == 0 && reply.packets == 0
        )
    }
}

/// TCP connection-tracking state (`enum tcp_conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpState(pub u8);

impl TcpState {
    /// The kernel's name for the state, lower-cased, or `None` for a number
    /// this version does not know.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 10] = [
            "none",
            "syn_sent",
            "syn_recv",
            "established",
            "fin_wait",
            "close_wait",
            "last_ack",
            "time_wait",
            "close",
            "syn_sent2",
        ];
        NAMES.get(usize::from(self.0)).copied()
    }
}

/// Whether an entry came from a table dump or from an end-of-connection
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// A row of a (possibly zeroing) table dump: the connection was alive.
    Dump,
    /// A DESTROY event: the connection has ended, and the counters are the
    /// bytes since the last zeroing read.
    Ended,
}

/// One conntrack entry.
///
/// `Copy` and free of heap data, so decoding a table of a million entries
/// allocates nothing per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Dump row or ended connection.
    pub origin: Origin,
    /// Address family.
    #[serde(with = "family_number")]
    pub family: Family,
    /// Layer-4 protocol.
    #[serde(with = "protocol_number")]
    pub proto: Protocol,
    /// The tuple of the direction that opened the connection.
    pub orig: Tuple,
    /// The tuple replies travel on (after NAT, it differs from `orig`
    /// mirrored).
    pub reply: Tuple,
    /// Original-direction counters; `None` when accounting was off.
    pub orig_counters: Option<Counters>,
    /// Reply-direction counters; `None` when accounting was off.
    pub reply_counters: Option<Counters>,
    /// `CTA_ID`: the kernel's 32-bit id for the entry.
    pub id: u32,
    /// `CTA_ZONE`; 0 is the default zone.
    pub zone: u16,
    /// `CTA_MARK`.
    pub mark: u32,
    /// `CTA_STATUS` bits (`IPS_*`).
    pub status: u32,
    /// TCP state, for TCP entries.
    pub tcp_state: Option<TcpState>,
    /// Start time in nanoseconds since the epoch, with
    /// `nf_conntrack_timestamp` on.
    pub start_ns: Option<u64>,
    /// Stop time in nanoseconds since the epoch, on ended connections with
    /// `nf_conntrack_timestamp` on.
    pub stop_ns: Option<u64>,
}

/// An entry's family as the kernel's number (records name it instead).
mod family_number {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use tollgate_schema::Family;

    pub fn serialize<S: Serializer>(family: &Family, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match family {
            Family::Ipv4 => Family::AF_INET,
            Family::Ipv6 => Family::AF_INET6,
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Family, D::Error> {
        let number = u8::deserialize(d)?;
        Family::from_af(number).ok_or_else(|| D::Error::custom(format!("unknown family {number}")))
    }
}

/// An entry's protocol as its number (records name it instead).
mod protocol_number {
    use serde::{Deserialize, Deserializer, Serializer};
    use tollgate_schema::Protocol;

    pub fn serialize<S: Serializer>(protocol: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(protocol.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        u8::deserialize(d).map(Protocol)
    }
}

impl Entry {
    /// Bytes in both directions, 0 where accounting was off.
    pub fn total_bytes(&self) -> u64 {
        self.orig_counters.map_or(0, |c| c.bytes) + self.reply_counters.map_or(0, |c| c.bytes)
    }

    /// Counted no packet in either direction since its counters were last
    /// zeroed. Without counters (accounting off) nothing can be said, and
    /// the entry is not idle.
    pub fn is_idle(&self) -> bool {
        Counters::idle(self.orig_counters, self.reply_counters)
    }
}

impl Entry {
    /// A TCP entry as a dump reports it, with its tuples and counters and
    /// none of the optional attributes: for tests and benchmarks that make
    /// entries rather than read them (fields are public to adjust the rest).
    pub fn tcp(
        orig: Tuple,
        reply: Tuple,
        orig_counters: Option<Counters>,
        reply_counters: Option<Counters>,
    ) -> Entry {
        Entry {
            origin: Origin::Dump,
            family: if orig.src.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            proto: Protocol::TCP,
            orig,
            reply,
            orig_counters,
            reply_counters,
            id: 1,
            zone: 0,
            mark: 0,
            status: 0,
            tcp_state: None,
            start_ns: None,
            stop_ns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_means_no_packet_either_way_with_counters_on() {
        let tuple = Tuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            l4: L4::Ports { src: 1, dst: 2 },
        };
        let counted = |packets| {
            Some(Counters {
                packets,
                bytes: packets * 60,
            })
        };
        let entry = |orig, reply| Entry::tcp(tuple, tuple, orig, reply);
        assert!(entry(counted(0), counted(0)).is_idle());
        assert!(!entry(counted(1), counted(0)).is_idle());
        assert!(!entry(counted(0), counted(2)).is_idle());
        assert!(!entry(None, None).is_idle());
        assert!(!entry(counted(0), None).is_idle());
    }
}
