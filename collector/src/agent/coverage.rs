//! Coverage: what the agent metered leaving and entering the node, against
//! what the node's uplinks counted, so that a datapath that bypasses
//! conntrack (Cilium's eBPF host routing, Calico's eBPF data plane, XDP,
//! `notrack` rules) is reported instead of silently metering nothing.
//!
//! Each interval the agent adds the bytes of its records whose remote end is
//! off this node (they crossed an uplink) and reads the byte counters of the
//! interfaces its default routes leave by. Over a window of intervals,
//! metered bytes far below the interfaces' (a ratio under
//! [`LOW_COVERAGE`] once at least [`MIN_WINDOW_BYTES`] crossed them) is
//! low coverage: said once, loudly, and kept in a gauge to alert on. The
//! ratio is never exactly 1: interfaces count link-layer headers, ARP and
//! tunnels' encapsulation too.

use std::collections::{HashMap, VecDeque};

/// Below this share of the interfaces' bytes, coverage is low.
pub const LOW_COVERAGE: f64 = 0.5;

/// Coverage is judged only once this many bytes crossed the uplinks within
/// the window: an idle node's ARP and probes say nothing.
pub const MIN_WINDOW_BYTES: u64 = 1 << 20;

/// Intervals in the window (a minute at the default 10 s interval).
pub const WINDOW_INTERVALS: usize = 6;

/// What one interval brought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Bytes of records whose remote end is off this node, both directions.
    pub metered: u64,
    /// Bytes the uplinks received and sent since the last sample.
    pub interface: u64,
}

/// What the window says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Too little traffic to judge.
    TooLittle,
    /// Metered bytes over interface bytes, at least [`LOW_COVERAGE`].
    Covered(f64),
    /// Metered bytes over interface bytes, below [`LOW_COVERAGE`]: the
    /// first interval it is so (`first`), and after.
    Low {
        /// The ratio.
        ratio: f64,
        /// Whether coverage was not low before: time to say so.
        first: bool,
    },
}

/// The window of samples, whether low coverage was already reported, and
/// the uplinks' counters at the last read.
#[derive(Debug, Default)]
pub struct Coverage {
    window: VecDeque<Sample>,
    low: bool,
    uplinks: HashMap<String, u64>,
}

impl Coverage {
    /// Reads the counters of `uplinks` as the start of the first interval.
    pub fn start(&mut self, uplinks: &[String]) {
        interface_delta(&mut self.uplinks, uplinks);
    }

    /// Reads the counters of `uplinks` and judges the window with this
    /// interval's `metered` off-node bytes; returns the interval's sample
    /// too.
    pub fn observe_interval(&mut self, metered: u64, uplinks: &[String]) -> (Sample, Judgement) {
        let sample = Sample {
            metered,
            interface: interface_delta(&mut self.uplinks, uplinks),
        };
        (sample, self.observe(sample))
    }

    /// Adds an interval's sample and judges the window.
    pub fn observe(&mut self, sample: Sample) -> Judgement {
        if self.window.len() == WINDOW_INTERVALS {
            self.window.pop_front();
        }
        self.window.push_back(sample);
        let metered: u64 = self.window.iter().map(|s| s.metered).sum();
        let interface: u64 = self.window.iter().map(|s| s.interface).sum();
        if interface < MIN_WINDOW_BYTES {
            return Judgement::TooLittle;
        }
        #[allow(clippy::cast_precision_loss)] // a ratio: 53 bits are plenty
        let ratio = metered as f64 / interface as f64;
        if ratio < LOW_COVERAGE {
            let first = !self.low;
            self.low = true;
            Judgement::Low { ratio, first }
        } else {
            self.low = false;
            Judgement::Covered(ratio)
        }
    }
}

/// Bytes received and sent by each interface, from `/proc/net/dev`.
pub fn interface_bytes(dev: &str) -> HashMap<String, (u64, u64)> {
    dev.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            Some((name.trim().to_owned(), (*fields.first()?, *fields.get(8)?)))
        })
        .collect()
}

/// Reads the counters of `uplinks` and returns the bytes since `last`
/// (which it updates): the interval's interface bytes. Counters of an
/// interface seen for the first time only set its baseline.
fn interface_delta(last: &mut HashMap<String, u64>, uplinks: &[String]) -> u64 {
    let counters = interface_bytes(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
    let mut delta = 0;
    let mut now = HashMap::new();
    for name in uplinks {
        if let Some(&(received, sent)) = counters.get(name) {
            let total = received + sent;
            if let Some(&before) = last.get(name) {
                delta += total.saturating_sub(before);
            }
            now.insert(name.clone(), total);
        }
    }
    *last = now;
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_coverage_is_judged_over_the_window_and_said_once() {
        let mut coverage = Coverage::default();
        let sample = |metered, interface| Sample { metered, interface };
        assert_eq!(coverage.observe(sample(0, 1000)), Judgement::TooLittle);
        assert_eq!(
            coverage.observe(sample(2 << 20, 2 << 20)),
            Judgement::Covered(2.0 * f64::from(1 << 20) / (f64::from(2 << 20) + 1000.0))
        );
        // Metering stops while the interfaces keep counting: low once the
        // window's ratio falls under a half, said the first time only.
        let mut judgements = Vec::new();
        for _ in 0..WINDOW_INTERVALS {
            judgements.push(coverage.observe(sample(0, 4 << 20)));
        }
        let firsts: Vec<bool> = judgements
            .iter()
            .filter_map(|j| match j {
                Judgement::Low { first, .. } => Some(*first),
                _ => None,
            })
            .collect();
        assert_eq!(firsts.first(), Some(&true), "{judgements:?}");
        assert!(firsts[1..].iter().all(|f| !f), "{judgements:?}");
        // Back to normal, and low again: said again.
        for _ in 0..WINDOW_INTERVALS {
            coverage.observe(sample(4 << 20, 4 << 20));
        }
        assert!(matches!(
            coverage.observe(sample(4 << 20, 4 << 20)),
            Judgement::Covered(r) if r == 1.0
        ));
        for _ in 0..WINDOW_INTERVALS - 1 {
            coverage.observe(sample(0, 4 << 20));
        }
        assert!(matches!(
            coverage.observe(sample(0, 4 << 20)),
            Judgement::Low { first: false, .. }
        ));
    }

    #[test]
    fn interface_counters_are_read_per_interface() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets ...\n\
            \x20   lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n\
            \x20 eth0: 5000 10 0 0 0 0 0 0 7000 12 0 0 0 0 0 0\n";
        let bytes = interface_bytes(dev);
        assert_eq!(bytes["eth0"], (5000, 7000));
        assert_eq!(bytes["lo"], (100, 100));
    }
}
