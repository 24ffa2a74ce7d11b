//! `tollgate load`: flow records from JSON lines into ClickHouse, exactly
//! once, through the durable spool.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use std::sync::{Mutex, PoisonError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncSeekExt, BufReader};

use tollgate::sink::batch::{Batch, Resume, TokenMaker};
use tollgate::sink::clickhouse::{self, ClickHouseSink};
use tollgate::sink::deliver::{self, DeliveryCounts, RetryPolicy};
use tollgate::sink::parquet::ParquetSink;
use tollgate::sink::spool::Spool;
use tollgate::sink::Configured;
use tollgate_schema::compact::Rows;
use tollgate_schema::FlowRecord;

use super::clickhouse_args::ClickHouseArgs;
use super::BadInput;

/// Loads flow records (one JSON object per line, the `flows` columns as
/// keys) into ClickHouse, Parquet files, or both. Each batch is written to the spool before it is
/// sent and removed once ClickHouse has it; a file input resumes where the
/// spool says it stopped, so interrupting and re-running the same command
/// loads every record exactly once.
#[derive(Debug, Args)]
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
    /// Most bytes the spool may hold; beyond it records are dropped and
    /// counted.
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    spool_cap_mib: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_rows: u64,
    /// Close a batch once its input lines reach this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch_mib: u64,
    /// Send a partial batch after this many seconds without a full one.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    batch_age: f64,
    /// Stop (exit 1) when a batch could not be delivered for this many
    /// seconds; it stays in the spool for the next run. Default: retry
    /// without end.
    #[arg(long, value_name = "SECS")]
    give_up_after: Option<u64>,
    /// Name in batch tokens (default: the host name).
    #[arg(long)]
    origin: Option<String>,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    if !(args.batch_age.is_finite() && args.batch_age > 0.0) {
        return Err(BadInput(format!(
            "--batch-age {} must be a positive number of seconds",
            args.batch_age
        ))
        .into());
    }
    let connection = args.clickhouse.connection()?;
    let parquet = args.parquet.as_deref().map(ParquetSink::open).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let spool = Spool::open(&args.spool, args.spool_cap_mib * 1024 * 1024)?;
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
    if connection.is_none() && parquet.is_none() {
        return Err(BadInput("give --clickhouse URL, --parquet DIR, or both".to_owned()).into());
    }
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
    let counts = DeliveryCounts::default();
    let lock = || spool.lock().unwrap_or_else(PoisonError::into_inner);
    let policy = RetryPolicy {
        give_up_after: args.give_up_after.map(Duration::from_secs),
        ..RetryPolicy::default()
    };
    let replayed = deliver::drain(&spool, &sink, policy, &counts).await?;
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
            .with_context(|| format!("cannot open {}", args.input.display()))?;
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
            read = reader.read_until(b'\n', &mut line) => Some(read.with_context(|| format!("cannot read {name}"))?),
            () = tokio::time::sleep_until(deadline), if !pending.is_empty() => None,
        };
        let at_end = read == Some(0);
        if read.is_some_and(|n| n > 0) {
            // A read cancelled by the timer leaves its bytes in `line`; the
            // completed read returns only the rest, so count the whole line.
            position.offset += line.len() as u64;
            position.line += 1;
            let text = std::str::from_utf8(&line)
                .map_err(|e| BadInput(format!("{name}:{}: not UTF-8: {e}", position.line)))?;
            if !text.trim().is_empty() {
                let record: FlowRecord = serde_json::from_str(text)
                    .map_err(|e| BadInput(format!("{name}:{}: {e}", position.line)))?;
                if pending.is_empty() {
                    deadline = tokio::time::Instant::now() + age;
                }
                pending.push(&record.view());
                pending_bytes += line.len() as u64;
            }
            line.clear();
        }
        let full = pending.len() as u64 >= args.batch_rows || pending_bytes >= args.batch_mib << 20;
        if !pending.is_empty() && (full || at_end || read.is_none()) {
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
            deliver::drain(&spool, &sink, policy, &counts).await?;
        }
        if at_end {
            break;
        }
    }
    let stats = lock().stats();
    if stats.dropped_records > 0 {
        anyhow::bail!(
            "{} records were dropped because the spool was full",
            stats.dropped_records
        );
    }
    println!("loaded {loaded} records from {name} into {destination}");
    Ok(())
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
