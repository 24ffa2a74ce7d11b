//! A month's metered bytes per node instance, category, direction and
//! group (cluster, team, namespace, workload) and day, from the `flows`
//! table in ClickHouse or from the Parquet sink's files: the raw records,
//! since only they name the instance (`local_provider_id`).

use std::path::Path;

use chrono::NaiveDate;
use clickhouse::Client;
use serde::Deserialize;

use crate::export::from_parquet::{self, LabelSums, ReadError};
use crate::export::month::unix_day;
use crate::export::Month;

/// Bytes one group sent or received through one node on one day, in one
/// category.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metered {
    /// The UTC day.
    pub day: NaiveDate,
    /// The node's `spec.providerID` (empty: records from before it was
    /// recorded).
    pub provider_id: String,
    /// The node's name.
    pub node: String,
    /// Its zone.
    pub zone: String,
    /// Its region.
    pub region: String,
    /// tollgate's category (`cross_zone`, `internet`...).
    pub category: String,
    /// `out` or `in`.
    pub direction: &'static str,
    /// Cluster, team, namespace, workload kind and workload.
    pub group: [String; 5],
    /// Bytes.
    pub bytes: u64,
    /// Of those, the bytes of connections the local endpoint opened (what a
    /// NAT gateway processes).
    pub initiated_bytes: u64,
}

/// The month's metered bytes in ClickHouse's `database`.
pub async fn from_clickhouse(
    client: &Client,
    database: &str,
    month: Month,
) -> Result<Vec<Metered>, clickhouse::error::Error> {
    #[derive(Debug, Deserialize, clickhouse::Row)]
    struct Row {
        day_number: u16,
        provider_id: String,
        node: String,
        zone: String,
        region: String,
        category: String,
        cluster: String,
        team: String,
        namespace: String,
        workload_kind: String,
        workload: String,
        sent: u64,
        received: u64,
        sent_opened: u64,
        received_opened: u64,
    }
    let sql = format!(
        "SELECT toUInt16(toDate(observed_at)) AS day_number, local_provider_id AS provider_id, \
         node, local_zone AS zone, local_region AS region, category, cluster, local_team AS team, \
         local_namespace AS namespace, local_workload_kind AS workload_kind, \
         local_workload AS workload, sum(bytes_sent) AS sent, sum(bytes_received) AS received, \
         sumIf(bytes_sent, initiator = 'local') AS sent_opened, \
         sumIf(bytes_received, initiator = 'local') AS received_opened \
         FROM {database}.flows \
         WHERE observed_at >= toDateTime(?, 'UTC') AND observed_at < toDateTime(?, 'UTC') \
         GROUP BY ALL"
    );
    let rows = client
        .query(&sql)
        .bind(format!("{} 00:00:00", month.first_day()))
        .bind(format!("{} 00:00:00", month.end_day()))
        .fetch_all::<Row>()
        .await?;
    let mut metered = Vec::with_capacity(rows.len() * 2);
    for r in rows {
        for (direction, bytes, initiated_bytes) in [
            ("out", r.sent, r.sent_opened),
            ("in", r.received, r.received_opened),
        ] {
            if bytes == 0 {
                continue;
            }
            metered.push(Metered {
                day: unix_day(r.day_number.into()),
                provider_id: r.provider_id.clone(),
                node: r.node.clone(),
                zone: r.zone.clone(),
                region: r.region.clone(),
                category: r.category.clone(),
                direction,
                group: [
                    r.cluster.clone(),
                    r.team.clone(),
                    r.namespace.clone(),
                    r.workload_kind.clone(),
                    r.workload.clone(),
                ],
                bytes,
                initiated_bytes,
            });
        }
    }
    Ok(metered)
}

/// The columns a [`Metered`] row is keyed by in the Parquet files.
const LABELS: [&str; 10] = [
    "local_provider_id",
    "node",
    "local_zone",
    "local_region",
    "category",
    "cluster",
    "local_team",
    "local_namespace",
    "local_workload_kind",
    "local_workload",
];

/// The month's metered bytes in the Parquet sink's files under `dir`, read
/// batch by batch.
pub fn from_parquet(dir: &Path, month: Month) -> Result<Vec<Metered>, ReadError> {
    let mut sums = LabelSums::new(LABELS);
    for file in from_parquet::month_files(dir, month)? {
        sums.add_file(&file, month)?;
    }
    Ok(sums
        .into_sums()
        .map(|(labels, direction, day, bytes, initiated_bytes)| {
            let [provider_id, node, zone, region, category, cluster, team, namespace, workload_kind, workload] =
                labels;
            Metered {
                day,
                provider_id,
                node,
                zone,
                region,
                category,
                direction,
                group: [cluster, team, namespace, workload_kind, workload],
                bytes,
                initiated_bytes,
            }
        })
        .collect())
}
