//! Billing files as the clouds write them, for fixtures: an AWS Cost and
//! Usage Report in the legacy CSV form (gzip) and in the CUR 2.0 Parquet
//! form, GCP's detailed billing export in JSON lines and Azure's cost
//! details (CSV, Enterprise Agreement layout), with the
//! providers' own column names and a realistic share of columns tollgate
//! does not read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

/// Bytes per billed resource, tollgate category and direction.
pub type UnitBytes = BTreeMap<(String, String, String), u64>;

/// This month, `YYYY-MM` in UTC: the month a test bill is of.
pub fn this_month() -> String {
    chrono::DateTime::from_timestamp(i64::from(crate::fixtures::unix_now()), 0)
        .expect("a clock within chrono's range")
        .format("%Y-%m")
        .to_string()
}

/// The first of the two hours a test bill spreads the metered bytes over:
/// the current hour, or the one before when the next would fall on the
/// next UTC day, where nothing was metered (the bill's lines are
/// allocated by their day's metering).
pub fn billing_hours() -> i64 {
    let hour = i64::from(crate::fixtures::unix_now()) / 3600 * 3600;
    if (hour + 3600) % 86_400 == 0 {
        hour - 3600
    } else {
        hour
    }
}

/// This month's Cost and Usage Report of instances' transfer, `bytes`
/// (at `multiplier` times the list prices), with [`other_lines`] for the
/// first node's instance, written into `dir`: its path, and each unit's
/// cost as [`instance_transfer`] gives it.
pub fn write_month_cur(
    dir: &Path,
    bytes: &UnitBytes,
    multiplier: u32,
) -> anyhow::Result<(std::path::PathBuf, BTreeMap<String, i128>)> {
    let hour = billing_hours();
    let (mut lines, costs) = instance_transfer(bytes, hour, multiplier);
    lines.extend(other_lines(&crate::cluster::instance_id(0), hour));
    let bill = dir.join(format!("cur-{}.csv.gz", this_month()));
    write_cur_csv(&bill, &lines)?;
    Ok((bill, costs))
}

/// The rows of a report's CSV file (`tollgate reconcile`'s coverage.csv,
/// allocation.csv) as maps from column to value.
pub fn report_rows(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut reader = csv::Reader::from_path(path)?;
    let header = reader.headers()?.clone();
    reader
        .records()
        .map(|record| {
            Ok(header
                .iter()
                .map(str::to_owned)
                .zip(record?.iter().map(str::to_owned))
                .collect())
        })
        .collect()
}

/// Cents as a report writes a cost (`12.34`, `-0.05`).
pub fn cents(text: &str) -> anyhow::Result<i128> {
    let (units, decimals) = text
        .trim_start_matches('-')
        .split_once('.')
        .filter(|(_, decimals)| decimals.len() == 2)
        .ok_or_else(|| anyhow::anyhow!("cost {text:?} is not written to the cent"))?;
    let value: i128 = format!("{units}{decimals}").parse()?;
    Ok(if text.starts_with('-') { -value } else { value })
}

/// One line item of a CUR.
#[derive(Debug, Clone)]
pub struct CurLine {
    /// `lineItem/LineItemType`: `Usage`, `Tax`...
    pub line_item_type: &'static str,
    /// `lineItem/UsageAccountId`.
    pub account: &'static str,
    /// `lineItem/ProductCode`.
    pub product: &'static str,
    /// `lineItem/UsageType`.
    pub usage_type: String,
    /// `lineItem/Operation`.
    pub operation: &'static str,
    /// `lineItem/ResourceId`.
    pub resource: String,
    /// Start of the usage, Unix seconds (an hour or a day).
    pub start: i64,
    /// `lineItem/UsageAmount`, as AWS writes it (up to 10 decimals).
    pub amount: String,
    /// `pricing/unit`.
    pub unit: &'static str,
    /// `lineItem/UnblendedCost`, as AWS writes it.
    pub cost: String,
    /// `resourceTags/user:team`, a tag column tollgate ignores.
    pub team_tag: &'static str,
}

/// The usage type and operation a CUR bills an instance's transfer of a
/// tollgate category and direction under, and its list price per GB (the
/// simulated cluster's regions r1 and r2 stand for eu-west-1 and
/// eu-central-1); `None` for what is not billed (same-zone transfer).
pub fn aws_usage(
    category: &str,
    direction: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match (category, direction) {
        ("cross_zone", "out") => ("EUW1-DataTransfer-Regional-Bytes", "InterZone-Out", "0.01"),
        ("cross_zone", "in") => ("EUW1-DataTransfer-Regional-Bytes", "InterZone-In", "0.01"),
        ("cross_region", "out") => ("EUW1-EUC1-AWS-Out-Bytes", "RunInstances", "0.02"),
        ("cross_region", "in") => ("EUW1-EUC1-AWS-In-Bytes", "RunInstances", "0.00"),
        ("internet", "out") => ("EUW1-DataTransfer-Out-Bytes", "RunInstances", "0.09"),
        ("internet", "in") => ("EUW1-DataTransfer-In-Bytes", "RunInstances", "0.00"),
        _ => return None,
    })
}

/// A network line item of an EC2 instance, its amount and cost to be set.
pub fn ec2_line(usage_type: &str, operation: &'static str, resource: &str, start: i64) -> CurLine {
    CurLine {
        line_item_type: "Usage",
        account: "111122223333",
        product: "AmazonEC2",
        usage_type: usage_type.to_owned(),
        operation,
        resource: resource.to_owned(),
        start,
        amount: String::new(),
        unit: "GB",
        cost: String::new(),
        team_tag: "",
    }
}

/// The CUR line items of instances' transfer: for each (instance,
/// category, direction) of `bytes`, two line items (two hours from
/// `hour`) carrying its bytes, priced at `multiplier` times the list
/// price. Returns them with each unit's cost in billionths, keyed
/// `"<instance> <category> <direction>"`.
pub fn instance_transfer(
    bytes: &UnitBytes,
    hour: i64,
    multiplier: u32,
) -> (Vec<CurLine>, BTreeMap<String, i128>) {
    let usage = |category: &str, direction: &str| {
        aws_usage(category, direction)
            .map(|(usage_type, operation, price)| ((usage_type, operation), price))
    };
    in_gigabytes(
        (bytes, hour, multiplier),
        usage,
        |(usage_type, operation), instance, start, (quantity, cost)| {
            let mut item = ec2_line(usage_type, operation, instance, start);
            item.amount = quantity.to_owned();
            item.cost = cost.to_owned();
            item
        },
    )
}

/// [`in_two_hours`] for a bill counting gigabytes (with ten decimals, as
/// [`gigabytes`] writes them) at `multiplier` times the list price:
/// `price` gives a unit's list price per GB and what names it on the bill,
/// `line` writes a part's line item from that name, the resource, the
/// start and the part's quantity and cost.
fn in_gigabytes<M, L>(
    (bytes, hour, multiplier): (&UnitBytes, i64, u32),
    price: impl Fn(&str, &str) -> Option<(M, &'static str)>,
    mut line: impl FnMut(M, &str, i64, (&str, &str)) -> L,
) -> (Vec<L>, BTreeMap<String, i128>) {
    in_two_hours(
        bytes,
        hour,
        |(resource, category, direction), part, start| {
            let (name, price) = price(category, direction)?;
            let quantity = gigabytes(part);
            let cost = cost(&quantity, &times(price, multiplier));
            let billed = nanos(&cost);
            Some((line(name, resource, start, (&quantity, &cost)), billed))
        },
    )
}

/// Each unit of `bytes` in two parts, a third in the hour from `hour` and
/// the rest in the next, each written by `line` (its line item and cost
/// in billionths, or `None` for a unit no bill charges); returns the lines
/// with each unit's cost, keyed `"<resource> <category> <direction>"`.
fn in_two_hours<L>(
    bytes: &UnitBytes,
    hour: i64,
    mut line: impl FnMut(&(String, String, String), u64, i64) -> Option<(L, i128)>,
) -> (Vec<L>, BTreeMap<String, i128>) {
    let mut lines = Vec::new();
    let mut costs = BTreeMap::new();
    for (unit, &total) in bytes {
        for (part, start) in [(total / 3, hour), (total - total / 3, hour + 3600)] {
            let Some((item, cost)) = line(unit, part, start) else {
                break;
            };
            let (resource, category, direction) = unit;
            *costs
                .entry(format!("{resource} {category} {direction}"))
                .or_default() += cost;
            lines.push(item);
        }
    }
    (lines, costs)
}

/// Line items a bill has besides instances' transfer, at list prices,
/// which tollgate must ignore or cannot allocate: an instance-hour of
/// `instance`, a volume, a NAT gateway's hours, tax, a network load
/// balancer's processing, and 3 GB to the internet from an instance that
/// runs no agent. [`UNALLOCATED`] is what a reconciliation must make of
/// them.
pub fn other_lines(instance: &str, hour: i64) -> Vec<CurLine> {
    let mut lines = vec![
        ec2_line("EUW1-BoxUsage:m6i.large", "RunInstances", instance, hour),
        ec2_line(
            "EUW1-EBS:VolumeUsage.gp3",
            "CreateVolume-Gp3",
            "vol-0abc",
            hour,
        ),
        ec2_line("EUW1-NatGateway-Hours", "NatGateway", "nat-0abc", hour),
        ec2_line(
            "EUW1-DataTransfer-Out-Bytes",
            "RunInstances",
            UNALLOCATED[1].0,
            hour,
        ),
        ec2_line(
            "EUW1-DataProcessing-Bytes",
            "LoadBalancing:Network",
            UNALLOCATED[0].0,
            hour,
        ),
    ];
    for (item, (unit, amount, cost)) in lines.iter_mut().zip([
        ("Hrs", "1.0000000000", "0.1070000000"),
        ("GB-Mo", "0.0013440860", "0.0001075269"),
        ("Hrs", "1.0000000000", "0.0480000000"),
        ("GB", "3.0000000000", "0.2700000000"),
        ("GB", "5.0000000000", "0.0400000000"),
    ]) {
        item.unit = unit;
        item.amount = amount.into();
        item.cost = cost.into();
    }
    let mut tax = ec2_line("", "", "", hour);
    tax.line_item_type = "Tax";
    tax.unit = "";
    tax.amount = "0".into();
    tax.cost = "1.2300000000".into();
    lines.push(tax);
    lines
}

/// The resources of [`other_lines`] whose cost a reconciliation cannot
/// allocate, in the order it reports them: the cost in dollars and the
/// reason.
pub const UNALLOCATED: [(&str, &str, &str); 2] = [
    (
        "arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/net/api/50dc6c495c0c9188",
        "0.04",
        "category_not_metered",
    ),
    ("i-0ffffffffffffffff", "0.27", "node_not_metered"),
];

/// A price times `multiplier`, as decimal text.
fn times(price: &str, multiplier: u32) -> String {
    let (units, decimals) = price.split_once('.').unwrap_or((price, ""));
    let scaled: u128 = format!("{units}{decimals}").parse().unwrap_or(0) * u128::from(multiplier);
    let unit = 10u128.pow(decimals.len() as u32);
    format!(
        "{}.{:0width$}",
        scaled / unit,
        scaled % unit,
        width = decimals.len()
    )
}

/// Billionths of a decimal with at most ten places (rounded half up).
pub fn nanos(text: &str) -> i128 {
    let (units, decimals) = text.split_once('.').unwrap_or((text, ""));
    let decimals = format!("{decimals:0<10}");
    let tenths: i128 = format!("{units}{}", &decimals[..10]).parse().unwrap_or(0);
    (tenths + 5) / 10
}

/// `bytes` as gigabytes (2^30 bytes) with ten decimals, as a CUR writes
/// usage: converting it back rounds to the same bytes.
pub fn gigabytes(bytes: u64) -> String {
    let scaled = (u128::from(bytes) * 10_000_000_000 + (1 << 29)) >> 30;
    format!(
        "{}.{:010}",
        scaled / 10_000_000_000,
        scaled % 10_000_000_000
    )
}

/// `gigabytes` (ten decimals, as [`gigabytes`] writes them) at
/// `price_per_gb`: the cost with ten decimals, as a CUR writes it.
pub fn cost(gigabytes: &str, price_per_gb: &str) -> String {
    let ten = |text: &str| -> u128 {
        let (units, decimals) = text.split_once('.').unwrap_or((text, ""));
        let decimals = format!("{decimals:0<10}");
        format!("{units}{}", &decimals[..10]).parse().unwrap_or(0)
    };
    // Both have ten decimals: the product has twenty, rounded to ten.
    let product = ten(gigabytes) * ten(price_per_gb);
    let rounded = (product + 5_000_000_000) / 10_000_000_000;
    format!(
        "{}.{:010}",
        rounded / 10_000_000_000,
        rounded % 10_000_000_000
    )
}

/// `2026-10-01T00:00:00Z` for a Unix time, as the legacy CUR writes
/// times.
fn iso(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The legacy CUR's columns tollgate does not read, with the values a
/// line item of `line` would have.
fn other_columns(line: &CurLine) -> [(&'static str, String); 6] {
    [
        (
            "identity/LineItemId",
            format!("{:x}", line.start ^ line.resource.len() as i64),
        ),
        (
            "identity/TimeInterval",
            format!("{}/{}", iso(line.start), iso(line.start + 3600)),
        ),
        ("bill/PayerAccountId", "999988887777".into()),
        ("lineItem/BlendedCost", line.cost.clone()),
        ("product/ProductName", "Amazon Elastic Compute Cloud".into()),
        (
            "lineItem/LineItemDescription",
            format!("$ per GB - {}, billed", line.usage_type),
        ),
    ]
}

/// Writes `lines` as a legacy CUR CSV, gzip-compressed if `path` ends in
/// `.gz`, one line at a time (a bill of millions streams through).
pub fn write_cur_csv<I>(path: &Path, lines: I) -> anyhow::Result<()>
where
    I: IntoIterator,
    I::Item: std::borrow::Borrow<CurLine>,
{
    let file = std::fs::File::create(path)?;
    let out: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        ))
    } else {
        Box::new(file)
    };
    let mut writer = csv::Writer::from_writer(out);
    let mut header: Vec<&str> = vec![
        "identity/LineItemId",
        "identity/TimeInterval",
        "bill/PayerAccountId",
        "lineItem/LineItemType",
        "lineItem/UsageAccountId",
        "lineItem/UsageStartDate",
        "lineItem/UsageEndDate",
        "lineItem/ProductCode",
        "lineItem/UsageType",
        "lineItem/Operation",
        "lineItem/ResourceId",
        "lineItem/UsageAmount",
        "lineItem/CurrencyCode",
        "lineItem/UnblendedCost",
        "lineItem/BlendedCost",
        "lineItem/LineItemDescription",
        "product/ProductName",
        "pricing/unit",
        "resourceTags/user:team",
    ];
    header.dedup();
    writer.write_record(&header)?;
    for line in lines {
        let line: &CurLine = std::borrow::Borrow::borrow(&line);
        let others = other_columns(line);
        let other = |name: &str| {
            others
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        writer.write_record([
            other("identity/LineItemId"),
            other("identity/TimeInterval"),
            other("bill/PayerAccountId"),
            line.line_item_type.into(),
            line.account.into(),
            iso(line.start),
            iso(line.start + 3600),
            line.product.into(),
            line.usage_type.clone(),
            line.operation.into(),
            line.resource.clone(),
            line.amount.clone(),
            "USD".into(),
            line.cost.clone(),
            other("lineItem/BlendedCost"),
            other("lineItem/LineItemDescription"),
            other("product/ProductName"),
            line.unit.into(),
            line.team_tag.into(),
        ])?;
    }
    let out = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(out);
    Ok(())
}

/// Writes `lines` as a CUR 2.0 Parquet file (AWS Data Exports): snake_case
/// columns, timestamps, doubles for amounts (as AWS writes them), Snappy.
pub fn write_cur2_parquet(path: &Path, lines: &[CurLine]) -> anyhow::Result<()> {
    let text = |f: &dyn Fn(&CurLine) -> String| -> ArrayRef {
        Arc::new(lines.iter().map(|l| Some(f(l))).collect::<StringArray>())
    };
    let number = |f: &dyn Fn(&CurLine) -> &str| -> anyhow::Result<ArrayRef> {
        Ok(Arc::new(
            lines
                .iter()
                .map(|l| f(l).parse::<f64>().map(Some))
                .collect::<Result<Float64Array, _>>()?,
        ))
    };
    let time = |offset: i64| -> ArrayRef {
        Arc::new(
            lines
                .iter()
                .map(|l| Some((l.start + offset) * 1000))
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        )
    };
    let timestamp = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        (
            "identity_line_item_id",
            DataType::Utf8,
            text(&|l| format!("{:x}", l.start)),
        ),
        (
            "bill_payer_account_id",
            DataType::Utf8,
            text(&|_| "999988887777".into()),
        ),
        (
            "line_item_line_item_type",
            DataType::Utf8,
            text(&|l| l.line_item_type.into()),
        ),
        (
            "line_item_usage_account_id",
            DataType::Utf8,
            text(&|l| l.account.into()),
        ),
        ("line_item_usage_start_date", timestamp.clone(), time(0)),
        ("line_item_usage_end_date", timestamp, time(3600)),
        (
            "line_item_product_code",
            DataType::Utf8,
            text(&|l| l.product.into()),
        ),
        (
            "line_item_usage_type",
            DataType::Utf8,
            text(&|l| l.usage_type.clone()),
        ),
        (
            "line_item_operation",
            DataType::Utf8,
            text(&|l| l.operation.into()),
        ),
        (
            "line_item_resource_id",
            DataType::Utf8,
            text(&|l| l.resource.clone()),
        ),
        (
            "line_item_usage_amount",
            DataType::Float64,
            number(&|l| &l.amount)?,
        ),
        (
            "line_item_currency_code",
            DataType::Utf8,
            text(&|_| "USD".into()),
        ),
        (
            "line_item_unblended_cost",
            DataType::Float64,
            number(&|l| &l.cost)?,
        ),
        ("pricing_unit", DataType::Utf8, text(&|l| l.unit.into())),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, kind, _)| Field::new(*name, kind.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, _, array)| array).collect(),
    )?;
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path)?,
        schema,
        Some(properties),
    )?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// The project of the GCP fixtures.
pub const GCP_PROJECT: &str = "shop-prod";

/// The GCE instance's name a node of `name` stands for.
pub fn gce_instance(node: &str) -> String {
    format!("gke-sim-pool-1-{node}")
}

/// The SKU a GCP billing export bills an instance's transfer of a tollgate
/// category and direction under, and its list price per GiB (the simulated
/// cluster's regions r1 and r2 stand for europe-west1 and europe-west3);
/// `None` for what is not billed (same-zone transfer).
pub fn gcp_sku(category: &str, direction: &str) -> Option<(&'static str, &'static str)> {
    Some(match (category, direction) {
        ("cross_zone", "out") => ("Network Inter Zone Data Transfer Out", "0.01"),
        ("cross_zone", "in") => ("Network Inter Zone Data Transfer In", "0.00"),
        ("cross_region", "out") => (
            "Network Inter Region Data Transfer Out from Belgium to Frankfurt",
            "0.02",
        ),
        ("cross_region", "in") => (
            "Network Inter Region Data Transfer In from Frankfurt to Belgium",
            "0.00",
        ),
        ("internet", "out") => (
            "Network Internet Data Transfer Out from EMEA to EMEA",
            "0.12",
        ),
        ("internet", "in") => (
            "Network Internet Data Transfer In from EMEA to EMEA",
            "0.00",
        ),
        _ => return None,
    })
}

/// One line of a GCP detailed billing export (JSON lines), every column
/// BigQuery writes; `start` is the usage hour (Unix seconds), `cost` a
/// decimal, `amount` in `unit`, `credits` the `credits` array's elements.
pub fn gcp_export_line(
    sku: &str,
    resource: &str,
    start: i64,
    (cost, credits): (&str, &str),
    amount: u64,
    unit: &str,
) -> String {
    let time = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    };
    let month = chrono::DateTime::from_timestamp(start, 0)
        .unwrap_or_default()
        .format("%Y%m");
    let service = if sku.starts_with("Network") {
        "Networking"
    } else {
        "Compute Engine"
    };
    format!(
        r#"{{"billing_account_id":"01A2B3-C4D5E6-F7A8B9","service":{{"id":"6F81-5844-456A","description":"{service}"}},"sku":{{"id":"9DE9-9092-B3BC","description":"{sku}"}},"usage_start_time":"{}","usage_end_time":"{}","project":{{"id":"{GCP_PROJECT}","number":"123456789012","name":"{GCP_PROJECT}"}},"labels":[],"system_labels":[],"location":{{"location":"europe-west1","country":"BE","region":"europe-west1","zone":"europe-west1-b"}},"resource":{{"name":"{resource}","global_name":"//compute.googleapis.com/projects/{GCP_PROJECT}/zones/europe-west1-b/instances/{resource}"}},"export_time":"{}","cost":{cost},"currency":"USD","currency_conversion_rate":1.0,"usage":{{"amount":{amount},"unit":"{unit}","amount_in_pricing_units":{},"pricing_unit":"gibibyte"}},"credits":[{credits}],"invoice":{{"month":"{month}"}},"cost_type":"regular"}}"#,
        time(start),
        time(start + 3600),
        time(start + 7200),
        amount as f64 / f64::from(1u32 << 30),
    )
}

/// The export lines of instances' transfer: for each (instance, category,
/// direction) of `bytes`, two lines (two hours from `hour`) carrying its
/// bytes, priced at `multiplier` times the list price, the cost to nine
/// decimals. Returns them with each unit's cost in billionths, keyed
/// `"<instance> <category> <direction>"`.
pub fn gce_instance_transfer(
    bytes: &UnitBytes,
    hour: i64,
    multiplier: u32,
) -> (Vec<String>, BTreeMap<String, i128>) {
    in_two_hours(
        bytes,
        hour,
        |(instance, category, direction), part, start| {
            let (sku, price) = gcp_sku(category, direction)?;
            let cost = (i128::from(part) * nanos(&times(price, multiplier)) + (1 << 29)) >> 30;
            let text = format!("{}.{:09}", cost / 1_000_000_000, cost % 1_000_000_000);
            let line = gcp_export_line(sku, instance, start, (&text, ""), part, "bytes");
            Some((line, cost))
        },
    )
}

/// Lines an export has besides instances' transfer, at list prices, which
/// tollgate must ignore or cannot allocate: a core-hour of `instance`, 5
/// GiB of its transfer to Google's own services, and 3 GiB to the internet
/// from an instance that runs no agent. [`GCP_UNALLOCATED`] is what a
/// reconciliation must make of them.
pub fn gcp_other_lines(instance: &str, hour: i64) -> Vec<String> {
    vec![
        gcp_export_line(
            "N2 Instance Core running in Belgium",
            instance,
            hour,
            ("0.031611", ""),
            3600,
            "seconds",
        ),
        gcp_export_line(
            "Network Data Transfer to Google Services from EMEA to EMEA",
            instance,
            hour,
            ("0.05", ""),
            5 << 30,
            "bytes",
        ),
        gcp_export_line(
            "Network Internet Data Transfer Out from EMEA to EMEA",
            GCP_UNALLOCATED[1].0,
            hour,
            ("0.36", ""),
            3 << 30,
            "bytes",
        ),
    ]
}

/// The resources of [`gcp_other_lines`] whose cost a reconciliation cannot
/// allocate, in the order it reports them (node a's instance first): the
/// cost in dollars and the reason.
pub const GCP_UNALLOCATED: [(&str, &str, &str); 2] = [
    ("gke-sim-pool-1-node-a", "0.05", "category_not_metered"),
    ("gke-unmanaged-7x2k", "0.36", "node_not_metered"),
];

/// The subscription of the Azure fixtures.
pub const AZURE_SUBSCRIPTION: &str = "5ab1e7c4-0000-4000-8000-00000000aa01";

/// The resource id of the virtual machine a node of `name` stands for, as
/// Azure's cost details write it (its provider id is `azure://` and this).
pub fn azure_vm(node: &str) -> String {
    format!(
        "/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/MC_shop_aks_westeurope/providers/\
         Microsoft.Compute/virtualMachines/aks-sim-{node}"
    )
}

/// The meter subcategory and name Azure's cost details bill a virtual
/// machine's transfer of a tollgate category and direction under
/// (category `Bandwidth`), and its list price per GB; `None` for what is
/// not billed (same-zone transfer).
pub fn azure_meter(
    category: &str,
    direction: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match (category, direction) {
        ("cross_zone", "out") => (
            "Inter Availability Zone",
            "Inter Availability Zone Data Transfer Out",
            "0.01",
        ),
        ("cross_zone", "in") => (
            "Inter Availability Zone",
            "Inter Availability Zone Data Transfer In",
            "0.01",
        ),
        ("cross_region", "out") => (
            "Intra Continent",
            "Intra Continent Data Transfer Out",
            "0.02",
        ),
        ("cross_region", "in") => (
            "Intra Continent",
            "Intra Continent Data Transfer In",
            "0.00",
        ),
        ("internet", "out") => ("Rtn Preference: MGN", "Standard Data Transfer Out", "0.087"),
        ("internet", "in") => ("", "Data Transfer In", "0.00"),
        _ => return None,
    })
}

/// The header of Azure's cost details in the Enterprise Agreement layout.
pub const AZURE_EA_HEADER: &str = "InvoiceSectionName,AccountName,SubscriptionId,SubscriptionName,\
    ResourceGroup,ResourceLocation,Date,ProductName,MeterCategory,MeterSubCategory,MeterId,MeterName,\
    MeterRegion,UnitOfMeasure,Quantity,EffectivePrice,CostInBillingCurrency,CostCenter,ConsumedService,\
    ResourceId,Tags,BillingCurrencyCode";

/// One record of Azure's cost details under [`AZURE_EA_HEADER`]: the day
/// of `start` (Unix seconds), the meter, its quantity in `unit` and its
/// cost, of `resource`.
pub fn azure_cost_line(
    start: i64,
    (category, subcategory, meter): (&str, &str, &str),
    (quantity, unit, cost): (&str, &str, &str),
    resource: &str,
) -> String {
    let day = chrono::DateTime::from_timestamp(start, 0)
        .unwrap_or_default()
        .format("%m/%d/%Y");
    format!(
        "Shop,shop,{AZURE_SUBSCRIPTION},shop-prod,MC_shop_aks_westeurope,westeurope,{day},\
         \"{category} - {subcategory}\",{category},{subcategory},9995d93a-7d35-4d3f-9c69-7a7fea447ef4,\
         {meter},Zone 1,{unit},{quantity},0.087,{cost},,Microsoft.Compute,{resource},,USD"
    )
}

/// The cost details records of virtual machines' transfer: for each
/// (resource id, category, direction) of `bytes`, two records (of the
/// hours from `hour`) carrying its bytes, priced at `multiplier` times the
/// list price. Returns them with each unit's cost in billionths, keyed
/// `"<resource id> <category> <direction>"`.
pub fn azure_vm_transfer(
    bytes: &UnitBytes,
    hour: i64,
    multiplier: u32,
) -> (Vec<String>, BTreeMap<String, i128>) {
    let meter = |category: &str, direction: &str| {
        azure_meter(category, direction)
            .map(|(subcategory, meter, price)| ((subcategory, meter), price))
    };
    in_gigabytes(
        (bytes, hour, multiplier),
        meter,
        |(subcategory, meter), resource, start, (quantity, cost)| {
            azure_cost_line(
                start,
                ("Bandwidth", subcategory, meter),
                (quantity, "1 GB", cost),
                resource,
            )
        },
    )
}

/// Records cost details have besides virtual machines' transfer, at list
/// prices, which tollgate must ignore or cannot allocate: a day of the
/// virtual machine `resource`, 5 GB of a load balancer's processing, and 3
/// GB to the internet from a virtual machine that runs no agent.
/// [`AZURE_UNALLOCATED`] is what a reconciliation must make of them.
pub fn azure_other_lines(resource: &str, hour: i64) -> Vec<String> {
    vec![
        azure_cost_line(
            hour,
            ("Virtual Machines", "Dv5 Series", "D4 v5"),
            ("24", "1 Hour", "4.608"),
            resource,
        ),
        azure_cost_line(
            hour,
            ("Load Balancer", "Standard", "Standard Data Processed"),
            ("5", "1 GB", "0.025"),
            AZURE_UNALLOCATED[1].0,
        ),
        azure_cost_line(
            hour,
            (
                "Bandwidth",
                "Rtn Preference: MGN",
                "Standard Data Transfer Out",
            ),
            ("3", "1 GB", "0.261"),
            AZURE_UNALLOCATED[0].0,
        ),
    ]
}

/// The resources of [`azure_other_lines`] whose cost a reconciliation
/// cannot allocate, in the order it reports them: the cost in dollars and
/// the reason.
pub const AZURE_UNALLOCATED: [(&str, &str, &str); 2] = [
    (
        "/subscriptions/5ab1e7c4-0000-4000-8000-00000000aa01/resourceGroups/MC_shop_aks_westeurope/providers/Microsoft.Compute/virtualMachines/aks-unmanaged-0",
        "0.26",
        "node_not_metered",
    ),
    (
        "/subscriptions/5ab1e7c4-0000-4000-8000-00000000aa01/resourceGroups/MC_shop_aks_westeurope/providers/Microsoft.Network/loadBalancers/kubernetes",
        "0.03",
        "category_not_metered",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_as_a_cur_writes_them() {
        assert_eq!(gigabytes(1 << 30), "1.0000000000");
        assert_eq!(gigabytes(1), "0.0000000009");
        assert_eq!(cost("1.0000000000", "0.01"), "0.0100000000");
        assert_eq!(cost("2.5000000000", "0.09"), "0.2250000000");
        assert_eq!(times("0.09", 1000), "90.00");
        assert_eq!(nanos("0.0100000005"), 10_000_001);
        assert_eq!(iso(1_793_491_200), "2026-11-01T00:00:00Z");
    }
}
