//! Enrichment + classification throughput on one core, and inventory memory
//! per pod: 100,000 pods on 500 nodes, 50,000 cloud prefixes in AWS's file
//! format, conntrack entries mixing pod-to-pod (direct and through a
//! ClusterIP), masqueraded internet and cloud-service traffic.
//!
//! Usage: bench_enrich [PODS] [PREFIXES] [ENTRIES]. Prints one JSON object.
//! The reference in the same run is the cost of copying each entry into a
//! record-sized struct with no lookups, to show what enrichment adds.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use tollgate::classify::{Classifier, NetworkConfig};
use tollgate::conntrack::{Counters, Entry, Origin, Tuple, L4};
use tollgate::enrich::Enricher;
use tollgate::inventory::{static_file, Interner};
use tollgate_schema::{Family, Protocol};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod_ip(i: u64) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + (i as u32))
}

fn main() -> anyhow::Result<()> {
    let pods = arg(1, 100_000);
    let prefixes = arg(2, 50_000);
    let entries = arg(3, 2_000_000);
    let nodes = 500;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-enrich-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // The inventory, in the static file format.
    let mut yaml = String::from("nodes:\n");
    for n in 0..nodes {
        writeln!(
            yaml,
            "  - {{name: node-{n}, zone: r1-{}, region: r1, addresses: [192.168.{}.{}]}}",
            ["a", "b", "c"][n % 3],
            n / 250,
            n % 250 + 1
        )?;
    }
    yaml.push_str("pods:\n");
    for p in 0..pods {
        writeln!(
            yaml,
            "  - {{name: svc-{}-{p:x}, namespace: team-{}, node: node-{}, ips: [{}], workload: {{kind: Deployment, name: svc-{}}}}}",
            p % 2000,
            p % 40,
            p % nodes as u64,
            pod_ip(p),
            p % 2000
        )?;
    }
    yaml.push_str("services:\n");
    for s in 0..1000u64 {
        writeln!(
            yaml,
            "  - {{name: api-{s}, namespace: team-{}, cluster_ips: [10.96.{}.{}]}}",
            s % 40,
            s / 250,
            s % 250 + 1
        )?;
    }
    let inventory_path = dir.join("inventory.yaml");
    std::fs::write(&inventory_path, &yaml)?;
    drop(yaml);

    // 50,000 AWS-format prefixes in public space.
    let mut json = String::from("{\"prefixes\": [");
    for i in 0..prefixes {
        let base = 0x3400_0000u32 + (i as u32) * 256;
        if i > 0 {
            json.push(',');
        }
        write!(
            json,
            "{{\"ip_prefix\": \"{}/24\", \"region\": \"r{}\", \"service\": \"{}\"}}",
            Ipv4Addr::from(base),
            i % 20,
            ["AMAZON", "S3", "EC2"][(i % 3) as usize]
        )?;
    }
    json.push_str("]}");
    std::fs::write(dir.join("ip-ranges.json"), &json)?;
    drop(json);

    let rss_before = rss_kib();
    let inventory = static_file::load(&inventory_path, "team", 300)?;
    let rss_inventory = rss_kib().saturating_sub(rss_before);
    let config: NetworkConfig = serde_saphyr::from_str(
        "in_region: [172.16.0.0/12]\ncloud_ranges: {aws: ip-ranges.json}\n",
    )?;
    let classifier = Classifier::new(&config, &dir, &mut Interner::default())?;

    // Entries as node-0 sees them: its pods talk to pods anywhere, to
    // ClusterIPs, to the internet and to cloud ranges.
    let local_pods: Vec<u64> = (0..pods).filter(|p| p % nodes as u64 == 0).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sample: Vec<Entry> = (0..100_000)
        .map(|i| {
            let local = IpAddr::V4(pod_ip(
                local_pods[(next() % local_pods.len() as u64) as usize],
            ));
            let (dst, reply_src) = match i % 4 {
                0 => {
                    let peer = IpAddr::V4(pod_ip(next() % pods));
                    (peer, peer)
                }
                1 => {
                    let s = next() % 1000;
                    let vip =
                        IpAddr::V4(Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8));
                    (vip, IpAddr::V4(pod_ip(next() % pods)))
                }
                2 => {
                    let cloud = IpAddr::V4(Ipv4Addr::from(
                        0x3400_0000u32 + (next() % (prefixes * 256)) as u32,
                    ));
                    (cloud, cloud)
                }
                _ => {
                    let internet =
                        IpAddr::V4(Ipv4Addr::from(0x5000_0000u32 + next() as u32 % 0x1000_0000));
                    (internet, internet)
                }
            };
            Entry {
                origin: Origin::Dump,
                family: Family::Ipv4,
                proto: Protocol::TCP,
                orig: Tuple {
                    src: local,
                    dst,
                    l4: L4::Ports {
                        src: 40000,
                        dst: 443,
                    },
                },
                reply: Tuple {
                    src: reply_src,
                    dst: local,
                    l4: L4::Ports {
                        src: 443,
                        dst: 40000,
                    },
                },
                orig_counters: Some(Counters {
                    packets: 10,
                    bytes: 1000,
                }),
                reply_counters: Some(Counters {
                    packets: 12,
                    bytes: 16000,
                }),
                id: i,
                zone: 0,
                mark: 0,
                status: 0,
                tcp_state: None,
                start_ns: None,
                stop_ns: None,
            }
        })
        .collect();

    let mut enricher = Enricher::new("bench", "node-0", "platform");
    let mut records = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    for i in 0..entries {
        let entry = &sample[(i % sample.len() as u64) as usize];
        enricher.enrich(entry, 1_700_000_000, 10, &inventory, &classifier, |r| {
            records += 1;
            bytes += black_box(r).bytes_sent;
        });
    }
    let enrich_seconds = start.elapsed().as_secs_f64();

    // Reference: the same loop copying each entry's fields, no lookups.
    let start = Instant::now();
    let mut copied = 0u64;
    for i in 0..entries {
        let entry = black_box(&sample[(i % sample.len() as u64) as usize]);
        let copy = black_box(*entry);
        copied += copy.orig_counters.map_or(0, |c| c.bytes);
    }
    let copy_seconds = start.elapsed().as_secs_f64();
    black_box((bytes, copied));

    let stats = enricher.stats;
    println!(
        "{}",
        serde_json::json!({
            "pods": pods,
            "cloud_prefixes": classifier.cloud_prefixes(),
            "entries": entries,
            "records": records,
            "seconds": enrich_seconds,
            "entries_per_second": entries as f64 / enrich_seconds,
            "records_per_second": records as f64 / enrich_seconds,
            "copy_only_entries_per_second": entries as f64 / copy_seconds,
            "inventory_rss_kib": rss_inventory,
            "bytes_per_pod": rss_inventory as f64 * 1024.0 / pods as f64,
            "unknown_remote": stats.unknown_remote,
            "not_local": stats.not_local,
        })
    );
    std::fs::remove_dir_all(Path::new(&dir))?;
    Ok(())
}
