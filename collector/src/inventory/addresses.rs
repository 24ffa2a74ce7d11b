//! A map from IP address to value whose lookups can overlap in memory.
//!
//! Enrichment looks up two or three addresses per conntrack entry among
//! hundreds of thousands: each lookup of a general-purpose hash map waits
//! for a slot to arrive from memory, one after another. [`AddressMap`]
//! keeps its slots in one array at known positions, so
//! [`AddressMap::get_many`] can ask for every slot of a batch before
//! reading any of them, then for every value, and the waits overlap.
//!
//! Open addressing with linear probing over 8-byte slots (32 bits of the
//! key's hash and an index into the values), kept at most half full so a
//! probe, found or not, mostly reads one cache line. Values live apart with
//! their keys (64 bytes for the inventory's) in fixed-size segments: the map
//! grows without copying them, and without leaving freed copies resident. Entries are only
//! removed in bulk ([`AddressMap::retain`]), which rebuilds the slots.

use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::prefetch::prefetch;

/// An address as one integer: its IPv6 form, IPv4 mapped, so both families
/// share the map and an IPv4-mapped IPv6 address is its IPv4 address.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A slot: the low half of the key's hash (its top bits chose the slot),
/// and where its value is (`EMPTY` for none).
#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u32,
    index: u32,
}

const EMPTY: u32 = u32::MAX;

const VACANT: Slot = Slot {
    tag: 0,
    index: EMPTY,
};

/// Values per segment: 64 KiB of the inventory's.
const SEGMENT: usize = 1024;

/// A value with its key.
#[derive(Debug, Clone)]
struct Stored<V> {
    key: u128,
    value: V,
}

/// Addresses to values; see the module documentation.
#[derive(Debug, Clone)]
pub(super) struct AddressMap<V> {
    slots: Vec<Slot>,
    /// Value `i` is `values[i / SEGMENT][i % SEGMENT]`; every segment but
    /// the last is full.
    values: Vec<Vec<Stored<V>>>,
    len: usize,
    /// Random per map: remote addresses come from the internet, and a
    /// sender must not be able to pick ones that probe long runs.
    seed: (u64, u64),
}

/// Lookups in flight at once in [`AddressMap::get_many`]: enough to keep
/// the memory system busy, few enough for their state to stay on the stack.
const BATCH: usize = 64;

impl<V> AddressMap<V> {
    pub(super) fn new() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        Self {
            slots: vec![VACANT; 16],
            values: Vec::new(),
            len: 0,
            seed: (random.hash_one(1u8) | 1, random.hash_one(2u8)),
        }
    }

    /// Number of addresses.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn stored(&self, index: usize) -> &Stored<V> {
        &self.values[index / SEGMENT][index % SEGMENT]
    }

    fn push(&mut self, stored: Stored<V>) {
        match self.values.last_mut() {
            Some(segment) if segment.len() < SEGMENT => segment.push(stored),
            _ => {
                let mut segment = Vec::with_capacity(SEGMENT);
                segment.push(stored);
                self.values.push(segment);
            }
        }
        self.len += 1;
    }

    fn hash(&self, key: u128) -> u64 {
        // A folded multiply of the two halves, each mixed with the seed.
        let product =
            u128::from((key as u64) ^ self.seed.1) * u128::from((key >> 64) as u64 ^ self.seed.0);
        (product as u64) ^ (product >> 64) as u64
    }

    /// Where `hash`'s probe starts: its top bits, the best mixed.
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (hash >> (64 - bits)) as usize
    }

    /// The index of `key`'s value, probing from its home slot.
    fn find(&self, key: u128, hash: u64) -> Option<usize> {
        self.candidates(hash)
            .find(|&index| self.stored(index).key == key)
    }

    /// The indexes of the values whose slot carries `hash`'s tag, in probe
    /// order: `key`'s is among them if it is in the map, nearly always
    /// alone (a tag is 32 bits).
    fn candidates(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let mask = self.slots.len() - 1;
        let home = self.home(hash);
        (0..self.slots.len())
            .map(move |step| self.slots[(home + step) & mask])
            .take_while(|slot| slot.index != EMPTY)
            .filter(move |slot| slot.tag == hash as u32)
            .map(|slot| slot.index as usize)
    }

    /// The value of `ip`.
    pub(super) fn get(&self, ip: IpAddr) -> Option<&V> {
        let key = key(ip);
        let index = self.find(key, self.hash(key))?;
        Some(&self.stored(index).value)
    }

    /// The value of `ip`, to change.
    pub(super) fn get_mut(&mut self, ip: IpAddr) -> Option<&mut V> {
        let key = key(ip);
        let index = self.find(key, self.hash(key))?;
        Some(&mut self.values[index / SEGMENT][index % SEGMENT].value)
    }

    /// The value of `ip`, inserted as `V::default()` if absent.
    pub(super) fn get_or_default(&mut self, ip: IpAddr) -> &mut V
    where
        V: Default,
    {
        let key = key(ip);
        let hash = self.hash(key);
        let index = match self.find(key, hash) {
            Some(index) => index,
            None => {
                let index = self.len;
                self.push(Stored {
                    key,
                    value: V::default(),
                });
                if self.len * 2 > self.slots.len() {
                    self.rebuild(self.slots.len() * 2);
                } else {
                    self.place(hash, index);
                }
                index
            }
        };
        &mut self.values[index / SEGMENT][index % SEGMENT].value
    }

    /// Keeps the values `keep` says to keep.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        let before = self.len;
        let segments = std::mem::take(&mut self.values);
        self.len = 0;
        // Segment by segment, so at most one more is allocated at a time.
        for segment in segments {
            for mut stored in segment {
                if keep(&mut stored.value) {
                    self.push(stored);
                }
            }
        }
        if self.len != before {
            let mut slots = 16;
            while self.len * 2 > slots {
                slots *= 2;
            }
            self.rebuild(slots);
        }
    }

    /// Calls `found(i, value)` for each of `ips`, in order, with the value
    /// of `ips[i]`; the memory reads of a batch are issued together.
    pub(super) fn get_many<'a>(
        &'a self,
        ips: &[IpAddr],
        mut found: impl FnMut(usize, Option<&'a V>),
    ) {
        let mut keys = [0u128; BATCH];
        let mut hashes = [0u64; BATCH];
        let mut candidates = [None; BATCH];
        for (batch, ips) in ips.chunks(BATCH).enumerate() {
            // The slots, then the values their tags point to, then the
            // keys compared: each step's reads were asked for a step
            // before.
            for (i, &ip) in ips.iter().enumerate() {
                keys[i] = key(ip);
                hashes[i] = self.hash(keys[i]);
                prefetch(&self.slots[self.home(hashes[i])]);
            }
            for i in 0..ips.len() {
                candidates[i] = self.candidates(hashes[i]).next();
                if let Some(index) = candidates[i] {
                    prefetch(self.stored(index));
                }
            }
            for i in 0..ips.len() {
                let index = match candidates[i] {
                    Some(index) if self.stored(index).key == keys[i] => Some(index),
                    Some(_) => self.find(keys[i], hashes[i]),
                    None => None,
                };
                found(
                    batch * BATCH + i,
                    index.map(|index| &self.stored(index).value),
                );
            }
        }
    }

    fn place(&mut self, hash: u64, index: usize) {
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        while self.slots[at].index != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            tag: hash as u32,
            index: u32::try_from(index).expect("fewer than 2^32 addresses"),
        };
    }

    fn rebuild(&mut self, slots: usize) {
        // The old slots go first, so the new ones can reuse their memory.
        self.slots = Vec::new();
        self.slots = vec![VACANT; slots];
        for index in 0..self.len {
            let hash = self.hash(self.stored(index).key);
            self.place(hash, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::xorshift;
    use std::collections::HashMap;

    fn address(next: &mut impl FnMut() -> u64) -> IpAddr {
        // Few distinct values, both families, so keys repeat and collide.
        match next() % 3 {
            0 => IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 + (next() % 3000) as u32,
            )),
            1 => IpAddr::V6(std::net::Ipv6Addr::from(
                0xfd00_u128 << 112 | u128::from(next() % 3000),
            )),
            _ => IpAddr::V6(
                std::net::Ipv4Addr::from(0x0a00_0000 + (next() % 3000) as u32).to_ipv6_mapped(),
            ),
        }
    }

    fn canonical(ip: IpAddr) -> IpAddr {
        crate::inventory::canonical(ip)
    }

    #[test]
    fn behaves_as_a_hash_map_through_inserts_updates_and_removals() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut map: AddressMap<u64> = AddressMap::new();
        let mut oracle: HashMap<IpAddr, u64> = HashMap::new();
        for round in 0..30_000u64 {
            let ip = address(&mut next);
            match next() % 4 {
                0 | 1 => {
                    *map.get_or_default(ip) += round;
                    *oracle.entry(canonical(ip)).or_default() += round;
                }
                2 => {
                    if let Some(value) = map.get_mut(ip) {
                        *value ^= 1;
                    }
                    if let Some(value) = oracle.get_mut(&canonical(ip)) {
                        *value ^= 1;
                    }
                }
                _ if round % 1000 == 0 => {
                    map.retain(|v| *v % 3 != 0);
                    oracle.retain(|_, v| *v % 3 != 0);
                }
                _ => {}
            }
            assert_eq!(map.get(ip), oracle.get(&canonical(ip)), "{ip} at {round}");
        }
        assert_eq!(map.len(), oracle.len());
        assert!(map.len() * 2 <= map.slots.len(), "at most half full");
        let probes: Vec<IpAddr> = (0..1000).map(|_| address(&mut next)).collect();
        let mut seen = 0;
        map.get_many(&probes, |i, value| {
            assert_eq!(i, seen, "in order");
            seen += 1;
            assert_eq!(value, oracle.get(&canonical(probes[i])), "{}", probes[i]);
        });
        assert_eq!(seen, probes.len());
    }

    #[test]
    fn removing_everything_leaves_a_small_empty_map() {
        let mut map: AddressMap<u8> = AddressMap::new();
        for i in 0..1000u32 {
            *map.get_or_default(IpAddr::V4(i.into())) = 1;
        }
        map.retain(|_| false);
        assert_eq!(map.len(), 0);
        assert_eq!(map.slots.len(), 16);
        assert_eq!(map.get(IpAddr::V4(5u32.into())), None);
    }
}
