//! `tollgate export`: a month's metering, priced, per team, namespace or
//! workload, from ClickHouse or from the Parquet sink's files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tollgate::export::accounts::{self, Accounts};
use tollgate::export::nat::{self, NatGateways};
use tollgate::export::prices::{self, PriceTable};
use tollgate::export::write::{self, Format, Report};
use tollgate::export::{
    self as metering, fixed_point, from_clickhouse, from_parquet, Grouping, Month, Usage,
};
use tollgate::input;

use super::clickhouse_args::ClickHouseArgs;
use super::BadInput;

/// Writes one calendar month (UTC) of metering as a report: bytes, GiB and
/// cost per cluster, team (and namespace or workload), category and
/// direction. Reads ClickHouse (`--clickhouse`, priced by its prices
/// table) or a directory of the Parquet sink's files (`--parquet`, priced
/// by `--prices` or the shipped prices). Each record is priced by its
/// node's provider; records that name none (written before tollgate
/// recorded it, or on nodes without a known provider) by the cluster's
/// (`clusters` in ClickHouse, `--provider` for files).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The month, YYYY-MM, in UTC; the current month gives its figures so
    /// far, a future one is refused.
    #[arg(long, value_parser = clap::value_parser!(Month))]
    month: Month,
    /// What one line stands for.
    #[arg(long, value_enum, default_value_t = Grouping::Team)]
    by: Grouping,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Output file, replaced only once complete (`-`: standard output, CSV
    /// and JSON only).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Only this cluster.
    #[arg(long, value_name = "NAME", value_parser = |s: &str| input::check_name("--cluster", s, true).map(|()| s.to_owned()))]
    cluster: Option<String>,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Read the Parquet sink's files under this directory instead of
    /// ClickHouse.
    #[arg(long, value_name = "DIR", conflicts_with = "url")]
    parquet: Option<PathBuf>,
    /// With --parquet: the cloud provider whose prices apply to records
    /// that name none (aws, gcp, azure, or a provider named in --prices);
    /// without it such records are reported unpriced.
    #[arg(long, value_name = "NAME", requires = "parquet")]
    provider: Option<String>,
    /// With --parquet: a prices CSV file (provider,region,remote_region,
    /// category,direction,valid_from,price_per_gib,currency; the undated
    /// provider,region,category,direction,price_per_gib,currency is read as
    /// every day) instead of the shipped prices.
    #[arg(long, value_name = "FILE", requires = "parquet")]
    prices: Option<PathBuf>,
    /// With --parquet: a CSV file of the clusters that share a cloud
    /// account, whose tiers and free allowance they share
    /// (cluster,account,valid_from); a cluster not named is an account of
    /// its own. ClickHouse keeps them in its cluster_accounts table.
    #[arg(long, value_name = "FILE", requires = "parquet")]
    accounts: Option<PathBuf>,
    /// With --parquet: a CSV file of the clusters that reach the internet
    /// through a NAT gateway (cluster,nat,valid_from; nat true or false),
    /// whose processing is charged as category nat_gateway. ClickHouse
    /// keeps them in its cluster_nat table.
    #[arg(long, value_name = "FILE", requires = "parquet")]
    nat: Option<PathBuf>,
}

/// Progress is reported once an export has run this long, then as often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let this_month = i64::try_from(now.as_secs())
        .ok()
        .and_then(Month::of_unix)
        .context("the clock is out of range")?;
    if args.month > this_month {
        return Err(BadInput(format!(
            "--month {} is in the future (this month is {this_month}, UTC)",
            args.month
        ))
        .into());
    }
    if args.format == Format::Parquet && args.out.as_os_str() == "-" {
        return Err(BadInput(
            "--format parquet --out -: Parquet is not written to standard output: give a file"
                .into(),
        )
        .into());
    }
    input::writable_output("--out", &args.out)?;
    if let Some(dir) = &args.parquet {
        if !dir.is_dir() {
            return Err(BadInput(format!("--parquet {}: not a directory", dir.display())).into());
        }
    }
    if args.month == this_month {
        eprintln!(
            "tollgate: {} is not over: these are its figures so far",
            args.month
        );
    }
    let (usage, prices, accounts, nat, source) = match &args.parquet {
        Some(dir) => read_parquet(&args, dir)?,
        None => read_clickhouse(&args)?,
    };
    let usage = nat.with_gateways(usage);
    let export = metering::price(usage, args.by, &prices, &accounts, args.cluster.as_deref())
        .map_err(|e| BadInput(e.to_string()))?;
    if export.lines.is_empty() {
        anyhow::bail!(
            "no metering data for {} in {source}: nothing written",
            args.month
        );
    }
    for (why, bytes) in &export.unpriced {
        eprintln!(
            "tollgate: warning: {bytes} bytes have no price ({why}); their lines have no cost"
        );
    }
    let report = Report {
        month: args.month,
        grouping: args.by,
        lines: &export.lines,
    };
    write::write(&report, args.format, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("tollgate: {}", summary(&report, &source));
    Ok(())
}

/// What was written, for the operator: lines, bytes and cost per currency.
fn summary(report: &Report<'_>, source: &str) -> String {
    let bytes: u64 = report.lines.iter().map(|l| l.bytes).sum();
    let mut costs = std::collections::BTreeMap::<&str, u128>::new();
    for (cents, currency) in report.lines.iter().filter_map(|l| l.cost.as_ref()) {
        *costs.entry(currency).or_default() += cents;
    }
    let costs: Vec<String> = costs
        .into_iter()
        .map(|(currency, cents)| format!("{} {currency}", fixed_point(cents, 2)))
        .collect();
    format!(
        "{} by {} from {source}: {} lines, {bytes} bytes, {}",
        report.month,
        report.grouping.as_str(),
        report.lines.len(),
        if costs.is_empty() {
            "no cost".to_owned()
        } else {
            costs.join(" + ")
        }
    )
}

type Source = (Vec<Usage>, PriceTable, Accounts, NatGateways, String);

fn read_clickhouse(args: &ExportArgs) -> anyhow::Result<Source> {
    let connection = args.clickhouse.connection()?.ok_or_else(|| {
        BadInput("give --clickhouse URL or --parquet DIR: where the metering is".to_owned())
    })?;
    let client = connection.client()?;
    let database = &connection.database;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let source = format!("ClickHouse database {database}");
    let (usage, prices, accounts, nat) = runtime.block_on(async {
        let read = async {
            // Every cluster: those sharing an account share its tiers.
            let usage = from_clickhouse::usage(&client, database, args.month).await?;
            let prices = from_clickhouse::prices(&client, database).await?;
            let accounts = from_clickhouse::accounts(&client, database).await?;
            let nat = from_clickhouse::nat_gateways(&client, database).await?;
            Ok::<_, from_clickhouse::FetchError>((usage, prices, accounts, nat))
        };
        tokio::pin!(read);
        let started = Instant::now();
        loop {
            tokio::select! {
                result = &mut read => break result,
                () = tokio::time::sleep(PROGRESS_EVERY) => eprintln!(
                    "tollgate: still reading {source} ({} s)",
                    started.elapsed().as_secs()
                ),
            }
        }
    })?;
    Ok((usage, prices, accounts, nat, source))
}

fn read_parquet(args: &ExportArgs, dir: &std::path::Path) -> anyhow::Result<Source> {
    let rows = match &args.prices {
        Some(path) => prices::read_csv(path)?,
        None => prices::parse_csv("shipped prices", prices::DEFAULTS_CSV)
            .map_err(|e| BadInput(e.to_string()))?,
    };
    if let Some(provider) = &args.provider {
        if !rows.iter().any(|row| &row.provider == provider) {
            return Err(BadInput(format!("--provider {provider:?} has no prices")).into());
        }
    }
    let prices = PriceTable::new(rows, Default::default(), args.provider.clone());
    let accounts = match &args.accounts {
        Some(path) => Accounts::new(accounts::read_csv(path)?),
        None => Accounts::default(),
    };
    let nat = match &args.nat {
        Some(path) => NatGateways::new(nat::read_csv(path)?),
        None => NatGateways::default(),
    };
    // The files are this command's input: one that cannot be read is named.
    let files = from_parquet::month_files(dir, args.month).map_err(|e| BadInput(e.to_string()))?;
    let mut sums = from_parquet::UsageSums::default();
    let started = Instant::now();
    let mut reported = started;
    for (done, file) in files.iter().enumerate() {
        sums.add_file(file, args.month)
            .map_err(|e| BadInput(e.to_string()))?;
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            eprintln!(
                "tollgate: read {} of {} files ({} records, {} s)",
                done + 1,
                files.len(),
                sums.records(),
                started.elapsed().as_secs()
            );
        }
    }
    Ok((
        sums.into_usage().collect(),
        prices,
        accounts,
        nat,
        format!("Parquet files under {}", dir.display()),
    ))
}
