//! `tollgate agent` end to end on real components: three agents, one per
//! node of a simulated cluster (kernel conntrack in network namespaces,
//! kube-proxy-style DNAT, masquerade to an internet host), real ClickHouse
//! and its metering views, compared with nftables' counters; an agent
//! restarted mid-run; Prometheus scraping an agent; every Grafana
//! dashboard query answering over the data.

#![allow(clippy::unwrap_used)]
// Test code: an unwrap is an assertion.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tollgate_tests::clickhouse;
use tollgate_tests::cluster::{
    differences, metering, per_flow_differences, Agent, Cluster, Flow, Holder, Inbox, Key, Relay,
    Target, Underlay,
};
use tollgate_tests::dashboards::{self, Range};
use tollgate_tests::fixtures::unix_now;
use tollgate_tests::prometheus::Prometheus;
use tollgate_tests::tollgate;

const INTERVAL: u32 = 2;

fn wait(children: Vec<Child>) {
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a traffic client failed");
    }
}

#[test]
fn agents_meter_a_simulated_cluster_exactly_once_through_a_restart() {
    if !tollgate_tests::require_root("agent", "network namespaces and conntrack") {
        return;
    }
    let Some(ch) = clickhouse::require("agent") else {
        return;
    };
    let started = unix_now();
    let database = ch.fresh_database("agent");
    tollgate::migrate(ch.url(), &database);
    let cluster = Cluster::create().unwrap();
    let _relay = Relay::start(&cluster, ch.url()).unwrap();
    let configs: Vec<_> = (0..3)
        .map(|i| {
            cluster
                .agent_config(i, "http://127.0.0.1:8123", &database, None, INTERVAL)
                .unwrap()
        })
        .collect();
    // Node b logs its top talkers.
    let text = std::fs::read_to_string(&configs[1]).unwrap();
    let logged = text.replace(
        "  batch_rows: 1000\n",
        "  batch_rows: 1000\n  top_talkers: 3\n",
    );
    assert_ne!(text, logged);
    std::fs::write(&configs[1], logged).unwrap();
    let mut agents: Vec<Option<Agent>> = (0..3)
        .map(|i| Some(Agent::start(&cluster.nodes[i], &configs[i]).unwrap()))
        .collect();
    let prometheus = Prometheus::start(&cluster).unwrap();
    prometheus.wait_for_targets().unwrap();

    use Target::{Internet, Pod, Service};
    let flows = [
        Flow::new("report-29123-q7z", Pod("db-0"), "tcp", false, 21000, 1),
        Flow::new(
            "frontend-7f9c4-x2k8p",
            Pod("report-29123-q7z"),
            "tcp",
            true,
            21001,
            1,
        ),
        Flow::new("frontend-7f9c4-x2k8p", Service, "tcp", false, 22000, 40),
        Flow::new("frontend-7f9c4-x2k8p", Service, "tcp", true, 21002, 1),
        Flow::new("db-0", Pod("db-replica-0"), "tcp", true, 21003, 1),
        Flow::new("api-5d8f6-m4n2b", Pod("db-0"), "udp", false, 21004, 1),
        Flow::new("log-shipper-h5j2", Internet, "tcp", false, 21005, 1),
        Flow::new("log-shipper-h5j2", Internet, "udp", true, 21006, 1),
        Flow::new("frontend-7f9c4-x2k8p", Pod("db-0"), "tcp", true, 21007, 1),
        Flow::new("db-0", Pod("frontend-7f9c4-x2k8p"), "udp", false, 21008, 1),
    ];
    let tcp = |bytes: &str, chunks: &str| {
        vec![
            "tcp".to_owned(),
            "--bytes".into(),
            bytes.into(),
            "--chunks".into(),
            chunks.into(),
            "--pause".into(),
            "0.5".into(),
        ]
    };
    let udp = |count: &str, size: &str| {
        vec![
            "udp".to_owned(),
            "--count".into(),
            count.into(),
            "--size".into(),
            size.into(),
            "--pause".into(),
            "0.05".into(),
        ]
    };
    let start = |flow: &Flow, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.start(flow, &args).unwrap()
    };

    // Several intervals of every kind of traffic: long connections across
    // reads, short ones inside one, UDP, both families, every category.
    wait(vec![
        start(&flows[0], tcp("3000000", "8")),
        start(&flows[1], tcp("1000000", "1")),
        start(
            &flows[2],
            vec![
                "short".into(),
                "--n".into(),
                "40".into(),
                "--bytes".into(),
                "20000".into(),
            ],
        ),
        start(&flows[3], tcp("500000", "4")),
        start(&flows[4], tcp("2000000", "6")),
        start(&flows[5], udp("50", "800")),
        start(&flows[6], tcp("1000000", "4")),
        start(&flows[7], udp("30", "1000")),
    ]);

    // Node a's agent restarts while two connections to and from its pods
    // carry on: the bytes before, during and after the restart are metered
    // once.
    let long = vec![
        start(&flows[8], tcp("2000000", "10")),
        start(&flows[9], udp("60", "500")),
    ];
    thread::sleep(Duration::from_secs(2));
    agents[0].take().unwrap().stop().unwrap();
    agents[0] = Some(Agent::start(&cluster.nodes[0], &configs[0]).unwrap());
    wait(long);

    // Two reads after the traffic every connection's series exist and
    // Prometheus has scraped them: this scrape takes no series' first 0.
    thread::sleep(Duration::from_secs(2 * u64::from(INTERVAL) + 1));
    lint_exposition(&cluster);
    // The Prometheus dashboard's queries, while the agents still run.
    let range = Range {
        from: i64::from(started) - 60,
        to: i64::from(unix_now()),
        interval_seconds: i64::from(INTERVAL),
    };
    let results = dashboards::run_all_prometheus(&|path| prometheus.get(path), range, 1).unwrap();
    let empty: Vec<_> = results.iter().filter(|(_, _, n)| *n == 0).collect();
    assert!(
        empty.is_empty() && results.len() >= 9,
        "Prometheus dashboard queries without data: {empty:?} of {results:?}"
    );
    for agent in &mut agents {
        agent.take().unwrap().stop().unwrap();
    }

    let expected = cluster.expected(&flows).unwrap();
    let actual = metering(ch, &database).unwrap();
    let totals = |m: &BTreeMap<Key, u64>, direction: &str| -> u64 {
        m.iter()
            .filter(|(k, _)| k.4 == direction)
            .map(|(_, v)| v)
            .sum()
    };
    assert!(
        totals(&expected, "out") > 10_000_000,
        "the traffic ran: {expected:#?}"
    );
    let report = differences(&expected, &actual);
    assert!(
        report.is_empty(),
        "metering differs from nftables' counters:\n{}",
        report.join("\n")
    );
    check_top_talkers(ch, &database, &configs[1].with_extension("log"));
    let counted = workload_increases(&prometheus, started);
    let report = differences(&actual, &counted);
    assert!(
        report.is_empty(),
        "increase() of tollgate_workload_bytes_total differs from metering_daily:\n{}",
        report.join("\n")
    );
    let categories: std::collections::BTreeSet<&str> =
        expected.keys().map(|k| k.3.as_str()).collect();
    assert_eq!(
        categories.into_iter().collect::<Vec<_>>(),
        ["cross_region", "cross_zone", "internet", "same_zone"]
    );
    let unknown = ch
        .query(&format!(
            "SELECT count() FROM {database}.flows WHERE local_workload = '' OR remote_kind = 'unknown'"
        ))
        .unwrap();
    assert_eq!(unknown.trim(), "0", "every endpoint was attributed");
    // The connections that finished sat in the table (TIME_WAIT, UDP
    // timeouts) through at least one more read: idle entries are counted,
    // not written as empty rows.
    let empty_rows = ch
        .query(&format!(
            "SELECT count() FROM {database}.flows WHERE packets_sent + packets_received = 0 AND NOT ended"
        ))
        .unwrap();
    assert_eq!(empty_rows.trim(), "0", "rows for idle entries");
    let services = ch
        .query(&format!(
            "SELECT DISTINCT remote_service FROM {database}.flows WHERE local_workload = 'frontend' AND remote_workload = 'api'"
        ))
        .unwrap();
    assert_eq!(services.trim(), "shop/api", "the Service is kept");

    // Every dashboard variable and panel query, expanded as the plugin and
    // Grafana expand them, returns rows over this data.
    let range = Range {
        from: i64::from(started) - 60,
        to: i64::from(unix_now()) + 60,
        interval_seconds: i64::from(INTERVAL),
    };
    let results = dashboards::run_all(ch, &database, range).unwrap();
    let empty: Vec<_> = results.iter().filter(|(_, _, rows)| *rows == 0).collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without rows: {empty:?}"
    );
    assert!(results.len() >= 20, "{results:?}");
}

/// What the tests below start with: a fresh database migrated on the
/// suite's ClickHouse, a simulated cluster over `underlay`, and the relay
/// that lets its nodes reach ClickHouse. `None` (after the loud skip, or the
/// failure under CI) without root or ClickHouse.
struct Setup {
    _relay: Relay,
    cluster: Cluster,
    database: String,
    ch: &'static clickhouse::ClickHouse,
}

fn setup(name: &str, underlay: Underlay) -> Option<Setup> {
    if !tollgate_tests::require_root("agent", "network namespaces and conntrack") {
        return None;
    }
    let ch = clickhouse::require("agent")?;
    let database = ch.fresh_database(name);
    tollgate::migrate(ch.url(), &database);
    let cluster = Cluster::create_with(underlay).unwrap();
    let relay = Relay::start(&cluster, ch.url()).unwrap();
    Some(Setup {
        _relay: relay,
        cluster,
        database,
        ch,
    })
}

/// Starts the agent of `node`, writing into `database`; returns it with
/// its configuration file (its log is beside it).
fn start_agent(cluster: &Cluster, database: &str, node: usize) -> (Agent, std::path::PathBuf) {
    let config = cluster
        .agent_config(node, "http://127.0.0.1:8123", database, None, INTERVAL)
        .unwrap();
    let agent = Agent::start(&cluster.nodes[node], &config).unwrap();
    (agent, config)
}

/// Overlay CNIs carry pods' packets between nodes inside node-to-node
/// tunnels (VXLAN on UDP 8472 as flannel sets it up; WireGuard-shaped UDP
/// between ports 51820). Each pod's bytes are billed once, as nftables
/// counted them, and the tunnels' outer flows are not billed again as node
/// traffic: they are counted in `tollgate_tunnel_bytes_total`.
#[test]
fn overlays_bill_each_pod_byte_once_and_no_tunnel_byte() {
    use Target::{Internet, Pod, Service};
    let flows = [
        Flow::new("frontend-7f9c4-x2k8p", Pod("db-0"), "tcp", false, 23000, 1),
        Flow::new("frontend-7f9c4-x2k8p", Pod("db-0"), "tcp", true, 23001, 1),
        Flow::new(
            "api-5d8f6-m4n2b",
            Pod("db-replica-0"),
            "udp",
            false,
            23002,
            1,
        ),
        Flow::new("report-29123-q7z", Service, "tcp", false, 23003, 1),
        Flow::new("log-shipper-h5j2", Internet, "tcp", false, 23004, 1),
        Flow::new("db-0", Pod("report-29123-q7z"), "udp", true, 23005, 1),
    ];
    for underlay in [Underlay::Vxlan, Underlay::UdpTunnel] {
        let Some(Setup {
            cluster,
            database,
            ch,
            _relay,
        }) = setup("overlay", underlay)
        else {
            return;
        };
        let agents: Vec<Agent> = (0..3)
            .map(|i| start_agent(&cluster, &database, i).0)
            .collect();
        let start = |flow: &Flow, args: &[&str]| cluster.start(flow, args).unwrap();
        let tcp = [
            "tcp", "--bytes", "2000000", "--chunks", "4", "--pause", "0.5",
        ];
        let udp = ["udp", "--count", "40", "--size", "1200", "--pause", "0.05"];
        // UDP after TCP: a userspace tunnel drops datagrams under a burst
        // of TCP, and the UDP client insists on every echo.
        wait(vec![
            start(&flows[0], &tcp),
            start(&flows[1], &tcp),
            start(&flows[3], &tcp),
            start(&flows[4], &tcp),
        ]);
        wait(vec![start(&flows[2], &udp), start(&flows[5], &udp)]);
        thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
        let tunnel_bytes: f64 = cluster
            .nodes
            .iter()
            .filter_map(|node| metric(node, "tollgate_tunnel_bytes_total"))
            .sum();
        for agent in agents {
            agent.stop().unwrap();
        }

        let expected = cluster.expected(&flows).unwrap();
        let actual = metering(ch, &database).unwrap();
        let report = differences(&expected, &actual);
        assert!(
            report.is_empty(),
            "{underlay:?}: metering differs from nftables' counters:\n{}",
            report.join("\n")
        );
        let categories: std::collections::BTreeSet<&str> =
            expected.keys().map(|k| k.3.as_str()).collect();
        assert_eq!(
            categories.into_iter().collect::<Vec<_>>(),
            ["cross_region", "cross_zone", "internet"],
            "{underlay:?}"
        );
        let node_rows = ch
            .query(&format!(
                "SELECT count() FROM {database}.flows WHERE local_workload_kind = 'Node'"
            ))
            .unwrap();
        assert_eq!(node_rows.trim(), "0", "{underlay:?}: node traffic billed");
        // The oracle saw the outer packets: the pods' traffic really went
        // through the tunnels, and the agents counted them.
        let outer: u64 = cluster
            .nodes
            .iter()
            .flat_map(|node| tollgate_tests::oracle::read(&node.ns).unwrap())
            .filter(|(key, _)| cluster.is_tunnel(key))
            .map(|(_, count)| count.bytes)
            .sum();
        assert!(
            outer > 4_000_000,
            "{underlay:?}: {outer} bytes through tunnels"
        );
        assert!(
            tunnel_bytes > 4e6,
            "{underlay:?}: tollgate_tunnel_bytes_total is {tunnel_bytes}"
        );
    }
}

/// A connection that opened while accounting was off has no counters: the
/// kernel adds them only to new entries. The agent counts it in
/// `tollgate_conntrack_uncounted_entries_total` and writes no row for it,
/// instead of an empty row every interval. Accounting turned off while the
/// agent runs is noticed at the next read and turned back on.
#[test]
fn connections_older_than_accounting_are_counted_not_recorded() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("uncounted", Underlay::Routed)
    else {
        return;
    };
    let node = &cluster.nodes[0];
    node.ns
        .sh("sysctl -qw net.netfilter.nf_conntrack_acct=0")
        .unwrap();
    let flow = Flow::new(
        "frontend-7f9c4-x2k8p",
        Target::Pod("db-0"),
        "tcp",
        false,
        24000,
        1,
    );
    let client = cluster
        .start(
            &flow,
            &[
                "tcp", "--bytes", "400000", "--chunks", "8", "--pause", "0.6",
            ],
        )
        .unwrap();
    // The entry must exist before the agent turns accounting on as it
    // starts (too late for it): a loaded machine may start the client late.
    let since = std::time::Instant::now();
    while !node
        .ns
        .sh("conntrack -L -p tcp --sport 24000 2>/dev/null")
        .unwrap_or_default()
        .contains("sport=24000")
    {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the client's connection did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (agent, config) = start_agent(&cluster, &database, 0);
    wait(vec![client]);
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    let uncounted = metric(node, "tollgate_conntrack_uncounted_entries_total").unwrap_or(0.0);
    // Someone turns accounting off while the agent runs: within an
    // interval it is counted, said, and turned back on.
    node.ns
        .sh("sysctl -qw net.netfilter.nf_conntrack_acct=0")
        .unwrap();
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    let acct = node
        .ns
        .sh("cat /proc/sys/net/netfilter/nf_conntrack_acct")
        .unwrap();
    let resets = metric(
        node,
        "tollgate_conntrack_settings_reset_total{setting=\"net.netfilter.nf_conntrack_acct\"}",
    );
    agent.stop().unwrap();
    assert_eq!(acct.trim(), "1", "accounting turned back on");
    assert_eq!(resets, Some(1.0));
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(log.matches("KERNEL SETTING TURNED OFF").count(), 1, "{log}");
    let rows = ch
        .query(&format!(
            "SELECT count() FROM {database}.flows WHERE local_workload = 'frontend'"
        ))
        .unwrap();
    assert_eq!(
        rows.trim(),
        "0",
        "rows written for a connection without counters"
    );
    assert!(uncounted >= 1.0, "uncounted entries: {uncounted}");
}

/// NodePort Services reached by internet clients, under both
/// externalTrafficPolicy values. Cluster: the client reaches node a, which
/// forwards to the api pod on node b (SNAT); the client's leg is billed to
/// api (internet, naming the Service), and the hop between the nodes on
/// both, as api's cross-zone traffic: the cloud bills node a for sending
/// it and node b for receiving it. Local: the client reaches node b,
/// the backend's own node; billed to api as internet. No byte to the nodes'
/// team; every figure equals the nodes' nftables counters.
#[test]
fn node_port_clients_are_billed_to_the_backend_under_both_policies() {
    use tollgate_tests::cluster::{NODE_PORT_CLUSTER, NODE_PORT_LOCAL};
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("nodeport", Underlay::Routed)
    else {
        return;
    };
    let agents: Vec<Agent> = (0..2)
        .map(|i| start_agent(&cluster, &database, i).0)
        .collect();
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let tcp = [
        "tcp", "--bytes", "1500000", "--chunks", "4", "--pause", "0.3",
    ];
    let (via_a, via_b) = (27000, 27001);
    wait(vec![
        cluster
            .start_from_internet(&a.ip4, NODE_PORT_CLUSTER, via_a, &tcp)
            .unwrap(),
        cluster
            .start_from_internet(&b.ip4, NODE_PORT_LOCAL, via_b, &tcp)
            .unwrap(),
    ]);
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    for agent in agents {
        agent.stop().unwrap();
    }

    // What each node's nftables counted, by the client port the flows keep
    // through NAT.
    let api = cluster.pod("api-5d8f6-m4n2b");
    let counted = |node: &tollgate_tests::cluster::Node, port: u16, to: bool| -> u64 {
        tollgate_tests::oracle::read(&node.ns)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| if to { k.sport == port } else { k.dport == port })
            .map(|(_, c)| c.bytes)
            .sum()
    };
    let key = |category: &str, direction: &str| {
        (
            "payments".to_owned(),
            "shop".to_owned(),
            "api".to_owned(),
            category.to_owned(),
            direction.to_owned(),
        )
    };
    let expected: BTreeMap<Key, u64> = [
        // Cluster policy: the client's leg at node a; the hop at node a
        // (what node a forwards is what the client sent, the replies come
        // back to the client's port) and at node b. Local policy: the
        // client's leg at node b.
        (
            key("internet", "in"),
            counted(a, via_a, true) + counted(b, via_b, true),
        ),
        (
            key("internet", "out"),
            counted(a, via_a, false) + counted(b, via_b, false),
        ),
        (
            key("cross_zone", "in"),
            counted(b, via_a, true) + counted(a, via_a, false),
        ),
        (
            key("cross_zone", "out"),
            counted(b, via_a, false) + counted(a, via_a, true),
        ),
    ]
    .into();
    assert!(expected.values().all(|&bytes| bytes > 0), "{expected:#?}");
    assert!(
        expected[&key("internet", "in")] > 3_000_000,
        "{expected:#?}"
    );
    let actual = metering(ch, &database).unwrap();
    let report = differences(&expected, &actual);
    assert!(
        report.is_empty(),
        "metering differs from nftables' counters:\n{}",
        report.join("\n")
    );
    let named = ch
        .query(&format!(
            "SELECT DISTINCT remote_service FROM {database}.flows WHERE category = 'internet' AND local_ip = toIPv6('{}')",
            api.ip4
        ))
        .unwrap();
    assert_eq!(
        named.trim(),
        "shop/api",
        "the client's leg names the Service"
    );
}

/// On nodes without pod ranges (AWS VPC CNI, Azure CNI), a pod the watch
/// has not delivered yet has no pod range to be recognised by; its host
/// route to one of the node's devices says it is local. Its bytes are
/// recorded as an unknown local endpoint, equal to nftables', not dropped
/// as traffic routed through.
#[test]
fn a_pod_the_inventory_does_not_know_yet_is_local_by_its_host_route() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("routed_here", Underlay::Routed)
    else {
        return;
    };
    let inventory = cluster.dir.join("inventory.yaml");
    let text = std::fs::read_to_string(&inventory).unwrap();
    let without: Vec<String> = text
        .lines()
        .filter(|line| !line.contains("report-29123-q7z"))
        .map(|line| line.replace(", pod_cidrs: [10.91.1.0/24, 'fd91:1::/64']", ""))
        .collect();
    assert!(text.contains("report-29123-q7z") && !without.join("\n").contains("10.91.1.0/24"));
    std::fs::write(&inventory, without.join("\n") + "\n").unwrap();
    let node = &cluster.nodes[0];
    let (agent, _) = start_agent(&cluster, &database, 0);
    let flows = [
        Flow::new(
            "report-29123-q7z",
            Target::Pod("db-0"),
            "tcp",
            false,
            26000,
            1,
        ),
        Flow::new(
            "report-29123-q7z",
            Target::Pod("db-0"),
            "tcp",
            true,
            26001,
            1,
        ),
    ];
    let tcp = [
        "tcp", "--bytes", "1000000", "--chunks", "4", "--pause", "0.3",
    ];
    wait(
        flows
            .iter()
            .map(|f| cluster.start(f, &tcp).unwrap())
            .collect(),
    );
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let report = cluster.pod("report-29123-q7z");
    let (mut sent, mut received) = (0, 0);
    for (key, count) in tollgate_tests::oracle::read(&node.ns).unwrap() {
        let ports = 26000..26002;
        if ports.contains(&key.sport) {
            sent += count.bytes;
        } else if ports.contains(&key.dport) {
            received += count.bytes;
        }
    }
    assert!(sent > 2_000_000, "the traffic ran: {sent}");
    let metered = ch
        .query(&format!(
            "SELECT sum(bytes_sent), sum(bytes_received), groupUniqArray(local_workload) \
             FROM {database}.flows WHERE local_ip IN (toIPv6('{}'), toIPv6('{}'))",
            report.ip4, report.ip6
        ))
        .unwrap();
    assert_eq!(
        metered.trim(),
        format!("{sent}\t{received}\t['']"),
        "the unknown local pod's side, against nftables"
    );
}

/// The value of the metric `name` in the agent of `node`'s exposition
/// (its samples summed), if present.
fn metric(node: &tollgate_tests::cluster::Node, name: &str) -> Option<f64> {
    let text = node
        .ns
        .command("curl")
        .args(["-sf", "http://127.0.0.1:9102/metrics"])
        .output()
        .unwrap()
        .stdout;
    tollgate_tests::exposition::sum(&String::from_utf8(text).unwrap(), name).unwrap()
}

/// Traffic that bypasses conntrack (here a `notrack` rule, as an eBPF
/// datapath would) is not metered; the agent compares what it metered off
/// the node with its uplink's counters and says so: coverage near 1 while
/// everything is tracked, then low, logged once.
#[test]
fn traffic_that_bypasses_conntrack_is_reported_as_low_coverage() {
    let Some(Setup {
        cluster,
        database,
        ch: _,
        _relay,
    }) = setup("coverage", Underlay::Routed)
    else {
        return;
    };
    let node = &cluster.nodes[0];
    let (agent, config) = start_agent(&cluster, &database, 0);
    let tcp = |port: u16, bytes: &str| {
        let flow = Flow::new(
            "frontend-7f9c4-x2k8p",
            Target::Pod("db-0"),
            "tcp",
            false,
            port,
            1,
        );
        cluster
            .start(
                &flow,
                &["tcp", "--bytes", bytes, "--chunks", "4", "--pause", "0.3"],
            )
            .unwrap()
    };
    wait(vec![tcp(25000, "3000000")]);
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) * 2 + 1));
    let covered = metric(node, "tollgate_coverage_ratio").unwrap_or(0.0);
    assert!(
        (0.9..=1.0).contains(&covered),
        "coverage of tracked traffic: {covered} (uplink {:?}, metered off the node {:?})",
        metric(node, "tollgate_uplink_bytes_total"),
        metric(node, "tollgate_metered_offnode_bytes_total")
    );
    assert_eq!(metric(node, "tollgate_coverage_low"), Some(0.0));

    node.ns
        .sh("nft add table ip bypass
             nft add chain ip bypass pre '{ type filter hook prerouting priority -300; }'
             nft add rule ip bypass pre ip saddr 10.91.1.0/24 notrack
             nft add rule ip bypass pre ip daddr 10.91.1.0/24 notrack")
        .unwrap();
    wait(vec![tcp(25001, "8000000")]);
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) * 2 + 1));
    let low = metric(node, "tollgate_coverage_ratio").unwrap_or(1.0);
    assert!(low < 0.5, "coverage with conntrack bypassed: {low}");
    assert_eq!(metric(node, "tollgate_coverage_low"), Some(1.0));
    let uplink = metric(node, "tollgate_uplink_bytes_total").unwrap_or(0.0);
    assert!(uplink > 11e6, "uplink bytes {uplink}");
    agent.stop().unwrap();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(log.matches("LOW COVERAGE").count(), 1, "{log}");
}

/// promtool lints node a's exposition, which holds the per-workload
/// counters.
fn lint_exposition(cluster: &Cluster) {
    let node = &cluster.nodes[0].ns;
    let exposition = node
        .command("curl")
        .args(["-sf", "http://127.0.0.1:9102/metrics"])
        .output()
        .unwrap();
    assert!(exposition.status.success());
    let text = String::from_utf8(exposition.stdout.clone()).unwrap();
    for name in [
        "tollgate_conntrack_entries_read_total",
        "tollgate_conntrack_idle_entries_total",
        "tollgate_records_total{category=\"cross_zone\"}",
        "tollgate_metered_bytes_total{category=\"cross_zone\",direction=\"out\"}",
        "tollgate_conntrack_table_max",
        "tollgate_sink_batches_total",
        "tollgate_spool_bytes",
        "tollgate_reads_postponed_total 0",
        "tollgate_workload_bytes_total{cluster=\"sim\",team=",
        "tollgate_workload_series_max 2000",
        "tollgate_read_interval_seconds 2",
        "tollgate_spool_max_bytes ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), &exposition.stdout).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Per (team, namespace, workload, category, direction), the sum over
/// every series of `tollgate_workload_bytes_total` of `increase()` over
/// the whole run, each series evaluated at its last sample (where
/// Prometheus extrapolates nothing: every series starts at 0, and its
/// range ends on a sample). Also checks that every series starts at 0.
fn workload_increases(prometheus: &Prometheus, started: u32) -> BTreeMap<Key, u64> {
    let now = unix_now();
    let window = now - started + 120;
    let raw = prometheus
        .get(&format!(
            "/api/v1/query?query={}&time={now}",
            dashboards::url_encode(&format!("tollgate_workload_bytes_total[{window}s]"))
        ))
        .unwrap();
    let mut totals = BTreeMap::new();
    let series = raw["result"].as_array().unwrap();
    assert!(series.len() >= 10, "{raw}");
    for one in series {
        let labels = one["metric"].as_object().unwrap();
        let values = one["values"].as_array().unwrap();
        assert_eq!(
            values[0][1], "0",
            "a series starts at 0: {labels:?} {values:?}"
        );
        let last = values.last().unwrap()[0].as_f64().unwrap();
        let selector: Vec<String> = labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
            .collect();
        let query = format!(
            "increase(tollgate_workload_bytes_total{{{}}}[{window}s])",
            selector.join(",")
        );
        let answer = prometheus
            .get(&format!(
                "/api/v1/query?query={}&time={last:.3}",
                dashboards::url_encode(&query)
            ))
            .unwrap();
        let value: f64 = answer["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: {answer}"))
            .parse()
            .unwrap();
        assert!(
            (value - value.round()).abs() < 1e-6,
            "{query} = {value}: extrapolated"
        );
        let label = |name: &str| labels[name].as_str().unwrap().to_owned();
        let key = (
            label("team"),
            label("namespace"),
            label("workload"),
            label("category"),
            label("direction"),
        );
        *totals.entry(key).or_default() += value.round() as u64;
    }
    totals.retain(|_, bytes| *bytes > 0);
    totals
}

/// A field of a log line in tracing's text format: `name=value` or
/// `name="value"`.
fn field<'l>(line: &'l str, name: &str) -> &'l str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + name.len()
        + 2;
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').unwrap()],
        None => rest.split(' ').next().unwrap(),
    }
}

/// Node b's top talkers: each interval's workloads ranked by bytes, each
/// line's bytes equal to that interval's records of the workload in
/// ClickHouse, remote addresses logged too.
fn check_top_talkers(ch: &clickhouse::ClickHouse, database: &str, log: &std::path::Path) {
    let log = std::fs::read_to_string(log).unwrap();
    let workloads: Vec<&str> = log.lines().filter(|l| l.contains("top workload")).collect();
    assert!(workloads.len() >= 3, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("top remote") && l.contains("remote_ip=")),
        "{log}"
    );
    let mut previous: Option<(&str, u64)> = None;
    for line in workloads {
        let observed_at = field(line, "observed_at");
        let (sent, received): (u64, u64) = (
            field(line, "bytes_sent").parse().unwrap(),
            field(line, "bytes_received").parse().unwrap(),
        );
        if let Some((at, bytes)) = previous.filter(|(at, _)| *at == observed_at) {
            assert!(
                field(line, "rank") != "1" && bytes >= sent + received,
                "{at}: {line}"
            );
        }
        previous = Some((observed_at, sent + received));
        let stored = ch
            .query(&format!(
                "SELECT sum(bytes_sent), sum(bytes_received) FROM {database}.flows \
                 WHERE node = 'node-b' AND observed_at = toDateTime({observed_at}) \
                 AND local_namespace = '{}' AND local_workload = '{}' FORMAT TabSeparated",
                field(line, "namespace"),
                field(line, "workload")
            ))
            .unwrap();
        assert_eq!(stored.trim(), format!("{sent}\t{received}"), "{line}");
    }
}

/// An overlapping restart: a second agent started on a node whose agent
/// still runs (same port, same spool) waits for it instead of failing,
/// then takes over; a connection running across the handover is metered
/// exactly once, as nftables counted it. Short connections end all along,
/// their entries deleted at once (each DESTROY event carries every byte):
/// those that end while both agents run are metered once, and none is
/// lost between the first agent's last event and the second's first.
#[test]
fn a_second_agent_on_a_node_waits_for_the_first_and_takes_over() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("handover", Underlay::Routed)
    else {
        return;
    };
    let node = &cluster.nodes[0];
    let (first, config) = start_agent(&cluster, &database, 0);
    let flow = Flow::new(
        "report-29123-q7z",
        Target::Pod("db-0"),
        "tcp",
        false,
        27000,
        1,
    );
    let mut traffic = Killed(
        cluster
            .start(
                &flow,
                &[
                    "tcp", "--bytes", "3000000", "--chunks", "16", "--pause", "0.5",
                ],
            )
            .unwrap(),
    );
    let second_config = config.with_file_name("node-a-second.yaml");
    std::fs::copy(&config, &second_config).unwrap();
    let second_log = second_config.with_extension("log");
    let churning = AtomicBool::new(true);
    let db = cluster.pod("db-0").ip4.clone();
    let (mut second, short_batches) = thread::scope(|scope| {
        // A failed assertion below must end the test, not wait forever for
        // threads that churn until told to stop.
        let stop_churning = Stop(&churning);
        let connections = scope.spawn(|| {
            let mut batches = 0u16;
            while churning.load(Ordering::Relaxed) {
                let short = Flow::new(
                    "report-29123-q7z",
                    Target::Pod("db-0"),
                    "tcp",
                    false,
                    SHORT.start + 100 * batches,
                    100,
                );
                assert!(
                    SHORT.contains(&short.ports.end),
                    "more batches than SHORT holds"
                );
                let mut client = cluster
                    .start(&short, &["short", "--n", "100", "--bytes", "3000"])
                    .unwrap();
                assert!(client.wait().unwrap().success());
                batches += 1;
            }
            batches
        });
        scope.spawn(|| {
            while churning.load(Ordering::Relaxed) {
                node.ns
                    .command("conntrack")
                    .args(["-D", "-p", "tcp", "--state", "TIME_WAIT", "-d", &db])
                    .output()
                    .unwrap();
                thread::sleep(Duration::from_millis(10));
            }
        });
        let mut second = Killed(
            node.ns
                .command(tollgate::binary().to_str().unwrap())
                .args(["agent", "--config"])
                .arg(&second_config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&second_log).unwrap())
                .spawn()
                .unwrap(),
        );
        thread::sleep(Duration::from_secs(3));
        let log = std::fs::read_to_string(&second_log).unwrap();
        assert!(
            second.0.try_wait().unwrap().is_none(),
            "the second agent waits: {log}"
        );
        assert!(log.contains("waiting for it to stop"), "{log}");
        first.stop().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !node
            .ns
            .command("curl")
            .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:9102/readyz"])
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the second agent never got ready: {}",
                std::fs::read_to_string(&second_log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_secs(1));
        drop(stop_churning);
        (second, connections.join().unwrap())
    });
    assert!(traffic.wait().success());
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    let stopped = second.wait();
    let log = std::fs::read_to_string(&second_log).unwrap();
    assert!(stopped.success(), "{log}");
    assert!(log.contains("taking over"), "{log}");
    // The handover's gap (connections that end in it lose their bytes since
    // the first agent's last read): from its last read to the second
    // agent's start of metering, as both logged it.
    let first_log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    let at = |log: &str, what: &str| {
        log.lines()
            .rfind(|l| l.contains(what))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let took_over = at(&log, "took over from the previous agent");
    eprintln!(
        "handover: {}; {}; {took_over}; {} short connections",
        at(&first_log, "final read spooled"),
        at(&log, "metering"),
        u32::from(short_batches) * 100
    );
    let report = cluster.pod("report-29123-q7z");
    let (sent, differing) = connection_differences(&node.ns, ch, &database, report);
    assert!(sent > 3_000_000, "the traffic ran: {sent}");
    assert!(
        differing.is_empty(),
        "report's connections across the handover, against nftables:\n{}\n{log}",
        differing.join("\n")
    );
    let skipped: u64 = took_over
        .split_whitespace()
        .find_map(|field| field.strip_prefix("metered_by_the_previous_agent="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        skipped > 0,
        "connections ended while both agents ran, and the first metered them: {took_over}\n{log}"
    );
}

/// A child process killed when dropped, so a failed test leaves none
/// behind.
struct Killed(Child);

impl Killed {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Clears its flag when dropped: threads looping while it is set stop
/// when the scope that owns them ends, even by a panic.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The bytes `pod` sent as nftables counted them on its node, and one line
/// per connection of `pod` whose bytes sent or received in `flows` differ
/// from nftables', with its records (read or ended, when, and the
/// conntrack id), to tell a lost read from a lost event.
fn connection_differences(
    ns: &tollgate_tests::netns::Netns,
    ch: &clickhouse::ClickHouse,
    database: &str,
    pod: &tollgate_tests::cluster::Pod,
) -> (u64, Vec<String>) {
    let ours = |ip: std::net::IpAddr| ip.to_string() == pod.ip4 || ip.to_string() == pod.ip6;
    let mut counted: BTreeMap<(String, u16), (i64, i64)> = BTreeMap::new();
    let mut sent = 0;
    for (key, count) in tollgate_tests::oracle::read(ns).unwrap() {
        let bytes = i64::try_from(count.bytes).unwrap();
        if ours(key.src) {
            sent += count.bytes;
            counted
                .entry((key.src.to_string(), key.sport))
                .or_default()
                .0 -= bytes;
        } else if ours(key.dst) {
            counted
                .entry((key.dst.to_string(), key.dport))
                .or_default()
                .1 -= bytes;
        }
    }
    let mut records: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    let rows = ch
        .query(&format!(
            "SELECT IPv6NumToString(local_ip), local_port, bytes_sent, bytes_received, ended, \
             observed_at, conntrack_id FROM {database}.flows \
             WHERE local_ip IN (toIPv6('{}'), toIPv6('{}')) FORMAT TSV",
            pod.ip4, pod.ip6
        ))
        .unwrap();
    for row in rows.lines() {
        let f: Vec<&str> = row.split('\t').collect();
        let ip = f[0].strip_prefix("::ffff:").unwrap_or(f[0]).to_owned();
        let key = (ip, f[1].parse().unwrap());
        let total = counted.entry(key.clone()).or_default();
        total.0 += f[2].parse::<i64>().unwrap();
        total.1 += f[3].parse::<i64>().unwrap();
        records.entry(key).or_default().push(format!(
            "{}+{} ended={} at={} id={}",
            f[2], f[3], f[4], f[5], f[6]
        ));
    }
    let differing = counted
        .into_iter()
        .filter(|(_, difference)| *difference != (0, 0))
        .map(|((ip, port), (sent, received))| {
            let seen = records
                .get(&(ip.clone(), port))
                .cloned()
                .unwrap_or_default();
            format!("{ip} port {port}: sent {sent:+}, received {received:+}; records {seen:?}")
        })
        .collect();
    (sent, differing)
}

/// The client ports of the handover test's short connections.
const SHORT: std::ops::Range<u16> = 28000..60000;

/// An agent SIGKILLed in the middle of its reads, as the OOM killer would,
/// and started again at once, six times, its holder beside it: the entries
/// it had zeroed before each kill are metered from the read's journal,
/// those whose answers the kernel had queued but the agent not yet
/// received from the socket the holder kept, and the batches of the cut
/// read are never delivered twice. 8,000 UDP flows stay active, so a read
/// lasts long enough to be hit; each kill lands after the journal grew
/// past a different size. Without the holder, each kill inside the
/// kernel's zeroing of a batch lost up to 256 flows' packets.
#[test]
fn an_agent_killed_in_the_middle_of_reads_loses_and_doubles_nothing() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("kill", Underlay::Routed)
    else {
        return;
    };
    let config = cluster
        .agent_config(0, "http://127.0.0.1:8123", &database, None, INTERVAL)
        .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("  batch_rows: 1000\n", "  batch_rows: 20000\n"),
    )
    .unwrap();
    let spool = cluster.dir.join("spool-node-a");
    let flows = [Flow::new(
        "report-29123-q7z",
        Target::Pod("frontend-7f9c4-x2k8p"),
        "udp",
        false,
        30000,
        8000,
    )];
    let holder = Holder::start(&config).unwrap();
    let mut agent = Agent::start(&cluster.nodes[0], &config).unwrap();
    let traffic = cluster.start_udp_rounds(&flows[0], 80, "0.5").unwrap();
    let journal_bytes = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|files| {
                files
                    .filter_map(Result::ok)
                    .filter(|f| f.file_name().to_string_lossy().starts_with("journal-"))
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    // Of every three kills, one lands inside the kernel's zeroing of a
    // batch, one between the answers' receipt and their journal.
    let (mut stops, mut stops_receipt) = (Vec::new(), Vec::new());
    for kill in 0..6u64 {
        let threshold = 10_000 + kill * 50_000;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while journal_bytes() < threshold {
            assert!(
                std::time::Instant::now() < deadline,
                "no read's journal reached {threshold} bytes"
            );
            thread::sleep(Duration::from_millis(1));
        }
        match kill % 3 {
            0 => agent.kill().unwrap(),
            1 => stops.push(agent.kill_inside_zeroing(2000, &holder).unwrap()),
            _ => stops_receipt.push(
                agent
                    .kill_between_receipt_and_keeping(Inbox::ZeroingAnswers, 2000, &spool)
                    .unwrap()
                    .expect("no stop found zeroing answers received and not journaled"),
            ),
        }
        agent = Agent::start(&cluster.nodes[0], &config).unwrap();
    }
    wait(vec![traffic]);
    thread::sleep(Duration::from_secs(2 * u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    let replays = log.matches("metered from its journal").count();
    assert!(
        replays >= 3,
        "at least half the kills cut a read short: {replays} replays\n{log}"
    );
    let expected = cluster.expected(&flows).unwrap();
    let actual = metering(ch, &database).unwrap();
    let total: u64 = expected.values().sum();
    assert!(total > 8000 * 60 * 128, "the traffic ran: {expected:#?}");
    let report = differences(&expected, &actual);
    let per_flow = per_flow_differences(&cluster, 0, ch, &database, "report").unwrap();
    let explain = format!(
        "({replays} replays):\n{}\nflows by packets sent, tollgate minus nftables: {per_flow:?}\n{log}",
        report.join("\n")
    );
    let kept = log
        .matches("were kept by the holder: metered with its cut read")
        .count();
    assert!(
        report.is_empty() && per_flow.keys().all(|d| *d == 0),
        "metering after six kills differs from nftables' counters {explain}"
    );
    let kept_received = log
        .matches("were kept in its inbox by the holder: metered with its cut read")
        .count();
    assert!(
        kept >= 1,
        "a kill landed between the kernel's zeroing and the agent's receipt of the answers {explain}"
    );
    assert!(
        kept_received >= 1,
        "a kill landed between the answers' receipt and their journal {explain}"
    );
    eprintln!("kills in reads: {replays} reads metered from their journals, {kept} with zeroing answers the holder kept on the socket, {kept_received} in the inbox; stops before the kills inside the zeroing: {stops:?}, between receipt and journal: {stops_receipt:?}");
}

/// 100 connections from report to frontend from client port `first` on,
/// 20,000 bytes each, ended, their entries then deleted on node a: the
/// DESTROY events, sent now, carry every byte (in TIME_WAIT the entries
/// would stay 120 s).
fn end_short_connections(cluster: &Cluster, first: u16) -> [Flow; 1] {
    let flows = [Flow::new(
        "report-29123-q7z",
        Target::Pod("frontend-7f9c4-x2k8p"),
        "tcp",
        false,
        first,
        100,
    )];
    wait(vec![cluster
        .start(&flows[0], &["short", "--n", "100", "--bytes", "20000"])
        .unwrap()]);
    let server = cluster.destination(&flows[0]);
    tollgate_tests::run(
        cluster.nodes[0]
            .ns
            .command("conntrack")
            .args(["-D", "-p", "tcp", "-d", &server]),
    )
    .unwrap();
    flows
}

/// Node a's agent, with a holder beside it, started and SIGKILLed: its
/// configuration, and the holder now keeping its sockets.
fn killed_beside_its_holder(cluster: &Cluster, database: &str) -> (std::path::PathBuf, Holder) {
    let config = cluster
        .agent_config(0, "http://127.0.0.1:8123", database, None, INTERVAL)
        .unwrap();
    let holder = Holder::start(&config).unwrap();
    Agent::start(&cluster.nodes[0], &config)
        .unwrap()
        .kill()
        .unwrap();
    (config, holder)
}

/// The restart gap, closed by the holder: the agent SIGKILLed, then 100
/// connections open, move their bytes and have their entries deleted while
/// no agent runs; the next agent takes the subscription over from the
/// holder, where their DESTROY events waited, and meters every byte. No
/// read ever saw these connections: without the holder, their events went
/// to no one and all their bytes were lost.
#[test]
fn connections_that_end_while_no_agent_runs_are_metered_by_the_next_one() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("unwatched", Underlay::Routed)
    else {
        return;
    };
    let node = &cluster.nodes[0];
    let (config, _holder) = killed_beside_its_holder(&cluster, &database);
    let flows = end_short_connections(&cluster, 32000);
    let agent = Agent::start(node, &config).unwrap();
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    let expected = cluster.expected(&flows).unwrap();
    let total: u64 = expected.values().sum();
    assert!(total > 100 * 20_000, "the traffic ran: {expected:#?}");
    let report = differences(&expected, &metering(ch, &database).unwrap());
    assert!(
        report.is_empty(),
        "connections that ended while no agent ran, against nftables:\n{}\n{log}",
        report.join("\n")
    );
    assert!(
        log.contains("took the subscription to ended connections over from the holder"),
        "{log}"
    );
}

/// A burst while no agent runs, more than the kept subscription's buffer
/// holds: 28,000 UDP flows (14,000 over IPv4, 14,000 over IPv6), each of
/// two 100-byte packets, their entries deleted at once after node a's
/// agent was SIGKILLed (its holder running). The kernel queues what fits
/// on the subscription and holds the rest of the ended connections back
/// (`NETLINK_BROADCAST_ERROR`), resending once the next agent reads: every
/// byte equals nftables'.
#[test]
fn a_burst_of_connections_ending_while_no_agent_runs_waits_for_the_next_one() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("burst", Underlay::Routed)
    else {
        return;
    };
    // Per client: each holds its flows' sockets open, under the open-file
    // limit of 20,000.
    const FLOWS: u16 = 14_000;
    let node = &cluster.nodes[0];
    let (config, _holder) = killed_beside_its_holder(&cluster, &database);
    let flows = [false, true].map(|ipv6| {
        Flow::new(
            "report-29123-q7z",
            Target::Pod("frontend-7f9c4-x2k8p"),
            "udp",
            ipv6,
            if ipv6 { 30000 + FLOWS + 1000 } else { 30000 },
            FLOWS,
        )
    });
    wait(
        flows
            .iter()
            .map(|flow| cluster.start_udp_rounds(flow, 2, "0").unwrap())
            .collect(),
    );
    let server = cluster.pod("frontend-7f9c4-x2k8p");
    for (family, address) in [("ipv4", &server.ip4), ("ipv6", &server.ip6)] {
        tollgate_tests::run(
            node.ns
                .command("conntrack")
                .args(["-D", "-f", family, "-p", "udp", "-d", address]),
        )
        .unwrap();
    }
    let agent = Agent::start(node, &config).unwrap();
    let ended = u32::from(FLOWS) * 2;
    wait_until("every ended connection", || {
        metric(node, "tollgate_conntrack_ended_connections_total").unwrap_or(0.0)
            >= f64::from(ended)
    });
    thread::sleep(Duration::from_secs(u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    let expected = cluster.expected(&flows).unwrap();
    let total: u64 = expected.values().sum();
    assert!(
        total >= u64::from(ended) * 2 * 128,
        "the traffic ran: {expected:#?}"
    );
    let report = differences(&expected, &metering(ch, &database).unwrap());
    assert!(
        report.is_empty(),
        "a burst of connections that ended while no agent ran, against nftables:\n{}\n{log}",
        report.join("\n")
    );
    eprintln!(
        "burst: {ended} connections ended while no agent ran; event socket overflows the next agent saw: {}",
        log.matches("conntrack event socket overflowed").count()
    );
}

/// Kills between the receipt of DESTROY events and their queueing on disk,
/// the holder running: rounds of 8,000 UDP flows (IPv4 and IPv6) are
/// ended by deleting their entries while node a's agent runs, and the
/// agent is stopped at moments apart until its events' inbox holds events
/// its ended connections' file does not, then SIGKILLed (twice). The
/// restarted agent queues them from the inbox the holder kept, each once:
/// every byte equals nftables'. Without the inbox, a kill there lost the
/// events of that receive.
#[test]
fn an_agent_killed_between_receiving_ended_connections_and_queueing_them_loses_none() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("killqueue", Underlay::Routed)
    else {
        return;
    };
    const FLOWS: u16 = 4_000;
    let node = &cluster.nodes[0];
    let config = cluster
        .agent_config(0, "http://127.0.0.1:8123", &database, None, INTERVAL)
        .unwrap();
    let spool = cluster.dir.join("spool-node-a");
    let _holder = Holder::start(&config).unwrap();
    let mut agent = Agent::start(node, &config).unwrap();
    let server = cluster.pod("frontend-7f9c4-x2k8p");
    let (mut flows, mut stops) = (Vec::new(), Vec::new());
    for round in 0..8u16 {
        if stops.len() == 2 {
            break;
        }
        let these = [false, true].map(|ipv6| {
            Flow::new(
                "report-29123-q7z",
                Target::Pod("frontend-7f9c4-x2k8p"),
                "udp",
                ipv6,
                20000 + round * 2 * FLOWS + if ipv6 { FLOWS } else { 0 },
                FLOWS,
            )
        });
        wait(
            these
                .iter()
                .map(|flow| cluster.start_udp_rounds(flow, 2, "0").unwrap())
                .collect(),
        );
        flows.extend(these);
        let killed = thread::scope(|scope| {
            let deletions = scope.spawn(|| {
                for (family, address) in [("ipv4", &server.ip4), ("ipv6", &server.ip6)] {
                    tollgate_tests::run(
                        node.ns
                            .command("conntrack")
                            .args(["-D", "-f", family, "-p", "udp", "-d", address]),
                    )
                    .unwrap();
                }
            });
            let killed = agent
                .kill_between_receipt_and_keeping(Inbox::EndedConnections, 600, &spool)
                .unwrap();
            deletions.join().unwrap();
            killed
        });
        if let Some(stop) = killed {
            stops.push(stop);
            agent = Agent::start(node, &config).unwrap();
        }
    }
    thread::sleep(Duration::from_secs(2 * u64::from(INTERVAL) + 1));
    agent.stop().unwrap();

    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(
        stops.len(),
        2,
        "two kills between receipt and queueing: {stops:?}\n{log}"
    );
    let expected = cluster.expected(&flows).unwrap();
    let total: u64 = expected.values().sum();
    assert!(
        total >= flows.len() as u64 * u64::from(FLOWS) * 2 * 128,
        "the traffic ran: {expected:#?}"
    );
    let report = differences(&expected, &metering(ch, &database).unwrap());
    let recovered = log
        .matches("were kept in its inbox by the holder: queued now")
        .count();
    assert!(
        report.is_empty(),
        "ended connections after kills between their receipt and their queueing, against nftables ({recovered} recoveries):\n{}\n{log}",
        report.join("\n")
    );
    assert!(
        recovered >= 1,
        "a kill left received events unqueued:\n{log}"
    );
    eprintln!("kills between receipt and queueing: stops {stops:?}, {recovered} recoveries from the inbox, {} rounds of {} flows", flows.len() / 2, 2 * FLOWS);
}

/// 100 connections that open and end within one interval (their bytes come
/// only with their DESTROY events), the events received, then the agent
/// SIGKILLed before its next read and started again: the events were
/// queued on disk as they arrived, and the restarted agent meters them
/// once. The build before held them in memory until the read, and lost
/// every byte of them.
#[test]
fn connections_that_ended_before_a_kill_are_metered_after_the_restart() {
    let Some(Setup {
        cluster,
        database,
        ch,
        _relay,
    }) = setup("ended_kill", Underlay::Routed)
    else {
        return;
    };
    const LONG_INTERVAL: u32 = 10;
    let node = &cluster.nodes[0];
    let config = cluster
        .agent_config(0, "http://127.0.0.1:8123", &database, None, LONG_INTERVAL)
        .unwrap();
    let agent = Agent::start(node, &config).unwrap();
    let last_read = || metric(node, "tollgate_last_read_timestamp_seconds").unwrap_or(0.0);
    // Start right after a read: the next is an interval away.
    let before = last_read();
    wait_until("a read", || last_read() > before);
    let read = last_read();
    let flows = end_short_connections(&cluster, 31000);
    wait_until("the events", || {
        metric(node, "tollgate_conntrack_ended_connections_total").unwrap_or(0.0) >= 100.0
    });
    assert_eq!(last_read(), read, "killed before the next read");
    agent.kill().unwrap();
    let agent = Agent::start(node, &config).unwrap();
    agent.stop().unwrap();

    let expected = cluster.expected(&flows).unwrap();
    let total: u64 = expected.values().sum();
    assert!(total > 100 * 20_000, "the traffic ran: {expected:#?}");
    let report = differences(&expected, &metering(ch, &database).unwrap());
    assert!(
        report.is_empty(),
        "connections that ended before the kill, against nftables:\n{}",
        report.join("\n")
    );
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "no {what} in 30 s");
        thread::sleep(Duration::from_millis(20));
    }
}
