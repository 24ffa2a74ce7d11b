//! Shared machinery for tollgate's integration suites.
//!
//! The suites run against real components: the kernel's conntrack in
//! network namespaces this crate creates ([`netns`]), nftables counters as
//! the independent oracle ([`oracle`]), and the `tollgate` binary itself
//! ([`tollgate`]). Nothing here computes an expected byte count: the kernel
//! counts, twice, by two independent mechanisms, and the suites compare.

pub mod bench;
pub mod bills;
pub mod clickhouse;
pub mod cluster;
pub mod dashboards;
pub mod exposition;
pub mod fixtures;
pub mod kube;
pub mod kubernetes;
pub mod lost_ack;
pub mod netns;
pub mod oracle;
pub mod prometheus;
pub mod scenario;
pub mod synthetic;
pub mod tollgate;
pub mod uplink;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// Whether a suite that needs `what` may run here.
///
/// As root it runs. Otherwise it is skipped with a loud message on a
/// developer's machine, and under CI (`CI=true`) it fails: these suites
/// must never silently not run there.
pub fn require_root(suite: &str, what: &str) -> bool {
    // The effective uid, read from /proc rather than through an unsafe call.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false);
    if is_root {
        return true;
    }
    not_run(&format!(
        "suite `{suite}` needs root ({what}) and was NOT RUN"
    ));
    false
}

/// A suite that cannot run here says so loudly; under `CI=true` it fails
/// instead, so a suite never silently does not run in CI.
pub fn not_run(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}: CI=true requires every suite to run");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Run a command to completion, failing with its stderr if it fails.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("command printed non-UTF-8")
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Run a shell snippet (for `ip`, `nft`, `sysctl` plumbing).
pub fn sh(script: &str) -> anyhow::Result<String> {
    run(Command::new("sh").arg("-ec").arg(script))
}

/// A file of `n` flow records as JSON lines, each with a distinct conntrack
/// id (0..n) and bytes_sent = id (in one packet; none for 0), observed over
/// the last hour.
pub fn records_file(name: &str, n: u64) -> std::path::PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let path = std::env::temp_dir().join(format!(
        "tollgate-records-{}-{name}.jsonl",
        std::process::id()
    ));
    let mut text = String::new();
    for id in 0..n {
        text.push_str(&format!(
            concat!(
                r#"{{"observed_at":{},"interval_seconds":10,"cluster":"c1","node":"n-{}","family":"ipv4","#,
                r#""protocol":"tcp","local_ip":"::ffff:10.0.{}.{}","local_port":{},"local_pod":"web-{}","#,
                r#""local_namespace":"shop","local_workload_kind":"Deployment","local_workload":"web","#,
                r#""local_team":"storefront","local_zone":"a","local_region":"r1","remote_ip":"::ffff:10.1.0.9","#,
                r#""remote_port":5432,"remote_kind":"pod","remote_pod":"db-0","remote_namespace":"data","#,
                r#""remote_workload_kind":"StatefulSet","remote_workload":"db","remote_team":"platform","#,
                r#""remote_node":"n-b","remote_zone":"b","remote_region":"r1","remote_cloud_provider":"","#,
                r#""remote_cloud_service":"","remote_service":"","initiator":"local","bytes_sent":{},"#,
                r#""bytes_received":1,"packets_sent":{},"packets_received":1,"category":"cross_zone","#,
                r#""ended":false,"conntrack_id":{}}}"#,
                "\n"
            ),
            now - 3600 + id % 3600,
            id % 7,
            id / 250 % 250,
            id % 250,
            1024 + id % 60000,
            id % 50,
            id,
            id.min(1),
            id
        ));
    }
    std::fs::write(&path, text).expect("temp dir writable");
    path
}

/// Runs a Python script (`-c`) with ARGS in a virtualenv holding the
/// third-party readers the suites check tollgate's files with (pyarrow,
/// duckdb; installed once by the project's script); returns its stdout.
/// A failure of the script fails the test.
pub fn python(script: &str, args: &[&str]) -> String {
    let interpreter =
        run(Command::new("bash").arg(repo_root().join("tests/scripts/python-tool.sh")))
            .expect("the readers' virtualenv installs");
    run(Command::new(interpreter.trim())
        .arg("-c")
        .arg(script)
        .args(args))
    .expect("the Python check passes")
}
