//! Every kind of input mistake, made on the real binary: each is refused
//! with exit code 2 and a message naming the file and line, the field, the
//! flag or the environment variable, before anything is changed or sent.
//! The cases are those a sweep of 188 bad inputs found accepted, exiting 1,
//! vague or checked too late, and their neighbours.

#![allow(clippy::unwrap_used)]
// Test code: an unwrap is an assertion.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tollgate_tests::netns::Netns;
use tollgate_tests::tollgate::binary;

/// One good flow record; cases change one thing in it.
const RECORD: &str = r#"{"observed_at":1790000000,"interval_seconds":10,"cluster":"c","node":"n","family":"ipv4","protocol":"tcp","local_ip":"::ffff:10.0.0.1","local_port":1,"local_pod":"p","local_namespace":"ns","local_workload_kind":"Deployment","local_workload":"w","local_team":"t","local_zone":"z","local_region":"r","remote_ip":"::ffff:10.0.0.2","remote_port":2,"remote_kind":"pod","remote_pod":"","remote_namespace":"","remote_workload_kind":"","remote_workload":"","remote_team":"","remote_node":"","remote_zone":"","remote_region":"","remote_cloud_provider":"","remote_cloud_service":"","remote_service":"","initiator":"local","bytes_sent":100,"bytes_received":50,"packets_sent":1,"packets_received":1,"category":"same_zone","ended":false,"conntrack_id":9}"#;

const INVENTORY: &str = "nodes:\n  - {name: n-a, zone: r1-a, region: r1, addresses: [192.168.0.1], pod_cidrs: [10.1.0.0/24]}\npods:\n  - {name: web-1, namespace: shop, node: n-a, ips: [10.1.0.5], workload: {kind: Deployment, name: web}}\n";

const AWS: &str = r#"{"prefixes": [{"ip_prefix": "52.95.144.0/24", "region": "eu-west-1", "service": "S3"}], "ipv6_prefixes": []}"#;

/// A scratch directory of one case, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-bad-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs tollgate in `dir` with `args`, `env` and `stdin`; returns (exit
/// code, stdout, stderr).
fn run(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (Option<i32>, String, String) {
    let mut child = Command::new(binary())
        .current_dir(dir)
        .args(args)
        .env_remove("TOLLGATE_NODE")
        .env_remove("TOLLGATE_CLUSTER")
        .env_remove("TOLLGATE_CLICKHOUSE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `run` must exit 2 with every needle in its stderr.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8], needles: &[&str]) {
    let (code, _, stderr) = run(dir, args, env, stdin);
    assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?} {env:?}: {needle:?} missing from: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

fn record_with(from: &str, to: &str) -> String {
    assert!(RECORD.contains(from), "{from}");
    RECORD.replacen(from, to, 1)
}

const LOAD: [&str; 6] = ["load", "in.jsonl", "--parquet", "pq", "--spool", "spool"];

#[test]
fn flow_records_are_refused_at_their_line() {
    let s = Scratch::new("records");
    let long_name = format!("\"local_pod\":\"{}\"", "p".repeat(400));
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            record_with("\"bytes_sent\"", "\"byts_sent\""),
            vec!["in.jsonl:1:", "unknown field `byts_sent`"],
        ),
        (
            record_with(
                "\"local_ip\":\"::ffff:10.0.0.1\"",
                "\"local_ip\":\"fd00::1\"",
            ),
            vec![
                "in.jsonl:1:",
                "local_ip: fd00::1 is an ipv6 address, but family is ipv4",
            ],
        ),
        (
            record_with("\"cluster\":\"c\"", "\"cluster\":\"\""),
            vec!["in.jsonl:1:", "cluster: must not be empty"],
        ),
        (
            record_with("\"node\":\"n\"", "\"node\":\"\""),
            vec!["in.jsonl:1:", "node: must not be empty"],
        ),
        (
            record_with("\"local_pod\":\"p\"", &long_name),
            vec![
                "in.jsonl:1:",
                "local_pod: 400 bytes long; names are at most 320 bytes",
            ],
        ),
        (
            record_with("\"packets_sent\":1", "\"packets_sent\":0"),
            vec!["in.jsonl:1:", "bytes_sent 100 with packets_sent 0"],
        ),
        (
            record_with("\"observed_at\":1790000000", "\"observed_at\":0"),
            vec!["in.jsonl:1:", "observed_at: 0 is before 2000-01-01"],
        ),
        (
            record_with("\"observed_at\":1790000000", "\"observed_at\":4000000000"),
            vec![
                "in.jsonl:1:",
                "observed_at: 4000000000 is more than a day in the future",
            ],
        ),
        (
            record_with("\"interval_seconds\":10", "\"interval_seconds\":4000000000"),
            vec![
                "in.jsonl:1:",
                "interval_seconds: 4000000000 is not between 0 and 86400",
            ],
        ),
        (
            record_with("\"category\":\"same_zone\"", "\"category\":\"egress\""),
            vec!["in.jsonl:1:", "egress"],
        ),
        // Optional (records of earlier versions lack it), checked when given.
        (
            record_with(
                "\"local_region\":\"r\"",
                "\"local_region\":\"r\",\"local_provider\":\"a\\tb\"",
            ),
            vec![
                "in.jsonl:1:",
                "local_provider: \"a\\tb\" holds a control character",
            ],
        ),
    ];
    for (line, needles) in &cases {
        let _ = std::fs::remove_dir_all(s.0.join("spool"));
        s.write("in.jsonl", format!("{line}\n"));
        refused(&s.0, &LOAD, &[], b"", needles);
    }
    // Not UTF-8, at its line; a line of 50 MB refused without holding it.
    s.write(
        "in.jsonl",
        [RECORD.as_bytes(), b"\n{\"observed_at\": \xff}\n"].concat(),
    );
    let _ = std::fs::remove_dir_all(s.0.join("spool"));
    refused(&s.0, &LOAD, &[], b"", &["in.jsonl:2:", "not UTF-8"]);
    let huge = record_with(
        "\"local_pod\":\"p\"",
        &format!("\"local_pod\":\"{}\"", "p".repeat(50 << 20)),
    );
    s.write("in.jsonl", format!("{huge}\n"));
    let _ = std::fs::remove_dir_all(s.0.join("spool"));
    refused(
        &s.0,
        &LOAD,
        &[],
        b"",
        &["in.jsonl:1:", "longer than 65536 bytes"],
    );
}

/// A bad line in a file loads nothing; from standard input, which streams,
/// what came before it is loaded and the message says so.
#[test]
fn a_load_that_stops_says_what_is_loaded_and_resumes_after_the_fix() {
    let s = Scratch::new("resume");
    let bad = record_with("\"family\":\"ipv4\"", "\"family\":\"ipv5\"");
    s.write("in.jsonl", format!("{RECORD}\n{RECORD}\n{bad}\n{RECORD}\n"));
    refused(
        &s.0,
        &LOAD,
        &[],
        b"",
        &["in.jsonl:3:", "nothing was loaded"],
    );
    assert!(
        !s.0.join("spool").exists() && !s.0.join("pq").exists(),
        "nothing was created"
    );
    s.write(
        "in.jsonl",
        format!("{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n"),
    );
    let (code, stdout, stderr) = run(&s.0, &LOAD, &[], b"");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("loaded 4 records"), "{stdout}");
    // A file that grew a bad line after a complete load: only the new
    // lines are checked and loaded, and the bad one refuses them all.
    s.write(
        "in.jsonl",
        format!("{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n{bad}\n"),
    );
    refused(
        &s.0,
        &LOAD,
        &[],
        b"",
        &["in.jsonl:6:", "nothing was loaded"],
    );
    s.write(
        "in.jsonl",
        format!("{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n{RECORD}\n"),
    );
    let (code, stdout, stderr) = run(&s.0, &LOAD, &[], b"");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("loaded 2 records"), "{stdout}");

    let stdin = ["load", "-", "--parquet", "pq2", "--spool", "spool2"];
    refused(
        &s.0,
        &stdin,
        &[],
        format!("{RECORD}\n{bad}\n").as_bytes(),
        &[
            "-:2:",
            "the 1 records before line 2 are loaded",
            "rerunning from standard input would load them again",
        ],
    );
}

#[test]
fn files_and_directories_are_checked_before_anything_is_done() {
    let s = Scratch::new("paths");
    s.write("in.jsonl", format!("{RECORD}\n"));
    s.write("file", "");
    s.write("dir/keep", "");
    fn load<'a>(input: &'a str, parquet: &'a str, spool: &'a str) -> Vec<&'a str> {
        vec!["load", input, "--parquet", parquet, "--spool", spool]
    }
    for (args, needles) in [
        (load("nope.jsonl", "pq", "spool"), vec!["input nope.jsonl: cannot read: no such file"]),
        (load("dir", "pq", "spool"), vec!["input dir: cannot read: is a directory"]),
        (load("in.jsonl", "pq", "file"), vec!["--spool file: is not a directory"]),
        (load("in.jsonl", "file", "spool"), vec!["--parquet file: is not a directory"]),
        (load("in.jsonl", "/proc/tollgate", "spool"), vec!["--parquet /proc/tollgate: cannot write in /proc, to create it: the file system does not take new files there"]),
    ] {
        refused(&s.0, &args, &[], b"", &needles);
    }
    assert!(
        !s.0.join("spool").join("input").exists(),
        "nothing was spooled"
    );
    fn export(out: &str) -> Vec<&str> {
        vec![
            "export",
            "--month",
            "2025-10",
            "--parquet",
            "dir",
            "--provider",
            "aws",
            "--out",
            out,
        ]
    }
    refused(
        &s.0,
        &export("missing/r.csv"),
        &[],
        b"",
        &["--out missing/r.csv", "directory missing does not exist"],
    );
    refused(
        &s.0,
        &export("dir"),
        &[],
        b"",
        &["--out dir: is a directory"],
    );
    refused(
        &s.0,
        &export("/proc/r.csv"),
        &[],
        b"",
        &["--out /proc/r.csv", "cannot write in /proc"],
    );
    let mut parquet_out = export("-");
    parquet_out.extend(["--format", "parquet"]);
    refused(&s.0, &parquet_out, &[], b"", &["--format parquet --out -"]);
    refused(
        &s.0,
        &["conntrack", "enable", "--proc-sys", "file"],
        &[],
        b"",
        &["--proc-sys file: not a directory"],
    );
    s.write("sys/net/netfilter/nf_conntrack_acct", "banana\n");
    refused(
        &s.0,
        &["conntrack", "enable", "--proc-sys", "sys"],
        &[],
        b"",
        &[
            "--proc-sys sys: cannot read net.netfilter.nf_conntrack_acct",
            "\"banana\"",
        ],
    );
    refused(
        &s.0,
        &["conntrack", "enable", "--proc-sys", "dir"],
        &[],
        b"",
        &["--proc-sys dir: net.netfilter.nf_conntrack_acct does not exist"],
    );
}

#[test]
fn numbers_and_names_on_the_command_line_are_range_checked() {
    let s = Scratch::new("flags");
    s.write("in.jsonl", format!("{RECORD}\n"));
    let with = |flag: &'static str, value: &'static str| {
        let mut args = LOAD.to_vec();
        args.extend([flag, value]);
        args
    };
    for (args, needle) in [
        (with("--batch-rows", "-5"), "--batch-rows"),
        (with("--batch-mib", "17592186044416"), "--batch-mib"),
        (with("--batch-age", "1e300"), "--batch-age"),
        (with("--batch-age", "-1"), "--batch-age"),
        (
            with("--give-up-after", "18446744073709551615"),
            "--give-up-after",
        ),
        (with("--origin", "a/b"), "--origin"),
        (with("--origin", ""), "--origin"),
        (
            vec!["migrate", "--print", "--hour-ttl-days", "4294967295"],
            "--hour-ttl-days",
        ),
        (
            vec!["migrate", "--print", "--minute-ttl-days", "-3"],
            "--minute-ttl-days",
        ),
        (
            vec!["migrate", "--print", "--raw-ttl-days", "3000"],
            "--day-ttl-days 1825 is shorter than --raw-ttl-days 3000",
        ),
        (
            vec!["conntrack", "watch", "--duration", "1e300"],
            "--duration",
        ),
        (
            vec!["hold", "--socket", "h.sock", "--release-after", "0"],
            "--release-after: 0 is out of range",
        ),
        (
            vec![
                "export",
                "--month",
                "1969-12",
                "--parquet",
                ".",
                "--provider",
                "aws",
                "--out",
                "r.csv",
            ],
            "before 1970",
        ),
        (
            vec![
                "export",
                "--month",
                "2025-13",
                "--parquet",
                ".",
                "--provider",
                "aws",
                "--out",
                "r.csv",
            ],
            "2025-13",
        ),
        (
            vec![
                "export",
                "--month",
                "2025-10",
                "--parquet",
                ".",
                "--provider",
                "aws",
                "--cluster",
                "",
                "--out",
                "r.csv",
            ],
            "--cluster",
        ),
        (
            vec!["load", "in.jsonl", "--spool", "spool"],
            "give --clickhouse URL, --parquet DIR, or both",
        ),
    ] {
        refused(&s.0, &args, &[], b"", &[needle]);
    }
}

/// Config, inventory, range and price files: each mistake named at its
/// line or field, environment variables blamed by name.
#[test]
fn configuration_files_are_refused_naming_line_field_or_variable() {
    let s = Scratch::new("config");
    s.write("inventory.yaml", INVENTORY);
    s.write("ip-ranges.json", AWS);
    let config = |extra: &str| {
        format!("cluster: c\nnode: n-a\ninventory: {{file: inventory.yaml}}\nsinks: {{parquet: {{dir: pq}}, spool: {{dir: spool}}}}\n{extra}")
    };
    let classify = ["classify", "--config", "c.yaml", "1.1.1.1"];
    for (text, needles) in [
        (
            config("network: {in_zone: [10.1.2.3/8]}\n"),
            vec![
                "c.yaml",
                "network.in_zone[0]: 10.1.2.3/8 has bits set",
                "write 10.0.0.0/8",
            ],
        ),
        (
            config("network: {direct_classification: [{cidrs: [], region: r2}]}\n"),
            vec!["network.direct_classification[0].cidrs: give at least one CIDR"],
        ),
        (
            config("network: {in_zone: [10.0.0.0/8], in_region: [10.0.0.0/8]}\n"),
            vec!["network.in_region[0]: 10.0.0.0/8 is also network.in_zone[0]"],
        ),
        (
            config("network: {services: [{name: '', cidrs: [10.0.0.0/8]}]}\n"),
            vec!["network.services[0].name: must not be empty"],
        ),
        (
            config("agent: {batch_rows: 100000000000}\n"),
            vec!["agent.batch_rows: 100000000000 is not between 1 and 10000000"],
        ),
        (
            config("agent: {workload_metrics: {max_series: 0}}\n"),
            vec!["agent.workload_metrics.max_series: 0 is not between 1 and 100000"],
        ),
        (
            config("agent: {interval_seconds: 30, workload_metrics: {idle_seconds: 10}}\n"),
            vec!["agent.workload_metrics.idle_seconds: 10 is not between 30 and 86400"],
        ),
        (
            config("agent: {top_talkers: 5000}\n"),
            vec!["agent.top_talkers: 5000 is not between 0 and 1000"],
        ),
        (
            config("inventory_typo: 1\n"),
            vec!["c.yaml", "inventory_typo"],
        ),
        (
            "cluster: ''\ninventory: {file: inventory.yaml}\n".to_owned(),
            vec!["cluster: must not be empty"],
        ),
        (
            "cluster: c\nnode: a/b\ninventory: {file: inventory.yaml}\n".to_owned(),
            vec!["node: \"a/b\" holds '/'"],
        ),
    ] {
        s.write("c.yaml", &text);
        refused(&s.0, &classify, &[], b"", &needles);
    }
    s.write(
        "c.yaml",
        config("sinks: {spool: {cap_mib: 17592186044416}}\n")
            .replace("sinks: {parquet: {dir: pq}, spool: {dir: spool}}\n", ""),
    );
    refused(
        &s.0,
        &["agent", "--config", "c.yaml"],
        &[],
        b"",
        &["sinks.spool.cap_mib: 17592186044416 is not between 1 and 1048576"],
    );

    s.write(
        "c.yaml",
        b"cluster: c\nnode: n-\xffa\ninventory: {file: inventory.yaml}\n",
    );
    refused(
        &s.0,
        &classify,
        &[],
        b"",
        &["config c.yaml:2:9: not UTF-8 text (byte 0xff)"],
    );
    s.write("c.yaml", config(""));
    s.write("inventory.yaml", b"nodes:\n  - {name: \xff}\n");
    refused(
        &s.0,
        &classify,
        &[],
        b"",
        &["inventory inventory.yaml:2:12: not UTF-8 text"],
    );
    s.write(
        "inventory.yaml",
        format!("{INVENTORY}  - {{name: web-1, namespace: shop, node: n-a}}\n"),
    );
    refused(
        &s.0,
        &classify,
        &[],
        b"",
        &["inventory.yaml", "pods[1]: pod shop/web-1 is listed twice"],
    );
    s.write("inventory.yaml", INVENTORY);

    s.write(
        "c.yaml",
        config("network: {cloud_ranges: {aws: ip-ranges.json}}\n"),
    );
    s.write(
        "ip-ranges.json",
        AWS.replace("52.95.144.0/24", "52.95.144.1/24"),
    );
    refused(
        &s.0,
        &classify,
        &[],
        b"",
        &["aws range file", "prefixes[0]: 52.95.144.1/24 has bits set"],
    );
    s.write("ip-ranges.json", b"{\"prefixes\": [\xff]}");
    refused(
        &s.0,
        &classify,
        &[],
        b"",
        &["aws range file ip-ranges.json:1:15: not UTF-8 text"],
    );
    s.write("ip-ranges.json", AWS);

    s.write("c.yaml", config(""));
    refused(
        &s.0,
        &classify,
        &[("TOLLGATE_CLUSTER", "")],
        b"",
        &["environment variable TOLLGATE_CLUSTER: value: must not be empty"],
    );
    refused(
        &s.0,
        &classify,
        &[("TOLLGATE_NODE", "a b")],
        b"",
        &["environment variable TOLLGATE_NODE"],
    );
    s.write(
        "c.yaml",
        config("").replace(
            "{parquet: {dir: pq}",
            "{clickhouse: {url: 'http://127.0.0.1:1'}",
        ),
    );
    refused(&s.0, &["agent", "--config", "c.yaml"], &[("TOLLGATE_CLICKHOUSE_URL", "notaurl")], b"", &["environment variable TOLLGATE_CLICKHOUSE_URL: \"notaurl\" is not an http:// or https:// URL"]);

    s.write("p.csv", "provider,region,category,direction,price_per_gib,currency\naws,*,internet,out,0.09,USD\naws,*,internet,out,0.05,USD\n");
    s.write("pq/keep", "");
    refused(
        &s.0,
        &[
            "export",
            "--month",
            "2025-10",
            "--parquet",
            "pq",
            "--provider",
            "aws",
            "--prices",
            "p.csv",
            "--out",
            "r.csv",
        ],
        &[],
        b"",
        &["p.csv:3: a second price for aws,*,*,internet,out from 1970-01-01 (line 2 has one)"],
    );
    s.write("p.csv", "provider,region,category,direction,tier_from_gib,price_per_gib,currency\naws,*,internet,out,100,0.09,USD\n");
    let export = |extra: &[&'static str]| {
        [
            &[
                "export",
                "--month",
                "2025-10",
                "--parquet",
                "pq",
                "--provider",
                "aws",
            ][..],
            extra,
            &["--out", "r.csv"],
        ]
        .concat()
    };
    refused(
        &s.0,
        &export(&["--prices", "p.csv"]),
        &[],
        b"",
        &["p.csv:2: the aws internet/out prices for * to * from 1970-01-01 have no tier from 0 GiB"],
    );
    s.write(
        "a.csv",
        "cluster,account,valid_from\nc1,acct,2025-10-01\nc1,other,2025-10-01\n",
    );
    refused(
        &s.0,
        &export(&["--accounts", "a.csv"]),
        &[],
        b"",
        &["a.csv:3: a second account for c1 from 2025-10-01 (line 2 has one)"],
    );
}

/// A spool directory that cannot be used is found before the agent turns
/// on any kernel setting: the namespace's accounting stays off.
#[test]
fn the_agent_checks_its_directories_before_touching_the_kernel() {
    if !tollgate_tests::require_root("bad_input", "a network namespace's kernel settings") {
        return;
    }
    let s = Scratch::new("agent");
    s.write("inventory.yaml", INVENTORY);
    s.write("spool-file", "");
    let ns = Netns::create("bad-input").unwrap();
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_acct=0")
        .unwrap();
    let sinks = "sinks: {parquet: {dir: pq}, spool: {dir: spool}}";
    for (text, needle) in [
        (
            "node: n-a\nsinks: {parquet: {dir: pq}, spool: {dir: spool-file}}".to_owned(),
            "sinks.spool.dir",
        ),
        (
            "node: n-a\nsinks: {parquet: {dir: /proc/tollgate}, spool: {dir: spool}}".to_owned(),
            "sinks.parquet.dir /proc/tollgate",
        ),
        (
            "node: n-a\nsinks: {parquet: {dir: spool/pq}, spool: {dir: spool}}".to_owned(),
            "give two separate directories",
        ),
        (
            format!("node: n-zzz\n{sinks}"),
            "node: \"n-zzz\" is not among the inventory file's nodes",
        ),
        (
            format!("node: n-a\nagent: {{listen: '203.0.113.9:9102'}}\n{sinks}"),
            "agent.listen: cannot listen on 203.0.113.9:9102",
        ),
        (
            format!("node: n-a\nnetwork: {{cloud_ranges: {{aws: missing.json}}}}\n{sinks}"),
            "missing.json: cannot read: no such file",
        ),
    ] {
        let config = s.write(
            "c.yaml",
            format!("cluster: c\ninventory: {{file: inventory.yaml}}\n{text}\n"),
        );
        let output = ns
            .command(binary().to_str().unwrap())
            .args(["agent", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        let acct = ns
            .sh("cat /proc/sys/net/netfilter/nf_conntrack_acct")
            .unwrap();
        assert_eq!(
            acct.trim(),
            "0",
            "the agent changed a kernel setting before refusing"
        );
        assert!(
            !s.0.join("spool").exists() && !s.0.join("pq").exists(),
            "the agent created a directory before refusing"
        );
    }
}

/// Bills `tollgate reconcile` cannot use: each names the file, the line and
/// the column, exit 2, before any metering is read (no ClickHouse runs
/// here; an empty Parquet directory stands for the metering).
#[test]
fn bills_are_refused_naming_file_line_and_column() {
    let scratch = Scratch::new("bills");
    let dir = &scratch.0;
    std::fs::create_dir_all(dir.join("metering")).unwrap();
    let header = "identity/LineItemId,lineItem/LineItemType,lineItem/UsageAccountId,\
                  lineItem/UsageStartDate,lineItem/UsageType,lineItem/Operation,\
                  lineItem/ResourceId,lineItem/UsageAmount,lineItem/CurrencyCode,\
                  lineItem/UnblendedCost,pricing/unit";
    let line = |start: &str, amount: &str, currency: &str, unit: &str| {
        format!(
            "x,Usage,111122223333,{start},EUW1-DataTransfer-Regional-Bytes,InterZone-Out,\
             i-0abc,{amount},{currency},0.01,{unit}"
        )
    };
    let good = line("2026-10-03T00:00:00Z", "1.0", "USD", "GB");
    let cases = [
        (
            format!(
                "{header}\n{good}\n{}\n",
                line("2026-09-30T23:00:00Z", "1.0", "USD", "GB")
            ),
            vec![":2: column lineItem/UsageStartDate", "another month"],
        ),
        (
            format!(
                "{header}\n{good}\n{}\n",
                line("2026-10-04T00:00:00Z", "1.0", "EUR", "GB")
            ),
            vec![":2: column lineItem/CurrencyCode", "EUR"],
        ),
        (
            format!(
                "{header}\n{}\n",
                line("2026-10-04T00:00:00Z", "1.0", "USD", "Hrs")
            ),
            vec![":1: column pricing/unit", "Hrs"],
        ),
        (
            format!(
                "{header}\n{}\n",
                line("2026-10-04T00:00:00Z", "lots", "USD", "GB")
            ),
            vec![":1: column lineItem/UsageAmount", "lots"],
        ),
        (
            format!("{}\n{good}\n", header.replace(",pricing/unit", "")),
            vec!["column pricing/unit"],
        ),
        (
            "date,amount\n2026-10-01,3\n".to_owned(),
            vec![":1:", "not a bill tollgate reads"],
        ),
    ];
    let reconcile = |bill: &std::path::Path, extra: &[&str], needles: &[&str]| {
        let mut args = vec![
            "reconcile",
            "--month",
            "2026-10",
            "--bill",
            bill.to_str().unwrap(),
            "--parquet",
            "metering",
        ];
        args.extend_from_slice(extra);
        refused(dir, &args, &[], b"", needles);
    };
    for (i, (text, needles)) in cases.iter().enumerate() {
        let bill = scratch.write(&format!("cur-{i}.csv"), text);
        let mut needles = needles.clone();
        let named = bill.display().to_string();
        needles.push(&named);
        reconcile(&bill, &[], &needles);
    }
    let bill = scratch.write("cur-good.csv", format!("{header}\n{good}\n"));
    reconcile(
        &bill,
        &["--tolerance", "101"],
        &["--tolerance", "101", "0..=100"],
    );
    reconcile(
        &bill,
        &["--nat-gateway", "nat-0abc"],
        &[
            "--nat-gateway",
            "nat-0abc",
            "expected GATEWAY=ZONE[,ZONE...]",
        ],
    );
    reconcile(
        &bill,
        &["--nat-gateway", "nat-0abc="],
        &["--nat-gateway", "name the zones whose nodes use nat-0abc"],
    );
}
