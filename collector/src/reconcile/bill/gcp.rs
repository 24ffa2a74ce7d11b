//! The GCP Cloud Billing detailed usage cost export (BigQuery table
//! `gcp_billing_export_resource_v1_<BILLING_ACCOUNT_ID>`), as exported to
//! files: newline-delimited JSON ([`read_json`], `.json` or `.json.gz`,
//! the nested records as they are) or CSV ([`read_csv`], the nested
//! fields flattened to `sku.description` or `sku_description` columns; the
//! file is recognised by that column, the others are matched regardless of
//! case). Both are read one line at a time into reused buffers.
//!
//! # Fields
//!
//! | field | use |
//! |---|---|
//! | `sku.description` | what the line bills: the table below; the line item's `usage` |
//! | `usage_start_time` | its UTC day, written `2026-10-01 07:00:00 UTC` by BigQuery, or RFC 3339 |
//! | `resource.name` | the line item's resource: the instance's name for a VM's transfer (empty when the line has none) |
//! | `project.id` | its account |
//! | `usage.amount`, `usage.unit` | its bytes: unit `byte` or `bytes` (the amount itself, half a byte rounded up) or `gibibyte` (× 2^30); any other unit on a network SKU is an error |
//! | `cost`, `currency` | its cost, exactly as written |
//! | `credits[].amount` | JSON only: added to `cost` (credits are negative), so a line's cost is what the bill charges for it |
//!
//! BigQuery cannot write a repeated field such as `credits` to CSV: a CSV
//! export carries `cost` as it is, before credits. To reconcile net of
//! credits from CSV, fold them into the cost in the export's query
//! (`cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) c), 0) AS cost`).
//!
//! In JSON, BigQuery writes `cost` and `usage.amount` (FLOAT64 columns) as
//! numbers and INT64 columns as strings; both are accepted for every
//! number, and each is read exactly as its text is written (up to 30
//! digits), never through a float.
//!
//! Cloud Billing's invoice month runs in US Pacific time: export a month by
//! `usage_start_time` in UTC (`WHERE usage_start_time >= '2026-10-01' AND
//! usage_start_time < '2026-11-01'`), not by `invoice.month`, or the
//! month's first and last hours fall in the wrong month.
//!
//! # SKUs
//!
//! Matched on `sku.description`, ignoring case; `X` and `Y` are the SKU's
//! source and destination (a region, a city or a continent). Older exports
//! name the SKUs `Egress` and `Ingress` where current ones say `Data
//! Transfer Out` and `Data Transfer In`; both are read.
//!
//! | `sku.description` | billed | direction |
//! |---|---|---|
//! | `Network Inter Zone Data Transfer Out`, `Network Inter Zone Egress` | cross_zone | out |
//! | `Network Inter Zone Data Transfer In`, `Network Inter Zone Ingress` | cross_zone | in |
//! | `Network Inter Region Data Transfer Out from X to Y`, `Network Inter Region Egress from X to Y` | cross_region | out |
//! | `Network Inter Region Data Transfer In from X to Y`, `Network Inter Region Ingress from X to Y` | cross_region | in |
//! | `Network Internet Data Transfer Out from X to Y`, `Network Internet Egress from X to Y` (Premium Tier) | internet | out |
//! | `Network Standard Data Transfer Out to Internet from X`, `Network Internet Standard Tier Egress from X` (Standard Tier) | internet | out |
//! | `Network Internet Data Transfer In from X to Y`, `Network Internet Ingress from X to Y` | internet | in |
//! | `Networking Cloud Nat Data Processing`, `NAT Gateway: Data processing charge in X`, `Cloud NAT Gateway: Data Processing` | nat_gateway | out |
//! | `Network Google Egress ...` and `Network Data Transfer to Google Services ...` (to Google's own services), `Network Egress via Carrier Peering ...`, load balancer data processing, `Networking Private Nat Data Processing` | not_metered | out, or as named |
//! | anything else: `Network Intra Zone Data Transfer Out` (same zone, free), Cloud NAT uptime, VM cores and RAM, disks, GKE cluster management, Cloud Storage | not network | |
//!
//! That is: a description starting `Network ` is network transfer when it
//! names a direction (`Egress`, `Data Transfer Out`, `Data Transfer to`:
//! out; `Ingress`, `Data Transfer In`: in) and a scope (`Inter Zone`,
//! `Inter Region`, `Internet`; any other scope is `not_metered`); a Cloud
//! NAT SKU naming `Data Processing` is NAT processing, which Cloud NAT
//! bills on both directions of a connection alike, and any other
//! `Data Processing` is `not_metered`. The
//! service is not checked: a Cloud SQL instance's internet transfer is
//! handed on too, under the instance's name.
//!
//! Every line read counts in [`FileSummary::lines`]. Line N is the file's
//! N-th line (JSON lines) or N-th record after the header (CSV).

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;
use std::marker::PhantomData;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    next_record, open_text, BillError, Billed, Decimal, Direction, Expect, FileSummary, LineItem,
};

/// Reads the export `file` in JSON lines, handing each network line item
/// to `on_item`.
pub fn read_json(
    file: &Path,
    mut expect: Expect<'_>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let mut input = open_text(file)?;
    let mut text = String::new();
    let mut summary = FileSummary::default();
    let mut line = 0;
    loop {
        text.clear();
        let read = input
            .read_line(&mut text)
            .map_err(|e| BillError::new(file, line + 1, "-", e))?;
        if read == 0 {
            break;
        }
        line += 1;
        let record = text.trim_start_matches('\u{feff}').trim();
        if record.is_empty() {
            continue;
        }
        let row: Row<'_> = serde_json::from_str(record).map_err(|e| {
            BillError::new(
                file,
                line,
                "-",
                format!("not a record of the billing export: {e}"),
            )
        })?;
        summary.lines += 1;
        let Some(sku) = row.sku.as_ref().and_then(|sku| sku.description.as_ref()) else {
            continue;
        };
        let Some((billed, direction)) = classify(&sku.0) else {
            continue;
        };
        let at = At { file, line };
        let start = row
            .usage_start_time
            .as_ref()
            .ok_or_else(|| at.missing("usage_start_time"))?;
        let day = at.day(&start.0, "usage_start_time")?;
        let currency = row
            .currency
            .as_ref()
            .ok_or_else(|| at.missing("currency"))?;
        expect.check(line, (day, "usage_start_time"), (&currency.0, "currency"))?;
        let usage = row.usage.as_ref();
        let unit = usage
            .and_then(|usage| usage.unit.as_ref())
            .ok_or_else(|| at.missing("usage.unit"))?;
        let amount = usage
            .and_then(|usage| usage.amount.as_ref())
            .ok_or_else(|| at.missing("usage.amount"))?;
        let bytes = at.bytes(
            (amount.decimal(), amount, "usage.amount"),
            (&unit.0, "usage.unit"),
        )?;
        let cost = row.cost.as_ref().ok_or_else(|| at.missing("cost"))?;
        let cost = cost
            .decimal()
            .ok_or_else(|| at.not_a_number(cost, "cost"))?;
        let credits = match &row.credits {
            Some(Credits(Err(amount))) => return Err(at.not_a_number(amount, "credits.amount")),
            Some(Credits(Ok(total))) => *total,
            None => ZERO,
        };
        let cost_nanos = add(cost, credits)
            .and_then(Decimal::nanos)
            .ok_or_else(|| at.error("cost", "too large a cost"))?;
        on_item(LineItem {
            line,
            resource: row
                .resource
                .as_ref()
                .and_then(|resource| resource.name.as_ref())
                .map_or("", |name| &*name.0),
            usage: &sku.0,
            billed,
            direction,
            day,
            bytes,
            cost_nanos,
            currency: &currency.0,
            account: row
                .project
                .as_ref()
                .and_then(|project| project.id.as_ref())
                .map_or("", |id| &*id.0),
        })?;
        summary.network_lines += 1;
    }
    Ok(summary)
}

/// The columns [`read_csv`] takes: the field, and its name with the
/// nesting flattened to `_`.
const CSV_COLUMNS: [(&str, &str); 8] = [
    ("sku.description", "sku_description"),
    ("usage_start_time", "usage_start_time"),
    ("resource.name", "resource_name"),
    ("project.id", "project_id"),
    ("usage.amount", "usage_amount"),
    ("usage.unit", "usage_unit"),
    ("cost", "cost"),
    ("currency", "currency"),
];

/// Reads the export `file` in CSV, handing each network line item to
/// `on_item`.
pub fn read_csv(
    file: &Path,
    mut expect: Expect<'_>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open_text(file)?);
    let header = reader
        .headers()
        .map_err(|e| BillError::new(file, 0, "-", e))?
        .clone();
    let mut columns = [0; CSV_COLUMNS.len()];
    for (slot, (field, flat)) in columns.iter_mut().zip(CSV_COLUMNS) {
        *slot = header
            .iter()
            .position(|name| {
                let name = name.trim_start_matches('\u{feff}').trim();
                name.len() == flat.len()
                    && name
                        .bytes()
                        .map(|b| if b == b'.' { b'_' } else { b })
                        .zip(flat.bytes())
                        .all(|(a, b)| a.eq_ignore_ascii_case(&b))
            })
            .ok_or_else(|| {
                BillError::new(
                    file,
                    0,
                    field,
                    format!(
                        "no such column in the header (as {field} or {flat}): not a detailed \
                         usage cost export, or one without it"
                    ),
                )
            })?;
    }
    let [sku, start, resource, project, amount, unit, cost, currency] = columns;
    let name = |column: usize| {
        header
            .get(column)
            .unwrap_or("-")
            .trim_start_matches('\u{feff}')
            .trim()
    };
    let mut summary = FileSummary::default();
    let mut record = csv::StringRecord::new();
    let mut line = 0;
    while next_record(&mut reader, &mut record, file, &mut line)? {
        summary.lines += 1;
        let field = |column: usize| record.get(column).unwrap_or("").trim();
        let Some((billed, direction)) = classify(field(sku)) else {
            continue;
        };
        let at = At { file, line };
        let day = at.day(field(start), name(start))?;
        expect.check(line, (day, name(start)), (field(currency), name(currency)))?;
        let amount_text = field(amount);
        let bytes = at.bytes(
            (Decimal::parse(amount_text), &amount_text, name(amount)),
            (field(unit), name(unit)),
        )?;
        let cost_text = field(cost);
        let cost_nanos = Decimal::parse(cost_text)
            .ok_or_else(|| at.not_a_number(&cost_text, name(cost)))?
            .nanos()
            .ok_or_else(|| at.error(name(cost), "too large a cost"))?;
        on_item(LineItem {
            line,
            resource: field(resource),
            usage: field(sku),
            billed,
            direction,
            day,
            bytes,
            cost_nanos,
            currency: field(currency),
            account: field(project),
        })?;
        summary.network_lines += 1;
    }
    Ok(summary)
}

/// What a SKU bills, from its description (the module's table); `None`
/// for anything but network transfer.
fn classify(sku: &str) -> Option<(Billed, Direction)> {
    let has = |needle: &str| {
        sku.as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
    };
    let starts = |prefix: &str| {
        sku.get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    if has("data processing") && (has("cloud nat") || starts("nat gateway")) {
        return Some((Billed::NatGateway, Direction::Out));
    }
    let network = starts("network ");
    if (network || starts("networking ")) && has("data processing") {
        // A load balancer's or Private NAT's processing: no node's bytes.
        return Some((Billed::Unmetered, Direction::Out));
    }
    if !network {
        return None;
    }
    let direction = if has("egress") || has("data transfer out") || has("data transfer to") {
        Direction::Out
    } else if has("ingress") || has("data transfer in") {
        Direction::In
    } else {
        return None;
    };
    let billed = if has("intra zone") || has("intra-zone") {
        // Same zone: free, and metered as such.
        return None;
    } else if has("inter zone") || has("inter-zone") {
        Billed::CrossZone
    } else if has("inter region") || has("inter-region") {
        Billed::CrossRegion
    } else if has("internet") {
        Billed::Internet
    } else {
        // To Google's services, over carrier peering or Interconnect:
        // transfer the bill prices apart from the categories matched.
        Billed::Unmetered
    };
    Some((billed, direction))
}

/// A line of the file, for its errors.
struct At<'f> {
    file: &'f Path,
    line: u64,
}

impl At<'_> {
    fn error(&self, column: &str, message: impl ToString) -> BillError {
        BillError::new(self.file, self.line, column, message)
    }

    fn missing(&self, field: &str) -> BillError {
        self.error(field, "missing on a network line item")
    }

    fn not_a_number(&self, text: &dyn fmt::Debug, column: &str) -> BillError {
        self.error(column, format!("{text:?} is not a number"))
    }

    /// The UTC day of a `usage_start_time`.
    fn day(&self, text: &str, column: &str) -> Result<NaiveDate, BillError> {
        let text = text.trim();
        let day = match text.strip_suffix(" UTC") {
            Some(utc) => NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|time| time.date()),
            None => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|time| time.naive_utc().date()),
        };
        day.ok_or_else(|| {
            self.error(
                column,
                format!(
                    "{text:?} is not a time like 2026-10-01 07:00:00 UTC or 2026-10-01T07:00:00Z"
                ),
            )
        })
    }

    /// The bytes of a usage `amount` in `unit`.
    fn bytes(
        &self,
        (amount, text, amount_column): (Option<Decimal>, &dyn fmt::Debug, &str),
        (unit, unit_column): (&str, &str),
    ) -> Result<u128, BillError> {
        let per_unit = match unit.trim() {
            "byte" | "bytes" => 1,
            "gibibyte" | "gibibytes" => 1 << 30,
            other => {
                return Err(self.error(
                    unit_column,
                    format!("unit {other:?} on a network SKU: expected bytes or gibibyte"),
                ))
            }
        };
        let amount = amount.ok_or_else(|| self.not_a_number(text, amount_column))?;
        amount
            .times(per_unit, 1)
            .and_then(|bytes| u128::try_from(bytes).ok())
            .ok_or_else(|| {
                self.error(
                    amount_column,
                    format!("{text:?} {} is negative or too large", unit.trim()),
                )
            })
    }
}

/// Zero, the sum of no credits.
const ZERO: Decimal = Decimal {
    digits: 0,
    scale: 0,
};

/// `a + b`, exactly; `None` on overflow.
fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
    let scale = a.scale.max(b.scale);
    let aligned = |d: Decimal| d.digits.checked_mul(10i128.checked_pow(scale - d.scale)?);
    Some(Decimal {
        digits: aligned(a)?.checked_add(aligned(b)?)?,
        scale,
    })
}

/// The fields of one JSON line that [`read_json`] takes; the others are
/// skipped.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    sku: Option<Sku<'a>>,
    #[serde(borrow)]
    usage_start_time: Option<Text<'a>>,
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(borrow)]
    project: Option<Project<'a>>,
    #[serde(borrow)]
    usage: Option<Usage<'a>>,
    #[serde(borrow)]
    cost: Option<Amount<'a>>,
    #[serde(borrow)]
    currency: Option<Text<'a>>,
    credits: Option<Credits>,
}

#[derive(Deserialize)]
struct Sku<'a> {
    #[serde(borrow)]
    description: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Project<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Usage<'a> {
    #[serde(borrow)]
    amount: Option<Amount<'a>>,
    #[serde(borrow)]
    unit: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Credit<'a> {
    #[serde(borrow)]
    amount: Option<Amount<'a>>,
}

/// A JSON string, borrowed from the line unless it holds escapes
/// (BigQuery writes `&` as `\u0026`).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Strings<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Strings(PhantomData))
    }
}

/// A JSON number, or a number in a string, as written in the file.
enum Amount<'a> {
    Text(Cow<'a, str>),
    Number(&'a str),
}

impl Amount<'_> {
    fn decimal(&self) -> Option<Decimal> {
        match self {
            Amount::Text(text) => Decimal::parse(text),
            Amount::Number(text) => Decimal::parse(text),
        }
    }
}

impl fmt::Display for Amount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Text(text) => f.write_str(text),
            Amount::Number(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for Amount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Text(text) => write!(f, "{text:?}"),
            Amount::Number(text) => f.write_str(text),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Amount<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The value's own text: a float would round numbers of more than
        // 15 significant digits.
        let raw = <&'de RawValue>::deserialize(deserializer)?.get();
        if raw.starts_with('"') {
            let text: Text<'de> = serde_json::from_str(raw).map_err(de::Error::custom)?;
            return Ok(Amount::Text(text.0));
        }
        if raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            return Ok(Amount::Number(raw));
        }
        Err(de::Error::invalid_type(
            de::Unexpected::Other(raw),
            &"a number",
        ))
    }
}

/// The sum of a line's `credits[].amount`, summed as the array streams by;
/// `Err` holds an amount that is not a number.
struct Credits(Result<Decimal, String>);

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sum;
        impl<'de> Visitor<'de> for Sum {
            type Value = Credits;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of credits")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Credits, A::Error> {
                let mut total = Ok(ZERO);
                while let Some(credit) = seq.next_element::<Credit<'de>>()? {
                    if let (Ok(sum), Some(amount)) = (&total, credit.amount) {
                        let sum = *sum;
                        total = amount
                            .decimal()
                            .and_then(|value| add(sum, value))
                            .ok_or_else(|| amount.to_string());
                    }
                }
                Ok(Credits(total))
            }
        }
        deserializer.deserialize_seq(Sum)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use std::io::Write as _;
    use std::path::PathBuf;

    use super::*;
    use crate::reconcile::bill::{describe, read_described, Format};
    use crate::test_support::TempDir;

    /// One line item of a fixture: the fields that vary.
    #[derive(Clone, Copy)]
    struct Rec {
        service: (&'static str, &'static str),
        sku: (&'static str, &'static str),
        start: &'static str,
        project: &'static str,
        zone: &'static str,
        resource: &'static str,
        amount: &'static str,
        unit: &'static str,
        cost: &'static str,
        credits: &'static str,
        currency: &'static str,
    }

    const COMPUTE: (&str, &str) = ("6F81-5844-456A", "Compute Engine");
    const NETWORKING: (&str, &str) = ("E505-1604-58F8", "Networking");
    const BELGIUM_B: &str = "europe-west1-b";
    const NODE_B: &str = "gke-prod-eu-default-pool-6f1c2a3b-k7x2";
    const NODE_C: &str = "gke-prod-eu-default-pool-6f1c2a3b-q9m4";
    const NODE_NL: &str = "gke-prod-nl-pool-1-0d9e8f7a-z1w3";

    const BASE: Rec = Rec {
        service: COMPUTE,
        sku: ("DE9E-AFBC-A15A", "Network Inter Zone Data Transfer Out"),
        start: "2026-10-03 07:00:00 UTC",
        project: "shop-prod",
        zone: BELGIUM_B,
        resource: NODE_B,
        amount: "5368709120",
        unit: "bytes",
        cost: "0.05",
        credits: "[]",
        currency: "USD",
    };

    /// A month of a cluster in two regions: instances' cores, RAM and
    /// transfer, Cloud NAT, GKE's fee and a bucket.
    const MONTH: [Rec; 13] = [
        Rec {
            sku: ("0C5C-D8E4-38C1", "N2 Instance Core running in Belgium"),
            amount: "86400",
            unit: "seconds",
            cost: "0.763200",
            ..BASE
        },
        Rec {
            sku: ("2D2F-4A4B-A9B8", "N2 Instance Ram running in Belgium"),
            amount: "2.97634918400000E15",
            unit: "byte-seconds",
            cost: "0.409344",
            ..BASE
        },
        BASE,
        Rec {
            start: "2026-10-04 13:00:00 UTC",
            zone: "europe-west1-c",
            resource: NODE_C,
            amount: "1.073741824E9",
            cost: "0.01",
            ..BASE
        },
        Rec {
            sku: (
                "F2AB-8C4B-3D05",
                "Network Internet Data Transfer Out from Belgium to Americas",
            ),
            start: "2026-10-04 22:00:00 UTC",
            amount: "2147483648",
            cost: "0.24",
            credits: r#"[{"name":"FreeTier:DE9E-AFBC","amount":-0.12,"full_name":"Free Tier","id":"FreeTier:DE9E-AFBC","type":"FREE_TIER"}]"#,
            ..BASE
        },
        Rec {
            sku: (
                "9D6B-3B2F-C4A1",
                "Network Standard Data Transfer Out to Internet from Belgium",
            ),
            start: "2026-10-17 00:00:00 UTC",
            zone: "europe-west1-c",
            resource: NODE_C,
            amount: "10737418240",
            cost: "0.85",
            ..BASE
        },
        Rec {
            sku: (
                "3C1E-5A7B-90D2",
                "Network Inter Region Data Transfer Out from Belgium to Netherlands",
            ),
            start: "2026-10-17 08:00:00 UTC",
            amount: "3221225472",
            cost: "0.06",
            ..BASE
        },
        Rec {
            sku: (
                "B307-417F-4FD2",
                "Network Internet Data Transfer In from EMEA to Belgium",
            ),
            start: "2026-10-17 08:00:00 UTC",
            amount: "1234567",
            cost: "0",
            ..BASE
        },
        Rec {
            service: NETWORKING,
            sku: ("015F-5732-FFF0", "Networking Cloud Nat Data Processing"),
            start: "2026-10-17 09:00:00 UTC",
            resource: "nat-prod-eu",
            amount: "4294967296",
            cost: "0.18",
            ..BASE
        },
        Rec {
            sku: ("14F9-7705-2FD4", "Network Intra Zone Data Transfer Out"),
            amount: "99999999",
            cost: "0",
            ..BASE
        },
        Rec {
            service: ("CCD8-9BF1-090E", "Kubernetes Engine"),
            sku: ("B561-BFBD-1264", "Regional Kubernetes Clusters"),
            resource: "prod-eu",
            amount: "86400",
            unit: "seconds",
            cost: "2.4",
            ..BASE
        },
        Rec {
            service: ("95FF-2EF5-5EA1", "Cloud Storage"),
            sku: ("E5F0-6A5F-7A4D", "Standard Storage Belgium"),
            resource: "shop-prod-assets",
            amount: "9.2233720368547E14",
            unit: "byte-seconds",
            cost: "0.0052",
            ..BASE
        },
        Rec {
            start: "2026-10-17 10:00:00 UTC",
            project: "shop-data",
            zone: "europe-west4-a",
            resource: NODE_NL,
            amount: "1536.5",
            cost: "0.0000000143",
            ..BASE
        },
    ];

    /// What the readers hand on of [`MONTH`], `internet_cost` being the
    /// cost of line 5 (before its credit in CSV, after in JSON).
    fn expected(internet_cost: &str) -> Vec<String> {
        [
            "3 gke-prod-eu-default-pool-6f1c2a3b-k7x2 | Network Inter Zone Data Transfer Out | cross_zone out 2026-10-03 5368709120 50000000 USD shop-prod",
            "4 gke-prod-eu-default-pool-6f1c2a3b-q9m4 | Network Inter Zone Data Transfer Out | cross_zone out 2026-10-04 1073741824 10000000 USD shop-prod",
            &format!("5 gke-prod-eu-default-pool-6f1c2a3b-k7x2 | Network Internet Data Transfer Out from Belgium to Americas | internet out 2026-10-04 2147483648 {internet_cost} USD shop-prod"),
            "6 gke-prod-eu-default-pool-6f1c2a3b-q9m4 | Network Standard Data Transfer Out to Internet from Belgium | internet out 2026-10-17 10737418240 850000000 USD shop-prod",
            "7 gke-prod-eu-default-pool-6f1c2a3b-k7x2 | Network Inter Region Data Transfer Out from Belgium to Netherlands | cross_region out 2026-10-17 3221225472 60000000 USD shop-prod",
            "8 gke-prod-eu-default-pool-6f1c2a3b-k7x2 | Network Internet Data Transfer In from EMEA to Belgium | internet in 2026-10-17 1234567 0 USD shop-prod",
            "9 nat-prod-eu | Networking Cloud Nat Data Processing | nat_gateway out 2026-10-17 4294967296 180000000 USD shop-prod",
            "13 gke-prod-nl-pool-1-0d9e8f7a-z1w3 | Network Inter Zone Data Transfer Out | cross_zone out 2026-10-17 1537 14 USD shop-data",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn region(zone: &str) -> &str {
        &zone[..zone.len() - 2]
    }

    /// The record as BigQuery exports it to newline-delimited JSON.
    fn json(rec: &Rec) -> String {
        let start = NaiveDateTime::parse_from_str(rec.start, "%Y-%m-%d %H:%M:%S UTC").unwrap();
        let end = (start + chrono::TimeDelta::hours(1)).format("%Y-%m-%d %H:%M:%S UTC");
        let (pricing_unit, per) = match rec.unit {
            "bytes" => ("gibibyte", 2f64.powi(30)),
            "seconds" => ("hour", 3600.0),
            _ => ("gibibyte month", 2f64.powi(30) * 3600.0 * 24.0 * 31.0),
        };
        let in_pricing_units = rec.amount.trim_matches('"').parse::<f64>().unwrap() / per;
        let country = if rec.zone.starts_with("europe-west4") {
            "NL"
        } else {
            "BE"
        };
        let resource = if rec.service == COMPUTE {
            format!(
                r#"{{"name":"{}","global_name":"//compute.googleapis.com/projects/{}/zones/{}/instances/{}"}}"#,
                rec.resource,
                rec.project,
                rec.zone,
                7_315_862_044_109_224_000u64 + rec.resource.len() as u64
            )
        } else {
            format!(r#"{{"name":"{}","global_name":null}}"#, rec.resource)
        };
        format!(
            concat!(
                r#"{{"billing_account_id":"01A2B3-C4D5E6-F7A8B9","service":{{"id":"{}","description":"{}"}},"#,
                r#""sku":{{"id":"{}","description":"{}"}},"usage_start_time":"{}","usage_end_time":"{}","#,
                r#""project":{{"id":"{}","number":"482915736201","name":"{}","labels":[{{"key":"env","value":"prod"}}],"#,
                r#""ancestry_numbers":"/873456120934/482915736201/","ancestors":[{{"resource_name":"projects/482915736201","display_name":"{}"}}]}},"#,
                r#""labels":[{{"key":"goog-k8s-cluster-name","value":"prod-eu"}}],"system_labels":[],"#,
                r#""location":{{"location":"{}","country":"{}","region":"{}","zone":"{}"}},"resource":{},"#,
                r#""tags":[],"price":{{"effective_price":0.01,"tier_start_amount":0,"unit":"{}","pricing_unit_quantity":1}},"#,
                r#""transaction_type":"GOOGLE","seller_name":null,"export_time":"2026-10-18 04:12:09.731 UTC","#,
                r#""cost":{},"cost_at_list":{},"currency":"{}","currency_conversion_rate":1.0,"#,
                r#""usage":{{"amount":{},"unit":"{}","amount_in_pricing_units":{},"pricing_unit":"{}"}},"#,
                r#""credits":{},"invoice":{{"month":"202610","publisher_type":"GOOGLE"}},"cost_type":"regular","adjustment_info":{{}}}}"#,
            ),
            rec.service.0,
            rec.service.1,
            rec.sku.0,
            rec.sku.1,
            rec.start,
            end,
            rec.project,
            rec.project,
            rec.project,
            rec.zone,
            country,
            region(rec.zone),
            rec.zone,
            resource,
            pricing_unit,
            rec.cost,
            rec.cost,
            rec.currency,
            rec.amount,
            rec.unit,
            in_pricing_units,
            pricing_unit,
            rec.credits,
        )
    }

    /// The columns of a CSV export: the nested fields flattened, as
    /// `name.field`.
    const CSV_HEADER: [&str; 19] = [
        "billing_account_id",
        "service.id",
        "service.description",
        "sku.id",
        "sku.description",
        "usage_start_time",
        "usage_end_time",
        "project.id",
        "project.name",
        "location.region",
        "location.zone",
        "resource.name",
        "resource.global_name",
        "cost",
        "currency",
        "usage.amount",
        "usage.unit",
        "cost_type",
        "invoice.month",
    ];

    fn csv_row(rec: &Rec) -> [String; 19] {
        [
            "01A2B3-C4D5E6-F7A8B9",
            rec.service.0,
            rec.service.1,
            rec.sku.0,
            rec.sku.1,
            rec.start,
            rec.start,
            rec.project,
            rec.project,
            region(rec.zone),
            rec.zone,
            rec.resource,
            "",
            rec.cost,
            rec.currency,
            rec.amount,
            rec.unit,
            "regular",
            "202610",
        ]
        .map(str::to_owned)
    }

    fn write_json(path: &Path, recs: &[Rec]) -> PathBuf {
        let text: String = recs.iter().map(|rec| json(rec) + "\n").collect();
        std::fs::write(path, text).unwrap();
        path.to_owned()
    }

    fn write_csv(path: &Path, header: &[&str], recs: &[Rec]) -> PathBuf {
        let mut writer = csv::Writer::from_path(path).unwrap();
        writer.write_record(header).unwrap();
        for rec in recs {
            writer.write_record(&csv_row(rec)[..header.len()]).unwrap();
        }
        writer.flush().unwrap();
        path.to_owned()
    }

    /// Reads `file` as `tollgate reconcile` does, for October 2026: its
    /// format, summary and line items, or the error's message.
    fn read_file(file: &Path) -> Result<(Format, FileSummary, Vec<String>), String> {
        read_described(file, |item| {
            format!("{} {}", describe(item, item.resource), item.account)
        })
    }

    fn summary(lines: u64, network_lines: u64) -> FileSummary {
        FileSummary {
            lines,
            network_lines,
        }
    }

    #[test]
    fn json_lines_hand_on_the_network_skus_net_of_credits() {
        let dir = TempDir::new("gcp-json");
        let file = write_json(&dir.join("billing.json"), &MONTH);
        assert_eq!(
            read_file(&file).unwrap(),
            (Format::GcpJson, summary(13, 8), expected("120000000"))
        );
    }

    #[test]
    fn gzipped_json_lines_read_the_same() {
        let dir = TempDir::new("gcp-json-gz");
        let plain = write_json(&dir.join("billing.json"), &MONTH);
        let file = dir.join("billing-000000000000.json.gz");
        let mut gzip = flate2::write::GzEncoder::new(
            std::fs::File::create(&file).unwrap(),
            Default::default(),
        );
        gzip.write_all(&std::fs::read(plain).unwrap()).unwrap();
        gzip.finish().unwrap();
        assert_eq!(
            read_file(&file).unwrap(),
            (Format::GcpJson, summary(13, 8), expected("120000000"))
        );
    }

    #[test]
    fn csv_with_dotted_or_flattened_columns_hands_on_the_same_before_credits() {
        let dir = TempDir::new("gcp-csv");
        let dotted = write_csv(&dir.join("billing.csv"), &CSV_HEADER, &MONTH);
        assert_eq!(
            read_file(&dotted).unwrap(),
            (Format::GcpCsv, summary(13, 8), expected("240000000"))
        );
        let header = CSV_HEADER.map(|name| name.replace('.', "_"));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let flat = write_csv(&dir.join("flat.csv"), &header, &MONTH);
        assert_eq!(
            read_file(&flat).unwrap(),
            (Format::GcpCsv, summary(13, 8), expected("240000000"))
        );
    }

    #[test]
    fn escapes_quoted_numbers_and_offsets_are_read_exactly() {
        let dir = TempDir::new("gcp-json-forms");
        let line = json(&Rec {
            sku: (
                "F2AB-8C4B-3D05",
                "Network Internet Egress from Belgium to Americas \\u0026 Canada",
            ),
            start: "2026-10-01 22:30:00 UTC",
            amount: "\"12.5\"",
            unit: "gibibyte",
            cost: "\"0.1234567890123456789\"",
            credits: r#"[{"name":"a","amount":-0.1},{"name":"b","amount":"-0.0000000005"}]"#,
            ..BASE
        })
        .replacen("2026-10-01 22:30:00 UTC", "2026-10-02T00:30:00+02:00", 1);
        let file = dir.join("billing.json");
        std::fs::write(&file, line).unwrap();
        assert_eq!(
            read_file(&file).unwrap().2,
            ["1 gke-prod-eu-default-pool-6f1c2a3b-k7x2 | Network Internet Egress from Belgium to Americas & Canada | internet out 2026-10-01 13421772800 23456789 USD shop-prod"]
        );
    }

    #[test]
    fn unquoted_numbers_are_read_as_written_not_through_a_float() {
        let dir = TempDir::new("gcp-json-digits");
        let line = json(&Rec {
            // 18 significant digits: the nearest float is 12345678.0.
            cost: "12345678.0000000005",
            credits: r#"[{"name":"a","amount":-1.5e-7}]"#,
            ..BASE
        });
        let file = dir.join("billing.json");
        std::fs::write(&file, line).unwrap();
        let items = read_file(&file).unwrap().2;
        assert_eq!(items.len(), 1);
        assert!(
            items[0].contains(" 12345677999999851 USD "),
            "12345678.0000000005 - 0.00000015 in nanos, the tie rounded away from zero: {}",
            items[0]
        );
    }

    #[test]
    fn skus_are_classified_by_scope_and_direction() {
        use Billed::*;
        use Direction::*;
        for (sku, expected) in [
            ("Network Inter Zone Egress", Some((CrossZone, Out))),
            ("Network Inter Zone Ingress", Some((CrossZone, In))),
            (
                "Network Inter Region Egress from Americas to EMEA",
                Some((CrossRegion, Out)),
            ),
            (
                "Network Inter Region Data Transfer In from Hong Kong to Virginia",
                Some((CrossRegion, In)),
            ),
            (
                "Network Internet Standard Tier Egress from Frankfurt",
                Some((Internet, Out)),
            ),
            (
                "Network Internet Ingress from China to Americas",
                Some((Internet, In)),
            ),
            (
                "NAT Gateway: Data processing charge in Americas",
                Some((NatGateway, Out)),
            ),
            (
                "Cloud NAT Gateway: Data Processing",
                Some((NatGateway, Out)),
            ),
            ("Networking Cloud Nat Gateway Uptime", None),
            (
                "Networking Private Nat Data Processing",
                Some((Unmetered, Out)),
            ),
            (
                "Network Google Egress from Americas to Americas",
                Some((Unmetered, Out)),
            ),
            (
                "Network Data Transfer to Google Services from Americas to Americas",
                Some((Unmetered, Out)),
            ),
            (
                "Network Egress via Carrier Peering Network - Americas Based",
                Some((Unmetered, Out)),
            ),
            (
                "Network HTTP Load Balancing Ingress from Load Balancer",
                Some((Unmetered, In)),
            ),
            (
                "Networking Traffic Egress GCP Inter Region within Europe",
                None,
            ),
            (
                "Regional External Application Load Balancer Outbound Data Processing for Mumbai",
                None,
            ),
        ] {
            assert_eq!(classify(sku), expected, "{sku}");
        }
    }

    /// The error reading [`BASE`] followed by `bad`, in JSON lines.
    fn json_error(name: &str, bad: Rec) -> (PathBuf, String) {
        let dir = TempDir::new(name);
        let file = write_json(&dir.join("billing.json"), &[BASE, bad]);
        let error = read_file(&file).unwrap_err();
        (file, error)
    }

    #[test]
    fn a_line_of_another_month_is_an_error() {
        let (file, error) = json_error(
            "gcp-month",
            Rec {
                start: "2026-11-01 03:00:00 UTC",
                ..BASE
            },
        );
        assert_eq!(
            error,
            format!(
                "{}:2: column usage_start_time: 2026-11-01 is not in 2026-10: this is a bill of another month",
                file.display()
            )
        );
    }

    #[test]
    fn a_line_in_another_currency_is_an_error() {
        let (file, error) = json_error(
            "gcp-currency",
            Rec {
                currency: "EUR",
                ..BASE
            },
        );
        assert_eq!(
            error,
            format!(
                "{}:2: column currency: currency \"EUR\", but earlier line items are in \"USD\": one currency per reconciliation",
                file.display()
            )
        );
    }

    #[test]
    fn a_network_sku_in_another_unit_is_an_error() {
        let (file, error) = json_error(
            "gcp-unit",
            Rec {
                unit: "seconds",
                ..BASE
            },
        );
        assert_eq!(
            error,
            format!(
                "{}:2: column usage.unit: unit \"seconds\" on a network SKU: expected bytes or gibibyte",
                file.display()
            )
        );
    }

    #[test]
    fn a_bad_number_is_an_error() {
        let (file, error) = json_error(
            "gcp-cost",
            Rec {
                cost: "\"0,05\"",
                ..BASE
            },
        );
        assert_eq!(
            error,
            format!(
                "{}:2: column cost: \"0,05\" is not a number",
                file.display()
            )
        );
        let (file, error) = json_error(
            "gcp-credit",
            Rec {
                credits: r#"[{"name":"Free Tier","amount":"n/a"}]"#,
                ..BASE
            },
        );
        assert_eq!(
            error,
            format!(
                "{}:2: column credits.amount: \"n/a\" is not a number",
                file.display()
            )
        );
        let dir = TempDir::new("gcp-csv-amount");
        let file = write_csv(
            &dir.join("billing.csv"),
            &CSV_HEADER,
            &[
                BASE,
                Rec {
                    amount: "-5",
                    ..BASE
                },
            ],
        );
        assert_eq!(
            read_file(&file).unwrap_err(),
            format!(
                "{}:2: column usage.amount: \"-5\" bytes is negative or too large",
                file.display()
            )
        );
        let file = write_csv(
            &dir.join("time.csv"),
            &CSV_HEADER,
            &[Rec {
                start: "yesterday",
                ..BASE
            }],
        );
        assert_eq!(
            read_file(&file).unwrap_err(),
            format!(
                "{}:1: column usage_start_time: \"yesterday\" is not a time like 2026-10-01 07:00:00 UTC or 2026-10-01T07:00:00Z",
                file.display()
            )
        );
    }

    #[test]
    fn a_missing_column_is_an_error_of_the_file() {
        let dir = TempDir::new("gcp-column");
        let header: Vec<&str> = CSV_HEADER
            .into_iter()
            .filter(|name| *name != "usage.unit")
            .collect();
        let mut writer = csv::Writer::from_path(dir.join("billing.csv")).unwrap();
        writer.write_record(&header).unwrap();
        writer.flush().unwrap();
        let file = dir.join("billing.csv");
        assert_eq!(
            read_file(&file).unwrap_err(),
            format!(
                "{}: column usage.unit: no such column in the header (as usage.unit or usage_unit): \
                 not a detailed usage cost export, or one without it",
                file.display()
            )
        );
    }
}
