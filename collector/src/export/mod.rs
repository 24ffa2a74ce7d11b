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

pub mod accounts;
pub mod cluster_settings;
pub mod from_clickhouse;
pub mod from_parquet;
pub mod month;
pub mod nat;
pub mod prices;
pub mod write;

use std::collections::BTreeMap;

use accounts::Accounts;
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
    /// Of those, the bytes of connections the local endpoint opened (a NAT
    /// gateway's share).
    pub initiated_bytes: u64,
    /// Cloud provider the records name (their node's); empty when they name
    /// none, and the cluster's provider applies.
    pub provider: String,
}

/// How a line's cost was worked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// Every byte at one price per GiB (of its day, region and pair).
    Flat,
    /// A share of its account's monthly tiered total, pro rata to bytes
    /// (the month's blended rate).
    Tiered,
    /// Some bytes flat, some tiered.
    FlatAndTiered,
    /// Some bytes have no price: the line has no cost.
    Unpriced,
}

impl Pricing {
    /// Its name in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Pricing::Flat => "flat",
            Pricing::Tiered => "tiered",
            Pricing::FlatAndTiered => "flat+tiered",
            Pricing::Unpriced => "unpriced",
        }
    }
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
    /// Cost in cents and its currency; `None` where no price applies (a
    /// cluster without a provider, an `unknown` category).
    pub cost: Option<(u128, String)>,
    /// The cloud account its cluster is billed to in the month.
    pub account: String,
    /// How its cost was worked out.
    pub pricing: Pricing,
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

/// A line: its labels, category and direction.
type LineKey = (Vec<String>, String, String);

#[derive(Default)]
struct Sum {
    bytes: u64,
    /// Flat-priced bytes x billionths per GiB: their cost x
    /// COST_DENOMINATOR, exact.
    numerator: u128,
    /// Cents allocated from tiered units.
    tiered_cents: u128,
    flat: bool,
    tiered: bool,
    currency: Option<String>,
    unpriced: bool,
    account: String,
}

impl Sum {
    /// Adds `currency` to the line, refusing a second one.
    fn take_currency(&mut self, key: &LineKey, currency: &str) -> Result<(), MixedCurrencies> {
        match &self.currency {
            Some(first) if first != currency => Err(MixedCurrencies {
                labels: key.0.join("/"),
                category: key.1.clone(),
                direction: key.2.clone(),
                first: first.clone(),
                second: currency.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                self.currency = Some(currency.to_owned());
                Ok(())
            }
        }
    }
}

/// The bytes one tiered schedule prices in one account over the month:
/// (account, provider, the schedule's region and remote region, category,
/// direction, and currency, so that a total is in one). Its tiers count
/// them all, day by day.
type UnitKey = (String, String, String, String, String, String, String);

#[derive(Default)]
struct Unit<'a> {
    /// Bytes per day, and the schedule in force that day.
    days: BTreeMap<chrono::NaiveDate, (u64, &'a prices::Schedule)>,
    /// Bytes per workload-level line (cluster, team, namespace, workload
    /// kind, workload), with the line it belongs to.
    pieces: BTreeMap<Vec<String>, (u64, LineKey)>,
}

impl Unit<'_> {
    /// The month's total cost x COST_DENOMINATOR: each day's bytes priced
    /// by that day's tiers, from where the month's earlier days left off.
    fn numerator(&self) -> u128 {
        let mut before: u128 = 0;
        let mut numerator = 0;
        for (bytes, schedule) in self.days.values() {
            let after = before + u128::from(*bytes);
            let tiers = &schedule.tiers;
            for (i, tier) in tiers.iter().enumerate() {
                let from = u128::from(tier.from_gib) << 30;
                let to = tiers
                    .get(i + 1)
                    .map_or(u128::MAX, |next| u128::from(next.from_gib) << 30);
                let overlap = after.min(to).saturating_sub(before.max(from));
                numerator += overlap * u128::from(tier.nanos_per_gib);
            }
            before = after;
        }
        numerator
    }

    /// The month's total in cents (rounded half up once), split over the
    /// workload-level lines pro rata to bytes by largest remainder: each
    /// gets the floor of its exact share, and the cents left go one each
    /// to the largest remainders (ties to the first line in label order).
    fn allocate(&self) -> Vec<(&LineKey, u128)> {
        let cents = round_half_up(self.numerator() * 100, COST_DENOMINATOR);
        let total: u128 = self.pieces.values().map(|(b, _)| u128::from(*b)).sum();
        let mut shares: Vec<(u128, u128, &LineKey)> = self
            .pieces
            .values()
            .map(|(bytes, line)| {
                let exact = cents * u128::from(*bytes);
                (exact / total, exact % total, line)
            })
            .collect();
        let left = cents - shares.iter().map(|s| s.0).sum::<u128>();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        // Stable: equal remainders keep the pieces' label order.
        order.sort_by(|a, b| shares[*b].1.cmp(&shares[*a].1));
        for &i in order
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            shares[i].0 += 1;
        }
        shares.into_iter().map(|(c, _, line)| (line, c)).collect()
    }
}

/// Groups usage rows into export lines and prices them: flat schedules
/// per row, tiered ones per account and month (see `docs/export.md`). With
/// `only_cluster`, lines are that cluster's, but every cluster's bytes
/// count toward the tiers of the accounts they share.
pub fn price(
    usage: impl IntoIterator<Item = Usage>,
    grouping: Grouping,
    prices: &PriceTable,
    accounts: &Accounts,
    only_cluster: Option<&str>,
) -> Result<Export, MixedCurrencies> {
    let mut sums: BTreeMap<LineKey, Sum> = BTreeMap::new();
    let mut units: BTreeMap<UnitKey, Unit> = BTreeMap::new();
    let mut unpriced = BTreeMap::new();
    for row in usage {
        if row.bytes == 0 {
            continue;
        }
        let account = accounts.account_of(&row.cluster, row.day).to_owned();
        let key = (
            labels(&row, grouping),
            row.category.clone(),
            row.direction.clone(),
        );
        let schedule = prices.lookup(&row);
        if only_cluster.is_none_or(|only| only == row.cluster) {
            let sum = sums.entry(key.clone()).or_default();
            sum.bytes += row.bytes;
            sum.account.clone_from(&account);
            match &schedule {
                Err(why) => {
                    sum.unpriced = true;
                    *unpriced.entry(why.clone()).or_default() += row.bytes;
                }
                Ok(schedule) => {
                    sum.take_currency(&key, &schedule.currency)?;
                    if schedule.is_flat() {
                        sum.flat = true;
                        sum.numerator +=
                            u128::from(row.bytes) * u128::from(schedule.tiers[0].nanos_per_gib);
                    } else {
                        sum.tiered = true;
                    }
                }
            }
        }
        let Ok(schedule) = schedule else { continue };
        if schedule.is_flat() {
            continue;
        }
        let unit = units
            .entry((
                account,
                schedule.provider.clone(),
                schedule.region.clone(),
                schedule.remote_region.clone(),
                row.category.clone(),
                row.direction.clone(),
                schedule.currency.clone(),
            ))
            .or_default();
        let day = unit.days.entry(row.day).or_insert((0, schedule));
        day.0 += row.bytes;
        let piece = unit
            .pieces
            .entry(labels(&row, Grouping::Workload))
            .or_insert((0, key));
        piece.0 += row.bytes;
    }
    for unit in units.values() {
        for (line, cents) in unit.allocate() {
            if let Some(sum) = sums.get_mut(line) {
                sum.tiered_cents += cents;
            }
        }
    }
    let lines = sums
        .into_iter()
        .map(|((labels, category, direction), sum)| {
            let pricing = match (sum.unpriced, sum.flat, sum.tiered) {
                (true, _, _) => Pricing::Unpriced,
                (false, _, false) => Pricing::Flat,
                (false, false, true) => Pricing::Tiered,
                (false, true, true) => Pricing::FlatAndTiered,
            };
            Line {
                labels,
                category,
                direction,
                bytes: sum.bytes,
                cost: match (pricing, sum.currency) {
                    (Pricing::Unpriced, _) | (_, None) => None,
                    (_, Some(currency)) => Some((
                        round_half_up(sum.numerator * 100, COST_DENOMINATOR) + sum.tiered_cents,
                        currency,
                    )),
                },
                account: sum.account,
                pricing,
            }
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
            initiated_bytes: 0,
            provider: String::new(),
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
        let export = price(rows, Grouping::Team, &prices, &Accounts::default(), None).unwrap();
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
        let export = price(
            rows,
            Grouping::Workload,
            &prices,
            &Accounts::default(),
            None,
        )
        .unwrap();
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
        let export = price(rows, Grouping::Team, &prices, &Accounts::default(), None).unwrap();
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
        let error = price(rows, Grouping::Team, &prices, &Accounts::default(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("USD") && error.contains("EUR"), "{error}");
    }

    /// The tiered schedules of docs/metering.md's worked example: the
    /// first 100 GiB of a month free, then 0.09; from the 16th, 0.08.
    fn tiered() -> PriceTable {
        let rows = parse_csv(
            "p.csv",
            "provider,region,category,direction,valid_from,tier_from_gib,price_per_gib,currency\n\
             aws,*,internet,out,1970-01-01,0,0,USD\n\
             aws,*,internet,out,1970-01-01,100,0.09,USD\n\
             aws,*,internet,out,2026-10-16,0,0,USD\n\
             aws,*,internet,out,2026-10-16,100,0.08,USD\n\
             aws,*,cross_zone,out,1970-01-01,0,0.01,USD\n",
        )
        .unwrap();
        PriceTable::new(rows, BTreeMap::new(), Some("aws".into()))
    }

    /// Each line's cents, by workload, each cluster its own account.
    fn workload_cents(rows: Vec<Usage>) -> Vec<u128> {
        price(
            rows,
            Grouping::Workload,
            &tiered(),
            &Accounts::default(),
            None,
        )
        .unwrap()
        .lines
        .iter()
        .map(|l| l.cost.clone().unwrap().0)
        .collect()
    }

    fn on(day: u32, cluster: &str, team: &str, workload: &str, gib: u64) -> Usage {
        let mut row = usage(team, workload, "us-east-1", "internet", "out", gib * GIB);
        row.day = chrono::NaiveDate::from_ymd_opt(2026, 10, day).unwrap();
        row.cluster = cluster.into();
        row
    }

    #[test]
    fn an_accounts_tiers_are_shared_by_its_clusters_and_allocated_pro_rata() {
        let accounts = Accounts::new(
            accounts::parse_csv("a.csv", "cluster,account\ntier,acct-t\ntier2,acct-t\n").unwrap(),
        );
        // 60 GiB free; 40 free and 20 at 0.09 (1.80); 30 at the 16th's
        // 0.08 (2.40): 4.20 for 150 GiB, 0.028 a GiB.
        let rows = vec![
            on(3, "tier", "storefront", "web", 60),
            on(10, "tier2", "platform", "db", 60),
            on(20, "tier", "storefront", "web", 30),
        ];
        let export = price(rows.clone(), Grouping::Team, &tiered(), &accounts, None).unwrap();
        let costs: Vec<_> = export
            .lines
            .iter()
            .map(|l| {
                (
                    l.labels[1].as_str(),
                    l.cost.clone().unwrap().0,
                    l.pricing,
                    l.account.as_str(),
                )
            })
            .collect();
        assert_eq!(
            costs,
            [
                ("storefront", 252, Pricing::Tiered, "acct-t"),
                ("platform", 168, Pricing::Tiered, "acct-t")
            ]
        );
        // One cluster's lines still count the other's bytes.
        let export = price(
            rows.clone(),
            Grouping::Team,
            &tiered(),
            &accounts,
            Some("tier2"),
        )
        .unwrap();
        assert_eq!(export.lines.len(), 1);
        assert_eq!(export.lines[0].cost, Some((168, "USD".to_owned())));
        // Two accounts: each has its own free 100 GiB.
        let export = price(rows, Grouping::Team, &tiered(), &Accounts::default(), None).unwrap();
        let costs: Vec<_> = export
            .lines
            .iter()
            .map(|l| l.cost.clone().unwrap().0)
            .collect();
        assert_eq!(costs, [0, 0]);
    }

    #[test]
    fn left_cents_go_to_the_largest_remainders_then_in_label_order() {
        // 150 GiB on one day: 100 free, 50 at 0.08 = 4.00 over three equal
        // workloads: 1.34, 1.33, 1.33.
        let rows = vec![
            on(25, "split", "t", "x", 50),
            on(25, "split", "t", "y", 50),
            on(25, "split", "t", "z", 50),
        ];
        assert_eq!(workload_cents(rows), [134, 133, 133]);
        // 101 GiB: 1 at 0.09 = 0.09 over 100 GiB and 1 GiB: 8.91 and 0.09
        // cents exactly; the 1 cent left goes to the larger remainder.
        let rows = vec![on(3, "split", "t", "x", 100), on(3, "split", "t", "y", 1)];
        assert_eq!(workload_cents(rows), [9, 0]);
    }

    #[test]
    fn a_line_can_be_flat_and_tiered_and_coarser_lines_sum_workload_cents() {
        let mut zone = on(3, "c1", "t", "x", 10);
        zone.category = "cross_zone".into();
        let rows = vec![
            on(25, "c1", "t", "x", 50),
            on(25, "c1", "t", "y", 50),
            on(25, "c1", "t", "z", 50),
            zone,
        ];
        let export = price(rows, Grouping::Team, &tiered(), &Accounts::default(), None).unwrap();
        let lines: Vec<_> = export
            .lines
            .iter()
            .map(|l| (l.category.as_str(), l.cost.clone().unwrap().0, l.pricing))
            .collect();
        assert_eq!(
            lines,
            [
                ("cross_zone", 10, Pricing::Flat),
                ("internet", 400, Pricing::Tiered)
            ]
        );
    }

    #[test]
    fn a_schedule_changed_to_another_currency_starts_its_tiers_afresh() {
        let rows = parse_csv(
            "p.csv",
            "provider,region,category,direction,valid_from,tier_from_gib,price_per_gib,currency\n\
             aws,*,internet,out,1970-01-01,0,0,USD\n\
             aws,*,internet,out,1970-01-01,100,0.09,USD\n\
             aws,*,internet,out,2026-10-16,0,0,EUR\n\
             aws,*,internet,out,2026-10-16,100,0.08,EUR\n",
        )
        .unwrap();
        let table = PriceTable::new(rows, BTreeMap::new(), Some("aws".into()));
        // 60 GiB in USD, then 60 in EUR: each under its own free 100 GiB.
        // Counted as one unit, the EUR day would pass 100 GiB (1.60 EUR)
        // and half of it would land on the USD line.
        let rows = vec![on(3, "c1", "t", "a", 60), on(20, "c1", "t", "b", 60)];
        let export = price(rows, Grouping::Workload, &table, &Accounts::default(), None).unwrap();
        let costs: Vec<_> = export
            .lines
            .iter()
            .map(|l| l.cost.clone().unwrap())
            .collect();
        assert_eq!(costs, [(0, "USD".to_owned()), (0, "EUR".to_owned())]);
    }

    #[test]
    fn the_shipped_prices_tier_internet_egress_from_december_2026() {
        let rows = parse_csv("shipped", prices::DEFAULTS_CSV).unwrap();
        let cost = |provider: &str, month: u32, gib: u64| {
            let table = PriceTable::new(rows.clone(), BTreeMap::new(), Some(provider.into()));
            let mut row = on(1, "c1", "t", "w", gib);
            row.day = chrono::NaiveDate::from_ymd_opt(2026, month, 15).unwrap();
            let export = price([row], Grouping::Team, &table, &Accounts::default(), None).unwrap();
            (
                export.lines[0].cost.clone().unwrap().0,
                export.lines[0].pricing,
            )
        };
        // November: the first paid tier's price, flat.
        assert_eq!(cost("aws", 11, 150), (1350, Pricing::Flat));
        // 100 GiB free, 50 at 0.09.
        assert_eq!(cost("aws", 12, 150), (450, Pricing::Tiered));
        // 10 TiB + 100 GiB: 10,140 GiB at 0.09, then 100 at 0.085.
        assert_eq!(cost("aws", 12, 10_340), (91_260 + 850, Pricing::Tiered));
        // 1 TiB at 0.12, 1 TiB at 0.11.
        assert_eq!(cost("gcp", 12, 2048), (12_288 + 11_264, Pricing::Tiered));
        // 100 GiB free, 50 at 0.087.
        assert_eq!(cost("azure", 12, 150), (435, Pricing::Tiered));
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
