//! `tollgate reconcile`: a month of the cloud's bill against the month's
//! metering: coverage per billed resource and category, and the billed
//! network cost allocated to teams, namespaces or workloads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tollgate::export::write::Format;
use tollgate::export::{Grouping, Month};
use tollgate::reconcile::bill::Billed;
use tollgate::reconcile::ledger::{Bills, Metering};
use tollgate::reconcile::nat::{NatRoute, NatRoutes};
use tollgate::reconcile::report::{Report, Share, Status, DEFAULT_TOLERANCE_PERCENT};
use tollgate::reconcile::{metered, write};

use super::clickhouse_args::ClickHouseArgs;
use super::BadInput;

/// Reconciles one calendar month (UTC) of the provider's billing files
/// with tollgate's metering. Each network line item (cross-zone,
/// inter-region, internet, NAT gateway) is matched to the node whose
/// `spec.providerID` names its resource; coverage compares billed and
/// metered bytes per resource, category and direction, and allocation
/// splits each line item's cost over the groups whose metered bytes make
/// it up, to the cent, with the rest as `unallocated` and its reason.
/// Bills: AWS CUR (CSV, CSV.gz, CUR 2.0 Parquet), GCP billing export (JSON
/// lines, CSV), Azure cost details (CSV), recognised by their columns.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The month, YYYY-MM, in UTC.
    #[arg(long, value_parser = clap::value_parser!(Month))]
    month: Month,
    /// Billing files of the month (several clouds and accounts may mix;
    /// one currency).
    #[arg(long = "bill", value_name = "FILE", required = true, num_args = 1..)]
    bills: Vec<PathBuf>,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Read the Parquet sink's files under this directory instead of
    /// ClickHouse.
    #[arg(long, value_name = "DIR", conflicts_with = "url")]
    parquet: Option<PathBuf>,
    /// Coverage within this many percent of the billed bytes is `ok`;
    /// further off is `low` or `high`.
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_TOLERANCE_PERCENT,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    tolerance: u8,
    /// A NAT gateway and the zones whose nodes reach the internet through
    /// it (repeat per gateway): its processing cost is split over those
    /// nodes' connections only. A gateway not declared is split over all
    /// of its cloud's nodes. GATEWAY is the gateway's id or name as the
    /// bill's resource id ends, or that whole resource id.
    #[arg(long = "nat-gateway", value_name = "GATEWAY=ZONE[,ZONE...]")]
    nat_gateways: Vec<NatRoute>,
    /// Who the cost is allocated to.
    #[arg(long, value_enum, default_value_t = Grouping::Team)]
    by: Grouping,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Directory to write coverage.<format> and allocation.<format> into,
    /// each replaced only once complete; without it both go to standard
    /// output (CSV and JSON only).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    if args.format == Format::Parquet && args.out.is_none() {
        return Err(BadInput(
            "--format parquet: Parquet is not written to standard output: give a directory with --out"
                .into(),
        )
        .into());
    }
    let mut bills = Bills::default();
    for file in &args.bills {
        bills
            .add_file(file, args.month)
            .map_err(|e| BadInput(e.to_string()))?;
    }
    let (rows, source) = match &args.parquet {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(
                    BadInput(format!("--parquet {}: not a directory", dir.display())).into(),
                );
            }
            let rows =
                metered::from_parquet(dir, args.month).map_err(|e| BadInput(e.to_string()))?;
            (rows, format!("Parquet files under {}", dir.display()))
        }
        None => {
            let connection = args.clickhouse.connection()?.ok_or_else(|| {
                BadInput("give --clickhouse URL or --parquet DIR: where the metering is".to_owned())
            })?;
            let client = connection.client()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let rows = runtime
                .block_on(metered::from_clickhouse(
                    &client,
                    &connection.database,
                    args.month,
                ))
                .with_context(|| {
                    format!(
                        "cannot read flows from ClickHouse database {}",
                        connection.database
                    )
                })?;
            (rows, format!("ClickHouse database {}", connection.database))
        }
    };
    if rows.is_empty() {
        eprintln!(
            "tollgate: warning: no metering for {} in {source}: every billed cost is unallocated",
            args.month
        );
    }
    let routes = NatRoutes(args.nat_gateways);
    warn_of_routes(&bills, &routes);
    let metering = Metering::new(&rows, args.by, &bills.providers(), routes);
    let report = Report::new(&bills, &metering, args.tolerance);
    let currency = bills.currency.clone().unwrap_or_default();
    write::write(
        &report,
        (args.month, args.by, &currency),
        args.format,
        args.out.as_deref(),
    )
    .with_context(|| match &args.out {
        Some(dir) => format!("cannot write into {}", dir.display()),
        None => "cannot write to standard output".to_owned(),
    })?;
    eprintln!(
        "tollgate: {}",
        summary(&bills, &metering, &report, &currency, &source)
    );
    Ok(())
}

/// Warns of a declared gateway no line item names, or several, and of a
/// gateway declared twice (only the first declaration counts).
fn warn_of_routes(bills: &Bills, routes: &NatRoutes) {
    let gateways: Vec<(&str, &str)> = bills
        .units
        .iter()
        .filter(|(unit, _)| unit.billed == Billed::NatGateway)
        .map(|(unit, bill)| (unit.resource.as_str(), bill.resource.as_str()))
        .collect();
    for route in &routes.0 {
        let named: Vec<&str> = gateways
            .iter()
            .filter(|(key, _)| route.names(key))
            .map(|(_, as_billed)| *as_billed)
            .collect();
        match named.len() {
            0 => eprintln!(
                "tollgate: warning: --nat-gateway {}: no NAT gateway line item of the bills names it",
                route.gateway
            ),
            1 => {}
            n => eprintln!(
                "tollgate: warning: --nat-gateway {}: names {n} gateways ({}), which share its zones' bytes; give each its whole resource id",
                route.gateway,
                named.join(", ")
            ),
        }
    }
    for (key, as_billed) in gateways {
        let declared: Vec<&str> = routes
            .0
            .iter()
            .filter(|route| route.names(key))
            .map(|route| route.gateway.as_str())
            .collect();
        if declared.len() > 1 {
            eprintln!(
                "tollgate: warning: {as_billed} is declared by --nat-gateway {}: only the first one's zones count",
                declared.join(" and ")
            );
        }
    }
}

/// What the operator reads first: what was billed, how much of it went to
/// groups, the unallocated rest by reason, and the coverage flags.
fn summary(
    bills: &Bills,
    metering: &Metering,
    report: &Report,
    currency: &str,
    source: &str,
) -> String {
    let cents = |rows: &mut dyn Iterator<Item = i128>| rows.sum::<i128>();
    let billed = cents(&mut report.allocation.iter().map(|r| r.cost_cents));
    let allocated = cents(
        &mut report
            .allocation
            .iter()
            .filter(|r| matches!(r.share, Share::Group(_)))
            .map(|r| r.cost_cents),
    );
    let mut unallocated = BTreeMap::new();
    for row in &report.allocation {
        if let Share::Unallocated(reason) = row.share {
            *unallocated.entry(reason.as_str()).or_insert(0i128) += row.cost_cents;
        }
    }
    let mut flags = BTreeMap::new();
    for row in &report.coverage {
        if row.status != Status::Ok {
            *flags.entry(row.status.as_str()).or_insert(0) += 1;
        }
    }
    let money = |c: i128| {
        format!(
            "{}{}.{:02} {currency}",
            if c < 0 { "-" } else { "" },
            c.unsigned_abs() / 100,
            c.unsigned_abs() % 100
        )
    };
    let lines: u64 = bills.files.iter().map(|(_, _, s)| s.network_lines).sum();
    let mut text = format!(
        "reconciled against {source}: {lines} network line items in {} file(s), {} billed, {} allocated",
        bills.files.len(),
        money(billed),
        money(allocated)
    );
    for (reason, c) in unallocated {
        text.push_str(&format!(", {} unallocated ({reason})", money(c)));
    }
    for (status, n) in flags {
        text.push_str(&format!("; {n} coverage line(s) {status}"));
    }
    if metering.without_instance > 0 {
        text.push_str(&format!(
            "; {} billable bytes metered on records without a provider id (agents before local_provider_id) cannot be matched",
            metering.without_instance
        ));
    }
    text
}
