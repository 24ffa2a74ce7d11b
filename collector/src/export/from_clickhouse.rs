//! A month's usage and the prices from ClickHouse: the `metering_daily`
//! view (the same sums the dashboards and `cost_daily` show),
//! `price_versions` (every dated price and tier), `current_clusters`,
//! `cluster_accounts` and `cluster_nat`.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::Deserialize;

use super::accounts::Accounts;
use super::cluster_settings::Dated;
use super::month::unix_day;
use super::nat::NatGateways;
use super::prices::{parse_price, PriceRow, PriceTable};
use super::{Month, Usage};

/// A query failed, or a price in ClickHouse cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The query failed.
    #[error("{what} from ClickHouse: {source}")]
    Query {
        /// What was being read.
        what: &'static str,
        /// ClickHouse's error.
        source: clickhouse::error::Error,
    },
    /// A price row's value is not a decimal.
    #[error("price {0:?} in price_versions is not a decimal with at most 9 decimals")]
    Price(String),
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct UsageRow {
    /// Days since 1970-01-01, as ClickHouse's `Date`.
    day_number: u16,
    cluster: String,
    team: String,
    namespace: String,
    workload_kind: String,
    workload: String,
    region: String,
    remote_region: String,
    category: String,
    direction: String,
    bytes: u64,
    initiated_bytes: u64,
    record_provider: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct PriceText {
    provider: String,
    region: String,
    remote_region: String,
    category: String,
    direction: String,
    /// Days since 1970-01-01.
    valid_from_day: u16,
    tier_from_gib: u64,
    price: String,
    currency: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ClusterSetting {
    cluster: String,
    value: String,
    /// Days since 1970-01-01.
    valid_from_day: u16,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ClusterProvider {
    cluster: String,
    provider: String,
}

/// The month's usage in `database`.
pub async fn usage(
    client: &Client,
    database: &str,
    month: Month,
) -> Result<Vec<Usage>, FetchError> {
    let sql = format!(
        "SELECT toUInt16(day) AS day_number, cluster, team, namespace, workload_kind, workload, region, remote_region, \
         category, direction, sum(bytes) AS bytes, sum(initiated_bytes) AS initiated_bytes, \
         record_provider \
         FROM {database}.metering_daily \
         WHERE day >= toDate(?) AND day < toDate(?) \
         GROUP BY day, cluster, team, namespace, workload_kind, workload, region, remote_region, \
         category, direction, record_provider HAVING bytes > 0"
    );
    let rows = client
        .query(&sql)
        .bind(month.first_day().to_string())
        .bind(month.end_day().to_string())
        .fetch_all::<UsageRow>()
        .await
        .map_err(|source| FetchError::Query {
            what: "reading metering_daily",
            source,
        })?;
    Ok(rows
        .into_iter()
        .map(|r| Usage {
            day: unix_day(r.day_number.into()),
            remote_region: r.remote_region,
            cluster: r.cluster,
            team: r.team,
            namespace: r.namespace,
            workload_kind: r.workload_kind,
            workload: r.workload,
            region: r.region,
            category: r.category,
            direction: r.direction,
            bytes: r.bytes,
            initiated_bytes: r.initiated_bytes,
            provider: r.record_provider,
        })
        .collect())
}

/// Every dated price and each cluster's provider.
pub async fn prices(client: &Client, database: &str) -> Result<PriceTable, FetchError> {
    let prices = client
        .query(&format!(
            "SELECT provider, region, remote_region, category, direction, \
             toUInt16(valid_from) AS valid_from_day, tier_from_gib, toString(price_per_gib) AS price, \
             currency \
             FROM {database}.price_versions"
        ))
        .fetch_all::<PriceText>()
        .await
        .map_err(|source| FetchError::Query {
            what: "reading price_versions",
            source,
        })?;
    let providers = client
        .query(&format!(
            "SELECT cluster, provider FROM {database}.current_clusters"
        ))
        .fetch_all::<ClusterProvider>()
        .await
        .map_err(|source| FetchError::Query {
            what: "reading current_clusters",
            source,
        })?;
    let rows = prices
        .into_iter()
        .map(|p| {
            Ok(PriceRow {
                nanos_per_gib: parse_price(&p.price).ok_or(FetchError::Price(p.price))?,
                provider: p.provider,
                region: p.region,
                remote_region: p.remote_region,
                valid_from: unix_day(p.valid_from_day.into()),
                tier_from_gib: p.tier_from_gib,
                category: p.category,
                direction: p.direction,
                currency: p.currency,
            })
        })
        .collect::<Result<Vec<_>, FetchError>>()?;
    let providers: BTreeMap<String, String> = providers
        .into_iter()
        .map(|c| (c.cluster, c.provider))
        .collect();
    Ok(PriceTable::new(rows, providers, None))
}

/// Each cluster's dated accounts (`cluster_accounts`, the newest insert
/// per cluster and day).
pub async fn accounts(client: &Client, database: &str) -> Result<Accounts, FetchError> {
    let rows = settings(
        client,
        database,
        ("cluster_accounts", "account"),
        "reading cluster_accounts",
    )
    .await?;
    Ok(Accounts::new(rows))
}

/// Each cluster's dated NAT gateway declarations (`cluster_nat`, the newest
/// insert per cluster and day).
pub async fn nat_gateways(client: &Client, database: &str) -> Result<NatGateways, FetchError> {
    let rows = settings(
        client,
        database,
        ("cluster_nat", "nat"),
        "reading cluster_nat",
    )
    .await?;
    Ok(NatGateways::new(rows.into_iter().map(|row| Dated {
        value: row.value == "true",
        cluster: row.cluster,
        valid_from: row.valid_from,
    })))
}

/// A settings table's rows, its value column as text.
async fn settings(
    client: &Client,
    database: &str,
    (table, column): (&str, &str),
    what: &'static str,
) -> Result<Vec<Dated<String>>, FetchError> {
    let rows = client
        .query(&format!(
            "SELECT cluster, toString(argMax({column}, inserted_at)) AS value, \
             toUInt16(valid_from) AS valid_from_day FROM {database}.{table} \
             GROUP BY cluster, valid_from"
        ))
        .fetch_all::<ClusterSetting>()
        .await
        .map_err(|source| FetchError::Query { what, source })?;
    Ok(rows
        .into_iter()
        .map(|r| Dated {
            cluster: r.cluster,
            value: r.value,
            valid_from: unix_day(r.valid_from_day.into()),
        })
        .collect())
}
