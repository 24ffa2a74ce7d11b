//! Recognises a DESTROY event the kernel sends again.
//!
//! With reliable delivery (`NETLINK_BROADCAST_ERROR`), an event that one
//! subscriber's full socket refused is kept and broadcast again later, to
//! every subscriber: a socket that received it the first time receives it
//! twice. Two agents on a node during a handover, or an agent and any other
//! reliable listener, therefore see repeats whenever either overflows
//! (measured: 58,239 events for 50,000 connections flushed at once).

use hashbrown::HashSet;

use super::Entry;

/// Ended connections remembered per generation; two generations are kept,
/// and one seen again moves to the newer, so a connection the kernel keeps
/// resending stays recognised however long the other socket stays full.
const GENERATION: usize = 65_536;

/// One ended connection: the entry's id and its lifetime to the
/// nanosecond. Two different connections cannot share it (one entry lives
/// at one address, which a second entry can take only after the first
/// ended), so an equal key is the same event again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ended {
    id: u32,
    zone: u16,
    start_ns: u64,
    stop_ns: u64,
}

/// The ended connections handed on lately (at most two generations).
#[derive(Default)]
pub(super) struct Repeats {
    newer: HashSet<Ended, foldhash::fast::FixedState>,
    older: HashSet<Ended, foldhash::fast::FixedState>,
}

impl Repeats {
    /// Whether `entry` was handed on already; if not, it is remembered.
    /// Without timestamps (`nf_conntrack_timestamp` off) an event cannot be
    /// told from a later connection that reused the entry, and none is
    /// taken for a repeat.
    pub(super) fn seen(&mut self, entry: &Entry) -> bool {
        let (Some(start_ns), Some(stop_ns)) = (entry.start_ns, entry.stop_ns) else {
            return false;
        };
        let ended = Ended {
            id: entry.id,
            zone: entry.zone,
            start_ns,
            stop_ns,
        };
        if self.newer.contains(&ended) {
            return true;
        }
        let seen = self.older.remove(&ended);
        if self.newer.len() == GENERATION {
            // The older generation's memory is reused for the next.
            std::mem::swap(&mut self.newer, &mut self.older);
            self.newer.clear();
        }
        self.newer.insert(ended);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ended;

    /// An ended connection of entry `id` that lived from `start_ns` to
    /// `stop_ns`.
    fn ended_entry(id: u32, start_ns: u64, stop_ns: u64) -> Entry {
        Entry {
            id,
            start_ns: Some(start_ns),
            stop_ns: Some(stop_ns),
            ..ended(80)
        }
    }

    #[test]
    fn an_event_sent_again_is_a_repeat_and_a_new_lifetime_is_not() {
        let mut repeats = Repeats::default();
        let first = ended_entry(7, 1_000, 2_000);
        assert!(!repeats.seen(&first));
        assert!(repeats.seen(&first));
        // The same entry id, reused by a later connection.
        assert!(!repeats.seen(&ended_entry(7, 3_000, 4_000)));
    }

    #[test]
    fn without_timestamps_nothing_is_a_repeat() {
        let mut repeats = Repeats::default();
        let mut entry = ended_entry(7, 1_000, 2_000);
        entry.start_ns = None;
        entry.stop_ns = None;
        assert!(!repeats.seen(&entry));
        assert!(!repeats.seen(&entry));
    }

    #[test]
    fn a_connection_resent_all_along_stays_recognised_past_two_generations() {
        let mut repeats = Repeats::default();
        let resent = ended_entry(1, 1, 2);
        assert!(!repeats.seen(&resent));
        for n in 0..(3 * GENERATION as u64) {
            assert!(!repeats.seen(&ended_entry(2, n, n + 1)));
            if n % (GENERATION as u64 / 2) == 0 {
                assert!(repeats.seen(&resent), "forgotten after {n}");
            }
        }
        // One not seen again for two generations is forgotten: memory
        // stays bounded.
        let once = ended_entry(3, 1, 2);
        assert!(!repeats.seen(&once));
        for n in 0..(2 * GENERATION as u64) {
            repeats.seen(&ended_entry(4, n, n + 1));
        }
        assert!(!repeats.seen(&once));
    }
}
