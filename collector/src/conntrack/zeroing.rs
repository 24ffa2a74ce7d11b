//! Reads and zeroes the counters of single entries: one
//! `IPCTNL_MSG_CT_GET_CTRZERO` request per entry, addressed by its original
//! tuple, many requests per datagram.
//!
//! Why not the zeroing dump: the kernel swaps an entry's counters to zero
//! while it writes the entry into a dump reply. When the reply runs out of
//! room part-way through an entry, after its counters, the entry is written
//! again at the start of the next datagram with zeroed counters, and the
//! bytes of the first attempt are gone. On a table of mixed entries that
//! happens at a good share of the datagram boundaries (Linux 6.18: dozens of
//! entries of 20,000 per read; docs/conntrack.md). A single-entry reply is
//! sized for its entry, so its counters always arrive.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::os::fd::{BorrowedFd, OwnedFd};

use tollgate_schema::{Family, Protocol};

use super::decode::{
    messages, Message, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC,
    CTA_PROTO_DST_PORT, CTA_PROTO_ICMPV6_CODE, CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE,
    CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_NUM, CTA_PROTO_SRC_PORT,
    CTA_TUPLE_IP, CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_ZONE, IPCTNL_MSG_CT_GET_CTRZERO,
    NFNL_SUBSYS_CTNETLINK,
};
use super::error::ConntrackError;
use super::inbox::{Inbox, Mark};
use super::socket::{NetfilterSocket, ReceivedMany};
use super::{Entry, L4};

/// Requests per datagram. Every reply must fit the socket's receive buffer
/// until it is read: a reply the kernel cannot queue is dropped after the
/// counters were zeroed.
const BATCH: usize = 256;
/// The zeroing inbox's name, as `/proc/PID/fd` shows it.
const INBOX: &std::ffi::CStr = c"tollgate-zeroing-answers";
/// Receive buffer for the replies, far above `BATCH` replies.
const REPLY_BUFFER: usize = 8 << 20;

const NLM_F_REQUEST: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// What the zeroing requests found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroingCounts {
    /// Entries read and zeroed one by one.
    pub zeroed: u64,
    /// Entries gone between the walk and their request: they ended, and
    /// their bytes come with their DESTROY event.
    pub vanished: u64,
}

/// Where zeroed entries go before anything else happens to them: from the
/// zeroing on, the caller holds their only copy.
pub trait Keep {
    /// Where what was kept so far ends. It is written into the inbox before
    /// each receive, so that after a kill the answers received and not yet
    /// kept are told from those kept.
    fn kept_up_to(&self) -> Mark;
    /// Keeps the entries of one receive; `received_at` is the mark written
    /// before it. Received again after a kill, entries kept after that mark
    /// already (the kill cut the keeping short) must be kept once. `Break`
    /// says they could not be kept: the read stops once they are handed on.
    fn keep(&mut self, received_at: Mark, zeroed: &[Entry]) -> ControlFlow<()>;
}

/// Keeps nothing, for a caller whose entries are not the only copy of
/// anything it must not lose.
impl Keep for () {
    fn kept_up_to(&self) -> Mark {
        Mark::default()
    }

    fn keep(&mut self, _: Mark, _: &[Entry]) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// Queues zeroing requests and hands on the entries the kernel answers
/// with.
pub(crate) struct Zeroer {
    socket: NetfilterSocket,
    /// Answers land here, memory the holder keeps across a kill.
    answers: Inbox,
    /// One receive's decoded answers, kept before any is handed on.
    answered: Vec<Entry>,
    requests: Vec<u8>,
    queued: usize,
    pub(crate) counts: ZeroingCounts,
}

impl Zeroer {
    pub(crate) fn open() -> Result<Self, ConntrackError> {
        let socket = NetfilterSocket::open()?;
        socket.set_receive_buffer(REPLY_BUFFER)?;
        Ok(Self::with(socket, Inbox::create(INBOX)?))
    }

    /// The zeroing socket and inbox of a killed agent, as the holder kept
    /// them (a new inbox if it kept none).
    pub(crate) fn adopt(socket: OwnedFd, inbox: Option<OwnedFd>) -> Result<Self, ConntrackError> {
        let inbox = Inbox::kept_or_new(inbox, INBOX)?;
        Ok(Self::with(NetfilterSocket::adopt(socket), inbox))
    }

    fn with(socket: NetfilterSocket, answers: Inbox) -> Self {
        Self {
            socket,
            answers,
            answered: Vec::with_capacity(BATCH),
            requests: Vec::with_capacity(BATCH * 112),
            queued: 0,
            counts: ZeroingCounts::default(),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    pub(crate) fn inbox(&self) -> BorrowedFd<'_> {
        self.answers.fd()
    }

    /// Gives `keep` the answers a killed agent's last receive took, which
    /// it may not have kept: the inbox holds them, with the mark written
    /// before that receive. Their counters were zeroed, so the inbox holds
    /// the only copy of those bytes.
    pub(crate) fn recover_received<K: Keep>(&mut self, keep: &mut K) -> Result<(), ConntrackError> {
        if !self.answers.is_empty() {
            self.decode_answers()?;
            // A `Break` changes nothing: `keep` holds what it could not
            // put aside.
            let _ = keep.keep(self.answers.mark(), &self.answered);
        }
        Ok(())
    }

    /// Gives `keep` the answers the kernel queued for a killed agent that
    /// it never received: they wait on the socket the holder kept.
    pub(crate) fn recover_unreceived<K: Keep>(
        &mut self,
        keep: &mut K,
    ) -> Result<(), ConntrackError> {
        loop {
            let mark = keep.kept_up_to();
            match self.socket.recv_queued(&mut self.answers, mark)? {
                ReceivedMany::Datagrams => {}
                ReceivedMany::TimedOut => return Ok(()),
                ReceivedMany::Overrun => return Err(answers_lost()),
            }
            self.decode_answers()?;
            let _ = keep.keep(mark, &self.answered);
        }
    }

    /// Forgets the requests queued and not sent: their entries keep their
    /// counters for the next read.
    pub(crate) fn discard_queued(&mut self) {
        self.requests.clear();
        self.queued = 0;
    }

    /// Queue the zeroing of `entry`; a full batch is sent, its answers
    /// given to `keep` together, then each handed to `on_entry`.
    pub(crate) fn zero<K, F>(
        &mut self,
        entry: &Entry,
        keep: &mut K,
        on_entry: &mut F,
    ) -> Result<ControlFlow<()>, ConntrackError>
    where
        K: Keep,
        F: FnMut(&Entry) -> ControlFlow<()>,
    {
        put_request(&mut self.requests, entry);
        self.queued += 1;
        if self.queued == BATCH {
            self.flush(keep, on_entry)
        } else {
            Ok(ControlFlow::Continue(()))
        }
    }

    /// Send what is queued, give the answers to `keep` and hand each to
    /// `on_entry`; a `Break` from it is returned once every answer was
    /// handed on.
    pub(crate) fn flush<K, F>(
        &mut self,
        keep: &mut K,
        on_entry: &mut F,
    ) -> Result<ControlFlow<()>, ConntrackError>
    where
        K: Keep,
        F: FnMut(&Entry) -> ControlFlow<()>,
    {
        if self.queued == 0 {
            return Ok(ControlFlow::Continue(()));
        }
        self.socket.send(&self.requests)?;
        let mut waiting = self.queued;
        self.requests.clear();
        self.queued = 0;
        // Every answer is handed on, even after a `Break`: its counters
        // were zeroed, and the caller owns the only copy of its bytes.
        let mut flow = ControlFlow::Continue(());
        while waiting > 0 {
            // The kernel answers a datagram of requests before `send`
            // returns: the answers are all queued, and one system call
            // takes the whole batch's (the inbox has a slot for each).
            let mark = keep.kept_up_to();
            match self.socket.recv_many(&mut self.answers, mark)? {
                ReceivedMany::Datagrams => {}
                ReceivedMany::TimedOut => continue,
                ReceivedMany::Overrun => return Err(answers_lost()),
            }
            waiting = waiting.saturating_sub(self.decode_answers()?);
            if keep.keep(mark, &self.answered).is_break() {
                flow = ControlFlow::Break(());
            }
            for entry in &self.answered {
                if on_entry(entry).is_break() {
                    flow = ControlFlow::Break(());
                }
            }
        }
        Ok(flow)
    }

    /// Decodes the inbox's answers into `answered`; returns how many
    /// requests they answer (entries and entries gone).
    fn decode_answers(&mut self) -> Result<usize, ConntrackError> {
        self.answered.clear();
        let mut answers = 0;
        for message in self.answers.iter().flat_map(messages) {
            let message = message.map_err(|error| ConntrackError::Decode {
                error,
                entries_before: self.counts.zeroed,
            })?;
            match message {
                Message::Entry { entry, .. } => {
                    answers += 1;
                    self.counts.zeroed += 1;
                    self.answered.push(entry);
                }
                Message::Error { errno } if -errno == libc::ENOENT => {
                    answers += 1;
                    self.counts.vanished += 1;
                }
                Message::Error { errno } if errno < 0 => {
                    return Err(ConntrackError::Kernel {
                        errno: -errno,
                        during: "a request to read and zero one entry's counters",
                    })
                }
                Message::Overrun => return Err(answers_lost()),
                Message::Error { .. }
                | Message::Done { .. }
                | Message::Ignored { .. }
                | Message::Idle { .. } => {}
            }
        }
        Ok(answers)
    }
}

/// The socket overflowed: answers, whose counters were zeroed, are lost.
/// `BATCH` is far below what the buffer holds, so this means a bug.
fn answers_lost() -> ConntrackError {
    ConntrackError::Kernel {
        errno: libc::ENOBUFS,
        during: "queueing the answers to zeroing requests",
    }
}

/// Appends the request that reads and zeroes `entry`, found by its
/// original tuple and zone.
fn put_request(out: &mut Vec<u8>, entry: &Entry) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // length, patched below
    out.extend_from_slice(
        &((u16::from(NFNL_SUBSYS_CTNETLINK) << 8) | u16::from(IPCTNL_MSG_CT_GET_CTRZERO))
            .to_ne_bytes(),
    );
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&[0; 8]); // sequence and port id: answers are counted, not matched
    let family = match entry.family {
        Family::Ipv4 => Family::AF_INET,
        Family::Ipv6 => Family::AF_INET6,
    };
    out.extend_from_slice(&[family, 0, 0, 0]);
    nest(out, CTA_TUPLE_ORIG, |out| {
        nest(out, CTA_TUPLE_IP, |out| {
            match (entry.orig.src, entry.orig.dst) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    attribute(out, CTA_IP_V4_SRC, &src.octets());
                    attribute(out, CTA_IP_V4_DST, &dst.octets());
                }
                (src, dst) => {
                    attribute(out, CTA_IP_V6_SRC, &v6(src));
                    attribute(out, CTA_IP_V6_DST, &v6(dst));
                }
            }
        });
        nest(out, CTA_TUPLE_PROTO, |out| {
            attribute(out, CTA_PROTO_NUM, &[entry.proto.0]);
            match entry.orig.l4 {
                L4::Ports { src, dst } => {
                    attribute(out, CTA_PROTO_SRC_PORT, &src.to_be_bytes());
                    attribute(out, CTA_PROTO_DST_PORT, &dst.to_be_bytes());
                }
                L4::Icmp { kind, code, id } => {
                    let [id_attr, type_attr, code_attr] = if entry.proto == Protocol::ICMPV6 {
                        [
                            CTA_PROTO_ICMPV6_ID,
                            CTA_PROTO_ICMPV6_TYPE,
                            CTA_PROTO_ICMPV6_CODE,
                        ]
                    } else {
                        [CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE]
                    };
                    attribute(out, id_attr, &id.to_be_bytes());
                    attribute(out, type_attr, &[kind]);
                    attribute(out, code_attr, &[code]);
                }
                L4::None => {}
            }
        });
    });
    if entry.zone != 0 {
        attribute(out, CTA_ZONE, &entry.zone.to_be_bytes());
    }
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn v6(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// A netlink attribute, padded to 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A nested attribute holding what `fill` appends.
fn nest(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(out);
    let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::decode::decode_entry;
    use super::super::{Origin, Tuple};
    use super::*;

    fn entry(src: &str, dst: &str, proto: Protocol, l4: L4, zone: u16) -> Entry {
        let tuple = Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
        };
        Entry {
            proto,
            zone,
            ..Entry::tcp(tuple, tuple, None, None)
        }
    }

    /// A request carries the entry's original tuple in the layout the
    /// kernel (and tollgate's own decoder) reads a tuple from.
    #[test]
    fn requests_carry_the_original_tuple_and_zone() {
        for wanted in [
            entry(
                "10.0.0.1",
                "52.0.0.9",
                Protocol::TCP,
                L4::Ports {
                    src: 1025,
                    dst: 443,
                },
                0,
            ),
            entry(
                "fd00::1",
                "2001:db8::9",
                Protocol::UDP,
                L4::Ports { src: 5353, dst: 53 },
                7,
            ),
            entry(
                "10.0.0.1",
                "10.0.0.2",
                Protocol::ICMP,
                L4::Icmp {
                    kind: 8,
                    code: 0,
                    id: 77,
                },
                0,
            ),
            entry(
                "fd00::1",
                "fd00::2",
                Protocol::ICMPV6,
                L4::Icmp {
                    kind: 128,
                    code: 0,
                    id: 9,
                },
                0,
            ),
            entry("10.0.0.1", "10.0.0.2", Protocol(47), L4::None, 0),
        ] {
            let mut bytes = Vec::new();
            put_request(&mut bytes, &wanted);
            assert_eq!(bytes.len() % 4, 0);
            assert_eq!(
                u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize,
                bytes.len()
            );
            let message_type = u16::from_ne_bytes([bytes[4], bytes[5]]);
            assert_eq!(message_type, 0x0103);
            // The kernel's answer has the same attribute layout; the
            // decoder reads the tuple and zone back (given the reply tuple
            // an answer also has).
            let mut answer = bytes[16..].to_vec();
            let orig_len = usize::from(u16::from_ne_bytes([answer[4], answer[5]]));
            let mut reply = answer[4..4 + orig_len].to_vec();
            reply[2..4].copy_from_slice(&(2 | NLA_F_NESTED).to_ne_bytes());
            answer.extend_from_slice(&reply);
            let decoded = decode_entry(Origin::Dump, &answer).unwrap();
            assert_eq!(decoded.orig, wanted.orig);
            assert_eq!(decoded.family, wanted.family);
            assert_eq!(decoded.proto, wanted.proto);
            assert_eq!(decoded.zone, wanted.zone);
        }
    }
}
