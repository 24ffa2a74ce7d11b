//! The demo on a real three-node Kubernetes: tollgate's image loaded into
//! each node, deployed with `kubectl apply -k` of the ClickHouse overlay,
//! metering workloads of four teams.

use std::time::{Duration, Instant};

use anyhow::ensure;
use tollgate_tests::cluster::{differences, metering_of};
use tollgate_tests::kubernetes::{Kubernetes, Underlay, INTERNET, INTERNET6};
use tollgate_tests::scenario::{
    check_deployment, clickhouse_port, deploy_clickhouse, release_binary, Image, Workloads,
    CLUSTER, NAMESPACES,
};
use tollgate_tests::{tollgate, uplink};

use crate::{
    exports_of_this_month, fresh_home, group, print_internet_senders, print_per_team,
    print_reconciliation, table, HOME, PRICES,
};

pub fn run() -> anyhow::Result<()> {
    println!(
        "\ntollgate demo on a real Kubernetes: which workload causes the network bill?\n\
         ============================================================================\n\n\
         Kubernetes 1.20 on this machine, dual-stack: a control plane and three nodes, each in\n\
         network and mount namespaces of its own with containerd, kubelet and kube-proxy\n\
         (iptables):\n\n  \
         node-a  zone r1-a, region r1   frontend (team web), the report Job of a CronJob (team data)\n  \
         node-b  zone r1-b, region r1   api (team payments; ClusterIP and NodePort Services), db (team data)\n  \
         node-c  zone r2-c, region r2   archive (team data), a host-network probe (team platform)\n  \
         all     log-shipper DaemonSet (team platform)\n  \
         internet host {INTERNET} / {INTERNET6}, behind the nodes' masquerade\n\n\
         tollgate runs as the DaemonSet of deploy/ (NET_ADMIN only), reading each node's\n\
         conntrack table every 2 s and inserting into ClickHouse. Each pod also counts its own\n\
         packets with nftables, which the demo compares with tollgate's metering at the end;\n\
         each node's uplink counts what crosses it, as a cloud bills an instance, and the demo\n\
         ends by reconciling the metering with the bill written from those counters.\n"
    );
    let started = Instant::now();
    let (home, server) = fresh_home()?;
    let ch = server.server();
    let database = "tollgate";
    println!("Packing tollgate's image from target/release/tollgate (as deploy/Dockerfile's) ...");
    let image = home.join("tollgate-image.tar");
    Image::build(&release_binary(), &image)?;
    println!("Starting Kubernetes ...");
    let k8s = Kubernetes::up(Underlay::Routed)?;
    uplink::install(&k8s)?;
    k8s.load(&image)?;
    k8s.relay(clickhouse_port(ch.url())?)?;
    println!("kubectl apply -k: the schema Job, then the agents' DaemonSet ...");
    deploy_clickhouse(&k8s, database)?;
    check_deployment(&k8s)?;
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES ('{CLUSTER}', 'aws')"
    ))?;
    println!(
        "  3 agents ready; conntrack accounting on; NET_ADMIN only; clean logs; /metrics answers"
    );
    println!("Starting the teams' workloads and sending traffic of known sizes (TCP and UDP, IPv4 and IPv6) ...");
    let workloads = Workloads::start(&k8s)?;
    ensure!(
        workloads.dual_stack(),
        "the pods or the api Service have no IPv6 address"
    );
    workloads.traffic(&k8s)?;
    let expected = workloads.expected()?;
    println!("Waiting for the agents' next reads to reach ClickHouse ...");
    let mut metered = Default::default();
    let mut differ = Vec::new();
    let converged = k8s.wait_until("metering equals nftables", Duration::from_secs(90), || {
        metered = metering_of(ch, database, CLUSTER)?;
        metered.retain(|key, _| NAMESPACES.contains(&key.1.as_str()));
        differ = differences(&expected, &metered);
        Ok(differ.is_empty())
    });

    print_per_team(ch, database)?;
    println!(
        "  Team platform is also the nodes' own traffic (the kubelets', the agents' inserts into\n  \
         ClickHouse); team tollgate the agents' /metrics, which the check above scraped.\n\
         \nPer workload and category (from the view metering_daily; the teams' namespaces):\n"
    );
    table(
        ch,
        &format!(
            "SELECT namespace, workload_kind AS kind, workload, category, \
               sumIf(bytes, direction = 'out') AS bytes_out, sumIf(bytes, direction = 'in') AS bytes_in \
             FROM {database}.metering_daily WHERE namespace IN ('{}') \
             GROUP BY ALL ORDER BY namespace, workload, category",
            NAMESPACES.join("', '")
        ),
    )?;
    monthly_export(ch.url(), database, &home)?;
    print_internet_senders(ch, database, &format!("{INTERNET} or {INTERNET6}"))?;

    println!();
    if converged.is_ok() {
        let sum = |direction: &str| -> u64 {
            expected
                .iter()
                .filter(|(k, _)| k.4 == direction)
                .map(|(_, v)| v)
                .sum()
        };
        println!(
            "Checked: each of the {} metering rows (team, workload, category, direction) of the\n\
             teams' namespaces equals what nftables counted in the pods' own network namespaces:\n\
             {} bytes sent and {} bytes received.",
            metered.len(),
            group(sum("out")),
            group(sum("in"))
        );
        reconciliation(&k8s, ch, database, &home)?;
    } else {
        println!("tollgate and nftables DISAGREE:\n{}", differ.join("\n"));
    }
    println!(
        "\nThe data stays in {HOME}: ClickHouse's in {HOME}/clickhouse (database `{database}`;\n\
         start it again with `bash tests/scripts/clickhouse.sh start {HOME}/clickhouse`), the\n\
         monthly report under {HOME}/exports. The cluster is stopped and removed now\n\
         ({:.0} s in all).\n",
        started.elapsed().as_secs_f64()
    );
    drop(k8s);
    ensure!(converged.is_ok(), "metering was not exact");
    Ok(())
}

/// FinOps' monthly reconciliation, `tollgate reconcile`, against a Cost and
/// Usage Report written from the nodes' uplink counters.
fn reconciliation(
    k8s: &Kubernetes,
    ch: &tollgate_tests::clickhouse::ClickHouse,
    database: &str,
    home: &std::path::Path,
) -> anyhow::Result<()> {
    let (month, dir) = exports_of_this_month(home)?;
    let reconciled = uplink::reconcile(k8s, ch, database, &dir, PRICES)?;
    println!(
        "\nThe bill, reconciled: `tollgate reconcile --month {month} --bill {}`\n\
         (a Cost and Usage Report written from nftables counters on each node's uplink, as EC2\n\
         counts an instance's transfer: the teams' workloads and the nodes' own traffic, the\n\
         kubelets', kube-proxy's and the agents', of every connection opened since the counters\n\
         were set up, before the agents started; priced at {PRICES}x AWS's list prices so that\n\
         cents show; plus an instance-hour, a volume, a NAT gateway's hours, tax, a load balancer's\n\
         processing, and an instance without tollgate):\n\n  \
         {}",
        reconciled.bill.display(),
        reconciled.summary
    );
    print_reconciliation(&reconciled.out)?;
    println!(
        "\nChecked: the metering covers each of the bill's {} bytes; it is {} bytes beyond it,\n\
         no more than the uplinks counted by the time it was read: the nodes never stop talking\n\
         (heartbeats, watches, the agents' inserts), and the bill was counted a moment earlier.",
        group(reconciled.billed),
        group(reconciled.beyond)
    );
    Ok(())
}

/// FinOps' monthly report, `tollgate export`, from ClickHouse.
fn monthly_export(url: &str, database: &str, home: &std::path::Path) -> anyhow::Result<()> {
    let (month, dir) = exports_of_this_month(home)?;
    let out = dir.join(format!("{month}-teams.csv"));
    tollgate_tests::run(
        std::process::Command::new(tollgate::binary())
            .args([
                "export", "--month", &month, "--by", "team", "--format", "csv",
            ])
            .arg("--out")
            .arg(&out)
            .args(["--clickhouse", url, "--database", database]),
    )?;
    println!(
        "\nThe monthly report FinOps charges back from: `tollgate export --month {month} --by team`\n\
         (written to {}; the demo moves megabytes, so its costs round to 0.00):\n",
        out.display()
    );
    for line in std::fs::read_to_string(&out)?.lines() {
        println!("  {line}");
    }
    Ok(())
}
