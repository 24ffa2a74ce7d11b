//! The inventory kept current from the Kubernetes API.
//!
//! One watch per resource (Pods, Nodes, Services, ReplicaSets, Jobs,
//! Namespaces), cluster-wide, list and watch only. Each object is trimmed to
//! the few fields enrichment uses the moment it arrives; full objects are
//! never stored. Owners are resolved up the chain the controllers build:
//! Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, and StatefulSet
//! or DaemonSet directly. A watch that restarts relists, and objects missing
//! from the new list are removed, as if deleted then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tollgate_schema::{Name, Protocol};

use super::{Inventory, NodeInfo, ObjectKey, PodInfo, ServiceInfo};

/// The Kubernetes API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig (or the in-cluster configuration) is unusable.
    #[error("kubeconfig {path}: {message}")]
    Config {
        /// The kubeconfig file, or `in-cluster` when inferred.
        path: String,
        /// Why.
        message: String,
    },
    /// The credentials may not list or watch a resource tollgate needs.
    #[error(
        "the Kubernetes API refuses to {verb} {resource}: {message} \
         (tollgate needs list and watch on pods, nodes, services, namespaces, \
         replicasets and jobs; see deploy/base/rbac.yaml)"
    )]
    Forbidden {
        /// `list` or `watch`.
        verb: &'static str,
        /// The resource, e.g. `pods`.
        resource: &'static str,
        /// The API server's message.
        message: String,
    },
    /// The API server did not answer the permission checks in time.
    #[error(
        "the Kubernetes API did not answer within {seconds} s while tollgate checked it may \
         list and watch what it needs (inventory.kubernetes.ready_timeout_seconds)"
    )]
    Timeout {
        /// The time allowed.
        seconds: u64,
    },
    /// The API server could not be reached or answered with an error.
    #[error("Kubernetes API, trying to {verb} {resource}: {source}")]
    Api {
        /// `list` or `watch`.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The client's error.
        source: kube::Error,
    },
}

/// The team of a pod: the `label` on the pod, else on its namespace, else
/// the namespace's name.
pub fn team_of<'a>(
    pod_labels: &'a BTreeMap<String, String>,
    namespace_labels: Option<&'a BTreeMap<String, String>>,
    namespace: &'a str,
    label: &str,
) -> &'a str {
    pod_labels
        .get(label)
        .or_else(|| namespace_labels.and_then(|l| l.get(label)))
        .filter(|team| !team.is_empty())
        .map_or(namespace, String::as_str)
}

/// A client from `kubeconfig`, or from the environment (in-cluster service
/// account, then `$KUBECONFIG` / `~/.kube/config`) when `None`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |message: String| KubeError::Config {
                path: path.display().to_string(),
                message,
            };
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| error(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| KubeError::Config {
            path: "in-cluster or $KUBECONFIG".into(),
            message: e.to_string(),
        })?,
    };
    Client::try_from(config).map_err(|e| KubeError::Config {
        path: kubeconfig.map_or_else(|| "in-cluster".into(), |p| p.display().to_string()),
        message: e.to_string(),
    })
}

/// Checks, before anything starts, that every resource can be listed and
/// watched: an RBAC denial is reported with the verb and resource it
/// concerns, where a watch refused later would only be retried for ever.
/// A server that does not answer within `seconds` is an error too.
pub async fn check_access(client: &Client, seconds: u64) -> Result<(), KubeError> {
    tokio::time::timeout(Duration::from_secs(seconds), probe_all(client))
        .await
        .unwrap_or(Err(KubeError::Timeout { seconds }))
}

async fn probe_all(client: &Client) -> Result<(), KubeError> {
    async fn probe<K>(client: &Client, resource: &'static str) -> Result<(), KubeError>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let refused = |verb: &'static str| {
            move |error: kube::Error| match error {
                kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden {
                    verb,
                    resource,
                    message: status.message.clone(),
                },
                source => KubeError::Api {
                    verb,
                    resource,
                    source,
                },
            }
        };
        let api = Api::<K>::all(client.clone());
        let listed = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(refused("list"))?;
        // The server answers a watch's headers at once; the stream is dropped.
        let version = listed.metadata.resource_version.unwrap_or_default();
        drop(
            api.watch_metadata(&WatchParams::default().timeout(1), &version)
                .await
                .map_err(refused("watch"))?,
        );
        Ok(())
    }
    probe::<Pod>(client, "pods").await?;
    probe::<Node>(client, "nodes").await?;
    probe::<Service>(client, "services").await?;
    probe::<Namespace>(client, "namespaces").await?;
    probe::<ReplicaSet>(client, "replicasets").await?;
    probe::<Job>(client, "jobs").await?;
    Ok(())
}

/// One watch event of any of the resources.
enum Change {
    Pod(Box<Event<Pod>>),
    Node(Box<Event<Node>>),
    Service(Box<Event<Service>>),
    Namespace(Box<Event<Namespace>>),
    ReplicaSet(Box<Event<ReplicaSet>>),
    Job(Box<Event<Job>>),
    Failed(&'static str, watcher::Error),
}

/// Keeps `inventory` current from the API until the client fails for good.
/// `ready` is set once every resource has been listed completely.
pub async fn run(
    client: Client,
    inventory: Arc<RwLock<Inventory>>,
    team_label: String,
    ready: tokio::sync::watch::Sender<bool>,
) {
    fn watch<K>(
        client: &Client,
        name: &'static str,
        wrap: fn(Event<K>) -> Change,
    ) -> BoxStream<'static, Change>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .map(move |event| match event {
                Ok(event) => wrap(event),
                Err(error) => Change::Failed(name, error),
            })
            .boxed()
    }
    let changes = stream::select_all([
        watch(&client, "namespaces", |e| Change::Namespace(Box::new(e))),
        watch(&client, "replicasets", |e| Change::ReplicaSet(Box::new(e))),
        watch(&client, "jobs", |e| Change::Job(Box::new(e))),
        watch(&client, "nodes", |e| Change::Node(Box::new(e))),
        watch(&client, "services", |e| Change::Service(Box::new(e))),
        watch(&client, "pods", |e| Change::Pod(Box::new(e))),
    ]);
    let mut tracker = Tracker::new(team_label);
    let mut changes = changes;
    let mut pruned_at = now_seconds();
    while let Some(change) = changes.next().await {
        let now = now_seconds();
        let mut inventory = match inventory.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        tracker.apply(change, &mut inventory, now);
        // Pods come and go for as long as the agent runs: what they left
        // behind is forgotten once its grace period is over.
        if now >= pruned_at + PRUNE_EVERY_SECONDS {
            inventory.prune(now);
            pruned_at = now;
        }
        if tracker.listed.len() == 6 && !*ready.borrow() {
            tracing::info!(
                objects = inventory.objects(),
                addresses = inventory.addresses(),
                "inventory listed from the Kubernetes API"
            );
            ready.send_replace(true);
        }
    }
}

/// How often departed holders past their grace period are forgotten.
const PRUNE_EVERY_SECONDS: u64 = 60;

/// A port's protocol as the API writes it (`TCP`, `UDP`, `SCTP`; TCP when
/// absent).
fn protocol_of(text: Option<&str>) -> Protocol {
    text.and_then(|p| Protocol::from_text(&p.to_ascii_lowercase()))
        .unwrap_or(Protocol::TCP)
}

/// When a pod got its addresses, at the earliest: its `startTime` (the
/// kubelet took it on, before it set up the sandbox and its network), in
/// Unix seconds. Connections are looked up at their start, so this must
/// never be later than the first one; `PodReadyToStartContainers` is set a
/// sync after the containers start, and may be.
fn addressed_at(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<u64> {
    status
        .start_time
        .as_ref()
        .and_then(|time| u64::try_from(time.0.as_second()).ok())
}

/// When a finished pod's last container ended.
fn finished_at(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<u64> {
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .filter_map(|time| u64::try_from(time.0.as_second()).ok())
        .max()
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A pod trimmed to what resolution needs; names interned.
struct TrimmedPod {
    name: Name,
    namespace: Name,
    node: Name,
    ips: Vec<IpAddr>,
    /// When the pod got its addresses, as the API says: its sandbox (and
    /// network) became ready, or, on older servers, the kubelet started it.
    addressed_at: Option<u64>,
    /// When it finished (Succeeded or Failed): its last container's end.
    finished: Option<u64>,
    owner: Option<(String, String)>,
    labels: BTreeMap<String, String>,
    host_network: bool,
    host_ports: Vec<(Protocol, u16)>,
}

/// The watch state that is not in the inventory: owners, namespace labels,
/// trimmed pods (to re-resolve them when an owner or a label changes) and
/// which objects each relist has seen.
struct Tracker {
    team_label: String,
    pods: HashMap<String, TrimmedPod>,
    /// (`ReplicaSet` or `Job`, `namespace/name`) -> its owner's kind and
    /// name.
    owners: HashMap<(&'static str, String), (String, String)>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    relisting: HashMap<&'static str, HashSet<String>>,
    listed: HashSet<&'static str>,
}

impl Tracker {
    fn new(team_label: String) -> Self {
        Self {
            team_label,
            pods: HashMap::new(),
            owners: HashMap::new(),
            namespace_labels: HashMap::new(),
            relisting: HashMap::new(),
            listed: HashSet::new(),
        }
    }

    fn apply(&mut self, change: Change, inventory: &mut Inventory, now: u64) {
        match change {
            Change::Pod(event) => {
                self.on(*event, "pods", inventory, now, Self::pod, Self::pod_gone)
            }
            Change::Node(event) => {
                self.on(*event, "nodes", inventory, now, Self::node, Self::node_gone)
            }
            Change::Service(event) => self.on(
                *event,
                "services",
                inventory,
                now,
                Self::service,
                Self::service_gone,
            ),
            Change::Namespace(event) => self.on(
                *event,
                "namespaces",
                inventory,
                now,
                Self::namespace,
                Self::namespace_gone,
            ),
            Change::ReplicaSet(event) => self.on(
                *event,
                "replicasets",
                inventory,
                now,
                Self::owned,
                |tracker, key, _, _| tracker.owner_gone("ReplicaSet", key),
            ),
            Change::Job(event) => self.on(
                *event,
                "jobs",
                inventory,
                now,
                Self::owned,
                |tracker, key, _, _| tracker.owner_gone("Job", key),
            ),
            Change::Failed(resource, error) => {
                tracing::warn!(resource, %error, "Kubernetes watch failed; retrying with backoff");
            }
        }
    }

    /// Applies one event; a relist removes, at its end, what it did not see.
    fn on<K: Resource>(
        &mut self,
        event: Event<K>,
        resource: &'static str,
        inventory: &mut Inventory,
        now: u64,
        upsert: fn(&mut Self, &K, &mut Inventory, u64),
        gone: fn(&mut Self, &str, &mut Inventory, u64),
    ) {
        match event {
            Event::Apply(object) => upsert(self, &object, inventory, now),
            Event::Delete(object) => gone(self, &key_of(object.meta()), inventory, now),
            Event::Init => {
                self.relisting.insert(resource, HashSet::new());
            }
            Event::InitApply(object) => {
                self.relisting
                    .entry(resource)
                    .or_default()
                    .insert(key_of(object.meta()));
                upsert(self, &object, inventory, now);
            }
            Event::InitDone => {
                let seen = self.relisting.remove(resource).unwrap_or_default();
                for key in self.known(resource, inventory) {
                    if !seen.contains(&key) {
                        gone(self, &key, inventory, now);
                    }
                }
                self.listed.insert(resource);
            }
        }
    }

    /// Keys currently known for a resource.
    fn known(&self, resource: &str, inventory: &Inventory) -> Vec<String> {
        match resource {
            "pods" => self.pods.keys().cloned().collect(),
            "namespaces" => self.namespace_labels.keys().cloned().collect(),
            "replicasets" | "jobs" => {
                let kind = if resource == "jobs" {
                    "Job"
                } else {
                    "ReplicaSet"
                };
                self.owners
                    .keys()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, key)| key.clone())
                    .collect()
            }
            "nodes" | "services" => inventory
                .keys()
                .filter_map(|key| match (key, resource) {
                    (ObjectKey::Node(name), "nodes") => Some(name.clone()),
                    (ObjectKey::Service(name), "services") => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn pod(&mut self, pod: &Pod, inventory: &mut Inventory, now: u64) {
        let meta = &pod.metadata;
        let key = key_of(meta);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        // A finished pod's address is free for the next pod.
        let finished = status
            .filter(|s| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed")))
            .map(|s| finished_at(s).unwrap_or(now));
        let ips = status
            .map(|s| {
                let mut ips: Vec<IpAddr> = s
                    .pod_ips
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ip.parse().ok())
                    .collect();
                if ips.is_empty() {
                    ips.extend(s.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
                }
                ips
            })
            .unwrap_or_default();
        let names = &mut inventory.names;
        let trimmed = TrimmedPod {
            name: names.name(meta.name.as_deref().unwrap_or_default()),
            namespace: names.name(meta.namespace.as_deref().unwrap_or_default()),
            node: names.name(
                spec.and_then(|s| s.node_name.as_deref())
                    .unwrap_or_default(),
            ),
            ips,
            addressed_at: status.and_then(addressed_at),
            finished,
            owner: controller_of(meta),
            labels: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(&self.team_label))
                .map(|team| BTreeMap::from([(self.team_label.clone(), team.clone())]))
                .unwrap_or_default(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            host_ports: spec
                .map(|s| {
                    s.containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .map(|p| {
                            let port = p.host_port.unwrap_or(p.container_port);
                            (
                                protocol_of(p.protocol.as_deref()),
                                u16::try_from(port).unwrap_or(0),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.pods.insert(key.clone(), trimmed);
        self.resolve(&key, inventory, now);
    }

    /// (Re)computes a pod's enrichment from its trimmed copy.
    fn resolve(&self, key: &str, inventory: &mut Inventory, now: u64) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        let (kind, workload) = match &pod.owner {
            None => ("Pod".to_owned(), pod.name.to_string()),
            Some((kind, name)) => {
                let kind_key = match kind.as_str() {
                    "ReplicaSet" => Some("ReplicaSet"),
                    "Job" => Some("Job"),
                    _ => None,
                };
                let owned_by = kind_key
                    .and_then(|k| self.owners.get(&(k, format!("{}/{name}", pod.namespace))));
                match owned_by {
                    Some((up_kind, up_name)) => (up_kind.clone(), up_name.clone()),
                    None => (kind.clone(), name.clone()),
                }
            }
        };
        let team = team_of(
            &pod.labels,
            self.namespace_labels.get(&*pod.namespace),
            &pod.namespace,
            &self.team_label,
        )
        .to_owned();
        let info = PodInfo {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            node: pod.node.clone(),
            workload_kind: inventory.names.name(&kind),
            workload: inventory.names.name(&workload),
            team: inventory.names.name(&team),
            host_network: pod.host_network,
            host_ports: pod.host_ports.clone(),
        };
        // The pod held its addresses from when the API says it got them,
        // which a watch hears of later (never from the future).
        let since = pod.addressed_at.map_or(now, |at| at.min(now));
        if let Some(finished) = pod.finished {
            return inventory.finished_pod(info, &pod.ips, since, finished.min(now), now);
        }
        let unchanged = matches!(
            inventory.holder(&ObjectKey::Pod(key.to_owned())),
            Some(super::Holder::Pod(current)) if **current == info
        ) && inventory_ips_unchanged(inventory, key, &pod.ips);
        if !unchanged {
            inventory.upsert_pod(info, &pod.ips, since, now);
        }
    }

    fn pod_gone(&mut self, key: &str, inventory: &mut Inventory, now: u64) {
        self.pods.remove(key);
        inventory.remove(&ObjectKey::Pod(key.to_owned()), now);
    }

    fn node(&mut self, node: &Node, inventory: &mut Inventory, now: u64) {
        let meta = &node.metadata;
        let label = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| meta.labels.as_ref().and_then(|l| l.get(*k)))
                .cloned()
                .unwrap_or_default()
        };
        let zone = label([
            "topology.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/zone",
        ]);
        let region = label([
            "topology.kubernetes.io/region",
            "failure-domain.beta.kubernetes.io/region",
        ]);
        let spec = node.spec.as_ref();
        let provider_id = spec
            .and_then(|s| s.provider_id.as_deref())
            .unwrap_or_default();
        let provider = provider_of(provider_id);
        let mut pod_cidrs: Vec<ipnet::IpNet> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.parse().ok())
            .collect();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(
                spec.and_then(|s| s.pod_cidr.as_deref())
                    .and_then(|c| c.parse::<ipnet::IpNet>().ok()),
            );
        }
        let ips: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let names = &mut inventory.names;
        let info = NodeInfo {
            name: names.name(meta.name.as_deref().unwrap_or_default()),
            zone: names.name(&zone),
            region: names.name(&region),
            provider: names.name(provider),
            provider_id: names.name(provider_id),
            pod_cidrs,
        };
        inventory.upsert_node(info, &ips, now);
    }

    fn node_gone(&mut self, key: &str, inventory: &mut Inventory, now: u64) {
        inventory.remove(&ObjectKey::Node(key.to_owned()), now);
    }

    fn service(&mut self, service: &Service, inventory: &mut Inventory, now: u64) {
        let key = key_of(&service.metadata);
        let spec = service.spec.as_ref();
        let mut ips: Vec<IpAddr> = spec
            .map(|s| {
                let mut ips: Vec<String> = s.cluster_ips.clone().unwrap_or_default();
                if ips.is_empty() {
                    ips.extend(s.cluster_ip.clone());
                }
                ips.iter().filter_map(|ip| ip.parse().ok()).collect()
            })
            .unwrap_or_default();
        // A load balancer that keeps the destination address (GCP's
        // passthrough balancers, MetalLB) sends its clients' packets to its
        // ingress address, which kube-proxy translates like a ClusterIP.
        ips.extend(
            service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|ingress| ingress.ip.as_deref()?.parse::<IpAddr>().ok()),
        );
        let node_ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|port| {
                let node_port = u16::try_from(port.node_port?).ok()?;
                Some((protocol_of(port.protocol.as_deref()), node_port))
            })
            .collect();
        let name = inventory.names.name(&key);
        inventory.upsert_service(ServiceInfo { name, node_ports }, &ips, now);
    }

    fn service_gone(&mut self, key: &str, inventory: &mut Inventory, now: u64) {
        inventory.remove(&ObjectKey::Service(key.to_owned()), now);
    }

    fn namespace(&mut self, namespace: &Namespace, inventory: &mut Inventory, now: u64) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let labels: BTreeMap<String, String> = namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&self.team_label))
            .map(|team| BTreeMap::from([(self.team_label.clone(), team.clone())]))
            .unwrap_or_default();
        if self.namespace_labels.get(&name) != Some(&labels) {
            self.namespace_labels.insert(name.clone(), labels);
            self.resolve_namespace(&name, inventory, now);
        }
    }

    fn namespace_gone(&mut self, key: &str, _: &mut Inventory, _: u64) {
        self.namespace_labels.remove(key);
    }

    /// A ReplicaSet or a Job: remembers which workload controls it.
    fn owned<K: Resource + k8s_openapi::Resource>(
        &mut self,
        object: &K,
        inventory: &mut Inventory,
        now: u64,
    ) {
        let meta = object.meta();
        let key = (K::KIND, key_of(meta));
        let owner = controller_of(meta);
        if self.owners.get(&key) != owner.as_ref() {
            match owner {
                Some(owner) => self.owners.insert(key, owner),
                None => self.owners.remove(&key),
            };
            let namespace = meta.namespace.clone().unwrap_or_default();
            self.resolve_namespace(&namespace, inventory, now);
        }
    }

    /// A ReplicaSet or Job is gone. Its pods may outlive it (background
    /// deletion removes the owner first): the mapping stays while a pod
    /// still names it.
    fn owner_gone(&mut self, kind: &'static str, key: &str) {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let still_owns = self.pods.values().any(|pod| {
            &*pod.namespace == namespace
                && pod
                    .owner
                    .as_ref()
                    .is_some_and(|(k, n)| k == kind && n == name)
        });
        if !still_owns {
            self.owners.remove(&(kind, key.to_owned()));
        }
    }

    fn resolve_namespace(&self, namespace: &str, inventory: &mut Inventory, now: u64) {
        let keys: Vec<&String> = self
            .pods
            .iter()
            .filter(|(_, pod)| &*pod.namespace == namespace)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.resolve(key, inventory, now);
        }
    }
}

fn inventory_ips_unchanged(inventory: &Inventory, key: &str, ips: &[IpAddr]) -> bool {
    inventory
        .objects
        .get(&ObjectKey::Pod(key.to_owned()))
        .is_some_and(|o| {
            o.ips.len() == ips.len() && ips.iter().all(|ip| o.ips.contains(&super::canonical(*ip)))
        })
}

/// `namespace/name`, or `name` for cluster-scoped objects.
fn key_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    }
}

/// The controlling owner's kind and name.
fn controller_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let owners = meta.owner_references.as_ref()?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// The provider from a node's `spec.providerID` scheme.
fn provider_of(provider_id: &str) -> &'static str {
    match provider_id.split("://").next() {
        Some("aws") => "aws",
        Some("gce") => "gcp",
        Some("azure") => "azure",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::provider_of;

    #[test]
    fn the_provider_is_the_provider_ids_scheme() {
        assert_eq!(provider_of("aws:///us-east-1a/i-0abc"), "aws");
        assert_eq!(provider_of("gce://project/europe-west1-b/node-1"), "gcp");
        assert_eq!(
            provider_of("azure:///subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"),
            "azure"
        );
        assert_eq!(provider_of("kind://docker/k/n"), "");
        assert_eq!(provider_of(""), "");
    }
}
