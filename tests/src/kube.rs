//! A real Kubernetes API server for the suites: one per test process,
//! started with `tests/scripts/kube-apiserver.sh` (it exits with the
//! process). The `agent` user is bound to `deploy/base/rbac.yaml`'s
//! ClusterRole, exactly the permissions the agent is deployed with; the
//! `nobody` user has none.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context};

use crate::repo_root;

/// A running API server.
#[derive(Debug)]
pub struct KubeApi {
    dir: PathBuf,
    kubectl: PathBuf,
}

static SERVER: OnceLock<Result<KubeApi, String>> = OnceLock::new();

/// The shared server, or `None` (with a loud message) when none can be had
/// outside CI. Under `CI=true` a missing API server fails the test.
pub fn require(suite: &str) -> Option<&'static KubeApi> {
    match SERVER.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(server) => Some(server),
        Err(error) => {
            crate::not_run(&format!(
                "suite `{suite}` needs kube-apiserver and was NOT RUN: {error}"
            ));
            None
        }
    }
}

fn script(args: &[&str]) -> anyhow::Result<String> {
    script_with(args, &[])
}

/// Runs the script with extra environment variables; its servers exit with
/// this process.
fn script_with(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/scripts/kube-apiserver.sh"))
        .args(args)
        .env("KUBE_WATCH_PID", std::process::id().to_string())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stderr(Stdio::inherit())
        .output()
        .context("running kube-apiserver.sh")?;
    if !output.status.success() {
        bail!("kube-apiserver.sh {args:?} failed ({})", output.status);
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn start() -> anyhow::Result<KubeApi> {
    let dir = std::env::temp_dir().join(format!("tollgate-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    script(&["start", dir.to_str().context("path")?])?;
    let api = KubeApi {
        kubectl: PathBuf::from(script(&["kubectl"])?),
        dir,
    };
    api.kubectl(&["create", "namespace", "tollgate"], None)?;
    api.kubectl(
        &[
            "apply",
            "-f",
            repo_root()
                .join("deploy/base/rbac.yaml")
                .to_str()
                .context("path")?,
        ],
        None,
    )?;
    api.kubectl(
        &[
            "create",
            "clusterrolebinding",
            "tollgate-agent-test-user",
            "--clusterrole=tollgate-agent",
            "--user=agent",
        ],
        None,
    )?;
    Ok(api)
}

impl KubeApi {
    /// Kubeconfig of `admin`, `agent` or `nobody`.
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.kubeconfig"))
    }

    /// Runs kubectl as admin, with `stdin` piped in.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(self.kubeconfig("admin"));
        kubectl(command, args, stdin)
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.kubectl(&["apply", "-f", "-"], Some(yaml)).map(drop)
    }

    /// An object's uid (for owner references).
    pub fn uid(&self, namespace: &str, kind: &str, name: &str) -> anyhow::Result<String> {
        self.kubectl(
            &[
                "-n",
                namespace,
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
    }

    /// Sets a pod's addresses through the status subresource, as a kubelet
    /// does (no kubelet runs here).
    pub fn set_pod_ips(&self, namespace: &str, pod: &str, ips: &[&str]) -> anyhow::Result<()> {
        self.start_pod(namespace, pod, ips, None)
    }

    /// [`KubeApi::set_pod_ips`], with the `startTime` a kubelet writes (RFC
    /// 3339, e.g. `2026-11-27T00:00:00Z`) when given.
    pub fn start_pod(
        &self,
        namespace: &str,
        pod: &str,
        ips: &[&str],
        start_time: Option<&str>,
    ) -> anyhow::Result<()> {
        let pod_ips: Vec<String> = ips
            .iter()
            .map(|ip| format!("{{\"ip\":\"{ip}\"}}"))
            .collect();
        let start = start_time.map_or(String::new(), |t| format!(",\"startTime\":\"{t}\""));
        let patch = format!(
            "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{}\",\"podIPs\":[{}]{start}}}}}",
            ips.first().copied().unwrap_or_default(),
            pod_ips.join(",")
        );
        self.patch_status(&format!("api/v1/namespaces/{namespace}/pods/{pod}"), &patch)
    }

    /// Sets a node's InternalIP through the status subresource.
    pub fn set_node_address(&self, node: &str, ip: &str) -> anyhow::Result<()> {
        let patch = format!(
            "{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"{ip}\"}}]}}}}"
        );
        self.patch_status(&format!("api/v1/nodes/{node}"), &patch)
    }

    /// A merge patch of `object`'s status subresource, as admin.
    fn patch_status(&self, object: &str, patch: &str) -> anyhow::Result<()> {
        let token = std::fs::read_to_string(self.dir.join("tokens.csv"))?
            .lines()
            .find(|l| l.contains(",admin,"))
            .and_then(|l| l.split(',').next())
            .context("admin token")?
            .to_owned();
        let server = std::fs::read_to_string(self.kubeconfig("admin"))?
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
            .context("server in kubeconfig")?;
        crate::run(Command::new("curl").args([
            "-sS",
            "--fail-with-body",
            "--cacert",
            self.dir.join("ca.crt").to_str().context("path")?,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/merge-patch+json",
            "-X",
            "PATCH",
            "--data",
            patch,
            &format!("{server}/{object}/status"),
        ]))
        .map(drop)
    }

    /// Kills the API server and starts it again `down_seconds` later: every
    /// watch breaks and must resume.
    pub fn restart(&self, down_seconds: u32) -> anyhow::Result<()> {
        script_with(
            &["restart", self.dir.to_str().context("path")?],
            &[("KUBE_DOWN_SECONDS", down_seconds.to_string())],
        )
        .map(drop)
    }
}

/// Runs `command` (a kubectl with its kubeconfig) with `args`, `stdin`
/// piped in; fails with kubectl's message.
pub fn kubectl(mut command: Command, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
