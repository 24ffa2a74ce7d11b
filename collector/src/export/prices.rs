//! What a GiB costs: the price list's versions (from ClickHouse's
//! `price_versions`, or from a CSV file with the same columns), the
//! provider each cluster runs on, and the lookup the cost view makes: of
//! the prices for the row's provider, category and direction in force on
//! its day (`valid_from` on or before it), the most specific: one naming
//! the region beats `*`, then one naming the remote region beats `*`, then
//! the latest `valid_from`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;

use super::Usage;

/// The prices tollgate ships (the same rows the ClickHouse migrations
/// insert; a test holds the two equal).
pub const DEFAULTS_CSV: &str = include_str!("../../../sql/default_prices.csv");

/// The day from which a price without a date applies: every day.
pub const ALWAYS: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

/// One row of the price list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PriceRow {
    /// `aws`, `gcp`, `azure`, or any name the clusters table uses.
    pub provider: String,
    /// A region, or `*` for the provider's default.
    pub region: String,
    /// The other end's region (a pair of regions), or `*` for any.
    pub remote_region: String,
    /// Billing category.
    pub category: String,
    /// `out` or `in`.
    pub direction: String,
    /// The first UTC day the price applies to.
    pub valid_from: NaiveDate,
    /// Price per GiB in billionths of the currency unit (the table's
    /// `Decimal(18, 9)`, exactly).
    pub nanos_per_gib: u64,
    /// ISO currency code.
    pub currency: String,
}

impl PriceRow {
    /// Whether it applies to `usage`'s regions and day.
    fn applies(&self, usage: &Usage) -> bool {
        (self.region == "*" || self.region == usage.region)
            && (self.remote_region == "*" || self.remote_region == usage.remote_region)
            && self.valid_from <= usage.day
    }

    /// Among rows that apply, the greatest wins.
    fn precedence(&self) -> (bool, bool, NaiveDate) {
        (
            self.region != "*",
            self.remote_region != "*",
            self.valid_from,
        )
    }
}

/// A price that applies to a usage row.
#[derive(Debug, Clone, Copy)]
pub struct Price<'a> {
    /// Billionths of the currency per GiB.
    pub nanos_per_gib: u64,
    /// ISO currency code.
    pub currency: &'a str,
}

/// The price list and the provider of each cluster.
#[derive(Debug, Default)]
pub struct PriceTable {
    /// Versions per (provider, category, direction).
    prices: HashMap<(String, String, String), Vec<PriceRow>>,
    providers: BTreeMap<String, String>,
    default_provider: Option<String>,
}

impl PriceTable {
    /// Prices (a later row for the same key and `valid_from` replaces an
    /// earlier one), providers per cluster, and the provider of clusters
    /// not listed.
    pub fn new(
        rows: impl IntoIterator<Item = PriceRow>,
        providers: BTreeMap<String, String>,
        default_provider: Option<String>,
    ) -> PriceTable {
        let mut prices: HashMap<_, Vec<PriceRow>> = HashMap::new();
        for row in rows {
            let versions = prices
                .entry((
                    row.provider.clone(),
                    row.category.clone(),
                    row.direction.clone(),
                ))
                .or_default();
            versions.retain(|v| {
                (&v.region, &v.remote_region, v.valid_from)
                    != (&row.region, &row.remote_region, row.valid_from)
            });
            versions.push(row);
        }
        PriceTable {
            prices,
            providers,
            default_provider,
        }
    }

    /// The price of a usage row on its day, or why it has none.
    pub fn lookup(&self, usage: &Usage) -> Result<Price<'_>, String> {
        let provider = self
            .providers
            .get(&usage.cluster)
            .or(self.default_provider.as_ref())
            .ok_or_else(|| format!("cluster {:?} has no provider", usage.cluster))?;
        self.prices
            .get(&(
                provider.clone(),
                usage.category.clone(),
                usage.direction.clone(),
            ))
            .and_then(|versions| {
                versions
                    .iter()
                    .filter(|v| v.applies(usage))
                    .max_by_key(|v| v.precedence())
            })
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

/// The price list's columns.
const HEADER: &str =
    "provider,region,remote_region,category,direction,valid_from,price_per_gib,currency";
/// The earlier, undated form: any remote region, every day.
const UNDATED_HEADER: &str = "provider,region,category,direction,price_per_gib,currency";

/// Reads a prices CSV file: the header `provider,region,remote_region,
/// category,direction,valid_from,price_per_gib,currency` (the price list's
/// columns; the earlier six-column header without `remote_region` and
/// `valid_from` is read as `*` and every day), then one price per line;
/// blank lines and lines starting with `#` are ignored.
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
    let dated = match lines.next() {
        Some((_, header)) if header == HEADER => true,
        Some((_, header)) if header == UNDATED_HEADER => false,
        other => {
            let number = other.map_or(1, |(n, _)| n);
            return Err(bad(
                number,
                format!("expected the header {HEADER} (or the undated {UNDATED_HEADER})"),
            ));
        }
    };
    let mut rows: Vec<PriceRow> = Vec::new();
    let mut first_line = HashMap::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (provider, region, remote_region, category, direction, valid_from, price, currency) =
            match (dated, &fields[..]) {
                (true, &[p, r, rr, c, d, v, price, cur]) => (p, r, rr, c, d, v, price, cur),
                (false, &[p, r, c, d, price, cur]) => (p, r, "*", c, d, "", price, cur),
                _ => {
                    return Err(bad(
                        number,
                        format!(
                            "expected {} fields, found {}",
                            if dated { 8 } else { 6 },
                            fields.len()
                        ),
                    ))
                }
            };
        if provider.is_empty() || region.is_empty() || remote_region.is_empty() {
            return Err(bad(
                number,
                "provider, region and remote_region (or *) must not be empty".into(),
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
        let valid_from = if dated {
            NaiveDate::parse_from_str(valid_from, "%Y-%m-%d")
                .ok()
                .filter(|day| *day >= ALWAYS)
                .ok_or_else(|| {
                    bad(
                        number,
                        format!("valid_from {valid_from:?} is not a day like 2026-10-01 (from 1970-01-01)"),
                    )
                })?
        } else {
            ALWAYS
        };
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
        let key = [provider, region, remote_region, category, direction].join(",");
        if let Some(earlier) = first_line.insert((key.clone(), valid_from), number) {
            return Err(bad(
                number,
                format!("a second price for {key} from {valid_from} (line {earlier} has one)"),
            ));
        }
        rows.push(PriceRow {
            provider: provider.to_owned(),
            region: region.to_owned(),
            remote_region: remote_region.to_owned(),
            category: category.to_owned(),
            direction: direction.to_owned(),
            valid_from,
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
            day: NaiveDate::from_ymd_opt(2026, 10, 10).unwrap(),
            remote_region: String::new(),
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
        assert_eq!(
            rows.len(),
            34,
            "3 providers x 5 categories x 2 directions, AWS's public_in_region and a region pair"
        );
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
    fn each_day_takes_the_price_in_force_and_pairs_beat_the_default() {
        let text =
            "provider,region,remote_region,category,direction,valid_from,price_per_gib,currency\n\
                    aws,*,*,internet,out,1970-01-01,0.09,USD\n\
                    aws,*,*,internet,out,2026-10-16,0.08,USD\n\
                    aws,*,*,cross_region,out,1970-01-01,0.02,USD\n\
                    aws,us-east-1,us-east-2,cross_region,out,1970-01-01,0.01,USD\n";
        let table = PriceTable::new(
            parse_csv("p.csv", text).unwrap(),
            BTreeMap::new(),
            Some("aws".into()),
        );
        let on = |day: u32, region: &str, remote: &str, category: &str| {
            let mut row = usage("c1", region, category, "out");
            row.day = NaiveDate::from_ymd_opt(2026, 10, day).unwrap();
            row.remote_region = remote.into();
            table.lookup(&row).unwrap().nanos_per_gib
        };
        assert_eq!(on(15, "us-east-1", "", "internet"), 90_000_000);
        assert_eq!(on(16, "us-east-1", "", "internet"), 80_000_000);
        assert_eq!(on(16, "us-east-1", "us-east-2", "cross_region"), 10_000_000);
        assert_eq!(on(16, "us-east-1", "eu-west-2", "cross_region"), 20_000_000);
        assert_eq!(on(16, "us-east-2", "us-east-1", "cross_region"), 20_000_000);
    }

    #[test]
    fn a_price_from_a_later_day_leaves_earlier_days_unpriced() {
        let text =
            "provider,region,remote_region,category,direction,valid_from,price_per_gib,currency\n\
                    aws,*,*,internet,out,2026-10-16,0.08,USD\n";
        let table = PriceTable::new(
            parse_csv("p.csv", text).unwrap(),
            BTreeMap::new(),
            Some("aws".into()),
        );
        let mut row = usage("c1", "r1", "internet", "out");
        assert!(table.lookup(&row).is_err(), "the 10th is before the 16th");
        row.day = NaiveDate::from_ymd_opt(2026, 10, 16).unwrap();
        assert!(table.lookup(&row).is_ok());
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
            (
                "provider,region,remote_region,category,direction,valid_from,price_per_gib,currency\n\
                 aws,*,*,internet,out,2026-13-01,0.09,USD\n",
                2,
                "valid_from",
            ),
            (
                "provider,region,remote_region,category,direction,valid_from,price_per_gib,currency\n\
                 aws,*,*,internet,out,2026-10-01,0.09,USD\naws,*,*,internet,out,2026-10-01,0.08,USD\n",
                3,
                "line 2 has one",
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
