//! The vocabulary tollgate's records are written in.
//!
//! Every stage of tollgate (the conntrack reader, enrichment, classification
//! and the sinks) names address families and transport protocols the same
//! way, so that a `"tcp"` printed by `tollgate conntrack dump` is the same
//! `"tcp"` stored in ClickHouse or Parquet. Those names are defined here,
//! once, together with their numeric wire values.
//!
//! The types are small `Copy` values: they are built on the hot path for
//! every conntrack entry and must never allocate.
//!
//! [`flow`] defines the flow record stored by every sink, once;
//! [`compact`] is the form a batch of records is held and spooled in, and
//! [`columns`] reads it column by column for the columnar writers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod columns;
pub mod compact;
pub mod flow;

pub use flow::{Category, FlowRecord, FlowView, Initiator, Name, RemoteKind, COLUMNS};

/// The address family of a connection: IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`, 2).
    Ipv4,
    /// IPv6 (`AF_INET6`, 10).
    Ipv6,
}

impl Family {
    /// `AF_INET` / `NFPROTO_IPV4`.
    pub const AF_INET: u8 = 2;
    /// `AF_INET6` / `NFPROTO_IPV6`.
    pub const AF_INET6: u8 = 10;

    /// The family for a kernel `AF_*` number, if it is one tollgate meters.
    pub fn from_af(af: u8) -> Option<Family> {
        match af {
            Self::AF_INET => Some(Family::Ipv4),
            Self::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// The stable name used in every output: `ipv4` or `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Family {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Family {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match std::borrow::Cow::<str>::deserialize(d)?.as_ref() {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            other => Err(serde::de::Error::custom(format!(
                "unknown family {other:?}"
            ))),
        }
    }
}

/// An IP protocol number (`IPPROTO_*`), named where tollgate knows the name.
///
/// Any protocol the kernel tracks is representable: unknown numbers are kept
/// as numbers rather than dropped, because their bytes are billed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP (1).
    pub const ICMP: Protocol = Protocol(1);
    /// TCP (6).
    pub const TCP: Protocol = Protocol(6);
    /// UDP (17).
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6 (58).
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP (132).
    pub const SCTP: Protocol = Protocol(132);
    /// UDP-Lite (136).
    pub const UDPLITE: Protocol = Protocol(136);
    /// DCCP (33).
    pub const DCCP: Protocol = Protocol(33);

    /// The protocol for its name or its number written as text.
    pub fn from_text(text: &str) -> Option<Protocol> {
        const NAMED: [Protocol; 7] = [
            Protocol::ICMP,
            Protocol::TCP,
            Protocol::UDP,
            Protocol::ICMPV6,
            Protocol::SCTP,
            Protocol::UDPLITE,
            Protocol::DCCP,
        ];
        NAMED
            .into_iter()
            .find(|p| p.name() == Some(text))
            .or_else(|| text.parse().ok().map(Protocol))
    }

    /// The name tollgate prints (`tcp`, `udp`, `icmp`, `icmpv6`, ...), or
    /// `None` for a protocol that is printed as its number.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Protocol::ICMP => "icmp",
            Protocol::TCP => "tcp",
            Protocol::UDP => "udp",
            Protocol::ICMPV6 => "icmpv6",
            Protocol::SCTP => "sctp",
            Protocol::UDPLITE => "udplite",
            Protocol::DCCP => "dccp",
            _ => return None,
        })
    }

    /// Whether the protocol's conntrack tuple carries source and destination
    /// ports.
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Protocol::TCP | Protocol::UDP | Protocol::SCTP | Protocol::UDPLITE | Protocol::DCCP
        )
    }

    /// Whether the protocol's conntrack tuple carries ICMP type, code and id.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::ICMP | Protocol::ICMPV6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Stored as text: its name, or its number written out (`"tcp"`, `"47"`),
/// so that one text column holds every protocol.
impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.collect_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Protocol::from_text(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown protocol {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_map_from_kernel_numbers() {
        assert_eq!(Family::from_af(2), Some(Family::Ipv4));
        assert_eq!(Family::from_af(10), Some(Family::Ipv6));
        assert_eq!(Family::from_af(7), None);
    }

    #[test]
    fn protocols_print_names_or_numbers() {
        assert_eq!(Protocol::TCP.to_string(), "tcp");
        assert_eq!(Protocol::ICMPV6.to_string(), "icmpv6");
        assert_eq!(Protocol(47).to_string(), "47");
        assert_eq!(serde_json::to_string(&Protocol::UDP).unwrap(), "\"udp\"");
        assert_eq!(serde_json::to_string(&Protocol(47)).unwrap(), "\"47\"");
        for text in ["\"tcp\"", "\"icmpv6\"", "\"47\""] {
            let protocol: Protocol = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&protocol).unwrap(), text);
        }
        assert!(serde_json::from_str::<Protocol>("\"tcpp\"").is_err());
        assert_eq!(serde_json::to_string(&Family::Ipv6).unwrap(), "\"ipv6\"");
    }

    #[test]
    fn only_port_protocols_have_ports() {
        assert!(Protocol::TCP.has_ports());
        assert!(!Protocol::ICMP.has_ports());
        assert!(Protocol::ICMPV6.is_icmp());
        assert!(!Protocol(47).has_ports());
    }
}
