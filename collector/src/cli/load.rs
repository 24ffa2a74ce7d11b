//! `tollgate load`: flow records from JSON lines into ClickHouse, exactly
//! once, through the durable spool.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use std::sync::{Mutex, PoisonError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncSeekExt, BufReader};

use tollgate::input;
use tollgate::sink::batch::{Batch, Resume, TokenMaker};
use tollgate::sink::clickhouse::{self, ClickHouseSink};
use tollgate::sink::deliver::{self, DeliveryCounts, RetryPolicy};
use tollgate::sink::parquet::ParquetSink;
use tollgate::sink::spool::Spool;
use tollgate::sink::{self, Configured};
use tollgate_schema::compact::Rows;
use tollgate_schema::FlowRecord;

use super::clickhouse_args::ClickHouseArgs;
use super::BadInput;

/// `load` delivers each batch before it reads on, so its spool holds one
/// batch (or the batches of a run stopped by an outage) and is never full.
const LOAD_SPOOL_CAP: u64 = u64::MAX;

/// Loads flow records (one JSON object per line, the `flows` columns as
/// keys) into ClickHouse, Parquet files, or both. Each batch is written to the spool before it is
/// sent and removed once ClickHouse has it; a file input resumes where the
/// spool says it stopped, so interrupting and re-running the same command
/// loads every record exactly once.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct LoadArgs {
    /// JSON-lines file of flow records, or `-` for standard input (which
    /// cannot resume after an interruption).
    #[arg(value_name = "FILE")]
    input: PathBuf,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Also (or instead) write Parquet files under this directory.
    #[arg(long, value_name = "DIR")]
    parquet: Option<PathBuf>,
    /// Spool directory (one per input).
    #[arg(long, value_name = "DIR")]
    spool: PathBuf,
    /// Records per batch.
    #[arg(long, default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=input::BATCH_ROWS_MAX))]
    batch_rows: u64,
    /// Close a batch once its input lines reach this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch_mib: u64,
    /// Send a partial batch after this many seconds without a full one.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_seconds)]
    batch_age: f64,
    /// Stop (exit 1) when a batch could not be delivered for this many
    /// seconds; it stays in the spool for the next run. Default: retry
    /// without end.
    #[arg(long, value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=input::SECONDS_MAX))]
    give_up_after: Option<u64>,
    /// Name in batch tokens (default: the host name).
    #[arg(long, value_parser = |s: &str| input::check_token_name(s).map(|()| s.to_owned()))]
    origin: Option<String>,
}

/// A number of seconds above 0 and at most [`input::SECONDS_MAX`].
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= input::SECONDS_MAX as f64 => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0 and at most {}",
            input::SECONDS_MAX
        )),
    }
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    // Every flag and path, then every line of a file, is checked before
    // anything is created, spooled or sent.
    if args.clickhouse.url.is_none() && args.parquet.is_none() {
        return Err(BadInput("give --clickhouse URL, --parquet DIR, or both".to_owned()).into());
    }
    let from_file = args.input.as_os_str() != "-";
    if from_file {
        input::readable_file("input", &args.input)?;
    }
    input::writable_dir("--spool", &args.spool)?;
    if let Some(dir) = &args.parquet {
        input::writable_dir("--parquet", dir)?;
        input::separate_dirs(("--spool", &args.spool), ("--parquet", dir))?;
    }
    let connection = args.clickhouse.connection()?;
    let sink_names = sink::names(connection.is_some(), args.parquet.is_some());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if from_file {
        let resume_at = if args.spool.is_dir() {
            Spool::open(&args.spool, LOAD_SPOOL_CAP, &sink_names)?.position()
        } else {
            Resume::default()
        };
        runtime.block_on(check_lines(&args.input, resume_at))?;
    }
    let parquet = args.parquet.as_deref().map(ParquetSink::open).transpose()?;
    let spool = Spool::open(&args.spool, LOAD_SPOOL_CAP, &sink_names)?;
    // A wrong URL or password fails at once. But batches in the spool mean
    // an earlier run reached this ClickHouse: failing now is an outage, to be
    // waited out while the spool keeps them.
    if let Some(connection) = &connection {
        if spool.is_empty() {
            runtime.block_on(clickhouse::check(&connection.client()?, connection))?;
        } else {
            tracing::info!(batches = spool.len(), "replaying spooled batches");
        }
    }
    let destination = [
        connection.as_ref().map(|c| format!("{}.flows", c.database)),
        args.parquet.as_ref().map(|dir| dir.display().to_string()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    let sink = Configured {
        clickhouse: connection.as_ref().map(ClickHouseSink::new).transpose()?,
        parquet,
    };
    runtime.block_on(load(args, Mutex::new(spool), sink, destination))
}

async fn load(
    args: LoadArgs,
    spool: Mutex<Spool>,
    sink: Configured,
    destination: String,
) -> anyhow::Result<()> {
    let counts: Vec<DeliveryCounts> = sink
        .each()
        .iter()
        .map(|_| DeliveryCounts::default())
        .collect();
    let counts: Vec<&DeliveryCounts> = counts.iter().collect();
    let lock = || spool.lock().unwrap_or_else(PoisonError::into_inner);
    let policy = RetryPolicy {
        give_up_after: args.give_up_after.map(Duration::from_secs),
        ..RetryPolicy::default()
    };
    let replayed = deliver::drain_each(&spool, &sink, policy, &counts).await?;
    if replayed > 0 {
        tracing::info!(
            batches = replayed,
            "delivered batches spooled by an earlier run"
        );
    }

    let from_stdin = args.input.as_os_str() == "-";
    if !from_stdin {
        claim_spool(&args.spool, &args.input)?;
    }
    let mut position = if from_stdin {
        Resume::default()
    } else {
        lock().position()
    };
    let input: Box<dyn AsyncRead + Unpin> = if from_stdin {
        Box::new(tokio::io::stdin())
    } else {
        let mut file = tokio::fs::File::open(&args.input)
            .await
            .map_err(|e| input::unreadable("input", &args.input, &e))?;
        file.seek(std::io::SeekFrom::Start(position.offset)).await?;
        Box::new(file)
    };
    if position.offset > 0 {
        tracing::info!(
            line = position.line + 1,
            "resuming where the spool says the last run stopped"
        );
    }
    let origin = match args.origin {
        Some(origin) => origin,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "tollgate".into()),
    };
    let tokens = TokenMaker::new(&origin).context("cannot make batch tokens")?;
    let name = args.input.display().to_string();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut pending = Rows::default();
    let mut pending_bytes = 0u64;
    let age = Duration::from_secs_f64(args.batch_age);
    // A partial batch is sent `age` after its first record arrived.
    let mut deadline = tokio::time::Instant::now();
    let mut loaded = 0u64;
    loop {
        let read = tokio::select! {
            read = read_line(&mut reader, &mut line) => Some(read.with_context(|| format!("cannot read {name}"))?),
            () = tokio::time::sleep_until(deadline), if !pending.is_empty() => None,
        };
        let at_end = read == Some(Line::End);
        let mut refused = None;
        if matches!(read, Some(Line::Complete | Line::TooLong)) {
            let line_start = position;
            // A read cancelled by the timer leaves its bytes in `line`; the
            // completed read returns only the rest, so count the whole line.
            position.offset += line.len() as u64;
            position.line += 1;
            match parse_record(&line, read == Some(Line::TooLong)) {
                Ok(Some(record)) => {
                    if pending.is_empty() {
                        deadline = tokio::time::Instant::now() + age;
                    }
                    pending.push(&record.view());
                    pending_bytes += line.len() as u64;
                }
                Ok(None) => {}
                Err(what) => {
                    // What came before the bad line is loaded, so that a rerun
                    // from the same spool starts exactly at it.
                    refused = Some((position.line, what));
                    position = line_start;
                }
            }
            line.clear();
        }
        let full = pending.len() as u64 >= args.batch_rows || pending_bytes >= args.batch_mib << 20;
        if !pending.is_empty() && (full || at_end || read.is_none() || refused.is_some()) {
            loaded += pending.len() as u64;
            let seq = lock().next_seq();
            let batch = Batch {
                seq,
                token: tokens.token(seq),
                resume_at: position,
                rows: std::mem::take(&mut pending),
            };
            pending_bytes = 0;
            lock().push(&batch)?;
            deliver::drain_each(&spool, &sink, policy, &counts).await?;
        }
        if let Some((number, what)) = refused {
            let rerun = if from_stdin {
                format!(
                    "rerunning from standard input would load them again: feed it only the lines from {number} on"
                )
            } else {
                format!(
                    "fix it and rerun the same command with the same --spool: it resumes at line {number}"
                )
            };
            return Err(BadInput(format!(
                "{name}:{number}: {what}\ntollgate: the {loaded} records before line {number} are loaded into {destination}; {rerun}"
            ))
            .into());
        }
        if at_end {
            break;
        }
    }
    println!("loaded {loaded} records from {name} into {destination}");
    Ok(())
}

/// Reads `path` from `resume_at` and checks every line, so that a file
/// with a mistake loads nothing (standard input is checked as it streams).
async fn check_lines(path: &std::path::Path, resume_at: Resume) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| input::unreadable("input", path, &e))?;
    file.seek(std::io::SeekFrom::Start(resume_at.offset))
        .await?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut number = resume_at.line;
    loop {
        let read = read_line(&mut reader, &mut line)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == Line::End {
            return Ok(());
        }
        number += 1;
        if let Err(what) = parse_record(&line, read == Line::TooLong) {
            return Err(BadInput(format!(
                "{}:{number}: {what}\ntollgate: nothing was loaded: fix the line and run the command again",
                path.display()
            ))
            .into());
        }
        line.clear();
    }
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// A line, ended by a newline or by the end of the input.
    Complete,
    /// A line longer than [`input::LINE_MAX_BYTES`]: its first bytes are
    /// in the buffer, the rest was skipped.
    TooLong,
    /// The end of the input.
    End,
}

/// Appends the next line to `line`, keeping at most
/// [`input::LINE_MAX_BYTES`] of it in memory. Cancel-safe like
/// `read_until`: bytes taken from the reader are already in `line`.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    let mut too_long = line.len() > input::LINE_MAX_BYTES;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(match (line.is_empty(), too_long) {
                (true, _) => Line::End,
                (false, true) => Line::TooLong,
                (false, false) => Line::Complete,
            });
        }
        let (taken, ended) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        let room = (input::LINE_MAX_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&buffer[..taken.min(room)]);
        too_long |= taken > room;
        reader.consume(taken);
        if ended {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// One line of JSON: a checked record, nothing for a blank line, or what is
/// wrong with it.
fn parse_record(line: &[u8], too_long: bool) -> Result<Option<FlowRecord>, String> {
    if too_long {
        return Err(format!(
            "the line is longer than {} bytes, the most a record takes",
            input::LINE_MAX_BYTES
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not UTF-8 text (byte {} of the line)", e.valid_up_to() + 1))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    if text.starts_with('\u{feff}') {
        return Err(
            "starts with a byte order mark (U+FEFF): save the file as UTF-8 without it".into(),
        );
    }
    let record: FlowRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    input::check_record(&record, now)?;
    Ok(Some(record))
}

/// A spool remembers how far one file was read: refuse to resume another
/// file from that position.
fn claim_spool(spool: &std::path::Path, input: &std::path::Path) -> anyhow::Result<()> {
    let owner = spool.join("input");
    let input =
        std::fs::canonicalize(input).with_context(|| format!("cannot open {}", input.display()))?;
    match std::fs::read_to_string(&owner) {
        Ok(recorded) if recorded.trim_end() == input.to_string_lossy() => Ok(()),
        Ok(recorded) => Err(BadInput(format!(
            "spool {} belongs to input {}, not {}: use one spool directory per input",
            spool.display(),
            recorded.trim_end(),
            input.display()
        ))
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&owner, format!("{}\n", input.display()))
                .with_context(|| format!("cannot write {}", owner.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", owner.display())),
    }
}
