//! The real-cluster scenario the end-to-end suite and the demo share:
//! tollgate's image, deployed with `kubectl apply -k` of a deploy/ overlay
//! (patched only as docs/deploy.md tells users), workloads of several teams
//! with traffic of known sizes, and the metering their pods' own nftables
//! counters give.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::clickhouse::ClickHouse;
use crate::cluster::Key;
use crate::kubernetes::{Kubernetes, CLICKHOUSE_URL, INTERNET, INTERNET6, NODES, NODE_IPS};
use crate::{oracle, repo_root, run};

/// The cluster's name in records.
pub const CLUSTER: &str = "e2e";

/// The port of a ClickHouse URL (what [`Kubernetes::relay`] forwards).
pub fn clickhouse_port(url: &str) -> anyhow::Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("ClickHouse URL {url} without a port"))
}

/// Which overlay of deploy/ is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// deploy/overlays/clickhouse, the schema Job first.
    ClickHouse,
    /// deploy/overlays/parquet: files on each node's disk, read back
    /// through sql/parquet/views.sql.
    Parquet,
}

/// An image tar made by tests/scripts/tollgate-image.sh, read back.
pub struct Image {
    /// The image's config (entrypoint, user, ports).
    pub config: serde_json::Value,
    /// The paths in its layer.
    pub files: Vec<String>,
}

impl Image {
    /// `binary` packed as `localhost/tollgate:e2e` into `tar`.
    pub fn build(binary: &Path, tar: &Path) -> anyhow::Result<Self> {
        Self::build_as(binary, "localhost/tollgate:e2e", tar)
    }

    /// `binary` packed as `reference` into `tar`.
    pub fn build_as(binary: &Path, reference: &str, tar: &Path) -> anyhow::Result<Self> {
        run(Command::new("bash")
            .arg(repo_root().join("tests/scripts/tollgate-image.sh"))
            .arg(binary)
            .arg(reference)
            .arg(tar))?;
        let listing = run(Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, tarfile, io
t = tarfile.open(sys.argv[1])
m = json.load(t.extractfile('manifest.json'))[0]
config = json.load(t.extractfile(m['Config']))
layer = tarfile.open(fileobj=io.BytesIO(t.extractfile(m['Layers'][0]).read()))
print(json.dumps({'config': config, 'files': layer.getnames()}))",
            )
            .arg(tar))?;
        let value: serde_json::Value = serde_json::from_str(&listing)?;
        Ok(Self {
            config: value["config"].clone(),
            files: value["files"]
                .as_array()
                .context("files")?
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
        })
    }
}

/// The release binary the image packs (`cargo build --release -p tollgate`).
pub fn release_binary() -> PathBuf {
    let binary = repo_root().join("target/release/tollgate");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p tollgate` (tests/scripts/test-all.sh does)",
        binary.display()
    );
    binary
}

/// `kubectl apply -k` of an overlay over deploy/overlays/clickhouse that
/// sets the image and the ClickHouse endpoint (and the read interval and
/// the VPC's ranges), then waits for the migration and the agents. Returns
/// the overlay's directory.
pub fn deploy_clickhouse(k8s: &Kubernetes, database: &str) -> anyhow::Result<String> {
    let overlay = overlay_of(
        k8s,
        "clickhouse",
        &[
            ("http://clickhouse.tollgate.svc:8123", CLICKHOUSE_URL),
            ("database: tollgate", &format!("database: {database}")),
            // The control plane and ClickHouse's relay: in region r1, in a
            // zone of no node's.
            (
                "# direct_classification: [{cidrs: [172.16.0.0/16], region: eu-west-1, zone: eu-west-1b}]",
                "direct_classification: [{cidrs: [172.30.0.1/32, 'fd00:172:30::1/128'], region: r1, zone: r1-cp}]",
            ),
        ],
        "patchesJson6902:
  - target: {group: batch, version: v1, kind: Job, name: tollgate-migrate}
    path: migrate.yaml
",
    )?;
    std::fs::write(
        Path::new(&overlay).join("migrate.yaml"),
        format!(
            "- op: replace\n  path: /spec/template/spec/containers/0/args\n  value: [migrate, --clickhouse, {CLICKHOUSE_URL}, --database, {database}, --password-file, /etc/tollgate/clickhouse/password]\n"
        ),
    )?;
    k8s.kubectl(&["create", "namespace", "tollgate"], None)?;
    k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "create",
            "secret",
            "generic",
            "tollgate-clickhouse",
            "--from-literal=password=",
        ],
        None,
    )?;
    // As docs/deploy.md says: the schema first, then the agents.
    k8s.kubectl(
        &[
            "apply",
            "-k",
            &overlay,
            "-l",
            "app.kubernetes.io/component=migrate",
        ],
        None,
    )?;
    k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "wait",
            "--for=condition=complete",
            "job/tollgate-migrate",
            "--timeout=120s",
        ],
        None,
    )?;
    k8s.kubectl(&["apply", "-k", &overlay], None)?;
    agents_rolled_out(k8s)?;
    Ok(overlay)
}

/// `kubectl apply -k` of an overlay over deploy/overlays/parquet that sets
/// the image (and the read interval and the VPC's ranges); the agents
/// write to each node's /var/lib/tollgate/parquet. Returns the overlay's
/// directory.
pub fn deploy_parquet(k8s: &Kubernetes) -> anyhow::Result<String> {
    let overlay = overlay_of(k8s, "parquet", &[], "")?;
    k8s.kubectl(&["apply", "-k", &overlay], None)?;
    agents_rolled_out(k8s)?;
    Ok(overlay)
}

/// An overlay of `deploy/overlays/{base}` in the cluster's directory: the
/// test's image, and the base's tollgate.yaml with the cluster's name, the
/// VPC's ranges, a 2 s interval and `edits`; `extra` is appended to the
/// kustomization.
fn overlay_of(
    k8s: &Kubernetes,
    base: &str,
    edits: &[(&str, &str)],
    extra: &str,
) -> anyhow::Result<String> {
    let overlay = k8s.path().join("deploy");
    std::fs::create_dir_all(&overlay)?;
    let base = repo_root().join("deploy/overlays").join(base);
    let mut config = std::fs::read_to_string(base.join("tollgate.yaml"))?;
    let common = [
        ("cluster: prod-eu", format!("cluster: {CLUSTER}")),
        (
            "in_region: [10.0.0.0/8]",
            "in_region: [10.0.0.0/8, 172.30.0.0/24, 'fd00::/8']".to_owned(),
        ),
        ("interval_seconds: 10", "interval_seconds: 2".to_owned()),
    ];
    let edits = common
        .iter()
        .map(|(from, to)| (*from, to.as_str()))
        .chain(edits.iter().copied());
    for (from, to) in edits {
        ensure!(
            config.contains(from),
            "{}/tollgate.yaml has no {from:?} any more: update this test's edits",
            base.display()
        );
        config = config.replace(from, to);
    }
    std::fs::write(overlay.join("tollgate.yaml"), config)?;
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "namespace: tollgate
bases:
  - {base}
images:
  - name: tollgate
    newName: localhost/tollgate
    newTag: e2e
configMapGenerator:
  - name: tollgate-config
    behavior: replace
    files:
      - tollgate.yaml
{extra}",
            base = relative(&overlay, &base)
        ),
    )?;
    Ok(overlay.to_str().context("path")?.to_owned())
}

/// Waits until every node's agent runs the DaemonSet's template, ready.
pub fn agents_rolled_out(k8s: &Kubernetes) -> anyhow::Result<()> {
    k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "rollout",
            "status",
            "daemonset/tollgate-agent",
            "--timeout=120s",
        ],
        None,
    )?;
    Ok(())
}

/// sql/parquet/views.sql in `database`, over every node's Parquet
/// directory, once the agents have written files (the views take their
/// columns from them).
pub fn parquet_views(k8s: &Kubernetes, ch: &ClickHouse, database: &str) -> anyhow::Result<()> {
    let nodes = k8s.path().join("nodes");
    k8s.wait_until(
        "the agents wrote Parquet files",
        Duration::from_secs(60),
        || {
            let mut files = 0;
            for node in NODES {
                let dir = nodes.join(node.0).join("bind/tollgate/parquet");
                files += crate::files_under(&dir)
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                    .count();
            }
            Ok(files > 0)
        },
    )?;
    ch.query(&format!("CREATE DATABASE {database}"))?;
    let views = std::fs::read_to_string(repo_root().join("sql/parquet/views.sql"))?;
    let dir = format!("{}/*/bind/tollgate/parquet", nodes.display());
    ch.run_script(&views, &[("database", database), ("param_dir", &dir)])
}

/// `to` as a path relative to directory `from` (kustomize wants bases
/// relative).
fn relative(from: &Path, to: &Path) -> String {
    let up = "../".repeat(from.components().count() - 1);
    format!("{up}{}", to.display().to_string().trim_start_matches('/'))
}

/// The agents' pods: name and node.
pub fn agents(k8s: &Kubernetes) -> anyhow::Result<Vec<(String, String)>> {
    let pods = k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
        ],
        None,
    )?;
    Ok(pods
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(pod, node)| (pod.to_owned(), node.to_owned()))
        .collect())
}

/// What the deployment must look like on every node: conntrack accounting
/// on (turned on by the init container, or before it by the uplink
/// counters of [`crate::uplink`]); the agent not privileged, holding
/// NET_ADMIN only; a clean log; /metrics answering on each node's address
/// (the ServiceMonitor's targets, from the headless Service's endpoints).
pub fn check_deployment(k8s: &Kubernetes) -> anyhow::Result<()> {
    let pods = agents(k8s)?;
    ensure!(pods.len() == NODES.len(), "agents: {pods:?}");
    for (pod, node) in &pods {
        let accounting = run(k8s
            .on_node(node, "cat")
            .arg("/proc/sys/net/netfilter/nf_conntrack_acct"))?;
        ensure!(
            accounting.trim() == "1",
            "{node}: nf_conntrack_acct is {accounting:?}"
        );
        let pid = k8s.container_pid("tollgate", pod, Some("agent"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .context("no CapEff")?
            .trim();
        // CAP_NET_ADMIN is bit 12, and nothing else.
        ensure!(
            effective == "0000000000001000",
            "{node}: agent's effective capabilities {effective}, not NET_ADMIN alone"
        );
        let log = k8s.kubectl(&["-n", "tollgate", "logs", pod, "-c", "agent"], None)?;
        let noisy: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        ensure!(noisy.is_empty(), "{node}: agent log is not clean:\n{log}");
    }
    let endpoints = k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "get",
            "endpoints",
            "tollgate-agent",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        None,
    )?;
    let targets: Vec<&str> = endpoints.split_whitespace().collect();
    ensure!(targets.len() == NODES.len(), "metrics targets: {targets:?}");
    for target in targets {
        let metrics = run(k8s
            .on_internet("curl")
            .args(["-sf", &format!("http://{target}:9102/metrics")]))?;
        ensure!(
            metrics.contains("tollgate_last_read_timestamp_seconds"),
            "{target}:9102/metrics has no tollgate_last_read_timestamp_seconds"
        );
    }
    Ok(())
}

/// The namespaces of the test's workloads.
pub const NAMESPACES: [&str; 4] = ["shop", "data", "analytics", "monitoring"];

/// The test's workloads, each pinned to a node (the log-shipper DaemonSet
/// on all three). Teams come from namespace labels, or a pod label.
const WORKLOADS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: data, labels: {team: data}}
---
apiVersion: v1
kind: Namespace
metadata: {name: analytics, labels: {team: data}}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring, labels: {team: platform}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend}}
    spec: {nodeSelector: {kubernetes.io/hostname: node-a}, SERVER}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api, team: payments}}
    spec: {nodeSelector: {kubernetes.io/hostname: node-b}, SERVER}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: api}
  ports:
    - {name: tcp, port: 80, targetPort: 5001, protocol: TCP}
    - {name: udp, port: 81, targetPort: 5002, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: api-nodeport-cluster, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {app: api}
  ports: [{port: 80, targetPort: 5001, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: api-nodeport-local, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: api}
  ports: [{port: 80, targetPort: 5001, nodePort: 30081, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: node-probe, namespace: monitoring}
spec:
  hostNetwork: true
  nodeSelector: {kubernetes.io/hostname: node-c}
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: "localhost/python:test", imagePullPolicy: Never, args: [-c, "import time; time.sleep(100000)"]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {nodeSelector: {kubernetes.io/hostname: node-b}, SERVER}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: archive, namespace: data}
spec:
  selector: {matchLabels: {app: archive}}
  template:
    metadata: {labels: {app: archive}}
    spec: {nodeSelector: {kubernetes.io/hostname: node-c}, SERVER}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: log-shipper, namespace: monitoring}
spec:
  selector: {matchLabels: {app: log-shipper}}
  template:
    metadata: {labels: {app: log-shipper}}
    spec: {SERVER}
"#;

/// Every pod's container: traffic.py's TCP sink and UDP echo.
const SERVER: &str = r#"terminationGracePeriodSeconds: 1, containers: [{name: main, image: "localhost/python:test", imagePullPolicy: Never, args: [/usr/bin/traffic.py, serve, --tcp-port, "5001", --udp-port, "5002"]}]"#;

/// The Job's client port.
const JOB_PORT: u16 = 40100;

/// A CronJob whose Job (created from it at once) sends to `db`.
fn cron_job(db: &str) -> String {
    format!(
        r#"apiVersion: batch/v1beta1
kind: CronJob
metadata: {{name: report, namespace: analytics}}
spec:
  schedule: "0 0 1 1 *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          nodeSelector: {{kubernetes.io/hostname: node-a}}
          containers:
            - name: main
              image: localhost/python:test
              imagePullPolicy: Never
              args: [/usr/bin/traffic.py, tcp, --dst, "{db}", --port, "5001", --sport, "{JOB_PORT}", --bytes, "150000"]
"#
    )
}

/// A pod of the test: where it runs and what it is.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its team (from its namespace's label, or its own).
    pub team: &'static str,
    /// Its workload's name.
    pub workload: &'static str,
    /// Its node, an index into [`NODES`].
    pub node: usize,
    /// Its address.
    pub ip: IpAddr,
    /// Its IPv6 address, on a dual-stack cluster.
    pub ip6: Option<IpAddr>,
    /// The PID whose network namespace is the pod's.
    pub pid: u32,
}

impl Pod {
    /// Five short TCP connections from this pod to `to`, port 5001, 3,000
    /// bytes each, from client port `first` on.
    pub fn five_short_connections(&self, to: IpAddr, first: u16) -> anyhow::Result<()> {
        let (to, first) = (to.to_string(), first.to_string());
        run(traffic_in(self.pid).args([
            "short",
            "--dst",
            &to,
            "--port",
            "5001",
            "--sport-base",
            &first,
            "--n",
            "5",
            "--bytes",
            "3000",
        ]))
        .map(drop)
    }
}

/// `traffic.py` run in the network namespace of process `pid`.
pub fn traffic_in(pid: u32) -> Command {
    let mut command = Command::new("nsenter");
    command
        .args(["-t", &pid.to_string(), "-n", "python3"])
        .arg(repo_root().join("tests/scripts/traffic.py"));
    command
}

/// A pod gone by the time counters are read, which talked only to pods
/// with counters, from `port`: its bytes are theirs for its address and
/// port.
#[derive(Debug)]
pub struct Visitor {
    /// The pod (no PID: it is gone).
    pub pod: Pod,
    /// Its client port.
    pub port: u16,
}

/// The teams' workloads, running, each pod's nftables counters installed.
pub struct Workloads {
    /// Every pod that keeps running, with counters.
    pub pods: Vec<Pod>,
    /// The api Service's ClusterIP.
    pub service: IpAddr,
    /// Its IPv6 ClusterIP, on a dual-stack cluster.
    pub service6: Option<IpAddr>,
    /// The CronJob's Job, then the pods of the address-reuse test.
    pub visitors: Vec<Visitor>,
    /// The PID of the host-network pod on node c.
    pub probe: u32,
}

impl Workloads {
    /// Applies the workloads, waits for them, installs each pod's counters
    /// and runs the CronJob's Job to completion.
    pub fn start(k8s: &Kubernetes) -> anyhow::Result<Self> {
        k8s.apply(&WORKLOADS.replace("SERVER", SERVER))?;
        let kinds = [
            ("shop", "frontend", "web", "deployment/frontend"),
            ("shop", "api", "payments", "deployment/api"),
            ("data", "db", "data", "statefulset/db"),
            ("data", "archive", "data", "deployment/archive"),
            (
                "monitoring",
                "log-shipper",
                "platform",
                "daemonset/log-shipper",
            ),
        ];
        let mut pods = Vec::new();
        for (namespace, app, team, object) in kinds {
            k8s.kubectl(
                &[
                    "-n",
                    namespace,
                    "rollout",
                    "status",
                    object,
                    "--timeout=120s",
                ],
                None,
            )?;
            for pod in pods_of(k8s, namespace, app)? {
                let pid = k8s.pod_pid(namespace, &pod.0)?;
                oracle::install_in_process(pid)?;
                pods.push(Pod {
                    namespace: namespace.to_owned(),
                    team,
                    workload: app,
                    node: pod.1,
                    ip: pod.2,
                    ip6: pod.3,
                    pid,
                });
            }
        }
        let service = k8s
            .kubectl(
                &[
                    "-n",
                    "shop",
                    "get",
                    "service",
                    "api",
                    "-o",
                    "jsonpath={.spec.clusterIPs[*]}",
                ],
                None,
            )?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let (service, service6) = match service[..] {
            [v4] => (v4, None),
            [v4, v6] => (v4, Some(v6)),
            _ => anyhow::bail!("the api Service's addresses: {service:?}"),
        };
        let db = pods.iter().find(|p| p.workload == "db").context("db")?.ip;
        k8s.apply(&cron_job(&db.to_string()))?;
        k8s.kubectl(
            &[
                "-n",
                "analytics",
                "create",
                "job",
                "report-manual",
                "--from=cronjob/report",
            ],
            None,
        )?;
        k8s.kubectl(
            &[
                "-n",
                "analytics",
                "wait",
                "--for=condition=complete",
                "job/report-manual",
                "--timeout=120s",
            ],
            None,
        )?;
        // The Job's pod is gone: its address is the one db saw the Job's port from.
        let db = pods.iter().find(|p| p.workload == "db").context("db")?;
        let ip = oracle::read_in_process(db.pid)?
            .into_keys()
            .find(|key| key.sport == JOB_PORT && key.dst == db.ip)
            .context("db saw nothing from the Job")?
            .src;
        let job = Visitor {
            pod: Pod {
                namespace: "analytics".into(),
                team: "data",
                workload: "report",
                node: 0,
                ip,
                ip6: None,
                pid: 0,
            },
            port: JOB_PORT,
        };
        k8s.kubectl(
            &[
                "-n",
                "monitoring",
                "wait",
                "--for=condition=ready",
                "pod/node-probe",
                "--timeout=120s",
            ],
            None,
        )?;
        let probe = k8s.pod_pid("monitoring", "node-probe")?;
        Ok(Self {
            pods,
            service,
            service6,
            visitors: vec![job],
            probe,
        })
    }

    /// Whether every pod and the api Service have IPv6 addresses too.
    pub fn dual_stack(&self) -> bool {
        self.service6.is_some() && self.pods.iter().all(|p| p.ip6.is_some())
    }

    /// The pod of `workload` on node `node`.
    pub fn pod(&self, workload: &str, node: usize) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.workload == workload && p.node == node)
            .unwrap_or_else(|| panic!("no {workload} pod on node {node}"))
    }

    /// Traffic of known sizes, TCP and UDP: same zone, cross-zone (also
    /// through the ClusterIP Service), cross-region, and to the internet.
    pub fn traffic(&self, k8s: &Kubernetes) -> anyhow::Result<()> {
        let mut internet = k8s
            .on_internet("python3")
            .arg(repo_root().join("tests/scripts/traffic.py"))
            .args(["serve", "--tcp-port", "5001", "--udp-port", "5002"])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        let frontend = self.pod("frontend", 0);
        let api = self.pod("api", 1);
        let db = self.pod("db", 1);
        let archive = self.pod("archive", 2);
        let service = self.service.to_string();
        let (api_ip, db_ip, archive_ip) = (
            api.ip.to_string(),
            db.ip.to_string(),
            archive.ip.to_string(),
        );
        let shipper_a = self.pod("log-shipper", 0).ip.to_string();
        let v6 = |pod: &Pod| pod.ip6.map(|ip| ip.to_string()).unwrap_or_default();
        let (service6, db6, archive6, frontend6) = (
            self.service6.map(|ip| ip.to_string()).unwrap_or_default(),
            v6(db),
            v6(archive),
            v6(frontend),
        );
        let mut flows: Vec<(&Pod, Vec<&str>)> = vec![
            (frontend, tcp(&service, "80", "41000", "300000")),
            (frontend, udp(&service, "81", "41001", "40", "700")),
            (frontend, udp(&shipper_a, "5002", "41002", "50", "400")),
            (api, tcp(&db_ip, "5001", "41003", "200000")),
            (db, tcp(&archive_ip, "5001", "41004", "400000")),
            (db, udp(&archive_ip, "5002", "41005", "30", "1000")),
            (archive, tcp(INTERNET, "5001", "41006", "250000")),
            (archive, udp(INTERNET, "5002", "41007", "20", "900")),
            (
                self.pod("log-shipper", 2),
                tcp(&db_ip, "5001", "41008", "100000"),
            ),
            (
                self.pod("log-shipper", 1),
                udp(&api_ip, "5002", "41009", "25", "300"),
            ),
        ];
        // IPv6 on a dual-stack cluster: through the Service, pod to pod
        // in every category, and to the internet host's IPv6 address.
        if self.dual_stack() {
            flows.extend([
                (frontend, tcp(&service6, "80", "41030", "180000")),
                (frontend, udp(&db6, "5002", "41031", "30", "500")),
                (db, tcp(&archive6, "5001", "41032", "220000")),
                (archive, tcp(INTERNET6, "5001", "41033", "130000")),
                (archive, udp(INTERNET6, "5002", "41034", "10", "700")),
                (
                    self.pod("log-shipper", 0),
                    tcp(&frontend6, "5001", "41035", "50000"),
                ),
            ]);
        }
        let from_internet = [
            // NodePort, policy Cluster, on node a: forwarded to api on node b.
            tcp(NODE_IPS[0], "30080", "41020", "120000"),
            // NodePort, policy Local, on api's node.
            tcp(NODE_IPS[1], "30081", "41021", "90000"),
        ];
        let traffic = repo_root().join("tests/scripts/traffic.py");
        let in_namespace_of = |pid: u32, args: &[&str]| run(traffic_in(pid).args(args)).map(drop);
        let result = flows
            .iter()
            .try_for_each(|(pod, args)| in_namespace_of(pod.pid, args))
            .and_then(|()| {
                from_internet.iter().try_for_each(|args| {
                    run(k8s.on_internet("python3").arg(&traffic).args(args)).map(drop)
                })
            })
            // The host-network pod on node c: its traffic is its node's.
            .and_then(|()| in_namespace_of(self.probe, &tcp(&db_ip, "5001", "41022", "80000")));
        let _ = internet.kill();
        let _ = internet.wait();
        result
    }

    /// The metering a correct agent produces, from each pod's own nftables
    /// counters: what a pod sent and received, by where its peer runs. A
    /// visitor's bytes are its peers' counters for its address and port.
    pub fn expected(&self) -> anyhow::Result<BTreeMap<Key, u64>> {
        self.expected_of(|_| true)
    }

    /// [`Workloads::expected`] of the flows `wanted` keeps.
    pub fn expected_of(
        &self,
        wanted: impl Fn(&oracle::FlowKey) -> bool,
    ) -> anyhow::Result<BTreeMap<Key, u64>> {
        let mut nodes: HashMap<IpAddr, usize> = self.pods.iter().map(|p| (p.ip, p.node)).collect();
        nodes.extend(self.pods.iter().filter_map(|p| Some((p.ip6?, p.node))));
        nodes.extend(self.visitors.iter().map(|v| (v.pod.ip, v.pod.node)));
        nodes.insert(self.service, self.pod("api", 1).node);
        if let Some(service6) = self.service6 {
            nodes.insert(service6, self.pod("api", 1).node);
        }
        // A node's addresses: its own, and over the overlay its VXLAN
        // device's (the first of its pod range), which forwarded traffic
        // leaves from.
        let mut node_addresses = HashMap::new();
        for (index, ip) in NODE_IPS.iter().enumerate() {
            node_addresses.insert(ip.parse::<IpAddr>()?, index);
            node_addresses.insert(format!("10.244.{}.0", index + 1).parse()?, index);
        }
        nodes.extend(&node_addresses);
        let api = self.pod("api", 1).ip;
        let mut expected = BTreeMap::new();
        let mut add = |pod: &Pod, remote: &IpAddr, direction: &str, bytes: u64| {
            let flip = if direction == "out" { "in" } else { "out" };
            let mut legs = match nodes.get(remote) {
                Some(&node) => vec![(category(pod.node, node), direction)],
                None if [INTERNET, INTERNET6].contains(&remote.to_string().as_str()) => {
                    vec![("internet", direction)]
                }
                None => return Err(anyhow::anyhow!("{pod:?} talked to {remote}")),
            };
            // api hears from a node's address only through the NodePort of
            // policy Cluster: the client's leg, at that node, is api's
            // internet traffic; the hop is api's cross-zone at api's node
            // and at that node, which sent what api received.
            if pod.ip == api && node_addresses.contains_key(remote) {
                legs.push(("internet", direction));
                legs.push((legs[0].0, flip));
            }
            for (category, direction) in legs {
                *expected
                    .entry((
                        pod.team.to_owned(),
                        pod.namespace.clone(),
                        pod.workload.to_owned(),
                        category.to_owned(),
                        direction.to_owned(),
                    ))
                    .or_insert(0) += bytes;
            }
            Ok(())
        };
        for pod in &self.pods {
            for (key, count) in oracle::read_in_process(pod.pid)? {
                if !key.proto.starts_with("tcp") && !key.proto.starts_with("udp") || !wanted(&key) {
                    continue;
                }
                let own = |ip: IpAddr| ip == pod.ip || Some(ip) == pod.ip6;
                if own(key.src) {
                    add(pod, &key.dst, "out", count.bytes)?;
                } else if own(key.dst) {
                    add(pod, &key.src, "in", count.bytes)?;
                }
                for visitor in &self.visitors {
                    if (key.src, key.sport) == (visitor.pod.ip, visitor.port) {
                        add(&visitor.pod, &key.dst, "out", count.bytes)?;
                    } else if (key.dst, key.dport) == (visitor.pod.ip, visitor.port) {
                        add(&visitor.pod, &key.src, "in", count.bytes)?;
                    }
                }
            }
        }
        Ok(expected)
    }
}

fn tcp<'a>(dst: &'a str, port: &'a str, sport: &'a str, bytes: &'a str) -> Vec<&'a str> {
    vec![
        "tcp", "--dst", dst, "--port", port, "--sport", sport, "--bytes", bytes,
    ]
}

fn udp<'a>(
    dst: &'a str,
    port: &'a str,
    sport: &'a str,
    count: &'a str,
    size: &'a str,
) -> Vec<&'a str> {
    vec![
        "udp", "--dst", dst, "--port", port, "--sport", sport, "--count", count, "--size", size,
    ]
}

fn category(a: usize, b: usize) -> &'static str {
    let ((_, zone_a, region_a), (_, zone_b, region_b)) = (NODES[a], NODES[b]);
    if zone_a == zone_b {
        "same_zone"
    } else if region_a == region_b {
        "cross_zone"
    } else {
        "cross_region"
    }
}

/// A pod's name, node index, address and IPv6 address (dual-stack).
type PodLine = (String, usize, IpAddr, Option<IpAddr>);

/// The pods of `namespace` with label app=`app`.
fn pods_of(k8s: &Kubernetes, namespace: &str, app: &str) -> anyhow::Result<Vec<PodLine>> {
    k8s.kubectl(
        &[
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIPs[*].ip}{\"\\n\"}{end}",
        ],
        None,
    )?
    .lines()
    .map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(matches!(f.len(), 3 | 4), "pod line {line:?}");
        let node = NODES
            .iter()
            .position(|n| n.0 == f[1])
            .with_context(|| format!("unknown node {}", f[1]))?;
        let ip6 = f.get(3).map(|ip| ip.parse()).transpose()?;
        Ok((f[0].to_owned(), node, f[2].parse()?, ip6))
    })
    .collect()
}
