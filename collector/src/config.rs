//! The configuration file (YAML): cluster identity, where the inventory
//! comes from, and the network rules. `docs/configuration.md` documents
//! every field; `deploy/` and `docs/` carry examples.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::classify::{Classifier, NetworkConfig, RulesError};
use crate::inventory::{self, static_file, Inventory};
use crate::sink::clickhouse::migrate::check_name;
use crate::sink::clickhouse::{Connection, PasswordSource};

/// The configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cluster name written into every record.
    pub cluster: String,
    /// This node's name (the agent's); the `TOLLGATE_NODE` environment
    /// variable overrides it (a DaemonSet sets it from `spec.nodeName`).
    #[serde(default)]
    pub node: Option<String>,
    /// The label, on a pod or else its namespace, that names its team;
    /// without it a pod's team is its namespace.
    #[serde(default = "default_team_label")]
    pub team_label: String,
    /// Team that node-level traffic (host processes, NodePort forwarding)
    /// is billed to.
    #[serde(default = "default_node_team")]
    pub node_team: String,
    /// Where pods, nodes and Services come from.
    pub inventory: InventoryConfig,
    /// Classification rules.
    #[serde(default)]
    pub network: NetworkConfig,
    /// How `tollgate agent` reads and serves.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Where `tollgate agent` writes records.
    #[serde(default)]
    pub sinks: SinksConfig,
}

/// `agent:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Seconds between two reads of the table; reads happen on wall-clock
    /// multiples of it (every node reads at the same moments).
    pub interval_seconds: u32,
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Records per batch (one spool file, one INSERT).
    pub batch_rows: usize,
    /// On SIGTERM, how long to keep delivering before leaving the rest in
    /// the spool for the next start.
    pub shutdown_timeout_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 10,
            listen: SocketAddr::from(([0, 0, 0, 0], 9102)),
            batch_rows: 50_000,
            shutdown_timeout_seconds: 20,
        }
    }
}

/// `sinks:`: ClickHouse, Parquet or both, behind one spool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// ClickHouse.
    pub clickhouse: Option<ClickHouseConfig>,
    /// Parquet files.
    pub parquet: Option<ParquetConfig>,
    /// The durable queue in front of the sinks.
    #[serde(default)]
    pub spool: SpoolConfig,
}

/// `sinks.clickhouse:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// `http://host:8123` or `https://host:8443`; `TOLLGATE_CLICKHOUSE_URL`
    /// overrides.
    pub url: String,
    /// Database holding tollgate's tables.
    #[serde(default = "default_database")]
    pub database: String,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// File holding the password (a mounted Secret); otherwise
    /// `TOLLGATE_CLICKHOUSE_PASSWORD`, if set.
    pub password_file: Option<PathBuf>,
    /// PEM file of extra certificate authorities for `https`.
    pub ca_file: Option<PathBuf>,
}

fn default_database() -> String {
    "tollgate".into()
}

fn default_user() -> String {
    "default".into()
}

impl ClickHouseConfig {
    /// The connection, with the password read and the CA file checked;
    /// relative paths are taken from `base`. Errors name the field.
    pub fn connection(&self, base: &Path) -> Result<Connection, String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .ok_or_else(|| format!("url {:?} is not an http:// or https:// URL", self.url))?;
        if rest.trim_end_matches('/').is_empty() {
            return Err(format!("url {:?} names no host", self.url));
        }
        check_name("database", &self.database).map_err(|e| format!("database: {e}"))?;
        let password = match (
            &self.password_file,
            std::env::var("TOLLGATE_CLICKHOUSE_PASSWORD"),
        ) {
            (Some(path), _) => PasswordSource::File(base.join(path)),
            (None, Ok(value)) => PasswordSource::Environment(value),
            (None, Err(_)) => PasswordSource::None,
        };
        let connection = Connection {
            url: self.url.trim_end_matches('/').to_owned(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: password
                .read()
                .map_err(|e| format!("cannot read the password ({password:?}): {e}"))?,
            ca_file: self.ca_file.as_ref().map(|p| base.join(p)),
        };
        connection.client().map_err(|e| e.to_string())?;
        Ok(connection)
    }
}

/// `sinks.parquet:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Directory the Hive-style partitions are written under.
    pub dir: PathBuf,
}

/// `sinks.spool:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Where batches wait for the sinks (keep it on a persistent volume:
    /// it is what makes a restart lose nothing).
    pub dir: PathBuf,
    /// Most MiB the spool may hold; beyond it records are dropped and
    /// counted (`tollgate_records_dropped_total`).
    pub cap_mib: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/tollgate/spool"),
            cap_mib: 512,
        }
    }
}

fn default_team_label() -> String {
    "team".into()
}

fn default_node_team() -> String {
    "platform".into()
}

/// `inventory:`: exactly one of `file` and `kubernetes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// A static inventory file.
    pub file: Option<PathBuf>,
    /// The Kubernetes API.
    pub kubernetes: Option<KubernetesConfig>,
    /// How long a departed pod keeps its addresses for attribution.
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
}

fn default_grace() -> u64 {
    300
}

/// `inventory.kubernetes:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; without it, the in-cluster service account (or
    /// `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for the first complete listing.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_seconds: u64,
}

fn default_ready_timeout() -> u64 {
    60
}

/// A configuration that cannot be used; every variant is bad input.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable or invalid file; the message names the line.
    #[error("config {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The static inventory is unusable.
    #[error(transparent)]
    Inventory(#[from] static_file::StaticInventoryError),
    /// A range file is unusable.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The Kubernetes API cannot be used as configured.
    #[error(transparent)]
    Kube(#[from] inventory::kube::KubeError),
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<(Self, PathBuf), ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut config: Config = serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?;
        match (&config.inventory.file, &config.inventory.kubernetes) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(error(
                    "inventory: give exactly one of `file` and `kubernetes`".into(),
                ))
            }
            _ => {}
        }
        if let Ok(node) = std::env::var("TOLLGATE_NODE") {
            config.node = Some(node);
        }
        if let Ok(cluster) = std::env::var("TOLLGATE_CLUSTER") {
            config.cluster = cluster;
        }
        if let (Ok(url), Some(clickhouse)) = (
            std::env::var("TOLLGATE_CLICKHOUSE_URL"),
            config.sinks.clickhouse.as_mut(),
        ) {
            clickhouse.url = url;
        }
        let agent = &config.agent;
        if !(1..=3600).contains(&agent.interval_seconds) {
            return Err(error(format!(
                "agent.interval_seconds: {} is not between 1 and 3600",
                agent.interval_seconds
            )));
        }
        if agent.batch_rows == 0 {
            return Err(error("agent.batch_rows: must be at least 1".into()));
        }
        if config.sinks.spool.cap_mib == 0 {
            return Err(error("sinks.spool.cap_mib: must be at least 1".into()));
        }
        // Relative paths are relative to the configuration file.
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        Ok((config, base))
    }
}

/// The inventory and the compiled rules, ready to enrich.
pub struct World {
    /// The inventory, kept current in the background when it comes from
    /// the Kubernetes API.
    pub inventory: Arc<RwLock<Inventory>>,
    /// The rules.
    pub classifier: Classifier,
}

/// Loads the inventory (waiting for the first complete listing from the
/// API) and compiles the rules. Must run inside a Tokio runtime.
pub async fn load_world(config: &Config, base: &Path) -> Result<World, ConfigError> {
    let inv = &config.inventory;
    let inventory = if let Some(file) = &inv.file {
        let inventory = static_file::load(&base.join(file), &config.team_label, inv.grace_seconds)?;
        Arc::new(RwLock::new(inventory))
    } else {
        let kube = inv.kubernetes.clone().unwrap_or_default();
        let kubeconfig = kube.kubeconfig.as_ref().map(|p| base.join(p));
        let client = inventory::kube::connect(kubeconfig.as_deref()).await?;
        inventory::kube::check_access(&client).await?;
        let shared = Arc::new(RwLock::new(Inventory::new(inv.grace_seconds)));
        let (ready, mut is_ready) = tokio::sync::watch::channel(false);
        tokio::spawn(inventory::kube::run(
            client,
            shared.clone(),
            config.team_label.clone(),
            ready,
        ));
        let timeout = Duration::from_secs(kube.ready_timeout_seconds);
        let listed = tokio::time::timeout(timeout, is_ready.wait_for(|ready| *ready)).await;
        if !matches!(listed, Ok(Ok(_))) {
            return Err(ConfigError::File {
                path: kubeconfig.unwrap_or_else(|| "in-cluster".into()),
                message: format!(
                    "the Kubernetes API did not list every resource within {} s",
                    timeout.as_secs()
                ),
            });
        }
        shared
    };
    let classifier = Classifier::new(&config.network, base, &mut inventory::Interner::default())?;
    Ok(World {
        inventory,
        classifier,
    })
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_documented_example_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/overlays/clickhouse/tollgate.yaml");
        let (config, _) = Config::load(&path).unwrap();
        assert_eq!(config.agent.interval_seconds, 10);
        assert_eq!(config.sinks.spool.cap_mib, 512);
        assert!(config.sinks.clickhouse.is_some() && config.inventory.kubernetes.is_some());
    }
}
