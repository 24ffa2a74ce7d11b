//! The inventory from a YAML file, for clusters without API access,
//! hosts outside Kubernetes, tests and the demo.
//!
//! The file says what the Kubernetes API would: nodes with their zone,
//! region, addresses and pod ranges; pods with their node, addresses,
//! workload and labels; Services with their ClusterIPs; namespaces with their
//! labels. Team resolution is the same as with the API (see
//! [`super::kube::team_of`]). The format is documented in
//! `docs/inventory.md`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use tollgate_schema::Protocol;

use super::{Inventory, NodeInfo, PodInfo, ServiceInfo};

/// A static inventory that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticInventoryError {
    /// The file could not be read, or is not text.
    #[error(transparent)]
    Read(#[from] crate::input::InputError),
    /// The file is not a valid inventory (YAML syntax, unknown field, bad
    /// address); the message names the line and column.
    #[error("inventory {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message with the location.
        message: String,
    },
    /// A value is inconsistent with the rest of the file.
    #[error("inventory {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which entry, e.g. `pods[3].node`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    nodes: Vec<NodeEntry>,
    #[serde(default)]
    pods: Vec<PodEntry>,
    #[serde(default)]
    services: Vec<ServiceEntry>,
    #[serde(default)]
    namespaces: Vec<NamespaceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    provider_id: String,
    #[serde(default)]
    addresses: Vec<IpAddr>,
    #[serde(default)]
    pod_cidrs: Vec<IpNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodEntry {
    name: String,
    namespace: String,
    node: String,
    #[serde(default)]
    ips: Vec<IpAddr>,
    workload: Option<WorkloadEntry>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    ports: Vec<PortEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadEntry {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortEntry {
    #[serde(default = "tcp")]
    protocol: Protocol,
    port: u16,
}

fn tcp() -> Protocol {
    Protocol::TCP
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: String,
    namespace: String,
    cluster_ips: Vec<IpAddr>,
    /// NodePorts of a NodePort or LoadBalancer Service.
    #[serde(default)]
    node_ports: Vec<PortEntry>,
    /// `status.loadBalancer.ingress` addresses.
    #[serde(default)]
    load_balancer_ips: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Reads `path` into a new inventory. `team_label` is the label (on the pod,
/// else on its namespace) that names a pod's team.
pub fn load(
    path: &Path,
    team_label: &str,
    grace_seconds: u64,
) -> Result<Inventory, StaticInventoryError> {
    let text = crate::input::read_text("inventory", path)?;
    from_str(&text, path, team_label, grace_seconds)
}

/// Parses inventory YAML; `path` names it in errors.
pub fn from_str(
    text: &str,
    path: &Path,
    team_label: &str,
    grace_seconds: u64,
) -> Result<Inventory, StaticInventoryError> {
    // The parser's default budget (250,000 nodes) stops near 20,000 pods;
    // an inventory is as large as its cluster, so the budget grows with the
    // text (every node or event takes at least a byte). Alias limits stay.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 1_000_000 + text.len(),
            max_nodes: 250_000 + text.len(),
            max_total_scalar_bytes: (64 << 20) + text.len(),
        },
    };
    let file: File = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        StaticInventoryError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    build(file, path, team_label, grace_seconds)
}

fn build(
    file: File,
    path: &Path,
    team_label: &str,
    grace_seconds: u64,
) -> Result<Inventory, StaticInventoryError> {
    let invalid = |field: String, message: String| StaticInventoryError::Invalid {
        path: path.to_owned(),
        field,
        message,
    };
    let mut inventory = Inventory::new(grace_seconds);
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut claim = |ip: IpAddr, who: String| match owners.insert(super::canonical(ip), who.clone())
    {
        Some(first) => Err(invalid(
            who,
            format!("address {ip} is already held by {first}"),
        )),
        None => Ok(()),
    };

    // Names within limits and given where required; networks without host
    // bits: the same checks, and messages, as every other input.
    let checked = |message: String| StaticInventoryError::Parse {
        path: path.to_owned(),
        message,
    };
    let name = |field: String, value: &str, required: bool| {
        crate::input::check_name(&field, value, required).map_err(checked)
    };
    if file.nodes.is_empty() {
        return Err(checked(
            "nodes: the inventory lists no node (every agent must find its own)".into(),
        ));
    }
    let listed_twice =
        |field: String, what: &str| invalid(field, format!("{what} is listed twice"));
    let mut cidrs: Vec<(IpNet, usize)> = Vec::new();
    let mut node_names = HashSet::new();
    for (i, node) in file.nodes.iter().enumerate() {
        name(format!("nodes[{i}].name"), &node.name, true)?;
        for (field, value) in [
            ("zone", &node.zone),
            ("region", &node.region),
            ("provider", &node.provider),
            ("provider_id", &node.provider_id),
        ] {
            name(format!("nodes[{i}].{field}"), value, false)?;
        }
        for (j, cidr) in node.pod_cidrs.iter().enumerate() {
            let field = format!("nodes[{i}].pod_cidrs[{j}]");
            crate::input::check_network(&field, cidr).map_err(checked)?;
            if let Some((other, k)) = cidrs
                .iter()
                .find(|(other, _)| other.contains(cidr) || cidr.contains(other))
            {
                return Err(invalid(
                    field,
                    format!("{cidr} overlaps {other} of nodes[{k}]"),
                ));
            }
            cidrs.push((*cidr, i));
        }
        if !node_names.insert(node.name.as_str()) {
            return Err(invalid(
                format!("nodes[{i}].name"),
                format!("node {:?} is listed twice", node.name),
            ));
        }
        for ip in &node.addresses {
            if ip.is_unspecified() {
                return Err(invalid(
                    format!("nodes[{i}].addresses"),
                    format!("{ip} is no node's address"),
                ));
            }
            claim(*ip, format!("nodes[{i}].addresses"))?;
        }
        let names = &mut inventory.names;
        let info = NodeInfo {
            name: names.name(&node.name),
            zone: names.name(&node.zone),
            region: names.name(&node.region),
            provider: names.name(&node.provider),
            provider_id: names.name(&node.provider_id),
            pod_cidrs: node.pod_cidrs.clone(),
        };
        inventory.upsert_node(info, &node.addresses, 0);
    }

    let namespace_labels: BTreeMap<&str, &BTreeMap<String, String>> = file
        .namespaces
        .iter()
        .map(|ns| (ns.name.as_str(), &ns.labels))
        .collect();
    for (i, pod) in file.pods.iter().enumerate() {
        name(format!("pods[{i}].name"), &pod.name, true)?;
        name(format!("pods[{i}].namespace"), &pod.namespace, true)?;
        // The inventory already keys pods by namespace and name: no set of
        // its own (an inventory is as large as its cluster).
        let key = super::ObjectKey::Pod(format!("{}/{}", pod.namespace, pod.name));
        if inventory.holder(&key).is_some() {
            let pod = format!("pod {}/{}", pod.namespace, pod.name);
            return Err(listed_twice(format!("pods[{i}]"), &pod));
        }
        for (j, port) in pod.ports.iter().enumerate() {
            if port.port == 0 {
                return Err(invalid(
                    format!("pods[{i}].ports[{j}].port"),
                    "0 is no port".into(),
                ));
            }
        }
        if let Some(workload) = &pod.workload {
            name(format!("pods[{i}].workload.kind"), &workload.kind, true)?;
            name(format!("pods[{i}].workload.name"), &workload.name, true)?;
        }
        for (key, value) in &pod.labels {
            name(format!("pods[{i}].labels.{key}"), value, false)?;
        }
        if !node_names.contains(pod.node.as_str()) {
            return Err(invalid(
                format!("pods[{i}].node"),
                format!("node {:?} is not in `nodes`", pod.node),
            ));
        }
        if !pod.host_network {
            for ip in &pod.ips {
                claim(*ip, format!("pods[{i}].ips"))?;
            }
        }
        let team = super::kube::team_of(
            &pod.labels,
            namespace_labels.get(pod.namespace.as_str()).copied(),
            &pod.namespace,
            team_label,
        );
        let names = &mut inventory.names;
        let (kind, workload) = match &pod.workload {
            Some(w) => (w.kind.as_str(), w.name.as_str()),
            None => ("Pod", pod.name.as_str()),
        };
        let info = PodInfo {
            name: names.name(&pod.name),
            namespace: names.name(&pod.namespace),
            node: names.name(&pod.node),
            workload_kind: names.name(kind),
            workload: names.name(workload),
            team: names.name(team),
            host_network: pod.host_network,
            host_ports: pod.ports.iter().map(|p| (p.protocol, p.port)).collect(),
        };
        inventory.upsert_pod(info, &pod.ips, 0, 0);
    }

    let mut namespace_names = HashSet::new();
    for (i, namespace) in file.namespaces.iter().enumerate() {
        name(format!("namespaces[{i}].name"), &namespace.name, true)?;
        if !namespace_names.insert(namespace.name.as_str()) {
            let what = format!("namespace {}", namespace.name);
            return Err(listed_twice(format!("namespaces[{i}]"), &what));
        }
        for (key, value) in &namespace.labels {
            name(format!("namespaces[{i}].labels.{key}"), value, false)?;
        }
    }
    let mut service_names = HashSet::new();
    let mut node_ports = std::collections::HashMap::new();
    for (i, service) in file.services.iter().enumerate() {
        name(format!("services[{i}].name"), &service.name, true)?;
        name(format!("services[{i}].namespace"), &service.namespace, true)?;
        if !service_names.insert((service.namespace.as_str(), service.name.as_str())) {
            let what = format!("service {}/{}", service.namespace, service.name);
            return Err(listed_twice(format!("services[{i}]"), &what));
        }
        if service.cluster_ips.is_empty() {
            return Err(invalid(
                format!("services[{i}].cluster_ips"),
                "give at least one ClusterIP".into(),
            ));
        }
        for ip in &service.cluster_ips {
            claim(*ip, format!("services[{i}].cluster_ips"))?;
        }
        let name = inventory
            .names
            .name(&format!("{}/{}", service.namespace, service.name));
        for (j, port) in service.node_ports.iter().enumerate() {
            let field = format!("services[{i}].node_ports[{j}]");
            if port.port == 0 {
                return Err(invalid(field, "0 is no port".into()));
            }
            if let Some(other) = node_ports.insert((port.protocol, port.port), i) {
                return Err(invalid(
                    field,
                    format!("NodePort {} is also services[{other}]'s", port.port),
                ));
            }
        }
        for ip in &service.load_balancer_ips {
            claim(*ip, format!("services[{i}].load_balancer_ips"))?;
        }
        let node_ports = service
            .node_ports
            .iter()
            .map(|p| (p.protocol, p.port))
            .collect();
        let ips: Vec<IpAddr> = service
            .cluster_ips
            .iter()
            .chain(&service.load_balancer_ips)
            .copied()
            .collect();
        inventory.upsert_service(ServiceInfo { name, node_ports }, &ips, 0);
    }
    Ok(inventory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Holder;

    fn parse(yaml: &str) -> Result<Inventory, StaticInventoryError> {
        from_str(yaml, Path::new("inv.yaml"), "team", 300)
    }

    const SAMPLE: &str = "
nodes:
  - {name: node-a, zone: r1-a, region: r1, provider: aws, addresses: [192.168.1.1], pod_cidrs: [10.1.1.0/24]}
pods:
  - name: web-1
    namespace: shop
    node: node-a
    ips: [10.1.1.2, 'fd00:1::2']
    workload: {kind: Deployment, name: web}
  - name: tagged
    namespace: shop
    node: node-a
    ips: [10.1.1.3]
    labels: {team: search}
  - {name: exporter, namespace: monitoring, node: node-a, host_network: true, ports: [{port: 9100}]}
services:
  - {name: api, namespace: shop, cluster_ips: [10.96.0.10]}
namespaces:
  - {name: shop, labels: {team: payments}}
";

    #[test]
    fn a_static_file_gives_the_same_answers_as_the_api_would() {
        let inv = parse(SAMPLE).unwrap();
        let pod = |ip: &str| match inv.lookup(ip.parse().unwrap(), 1) {
            Some(Holder::Pod(p)) => p.clone(),
            other => panic!("{ip}: {other:?}"),
        };
        let web = pod("fd00:1::2");
        assert_eq!((&*web.workload_kind, &*web.workload), ("Deployment", "web"));
        assert_eq!(&*web.team, "payments", "from the namespace's label");
        let tagged = pod("10.1.1.3");
        assert_eq!(
            (&*tagged.workload_kind, &*tagged.workload),
            ("Pod", "tagged")
        );
        assert_eq!(&*tagged.team, "search", "the pod's own label wins");
        let node = inv.node("node-a").unwrap().clone();
        assert_eq!(&*node.zone, "r1-a");
        let exporter = inv.host_pod(&node.name, Protocol::TCP, 9100).unwrap();
        assert_eq!(&*exporter.team, "monitoring", "no label: the namespace");
        assert!(matches!(
            inv.lookup("10.96.0.10".parse().unwrap(), 1),
            Some(Holder::Service(s)) if &*s.name == "shop/api"
        ));
        assert!(inv.lookup("10.1.1.99".parse().unwrap(), 1).is_none());
    }

    #[test]
    fn mistakes_name_the_line_or_the_entry() {
        let error = parse("pods:\n  - {name: a, namespace: b, node: n, ips: [10.0.0.300]}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("inv.yaml") && error.contains("line 2"),
            "{error}"
        );
        let error = parse("nodes:\n  - {name: n, zoen: a}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `zoen`"), "{error}");
        let error =
            parse("nodes: [{name: n}]\npods:\n  - {name: a, namespace: b, node: nowhere}\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("pods[0].node") && error.contains("nowhere"),
            "{error}"
        );
        let error = parse(
            "nodes: [{name: n}]\npods:\n  - {name: a, namespace: b, node: n, ips: [10.0.0.1]}\n  - {name: c, namespace: b, node: n, ips: ['::ffff:10.0.0.1']}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("pods[1].ips") && error.contains("already held by pods[0].ips"),
            "{error}"
        );
    }

    /// What YAML accepts but no cluster has: each refused, naming the entry.
    #[test]
    fn impossible_inventories_are_refused() {
        let node = "nodes: [{name: n, pod_cidrs: [10.1.0.0/24]}]\n";
        for (yaml, expected) in [
            ("", "the inventory lists no node"),
            ("# nothing\n", "the inventory lists no node"),
            ("nodes: [{name: ''}]\n", "nodes[0].name: must not be empty"),
            ("nodes: [{name: n, pod_cidrs: [10.1.2.3/16]}]\n", "nodes[0].pod_cidrs[0]: 10.1.2.3/16 has bits set"),
            (
                "nodes: [{name: n, pod_cidrs: [10.1.0.0/16]}, {name: m, pod_cidrs: [10.1.2.0/24]}]\n",
                "nodes[1].pod_cidrs[0]: 10.1.2.0/24 overlaps 10.1.0.0/16 of nodes[0]",
            ),
            ("nodes: [{name: n, addresses: [0.0.0.0]}]\n", "nodes[0].addresses: 0.0.0.0 is no node's address"),
            (
                "pods: [{name: a, namespace: b, node: n}, {name: a, namespace: b, node: n}]\n",
                "pods[1]: pod b/a is listed twice",
            ),
            ("pods: [{name: '', namespace: b, node: n}]\n", "pods[0].name: must not be empty"),
            ("pods: [{name: a, namespace: '', node: n}]\n", "pods[0].namespace: must not be empty"),
            (
                "pods: [{name: a, namespace: b, node: n, workload: {kind: Deployment, name: ''}}]\n",
                "pods[0].workload.name: must not be empty",
            ),
            (
                "pods: [{name: a, namespace: b, node: n, host_network: true, ports: [{port: 0}]}]\n",
                "pods[0].ports[0].port: 0 is no port",
            ),
            ("namespaces: [{name: b}, {name: b}]\n", "namespaces[1]: namespace b is listed twice"),
            ("services: [{name: s, namespace: b, cluster_ips: []}]\n", "services[0].cluster_ips: give at least one ClusterIP"),
            (
                "services: [{name: s, namespace: b, cluster_ips: [10.96.0.1]}, {name: s, namespace: b, cluster_ips: [10.96.0.2]}]\n",
                "services[1]: service b/s is listed twice",
            ),
            (
                "services: [{name: s, namespace: b, cluster_ips: [10.96.0.1], node_ports: [{port: 30080}]}, {name: t, namespace: b, cluster_ips: [10.96.0.2], node_ports: [{port: 30080}]}]\n",
                "services[1].node_ports[0]: NodePort 30080 is also services[0]'s",
            ),
        ] {
            let text = if yaml.starts_with("nodes") || !yaml.contains(':') {
                yaml.to_owned()
            } else {
                format!("{node}{yaml}")
            };
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
