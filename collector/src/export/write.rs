//! Writes an export's lines as CSV, JSON or Parquet, with the documented
//! columns: `period`, the grouping's labels, `category`, `direction`,
//! `bytes`, `gib`, `cost`, `currency`, `account`, `pricing`.
//!
//! A file is written under a temporary name and renamed into place, so a
//! failed export never leaves a truncated report where the last good one
//! was.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{fixed_point, micro_gib, Grouping, Line, Month};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, a header line first (RFC 4180 quoting).
    Csv,
    /// One JSON array of objects; `bytes` an integer, `gib` and `cost`
    /// decimal numbers, `cost` and `currency` null where unpriced.
    Json,
    /// A Parquet file; `gib` Decimal(38, 6), `cost` Decimal(38, 2).
    Parquet,
}

/// Everything a writer needs.
pub struct Report<'a> {
    /// The month.
    pub month: Month,
    /// What a line stands for.
    pub grouping: Grouping,
    /// The lines.
    pub lines: &'a [Line],
}

impl Report<'_> {
    fn columns(&self) -> Vec<&'static str> {
        let mut columns = vec!["period"];
        columns.extend_from_slice(self.grouping.label_columns());
        columns.extend_from_slice(&[
            "category",
            "direction",
            "bytes",
            "gib",
            "cost",
            "currency",
            "account",
            "pricing",
        ]);
        columns
    }
}

/// Writes the report to `out` (`-`: standard output, CSV and JSON only).
pub fn write(report: &Report<'_>, format: Format, out: &Path) -> std::io::Result<()> {
    if out == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        return match format {
            Format::Csv => write_csv(report, &mut stdout),
            Format::Json => write_json(report, &mut stdout),
            Format::Parquet => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "Parquet is not written to standard output: give a file with --out",
            )),
        };
    }
    write_atomically(out, |file| match format {
        Format::Csv => write_csv(report, file),
        Format::Json => write_json(report, file),
        Format::Parquet => write_parquet(report, file),
    })
}

/// Writes `out` through `body` under a temporary name, synced, then
/// renamed into place: a failure leaves the previous file, never a part.
pub fn write_atomically(
    out: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = out.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "--out names no file")
    })?;
    let tmp = out.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        body(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn cost_text(line: &Line) -> (String, &str) {
    match &line.cost {
        Some((cents, currency)) => (fixed_point(*cents, 2), currency),
        None => (String::new(), ""),
    }
}

fn write_csv(report: &Report<'_>, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", report.columns().join(","))?;
    let period = report.month.to_string();
    for line in report.lines {
        let (cost, currency) = cost_text(line);
        let mut fields = vec![period.as_str()];
        fields.extend(line.labels.iter().map(String::as_str));
        let (bytes, gib) = (
            line.bytes.to_string(),
            fixed_point(micro_gib(line.bytes), 6),
        );
        fields.extend([
            line.category.as_str(),
            line.direction.as_str(),
            &bytes,
            &gib,
            &cost,
            currency,
            &line.account,
            line.pricing.as_str(),
        ]);
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        writeln!(out, "{}", quoted.join(","))?;
    }
    Ok(())
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its
/// quotes doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn write_json(report: &Report<'_>, out: &mut impl Write) -> std::io::Result<()> {
    let columns = report.columns();
    let period = report.month.to_string();
    writeln!(out, "[")?;
    for (i, line) in report.lines.iter().enumerate() {
        let mut object = serde_json::Map::new();
        let mut texts = std::iter::once(&period)
            .chain(&line.labels)
            .chain([&line.category, &line.direction]);
        for column in &columns[..columns.len() - 6] {
            let text = texts.next().map(String::as_str).unwrap_or_default();
            object.insert((*column).to_owned(), text.into());
        }
        // Numbers exactly as the CSV has them: the decimal text is a valid
        // JSON number, written as is rather than through a float.
        let (cost, currency) = cost_text(line);
        let mut text = serde_json::Value::Object(object).to_string();
        text.pop();
        let cost = if cost.is_empty() {
            "null".to_owned()
        } else {
            cost
        };
        let currency = if currency.is_empty() {
            "null".to_owned()
        } else {
            serde_json::Value::from(currency).to_string()
        };
        let separator = if i + 1 == report.lines.len() { "" } else { "," };
        writeln!(
            out,
            "{text},\"bytes\":{},\"gib\":{},\"cost\":{cost},\"currency\":{currency},\"account\":{},\"pricing\":\"{}\"}}{separator}",
            line.bytes,
            fixed_point(micro_gib(line.bytes), 6),
            serde_json::Value::from(line.account.as_str()),
            line.pricing.as_str(),
        )?;
    }
    writeln!(out, "]")
}

fn write_parquet(report: &Report<'_>, out: &mut (impl Write + Send)) -> std::io::Result<()> {
    let columns = report.columns();
    let text_columns = &columns[..columns.len() - 6];
    let mut fields: Vec<Field> = text_columns
        .iter()
        .map(|c| Field::new(*c, DataType::Utf8, false))
        .collect();
    fields.extend([
        Field::new("bytes", DataType::UInt64, false),
        Field::new("gib", DataType::Decimal128(38, 6), false),
        Field::new("cost", DataType::Decimal128(38, 2), true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("account", DataType::Utf8, false),
        Field::new("pricing", DataType::Utf8, false),
    ]);
    let period = report.month.to_string();
    let mut arrays: Vec<ArrayRef> = (0..text_columns.len())
        .map(|i| {
            let values = report.lines.iter().map(|line| match i {
                0 => period.as_str(),
                i if i <= line.labels.len() => line.labels[i - 1].as_str(),
                i if i == line.labels.len() + 1 => line.category.as_str(),
                _ => line.direction.as_str(),
            });
            Arc::new(StringArray::from_iter_values(values)) as ArrayRef
        })
        .collect();
    let decimal = |values: Vec<Option<i128>>, scale: i8| -> std::io::Result<ArrayRef> {
        Ok(Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(38, scale)
                .map_err(std::io::Error::other)?,
        ))
    };
    let lines = report.lines;
    arrays.push(Arc::new(UInt64Array::from_iter_values(
        lines.iter().map(|l| l.bytes),
    )));
    arrays.push(decimal(
        lines
            .iter()
            .map(|l| i128::try_from(micro_gib(l.bytes)).ok())
            .collect(),
        6,
    )?);
    arrays.push(decimal(
        lines
            .iter()
            .map(|l| {
                l.cost
                    .as_ref()
                    .and_then(|(cents, _)| i128::try_from(*cents).ok())
            })
            .collect(),
        2,
    )?);
    arrays.push(Arc::new(StringArray::from(
        lines
            .iter()
            .map(|l| l.cost.as_ref().map(|(_, currency)| currency.as_str()))
            .collect::<Vec<_>>(),
    )));
    arrays.push(Arc::new(StringArray::from_iter_values(
        lines.iter().map(|l| l.account.as_str()),
    )));
    arrays.push(Arc::new(StringArray::from_iter_values(
        lines.iter().map(|l| l.pricing.as_str()),
    )));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(std::io::Error::other)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by("tollgate export".to_owned())
        .build();
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(properties))
        .map_err(std::io::Error::other)?;
    writer.write(&batch).map_err(std::io::Error::other)?;
    writer.close().map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;
    use crate::export::Pricing;

    fn report_lines() -> Vec<Line> {
        vec![
            Line {
                labels: vec!["c1".into(), "web, \"east\"".into()],
                category: "cross_zone".into(),
                direction: "out".into(),
                bytes: 3 << 30,
                cost: Some((3, "USD".into())),
                account: "c1".into(),
                pricing: Pricing::Flat,
            },
            Line {
                labels: vec!["c1".into(), "web".into()],
                category: "unknown".into(),
                direction: "in".into(),
                bytes: 7,
                cost: None,
                account: "c1".into(),
                pricing: Pricing::Unpriced,
            },
        ]
    }

    /// What `writer` makes of the two lines, for October 2026, by team.
    fn written(writer: fn(&Report<'_>, &mut Vec<u8>) -> std::io::Result<()>) -> Vec<u8> {
        let lines = report_lines();
        let report = Report {
            month: "2026-10".parse().unwrap(),
            grouping: Grouping::Team,
            lines: &lines,
        };
        let mut out = Vec::new();
        writer(&report, &mut out).unwrap();
        out
    }

    #[test]
    fn csv_has_the_documented_columns_and_quotes() {
        assert_eq!(
            String::from_utf8(written(write_csv)).unwrap(),
            "period,cluster,team,category,direction,bytes,gib,cost,currency,account,pricing\n\
             2026-10,c1,\"web, \"\"east\"\"\",cross_zone,out,3221225472,3.000000,0.03,USD,c1,flat\n\
             2026-10,c1,web,unknown,in,7,0.000000,,,c1,unpriced\n"
        );
    }

    #[test]
    fn json_numbers_are_exact_decimals_and_unpriced_is_null() {
        let out = written(write_json);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value[0]["team"], "web, \"east\"");
        assert_eq!(value[0]["bytes"], 3u64 << 30);
        assert_eq!(value[0]["cost"].to_string(), "0.03");
        assert_eq!(value[0]["gib"].to_string(), "3.0");
        assert_eq!(value[1]["cost"], serde_json::Value::Null);
        assert_eq!(value[1]["currency"], serde_json::Value::Null);
        assert_eq!(value[1]["pricing"], "unpriced");
        assert_eq!(value[1]["account"], "c1");
        assert_eq!(value.as_array().unwrap().len(), 2);
    }
}
