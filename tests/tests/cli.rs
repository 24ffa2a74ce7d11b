//! The command line's contract: help, and bad input rejected with exit
//! code 2 and a message naming the offending argument. Needs no privileges.

use std::process::Command;

use tollgate_tests::tollgate::binary;

fn tollgate(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("tollgate runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_describes_the_conntrack_commands() {
    let (code, stdout, _) = tollgate(&["conntrack", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("dump") && stdout.contains("watch"),
        "{stdout}"
    );
    let (code, stdout, _) = tollgate(&["conntrack", "dump", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("--no-zero") && stdout.contains("zeroes"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    for (args, needle) in [
        (
            &["conntrack", "watch", "--duration", "-1"][..],
            "--duration",
        ),
        (
            &["conntrack", "watch", "--duration", "soon"][..],
            "is not a number of seconds",
        ),
        (
            &["conntrack", "watch", "--duration", "0"][..],
            "must be a number of seconds above 0",
        ),
        (
            &["conntrack", "dump", "--zero-everything"][..],
            "--zero-everything",
        ),
        (&["conntrack", "scan"][..], "scan"),
        (&[][..], "Usage"),
    ] {
        let (code, _, stderr) = tollgate(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A configuration with a static inventory and rules, written to a fresh
/// directory; `inventory` and `aws` are the two files' contents.
fn classify_config(name: &str, inventory: &str, aws: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("inventory.yaml"), inventory).expect("write");
    std::fs::write(dir.join("ip-ranges.json"), aws).expect("write");
    std::fs::write(
        dir.join("tollgate.yaml"),
        "cluster: demo\ninventory: {file: inventory.yaml}\nnetwork:\n  in_region: [172.20.0.0/16]\n  cloud_ranges: {aws: ip-ranges.json}\n",
    )
    .expect("write");
    dir.join("tollgate.yaml")
}

const INVENTORY: &str = "nodes:\n  - {name: n-a, zone: r1-a, region: r1, addresses: [192.168.0.1]}\n  - {name: n-b, zone: r1-b, region: r1, addresses: [192.168.0.2]}\npods:\n  - {name: web-1, namespace: shop, node: n-a, ips: [10.1.0.5], workload: {kind: Deployment, name: web}}\n  - {name: db-0, namespace: shop, node: n-b, ips: ['fd00::30'], workload: {kind: StatefulSet, name: db}}\n";
const AWS: &str =
    r#"{"prefixes": [{"ip_prefix": "52.95.144.0/24", "region": "eu-west-2", "service": "S3"}]}"#;

#[test]
fn classify_explains_who_an_address_is_and_which_rule_decided() {
    let config = classify_config("ok", INVENTORY, AWS);
    let (code, stdout, stderr) = tollgate(&[
        "classify",
        "--config",
        config.to_str().expect("path"),
        "--from",
        "10.1.0.5",
        "fd00::30",
        "172.20.1.1",
        "52.95.144.9",
        "1.1.1.1",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let pick = |i: usize, key: &str| answers[i][key].as_str().unwrap_or_default().to_owned();
    assert_eq!(answers.len(), 4);
    assert_eq!(
        (
            pick(0, "kind"),
            pick(0, "workload"),
            pick(0, "zone"),
            pick(0, "category")
        ),
        (
            "pod".into(),
            "db".into(),
            "r1-b".into(),
            "cross_zone".into()
        )
    );
    assert_eq!(pick(0, "rule"), "cluster peer: zones and regions compared");
    assert_eq!(
        (pick(1, "category"), pick(1, "rule")),
        (
            "cross_zone".into(),
            "network.in_region 172.20.0.0/16".into()
        )
    );
    assert_eq!(
        (
            pick(2, "kind"),
            pick(2, "cloud_provider"),
            pick(2, "cloud_service"),
            pick(2, "region")
        ),
        (
            "cloud_service".into(),
            "aws".into(),
            "S3".into(),
            "eu-west-2".into()
        )
    );
    assert_eq!(
        (pick(3, "category"), pick(3, "rule")),
        ("internet".into(), "no rule matched: internet".into())
    );
}

#[test]
fn classify_rejects_bad_files_with_exit_2_naming_file_and_line() {
    let cases = [
        (
            classify_config(
                "inv",
                "pods:\n  - {name: a, namespace: b, node: n, ips: [10.0.0.999]}\n",
                AWS,
            ),
            &["inventory.yaml", "line 2"][..],
        ),
        (
            classify_config(
                "node",
                "nodes: [{name: n}]\npods:\n  - {name: a, namespace: b, node: nowhere}\n",
                AWS,
            ),
            &["inventory.yaml", "pods[0].node"][..],
        ),
        (
            classify_config("aws", INVENTORY, "{\"prefixes\": [{\"ip_prefix\": 5}]}"),
            &["aws range file", "ip-ranges.json", "line 1"][..],
        ),
    ];
    for (config, needles) in cases {
        let (code, _, stderr) = tollgate(&[
            "classify",
            "--config",
            config.to_str().expect("path"),
            "1.1.1.1",
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
    }
    let config = classify_config("from", INVENTORY, AWS);
    let (code, _, stderr) = tollgate(&[
        "classify",
        "--config",
        config.to_str().expect("path"),
        "--from",
        "9.9.9.9",
        "1.1.1.1",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--from 9.9.9.9"), "{stderr}");
}

#[test]
fn agent_configuration_errors_exit_2_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("inventory.yaml"), INVENTORY).expect("write");
    let cases = [
        (
            "node: n-a\ninventory: {file: inventory.yaml}\nsinks: {parquet: {dir: out}}\n",
            "cluster",
        ),
        (
            "cluster: c\nnode: n-a\ninventory: {file: inventory.yaml}\n",
            "sinks: configure clickhouse, parquet, or both",
        ),
        (
            "cluster: c\ninventory: {file: inventory.yaml}\nsinks: {parquet: {dir: out}}\n",
            "node: give this node's name",
        ),
        (
            "cluster: c\nnode: n-a\ninventory: {file: inventory.yaml}\nagent: {interval_seconds: 0}\nsinks: {parquet: {dir: out}}\n",
            "agent.interval_seconds: 0 is not between 1 and 3600",
        ),
        (
            "cluster: c\nnode: n-a\ninventory: {file: inventory.yaml}\nsinks: {clickhouse: {url: 'ftp://x'}}\n",
            "sinks.clickhouse.url: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "cluster: c\nnode: n-a\ninventory: {file: inventory.yaml}\nsinks: {parquet: {dir: out}, kafka: {}}\n",
            "kafka",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let config = dir.join(format!("agent-{i}.yaml"));
        std::fs::write(&config, text).expect("write");
        let (code, _, stderr) = tollgate(&["agent", "--config", config.to_str().expect("path")]);
        assert_eq!(code, Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(&config.display().to_string()),
            "case {i}: {stderr}"
        );
    }
}
