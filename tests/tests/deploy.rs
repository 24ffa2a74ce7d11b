//! The Kubernetes manifests against a real kube-apiserver: every overlay
//! passes `kubectl apply --dry-run=server -k` (server-side defaulting,
//! validation against the server's OpenAPI schema and admission), and what
//! the server returns keeps the promises docs/deploy.md makes: no
//! privileged container, NET_ADMIN as the only added capability, every
//! node tolerated, the config from the generated ConfigMap.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tollgate_tests::kube::{self, KubeApi};
use tollgate_tests::repo_root;

/// The Prometheus Operator's ServiceMonitor kind, so that the server knows
/// it; its schema keeps the fields the overlay uses and accepts the rest,
/// as the operator's own CRD does for fields it does not validate here.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string}
"#;

/// The Prometheus Operator's PrometheusRule kind: groups of rules, each an
/// alert with its expression (the operator validates the expressions; the
/// alerts suite runs them through promtool).
const PROMETHEUS_RULE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            expr: {type: string}
                            for: {type: string}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
"#;

/// `kubectl apply --dry-run=server -k OVERLAY -o json`: the objects as the
/// server would store them.
fn dry_run(api: &KubeApi, overlay: &str) -> Vec<Value> {
    let dir = repo_root().join("deploy/overlays").join(overlay);
    let text = api
        .kubectl(
            &[
                "apply",
                "--dry-run=server",
                "-k",
                dir.to_str().unwrap(),
                "-o",
                "json",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("overlay {overlay}: {e:#}"));
    let value: Value = serde_json::from_str(&text).unwrap();
    match value["kind"].as_str() {
        Some("List") => value["items"].as_array().unwrap().clone(),
        _ => vec![value],
    }
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(objects)))
}

/// Every container and init container of a pod template: not privileged,
/// no privilege escalation, all capabilities dropped, at most NET_ADMIN
/// added, a read-only root file system.
fn assert_least_privilege(template: &Value, what: &str) {
    let spec = &template["spec"];
    let containers = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for container in containers {
        let name = &container["name"];
        let security = &container["securityContext"];
        assert_ne!(security["privileged"], true, "{what} {name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{what} {name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{what} {name}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{what} {name}"
        );
        let added = security["capabilities"]["add"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            added.is_empty() || added == [Value::from("NET_ADMIN")],
            "{what} {name} adds {added:?}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{what} {name}"
        );
    }
}

fn assert_agent(objects: &[Value]) {
    let daemonset = object(objects, "DaemonSet");
    let template = &daemonset["spec"]["template"];
    assert_least_privilege(template, "DaemonSet");
    let spec = &template["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["serviceAccountName"], "tollgate-agent");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(
        spec["initContainers"][0]["args"],
        serde_json::json!(["conntrack", "enable", "--proc-sys", "/host/proc/sys"])
    );
    // The holder beside the agent, sharing only the pod's own volume for
    // its socket, which the agent's configuration names.
    let containers = spec["containers"].as_array().unwrap();
    let container = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    assert_eq!(
        container("holder")["args"],
        serde_json::json!(["hold", "--socket", "/run/tollgate/holder.sock"])
    );
    for name in ["holder", "agent"] {
        assert!(
            container(name)["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "holder" && m["mountPath"] == "/run/tollgate"),
            "{name} mounts the holder's volume"
        );
    }
    let holder_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "holder")
        .unwrap();
    assert!(holder_volume["emptyDir"].is_object(), "{holder_volume}");
    // The config volume names the ConfigMap the overlay generates (with
    // its content hash), so a config change rolls the agents.
    let configmap = object(objects, "ConfigMap");
    let config_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(
        config_volume["configMap"]["name"],
        configmap["metadata"]["name"]
    );
    let config = configmap["data"]["tollgate.yaml"].as_str().unwrap();
    assert!(config.contains("sinks:"));
    assert!(
        config.contains("holder_socket: /run/tollgate/holder.sock"),
        "{config}"
    );
    for o in objects {
        if o["kind"] != "Namespace"
            && o["kind"] != "ClusterRole"
            && o["kind"] != "ClusterRoleBinding"
        {
            assert_eq!(o["metadata"]["namespace"], "tollgate", "{}", o["kind"]);
        }
    }
}

#[test]
fn every_overlay_passes_a_server_side_dry_run_with_least_privilege() {
    let Some(api) = kube::require("deploy") else {
        return;
    };
    api.apply(SERVICE_MONITOR_CRD).unwrap();
    api.apply(PROMETHEUS_RULE_CRD).unwrap();

    let clickhouse = dry_run(api, "clickhouse");
    assert_eq!(
        kinds(&clickhouse),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Job",
            "Namespace",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_agent(&clickhouse);
    let job = object(&clickhouse, "Job");
    assert_least_privilege(&job["spec"]["template"], "Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "migrate"
    );
    let agent = &object(&clickhouse, "DaemonSet")["spec"]["template"]["spec"];
    let secret = agent["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "clickhouse-password")
        .unwrap();
    assert_eq!(secret["secret"]["secretName"], "tollgate-clickhouse");

    let parquet = dry_run(api, "parquet");
    assert!(!kinds(&parquet).contains(&"Job".to_owned()));
    assert_agent(&parquet);
    assert!(object(&parquet, "ConfigMap")["data"]["tollgate.yaml"]
        .as_str()
        .unwrap()
        .contains("parquet:"));

    let monitored = dry_run(api, "servicemonitor");
    assert_agent(&monitored);
    let monitor = object(&monitored, "ServiceMonitor");
    let rules = object(&monitored, "PrometheusRule");
    assert_eq!(rules["spec"]["groups"].as_array().unwrap().len(), 2);
    let service = object(&monitored, "Service");
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "Service label {label}"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

/// Each overlay's config is one the agent accepts (`tollgate agent`
/// checks its config before anything else and exits 2 on a bad one).
#[test]
fn every_overlay_config_loads() {
    for overlay in ["clickhouse", "parquet"] {
        let path = repo_root()
            .join("deploy/overlays")
            .join(overlay)
            .join("tollgate.yaml");
        let (config, _) = tollgate::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.sinks.clickhouse.is_some(), overlay == "clickhouse");
        assert_eq!(config.sinks.parquet.is_some(), overlay == "parquet");
    }
}
