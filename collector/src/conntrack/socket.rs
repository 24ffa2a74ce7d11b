//! The netfilter netlink socket: opening, socket options, sending requests
//! and receiving whole datagrams into one reused buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::error::ConntrackError;
use super::inbox::{self, Inbox, Mark, SLOT};

/// Room for the largest datagram the kernel sends: dump replies are capped
/// at 32 KiB per skb (`netlink_recvmsg`), events are single messages. The
/// kernel also sizes dump skbs from the buffer we offer, so offering more
/// than 32 KiB gets the fewest system calls per dump.
const DATAGRAM_CAPACITY: usize = 64 * 1024;

/// The outcome of one receive.
pub(crate) enum Received<'a> {
    /// One datagram, as the kernel sent it.
    Datagram(&'a [u8]),
    /// The receive timeout passed with nothing to read.
    TimedOut,
    /// `ENOBUFS`: the socket's buffer overflowed and messages were dropped.
    Overrun,
}

/// The outcome of receiving many datagrams at once.
pub(crate) enum ReceivedMany {
    /// At least one datagram, now in the [`Inbox`].
    Datagrams,
    /// The receive timeout passed with nothing to read.
    TimedOut,
    /// `ENOBUFS`: the socket's buffer overflowed and messages were dropped.
    Overrun,
}

/// A NETLINK_NETFILTER socket with a reusable receive buffer.
pub(crate) struct NetfilterSocket {
    socket: netlink_sys::Socket,
    datagram: Vec<u8>,
    sequence: u32,
}

impl NetfilterSocket {
    pub(crate) fn open() -> Result<Self, ConntrackError> {
        let mut socket =
            netlink_sys::Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Open)?;
        socket.bind_auto().map_err(ConntrackError::Open)?;
        Ok(Self {
            socket,
            datagram: Vec::with_capacity(DATAGRAM_CAPACITY),
            sequence: 0,
        })
    }

    /// A socket opened by an earlier agent, as the holder kept it: bound,
    /// its options and subscriptions still set.
    #[allow(unsafe_code)]
    pub(crate) fn adopt(fd: OwnedFd) -> Self {
        // SAFETY: `fd` is an open socket this process now owns; the
        // `netlink_sys::Socket` closes it when dropped, as `OwnedFd` would.
        let socket = unsafe { netlink_sys::Socket::from_raw_fd(fd.into_raw_fd()) };
        Self {
            socket,
            datagram: Vec::with_capacity(DATAGRAM_CAPACITY),
            sequence: 0,
        }
    }

    /// The socket's descriptor, to give the holder a copy.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    pub(crate) fn inner(&self) -> &netlink_sys::Socket {
        &self.socket
    }

    /// Ask for a dump of the whole table, both address families, without
    /// side effects.
    pub(crate) fn request_dump(&mut self) -> Result<(), ConntrackError> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = ConntrackMessage::Get(Vec::new());
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        // AF_UNSPEC: one walk of the hash table returns IPv4 and IPv6 alike.
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
                request,
            )),
        );
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(ConntrackError::Send)?;
        Ok(())
    }

    /// Send a datagram of requests the caller encoded.
    pub(crate) fn send(&self, requests: &[u8]) -> Result<(), ConntrackError> {
        self.socket
            .send(requests, 0)
            .map_err(ConntrackError::Send)?;
        Ok(())
    }

    /// Receive one datagram.
    pub(crate) fn recv(&mut self) -> Result<Received<'_>, ConntrackError> {
        loop {
            self.datagram.clear();
            match self.socket.recv(&mut self.datagram, libc::MSG_TRUNC) {
                Ok(len) if len > self.datagram.len() => {
                    return Err(ConntrackError::TruncatedDatagram {
                        size: len,
                        capacity: self.datagram.capacity(),
                    })
                }
                Ok(_) => return Ok(Received::Datagram(&self.datagram)),
                Err(e) => match no_datagram(e)? {
                    NoDatagram::Interrupted => continue,
                    NoDatagram::TimedOut => return Ok(Received::TimedOut),
                    NoDatagram::Overrun => return Ok(Received::Overrun),
                },
            }
        }
    }

    /// Receive the datagrams already queued into `inbox`, one per slot,
    /// waiting only for the first: one system call for many small answers.
    /// `mark` is written into the inbox first.
    pub(crate) fn recv_many(
        &self,
        inbox: &mut Inbox,
        mark: Mark,
    ) -> Result<ReceivedMany, ConntrackError> {
        self.recv_many_with(inbox, libc::MSG_WAITFORONE, mark)
    }

    /// [`NetfilterSocket::recv_many`] without waiting: nothing queued is
    /// [`ReceivedMany::TimedOut`].
    pub(crate) fn recv_queued(
        &self,
        inbox: &mut Inbox,
        mark: Mark,
    ) -> Result<ReceivedMany, ConntrackError> {
        self.recv_many_with(inbox, libc::MSG_DONTWAIT, mark)
    }

    fn recv_many_with(
        &self,
        inbox: &mut Inbox,
        wait: libc::c_int,
        mark: Mark,
    ) -> Result<ReceivedMany, ConntrackError> {
        let received = inbox
            .receive(self.socket.as_raw_fd(), wait, mark)
            .map_err(ConntrackError::Recv)?;
        Ok(match received {
            inbox::Received::Datagrams => {
                // With MSG_TRUNC, netlink reports a datagram's full length.
                let longest = inbox.longest();
                if longest > SLOT {
                    return Err(ConntrackError::TruncatedDatagram {
                        size: longest,
                        capacity: SLOT,
                    });
                }
                ReceivedMany::Datagrams
            }
            inbox::Received::TimedOut => ReceivedMany::TimedOut,
            inbox::Received::Overrun => ReceivedMany::Overrun,
        })
    }

    /// Make `recv` return [`Received::TimedOut`] after `timeout` without data.
    pub(crate) fn set_recv_timeout(&self, timeout: Duration) -> Result<(), ConntrackError> {
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        set_option(&self.socket, libc::SO_RCVTIMEO, &tv).map_err(ConntrackError::SocketOption)
    }

    /// Grow the receive buffer beyond `rmem_max` (needs CAP_NET_ADMIN, which
    /// reading conntrack needs anyway); fall back to the capped size.
    pub(crate) fn set_receive_buffer(&self, bytes: usize) -> Result<(), ConntrackError> {
        let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        set_option(&self.socket, libc::SO_RCVBUFFORCE, &size)
            .or_else(|_| set_option(&self.socket, libc::SO_RCVBUF, &size))
            .map_err(ConntrackError::SocketOption)
    }
}

/// Why a receive returned no datagram.
enum NoDatagram {
    /// A signal: try again.
    Interrupted,
    /// The receive timeout passed.
    TimedOut,
    /// `ENOBUFS`: the socket's buffer overflowed.
    Overrun,
}

/// What a receive's error means; anything else is a failure.
fn no_datagram(e: io::Error) -> Result<NoDatagram, ConntrackError> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(NoDatagram::Interrupted),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(NoDatagram::TimedOut),
        _ if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(NoDatagram::Overrun),
        _ => Err(ConntrackError::Recv(e)),
    }
}

/// `setsockopt(SOL_SOCKET, ...)` for the options `netlink-sys` does not
/// expose (`SO_RCVBUFFORCE`, `SO_RCVTIMEO`).
#[allow(unsafe_code)]
fn set_option<T>(socket: &netlink_sys::Socket, option: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to a live, initialised `T` of exactly `len`
    // bytes for the duration of the call, and the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
