//! tollgate on a real Kubernetes cluster: its image loaded into three
//! nodes' containerd, deployed with `kubectl apply -k` of the ClickHouse
//! overlay (patched only for image and endpoint, as docs/deploy.md tells
//! users), metering workloads of several teams whose traffic each pod's own
//! nftables counters measure. Once over routed pod networks, once over a
//! VXLAN overlay.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use tollgate_tests::cluster::{differences, metering_of, Key};
use tollgate_tests::kubernetes::{Kubernetes, Underlay, CLICKHOUSE_URL, INTERNET, NODES, NODE_IPS};
use tollgate_tests::{clickhouse, oracle, repo_root, run};

/// The cluster's name in records.
const CLUSTER: &str = "e2e";

#[test]
fn tollgate_meters_a_real_cluster_over_routed_pod_networks() {
    end_to_end(Underlay::Routed).unwrap();
}

#[test]
fn tollgate_meters_a_real_cluster_over_a_vxlan_overlay() {
    end_to_end(Underlay::Overlay).unwrap();
}

#[test]
fn the_image_is_the_dockerfiles_image() {
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let instruction = |name: &str| -> String {
        dockerfile
            .lines()
            .filter_map(|line| line.strip_prefix(name))
            .next_back()
            .unwrap_or_else(|| panic!("deploy/Dockerfile has no {name}"))
            .trim()
            .to_owned()
    };
    let entrypoint: serde_json::Value = serde_json::from_str(&instruction("ENTRYPOINT ")).unwrap();
    let binary = instruction("COPY --from=build ");
    let binary = binary.split_whitespace().last().unwrap();
    let tar = std::env::temp_dir().join(format!("tollgate-image-{}.tar", std::process::id()));
    let image = Image::build(&tollgate_tests::tollgate::binary(), &tar).unwrap();
    let config = &image.config["config"];
    assert_eq!(config["Entrypoint"], entrypoint);
    assert_eq!(config["User"].as_str(), Some(instruction("USER ").as_str()));
    let port = format!("{}/tcp", instruction("EXPOSE "));
    assert!(
        config["ExposedPorts"].get(&port).is_some(),
        "image exposes {:?}, the Dockerfile {port}",
        config["ExposedPorts"]
    );
    assert!(
        image
            .files
            .iter()
            .any(|f| f == binary.trim_start_matches('/')),
        "the image has no {binary}"
    );
    std::fs::remove_file(&tar).unwrap();
}

/// An image tar made by tests/scripts/tollgate-image.sh, read back.
struct Image {
    config: serde_json::Value,
    files: Vec<String>,
}

impl Image {
    fn build(binary: &Path, tar: &Path) -> anyhow::Result<Self> {
        Self::build_as(binary, "localhost/tollgate:e2e", tar)
    }

    fn build_as(binary: &Path, reference: &str, tar: &Path) -> anyhow::Result<Self> {
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
fn release_binary() -> PathBuf {
    let binary = repo_root().join("target/release/tollgate");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p tollgate` (tests/scripts/test-all.sh does)",
        binary.display()
    );
    binary
}

fn end_to_end(underlay: Underlay) -> anyhow::Result<()> {
    if !tollgate_tests::kubernetes::require("kubernetes") {
        return Ok(());
    }
    let Some(ch) = clickhouse::require("kubernetes") else {
        return Ok(());
    };
    // One file per test: the suite's tests run side by side until one
    // holds the cluster.
    let image = std::env::temp_dir().join(format!(
        "tollgate-e2e-{}-{underlay:?}.tar",
        std::process::id()
    ));
    Image::build(&release_binary(), &image)?;
    let k8s = Kubernetes::up(underlay)?;
    k8s.load(&image)?;
    let port: u16 = ch
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .context("ClickHouse URL without a port")?;
    k8s.relay(port)?;
    let database = ch.fresh_database("kubernetes");
    deploy(&k8s, &database)?;
    check_deployment(&k8s)?;
    let workloads = Workloads::start(&k8s)?;
    workloads.traffic(&k8s)?;
    let expected = workloads.expected()?;
    let mut last = Vec::new();
    let converged = k8s.wait_until("metering equals nftables", Duration::from_secs(90), || {
        let mut metered = metering_of(ch, &database, CLUSTER)?;
        // Only the test's workloads: nodes, agents and the migration Job talk too.
        metered.retain(|key, _| NAMESPACES.contains(&key.1.as_str()));
        last = differences(&expected, &metered);
        Ok(last.is_empty())
    });
    if converged.is_err() {
        let rows = ch.query(&format!(
            "SELECT node, local_ip, local_namespace, local_workload_kind, local_workload, remote_ip, \
             remote_kind, remote_workload, category, sum(bytes_sent), sum(bytes_received) \
             FROM {database}.flows GROUP BY ALL ORDER BY ALL FORMAT PrettyCompactMonoBlock"
        ));
        bail!(
            "{underlay:?}: tollgate's metering differs from the pods' nftables counters:\n{}\n\
             the Job's pod was {}; flows:\n{}",
            last.join("\n"),
            workloads.job.ip,
            rows.unwrap_or_else(|e| format!("{e:#}"))
        );
    }
    if underlay == Underlay::Routed {
        rolling_update(&k8s, ch, &database, &workloads)?;
    }
    std::fs::remove_file(&image)?;
    Ok(())
}

/// The DaemonSet updated to a new image tag (the default strategy, one
/// node at a time) while a long connection runs across it and short ones
/// open and close throughout. Nothing may be counted twice, and the long
/// connection and everything else must be exact; short connections that
/// end while a node has no agent lose their bytes since the last read
/// (docs/architecture.md, limits): the suite prints what the update cost.
fn rolling_update(
    k8s: &Kubernetes,
    ch: &clickhouse::ClickHouse,
    database: &str,
    workloads: &Workloads,
) -> anyhow::Result<()> {
    let next = std::env::temp_dir().join(format!("tollgate-e2e-next-{}.tar", std::process::id()));
    Image::build_as(&release_binary(), "localhost/tollgate:e2e-next", &next)?;
    k8s.load(&next)?;
    std::fs::remove_file(&next)?;
    let traffic = repo_root().join("tests/scripts/traffic.py");
    let (frontend, db, archive) = (
        workloads.pod("frontend", 0),
        workloads.pod("db", 1),
        workloads.pod("archive", 2),
    );
    let (db_ip, archive_ip) = (db.ip.to_string(), archive.ip.to_string());
    let in_pod = |pod: &Pod| {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &pod.pid.to_string(), "-n", "python3"])
            .arg(&traffic);
        command
    };
    let mut long = in_pod(db)
        .args([
            "tcp",
            "--dst",
            &archive_ip,
            "--port",
            "5001",
            "--sport",
            "41100",
        ])
        .args(["--bytes", "2000000", "--chunks", "80", "--pause", "0.5"])
        .spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    k8s.kubectl(
        &[
            "-n",
            "tollgate",
            "set",
            "image",
            "daemonset/tollgate-agent",
            "agent=localhost/tollgate:e2e-next",
            "enable-conntrack-accounting=localhost/tollgate:e2e-next",
        ],
        None,
    )?;
    let (mut batches, mut rolled_out) = (0u16, None);
    while rolled_out.is_none_or(|at: std::time::Instant| at.elapsed() < Duration::from_secs(3)) {
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "the DaemonSet did not roll out in 180 s"
        );
        let base = (42000 + 5 * batches).to_string();
        run(in_pod(frontend).args([
            "short",
            "--dst",
            &db_ip,
            "--port",
            "5001",
            "--sport-base",
            &base,
            "--n",
            "5",
            "--bytes",
            "3000",
        ]))?;
        batches += 1;
        std::thread::sleep(Duration::from_millis(200));
        if rolled_out.is_none()
            && k8s
                .kubectl(
                    &[
                        "-n",
                        "tollgate",
                        "rollout",
                        "status",
                        "daemonset/tollgate-agent",
                        "--watch=false",
                    ],
                    None,
                )?
                .contains("successfully rolled out")
        {
            rolled_out = Some(std::time::Instant::now());
        }
    }
    let rollout = started.elapsed();
    ensure!(long.wait()?.success(), "the long connection failed");
    let expected = workloads.expected()?;
    // The short connections' keys may fall short; every other is exact.
    let short = |key: &Key| key.3 == "cross_zone" && (key.2 == "frontend" || key.2 == "db");
    let mut last = (Vec::new(), 0u64);
    let settled = k8s.wait_until(
        "metering settles after the update",
        Duration::from_secs(60),
        || {
            let mut metered = metering_of(ch, database, CLUSTER)?;
            metered.retain(|key, _| NAMESPACES.contains(&key.1.as_str()));
            let keys: std::collections::BTreeSet<&Key> =
                expected.keys().chain(metered.keys()).collect();
            let mut problems = Vec::new();
            let mut lost = 0;
            for key in keys {
                let (want, got) = (
                    expected.get(key).copied().unwrap_or(0),
                    metered.get(key).copied().unwrap_or(0),
                );
                if got > want {
                    problems.push(format!(
                        "{key:?}: tollgate {got}, nftables {want}: counted twice"
                    ));
                } else if got < want && short(key) {
                    lost += want - got;
                } else if got < want {
                    problems.push(format!("{key:?}: tollgate {got}, nftables {want}"));
                }
            }
            let done = problems.is_empty();
            last = (problems, lost);
            Ok(done)
        },
    );
    ensure!(
        settled.is_ok(),
        "after a rolling update of the DaemonSet:\n{}",
        last.0.join("\n")
    );
    let short_bytes: u64 = expected
        .iter()
        .filter(|(key, _)| short(key))
        .map(|(_, bytes)| bytes)
        .sum();
    eprintln!(
        "rolling update of 3 nodes in {:.0} s with {} short connections and a long one running: \
         {} of {short_bytes} bytes of the frontend-db keys not metered (connections that ended \
         while their node had no agent); nothing counted twice; everything else exact",
        rollout.as_secs_f64(),
        batches * 5,
        last.1
    );
    Ok(())
}

/// `kubectl apply -k` of an overlay over deploy/overlays/clickhouse that
/// sets the image and the ClickHouse endpoint (and the read interval and
/// the VPC's ranges), then waits for the migration and the agents.
fn deploy(k8s: &Kubernetes, database: &str) -> anyhow::Result<()> {
    let overlay = k8s.path().join("deploy");
    std::fs::create_dir_all(&overlay)?;
    let base = repo_root().join("deploy/overlays/clickhouse");
    let config = std::fs::read_to_string(base.join("tollgate.yaml"))?
        .replace("http://clickhouse.tollgate.svc:8123", CLICKHOUSE_URL)
        .replace("database: tollgate", &format!("database: {database}"))
        .replace("cluster: prod-eu", &format!("cluster: {CLUSTER}"))
        .replace(
            "in_region: [10.0.0.0/8]",
            "in_region: [10.0.0.0/8, 172.30.0.0/24]",
        )
        .replace("interval_seconds: 10", "interval_seconds: 2");
    ensure!(
        config.contains(CLICKHOUSE_URL) && config.contains("interval_seconds: 2"),
        "deploy/overlays/clickhouse/tollgate.yaml changed: update this test's edits"
    );
    std::fs::write(overlay.join("tollgate.yaml"), config)?;
    std::fs::write(
        overlay.join("migrate.yaml"),
        format!(
            "- op: replace\n  path: /spec/template/spec/containers/0/args\n  value: [migrate, --clickhouse, {CLICKHOUSE_URL}, --database, {database}, --password-file, /etc/tollgate/clickhouse/password]\n"
        ),
    )?;
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
patchesJson6902:
  - target: {{group: batch, version: v1, kind: Job, name: tollgate-migrate}}
    path: migrate.yaml
",
            base = relative(&overlay, &base)
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
    let overlay = overlay.to_str().context("path")?;
    k8s.kubectl(
        &[
            "apply",
            "-k",
            overlay,
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
    k8s.kubectl(&["apply", "-k", overlay], None)?;
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

/// `to` as a path relative to directory `from` (kustomize wants bases
/// relative).
fn relative(from: &Path, to: &Path) -> String {
    let up = "../".repeat(from.components().count() - 1);
    format!("{up}{}", to.display().to_string().trim_start_matches('/'))
}

/// What the deployment must look like on every node: conntrack accounting
/// turned on by the init container; the agent not privileged, holding
/// NET_ADMIN only; a clean log; /metrics answering on each node's address
/// (the ServiceMonitor's targets, from the headless Service's endpoints).
fn check_deployment(k8s: &Kubernetes) -> anyhow::Result<()> {
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
    let pods: Vec<(&str, &str)> = pods.lines().filter_map(|l| l.split_once(' ')).collect();
    ensure!(pods.len() == NODES.len(), "agents: {pods:?}");
    for (pod, node) in &pods {
        let accounting = run(k8s
            .on_node(node, "cat")
            .arg("/proc/sys/net/netfilter/nf_conntrack_acct"))?;
        ensure!(
            accounting.trim() == "1",
            "{node}: nf_conntrack_acct is {accounting:?}"
        );
        let pid = k8s.pod_pid("tollgate", pod)?;
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
const NAMESPACES: [&str; 4] = ["shop", "data", "analytics", "monitoring"];

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
struct Pod {
    namespace: String,
    team: &'static str,
    workload: &'static str,
    node: usize,
    ip: IpAddr,
    /// The PID whose network namespace is the pod's.
    pid: u32,
}

struct Workloads {
    pods: Vec<Pod>,
    service: IpAddr,
    job: Pod,
    /// The PID of the host-network pod on node c.
    probe: u32,
}

impl Workloads {
    fn start(k8s: &Kubernetes) -> anyhow::Result<Self> {
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
                    "jsonpath={.spec.clusterIP}",
                ],
                None,
            )?
            .parse()?;
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
        let job = Pod {
            namespace: "analytics".into(),
            team: "data",
            workload: "report",
            node: 0,
            ip,
            pid: 0,
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
            job,
            probe,
        })
    }

    fn pod(&self, workload: &str, node: usize) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.workload == workload && p.node == node)
            .unwrap_or_else(|| panic!("no {workload} pod on node {node}"))
    }

    /// Traffic of known sizes, TCP and UDP: same zone, cross-zone (also
    /// through the ClusterIP Service), cross-region, and to the internet.
    fn traffic(&self, k8s: &Kubernetes) -> anyhow::Result<()> {
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
        let flows: Vec<(&Pod, Vec<&str>)> = vec![
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
        let from_internet = [
            // NodePort, policy Cluster, on node a: forwarded to api on node b.
            tcp(NODE_IPS[0], "30080", "41020", "120000"),
            // NodePort, policy Local, on api's node.
            tcp(NODE_IPS[1], "30081", "41021", "90000"),
        ];
        let traffic = repo_root().join("tests/scripts/traffic.py");
        let in_namespace_of = |pid: u32, args: &[&str]| {
            run(Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n", "python3"])
                .arg(&traffic)
                .args(args))
            .map(drop)
        };
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
    /// counters: what a pod sent and received, by where its peer runs. The
    /// Job's pod is gone: its bytes are db's counters for its address.
    fn expected(&self) -> anyhow::Result<BTreeMap<Key, u64>> {
        let mut nodes: HashMap<IpAddr, usize> = self.pods.iter().map(|p| (p.ip, p.node)).collect();
        nodes.insert(self.job.ip, self.job.node);
        nodes.insert(self.service, self.pod("api", 1).node);
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
            let mut categories = match nodes.get(remote) {
                Some(&node) => vec![category(pod.node, node)],
                None if remote.to_string() == INTERNET => vec!["internet"],
                None => return Err(anyhow::anyhow!("{pod:?} talked to {remote}")),
            };
            // api hears from a node's address only through the NodePort of
            // policy Cluster: the client's leg, at that node, is api's
            // internet traffic; the hop to api's node its cross-zone.
            if pod.ip == api && node_addresses.contains_key(remote) {
                categories.push("internet");
            }
            for category in categories {
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
                if !key.proto.starts_with("tcp") && !key.proto.starts_with("udp") {
                    continue;
                }
                if key.src == pod.ip {
                    add(pod, &key.dst, "out", count.bytes)?;
                } else if key.dst == pod.ip {
                    add(pod, &key.src, "in", count.bytes)?;
                }
                if key.src == self.job.ip {
                    add(&self.job, &key.dst, "out", count.bytes)?;
                } else if key.dst == self.job.ip {
                    add(&self.job, &key.src, "in", count.bytes)?;
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

/// The pods of `namespace` with label app=`app`: name, node index, address.
fn pods_of(
    k8s: &Kubernetes,
    namespace: &str,
    app: &str,
) -> anyhow::Result<Vec<(String, usize, IpAddr)>> {
    k8s.kubectl(
        &[
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
        ],
        None,
    )?
    .lines()
    .map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 3, "pod line {line:?}");
        let node = NODES
            .iter()
            .position(|n| n.0 == f[1])
            .with_context(|| format!("unknown node {}", f[1]))?;
        Ok((f[0].to_owned(), node, f[2].parse()?))
    })
    .collect()
}
