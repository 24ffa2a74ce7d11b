//! Coverage and allocation from the two sides of a month: per billed unit,
//! the billed bytes against the metered ones, and the billed cost split
//! over the groups whose metered bytes make it up, the unexplained rest a
//! line of its own.
//!
//! Money stays in billionths of the currency until the last step. Each
//! day's cost of a unit is split over that day's groups by the largest-
//! remainder method (the parts sum to it exactly); the month's parts of a
//! unit are then rounded to cents the same way, so a unit's lines sum to
//! its billed cost rounded once, half away from zero, to the cent.

use std::collections::BTreeMap;

use super::bill::{Billed, Direction};
use super::ledger::{Bills, Metering, Provider, Unit};
use super::split;

/// Metered bytes within this share of the billed bytes are `ok` coverage,
/// unless the operator says otherwise (`--tolerance`).
pub const DEFAULT_TOLERANCE_PERCENT: u8 = 10;

/// How a unit's metered bytes compare with its billed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within the tolerance ([`DEFAULT_TOLERANCE_PERCENT`] unless given).
    Ok,
    /// tollgate sees far less: a datapath that bypasses conntrack, or
    /// traffic of the node that is not a pod's or the node's own.
    Low,
    /// tollgate sees far more than is billed.
    High,
    /// Billed, but no node running tollgate is this resource.
    NotMetered,
    /// Metered, but the bill has no line for it.
    NotBilled,
    /// Network cost of a kind tollgate does not meter (a CDN's transfer, a
    /// load balancer's processing).
    CategoryNotMetered,
}

impl Status {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Low => "low",
            Status::High => "high",
            Status::NotMetered => "not_metered",
            Status::NotBilled => "not_billed",
            Status::CategoryNotMetered => "category_not_metered",
        }
    }
}

/// One coverage line: a billed unit, or a metered one the bill lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageRow {
    /// The cloud.
    pub provider: Provider,
    /// The billed resource (as the bill writes it, or the matched key).
    pub resource: String,
    /// Its accounts, space-separated.
    pub accounts: String,
    /// The `cluster/node`s behind it, space-separated.
    pub nodes: String,
    /// What it bills.
    pub billed: Billed,
    /// Which way.
    pub direction: Direction,
    /// Billed bytes in the month.
    pub billed_bytes: u128,
    /// Metered bytes in the month.
    pub metered_bytes: u128,
    /// Billed cost in billionths.
    pub cost_nanos: i128,
    /// How they compare.
    pub status: Status,
}

/// Why billed cost is not allocated to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The bill counts more bytes than tollgate metered: the difference's
    /// share of the cost.
    UnexplainedBytes,
    /// The resource is a node running tollgate, but nothing of this
    /// category and direction was metered that day.
    NoMeteredBytes,
    /// No node running tollgate is this resource (another workload's
    /// instance, or a node without the agent).
    NodeNotMetered,
    /// The line bills network cost tollgate does not meter (a CDN's
    /// transfer, a load balancer's processing).
    CategoryNotMetered,
}

impl Reason {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnexplainedBytes => "unexplained_bytes",
            Reason::NoMeteredBytes => "no_metered_bytes",
            Reason::NodeNotMetered => "node_not_metered",
            Reason::CategoryNotMetered => "category_not_metered",
        }
    }
}

/// Who gets a share of a unit's cost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Share {
    /// A group: its labels, as the grouping names them.
    Group(Vec<String>),
    /// Nobody, for this reason.
    Unallocated(Reason),
}

/// One allocation line: a unit's cost share of one group, or its
/// unallocated rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRow {
    /// The cloud.
    pub provider: Provider,
    /// The billed resource, as the bill writes it.
    pub resource: String,
    /// Its accounts, space-separated.
    pub accounts: String,
    /// The provider's names for the usage, `; `-separated.
    pub usage: String,
    /// What it bills.
    pub billed: Billed,
    /// Which way.
    pub direction: Direction,
    /// Who gets it.
    pub share: Share,
    /// The group's metered bytes the share follows; for an unallocated
    /// rest, the billed bytes tollgate did not meter.
    pub bytes: u128,
    /// Cost in cents.
    pub cost_cents: i128,
}

/// Coverage and allocation of one month.
#[derive(Debug, Default)]
pub struct Report {
    /// Coverage lines, billed units first.
    pub coverage: Vec<CoverageRow>,
    /// Allocation lines.
    pub allocation: Vec<AllocationRow>,
}

impl Report {
    /// The report of `bills` against `metering`; coverage within
    /// `tolerance_percent` of the billed bytes is `ok`.
    pub fn new(bills: &Bills, metering: &Metering, tolerance_percent: u8) -> Self {
        let mut report = Report::default();
        for (unit, bill) in &bills.units {
            let basis = metering.basis(unit);
            let node_known = match unit.billed {
                Billed::NatGateway => basis.is_some(),
                _ => metering
                    .nodes
                    .contains_key(&(unit.provider, unit.resource.clone())),
            };
            let mut nanos: BTreeMap<Share, (i128, u128)> = BTreeMap::new();
            let (mut billed_bytes, mut cost) = (0u128, 0i128);
            for (day, &(bytes, day_cost)) in &bill.days {
                billed_bytes += bytes;
                cost += day_cost;
                let groups = basis.and_then(|b| b.get(day)).filter(|g| !g.is_empty());
                let Some(groups) = groups else {
                    let reason = if unit.billed == Billed::Unmetered {
                        Reason::CategoryNotMetered
                    } else if node_known {
                        Reason::NoMeteredBytes
                    } else {
                        Reason::NodeNotMetered
                    };
                    let entry = nanos.entry(Share::Unallocated(reason)).or_default();
                    entry.0 += day_cost;
                    entry.1 += bytes;
                    continue;
                };
                let metered: u128 = groups.values().map(|&b| u128::from(b)).sum();
                let mut shares: Vec<(Share, u128)> = groups
                    .iter()
                    .map(|(group, &b)| (Share::Group(group.clone()), u128::from(b)))
                    .collect();
                if metered < bytes {
                    shares.push((
                        Share::Unallocated(Reason::UnexplainedBytes),
                        bytes - metered,
                    ));
                }
                let weights: Vec<u128> = shares.iter().map(|(_, w)| *w).collect();
                for ((share, weight), part) in
                    shares.into_iter().zip(split::by_weight(day_cost, &weights))
                {
                    let entry = nanos.entry(share).or_default();
                    entry.0 += part;
                    entry.1 += weight;
                }
            }
            let accounts = join(&bill.accounts, " ");
            let cents = split::to_cents(&nanos.values().map(|(n, _)| *n).collect::<Vec<_>>());
            for ((share, (_, bytes)), cost_cents) in nanos.into_iter().zip(cents) {
                if cost_cents == 0 && bytes == 0 {
                    continue;
                }
                report.allocation.push(AllocationRow {
                    provider: unit.provider,
                    resource: bill.resource.clone(),
                    accounts: accounts.clone(),
                    usage: join(&bill.usages, "; "),
                    billed: unit.billed,
                    direction: unit.direction,
                    share,
                    bytes,
                    cost_cents,
                });
            }
            let metered_month = basis.map_or(0, month_bytes);
            report.coverage.push(CoverageRow {
                provider: unit.provider,
                resource: bill.resource.clone(),
                accounts,
                nodes: nodes_of(metering, unit),
                billed: unit.billed,
                direction: unit.direction,
                billed_bytes,
                metered_bytes: metered_month,
                cost_nanos: cost,
                status: if unit.billed == Billed::Unmetered {
                    Status::CategoryNotMetered
                } else if node_known {
                    status(billed_bytes, metered_month, tolerance_percent)
                } else {
                    Status::NotMetered
                },
            });
        }
        // A unit the bill lacks under every name its nodes go by, shown
        // once, under the first.
        let billed_as_any = |unit: &Unit| {
            metering
                .aliases
                .get(&(unit.provider, unit.resource.clone()))
                .is_some_and(|names| {
                    names.iter().any(|name| {
                        bills.units.contains_key(&Unit {
                            resource: name.clone(),
                            ..unit.clone()
                        })
                    })
                })
        };
        let mut unbilled: Vec<&Unit> = metering
            .units
            .keys()
            .filter(|unit| {
                metering
                    .primary
                    .contains(&(unit.provider, unit.resource.clone()))
                    && !bills.units.contains_key(unit)
                    && !billed_as_any(unit)
            })
            .collect();
        unbilled.sort();
        for unit in unbilled {
            report.coverage.push(CoverageRow {
                provider: unit.provider,
                resource: unit.resource.clone(),
                accounts: String::new(),
                nodes: nodes_of(metering, unit),
                billed: unit.billed,
                direction: unit.direction,
                billed_bytes: 0,
                metered_bytes: metering.units.get(unit).map_or(0, month_bytes),
                cost_nanos: 0,
                status: Status::NotBilled,
            });
        }
        report
    }
}

fn month_bytes(days: &super::ledger::DailyBytes) -> u128 {
    days.values()
        .flat_map(|groups| groups.values())
        .map(|&b| u128::from(b))
        .sum()
}

fn status(billed: u128, metered: u128, tolerance_percent: u8) -> Status {
    let tolerance = u128::from(tolerance_percent);
    if metered * 100 < billed * 100u128.saturating_sub(tolerance) {
        Status::Low
    } else if metered * 100 > billed * (100 + tolerance) {
        Status::High
    } else {
        Status::Ok
    }
}

fn nodes_of(metering: &Metering, unit: &Unit) -> String {
    match unit.billed {
        Billed::NatGateway => String::new(),
        _ => metering
            .nodes
            .get(&(unit.provider, unit.resource.clone()))
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(cluster, node)| format!("{cluster}/{node}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    }
}

fn join(texts: &std::collections::BTreeSet<String>, separator: &str) -> String {
    texts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use std::collections::BTreeSet;

    use chrono::NaiveDate;

    use super::*;
    use crate::export::Grouping;
    use crate::reconcile::ledger::UnitBill;
    use crate::reconcile::metered::Metered;
    use crate::reconcile::nat::NatRoutes;

    const GIB: u128 = 1 << 30;
    const CENT: i128 = 10_000_000;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 10, d).unwrap()
    }

    fn unit(resource: &str, billed: Billed, direction: Direction) -> Unit {
        Unit {
            provider: Provider::Aws,
            resource: resource.into(),
            billed,
            direction,
        }
    }

    fn billed(days: &[(u32, u128, i128)]) -> UnitBill {
        UnitBill {
            resource: String::new(),
            accounts: BTreeSet::from(["111122223333".to_owned()]),
            usages: BTreeSet::from(["EUW1-DataTransfer-Regional-Bytes InterZone-Out".to_owned()]),
            days: days
                .iter()
                .map(|&(d, bytes, cost)| (day(d), (bytes, cost)))
                .collect(),
        }
    }

    fn metered(node: &str, d: u32, category: &str, team: &str, gib: u64) -> Metered {
        Metered {
            day: day(d),
            provider_id: format!("aws:///eu-west-1a/{node}"),
            node: node.into(),
            zone: "eu-west-1a".into(),
            region: "eu-west-1".into(),
            category: category.into(),
            direction: "out",
            group: [
                "prod".into(),
                team.into(),
                "ns".into(),
                "Deployment".into(),
                "w".into(),
            ],
            bytes: gib << 30,
            initiated_bytes: 0,
        }
    }

    fn shares(report: &Report, resource: &str) -> Vec<(Share, i128)> {
        report
            .allocation
            .iter()
            .filter(|r| r.resource == resource)
            .map(|r| (r.share.clone(), r.cost_cents))
            .collect()
    }

    fn team(name: &str) -> Share {
        Share::Group(vec!["prod".into(), name.into()])
    }

    #[test]
    fn billed_cost_goes_to_metered_groups_and_the_rest_is_unallocated_with_its_reason() {
        let mut bills = Bills::default();
        let mut a = billed(&[(1, 10 * GIB, 10 * CENT), (2, GIB, CENT)]);
        a.resource = "i-a".into();
        bills
            .units
            .insert(unit("i-a", Billed::CrossZone, Direction::Out), a);
        let mut b = billed(&[(1, 100 * GIB, 100 * CENT)]);
        b.resource = "i-b".into();
        bills
            .units
            .insert(unit("i-b", Billed::Internet, Direction::Out), b);
        let mut c = billed(&[(3, 3 * GIB, 10 * CENT)]);
        c.resource = "i-c".into();
        bills
            .units
            .insert(unit("i-c", Billed::CrossZone, Direction::Out), c);
        bills.files.push((
            "cur.csv".into(),
            crate::reconcile::bill::Format::AwsCsv,
            Default::default(),
        ));
        let rows = [
            // Day 1 of i-a: 8 of its 10 billed GiB metered, cross-zone
            // and public addresses in the region alike.
            metered("i-a", 1, "cross_zone", "x", 5),
            metered("i-a", 1, "public_in_region", "x", 1),
            metered("i-a", 1, "cross_zone", "y", 2),
            // Same-zone bytes are not billed: no share.
            metered("i-a", 1, "same_zone", "z", 50),
            // i-c: three equal groups share 10 cents.
            metered("i-c", 3, "cross_zone", "x", 1),
            metered("i-c", 3, "cross_zone", "y", 1),
            metered("i-c", 3, "cross_zone", "z", 1),
            // Metered, never billed.
            metered("i-d", 3, "cross_region", "x", 4),
        ];
        let metering = Metering::new(
            &rows,
            Grouping::Team,
            &bills.providers(),
            NatRoutes::default(),
        );
        let report = Report::new(&bills, &metering, DEFAULT_TOLERANCE_PERCENT);
        assert_eq!(
            shares(&report, "i-a"),
            [
                (team("x"), 6),
                (team("y"), 2),
                (Share::Unallocated(Reason::UnexplainedBytes), 2),
                // Day 2: the node runs tollgate, nothing metered.
                (Share::Unallocated(Reason::NoMeteredBytes), 1),
            ]
        );
        assert_eq!(
            shares(&report, "i-b"),
            [(Share::Unallocated(Reason::NodeNotMetered), 100)]
        );
        assert_eq!(
            shares(&report, "i-c"),
            [(team("x"), 4), (team("y"), 3), (team("z"), 3)]
        );
        let total: i128 = report.allocation.iter().map(|r| r.cost_cents).sum();
        assert_eq!(total, 11 + 100 + 10, "every billed cent, once");

        let coverage: Vec<(&str, u128, u128, Status)> = report
            .coverage
            .iter()
            .map(|r| {
                (
                    r.resource.as_str(),
                    r.billed_bytes,
                    r.metered_bytes,
                    r.status,
                )
            })
            .collect();
        assert_eq!(
            coverage,
            [
                ("i-a", 11 * GIB, 8 * GIB, Status::Low),
                ("i-b", 100 * GIB, 0, Status::NotMetered),
                ("i-c", 3 * GIB, 3 * GIB, Status::Ok),
                ("i-d", 0, 4 * GIB, Status::NotBilled),
            ]
        );
        assert_eq!(report.coverage[0].nodes, "prod/i-a");
    }

    /// Two gateways, one per zone, their processing billed at different
    /// rates: declared, each one's cost goes to the teams of its own zone
    /// and its coverage is its zone's bytes; undeclared, both are split
    /// over the whole cloud, and each is "covered" by both zones' bytes.
    #[test]
    fn a_declared_nat_gateway_is_split_over_the_nodes_of_its_zones_only() {
        const NAT_A: &str = "arn:aws:ec2:eu-west-1:111122223333:natgateway/nat-0aaa";
        const NAT_B: &str = "arn:aws:ec2:eu-west-1:111122223333:natgateway/nat-0bbb";
        let mut bills = Bills::default();
        for (gateway, gib, cents) in [(NAT_A, 30, 135), (NAT_B, 10, 90)] {
            let mut line = billed(&[(1, gib * GIB, cents * CENT)]);
            line.resource = gateway.into();
            bills
                .units
                .insert(unit(gateway, Billed::NatGateway, Direction::Out), line);
        }
        bills.files.push((
            "cur.csv".into(),
            crate::reconcile::bill::Format::AwsCsv,
            Default::default(),
        ));
        let opened = |node: &str, zone: &str, team: &str, gib: u64| Metered {
            zone: zone.into(),
            initiated_bytes: gib << 30,
            ..metered(node, 1, "internet", team, gib)
        };
        let rows = [
            opened("i-a", "eu-west-1a", "x", 20),
            opened("i-a", "eu-west-1a", "y", 10),
            opened("i-b", "eu-west-1b", "z", 10),
        ];
        let report = |routes: NatRoutes| {
            let metering = Metering::new(&rows, Grouping::Team, &bills.providers(), routes);
            Report::new(&bills, &metering, DEFAULT_TOLERANCE_PERCENT)
        };
        let coverage = |report: &Report| -> Vec<(u128, Status)> {
            report
                .coverage
                .iter()
                .filter(|r| r.billed == Billed::NatGateway)
                .map(|r| (r.metered_bytes, r.status))
                .collect()
        };

        let routed = report(NatRoutes(vec![
            "nat-0aaa=eu-west-1a".parse().unwrap(),
            "nat-0bbb=eu-west-1b,eu-west-1c".parse().unwrap(),
        ]));
        assert_eq!(shares(&routed, NAT_A), [(team("x"), 90), (team("y"), 45)]);
        assert_eq!(shares(&routed, NAT_B), [(team("z"), 90)]);
        assert_eq!(
            coverage(&routed),
            [(30 * GIB, Status::Ok), (10 * GIB, Status::Ok)]
        );

        let shared = report(NatRoutes::default());
        assert_eq!(
            shares(&shared, NAT_B),
            [(team("x"), 45), (team("y"), 23), (team("z"), 22)]
        );
        assert_eq!(
            coverage(&shared),
            [(40 * GIB, Status::High), (40 * GIB, Status::High)]
        );

        // A gateway declared for a zone with nodes but no opened internet
        // bytes: its cost is unallocated, no metered bytes; for a zone
        // without nodes, the nodes are not metered.
        let idle = report(NatRoutes(vec![
            "nat-0aaa=eu-west-1c".parse().unwrap(),
            "nat-0bbb=eu-west-1b".parse().unwrap(),
        ]));
        assert_eq!(
            shares(&idle, NAT_A),
            [(Share::Unallocated(Reason::NodeNotMetered), 135)]
        );
        let rows = [
            metered("i-c", 1, "cross_zone", "w", 1),
            opened("i-b", "eu-west-1b", "z", 10),
        ];
        let metering = Metering::new(
            &[
                Metered {
                    zone: "eu-west-1c".into(),
                    ..rows[0].clone()
                },
                rows[1].clone(),
            ],
            Grouping::Team,
            &bills.providers(),
            NatRoutes(vec!["nat-0aaa=eu-west-1c".parse().unwrap()]),
        );
        let report = Report::new(&bills, &metering, DEFAULT_TOLERANCE_PERCENT);
        assert_eq!(
            shares(&report, NAT_A),
            [(Share::Unallocated(Reason::NoMeteredBytes), 135)]
        );
    }

    /// An AKS node is a scale set's instance, billed under either name:
    /// its opened bytes count once for its NAT gateway, declared or not.
    #[test]
    fn a_scale_set_instance_counts_its_nat_bytes_once() {
        const NAT: &str =
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/natgateways/nat-prod";
        let mut bills = Bills::default();
        let mut line = billed(&[(1, 10 * GIB, 45 * CENT)]);
        line.resource = NAT.into();
        bills.units.insert(
            Unit {
                provider: Provider::Azure,
                ..unit(NAT, Billed::NatGateway, Direction::Out)
            },
            line,
        );
        bills.files.push((
            "cost-details.csv".into(),
            crate::reconcile::bill::Format::AzureCsv,
            Default::default(),
        ));
        let row = Metered {
            provider_id: "azure:///subscriptions/S/resourceGroups/MC_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool-1-vmss/virtualMachines/3".into(),
            zone: "westeurope-1".into(),
            initiated_bytes: 10 << 30,
            ..metered("aks-pool-1-vmss_3", 1, "internet", "x", 10)
        };
        for routes in [
            NatRoutes::default(),
            NatRoutes(vec!["nat-prod=westeurope-1".parse().unwrap()]),
        ] {
            let metering = Metering::new(
                std::slice::from_ref(&row),
                Grouping::Team,
                &bills.providers(),
                routes,
            );
            let report = Report::new(&bills, &metering, DEFAULT_TOLERANCE_PERCENT);
            let nat = report
                .coverage
                .iter()
                .find(|r| r.billed == Billed::NatGateway)
                .unwrap();
            assert_eq!((nat.metered_bytes, nat.status), (10 * GIB, Status::Ok));
            assert_eq!(shares(&report, NAT), [(team("x"), 45)]);
        }
    }

    #[test]
    fn the_tolerance_bounds_ok_coverage() {
        assert_eq!(status(100, 90, 10), Status::Ok);
        assert_eq!(status(100, 89, 10), Status::Low);
        assert_eq!(status(100, 110, 10), Status::Ok);
        assert_eq!(status(100, 111, 10), Status::High);
        assert_eq!(status(100, 99, 0), Status::Low);
        assert_eq!(status(100, 100, 0), Status::Ok);
        assert_eq!(status(100, 101, 0), Status::High);
        assert_eq!(status(100, 0, 100), Status::Ok);
    }

    #[test]
    fn a_credit_is_split_like_a_charge() {
        let mut bills = Bills::default();
        let mut a = billed(&[(1, 4 * GIB, 3 * CENT), (2, 0, -CENT)]);
        a.resource = "i-a".into();
        bills
            .units
            .insert(unit("i-a", Billed::CrossZone, Direction::Out), a);
        bills.files.push((
            "cur.csv".into(),
            crate::reconcile::bill::Format::AwsCsv,
            Default::default(),
        ));
        let rows = [
            metered("i-a", 1, "cross_zone", "x", 2),
            metered("i-a", 1, "cross_zone", "y", 2),
            metered("i-a", 2, "cross_zone", "x", 1),
        ];
        let metering = Metering::new(
            &rows,
            Grouping::Team,
            &bills.providers(),
            NatRoutes::default(),
        );
        let report = Report::new(&bills, &metering, DEFAULT_TOLERANCE_PERCENT);
        // x: 1.5 - 1 cents, y: 1.5 cents; 2 cents in all.
        assert_eq!(shares(&report, "i-a"), [(team("x"), 1), (team("y"), 1)]);
    }
}
