//! A compact binary form of a run of flow records, for the spool.
//!
//! Records repeat a few thousand names millions of times, so a run is
//! written as a table of its distinct names followed by the records, whose
//! names are indexes into that table: writing a name costs a pointer lookup
//! (names are interned, [`Name`]), reading one a reference count, and a
//! batch read back shares one allocation per distinct name instead of
//! allocating every name of every record again.
//!
//! Layout: `varint(names)`, each name as `varint(len)` and UTF-8 bytes;
//! `varint(records)`; then each record's fields in column order. Integers
//! that are usually small (counters, indexes) are LEB128 varints, addresses
//! 16 bytes, ports and timestamps fixed little-endian, the closed text sets
//! one byte. The form is private to one version of tollgate: it is a
//! queue's format, not an interchange format.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::flow::{get_compact, put_compact};
use crate::{Category, Family, FlowRecord, Initiator, Name, Protocol, RemoteKind};

/// Bytes that are not a run of records (truncated or corrupt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactError {
    /// Where reading stopped, in bytes from the start.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl std::fmt::Display for CompactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.offset)
    }
}

impl std::error::Error for CompactError {}

/// Hashes a name's address: names are interned, so the address identifies
/// the text without reading it.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// The names met so far, by address, and the table they will be written as.
#[derive(Default)]
pub(crate) struct Names {
    index: HashMap<usize, u32, BuildHasherDefault<AddressHasher>>,
    table: Vec<Name>,
}

impl Names {
    fn index_of(&mut self, name: &Name) -> u32 {
        let address = Arc::as_ptr(name).cast::<u8>() as usize;
        let next = self.table.len() as u32;
        *self.index.entry(address).or_insert_with(|| {
            // Kept alive here, so the address cannot be reused meanwhile.
            self.table.push(name.clone());
            next
        })
    }
}

/// `records` in compact form (name table, count, records), appended to
/// `out`.
pub fn encode(records: &[FlowRecord], out: &mut Vec<u8>) {
    let mut names = Names::default();
    let mut encoded = Vec::new();
    for record in records {
        put_compact(record, &mut names, &mut encoded);
    }
    let names_len: usize = names.table.iter().map(|n| n.len() + 2).sum();
    out.reserve(names_len + encoded.len() + 20);
    put_varint(names.table.len() as u64, out);
    for name in &names.table {
        put_varint(name.len() as u64, out);
        out.extend_from_slice(name.as_bytes());
    }
    put_varint(records.len() as u64, out);
    out.extend_from_slice(&encoded);
}

/// The records of a run written by [`encode`], which must span all of
/// `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Vec<FlowRecord>, CompactError> {
    let mut input = Input {
        bytes,
        offset: 0,
        names: Vec::new(),
    };
    let names = input.varint("the name count")?;
    for _ in 0..names {
        let len = usize::try_from(input.varint("a name's length")?)
            .map_err(|_| input.error("a name's length"))?;
        let text = input.take(len, "a name")?;
        let text = std::str::from_utf8(text).map_err(|_| input.error("a name in UTF-8"))?;
        input.names.push(Name::from(text));
    }
    let count = input.varint("the record count")?;
    // Bounded by what the bytes can hold, so a corrupt count cannot
    // reserve more memory than the input justifies.
    let mut records = Vec::with_capacity((count as usize).min(bytes.len() / 40));
    for _ in 0..count {
        records.push(get_compact(&mut input).ok_or_else(|| input.error("a record"))?);
    }
    if input.offset != bytes.len() {
        return Err(input.error("the end of the records"));
    }
    Ok(records)
}

/// Bytes being read, and the names read so far.
pub(crate) struct Input<'a> {
    bytes: &'a [u8],
    offset: usize,
    names: Vec<Name>,
}

impl<'a> Input<'a> {
    fn error(&self, expected: &'static str) -> CompactError {
        CompactError {
            offset: self.offset,
            expected,
        }
    }

    fn take(&mut self, len: usize, expected: &'static str) -> Result<&'a [u8], CompactError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.error(expected))?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N, "").ok()?.try_into().ok()
    }

    fn varint(&mut self, expected: &'static str) -> Result<u64, CompactError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let &byte = self
                .bytes
                .get(self.offset)
                .ok_or_else(|| self.error(expected))?;
            self.offset += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(expected))
    }
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How one field type is written and read.
pub(crate) trait Field: Sized {
    fn put(&self, names: &mut Names, out: &mut Vec<u8>);
    fn get(input: &mut Input<'_>) -> Option<Self>;
}

impl Field for u16 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        input.array().map(u16::from_le_bytes)
    }
}

impl Field for u32 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        input.array().map(u32::from_le_bytes)
    }
}

impl Field for u64 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        put_varint(*self, out);
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        input.varint("").ok()
    }
}

impl Field for bool {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        match input.array::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

impl Field for Ipv6Addr {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.octets());
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        input.array::<16>().map(Ipv6Addr::from)
    }
}

impl Field for Name {
    fn put(&self, names: &mut Names, out: &mut Vec<u8>) {
        put_varint(u64::from(names.index_of(self)), out);
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        let index = usize::try_from(input.varint("").ok()?).ok()?;
        input.names.get(index).cloned()
    }
}

impl Field for Family {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.push(match self {
            Family::Ipv4 => Family::AF_INET,
            Family::Ipv6 => Family::AF_INET6,
        });
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        Family::from_af(input.array::<1>()?[0])
    }
}

impl Field for Protocol {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.push(self.0);
    }
    fn get(input: &mut Input<'_>) -> Option<Self> {
        Some(Protocol(input.array::<1>()?[0]))
    }
}

/// The closed text sets, as their position in `ALL`.
macro_rules! positional {
    ($($t:ty),+) => {$(
        impl Field for $t {
            fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
                let position = <$t>::ALL.iter().position(|v| v == self).unwrap_or(0);
                out.push(position as u8);
            }
            fn get(input: &mut Input<'_>) -> Option<Self> {
                <$t>::ALL.get(usize::from(input.array::<1>()?[0])).copied()
            }
        }
    )+};
}

positional!(Category, RemoteKind, Initiator);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FlowRecord> {
        let record: FlowRecord = serde_json::from_str(crate::flow::tests::SAMPLE).unwrap();
        let mut other = record.clone();
        other.protocol = Protocol(47);
        other.bytes_sent = u64::MAX;
        other.remote_ip = "2001:db8::1".parse().unwrap();
        other.category = Category::CloudService;
        other.ended = true;
        other.local_pod = Name::from("another pod, not interned");
        vec![record, other.clone(), other]
    }

    #[test]
    fn records_round_trip_and_share_names() {
        let records = sample();
        let mut bytes = Vec::new();
        encode(&records, &mut bytes);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, records);
        assert!(Arc::ptr_eq(&back[1].local_pod, &back[2].local_pod));
        assert!(decode(&{
            let mut empty = Vec::new();
            encode(&[], &mut empty);
            empty
        })
        .unwrap()
        .is_empty());
    }

    #[test]
    fn every_truncation_and_trailing_bytes_are_errors() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        bytes.push(0);
        assert_eq!(
            decode(&bytes).unwrap_err().expected,
            "the end of the records"
        );
    }

    #[test]
    fn a_name_index_outside_the_table_is_an_error() {
        let mut bytes = Vec::new();
        encode(&sample()[..1], &mut bytes);
        // The first record's first name (cluster) follows the table, the
        // record count and two fixed u32 fields.
        let table_end = decode_table_end(&bytes);
        bytes[table_end + 1 + 8] = 0x7f;
        assert!(decode(&bytes).is_err());
    }

    fn decode_table_end(bytes: &[u8]) -> usize {
        let mut input = Input {
            bytes,
            offset: 0,
            names: Vec::new(),
        };
        for _ in 0..input.varint("").unwrap() {
            let len = input.varint("").unwrap() as usize;
            input.take(len, "").unwrap();
        }
        input.offset
    }
}
