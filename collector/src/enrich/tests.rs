//! Who each record is about, through NAT, host networking and unknowns.

use std::net::IpAddr;
use std::path::Path;

use tollgate_schema::{Category, Family, FlowRecord, Initiator, RemoteKind};

use super::Enricher;
use crate::classify::{Classifier, NetworkConfig};
use crate::conntrack::{Counters, Entry, Tuple, L4};
use crate::inventory::{static_file, Inventory};

const INVENTORY: &str = "
nodes:
  - {name: node-a, zone: r1-a, region: r1, provider: aws, addresses: [192.168.0.1, 'fd00:0:ffff::1'], pod_cidrs: [10.1.1.0/24]}
  - {name: node-b, zone: r1-b, region: r1, addresses: [192.168.0.2], pod_cidrs: [10.1.2.0/24]}
  - {name: node-c, zone: r2-a, region: r2, addresses: [192.168.0.3], pod_cidrs: [10.1.3.0/24]}
pods:
  - {name: web-1, namespace: shop, node: node-a, ips: [10.1.1.10, 'fd00:1::10'], workload: {kind: Deployment, name: web}}
  - {name: cache-1, namespace: shop, node: node-a, ips: [10.1.1.11], workload: {kind: StatefulSet, name: cache}}
  - {name: api-1, namespace: api, node: node-b, ips: [10.1.2.20, 'fd00:2::20'], workload: {kind: Deployment, name: api}}
  - {name: db-1, namespace: data, node: node-c, ips: [10.1.3.30], workload: {kind: StatefulSet, name: db}}
  - {name: exporter-a, namespace: monitoring, node: node-a, host_network: true, ports: [{port: 9100}], workload: {kind: DaemonSet, name: exporter}}
services:
  - {name: db, namespace: data, cluster_ips: [10.96.0.30]}
  - {name: api, namespace: api, cluster_ips: [10.96.0.20], node_ports: [{port: 30081}], load_balancer_ips: [34.120.0.9]}
namespaces:
  - {name: shop, labels: {team: payments}}
";

fn world() -> (Inventory, Classifier) {
    let inventory = static_file::from_str(INVENTORY, Path::new("inv.yaml"), "team", 300).unwrap();
    let config: NetworkConfig = serde_saphyr::from_str("internet: []").unwrap();
    let mut names = crate::inventory::Interner::default();
    let classifier = Classifier::new(&config, Path::new("."), &mut names).unwrap();
    (inventory, classifier)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A TCP entry: `orig` src:port -> dst:port, reply src:port -> dst:port,
/// with `up` bytes in the original direction and `down` in the reply.
fn entry(orig: (&str, u16, &str, u16), reply: (&str, u16, &str, u16), up: u64, down: u64) -> Entry {
    let tuple = |(s, sp, d, dp): (&str, u16, &str, u16)| Tuple {
        src: ip(s),
        dst: ip(d),
        l4: L4::Ports { src: sp, dst: dp },
    };
    Entry {
        id: 7,
        ..Entry::tcp(
            tuple(orig),
            tuple(reply),
            Some(Counters {
                packets: 3,
                bytes: up,
            }),
            Some(Counters {
                packets: 2,
                bytes: down,
            }),
        )
    }
}

fn records(node: &str, entry: &Entry) -> (Vec<FlowRecord>, super::EnrichStats) {
    let (inventory, classifier) = world();
    let mut enricher = Enricher::new("test", node, "platform");
    let mut out = Vec::new();
    enricher.enrich(entry, 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    (out, enricher.stats)
}

/// (local workload, remote workload, category, sent, received, initiator)
fn summary(r: &FlowRecord) -> (String, String, Category, u64, u64, Initiator) {
    (
        format!("{}/{}", r.local_workload_kind, r.local_workload),
        format!("{}/{}", r.remote_workload_kind, r.remote_workload),
        r.category,
        r.bytes_sent,
        r.bytes_received,
        r.initiator,
    )
}

#[test]
fn a_cross_node_connection_is_recorded_by_each_node_from_its_own_side() {
    let e = entry(
        ("10.1.1.10", 40000, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "10.1.1.10", 40000),
        1000,
        300,
    );
    let (a, _) = records("node-a", &e);
    assert_eq!(a.len(), 1);
    assert_eq!(
        summary(&a[0]),
        (
            "Deployment/web".into(),
            "Deployment/api".into(),
            Category::CrossZone,
            1000,
            300,
            Initiator::Local
        )
    );
    assert_eq!((&*a[0].local_team, &*a[0].remote_team), ("payments", "api"));
    assert_eq!((a[0].local_port, a[0].remote_port), (40000, 8080));
    assert_eq!(
        (&*a[0].local_zone, &*a[0].remote_zone, &*a[0].remote_node),
        ("r1-a", "r1-b", "node-b")
    );
    // The provider is the observing node's: node-b's record has none,
    // though its remote pod runs on an AWS node.
    let (b, _) = records("node-b", &e);
    assert_eq!((&*a[0].local_provider, &*b[0].local_provider), ("aws", ""));
    assert_eq!(b.len(), 1);
    assert_eq!(
        summary(&b[0]),
        (
            "Deployment/api".into(),
            "Deployment/web".into(),
            Category::CrossZone,
            300,
            1000,
            Initiator::Remote
        )
    );
}

#[test]
fn two_pods_of_one_node_give_two_records_and_ipv6_works_alike() {
    let e = entry(
        ("10.1.1.10", 40000, "10.1.1.11", 6379),
        ("10.1.1.11", 6379, "10.1.1.10", 40000),
        500,
        50,
    );
    let (a, _) = records("node-a", &e);
    let got: Vec<_> = a.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (
                "Deployment/web".into(),
                "StatefulSet/cache".into(),
                Category::SameZone,
                500,
                50,
                Initiator::Local
            ),
            (
                "StatefulSet/cache".into(),
                "Deployment/web".into(),
                Category::SameZone,
                50,
                500,
                Initiator::Remote
            ),
        ]
    );
    let e6 = entry(
        ("fd00:1::10", 40000, "fd00:2::20", 443),
        ("fd00:2::20", 443, "fd00:1::10", 40000),
        9,
        8,
    );
    let (a6, _) = records("node-a", &e6);
    assert_eq!(summary(&a6[0]).1, "Deployment/api");
    assert_eq!(a6[0].family, Family::Ipv6);
    assert_eq!(
        a6[0].local_ip,
        "fd00:1::10".parse::<std::net::Ipv6Addr>().unwrap()
    );
}

#[test]
fn a_cluster_ip_is_attributed_to_the_backend_and_keeps_the_service_name() {
    // web-1 -> ClusterIP 10.96.0.30:5432, DNATed to db-1 on node-c (region r2).
    let e = entry(
        ("10.1.1.10", 41000, "10.96.0.30", 5432),
        ("10.1.3.30", 5432, "10.1.1.10", 41000),
        700,
        7000,
    );
    let (a, _) = records("node-a", &e);
    assert_eq!(a.len(), 1);
    assert_eq!(summary(&a[0]).1, "StatefulSet/db");
    assert_eq!(a[0].category, Category::CrossRegion);
    assert_eq!(&*a[0].remote_service, "data/db");
    assert_eq!(
        a[0].remote_ip,
        "::ffff:10.1.3.30".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(a[0].remote_kind, RemoteKind::Pod);
    // The backend's node records the backend's side.
    let (c, _) = records("node-c", &e);
    assert_eq!(summary(&c[0]).0, "StatefulSet/db");
    assert_eq!((c[0].bytes_sent, c[0].bytes_received), (7000, 700));
}

#[test]
fn masquerade_to_the_internet_keeps_the_pod() {
    // web-1 -> 8.8.8.8:443, SNATed to node-a's address.
    let e = entry(
        ("10.1.1.10", 42000, "8.8.8.8", 443),
        ("8.8.8.8", 443, "192.168.0.1", 61000),
        100,
        20000,
    );
    let (a, _) = records("node-a", &e);
    assert_eq!(a.len(), 1);
    assert_eq!(summary(&a[0]).0, "Deployment/web");
    assert_eq!(
        (a[0].category, a[0].remote_kind),
        (Category::Internet, RemoteKind::Internet)
    );
    assert_eq!((a[0].bytes_sent, a[0].bytes_received), (100, 20000));
}

#[test]
fn host_network_traffic_is_the_node_or_the_pod_that_declares_the_port() {
    // api-1 scrapes the exporter on node-a's address, port 9100.
    let e = entry(
        ("10.1.2.20", 43000, "192.168.0.1", 9100),
        ("192.168.0.1", 9100, "10.1.2.20", 43000),
        80,
        9000,
    );
    let (a, _) = records("node-a", &e);
    assert_eq!(summary(&a[0]).0, "DaemonSet/exporter");
    assert_eq!(&*a[0].local_team, "monitoring");
    // The kubelet (a node process) talking to api-1.
    let e = entry(
        ("192.168.0.1", 50000, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "192.168.0.1", 50000),
        60,
        70,
    );
    let (a, _) = records("node-a", &e);
    assert_eq!(summary(&a[0]).0, "Node/node-a");
    assert_eq!(&*a[0].local_team, "platform");
    assert_eq!(a[0].category, Category::CrossZone);
    let (b, _) = records("node-b", &e);
    assert_eq!(
        (summary(&b[0]).1, b[0].remote_kind),
        ("Node/node-a".into(), RemoteKind::Node)
    );
}

#[test]
fn a_node_port_forwarded_elsewhere_is_the_nodes_on_both_halves() {
    // 203.0.113.5 -> node-a:30080, DNATed to api-1 on node-b and SNATed to node-a.
    let e = entry(
        ("203.0.113.5", 55000, "192.168.0.1", 30080),
        ("10.1.2.20", 8080, "192.168.0.1", 30001),
        400,
        4000,
    );
    let (a, stats) = records("node-a", &e);
    let got: Vec<_> = a.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (
                "Node/node-a".into(),
                "/".into(),
                Category::Internet,
                4000,
                400,
                Initiator::Remote
            ),
            (
                "Node/node-a".into(),
                "Deployment/api".into(),
                Category::CrossZone,
                400,
                4000,
                Initiator::Local
            ),
        ]
    );
    assert_eq!(stats.records, 2);
}

#[test]
fn unknown_addresses_stay_unknown_and_foreign_entries_are_counted() {
    // An address of node-a's pod range that no known pod holds (yet).
    let e = entry(
        ("10.1.1.99", 44000, "10.1.2.20", 80),
        ("10.1.2.20", 80, "10.1.1.99", 44000),
        10,
        20,
    );
    let (a, stats) = records("node-a", &e);
    assert_eq!(a.len(), 1);
    assert_eq!((&*a[0].local_pod, &*a[0].local_workload), ("", ""));
    assert_eq!(
        a[0].category,
        Category::CrossZone,
        "the node's zone is still known"
    );
    assert_eq!(stats.unknown_local, 1);
    // Traffic between two other nodes' pods, merely routed here.
    let e = entry(
        ("10.1.2.20", 45000, "10.1.3.30", 80),
        ("10.1.3.30", 80, "10.1.2.20", 45000),
        10,
        20,
    );
    let (a, stats) = records("node-a", &e);
    assert!(a.is_empty());
    assert_eq!((stats.not_local, stats.not_local_bytes), (1, 30));
}

#[test]
fn entries_enriched_together_give_the_records_of_each_alone_in_order() {
    let (inventory, classifier) = world();
    let addresses = [
        "10.1.1.10",
        "10.1.1.11",
        "10.1.2.20",
        "10.1.3.30",
        "10.96.0.30",
        "192.168.0.1",
        "10.1.1.99",
        "203.0.113.9",
        "fd00:1::10",
    ];
    // Every pair, some through the ClusterIP.
    let mut entries = Vec::new();
    for (i, from) in addresses.iter().enumerate() {
        for (j, to) in addresses.iter().enumerate() {
            let reply_src = if *to == "10.96.0.30" { "10.1.3.30" } else { to };
            let port = 9100 + (i * 10 + j) as u16 % 3;
            entries.push(entry(
                (from, 40000 + j as u16, to, port),
                (reply_src, port, from, 40000 + j as u16),
                (i * 100 + j) as u64,
                j as u64,
            ));
        }
    }
    let mut alone = Enricher::new("test", "node-a", "platform");
    let mut one_by_one = Vec::new();
    for e in &entries {
        alone.enrich(e, 1000, 10, &inventory, &classifier, |r| {
            one_by_one.push(r.to_record())
        });
    }
    let mut together = Enricher::new("test", "node-a", "platform");
    let mut batched = Vec::new();
    together.enrich_many(&entries, 1000, 10, &inventory, &classifier, |r| {
        batched.push(r.to_record())
    });
    assert!(one_by_one.len() > entries.len() / 2);
    assert_eq!(batched, one_by_one);
    assert_eq!(together.stats, alone.stats);
}

/// An overlay's outer packets between two nodes carry pods' packets that
/// their own entries bill: the outer flow is counted, never billed as node
/// traffic. The same ports between a node and a pod, or another protocol
/// between nodes, are ordinary traffic.
#[test]
fn tunnels_between_nodes_are_counted_not_billed() {
    use tollgate_schema::Protocol;
    let udp = |mut e: Entry| {
        e.proto = Protocol::UDP;
        e
    };
    let vxlan = udp(entry(
        ("192.168.0.1", 40000, "192.168.0.2", 8472),
        ("192.168.0.2", 8472, "192.168.0.1", 40000),
        5000,
        0,
    ));
    for node in ["node-a", "node-b"] {
        let (out, stats) = records(node, &vxlan);
        assert!(out.is_empty(), "{node}: {out:?}");
        assert_eq!((stats.tunnel, stats.tunnel_bytes), (1, 5000));
    }
    let wireguard = udp(entry(
        ("192.168.0.3", 51820, "192.168.0.1", 51820),
        ("192.168.0.1", 51820, "192.168.0.3", 51820),
        700,
        300,
    ));
    let (out, stats) = records("node-a", &wireguard);
    assert!(out.is_empty());
    assert_eq!(stats.tunnel_bytes, 1000);
    let mut ipip = entry(
        ("192.168.0.1", 0, "192.168.0.2", 0),
        ("192.168.0.2", 0, "192.168.0.1", 0),
        900,
        0,
    );
    ipip.proto = Protocol(4);
    ipip.orig.l4 = L4::None;
    ipip.reply.l4 = L4::None;
    assert!(records("node-a", &ipip).0.is_empty());

    // The same port to a pod, and SSH between nodes: billed.
    let to_pod = udp(entry(
        ("192.168.0.1", 40000, "10.1.2.20", 8472),
        ("10.1.2.20", 8472, "192.168.0.1", 40000),
        100,
        0,
    ));
    let (out, stats) = records("node-a", &to_pod);
    assert_eq!((out.len(), stats.tunnel), (1, 0));
    let ssh = entry(
        ("192.168.0.1", 40000, "192.168.0.2", 22),
        ("192.168.0.2", 22, "192.168.0.1", 40000),
        100,
        50,
    );
    let (out, _) = records("node-a", &ssh);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].category, Category::CrossZone);
}

/// Without a pod range to match, an address the inventory does not know is
/// local when this node routes it as a host to one of its devices.
#[test]
fn an_unknown_address_routed_here_is_a_local_pod() {
    let (inventory, classifier) = world();
    // 10.9.0.7 is in no node's pod range.
    let flow = entry(
        ("10.9.0.7", 40000, "10.1.2.20", 80),
        ("10.1.2.20", 80, "10.9.0.7", 40000),
        600,
        400,
    );
    let mut enricher = Enricher::new("test", "node-a", "platform");
    let mut out = Vec::new();
    enricher.enrich(&flow, 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    assert!(out.is_empty(), "not routed here: {out:?}");
    enricher.set_routed_here(vec![ip("10.9.0.7")]);
    enricher.enrich(&flow, 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(
        (
            &*r.local_workload,
            r.bytes_sent,
            r.bytes_received,
            r.category
        ),
        ("", 600, 400, Category::CrossZone)
    );
    assert_eq!(enricher.stats.unknown_local, 1);
}

/// An ended connection is attributed to whoever held its addresses when
/// it ended (the DESTROY event's timestamp), not at the end of the
/// interval, when a new pod may already hold the address.
#[test]
fn an_ended_connection_is_attributed_at_its_end() {
    use crate::conntrack::Origin;
    use crate::inventory::{ObjectKey, PodInfo};
    let (mut inventory, classifier) = world();
    let pod = |inventory: &mut Inventory, name: &str, workload: &str| PodInfo {
        name: inventory.names.name(name),
        namespace: inventory.names.name("shop"),
        node: inventory.names.name("node-a"),
        workload_kind: inventory.names.name("Deployment"),
        workload: inventory.names.name(workload),
        team: inventory.names.name("payments"),
        host_network: false,
        host_ports: Vec::new(),
    };
    let old = pod(&mut inventory, "batch-old", "batch");
    inventory.upsert_pod(old, &[ip("10.1.1.50")], 100, 100);
    inventory.remove(&ObjectKey::Pod("shop/batch-old".into()), 930);
    let new = pod(&mut inventory, "search-new", "search");
    inventory.upsert_pod(new, &[ip("10.1.1.50")], 950, 950);

    let mut ended = entry(
        ("10.1.1.50", 40000, "10.1.2.20", 80),
        ("10.1.2.20", 80, "10.1.1.50", 40000),
        700,
        300,
    );
    ended.origin = Origin::Ended;
    ended.stop_ns = Some(920_000_000_123);
    let live = Entry {
        origin: Origin::Dump,
        stop_ns: None,
        ..ended
    };
    let mut enricher = Enricher::new("test", "node-a", "platform");
    let mut out = Vec::new();
    for e in [&ended, &live] {
        enricher.enrich(e, 1000, 10, &inventory, &classifier, |r| {
            out.push(r.to_record())
        });
    }
    let workloads: Vec<&str> = out.iter().map(|r| &*r.local_workload).collect();
    assert_eq!(workloads, ["batch", "search"]);
    assert_eq!(out[0].observed_at, 1000, "still the read's interval");
}

/// A pod deleted, its address given to a pod the inventory does not know
/// yet: a connection begun after the deletion is not the deleted pod's (it
/// waits for its own pod), one begun before it still is.
#[test]
fn a_connection_begun_after_its_address_was_let_go_waits_for_the_next_holder() {
    use crate::inventory::{ObjectKey, PodInfo};
    let (mut inventory, classifier) = world();
    let mut pod = |name: &str, workload: &str| PodInfo {
        name: inventory.names.name(name),
        namespace: inventory.names.name("shop"),
        node: inventory.names.name("node-a"),
        workload_kind: inventory.names.name("Pod"),
        workload: inventory.names.name(workload),
        team: inventory.names.name("payments"),
        host_network: false,
        host_ports: Vec::new(),
    };
    let (old, new) = (pod("reuse-old", "reuse-old"), pod("reuse-new", "reuse-new"));
    inventory.upsert_pod(old, &[ip("10.1.1.50")], 100, 100);
    inventory.remove(&ObjectKey::Pod("shop/reuse-old".into()), 930);
    let stamped = |sport: u16, start: u64| Entry {
        start_ns: Some(start * 1_000_000_000 + 7),
        ..entry(
            ("10.1.1.50", sport, "10.1.2.20", 80),
            ("10.1.2.20", 80, "10.1.1.50", sport),
            500,
            50,
        )
    };
    let (before, after) = (stamped(40000, 900), stamped(40001, 950));
    let mut enricher = Enricher::new("test", "node-a", "platform");
    let mut out = Vec::new();
    enricher.hold_unknown();
    enricher.enrich_many(&[before, after], 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    let workloads: Vec<&str> = out.iter().map(|r| &*r.local_workload).collect();
    assert_eq!(workloads, ["reuse-old"], "the deleted pod's own connection");
    let held = enricher.take_held();
    assert_eq!(held.len(), 1, "the later connection waits");

    // The next pod known, each connection is its pod's, whichever read
    // carries it: the deleted pod's was begun before the next pod started.
    inventory.upsert_pod(new, &[ip("10.1.1.50")], 945, 1003);
    out.clear();
    enricher.enrich_many(&[before, held[0]], 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    let workloads: Vec<&str> = out.iter().map(|r| &*r.local_workload).collect();
    assert_eq!(workloads, ["reuse-old", "reuse-new"]);
}

/// NodePort and LoadBalancer Services: the client's leg is billed to the
/// backend workload, naming the Service, whichever node the client reached.
#[test]
fn node_port_and_load_balancer_clients_are_the_backends() {
    // externalTrafficPolicy Cluster: the client reached node-a, which
    // DNATed to api-1 on node-b and SNATed to itself. node-a records the
    // client's leg and its side of the hop as api's, at node-a's place
    // (internet, and cross-zone from node-a's address); node-b records
    // api's side of the hop.
    let cluster_policy = entry(
        ("203.0.113.5", 55000, "192.168.0.1", 30081),
        ("10.1.2.20", 8080, "192.168.0.1", 30001),
        400,
        4000,
    );
    let (a, _) = records("node-a", &cluster_policy);
    let got: Vec<_> = a.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (
                "Deployment/api".into(),
                "/".into(),
                Category::Internet,
                4000,
                400,
                Initiator::Remote
            ),
            (
                "Deployment/api".into(),
                "Deployment/api".into(),
                Category::CrossZone,
                400,
                4000,
                Initiator::Local
            )
        ]
    );
    for record in &a {
        assert_eq!(
            (&*record.remote_service, &*record.local_zone),
            ("api/api", "r1-a")
        );
    }
    assert_eq!(
        (a[1].local_ip, a[1].local_port, a[1].remote_ip),
        (
            "::ffff:192.168.0.1".parse().unwrap(),
            30001,
            "::ffff:10.1.2.20".parse().unwrap()
        )
    );
    let hop = entry(
        ("192.168.0.1", 30001, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "192.168.0.1", 30001),
        400,
        4000,
    );
    let (b, _) = records("node-b", &hop);
    assert_eq!(
        b.iter().map(summary).collect::<Vec<_>>(),
        [(
            "Deployment/api".into(),
            "Node/node-a".into(),
            Category::CrossZone,
            4000,
            400,
            Initiator::Remote
        )]
    );

    // externalTrafficPolicy Local: the client reached the backend's own
    // node, no SNAT: the backend's record names the Service.
    let local_policy = entry(
        ("203.0.113.5", 55001, "192.168.0.2", 30081),
        ("10.1.2.20", 8080, "203.0.113.5", 55001),
        500,
        5000,
    );
    let (b, _) = records("node-b", &local_policy);
    assert_eq!(b.len(), 1);
    assert_eq!(
        (
            &*b[0].local_workload,
            &*b[0].remote_service,
            b[0].category,
            b[0].bytes_sent
        ),
        ("api", "api/api", Category::Internet, 5000)
    );

    // A load balancer that keeps its address: translated from it, and
    // forwarded to node-b.
    let balanced = entry(
        ("203.0.113.5", 55002, "34.120.0.9", 80),
        ("10.1.2.20", 8080, "192.168.0.1", 30002),
        600,
        6000,
    );
    let (a, _) = records("node-a", &balanced);
    let got: Vec<_> = a
        .iter()
        .map(|r| {
            (
                &*r.local_workload,
                &*r.remote_service,
                r.category,
                r.bytes_sent,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("api", "api/api", Category::Internet, 6000),
            ("api", "api/api", Category::CrossZone, 600)
        ]
    );
}

/// While holding, an entry whose local end is an unknown address of this
/// node's pod range is kept rather than recorded; the others are recorded
/// as usual. Enriched again once the pod is known, it is the pod's.
#[test]
fn entries_of_a_pod_not_known_yet_are_held_then_attributed() {
    let (mut inventory, classifier) = world();
    let unknown = entry(
        ("10.1.1.99", 40000, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "10.1.1.99", 40000),
        1500,
        40,
    );
    let known = entry(
        ("10.1.1.10", 40001, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "10.1.1.10", 40001),
        700,
        20,
    );
    let mut enricher = Enricher::new("test", "node-a", "platform");
    let mut out = Vec::new();
    enricher.hold_unknown();
    enricher.enrich_many(&[unknown, known], 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    assert_eq!(out.len(), 1, "the known pod's entry is recorded");
    assert_eq!(&*out[0].local_workload, "web");
    let held = enricher.take_held();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].orig.src, ip("10.1.1.99"));

    let mut names = crate::inventory::Interner::default();
    let job = crate::inventory::PodInfo {
        name: names.name("report-1"),
        namespace: names.name("shop"),
        node: names.name("node-a"),
        workload_kind: names.name("CronJob"),
        workload: names.name("report"),
        team: names.name("payments"),
        host_network: false,
        host_ports: Vec::new(),
    };
    inventory.finished_pod(job, &[ip("10.1.1.99")], 995, 999, 1002);
    out.clear();
    enricher.enrich_many(&held, 1000, 10, &inventory, &classifier, |r| {
        out.push(r.to_record())
    });
    assert_eq!(out.len(), 1);
    assert_eq!(
        summary(&out[0]),
        (
            "CronJob/report".into(),
            "Deployment/api".into(),
            Category::CrossZone,
            1500,
            40,
            Initiator::Local
        )
    );
    assert!(
        enricher.take_held().is_empty(),
        "not holding after take_held"
    );
}

/// Over an overlay, a node's traffic to another node's pods leaves from
/// its tunnel device, whose address is the first of its own pod range
/// (flannel): an address of a node's pod range that no pod holds is at
/// that node, and priced from there. From node-b (r1), node-c's 10.1.3.0
/// is in r2: cross-region, not the in-region default of the rules.
#[test]
fn an_unheld_address_of_a_nodes_pod_range_is_at_that_node() {
    let e = entry(
        ("10.1.3.0", 40000, "10.1.2.20", 8080),
        ("10.1.2.20", 8080, "10.1.3.0", 40000),
        900,
        100,
    );
    let (b, _) = records("node-b", &e);
    assert_eq!(b.len(), 1);
    assert_eq!(&*b[0].local_workload, "api");
    assert_eq!(b[0].category, Category::CrossRegion);
    assert_eq!(b[0].remote_kind, RemoteKind::Unknown);
    assert_eq!(
        (&*b[0].remote_node, &*b[0].remote_zone, &*b[0].remote_region),
        ("node-c", "r2-a", "r2")
    );
}
