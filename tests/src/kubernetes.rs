//! A real Kubernetes cluster for the end-to-end suite: three nodes (zones
//! r1-a and r1-b of region r1, r2-c of region r2) running containerd,
//! kubelet and kube-proxy in network namespaces of their own, started by
//! `tests/scripts/kubernetes.sh` and torn down when dropped. One cluster at
//! a time: its namespaces have fixed names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::repo_root;

/// How pods reach the pods of other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// Static routes between the nodes' pod ranges.
    Routed,
    /// A VXLAN device per node on UDP 8472, as flannel sets it up.
    Overlay,
}

impl Underlay {
    fn name(self) -> &'static str {
        match self {
            Underlay::Routed => "routed",
            Underlay::Overlay => "overlay",
        }
    }
}

/// The nodes: name, zone, region.
pub const NODES: [(&str, &str, &str); 3] = [
    ("node-a", "r1-a", "r1"),
    ("node-b", "r1-b", "r1"),
    ("node-c", "r2-c", "r2"),
];

/// The nodes' addresses, in [`NODES`] order.
pub const NODE_IPS: [&str; 3] = ["172.30.0.11", "172.30.0.12", "172.30.0.13"];

/// The internet host, behind the nodes' masquerade.
pub const INTERNET: &str = "203.0.113.10";
/// The internet host's IPv6 address (the routed underlay is dual-stack).
pub const INTERNET6: &str = "2001:db8:113::10";

/// Where ClickHouse answers for nodes and pods once [`Kubernetes::relay`]
/// ran.
pub const CLICKHOUSE_URL: &str = "http://172.30.0.1:8123";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running cluster.
pub struct Kubernetes {
    dir: PathBuf,
    kubectl: PathBuf,
    _only: MutexGuard<'static, ()>,
}

/// Whether the real-cluster suite may run: it needs root. Skipped loudly
/// outside CI; under `CI=true` it fails.
pub fn require(suite: &str) -> bool {
    crate::require_root(suite, "network and mount namespaces, containerd, kubelet")
}

fn script(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/scripts/kubernetes.sh"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running kubernetes.sh")?;
    ensure!(
        output.status.success(),
        "kubernetes.sh {args:?} failed ({})",
        output.status
    );
    Ok(String::from_utf8(output.stdout)?)
}

impl Kubernetes {
    /// Start the cluster over `underlay`; all three nodes are Ready when
    /// this returns.
    pub fn up(underlay: Underlay) -> anyhow::Result<Self> {
        let only = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!(
            "tollgate-kubernetes-{}-{}",
            std::process::id(),
            underlay.name()
        ));
        std::fs::create_dir_all(&dir)?;
        let kubectl = PathBuf::from(
            crate::run(
                Command::new("bash")
                    .arg(repo_root().join("tests/scripts/kube-apiserver.sh"))
                    .arg("kubectl"),
            )?
            .trim(),
        );
        let cluster = Self {
            dir,
            kubectl,
            _only: only,
        };
        let started = Instant::now();
        script(&["up", cluster.dir()?, underlay.name()])?;
        eprintln!(
            "kubernetes: 3 nodes Ready over the {} underlay in {:.0} s",
            underlay.name(),
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    fn dir(&self) -> anyhow::Result<&str> {
        self.dir.to_str().context("non-UTF-8 temp dir")
    }

    /// The cluster's state directory (logs in `logs/`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Runs kubectl (1.20, as the cluster) as the admin, with `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", "tgk-ctl"])
            .arg(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.dir.join("pki/admin.kubeconfig"));
        crate::kube::kubectl(command, args, stdin)
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.kubectl(&["apply", "-f", "-"], Some(yaml)).map(drop)
    }

    /// Import an image tar into every node.
    pub fn load(&self, tar: &Path) -> anyhow::Result<()> {
        script(&["load", self.dir()?, tar.to_str().context("path")?]).map(drop)
    }

    /// Make ClickHouse on `127.0.0.1:port` reachable at [`CLICKHOUSE_URL`].
    pub fn relay(&self, port: u16) -> anyhow::Result<()> {
        script(&["relay", self.dir()?, &port.to_string()]).map(drop)
    }

    /// A command that runs `program` in node `node`'s network namespace.
    pub fn on_node(&self, node: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &format!("tgk-{node}"), program]);
        command
    }

    /// A command that runs `program` on the internet host.
    pub fn on_internet(&self, program: &str) -> Command {
        self.on_node("internet", program)
    }

    /// The PID of a process of pod `namespace/pod` (its first container),
    /// for entering the pod's network namespace.
    pub fn pod_pid(&self, namespace: &str, pod: &str) -> anyhow::Result<u32> {
        self.container_pid(namespace, pod, None)
    }

    /// The PID of container `container` of pod `namespace/pod` (its first
    /// if `None`).
    pub fn container_pid(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> anyhow::Result<u32> {
        let status = match container {
            Some(name) => format!("containerStatuses[?(@.name==\"{name}\")]"),
            None => "containerStatuses[0]".to_owned(),
        };
        let fields = self.kubectl(
            &[
                "-n",
                namespace,
                "get",
                "pod",
                pod,
                "-o",
                &format!("jsonpath={{.spec.nodeName}} {{.status.{status}.containerID}}"),
            ],
            None,
        )?;
        let (node, container) = fields
            .split_once(' ')
            .with_context(|| format!("pod {namespace}/{pod} is not running: {fields:?}"))?;
        let id = container
            .strip_prefix("containerd://")
            .with_context(|| format!("pod {namespace}/{pod}: container id {container:?}"))?;
        let socket = format!("/run/tollgate-kubernetes/{node}/containerd.sock");
        let tasks = crate::run(
            Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .args(["-n", "k8s.io", "tasks", "ls"]),
        )?;
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .with_context(|| format!("no task {id} of pod {namespace}/{pod} on {node}"))
    }

    /// Wait until `check` holds (polling), or fail with what it last said.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let error = match check() {
                Ok(true) => return Ok(()),
                Ok(false) => String::new(),
                Err(error) => format!(": {error:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {} s{error}; cluster logs in {}",
                    timeout.as_secs(),
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        if let Ok(dir) = self.dir() {
            if let Err(error) = script(&["down", dir]) {
                eprintln!("kubernetes: teardown failed: {error:#}");
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "kubernetes: the cluster's logs are kept in {}",
                self.dir.join("logs").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
