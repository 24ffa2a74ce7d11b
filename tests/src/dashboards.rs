//! The Grafana dashboards in `dashboards/`, checked without Grafana: the
//! ClickHouse plugin's target model, and every variable and panel query
//! run on real ClickHouse after the expansion the plugin and Grafana make
//! (macros as the plugin's backend expands them, template variables as
//! Grafana interpolates them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use crate::clickhouse::ClickHouse;
use crate::repo_root;

/// The plugin's id, which every query's datasource must name.
pub const PLUGIN: &str = "grafana-clickhouse-datasource";

/// The dashboard files, sorted.
pub fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("dashboards"))
        .expect("dashboards/ exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A dashboard file, parsed.
pub fn load(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

/// Every query of a dashboard: (where, the query object), variables first
/// in their order, then panel targets.
pub fn queries(dashboard: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            found.push((format!("variable {}", variable["name"]), &variable["query"]));
        }
    }
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            found.push((format!("panel {}", panel["title"]), target));
        }
    }
    found
}

/// What breaks the plugin's target model in one query: the datasource
/// type, `editorType` sql or builder, `queryType` one of table, logs,
/// timeSeries, traces, a non-empty `rawSql`.
pub fn target_problems(query: &Value, datasource: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if datasource["type"] != PLUGIN {
        problems.push(format!(
            "datasource type {} is not {PLUGIN}",
            datasource["type"]
        ));
    }
    if !matches!(query["editorType"].as_str(), Some("sql" | "builder")) {
        problems.push(format!(
            "editorType {} is not sql or builder",
            query["editorType"]
        ));
    }
    if !matches!(
        query["queryType"].as_str(),
        Some("table" | "logs" | "timeSeries" | "traces")
    ) {
        problems.push(format!(
            "queryType {} is not table, logs, timeSeries or traces",
            query["queryType"]
        ));
    }
    if query["rawSql"].as_str().is_none_or(|s| s.trim().is_empty()) {
        problems.push("rawSql is empty".to_owned());
    }
    if query["refId"].as_str().is_none_or(str::is_empty) {
        problems.push("refId is missing".to_owned());
    }
    problems
}

/// The time range and interval a query runs for.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// Unix seconds.
    pub from: i64,
    /// Unix seconds.
    pub to: i64,
    /// `$__interval` in seconds.
    pub interval_seconds: i64,
}

/// Values of the template variables: one or more each.
pub type Variables = BTreeMap<String, Vec<String>>;

/// `sql` with the plugin's macros expanded (as its backend does) and the
/// template variables interpolated (as Grafana does: `${name}` and `$name`
/// joined with commas, `${name:singlequote}` as a quoted list).
pub fn expand(sql: &str, range: Range, variables: &Variables) -> anyhow::Result<String> {
    let mut out = expand_macros(sql, range)?;
    // Longest names first, so `$namespace` is not read as `$name` + "space".
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let values = &variables[name];
        let quoted: Vec<String> = values
            .iter()
            .map(|v| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect();
        out = out
            .replace(&format!("${{{name}:singlequote}}"), &quoted.join(","))
            .replace(&format!("${{{name}}}"), &values.join(","))
            .replace(&format!("${name}"), &values.join(","));
    }
    ensure!(!out.contains('$'), "unexpanded variable or macro in: {out}");
    Ok(out)
}

fn expand_macros(sql: &str, range: Range) -> anyhow::Result<String> {
    let (from, to) = (
        format!("toDateTime({})", range.from),
        format!("toDateTime({})", range.to),
    );
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 3..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after = &tail[name_len..];
        let (argument, after) = match after.strip_prefix('(') {
            Some(args) => {
                let close = args.find(')').context("unclosed macro")?;
                (Some(args[..close].trim()), &args[close + 1..])
            }
            None => (None, after),
        };
        let expansion = match (name, argument) {
            ("timeFilter", Some(c)) => format!("{c} >= {from} AND {c} <= {to}"),
            ("timeInterval", Some(c)) => format!(
                "toStartOfInterval(toDateTime({c}), INTERVAL {} second)",
                range.interval_seconds.max(1)
            ),
            ("interval_s", None) => range.interval_seconds.max(1).to_string(),
            ("fromTime", None) => from.clone(),
            ("toTime", None) => to.clone(),
            (other, _) => bail!("macro $__{other} is not one the checks expand"),
        };
        out.push_str(&expansion);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs every variable query and panel query of every dashboard on
/// `database`, variables resolved in order as Grafana resolves them
/// (multi-value variables take all their values, as "All" does; others
/// the first; constants and text boxes their saved value, `database`
/// the given one). Returns (dashboard, query, rows) for each query.
pub fn run_all(
    ch: &ClickHouse,
    database: &str,
    range: Range,
) -> anyhow::Result<Vec<(String, String, usize)>> {
    let mut results = Vec::new();
    for path in files() {
        let dashboard = load(&path)?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut variables = Variables::new();
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let var_name = variable["name"]
                .as_str()
                .context("variable without a name")?;
            let values = match variable["type"].as_str() {
                Some("datasource") => continue,
                Some("constant") if var_name == "database" => vec![database.to_owned()],
                Some("constant" | "textbox") => {
                    vec![variable["query"].as_str().unwrap_or_default().to_owned()]
                }
                Some("query") => {
                    let sql = variable["query"]["rawSql"].as_str().context("no rawSql")?;
                    let rows = run(ch, &expand(sql, range, &variables)?)?;
                    results.push((name.clone(), format!("variable {var_name}"), rows.len()));
                    let values: Vec<String> = rows
                        .into_iter()
                        .map(|r| r.split('\t').next().unwrap_or_default().to_owned())
                        .collect();
                    if variable["multi"] == true || variable["includeAll"] == true {
                        values
                    } else {
                        values.into_iter().take(1).collect()
                    }
                }
                other => bail!("{name}: variable {var_name} of type {other:?} is not checked"),
            };
            variables.insert(var_name.to_owned(), values);
        }
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let sql = target["rawSql"].as_str().context("no rawSql")?;
                let expanded = expand(sql, range, &variables)?;
                let rows = run(ch, &expanded)
                    .with_context(|| format!("{name}: panel {}", panel["title"]))?;
                results.push((
                    name.clone(),
                    format!("panel {}", panel["title"]),
                    rows.len(),
                ));
            }
        }
    }
    Ok(results)
}

fn run(ch: &ClickHouse, sql: &str) -> anyhow::Result<Vec<String>> {
    Ok(ch
        .query(&format!("{sql}\nFORMAT TabSeparated"))?
        .lines()
        .map(str::to_owned)
        .collect())
}
