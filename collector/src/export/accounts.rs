//! Which clusters share a cloud account. Volume tiers and free allowances
//! count an account's bytes over a month, not a cluster's: clusters billed
//! to one account share them. A cluster no row names is an account of its
//! own (named after it).
//!
//! Membership is dated: a row applies to the months whose first day is on
//! or after its `valid_from`, so a month is tiered with the accounts of
//! its first day and a later change leaves closed months alone.

use std::path::Path;

use chrono::{Datelike, NaiveDate};

use super::cluster_settings::{self, ByCluster, Dated};
use crate::input::{BadLine, InputError};

/// Each cluster's accounts over time.
#[derive(Debug, Default)]
pub struct Accounts(ByCluster<String>);

impl Accounts {
    /// From rows (a later row for the same cluster and day replaces an
    /// earlier one).
    pub fn new(rows: impl IntoIterator<Item = Dated<String>>) -> Accounts {
        Accounts(ByCluster::new(rows))
    }

    /// The account `cluster` is billed to in the month of `day`.
    pub fn account_of<'a>(&'a self, cluster: &'a str, day: NaiveDate) -> &'a str {
        self.0
            .on(cluster, day.with_day(1).unwrap_or(day))
            .map_or(cluster, String::as_str)
    }
}

/// Reads an accounts CSV file: the header `cluster,account,valid_from`
/// (`cluster,account` alone applies to every month), then one cluster's
/// account per line; blank lines and lines starting with `#` are ignored.
pub fn read_csv(path: &Path) -> Result<Vec<Dated<String>>, InputError> {
    crate::input::read_table("accounts", path, parse_csv)
}

/// Parses accounts CSV text; `file` names it in errors.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<Dated<String>>, BadLine> {
    cluster_settings::parse_csv(file, text, "account", |account| {
        crate::input::check_name("account", account, true).map(|()| account.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn a_month_takes_the_account_of_its_first_day_and_unnamed_clusters_are_their_own() {
        let rows = parse_csv(
            "a.csv",
            "cluster,account,valid_from\nc1,acct,2026-10-01\nc1,other,2026-10-15\n",
        )
        .unwrap();
        let accounts = Accounts::new(rows);
        assert_eq!(accounts.account_of("c1", day(2026, 9, 30)), "c1");
        assert_eq!(accounts.account_of("c1", day(2026, 10, 20)), "acct");
        assert_eq!(accounts.account_of("c1", day(2026, 11, 1)), "other");
        assert_eq!(accounts.account_of("c2", day(2026, 10, 20)), "c2");
        let error = parse_csv("a.csv", "cluster,account\nc1,\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().contains("account"), "{error}");
    }
}
