//! The alert rules shipped in deploy/: Debian's promtool checks them and
//! runs their unit tests (every alert fires where it should and not
//! before), and the servicemonitor overlay's PrometheusRule carries the
//! same groups as the plain rule file.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use tollgate_tests::repo_root;

const RULES: &str = "deploy/prometheus/tollgate-rules.yaml";
const RULE_TESTS: &str = "tests/prometheus/tollgate-rules.test.yaml";
const PROMETHEUS_RULE: &str = "deploy/overlays/servicemonitor/prometheusrule.yaml";

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn has_promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        tollgate_tests::not_run(
            "suite `alerts` needs promtool (apt-get install prometheus) and was NOT RUN",
        );
    }
    found
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{printed}");
    printed
}

fn alerts(groups: &Value) -> BTreeSet<String> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    if !has_promtool() {
        return;
    }
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert is tested both firing and not firing.
    let tests = yaml(RULE_TESTS);
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"].as_array().unwrap().is_empty() {
                quiet.insert(name);
            } else {
                fired.insert(name);
            }
        }
    }
    let all = alerts(&yaml(RULES)["groups"]);
    assert_eq!(fired, all, "alerts tested firing");
    assert_eq!(quiet, all, "alerts tested quiet");
}

#[test]
fn a_broken_rule_fails_its_unit_test() {
    if !has_promtool() {
        return;
    }
    // The same tests against rules with one threshold changed: the check
    // above can fail.
    let dir = std::env::temp_dir().join(format!("tollgate-alerts-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("deploy/prometheus")).unwrap();
    std::fs::create_dir_all(dir.join("tests/prometheus")).unwrap();
    let rules = std::fs::read_to_string(repo_root().join(RULES)).unwrap();
    let broken = rules.replace(
        "tollgate_conntrack_table_max > 0.9",
        "tollgate_conntrack_table_max > 0.99",
    );
    assert_ne!(rules, broken);
    std::fs::write(dir.join(RULES), broken).unwrap();
    std::fs::copy(repo_root().join(RULE_TESTS), dir.join(RULE_TESTS)).unwrap();
    let output = Command::new("promtool")
        .args(["test", "rules", RULE_TESTS])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains("TollgateConntrackTableNearlyFull"),
        "{printed}"
    );
}

#[test]
fn the_prometheus_rule_holds_the_same_groups_as_the_rule_file() {
    let plain = yaml(RULES);
    let operator = yaml(PROMETHEUS_RULE);
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["spec"]["groups"], plain["groups"]);
    assert_eq!(alerts(&plain["groups"]).len(), 10);
}
