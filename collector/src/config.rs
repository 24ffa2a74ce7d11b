//! The configuration file (YAML): cluster identity, where the inventory
//! comes from, and the network rules. `docs/configuration.md` documents
//! every field; `deploy/` and `docs/` carry examples.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::classify::{Classifier, NetworkConfig, RulesError};
use crate::inventory::{self, static_file, Inventory};

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
