//! Benchmark of the whole agent at ENTRIES conntrack entries per interval
//! (run by `tests/scripts/bench-agent.sh`, as root, inside a network
//! namespace of its own): CPU seconds per interval and peak RSS of
//! `tollgate agent` delivering to a real ClickHouse while one packet per
//! entry and interval keeps every entry active, against the sum of its
//! parts measured alone in this process over the same table: the zeroing
//! dump, enrichment, spooling and delivery. Also the CPU of one read of the
//! same table idle (every entry read, none recorded), against a bare walk
//! of the table (the kernel's dump received and dropped undecoded) and
//! tollgate's reader alone on the idle table, measured in this process.
//! The ratios are taken to references measured between the agent's reads,
//! over the same table: a bare walk after each of its idle reads, and the
//! zeroing read of one sweep's traffic after each interval it delivered
//! (the machine drifts over minutes; a reference minutes away from the
//! agent's read does not share its state). The references are also
//! measured before the agent starts and after it exits, for comparison.
//!
//! Usage: `bench_agent [ENTRIES] [INTERVALS]`. The world is
//! [`World`]'s large cluster (100,000 pods on 500 nodes, 50,000 cloud
//! prefixes) seen from node-0, whose 200 pods hold every connection.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use socket2::{Domain, Protocol as SocketProtocol, SockAddr, Socket, Type};
use tollgate::classify::{Classifier, NetworkConfig};
use tollgate::conntrack::{sysctl, Entry, ReadMode, TableReader};
use tollgate::enrich::Enricher;
use tollgate::inventory::{static_file, Interner};
use tollgate::sink::batch::{Batch, Resume, TokenMaker};
use tollgate::sink::clickhouse::{ClickHouseSink, Connection};
use tollgate::sink::deliver::{drain, DeliveryCounts, RetryPolicy};
use tollgate::sink::spool::Spool;
use tollgate_schema::compact::Rows;
use tollgate_tests::clickhouse::{ClickHouse, Dedicated};
use tollgate_tests::synthetic::{random_numbers, status_kib, World};
use tollgate_tests::tollgate::{binary, migrate};

const BATCH_ROWS: usize = 50_000;
const METRICS: &str = "127.0.0.1:19102";
const READS: &str = "tollgate_interval_read_duration_seconds_count";
const LAST_READ: &str = "tollgate_last_read_timestamp_seconds";
const IDLE: &str = "tollgate_conntrack_idle_entries_total";
const ENTRIES_READ: &str = "tollgate_conntrack_entries_read_total";
const NETWORK: &str = "in_region: [172.16.0.0/12]\ncloud_ranges: {aws: ip-ranges.json}\n";

/// The agent's interval for a table of `entries`: long enough for its read
/// and delivery, then a sweep, the zeroing read alone and a second sweep,
/// to follow each other inside one interval (20 s per 500,000 entries, at
/// least 20 s; a million entries take about 25 s of it on two cores).
fn interval_seconds(entries: u64) -> u64 {
    20 * entries.div_ceil(500_000).max(1)
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds a process spent, in user space and in the kernel.
#[derive(Clone, Copy)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    /// Of process `pid` (all its threads) so far.
    fn of(pid: &str) -> anyhow::Result<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("stat format")?
            .1
            .split_whitespace()
            .collect();
        let ticks = clock_ticks()?;
        Ok(Cpu {
            user: fields[11].parse::<u64>()? as f64 / ticks,
            system: fields[12].parse::<u64>()? as f64 / ticks,
        })
    }

    fn total(self) -> f64 {
        self.user + self.system
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// User plus system CPU seconds of process `pid` (all its threads).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    Ok(Cpu::of(pid)?.total())
}

fn clock_ticks() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Measures the CPU this process spends in `work`.
fn timed<T>(label: &str, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Cpu)> {
    let cpu = Cpu::of("self")?;
    let started = Instant::now();
    let result = work()?;
    let spent = Cpu::of("self")?.since(cpu);
    eprintln!(
        "  {label:<44} {:>6.2} s CPU ({:.2} user, {:.2} system) {:>6.2} s wall",
        spent.total(),
        spent.user,
        spent.system,
        started.elapsed().as_secs_f64()
    );
    Ok((result, spent))
}

/// The kernel's walk of the table as any reader of it pays: one dump
/// request, every datagram received into one buffer and dropped
/// undecoded (only the message headers looked at, for the end). Returns
/// the datagrams received.
fn bare_walk() -> anyhow::Result<u64> {
    const NETLINK_NETFILTER: i32 = 12;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let mut socket = Socket::new(
        Domain::from(16), // AF_NETLINK
        Type::RAW,
        Some(SocketProtocol::from(NETLINK_NETFILTER)),
    )?;
    socket.set_recv_buffer_size(1 << 20)?;
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    // ctnetlink's IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP.
    request.extend_from_slice(&0x0101u16.to_ne_bytes());
    request.extend_from_slice(&0x0301u16.to_ne_bytes());
    // Sequence and port id, then nfgenmsg: every family.
    request.extend_from_slice(&[0; 12]);
    socket.send(&request)?;
    let mut buffer = vec![0u8; 64 << 10];
    let mut datagrams = 0;
    loop {
        let received = socket.read(&mut buffer)?;
        datagrams += 1;
        let mut at = 0;
        while at + 16 <= received {
            let length = u32::from_ne_bytes(buffer[at..at + 4].try_into()?) as usize;
            match u16::from_ne_bytes(buffer[at + 4..at + 6].try_into()?) {
                NLMSG_DONE => return Ok(datagrams),
                NLMSG_ERROR => bail!("the kernel refused the dump"),
                _ => {}
            }
            ensure!(length >= 16, "a message of {length} bytes");
            at += (length + 3) & !3;
        }
    }
}

/// One connection of the table, as injected.
#[derive(Clone, Copy)]
struct TableConnection {
    pod: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    reply_src: Ipv4Addr,
    udp: bool,
}

impl TableConnection {
    fn dport(&self) -> u16 {
        if self.udp {
            53
        } else {
            443
        }
    }
}

/// Every connection from one of node-0's pods (a distinct source port per
/// pod), 80% TCP established, 20% UDP, to [`World::peer`]'s mix; Service
/// connections carry their DNAT in the reply tuple.
fn connections(world: &World, entries: u64) -> Vec<TableConnection> {
    let local = world.local_pods();
    let mut next = random_numbers(0x2545_f491_4f6c_dd1d);
    (0..entries)
        .map(|i| {
            let (dst, reply_src) = world.peer(i, &mut next);
            TableConnection {
                pod: World::pod_ip(local[(i % local.len() as u64) as usize]),
                sport: u16::try_from(1024 + i / local.len() as u64).unwrap_or(u16::MAX),
                dst,
                reply_src,
                udp: i % 5 == 4,
            }
        })
        .collect()
}

/// The connections as `conntrack -R` lines.
fn entries_file(connections: &[TableConnection], path: &Path) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut line = String::new();
    for c in connections {
        let (proto, state) = if c.udp {
            ("udp", "")
        } else {
            ("tcp", " --state ESTABLISHED")
        };
        let (pod, sport, dst, dport, reply_src) = (c.pod, c.sport, c.dst, c.dport(), c.reply_src);
        line.clear();
        writeln!(
            line,
            "-I -s {pod} -d {dst} -p {proto} --sport {sport} --dport {dport} \
             --reply-src {reply_src} --reply-dst {pod} --reply-port-src {dport} \
             --reply-port-dst {sport}{state} --timeout 7200"
        )?;
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Sends one packet per connection, in the direction that opened it
/// (a TCP ACK or an empty UDP datagram), through a raw socket: conntrack
/// counts it at OUTPUT and the script's nftables rule drops it right after
/// (the drop is the `EPERM` every send returns). Every entry then carries
/// traffic in the next read.
fn sweep(socket: &Socket, connections: &[TableConnection]) -> anyhow::Result<()> {
    let mut packet = [0u8; 40];
    for c in connections {
        let len = if c.udp { 28 } else { 40 };
        packet[..20].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        packet[9] = if c.udp { 17 } else { 6 };
        packet[12..16].copy_from_slice(&c.pod.octets());
        packet[16..20].copy_from_slice(&c.dst.octets());
        packet[20..22].copy_from_slice(&c.sport.to_be_bytes());
        packet[22..24].copy_from_slice(&c.dport().to_be_bytes());
        if c.udp {
            packet[24..28].copy_from_slice(&[0, 8, 0, 0]);
        } else {
            // seq 1, ack 1, header of 5 words, ACK, window 65535.
            packet[24..40]
                .copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        }
        let to = SockAddr::from(SocketAddrV4::new(c.dst, 0));
        match socket.send_to(&packet[..len], &to) {
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
                return Err(e).context("sending a packet")
            }
            _ => {}
        }
    }
    Ok(())
}

/// A value of the agent's /metrics (its samples summed).
fn metric(name: &str) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(METRICS)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    tollgate_tests::exposition::sum(&text, name)?
        .with_context(|| format!("{name} is not in the agent's metrics"))
}

/// Wait until the agent has finished `reads` interval reads, asking its
/// `/metrics` twice a second: a scrape costs the agent about 0.1 ms of CPU,
/// and ten a second (a scraper no deployment runs) added 1% to an
/// interval's and 3% to an idle read's figure.
fn wait_reads(reads: f64, agent_pid: &str, interval: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(interval * 3 + 60);
    loop {
        if metric(READS).unwrap_or(0.0) >= reads {
            return Ok(());
        }
        ensure!(
            Path::new(&format!("/proc/{agent_pid}")).exists(),
            "the agent exited"
        );
        ensure!(
            Instant::now() < deadline,
            "the agent did not finish read {reads}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `work` (`what`, for errors) between two of the agent's reads:
/// after read `reads` has ended in the interval it began in, and before the
/// next read, which begins when that interval ends; otherwise the agent
/// would read part of the work, or run beside it.
fn between_reads<T>(
    what: &str,
    reads: f64,
    interval: u64,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let started = unix_seconds();
    // The count grows when a read ends; the last read's time tells whether
    // the next one has begun since.
    let last_read = metric(LAST_READ)? as u64;
    ensure!(
        metric(READS)? == reads && last_read / interval == started / interval,
        "{what} was to begin after the agent's read {reads}, in its interval: \
         the interval of {interval} s is too short"
    );
    let result = work()?;
    ensure!(
        unix_seconds() / interval == started / interval && metric(READS)? == reads,
        "{what} crossed the beginning of the agent's read {}: the interval of {interval} s \
         is too short",
        reads + 1.0
    );
    Ok(result)
}

/// Waits until ClickHouse has merged nothing for a second, so that a
/// reference read does not share the machine with the merges of the rows
/// the agent just delivered (merges of new parts may begin a moment after
/// the insert).
fn quiet(server: &ClickHouse) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since: Option<Instant> = None;
    loop {
        if server.query("SELECT count() FROM system.merges")?.trim() == "0" {
            if quiet_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
                return Ok(());
            }
        } else {
            quiet_since = None;
        }
        ensure!(Instant::now() < deadline, "ClickHouse merged for a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw IPv4 socket that sends the headers it is given (`IPPROTO_RAW`).
fn raw_socket() -> anyhow::Result<Socket> {
    Socket::new(Domain::IPV4, Type::RAW, Some(SocketProtocol::from(255))).context("a raw socket")
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The references again, after the agent, over the same table: the
/// zeroing read with every entry active, then (every entry idle again)
/// the bare walk and tollgate's reader alone. With the same figures
/// measured before the agent, they bracket it in time, so that the
/// machine's drift over the run shows instead of passing for the agent's.
struct References {
    zeroing_read: Cpu,
    bare_walk: Cpu,
    reader_idle: Cpu,
}

fn references_after(connections: &[TableConnection]) -> anyhow::Result<References> {
    let entries = connections.len() as u64;
    let mut table = TableReader::open()?;
    sweep(&raw_socket()?, connections)?;
    let zeroing_read = zeroing_read(&mut table, entries, "zeroing read alone, after the agent")?;
    let (_, bare_walk) = timed("bare walk, after the agent", bare_walk)?;
    let reader_idle = idle_read(
        &mut table,
        entries,
        "tollgate's reader alone, idle, after the agent",
    )?;
    Ok(References {
        zeroing_read,
        bare_walk,
        reader_idle,
    })
}

/// The zeroing read of a table of `entries` active entries, timed.
fn zeroing_read(table: &mut TableReader, entries: u64, label: &str) -> anyhow::Result<Cpu> {
    let (read, cpu) = timed(label, || {
        let mut read = 0u64;
        table.dump(ReadMode::ZeroActive, |_| {
            read += 1;
            ControlFlow::Continue(())
        })?;
        Ok(read)
    })?;
    ensure!(read == entries, "the dump read {read} of {entries} entries");
    Ok(cpu)
}

/// tollgate's reader over a table of `entries` idle entries, timed.
fn idle_read(table: &mut TableReader, entries: u64, label: &str) -> anyhow::Result<Cpu> {
    let (idle, cpu) = timed(label, || {
        let before = table.idle_entries();
        table.dump(ReadMode::ZeroActive, |_| ControlFlow::Continue(()))?;
        Ok(table.idle_entries() - before)
    })?;
    ensure!(
        idle == entries,
        "the idle read found {idle} of {entries} entries idle"
    );
    Ok(cpu)
}

/// The parts alone, over the same table: what each costs this process.
struct Parts {
    records: u64,
    dump: Cpu,
    enrich: Cpu,
    spool: Cpu,
    deliver: Cpu,
}

fn parts(
    dir: &Path,
    inventory: &Path,
    server: &ClickHouse,
    connections: &[TableConnection],
) -> anyhow::Result<Parts> {
    let entries = connections.len() as u64;
    let mut table = TableReader::open()?;
    // Every entry active, as in the agent's intervals.
    sweep(&raw_socket()?, connections)?;
    let dump = zeroing_read(
        &mut table,
        entries,
        "zeroing read alone (walk, zero each entry)",
    )?;

    let inventory = static_file::load(inventory, "team", 300)?;
    let network: NetworkConfig = serde_saphyr::from_str(NETWORK)?;
    let classifier = Classifier::new(&network, dir, &mut Interner::default())?;
    let mut table_entries: Vec<Entry> = Vec::new();
    table.dump(ReadMode::Zero, |entry| {
        table_entries.push(*entry);
        ControlFlow::Continue(())
    })?;
    let mut enricher = Enricher::new("bench", "node-0", "platform");
    // Recent: older rows would fall to the tables' retention on insert.
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let (batches, enrich) = timed(
        "enrichment + classification into compact batches alone",
        || {
            let mut batches: Vec<Rows> = Vec::new();
            let mut rows = Rows::default();
            enricher.enrich_many(&table_entries, now, 10, &inventory, &classifier, |r| {
                rows.push(r);
                if rows.len() == BATCH_ROWS {
                    batches.push(std::mem::take(&mut rows));
                }
            });
            batches.push(rows);
            Ok(batches)
        },
    )?;
    drop(table_entries);
    let count = batches.iter().map(|rows| rows.len() as u64).sum();

    let tokens = TokenMaker::new("parts")?;
    let mut spool = Spool::open(
        &dir.join("parts-spool"),
        8 << 30,
        &[tollgate::sink::CLICKHOUSE],
    )?;
    let ((), spool_cpu) = timed("spooling alone (write, fsync)", || {
        for (i, rows) in batches.into_iter().enumerate() {
            let seq = i as u64 + 1;
            spool.push(&Batch {
                seq,
                token: tokens.token(seq),
                resume_at: Resume::default(),
                rows,
            })?;
        }
        Ok(())
    })?;

    let database = "parts";
    migrate(server.url(), database);
    let sink = ClickHouseSink::new(&Connection {
        url: server.url().to_owned(),
        database: database.to_owned(),
        user: "default".to_owned(),
        password: None,
        ca_file: None,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let spool = Mutex::new(spool);
    let ((), deliver) = timed("delivery alone (spool to ClickHouse)", || {
        runtime.block_on(drain(
            &spool,
            &sink,
            RetryPolicy::default(),
            &DeliveryCounts::default(),
        ))?;
        Ok(())
    })?;
    let stored = rows(server, database)?;
    ensure!(stored == count, "ClickHouse holds {stored} of {count} rows");
    Ok(Parts {
        records: count,
        dump,
        enrich,
        spool: spool_cpu,
        deliver,
    })
}

fn rows(server: &ClickHouse, database: &str) -> anyhow::Result<u64> {
    Ok(server
        .query(&format!("SELECT count() FROM {database}.flows"))?
        .trim()
        .parse()?)
}

/// Wait until ClickHouse holds `expected` rows (or fail after `timeout`).
fn wait_rows(
    server: &ClickHouse,
    database: &str,
    expected: u64,
    timeout: Duration,
    agent: &mut Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if rows(server, database)? >= expected {
            return Ok(());
        }
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited: {status}");
        }
        ensure!(
            Instant::now() < deadline,
            "ClickHouse holds {} rows, expected {expected}",
            rows(server, database)?
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Peak RSS (KiB) of an agent run for one read of the (empty) table.
fn idle_agent_peak(config: &Path, interval: u64) -> anyhow::Result<u64> {
    let mut agent = Command::new(binary())
        .args(["agent", "--config"])
        .arg(config)
        .spawn()
        .context("tollgate agent")?;
    let pid = agent.id().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let to_boundary = interval - now.as_secs() % interval;
    std::thread::sleep(Duration::from_secs(to_boundary + 3));
    let peak = status_kib(&pid, "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    agent.wait()?;
    peak
}

fn main() -> anyhow::Result<()> {
    let entries = arg(1, 1_000_000);
    let intervals = arg(2, 3);
    let world = World {
        pods: 100_000,
        nodes: 500,
        prefixes: 50_000,
    };
    let dir = std::env::temp_dir().join(format!("tollgate-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (inventory_path, _) = world.write(&dir)?;

    // What the inventory alone occupies, as the enrichment benchmark measures it.
    let before = status_kib("self", "VmRSS:")?;
    let inventory = static_file::load(&inventory_path, "team", 300)?;
    let inventory_kib = status_kib("self", "VmRSS:")?.saturating_sub(before);
    drop(inventory);

    for setting in sysctl::ALL {
        sysctl::ensure(setting)?;
    }
    let entries_path = dir.join("entries");
    let connections = connections(&world, entries);
    entries_file(&connections, &entries_path)?;
    eprintln!("injecting {entries} entries...");
    let injected = Command::new("conntrack")
        .arg("-R")
        .arg(&entries_path)
        .output()
        .context("conntrack -R")?;
    ensure!(
        injected.status.success(),
        "conntrack -R failed: {}",
        String::from_utf8_lossy(&injected.stderr)
    );
    let count: u64 = String::from_utf8(Command::new("conntrack").arg("-C").output()?.stdout)?
        .trim()
        .parse()?;
    ensure!(
        count == entries,
        "the table holds {count} of {entries} entries"
    );

    // The table is idle: nothing counted since the injection.
    eprintln!("the idle table:");
    let (_, walk) = timed("bare walk (received, not decoded)", bare_walk)?;
    let reader_idle = idle_read(
        &mut TableReader::open()?,
        entries,
        "tollgate's zeroing read alone, idle table",
    )?;

    let clickhouse = Dedicated::start("bench-agent")?;
    let server = clickhouse.server();
    eprintln!("the parts alone:");
    let parts = parts(&dir, &inventory_path, server, &connections)?;
    let sum =
        parts.dump.total() + parts.enrich.total() + parts.spool.total() + parts.deliver.total();

    // The whole agent, on the same table, into a fresh database.
    let database = "agent";
    let interval = interval_seconds(entries);
    migrate(server.url(), database);
    let config = dir.join("tollgate.yaml");
    let mut yaml =
        String::from("cluster: bench\nnode: node-0\ninventory: {file: inventory.yaml}\nnetwork:\n");
    for line in NETWORK.lines() {
        writeln!(yaml, "  {line}")?;
    }
    writeln!(
        yaml,
        "agent: {{interval_seconds: {interval}, listen: {METRICS}, batch_rows: {BATCH_ROWS}}}\n\
         sinks:\n  clickhouse: {{url: \"{}\", database: {database}}}\n  spool: {{dir: spool, cap_mib: 4096}}",
        server.url()
    )?;
    std::fs::write(&config, yaml)?;
    eprintln!(
        "the agent: 2 reads of the idle table, then {intervals}+1 intervals of {interval} s with traffic on every entry:"
    );
    let mut agent = Command::new(binary())
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("tollgate agent")?;
    let pid = agent.id().to_string();
    let per_interval = parts.records;
    let timeout = Duration::from_secs(interval * 3 + 60);
    let result = (|| {
        // The idle table: every entry read, none recorded. A bare walk
        // between the agent's two idle reads and one right after the second
        // are the idle read's reference.
        wait_reads(1.0, &pid, interval)?;
        let before = (cpu_seconds(&pid)?, metric(IDLE)?, metric(ENTRIES_READ)?);
        let (_, walk_before) =
            between_reads("the bare walk before the idle read", 1.0, interval, || {
                timed("bare walk, before the agent's idle read", bare_walk)
            })?;
        wait_reads(2.0, &pid, interval)?;
        let idle_cpu = cpu_seconds(&pid)? - before.0;
        let idle = metric(IDLE)? - before.1;
        let read = metric(ENTRIES_READ)? - before.2;
        ensure!(
            idle == entries as f64 && read == entries as f64,
            "the idle read saw {read} entries, {idle} of them idle; expected {entries} and {entries}"
        );
        eprintln!("  one read of the idle table: {idle_cpu:.2} s CPU");
        let socket = raw_socket()?;
        let (_, walk_after) =
            between_reads("the bare walk after the idle read", 2.0, interval, || {
                let walk = timed("bare walk, after the agent's idle read", bare_walk)?;
                // Traffic on every entry for the agent's next read.
                sweep(&socket, &connections)?;
                Ok(walk)
            })?;

        // Each interval with traffic, once the agent has delivered the one
        // before and ClickHouse merges nothing: traffic, the zeroing read
        // alone over it, and traffic again for the agent's next read.
        // ClickHouse is asked for the rows only once the agent's read is
        // done: a query (a curl process) every 200 ms would run beside the
        // read, which the reference read does not meet.
        let mut table = TableReader::open()?;
        wait_reads(3.0, &pid, interval)?;
        wait_rows(server, database, per_interval, timeout, &mut agent)?;
        let mut cpu = Vec::new();
        let mut between = Vec::new();
        let mut last = Cpu::of(&pid)?;
        for k in 1..=intervals {
            quiet(server)?;
            between.push(between_reads(
                "the zeroing read alone",
                2.0 + k as f64,
                interval,
                || {
                    sweep(&socket, &connections)?;
                    let read = zeroing_read(
                        &mut table,
                        entries,
                        "zeroing read alone, between the agent's reads",
                    )?;
                    sweep(&socket, &connections)?;
                    Ok(read)
                },
            )?);
            wait_reads(3.0 + k as f64, &pid, interval)?;
            wait_rows(
                server,
                database,
                per_interval * (k + 1),
                timeout,
                &mut agent,
            )?;
            let now = Cpu::of(&pid)?;
            let spent = now.since(last);
            eprintln!(
                "  interval with traffic: {:.2} s CPU ({:.2} user, {:.2} system)",
                spent.total(),
                spent.user,
                spent.system
            );
            cpu.push(spent);
            last = now;
        }
        let peak = status_kib(&pid, "VmHWM:")?;
        Ok::<_, anyhow::Error>((cpu, between, idle_cpu, [walk_before, walk_after], peak))
    })();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let exit = agent.wait()?;
    let (cpu, between, idle_cpu, idle_walks, peak) = result?;
    ensure!(exit.success(), "the agent exited with {exit}");

    // Exactly one row per record of every interval, none lost, none twice.
    let per_read = server.query(&format!(
        "SELECT count() FROM {database}.flows GROUP BY observed_at ORDER BY observed_at"
    ))?;
    for line in per_read.lines() {
        let rows: u64 = line.trim().parse()?;
        ensure!(
            rows == per_interval,
            "an interval stored {rows} rows, expected {per_interval}: {per_read}"
        );
    }

    eprintln!("the references again:");
    let after = references_after(&connections)?;

    // The same agent over an empty table: what the inventory and the
    // process cost without entries.
    let flushed = Command::new("conntrack").arg("-F").output()?;
    ensure!(flushed.status.success(), "conntrack -F failed");
    let idle_peak = idle_agent_peak(&config, interval)?;

    let system: Vec<f64> = cpu.iter().map(|c| c.system).collect();
    let cpu: Vec<f64> = cpu.iter().map(|c| c.total()).collect();
    let mut sorted = cpu.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = |before: Cpu, after: Cpu| (before.total() + after.total()) / 2.0;
    let zeroing_read = mean(parts.dump, after.zeroing_read);
    let bare_walk = mean(walk, after.bare_walk);
    let between_user: Vec<f64> = between.iter().map(|c| c.user).collect();
    let between: Vec<f64> = between.iter().map(|c| c.total()).collect();
    let agent_mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "entries": entries,
            "records_per_interval": per_interval,
            "intervals_stored": per_read.lines().count(),
            "agent_cpu_seconds_per_interval": cpu,
            "agent_system_cpu_seconds_per_interval": system,
            "agent_cpu_seconds_median": median,
            "agent_cpu_seconds_idle_table_read": idle_cpu,
            "bare_walk_cpu_seconds": [walk.total(), after.bare_walk.total()],
            "bare_walk_system_cpu_seconds": [walk.system, after.bare_walk.system],
            "reader_alone_idle_cpu_seconds": [reader_idle.total(), after.reader_idle.total()],
            "zeroing_read_alone_cpu_seconds": [parts.dump.total(), after.zeroing_read.total()],
            "bare_walk_around_idle_read_cpu_seconds":
                [idle_walks[0].total(), idle_walks[1].total()],
            "zeroing_read_between_reads_cpu_seconds": between,
            "zeroing_read_between_reads_user_cpu_seconds": between_user,
            "ratio_agent_to_zeroing_read": cpu.iter().sum::<f64>() / between.iter().sum::<f64>(),
            "ratio_agent_to_zeroing_read_before_and_after": agent_mean / zeroing_read,
            "ratio_agent_idle_read_to_bare_walk": idle_cpu / mean(idle_walks[0], idle_walks[1]),
            "ratio_agent_idle_read_to_bare_walk_before_and_after": idle_cpu / bare_walk,
            "ratio_reader_alone_idle_to_bare_walk":
                mean(reader_idle, after.reader_idle) / bare_walk,
            "parts_cpu_seconds": {
                "dump": parts.dump.total(),
                "enrich": parts.enrich.total(),
                "spool": parts.spool.total(),
                "deliver": parts.deliver.total(),
                "sum": sum,
            },
            "parts_system_cpu_seconds": {
                "dump": parts.dump.system,
                "enrich": parts.enrich.system,
                "spool": parts.spool.system,
                "deliver": parts.deliver.system,
            },
            "ratio_agent_to_sum_of_parts": agent_mean / sum,
            "agent_peak_rss_mib": peak as f64 / 1024.0,
            "agent_peak_rss_empty_table_mib": idle_peak as f64 / 1024.0,
            "interval_working_memory_mib": peak.saturating_sub(idle_peak) as f64 / 1024.0,
            "inventory_rss_mib": inventory_kib as f64 / 1024.0,
            "agent_peak_rss_minus_inventory_mib": (peak.saturating_sub(inventory_kib)) as f64 / 1024.0,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
