//! Listens for conntrack DESTROY events: connections that ended, with the
//! bytes they moved since the last zeroing read.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use super::decode::{messages, Message};
use super::error::ConntrackError;
use super::inbox::{Inbox, Mark};
use super::repeats::Repeats;
use super::socket::{NetfilterSocket, ReceivedMany};
use super::{Entry, Origin};

/// `NFNLGRP_CONNTRACK_DESTROY`.
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Bursts of connection ends (a load balancer draining, a batch job
/// finishing) arrive faster than any reader wakes up; a large buffer absorbs
/// them before the kernel has to hold events back.
const EVENT_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The inbox's name, as `/proc/PID/fd` shows it.
const INBOX: &std::ffi::CStr = c"tollgate-ended-connections";

/// How long one [`EndedConnections::read`] waits for an event.
const READ_WAIT: Duration = Duration::from_millis(100);

/// Counts kept across reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// DESTROY events decoded and handed on.
    pub ended: u64,
    /// Times the socket overflowed (`ENOBUFS`).
    pub overruns: u64,
    /// Events the kernel sent again after another subscriber's socket
    /// refused them, dropped as repeats.
    pub repeated: u64,
}

/// A subscription to the DESTROY events of the current network namespace.
///
/// The socket sets `NETLINK_BROADCAST_ERROR`, which makes the kernel treat
/// an event that did not fit as undelivered: it keeps the ended connection
/// on its dying list and sends the event again later, instead of dropping
/// it. An overflow is therefore counted and logged, and reading carries on
/// without losing the ended connection's bytes. The event sent again goes
/// to every subscriber, so one this socket had already received is
/// recognised and dropped (see `repeats`).
pub struct EndedConnections {
    socket: NetfilterSocket,
    /// Events queued together are received by one system call.
    datagrams: Inbox,
    counts: EventCounts,
    repeats: Repeats,
}

impl EndedConnections {
    /// Subscribe in the current network namespace.
    pub fn subscribe() -> Result<Self, ConntrackError> {
        let socket = NetfilterSocket::open()?;
        socket.set_receive_buffer(EVENT_BUFFER_BYTES)?;
        socket.set_recv_timeout(READ_WAIT)?;
        socket
            .inner()
            .set_broadcast_error(true)
            .map_err(ConntrackError::SocketOption)?;
        socket
            .inner()
            .add_membership(NFNLGRP_CONNTRACK_DESTROY)
            .map_err(ConntrackError::Subscribe)?;
        Ok(Self::with(socket, Inbox::create(INBOX)?))
    }

    /// The subscription of a killed agent, as the holder kept it: the
    /// events of the connections that ended since it died wait on it. With
    /// it, its inbox, if the holder kept that too
    /// ([`EndedConnections::recover_received`]).
    pub fn adopt(fd: OwnedFd, inbox: Option<OwnedFd>) -> Result<Self, ConntrackError> {
        let socket = NetfilterSocket::adopt(fd);
        // Set again: the killed agent's timeout is its socket's, and
        // whoever held the socket may have changed it.
        socket.set_recv_timeout(READ_WAIT)?;
        let inbox = Inbox::kept_or_new(inbox, INBOX)?;
        Ok(Self::with(socket, inbox))
    }

    fn with(socket: NetfilterSocket, datagrams: Inbox) -> Self {
        Self {
            socket,
            datagrams,
            counts: EventCounts::default(),
            repeats: Repeats::default(),
        }
    }

    /// The socket, to give the holder a copy: it outlives a kill.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    /// The memory events are received into, to give the holder a copy: it
    /// outlives a kill.
    pub fn inbox(&self) -> BorrowedFd<'_> {
        self.datagrams.fd()
    }

    /// Wait up to 100 ms for events and hand each ended connection to
    /// `on_ended`, with every other event already queued, but for repeats.
    /// `mark` says where the caller's copy ends, for a successor to tell
    /// what it kept should this agent be killed before `on_ended` returns.
    /// Returns how many events arrived, repeats included (0 when none did);
    /// [`EndedConnections::counts`] says how many were handed on.
    pub fn read<F>(&mut self, mark: Mark, on_ended: F) -> Result<u64, ConntrackError>
    where
        F: FnMut(&Entry),
    {
        match self.socket.recv_many(&mut self.datagrams, mark)? {
            ReceivedMany::Datagrams => {}
            ReceivedMany::TimedOut => return Ok(0),
            ReceivedMany::Overrun => {
                self.counts.overruns += 1;
                tracing::warn!(
                    overruns = self.counts.overruns,
                    "conntrack event socket overflowed; the kernel will redeliver the DESTROY events it could not send"
                );
                return Ok(0);
            }
        }
        self.hand_on(on_ended)
    }

    /// Hands `on_ended` the ended connections a killed agent's last receive
    /// took, which it may not have kept: the adopted inbox holds them.
    /// Returns the mark written before that receive, or `None` if the
    /// inbox is empty. Repeats the killed agent had seen before that
    /// receive are not known here, and would be handed on again.
    pub fn recover_received<F>(&mut self, on_ended: F) -> Result<Option<Mark>, ConntrackError>
    where
        F: FnMut(&Entry),
    {
        if self.datagrams.is_empty() {
            return Ok(None);
        }
        self.hand_on(on_ended)?;
        Ok(Some(self.datagrams.mark()))
    }

    /// Decodes the inbox's events and hands on each ended connection but
    /// repeats; returns how many events there were, repeats included.
    fn hand_on<F>(&mut self, mut on_ended: F) -> Result<u64, ConntrackError>
    where
        F: FnMut(&Entry),
    {
        let (mut handed_on, mut repeated) = (0, 0);
        for message in self.datagrams.iter().flat_map(messages) {
            let message = message.map_err(|error| ConntrackError::Decode {
                error,
                entries_before: self.counts.ended,
            })?;
            if let Message::Entry { entry, .. } = message {
                if entry.origin != Origin::Ended {
                    continue;
                }
                if self.repeats.seen(&entry) {
                    repeated += 1;
                } else {
                    on_ended(&entry);
                    handed_on += 1;
                }
            }
        }
        self.counts.ended += handed_on;
        if repeated > 0 {
            self.counts.repeated += repeated;
            tracing::info!(
                repeated,
                "dropped DESTROY events the kernel sent again after another subscriber's socket overflowed"
            );
        }
        Ok(handed_on + repeated)
    }

    /// Events and overruns so far.
    pub fn counts(&self) -> EventCounts {
        self.counts
    }
}
