//! `tollgate migrate`: create or update the ClickHouse schema.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tollgate::sink::clickhouse::migrate::{self, Layout, Retention, MIGRATIONS};
use tollgate::sink::clickhouse::{Connection, PasswordSource};

/// Applies `sql/migrations` in order (each once; re-running applies
/// nothing), refuses a database whose schema drifted, and sets each table's
/// retention.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// ClickHouse HTTP(S) URL.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    clickhouse: String,
    /// Database for tollgate's tables (created if missing).
    #[arg(long, default_value = "tollgate", value_parser = |s: &str| parse_name("database", s))]
    database: String,
    /// Create ReplicatedMergeTree tables on every node of this ClickHouse
    /// cluster, with Distributed tables over them.
    #[arg(long, value_name = "NAME", value_parser = |s: &str| parse_name("cluster", s))]
    cluster: Option<String>,
    /// ClickHouse user.
    #[arg(long, default_value = "default")]
    user: String,
    /// Read the password from this file (e.g. a mounted Secret). Otherwise
    /// TOLLGATE_CLICKHOUSE_PASSWORD is used if set.
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// Days raw flow records are kept.
    #[arg(long, default_value_t = Retention::default().raw_days, value_parser = clap::value_parser!(u32).range(1..))]
    raw_ttl_days: u32,
    /// Days the 1-minute rollup is kept.
    #[arg(long, default_value_t = Retention::default().minute_days, value_parser = clap::value_parser!(u32).range(1..))]
    minute_ttl_days: u32,
    /// Days the 1-hour rollup is kept.
    #[arg(long, default_value_t = Retention::default().hour_days, value_parser = clap::value_parser!(u32).range(1..))]
    hour_ttl_days: u32,
    /// Days the 1-day rollup (metering) is kept.
    #[arg(long, default_value_t = Retention::default().day_days, value_parser = clap::value_parser!(u32).range(1..))]
    day_ttl_days: u32,
    /// Print the SQL that a fresh database would get, instead of applying it.
    #[arg(long)]
    print: bool,
}

fn parse_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn parse_name(what: &'static str, text: &str) -> Result<String, String> {
    migrate::check_name(what, text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let layout = Layout {
        database: args.database.clone(),
        cluster: args.cluster.clone(),
        retention: Retention {
            raw_days: args.raw_ttl_days,
            minute_days: args.minute_ttl_days,
            hour_days: args.hour_ttl_days,
            day_days: args.day_ttl_days,
        },
    };
    if args.print {
        for migration in MIGRATIONS {
            println!("-- {}", migration.name);
            for statement in layout.render(migration) {
                println!("{};\n", statement.sql);
            }
        }
        return Ok(());
    }
    let password = match (
        &args.password_file,
        std::env::var("TOLLGATE_CLICKHOUSE_PASSWORD"),
    ) {
        (Some(path), _) => PasswordSource::File(path.clone()),
        (None, Ok(value)) => PasswordSource::Environment(value),
        (None, Err(_)) => PasswordSource::None,
    };
    let connection = Connection {
        url: args.clickhouse,
        database: args.database,
        user: args.user,
        password: password
            .read()
            .with_context(|| format!("cannot read the ClickHouse password ({password:?})"))?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(migrate::migrate(&connection.client(), &connection, &layout))?;
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
