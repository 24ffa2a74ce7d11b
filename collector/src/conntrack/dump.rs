//! Reads the whole conntrack table, optionally zeroing each entry's counters
//! as it reads them, and hands every entry (or, metering, every active one)
//! on as soon as it is decoded.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::decode::{messages, messages_skipping_idle, Message, NLM_F_DUMP_INTR};
use super::error::ConntrackError;
use super::socket::{NetfilterSocket, Received};
use super::zeroing::{Keep, Zeroer, ZeroingCounts};
use super::Entry;

/// Whether a read resets the counters it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Every entry that counted traffic since its last zeroing is read
    /// again and zeroed in one step (`IPCTNL_MSG_CT_GET_CTRZERO` for that
    /// entry), so the next read sees only the bytes since. Idle entries are
    /// handed on as the walk found them.
    Zero,
    /// As [`ReadMode::Zero`], but an idle entry (the walk's, or a zeroing
    /// answer's if something else zeroed it meanwhile) is only counted
    /// ([`TableReader::idle_entries`]), its tuples never decoded and the
    /// entry never handed on: how the agent meters, an idle entry metering
    /// nothing.
    ZeroActive,
    /// Read without side effects (debugging).
    Keep,
}

/// What one dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries the walk read (with [`ReadMode::ZeroActive`], the idle ones
    /// too).
    pub entries: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// The kernel flagged the dump `NLM_F_DUMP_INTR`: the table changed in
    /// a way that may have made the walk skip or repeat entries.
    pub interrupted: bool,
    /// What zeroing the active entries found.
    pub zeroing: ZeroingCounts,
}

/// A conntrack table reader: one netlink socket walks the table, another
/// zeroes the entries the walk found active.
pub struct TableReader {
    socket: NetfilterSocket,
    zeroer: Zeroer,
    /// Idle entries its [`ReadMode::ZeroActive`] reads counted, kept here
    /// rather than in a [`DumpSummary`] so that a read that fails part-way
    /// still counts them.
    idle: Cell<u64>,
}

impl TableReader {
    /// Open the netfilter netlink sockets in the current network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        Ok(Self {
            socket: NetfilterSocket::open()?,
            zeroer: Zeroer::open()?,
            idle: Cell::new(0),
        })
    }

    /// [`TableReader::open`], with the zeroing socket and inbox of a killed
    /// agent that the holder kept: [`TableReader::recover_received`] and
    /// [`TableReader::recover_unreceived`] give what that agent left in them.
    pub fn adopt(zeroing: OwnedFd, inbox: Option<OwnedFd>) -> Result<Self, ConntrackError> {
        Ok(Self {
            socket: NetfilterSocket::open()?,
            zeroer: Zeroer::adopt(zeroing, inbox)?,
            idle: Cell::new(0),
        })
    }

    /// Idle entries counted (and not handed on) by this reader's
    /// [`ReadMode::ZeroActive`] reads so far.
    pub fn idle_entries(&self) -> u64 {
        self.idle.get()
    }

    /// The zeroing socket, to give the holder a copy: it outlives a kill.
    pub fn zeroing_socket(&self) -> BorrowedFd<'_> {
        self.zeroer.fd()
    }

    /// The memory zeroing answers are received into, to give the holder a
    /// copy: it outlives a kill.
    pub fn zeroing_inbox(&self) -> BorrowedFd<'_> {
        self.zeroer.inbox()
    }

    /// Gives `keep` the zeroing answers a killed agent's last receive took
    /// and it may not have kept, from the adopted inbox.
    pub fn recover_received<K: Keep>(&mut self, keep: &mut K) -> Result<(), ConntrackError> {
        self.zeroer.recover_received(keep)
    }

    /// Gives `keep` the zeroing answers the kernel queued for a killed
    /// agent that it never received, from the adopted socket.
    pub fn recover_unreceived<K: Keep>(&mut self, keep: &mut K) -> Result<(), ConntrackError> {
        self.zeroer.recover_unreceived(keep)
    }

    /// Dump the table, calling `on_entry` for each entry as it is decoded.
    ///
    /// Nothing is collected: memory stays constant whatever the table size
    /// (active entries wait in batches of a few hundred zeroing requests).
    /// With [`ReadMode::Zero`] or [`ReadMode::ZeroActive`], every entry
    /// handed to `on_entry` has already
    /// been zeroed in the kernel (or had nothing to zero), so the caller
    /// owns those bytes; if this returns an error part-way, the entries
    /// already handed on are still valid and must be kept. An entry that
    /// ends between the walk and its zeroing is not handed on: its bytes
    /// come with its DESTROY event. `on_entry` may end the dump with
    /// `ControlFlow::Break`: the rest of the zeroing batch in flight (up to
    /// a few hundred entries, already zeroed) is still handed on, its
    /// answers ignored, and entries not yet zeroed keep their counters.
    pub fn dump<F>(&mut self, mode: ReadMode, on_entry: F) -> Result<DumpSummary, ConntrackError>
    where
        F: FnMut(&Entry) -> ControlFlow<()>,
    {
        self.dump_keeping(mode, &mut (), on_entry)
    }

    /// [`TableReader::dump`], giving `keep` each receive of zeroed entries
    /// (up to a few hundred) before any of them is handed to `on_entry`:
    /// from the zeroing on, the caller holds their only copy, and `keep`
    /// can put it somewhere a kill does not reach.
    pub fn dump_keeping<K, F>(
        &mut self,
        mode: ReadMode,
        keep: &mut K,
        mut on_entry: F,
    ) -> Result<DumpSummary, ConntrackError>
    where
        K: Keep,
        F: FnMut(&Entry) -> ControlFlow<()>,
    {
        let skip_idle = mode == ReadMode::ZeroActive;
        let idle = &self.idle;
        let count_idle = || idle.set(idle.get() + 1);
        // Zeroing answers come decoded: one that counted nothing is
        // counted here.
        let mut on_entry = |entry: &Entry| {
            if skip_idle && entry.is_idle() {
                count_idle();
                ControlFlow::Continue(())
            } else {
                on_entry(entry)
            }
        };
        self.socket.request_dump()?;
        let before = self.zeroer.counts;
        let mut summary = DumpSummary::default();
        loop {
            let datagram = match self.socket.recv()? {
                Received::Datagram(datagram) => datagram,
                Received::TimedOut => continue,
                Received::Overrun => {
                    return Err(ConntrackError::Overrun {
                        entries_before: summary.entries,
                    })
                }
            };
            summary.datagrams += 1;
            let messages = if skip_idle {
                messages_skipping_idle(datagram)
            } else {
                messages(datagram)
            };
            for message in messages {
                match message.map_err(|error| ConntrackError::Decode {
                    error,
                    entries_before: summary.entries,
                })? {
                    Message::Entry { entry, flags } => {
                        summary.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        summary.entries += 1;
                        let flow = if mode != ReadMode::Keep
                            && entry.orig_counters.is_some()
                            && !entry.is_idle()
                        {
                            self.zeroer.zero(&entry, keep, &mut on_entry)?
                        } else {
                            on_entry(&entry)
                        };
                        if flow.is_break() {
                            // Closing the socket ends the kernel's dump; a
                            // fresh one keeps the next dump free of leftovers.
                            // The zeroer keeps its socket (the holder holds
                            // it): every answer to what it sent was read.
                            self.socket = NetfilterSocket::open()?;
                            self.zeroer.discard_queued();
                            return Ok(summary);
                        }
                    }
                    Message::Idle { flags } => {
                        summary.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        summary.entries += 1;
                        count_idle();
                    }
                    Message::Done { flags, error } => {
                        summary.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        if error < 0 {
                            return Err(ConntrackError::Kernel {
                                errno: -error,
                                during: "the end of a conntrack dump",
                            });
                        }
                        // A break here leaves nothing unread.
                        let _ = self.zeroer.flush(keep, &mut on_entry)?;
                        let after = self.zeroer.counts;
                        summary.zeroing = ZeroingCounts {
                            zeroed: after.zeroed - before.zeroed,
                            vanished: after.vanished - before.vanished,
                        };
                        return Ok(summary);
                    }
                    Message::Error { errno } if errno < 0 => {
                        return Err(ConntrackError::Kernel {
                            errno: -errno,
                            during: "a conntrack dump request",
                        })
                    }
                    Message::Overrun => {
                        return Err(ConntrackError::Overrun {
                            entries_before: summary.entries,
                        })
                    }
                    Message::Error { .. } | Message::Ignored { .. } => {}
                }
            }
        }
    }
}
