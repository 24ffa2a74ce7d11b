//! Which clusters share a cloud account. Volume tiers and free allowances
//! count an account's bytes over a month, not a cluster's: clusters billed
//! to one account share them. A cluster no row names is an account of its
//! own (named after it).
//!
//! Membership is dated: a row applies to the months whose first day is on
//! or after its `valid_from`, so a month is tiered with the accounts of
//! its first day and a later change leaves closed months alone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{Datelike, NaiveDate};

use super::prices::parse_valid_from;
use crate::input::{BadLine, InputError};

/// One cluster's account from a day on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The cluster's name, as its records have it.
    pub cluster: String,
    /// The cloud account it is billed to.
    pub account: String,
    /// The first day it applies to (in force on a month's first day, it
    /// holds for the month).
    pub valid_from: NaiveDate,
}

/// Each cluster's accounts over time.
#[derive(Debug, Default)]
pub struct Accounts {
    /// Per cluster, (valid_from, account) ascending.
    by_cluster: HashMap<String, BTreeMap<NaiveDate, String>>,
}

impl Accounts {
    /// From rows (a later row for the same cluster and day replaces an
    /// earlier one).
    pub fn new(rows: impl IntoIterator<Item = AccountRow>) -> Accounts {
        let mut by_cluster: HashMap<String, BTreeMap<NaiveDate, String>> = HashMap::new();
        for row in rows {
            by_cluster
                .entry(row.cluster)
                .or_default()
                .insert(row.valid_from, row.account);
        }
        Accounts { by_cluster }
    }

    /// The account `cluster` is billed to in the month of `day`.
    pub fn account_of<'a>(&'a self, cluster: &'a str, day: NaiveDate) -> &'a str {
        let first = day.with_day(1).unwrap_or(day);
        self.by_cluster
            .get(cluster)
            .and_then(|dated| dated.range(..=first).next_back())
            .map_or(cluster, |(_, account)| account)
    }
}

/// The columns of an accounts file.
const HEADER: &str = "cluster,account,valid_from";

/// Reads an accounts CSV file: the header `cluster,account,valid_from`
/// (`cluster,account` alone applies to every month), then one cluster's
/// account per line; blank lines and lines starting with `#` are ignored.
pub fn read_csv(path: &Path) -> Result<Vec<AccountRow>, InputError> {
    crate::input::read_table("accounts", path, parse_csv)
}

/// Parses accounts CSV text; `file` names it in errors.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<AccountRow>, BadLine> {
    let bad = BadLine::of(file);
    let mut lines = crate::input::content_lines(text);
    let dated = match lines.next() {
        Some((_, header)) if header == HEADER => true,
        Some((_, "cluster,account")) => false,
        other => {
            return Err(bad(
                other.map_or(1, |(n, _)| n),
                format!("expected the header {HEADER} (or cluster,account for every month)"),
            ))
        }
    };
    let mut rows = Vec::new();
    let mut first_line = HashMap::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (cluster, account, valid_from) = match (dated, &fields[..]) {
            (true, &[cluster, account, day]) => (cluster, account, day),
            (false, &[cluster, account]) => (cluster, account, "1970-01-01"),
            _ => {
                return Err(bad(
                    number,
                    format!(
                        "expected {} fields, found {}",
                        if dated { 3 } else { 2 },
                        fields.len()
                    ),
                ))
            }
        };
        for (name, value) in [("cluster", cluster), ("account", account)] {
            crate::input::check_name(name, value, true).map_err(|e| bad(number, e))?;
        }
        let valid_from = parse_valid_from(valid_from).map_err(|e| bad(number, e))?;
        if let Some(earlier) = first_line.insert((cluster.to_owned(), valid_from), number) {
            return Err(bad(
                number,
                format!(
                    "a second account for {cluster} from {valid_from} (line {earlier} has one)"
                ),
            ));
        }
        rows.push(AccountRow {
            cluster: cluster.to_owned(),
            account: account.to_owned(),
            valid_from,
        });
    }
    Ok(rows)
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
            "cluster,account,valid_from\n# shared from October\nc1,acct,2026-10-01\nc1,other,2026-10-15\n",
        )
        .unwrap();
        let accounts = Accounts::new(rows);
        assert_eq!(accounts.account_of("c1", day(2026, 9, 30)), "c1");
        assert_eq!(accounts.account_of("c1", day(2026, 10, 20)), "acct");
        assert_eq!(accounts.account_of("c1", day(2026, 11, 1)), "other");
        assert_eq!(accounts.account_of("c2", day(2026, 10, 20)), "c2");
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            ("cluster\n", 1, "header"),
            ("cluster,account\nc1\n", 2, "2 fields"),
            (
                "cluster,account,valid_from\nc1,a,2026-10-32\n",
                2,
                "valid_from",
            ),
            ("cluster,account\nc1,a\nc1,b\n", 3, "line 2 has one"),
            ("cluster,account\nc1,\n", 2, "account"),
        ];
        for (text, line, word) in cases {
            let error = parse_csv("a.csv", text).unwrap_err();
            assert_eq!(error.line, line, "{text}");
            assert!(error.to_string().contains(word), "{error}");
        }
    }
}
