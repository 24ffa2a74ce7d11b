//! Debian's Prometheus inside node a of the simulated cluster, scraping
//! every node's agent each second: node a's directly, the others' through
//! socat relays (a Unix socket every namespace can reach), so that servers
//! stay on 127.0.0.1.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use crate::cluster::Cluster;

/// The agents' port in every node.
const AGENT_PORT: u16 = 9102;

/// A running Prometheus and its relays, stopped when dropped.
pub struct Prometheus<'c> {
    cluster: &'c Cluster,
    children: Vec<Child>,
    sockets: Vec<PathBuf>,
}

impl<'c> Prometheus<'c> {
    /// Starts scraping the agents of every node of `cluster` every second
    /// (job `tollgate`, label `node` naming the node).
    pub fn start(cluster: &'c Cluster) -> anyhow::Result<Self> {
        let mut prometheus = Self {
            cluster,
            children: Vec::new(),
            sockets: Vec::new(),
        };
        let first = &cluster.nodes[0];
        let mut targets = vec![format!(
            "{{targets: ['127.0.0.1:{AGENT_PORT}'], labels: {{node: {}}}}}",
            first.name
        )];
        for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
            let socket = cluster.dir.join(format!("metrics-{}.sock", node.name));
            prometheus.children.push(
                node.ns
                    .command("socat")
                    .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
                    .arg(format!("TCP:127.0.0.1:{AGENT_PORT}"))
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start socat")?,
            );
            let port = 9200 + i;
            prometheus.children.push(
                first
                    .ns
                    .command("socat")
                    .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
                    .arg(format!("UNIX-CONNECT:{}", socket.display()))
                    .stderr(Stdio::null())
                    .spawn()?,
            );
            prometheus.sockets.push(socket);
            targets.push(format!(
                "{{targets: ['127.0.0.1:{port}'], labels: {{node: {}}}}}",
                node.name
            ));
        }
        let dir = cluster.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: tollgate\n    static_configs: [{}]\n",
                targets.join(", ")
            ),
        )?;
        prometheus.children.push(
            first
                .ns
                .command("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start prometheus (apt-get install prometheus)")?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.get("/api/v1/query?query=up").is_err() {
            ensure!(Instant::now() < deadline, "Prometheus did not answer");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(prometheus)
    }

    /// `GET path` (with its query string) on the HTTP API: the answer's
    /// `data`.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let output = self.cluster.nodes[0]
            .ns
            .command("curl")
            .args(["-sgf", &format!("http://127.0.0.1:9090{path}")])
            .output()?;
        ensure!(output.status.success(), "GET {path} failed");
        let answer: Value = serde_json::from_slice(&output.stdout)?;
        if answer["status"] != "success" {
            bail!("GET {path}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// Waits until Prometheus scrapes every agent.
    pub fn wait_for_targets(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = self.get("/api/v1/query?query=sum(up%7Bjob%3D%22tollgate%22%7D)")?;
            let agents = self.cluster.nodes.len().to_string();
            let scraped = up["result"][0]["value"][1].as_str() == Some(agents.as_str());
            if scraped {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "Prometheus does not scrape every agent: {up}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}
