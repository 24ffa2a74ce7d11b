//! What a GiB costs: the prices table's rows (from ClickHouse's
//! `current_prices`, or from a CSV file with the same columns), the
//! provider each cluster runs on, and the lookup the metering view makes:
//! the region's price where one is set, else the provider's default (`*`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Usage;

/// The prices tollgate ships (the same rows the ClickHouse migration
/// inserts; a test holds the two equal).
pub const DEFAULTS_CSV: &str = include_str!("../../../sql/default_prices.csv");

/// One row of the prices table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PriceRow {
    /// `aws`, `gcp`, `azure`, or any name the clusters table uses.
    pub provider: String,
    /// A region, or `*` for the provider's default.
    pub region: String,
    /// Billing category.
    pub category: String,
    /// `out` or `in`.
    pub direction: String,
    /// Price per GiB in billionths of the currency unit (the table's
    /// `Decimal(18, 9)`, exactly).
    pub nanos_per_gib: u64,
    /// ISO currency code.
    pub currency: String,
}

/// A price that applies to a usage row.
#[derive(Debug, Clone, Copy)]
pub struct Price<'a> {
    /// Billionths of the currency per GiB.
    pub nanos_per_gib: u64,
    /// ISO currency code.
    pub currency: &'a str,
}

/// The prices and the provider of each cluster.
#[derive(Debug, Default)]
pub struct PriceTable {
    prices: HashMap<(String, String, String, String), PriceRow>,
    providers: BTreeMap<String, String>,
    default_provider: Option<String>,
}

impl PriceTable {
    /// Prices (a later row for the same key replaces an earlier one),
    /// providers per cluster, and the provider of clusters not listed.
    pub fn new(
        rows: impl IntoIterator<Item = PriceRow>,
        providers: BTreeMap<String, String>,
        default_provider: Option<String>,
    ) -> PriceTable {
        let prices = rows
            .into_iter()
            .map(|row| {
                let key = (
                    row.provider.clone(),
                    row.region.clone(),
                    row.category.clone(),
                    row.direction.clone(),
                );
                (key, row)
            })
            .collect();
        PriceTable {
            prices,
            providers,
            default_provider,
        }
    }

    /// The price of a usage row, or why it has none.
    pub fn lookup(&self, usage: &Usage) -> Result<Price<'_>, String> {
        let provider = self
            .providers
            .get(&usage.cluster)
            .or(self.default_provider.as_ref())
            .ok_or_else(|| format!("cluster {:?} has no provider", usage.cluster))?;
        let key = |region: &str| {
            (
                provider.clone(),
                region.to_owned(),
                usage.category.clone(),
                usage.direction.clone(),
            )
        };
        self.prices
            .get(&key(&usage.region))
            .or_else(|| self.prices.get(&key("*")))
            .map(|row| Price {
                nanos_per_gib: row.nanos_per_gib,
                currency: &row.currency,
            })
            .ok_or_else(|| {
                format!(
                    "no price for provider {provider:?}, category {:?}, direction {:?}",
                    usage.category, usage.direction
                )
            })
    }
}

/// A prices file that cannot be used, with the line at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct BadPrices {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

const HEADER: &str = "provider,region,category,direction,price_per_gib,currency";

/// Reads a prices CSV file: the header `provider,region,category,direction,
/// price_per_gib,currency` (the prices table's columns), then one price per
/// line; blank lines and lines starting with `#` are ignored.
pub fn read_csv(path: &Path) -> Result<Vec<PriceRow>, crate::input::InputError> {
    let text = crate::input::read_text("prices", path)?;
    parse_csv(&path.display().to_string(), &text)
        .map_err(|e| crate::input::InputError(e.to_string()))
}

/// Parses prices CSV text; `file` names it in errors.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<PriceRow>, BadPrices> {
    let bad = |line: usize, message: String| BadPrices {
        file: file.to_owned(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    match lines.next() {
        Some((_, header)) if header == HEADER => {}
        other => {
            let number = other.map_or(1, |(n, _)| n);
            return Err(bad(number, format!("expected the header {HEADER}")));
        }
    }
    let mut rows: Vec<PriceRow> = Vec::new();
    let mut first_line = Vec::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [provider, region, category, direction, price, currency] = fields[..] else {
            return Err(bad(
                number,
                format!("expected 6 fields, found {}", fields.len()),
            ));
        };
        if provider.is_empty() || region.is_empty() {
            return Err(bad(
                number,
                "provider and region (or *) must not be empty".into(),
            ));
        }
        if tollgate_schema::flow::Category::from_text(category).is_none() {
            return Err(bad(number, format!("unknown category {category:?}")));
        }
        if direction != "out" && direction != "in" {
            return Err(bad(
                number,
                format!("direction {direction:?} is neither out nor in"),
            ));
        }
        let nanos_per_gib = parse_price(price).ok_or_else(|| {
            bad(
                number,
                format!("price {price:?} is not a non-negative decimal with at most 9 decimals"),
            )
        })?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad(
                number,
                format!("currency {currency:?} is not an ISO code like USD"),
            ));
        }
        if let Some(earlier) = rows.iter().position(|r| {
            (&*r.provider, &*r.region, &*r.category, &*r.direction)
                == (provider, region, category, direction)
        }) {
            return Err(bad(
                number,
                format!(
                    "a second price for {provider},{region},{category},{direction} (line {} has one)",
                    first_line[earlier]
                ),
            ));
        }
        first_line.push(number);
        rows.push(PriceRow {
            provider: provider.to_owned(),
            region: region.to_owned(),
            category: category.to_owned(),
            direction: direction.to_owned(),
            nanos_per_gib,
            currency: currency.to_owned(),
        });
    }
    Ok(rows)
}

/// `0.01` -> 10,000,000 billionths; at most 9 decimals, as `Decimal(18, 9)`.
pub fn parse_price(text: &str) -> Option<u64> {
    let (units, decimals) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if units.is_empty() || !digits(units) || !digits(decimals) || decimals.len() > 9 {
        return None;
    }
    let units: u64 = units.parse().ok()?;
    let mut fraction = 0u64;
    for (i, b) in decimals.bytes().enumerate() {
        fraction += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    units.checked_mul(1_000_000_000)?.checked_add(fraction)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    fn usage(cluster: &str, region: &str, category: &str, direction: &str) -> Usage {
        Usage {
            cluster: cluster.into(),
            team: "t".into(),
            namespace: "n".into(),
            workload_kind: "Deployment".into(),
            workload: "w".into(),
            region: region.into(),
            category: category.into(),
            direction: direction.into(),
            bytes: 1,
        }
    }

    #[test]
    fn prices_parse_exactly_to_billionths() {
        assert_eq!(parse_price("0.01"), Some(10_000_000));
        assert_eq!(parse_price("0.087"), Some(87_000_000));
        assert_eq!(parse_price("12"), Some(12_000_000_000));
        assert_eq!(parse_price("0.000000001"), Some(1));
        for bad in ["", ".5", "-0.01", "0.0000000001", "1e-2", "0,01", "0.01 "] {
            assert_eq!(parse_price(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_shipped_defaults_parse() {
        let rows = parse_csv("defaults", DEFAULTS_CSV).unwrap();
        assert_eq!(rows.len(), 30, "3 providers x 5 categories x 2 directions");
    }

    #[test]
    fn a_region_price_wins_over_the_default_and_unknowns_say_why() {
        let text = "provider,region,category,direction,price_per_gib,currency\n\
                    aws,*,cross_zone,out,0.01,USD\n\
                    aws,eu-west-1,cross_zone,out,0.02,EUR\n";
        let table = PriceTable::new(
            parse_csv("p.csv", text).unwrap(),
            BTreeMap::from([("c1".to_owned(), "aws".to_owned())]),
            None,
        );
        let price = table
            .lookup(&usage("c1", "eu-west-1", "cross_zone", "out"))
            .unwrap();
        assert_eq!((price.nanos_per_gib, price.currency), (20_000_000, "EUR"));
        let price = table
            .lookup(&usage("c1", "us-east-1", "cross_zone", "out"))
            .unwrap();
        assert_eq!((price.nanos_per_gib, price.currency), (10_000_000, "USD"));
        let why = table
            .lookup(&usage("c1", "us-east-1", "unknown", "out"))
            .unwrap_err();
        assert!(why.contains("unknown"), "{why}");
        let why = table
            .lookup(&usage("c2", "us-east-1", "cross_zone", "out"))
            .unwrap_err();
        assert!(why.contains("c2"), "{why}");
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            ("provider,region\n", 1, "header"),
            (
                "provider,region,category,direction,price_per_gib,currency\naws,*,cross_zone,out,0.01\n",
                2,
                "6 fields",
            ),
            (
                "provider,region,category,direction,price_per_gib,currency\n# c\naws,*,far,out,0.01,USD\n",
                3,
                "category",
            ),
            (
                "provider,region,category,direction,price_per_gib,currency\naws,*,internet,up,0.01,USD\n",
                2,
                "direction",
            ),
            (
                "provider,region,category,direction,price_per_gib,currency\naws,*,internet,out,-1,USD\n",
                2,
                "price",
            ),
            (
                "provider,region,category,direction,price_per_gib,currency\naws,*,internet,out,1,usd\n",
                2,
                "currency",
            ),
        ];
        for (text, line, word) in cases {
            let error = parse_csv("p.csv", text).unwrap_err();
            assert_eq!(error.line, line, "{text}");
            assert!(error.to_string().contains(word), "{error}");
            assert!(
                error.to_string().starts_with(&format!("p.csv:{line}:")),
                "{error}"
            );
        }
    }
}
