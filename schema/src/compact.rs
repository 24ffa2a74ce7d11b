//! A compact binary form of a run of flow records ([`Rows`]): how the agent
//! holds a batch while it fills, how the spool stores it and what the sinks
//! read back, one record at a time or column by column
//! ([`crate::columns`]).
//!
//! Records repeat a few thousand names millions of times, so a run is
//! a table of its names (each text once, except in a run of interned
//! names, [`Rows::of_interned_names`]) and the records, whose names are
//! indexes into that table: writing a name costs a pointer lookup (names are
//! interned, [`Name`]), reading one a reference count, or nothing at all
//! for a dictionary-encoded column. A record in this form takes about a
//! seventh of the memory of a [`FlowRecord`] (66 bytes against 440 in the
//! Parquet benchmark's batch).
//!
//! Layout: `varint(names)`, each name as `varint(len)` and UTF-8 bytes;
//! `varint(records)`; then each record's fields in column order. Integers
//! that are usually small (counters, indexes) are LEB128 varints, an
//! address a byte saying its length then 4 bytes (IPv4, held IPv4-mapped)
//! or 16, ports and timestamps fixed little-endian, the closed text sets
//! one byte. The form is a queue's, not an interchange format; its
//! [`VERSION`] changes with any field, and a test pins its bytes so that a
//! change cannot go unnoticed (the spool names the version in its files).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::flow::{get_compact, get_compact_at, put_compact, ViewField};
use crate::{Category, Family, FlowRecord, FlowView, Initiator, Name, Protocol, RemoteKind};

/// The form's version: the spool's files name it (`TGSPOOL5`). Adding,
/// removing or reordering a field changes the bytes and needs a new
/// version, and a way to read the files already spooled in the old one.
///
/// Version 3 added `local_provider`, version 4 `local_provider_id`;
/// version 5 writes an IPv4 address in 5 bytes rather than 16.
pub const VERSION: u8 = 5;

/// The oldest version [`Rows::read_version`] reads, so that batches an
/// agent spooled before an upgrade are still delivered after it.
pub const OLDEST_READABLE: u8 = 2;

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

/// How many names [`Recent`] holds: a power of two.
const RECENT: usize = 256;

/// The names a run met last, by address, in a slot chosen by the address's
/// hash: a record repeats the node's names and a few others (an absent
/// name, a common kind or region) in most of its fields, and finding them
/// here costs one load from a table that stays in the first-level cache,
/// where `by_address` grows past it with a batch's remote names.
#[derive(Clone)]
struct Recent(Box<[(usize, u32); RECENT]>);

impl Default for Recent {
    fn default() -> Self {
        // No name lives at address 0, so every slot starts empty.
        Recent(Box::new([(0, 0); RECENT]))
    }
}

impl Recent {
    fn slot(address: usize) -> usize {
        (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize
            >> (usize::BITS - RECENT.trailing_zeros())
    }
}

/// The names met so far and the table they will be written as. Interned
/// names are found by address; a copy of a name already in the table (a
/// record parsed from text rather than built from the inventory) by its
/// text, so the table holds each text once either way, unless the names
/// are declared interned ([`Rows::of_interned_names`]).
#[derive(Clone, Default)]
pub(crate) struct Names {
    /// A cache of `by_address` for addresses the table keeps alive.
    recent: Recent,
    by_address: HashMap<usize, u32, BuildHasherDefault<AddressHasher>>,
    /// Hashed once per name a run meets first, unless the run is of
    /// interned names: foldhash, randomly seeded, where SipHash took a
    /// tenth of the agent's own time when its batches used this map.
    by_text: HashMap<Name, u32, foldhash::fast::RandomState>,
    /// The names come from an interner: an address stands for its text,
    /// and `by_text` is neither filled nor read.
    interned: bool,
    /// How many of `table`'s names the maps hold: names read back are
    /// only mapped if the rows are added to.
    mapped: usize,
    table: Vec<Name>,
}

impl Names {
    fn index_of(&mut self, name: &Name) -> u32 {
        if self.mapped < self.table.len() {
            self.map_the_rest();
        }
        let address = Arc::as_ptr(name).cast::<u8>() as usize;
        let slot = Recent::slot(address);
        let (recent, index) = self.recent.0[slot];
        if recent == address {
            return index;
        }
        if let Some(&index) = self.by_address.get(&address) {
            self.recent.0[slot] = (address, index);
            return index;
        }
        let next = self.table.len() as u32;
        if !self.interned {
            let index = *self.by_text.entry(name.clone()).or_insert(next);
            if index != next {
                return index;
            }
        }
        // Kept alive by the table, so the address cannot be reused
        // meanwhile.
        self.by_address.insert(address, next);
        self.recent.0[slot] = (address, next);
        self.table.push(name.clone());
        self.mapped = self.table.len();
        next
    }

    /// Append `name` to the table, even if its text is there already.
    fn add(&mut self, name: Name) {
        self.table.push(name);
    }

    /// Map the names added since the last lookup.
    fn map_the_rest(&mut self) {
        for (index, name) in (self.mapped..).zip(&self.table[self.mapped..]) {
            // Kept alive by the table, so the address cannot be reused
            // meanwhile.
            self.by_address
                .insert(Arc::as_ptr(name).cast::<u8>() as usize, index as u32);
            if !self.interned {
                self.by_text.entry(name.clone()).or_insert(index as u32);
            }
        }
        self.mapped = self.table.len();
    }
}

/// A run of records in compact form, built one record at a time: the unit
/// the agent batches, the spool stores and the sinks read back, so a batch
/// never exists as a vector of full records.
#[derive(Clone, Default)]
pub struct Rows {
    names: Names,
    body: Vec<u8>,
    count: usize,
    /// Where `body` began in the bytes it was read from (for errors).
    body_offset: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("records", &self.count)
            .field("names", &self.names.table.len())
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl Rows {
    /// An empty run for records whose names all come from one interner
    /// (one allocation per text, as the agent's inventory makes them): a
    /// name is found by its address alone and never hashed by its text,
    /// which saves a lookup and a hash for each name a run meets first. A
    /// name from elsewhere whose text is already in the table is added
    /// again: the table then holds that text twice (a name index reads
    /// back as its text either way; ClickHouse takes a dictionary that
    /// repeats a text, and the Parquet encoder merges repeats by text).
    pub fn of_interned_names() -> Self {
        Rows {
            names: Names {
                interned: true,
                ..Names::default()
            },
            ..Rows::default()
        }
    }

    /// Append one record.
    pub fn push(&mut self, record: &FlowView<'_>) {
        put_compact(record, &mut self.names, &mut self.body);
        self.count += 1;
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, decoded one at a time with their names borrowed from
    /// the run ([`FlowView::to_record`] makes one owned); a record that
    /// cannot be decoded (or bytes left after the last one) ends the run
    /// with an error.
    pub fn iter(&self) -> RowsIter<'_> {
        RowsIter {
            input: self.input(),
            remaining: self.count,
            finished: false,
        }
    }

    /// The run's names: what a name index in [`Rows::chunks`] refers to
    /// (each text once, unless the run is of interned names and met a
    /// text in two allocations).
    pub fn names(&self) -> &[Name] {
        &self.names.table
    }

    /// The records' bytes, to be read from the first.
    pub(crate) fn input(&self) -> Input<'_> {
        Input {
            bytes: &self.body,
            offset: 0,
            base: self.body_offset,
            names: &self.names.table,
        }
    }

    /// The serialized form (name table, count, records), appended to
    /// `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_into(out)
            .expect("writing to a vector does not fail");
    }

    /// The serialized form written to `out`: the name table through a
    /// small buffer, the records straight from where they are held, so a
    /// file gets a batch without a copy of it in memory. Returns the bytes
    /// written.
    pub fn write_into(&self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        const CHUNK: usize = 32 << 10;
        let mut head = Vec::with_capacity(CHUNK + 64);
        let mut written = 0;
        put_varint(self.names.table.len() as u64, &mut head);
        for name in &self.names.table {
            if head.len() + name.len() > CHUNK {
                out.write_all(&head)?;
                written += head.len();
                head.clear();
            }
            put_varint(name.len() as u64, &mut head);
            head.extend_from_slice(name.as_bytes());
        }
        put_varint(self.count as u64, &mut head);
        out.write_all(&head)?;
        out.write_all(&self.body)?;
        Ok((written + head.len() + self.body.len()) as u64)
    }

    /// Rows from bytes written by [`Rows::write_to`], which must span all of
    /// `bytes`. The name table and count are checked here, the records as
    /// they are read.
    pub fn read(bytes: &[u8]) -> Result<Rows, CompactError> {
        let mut input = Input {
            bytes,
            offset: 0,
            base: 0,
            names: &[],
        };
        let mut names = Names::default();
        let count = input.varint("the name count")?;
        for _ in 0..count {
            let len = usize::try_from(input.varint("a name's length")?)
                .map_err(|_| input.error("a name's length"))?;
            let text = input.take(len, "a name")?;
            let text = std::str::from_utf8(text).map_err(|_| input.error("a name in UTF-8"))?;
            names.add(Name::from(text));
        }
        let count = usize::try_from(input.varint("the record count")?)
            .map_err(|_| input.error("the record count"))?;
        Ok(Rows {
            names,
            body: bytes[input.offset..].to_vec(),
            count,
            body_offset: input.offset,
        })
    }
}

impl Rows {
    /// Rows from bytes written by [`Rows::write_to`] in compact `version`,
    /// converted to this version's form (a field the old version lacks is
    /// absent: an empty name). The record count and every record are
    /// checked here.
    pub fn read_version(bytes: &[u8], version: u8) -> Result<Rows, CompactError> {
        if version == VERSION {
            return Rows::read(bytes);
        }
        if !(OLDEST_READABLE..VERSION).contains(&version) {
            return Err(CompactError {
                offset: 0,
                expected: "a compact version this tollgate reads",
            });
        }
        // The name table and the count are laid out alike in every version.
        let old = Rows::read(bytes)?;
        let mut input = old.input();
        let mut rows = Rows::default();
        for _ in 0..old.count {
            let record =
                get_compact_at(&mut input, version).ok_or_else(|| input.error("a record"))?;
            rows.push(&record);
        }
        if !input.at_end() {
            return Err(input.error("the end of the records"));
        }
        Ok(rows)
    }
}

impl<'a> FromIterator<&'a FlowRecord> for Rows {
    fn from_iter<I: IntoIterator<Item = &'a FlowRecord>>(records: I) -> Self {
        let mut rows = Rows::default();
        for record in records {
            rows.push(&record.view());
        }
        rows
    }
}

#[cfg(feature = "arrow")]
impl Rows {
    /// The records as Arrow record batches of at most `chunk_rows` rows,
    /// built from [`Rows::chunks`]: a name column's keys are the run's name
    /// indexes, into one array of its names.
    pub fn record_batches(&self, chunk_rows: usize) -> RecordBatches<'_> {
        let names: arrow_array::StringArray =
            self.names.table.iter().map(|n| Some(n.as_ref())).collect();
        RecordBatches {
            chunks: self.chunks(chunk_rows),
            names: std::sync::Arc::new(names),
        }
    }
}

/// The record batches of a [`Rows`], in order: a record that cannot be
/// decoded (or bytes left after the last one) ends them with an error.
#[cfg(feature = "arrow")]
pub struct RecordBatches<'a> {
    chunks: crate::columns::Chunks<'a>,
    names: arrow_array::ArrayRef,
}

#[cfg(feature = "arrow")]
impl Iterator for RecordBatches<'_> {
    type Item = Result<arrow_array::RecordBatch, arrow_schema::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.chunks.next_chunk()?;
        Some(match chunk {
            Ok(columns) => columns.to_record_batch(&self.names),
            Err(error) => Err(arrow_schema::ArrowError::ExternalError(Box::new(error))),
        })
    }
}

/// The records of a [`Rows`], in order.
pub struct RowsIter<'a> {
    input: Input<'a>,
    remaining: usize,
    finished: bool,
}

impl<'a> Iterator for RowsIter<'a> {
    type Item = Result<FlowView<'a>, CompactError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        if self.remaining == 0 {
            self.finished = true;
            return (!self.input.at_end()).then(|| Err(self.input.error("the end of the records")));
        }
        self.remaining -= 1;
        let record = get_compact(&mut self.input).ok_or_else(|| self.input.error("a record"));
        self.finished = record.is_err();
        Some(record)
    }
}

/// Bytes being read, and the names read so far.
pub(crate) struct Input<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// Added to `offset` in errors.
    base: usize,
    names: &'a [Name],
}

impl<'a> Input<'a> {
    pub(crate) fn error(&self, expected: &'static str) -> CompactError {
        CompactError {
            offset: self.base + self.offset,
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

    pub(crate) fn at_end(&self) -> bool {
        self.offset == self.bytes.len()
    }

    pub(crate) fn skip_to_end(&mut self) {
        self.offset = self.bytes.len();
    }

    /// A name's index in the table, checked.
    pub(crate) fn name_index(&mut self) -> Option<u32> {
        let index = self.varint("").ok()?;
        (index < self.names.len() as u64).then_some(u32::try_from(index).ok()?)
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

/// Appends `value` as an unsigned LEB128 varint: the compact form's
/// integers, and the variable-length integers of Parquet's and ClickHouse's
/// formats, which use the same encoding.
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How one field of a [`FlowView`] is written.
pub(crate) trait Put {
    fn put(&self, names: &mut Names, out: &mut Vec<u8>);
}

/// How one field of a [`FlowView`] is read: a name borrowed from the
/// run's table, every other value copied.
pub(crate) trait Field: ViewField + Sized {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self::View<'a>>;

    /// Reads the field as compact `version` wrote it.
    fn get_at<'a>(input: &mut Input<'a>, _version: u8) -> Option<Self::View<'a>> {
        Self::get(input)
    }
}

impl Put for u16 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Field for u16 {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
        input.array().map(u16::from_le_bytes)
    }
}

impl Put for u32 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Field for u32 {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
        input.array().map(u32::from_le_bytes)
    }
}

impl Put for u64 {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        put_varint(*self, out);
    }
}

impl Field for u64 {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
        input.varint("").ok()
    }
}

impl Put for bool {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Field for bool {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
        match input.array::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

/// The first byte of an IPv4 address: 4 bytes follow.
const IPV4: u8 = 4;
/// The first byte of an IPv6 address: 16 bytes follow.
const IPV6: u8 = 16;

/// Most addresses are IPv4: in 5 bytes rather than 16, the agent's
/// records are a quarter smaller, and so is every byte the spool writes and
/// reads back. Only IPv4-mapped addresses: `to_ipv4` would also take an
/// IPv4-compatible `::a.b.c.d`, which would then read back mapped.
impl Put for Ipv6Addr {
    fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
        match self.to_ipv4_mapped() {
            Some(v4) => {
                out.push(IPV4);
                out.extend_from_slice(&v4.octets());
            }
            None => {
                out.push(IPV6);
                out.extend_from_slice(&self.octets());
            }
        }
    }
}

impl Field for Ipv6Addr {
    fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
        match input.array::<1>()? {
            [IPV4] => input
                .array::<4>()
                .map(|v4| std::net::Ipv4Addr::from(v4).to_ipv6_mapped()),
            [IPV6] => input.array::<16>().map(Ipv6Addr::from),
            _ => None,
        }
    }

    fn get_at<'a>(input: &mut Input<'a>, version: u8) -> Option<Self> {
        if version < 5 {
            input.array::<16>().map(Ipv6Addr::from)
        } else {
            Self::get(input)
        }
    }
}

impl Put for &Name {
    fn put(&self, names: &mut Names, out: &mut Vec<u8>) {
        put_varint(u64::from(names.index_of(self)), out);
    }
}

impl Field for Name {
    fn get<'a>(input: &mut Input<'a>) -> Option<&'a Name> {
        let names = input.names;
        names.get(input.name_index()? as usize)
    }
}

/// The value of a field read from a compact version older than the field.
/// Only names can be added this way: an empty name says "not known", which
/// every reader of the records already handles.
pub(crate) trait Absent: Field {
    fn absent<'a>() -> Self::View<'a>;
}

impl Absent for Name {
    fn absent<'a>() -> &'a Name {
        static EMPTY: std::sync::LazyLock<Name> = std::sync::LazyLock::new(|| Name::from(""));
        &EMPTY
    }
}

/// A closed set of values (family, protocol, category...) as one byte: the
/// byte a record stores, and the code a column of them holds
/// ([`crate::columns::ColumnValues::Code`]).
pub(crate) trait Coded: Copy {
    fn code(self) -> u8;
    fn from_code(code: u8) -> Option<Self>;
    fn text(code: u8) -> Cow<'static, str>;
}

impl Coded for Family {
    /// The kernel's `AF_*` number.
    fn code(self) -> u8 {
        match self {
            Family::Ipv4 => Family::AF_INET,
            Family::Ipv6 => Family::AF_INET6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Family::from_af(code)
    }

    fn text(code: u8) -> Cow<'static, str> {
        Family::from_af(code).map_or("", Family::as_str).into()
    }
}

impl Coded for Protocol {
    fn code(self) -> u8 {
        self.0
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(Protocol(code))
    }

    fn text(code: u8) -> Cow<'static, str> {
        match Protocol(code).name() {
            Some(name) => name.into(),
            None => code.to_string().into(),
        }
    }
}

/// The closed text sets, coded by their position in `ALL`.
macro_rules! positional {
    ($($t:ty),+) => {$(
        impl Coded for $t {
            fn code(self) -> u8 {
                <$t>::ALL.iter().position(|v| *v == self).unwrap_or(0) as u8
            }

            fn from_code(code: u8) -> Option<Self> {
                <$t>::ALL.get(usize::from(code)).copied()
            }

            fn text(code: u8) -> Cow<'static, str> {
                <$t>::ALL.get(usize::from(code)).map_or("", |v| v.as_str()).into()
            }
        }
    )+};
}

positional!(Category, RemoteKind, Initiator);

/// The closed sets are stored as their code.
macro_rules! coded_fields {
    ($($t:ty),+) => {$(
        impl Put for $t {
            fn put(&self, _: &mut Names, out: &mut Vec<u8>) {
                out.push(self.code());
            }
        }

        impl Field for $t {
            fn get<'a>(input: &mut Input<'a>) -> Option<Self> {
                <$t>::from_code(input.array::<1>()?[0])
            }
        }
    )+};
}

coded_fields!(Family, Protocol, Category, RemoteKind, Initiator);

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
        other.local_provider = Name::from("aws");
        other.local_provider_id = Name::from("aws:///eu-west-1a/i-0abc");
        vec![record, other.clone(), other]
    }

    /// [`sample`] as version 2 held it: without a provider.
    /// The sample as version `version` wrote it: the fields added since
    /// empty.
    fn sample_of(version: u8) -> Vec<FlowRecord> {
        let mut records = sample();
        for record in &mut records {
            if version < 4 {
                record.local_provider_id = Name::from("");
            }
            if version < 3 {
                record.local_provider = Name::from("");
            }
        }
        records
    }

    /// Golden files of the earlier versions this one reads.
    const GOLDEN_EARLIER: [(u8, &[u8]); 3] = [
        (2, include_bytes!("../testdata/compact-v2.bin")),
        (3, include_bytes!("../testdata/compact-v3.bin")),
        (4, include_bytes!("../testdata/compact-v4.bin")),
    ];

    fn written(records: &[FlowRecord]) -> Vec<u8> {
        let mut bytes = Vec::new();
        records.iter().collect::<Rows>().write_to(&mut bytes);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<FlowRecord>, CompactError> {
        Rows::read(bytes)?
            .iter()
            .map(|view| view.map(|v| v.to_record()))
            .collect()
    }

    #[test]
    fn records_round_trip_and_share_names() {
        let records = sample();
        let rows: Rows = records.iter().collect();
        assert_eq!(rows.len(), 3);
        let in_memory: Vec<FlowRecord> = rows.iter().map(|v| v.unwrap().to_record()).collect();
        assert_eq!(in_memory, records);
        let back = read_all(&written(&records)).unwrap();
        assert_eq!(back, records);
        assert!(Arc::ptr_eq(&back[1].local_pod, &back[2].local_pod));
        // Copies of one text (records parsed from JSON) are one name.
        let copies: Rows = records
            .iter()
            .map(|r| serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap())
            .collect::<Vec<FlowRecord>>()
            .iter()
            .collect();
        assert_eq!(copies.names.table.len(), rows.names.table.len());
        let empty = Rows::read(&written(&[])).unwrap();
        assert!(empty.is_empty() && empty.iter().next().is_none());
    }

    /// Interned names are found by address alone: one allocation is one
    /// entry of the table, and a copy of a text already there (a name from
    /// outside the interner) is an entry of its own that reads back as the
    /// same text.
    #[test]
    fn interned_names_are_found_by_address_and_a_copy_is_an_entry_of_its_own() {
        let records = sample();
        let mut interned = Rows::of_interned_names();
        interned.push(&records[0].view());
        interned.push(&records[1].view());
        let names = interned.names().len();
        // The third record's names are the second's allocations.
        interned.push(&records[2].view());
        assert_eq!(interned.names().len(), names);

        // Each record parsed from JSON has allocations of its own.
        let copies: Vec<FlowRecord> = records
            .iter()
            .map(|r| serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap())
            .collect();
        for record in &copies {
            interned.push(&record.view());
        }
        let mut by_text: Rows = records.iter().collect();
        for record in &copies {
            by_text.push(&record.view());
        }
        let entries = |rows: &Rows| {
            rows.names()
                .iter()
                .filter(|n| &***n == "another pod, not interned")
                .count()
        };
        assert_eq!((entries(&interned), entries(&by_text)), (3, 1));
        let mut bytes = Vec::new();
        interned.write_to(&mut bytes);
        let back = read_all(&bytes).unwrap();
        assert_eq!(back[..3], records[..]);
        assert_eq!(back[3..], records[..]);
    }

    /// Many more names than the cache of recent ones holds, met again out
    /// of order, and a table (and a name) larger than a write's chunk: each name is
    /// found at its own index, the run reads back as its records, and the
    /// size reported is the bytes written.
    #[test]
    fn a_large_name_table_reads_back_and_its_size_is_the_bytes_written() {
        let mut pods: Vec<Name> = (0..3000)
            .map(|i| Name::from(format!("pod-{i:05}-of-a-workload-with-a-long-name").as_str()))
            .collect();
        // Longer than a write's chunk.
        pods[1500] = Name::from("x".repeat(40 << 10).as_str());
        let mut records = Vec::new();
        for i in 0..9000 {
            let mut record = sample()[i % 2].clone();
            record.local_pod = pods[i * 7 % pods.len()].clone();
            record.remote_pod = pods[i * 13 % pods.len()].clone();
            records.push(record);
        }
        let mut rows = Rows::of_interned_names();
        for record in &records {
            rows.push(&record.view());
        }
        assert!(rows.names().len() > pods.len());
        let mut bytes = Vec::new();
        let written = rows.write_into(&mut bytes).unwrap();
        assert_eq!(written, bytes.len() as u64);
        assert_eq!(read_all(&bytes).unwrap(), records);
    }

    /// Every address reads back as written: IPv4-mapped ones in 5 bytes,
    /// every other (IPv4-compatible, loopback, unspecified) in 17; a
    /// length byte of neither size is an error.
    #[test]
    fn every_kind_of_address_reads_back_as_written() {
        let mut record = sample()[0].clone();
        let mut sizes = Vec::new();
        for address in [
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::10.0.0.1",
            "::1",
            "::",
            "fe80::1",
        ] {
            record.remote_ip = address.parse().unwrap();
            let bytes = written(std::slice::from_ref(&record));
            assert_eq!(read_all(&bytes).unwrap(), [record.clone()], "{address}");
            sizes.push(bytes.len());
        }
        assert_eq!(sizes[1] - sizes[0], 0);
        assert!(sizes[2..].iter().all(|&size| size == sizes[0] + 12));

        record.remote_ip = "::ffff:10.0.0.2".parse().unwrap();
        let mut bytes = written(std::slice::from_ref(&record));
        let at = bytes
            .windows(5)
            .rposition(|w| w == [IPV4, 10, 0, 0, 2])
            .unwrap();
        bytes[at] = 5;
        assert!(read_all(&bytes).is_err());
    }

    /// The bytes of this version's form: a field added, removed or
    /// reordered changes them, and must come with a new [`VERSION`] and a
    /// reader of the files spooled before it.
    #[test]
    fn the_current_form_is_pinned() {
        let golden = include_bytes!("../testdata/compact-v5.bin");
        assert_eq!(VERSION, 5, "a new version needs its own golden file");
        assert!(
            written(&sample()) == golden,
            "the compact form changed: bump VERSION and keep reading version {VERSION}'s spool files"
        );
        assert_eq!(read_all(golden).unwrap(), sample());
    }

    /// A batch spooled by an earlier version reads with the fields it
    /// lacks absent, every other value as written, in this version's form.
    #[test]
    fn earlier_forms_are_read_and_converted() {
        for (version, golden) in GOLDEN_EARLIER {
            let rows = Rows::read_version(golden, version).unwrap();
            let records: Vec<FlowRecord> = rows.iter().map(|v| v.unwrap().to_record()).collect();
            assert_eq!(records, sample_of(version), "{version}");
            let mut current = Vec::new();
            rows.write_to(&mut current);
            assert_eq!(current, written(&sample_of(version)));
            for len in 0..golden.len() {
                assert!(
                    Rows::read_version(&golden[..len], version).is_err(),
                    "version {version} truncated to {len}"
                );
            }
            let mut trailing = golden.to_vec();
            trailing.push(0);
            assert_eq!(
                Rows::read_version(&trailing, version).unwrap_err().expected,
                "the end of the records"
            );
            for wrong in [0, 1, VERSION + 1] {
                assert!(Rows::read_version(golden, wrong).is_err(), "{wrong}");
            }
            // Read as if it were the current form, it does not parse.
            assert!(read_all(golden).is_err(), "{version}");
        }
    }

    #[test]
    fn every_truncation_and_trailing_bytes_are_errors() {
        let mut bytes = written(&sample());
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "truncated to {len}");
        }
        bytes.push(0);
        assert_eq!(
            read_all(&bytes).unwrap_err().expected,
            "the end of the records"
        );
    }

    #[cfg(feature = "arrow")]
    #[test]
    fn record_batches_hold_every_record_and_report_corruption() {
        let rows: Rows = sample().iter().collect();
        let sizes: Vec<usize> = rows
            .record_batches(2)
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(sizes, [2, 1]);
        let bytes = written(&sample());
        for len in 0..bytes.len() {
            if let Ok(rows) = Rows::read(&bytes[..len]) {
                assert!(
                    rows.record_batches(2).any(|b| b.is_err()),
                    "truncated to {len}"
                );
            }
        }
    }

    #[test]
    fn a_name_index_outside_the_table_is_an_error() {
        let mut bytes = written(&sample()[..1]);
        // The first record's first name (cluster) follows the table, the
        // record count and two fixed u32 fields.
        let table_end = decode_table_end(&bytes);
        bytes[table_end + 1 + 8] = 0x7f;
        assert!(read_all(&bytes).is_err());
    }

    fn decode_table_end(bytes: &[u8]) -> usize {
        let mut input = Input {
            bytes,
            offset: 0,
            base: 0,
            names: &[],
        };
        for _ in 0..input.varint("").unwrap() {
            let len = input.varint("").unwrap() as usize;
            input.take(len, "").unwrap();
        }
        input.offset
    }
}
