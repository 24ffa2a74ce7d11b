//! Runs the real `tollgate` binary inside a namespace and reads its JSON
//! lines back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// A running `tollgate conntrack watch`.
pub struct Watch {
    child: Child,
    output: std::thread::JoinHandle<std::io::Result<String>>,
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
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let Some(line) = lines.next() else {
                bail!("tollgate conntrack watch exited before subscribing");
            };
            if line?.contains("listening for conntrack DESTROY events") {
                break;
            }
        }
        // Drain both pipes from the start: a watcher blocked on a full pipe
        // would stop reading its event socket.
        std::thread::spawn(move || lines.for_each(drop));
        let mut stdout = child.stdout.take().context("stdout")?;
        let output = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).map(|_| text)
        });
        Ok(Self { child, output })
    }

    /// Stop with SIGTERM and return every ended connection it printed.
    pub fn stop(mut self) -> anyhow::Result<Vec<Line>> {
        // `ip netns exec` execs the binary, so the child's pid is tollgate's.
        crate::run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("tollgate conntrack watch ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("tollgate conntrack watch exited with {status}");
        }
        let text = self.output.join().expect("reader thread")?;
        parse_lines(&text)
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
