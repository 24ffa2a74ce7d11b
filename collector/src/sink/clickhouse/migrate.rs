//! tollgate owns its ClickHouse schema: the numbered SQL files of
//! `sql/migrations`, compiled into the binary, applied in order by
//! `tollgate migrate`.
//!
//! Each migration is recorded in `<database>.schema_migrations` with a
//! checksum of its SQL, so re-running applies nothing. Before anything is
//! applied, the database is checked for drift: a recorded migration whose
//! SQL differs from this binary's, an object a recorded migration created
//! that is gone, a migration this binary does not know (a newer tollgate
//! migrated it), or a `flows` table whose columns differ from the schema
//! crate's [`COLUMNS`] (and migration 0010's `batch`). A drifted database
//! is refused with a message that says what differs; nothing is changed in
//! it.
//!
//! Retention is the one setting that converges: each run compares every
//! table's TTL with the requested one and alters the tables that differ.
//!
//! The SQL files are templates with a few placeholders (`$db`,
//! `$on_cluster`, `$local`, `${replicated}`, `$cluster` and the TTLs), so the
//! same files yield the three [`Topology`]s: one node; Replicated tables
//! created `ON CLUSTER`; or shards without replicas, whose schema this
//! module applies node by node. Statements preceded by a `-- cluster-only`
//! line exist only in the two cluster topologies.

use std::fmt::Write as _;

use clickhouse::Client;
use serde::Deserialize;
use tollgate_schema::COLUMNS;

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; applied in increasing order.
    pub version: u32,
    /// Its file name without `.sql`.
    pub name: &'static str,
    /// The SQL template.
    pub template: &'static str,
}

macro_rules! migrations {
    ($($version:literal => $name:literal),+ $(,)?) => {
        /// Every migration, in order.
        pub const MIGRATIONS: &[Migration] = &[$(
            Migration {
                version: $version,
                name: $name,
                template: include_str!(concat!("../../../../sql/migrations/", $name, ".sql")),
            },
        )+];
    };
}

migrations! {
    1 => "0001_flows",
    2 => "0002_rollups",
    3 => "0003_prices",
    4 => "0004_metering",
    5 => "0005_delivered_batches",
    6 => "0006_distributed_keys",
    7 => "0007_dated_prices",
    8 => "0008_public_in_region",
    9 => "0009_region_pairs",
    10 => "0010_batch_markers",
    11 => "0011_tiers_and_accounts",
    12 => "0012_internet_tiers_2026",
    13 => "0013_nat_gateways",
    14 => "0014_local_provider",
    15 => "0015_local_provider_id",
}

/// Checksums of earlier texts of migrations whose single-node SQL is what
/// it is today: only the keys of `-- cluster-only` Distributed tables
/// changed, and migration 0006 replaces those tables in a cluster database
/// that has them. A database recorded with one of these is not drift.
const EARLIER_CHECKSUMS: &[(u32, &str)] = &[(1, "086cbd4dbce5a53b"), (3, "4536f4debef2b127")];

/// How long each table keeps its rows, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw flow records (forensics).
    pub raw_days: u32,
    /// 1-minute rollup.
    pub minute_days: u32,
    /// 1-hour rollup.
    pub hour_days: u32,
    /// 1-day rollup (metering, monthly exports).
    pub day_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw_days: 30,
            minute_days: 14,
            hour_days: 400,
            day_days: 1825,
        }
    }
}

impl Retention {
    /// Coarser tables are kept at least as long as finer ones: the 1-day
    /// rollup, which metering and exports read, longest of all. Returns
    /// what is out of order, naming the `migrate` flags.
    pub fn check(&self) -> Result<(), String> {
        for (coarse, coarse_days, fine, fine_days) in [
            ("day", self.day_days, "hour", self.hour_days),
            ("hour", self.hour_days, "minute", self.minute_days),
            ("day", self.day_days, "raw", self.raw_days),
        ] {
            if coarse_days < fine_days {
                return Err(format!(
                    "--{coarse}-ttl-days {coarse_days} is shorter than --{fine}-ttl-days {fine_days}: \
                     the {coarse} rollup must be kept at least as long"
                ));
            }
        }
        Ok(())
    }

    /// (table, time column, days) for every table with a TTL.
    fn tables(&self) -> [(&'static str, &'static str, u32); 5] {
        [
            ("flows", "observed_at", self.raw_days),
            ("delivered_batches", "delivered_at", self.raw_days),
            ("flows_1m", "period", self.minute_days),
            ("flows_1h", "period", self.hour_days),
            ("flows_1d", "period", self.day_days),
        ]
    }
}

/// How the ClickHouse nodes hold the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One node.
    Single,
    /// Every node of the named cluster holds ReplicatedMergeTree tables
    /// (`*_local`), created by one `ON CLUSTER` statement, with Distributed
    /// tables of the plain names over them. Needs ClickHouse Keeper.
    Replicated(String),
    /// Every node of the named cluster is a shard without replicas: plain
    /// MergeTree tables (`*_local`) and Distributed tables over them,
    /// created on each node in turn, for clusters without Keeper or
    /// without `ON CLUSTER`.
    Sharded(String),
}

impl Topology {
    /// The cluster's name, if there is one.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Topology::Single => None,
            Topology::Replicated(name) | Topology::Sharded(name) => Some(name),
        }
    }

    /// ` ON CLUSTER name` where DDL is distributed by ClickHouse.
    fn on_cluster(&self) -> String {
        match self {
            Topology::Replicated(name) => format!(" ON CLUSTER {name}"),
            Topology::Single | Topology::Sharded(_) => String::new(),
        }
    }

    fn replicated(&self) -> &'static str {
        match self {
            Topology::Replicated(_) => "Replicated",
            Topology::Single | Topology::Sharded(_) => "",
        }
    }
}

/// Where and how the schema is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Database name.
    pub database: String,
    /// How the nodes hold the tables.
    pub topology: Topology,
    /// Retention of each table.
    pub retention: Retention,
}

/// A name that cannot be used as a database or cluster name.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {name:?} must be 1-64 characters of A-Z, a-z, 0-9 and _, not starting with a digit"
)]
pub struct BadName {
    /// `database` or `cluster`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

/// Check a database or cluster name (they are written into SQL unquoted).
pub fn check_name(what: &'static str, name: &str) -> Result<(), BadName> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(BadName {
            what,
            name: name.to_owned(),
        })
    }
}

/// One statement of a rendered migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL, comments removed.
    pub sql: String,
    /// The table or view it creates, if it is a `CREATE`.
    pub creates: Option<String>,
}

impl Statement {
    /// Whether it changes data rather than the schema: in the sharded
    /// topology it runs once (through a Distributed table), not on every
    /// node.
    pub fn is_data(&self) -> bool {
        self.sql.starts_with("INSERT")
    }
}

impl Layout {
    fn physical_suffix(&self) -> &'static str {
        if self.topology.cluster().is_some() {
            "_local"
        } else {
            ""
        }
    }

    /// The table that physically holds `table`'s rows on this node.
    pub fn physical(&self, table: &str) -> String {
        format!("{table}{}", self.physical_suffix())
    }

    /// What comes before the migrations: the database and the ledger of
    /// applied migrations (in the replicated topology one ledger for the
    /// whole cluster: its Keeper path names no shard).
    pub fn preamble(&self) -> [String; 2] {
        let db = &self.database;
        let on_cluster = self.topology.on_cluster();
        let engine = match self.topology {
            Topology::Replicated(_) => {
                "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', '{replica}')"
            }
            Topology::Single | Topology::Sharded(_) => "MergeTree",
        };
        [
            format!("CREATE DATABASE IF NOT EXISTS {db}{on_cluster}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on_cluster} \
                 (version UInt32, name String, checksum String, applied_at DateTime('UTC') DEFAULT now()) \
                 ENGINE = {engine} ORDER BY version"
            ),
        ]
    }

    /// The SQL of `migration` for this layout, one statement per element.
    pub fn render(&self, migration: &Migration) -> Vec<Statement> {
        let cluster = self.topology.cluster();
        let r = &self.retention;
        // Longest placeholders first, so `$cluster` does not eat `$on_cluster`.
        let substitutions: [(&str, String); 9] = [
            ("${replicated}", self.topology.replicated().to_owned()),
            ("$raw_ttl_days", r.raw_days.to_string()),
            ("$ttl_1m_days", r.minute_days.to_string()),
            ("$ttl_1h_days", r.hour_days.to_string()),
            ("$ttl_1d_days", r.day_days.to_string()),
            ("$on_cluster", self.topology.on_cluster()),
            ("$cluster", cluster.unwrap_or_default().to_owned()),
            ("$local", self.physical_suffix().to_owned()),
            ("$db", self.database.clone()),
        ];
        split_statements(migration.template)
            .into_iter()
            .filter(|(cluster_only, _)| !cluster_only || cluster.is_some())
            .map(|(_, sql)| {
                let sql = substitutions.iter().fold(sql, |sql, (placeholder, value)| {
                    sql.replace(placeholder, value)
                });
                let creates = created_object(&sql, &self.database);
                Statement { sql, creates }
            })
            .collect()
    }
}

/// Split a template into statements (each ends with `;` at the end of a
/// line), dropping comment lines and noting `-- cluster-only` markers.
fn split_statements(template: &str) -> Vec<(bool, String)> {
    let mut statements = Vec::new();
    let mut cluster_only = false;
    let mut current = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") {
            cluster_only |= trimmed == "-- cluster-only";
            continue;
        }
        if trimmed.is_empty() && current.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let sql = current.trim().trim_end_matches(';').trim_end().to_owned();
            statements.push((cluster_only, sql));
            current.clear();
            cluster_only = false;
        }
    }
    if !current.trim().is_empty() {
        statements.push((cluster_only, current.trim().to_owned()));
    }
    statements
}

fn created_object(sql: &str, database: &str) -> Option<String> {
    let rest = [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE VIEW IF NOT EXISTS ",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS ",
    ]
    .iter()
    .find_map(|prefix| sql.strip_prefix(prefix))?;
    let name = rest.strip_prefix(database)?.strip_prefix('.')?;
    Some(
        name.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()?
            .to_owned(),
    )
}

/// FNV-1a, 64 bits: a stable checksum of a migration's SQL (for detecting
/// edits, not for security).
pub fn checksum(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Why a migration run stopped. Nothing after the failing step was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// ClickHouse could not be reached, or refused the credentials.
    #[error(transparent)]
    Connection(#[from] super::ConnectionError),
    /// A statement failed.
    #[error("{step} failed")]
    Statement {
        /// Which migration and statement.
        step: String,
        /// What ClickHouse said.
        source: clickhouse::error::Error,
    },
    /// The `--shard` nodes are not the cluster's shards.
    #[error("{detail}")]
    Shards {
        /// What does not match.
        detail: String,
    },
    /// The database's schema is not what its recorded migrations made.
    #[error(
        "database {database} has drifted from tollgate's schema: {detail}. tollgate changes \
         nothing in a drifted database: restore what changed, or migrate into a new database \
         (--database)"
    )]
    Drift {
        /// The database.
        database: String,
        /// What differs.
        detail: String,
    },
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ColumnRow {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct TableRow {
    name: String,
    create_table_query: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Migrations applied by this run.
    pub applied: Vec<&'static str>,
    /// Migrations that were already applied.
    pub already_applied: usize,
    /// Tables whose retention this run changed.
    pub retention_changed: Vec<String>,
}

/// One ClickHouse node to migrate.
pub struct Node {
    /// A client for it.
    pub client: Client,
    /// How it was reached (for messages).
    pub connection: super::Connection,
}

/// What one node has before a run.
struct NodeState<'a> {
    node: &'a Node,
    applied: Vec<Applied>,
}

/// Bring `layout.database` up to date on `nodes`: the one node of a
/// single or replicated topology (ClickHouse distributes the DDL of the
/// latter), or every shard of a sharded one.
///
/// Sharded, each migration is applied statement by statement across the
/// nodes that lack it (every shard has a table before any Distributed
/// table over it is read) and its data statements run once, through the
/// Distributed tables. Each node's ledger says what its own schema has.
pub async fn migrate(nodes: &[Node], layout: &Layout) -> Result<Report, MigrateError> {
    let db = &layout.database;
    let [create_database, create_ledger] = layout.preamble();
    for node in nodes {
        super::check(&node.client, &node.connection).await?;
    }
    if let (Topology::Sharded(cluster), Some(first)) = (&layout.topology, nodes.first()) {
        check_shards(first, cluster, nodes.len()).await?;
    }
    let mut states = Vec::with_capacity(nodes.len());
    for node in nodes {
        let at = Step::new(nodes, node);
        execute(node, &at.step("creating the database"), &create_database).await?;
        execute(
            node,
            &at.step("creating the migrations table"),
            &create_ledger,
        )
        .await?;
        let applied: Vec<Applied> = fetch(
            node,
            &at.step("reading applied migrations"),
            &format!("SELECT version, name, checksum FROM {db}.schema_migrations ORDER BY version"),
        )
        .await?;
        let existing: Vec<TableRow> = fetch(
            node,
            &at.step("listing tables"),
            &format!("SELECT name, create_table_query FROM system.tables WHERE database = '{db}'"),
        )
        .await?;
        check_drift(layout, &applied, &existing).map_err(|e| at.locate(e))?;
        states.push(NodeState { node, applied });
    }

    let mut report = Report::default();
    for migration in MIGRATIONS {
        let lacking: Vec<&Node> = states
            .iter()
            .filter(|state| !state.applied.iter().any(|a| a.version == migration.version))
            .map(|state| state.node)
            .collect();
        if lacking.is_empty() {
            report.already_applied += 1;
            continue;
        }
        for (i, statement) in layout.render(migration).iter().enumerate() {
            let once = [lacking[0]];
            let targets: &[&Node] = if statement.is_data() { &once } else { &lacking };
            for node in targets {
                let step = Step::new(nodes, node).step(&format!(
                    "migration {} statement {}",
                    migration.name,
                    i + 1
                ));
                execute(node, &step, &statement.sql).await?;
            }
        }
        for node in &lacking {
            execute(
                node,
                &Step::new(nodes, node).step("recording the migration"),
                &format!(
                    "INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES ({}, '{}', '{}')",
                    migration.version,
                    migration.name,
                    checksum(migration.template)
                ),
            )
            .await?;
        }
        tracing::info!(migration = migration.name, nodes = lacking.len(), "applied");
        report.applied.push(migration.name);
    }

    // Every node's columns are checked before any node's retention changes.
    for node in nodes {
        check_columns(node, layout)
            .await
            .map_err(|e| Step::new(nodes, node).locate(e))?;
    }
    for node in nodes {
        let at = Step::new(nodes, node);
        for change in converge_retention(node, layout)
            .await
            .map_err(|e| at.locate(e))?
        {
            report.retention_changed.push(at.step(&change));
        }
    }
    Ok(report)
}

/// A sharded layout applied to fewer or more nodes than the cluster has
/// shards would leave a shard without tables: every batch sharded to it
/// would fail for ever.
async fn check_shards(first: &Node, cluster: &str, named: usize) -> Result<(), MigrateError> {
    let shards: Vec<u64> = fetch(
        first,
        "reading the cluster's shards",
        &format!(
            "SELECT toUInt64(uniqExact(shard_num)) FROM system.clusters WHERE cluster = '{cluster}'"
        ),
    )
    .await?;
    let shards = shards.first().copied().unwrap_or(0);
    let url = &first.connection.url;
    if shards == 0 {
        return Err(MigrateError::Shards {
            detail: format!("{url} knows no cluster {cluster} (its remote_servers)"),
        });
    }
    if shards != named as u64 {
        return Err(MigrateError::Shards {
            detail: format!(
                "cluster {cluster} has {shards} shards and --shard names {named} nodes: name each \
                 shard's node once"
            ),
        });
    }
    Ok(())
}

/// Names the node in messages when there is more than one.
struct Step<'a> {
    url: Option<&'a str>,
}

impl<'a> Step<'a> {
    fn new(nodes: &[Node], node: &'a Node) -> Self {
        Self {
            url: (nodes.len() > 1).then_some(node.connection.url.as_str()),
        }
    }

    fn step(&self, what: &str) -> String {
        match self.url {
            Some(url) => format!("{what} (on {url})"),
            None => what.to_owned(),
        }
    }

    fn locate(&self, error: MigrateError) -> MigrateError {
        match (error, self.url) {
            (MigrateError::Drift { database, detail }, Some(url)) => MigrateError::Drift {
                database,
                detail: format!("{detail} (on {url})"),
            },
            (MigrateError::Statement { step, source }, Some(url)) => MigrateError::Statement {
                step: format!("{step} (on {url})"),
                source,
            },
            (error, _) => error,
        }
    }
}

fn check_drift(
    layout: &Layout,
    applied: &[Applied],
    existing: &[TableRow],
) -> Result<(), MigrateError> {
    let drift = |detail: String| MigrateError::Drift {
        database: layout.database.clone(),
        detail,
    };
    for record in applied {
        let Some(migration) = MIGRATIONS.iter().find(|m| m.version == record.version) else {
            return Err(drift(format!(
                "migration {} ({}) was applied by a newer tollgate than this one",
                record.version, record.name
            )));
        };
        let earlier = EARLIER_CHECKSUMS.contains(&(record.version, record.checksum.as_str()));
        if record.checksum != checksum(migration.template) && !earlier {
            return Err(drift(format!(
                "migration {} was applied from different SQL (checksum {}, this tollgate's is {})",
                migration.name,
                record.checksum,
                checksum(migration.template)
            )));
        }
        for statement in layout.render(migration) {
            if let Some(object) = statement.creates {
                if !existing.iter().any(|t| t.name == object) {
                    return Err(drift(format!(
                        "{object}, created by migration {}, is missing",
                        migration.name
                    )));
                }
            }
        }
    }
    Ok(())
}

async fn check_columns(node: &Node, layout: &Layout) -> Result<(), MigrateError> {
    let table = layout.physical("flows");
    let columns: Vec<ColumnRow> = fetch(
        node,
        "reading the flows columns",
        &format!(
            "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{table}' \
             ORDER BY position",
            layout.database
        ),
    )
    .await?;
    let mut found: Vec<(&str, &str)> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.kind.as_str()))
        .collect();
    // Migration 0010's column, filled by ClickHouse from the batch's token:
    // not part of the record.
    if found.last() == Some(&("batch", "UInt64")) {
        found.pop();
    }
    let expected: Vec<(&str, &str)> = COLUMNS
        .iter()
        .map(|c| (c.name, c.clickhouse_type))
        .collect();
    if found == expected {
        return Ok(());
    }
    let mut detail = format!(
        "{table} has {} columns where tollgate expects {}",
        found.len(),
        expected.len()
    );
    if let Some((i, (want, got))) = expected
        .iter()
        .zip(found.iter().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .find(|(_, (want, got))| Some(*want) != *got)
    {
        let _ = write!(detail, "; column {} should be {} {}", i + 1, want.0, want.1);
        if let Some(got) = got {
            let _ = write!(detail, " but is {} {}", got.0, got.1);
        }
    }
    Err(MigrateError::Drift {
        database: layout.database.clone(),
        detail,
    })
}

async fn converge_retention(node: &Node, layout: &Layout) -> Result<Vec<String>, MigrateError> {
    let tables: Vec<TableRow> = fetch(
        node,
        "reading table definitions",
        &format!(
            "SELECT name, create_table_query FROM system.tables WHERE database = '{}'",
            layout.database
        ),
    )
    .await?;
    let on_cluster = layout.topology.on_cluster();
    let mut changed = Vec::new();
    for (table, column, days) in layout.retention.tables() {
        let physical = layout.physical(table);
        let wanted = format!("TTL {column} + toIntervalDay({days})");
        let current = tables.iter().find(|t| t.name == physical);
        if current.is_some_and(|t| !t.create_table_query.contains(&wanted)) {
            execute(
                node,
                &format!("changing the retention of {physical}"),
                &format!(
                    "ALTER TABLE {}.{physical}{on_cluster} MODIFY TTL {column} + INTERVAL {days} DAY",
                    layout.database
                ),
            )
            .await?;
            tracing::info!(table = %physical, days, "retention changed");
            changed.push(format!("{physical}: {days} days"));
        }
    }
    Ok(changed)
}

async fn execute(node: &Node, step: &str, sql: &str) -> Result<(), MigrateError> {
    node.client
        .query(sql)
        // Rows inserted through a Distributed table (the shipped prices) are
        // on their shards when the statement returns, not in a send queue.
        .with_setting("distributed_foreground_insert", "1")
        .execute()
        .await
        .map_err(|source| MigrateError::Statement {
            step: step.to_owned(),
            source,
        })
}

async fn fetch<T>(node: &Node, step: &str, sql: &str) -> Result<Vec<T>, MigrateError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    node.client
        .query(sql)
        .fetch_all::<T>()
        .await
        .map_err(|source| MigrateError::Statement {
            step: step.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(topology: Topology) -> Layout {
        Layout {
            database: "metering".to_owned(),
            topology,
            retention: Retention::default(),
        }
    }

    fn rendered(topology: Topology) -> Vec<Statement> {
        MIGRATIONS
            .iter()
            .flat_map(|m| layout(topology.clone()).render(m))
            .collect()
    }

    fn creating<'a>(statements: &'a [Statement], object: &str) -> &'a Statement {
        statements
            .iter()
            .find(|s| s.creates.as_deref() == Some(object))
            .unwrap_or_else(|| panic!("{object} is not created"))
    }

    #[test]
    fn every_placeholder_is_filled_in_both_layouts() {
        for layout in [
            layout(Topology::Single),
            layout(Topology::Replicated("prod".to_owned())),
            layout(Topology::Sharded("prod".to_owned())),
        ] {
            for migration in MIGRATIONS {
                for statement in layout.render(migration) {
                    assert!(
                        !statement.sql.contains('$'),
                        "{}: {}",
                        migration.name,
                        statement.sql
                    );
                    assert!(
                        !statement.sql.contains("--"),
                        "comment left in {}",
                        statement.sql
                    );
                }
            }
        }
    }

    #[test]
    fn single_node_layout_has_no_cluster_statements() {
        let statements = rendered(Topology::Single);
        assert!(statements
            .iter()
            .all(|s| !s.sql.contains("Distributed") && !s.sql.contains("ON CLUSTER")));
        let created: Vec<_> = statements
            .iter()
            .filter_map(|s| s.creates.clone())
            .collect();
        for object in [
            "flows",
            "flows_1m",
            "flows_1h",
            "flows_1d",
            "flows_1m_mv",
            "prices",
            "metering_daily",
            "cost_daily",
        ] {
            assert!(
                created.iter().any(|c| c == object),
                "{object} not created: {created:?}"
            );
        }
    }

    #[test]
    fn cluster_layout_replicates_and_distributes() {
        let statements = rendered(Topology::Replicated("prod".to_owned()));
        let flows_local = creating(&statements, "flows_local");
        assert!(
            flows_local.sql.contains("ON CLUSTER prod")
                && flows_local.sql.contains("ReplicatedMergeTree")
        );
        assert!(creating(&statements, "flows")
            .sql
            .contains("Distributed('prod', 'metering', 'flows_local', cityHash64(node))"));
        let mv = creating(&statements, "flows_1m_mv");
        assert!(
            mv.sql.contains("TO metering.flows_1m_local")
                && mv.sql.contains("FROM metering.flows_local")
        );
    }

    #[test]
    fn sharded_layout_distributes_plain_tables_without_on_cluster() {
        let statements = rendered(Topology::Sharded("shards".to_owned()));
        assert!(statements
            .iter()
            .all(|s| !s.sql.contains("ON CLUSTER") && !s.sql.contains("Replicated")));
        assert!(creating(&statements, "flows_local")
            .sql
            .contains("ENGINE = MergeTree"));
        // Every Distributed table that is written to has a sharding key
        // (ClickHouse refuses inserts into one without, with two shards).
        for (table, key) in [
            ("flows", "cityHash64(node)"),
            (
                "prices",
                "cityHash64(provider, region, category, direction)",
            ),
            ("clusters", "cityHash64(cluster)"),
            (
                "price_list",
                "cityHash64(provider, region, remote_region, category, direction)",
            ),
            ("cluster_accounts", "cityHash64(cluster)"),
            ("cluster_nat", "cityHash64(cluster)"),
        ] {
            let sql = &creating(&statements, table).sql;
            assert!(sql.contains(&format!("_local', {key})")), "{table}: {sql}");
        }
        let data: Vec<_> = statements.iter().filter(|s| s.is_data()).collect();
        assert_eq!(data.len(), 6, "only the shipped prices are data");
        assert!(data[0].sql.starts_with("INSERT INTO metering.prices "));
        assert!(data[1..]
            .iter()
            .all(|d| d.sql.starts_with("INSERT INTO metering.price_list ")));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("database", "tollgate_prod").is_ok());
        for bad in ["", "1abc", "a-b", "a;DROP", "a.b", &"x".repeat(65)] {
            assert!(check_name("database", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums_are_stable_and_sensitive() {
        assert_eq!(checksum("SELECT 1"), checksum("SELECT 1"));
        assert_ne!(checksum("SELECT 1"), checksum("SELECT 2"));
        assert_eq!(checksum(""), "cbf29ce484222325");
    }
}
