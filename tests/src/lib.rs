//! Shared machinery for tollgate's integration suites.
//!
//! The suites run against real components: the kernel's conntrack in
//! network namespaces this crate creates ([`netns`]), nftables counters as
//! the independent oracle ([`oracle`]), and the `tollgate` binary itself
//! ([`tollgate`]). Nothing here computes an expected byte count: the kernel
//! counts, twice, by two independent mechanisms, and the suites compare.

pub mod bench;
pub mod clickhouse;
pub mod netns;
pub mod oracle;
pub mod tollgate;

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
    let message = format!("suite `{suite}` needs root ({what}) and was NOT RUN");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}: CI=true requires every suite to run");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
    false
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

/// Run a shell snippet (for `ip`, `nft`, `sysctl` plumbing).
pub fn sh(script: &str) -> anyhow::Result<String> {
    run(Command::new("sh").arg("-ec").arg(script))
}
