//! Reading the providers' billing files: one reader per provider and
//! format, each handing on the network line items of one file, in
//! tollgate's terms, as it streams through the file (memory stays flat in
//! the bill's size).
//!
//! | file | reader |
//! |---|---|
//! | AWS Cost and Usage Report, legacy CSV (`.csv` or `.csv.gz`) | [`aws_csv`] |
//! | AWS CUR 2.0 (Data Exports), Parquet | [`aws_parquet`] |
//! | GCP detailed billing export, JSON lines or CSV | [`gcp`] |
//! | Azure cost details, CSV | [`azure`] |
//!
//! [`detect`] tells the format from the file's own header; [`read`] runs
//! its reader.

pub mod aws;
pub mod aws_csv;
pub mod aws_parquet;
pub mod azure;
pub mod gcp;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::export::Month;

/// What a network line item bills, in tollgate's terms (see each reader's
/// table of usage types, SKUs or meters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Billed {
    /// Between zones of one region, or to a public address in the region
    /// (AWS bills both as regional transfer).
    CrossZone,
    /// To or from another region.
    CrossRegion,
    /// To or from the internet.
    Internet,
    /// Bytes a NAT gateway processed.
    NatGateway,
    /// Network transfer or processing no node's conntrack table sees: a
    /// CDN's edge transfer, a load balancer's or a private endpoint's
    /// processing, transfer to the provider's own services. Its cost is
    /// shown, and never allocated.
    Unmetered,
}

impl Billed {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Billed::CrossZone => "cross_zone",
            Billed::CrossRegion => "cross_region",
            Billed::Internet => "internet",
            Billed::NatGateway => "nat_gateway",
            Billed::Unmetered => "not_metered",
        }
    }
}

/// Which way the billed bytes went, seen from the billed resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Sent by the resource.
    Out,
    /// Received by it.
    In,
}

impl Direction {
    /// Its name in reports, as metering names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// One network line item of a bill, as a reader hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem<'a> {
    /// Its line in the file (1 is the first line after a CSV header; the
    /// row number in a Parquet file, from 1).
    pub line: u64,
    /// The billed resource as the bill names it: an EC2 instance id
    /// (`i-0abc...`) or NAT gateway id on AWS, an instance's name on GCP, a
    /// resource id on Azure.
    pub resource: &'a str,
    /// The provider's own name for the usage (AWS usage type and
    /// operation, GCP SKU description, Azure meter name).
    pub usage: &'a str,
    /// What it bills.
    pub billed: Billed,
    /// Which way.
    pub direction: Direction,
    /// The UTC day its usage began.
    pub day: NaiveDate,
    /// The usage in bytes, converted exactly from the bill's unit
    /// (gigabytes of 2^30 bytes on every provider's network lines), half
    /// a byte rounded up.
    pub bytes: u128,
    /// The cost in billionths of the currency, exactly as the bill states
    /// it (more than 9 decimals rounded half up); negative for credits.
    pub cost_nanos: i128,
    /// ISO currency code.
    pub currency: &'a str,
    /// The account the usage belongs to (AWS usage account, GCP project,
    /// Azure subscription).
    pub account: &'a str,
}

/// What a reader found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Line items read.
    pub lines: u64,
    /// Of those, network line items handed on.
    pub network_lines: u64,
}

/// A bill that cannot be used: the file, the line (0: the file as a whole,
/// e.g. its header) and the column concerned. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: column {column}: {message}", file.display(), line_suffix(*line))]
pub struct BillError {
    /// The bill file.
    pub file: PathBuf,
    /// Its line, or 0.
    pub line: u64,
    /// The column (CSV header name, Parquet column, JSON field path).
    pub column: String,
    /// What is wrong.
    pub message: String,
}

fn line_suffix(line: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

impl BillError {
    /// An error about `column` at `line` of `file`.
    pub fn new(file: &Path, line: u64, column: &str, message: impl ToString) -> Self {
        BillError {
            file: file.to_owned(),
            line,
            column: column.to_owned(),
            message: message.to_string(),
        }
    }
}

/// What every reader checks of each network line item, the same way:
/// the month and the currency.
pub struct Expect<'a> {
    /// The file, for errors.
    pub file: &'a Path,
    /// The month reconciled: a line item of another month is an error.
    pub month: Month,
    /// The currency of the first line item of the run; a line item in
    /// another is an error.
    pub currency: &'a mut Option<String>,
}

impl Expect<'_> {
    /// `day` (from `column`) lies in the month and `currency` (from
    /// `currency_column`) is the run's.
    pub fn check(
        &mut self,
        line: u64,
        (day, column): (NaiveDate, &str),
        (currency, currency_column): (&str, &str),
    ) -> Result<(), BillError> {
        if day < self.month.first_day() || day >= self.month.end_day() {
            return Err(BillError::new(
                self.file,
                line,
                column,
                format!(
                    "{day} is not in {}: this is a bill of another month",
                    self.month
                ),
            ));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BillError::new(
                self.file,
                line,
                currency_column,
                format!("{currency:?} is not an ISO currency code like USD"),
            ));
        }
        match self.currency {
            Some(expected) if expected != currency => Err(BillError::new(
                self.file,
                line,
                currency_column,
                format!("currency {currency:?}, but earlier line items are in {expected:?}: one currency per reconciliation"),
            )),
            Some(_) => Ok(()),
            None => {
                *self.currency = Some(currency.to_owned());
                Ok(())
            }
        }
    }
}

/// An exact decimal, as bills write amounts: `digits / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// The digits, sign included.
    pub digits: i128,
    /// Decimals after the point.
    pub scale: u32,
}

impl Decimal {
    /// `12`, `-0.5`, `1.25E-4`, `3e2`: a decimal with at most 30 significant
    /// digits; `None` for anything else.
    pub fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (negative, mantissa) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (units, decimals) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if units.is_empty() && decimals.is_empty()
            || !units
                .bytes()
                .chain(decimals.bytes())
                .all(|b| b.is_ascii_digit())
            || units.len() + decimals.len() > 30
        {
            return None;
        }
        let mut digits: i128 = 0;
        for b in units.bytes().chain(decimals.bytes()) {
            digits = digits * 10 + i128::from(b - b'0');
        }
        let mut scale = i32::try_from(decimals.len()).ok()? - exponent;
        while scale < 0 {
            digits = digits.checked_mul(10)?;
            scale += 1;
        }
        Some(Decimal {
            digits: if negative { -digits } else { digits },
            scale: u32::try_from(scale).ok()?,
        })
    }

    /// `self x numerator / denominator`, rounded half away from zero to an
    /// integer; `None` on overflow.
    pub fn times(self, numerator: i128, denominator: i128) -> Option<i128> {
        let denominator = denominator.checked_mul(10i128.checked_pow(self.scale)?)?;
        let product = self.digits.checked_mul(numerator)?;
        let (quotient, remainder) = (product / denominator, product % denominator);
        Some(if remainder.abs() * 2 >= denominator {
            quotient + product.signum()
        } else {
            quotient
        })
    }

    /// This many gigabytes (2^30 bytes) in bytes; `None` if negative or
    /// too large.
    pub fn gib_to_bytes(self) -> Option<u128> {
        u128::try_from(self.times(1 << 30, 1)?).ok()
    }

    /// This amount of money in billionths.
    pub fn nanos(self) -> Option<i128> {
        self.times(1_000_000_000, 1)
    }
}

/// The providers' file formats [`read`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// AWS CUR, legacy CSV.
    AwsCsv,
    /// AWS CUR 2.0, Parquet.
    AwsParquet,
    /// GCP billing export, JSON lines.
    GcpJson,
    /// GCP billing export, CSV.
    GcpCsv,
    /// Azure cost details, CSV.
    AzureCsv,
}

/// Read `file`, in the provider's `format` ([`detect`] finds it), handing
/// each network line item to `on_item`.
pub fn read(
    file: &Path,
    format: Format,
    month: Month,
    currency: &mut Option<String>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let expect = Expect {
        file,
        month,
        currency,
    };
    match format {
        Format::AwsCsv => aws_csv::read(file, expect, on_item),
        Format::AwsParquet => aws_parquet::read(file, expect, on_item),
        Format::GcpJson => gcp::read_json(file, expect, on_item),
        Format::GcpCsv => gcp::read_csv(file, expect, on_item),
        Format::AzureCsv => azure::read(file, expect, on_item),
    }
}

/// Opens `file` for reading, decompressing it if it is gzip (`.gz`).
pub fn open_text(file: &Path) -> Result<Box<dyn BufRead>, BillError> {
    let opened = File::open(file).map_err(|e| BillError::new(file, 0, "-", e))?;
    let reader: Box<dyn Read> = if file.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(opened))
    } else {
        Box::new(opened)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

/// Reads the next record of the CSV `file` into `record`, counting its
/// `line`; `false` at the end of the file.
pub fn next_record<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::StringRecord,
    file: &Path,
    line: &mut u64,
) -> Result<bool, BillError> {
    match reader.read_record(record) {
        Ok(true) => {
            *line += 1;
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => Err(BillError::new(file, *line + 1, "-", e)),
    }
}

/// The format of `file`, from its first bytes (Parquet's magic number) or
/// its first line (a CSV header, or a JSON object).
pub fn detect(file: &Path) -> Result<Format, BillError> {
    let mut magic = [0u8; 4];
    let mut opened = File::open(file).map_err(|e| BillError::new(file, 0, "-", e))?;
    if opened.read_exact(&mut magic).is_ok() && &magic == b"PAR1" {
        return Ok(Format::AwsParquet);
    }
    let mut first = String::new();
    open_text(file)?
        .read_line(&mut first)
        .map_err(|e| BillError::new(file, 0, "-", e))?;
    // Exports differ in the case of their column names.
    let first = first.trim_start_matches('\u{feff}').to_ascii_lowercase();
    let has = |column: &str| first.contains(column);
    if first.trim_start().starts_with('{') {
        Ok(Format::GcpJson)
    } else if has("lineitem/usagetype") {
        Ok(Format::AwsCsv)
    } else if has("sku.description") || has("sku_description") {
        Ok(Format::GcpCsv)
    } else if has("metercategory") {
        Ok(Format::AzureCsv)
    } else {
        Err(BillError::new(
            file,
            1,
            "-",
            "not a bill tollgate reads: expected an AWS CUR (lineItem/UsageType), a GCP billing \
             export (sku.description, or JSON lines) or Azure cost details (MeterCategory)",
        ))
    }
}

/// Reads `file` as `tollgate reconcile` does, for October 2026: its format,
/// summary and each line item as `describe` writes it, or the error's
/// message (the readers' tests).
#[cfg(test)]
pub(crate) fn read_described(
    file: &Path,
    describe: impl Fn(&LineItem<'_>) -> String,
) -> Result<(Format, FileSummary, Vec<String>), String> {
    let mut currency = None;
    let mut items = Vec::new();
    #[allow(clippy::unwrap_used)]
    let month = "2026-10".parse().unwrap();
    let format = detect(file).map_err(|e| e.to_string())?;
    let summary = read(file, format, month, &mut currency, &mut |item| {
        items.push(describe(&item));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((format, summary, items))
}

/// A line item in one line, its resource as given (the readers' tests):
/// line, resource, usage, billed category and direction, day, bytes,
/// cost and currency.
#[cfg(test)]
pub(crate) fn describe(item: &LineItem<'_>, resource: &str) -> String {
    format!(
        "{} {resource} | {} | {} {} {} {} {} {}",
        item.line,
        item.usage,
        item.billed.as_str(),
        item.direction.as_str(),
        item.day,
        item.bytes,
        item.cost_nanos,
        item.currency,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    #[test]
    fn a_line_item_of_another_month_or_currency_or_none_is_refused() {
        let file = Path::new("bill.csv");
        let mut currency = None;
        let mut expect = Expect {
            file,
            month: "2026-10".parse().unwrap(),
            currency: &mut currency,
        };
        let day = |d: &str| (NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap(), "date");
        assert!(expect.check(1, day("2026-10-01"), ("USD", "cur")).is_ok());
        assert!(expect.check(2, day("2026-10-31"), ("USD", "cur")).is_ok());
        for (line, date, code, message) in [
            (
                3,
                "2026-11-01",
                "USD",
                "bill.csv:3: column date: 2026-11-01 is not in 2026-10",
            ),
            (
                4,
                "2026-09-30",
                "USD",
                "bill.csv:4: column date: 2026-09-30 is not in 2026-10",
            ),
            (
                5,
                "2026-10-02",
                "EUR",
                "bill.csv:5: column cur: currency \"EUR\", but",
            ),
            (
                6,
                "2026-10-02",
                "",
                "bill.csv:6: column cur: \"\" is not an ISO currency code",
            ),
            (
                7,
                "2026-10-02",
                "usd",
                "bill.csv:7: column cur: \"usd\" is not an ISO",
            ),
        ] {
            let error = expect.check(line, day(date), (code, "cur")).unwrap_err();
            assert!(error.to_string().starts_with(message), "{error}");
        }
    }

    #[test]
    fn decimals_are_exact_and_round_half_away_from_zero() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("1").gib_to_bytes(), Some(1 << 30));
        assert_eq!(d("0.5").gib_to_bytes(), Some(1 << 29));
        assert_eq!(d("1E-9").gib_to_bytes(), Some(1));
        assert_eq!(d("4.656612873077393E-10").gib_to_bytes(), Some(1));
        assert_eq!(d("0.0100000000").nanos(), Some(10_000_000));
        assert_eq!(d("-0.0000000015").nanos(), Some(-2));
        assert_eq!(d("3e2").nanos(), Some(300_000_000_000));
        assert_eq!(d("-1").gib_to_bytes(), None);
        for bad in ["", ".", "1.2.3", "abc", "1e", "--1", "0x10"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }
}
