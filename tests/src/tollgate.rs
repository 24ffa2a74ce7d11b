//! Runs the real `tollgate` binary inside a namespace and reads its JSON
//! lines back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::netns::Netns;
use crate::oracle::{Count, FlowKey};

/// The `tollgate` binary of this build (`TOLLGATE_BIN` overrides).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps, binaries such as
    // the demo in target/<profile>: look beside the executable, then one up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable directory");
    let candidates = [dir.join("tollgate"), dir.join("../tollgate")];
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no tollgate binary beside {}: build it first with `cargo build -p tollgate` \
                 (same profile)",
                exe.display()
            )
        })
}

/// One JSON line printed by `tollgate conntrack dump` or `watch`.
#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Name or number.
    pub proto: serde_json::Value,
    /// Original direction source.
    pub orig_src: IpAddr,
    /// Original direction destination.
    pub orig_dst: IpAddr,
    /// Original source port.
    pub orig_sport: Option<u16>,
    /// Original destination port.
    pub orig_dport: Option<u16>,
    /// Original packets.
    pub orig_packets: Option<u64>,
    /// Original bytes.
    pub orig_bytes: Option<u64>,
    /// Reply source.
    pub reply_src: IpAddr,
    /// Reply destination.
    pub reply_dst: IpAddr,
    /// Reply source port.
    pub reply_sport: Option<u16>,
    /// Reply destination port.
    pub reply_dport: Option<u16>,
    /// Reply packets.
    pub reply_packets: Option<u64>,
    /// Reply bytes.
    pub reply_bytes: Option<u64>,
    /// ICMP id (original direction), for ICMP entries.
    pub orig_icmp_id: Option<u16>,
    /// ICMP id (reply direction), for ICMP entries.
    pub reply_icmp_id: Option<u16>,
    /// CTA_ID.
    pub id: u32,
    /// CTA_ZONE.
    pub zone: u16,
    /// CTA_MARK.
    pub mark: u32,
    /// CTA_STATUS.
    pub status: u32,
    /// TCP state name.
    pub tcp_state: Option<String>,
    /// Start timestamp.
    pub start_ns: Option<u64>,
    /// Stop timestamp.
    pub stop_ns: Option<u64>,
    /// From a DESTROY event.
    pub ended: bool,
}

impl Line {
    /// The protocol's printed name (`tcp`, ...) or number as text.
    pub fn proto_name(&self) -> String {
        match &self.proto {
            serde_json::Value::String(name) => name.clone(),
            other => other.to_string(),
        }
    }

    /// Both directions as oracle keys with their counts.
    pub fn directions(&self) -> [(FlowKey, Count); 2] {
        let proto = self.proto_name();
        let icmp = proto == "icmp" || proto == "icmpv6";
        let key = |src, dst, sport: Option<u16>, dport: Option<u16>, id: Option<u16>| FlowKey {
            src,
            dst,
            proto: proto.clone(),
            sport: if icmp {
                id.unwrap_or(0)
            } else {
                sport.unwrap_or(0)
            },
            dport: if icmp { 0 } else { dport.unwrap_or(0) },
        };
        let count = |packets: Option<u64>, bytes: Option<u64>| Count {
            packets: packets.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        };
        [
            (
                key(
                    self.orig_src,
                    self.orig_dst,
                    self.orig_sport,
                    self.orig_dport,
                    self.orig_icmp_id,
                ),
                count(self.orig_packets, self.orig_bytes),
            ),
            (
                key(
                    self.reply_src,
                    self.reply_dst,
                    self.reply_sport,
                    self.reply_dport,
                    self.reply_icmp_id,
                ),
                count(self.reply_packets, self.reply_bytes),
            ),
        ]
    }

    /// Bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.orig_bytes.unwrap_or(0) + self.reply_bytes.unwrap_or(0)
    }
}

fn parse_lines(text: &str) -> anyhow::Result<Vec<Line>> {
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("bad JSON line {line:?}")))
        .collect()
}

/// `tollgate conntrack dump` (zeroing, or `--no-zero`) inside `ns`.
pub fn dump(ns: &Netns, zero: bool) -> anyhow::Result<Vec<Line>> {
    let mut command = ns.command(binary().to_str().context("binary path")?);
    command.args(["conntrack", "dump"]);
    if !zero {
        command.arg("--no-zero");
    }
    parse_lines(&crate::run(&mut command)?)
}

/// `tollgate migrate` of `database` on the ClickHouse at `url`, which
/// must succeed.
pub fn migrate(url: &str, database: &str) {
    let output = Command::new(binary())
        .args(["migrate", "--clickhouse", url, "--database", database])
        .output()
        .expect("tollgate migrate runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `tollgate load INPUT --spool SPOOL ARGS...`, run to completion.
pub fn load(input: &Path, spool: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("load")
        .arg(input)
        .arg("--spool")
        .arg(spool)
        .args(args)
        .output()
        .expect("tollgate load runs")
}

/// `tollgate load INPUT` into ClickHouse's `database` and Parquet files
/// under `parquet` at once, in batches of `batch_rows`, which must succeed.
pub fn load_into_both(
    input: &Path,
    spool: &Path,
    url: &str,
    database: &str,
    parquet: &Path,
    batch_rows: u32,
) {
    let parquet = parquet.to_string_lossy();
    let batch_rows = batch_rows.to_string();
    let output = load(
        input,
        spool,
        &[
            "--clickhouse",
            url,
            "--database",
            database,
            "--parquet",
            &parquet,
            "--batch-rows",
            &batch_rows,
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `tollgate conntrack watch`.
pub struct Watch {
    child: Child,
    stdout: Collected,
    stderr: Collected,
}

/// Lines a child printed so far, collected by a thread as they come, so
/// that the child never blocks on a full pipe (a blocked watcher would stop
/// reading its event socket).
struct Collected {
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Collected {
    fn from<R: Read + Send + 'static>(input: std::io::Lines<BufReader<R>>) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in input.map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Self { lines, reader }
    }

    fn len(&self) -> usize {
        self.lines.lock().expect("lock").len()
    }

    /// Every line, once the child has closed the pipe.
    fn finish(self) -> Vec<String> {
        self.reader.join().expect("collector thread");
        std::mem::take(&mut *self.lines.lock().expect("lock"))
    }
}

impl Watch {
    /// Start watching in `ns`; returns once the subscription is live, so no
    /// event after this call can be missed.
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(binary())
            .args(["-v", "conntrack", "watch"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tollgate conntrack watch")?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        loop {
            let Some(line) = stderr.next() else {
                bail!("tollgate conntrack watch exited before subscribing");
            };
            if line?.contains("listening for conntrack DESTROY events") {
                break;
            }
        }
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self {
            child,
            stdout: Collected::from(stdout),
            stderr: Collected::from(stderr),
        })
    }

    /// Wait until at least `count` ended connections have been printed.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.stdout.len() < count {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {count} ended connections printed after {timeout:?}",
                    self.stdout.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stop with SIGTERM; return every ended connection it printed and its
    /// log lines.
    pub fn stop(self) -> anyhow::Result<(Vec<Line>, Vec<String>)> {
        let Self {
            mut child,
            stdout,
            stderr,
        } = self;
        // `ip netns exec` execs the binary, so the child's pid is tollgate's.
        crate::run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tollgate conntrack watch ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("tollgate conntrack watch exited with {status}");
        }
        let lines = stdout.finish();
        Ok((parse_lines(&lines.join("\n"))?, stderr.finish()))
    }
}

/// Sums of what tollgate reported, per flow direction.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Everything: dumps plus ended connections.
    pub flows: HashMap<FlowKey, Count>,
    /// Bytes that arrived through DESTROY events only.
    pub ended_bytes: u64,
    /// Entries read through DESTROY events.
    pub ended_entries: u64,
}

impl Ledger {
    /// Packets and bytes over all flows.
    pub fn total(&self) -> Count {
        let mut total = Count::default();
        for count in self.flows.values() {
            total += *count;
        }
        total
    }

    /// Each flow direction where tollgate and the oracle disagree, sorted:
    /// a count that differs, or bytes tollgate reported that the oracle
    /// never counted.
    pub fn differences(&self, oracle: &HashMap<FlowKey, Count>) -> Vec<String> {
        let mut differences = Vec::new();
        for (key, expected) in oracle {
            let got = self.flows.get(key).copied().unwrap_or_default();
            if got != *expected {
                differences.push(format!("{key:?}: oracle {expected:?}, tollgate {got:?}"));
            }
        }
        for (key, got) in &self.flows {
            if got.bytes > 0 && !oracle.contains_key(key) {
                differences.push(format!("{key:?}: tollgate {got:?}, oracle counted nothing"));
            }
        }
        differences.sort();
        differences
    }

    /// Add every line's counts.
    pub fn add(&mut self, lines: &[Line]) {
        for line in lines {
            if line.ended {
                self.ended_entries += 1;
                self.ended_bytes += line.bytes();
            }
            for (key, count) in line.directions() {
                *self.flows.entry(key).or_default() += count;
            }
        }
    }
}
