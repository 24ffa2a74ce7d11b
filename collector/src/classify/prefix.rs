//! Longest-prefix match over IPv4 and IPv6 prefixes.
//!
//! Prefixes are flattened once, at build time, into sorted disjoint address
//! ranges, each carrying the value of the longest prefix covering it (ties
//! broken by a priority). A lookup is one binary search over plain integers:
//! no allocation, no pointer chasing. For large lists an index by the
//! address's top 16 bits narrows the search to the ranges starting in that
//! block, so a lookup among 50,000 prefixes touches two or three cache lines
//! instead of the 17 steps of a search over all of them.

use std::net::IpAddr;

use ipnet::IpNet;

/// Prefixes with values, searchable by address.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    entries: Vec<(IpNet, V)>,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

/// Sorted disjoint ranges, and for large lists where each 16-bit block's
/// ranges begin.
#[derive(Debug, Clone)]
struct Ranges<T> {
    ranges: Vec<Range<T>>,
    /// `blocks[b]` is the number of ranges starting before block `b`
    /// (65,537 entries), or empty when the list is short.
    blocks: Vec<u32>,
}

/// Below this many ranges a plain binary search stays in cache anyway.
const INDEXED_FROM: usize = 256;

impl<T: Key> Ranges<T> {
    fn new(ranges: Vec<Range<T>>) -> Self {
        let blocks = if ranges.len() < INDEXED_FROM {
            Vec::new()
        } else {
            let mut blocks = Vec::with_capacity(BLOCKS + 1);
            let mut before = 0;
            for block in 0..BLOCKS {
                while before < ranges.len() && ranges[before].start.block() < block {
                    before += 1;
                }
                blocks.push(u32::try_from(before).expect("fewer than 2^32 ranges"));
            }
            blocks.push(u32::try_from(ranges.len()).expect("fewer than 2^32 ranges"));
            blocks
        };
        Self { ranges, blocks }
    }

    /// The entry of the range holding `ip`.
    fn find(&self, ip: T) -> Option<u32> {
        // Ranges starting in earlier blocks all start at or before `ip`,
        // those in later blocks after it: only `ip`'s block is searched.
        let after = match self.blocks.get(ip.block()..=ip.block() + 1) {
            Some(&[from, to]) => {
                let (from, to) = (from as usize, to as usize);
                from + self.ranges[from..to].partition_point(|r| r.start <= ip)
            }
            _ => self.ranges.partition_point(|r| r.start <= ip),
        };
        let range = self.ranges.get(after.checked_sub(1)?)?;
        (ip <= range.end).then_some(range.entry)
    }
}

const BLOCKS: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Range<T> {
    start: T,
    end: T,
    entry: u32,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            v4: Ranges::new(Vec::new()),
            v6: Ranges::new(Vec::new()),
        }
    }
}

impl<V> PrefixMap<V> {
    /// Builds the map. Among prefixes covering an address, the longest wins;
    /// among equal prefixes, the highest `priority`, then the first given.
    pub fn new(prefixes: impl IntoIterator<Item = (IpNet, V, u8)>) -> Self {
        let mut entries = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value, priority) in prefixes {
            let net = net.trunc();
            let index = u32::try_from(entries.len()).expect("fewer than 2^32 prefixes");
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
            entries.push((net, value));
        }
        Self {
            entries,
            v4: Ranges::new(flatten(v4)),
            v6: Ranges::new(flatten(v6)),
        }
    }

    /// No prefixes at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The longest prefix containing `ip` and its value. IPv4-mapped IPv6
    /// addresses are looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<&(IpNet, V)> {
        let entry = match crate::inventory::canonical(ip) {
            IpAddr::V4(v4) => self.v4.find(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.find(u128::from(v6)),
        }?;
        self.entries.get(entry as usize)
    }
}

/// Disjoint ranges from nested-or-disjoint prefixes (start, end, priority,
/// entry), each range taking the innermost prefix's entry.
fn flatten<T>(mut prefixes: Vec<(T, T, u8, u32)>) -> Vec<Range<T>>
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
    let mut out: Vec<Range<T>> = Vec::with_capacity(prefixes.len() * 2);
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
fn close<T: Copy + Ord + One>(out: &mut Vec<Range<T>>, cursor: &mut Option<T>, end: T, entry: u32) {
    if let Some(from) = *cursor {
        if from <= end {
            emit(out, from, end, entry);
            *cursor = end.successor();
        }
    }
}

/// Appends a range, merging it into the previous one when they touch and
/// share the entry.
fn emit<T: Copy + Ord + One>(out: &mut Vec<Range<T>>, start: T, end: T, entry: u32) {
    match out.last_mut() {
        Some(last) if last.entry == entry && last.end.successor() == Some(start) => last.end = end,
        _ => out.push(Range { start, end, entry }),
    }
}

/// Neighbouring integers, without overflow.
trait One: Sized {
    fn successor(self) -> Option<Self>;
    fn predecessor(self) -> Option<Self>;
}

/// An address as an integer: its neighbours and its 16-bit block.
trait Key: Copy + Ord + One {
    fn block(self) -> usize;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A small deterministic generator.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The longest prefix holding `ip` by scanning every one.
    fn scan<T: Copy>(prefixes: &[(IpNet, T, u8)], ip: IpAddr) -> Option<T> {
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
            .map(|(_, (_, v, _))| *v)
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
            assert_eq!(m.lookup(ip).map(|(_, v)| *v), scan(&prefixes, ip), "{ip}");
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
            assert_eq!(m.lookup(ip).map(|(_, v)| *v), scan(&prefixes, ip), "{ip}");
        }
    }
}
