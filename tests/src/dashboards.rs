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
    json_files("dashboards")
}

/// The `.json` files of a directory of the repository, sorted.
fn json_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}/: {e}"))
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Each of `files` parsed, with its file name.
fn named(files: Vec<PathBuf>) -> anyhow::Result<Vec<(String, Value)>> {
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            Ok((name.into_owned(), load(&path)?))
        })
        .collect()
}

/// A dashboard's template variables, in order, with their names.
fn variables_of(dashboard: &Value) -> anyhow::Result<Vec<(&str, &Value)>> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Ok((v["name"].as_str().context("variable without a name")?, v)))
        .collect()
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
    for (name, dashboard) in named(files())? {
        let mut variables = Variables::new();
        for (var_name, variable) in variables_of(&dashboard)? {
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

/// The dashboards on the Prometheus data source, in `dashboards/prometheus/`.
pub fn prometheus_files() -> Vec<PathBuf> {
    json_files("dashboards/prometheus")
}

/// What breaks Grafana's Prometheus query model in one target or variable
/// query: the datasource type, a non-empty `expr` (or variable `query`),
/// a `refId`.
pub fn prometheus_target_problems(query: &Value, datasource: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if datasource["type"] != "prometheus" {
        problems.push(format!(
            "datasource type {} is not prometheus",
            datasource["type"]
        ));
    }
    let expr = query["expr"].as_str().or(query["query"].as_str());
    if expr.is_none_or(|s| s.trim().is_empty()) {
        problems.push("expr is empty".to_owned());
    }
    if query["refId"].as_str().is_none_or(str::is_empty) {
        problems.push("refId is missing".to_owned());
    }
    problems
}

/// `expr` as Grafana's Prometheus data source sends it: `$__rate_interval`
/// (the larger of the interval plus one scrape and four scrapes),
/// `$__range` and `$__interval` in seconds, and template variables as a
/// regular expression of their values (`(a|b)`, each value escaped).
pub fn expand_promql(
    expr: &str,
    range: Range,
    scrape_seconds: i64,
    variables: &Variables,
) -> anyhow::Result<String> {
    let interval = range.interval_seconds.max(1);
    let mut out = expr
        .replace(
            "$__rate_interval",
            &format!("{}s", (interval + scrape_seconds).max(4 * scrape_seconds)),
        )
        .replace("$__range", &format!("{}s", range.to - range.from))
        .replace("$__interval", &format!("{interval}s"));
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let escaped: Vec<String> = variables[name].iter().map(|v| regex_escape(v)).collect();
        let value = match escaped.as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join("|")),
        };
        out = out
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("${name}"), &value);
    }
    ensure!(!out.contains('$'), "unexpanded variable in: {out}");
    Ok(out)
}

/// A value escaped for a PromQL regular expression inside a double-quoted
/// string, as Grafana escapes multi-value variables.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]".contains(c) {
            out.push_str("\\\\");
        }
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` percent-encoded for a URL's query string.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs every variable and panel query of every Prometheus dashboard
/// through `get` (a Prometheus HTTP API path with its query string, to the
/// `data` of the answer), variables resolved in order as Grafana resolves
/// them (`label_values(selector, label)`; multi-value variables take all
/// their values, as "All" does). Range panels run as range queries over
/// `range`, instant ones at its end. Returns (dashboard, query, series or
/// values) for each query.
pub fn run_all_prometheus(
    get: &dyn Fn(&str) -> anyhow::Result<Value>,
    range: Range,
    scrape_seconds: i64,
) -> anyhow::Result<Vec<(String, String, usize)>> {
    let mut results = Vec::new();
    for (name, dashboard) in named(prometheus_files())? {
        let mut variables = Variables::new();
        for (var_name, variable) in variables_of(&dashboard)? {
            if variable["type"] == "datasource" {
                continue;
            }
            ensure!(
                variable["type"] == "query",
                "{name}: variable {var_name} is not checked"
            );
            let query = variable["query"]["query"].as_str().context("no query")?;
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .context("only label_values(selector, label) is checked")?;
            let (selector, label) = inner
                .rsplit_once(',')
                .context("label_values(selector, label)")?;
            let selector = expand_promql(selector.trim(), range, scrape_seconds, &variables)?;
            let data = get(&format!(
                "/api/v1/label/{}/values?match[]={}&start={}&end={}",
                label.trim(),
                url_encode(&selector),
                range.from,
                range.to
            ))?;
            let values: Vec<String> = data
                .as_array()
                .context("label values")?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            results.push((name.clone(), format!("variable {var_name}"), values.len()));
            variables.insert(var_name.to_owned(), values);
        }
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().context("no expr")?;
                let expr = url_encode(&expand_promql(expr, range, scrape_seconds, &variables)?);
                let path = if target["instant"] == true {
                    format!("/api/v1/query?query={expr}&time={}", range.to)
                } else {
                    format!(
                        "/api/v1/query_range?query={expr}&start={}&end={}&step={}",
                        range.from,
                        range.to,
                        range.interval_seconds.max(1)
                    )
                };
                let data =
                    get(&path).with_context(|| format!("{name}: panel {}", panel["title"]))?;
                let series = data["result"].as_array().map_or(0, Vec::len);
                results.push((name.clone(), format!("panel {}", panel["title"]), series));
            }
        }
    }
    Ok(results)
}
