//! A compact run read column by column, a chunk of records at a time: what
//! columnar writers (Arrow here, the collector's Parquet encoder) are built
//! from, without making a record.
//!
//! A chunk's [`Columns`] hold each field as the compact form stores it:
//! names as indexes into the run's name table ([`Rows::names`]), the closed
//! text sets as one-byte codes, everything else as its value. A writer that
//! dictionary-encodes therefore never hashes or compares a name per row.

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::ops::Range;

use crate::compact::{Coded, CompactError, Field, Input, Rows};
pub use crate::flow::Columns;
use crate::{Category, Family, Initiator, Name, Protocol, RemoteKind};

/// One column of a chunk, in its stored form.
#[derive(Debug, Clone, Copy)]
pub enum ColumnValues<'a> {
    /// UTC timestamps, in seconds.
    Timestamp(&'a [u32]),
    /// Unsigned 16-bit integers (ports).
    UInt16(&'a [u16]),
    /// Unsigned 32-bit integers.
    UInt32(&'a [u32]),
    /// Unsigned 64-bit integers (counters).
    UInt64(&'a [u64]),
    /// Flags.
    Bool(&'a [bool]),
    /// Addresses, IPv4 as IPv4-mapped; stored as text in ClickHouse's IPv6
    /// form.
    Ip(&'a [Ipv6Addr]),
    /// Indexes into the run's name table ([`Rows::names`]).
    Name(&'a [u32]),
    /// A closed set of values as one-byte codes, and the text of a code.
    Code(&'a [u8], fn(u8) -> Cow<'static, str>),
}

impl<'a> ColumnValues<'a> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Timestamp(v) | ColumnValues::UInt32(v) => v.len(),
            ColumnValues::UInt16(v) => v.len(),
            ColumnValues::UInt64(v) => v.len(),
            ColumnValues::Bool(v) => v.len(),
            ColumnValues::Ip(v) => v.len(),
            ColumnValues::Name(v) => v.len(),
            ColumnValues::Code(v, _) => v.len(),
        }
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values in `range`.
    pub fn slice(self, range: Range<usize>) -> ColumnValues<'a> {
        match self {
            ColumnValues::Timestamp(v) => ColumnValues::Timestamp(&v[range]),
            ColumnValues::UInt16(v) => ColumnValues::UInt16(&v[range]),
            ColumnValues::UInt32(v) => ColumnValues::UInt32(&v[range]),
            ColumnValues::UInt64(v) => ColumnValues::UInt64(&v[range]),
            ColumnValues::Bool(v) => ColumnValues::Bool(&v[range]),
            ColumnValues::Ip(v) => ColumnValues::Ip(&v[range]),
            ColumnValues::Name(v) => ColumnValues::Name(&v[range]),
            ColumnValues::Code(v, text) => ColumnValues::Code(&v[range], text),
        }
    }
}

/// How a field is read into a column and shown as [`ColumnValues`]; the
/// ClickHouse type tells apart fields that share a Rust type (a `u32` is a
/// timestamp or a count).
pub(crate) trait ColumnField {
    type Item;
    fn get_item(input: &mut Input<'_>) -> Option<Self::Item>;
    fn values<'a>(items: &'a [Self::Item], clickhouse: &str) -> ColumnValues<'a>;
}

impl ColumnField for Name {
    type Item = u32;

    fn get_item(input: &mut Input<'_>) -> Option<u32> {
        input.name_index()
    }

    fn values<'a>(items: &'a [u32], _: &str) -> ColumnValues<'a> {
        ColumnValues::Name(items)
    }
}

impl ColumnField for u32 {
    type Item = u32;

    fn get_item(input: &mut Input<'_>) -> Option<u32> {
        <u32 as Field>::get(input)
    }

    fn values<'a>(items: &'a [u32], clickhouse: &str) -> ColumnValues<'a> {
        if clickhouse.starts_with("DateTime") {
            ColumnValues::Timestamp(items)
        } else {
            ColumnValues::UInt32(items)
        }
    }
}

/// Fields read as their own values.
macro_rules! value_columns {
    ($($t:ty => $variant:ident),+) => {$(
        impl ColumnField for $t {
            type Item = $t;

            fn get_item(input: &mut Input<'_>) -> Option<$t> {
                <$t as Field>::get(input)
            }

            fn values<'a>(items: &'a [$t], _: &str) -> ColumnValues<'a> {
                ColumnValues::$variant(items)
            }
        }
    )+};
}

value_columns!(u16 => UInt16, u64 => UInt64, bool => Bool, Ipv6Addr => Ip);

/// The closed sets' columns hold their codes.
macro_rules! coded_columns {
    ($($t:ty),+) => {$(
        impl ColumnField for $t {
            type Item = u8;

            fn get_item(input: &mut Input<'_>) -> Option<u8> {
                <$t as Field>::get(input).map(Coded::code)
            }

            fn values<'a>(items: &'a [u8], _: &str) -> ColumnValues<'a> {
                ColumnValues::Code(items, <$t as Coded>::text)
            }
        }
    )+};
}

coded_columns!(Family, Protocol, Category, RemoteKind, Initiator);

/// The chunks of a [`Rows`], in order (see [`Rows::chunks`]).
pub struct Chunks<'a> {
    input: Input<'a>,
    remaining: usize,
    chunk_rows: usize,
    columns: Columns,
}

impl Rows {
    /// The records, column by column, at most `chunk_rows` at a time.
    pub fn chunks(&self, chunk_rows: usize) -> Chunks<'_> {
        Chunks {
            input: self.input(),
            remaining: self.len(),
            chunk_rows: chunk_rows.max(1),
            columns: Columns::default(),
        }
    }
}

impl Chunks<'_> {
    /// The next chunk; a record that cannot be decoded (or bytes left after
    /// the last one) ends the chunks with an error.
    pub fn next_chunk(&mut self) -> Option<Result<&Columns, CompactError>> {
        if self.remaining == 0 {
            return (!self.input.at_end()).then(|| {
                let error = self.input.error("the end of the records");
                self.input.skip_to_end();
                Err(error)
            });
        }
        self.columns.clear();
        for _ in 0..self.remaining.min(self.chunk_rows) {
            if self.columns.push(&mut self.input).is_none() {
                let error = self.input.error("a record");
                self.remaining = 0;
                self.input.skip_to_end();
                return Some(Err(error));
            }
            self.remaining -= 1;
        }
        Some(Ok(&self.columns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowRecord;

    #[test]
    fn chunks_hold_every_field_in_its_stored_form() {
        let record: FlowRecord = serde_json::from_str(crate::flow::tests::SAMPLE).unwrap();
        let mut other = record.clone();
        other.protocol = Protocol(47);
        other.local_pod = Name::from("q");
        let rows: Rows = [&record, &other, &record].into_iter().collect();
        let mut chunks = rows.chunks(2);
        let mut lens = Vec::new();
        let mut pods = Vec::new();
        let mut protocols = Vec::new();
        while let Some(chunk) = chunks.next_chunk() {
            let chunk = chunk.unwrap();
            lens.push(chunk.len());
            let values = chunk.values();
            for (column, values) in crate::COLUMNS.iter().zip(values) {
                assert_eq!(values.len(), chunk.len(), "{}", column.name);
                match (column.name, values) {
                    ("local_pod", ColumnValues::Name(keys)) => {
                        pods.extend(keys.iter().map(|&k| rows.names()[k as usize].to_string()))
                    }
                    ("protocol", ColumnValues::Code(codes, text)) => {
                        protocols.extend(codes.iter().map(|&c| text(c).into_owned()))
                    }
                    ("observed_at", v) => assert!(matches!(v, ColumnValues::Timestamp(_))),
                    ("conntrack_id", v) => assert!(matches!(v, ColumnValues::UInt32(_))),
                    _ => {}
                }
            }
        }
        assert_eq!(lens, [2, 1]);
        assert_eq!(pods, ["p", "q", "p"]);
        assert_eq!(protocols, ["tcp", "47", "tcp"]);
    }

    #[test]
    fn a_truncated_run_ends_its_chunks_with_an_error() {
        let record: FlowRecord = serde_json::from_str(crate::flow::tests::SAMPLE).unwrap();
        let mut bytes = Vec::new();
        [&record, &record]
            .into_iter()
            .collect::<Rows>()
            .write_to(&mut bytes);
        for len in 0..bytes.len() {
            if let Ok(rows) = Rows::read(&bytes[..len]) {
                let mut chunks = rows.chunks(1);
                let mut failed = false;
                while let Some(chunk) = chunks.next_chunk() {
                    failed |= chunk.is_err();
                }
                assert!(failed, "truncated to {len}");
            }
        }
    }

    #[test]
    fn codes_name_their_values() {
        for category in Category::ALL {
            assert_eq!(Category::text(category.code()), category.as_str());
        }
        assert_eq!(Family::text(Family::Ipv6.code()), "ipv6");
        assert_eq!(Protocol::text(6), "tcp");
    }
}
