//! NAT gateways: a cluster declared to reach the internet through one pays
//! the gateway's processing charge on the bytes that pass it. Those are
//! the bytes, both ways, of connections its own endpoints opened to the
//! internet, a cloud service or a public address in the region (one
//! opened from outside comes in through a load balancer or a public
//! address, not the gateway). They are metered again as category
//! [`NAT_GATEWAY`] and priced like any other row, exactly as the
//! `nat_metering_daily` view of migration 0013 makes them.

use std::path::Path;

use chrono::NaiveDate;

use super::cluster_settings::{self, ByCluster, Dated};
use super::Usage;
use crate::input::{BadLine, InputError};

/// The billing category of a gateway's processing (a price list
/// category, never a flow's).
pub const NAT_GATEWAY: &str = "nat_gateway";

/// The flow categories whose traffic passes a cluster's NAT gateway.
const THROUGH_THE_GATEWAY: [&str; 3] = ["internet", "cloud_service", "public_in_region"];

/// Whether each cluster is behind a NAT gateway, over time.
#[derive(Debug, Default)]
pub struct NatGateways(ByCluster<bool>);

impl NatGateways {
    /// From rows (a later row for the same cluster and day replaces an
    /// earlier one).
    pub fn new(rows: impl IntoIterator<Item = Dated<bool>>) -> NatGateways {
        NatGateways(ByCluster::new(rows))
    }

    /// Whether `cluster` reaches the internet through a NAT gateway on `day`.
    pub fn behind_nat(&self, cluster: &str, day: NaiveDate) -> bool {
        self.0.on(cluster, day).copied().unwrap_or(false)
    }

    /// `usage` and, after it, the gateways' rows.
    pub fn with_gateways(&self, mut usage: Vec<Usage>) -> Vec<Usage> {
        let processed: Vec<Usage> = usage.iter().filter_map(|row| self.processed(row)).collect();
        usage.extend(processed);
        usage
    }

    /// The gateway's usage row for `row`, if its bytes pass a gateway.
    pub fn processed(&self, row: &Usage) -> Option<Usage> {
        (row.initiated_bytes > 0
            && THROUGH_THE_GATEWAY.contains(&row.category.as_str())
            && self.behind_nat(&row.cluster, row.day))
        .then(|| Usage {
            category: NAT_GATEWAY.to_owned(),
            bytes: row.initiated_bytes,
            initiated_bytes: 0,
            ..row.clone()
        })
    }
}

/// Reads a NAT CSV file: the header `cluster,nat,valid_from` (`cluster,nat`
/// alone applies to every day), then per line a cluster, `true` or
/// `false`, and the day from which it holds; blank lines and lines
/// starting with `#` are ignored.
pub fn read_csv(path: &Path) -> Result<Vec<Dated<bool>>, InputError> {
    crate::input::read_table("NAT gateways", path, parse_csv)
}

/// Parses NAT CSV text; `file` names it in errors.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<Dated<bool>>, BadLine> {
    cluster_settings::parse_csv(file, text, "nat", |text| match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is neither true nor false")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    fn row(day: u32, category: &str, bytes: u64, initiated: u64) -> Usage {
        Usage {
            day: NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
            cluster: "c1".into(),
            team: "t".into(),
            namespace: "n".into(),
            workload_kind: "Deployment".into(),
            workload: "w".into(),
            region: "r1".into(),
            remote_region: String::new(),
            category: category.into(),
            direction: "in".into(),
            bytes,
            initiated_bytes: initiated,
            provider: String::new(),
        }
    }

    #[test]
    fn only_connections_opened_inside_to_public_addresses_pass_the_gateway_while_declared() {
        let nat = NatGateways::new(
            parse_csv(
                "n.csv",
                "cluster,nat,valid_from\nc1,true,2026-10-10\nc1,false,2026-10-20\n",
            )
            .unwrap(),
        );
        let through = |r: Usage| nat.processed(&r).map(|n| (n.category, n.bytes));
        assert_eq!(
            through(row(12, "internet", 30, 20)),
            Some((NAT_GATEWAY.to_owned(), 20))
        );
        assert_eq!(
            through(row(12, "cloud_service", 5, 5)),
            Some((NAT_GATEWAY.to_owned(), 5))
        );
        assert_eq!(through(row(12, "cross_zone", 5, 5)), None);
        assert_eq!(through(row(12, "internet", 30, 0)), None);
        assert_eq!(through(row(9, "internet", 30, 20)), None);
        assert_eq!(through(row(20, "internet", 30, 20)), None);
        let error = parse_csv("n.csv", "cluster,nat\nc1,yes\n").unwrap_err();
        assert!(
            error.to_string().starts_with("n.csv:2: nat: \"yes\""),
            "{error}"
        );
    }
}
