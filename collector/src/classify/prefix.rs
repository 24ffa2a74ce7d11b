//! Longest-prefix match over IPv4 and IPv6 prefixes.
//!
//! Prefixes are flattened once, at build time, into sorted disjoint address
//! ranges, each carrying the value of the longest prefix covering it (ties
//! broken by a priority) and that prefix's length. A lookup is one binary
//! search over plain integers: no allocation, no pointer chasing. For large
//! lists an index by the address's top 16 bits narrows the search to the
//! ranges starting in that block, and a block holding many ranges has its
//! own index by the next 8 bits. Values are stored once each, however many
//! prefixes share them (a provider's 50,000 ranges carry a few hundred
//! distinct tags), so they stay in cache.
//!
//! A lookup among 50,000 prefixes reads two or three cache lines, and the
//! first can be asked for ahead of time ([`PrefixMap::prefetch`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::prefetch::prefetch;

/// Prefixes with values, searchable by address.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    values: Vec<V>,
    prefixes: usize,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

/// Sorted disjoint ranges, and for large lists where each 16-bit block's
/// ranges begin.
#[derive(Debug, Clone)]
struct Ranges<T> {
    ranges: Vec<Range<T>>,
    /// `blocks[b]` for the 65,536 blocks and one past them, or empty when
    /// the list is short.
    blocks: Vec<Block>,
    /// For each dense block, 257 counts: the ranges starting before each
    /// of its 256 sub-blocks (the address's next 8 bits), and before the
    /// next block.
    subs: Vec<u32>,
}

/// Where block `b`'s ranges begin.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// The number of ranges starting before the block.
    before: u32,
    /// Where the block's sub-block counts start in `subs`, or `SPARSE`.
    sub: u32,
}

const SPARSE: u32 = u32::MAX;

/// Below this many ranges a plain binary search stays in cache anyway.
const INDEXED_FROM: usize = 256;

/// A block with more ranges than this gets sub-blocks: a binary search
/// over more of them would read several cache lines.
const DENSE_FROM: usize = 16;

impl<T: Key> Ranges<T> {
    fn new(ranges: Vec<Range<T>>) -> Self {
        let mut blocks = Vec::new();
        let mut subs = Vec::new();
        if ranges.len() >= INDEXED_FROM {
            blocks.reserve_exact(BLOCKS + 1);
            let count = |n: usize| u32::try_from(n).expect("fewer than 2^32 ranges");
            let mut before = 0;
            for block in 0..=BLOCKS {
                let first = before;
                while before < ranges.len() && ranges[before].start.block() <= block {
                    before += 1;
                }
                let sub = if block < BLOCKS && before - first > DENSE_FROM {
                    let at = count(subs.len());
                    let mut inside = first;
                    for sub_block in 0..SUB_BLOCKS {
                        while inside < before && ranges[inside].start.sub_block() < sub_block {
                            inside += 1;
                        }
                        subs.push(count(inside));
                    }
                    subs.push(count(before));
                    at
                } else {
                    SPARSE
                };
                blocks.push(Block {
                    before: count(first),
                    sub,
                });
            }
        }
        Self {
            ranges,
            blocks,
            subs,
        }
    }

    /// The range holding `ip`.
    fn find(&self, ip: T) -> Option<&Range<T>> {
        let (from, to) = self.searched(ip);
        let after = from + self.ranges[from..to].partition_point(|r| r.start <= ip);
        let range = self.ranges.get(after.checked_sub(1)?)?;
        (ip <= range.end).then_some(range)
    }

    /// The ranges that start in `ip`'s block, or in its sub-block in a
    /// dense block: ranges starting earlier all start at or before `ip`,
    /// those starting later after it, so only these are searched.
    fn searched(&self, ip: T) -> (usize, usize) {
        match self.blocks.get(ip.block()..=ip.block() + 1) {
            Some(&[block, next]) if block.sub == SPARSE => {
                (block.before as usize, next.before as usize)
            }
            Some(&[block, _]) => {
                let at = block.sub as usize + ip.sub_block();
                (self.subs[at] as usize, self.subs[at + 1] as usize)
            }
            _ => (0, self.ranges.len()),
        }
    }

    /// Asks for what step `step` of finding `ip` reads; see
    /// [`PrefixMap::prefetch`].
    fn prefetch(&self, ip: T, step: usize) {
        let Some(&block) = self.blocks.get(ip.block()) else {
            return;
        };
        match step {
            // The block's count and the next one's, and the same for its
            // sub-block: two neighbours, a second line only at a boundary.
            0 => {
                prefetch(&self.blocks[ip.block()]);
                prefetch(&self.blocks[ip.block() + 1]);
            }
            1 if block.sub != SPARSE => {
                let at = block.sub as usize + ip.sub_block();
                prefetch(&self.subs[at]);
                prefetch(&self.subs[at + 1]);
            }
            _ => {
                // The search's middle and ends, and the range before them,
                // which holds `ip` when no range starts before it in the
                // block.
                let (from, to) = self.searched(ip);
                for at in [
                    from.saturating_sub(1),
                    (from + to) / 2,
                    to.saturating_sub(1),
                ] {
                    if let Some(range) = self.ranges.get(at) {
                        prefetch(range);
                    }
                }
            }
        }
    }
}

const BLOCKS: usize = 1 << 16;
const SUB_BLOCKS: usize = 1 << 8;

/// Addresses `start..=end`, in the prefix of `length` bits whose value is
/// `value`.
#[derive(Debug, Clone, Copy)]
struct Range<T> {
    start: T,
    end: T,
    /// The value's index in the low 24 bits, the prefix's length in the
    /// top 8.
    value_and_length: u32,
}

impl<T> Range<T> {
    fn value(&self) -> usize {
        (self.value_and_length & 0x00ff_ffff) as usize
    }

    fn length(&self) -> u8 {
        (self.value_and_length >> 24) as u8
    }
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            prefixes: 0,
            v4: Ranges::new(Vec::new()),
            v6: Ranges::new(Vec::new()),
        }
    }
}

impl<V: Eq + Hash + Clone> PrefixMap<V> {
    /// Builds the map. Among prefixes covering an address, the longest wins;
    /// among equal prefixes, the highest `priority`, then the first given.
    pub fn new(prefixes: impl IntoIterator<Item = (IpNet, V, u8)>) -> Self {
        let mut values = Vec::new();
        let mut value_index: HashMap<V, u32> = HashMap::new();
        // Per prefix given: its value's index and its length, packed.
        let mut packed = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value, priority) in prefixes {
            let net = net.trunc();
            let index = u32::try_from(packed.len()).expect("fewer than 2^32 prefixes");
            match net {
                IpNet::V4(n) => v4.push((
                    u32::from(n.network()),
                    u32::from(n.broadcast()),
                    priority,
                    index,
                )),
                IpNet::V6(n) => v6.push((
                    u128::from(n.network()),
                    u128::from(n.broadcast()),
                    priority,
                    index,
                )),
            }
            let value = *value_index.entry(value.clone()).or_insert_with(|| {
                values.push(value);
                u32::try_from(values.len() - 1)
                    .ok()
                    .filter(|&i| i < 1 << 24)
                    .expect("fewer than 2^24 distinct values")
            });
            packed.push(value | u32::from(net.prefix_len()) << 24);
        }
        Self {
            values,
            prefixes: packed.len(),
            v4: Ranges::new(with_values(flatten(v4), &packed)),
            v6: Ranges::new(with_values(flatten(v6), &packed)),
        }
    }
}

impl<V> PrefixMap<V> {
    /// No prefixes at all.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// The longest prefix containing `ip` and its value. IPv4-mapped IPv6
    /// addresses are looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, &V)> {
        let (net, range_value) = match crate::inventory::canonical(ip) {
            IpAddr::V4(v4) => {
                let range = self.v4.find(u32::from(v4))?;
                let net = Ipv4Net::new(v4, range.length()).ok()?.trunc();
                (IpNet::V4(net), range.value())
            }
            IpAddr::V6(v6) => {
                let range = self.v6.find(u128::from(v6))?;
                let net = Ipv6Net::new(v6, range.length()).ok()?.trunc();
                (IpNet::V6(net), range.value())
            }
        };
        Some((net, self.values.get(range_value)?))
    }

    /// Asks for the memory that step `step` (below
    /// [`PrefixMap::PREFETCH_STEPS`]) of a lookup of `ip` reads, without
    /// waiting for it. Each step reads what the one before asked for: a
    /// caller looking up many addresses takes them through step 0, then
    /// step 1, and so on, so the reads of each step overlap.
    pub fn prefetch(&self, ip: IpAddr, step: usize) {
        match crate::inventory::canonical(ip) {
            IpAddr::V4(v4) => self.v4.prefetch(u32::from(v4), step),
            IpAddr::V6(v6) => self.v6.prefetch(u128::from(v6), step),
        }
    }

    /// The steps of [`PrefixMap::prefetch`]: the block, its sub-block, the
    /// ranges.
    pub const PREFETCH_STEPS: usize = 3;
}

/// Flattened ranges with their prefix's packed value and length.
fn with_values<T>(flat: Vec<(T, T, u32)>, packed: &[u32]) -> Vec<Range<T>> {
    flat.into_iter()
        .map(|(start, end, entry)| Range {
            start,
            end,
            value_and_length: packed[entry as usize],
        })
        .collect()
}

/// Disjoint ranges from nested-or-disjoint prefixes (start, end, priority,
/// entry), each range taking the innermost prefix's entry.
fn flatten<T>(mut prefixes: Vec<(T, T, u8, u32)>) -> Vec<(T, T, u32)>
where
    T: Copy + Ord + One,
{
    // Outer prefixes first (same start, larger end), then lower priority,
    // then later entries first so the first given wins a full tie.
    prefixes.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(a.2.cmp(&b.2))
            .then(b.3.cmp(&a.3))
    });
    let mut out: Vec<(T, T, u32)> = Vec::with_capacity(prefixes.len() * 2);
    // Open prefixes, each inside the one below it; `cursor` is the first
    // address not yet emitted (None past the top of the address space).
    let mut open: Vec<(T, u32)> = Vec::new();
    let mut cursor: Option<T> = None;
    for (start, end, _, entry) in prefixes {
        while let Some(&(top_end, top_entry)) = open.last() {
            if top_end >= start {
                break;
            }
            close(&mut out, &mut cursor, top_end, top_entry);
            open.pop();
        }
        if let (Some(&(_, outer)), Some(from), Some(before)) =
            (open.last(), cursor, start.predecessor())
        {
            if from <= before {
                emit(&mut out, from, before, outer);
            }
        }
        cursor = Some(start);
        open.push((end, entry));
    }
    while let Some((top_end, top_entry)) = open.pop() {
        close(&mut out, &mut cursor, top_end, top_entry);
    }
    out
}

/// Emits what is left of an open prefix and moves the cursor past it.
fn close<T: Copy + Ord + One>(
    out: &mut Vec<(T, T, u32)>,
    cursor: &mut Option<T>,
    end: T,
    entry: u32,
) {
    if let Some(from) = *cursor {
        if from <= end {
            emit(out, from, end, entry);
            *cursor = end.successor();
        }
    }
}

/// Appends a range, merging it into the previous one when they touch and
/// share the entry.
fn emit<T: Copy + Ord + One>(out: &mut Vec<(T, T, u32)>, start: T, end: T, entry: u32) {
    match out.last_mut() {
        Some(last) if last.2 == entry && last.1.successor() == Some(start) => last.1 = end,
        _ => out.push((start, end, entry)),
    }
}

/// Neighbouring integers, without overflow.
trait One: Sized {
    fn successor(self) -> Option<Self>;
    fn predecessor(self) -> Option<Self>;
}

/// An address as an integer: its neighbours, its 16-bit block and the
/// 8-bit sub-block inside it.
trait Key: Copy + Ord + One {
    fn block(self) -> usize;
    fn sub_block(self) -> usize;
}

impl One for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn predecessor(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Key for u32 {
    fn block(self) -> usize {
        (self >> 16) as usize
    }
    fn sub_block(self) -> usize {
        (self >> 8) as usize & 0xff
    }
}

impl One for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn predecessor(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Key for u128 {
    fn block(self) -> usize {
        (self >> 112) as usize
    }
    fn sub_block(self) -> usize {
        (self >> 104) as usize & 0xff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::xorshift;

    fn map(prefixes: &[(&str, &'static str, u8)]) -> PrefixMap<&'static str> {
        PrefixMap::new(
            prefixes
                .iter()
                .map(|(n, v, p)| (n.parse().unwrap(), *v, *p)),
        )
    }

    fn at(map: &PrefixMap<&'static str>, ip: &str) -> Option<&'static str> {
        map.lookup(ip.parse().unwrap()).map(|(_, v)| *v)
    }

    #[test]
    fn the_longest_prefix_wins_and_the_outer_one_resumes_after_it() {
        let m = map(&[
            ("10.0.0.0/8", "eight", 0),
            ("10.1.0.0/16", "sixteen", 0),
            ("10.1.2.0/24", "twenty-four", 0),
            ("10.1.2.7/32", "host", 0),
            ("10.200.0.0/16", "other", 0),
            ("2001:db8::/32", "doc6", 0),
            ("2001:db8:1::/48", "doc6-48", 0),
        ]);
        assert_eq!(at(&m, "9.255.255.255"), None);
        assert_eq!(at(&m, "10.0.0.0"), Some("eight"));
        assert_eq!(at(&m, "10.1.0.0"), Some("sixteen"));
        assert_eq!(at(&m, "10.1.2.6"), Some("twenty-four"));
        assert_eq!(at(&m, "10.1.2.7"), Some("host"));
        assert_eq!(at(&m, "10.1.2.8"), Some("twenty-four"));
        assert_eq!(at(&m, "10.1.3.0"), Some("sixteen"));
        assert_eq!(at(&m, "10.2.0.0"), Some("eight"));
        assert_eq!(at(&m, "10.200.5.5"), Some("other"));
        assert_eq!(at(&m, "10.201.0.0"), Some("eight"));
        assert_eq!(at(&m, "10.255.255.255"), Some("eight"));
        assert_eq!(at(&m, "11.0.0.0"), None);
        assert_eq!(at(&m, "::ffff:10.1.2.7"), Some("host"), "IPv4-mapped");
        assert_eq!(at(&m, "2001:db8:1::1"), Some("doc6-48"));
        assert_eq!(at(&m, "2001:db8:2::1"), Some("doc6"));
        assert_eq!(at(&m, "2001:db9::"), None);
        assert_eq!(
            m.lookup("10.1.2.9".parse().unwrap()).unwrap().0.to_string(),
            "10.1.2.0/24"
        );
    }

    #[test]
    fn equal_prefixes_go_to_the_higher_priority_then_the_first() {
        let m = map(&[("52.95.0.0/16", "AMAZON", 0), ("52.95.0.0/16", "S3", 1)]);
        assert_eq!(at(&m, "52.95.1.1"), Some("S3"));
        let m = map(&[("52.95.0.0/16", "S3", 1), ("52.95.0.0/16", "AMAZON", 0)]);
        assert_eq!(at(&m, "52.95.1.1"), Some("S3"));
        let m = map(&[("52.95.0.0/16", "first", 0), ("52.95.0.0/16", "second", 0)]);
        assert_eq!(at(&m, "52.95.1.1"), Some("first"));
    }

    #[test]
    fn the_edges_of_the_address_space() {
        let m = map(&[
            ("0.0.0.0/0", "default", 0),
            ("255.255.255.255/32", "top", 0),
            ("0.0.0.0/32", "bottom", 0),
            ("::/0", "default6", 0),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "top6", 0),
        ]);
        assert_eq!(at(&m, "0.0.0.0"), Some("bottom"));
        assert_eq!(at(&m, "0.0.0.1"), Some("default"));
        assert_eq!(at(&m, "255.255.255.254"), Some("default"));
        assert_eq!(at(&m, "255.255.255.255"), Some("top"));
        assert_eq!(
            at(&m, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
            Some("default6")
        );
        assert_eq!(
            at(&m, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("top6")
        );
        assert_eq!(at(&m, "::1"), Some("default6"));
    }

    /// The longest prefix holding `ip` and its value, by scanning every
    /// one.
    fn scan<T: Copy>(prefixes: &[(IpNet, T, u8)], ip: IpAddr) -> Option<(IpNet, T)> {
        prefixes
            .iter()
            .enumerate()
            .filter(|(_, (n, _, _))| n.contains(&ip))
            .max_by(|(ia, (a, _, pa)), (ib, (b, _, pb))| {
                a.prefix_len()
                    .cmp(&b.prefix_len())
                    .then(pa.cmp(pb))
                    .then(ib.cmp(ia))
            })
            .map(|(_, (n, v, _))| (*n, *v))
    }

    #[test]
    fn the_block_index_agrees_with_a_linear_scan_across_the_address_space() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut prefixes = Vec::new();
        for i in 0..1500u32 {
            let bits = u128::from(next()) << 64 | u128::from(next());
            let net = if i % 2 == 0 {
                let len = 4 + (next() % 29) as u8;
                IpNet::V4(
                    ipnet::Ipv4Net::new((bits as u32).into(), len)
                        .unwrap()
                        .trunc(),
                )
            } else {
                let len = 4 + (next() % 125) as u8;
                IpNet::V6(ipnet::Ipv6Net::new(bits.into(), len).unwrap().trunc())
            };
            prefixes.push((net, i, (next() % 2) as u8));
        }
        let m = PrefixMap::new(prefixes.clone());
        assert!(!m.v4.blocks.is_empty() && !m.v6.blocks.is_empty());
        for round in 0..20_000 {
            // Half the probes inside a random prefix, half anywhere.
            let bits = u128::from(next()) << 64 | u128::from(next());
            let (net, _, _) = prefixes[(next() % prefixes.len() as u64) as usize];
            let ip = match (net, round % 2) {
                (IpNet::V4(n), 0) => IpAddr::V4(
                    (u32::from(n.network()) | (bits as u32 & !u32::from(n.netmask()))).into(),
                ),
                (IpNet::V6(n), 0) => {
                    IpAddr::V6((u128::from(n.network()) | (bits & !u128::from(n.netmask()))).into())
                }
                (IpNet::V4(_), _) => IpAddr::V4((bits as u32).into()),
                (IpNet::V6(_), _) => IpAddr::V6(bits.into()),
            };
            assert_eq!(
                m.lookup(ip).map(|(_, v)| *v),
                scan(&prefixes, ip).map(|(_, v)| v),
                "{ip}"
            );
        }
    }

    #[test]
    fn dense_blocks_agree_with_a_linear_scan_and_give_the_matching_prefix() {
        // Thousands of nested prefixes inside one IPv4 and one IPv6 block,
        // so both get sub-blocks, with values shared by many prefixes.
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let mut prefixes = Vec::new();
        for i in 0..4000u32 {
            let net = if i % 2 == 0 {
                let len = 17 + (next() % 16) as u8;
                let addr = 0x0a14_0000 | (next() as u32 & 0xffff);
                IpNet::V4(ipnet::Ipv4Net::new(addr.into(), len).unwrap().trunc())
            } else {
                let len = 20 + (next() % 60) as u8;
                let bits =
                    0x2001_u128 << 112 | (u128::from(next()) << 64 | u128::from(next())) >> 16;
                IpNet::V6(ipnet::Ipv6Net::new(bits.into(), len).unwrap().trunc())
            };
            prefixes.push((net, i % 7, (next() % 2) as u8));
        }
        let m = PrefixMap::new(prefixes.clone());
        assert!(!m.v4.subs.is_empty() && !m.v6.subs.is_empty());
        assert_eq!(m.values.len(), 7, "each distinct value stored once");
        assert_eq!(m.len(), 4000);
        for round in 0..40_000u64 {
            let bits = u128::from(next()) << 64 | u128::from(next());
            let ip = match round % 3 {
                0 => IpAddr::V4((0x0a14_0000 | (bits as u32 & 0xffff)).into()),
                1 => IpAddr::V6((0x2001_u128 << 112 | bits >> 16).into()),
                // Next to the dense blocks.
                _ => IpAddr::V4((0x0a13_ff00 + (bits as u32 % 0x0002_0200)).into()),
            };
            for step in 0..PrefixMap::<u32>::PREFETCH_STEPS {
                m.prefetch(ip, step);
            }
            assert_eq!(
                m.lookup(ip).map(|(n, v)| (n, *v)),
                scan(&prefixes, ip),
                "{ip}"
            );
        }
    }

    #[test]
    fn agrees_with_a_linear_scan_on_random_prefixes() {
        // Nested and overlapping prefixes in a narrow space, so they
        // collide often.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut prefixes = Vec::new();
        for i in 0..400u32 {
            let len = 12 + (next() % 21) as u8;
            let addr = 0x0a00_0000 | (next() as u32 & 0x000f_ffff);
            let net = ipnet::Ipv4Net::new(addr.into(), len).unwrap().trunc();
            prefixes.push((IpNet::V4(net), i, (next() % 3) as u8));
        }
        let m = PrefixMap::new(prefixes.clone());
        for _ in 0..20_000 {
            let ip = IpAddr::V4((0x0a00_0000 | (next() as u32 & 0x001f_ffff)).into());
            assert_eq!(
                m.lookup(ip).map(|(_, v)| *v),
                scan(&prefixes, ip).map(|(_, v)| v),
                "{ip}"
            );
        }
    }
}
