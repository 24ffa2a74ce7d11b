//! Enrichment + classification throughput on one core, and inventory memory
//! per pod: 100,000 pods on 500 nodes, 50,000 cloud prefixes in AWS's file
//! format, conntrack entries mixing pod-to-pod (direct and through a
//! ClusterIP), masqueraded internet and cloud-service traffic.
//!
//! Usage: `bench_enrich [PODS] [PREFIXES] [ENTRIES]`. Prints one JSON object.
//! The reference in the same run is the cost of copying each entry into a
//! record-sized struct with no lookups, to show what enrichment adds.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use tollgate::classify::{Classifier, NetworkConfig};
use tollgate::conntrack::{Counters, Entry, Tuple, L4};
use tollgate::enrich::Enricher;
use tollgate::inventory::{static_file, Interner, Inventory, NodeInfo, PodInfo};
use tollgate_tests::synthetic::{random_numbers, status_kib, World};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The world's nodes and pods added one at a time through the
/// inventory's update calls, with the same names as the static file.
fn watched_inventory(world: &World) -> Inventory {
    let mut inventory = Inventory::new(300);
    for n in 0..world.nodes {
        let node = NodeInfo {
            name: inventory.names.name(&format!("node-{n}")),
            zone: inventory
                .names
                .name(["r1-a", "r1-b", "r1-c"][(n % 3) as usize]),
            region: inventory.names.name("r1"),
            provider: inventory.names.name(""),
            provider_id: inventory.names.name(""),
            pod_cidrs: Vec::new(),
        };
        let ip = IpAddr::V4(std::net::Ipv4Addr::new(
            192,
            168,
            (n / 250) as u8,
            (n % 250 + 1) as u8,
        ));
        inventory.upsert_node(node, &[ip], 0);
    }
    for p in 0..world.pods {
        let workload = format!("svc-{}", p % 2000);
        let namespace = inventory.names.name(&format!("team-{}", p % 40));
        let pod = PodInfo {
            name: inventory.names.name(&format!("{workload}-{p:x}")),
            team: namespace.clone(),
            namespace,
            node: inventory.names.name(&format!("node-{}", p % world.nodes)),
            workload_kind: inventory.names.name("Deployment"),
            workload: inventory.names.name(&workload),
            host_network: false,
            host_ports: Vec::new(),
        };
        inventory.upsert_pod(pod, &[IpAddr::V4(World::pod_ip(p))], 0, 0);
    }
    inventory
}

/// First argument of the child that measures [`watched_inventory`].
const WATCHED: &str = "watched-inventory";

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(WATCHED) {
        let world = World {
            pods: arg(2, 100_000),
            nodes: 500,
            prefixes: 0,
        };
        let before = status_kib("self", "VmRSS:")?;
        let inventory = watched_inventory(&world);
        println!("{}", status_kib("self", "VmRSS:")?.saturating_sub(before));
        drop(inventory);
        return Ok(());
    }
    let pods = arg(1, 100_000);
    let prefixes = arg(2, 50_000);
    let entries = arg(3, 2_000_000);
    let dir = std::env::temp_dir().join(format!("tollgate-bench-enrich-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let world = World {
        pods,
        nodes: 500,
        prefixes,
    };
    let (inventory_path, _) = world.write(&dir)?;

    // The inventory built object by object, as the Kubernetes watches feed
    // it: its own memory, without a parser's leftovers, in a fresh process
    // (memory freed here would be reused and hide part of it).
    let watched = std::process::Command::new(std::env::current_exe()?)
        .args([WATCHED, &pods.to_string()])
        .output()?;
    anyhow::ensure!(watched.status.success(), "{watched:?}");
    let rss_watched: u64 = String::from_utf8(watched.stdout)?.trim().parse()?;

    let rss_before = status_kib("self", "VmRSS:")?;
    let inventory = static_file::load(&inventory_path, "team", 300)?;
    let rss_inventory = status_kib("self", "VmRSS:")?.saturating_sub(rss_before);
    let config: NetworkConfig = serde_saphyr::from_str(
        "in_region: [172.16.0.0/12]\ncloud_ranges: {aws: ip-ranges.json}\n",
    )?;
    let classifier = Classifier::new(&config, &dir, &mut Interner::default())?;

    // Entries as node-0 sees them: its pods talk to pods anywhere, to
    // ClusterIPs, to the internet and to cloud ranges.
    let local_pods = world.local_pods();
    let mut next = random_numbers(0x2545_f491_4f6c_dd1d);
    let sample: Vec<Entry> = (0..100_000)
        .map(|i| {
            let local = IpAddr::V4(World::pod_ip(
                local_pods[(next() % local_pods.len() as u64) as usize],
            ));
            let (dst, reply_src) = world.peer(i, &mut next);
            let (dst, reply_src) = (IpAddr::V4(dst), IpAddr::V4(reply_src));
            Entry {
                id: i as u32,
                ..Entry::tcp(
                    Tuple {
                        src: local,
                        dst,
                        l4: L4::Ports {
                            src: 40000,
                            dst: 443,
                        },
                    },
                    Tuple {
                        src: reply_src,
                        dst: local,
                        l4: L4::Ports {
                            src: 443,
                            dst: 40000,
                        },
                    },
                    Some(Counters {
                        packets: 10,
                        bytes: 1000,
                    }),
                    Some(Counters {
                        packets: 12,
                        bytes: 16000,
                    }),
                )
            }
        })
        .collect();

    let mut enricher = Enricher::new("bench", "node-0", "platform");
    let mut records = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    // As the agent does: entries enriched `PENDING` at a time.
    let mut done = 0;
    while done < entries {
        let start = (done % sample.len() as u64) as usize;
        let take = (entries - done).min(tollgate::agent::PENDING as u64) as usize;
        let end = (start + take).min(sample.len());
        enricher.enrich_many(
            &sample[start..end],
            1_700_000_000,
            10,
            &inventory,
            &classifier,
            |r| {
                records += 1;
                bytes += black_box(r).bytes_sent;
            },
        );
        done += (end - start) as u64;
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
            "watched_inventory_rss_kib": rss_watched,
            "watched_bytes_per_pod": rss_watched as f64 * 1024.0 / pods as f64,
            "unknown_remote": stats.unknown_remote,
            "not_local": stats.not_local,
        })
    );
    std::fs::remove_dir_all(Path::new(&dir))?;
    Ok(())
}
