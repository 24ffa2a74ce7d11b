//! Realistic, repeatable flow records and clusters for benchmarks.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use tollgate::inventory::Interner;
use tollgate_schema::{Category, Family, FlowRecord, Initiator, Protocol, RemoteKind};

/// xorshift64*: repeatable pseudo-random numbers.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed sizes: mostly small, sometimes large, like real transfers.
    fn size(&mut self, max_bits: u64) -> u64 {
        let bits = 8 + self.below(max_bits);
        60 + self.below(1 << bits)
    }
}

struct Connection4 {
    remote: u32,
    remote_port: u16,
    local_port: u16,
    id: u32,
}

/// One cluster for 45 minutes, starting at `start` (unix seconds): 200 pods
/// in 10 namespaces, each with 20 long-lived connections reported every 10 s
/// and 3 new short ones per interval, to 5,000 remote addresses, with skewed
/// byte counts. Repeatable: the same records every call. Names are
/// interned, as the enricher's are.
pub fn cluster_records(start: u32) -> Vec<FlowRecord> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut names = Interner::default();
    let categories = [
        Category::SameZone,
        Category::CrossZone,
        Category::CrossZone,
        Category::Internet,
    ];
    let ports = [443, 5432, 6379, 8080, 9092];
    let pods: Vec<(String, String, String, String)> = (0..200)
        .map(|p| {
            let ns = format!("team-{}", p / 20);
            let workload = format!("svc-{}", p / 4 % 5);
            (
                ns.clone(),
                workload.clone(),
                format!("{workload}-{:x}", random.next() % 0xfffff),
                format!("owner-{}", p / 20),
            )
        })
        .collect();
    let mut long_lived: Vec<Vec<Connection4>> = (0..200)
        .map(|_| {
            (0..20)
                .map(|_| Connection4 {
                    remote: random.below(5000) as u32,
                    remote_port: ports[random.below(5) as usize],
                    local_port: 32768 + random.below(28000) as u16,
                    id: random.next() as u32,
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for interval in 0..270u32 {
        for (p, pod) in pods.iter().enumerate() {
            for _ in 0..3 {
                long_lived[p].push(Connection4 {
                    remote: random.below(5000) as u32,
                    remote_port: ports[random.below(5) as usize],
                    local_port: 32768 + random.below(28000) as u16,
                    id: random.next() as u32,
                });
            }
            for (c, conn) in long_lived[p].iter().enumerate() {
                let category = categories[(conn.remote % 4) as usize];
                let internet = category == Category::Internet;
                out.push(FlowRecord {
                    observed_at: start + interval * 10,
                    interval_seconds: 10,
                    cluster: names.name("prod-eu"),
                    node: names.name(&format!("node-{}", p % 12)),
                    family: Family::Ipv4,
                    protocol: Protocol::TCP,
                    local_ip: std::net::Ipv4Addr::new(10, 4, (p / 250) as u8, (p % 250) as u8)
                        .to_ipv6_mapped(),
                    local_port: conn.local_port,
                    local_pod: names.name(&pod.2),
                    local_namespace: names.name(&pod.0),
                    local_workload_kind: names.name("Deployment"),
                    local_workload: names.name(&pod.1),
                    local_team: names.name(&pod.3),
                    local_zone: names.name(&format!("eu-west-1{}", ["a", "b", "c"][p % 3])),
                    local_region: names.name("eu-west-1"),
                    local_provider: names.name("aws"),
                    local_provider_id: names.name(&format!(
                        "aws:///eu-west-1{}/i-{:017x}",
                        ["a", "b", "c"][p % 3],
                        p % 12
                    )),
                    remote_ip: if internet {
                        Ipv6Addr::from(
                            0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(conn.remote),
                        )
                    } else {
                        std::net::Ipv4Addr::from(0x0a05_0000 + conn.remote).to_ipv6_mapped()
                    },
                    remote_port: conn.remote_port,
                    remote_kind: if internet {
                        RemoteKind::Internet
                    } else {
                        RemoteKind::Pod
                    },
                    remote_pod: if internet {
                        names.name("")
                    } else {
                        names.name(&format!("peer-{}", conn.remote % 300))
                    },
                    remote_namespace: if internet {
                        names.name("")
                    } else {
                        names.name(&format!("team-{}", conn.remote % 10))
                    },
                    remote_workload_kind: if internet {
                        names.name("")
                    } else {
                        names.name("Deployment")
                    },
                    remote_workload: if internet {
                        names.name("")
                    } else {
                        names.name(&format!("svc-{}", conn.remote % 5))
                    },
                    remote_team: if internet {
                        names.name("")
                    } else {
                        names.name(&format!("owner-{}", conn.remote % 10))
                    },
                    remote_node: if internet {
                        names.name("")
                    } else {
                        names.name(&format!("node-{}", conn.remote % 12))
                    },
                    remote_zone: if internet {
                        names.name("")
                    } else {
                        names.name(&format!(
                            "eu-west-1{}",
                            ["a", "b", "c"][(conn.remote % 3) as usize]
                        ))
                    },
                    remote_region: if internet {
                        names.name("")
                    } else {
                        names.name("eu-west-1")
                    },
                    remote_cloud_provider: names.name(""),
                    remote_cloud_service: names.name(""),
                    remote_service: names.name(""),
                    initiator: Initiator::Local,
                    bytes_sent: random.size(12),
                    bytes_received: random.size(14),
                    packets_sent: 1 + random.below(40),
                    packets_received: 1 + random.below(60),
                    category,
                    ended: c >= 20,
                    conntrack_id: conn.id,
                });
            }
            long_lived[p].truncate(20);
        }
    }
    out
}

/// A large cluster for the enrichment and agent benchmarks: `pods` pods on
/// `nodes` nodes in three zones of region r1, 1,000 Services, and
/// `prefixes` cloud prefixes in AWS's range file format.
#[derive(Debug, Clone, Copy)]
pub struct World {
    /// Pods (`pod_ip(0..pods)`).
    pub pods: u64,
    /// Nodes (`node-0`...); pod `p` runs on node `p % nodes`.
    pub nodes: u64,
    /// Cloud prefixes, /24s from 52.0.0.0.
    pub prefixes: u64,
}

/// Number of Services (ClusterIPs in 10.96.0.0/16).
const SERVICES: u64 = 1000;

impl World {
    /// Pod `p`'s address (10.0.0.0/8 from the bottom).
    pub fn pod_ip(p: u64) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + (p as u32))
    }

    /// The pods of `node-0`, the node the benchmarks observe from.
    pub fn local_pods(&self) -> Vec<u64> {
        (0..self.pods).filter(|p| p % self.nodes == 0).collect()
    }

    /// Writes `inventory.yaml` (static inventory) and `ip-ranges.json`
    /// (AWS format) into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        let mut yaml = String::from("nodes:\n");
        for n in 0..self.nodes {
            let _ = writeln!(
                yaml,
                "  - {{name: node-{n}, zone: r1-{}, region: r1, addresses: [192.168.{}.{}]}}",
                ["a", "b", "c"][(n % 3) as usize],
                n / 250,
                n % 250 + 1
            );
        }
        yaml.push_str("pods:\n");
        for p in 0..self.pods {
            let _ = writeln!(
                yaml,
                "  - {{name: svc-{}-{p:x}, namespace: team-{}, node: node-{}, ips: [{}], workload: {{kind: Deployment, name: svc-{}}}}}",
                p % 2000,
                p % 40,
                p % self.nodes,
                Self::pod_ip(p),
                p % 2000
            );
        }
        yaml.push_str("services:\n");
        for s in 0..SERVICES {
            let _ = writeln!(
                yaml,
                "  - {{name: api-{s}, namespace: team-{}, cluster_ips: [{}]}}",
                s % 40,
                Self::service_ip(s)
            );
        }
        let inventory = dir.join("inventory.yaml");
        std::fs::write(&inventory, yaml)?;

        let mut json = String::from("{\"prefixes\": [");
        for i in 0..self.prefixes {
            if i > 0 {
                json.push(',');
            }
            let _ = write!(
                json,
                "{{\"ip_prefix\": \"{}/24\", \"region\": \"r{}\", \"service\": \"{}\"}}",
                Ipv4Addr::from(0x3400_0000u32 + (i as u32) * 256),
                i % 20,
                ["AMAZON", "S3", "EC2"][(i % 3) as usize]
            );
        }
        json.push_str("]}");
        let ranges = dir.join("ip-ranges.json");
        std::fs::write(&ranges, json)?;
        Ok((inventory, ranges))
    }

    fn service_ip(s: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8)
    }

    /// The `i`th connection's far end as node-0 sees it, drawn with
    /// `random`: `(destination, reply source)`, which differ when a
    /// ClusterIP was translated to its backend. A quarter each: a pod
    /// anywhere, a Service, a cloud range, the internet.
    pub fn peer(&self, i: u64, random: &mut impl FnMut() -> u64) -> (Ipv4Addr, Ipv4Addr) {
        match i % 4 {
            0 => {
                let peer = Self::pod_ip(random() % self.pods);
                (peer, peer)
            }
            1 => (
                Self::service_ip(random() % SERVICES),
                Self::pod_ip(random() % self.pods),
            ),
            2 => {
                let cloud =
                    Ipv4Addr::from(0x3400_0000u32 + (random() % (self.prefixes * 256)) as u32);
                (cloud, cloud)
            }
            _ => {
                let internet = Ipv4Addr::from(0x5000_0000u32 + random() as u32 % 0x1000_0000);
                (internet, internet)
            }
        }
    }
}

/// xorshift64: repeatable pseudo-random numbers for [`World::peer`].
pub fn random_numbers(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A `/proc/<pid>/status` memory field (`VmRSS:`, `VmHWM:`...) in KiB;
/// `pid` may be `self`.
pub fn status_kib(pid: &str, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}
