//! Reading the kernel's connection-tracking table, exactly.
//!
//! tollgate meters with two kernel mechanisms, and this module owns both:
//!
//! * [`TableReader::dump`] walks the table and reads every active entry
//!   again with an `IPCTNL_MSG_CT_GET_CTRZERO` request of its own: the
//!   kernel swaps that entry's byte and packet counters to zero while it
//!   writes them into the reply, so every byte is reported by exactly one
//!   read (the kernel's zeroing *dump* loses entries cut by a datagram
//!   boundary; see `zeroing`). Entries are handed to a callback as they are
//!   decoded; a table of a million entries never becomes a million-element
//!   collection.
//! * [`EndedConnections`] subscribes to DESTROY events. A connection that
//!   ends between two reads is reported once more, with the bytes it moved
//!   since the last zeroing read, so short connections are metered too.
//!
//! Bytes flow one way: datagram (socket) -> [`decode`] -> [`Entry`] ->
//! caller. Decoding is pure and separately fuzzed; the socket is the only
//! I/O. [`sysctl`] turns on the accounting the counters depend on.

pub mod decode;
mod dump;
mod entry;
mod error;
mod events;
mod inbox;
pub mod jsonl;
mod repeats;
mod socket;
pub mod sysctl;
mod zeroing;

pub use dump::{DumpSummary, ReadMode, TableReader};
pub use entry::{Counters, Entry, Origin, TcpState, Tuple, L4};
pub use error::ConntrackError;
pub use events::{EndedConnections, EventCounts};
pub use inbox::Mark;
pub use zeroing::{Keep, ZeroingCounts};
