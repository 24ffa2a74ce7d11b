//! Writes a reconciliation's two tables, coverage and allocation, as CSV,
//! JSON or Parquet (see `docs/reconcile.md` for every column).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::report::{Report, Share};
use crate::export::write::{write_atomically, Format};
use crate::export::{Grouping, Month};

/// One value of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Text(String),
    Bytes(u128),
    /// `value / 10^scale`.
    Decimal(i128, u32),
    Null,
}

/// A table: its columns, each with its Arrow type, and its rows.
struct Table {
    columns: Vec<(&'static str, DataType)>,
    rows: Vec<Vec<Cell>>,
}

const TEXT: DataType = DataType::Utf8;
const BYTES: DataType = DataType::UInt64;

fn coverage(report: &Report, month: Month, currency: &str) -> Table {
    let columns = vec![
        ("period", TEXT),
        ("provider", TEXT),
        ("accounts", TEXT),
        ("resource", TEXT),
        ("nodes", TEXT),
        ("billed_category", TEXT),
        ("direction", TEXT),
        ("billed_bytes", BYTES),
        ("metered_bytes", BYTES),
        ("ratio", DataType::Decimal128(38, 6)),
        ("cost", DataType::Decimal128(38, 2)),
        ("currency", TEXT),
        ("status", TEXT),
    ];
    let rows = report
        .coverage
        .iter()
        .map(|row| {
            let ratio = if row.billed_bytes == 0 {
                Cell::Null
            } else {
                let millionths = super::split::round_half_away(
                    i128::try_from(row.metered_bytes.saturating_mul(1_000_000))
                        .unwrap_or(i128::MAX),
                    i128::try_from(row.billed_bytes).unwrap_or(i128::MAX),
                );
                Cell::Decimal(millionths, 6)
            };
            vec![
                Cell::Text(month.to_string()),
                Cell::Text(row.provider.as_str().into()),
                Cell::Text(row.accounts.clone()),
                Cell::Text(row.resource.clone()),
                Cell::Text(row.nodes.clone()),
                Cell::Text(row.billed.as_str().into()),
                Cell::Text(row.direction.as_str().into()),
                Cell::Bytes(row.billed_bytes),
                Cell::Bytes(row.metered_bytes),
                ratio,
                Cell::Decimal(super::split::round_half_away(row.cost_nanos, 10_000_000), 2),
                Cell::Text(currency.into()),
                Cell::Text(row.status.as_str().into()),
            ]
        })
        .collect();
    Table { columns, rows }
}

fn allocation(report: &Report, month: Month, grouping: Grouping, currency: &str) -> Table {
    let labels = grouping.label_columns();
    let mut columns = vec![
        ("period", TEXT),
        ("provider", TEXT),
        ("accounts", TEXT),
        ("resource", TEXT),
        ("usage", TEXT),
        ("billed_category", TEXT),
        ("direction", TEXT),
    ];
    columns.extend(labels.iter().map(|l| (*l, TEXT)));
    columns.extend([
        ("bytes", BYTES),
        ("cost", DataType::Decimal128(38, 2)),
        ("currency", TEXT),
        ("unallocated_reason", TEXT),
    ]);
    let rows = report
        .allocation
        .iter()
        .map(|row| {
            let mut cells = vec![
                Cell::Text(month.to_string()),
                Cell::Text(row.provider.as_str().into()),
                Cell::Text(row.accounts.clone()),
                Cell::Text(row.resource.clone()),
                Cell::Text(row.usage.clone()),
                Cell::Text(row.billed.as_str().into()),
                Cell::Text(row.direction.as_str().into()),
            ];
            let reason = match &row.share {
                Share::Group(group) => {
                    cells.extend(group.iter().map(|g| Cell::Text(g.clone())));
                    String::new()
                }
                Share::Unallocated(reason) => {
                    // The team column names it; the other labels stay empty.
                    cells.extend(labels.iter().map(|label| {
                        Cell::Text(if *label == "team" {
                            "unallocated".into()
                        } else {
                            String::new()
                        })
                    }));
                    reason.as_str().to_owned()
                }
            };
            cells.extend([
                Cell::Bytes(row.bytes),
                Cell::Decimal(row.cost_cents, 2),
                Cell::Text(currency.into()),
                Cell::Text(reason),
            ]);
            cells
        })
        .collect();
    Table { columns, rows }
}

/// Writes `report`'s tables: into the directory `out` as
/// `coverage.<format>` and `allocation.<format>`, or, without `out`, to
/// standard output (CSV: coverage, a blank line, allocation; JSON: one
/// object with both; Parquet needs `out`).
pub fn write(
    report: &Report,
    (month, grouping, currency): (Month, Grouping, &str),
    format: Format,
    out: Option<&Path>,
) -> std::io::Result<()> {
    let tables = [
        ("coverage", coverage(report, month, currency)),
        ("allocation", allocation(report, month, grouping, currency)),
    ];
    let Some(dir) = out else {
        let mut stdout = std::io::stdout().lock();
        return match format {
            Format::Csv => {
                write_csv(&tables[0].1, &mut stdout)?;
                writeln!(stdout)?;
                write_csv(&tables[1].1, &mut stdout)
            }
            Format::Json => {
                write!(stdout, "{{\"coverage\":")?;
                write_json(&tables[0].1, &mut stdout)?;
                write!(stdout, ",\"allocation\":")?;
                write_json(&tables[1].1, &mut stdout)?;
                writeln!(stdout, "}}")
            }
            Format::Parquet => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "Parquet is not written to standard output: give a directory with --out",
            )),
        };
    };
    std::fs::create_dir_all(dir)?;
    let extension = match format {
        Format::Csv => "csv",
        Format::Json => "json",
        Format::Parquet => "parquet",
    };
    for (name, table) in &tables {
        write_atomically(
            &dir.join(format!("{name}.{extension}")),
            |file| match format {
                Format::Csv => write_csv(table, file),
                Format::Json => write_json(table, file).and_then(|()| writeln!(file)),
                Format::Parquet => write_parquet(table, file),
            },
        )?;
    }
    Ok(())
}

fn text(cell: &Cell) -> String {
    match cell {
        Cell::Text(text) => text.clone(),
        Cell::Bytes(bytes) => bytes.to_string(),
        Cell::Decimal(value, scale) => decimal_text(*value, *scale),
        Cell::Null => String::new(),
    }
}

/// `value / 10^scale` in plain decimal notation (`-0.05`, `12.000000`).
fn decimal_text(value: i128, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    let magnitude = value.unsigned_abs();
    let sign = if value < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        magnitude / unit,
        magnitude % unit,
        width = scale as usize
    )
}

fn write_csv(table: &Table, out: &mut impl Write) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(table.columns.iter().map(|(name, _)| *name))?;
    for row in &table.rows {
        writer.write_record(row.iter().map(text))?;
    }
    writer.flush()
}

/// An array of objects; numbers written from their exact decimal text.
fn write_json(table: &Table, out: &mut impl Write) -> std::io::Result<()> {
    write!(out, "[")?;
    for (i, row) in table.rows.iter().enumerate() {
        if i > 0 {
            write!(out, ",")?;
        }
        write!(out, "\n  {{")?;
        for (j, ((name, _), cell)) in table.columns.iter().zip(row).enumerate() {
            let value = match cell {
                Cell::Text(text) => serde_json::Value::from(text.as_str()).to_string(),
                Cell::Null => "null".to_owned(),
                number => text(number),
            };
            let separator = if j == 0 { "" } else { "," };
            write!(out, "{separator}\"{name}\":{value}")?;
        }
        write!(out, "}}")?;
    }
    write!(out, "\n]")
}

fn write_parquet(table: &Table, out: &mut (impl Write + Send)) -> std::io::Result<()> {
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let schema = Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|(name, kind)| Field::new(*name, kind.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| -> std::io::Result<ArrayRef> {
            let cells = table.rows.iter().map(|row| &row[i]);
            Ok(match kind {
                DataType::UInt64 => Arc::new(
                    cells
                        .map(|cell| match cell {
                            Cell::Bytes(b) => u64::try_from(*b)
                                .map(Some)
                                .map_err(|_| invalid(&format!("{name} {b} exceeds UInt64"))),
                            _ => Ok(None),
                        })
                        .collect::<std::io::Result<UInt64Array>>()?,
                ),
                DataType::Decimal128(precision, scale) => Arc::new(
                    cells
                        .map(|cell| match cell {
                            Cell::Decimal(value, _) => Some(*value),
                            _ => None,
                        })
                        .collect::<Decimal128Array>()
                        .with_precision_and_scale(*precision, *scale)
                        .map_err(|e| invalid(&e))?,
                ),
                _ => Arc::new(
                    cells
                        .map(|cell| match cell {
                            Cell::Text(t) => Some(t.as_str()),
                            _ => None,
                        })
                        .collect::<StringArray>(),
                ),
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| invalid(&e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer =
        ArrowWriter::try_new(out, schema, Some(properties)).map_err(|e| invalid(&e))?;
    writer.write(&batch).map_err(|e| invalid(&e))?;
    writer.close().map_err(|e| invalid(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_exactly() {
        assert_eq!(decimal_text(1234, 2), "12.34");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(1_000_000, 6), "1.000000");
        assert_eq!(decimal_text(0, 2), "0.00");
    }
}
