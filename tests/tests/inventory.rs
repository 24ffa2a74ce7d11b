//! The inventory against a real kube-apiserver: owners resolved through
//! ReplicaSets and Jobs, Services, pod deletion and IP reuse, a watch that
//! breaks and resumes; and the bad inputs (kubeconfig, RBAC) that must stop
//! tollgate with exit code 2.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::config::{self, Config, World};
use tollgate::conntrack::{Counters, Entry, Tuple, L4};
use tollgate::enrich::Enricher;
use tollgate::inventory::Holder;
use tollgate_schema::{Category, FlowRecord};
use tollgate_tests::kube::{self, KubeApi};
use tollgate_tests::tollgate::binary;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config_file(dir: &Path, kubeconfig: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tollgate.yaml");
    std::fs::write(
        &path,
        format!(
            "cluster: test\nnode: kt-a\ninventory:\n  kubernetes: {{kubeconfig: {}, ready_timeout_seconds: 30}}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    path
}

fn node(name: &str, zone: &str, cidr: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    topology.kubernetes.io/zone: {zone}\n    topology.kubernetes.io/region: kr1\nspec:\n  providerID: aws:///{zone}/i-{name}\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\n---\n"
    )
}

/// A pod with an owner, on a node; addresses are set afterwards.
fn pod(namespace: &str, name: &str, node: &str, owner: Option<(&str, &str, &str, &str)>) -> String {
    let owner = owner.map_or(String::new(), |(api, kind, owner, uid)| {
        format!(
            "  ownerReferences:\n  - {{apiVersion: {api}, kind: {kind}, name: {owner}, uid: {uid}, controller: true}}\n"
        )
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{owner}spec:\n  nodeName: {node}\n  containers:\n  - {{name: main, image: registry.invalid/app:1}}\n"
    )
}

fn entry(src: &str, sport: u16, dst: &str, reply_src: &str, dport: u16) -> Entry {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Entry::tcp(
        Tuple {
            src: ip(src),
            dst: ip(dst),
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
        },
        Tuple {
            src: ip(reply_src),
            dst: ip(src),
            l4: L4::Ports {
                src: dport,
                dst: sport,
            },
        },
        Some(Counters {
            packets: 10,
            bytes: 1500,
        }),
        Some(Counters {
            packets: 8,
            bytes: 90_000,
        }),
    )
}

fn enrich(world: &World, entry: &Entry, at: u64) -> Vec<FlowRecord> {
    let inventory = world.inventory.read().unwrap();
    let mut enricher = Enricher::new("test", "kt-a", "platform");
    let mut out = Vec::new();
    enricher.enrich(entry, at as u32, 10, &inventory, &world.classifier, |r| {
        out.push(r.to_record())
    });
    out
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn holder_name(world: &World, ip: &str) -> Option<String> {
    let inventory = world.inventory.read().unwrap();
    match inventory.lookup(ip.parse().unwrap(), now() + 1)? {
        Holder::Pod(p) => Some(format!("{}/{}", p.namespace, p.name)),
        Holder::Node(n) => Some(n.name.to_string()),
        Holder::Service(s) => Some(s.name.to_string()),
    }
}

fn setup(api: &KubeApi) {
    api.apply(&format!(
        "{}{}apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {{team: payments}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: batch\n",
        node("kt-a", "kr1-a", "10.50.1.0/24"),
        node("kt-b", "kr1-b", "10.50.2.0/24"),
    ))
    .unwrap();
    api.set_node_address("kt-a", "192.168.50.1").unwrap();
    api.set_node_address("kt-b", "192.168.50.2").unwrap();
    api.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: main, image: registry.invalid/web:1}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: main, image: registry.invalid/db:1}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  clusterIP: 10.96.50.30\n  selector: {app: db}\n  ports: [{port: 5432}]\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: nightly-1700000000\n  namespace: batch\n  ownerReferences:\n  - {apiVersion: batch/v1beta1, kind: CronJob, name: nightly, uid: 6f1c2b9e-0000-4000-8000-000000000001, controller: true}\nspec:\n  template:\n    spec: {restartPolicy: Never, containers: [{name: main, image: registry.invalid/job:1}]}\n",
    )
    .unwrap();
    let deployment = api.uid("shop", "deployment", "web").unwrap();
    api.apply(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-7d4b9\n  namespace: shop\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: Deployment, name: web, uid: {deployment}, controller: true}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: registry.invalid/web:1}}]}}\n"
    ))
    .unwrap();
    let rs = api.uid("shop", "replicaset", "web-7d4b9").unwrap();
    let sts = api.uid("shop", "statefulset", "db").unwrap();
    let job = api.uid("batch", "job", "nightly-1700000000").unwrap();
    api.apply(
        &[
            pod(
                "shop",
                "web-7d4b9-x1",
                "kt-a",
                Some(("apps/v1", "ReplicaSet", "web-7d4b9", &rs)),
            ),
            pod(
                "shop",
                "db-0",
                "kt-b",
                Some(("apps/v1", "StatefulSet", "db", &sts)),
            ),
            pod(
                "batch",
                "nightly-1700000000-q",
                "kt-b",
                Some(("batch/v1", "Job", "nightly-1700000000", &job)),
            ),
        ]
        .join("---\n"),
    )
    .unwrap();
    api.set_pod_ips("shop", "web-7d4b9-x1", &["10.50.1.10", "fd50:1::10"])
        .unwrap();
    api.set_pod_ips("shop", "db-0", &["10.50.2.30"]).unwrap();
    api.set_pod_ips("batch", "nightly-1700000000-q", &["10.50.2.40"])
        .unwrap();
}

#[test]
fn records_follow_owners_services_pod_deletion_ip_reuse_and_a_broken_watch() {
    let Some(api) = kube::require("inventory") else {
        return;
    };
    setup(api);
    let dir = std::env::temp_dir().join(format!("tollgate-inventory-{}", std::process::id()));
    let path = config_file(&dir, &api.kubeconfig("agent"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (config, base) = Config::load(&path).unwrap();
    let prepared = config::prepare(&config, &base).unwrap();
    let world = runtime
        .block_on(config::load_world(&config, prepared))
        .unwrap();

    // The first listing already holds everything created before the start.
    let web = entry("10.50.1.10", 40000, "10.96.50.30", "10.50.2.30", 5432);
    let records = enrich(&world, &web, now());
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (
            &*r.local_workload_kind,
            &*r.local_workload,
            &*r.local_team,
            &*r.local_zone,
            &*r.local_provider
        ),
        ("Deployment", "web", "payments", "kr1-a", "aws"),
        "Pod -> ReplicaSet -> Deployment; team from the namespace label; zone and provider \
         (spec.providerID aws:///...) from the node"
    );
    assert_eq!(
        (
            &*r.remote_workload_kind,
            &*r.remote_workload,
            &*r.remote_service,
            &*r.remote_zone
        ),
        ("StatefulSet", "db", "shop/db", "kr1-b"),
        "through the ClusterIP to the backend, Service name kept"
    );
    assert_eq!(r.category, Category::CrossZone);
    assert_eq!((r.bytes_sent, r.bytes_received), (1500, 90_000));

    let to_job = entry("10.50.1.10", 40001, "10.50.2.40", "10.50.2.40", 8080);
    let before_reuse = now();
    let r = enrich(&world, &to_job, before_reuse);
    assert_eq!(
        (
            &*r[0].remote_workload_kind,
            &*r[0].remote_workload,
            &*r[0].remote_team
        ),
        ("CronJob", "nightly", "batch"),
        "Pod -> Job -> CronJob; no label: the namespace is the team"
    );

    // The job's pod goes; another pod gets its address.
    std::thread::sleep(Duration::from_secs(1));
    api.kubectl(
        &[
            "-n",
            "batch",
            "delete",
            "pod",
            "nightly-1700000000-q",
            "--grace-period=0",
            "--force",
        ],
        None,
    )
    .unwrap();
    wait_until("the deletion", || deleted(&world));
    let rs = api.uid("shop", "replicaset", "web-7d4b9").unwrap();
    api.apply(&pod(
        "shop",
        "web-7d4b9-x2",
        "kt-b",
        Some(("apps/v1", "ReplicaSet", "web-7d4b9", &rs)),
    ))
    .unwrap();
    api.set_pod_ips("shop", "web-7d4b9-x2", &["10.50.2.40"])
        .unwrap();
    wait_until("the new holder", || {
        holder_name(&world, "10.50.2.40").as_deref() == Some("shop/web-7d4b9-x2")
    });
    std::thread::sleep(Duration::from_secs(1));
    let after_reuse = now();
    let old = enrich(&world, &to_job, before_reuse);
    assert_eq!(
        &*old[0].remote_workload, "nightly",
        "earlier records keep the departed pod"
    );
    let new = enrich(&world, &to_job, after_reuse);
    assert_eq!(
        (&*new[0].remote_workload_kind, &*new[0].remote_workload),
        ("Deployment", "web"),
        "later records go to the new holder"
    );

    // The API server dies for 3 s: the watches break, resume, and miss
    // nothing created after.
    api.restart(3).unwrap();
    api.apply(&pod("shop", "late-1", "kt-a", None)).unwrap();
    api.set_pod_ips("shop", "late-1", &["10.50.1.77"]).unwrap();
    api.kubectl(
        &[
            "-n",
            "shop",
            "delete",
            "pod",
            "db-0",
            "--grace-period=0",
            "--force",
        ],
        None,
    )
    .unwrap();
    wait_until("the pod created after the restart", || {
        holder_name(&world, "10.50.1.77").as_deref() == Some("shop/late-1")
    });
    wait_until("the deletion after the restart", || {
        world
            .inventory
            .read()
            .unwrap()
            .holder(&tollgate::inventory::ObjectKey::Pod("shop/db-0".into()))
            .is_none()
    });
    let late = enrich(
        &world,
        &entry("10.50.1.77", 40002, "8.8.8.8", "8.8.8.8", 443),
        now() + 1,
    );
    assert_eq!(
        (
            &*late[0].local_workload_kind,
            &*late[0].local_workload,
            late[0].category
        ),
        ("Pod", "late-1", Category::Internet),
        "a bare pod is its own workload"
    );

    // A pod holds its address from when the API says it got it (its
    // startTime here), not from when the watch heard of it: traffic of its
    // first seconds is its own.
    let started = now() - 30;
    let start_time = String::from_utf8(
        std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{started}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    api.apply(&pod("shop", "early-1", "kt-a", None)).unwrap();
    api.start_pod("shop", "early-1", &["10.50.1.88"], Some(&start_time))
        .unwrap();
    wait_until("the pod started earlier", || {
        holder_name(&world, "10.50.1.88").as_deref() == Some("shop/early-1")
    });
    let first_seconds = enrich(
        &world,
        &entry("10.50.1.88", 40003, "8.8.8.8", "8.8.8.8", 443),
        started + 5,
    );
    assert_eq!(
        first_seconds.first().map(|r| &*r.local_workload),
        Some("early-1"),
        "{first_seconds:?}"
    );
    runtime.shutdown_background();
}

fn deleted(world: &World) -> bool {
    world
        .inventory
        .read()
        .unwrap()
        .holder(&tollgate::inventory::ObjectKey::Pod(
            "batch/nightly-1700000000-q".into(),
        ))
        .is_none()
}

#[test]
fn a_bad_kubeconfig_or_an_rbac_denial_exits_2_and_says_why() {
    let Some(api) = kube::require("inventory") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tollgate-inventory-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.kubeconfig");
    std::fs::write(&garbage, "clusters: [this is not: a kubeconfig\n").unwrap();
    let cases = [
        (dir.join("missing.kubeconfig"), "missing.kubeconfig"),
        (garbage.clone(), "garbage.kubeconfig"),
        (api.kubeconfig("nobody"), "refuses to list pods"),
    ];
    for (kubeconfig, needle) in cases {
        let config = config_file(&dir, &kubeconfig);
        let output = Command::new(binary())
            .args(["classify", "--config", config.to_str().unwrap(), "10.0.0.1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    // The agent's own permissions are enough: the same command works.
    let config = config_file(&dir, &api.kubeconfig("agent"));
    let output = Command::new(binary())
        .args(["classify", "--config", config.to_str().unwrap(), "8.8.8.8"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["kind"], "internet");
}
