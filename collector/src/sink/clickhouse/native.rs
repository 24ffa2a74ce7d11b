//! Writes a batch as blocks of ClickHouse's Native format, straight from
//! its columns: a name column goes as a `LowCardinality` dictionary of the
//! names it holds and one small index per row, as the server stores it,
//! instead of every row's text.
//!
//! The layout is the one the server itself writes for `FORMAT Native` over
//! HTTP: per block the column and row counts, then per column its name,
//! its type and its values. A `LowCardinality(String)` column's values are
//! the keys' serialization version (1), the index type with the flags
//! "additional keys" and "update the dictionary", the dictionary (the
//! empty string first, as the server's default), the row count and the
//! indexes.

use std::fmt::Write as _;

use tollgate_schema::columns::ColumnValues;
use tollgate_schema::compact::{put_varint, CompactError, Rows};
use tollgate_schema::{Name, COLUMNS};

/// Rows per block: the server squashes a batch's blocks into one
/// (`min_insert_block_size_rows`), so this only bounds the encoder's
/// memory (a block of 4,096 rows is about 700 KiB of columns and 500 KiB
/// encoded). A block's dictionary then holds at most 4,097 names, so its
/// indexes fit 16 bits.
const BLOCK_ROWS: usize = 4_096;
const _: () = assert!(BLOCK_ROWS < u16::MAX as usize);

/// `LowCardinality` keys written with the dictionary they index.
const SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS: u64 = 1;
/// The dictionary comes with the block's keys, and replaces any earlier.
const ADDITIONAL_KEYS_AND_NEW_DICTIONARY: u64 = (1 << 9) | (1 << 10);

/// `INSERT INTO table (every column of the schema crate) FORMAT Native`:
/// the columns named, so that a column the table lacks is refused by name
/// and the ones tollgate does not write (the batch's hash) take their
/// defaults.
pub fn insert_statement(table: &str) -> String {
    let mut sql = format!("INSERT INTO {table} (");
    for (i, column) in COLUMNS.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{separator}{}", column.name);
    }
    sql.push_str(") FORMAT Native");
    sql
}

/// The Native blocks of a batch, one at a time into a reused buffer.
pub struct NativeBlocks<'a> {
    chunks: tollgate_schema::columns::Chunks<'a>,
    names: &'a [Name],
    dictionary: Dictionary,
}

impl<'a> NativeBlocks<'a> {
    /// The blocks of `rows`.
    pub fn new(rows: &'a Rows) -> Self {
        Self {
            chunks: rows.chunks(BLOCK_ROWS),
            names: rows.names(),
            dictionary: Dictionary::default(),
        }
    }

    /// Writes the next block into `out` (cleared first); `None` after the
    /// last. A record that cannot be decoded ends the blocks with an error.
    pub fn next_block(&mut self, out: &mut Vec<u8>) -> Option<Result<(), CompactError>> {
        let Self {
            chunks,
            names,
            dictionary,
        } = self;
        let columns = match chunks.next_chunk()? {
            Ok(columns) => columns,
            Err(error) => return Some(Err(error)),
        };
        out.clear();
        put_varint(COLUMNS.len() as u64, out);
        put_varint(columns.len() as u64, out);
        for (column, values) in COLUMNS.iter().zip(columns.values()) {
            put_string(column.name.as_bytes(), out);
            put_string(column.clickhouse_type.as_bytes(), out);
            put_values(values, names, dictionary, out);
        }
        Some(Ok(()))
    }
}

/// One column's values, a name column's keys looked up in `names`.
fn put_values(
    values: ColumnValues<'_>,
    names: &[Name],
    dictionary: &mut Dictionary,
    out: &mut Vec<u8>,
) {
    match values {
        ColumnValues::Timestamp(values) | ColumnValues::UInt32(values) => {
            out.reserve(values.len() * 4);
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        ColumnValues::UInt16(values) => {
            out.reserve(values.len() * 2);
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        ColumnValues::UInt64(values) => {
            out.reserve(values.len() * 8);
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        ColumnValues::Bool(values) => out.extend(values.iter().map(|&v| u8::from(v))),
        ColumnValues::Ip(values) => {
            out.reserve(values.len() * 16);
            for ip in values {
                out.extend_from_slice(&ip.octets());
            }
        }
        ColumnValues::Name(keys) => {
            dictionary.put(
                keys.iter().map(|&k| k as usize),
                keys.len(),
                names.len(),
                |k| names[k].as_bytes().into(),
                out,
            );
        }
        ColumnValues::Code(codes, text) => dictionary.put(
            codes.iter().map(|&c| usize::from(c)),
            codes.len(),
            256,
            |c| match text(c as u8) {
                std::borrow::Cow::Borrowed(text) => text.as_bytes().into(),
                std::borrow::Cow::Owned(text) => text.into_bytes().into(),
            },
            out,
        ),
    }
}

/// One column's dictionary, rebuilt per column and block: which of the
/// batch's keys it holds, and where.
#[derive(Default)]
struct Dictionary {
    /// Per key of the batch, its index in this dictionary plus one (0:
    /// not in it yet).
    slots: Vec<u32>,
    /// The keys whose slot is set, to clear them for the next column.
    seen: Vec<usize>,
    /// The keys in dictionary order, after the empty string at index 0.
    keys: Vec<usize>,
    indexes: Vec<u32>,
}

impl Dictionary {
    /// Writes a `LowCardinality(String)` column of `len` rows whose keys
    /// (below `key_count`) are `keys`, each key's text given by `text`.
    fn put<'t>(
        &mut self,
        keys: impl Iterator<Item = usize>,
        len: usize,
        key_count: usize,
        text: impl Fn(usize) -> std::borrow::Cow<'t, [u8]>,
        out: &mut Vec<u8>,
    ) {
        for key in self.seen.drain(..) {
            self.slots[key] = 0;
        }
        if self.slots.len() < key_count {
            self.slots.resize(key_count, 0);
        }
        self.keys.clear();
        self.indexes.clear();
        self.indexes.reserve(len);
        for key in keys {
            let slot = &mut self.slots[key];
            if *slot == 0 {
                self.seen.push(key);
                // The empty string is index 0 already.
                *slot = if text(key).is_empty() {
                    1
                } else {
                    self.keys.push(key);
                    self.keys.len() as u32 + 1
                };
            }
            self.indexes.push(*slot - 1);
        }
        let size = self.keys.len() + 1;
        let narrow = size <= 0x100;
        // UInt8 or UInt16 indexes.
        let index_type: u64 = if narrow { 0 } else { 1 };
        out.extend_from_slice(&SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS.to_le_bytes());
        out.extend_from_slice(&(index_type | ADDITIONAL_KEYS_AND_NEW_DICTIONARY).to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        put_string(b"", out);
        for &key in &self.keys {
            put_string(&text(key), out);
        }
        out.extend_from_slice(&(len as u64).to_le_bytes());
        if narrow {
            out.extend(self.indexes.iter().map(|&i| i as u8));
        } else {
            out.reserve(self.indexes.len() * 2);
            for &i in &self.indexes {
                out.extend_from_slice(&(i as u16).to_le_bytes());
            }
        }
    }
}

fn put_string(text: &[u8], out: &mut Vec<u8>) {
    put_varint(text.len() as u64, out);
    out.extend_from_slice(text);
}
