//! What can go wrong while reading conntrack, with the context an operator
//! needs to act on it.

use std::io;

use super::decode;

/// Failures of the conntrack reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConntrackError {
    /// The netlink socket could not be created or bound.
    #[error("cannot open a NETLINK_NETFILTER socket")]
    Open(#[source] io::Error),
    /// A request could not be sent.
    #[error("cannot send a conntrack request")]
    Send(#[source] io::Error),
    /// Receiving failed.
    #[error("cannot receive from the conntrack socket")]
    Recv(#[source] io::Error),
    /// The memory received datagrams land in could not be made, or the
    /// one the holder kept cannot be used.
    #[error("cannot set up the memory conntrack answers are received into")]
    Inbox(#[source] io::Error),
    /// A socket option was refused.
    #[error("cannot configure the conntrack socket")]
    SocketOption(#[source] io::Error),
    /// Joining the DESTROY event group failed.
    #[error(
        "cannot subscribe to conntrack DESTROY events (this needs CAP_NET_ADMIN in the network \
         namespace)"
    )]
    Subscribe(#[source] io::Error),
    /// The kernel answered a request with an error.
    #[error("the kernel refused {during}: {}{}", io::Error::from_raw_os_error(*.errno), permission_hint(*.errno))]
    Kernel {
        /// Positive errno.
        errno: i32,
        /// Which request.
        during: &'static str,
    },
    /// A datagram was larger than the receive buffer.
    #[error("a conntrack datagram of {size} bytes did not fit the {capacity}-byte buffer")]
    TruncatedDatagram {
        /// Size the kernel reported.
        size: usize,
        /// Buffer size.
        capacity: usize,
    },
    /// A dump lost data to a socket overflow. Entries already handed on are
    /// valid; the rest of the dump is not read.
    #[error("the conntrack dump overflowed the socket after {entries_before} entries")]
    Overrun {
        /// Entries handed on before the overflow.
        entries_before: u64,
    },
    /// A message could not be decoded.
    #[error("undecodable conntrack data after {entries_before} good entries")]
    Decode {
        /// What was wrong.
        #[source]
        error: decode::DecodeError,
        /// Entries handed on before it.
        entries_before: u64,
    },
}

fn permission_hint(errno: i32) -> &'static str {
    if errno == libc::EPERM || errno == libc::EACCES {
        " (reading and zeroing conntrack needs CAP_NET_ADMIN in the network namespace)"
    } else {
        ""
    }
}
