//! `tollgate conntrack dump|watch`: the reader's output as JSON lines;
//! `tollgate conntrack enable`: the kernel settings it depends on.

use std::io::{self, BufWriter, ErrorKind};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use signal_hook::consts::{SIGINT, SIGTERM};
use tollgate::conntrack::jsonl::JsonLines;
use tollgate::conntrack::sysctl::{self, Outcome, Setting, SysctlError};
use tollgate::conntrack::{EndedConnections, Mark, ReadMode, TableReader};
use tollgate::input;

use super::BadInput;

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// Print every entry of the table as one JSON object per line.
    ///
    /// By default the dump zeroes each entry's counters as it reads them
    /// (the way tollgate meters): the bytes printed are those since the
    /// previous zeroing read, and the next read starts from zero.
    Dump {
        /// Read without zeroing the counters (for debugging next to a
        /// running agent, which would otherwise lose those bytes).
        #[arg(long)]
        no_zero: bool,
    },
    /// Print connections as they end (conntrack DESTROY events), one JSON
    /// object per line with `"ended": true`.
    ///
    /// Each carries the bytes the connection moved since the last zeroing
    /// read. Runs until SIGINT or SIGTERM (every event already received is
    /// printed before exiting) or until --duration passes.
    Watch {
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
        duration: Option<Duration>,
    },
    /// Turn on the kernel settings exact metering needs (accounting,
    /// timestamps, events) and exit.
    ///
    /// The DaemonSet's init container runs it against the host's
    /// `/proc/sys` mounted at another path, so that no container needs to
    /// be privileged.
    Enable {
        /// The procfs `sys` directory to write under.
        #[arg(long, value_name = "DIR", default_value = "/proc/sys")]
        proc_sys: PathBuf,
    },
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= input::SECONDS_MAX as f64) {
        return Err(format!(
            "{text:?} must be a number of seconds above 0 and at most {}",
            input::SECONDS_MAX
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

pub fn run(command: ConntrackCommand) -> anyhow::Result<()> {
    match command {
        ConntrackCommand::Dump { no_zero } => {
            enable(&[sysctl::ACCOUNTING, sysctl::TIMESTAMPS])?;
            dump(if no_zero {
                ReadMode::Keep
            } else {
                ReadMode::Zero
            })
        }
        ConntrackCommand::Watch { duration } => {
            enable(&sysctl::ALL)?;
            watch(duration)
        }
        ConntrackCommand::Enable { proc_sys } => {
            if !proc_sys.is_dir() {
                return Err(BadInput(format!(
                    "--proc-sys {}: not a directory (give where the host's /proc/sys is mounted)",
                    proc_sys.display()
                ))
                .into());
            }
            for setting in sysctl::ALL {
                // Under a --proc-sys of the user's, a missing or unreadable
                // setting means the directory is not a procfs `sys`.
                let outcome = sysctl::ensure_in(setting, &proc_sys).map_err(|e| match e {
                    SysctlError::Missing { .. } | SysctlError::Unreadable { .. }
                        if proc_sys != std::path::Path::new("/proc/sys") =>
                    {
                        anyhow::Error::from(BadInput(format!(
                            "--proc-sys {}: {e} (is it where the host's /proc/sys is mounted?)",
                            proc_sys.display()
                        )))
                    }
                    e => e.into(),
                })?;
                let done = match outcome {
                    Outcome::Enabled => "enabled",
                    Outcome::AlreadySet => "already on",
                };
                println!("{}: {done}", setting.name);
            }
            Ok(())
        }
    }
}

fn enable(settings: &[Setting]) -> anyhow::Result<()> {
    for &setting in settings {
        if sysctl::ensure(setting)? == Outcome::Enabled {
            tracing::info!(sysctl = setting.name, "enabled");
        }
    }
    Ok(())
}

fn dump(mode: ReadMode) -> anyhow::Result<()> {
    let mut reader = TableReader::open()?;
    let mut out = JsonLines::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock()));
    let mut write_error = None;
    let summary = reader.dump(mode, |entry| match out.write(entry) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    })?;
    finish_output(write_error.map_or_else(|| out.flush(), Err))?;
    tracing::info!(
        entries = summary.entries,
        datagrams = summary.datagrams,
        zeroed = summary.zeroing.zeroed,
        ended_before_zeroing = summary.zeroing.vanished,
        "dump complete"
    );
    if summary.interrupted {
        tracing::warn!(
            entries = summary.entries,
            "the kernel flagged this dump as interrupted (NLM_F_DUMP_INTR): the table changed \
             during the walk; every entry printed is valid, but some may be missing or repeated"
        );
    }
    Ok(())
}

fn watch(duration: Option<Duration>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    let mut events = EndedConnections::subscribe()?;
    tracing::info!("listening for conntrack DESTROY events");
    let mut out = JsonLines::new(BufWriter::new(io::stdout().lock()));
    let deadline = duration.map(|d| Instant::now() + d);
    loop {
        let stopping =
            stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        let mut write_result = Ok(());
        let read = events.read(Mark::default(), |entry| {
            if write_result.is_ok() {
                write_result = out.write(entry);
            }
        })?;
        finish_output(write_result.and_then(|()| out.flush()))?;
        // When stopping, keep reading until the socket is empty, so that no
        // event the kernel already delivered is left unprinted.
        if stopping && read == 0 {
            break;
        }
    }
    let counts = events.counts();
    tracing::info!(
        ended = counts.ended,
        overruns = counts.overruns,
        repeated = counts.repeated,
        "watch complete"
    );
    Ok(())
}

/// A closed pipe (`tollgate conntrack dump | head`) ends the command quietly;
/// other write errors are reported.
fn finish_output(result: io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("cannot write to standard output"),
    }
}
