//! The Parquet sink: files third-party readers take as they are, the same
//! metering as ClickHouse through the same SQL, and no partial file or lost
//! or doubled record whatever interrupts the writer.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_tests::clickhouse;
use tollgate_tests::tollgate::{binary, load, load_into_both};
use tollgate_tests::{python, records_file, repo_root, require_root};

fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-parquet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    tollgate_tests::files_under(dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect()
}

const CHECK: &str = r#"
import sys, glob, pyarrow.parquet as pq, pyarrow.dataset as ds, duckdb
root = sys.argv[1]
paths = glob.glob(root + "/date=*/hour=*/*.parquet")
for p in paths:
    pq.ParquetFile(p).metadata  # every file is complete
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
schema = {f.name: str(f.type) for f in table.schema}
ids = table.column("conntrack_id").to_pylist()
con = duckdb.connect()
duck = con.execute(f"SELECT count(*), count(DISTINCT conntrack_id) FROM read_parquet('{root}/**/*.parquet')").fetchone()
print(len(paths), table.num_rows, len(set(ids)), duck[0], duck[1])
for name in ["observed_at", "remote_ip", "local_team", "bytes_sent", "local_port", "ended", "date"]:
    print(name, schema[name])
# Every column chunk: zstd, and min/max statistics equal to what pyarrow
# computes from the chunk's values; which chunks have a dictionary page.
import pyarrow as pa, pyarrow.compute as pc
chunks, wrong, dictionaries = 0, [], {}
for p in paths:
    f = pq.ParquetFile(p)
    for g in range(f.num_row_groups):
        data = f.read_row_group(g)
        for i in range(f.metadata.num_columns):
            c = f.metadata.row_group(g).column(i)
            name = c.path_in_schema
            values = data.column(name)
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            if pa.types.is_timestamp(values.type):
                values = values.cast(pa.int64())
            s = c.statistics
            extremes = pc.min_max(values)
            expected = (extremes["min"].as_py(), extremes["max"].as_py())
            got = None
            if s is not None and s.has_min_max:
                got = (s.min, s.max)
                if pa.types.is_integer(values.type) and hasattr(got[0], "timestamp"):
                    got = tuple(int(v.timestamp() * 1000) for v in got)
            if c.compression != "ZSTD" or s is None or s.null_count != 0 or got != expected:
                wrong.append((p, name, c.compression, got, expected))
            dictionaries.setdefault(name, set()).add(c.has_dictionary_page)
            chunks += 1
print("chunks", chunks, "wrong", wrong[:3])
print("dictionary", *(f"{n}={sorted(dictionaries[n])}" for n in ["local_team", "remote_ip", "protocol", "bytes_sent"]))
"#;

#[test]
fn pyarrow_and_duckdb_read_every_file_with_the_schema_and_counts() {
    let dir = temp("readers");
    let input = records_file("parquet-readers", 20_000);
    let output = load(
        &input,
        &dir.join("spool"),
        &[
            "--parquet",
            dir.join("flows").to_str().unwrap(),
            "--batch-rows",
            "3000",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = python(CHECK, &[dir.join("flows").to_str().unwrap()]);
    let mut lines = report.lines();
    let counts: Vec<u64> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        counts[0] >= 7,
        "batches of 3000 over an hour boundary make several files: {counts:?}"
    );
    assert_eq!(
        counts[1..],
        [20_000, 20_000, 20_000, 20_000],
        "rows, distinct ids, DuckDB rows, DuckDB distinct ids"
    );
    let types: Vec<&str> = lines.by_ref().take(7).collect();
    let chunks = lines.next().unwrap();
    assert!(
        chunks.starts_with("chunks ") && chunks.ends_with(" wrong []"),
        "every column chunk zstd, with pyarrow's own min/max: {chunks}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "dictionary local_team=[True] remote_ip=[True] protocol=[True] bytes_sent=[False]"
    );
    assert_eq!(
        types,
        [
            "observed_at timestamp[ms, tz=UTC]",
            "remote_ip string",
            "local_team dictionary<values=string, indices=int32, ordered=0>",
            "bytes_sent uint64",
            "local_port uint16",
            "ended bool",
            "date string",
        ]
    );
    assert!(files(&dir.join("flows"), ".tmp").is_empty());
}

/// `sql/parquet/views.sql` declares the files' columns (inference would take
/// them from one file, and files of earlier versions lack the newer ones):
/// the list is the schema crate's, with the types ClickHouse reads the
/// Parquet sink's columns as.
#[test]
fn the_parquet_views_declare_the_schema_crates_columns() {
    let views = std::fs::read_to_string(repo_root().join("sql/parquet/views.sql")).unwrap();
    let start = views.find("Parquet, '").unwrap() + "Parquet, '".len();
    let end = start + views[start..].find("'\n);").unwrap();
    let declared = views[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let expected = tollgate_schema::COLUMNS
        .iter()
        .map(|c| {
            let read_as = match c.clickhouse_type {
                "DateTime('UTC')" => "DateTime64(3, \\'UTC\\')",
                "LowCardinality(String)" | "IPv6" => "String",
                other => other,
            };
            format!("{} {read_as}", c.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(declared, expected);
}

#[test]
fn clickhouse_and_parquet_meter_identically_through_the_same_sql() {
    let Some(ch) = clickhouse::require("parquet") else {
        return;
    };
    let database = ch.fresh_database("both");
    tollgate_tests::tollgate::migrate(ch.url(), &database);
    let dir = temp("both");
    let input = records_file("parquet-both", 30_000);
    load_into_both(
        &input,
        &dir.join("spool"),
        ch.url(),
        &database,
        &dir.join("flows"),
        4000,
    );

    // The same object names over the files, in a scratch database.
    let files_db = ch.fresh_database("files");
    ch.query(&format!("CREATE DATABASE {files_db}")).unwrap();
    let views = std::fs::read_to_string(repo_root().join("sql/parquet/views.sql")).unwrap();
    let dir_param = dir.join("flows").display().to_string();
    ch.run_script(
        &views,
        &[("database", &files_db), ("param_dir", &dir_param)],
    )
    .unwrap();

    let metering = "SELECT * FROM metering_daily ORDER BY ALL FORMAT TSV";
    let from_clickhouse = ch.query_with(metering, &[("database", &database)]).unwrap();
    let from_files = ch.query_with(metering, &[("database", &files_db)]).unwrap();
    assert!(from_clickhouse.lines().count() >= 2, "{from_clickhouse}");
    assert_eq!(from_files, from_clickhouse);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let when = |unix: u64| {
        ch.query(&format!("SELECT toDateTime({unix}, 'UTC') FORMAT TSVRaw"))
            .unwrap()
            .trim()
            .replace(' ', "%20")
    };
    let (from, to) = (when(now - 7200), when(now + 60));
    for (file, params) in [
        (
            "top_talkers.sql",
            vec![
                ("param_from", from.as_str()),
                ("param_to", to.as_str()),
                ("param_limit", "10"),
            ],
        ),
        (
            "pod_connections.sql",
            vec![
                ("param_namespace", "shop"),
                ("param_pod", "web-7"),
                ("param_from", from.as_str()),
                ("param_to", to.as_str()),
            ],
        ),
        (
            "cross_zone_pairs.sql",
            vec![
                ("param_from", from.as_str()),
                ("param_to", to.as_str()),
                ("param_limit", "10"),
            ],
        ),
    ] {
        let sql = std::fs::read_to_string(repo_root().join("sql/forensics").join(file)).unwrap();
        let sql = format!("{} FORMAT TSV", sql.trim().trim_end_matches(';'));
        let run = |db: &str| {
            let mut settings = vec![("database", db)];
            settings.extend(params.iter().copied());
            ch.query_with(&sql, &settings).unwrap()
        };
        let (a, b) = (run(&database), run(&files_db));
        assert!(!a.trim().is_empty(), "{file} returned nothing");
        assert_eq!(b, a, "{file} differs between ClickHouse and Parquet");
    }
}

#[test]
fn sigkills_while_writing_leave_complete_files_and_every_record_once() {
    let dir = temp("sigkill");
    const N: u64 = 40_000;
    let input = records_file("parquet-sigkill", N);
    let flows = dir.join("flows");
    let spool = dir.join("spool");
    let start = || {
        Command::new(binary())
            .arg("load")
            .arg(&input)
            .arg("--spool")
            .arg(&spool)
            .args(["--parquet", flows.to_str().unwrap(), "--batch-rows", "500"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    for round in 1..=4u64 {
        let mut loader = start();
        let deadline = Instant::now() + Duration::from_secs(60);
        while files(&flows, ".parquet").len() < (round * 12) as usize
            && loader.try_wait().unwrap().is_none()
        {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        if loader.try_wait().unwrap().is_none() {
            loader.kill().unwrap();
            kills += 1;
        }
        loader.wait().unwrap();
    }
    assert!(kills >= 3, "the writer finished before it could be killed");
    assert!(start().wait().unwrap().success());
    let report = python(CHECK, &[flows.to_str().unwrap()]);
    let counts: Vec<u64> = report
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        counts[1..],
        [N, N, N, N],
        "rows, distinct ids (pyarrow, DuckDB): none lost, none twice"
    );
    assert!(files(&flows, ".tmp").is_empty(), "no temporary file left");
}

#[test]
fn a_full_disk_or_an_unwritable_directory_is_a_clear_error_and_no_corrupt_file() {
    let dir = temp("unwritable");
    let input = records_file("parquet-unwritable", 10);
    let output = load(
        &input,
        &dir.join("spool"),
        &["--parquet", "/proc/tollgate-flows"],
    );
    // An unwritable directory is an input mistake, found before anything is
    // spooled; a full disk (below) is a failure of the world.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--parquet /proc/tollgate-flows"),
        "{stderr}"
    );

    if !require_root("parquet", "mounting a small tmpfs") {
        return;
    }
    let disk = temp("fulldisk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mounted.success());
    let input = records_file("parquet-full", 20_000);
    let output = load(
        &input,
        &dir.join("spool-full"),
        &[
            "--parquet",
            disk.to_str().unwrap(),
            "--batch-rows",
            "1000",
            "--give-up-after",
            "2",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let written = files(&disk, ".parquet");
    let leftovers = files(&disk, ".tmp");
    let report = if written.is_empty() {
        String::new()
    } else {
        python(CHECK, &[disk.to_str().unwrap()])
    };
    let _ = Command::new("umount").arg(&disk).status();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("stays in the spool"),
        "{stderr}"
    );
    assert!(
        leftovers.is_empty(),
        "a partial file was left: {leftovers:?}"
    );
    // Every file that exists is complete (the check opens each one).
    assert!(written.is_empty() || report.lines().count() > 1);
}
