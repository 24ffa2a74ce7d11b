//! Top talkers: each interval, the local workloads and the remote addresses
//! that moved the most bytes, logged one structured line each.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv6Addr;

use tollgate_schema::{Category, FlowView, RemoteKind};

use super::workloads::{IntervalSums, Sums};

#[derive(Debug, Clone, Copy)]
struct Remote {
    kind: RemoteKind,
    category: Category,
    sent: u64,
    received: u64,
}

/// Most remote addresses summed in one interval (about 6 MiB): memory
/// stays flat however many a node talks to.
const REMOTES_MAX: usize = 100_000;

/// One interval's bytes per remote address, and how many of each kind to
/// log.
#[derive(Debug)]
pub struct TopTalkers {
    top: usize,
    remotes: HashMap<Ipv6Addr, Remote, foldhash::fast::FixedState>,
    /// Bytes of records whose remote address came after the first
    /// [`REMOTES_MAX`] of the interval.
    unranked_bytes: u64,
}

impl TopTalkers {
    /// Logs the `top` largest of each kind every interval.
    pub fn new(top: usize) -> Self {
        Self {
            top,
            remotes: HashMap::default(),
            unranked_bytes: 0,
        }
    }

    /// Adds `record`'s bytes to its remote address.
    pub fn add(&mut self, record: &FlowView<'_>) {
        if self.remotes.len() == REMOTES_MAX && !self.remotes.contains_key(&record.remote_ip) {
            self.unranked_bytes += record.bytes_sent + record.bytes_received;
            return;
        }
        let remote = self.remotes.entry(record.remote_ip).or_insert(Remote {
            kind: record.remote_kind,
            category: record.category,
            sent: 0,
            received: 0,
        });
        remote.sent += record.bytes_sent;
        remote.received += record.bytes_received;
    }

    /// Logs the interval ending at `observed_at`: the top workloads of
    /// `workloads`, then the top remote addresses; forgets the remotes.
    pub fn log(&mut self, workloads: &IntervalSums, observed_at: u32) {
        let mut ranked: Vec<_> = workloads.iter().collect();
        ranked.sort_unstable_by_key(|(_, sums)| std::cmp::Reverse(sums.iter().sum::<u64>()));
        for (rank, (key, sums)) in ranked.into_iter().take(self.top).enumerate() {
            let (sent, received) = directions(sums);
            tracing::info!(
                observed_at,
                rank = rank + 1,
                team = &*key.team,
                namespace = &*key.namespace,
                workload_kind = &*key.kind,
                workload = &*key.workload,
                bytes_sent = sent,
                bytes_received = received,
                categories = by_category(sums),
                "top workload"
            );
        }
        let mut ranked: Vec<_> = self.remotes.iter().collect();
        ranked.sort_unstable_by_key(|(_, r)| std::cmp::Reverse(r.sent + r.received));
        for (rank, (address, remote)) in ranked.into_iter().take(self.top).enumerate() {
            tracing::info!(
                observed_at,
                rank = rank + 1,
                remote_ip = %address.to_canonical(),
                remote_kind = %remote.kind,
                category = %remote.category,
                bytes_sent = remote.sent,
                bytes_received = remote.received,
                "top remote"
            );
        }
        if self.unranked_bytes > 0 {
            tracing::info!(
                observed_at,
                remotes_ranked = REMOTES_MAX,
                unranked_bytes = self.unranked_bytes,
                "top remotes: more addresses than are ranked in one interval; the bytes of the later ones are not ranked"
            );
        }
        self.remotes.clear();
        self.unranked_bytes = 0;
    }
}

fn directions(sums: &Sums) -> (u64, u64) {
    let sent = sums.iter().step_by(2).sum();
    let received = sums.iter().skip(1).step_by(2).sum();
    (sent, received)
}

/// `cross_zone=1200 internet=80`: the categories with bytes, both
/// directions together.
fn by_category(sums: &Sums) -> String {
    let mut out = String::new();
    for (category, pair) in Category::ALL.iter().zip(sums.chunks_exact(2)) {
        let bytes = pair[0] + pair[1];
        if bytes > 0 {
            let space = if out.is_empty() { "" } else { " " };
            let _ = write!(out, "{space}{category}={bytes}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_split_by_direction_and_category() {
        let mut sums: Sums = [0; Category::ALL.len() * 2];
        sums[Category::CrossZone as usize * 2] = 10;
        sums[Category::CrossZone as usize * 2 + 1] = 5;
        sums[Category::Internet as usize * 2 + 1] = 7;
        assert_eq!(directions(&sums), (10, 12));
        assert_eq!(by_category(&sums), "cross_zone=15 internet=7");
    }
}
