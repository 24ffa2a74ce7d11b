//! Chaos on real components: an agent metering tens of thousands of active
//! connections is SIGKILLed at random points of its reads and of its
//! deliveries, its ClickHouse is SIGKILLed and started again, and the disk
//! under its spool fills up for a while, while short connections end all
//! along. At the end, metering equals nftables' counters kept by the same
//! kernel, to the byte.
//!
//! The points are drawn from a seed printed at the start and in every
//! failure; `TOLLGATE_CHAOS_SEED` replays one.

#![allow(clippy::unwrap_used)]
// Test code: an unwrap is an assertion.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::clickhouse::{self, Dedicated};
use tollgate_tests::cluster::{
    differences, metering, per_flow_differences, Agent, Cluster, Flow, Holder, Inbox, Relay,
    Target, Underlay,
};
use tollgate_tests::fixtures::unix_now;
use tollgate_tests::tollgate;

const INTERVAL: u32 = 2;
/// Active UDP flows per traffic client; two clients (IPv4 and IPv6).
const FLOWS: u16 = 12_000;
/// The spool's cap: a few reads' batches, so an outage reaches it.
const CAP_MIB: u32 = 2;
/// The tmpfs under the spool: room for the cap, journals and queues.
const DISK_MIB: u32 = 32;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir));
        Self(dir.to_owned())
    }

    /// Keeps the disk full until the returned filler is dropped: the sinks'
    /// acknowledgements free batches' space, and the filler takes it.
    fn fill(&self) -> Filler {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let filling = thread::spawn({
            let stop = stop.clone();
            move || {
                let chunk = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if file.write_all(&chunk).is_err() {
                        thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        });
        Filler {
            path,
            stop,
            filling: Some(filling),
        }
    }
}

/// A file taking every byte of a disk, removed when dropped.
struct Filler {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    filling: Option<thread::JoinHandle<()>>,
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(filling) = self.filling.take() {
            let _ = filling.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The client ports of the short connections.
const SHORT: std::ops::Range<u16> = 56000..65000;

/// xorshift64*: the test's points, reproducible from the seed.
struct Points(u64);

impl Points {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Waits until `done`, at most `limit`; a timeout shows the end of `log`.
fn wait_for(what: &str, log: &Path, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("timed out waiting for {what}; the agent's log ends:\n{tail}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The size of the largest journal in `dir` of a read after `since`
/// (Unix seconds): a killed read's journal stays until the next agent has
/// metered it, and is not the read to hit next.
fn journal_since(dir: &Path, since: u32) -> u64 {
    std::fs::read_dir(dir)
        .map(|files| {
            files
                .filter_map(Result::ok)
                .filter(|f| {
                    let name = f.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("journal-")
                        .and_then(|rest| rest.rsplit('-').next())
                        .and_then(|observed_at| observed_at.parse::<u32>().ok())
                        .is_some_and(|observed_at| observed_at > since)
                })
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Whether `dir` holds a batch handed to the sinks.
fn delivering(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|files| {
            files
                .filter_map(Result::ok)
                .any(|f| f.file_name().to_string_lossy().ends_with(".batch"))
        })
        .unwrap_or(false)
}

fn occurrences(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn kills_a_clickhouse_crash_and_a_full_spool_disk_lose_and_double_nothing() {
    if !tollgate_tests::require_root("chaos", "network namespaces, conntrack and a tmpfs") {
        return;
    }
    if clickhouse::require("chaos").is_none() {
        return;
    }
    let seed = std::env::var("TOLLGATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos seed: {seed} (TOLLGATE_CHAOS_SEED={seed} replays these points)");
    let mut points = Points(seed);

    let dedicated = Dedicated::start("chaos").unwrap();
    let ch = dedicated.server();
    let database = ch.fresh_database("chaos");
    tollgate::migrate(ch.url(), &database);
    let cluster = Cluster::create_with(Underlay::Routed).unwrap();
    let _relay = Relay::start(&cluster, ch.url()).unwrap();
    let spool = cluster.dir.join("spool-node-a");
    let disk = Tmpfs::mount(&spool, DISK_MIB);
    let config = cluster
        .agent_config(0, "http://127.0.0.1:8123", &database, None, INTERVAL)
        .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("  batch_rows: 1000\n", "  batch_rows: 5000\n")
        .replace(
            "spool: {dir: spool-node-a}",
            &format!("spool: {{dir: spool-node-a, cap_mib: {CAP_MIB}}}"),
        );
    assert!(text.contains("cap_mib"), "the spool's cap is set:\n{text}");
    std::fs::write(&config, text).unwrap();
    let log = config.with_extension("log");

    let flows = [
        Flow::new(
            "report-29123-q7z",
            Target::Pod("frontend-7f9c4-x2k8p"),
            "udp",
            false,
            30000,
            FLOWS,
        ),
        Flow::new(
            "report-29123-q7z",
            Target::Pod("frontend-7f9c4-x2k8p"),
            "udp",
            true,
            30000 + FLOWS + 1000,
            FLOWS,
        ),
    ];
    // Short TCP connections all along, their entries deleted at once:
    // each DESTROY event carries every byte, through the ended-connections
    // queue, the kills and the full disk.
    let short = Flow::new(
        "report-29123-q7z",
        Target::Pod("frontend-7f9c4-x2k8p"),
        "tcp",
        false,
        SHORT.start,
        SHORT.end - SHORT.start,
    );
    let holder = Holder::start(&config).unwrap();
    let mut agent = Agent::start(&cluster.nodes[0], &config).unwrap();
    let traffic: Vec<_> = flows
        .iter()
        .map(|flow| cluster.start_udp_rounds(flow, 220, "0.5").unwrap())
        .collect();
    // Entries are deleted all along, between a kill and the next agent's
    // start too: their DESTROY events wait on the subscription the holder
    // keeps.
    let restart = |agent: Agent| {
        agent.kill().unwrap();
        let started = unix_now();
        (Agent::start(&cluster.nodes[0], &config).unwrap(), started)
    };
    let mut since = unix_now();
    let mut timeline = Vec::new();
    let churning = AtomicBool::new(true);
    let frontend = cluster.pod("frontend-7f9c4-x2k8p").ip4.clone();
    let (agent, short_connections) = thread::scope(|scope| {
        let connections = scope.spawn(|| {
            let mut opened = 0u16;
            while churning.load(Ordering::Relaxed) && SHORT.start + opened + 10 <= SHORT.end {
                let batch = Flow::new(
                    "report-29123-q7z",
                    Target::Pod("frontend-7f9c4-x2k8p"),
                    "tcp",
                    false,
                    SHORT.start + opened,
                    10,
                );
                let mut client = cluster
                    .start(&batch, &["short", "--n", "10", "--bytes", "3000"])
                    .unwrap();
                assert!(
                    client.wait().unwrap().success(),
                    "a short connection failed"
                );
                opened += 10;
                thread::sleep(Duration::from_millis(200));
            }
            opened
        });
        scope.spawn(|| {
            while churning.load(Ordering::Relaxed) {
                cluster.nodes[0]
                    .ns
                    .command("conntrack")
                    .args(["-D", "-p", "tcp", "--state", "TIME_WAIT", "-d", &frontend])
                    .output()
                    .unwrap();
                thread::sleep(Duration::from_millis(50));
            }
        });

        // SIGKILLs inside reads: once the read's journal passed a drawn
        // size; the second at the first moment after it when the kernel has
        // zeroed a batch whose answers the agent has not received, the
        // third when it has received them and not journaled them.
        for kill in 0..3 {
            let size = 20_000 + points.below(600_000);
            wait_for("a read's journal", &log, Duration::from_secs(60), || {
                journal_since(&spool, since) >= size
            });
            match kill {
                0 => {
                    (agent, since) = restart(agent);
                    timeline.push(format!("killed in a read, its journal at {size} bytes"));
                }
                1 => {
                    let stops = agent.kill_inside_zeroing(2000, &holder).unwrap();
                    since = unix_now();
                    agent = Agent::start(&cluster.nodes[0], &config).unwrap();
                    timeline.push(format!(
                        "killed in a read inside the kernel's zeroing, its journal past {size} bytes ({stops} stops)"
                    ));
                }
                _ => {
                    let stops = agent
                        .kill_between_receipt_and_keeping(Inbox::ZeroingAnswers, 2000, &spool)
                        .unwrap()
                        .expect("no stop found zeroing answers received and not journaled");
                    since = unix_now();
                    agent = Agent::start(&cluster.nodes[0], &config).unwrap();
                    timeline.push(format!(
                        "killed in a read between the answers' receipt and their journal, its journal past {size} bytes ({stops} stops)"
                    ));
                }
            }
        }

        // SIGKILLs inside deliveries: a drawn moment after batches were handed
        // to the sink.
        for _ in 0..3 {
            let after = points.below(60);
            wait_for("a committed batch", &log, Duration::from_secs(60), || {
                delivering(&spool)
            });
            thread::sleep(Duration::from_millis(after));
            (agent, _) = restart(agent);
            timeline.push(format!("killed {after} ms into a delivery"));
        }

        // ClickHouse SIGKILLed: the spool reaches its cap, reads are postponed
        // (the kernel keeps counting), the agent is killed meanwhile, and
        // ClickHouse comes back.
        thread::sleep(Duration::from_millis(points.below(2000)));
        let postponed = occurrences(&log, "READS POSTPONED");
        dedicated.kill().unwrap();
        timeline.push("ClickHouse killed".into());
        wait_for(
            "reads postponed at the cap",
            &log,
            Duration::from_secs(90),
            || occurrences(&log, "READS POSTPONED") > postponed,
        );
        thread::sleep(Duration::from_millis(points.below(4000)));
        (agent, since) = restart(agent);
        timeline.push("killed while ClickHouse was down".into());
        thread::sleep(Duration::from_secs(u64::from(INTERVAL) * 2));
        dedicated.restart().unwrap();
        timeline.push("ClickHouse started again".into());
        let resumed = occurrences(&log, "reads resume");
        wait_for("reads resuming", &log, Duration::from_secs(90), || {
            occurrences(&log, "reads resume") > resumed
        });

        // The spool's disk full, at a drawn point of a read, for a few reads.
        let size = 20_000 + points.below(600_000);
        wait_for("a read's journal", &log, Duration::from_secs(60), || {
            journal_since(&spool, since) >= size
        });
        let postponed = occurrences(&log, "READS POSTPONED");
        let filler = disk.fill();
        timeline.push(format!("disk filled, a journal at {size} bytes"));
        wait_for(
            "reads postponed on a full disk",
            &log,
            Duration::from_secs(30),
            || occurrences(&log, "READS POSTPONED") > postponed,
        );
        thread::sleep(Duration::from_secs(u64::from(INTERVAL) * 2));
        let resumed = occurrences(&log, "reads resume");
        drop(filler);
        timeline.push("disk freed".into());
        wait_for("reads resuming", &log, Duration::from_secs(30), || {
            occurrences(&log, "reads resume") > resumed
        });

        // One more kill inside a read, now that everything is back.
        let size = 20_000 + points.below(600_000);
        let back = unix_now();
        wait_for("a read's journal", &log, Duration::from_secs(60), || {
            journal_since(&spool, back) >= size
        });
        (agent, _) = restart(agent);
        timeline.push(format!("killed in a read, its journal at {size} bytes"));
        churning.store(false, Ordering::Relaxed);
        (agent, connections.join().unwrap())
    });
    let flows = [flows[0].clone(), flows[1].clone(), short];

    let mut clients_running = 0;
    for mut client in traffic {
        clients_running += usize::from(client.try_wait().unwrap().is_none());
        assert!(client.wait().unwrap().success(), "a traffic client failed");
    }
    thread::sleep(Duration::from_secs(2 * u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "chaos: {}; {short_connections} short connections; {} journals replayed, {} postponements, {} reads stopped by the spool, {} by the journal",
        timeline.join("; "),
        text.matches("metered from its journal").count(),
        text.matches("READS POSTPONED").count(),
        text.matches("cannot write to the spool").count(),
        text.matches("cannot write this read's journal").count(),
    );
    for line in text.lines().filter(|l| {
        l.contains("metered from its journal") || l.contains("POSTPONED") || l.contains("resume")
    }) {
        eprintln!("chaos: {line}");
    }
    let context = format!("seed {seed}; {}\n{text}", timeline.join("; "));
    assert_eq!(
        clients_running, 2,
        "the traffic outlasted the chaos (more rounds needed): {context}"
    );
    assert!(
        text.contains("metered from its journal"),
        "a kill cut a read short: {context}"
    );
    let expected = cluster.expected(&flows).unwrap();
    let actual = metering(ch, &database).unwrap();
    let total: u64 = expected.values().sum();
    assert!(
        total > 2 * u64::from(FLOWS) * 100 * 128,
        "the traffic ran: {expected:#?}"
    );
    let report = differences(&expected, &actual);
    // Rows stored more than once, with the batches holding them: one batch
    // twice is a delivery's fault, two batches a metering's.
    let repeated = ch
        .query(&format!(
            "SELECT local_port, observed_at, ended, bytes_sent, count(), uniqExact(batch) \
             FROM {database}.flows WHERE local_workload = 'report' \
             GROUP BY local_port, observed_at, ended, bytes_sent, conntrack_id \
             HAVING count() > 1 ORDER BY observed_at LIMIT 40 FORMAT TSV"
        ))
        .unwrap_or_default();
    // The raw table against the view: a difference is the rollups'.
    let raw = ch
        .query(&format!(
            "SELECT sum(bytes_sent), sum(bytes_received) FROM {database}.flows \
             WHERE local_workload = 'report' FORMAT TSV"
        ))
        .unwrap_or_default();
    let per_flow = per_flow_differences(&cluster, 0, ch, &database, "report").unwrap();
    let over = records_of_flows_over(&cluster, ch, &database);
    let explain = format!(
        "{}\nUDP flows by packets sent, tollgate minus nftables: {per_flow:?}\n\
         rows stored twice (port, observed_at, ended, bytes, copies, batches):\n{repeated}\n\
         report's bytes sent and received in flows itself: {raw}\n\
         the records of three UDP flows metered above nftables:\n{over}\n{context}",
        report.join("\n")
    );
    let key = |direction: &str| {
        (
            "data".to_owned(),
            "analytics".to_owned(),
            "report".to_owned(),
            "same_zone".to_owned(),
            direction.to_owned(),
        )
    };
    let got = actual.get(&key("out")).copied().unwrap_or(0);
    assert_eq!(
        raw.trim(),
        format!("{got}\t{}", actual.get(&key("in")).copied().unwrap_or(0)),
        "the view differs from the raw rows: a rollup counted a batch twice or lost one\n{explain}"
    );
    assert!(
        report.is_empty() && per_flow.keys().all(|d| *d == 0),
        "metering after the chaos differs from nftables' counters:\n{explain}"
    );
    assert!(
        text.contains("never received were kept by the holder")
            && text.contains("were kept in its inbox by the holder"),
        "the kills inside the zeroing and after the answers' receipt left answers for the holder:\n{context}"
    );
}

/// The records of up to three of report's UDP flows whose packets sent
/// exceed nftables' count: each record's read, interval, batch and id, to
/// tell which reads or deliveries counted a packet twice.
fn records_of_flows_over(cluster: &Cluster, ch: &clickhouse::ClickHouse, database: &str) -> String {
    let oracle = tollgate_tests::oracle::read(&cluster.nodes[0].ns).unwrap_or_default();
    let metered = ch
        .query(&format!(
            "SELECT local_port, sum(packets_sent) FROM {database}.flows \
             WHERE local_workload = 'report' AND protocol = 'udp' GROUP BY local_port FORMAT TSV"
        ))
        .unwrap_or_default();
    let over: Vec<String> = metered
        .lines()
        .filter_map(|line| {
            let (port, packets) = line.split_once('\t')?;
            let (port, packets): (u16, u64) = (port.parse().ok()?, packets.parse().ok()?);
            let counted: u64 = oracle
                .iter()
                .filter(|(key, _)| key.sport == port && key.proto.starts_with("udp"))
                .map(|(_, count)| count.packets)
                .sum();
            (packets > counted).then(|| port.to_string())
        })
        .take(3)
        .collect();
    if over.is_empty() {
        return "none".into();
    }
    ch.query(&format!(
        "SELECT local_port, family, observed_at, interval_seconds, ended, packets_sent, \
         bytes_sent, conntrack_id, batch FROM {database}.flows \
         WHERE local_workload = 'report' AND protocol = 'udp' AND local_port IN ({}) \
         ORDER BY local_port, family, observed_at FORMAT PrettyCompactMonoBlock",
        over.join(", ")
    ))
    .unwrap_or_else(|e| format!("{e:#}"))
}
