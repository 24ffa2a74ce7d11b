//! The configuration file (YAML): cluster identity, where the inventory
//! comes from, and the network rules. `docs/configuration.md` documents
//! every field; `deploy/` and `docs/` carry examples.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::classify::{Classifier, NetworkConfig, RulesError};
use crate::input;
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
    /// Team that node-level traffic (host processes, and forwarding for a
    /// backend that is no known pod)
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
    /// On SIGTERM, how long to keep delivering (and to wait for a scrape
    /// of the last read's counters) before leaving the rest in the spool
    /// for the next start.
    pub shutdown_timeout_seconds: u64,
    /// Per-workload counters on `/metrics`.
    pub workload_metrics: WorkloadMetricsConfig,
    /// Each interval, log the top this many local workloads and remote
    /// addresses by bytes (0: none).
    pub top_talkers: usize,
    /// The Unix socket of `tollgate hold`, which keeps the agent's netlink
    /// sockets open across its kills (none: a kill loses what only they
    /// held).
    pub holder_socket: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 10,
            listen: SocketAddr::from(([0, 0, 0, 0], 9102)),
            batch_rows: 50_000,
            shutdown_timeout_seconds: 20,
            workload_metrics: WorkloadMetricsConfig::default(),
            top_talkers: 0,
            holder_socket: None,
        }
    }
}

/// `agent.workload_metrics`: `tollgate_workload_bytes_total`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadMetricsConfig {
    /// Expose them.
    pub enabled: bool,
    /// Series per agent beyond which new ones go to the overflow series.
    pub max_series: usize,
    /// A series without bytes for this long leaves the exposition.
    pub idle_seconds: u64,
}

impl Default for WorkloadMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_series: 2000,
            idle_seconds: 3600,
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
    /// relative paths are taken from `base`. Errors name the field (the
    /// command line names its flag instead).
    pub fn connection(&self, base: &Path) -> Result<Connection, FieldError> {
        let field = |field: &'static str| move |message: String| FieldError { field, message };
        check_url(&self.url).map_err(field("url"))?;
        check_name("database", &self.database)
            .map_err(|e| e.to_string())
            .map_err(field("database"))?;
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
            password: match &password {
                PasswordSource::File(path) => password
                    .read()
                    .map_err(|e| input::unreadable("password file", path, &e).to_string())
                    .map_err(field("password_file"))?,
                _ => password
                    .read()
                    .map_err(|e| e.to_string())
                    .map_err(field("password"))?,
            },
            ca_file: self.ca_file.as_ref().map(|p| base.join(p)),
        };
        connection
            .client()
            .map_err(|e| e.to_string())
            .map_err(field("ca_file"))?;
        Ok(connection)
    }
}

/// A ClickHouse setting that cannot be used: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's name in `sinks.clickhouse` (`url`, `database`,
    /// `password_file`, `ca_file`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
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
    /// MiB of batches from which the agent postpones its reads until the
    /// sinks catch up (`tollgate_reads_postponed_total`): nothing is dropped.
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
    /// An environment variable overriding the file has a bad value.
    #[error("environment variable {name}: {message}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The file cannot be read, or is not text.
    #[error(transparent)]
    Input(#[from] input::InputError),
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
    /// Reads and checks a configuration file, then the environment
    /// variables that override it: every mistake is an error naming the
    /// file and line, the field, or the variable.
    pub fn load(path: &Path) -> Result<(Self, PathBuf), ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = input::read_text("config", path).map_err(ConfigError::Input)?;
        let mut config: Config = serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?;
        config.check().map_err(error)?;
        config.apply_environment()?;
        // Relative paths are relative to the configuration file.
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        Ok((config, base))
    }

    /// What the YAML types cannot say: exactly one inventory source, names
    /// given and within limits, numbers within their ranges, networks
    /// without host bits. The error names the field.
    fn check(&self) -> Result<(), String> {
        match (&self.inventory.file, &self.inventory.kubernetes) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("inventory: give exactly one of `file` and `kubernetes`".into())
            }
            _ => {}
        }
        input::check_name("cluster", &self.cluster, true)?;
        if let Some(node) = &self.node {
            input::check_token_name(node).map_err(|e| format!("node: {e}"))?;
        }
        input::check_name("team_label", &self.team_label, true)?;
        input::check_name("node_team", &self.node_team, true)?;
        let agent = &self.agent;
        input::check_range("agent.interval_seconds", agent.interval_seconds, 1, 3600)?;
        input::check_range(
            "agent.batch_rows",
            agent.batch_rows as u64,
            1,
            input::BATCH_ROWS_MAX,
        )?;
        input::check_range(
            "agent.shutdown_timeout_seconds",
            agent.shutdown_timeout_seconds,
            0,
            input::SECONDS_MAX,
        )?;
        input::check_range(
            "agent.workload_metrics.max_series",
            agent.workload_metrics.max_series as u64,
            1,
            input::WORKLOAD_SERIES_MAX,
        )?;
        input::check_range(
            "agent.workload_metrics.idle_seconds",
            agent.workload_metrics.idle_seconds,
            u64::from(agent.interval_seconds),
            input::SECONDS_MAX,
        )?;
        input::check_range(
            "agent.top_talkers",
            agent.top_talkers as u64,
            0,
            input::TOP_TALKERS_MAX,
        )?;
        input::check_range(
            "sinks.spool.cap_mib",
            self.sinks.spool.cap_mib,
            1,
            input::SPOOL_CAP_MAX_MIB,
        )?;
        input::check_range(
            "inventory.grace_seconds",
            self.inventory.grace_seconds,
            0,
            input::SECONDS_MAX,
        )?;
        if let Some(kube) = &self.inventory.kubernetes {
            input::check_range(
                "inventory.kubernetes.ready_timeout_seconds",
                kube.ready_timeout_seconds,
                1,
                input::SECONDS_MAX,
            )?;
        }
        if let Some(clickhouse) = &self.sinks.clickhouse {
            check_url(&clickhouse.url).map_err(|e| format!("sinks.clickhouse.url: {e}"))?;
        }
        self.network.check()
    }

    /// `TOLLGATE_NODE`, `TOLLGATE_CLUSTER` and `TOLLGATE_CLICKHOUSE_URL`
    /// override the file; a bad value is blamed on its variable.
    fn apply_environment(&mut self) -> Result<(), ConfigError> {
        let variable = |name: &'static str| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Environment {
                name,
                message: "not UTF-8".into(),
            }),
        };
        let bad =
            |name: &'static str| move |message: String| ConfigError::Environment { name, message };
        if let Some(node) = variable("TOLLGATE_NODE")? {
            input::check_token_name(&node).map_err(bad("TOLLGATE_NODE"))?;
            self.node = Some(node);
        }
        if let Some(cluster) = variable("TOLLGATE_CLUSTER")? {
            input::check_name("value", &cluster, true).map_err(bad("TOLLGATE_CLUSTER"))?;
            self.cluster = cluster;
        }
        if let Some(url) = variable("TOLLGATE_CLICKHOUSE_URL")? {
            check_url(&url).map_err(bad("TOLLGATE_CLICKHOUSE_URL"))?;
            if let Some(clickhouse) = self.sinks.clickhouse.as_mut() {
                clickhouse.url = url;
            }
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL naming a host.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok(())
}

/// The inventory and the compiled rules, ready to enrich.
pub struct World {
    /// The inventory, kept current in the background when it comes from
    /// the Kubernetes API.
    pub inventory: Arc<RwLock<Inventory>>,
    /// The rules.
    pub classifier: Classifier,
}

/// Everything the configuration names that can be read without the
/// network: the range files compiled into rules, and the static inventory
/// or the kubeconfig file. Commands call this before touching anything, so
/// a bad file is found before the kernel settings change.
pub struct Prepared {
    classifier: Classifier,
    inventory: Option<Inventory>,
    kubeconfig: Option<PathBuf>,
}

impl Prepared {
    /// Whether the static inventory lists the node `name` (`None` with the
    /// Kubernetes API, which is asked later).
    pub fn lists_node(&self, name: &str) -> Option<bool> {
        self.inventory
            .as_ref()
            .map(|inventory| inventory.node(name).is_some())
    }
}

/// Reads and checks the files the configuration names.
pub fn prepare(config: &Config, base: &Path) -> Result<Prepared, ConfigError> {
    let inv = &config.inventory;
    let inventory = inv
        .file
        .as_ref()
        .map(|file| static_file::load(&base.join(file), &config.team_label, inv.grace_seconds))
        .transpose()?;
    let kubeconfig = inv
        .kubernetes
        .as_ref()
        .and_then(|kube| kube.kubeconfig.as_ref())
        .map(|path| base.join(path));
    if let Some(path) = &kubeconfig {
        input::readable_file("inventory.kubernetes.kubeconfig", path)?;
    }
    let classifier = Classifier::new(&config.network, base, &mut inventory::Interner::default())?;
    Ok(Prepared {
        classifier,
        inventory,
        kubeconfig,
    })
}

/// The inventory ready to enrich: the static one, or the API's after its
/// first complete listing (kept current in the background). Must run inside
/// a Tokio runtime.
pub async fn load_world(config: &Config, prepared: Prepared) -> Result<World, ConfigError> {
    let inv = &config.inventory;
    let inventory = if let Some(inventory) = prepared.inventory {
        Arc::new(RwLock::new(inventory))
    } else {
        let kube = inv.kubernetes.clone().unwrap_or_default();
        let kubeconfig = prepared.kubeconfig;
        let client = inventory::kube::connect(kubeconfig.as_deref()).await?;
        inventory::kube::check_access(&client, kube.ready_timeout_seconds).await?;
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
    Ok(World {
        inventory,
        classifier: prepared.classifier,
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
