//! `tollgate migrate`: create or update the ClickHouse schema.

use anyhow::Context;
use clap::Args;
use tollgate::sink::clickhouse::migrate::{self, Layout, Node, Retention, Topology, MIGRATIONS};

use super::clickhouse_args::{parse_name, ClickHouseArgs};
use super::BadInput;

/// Longest retention a table accepts (a century): a larger number is a
/// typo, and would overflow ClickHouse's date arithmetic.
const TTL_DAYS_MAX: i64 = 36_500;

/// Applies `sql/migrations` in order (each once; re-running applies
/// nothing), refuses a database whose schema drifted, and sets each table's
/// retention.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct MigrateArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Create ReplicatedMergeTree tables on every node of this ClickHouse
    /// cluster (one `ON CLUSTER` statement each, through --clickhouse),
    /// with Distributed tables over them.
    #[arg(long, value_name = "NAME", value_parser = |s: &str| parse_name("cluster", s))]
    cluster: Option<String>,
    /// With --cluster: each node named here (its HTTP URL; repeat for every
    /// node) is a shard without replicas. Plain MergeTree tables are created
    /// on each node in turn, with Distributed tables over them: for clusters
    /// without Keeper or without ON CLUSTER. Replaces --clickhouse.
    #[arg(
        long = "shard",
        value_name = "URL",
        requires = "cluster",
        conflicts_with = "url"
    )]
    shards: Vec<String>,
    /// Days raw flow records are kept.
    #[arg(long, default_value_t = Retention::default().raw_days, value_parser = clap::value_parser!(u32).range(1..=TTL_DAYS_MAX))]
    raw_ttl_days: u32,
    /// Days the 1-minute rollup is kept.
    #[arg(long, default_value_t = Retention::default().minute_days, value_parser = clap::value_parser!(u32).range(1..=TTL_DAYS_MAX))]
    minute_ttl_days: u32,
    /// Days the 1-hour rollup is kept.
    #[arg(long, default_value_t = Retention::default().hour_days, value_parser = clap::value_parser!(u32).range(1..=TTL_DAYS_MAX))]
    hour_ttl_days: u32,
    /// Days the 1-day rollup (metering) is kept.
    #[arg(long, default_value_t = Retention::default().day_days, value_parser = clap::value_parser!(u32).range(1..=TTL_DAYS_MAX))]
    day_ttl_days: u32,
    /// Print the SQL that a fresh database would get, instead of applying it.
    #[arg(long)]
    print: bool,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let topology = match (&args.cluster, args.shards.is_empty()) {
        (None, _) => Topology::Single,
        (Some(name), true) => Topology::Replicated(name.clone()),
        (Some(name), false) => Topology::Sharded(name.clone()),
    };
    let layout = Layout {
        database: args.clickhouse.database.clone(),
        topology,
        retention: Retention {
            raw_days: args.raw_ttl_days,
            minute_days: args.minute_ttl_days,
            hour_days: args.hour_ttl_days,
            day_days: args.day_ttl_days,
        },
    };
    layout.retention.check().map_err(BadInput)?;
    if args.print {
        println!("-- the database and the migrations ledger");
        for statement in layout.preamble() {
            println!("{statement};\n");
        }
        for migration in MIGRATIONS {
            println!("-- {}", migration.name);
            for statement in layout.render(migration) {
                println!("{};\n", statement.sql);
            }
        }
        return Ok(());
    }
    let mut connections = Vec::new();
    if args.shards.is_empty() {
        connections.push(args.clickhouse.connection()?.ok_or_else(|| {
            BadInput(
                "--clickhouse URL (or --cluster with --shard URLs) is required, or --print"
                    .to_owned(),
            )
        })?);
    }
    for url in &args.shards {
        connections.push(args.clickhouse.connection_to(url, "--shard")?);
    }
    let nodes = connections
        .into_iter()
        .map(|connection| {
            Ok(Node {
                client: connection.client()?,
                connection,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(migrate::migrate(&nodes, &layout))
        .map_err(|error| match error {
            migrate::MigrateError::Shards { detail } => anyhow::Error::from(BadInput(detail)),
            error => error.into(),
        })?;
    if report.applied.is_empty() {
        println!(
            "{}: up to date ({} migrations already applied)",
            layout.database, report.already_applied
        );
    } else {
        println!("{}: applied {}", layout.database, report.applied.join(", "));
    }
    for change in &report.retention_changed {
        println!("{}: retention of {change}", layout.database);
    }
    Ok(())
}
