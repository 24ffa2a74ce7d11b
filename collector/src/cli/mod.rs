//! Command-line arguments and the commands they run.

mod agent;
mod classify;
mod clickhouse_args;
mod conntrack;
mod export;
mod hold;
mod load;
mod migrate;
mod reconcile;

use clap::{Parser, Subcommand};

/// tollgate meters network transfer cost per workload from the kernel's
/// conntrack table.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
pub struct Args {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). The
    /// TOLLGATE_LOG environment variable (tracing filter syntax) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log lines as JSON objects instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Meter this node's traffic into ClickHouse and/or Parquet until
    /// SIGTERM.
    Agent(agent::AgentArgs),
    /// Keep the agent's netlink sockets open across its kills (beside the
    /// agent, in its pod).
    Hold(hold::HoldArgs),
    /// Read the kernel's connection-tracking table of this network namespace.
    #[command(subcommand)]
    Conntrack(conntrack::ConntrackCommand),
    /// Create or update tollgate's tables and views in ClickHouse.
    Migrate(migrate::MigrateArgs),
    /// Load flow records from JSON lines into ClickHouse, exactly once.
    Load(load::LoadArgs),
    /// Explain addresses: who they are and the category of a transfer.
    Classify(classify::ClassifyArgs),
    /// Write a month's metering, priced per team, namespace or workload.
    Export(export::ExportArgs),
    /// Reconcile a month's cloud bill with the metering: coverage per
    /// billed resource, and its network cost allocated to teams.
    Reconcile(reconcile::ReconcileArgs),
}

/// Input that cannot be used as given: reported with the file, line or
/// field it concerns, exit code 2 (the library's input checks make the same
/// error).
pub use tollgate::input::InputError as BadInput;

/// Log to stderr; stdout is reserved for data. The agent and the holder,
/// daemons, log at info level by default, the other commands only warnings.
pub fn init_logging(args: &Args) {
    let quiet = if matches!(args.command, Command::Agent(_) | Command::Hold(_)) {
        "info"
    } else {
        "warn"
    };
    let default = match args.verbose {
        0 => quiet,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: a log file or a collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Run the parsed command.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Agent(args) => agent::run(args),
        Command::Hold(args) => hold::run(args),
        Command::Conntrack(command) => conntrack::run(command),
        Command::Migrate(args) => migrate::run(args),
        Command::Load(args) => load::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Export(args) => export::run(args),
        Command::Reconcile(args) => reconcile::run(args),
    }
}
