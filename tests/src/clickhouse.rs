//! A real ClickHouse for the suites: `TOLLGATE_CLICKHOUSE_URL` if set, else
//! one server per test process started with `tests/scripts/clickhouse.sh`
//! (it exits with the process). Each test works in its own database.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context};

use crate::repo_root;

/// A reachable ClickHouse server.
#[derive(Debug)]
pub struct ClickHouse {
    url: String,
    _data: Option<PathBuf>,
}

static SERVER: OnceLock<Result<ClickHouse, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// The shared server, or `None` (with a loud message) when none can be had
/// outside CI. Under `CI=true` a missing ClickHouse fails the test.
pub fn require(suite: &str) -> Option<&'static ClickHouse> {
    let server = SERVER.get_or_init(|| start().map_err(|e| format!("{e:#}")));
    match server {
        Ok(server) => Some(server),
        Err(error) => {
            crate::not_run(&format!(
                "suite `{suite}` needs ClickHouse and was NOT RUN: {error}"
            ));
            None
        }
    }
}

fn start() -> anyhow::Result<ClickHouse> {
    if let Ok(url) = std::env::var("TOLLGATE_CLICKHOUSE_URL") {
        return Ok(ClickHouse { url, _data: None });
    }
    let data = std::env::temp_dir().join(format!("tollgate-clickhouse-{}", std::process::id()));
    let url = script(&["start", data.to_str().context("path")?])?;
    Ok(ClickHouse {
        url,
        _data: Some(data),
    })
}

impl ClickHouse {
    /// The HTTP URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new, empty database name for one test (created by the caller or
    /// by `tollgate migrate`).
    pub fn fresh_database(&self, test: &str) -> String {
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}_{test}", std::process::id());
        name.chars().take(60).collect()
    }

    /// Run one statement; returns the body (TSV unless the query says
    /// otherwise). `settings` are URL parameters, e.g. `insert_deduplication_token=x`.
    pub fn query_with(&self, sql: &str, settings: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut url = format!("{}/?", self.url);
        for (name, value) in settings {
            url.push_str(&format!("{name}={value}&"));
        }
        let output = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "--max-time",
                "60",
                &url,
                "--data-binary",
                "@-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .context("cannot run curl")?;
        let body = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("ClickHouse rejected {sql:.200}: {body}");
        }
        Ok(body)
    }

    /// Run one statement.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.query_with(sql, &[])
    }

    /// Run a file of statements (each ending in `;` at a line's end;
    /// comment lines dropped) with `settings`, in order.
    pub fn run_script(&self, sql: &str, settings: &[(&str, &str)]) -> anyhow::Result<()> {
        for statement in sql.split(";\n") {
            let statement: String = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if !statement.trim().is_empty() {
                self.query_with(&statement, settings)?;
            }
        }
        Ok(())
    }
}

/// A ClickHouse server of one test's own, which the test may stop and start
/// again (same port, same data), for outage scenarios.
#[derive(Debug)]
pub struct Dedicated {
    server: ClickHouse,
    dir: PathBuf,
    port: String,
    keep_data: bool,
}

impl Dedicated {
    /// Start a server with its data in a fresh directory.
    pub fn start(name: &str) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tollgate-clickhouse-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::start_in(dir, false)
    }

    /// Start a server over the data in `dir` (created if missing), which
    /// is kept after the server stops if `keep_data`.
    pub fn start_in(dir: PathBuf, keep_data: bool) -> anyhow::Result<Self> {
        let url = script(&["start", dir.to_str().context("path")?])?;
        let port = url.rsplit(':').next().context("port in URL")?.to_owned();
        Ok(Self {
            server: ClickHouse {
                url,
                _data: Some(dir.clone()),
            },
            dir,
            port,
            keep_data,
        })
    }

    /// The running server.
    pub fn server(&self) -> &ClickHouse {
        &self.server
    }

    /// Stop it (the data stays).
    pub fn stop(&self) -> anyhow::Result<()> {
        script(&["stop", self.dir.to_str().context("path")?]).map(drop)
    }

    /// Start it again on the same port with the same data.
    pub fn restart(&self) -> anyhow::Result<()> {
        script(&["start", self.dir.to_str().context("path")?, &self.port]).map(drop)
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let _ = self.stop();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A real sharded ClickHouse cluster of one test's own: N servers forming
/// the cluster `tollgate_shards`, one shard each without replicas (what
/// runs on these machines: no Keeper, no `ON CLUSTER`). Any node can be
/// killed and started again with its data.
#[derive(Debug)]
pub struct Shards {
    nodes: Vec<Dedicated>,
}

impl Shards {
    /// The cluster's name in every node's `remote_servers`.
    pub const CLUSTER: &'static str = "tollgate_shards";

    /// Start `count` nodes in a fresh directory.
    pub fn start(name: &str, count: usize) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tollgate-shards-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir_text = dir.to_str().context("path")?;
        let urls = script(&["cluster", dir_text, &count.to_string()])?;
        let nodes = urls
            .lines()
            .enumerate()
            .map(|(i, url)| {
                let port = url.rsplit(':').next().context("port in URL")?.to_owned();
                Ok(Dedicated {
                    server: ClickHouse {
                        url: url.to_owned(),
                        _data: Some(dir.clone()),
                    },
                    dir: dir.join(format!("node{}", i + 1)),
                    port,
                    keep_data: false,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if nodes.len() != count {
            bail!(
                "clickhouse.sh cluster started {} nodes, not {count}",
                nodes.len()
            );
        }
        Ok(Self { nodes })
    }

    /// The nodes, in shard order.
    pub fn nodes(&self) -> &[Dedicated] {
        &self.nodes
    }
}

impl Dedicated {
    /// Kill the server at once (SIGKILL: no flush, no goodbye), as a
    /// crash or the OOM killer would. The data stays.
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).context("pid file")?;
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -KILL {} failed", pid.trim());
        }
        Ok(())
    }
}

fn script(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/scripts/clickhouse.sh"))
        .args(args)
        .env("CLICKHOUSE_WATCH_PID", std::process::id().to_string())
        .output()
        .context("cannot run tests/scripts/clickhouse.sh")?;
    if !output.status.success() {
        bail!(
            "clickhouse.sh {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}
