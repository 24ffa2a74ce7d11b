//! The ClickHouse sink's promise, against real ClickHouse: whatever stops,
//! nothing is lost and nothing is counted twice. Driven through
//! `tollgate load`, whose every batch goes through the durable spool.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::clickhouse::{self, ClickHouse, Dedicated};
use tollgate_tests::records_file;
use tollgate_tests::tollgate::{self, binary, load};

/// `tollgate load` of `input` into `url`'s `database` through `spool`, in
/// batches of `batch_rows`, its output discarded.
fn load_command(
    url: &str,
    database: &str,
    input: &Path,
    spool: &Path,
    batch_rows: &str,
) -> Command {
    let mut command = Command::new(binary());
    command
        .arg("load")
        .arg(input)
        .args([
            "--clickhouse",
            url,
            "--database",
            database,
            "--batch-rows",
            batch_rows,
            "--origin",
            "test",
        ])
        .arg("--spool")
        .arg(spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn start_load(ch: &ClickHouse, database: &str, input: &Path, spool: &Path) -> Child {
    load_command(ch.url(), database, input, spool, "1000")
        .spawn()
        .unwrap()
}

fn count(ch: &ClickHouse, database: &str) -> (u64, u64, u64) {
    let text = ch
        .query(&format!(
            "SELECT count(), uniqExact(conntrack_id), sum(bytes_sent) FROM {database}.flows"
        ))
        .unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

/// Let the relay close the connection whose answer it lost, and check that
/// the loader noticed (its log says `noticed`) and finished.
fn finish_after_lost_answer(
    relay: &tollgate_tests::lost_ack::LostAck,
    loader: Child,
    noticed: &str,
) {
    relay.release();
    let output = loader.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains(noticed),
        "the lost answer went unnoticed: {log}"
    );
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn spooled_batches(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
                .count()
        })
        .unwrap_or(0)
}

fn assert_exactly_once(ch: &ClickHouse, database: &str, n: u64) {
    let (rows, distinct, bytes) = count(ch, database);
    assert_eq!(distinct, n, "every record arrived");
    assert_eq!(rows, n, "no record arrived twice");
    assert_eq!(bytes, n * (n - 1) / 2);
    // The rollups saw each record once too.
    for rollup in ["flows_1m", "flows_1h", "flows_1d"] {
        let rolled = ch
            .query(&format!(
                "SELECT sum(records), sum(bytes_sent) FROM {database}.{rollup}"
            ))
            .unwrap();
        assert_eq!(
            rolled.trim(),
            format!("{n}\t{}", n * (n - 1) / 2),
            "{rollup}"
        );
    }
}

#[test]
fn sigkilled_loaders_resume_and_every_record_lands_exactly_once() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("sigkill");
    tollgate::migrate(ch.url(), &database);
    const N: u64 = 60_000;
    let input = records_file("sigkill", N);
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-sigkill", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);

    let mut kills = 0;
    for round in 0..4 {
        let mut loader = start_load(ch, &database, &input, &spool);
        // Let it get part-way (a little further each round), then kill it.
        let target = (round + 1) * N / 6;
        wait_for("progress", Duration::from_secs(60), || {
            count(ch, &database).0 >= target || loader.try_wait().unwrap().is_some()
        });
        if loader.try_wait().unwrap().is_none() {
            loader.kill().unwrap();
            kills += 1;
        }
        loader.wait().unwrap();
    }
    assert!(kills >= 3, "the loader finished before it could be killed");
    assert!(count(ch, &database).1 < N, "killed before the end");
    let status = start_load(ch, &database, &input, &spool).wait().unwrap();
    assert!(status.success());
    assert_exactly_once(ch, &database, N);
    // Running it again loads nothing more.
    assert!(start_load(ch, &database, &input, &spool)
        .wait()
        .unwrap()
        .success());
    assert_exactly_once(ch, &database, N);
}

/// A batch whose raw insert committed while a rollup refused it is
/// completed on retry: it lands in the raw table and in every rollup exactly
/// once, though `flows` and `flows_1m` took it the first time.
#[test]
fn a_batch_retried_after_a_rollup_refused_it_lands_in_every_rollup_once() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("rollup_retry");
    tollgate::migrate(ch.url(), &database);
    const N: u64 = 2_000;
    let input = records_file("rollup-retry", N);
    let dir = std::env::temp_dir().join(format!("tollgate-{}-rollup-retry", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The hourly rollup refuses the second batch of a run, and only when
    // it comes as itself: a process's first write completes its batch
    // (its fate is unknown at start), the second is a plain INSERT, which
    // the raw table and the minute rollup take before the hourly one
    // refuses it.
    ch.query(&format!(
        "ALTER TABLE {database}.flows_1h ADD CONSTRAINT refuse_second \
         CHECK NOT endsWith(getSetting('insert_deduplication_token'), '-2')"
    ))
    .unwrap();
    // A build that resends the batch as itself is refused for ever.
    let mut loader = load_command(
        ch.url(),
        &database,
        &input,
        &dir.join("spool"),
        &(N / 2).to_string(),
    )
    .arg("-v")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while loader.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = loader.kill();
        }
        thread::sleep(Duration::from_millis(50));
    }
    let loaded = loader.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&loaded.stderr);
    assert!(loaded.status.success(), "{log}");
    assert!(
        log.contains("refuse_second"),
        "the rollup never refused: {log}"
    );
    assert!(
        log.contains("completed where it was missing"),
        "the retry did not complete the batch: {log}"
    );
    assert_exactly_once(ch, &database, N);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With both sinks, a Parquet directory that cannot be written for a while
/// holds back only Parquet: ClickHouse receives each batch in one INSERT,
/// never again while Parquet retries, and Parquet catches up once it can
/// write.
#[test]
fn a_failing_parquet_sink_makes_clickhouse_write_nothing_twice() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("per_sink");
    tollgate::migrate(ch.url(), &database);
    const N: u64 = 3_000;
    let input = records_file("per-sink", N);
    let dir = std::env::temp_dir().join(format!("tollgate-{}-per-sink", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let parquet = dir.join("parquet");
    std::fs::create_dir_all(&parquet).unwrap();
    // Files where the day partitions' directories go: every Parquet write
    // fails until they are removed.
    let now = tollgate_tests::fixtures::unix_now();
    let blockers: Vec<_> = [now, now - 3600]
        .iter()
        .map(|&t| {
            let date = ch
                .query(&format!("SELECT toDate(toDateTime({t}, 'UTC'))"))
                .unwrap();
            parquet.join(format!("date={}", date.trim()))
        })
        .collect();
    for blocker in &blockers {
        std::fs::write(blocker, b"not a directory").unwrap();
    }
    // The wire is the oracle: socat relays to ClickHouse and logs every
    // request it carries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wire = dir.join("wire.log");
    let target = ch.url().trim_start_matches("http://").trim_end_matches('/');
    let mut relay = Command::new("socat")
        .arg("-v")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!("TCP:{target}"))
        .stderr(std::fs::File::create(&wire).unwrap())
        .spawn()
        .unwrap();
    let relayed = format!("http://127.0.0.1:{port}");
    wait_for("the relay", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut loader = Command::new(binary())
        .arg("load")
        .arg(&input)
        .arg("--spool")
        .arg(dir.join("spool"))
        .args(["--clickhouse", &relayed, "--database", &database])
        .args(["--batch-rows", "1000", "--origin", "both", "--parquet"])
        .arg(&parquet)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "ClickHouse to take the first batch",
        Duration::from_secs(60),
        || count(ch, &database).0 >= 1_000,
    );
    // Parquet retries meanwhile; ClickHouse is not written again.
    thread::sleep(Duration::from_secs(4));
    assert!(
        loader.try_wait().unwrap().is_none(),
        "the loader is retrying"
    );
    for blocker in &blockers {
        let _ = std::fs::remove_file(blocker);
    }
    let output = loader.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("parquet"),
        "Parquet failed and was retried: {log}"
    );
    assert_exactly_once(ch, &database, N);
    let _ = relay.kill();
    let _ = relay.wait();
    let requests = std::fs::read(&wire).unwrap();
    let requests = String::from_utf8_lossy(&requests);
    let inserts = requests
        .lines()
        .filter(|l| l.starts_with("POST ") && l.to_ascii_uppercase().contains("INSERT"))
        .count();
    assert_eq!(inserts, 3, "one INSERT per batch:\n{requests:.2000}");
    let files = std::fs::read_dir(&parquet)
        .unwrap()
        .flat_map(|day| std::fs::read_dir(day.unwrap().path()).unwrap())
        .flat_map(|hour| std::fs::read_dir(hour.unwrap().path()).unwrap())
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "parquet")
        })
        .count();
    assert!(files >= 3, "{files} Parquet files");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_30_second_clickhouse_outage_and_a_sigkill_with_a_full_spool_lose_and_duplicate_nothing() {
    if clickhouse::require("sink").is_none() {
        return;
    }
    let dedicated = Dedicated::start("outage").unwrap();
    let ch = dedicated.server();
    let database = ch.fresh_database("outage");
    tollgate::migrate(ch.url(), &database);
    const N: u64 = 40_000;
    let input = records_file("outage", N);
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-outage", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);

    let mut loader = start_load(ch, &database, &input, &spool);
    wait_for("first batches", Duration::from_secs(60), || {
        count(ch, &database).0 >= 5_000
    });
    dedicated.stop().unwrap();
    let outage = Instant::now();

    // The loader keeps running, holding its next batch in the spool.
    wait_for("a spooled batch", Duration::from_secs(30), || {
        spooled_batches(&spool) > 0
    });
    thread::sleep(Duration::from_secs(5));
    assert!(
        loader.try_wait().unwrap().is_none(),
        "the loader gave up during the outage"
    );
    // Kill it with a non-empty spool, and start it again, still in the outage.
    loader.kill().unwrap();
    loader.wait().unwrap();
    assert!(spooled_batches(&spool) > 0);
    let mut loader = start_load(ch, &database, &input, &spool);
    thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    assert!(
        loader.try_wait().unwrap().is_none(),
        "the restarted loader gave up during the outage"
    );

    dedicated.restart().unwrap();
    let status = loader.wait().unwrap();
    assert!(status.success());
    assert_exactly_once(ch, &database, N);
    assert_eq!(
        spooled_batches(&spool),
        0,
        "the spool is empty once ClickHouse has everything"
    );
}

#[test]
fn a_wrong_url_or_password_is_a_clear_error() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let input = records_file("wrong", 1);
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-wrong", std::process::id()));
    let run = |args: &[&str]| {
        let output = load(&input, &spool, args);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--clickhouse", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot reach ClickHouse at http://127.0.0.1:9"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--clickhouse", ch.url(), "--user", "mallory"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("refused the credentials of user \"mallory\""),
        "{stderr}"
    );
}

#[test]
fn a_bad_record_names_its_file_and_line_and_exits_2() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("badline");
    tollgate::migrate(ch.url(), &database);
    let input = records_file("badline", 3);
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{\"observed_at\": \"yesterday\"}\n");
    std::fs::write(&input, text).unwrap();
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-badline", std::process::id()));
    let output = load(
        &input,
        &spool,
        &["--clickhouse", ch.url(), "--database", &database],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:", input.display())),
        "{stderr}"
    );
}

/// TLS for real: a private CA and a server certificate made with openssl,
/// and stunnel terminating TLS in front of the real ClickHouse.
#[test]
fn https_with_a_private_ca_is_verified() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let status = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=tollgate test CA' 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend = ch.url().trim_start_matches("http://");
    std::fs::write(
        dir.join("stunnel.conf"),
        format!("foreground = yes\npid =\n[clickhouse]\naccept = 127.0.0.1:{port}\nconnect = {backend}\ncert = server.crt\nkey = server.key\n"),
    )
    .unwrap();
    let mut stunnel = Command::new("stunnel4")
        .arg("stunnel.conf")
        .current_dir(&dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("stunnel", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let url = format!("https://127.0.0.1:{port}");
    let database = ch.fresh_database("tls");
    let ca = dir.join("ca.crt");
    let migrate = |extra: &[&str]| {
        let output = Command::new(binary())
            .args(["migrate", "--clickhouse", &url, "--database", &database])
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = migrate(&[]);
    assert_eq!(
        code,
        Some(1),
        "a certificate from an unknown CA must be refused"
    );
    assert!(
        stderr.contains("cannot reach ClickHouse") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    let (code, stderr) = migrate(&["--ca-file", ca.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = migrate(&["--ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot use /nonexistent/ca.pem as a CA file"),
        "{stderr}"
    );

    let input = records_file("tls", 500);
    let spool = dir.join("spool");
    let output = load(
        &input,
        &spool,
        &[
            "--clickhouse",
            &url,
            "--database",
            &database,
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(count(ch, &database).0, 500);
    let _ = stunnel.kill();
    let _ = stunnel.wait();
}

#[test]
fn a_spool_resumes_only_the_input_it_belongs_to() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("owner");
    tollgate::migrate(ch.url(), &database);
    let first = records_file("owner-a", 10);
    let second = records_file("owner-b", 10);
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-owner", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    assert!(start_load(ch, &database, &first, &spool)
        .wait()
        .unwrap()
        .success());
    let output = load(
        &second,
        &spool,
        &["--clickhouse", ch.url(), "--database", &database],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("belongs to input") && stderr.contains("owner-a"),
        "{stderr}"
    );
    assert_eq!(count(ch, &database).0, 10);
}

/// Batches the previous release spooled (`collector/testdata/spool-v2`, in
/// its format: records 1-20 of its `records.jsonl`, without a provider) are
/// delivered once by this release, before it reads on (records 21-30, which
/// name their provider); sent again, they count once.
#[test]
fn a_spool_of_the_previous_release_is_delivered_once_after_the_upgrade() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("upgrade");
    // The fixture's records are of 2026-11-02: keep them whatever today is.
    let output = Command::new(binary())
        .args(["migrate", "--clickhouse", ch.url(), "--database", &database])
        .args(["--raw-ttl-days", "36500", "--minute-ttl-days", "36500"])
        .args(["--hour-ttl-days", "36500", "--day-ttl-days", "36500"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let golden = tollgate_tests::repo_root().join("collector/testdata/spool-v2");
    let dir = std::env::temp_dir().join(format!("tollgate-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let records = std::fs::read_to_string(golden.join("records.jsonl")).unwrap();
    // An upgraded agent's spool: the old batches and the input they came from.
    let upgraded = |name: &str, lines: usize| {
        let input = dir.join(format!("{name}.jsonl"));
        let text: String = records.split_inclusive('\n').take(lines).collect();
        std::fs::write(&input, text).unwrap();
        let spool = dir.join(name);
        std::fs::create_dir_all(&spool).unwrap();
        for batch in ["00000000000000000001.batch", "00000000000000000002.batch"] {
            std::fs::copy(golden.join(batch), spool.join(batch)).unwrap();
        }
        let canonical = std::fs::canonicalize(&input).unwrap();
        std::fs::write(spool.join("input"), format!("{}\n", canonical.display())).unwrap();
        let output = load(
            &input,
            &spool,
            &["--clickhouse", ch.url(), "--database", &database],
        );
        assert!(output.status.success(), "{output:?}");
        assert_eq!(spooled_batches(&spool), 0);
    };
    let by_provider = |table: &str, rows: &str| {
        ch.query(&format!(
            "SELECT local_provider, {rows}, sum(bytes_sent) FROM {database}.{table} \
             GROUP BY local_provider ORDER BY local_provider FORMAT CSV"
        ))
        .unwrap()
    };
    upgraded("first", 30);
    // Bytes are 1000 x the line number: 1..20 and 21..30.
    let expected = "\"\",20,210000\n\"aws\",10,255000\n";
    assert_eq!(by_provider("flows", "count()"), expected);
    for rollup in ["flows_1m", "flows_1h", "flows_1d"] {
        assert_eq!(by_provider(rollup, "sum(records)"), expected, "{rollup}");
    }
    // The same old batches again (an acknowledgement lost before the
    // upgrade), from a spool whose input has nothing after them.
    upgraded("again", 20);
    assert_eq!(by_provider("flows", "count()"), expected);
    for rollup in ["flows_1m", "flows_1h", "flows_1d"] {
        assert_eq!(by_provider(rollup, "sum(records)"), expected, "{rollup}");
    }
}

/// A batch stored by ClickHouse whose acknowledgement never reached the
/// writer, sent again only after other writers' batches have pushed it out
/// of ClickHouse's deduplication window (made 2 blocks here; a fleet fills
/// the default 10,000 in minutes): `delivered_batches` still knows it, so
/// it is not stored twice.
#[test]
fn a_batch_whose_acknowledgement_was_lost_counts_once_after_the_window_forgot_it() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("lost_ack");
    tollgate::migrate(ch.url(), &database);
    for table in ["flows", "flows_1m", "flows_1h", "flows_1d"] {
        ch.query(&format!(
            "ALTER TABLE {database}.{table} MODIFY SETTING non_replicated_deduplication_window = 2"
        ))
        .unwrap();
    }
    const N: u64 = 300;
    let input = records_file("lost-ack", N);
    let spool =
        std::env::temp_dir().join(format!("tollgate-spool-{}-lost-ack", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let relay = tollgate_tests::lost_ack::LostAck::start(ch.url()).unwrap();
    let loader = load_command(relay.url(), &database, &input, &spool, "100")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        relay.wait_until_answered(Duration::from_secs(60)),
        "ClickHouse never answered the first batch"
    );
    // Other writers' batches, one row each, while the first writer waits.
    for k in 0..5 {
        ch.query_with(
            &format!(
                "INSERT INTO {database}.flows SELECT * REPLACE (toUInt32({}) AS conntrack_id) \
                 FROM {database}.flows LIMIT 1",
                1_000_000 + k
            ),
            &[("insert_deduplication_token", &format!("other-{k}"))],
        )
        .unwrap();
    }
    finish_after_lost_answer(&relay, loader, "will retry");
    let ours = ch
        .query(&format!(
            "SELECT count(), uniqExact(conntrack_id) FROM {database}.flows WHERE conntrack_id < 1000000"
        ))
        .unwrap();
    assert_eq!(ours.trim(), format!("{N}\t{N}"), "each record once");
    for rollup in ["flows_1m", "flows_1h", "flows_1d"] {
        let rolled = ch
            .query(&format!("SELECT sum(records) FROM {database}.{rollup}"))
            .unwrap();
        assert_eq!(rolled.trim(), (N + 5).to_string(), "{rollup}");
    }
}

/// A batch whose hourly part and raw part vanished after ClickHouse logged
/// their deduplication ids (what a server killed inside a commit leaves: the
/// id of a part that never appeared), while its acknowledgement was lost:
/// the retry cannot be a resend, which both tables would drop as a
/// duplicate, and `delivered_batches` says the batch is stored. The sink
/// completes it from the markers: every table holds each record once.
#[test]
fn a_batch_whose_parts_vanished_after_their_ids_were_logged_is_completed_once() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("phantom");
    tollgate::migrate(ch.url(), &database);
    // No merges, so each batch's part stays its own and can be removed.
    for table in ["flows", "flows_1h"] {
        ch.query(&format!(
            "ALTER TABLE {database}.{table} MODIFY SETTING \
             max_bytes_to_merge_at_max_space_in_pool = 1, max_bytes_to_merge_at_min_space_in_pool = 1"
        ))
        .unwrap();
    }
    const N: u64 = 400;
    let input = records_file("phantom", N);
    let spool = std::env::temp_dir().join(format!("tollgate-spool-{}-phantom", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    // A run's first batch is completed (its fate is unknown at start); the
    // second is a plain INSERT, whose answer is lost.
    let relay =
        tollgate_tests::lost_ack::LostAck::start_sparing(ch.url(), Some("flows_repair")).unwrap();
    let loader = load_command(relay.url(), &database, &input, &spool, &(N / 2).to_string())
        .arg("-v")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        relay.wait_until_answered(Duration::from_secs(60)),
        "ClickHouse never answered the second batch"
    );
    let token = ch
        .query(&format!(
            "SELECT token FROM {database}.delivered_batches WHERE endsWith(token, '-2')"
        ))
        .unwrap();
    let token = token.trim();
    assert!(!token.is_empty(), "the second batch is not stored");
    for (table, of_the_batch) in [
        ("flows", format!("batch = cityHash64('{token}')")),
        ("flows_1h", "seq_max = 3".to_owned()),
    ] {
        let part = ch
            .query(&format!(
                "SELECT DISTINCT _part FROM {database}.{table} WHERE {of_the_batch}"
            ))
            .unwrap();
        let part = part.trim();
        assert!(
            !part.is_empty() && !part.contains('\n'),
            "{table}: {part:?}"
        );
        ch.query_with(
            &format!("ALTER TABLE {database}.{table} DELETE WHERE _part = '{part}'"),
            &[("mutations_sync", "2")],
        )
        .unwrap();
    }
    finish_after_lost_answer(&relay, loader, "completed where it was missing");
    assert_exactly_once(ch, &database, N);
}

/// A loader killed while ClickHouse still runs its INSERT (the records
/// are in `flows`, the hourly rollup's write has not happened yet): the
/// next loader completes the batch while that INSERT goes on inside the
/// server. The completion must stop it, or both add the batch to the
/// hourly and daily rollups.
#[test]
fn a_batch_completed_while_its_killed_loaders_insert_still_runs_counts_once() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("still_running");
    tollgate::migrate(ch.url(), &database);
    // Every write into the hourly rollup waits 3 s (ClickHouse's most
    // for `sleep` in a block) before it is stored.
    ch.query(&format!(
        "ALTER TABLE {database}.flows_1h ADD CONSTRAINT slow CHECK sleep(3) = 0"
    ))
    .unwrap();
    const N: u64 = 400;
    let input = records_file("still-running", N);
    let spool = std::env::temp_dir().join(format!(
        "tollgate-spool-{}-still-running",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&spool);
    let running_insert = |table: &str| {
        ch.query(&format!(
            "SELECT count() FROM system.processes WHERE current_database = '{database}' \
             AND startsWith(query, 'INSERT INTO {table} (')"
        ))
        .unwrap()
        .trim()
            != "0"
    };
    // A run's first batch is completed (its fate is unknown at start); the
    // second is a plain INSERT into `flows`, killed while it runs.
    let mut loader = load_command(ch.url(), &database, &input, &spool, &(N / 2).to_string())
        .spawn()
        .unwrap();
    wait_for("the second batch's INSERT", Duration::from_secs(60), || {
        running_insert("flows")
    });
    loader.kill().unwrap();
    loader.wait().unwrap();
    assert!(running_insert("flows"), "the INSERT ended with its loader");
    let resumed = load_command(ch.url(), &database, &input, &spool, &(N / 2).to_string())
        .arg("-v")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("completed where it was missing"), "{log}");
    wait_for("every INSERT to end", Duration::from_secs(30), || {
        !running_insert("flows")
    });
    assert_exactly_once(ch, &database, N);
    let _ = std::fs::remove_dir_all(&spool);
}

/// `n` records (`n` below 2^24) of every kind: name columns of one
/// distinct value, of 300 and of one per record, empty names, IPv4 and
/// IPv6 addresses, a protocol without a name, each family, kind, initiator
/// and category, and counters up to 2^64 - 1, within the raw table's
/// retention. Each is parsed from JSON, so each holds its own allocation of
/// every name.
fn every_kind_of_record(n: u64) -> Vec<tollgate_schema::FlowRecord> {
    let kinds = [
        "pod",
        "node",
        "service",
        "cloud_service",
        "internet",
        "unknown",
    ];
    let categories = [
        "same_zone",
        "cross_zone",
        "cross_region",
        "internet",
        "cloud_service",
        "public_in_region",
        "unknown",
    ];
    // Within the raw table's retention.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    (0..n)
        .map(|id| {
            let ipv6 = id % 3 == 0;
            let json = serde_json::json!({
                "observed_at": (start + id % 7200),
                "interval_seconds": 10,
                "cluster": "c1",
                "node": (format!("node-{}", id % 3)),
                "family": (if ipv6 { "ipv6" } else { "ipv4" }),
                "protocol": (["tcp", "udp", "47"][(id % 3) as usize]),
                "local_ip": (if ipv6 { format!("fd00::{:x}:{:x}", id >> 16, id & 0xffff) } else { format!("::ffff:10.{}.{}.{}", id >> 16, (id >> 8) & 255, id & 255) }),
                "local_port": (id % 65536),
                "local_pod": (format!("web-{}", id % 300)),
                "local_namespace": (if id % 5 == 0 { "" } else { "shop" }),
                "local_workload_kind": "Deployment",
                "local_workload": "web",
                "local_team": "storefront",
                "local_zone": "a",
                "local_region": "r1",
                "local_provider": "aws",
                "local_provider_id": (format!("i-{}", id % 3)),
                "remote_ip": (if ipv6 { format!("2001:db8::{:x}:{:x}", id >> 16, id & 0xffff) } else { format!("::ffff:172.16.{}.{}", (id >> 8) & 255, id & 255) }),
                "remote_port": 443,
                "remote_kind": (kinds[(id % 6) as usize]),
                "remote_pod": (format!("remote-{id}")),
                "remote_namespace": "",
                "remote_workload_kind": "",
                "remote_workload": "",
                "remote_team": (if id % 2 == 0 { "platform" } else { "" }),
                "remote_node": "",
                "remote_zone": "b",
                "remote_region": "r2",
                "remote_cloud_provider": "aws",
                "remote_cloud_service": (if id % 4 == 0 { "S3" } else { "" }),
                "remote_service": "",
                "initiator": (["local", "remote"][(id % 2) as usize]),
                "bytes_sent": (if id == 1 { u64::MAX } else { id * 1000 + 1000 }),
                "bytes_received": (if id == 2 { u64::MAX } else { id + 100 }),
                "packets_sent": (id / 2 + 1),
                "packets_received": (if id == 2 { u64::MAX } else { 1 }),
                "category": (categories[(id % 7) as usize]),
                "ended": (id % 2 == 1),
                "conntrack_id": id,
            });
            serde_json::from_value(json).unwrap()
        })
        .collect()
}

/// The records `database` holds, in `conntrack_id` order.
fn stored_records(ch: &ClickHouse, database: &str) -> Vec<tollgate_schema::FlowRecord> {
    let stored = ch
        .query_with(
            &format!(
                "SELECT * EXCEPT (batch) REPLACE (toUInt32(observed_at) AS observed_at) \
                 FROM {database}.flows ORDER BY conntrack_id FORMAT JSONEachRow"
            ),
            &[("output_format_json_quote_64bit_integers", "0")],
        )
        .unwrap();
    stored
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Every field of every record comes back from ClickHouse as `tollgate
/// load` read it. The batch (70,000 records, one INSERT of 18 Native
/// blocks) holds name columns of one distinct value, of 300 and of one
/// per record (8- and 16-bit dictionary indexes), empty names, IPv4 and
/// IPv6 addresses, a protocol without a name, each family, kind, initiator
/// and category, and counters up to 2^64 - 1. The server squashes the
/// blocks into one: `delivered_batches` records the whole batch once, and
/// every row holds the batch's hash, which tollgate does not send.
#[test]
fn every_field_of_every_record_comes_back_as_loaded() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("roundtrip");
    tollgate::migrate(ch.url(), &database);
    const N: u64 = 70_000;
    let records = every_kind_of_record(N);
    let input = std::env::temp_dir().join(format!(
        "tollgate-records-{}-roundtrip.jsonl",
        std::process::id()
    ));
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    let spool =
        std::env::temp_dir().join(format!("tollgate-spool-{}-roundtrip", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let output = load_command(ch.url(), &database, &input, &spool, "100000")
        .args(["--batch-mib", "1024", "--batch-age", "600"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let stored = stored_records(ch, &database);
    assert_eq!(stored.len(), records.len());
    for (stored, loaded) in stored.iter().zip(&records) {
        assert_eq!(stored, loaded);
    }
    let delivered = ch
        .query(&format!(
            "SELECT count(), sum(records) FROM {database}.delivered_batches"
        ))
        .unwrap();
    assert_eq!(
        delivered.trim(),
        format!("1\t{N}"),
        "one batch, stored whole"
    );
    let hashed = ch
        .query(&format!(
            "SELECT count() FROM {database}.flows \
             WHERE batch = cityHash64((SELECT any(token) FROM {database}.delivered_batches))"
        ))
        .unwrap();
    assert_eq!(
        hashed.trim(),
        N.to_string(),
        "every row holds its batch's hash"
    );
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_dir_all(&spool);
}

/// The agent's batches find names by address alone
/// (`Rows::of_interned_names`), so a text from two allocations is two
/// entries of the batch's name table, and then of a Native block's
/// dictionary and of a Parquet column's. Here every record's every name is
/// an allocation of its own: each text is in the table as many times as
/// records hold it, and every record still comes back as it was, from
/// ClickHouse and from Parquet.
#[test]
fn a_batch_holding_each_text_many_times_comes_back_as_its_records() {
    let Some(ch) = clickhouse::require("sink") else {
        return;
    };
    let database = ch.fresh_database("duplicates");
    tollgate::migrate(ch.url(), &database);
    let records = every_kind_of_record(10_000);
    let mut rows = tollgate_schema::compact::Rows::of_interned_names();
    for record in &records {
        rows.push(&record.view());
    }
    let clusters = rows.names().iter().filter(|n| &***n == "c1").count();
    assert_eq!(clusters, records.len(), "each record's own allocation");
    let batch = ::tollgate::sink::Batch {
        seq: 1,
        token: "duplicates-1".to_owned(),
        resume_at: ::tollgate::sink::batch::Resume::default(),
        rows,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clickhouse = ::tollgate::sink::clickhouse::ClickHouseSink::new(
        &::tollgate::sink::clickhouse::Connection {
            url: ch.url().to_owned(),
            database: database.clone(),
            user: "default".to_owned(),
            password: None,
            ca_file: None,
        },
    )
    .unwrap();
    runtime
        .block_on(::tollgate::sink::Sink::write(&clickhouse, &batch))
        .unwrap();
    assert!(stored_records(ch, &database) == records, "ClickHouse");

    let dir = std::env::temp_dir().join(format!(
        "tollgate-parquet-{}-duplicates",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let parquet = ::tollgate::sink::parquet::ParquetSink::open(&dir).unwrap();
    runtime
        .block_on(::tollgate::sink::Sink::write(&parquet, &batch))
        .unwrap();
    // Every text column, in record order, as JSON lists.
    let read = tollgate_tests::python(
        r#"
import sys, json, pyarrow as pa, pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table().sort_by("conntrack_id")
for field in table.schema:
    t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        print(field.name, json.dumps(table.column(field.name).to_pylist()))
"#,
        &[&dir.to_string_lossy()],
    );
    let as_json: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let mut columns = 0;
    for line in read.lines() {
        let (column, values) = line.split_once(' ').unwrap();
        let values: Vec<String> = serde_json::from_str(values).unwrap();
        if as_json[0].get(column).and_then(|v| v.as_str()).is_none() {
            continue;
        }
        let expected: Vec<&str> = as_json
            .iter()
            .map(|r| r[column].as_str().unwrap())
            .collect();
        assert!(values == expected, "Parquet column {column}");
        columns += 1;
    }
    assert!(columns >= 20, "{columns} name columns compared:\n{read}");
    let _ = std::fs::remove_dir_all(&dir);
}
