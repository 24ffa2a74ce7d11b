//! The demo on a simulated three-node cluster in network namespaces: one
//! `tollgate agent` process per node reading that node's conntrack table.

use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::ensure;
use tollgate_tests::clickhouse::ClickHouse;

use crate::{
    exports_of_this_month, fresh_home, group, print_internet_senders, print_per_team,
    print_reconciliation, table, HOME, PRICES,
};
use tollgate_tests::bills;
use tollgate_tests::cluster::{
    differences, instance_id, metering, Agent, Cluster, Flow, Relay, Target, CLUSTER, INTERNET4,
    INTERNET6, SERVICE4,
};
use tollgate_tests::tollgate;

/// Seconds between two reads of each node's table.
const INTERVAL: u32 = 5;

pub fn run() -> anyhow::Result<()> {
    println!(
        "\ntollgate demo: which workload causes the network bill?\n\
         =======================================================\n\n\
         A simulated Kubernetes cluster, built from network namespaces on this machine:\n\n  \
         node-a  zone r1-a, region r1   pods: frontend (team web), report (team data)\n  \
         node-b  zone r1-b, region r1   pods: api (team payments, behind Service shop/api {SERVICE4}), db-0 (team data)\n  \
         node-c  zone r2-c, region r2   pods: db-replica-0 (team data), log-shipper (team platform)\n  \
         internet host {INTERNET4} / {INTERNET6}, reached through the nodes' masquerade\n\n\
         Every node routes its pods' traffic through its own kernel conntrack table. One\n\
         `tollgate agent` per node reads that table every {INTERVAL} s (a zeroing dump: each byte\n\
         is reported once) plus the connections that end in between, names both ends of\n\
         every connection (pod, workload, team, zone), classifies the transfer and inserts\n\
         the records into ClickHouse and Parquet files.\n"
    );
    let (home, server) = fresh_home()?;
    let ch = server.server();
    let database = "tollgate";
    tollgate::migrate(ch.url(), database);
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES ('{CLUSTER}', 'aws')"
    ))?;
    println!("Building the cluster and starting one agent per node ...");
    let cluster = Cluster::create()?;
    let _relay = Relay::start(&cluster, ch.url())?;
    let mut agents = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let config = cluster.agent_config(
            i,
            "http://127.0.0.1:8123",
            database,
            Some(&home.join("parquet")),
            INTERVAL,
        )?;
        agents.push(Agent::start(node, &config)?);
    }

    println!("\nAbout 30 s of traffic (TCP and UDP, IPv4 and IPv6):");
    let started = Instant::now();
    let clients = traffic(&cluster)?;
    let mut clients: Vec<Child> = clients;
    while clients.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
        thread::sleep(Duration::from_secs(5));
        let rows = ch.query(&format!("SELECT count() FROM {database}.flows"))?;
        println!(
            "  {:>3} s: {} flow records in ClickHouse",
            started.elapsed().as_secs(),
            rows.trim()
        );
    }
    for mut client in clients {
        ensure!(client.wait()?.success(), "a traffic client failed");
    }
    println!("Stopping the agents (each reads its table one last time and flushes) ...");
    for agent in agents {
        agent.stop()?;
    }

    print_per_team(ch, database)?;
    println!("\nPer workload and category (from the view metering_daily):\n");
    table(
        ch,
        &format!(
            "SELECT namespace, workload_kind AS kind, workload, category, \
               sumIf(bytes, direction = 'out') AS bytes_out, sumIf(bytes, direction = 'in') AS bytes_in \
             FROM {database}.metering_daily GROUP BY ALL ORDER BY namespace, workload, category"
        ),
    )?;
    let exports = monthly_export(ch, database, &home)?;

    print_internet_senders(ch, database, &format!("{INTERNET4} or {INTERNET6}"))?;

    let expected = cluster.expected(&flows())?;
    let metered = metering(ch, database)?;
    let rows = metered.len();
    let differences = differences(&expected, &metered);
    let direction = |d: &str| -> u64 {
        expected
            .iter()
            .filter(|(k, _)| k.4 == d)
            .map(|(_, v)| v)
            .sum()
    };
    println!();
    if differences.is_empty() {
        println!(
            "Checked: each of the {rows} metering rows (team, workload, category, direction)\n\
             equals what nftables counted independently in the nodes: {} bytes sent and\n\
             {} bytes received by the pods, each byte metered once by the node of the pod\n\
             that sent it and once by the node of the pod that received it.",
            group(direction("out")),
            group(direction("in"))
        );
    } else {
        println!(
            "tollgate and nftables DISAGREE:\n{}",
            differences.join("\n")
        );
    }
    println!(
        "\nThe data stays in {HOME}: ClickHouse's in {HOME}/clickhouse (database `{database}`:\n\
         table `flows`, views `metering_daily`, `cost_daily`; start it again with\n\
         `bash tests/scripts/clickhouse.sh start {HOME}/clickhouse`), and the same records\n\
         as Parquet files under {HOME}/parquet (sql/parquet/views.sql queries them);\n\
         the monthly reports under {HOME}/exports.\n\
         The simulated cluster's namespaces are removed now.\n"
    );
    ensure!(differences.is_empty(), "metering was not exact");
    ensure!(
        exports,
        "the exports from ClickHouse and from Parquet differ"
    );
    reconciliation(&cluster, ch, database, &home)?;
    drop(cluster);
    Ok(())
}

/// FinOps' monthly reconciliation, `tollgate reconcile`, against a Cost and
/// Usage Report the demo writes from the nodes' nftables counters (each
/// node an EC2 instance, as a cloud would count its transfer) plus line
/// items tollgate must ignore or cannot explain.
fn reconciliation(
    cluster: &Cluster,
    ch: &ClickHouse,
    database: &str,
    home: &std::path::Path,
) -> anyhow::Result<()> {
    let (month, dir) = exports_of_this_month(home)?;
    let mut bytes = std::collections::BTreeMap::new();
    for ((node, (_, _, _, category, direction)), b) in cluster.expected_per_node(&flows())? {
        *bytes
            .entry((instance_id(node), category, direction))
            .or_insert(0) += b;
    }
    let (bill, _) = bills::write_month_cur(&dir, &bytes, PRICES)?;
    let out = dir.join(format!("{month}-reconciliation"));
    let output = std::process::Command::new(tollgate::binary())
        .args(["reconcile", "--month", &month, "--by", "team", "--bill"])
        .arg(&bill)
        .args(["--clickhouse", ch.url(), "--database", database, "--out"])
        .arg(&out)
        .output()?;
    ensure!(
        output.status.success(),
        "tollgate reconcile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "\nThe bill, reconciled: `tollgate reconcile --month {month} --bill {}`\n\
         (a Cost and Usage Report written from the nodes' nftables counters, each node an EC2\n\
         instance, priced at {PRICES}x AWS's list prices so that cents show; plus an instance-hour,\n\
         a volume, a NAT gateway's hours, tax, a load balancer's processing, and an instance without\n\
         tollgate):\n\n  \
         {}",
        bill.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    print_reconciliation(&out)
}

/// FinOps' monthly report, `tollgate export`, from ClickHouse and from the
/// Parquet files; prints it and whether the two are identical.
fn monthly_export(ch: &ClickHouse, database: &str, home: &std::path::Path) -> anyhow::Result<bool> {
    let (month, dir) = exports_of_this_month(home)?;
    let from_clickhouse = dir.join(format!("{month}-teams.csv"));
    let from_parquet = dir.join(format!("{month}-teams-from-parquet.csv"));
    let parquet = home.join("parquet");
    let sources: [(&std::path::Path, Vec<&std::ffi::OsStr>); 2] = [
        (
            &from_clickhouse,
            vec![
                "--clickhouse".as_ref(),
                ch.url().as_ref(),
                "--database".as_ref(),
                database.as_ref(),
            ],
        ),
        (
            &from_parquet,
            vec![
                "--parquet".as_ref(),
                parquet.as_os_str(),
                "--provider".as_ref(),
                "aws".as_ref(),
            ],
        ),
    ];
    for (out, source) in &sources {
        tollgate_tests::run(
            std::process::Command::new(tollgate::binary())
                .args([
                    "export", "--month", &month, "--by", "team", "--format", "csv", "--out",
                ])
                .arg(out)
                .args(source),
        )?;
    }
    let report = std::fs::read_to_string(&from_clickhouse)?;
    let identical = report == std::fs::read_to_string(&from_parquet)?;
    println!(
        "\nThe monthly report FinOps charges back from: `tollgate export --month {month} --by team`\n\
         (bytes exact, GiB to 6 places, cost rounded once to cents; also --by namespace|workload,\n\
         --format json|parquet):\n"
    );
    for line in report.lines() {
        println!("  {line}");
    }
    println!(
        "\n  (The demo moves megabytes, so its costs round to 0.00 here; the per-team table above\n  \
         shows them unrounded.) Written from ClickHouse to {} and from the\n  Parquet files to {}: {}.",
        from_clickhouse.display(),
        from_parquet.display(),
        if identical {
            "identical"
        } else {
            "THEY DIFFER"
        }
    );
    Ok(identical)
}

/// The demo's traffic; each flow owns its client ports.
fn flows() -> Vec<Flow> {
    use Target::{Internet, Pod, Service};
    vec![
        Flow::new("frontend-7f9c4-x2k8p", Service, "tcp", false, 22000, 300),
        Flow::new("api-5d8f6-m4n2b", Pod("db-0"), "tcp", false, 21000, 1),
        Flow::new("report-29123-q7z", Pod("db-0"), "tcp", true, 21001, 1),
        Flow::new("db-0", Pod("db-replica-0"), "tcp", false, 21002, 1),
        Flow::new("log-shipper-h5j2", Internet, "tcp", false, 21003, 1),
        Flow::new("frontend-7f9c4-x2k8p", Internet, "udp", true, 21004, 1),
        Flow::new(
            "report-29123-q7z",
            Pod("frontend-7f9c4-x2k8p"),
            "udp",
            false,
            21005,
            1,
        ),
    ]
}

fn traffic(cluster: &Cluster) -> anyhow::Result<Vec<Child>> {
    let flows = flows();
    fn tcp(bytes: &'static str) -> Vec<&'static str> {
        vec!["tcp", "--bytes", bytes, "--chunks", "14", "--pause", "2"]
    }
    fn udp(size: &'static str) -> Vec<&'static str> {
        vec!["udp", "--count", "140", "--size", size, "--pause", "0.2"]
    }
    let plan: Vec<(&Flow, Vec<&str>)> = vec![
        (&flows[0], vec!["short", "--n", "300", "--bytes", "40000"]),
        (&flows[1], tcp("6000000")),
        (&flows[2], tcp("20000000")),
        (&flows[3], tcp("12000000")),
        (&flows[4], tcp("8000000")),
        (&flows[5], udp("1200")),
        (&flows[6], udp("600")),
    ];
    plan.into_iter()
        .map(|(flow, args)| cluster.start(flow, &args))
        .collect()
}
