//! Reads the whole conntrack table, optionally zeroing each entry's counters
//! in the same step, and hands every entry on as soon as it is decoded.

use std::ops::ControlFlow;

use super::decode::{messages, Message, NLM_F_DUMP_INTR};
use super::error::ConntrackError;
use super::socket::{NetfilterSocket, Received};
use super::Entry;

/// Whether a dump resets the counters it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// `IPCTNL_MSG_CT_GET_CTRZERO`: each entry's counters are swapped to
    /// zero as the kernel writes them into the reply, so the next dump sees
    /// only the bytes since. This is how tollgate meters.
    Zero,
    /// `IPCTNL_MSG_CT_GET`: read without side effects (debugging).
    Keep,
}

/// What one dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries decoded and handed on.
    pub entries: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// The kernel flagged the dump `NLM_F_DUMP_INTR`: the table changed in
    /// a way that may have made the walk skip or repeat entries.
    pub interrupted: bool,
}

/// A conntrack table reader on its own netlink socket.
pub struct TableReader {
    socket: NetfilterSocket,
}

impl TableReader {
    /// Open a netfilter netlink socket in the current network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        Ok(Self {
            socket: NetfilterSocket::open()?,
        })
    }

    /// Dump the table, calling `on_entry` for each entry as it is decoded.
    ///
    /// Nothing is collected: memory stays constant whatever the table size.
    /// With [`ReadMode::Zero`], every entry handed to `on_entry` has already
    /// been zeroed in the kernel, so the caller owns those bytes; if this
    /// returns an error part-way, the entries already handed on are still
    /// valid and must be kept. `on_entry` may abandon the dump with
    /// `ControlFlow::Break`: entries the kernel has not yet written keep
    /// their counters, but those already queued for this socket (up to one
    /// datagram) were zeroed and are discarded, so only break when giving up
    /// (e.g. the output pipe closed).
    pub fn dump<F>(
        &mut self,
        mode: ReadMode,
        mut on_entry: F,
    ) -> Result<DumpSummary, ConntrackError>
    where
        F: FnMut(&Entry) -> ControlFlow<()>,
    {
        self.socket.request_dump(mode == ReadMode::Zero)?;
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
            for message in messages(datagram) {
                match message.map_err(|error| ConntrackError::Decode {
                    error,
                    entries_before: summary.entries,
                })? {
                    Message::Entry { entry, flags } => {
                        summary.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        summary.entries += 1;
                        if on_entry(&entry).is_break() {
                            // Closing the socket ends the kernel's dump; a
                            // fresh one keeps the next dump free of leftovers.
                            self.socket = NetfilterSocket::open()?;
                            return Ok(summary);
                        }
                    }
                    Message::Done { flags, error } => {
                        summary.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        if error < 0 {
                            return Err(ConntrackError::Kernel {
                                errno: -error,
                                during: "the end of a conntrack dump",
                            });
                        }
                        return Ok(summary);
                    }
                    Message::Error { errno } if errno < 0 => {
                        return Err(ConntrackError::Kernel {
                            errno: -errno,
                            during: if mode == ReadMode::Zero {
                                "a zeroing conntrack dump request"
                            } else {
                                "a conntrack dump request"
                            },
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
