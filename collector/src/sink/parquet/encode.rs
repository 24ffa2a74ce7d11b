//! Encodes a compact run's columns into Parquet row groups, straight from
//! the stored form: each column chunk is a dictionary page of the values
//! it uses followed by data pages of RLE/bit-packed keys (text, addresses,
//! timestamps, ports), or data pages of plain values (counters, ids,
//! intervals, flags: mostly distinct or cheaper left to zstd); pages are
//! zstd-compressed, and each chunk carries its min/max statistics.
//!
//! Why not the `parquet` crate's Arrow writer: it hashes and compares
//! every row's value to build a dictionary, and compares every row's
//! value again for the statistics, although a name column arrives as
//! indexes into the run's table of names. Here a name's key is one array
//! lookup (its text is hashed only the first time a chunk meets its
//! index), and a chunk's statistics compare only its distinct values. The
//! crate still writes the page headers, the footer and the Arrow schema
//! readers restore the column types from.

use std::net::Ipv6Addr;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use tollgate_schema::columns::ColumnValues;
use tollgate_schema::Name;

use super::hybrid;

/// Rows per data page.
const PAGE_ROWS: usize = 16_384;
/// A row group ends after this many rows...
const ROW_GROUP_ROWS: usize = 1 << 20;
/// ...or once a column's dictionary holds this many bytes: the next row
/// group starts new dictionaries, so none grows without bound.
const DICTIONARY_BYTES: usize = 1 << 20;
/// zstd's own default level, which ClickHouse's Parquet output uses too
/// (level 1 made files about 4% larger for about 10% more speed).
const ZSTD_LEVEL: i32 = 3;

/// The row group being encoded: one chunk per column, pages compressed as
/// they fill.
pub struct RowGroup {
    columns: Vec<ColumnChunk>,
    rows: usize,
    compressor: Compressor,
}

impl RowGroup {
    /// An empty row group of `schema`'s columns.
    pub fn new(schema: &SchemaDescriptor) -> Result<Self> {
        Ok(Self {
            columns: schema
                .columns()
                .iter()
                .cloned()
                .map(ColumnChunk::new)
                .collect(),
            rows: 0,
            compressor: Compressor::new()?,
        })
    }

    /// Appends rows: `values` holds each column's, in schema order, and
    /// name columns index `names`.
    pub fn push(&mut self, values: &[ColumnValues<'_>], names: &[Name]) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(general(format!(
                "{} columns given for a schema of {}",
                values.len(),
                self.columns.len()
            )));
        }
        for (column, values) in self.columns.iter_mut().zip(values) {
            column.push(*values, names, &mut self.compressor)?;
        }
        self.rows += values.first().map_or(0, ColumnValues::len);
        Ok(())
    }

    /// Whether the row group should be written before more rows come.
    pub fn is_full(&self) -> bool {
        self.rows >= ROW_GROUP_ROWS
            || self.columns.iter().any(|c| {
                c.dictionary
                    .as_ref()
                    .is_some_and(|d| d.plain.len() >= DICTIONARY_BYTES)
            })
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the row group's column chunks into `group`, and starts over.
    pub fn write_to<W: std::io::Write + Send>(
        &mut self,
        group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<()> {
        for column in &mut self.columns {
            let (bytes, close) = column.finish(&mut self.compressor)?;
            group.append_column(&bytes, close)?;
        }
        self.rows = 0;
        Ok(())
    }
}

/// One column's chunk of the row group.
struct ColumnChunk {
    descr: ColumnDescPtr,
    /// `None` for columns written plain.
    dictionary: Option<Dictionary>,
    /// The current page: keys for a dictionary column.
    keys: Vec<u32>,
    /// The current page: encoded values for a plain column.
    plain: Vec<u8>,
    page_rows: usize,
    pages: Vec<CompressedPage>,
    rows: usize,
    extremes: Extremes,
}

impl ColumnChunk {
    fn new(descr: ColumnDescPtr) -> Self {
        Self {
            descr,
            dictionary: None,
            keys: Vec::with_capacity(PAGE_ROWS),
            plain: Vec::new(),
            page_rows: 0,
            pages: Vec::new(),
            rows: 0,
            extremes: Extremes::None,
        }
    }

    /// Appends a chunk's values, a page at a time.
    fn push(
        &mut self,
        mut values: ColumnValues<'_>,
        names: &[Name],
        compressor: &mut Compressor,
    ) -> Result<()> {
        while !values.is_empty() {
            let take = values.len().min(PAGE_ROWS - self.page_rows);
            self.encode(values.slice(0..take), names)?;
            self.page_rows += take;
            self.rows += take;
            if self.page_rows == PAGE_ROWS {
                self.flush_page(compressor)?;
            }
            values = values.slice(take..values.len());
        }
        Ok(())
    }

    /// Adds values to the current page.
    fn encode(&mut self, values: ColumnValues<'_>, names: &[Name]) -> Result<()> {
        match values {
            ColumnValues::UInt64(values) => {
                for &v in values {
                    self.plain.extend_from_slice(&v.to_le_bytes());
                    self.extremes.note_int(v);
                }
            }
            ColumnValues::Bool(values) => {
                for (i, &v) in values.iter().enumerate() {
                    let bit = (self.page_rows + i) % 8;
                    if bit == 0 {
                        self.plain.push(0);
                    }
                    if let Some(byte) = self.plain.last_mut() {
                        *byte |= u8::from(v) << bit;
                    }
                    self.extremes.note_bool(v);
                }
            }
            ColumnValues::Name(indexes) => {
                let dictionary = self.dictionary.get_or_insert_with(Dictionary::names);
                let Dictionary { plain, len, lookup } = dictionary;
                let Lookup::Names { by_index, by_text } = lookup else {
                    return Err(changed(&self.descr));
                };
                if by_index.len() < names.len() {
                    by_index.resize(names.len(), 0);
                }
                for &index in indexes {
                    let index = index as usize;
                    let slot = &mut by_index[index];
                    if *slot == 0 {
                        let name = &names[index];
                        let key = match by_text.get(name) {
                            Some(&key) => key,
                            None => {
                                let key = add_bytes(plain, len, name.as_bytes());
                                self.extremes.note_bytes(name.as_bytes());
                                by_text.insert(name.clone(), key);
                                key
                            }
                        };
                        *slot = key + 1;
                    }
                    self.keys.push(*slot - 1);
                }
            }
            ColumnValues::Code(codes, text_of) => {
                let dictionary = self.dictionary.get_or_insert_with(Dictionary::codes);
                let Dictionary { plain, len, lookup } = dictionary;
                let Lookup::Codes(table) = lookup else {
                    return Err(changed(&self.descr));
                };
                for &code in codes {
                    let slot = &mut table[usize::from(code)];
                    if *slot == 0 {
                        let text = text_of(code);
                        *slot = add_bytes(plain, len, text.as_bytes()) + 1;
                        self.extremes.note_bytes(text.as_bytes());
                    }
                    self.keys.push(*slot - 1);
                }
            }
            ColumnValues::Ip(ips) => {
                let dictionary = self.dictionary.get_or_insert_with(Dictionary::ips);
                let Dictionary { plain, len, lookup } = dictionary;
                let Lookup::Ips(keys) = lookup else {
                    return Err(changed(&self.descr));
                };
                let mut text = String::new();
                for &ip in ips {
                    let key = keys.key(ip, |ip| {
                        use std::fmt::Write as _;
                        text.clear();
                        let _ = write!(text, "{ip}");
                        self.extremes.note_bytes(text.as_bytes());
                        add_bytes(plain, len, text.as_bytes())
                    });
                    self.keys.push(key);
                }
            }
            ColumnValues::Timestamp(seconds) => {
                let values = seconds.iter().map(|&s| u64::from(s) * 1000);
                self.encode_ints(values)?;
            }
            ColumnValues::UInt16(values) => {
                self.encode_ints(values.iter().map(|&v| u64::from(v)))?
            }
            ColumnValues::UInt32(values) => {
                for &v in values {
                    self.plain.extend_from_slice(&v.to_le_bytes());
                    self.extremes.note_int(u64::from(v));
                }
            }
        }
        Ok(())
    }

    /// Adds integers to the current page as dictionary keys; the
    /// dictionary holds them as the column's physical type.
    fn encode_ints(&mut self, values: impl Iterator<Item = u64>) -> Result<()> {
        let int32 = self.descr.physical_type() == PhysicalType::INT32;
        let dictionary = self.dictionary.get_or_insert_with(Dictionary::ints);
        let Dictionary { plain, len, lookup } = dictionary;
        let Lookup::Ints(keys) = lookup else {
            return Err(changed(&self.descr));
        };
        for value in values {
            let key = keys.key(value, |value| {
                if int32 {
                    plain.extend_from_slice(&(value as u32).to_le_bytes());
                } else {
                    plain.extend_from_slice(&value.to_le_bytes());
                }
                self.extremes.note_int(value);
                *len += 1;
                *len - 1
            });
            self.keys.push(key);
        }
        Ok(())
    }

    /// Compresses the current page and keeps it for the chunk.
    fn flush_page(&mut self, compressor: &mut Compressor) -> Result<()> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let (encoding, buf, uncompressed) = match &self.dictionary {
            Some(dictionary) => {
                let width = hybrid::bit_width(dictionary.len.saturating_sub(1));
                let mut body = std::mem::take(&mut compressor.body);
                body.clear();
                body.push(width);
                hybrid::encode(&self.keys, width, &mut body);
                self.keys.clear();
                let buf = compressor.compress(&body);
                compressor.body = body;
                (Encoding::RLE_DICTIONARY, buf?, compressor.body.len())
            }
            None => {
                let buf = compressor.compress(&self.plain)?;
                let uncompressed = self.plain.len();
                self.plain.clear();
                (Encoding::PLAIN, buf, uncompressed)
            }
        };
        let page = Page::DataPage {
            buf,
            num_values: count(self.page_rows)?,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        self.pages.push(CompressedPage::new(page, uncompressed));
        self.page_rows = 0;
        Ok(())
    }

    /// The chunk's bytes (dictionary page, then data pages) and what the
    /// row group records of it; the column starts over empty.
    fn finish(&mut self, compressor: &mut Compressor) -> Result<(Bytes, ColumnCloseResult)> {
        self.flush_page(compressor)?;
        let mut sink = TrackedWrite::new(Vec::new());
        let mut pages = SerializedPageWriter::new(&mut sink);
        let mut uncompressed = 0;
        let mut dictionary_offset = None;
        let mut encodings = vec![Encoding::PLAIN];
        if let Some(dictionary) = self.dictionary.take() {
            let page = Page::DictionaryPage {
                buf: compressor.compress(&dictionary.plain)?,
                num_values: dictionary.len,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            let spec = pages.write_page(CompressedPage::new(page, dictionary.plain.len()))?;
            dictionary_offset = Some(offset(spec.offset)?);
            uncompressed += spec.uncompressed_size;
            encodings.push(Encoding::RLE_DICTIONARY);
        }
        let mut data_offset = None;
        for page in self.pages.drain(..) {
            let spec = pages.write_page(page)?;
            data_offset.get_or_insert(offset(spec.offset)?);
            uncompressed += spec.uncompressed_size;
        }
        pages.close()?;
        let bytes = Bytes::from(sink.into_inner()?);
        let mut metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_encodings(encodings)
            .set_total_compressed_size(offset(bytes.len() as u64)?)
            .set_total_uncompressed_size(offset(uncompressed as u64)?)
            .set_num_values(offset(self.rows as u64)?)
            .set_data_page_offset(data_offset.unwrap_or(0))
            .set_dictionary_page_offset(dictionary_offset);
        if let Some(statistics) = self.extremes.statistics(self.descr.physical_type()) {
            metadata = metadata.set_statistics(statistics);
        }
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: self.rows as u64,
            metadata: metadata.build()?,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        self.rows = 0;
        self.extremes = Extremes::None;
        Ok((bytes, close))
    }
}

/// zstd with buffers kept from page to page (a page's buffers are large
/// enough that fresh ones would be fresh pages from the kernel each time).
struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
    /// Compressed output, copied out at its final size.
    scratch: Vec<u8>,
    /// A data page's body before compression.
    body: Vec<u8>,
}

impl Compressor {
    fn new() -> Result<Self> {
        Ok(Self {
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            scratch: Vec::new(),
            body: Vec::new(),
        })
    }

    fn compress(&mut self, data: &[u8]) -> Result<Bytes> {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        self.zstd.compress_to_buffer(data, &mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch))
    }
}

/// A column chunk's dictionary: its values PLAIN-encoded in key order, and
/// how a value finds its key.
struct Dictionary {
    plain: Vec<u8>,
    len: u32,
    lookup: Lookup,
}

/// Key plus one per value (0: not in the dictionary yet).
enum Lookup {
    /// By index into the run's name table, then by text: a table may hold
    /// a text more than once (`Rows::of_interned_names`), and readers
    /// (Arrow's among them) take a dictionary page's values to be
    /// distinct.
    Names {
        by_index: Vec<u32>,
        by_text: HashMap<Name, u32>,
    },
    /// By code.
    Codes(Box<[u32; 256]>),
    /// By address.
    Ips(Keys<Ipv6Addr>),
    /// By value.
    Ints(Keys<u64>),
}

impl Dictionary {
    fn with(lookup: Lookup) -> Self {
        Self {
            plain: Vec::new(),
            len: 0,
            lookup,
        }
    }

    fn names() -> Self {
        Self::with(Lookup::Names {
            by_index: Vec::new(),
            by_text: HashMap::new(),
        })
    }

    fn codes() -> Self {
        Self::with(Lookup::Codes(Box::new([0; 256])))
    }

    fn ips() -> Self {
        Self::with(Lookup::Ips(Keys::new()))
    }

    fn ints() -> Self {
        Self::with(Lookup::Ints(Keys::new()))
    }
}

/// Keys by value, remembering the last value looked up (neighbouring rows
/// often repeat it).
struct Keys<T> {
    map: HashMap<T, u32>,
    last: Option<(T, u32)>,
}

impl<T: Copy + Eq + std::hash::Hash> Keys<T> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            last: None,
        }
    }

    /// The key of `value`, from `add` the first time it is seen.
    fn key(&mut self, value: T, add: impl FnOnce(T) -> u32) -> u32 {
        if let Some((last, key)) = self.last {
            if last == value {
                return key;
            }
        }
        let key = *self.map.entry(value).or_insert_with(|| add(value));
        self.last = Some((value, key));
        key
    }
}

/// Appends a byte-array value to a dictionary's values; returns its key.
fn add_bytes(plain: &mut Vec<u8>, len: &mut u32, value: &[u8]) -> u32 {
    plain.extend_from_slice(&(value.len() as u32).to_le_bytes());
    plain.extend_from_slice(value);
    *len += 1;
    *len - 1
}

/// A column chunk's smallest and largest value, in the column's sort order
/// (unsigned for every integer column here, byte-wise for text).
enum Extremes {
    None,
    Int(u64, u64),
    Bytes(Vec<u8>, Vec<u8>),
    Bool(bool, bool),
}

impl Extremes {
    fn note_int(&mut self, v: u64) {
        match self {
            Extremes::Int(min, max) => {
                *min = (*min).min(v);
                *max = (*max).max(v);
            }
            _ => *self = Extremes::Int(v, v),
        }
    }

    fn note_bytes(&mut self, v: &[u8]) {
        match self {
            Extremes::Bytes(min, max) => {
                if v < min.as_slice() {
                    *min = v.to_vec();
                } else if v > max.as_slice() {
                    *max = v.to_vec();
                }
            }
            _ => *self = Extremes::Bytes(v.to_vec(), v.to_vec()),
        }
    }

    fn note_bool(&mut self, v: bool) {
        match self {
            Extremes::Bool(min, max) => {
                *min &= v;
                *max |= v;
            }
            _ => *self = Extremes::Bool(v, v),
        }
    }

    /// The chunk's statistics (no nulls: every column is required). An
    /// unsigned integer is stored in its signed physical type bit for bit.
    fn statistics(&self, physical: PhysicalType) -> Option<Statistics> {
        let nulls = Some(0);
        Some(match (self, physical) {
            (Extremes::Int(min, max), PhysicalType::INT32) => Statistics::int32(
                Some(*min as u32 as i32),
                Some(*max as u32 as i32),
                None,
                nulls,
                false,
            ),
            (Extremes::Int(min, max), PhysicalType::INT64) => {
                Statistics::int64(Some(*min as i64), Some(*max as i64), None, nulls, false)
            }
            (Extremes::Bytes(min, max), PhysicalType::BYTE_ARRAY) => Statistics::byte_array(
                Some(ByteArray::from(min.clone())),
                Some(ByteArray::from(max.clone())),
                None,
                nulls,
                false,
            ),
            (Extremes::Bool(min, max), PhysicalType::BOOLEAN) => {
                Statistics::boolean(Some(*min), Some(*max), None, nulls, false)
            }
            _ => return None,
        })
    }
}

fn general(message: String) -> ParquetError {
    ParquetError::General(message)
}

fn changed(descr: &ColumnDescPtr) -> ParquetError {
    general(format!("column {} changed its kind", descr.name()))
}

fn count(rows: usize) -> Result<u32> {
    u32::try_from(rows).map_err(|_| general(format!("{rows} values in one page")))
}

fn offset(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| general(format!("offset {value} out of range")))
}
