//! The Grafana dashboards: a strict JSON Schema generated from
//! `@grafana/schema` (npm), the ClickHouse plugin's target model, and the
//! expansion the query checks rely on. Every query is run on real
//! ClickHouse over the simulated cluster's data by the agent suite.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tollgate_tests::dashboards::{
    self, expand, expand_promql, prometheus_target_problems, queries, target_problems, Range,
    Variables,
};
use tollgate_tests::repo_root;

#[test]
fn dashboards_pass_the_strict_grafana_schema() {
    let has_npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_npm {
        tollgate_tests::not_run(
            "suite `dashboards` needs Node.js and npm for @grafana/schema and was NOT RUN",
        );
        return;
    }
    let mut files = dashboards::files();
    assert_eq!(files.len(), 3, "{files:?}");
    files.extend(dashboards::prometheus_files());
    assert_eq!(files.len(), 4, "{files:?}");
    let output = Command::new("bash")
        .arg(repo_root().join("tests/scripts/grafana-schema.sh"))
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": valid").count(), files.len(), "{stdout}");
}

#[test]
fn every_query_follows_the_clickhouse_plugin_model() {
    for path in dashboards::files() {
        let dashboard = dashboards::load(&path).unwrap();
        let names: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for wanted in [
            "datasource",
            "database",
            "cluster",
            "team",
            "namespace",
            "workload",
        ] {
            assert!(
                names.contains(&wanted),
                "{}: no ${wanted} variable",
                path.display()
            );
        }
        let found = queries(&dashboard);
        assert!(found.len() >= 3, "{}", path.display());
        for (place, query) in found {
            let datasource = if place.starts_with("panel") {
                let panel = dashboard["panels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| format!("panel {}", p["title"]) == place)
                    .unwrap();
                assert_eq!(query["datasource"], panel["datasource"], "{place}");
                query["datasource"].clone()
            } else {
                let variable = dashboard["templating"]["list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| format!("variable {}", v["name"]) == place)
                    .unwrap();
                variable["datasource"].clone()
            };
            let problems = target_problems(query, &datasource);
            assert!(
                problems.is_empty(),
                "{}: {place}: {problems:?}",
                path.display()
            );
        }
    }
    // The model check itself catches what it claims to.
    let bad = serde_json::json!({"refId": "A", "editorType": "code", "queryType": "timeseries", "rawSql": " "});
    assert_eq!(
        target_problems(
            &bad,
            &serde_json::json!({"type": "vertamedia-clickhouse-datasource"})
        )
        .len(),
        4
    );
}

#[test]
fn macros_and_variables_expand_as_the_plugin_and_grafana_do() {
    let range = Range {
        from: 1_700_000_000,
        to: 1_700_003_600,
        interval_seconds: 60,
    };
    let variables = Variables::from([
        (
            "cluster".to_owned(),
            vec!["c1".to_owned(), "it's".to_owned()],
        ),
        ("namespace".to_owned(), vec!["shop".to_owned()]),
        ("name".to_owned(), vec!["x".to_owned()]),
        ("database_x".to_owned(), vec!["db".to_owned()]),
    ]);
    let sql = "SELECT $__timeInterval(period) AS t FROM ${database_x} WHERE $__timeFilter(period) \
               AND cluster IN (${cluster:singlequote}) AND ns = '$namespace' AND n = '${name}' \
               AND s = $__interval_s AND f = $__fromTime";
    let expanded = expand(sql, range, &variables);
    assert_eq!(
        expanded.unwrap(),
        "SELECT toStartOfInterval(toDateTime(period), INTERVAL 60 second) AS t FROM db WHERE \
         period >= toDateTime(1700000000) AND period <= toDateTime(1700003600) \
         AND cluster IN ('c1','it\\'s') AND ns = 'shop' AND n = 'x' \
         AND s = 60 AND f = toDateTime(1700000000)"
    );
    assert!(expand("SELECT $__unknownMacro", range, &Variables::new()).is_err());
    assert!(expand("SELECT ${missing}", range, &Variables::new()).is_err());
}

#[test]
fn every_prometheus_query_follows_grafanas_prometheus_model() {
    let files = dashboards::prometheus_files();
    assert_eq!(files.len(), 1, "{files:?}");
    for path in files {
        let dashboard = dashboards::load(&path).unwrap();
        let list = dashboard["templating"]["list"].as_array().unwrap();
        let names: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["datasource", "cluster", "team", "namespace", "workload"],
            "{}",
            path.display()
        );
        assert_eq!(list[0]["query"], "prometheus");
        for variable in &list[1..] {
            let problems = prometheus_target_problems(&variable["query"], &variable["datasource"]);
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        }
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 4, "{}", path.display());
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"], panel["datasource"]);
                let problems = prometheus_target_problems(target, &panel["datasource"]);
                assert!(
                    problems.is_empty(),
                    "{}: panel {}: {problems:?}",
                    path.display(),
                    panel["title"]
                );
            }
        }
    }
    let bad = serde_json::json!({"expr": " "});
    assert_eq!(
        prometheus_target_problems(&bad, &serde_json::json!({"type": "loki"})).len(),
        3
    );
}

#[test]
fn promql_variables_expand_as_grafana_sends_them() {
    let range = Range {
        from: 1_700_000_000,
        to: 1_700_003_600,
        interval_seconds: 60,
    };
    let variables = Variables::from([
        (
            "workload".to_owned(),
            vec!["api".to_owned(), "(overflow)".to_owned()],
        ),
        ("team".to_owned(), vec!["shop".to_owned()]),
    ]);
    let expr = r#"sum(rate(x{workload=~"$workload",team=~"${team}"}[$__rate_interval])) / $__range / $__interval"#;
    assert_eq!(
        expand_promql(expr, range, 15, &variables).unwrap(),
        r#"sum(rate(x{workload=~"(api|\\(overflow\\))",team=~"shop"}[75s])) / 3600s / 60s"#
    );
    assert!(expand_promql("x{a=~\"$missing\"}", range, 15, &variables).is_err());
}
