//! Monthly metering exports: a month's metered bytes, from ClickHouse or
//! from Parquet files, grouped per team (namespace, workload), priced and
//! written as CSV, JSON or Parquet.
//!
//! Both sources yield the same [`Usage`] rows (the metering view's: bytes
//! per day, cluster, team, namespace, workload, region, remote region,
//! category and direction), each priced by the prices in force on its day;
//! everything after that, grouping, pricing and rounding, is one code path,
//! so the two sources agree to the byte and the cent on the same records.
//!
//! Money is exact until the last step: a line's cost is the sum over its
//! regions of `bytes x price_per_gib / 2^30`, kept as an integer numerator,
//! then rounded once, half up, to cents. GiB are rounded half up to six
//! decimals. See `docs/export.md`.

pub mod from_clickhouse;
pub mod from_parquet;
pub mod month;
pub mod prices;
pub mod write;

use std::collections::BTreeMap;

pub use month::Month;
use prices::PriceTable;

/// What one output line stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    /// One line per cluster, team, category and direction.
    Team,
    /// Per namespace as well (each namespace keeps its team).
    Namespace,
    /// Per workload as well (namespace, workload kind and name).
    Workload,
}

impl Grouping {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::Team => "team",
            Grouping::Namespace => "namespace",
            Grouping::Workload => "workload",
        }
    }

    /// The output columns that name what a line is about, after `period`.
    pub fn label_columns(self) -> &'static [&'static str] {
        match self {
            Grouping::Team => &["cluster", "team"],
            Grouping::Namespace => &["cluster", "team", "namespace"],
            Grouping::Workload => &["cluster", "team", "namespace", "workload_kind", "workload"],
        }
    }
}

/// Bytes of one metering key on one day, as the metering view has them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usage {
    /// The UTC day: prices are those in force on it.
    pub day: chrono::NaiveDate,
    /// Cluster name.
    pub cluster: String,
    /// Team of the local endpoint.
    pub team: String,
    /// Namespace of the local endpoint.
    pub namespace: String,
    /// Kind of its workload.
    pub workload_kind: String,
    /// Name of its workload.
    pub workload: String,
    /// Region of the node it ran on (prices can differ per region).
    pub region: String,
    /// Region of the other end, where known (prices can differ per pair).
    pub remote_region: String,
    /// Billing category.
    pub category: String,
    /// `out` (bytes it sent) or `in` (bytes it received).
    pub direction: String,
    /// Bytes.
    pub bytes: u64,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The labels named by [`Grouping::label_columns`], in that order.
    pub labels: Vec<String>,
    /// Billing category.
    pub category: String,
    /// `out` or `in`.
    pub direction: String,
    /// Bytes over the month.
    pub bytes: u64,
    /// Cost in cents (rounded half up) and its currency; `None` where no
    /// price applies (a cluster without a provider, an `unknown` category).
    pub cost: Option<(u128, String)>,
}

/// One line would add up costs in two currencies.
#[derive(Debug, thiserror::Error)]
#[error("{labels} {category}/{direction} is priced in both {first} and {second}: the prices one line adds up must share a currency")]
pub struct MixedCurrencies {
    labels: String,
    category: String,
    direction: String,
    first: String,
    second: String,
}

/// An export's lines and what could not be priced.
#[derive(Debug, Default)]
pub struct Export {
    /// Lines sorted by labels, category and direction.
    pub lines: Vec<Line>,
    /// Why some bytes have no price, with how many bytes each reason
    /// covers; their lines have no cost.
    pub unpriced: BTreeMap<String, u64>,
}

/// 2^30 bytes x 10^9 billionths: the denominator of an exact cost.
const COST_DENOMINATOR: u128 = (1 << 30) * 1_000_000_000;

#[derive(Default)]
struct Sum {
    bytes: u64,
    /// Sum of bytes x billionths per GiB: cost x COST_DENOMINATOR, exact.
    numerator: u128,
    currency: Option<String>,
    unpriced: bool,
}

/// Groups usage rows into export lines and prices them.
pub fn price(
    usage: impl IntoIterator<Item = Usage>,
    grouping: Grouping,
    prices: &PriceTable,
) -> Result<Export, MixedCurrencies> {
    let mut sums: BTreeMap<(Vec<String>, String, String), Sum> = BTreeMap::new();
    let mut unpriced = BTreeMap::new();
    for row in usage {
        if row.bytes == 0 {
            continue;
        }
        let price = prices.lookup(&row);
        let key = (
            labels(&row, grouping),
            row.category.clone(),
            row.direction.clone(),
        );
        let sum = sums.entry(key).or_default();
        sum.bytes += row.bytes;
        let price = match price {
            Ok(price) => price,
            Err(why) => {
                sum.unpriced = true;
                *unpriced.entry(why).or_default() += row.bytes;
                continue;
            }
        };
        match &sum.currency {
            Some(currency) if currency != price.currency => {
                return Err(MixedCurrencies {
                    labels: labels(&row, grouping).join("/"),
                    category: row.category,
                    direction: row.direction,
                    first: currency.clone(),
                    second: price.currency.to_owned(),
                });
            }
            Some(_) => {}
            None => sum.currency = Some(price.currency.to_owned()),
        }
        sum.numerator += u128::from(row.bytes) * u128::from(price.nanos_per_gib);
    }
    let lines = sums
        .into_iter()
        .map(|((labels, category, direction), sum)| Line {
            labels,
            category,
            direction,
            bytes: sum.bytes,
            cost: match (sum.unpriced, sum.currency) {
                (false, Some(currency)) => Some((
                    round_half_up(sum.numerator * 100, COST_DENOMINATOR),
                    currency,
                )),
                _ => None,
            },
        })
        .collect();
    Ok(Export { lines, unpriced })
}

/// The labels of the line a usage row belongs to.
fn labels(row: &Usage, grouping: Grouping) -> Vec<String> {
    let mut labels = vec![row.cluster.clone(), row.team.clone()];
    if grouping != Grouping::Team {
        labels.push(row.namespace.clone());
    }
    if grouping == Grouping::Workload {
        labels.push(row.workload_kind.clone());
        labels.push(row.workload.clone());
    }
    labels
}

/// numerator / denominator, rounded half up.
fn round_half_up(numerator: u128, denominator: u128) -> u128 {
    (numerator + denominator / 2) / denominator
}

/// `value / 10^decimals` as text with exactly `decimals` decimals.
pub fn fixed_point(value: u128, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let fraction = value % scale;
    format!(
        "{}.{fraction:0width$}",
        value / scale,
        width = decimals as usize
    )
}

/// Bytes as GiB in millionths, rounded half up.
pub fn micro_gib(bytes: u64) -> u128 {
    round_half_up(u128::from(bytes) * 1_000_000, 1 << 30)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::prices::parse_csv;
    use super::*;

    const GIB: u64 = 1 << 30;

    fn usage(
        team: &str,
        workload: &str,
        region: &str,
        category: &str,
        direction: &str,
        bytes: u64,
    ) -> Usage {
        Usage {
            day: chrono::NaiveDate::from_ymd_opt(2026, 10, 10).unwrap(),
            remote_region: String::new(),
            cluster: "c1".into(),
            team: team.into(),
            namespace: "shop".into(),
            workload_kind: "Deployment".into(),
            workload: workload.into(),
            region: region.into(),
            category: category.into(),
            direction: direction.into(),
            bytes,
        }
    }

    fn table(text: &str) -> PriceTable {
        let rows = parse_csv(
            "p.csv",
            &format!("provider,region,category,direction,price_per_gib,currency\n{text}"),
        )
        .unwrap();
        PriceTable::new(rows, BTreeMap::new(), Some("aws".into()))
    }

    #[test]
    fn lines_sum_regions_exactly_and_round_once() {
        let prices = table("aws,*,cross_zone,out,0.016,USD\naws,r2,cross_zone,out,0.016,USD\n");
        // 0.25 GiB at 0.016 twice = 0.008: rounded once it is 0.01;
        // rounding each region first would give 0.00 + 0.00.
        let rows = vec![
            usage("web", "a", "r1", "cross_zone", "out", GIB / 4),
            usage("web", "b", "r2", "cross_zone", "out", GIB / 4),
        ];
        let export = price(rows, Grouping::Team, &prices).unwrap();
        assert_eq!(export.lines.len(), 1);
        let line = &export.lines[0];
        assert_eq!(line.labels, ["c1", "web"]);
        assert_eq!(line.bytes, GIB / 2);
        assert_eq!(line.cost, Some((1, "USD".to_owned())));
        assert!(export.unpriced.is_empty());
    }

    #[test]
    fn grouping_by_workload_keeps_workloads_apart() {
        let prices = table("aws,*,internet,out,0.09,USD\n");
        let rows = vec![
            usage("web", "a", "r1", "internet", "out", 100 * GIB),
            usage("web", "b", "r1", "internet", "out", GIB),
        ];
        let export = price(rows, Grouping::Workload, &prices).unwrap();
        let costs: Vec<_> = export
            .lines
            .iter()
            .map(|l| (l.labels[4].as_str(), l.cost.clone().unwrap().0))
            .collect();
        assert_eq!(costs, [("a", 900), ("b", 9)]);
    }

    #[test]
    fn unpriced_bytes_leave_the_cost_empty_and_are_reported() {
        let prices = table("aws,*,internet,out,0.09,USD\n");
        let rows = vec![
            usage("web", "a", "r1", "unknown", "out", 5),
            usage("web", "a", "r1", "internet", "out", 0),
        ];
        let export = price(rows, Grouping::Team, &prices).unwrap();
        assert_eq!(export.lines.len(), 1, "zero-byte rows are no lines");
        assert_eq!(export.lines[0].cost, None);
        assert_eq!(export.unpriced.values().sum::<u64>(), 5);
    }

    #[test]
    fn one_line_in_two_currencies_is_refused() {
        let prices = table("aws,*,internet,out,0.09,USD\naws,r2,internet,out,0.08,EUR\n");
        let rows = vec![
            usage("web", "a", "r1", "internet", "out", 1),
            usage("web", "a", "r2", "internet", "out", 1),
        ];
        let error = price(rows, Grouping::Team, &prices)
            .unwrap_err()
            .to_string();
        assert!(error.contains("USD") && error.contains("EUR"), "{error}");
    }

    #[test]
    fn fixed_point_rounds_half_up() {
        assert_eq!(fixed_point(1234, 2), "12.34");
        assert_eq!(fixed_point(5, 2), "0.05");
        assert_eq!(fixed_point(micro_gib(GIB), 6), "1.000000");
        assert_eq!(fixed_point(micro_gib(1), 6), "0.000000");
        // 537 bytes is 0.000000500 GiB and a bit: rounds up.
        assert_eq!(fixed_point(micro_gib(537), 6), "0.000001");
        assert_eq!(round_half_up(5, 10), 1);
        assert_eq!(round_half_up(4, 10), 0);
    }
}
