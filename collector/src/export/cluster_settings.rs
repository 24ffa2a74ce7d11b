//! Settings a cluster has from a day on (its cloud account, whether it
//! reaches the internet through a NAT gateway), as ClickHouse's
//! `cluster_accounts` and `cluster_nat` tables or a CSV file hold them:
//! `cluster,<setting>,valid_from`, one row per change.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use super::prices::{parse_valid_from, ALWAYS};
use crate::input::BadLine;

/// One cluster's setting from a day on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated<T> {
    /// The cluster's name, as its records have it.
    pub cluster: String,
    /// The setting.
    pub value: T,
    /// The first day it applies to.
    pub valid_from: NaiveDate,
}

/// Each cluster's setting over time.
#[derive(Debug)]
pub struct ByCluster<T> {
    /// Per cluster, (valid_from, value) ascending.
    by_cluster: HashMap<String, BTreeMap<NaiveDate, T>>,
}

impl<T> Default for ByCluster<T> {
    fn default() -> Self {
        ByCluster {
            by_cluster: HashMap::new(),
        }
    }
}

impl<T> ByCluster<T> {
    /// From rows (a later row for the same cluster and day replaces an
    /// earlier one).
    pub fn new(rows: impl IntoIterator<Item = Dated<T>>) -> ByCluster<T> {
        let mut by_cluster: HashMap<String, BTreeMap<NaiveDate, T>> = HashMap::new();
        for row in rows {
            by_cluster
                .entry(row.cluster)
                .or_default()
                .insert(row.valid_from, row.value);
        }
        ByCluster { by_cluster }
    }

    /// The setting of `cluster` in force on `day`, if any.
    pub fn on(&self, cluster: &str, day: NaiveDate) -> Option<&T> {
        self.by_cluster
            .get(cluster)
            .and_then(|dated| dated.range(..=day).next_back())
            .map(|(_, value)| value)
    }
}

/// Parses a settings CSV: the header `cluster,<column>,valid_from`
/// (`cluster,<column>` alone applies from 1970-01-01), then one row per
/// line, its value read by `value`; blank lines and lines starting with
/// `#` are ignored. `file` names it in errors.
pub fn parse_csv<T>(
    file: &str,
    text: &str,
    column: &str,
    value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<Dated<T>>, BadLine> {
    let bad = BadLine::of(file);
    let header = format!("cluster,{column},valid_from");
    let mut lines = crate::input::content_lines(text);
    let dated = match lines.next() {
        Some((_, line)) if line == header => true,
        Some((_, line)) if line == format!("cluster,{column}") => false,
        other => {
            return Err(bad(
                other.map_or(1, |(n, _)| n),
                format!("expected the header {header} (or cluster,{column} for every day)"),
            ))
        }
    };
    let mut rows = Vec::new();
    let mut first_line = HashMap::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (cluster, text, valid_from) = match (dated, &fields[..]) {
            (true, &[cluster, text, day]) => (cluster, text, parse_valid_from(day)),
            (false, &[cluster, text]) => (cluster, text, Ok(ALWAYS)),
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
        crate::input::check_name("cluster", cluster, true).map_err(|e| bad(number, e))?;
        let value = value(text).map_err(|e| bad(number, format!("{column}: {e}")))?;
        let valid_from = valid_from.map_err(|e| bad(number, e))?;
        if let Some(earlier) = first_line.insert((cluster.to_owned(), valid_from), number) {
            return Err(bad(
                number,
                format!(
                    "a second {column} for {cluster} from {valid_from} (line {earlier} has one)"
                ),
            ));
        }
        rows.push(Dated {
            cluster: cluster.to_owned(),
            value,
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
    fn a_setting_holds_from_its_day_until_the_next() {
        let rows = parse_csv(
            "s.csv",
            "cluster,flag,valid_from\n# c1 changes twice\nc1,on,2026-10-01\nc1,off,2026-10-15\n",
            "flag",
            |t| Ok(t == "on"),
        )
        .unwrap();
        let settings = ByCluster::new(rows);
        assert_eq!(settings.on("c1", day(2026, 9, 30)), None);
        assert_eq!(settings.on("c1", day(2026, 10, 14)), Some(&true));
        assert_eq!(settings.on("c1", day(2026, 10, 15)), Some(&false));
        assert_eq!(settings.on("c2", day(2026, 10, 15)), None);
    }

    #[test]
    fn bad_files_name_the_line() {
        let parse = |text| {
            parse_csv("s.csv", text, "flag", |t| match t {
                "on" => Ok(true),
                _ => Err(format!("{t:?} is not on")),
            })
        };
        let cases = [
            ("cluster\n", 1, "header"),
            ("cluster,flag\nc1\n", 2, "2 fields"),
            (
                "cluster,flag,valid_from\nc1,on,2026-10-32\n",
                2,
                "valid_from",
            ),
            ("cluster,flag\nc1,on\nc1,on\n", 3, "line 2 has one"),
            ("cluster,flag\nc1,off\n", 2, "flag: \"off\" is not on"),
            ("cluster,flag\n,on\n", 2, "cluster"),
        ];
        for (text, line, word) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text}");
            assert!(error.to_string().contains(word), "{error}");
        }
    }
}
