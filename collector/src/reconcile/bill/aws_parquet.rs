//! AWS CUR 2.0 (Data Exports), Parquet: only the columns a line item
//! needs are read, batch by batch. What counts as network transfer is
//! [`aws`]'s table.
//!
//! Text columns may be plain, large, view or dictionary-encoded strings;
//! the usage start any timestamp unit, with or without a time zone (the
//! value is UTC either way). Amount and cost are doubles, each converted
//! through its shortest round-trip text, so a cost written as `0.01` is
//! exactly 0.01. Line 1 is the file's first row.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, Float64Array, GenericStringArray, RecordBatch, StringViewArray};
use arrow_schema::{DataType, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::aws::{self, Fields, Items, Number};
use super::{BillError, Expect, FileSummary, LineItem};

/// Rows per batch: memory stays a few megabytes whatever the file's size.
const BATCH_ROWS: usize = 8192;

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i64 = 719_163;

/// Reads the CUR 2.0 Parquet `file`, handing each network line item to
/// `on_item`.
pub fn read(
    file: &Path,
    expect: Expect<'_>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let columns = &aws::CUR2;
    let whole = |e: &dyn std::fmt::Display| BillError::new(file, 0, "-", e);
    let opened = File::open(file).map_err(|e| whole(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(opened).map_err(|e| whole(&e))?;
    let schema = builder.schema();
    let mut roots = Vec::new();
    for name in columns.required() {
        roots.push(schema.index_of(name).map_err(|_| {
            BillError::new(
                file,
                0,
                name,
                "no such column: not an AWS CUR 2.0 export, or one without it",
            )
        })?);
    }
    roots.extend(schema.index_of(columns.product_code).ok());
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| whole(&e))?;
    let mut items = Items::new(expect, columns);
    let mut rows_before: u64 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| BillError::new(file, rows_before + 1, "-", e))?;
        let at = Batch::new(&batch)
            .map_err(|(column, message)| BillError::new(file, 0, column, message))?;
        for row in 0..batch.num_rows() {
            items.line(
                rows_before + row as u64 + 1,
                &at.fields(row),
                || at.start.day(row),
                on_item,
            )?;
        }
        rows_before += batch.num_rows() as u64;
    }
    Ok(items.finish())
}

/// The columns of one batch, ready to read row by row.
struct Batch<'a> {
    line_item_type: Text<'a>,
    product_code: Text<'a>,
    usage_type: Text<'a>,
    operation: Text<'a>,
    resource: Text<'a>,
    account: Text<'a>,
    currency: Text<'a>,
    unit: Text<'a>,
    amount: &'a Float64Array,
    cost: &'a Float64Array,
    start: Times<'a>,
}

impl<'a> Batch<'a> {
    /// Fails with the column and what is wrong with its type.
    fn new(batch: &'a RecordBatch) -> Result<Batch<'a>, (&'static str, String)> {
        let columns = &aws::CUR2;
        let column = |name: &'static str| {
            batch
                .column_by_name(name)
                .map(|array| array.as_ref())
                .ok_or((name, "no such column".to_owned()))
        };
        let text = |name| Text::new(column(name)?).map_err(|message| (name, message));
        let double = |name| {
            let array = column(name)?;
            array
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| (name, format!("{}, not a double", array.data_type())))
        };
        Ok(Batch {
            line_item_type: text(columns.line_item_type)?,
            product_code: match batch.column_by_name(columns.product_code) {
                Some(_) => text(columns.product_code)?,
                None => Text::Null,
            },
            usage_type: text(columns.usage_type)?,
            operation: text(columns.operation)?,
            resource: text(columns.resource)?,
            account: text(columns.account)?,
            currency: text(columns.currency)?,
            unit: text(columns.unit)?,
            amount: double(columns.amount)?,
            cost: double(columns.cost)?,
            start: Times::new(column(columns.start)?)
                .map_err(|message| (columns.start, message))?,
        })
    }

    fn fields(&self, row: usize) -> Fields<'a> {
        let double = |array: &Float64Array| (!array.is_null(row)).then(|| array.value(row));
        Fields {
            line_item_type: self.line_item_type.value(row),
            product_code: self.product_code.value(row),
            usage_type: self.usage_type.value(row),
            operation: self.operation.value(row),
            resource: self.resource.value(row),
            account: self.account.value(row),
            currency: self.currency.value(row),
            unit: self.unit.value(row),
            amount: Number::Double(double(self.amount)),
            cost: Number::Double(double(self.cost)),
        }
    }
}

/// A text column in any of the string layouts Arrow reads Parquet into.
enum Text<'a> {
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    View(&'a StringViewArray),
    Dictionary {
        /// For its nulls.
        array: &'a dyn Array,
        keys: Vec<usize>,
        values: Box<Text<'a>>,
    },
    /// Null in every row (a dictionary without values, an absent
    /// optional column).
    Null,
}

impl<'a> Text<'a> {
    fn new(array: &'a dyn Array) -> Result<Text<'a>, String> {
        if let Some(strings) = array.as_string_opt::<i32>() {
            return Ok(Text::Utf8(strings));
        }
        if let Some(strings) = array.as_string_opt::<i64>() {
            return Ok(Text::LargeUtf8(strings));
        }
        if let Some(strings) = array.as_string_view_opt() {
            return Ok(Text::View(strings));
        }
        if let Some(dictionary) = array.as_any_dictionary_opt() {
            let values = Text::new(dictionary.values().as_ref())?;
            if dictionary.values().is_empty() {
                return Ok(Text::Null);
            }
            return Ok(Text::Dictionary {
                array,
                keys: dictionary.normalized_keys(),
                values: Box::new(values),
            });
        }
        if array.data_type() == &DataType::Null {
            return Ok(Text::Null);
        }
        Err(format!("{}, not text", array.data_type()))
    }

    /// The text of `row`, empty if null.
    fn value(&self, row: usize) -> &'a str {
        match self {
            Text::Utf8(strings) if strings.is_valid(row) => strings.value(row),
            Text::LargeUtf8(strings) if strings.is_valid(row) => strings.value(row),
            Text::View(strings) if strings.is_valid(row) => strings.value(row),
            Text::Dictionary {
                array,
                keys,
                values,
            } if array.is_valid(row) => values.value(keys[row]),
            _ => "",
        }
    }
}

/// A timestamp column, any unit.
struct Times<'a> {
    array: &'a dyn Array,
    values: &'a [i64],
    per_day: i64,
}

impl<'a> Times<'a> {
    fn new(array: &'a dyn Array) -> Result<Times<'a>, String> {
        let (values, per_day) = match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => (
                array
                    .as_primitive_opt::<TimestampSecondType>()
                    .map(|a| a.values()),
                86_400,
            ),
            DataType::Timestamp(TimeUnit::Millisecond, _) => (
                array
                    .as_primitive_opt::<TimestampMillisecondType>()
                    .map(|a| a.values()),
                86_400_000,
            ),
            DataType::Timestamp(TimeUnit::Microsecond, _) => (
                array
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .map(|a| a.values()),
                86_400_000_000,
            ),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => (
                array
                    .as_primitive_opt::<TimestampNanosecondType>()
                    .map(|a| a.values()),
                86_400_000_000_000,
            ),
            _ => (None, 1),
        };
        let values = values.ok_or_else(|| format!("{}, not a timestamp", array.data_type()))?;
        Ok(Times {
            array,
            values,
            per_day,
        })
    }

    /// The UTC day of `row`.
    fn day(&self, row: usize) -> Result<NaiveDate, String> {
        if self.array.is_null(row) {
            return Err("empty: no time the usage began".to_owned());
        }
        let value = self.values[row];
        value
            .div_euclid(self.per_day)
            .checked_add(UNIX_EPOCH_FROM_CE)
            .and_then(|days| i32::try_from(days).ok())
            .and_then(NaiveDate::from_num_days_from_ce_opt)
            .ok_or_else(|| format!("{value} is no time a bill is of"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use std::sync::Arc;

    use arrow_array::builder::{MapBuilder, StringBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, DictionaryArray, LargeStringArray, StringArray, TimestampMicrosecondArray,
        TimestampMillisecondArray,
    };
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::reconcile::bill::aws::testing::{item, read_all, read_error, Item};
    use crate::reconcile::bill::{Billed, Direction};
    use crate::test_support::TempDir;

    const EU_NAT_GATEWAY: &str =
        "arn:aws:ec2:eu-west-1:111122223333:natgateway/nat-0f1e2d3c4b5a69788";

    /// One row of the fixture: line item type, usage type, operation,
    /// resource, usage start (UTC), amount, unit, cost.
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static str,
        f64,
        &'static str,
        f64,
    );

    /// October 2026 in eu-west-1 (`EU-`) and us-east-1.
    const ROWS: [Row; 10] = [
        (
            "Usage",
            "EU-BoxUsage:m6i.large",
            "RunInstances",
            Some("i-0e1d2c3b4a5f600a1"),
            "2026-10-07T00:00:00Z",
            24.0,
            "Hrs",
            2.304,
        ),
        (
            "Usage",
            "EU-DataTransfer-Regional-Bytes",
            "InterZone-Out",
            Some("i-0e1d2c3b4a5f600a1"),
            "2026-10-07T00:00:00Z",
            0.1,
            "GB",
            0.001,
        ),
        (
            "Usage",
            "EU-DataTransfer-Regional-Bytes",
            "InterZone-In",
            Some("i-0e1d2c3b4a5f600a2"),
            "2026-10-07T00:00:00Z",
            0.1,
            "GB",
            0.001,
        ),
        (
            "Usage",
            "EU-DataTransfer-Out-Bytes",
            "RunInstances",
            Some("i-0e1d2c3b4a5f600a1"),
            "2026-10-08T13:00:00Z",
            1.5,
            "GB",
            0.135,
        ),
        (
            "Usage",
            "EU-USE1-AWS-Out-Bytes",
            "RunInstances",
            Some("i-0e1d2c3b4a5f600a2"),
            "2026-10-09T00:00:00Z",
            2.0,
            "GB",
            0.02,
        ),
        (
            "Usage",
            "USE1-EU-AWS-In-Bytes",
            "RunInstances",
            Some("i-0a1b2c3d4e5f60001"),
            "2026-10-09T00:00:00Z",
            2.0,
            "GB",
            0.0,
        ),
        (
            "Usage",
            "EU-NatGateway-Bytes",
            "NatGateway",
            Some(EU_NAT_GATEWAY),
            "2026-10-10T00:00:00Z",
            10.0,
            "GB",
            0.48,
        ),
        (
            "Usage",
            "EU-NatGateway-Hours",
            "NatGateway",
            Some(EU_NAT_GATEWAY),
            "2026-10-10T00:00:00Z",
            24.0,
            "Hrs",
            1.152,
        ),
        (
            "Usage",
            "DataTransfer-Out-Bytes",
            "RunInstances",
            Some("i-0a1b2c3d4e5f60001"),
            "2026-10-31T23:00:00Z",
            0.1111111111,
            "GB",
            0.01,
        ),
        ("Tax", "", "", None, "2026-10-01T00:00:00Z", 1.0, "", 3.21),
    ];

    fn expected() -> Vec<Item> {
        use Billed::*;
        use Direction::*;
        vec![
            item(
                2,
                "i-0e1d2c3b4a5f600a1",
                "EU-DataTransfer-Regional-Bytes InterZone-Out",
                (CrossZone, Out),
                "2026-10-07",
                107_374_182,
                1_000_000,
            ),
            item(
                3,
                "i-0e1d2c3b4a5f600a2",
                "EU-DataTransfer-Regional-Bytes InterZone-In",
                (CrossZone, In),
                "2026-10-07",
                107_374_182,
                1_000_000,
            ),
            item(
                4,
                "i-0e1d2c3b4a5f600a1",
                "EU-DataTransfer-Out-Bytes RunInstances",
                (Internet, Out),
                "2026-10-08",
                3 << 29,
                135_000_000,
            ),
            item(
                5,
                "i-0e1d2c3b4a5f600a2",
                "EU-USE1-AWS-Out-Bytes RunInstances",
                (CrossRegion, Out),
                "2026-10-09",
                2 << 30,
                20_000_000,
            ),
            item(
                6,
                "i-0a1b2c3d4e5f60001",
                "USE1-EU-AWS-In-Bytes RunInstances",
                (CrossRegion, In),
                "2026-10-09",
                2 << 30,
                0,
            ),
            item(
                7,
                EU_NAT_GATEWAY,
                "EU-NatGateway-Bytes NatGateway",
                (NatGateway, Out),
                "2026-10-10",
                10 << 30,
                480_000_000,
            ),
            item(
                9,
                "i-0a1b2c3d4e5f60001",
                "DataTransfer-Out-Bytes RunInstances",
                (Internet, Out),
                "2026-10-31",
                119_304_647,
                10_000_000,
            ),
        ]
    }

    fn millis(time: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(time)
            .unwrap()
            .timestamp_millis()
    }

    /// `rows` as CUR 2.0 writes them: dictionary-encoded line item types
    /// and currencies, millisecond timestamps, doubles, a tag map.
    fn cur2(rows: &[Row]) -> Vec<(&'static str, ArrayRef)> {
        let text = |f: &dyn Fn(&Row) -> &'static str| -> ArrayRef {
            Arc::new(rows.iter().map(|row| Some(f(row))).collect::<StringArray>())
        };
        let mut tags = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for _ in rows {
            tags.keys().append_value("user_team");
            tags.values().append_value("payments");
            tags.append(true).unwrap();
        }
        vec![
            ("bill_bill_type", text(&|_| "Anniversary")),
            ("bill_payer_account_id", text(&|_| "999988887777")),
            (
                "identity_line_item_id",
                Arc::new(
                    (0..rows.len())
                        .map(|at| Some(format!("h4xq7d2mzk5r3vbn6yt{at:02}pjw")))
                        .collect::<StringArray>(),
                ),
            ),
            (
                "line_item_currency_code",
                Arc::new(
                    rows.iter()
                        .map(|_| "USD")
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
            ),
            (
                "line_item_line_item_type",
                Arc::new(
                    rows.iter()
                        .map(|row| row.0)
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
            ),
            ("line_item_operation", text(&|row| row.2)),
            (
                "line_item_product_code",
                text(&|row| {
                    if row.1.contains("DataTransfer-") || row.1.contains("-AWS-") {
                        "AWSDataTransfer"
                    } else {
                        "AmazonEC2"
                    }
                }),
            ),
            (
                "line_item_resource_id",
                Arc::new(rows.iter().map(|row| row.3).collect::<StringArray>()),
            ),
            (
                "line_item_unblended_cost",
                Arc::new(rows.iter().map(|row| row.7).collect::<Float64Array>()),
            ),
            ("line_item_unblended_rate", text(&|_| "0.01")),
            ("line_item_usage_account_id", text(&|_| "111122223333")),
            (
                "line_item_usage_amount",
                Arc::new(rows.iter().map(|row| row.5).collect::<Float64Array>()),
            ),
            (
                "line_item_usage_end_date",
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter()
                        .map(|row| millis(row.4) + 3_600_000)
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "line_item_usage_start_date",
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|row| millis(row.4)).collect::<Vec<_>>(),
                )),
            ),
            ("line_item_usage_type", text(&|row| row.1)),
            ("pricing_unit", text(&|row| row.6)),
            (
                "product_region_code",
                text(&|row| {
                    if row.1.starts_with("EU-") {
                        "eu-west-1"
                    } else {
                        "us-east-1"
                    }
                }),
            ),
            ("resource_tags", Arc::new(tags.finish())),
        ]
    }

    fn write(dir: &Path, name: &str, columns: Vec<(&'static str, ArrayRef)>) -> std::path::PathBuf {
        let path = dir.join(name);
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut writer = ArrowWriter::try_new(
            File::create(&path).unwrap(),
            batch.schema(),
            Some(properties),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    /// The type `name` reads back as from `path`.
    fn stored_type(path: &Path, name: &str) -> DataType {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        builder
            .schema()
            .field_with_name(name)
            .unwrap()
            .data_type()
            .clone()
    }

    /// `columns` with `name`'s array replaced.
    fn with(
        mut columns: Vec<(&'static str, ArrayRef)>,
        name: &str,
        array: ArrayRef,
    ) -> Vec<(&'static str, ArrayRef)> {
        columns.iter_mut().find(|(n, _)| *n == name).unwrap().1 = array;
        columns
    }

    #[test]
    fn reads_the_network_line_items_of_a_cur2_export() {
        let dir = TempDir::new("aws-parquet");
        let path = write(&dir, "october-00001.snappy.parquet", cur2(&ROWS));
        assert!(matches!(
            stored_type(&path, "line_item_line_item_type"),
            DataType::Dictionary(..)
        ));
        let (summary, items) = read_all(read, &path, &mut None).unwrap();
        assert_eq!(
            summary,
            FileSummary {
                lines: 10,
                network_lines: 7
            }
        );
        assert_eq!(items, expected());
    }

    #[test]
    fn reads_other_string_and_timestamp_layouts() {
        let dir = TempDir::new("aws-parquet-layouts");
        let micros = TimestampMicrosecondArray::from(
            ROWS.iter()
                .map(|row| millis(row.4) * 1000)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC");
        let columns = with(cur2(&ROWS), "line_item_usage_start_date", Arc::new(micros));
        let columns = with(
            columns,
            "line_item_usage_type",
            Arc::new(
                ROWS.iter()
                    .map(|row| Some(row.1))
                    .collect::<LargeStringArray>(),
            ),
        );
        let columns = with(
            columns,
            "line_item_operation",
            Arc::new(
                ROWS.iter()
                    .map(|row| Some(row.2))
                    .collect::<StringViewArray>(),
            ),
        );
        let mut columns = columns;
        columns.retain(|(name, _)| *name != "line_item_product_code");
        let path = write(&dir, "october.parquet", columns);
        assert_eq!(
            stored_type(&path, "line_item_operation"),
            DataType::Utf8View
        );
        let (summary, items) = read_all(read, &path, &mut None).unwrap();
        assert_eq!(
            summary,
            FileSummary {
                lines: 10,
                network_lines: 7
            }
        );
        assert_eq!(items, expected());
    }

    #[test]
    fn bad_files_and_rows_are_errors_naming_file_row_and_column() {
        let dir = TempDir::new("aws-parquet-bad");
        let mut missing = cur2(&ROWS);
        missing.retain(|(name, _)| *name != "line_item_unblended_cost");
        let path = write(&dir, "missing.parquet", missing);
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}: column line_item_unblended_cost: no such column: not an AWS CUR 2.0 \
                 export, or one without it",
                path.display()
            )
        );

        let text_amounts = ROWS
            .iter()
            .map(|row| Some(row.5.to_string()))
            .collect::<StringArray>();
        let path = write(
            &dir,
            "text.parquet",
            with(
                cur2(&ROWS),
                "line_item_usage_amount",
                Arc::new(text_amounts),
            ),
        );
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}: column line_item_usage_amount: Utf8, not a double",
                path.display()
            )
        );

        let mut rows = ROWS;
        rows[2].4 = "2026-11-01T00:00:00Z";
        let path = write(&dir, "november.parquet", cur2(&rows));
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}:3: column line_item_usage_start_date: 2026-11-01 is not in 2026-10: this \
                 is a bill of another month",
                path.display()
            )
        );

        let mut rows = ROWS;
        rows[6].6 = "Hrs";
        let path = write(&dir, "hours.parquet", cur2(&rows));
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}:7: column pricing_unit: \"Hrs\" on EU-NatGateway-Bytes: a unit not \
                 understood (network usage is in GB)",
                path.display()
            )
        );

        let mut rows = ROWS;
        rows[3].5 = f64::INFINITY;
        let path = write(&dir, "infinite.parquet", cur2(&rows));
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}:4: column line_item_usage_amount: \"inf\" is not a number",
                path.display()
            )
        );

        let euros = ROWS
            .iter()
            .enumerate()
            .map(|(at, _)| if at < 4 { "USD" } else { "EUR" })
            .collect::<DictionaryArray<Int32Type>>();
        let path = write(
            &dir,
            "euros.parquet",
            with(cur2(&ROWS), "line_item_currency_code", Arc::new(euros)),
        );
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}:5: column line_item_currency_code: currency \"EUR\", but earlier line \
                 items are in \"USD\": one currency per reconciliation",
                path.display()
            )
        );
    }
}
