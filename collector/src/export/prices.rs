//! What a GiB costs: the price list's versions (from ClickHouse's
//! `price_versions`, or from a CSV file with the same columns), the
//! provider each cluster runs on, and the lookup the cost view makes: of
//! the schedules for the row's provider, category and direction in force
//! on its day (`valid_from` on or before it), the most specific: one naming
//! the region beats `*`, then one naming the remote region beats `*`, then
//! the latest `valid_from`.
//!
//! A schedule is the rows sharing provider, region, remote region,
//! category, direction and `valid_from`: one row is a flat price, several
//! are monthly volume tiers, each from its `tier_from_gib` (the first from
//! 0). A tier priced 0 is a free allowance.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;

use super::Usage;
use crate::input::{BadLine, InputError};

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
    /// The GiB of the month from which this tier's price applies (0 for a
    /// flat price and for a schedule's first tier).
    pub tier_from_gib: u64,
    /// Price per GiB in billionths of the currency unit (the table's
    /// `Decimal(18, 9)`, exactly).
    pub nanos_per_gib: u64,
    /// ISO currency code.
    pub currency: String,
}

/// One volume tier of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The month's GiB (of the schedule's account) from which it applies.
    pub from_gib: u64,
    /// Billionths of the currency per GiB.
    pub nanos_per_gib: u64,
}

/// The prices of one key from one day on: a flat price or monthly tiers.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its provider.
    pub provider: String,
    /// The region it names, or `*`.
    pub region: String,
    /// The remote region it names, or `*`.
    pub remote_region: String,
    /// Billing category.
    pub category: String,
    /// `out` or `in`.
    pub direction: String,
    /// The first day it applies to.
    pub valid_from: NaiveDate,
    /// Ascending by `from_gib`.
    pub tiers: Vec<Tier>,
    /// ISO currency code.
    pub currency: String,
    /// Why it cannot price anything (tiers not starting at 0 GiB, tiers in
    /// two currencies), if so.
    problem: Option<String>,
}

impl Schedule {
    /// One price for every byte: no tiers.
    pub fn is_flat(&self) -> bool {
        self.tiers.len() == 1
    }

    /// Whether it applies to `usage`'s regions and day.
    fn applies(&self, usage: &Usage) -> bool {
        (self.region == "*" || self.region == usage.region)
            && (self.remote_region == "*" || self.remote_region == usage.remote_region)
            && self.valid_from <= usage.day
    }

    /// Among schedules that apply, the greatest wins.
    fn precedence(&self) -> (bool, bool, NaiveDate) {
        (
            self.region != "*",
            self.remote_region != "*",
            self.valid_from,
        )
    }
}

/// The price list and the provider of each cluster.
#[derive(Debug, Default)]
pub struct PriceTable {
    /// Schedules per (provider, category, direction).
    schedules: HashMap<(String, String, String), Vec<Schedule>>,
    providers: BTreeMap<String, String>,
    default_provider: Option<String>,
}

impl PriceTable {
    /// Prices (a later row for the same key, `valid_from` and tier replaces
    /// an earlier one), providers per cluster, and the provider of clusters
    /// not listed.
    pub fn new(
        rows: impl IntoIterator<Item = PriceRow>,
        providers: BTreeMap<String, String>,
        default_provider: Option<String>,
    ) -> PriceTable {
        let mut grouped: BTreeMap<_, BTreeMap<u64, PriceRow>> = BTreeMap::new();
        for row in rows {
            let key = (
                row.provider.clone(),
                row.category.clone(),
                row.direction.clone(),
                row.region.clone(),
                row.remote_region.clone(),
                row.valid_from,
            );
            grouped
                .entry(key)
                .or_default()
                .insert(row.tier_from_gib, row);
        }
        let mut schedules: HashMap<_, Vec<Schedule>> = HashMap::new();
        for ((provider, category, direction, region, remote_region, valid_from), tiers) in grouped {
            let currency = tiers
                .values()
                .next()
                .map(|t| t.currency.clone())
                .unwrap_or_default();
            let problem = schedule_problem(tiers.values());
            schedules
                .entry((provider.clone(), category.clone(), direction.clone()))
                .or_default()
                .push(Schedule {
                    provider,
                    category,
                    direction,
                    region,
                    remote_region,
                    valid_from,
                    tiers: tiers
                        .values()
                        .map(|t| Tier {
                            from_gib: t.tier_from_gib,
                            nanos_per_gib: t.nanos_per_gib,
                        })
                        .collect(),
                    currency,
                    problem,
                });
        }
        PriceTable {
            schedules,
            providers,
            default_provider,
        }
    }

    /// The schedule pricing a usage row on its day, or why it has none.
    pub fn lookup(&self, usage: &Usage) -> Result<&Schedule, String> {
        let provider = Some(&usage.provider)
            .filter(|p| !p.is_empty())
            .or_else(|| self.providers.get(&usage.cluster))
            .or(self.default_provider.as_ref())
            .ok_or_else(|| format!("cluster {:?} has no provider", usage.cluster))?;
        let schedule = self
            .schedules
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
            .ok_or_else(|| {
                format!(
                    "no price for provider {provider:?}, category {:?}, direction {:?}",
                    usage.category, usage.direction
                )
            })?;
        match &schedule.problem {
            Some(problem) => Err(problem.clone()),
            None => Ok(schedule),
        }
    }
}

/// Why one schedule's rows, ascending by tier, cannot price anything, if
/// so: its tiers must start at 0 GiB and share a currency.
fn schedule_problem<'a>(mut tiers: impl Iterator<Item = &'a PriceRow>) -> Option<String> {
    let first = tiers.next()?;
    let name = format!(
        "the {} {}/{} prices for {} to {} from {}",
        first.provider,
        first.category,
        first.direction,
        first.region,
        first.remote_region,
        first.valid_from
    );
    if first.tier_from_gib != 0 {
        return Some(format!("{name} have no tier from 0 GiB"));
    }
    tiers
        .any(|t| t.currency != first.currency)
        .then(|| format!("{name} mix currencies"))
}

/// The price list's columns, in the order the shipped file has them.
const COLUMNS: [&str; 9] = [
    "provider",
    "region",
    "remote_region",
    "category",
    "direction",
    "valid_from",
    "tier_from_gib",
    "price_per_gib",
    "currency",
];
/// Columns a file may leave out: `*`, every day, no tiers.
const OPTIONAL: [&str; 3] = ["remote_region", "valid_from", "tier_from_gib"];

/// Reads a prices CSV file: a header naming the price list's columns
/// (`provider,region,remote_region,category,direction,valid_from,
/// tier_from_gib,price_per_gib,currency`, in any order; without
/// `remote_region` a price is for any remote region, without `valid_from`
/// for every day, without `tier_from_gib` flat), then one price per line;
/// blank lines and lines starting with `#` are ignored.
pub fn read_csv(path: &Path) -> Result<Vec<PriceRow>, InputError> {
    crate::input::read_table("prices", path, parse_csv)
}

/// Parses prices CSV text; `file` names it in errors.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<PriceRow>, BadLine> {
    let bad = BadLine::of(file);
    let mut lines = crate::input::content_lines(text);
    let (header_line, header) = lines
        .next()
        .ok_or_else(|| bad(1, format!("expected a header like {}", COLUMNS.join(","))))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    // Where each of COLUMNS is in a line, if present.
    let mut position = [None; COLUMNS.len()];
    for (index, name) in names.iter().enumerate() {
        let column = COLUMNS.iter().position(|c| c == name).ok_or_else(|| {
            bad(
                header_line,
                format!(
                    "unknown column {name:?} in the header (the columns are {})",
                    COLUMNS.join(",")
                ),
            )
        })?;
        if position[column].replace(index).is_some() {
            return Err(bad(header_line, format!("column {name:?} appears twice")));
        }
    }
    if let Some(missing) = COLUMNS
        .iter()
        .zip(&position)
        .find(|(name, at)| at.is_none() && !OPTIONAL.contains(name))
    {
        return Err(bad(
            header_line,
            format!(
                "the header has no column {:?} (expected a header like {})",
                missing.0,
                COLUMNS.join(",")
            ),
        ));
    }
    let mut rows: Vec<PriceRow> = Vec::new();
    // Per schedule (key and valid_from), per tier: its line and row.
    let mut schedules: BTreeMap<(String, NaiveDate), BTreeMap<u64, (usize, usize)>> =
        BTreeMap::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(bad(
                number,
                format!(
                    "expected {} fields, as the header has, found {}",
                    names.len(),
                    fields.len()
                ),
            ));
        }
        let field =
            |column: usize, absent: &'static str| position[column].map_or(absent, |i| fields[i]);
        let [provider, region, remote_region, category, direction, valid_from, tier, price, currency] = [
            field(0, ""),
            field(1, ""),
            field(2, "*"),
            field(3, ""),
            field(4, ""),
            field(5, "1970-01-01"),
            field(6, "0"),
            field(7, ""),
            field(8, ""),
        ];
        if provider.is_empty() || region.is_empty() || remote_region.is_empty() {
            return Err(bad(
                number,
                "provider, region and remote_region (or *) must not be empty".into(),
            ));
        }
        if tollgate_schema::flow::Category::from_text(category).is_none()
            && category != super::nat::NAT_GATEWAY
        {
            return Err(bad(number, format!("unknown category {category:?}")));
        }
        if direction != "out" && direction != "in" {
            return Err(bad(
                number,
                format!("direction {direction:?} is neither out nor in"),
            ));
        }
        let valid_from = parse_valid_from(valid_from).map_err(|e| bad(number, e))?;
        let tier_from_gib = tier
            .parse::<u64>()
            .ok()
            .filter(|gib| *gib < 1 << 34)
            .ok_or_else(|| {
                bad(
                    number,
                    format!("tier_from_gib {tier:?} is not a whole number of GiB below 2^34"),
                )
            })?;
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
        let tiers = schedules.entry((key.clone(), valid_from)).or_default();
        if let Some((earlier, _)) = tiers.insert(tier_from_gib, (number, rows.len())) {
            let tier = match tier_from_gib {
                0 => String::new(),
                gib => format!(" for the tier from {gib} GiB"),
            };
            return Err(bad(
                number,
                format!(
                    "a second price for {key} from {valid_from}{tier} (line {earlier} has one)"
                ),
            ));
        }
        rows.push(PriceRow {
            provider: provider.to_owned(),
            region: region.to_owned(),
            remote_region: remote_region.to_owned(),
            category: category.to_owned(),
            direction: direction.to_owned(),
            valid_from,
            tier_from_gib,
            nanos_per_gib,
            currency: currency.to_owned(),
        });
    }
    // Name the last line of the first schedule that cannot price.
    let broken = schedules
        .values()
        .filter_map(|tiers| {
            let problem = schedule_problem(tiers.values().map(|&(_, row)| &rows[row]))?;
            Some((tiers.values().map(|&(line, _)| line).max()?, problem))
        })
        .min();
    if let Some((line, problem)) = broken {
        return Err(bad(line, problem));
    }
    Ok(rows)
}

/// A `valid_from` day: `YYYY-MM-DD`, from 1970-01-01.
pub fn parse_valid_from(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|day| *day >= ALWAYS)
        .ok_or_else(|| {
            format!("valid_from {text:?} is not a day like 2026-10-01 (from 1970-01-01)")
        })
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
            initiated_bytes: 0,
            provider: String::new(),
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
            53,
            "3 providers x 5 categories x 2 directions, AWS's public_in_region, a region pair, \
             13 internet tiers and NAT gateways"
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
        assert_eq!(
            (price.tiers[0].nanos_per_gib, &price.currency[..]),
            (20_000_000, "EUR")
        );
        let price = table
            .lookup(&usage("c1", "us-east-1", "cross_zone", "out"))
            .unwrap();
        assert_eq!(
            (price.tiers[0].nanos_per_gib, &price.currency[..]),
            (10_000_000, "USD")
        );
        let why = table
            .lookup(&usage("c1", "us-east-1", "unknown", "out"))
            .unwrap_err();
        assert!(why.contains("unknown"), "{why}");
        let why = table
            .lookup(&usage("c2", "us-east-1", "cross_zone", "out"))
            .unwrap_err();
        assert!(why.contains("c2"), "{why}");
    }

    /// The records' provider (their node's) first, then the cluster's, then
    /// the default (`--provider`).
    #[test]
    fn a_records_provider_wins_then_the_cluster_then_the_default() {
        let text = "provider,region,category,direction,price_per_gib,currency\n\
                    aws,*,internet,out,0.09,USD\n\
                    gcp,*,internet,out,0.12,USD\n\
                    azure,*,internet,out,0.087,USD\n";
        let clusters = BTreeMap::from([("c1".to_owned(), "aws".to_owned())]);
        let rows = parse_csv("p.csv", text).unwrap();
        let with_default = PriceTable::new(rows.clone(), clusters.clone(), Some("azure".into()));
        let without = PriceTable::new(rows, clusters, None);
        let price = |table: &PriceTable, cluster: &str, provider: &str| {
            let mut row = usage(cluster, "r1", "internet", "out");
            row.provider = provider.into();
            table.lookup(&row).map(|s| s.tiers[0].nanos_per_gib)
        };
        assert_eq!(price(&with_default, "c1", "gcp"), Ok(120_000_000));
        assert_eq!(price(&with_default, "c1", ""), Ok(90_000_000));
        assert_eq!(price(&with_default, "c9", ""), Ok(87_000_000));
        assert_eq!(price(&without, "c9", "gcp"), Ok(120_000_000));
        assert_eq!(
            price(&without, "c9", ""),
            Err("cluster \"c9\" has no provider".to_owned())
        );
        assert_eq!(
            price(&without, "c9", "oracle"),
            Err(
                "no price for provider \"oracle\", category \"internet\", direction \"out\""
                    .to_owned()
            )
        );
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
            table.lookup(&row).unwrap().tiers[0].nanos_per_gib
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
            ("provider,region,category,direction,price,currency\n", 1, "unknown column \"price\""),
            (
                "provider,region,category,direction,tier_from_gib,price_per_gib,currency\n\
                 aws,*,internet,out,10,0.09,USD\naws,*,internet,out,20,0.08,USD\n",
                3,
                "no tier from 0 GiB",
            ),
            (
                "provider,region,category,direction,tier_from_gib,price_per_gib,currency\n\
                 aws,*,internet,out,0,0.09,USD\naws,*,internet,out,20,0.08,EUR\n",
                3,
                "mix currencies",
            ),
            (
                "provider,region,category,direction,tier_from_gib,price_per_gib,currency\n\
                 aws,*,internet,out,ten,0.09,USD\n",
                2,
                "tier_from_gib",
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
