//! `tollgate reconcile` end to end: three agents meter a simulated cluster
//! (kernel conntrack in network namespaces, nodes carrying AWS, GCP or
//! Azure provider ids) into real ClickHouse and into Parquet files; a Cost
//! and Usage Report (a GCP billing export, Azure cost details) is built
//! from the nodes' nftables counters, as the cloud would count each
//! instance's transfer, plus line items tollgate must ignore or cannot
//! explain. Coverage must match the bill to the byte, the allocation must
//! sum to the bill to the cent, each team's share must be its bytes'
//! share, and ClickHouse, Parquet, the CSV bill and the CUR 2.0 Parquet
//! bill must all give the same report.

#![allow(clippy::unwrap_used)]
// Test code: an unwrap is an assertion.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};

use tollgate_schema::Category;
use tollgate_tests::bills::{self, UNALLOCATED};
use tollgate_tests::clickhouse;
use tollgate_tests::cluster::{instance_id, Agent, Cluster, Flow, Relay, Target};
use tollgate_tests::fixtures;
use tollgate_tests::tollgate::{self, binary};

const INTERVAL: u32 = 1;

/// The bill's prices, times the list prices: the test moves megabytes, and
/// every cent of the split must show.
const PRICES: u32 = 100_000;

fn reconcile(source: &[&str], bill: &Path, out: &Path) -> String {
    let month = bills::this_month();
    let output = Command::new(binary())
        .args(["reconcile", "--month", &month, "--bill"])
        .arg(bill)
        .args(source)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{log}");
    log
}

/// The rows of a report's CSV file as maps from column to value.
fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    bills::report_rows(path).unwrap()
}

/// The Parquet files under `dir` and their sizes.
fn parquet_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push((
                    entry.path().display().to_string(),
                    entry.metadata().unwrap().len(),
                ));
            }
        }
    }
    files
}

/// Cents as written (`12.34`, `-0.05`).
fn cents(text: &str) -> i128 {
    bills::cents(text).unwrap()
}

/// The cloud the simulated cluster's nodes are instances of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    Aws,
    Gcp,
    Azure,
}

/// A cluster three agents metered, and what nftables counted.
struct Metered {
    cluster: Cluster,
    _relay: Relay,
    ch: &'static clickhouse::ClickHouse,
    database: String,
    /// Scratch space: the bills and the reports.
    dir: std::path::PathBuf,
    /// The Parquet sink's files.
    parquet: std::path::PathBuf,
    /// Bytes per node and metering key, from the nodes' nftables counters.
    expected: BTreeMap<(usize, tollgate_tests::cluster::Key), u64>,
}

impl Metered {
    /// What a bill of `cloud` calls node `node`.
    fn instance(&self, cloud: Cloud, node: usize) -> String {
        match cloud {
            Cloud::Aws => instance_id(node),
            Cloud::Gcp => bills::gce_instance(self.cluster.nodes[node].name),
            Cloud::Azure => bills::azure_vm(self.cluster.nodes[node].name),
        }
    }

    /// Bytes per node, category and direction of what a bill of `cloud`
    /// charges for; checks that every billed category ran.
    fn billed_units(&self, cloud: Cloud) -> BTreeMap<(usize, String, String), u64> {
        let mut per_unit: BTreeMap<(usize, String, String), u64> = BTreeMap::new();
        for ((node, (_, _, _, category, direction)), bytes) in &self.expected {
            let billed = match cloud {
                Cloud::Aws => bills::aws_usage(category, direction).is_some(),
                Cloud::Gcp => bills::gcp_sku(category, direction).is_some(),
                Cloud::Azure => bills::azure_meter(category, direction).is_some(),
            };
            if billed {
                *per_unit
                    .entry((*node, category.clone(), direction.clone()))
                    .or_default() += bytes;
            }
        }
        let categories: std::collections::BTreeSet<&str> =
            per_unit.keys().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(
            categories.into_iter().collect::<Vec<_>>(),
            ["cross_region", "cross_zone", "internet"],
            "every billed category ran: {:#?}",
            self.expected
        );
        per_unit
    }

    /// Reconciles `bill` with the metering in ClickHouse and in the Parquet
    /// files, with `options` besides; checks both reports are the same and
    /// returns the directory of ClickHouse's.
    fn reconcile_from_both(&self, bill: &Path, options: &[String]) -> std::path::PathBuf {
        let options = options.iter().map(String::as_str);
        let from_clickhouse = self.dir.join("from-clickhouse");
        let clickhouse: Vec<&str> = ["--clickhouse", self.ch.url(), "--database", &self.database]
            .into_iter()
            .chain(options.clone())
            .collect();
        eprintln!("{}", reconcile(&clickhouse, bill, &from_clickhouse));
        let from_parquet = self.dir.join("from-parquet");
        let parquet: Vec<&str> = ["--parquet", self.parquet.to_str().unwrap()]
            .into_iter()
            .chain(options)
            .collect();
        reconcile(&parquet, bill, &from_parquet);
        for table in ["coverage.csv", "allocation.csv"] {
            assert_eq!(
                std::fs::read_to_string(from_parquet.join(table)).unwrap(),
                std::fs::read_to_string(from_clickhouse.join(table)).unwrap(),
                "{table}"
            );
        }
        from_clickhouse
    }

    /// `per_unit` keyed by what the bill calls each node.
    fn by_instance(
        &self,
        cloud: Cloud,
        per_unit: &BTreeMap<(usize, String, String), u64>,
    ) -> BTreeMap<(String, String, String), u64> {
        per_unit
            .iter()
            .map(|((node, category, direction), &bytes)| {
                (
                    (
                        self.instance(cloud, *node),
                        category.clone(),
                        direction.clone(),
                    ),
                    bytes,
                )
            })
            .collect()
    }
}

/// Three agents meter the simulated cluster, its nodes instances of
/// `cloud` (their provider ids in the static inventory), into ClickHouse
/// and Parquet files: cross-zone both ways by two teams, cross-region, the
/// internet over TCP and UDP, and same-zone transfer no bill charges.
fn meter_traffic(cloud: Cloud, name: &str) -> Option<Metered> {
    if !tollgate_tests::require_root("reconcile", "network namespaces and conntrack") {
        return None;
    }
    let ch = clickhouse::require("reconcile")?;
    let database = ch.fresh_database(name);
    tollgate::migrate(ch.url(), &database);
    let cluster = Cluster::create().unwrap();
    if cloud != Cloud::Aws {
        let path = cluster.dir.join("inventory.yaml");
        let mut inventory = std::fs::read_to_string(&path).unwrap();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let aws = format!("'aws:///{}/{}'", node.zone, instance_id(i));
            assert!(inventory.contains(&aws), "{inventory}");
            let provider_id = match cloud {
                Cloud::Gcp => format!(
                    "gce://{}/{}/{}",
                    bills::GCP_PROJECT,
                    node.zone,
                    bills::gce_instance(node.name)
                ),
                Cloud::Azure => format!("azure://{}", bills::azure_vm(node.name)),
                Cloud::Aws => unreachable!("the simulated cluster's nodes are AWS instances"),
            };
            inventory = inventory.replace(&aws, &format!("'{provider_id}'"));
        }
        std::fs::write(&path, inventory).unwrap();
    }
    let relay = Relay::start(&cluster, ch.url()).unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let parquet = dir.join("parquet");
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let config = cluster
                .agent_config(
                    i,
                    "http://127.0.0.1:8123",
                    &database,
                    Some(&parquet),
                    INTERVAL,
                )
                .unwrap();
            Agent::start(&cluster.nodes[i], &config).unwrap()
        })
        .collect();

    use Target::{Internet, Pod};
    let flows = [
        // Cross-zone both ways, two teams on node a.
        Flow::new("frontend-7f9c4-x2k8p", Pod("db-0"), "tcp", false, 23000, 1),
        Flow::new("report-29123-q7z", Pod("db-0"), "tcp", true, 23001, 1),
        // Cross-region, and the internet.
        Flow::new("db-0", Pod("db-replica-0"), "tcp", false, 23002, 1),
        Flow::new("log-shipper-h5j2", Internet, "tcp", false, 23003, 1),
        Flow::new("log-shipper-h5j2", Internet, "udp", true, 23004, 1),
        // Same zone: free, in no bill.
        Flow::new("api-5d8f6-m4n2b", Pod("db-0"), "udp", false, 23005, 1),
    ];
    let tcp = |bytes: &'static str| ["tcp", "--bytes", bytes, "--chunks", "3", "--pause", "0.3"];
    let udp = ["udp", "--count", "40", "--size", "900", "--pause", "0.02"];
    let clients: Vec<Child> = vec![
        cluster.start(&flows[0], &tcp("3000000")).unwrap(),
        cluster.start(&flows[1], &tcp("1000000")).unwrap(),
        cluster.start(&flows[2], &tcp("2000000")).unwrap(),
        cluster.start(&flows[3], &tcp("1500000")).unwrap(),
        cluster.start(&flows[4], &udp).unwrap(),
        cluster.start(&flows[5], &udp).unwrap(),
    ];
    for mut client in clients {
        assert!(client.wait().unwrap().success(), "a traffic client failed");
    }
    for agent in agents {
        agent.stop().unwrap();
    }
    let expected = cluster.expected_per_node(&flows).unwrap();
    Some(Metered {
        cluster,
        _relay: relay,
        ch,
        database,
        dir,
        parquet,
        expected,
    })
}

/// Coverage and allocation of the report in `report` against the bill's
/// transfer (`per_unit`, costing `billed_cost`) and its other lines,
/// whose unallocated rest is `unallocated` (resource, cost and reason, in
/// the report's order).
fn check_report(
    metered: &Metered,
    cloud: Cloud,
    per_unit: &BTreeMap<(usize, String, String), u64>,
    billed_cost: &BTreeMap<String, i128>,
    report: &Path,
    unallocated: &[(&str, &str, &str); 2],
) {
    // Coverage: each node's billed bytes are what tollgate metered.
    let coverage = rows(&report.join("coverage.csv"));
    for ((node, category, direction), &bytes) in per_unit {
        let row = coverage
            .iter()
            .find(|r| {
                r["resource"] == metered.instance(cloud, *node)
                    && r["billed_category"] == *category
                    && r["direction"] == *direction
            })
            .unwrap_or_else(|| panic!("no coverage of {node} {category} {direction}"));
        assert_eq!(row["billed_bytes"], bytes.to_string(), "{row:?}");
        assert_eq!(row["metered_bytes"], bytes.to_string(), "{row:?}");
        assert_eq!(
            (row["ratio"].as_str(), row["status"].as_str()),
            ("1.000000", "ok")
        );
        assert_eq!(
            row["nodes"],
            format!("sim/{}", metered.cluster.nodes[*node].name)
        );
    }
    let mut unmetered: Vec<_> = coverage
        .iter()
        .filter(|r| r["status"] != "ok")
        .map(|r| (r["resource"].as_str(), r["status"].as_str()))
        .collect();
    unmetered.sort_unstable();
    let mut expected: Vec<_> = unallocated
        .iter()
        .map(|&(resource, _, reason)| match reason {
            "node_not_metered" => (resource, "not_metered"),
            _ => (resource, reason),
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(unmetered, expected);

    // Allocation: every unit's lines sum to its billed cost rounded to the
    // cent; each team's share within a cent of its bytes' exact share.
    let allocation = rows(&report.join("allocation.csv"));
    for ((node, category, direction), &bytes) in per_unit {
        let resource = metered.instance(cloud, *node);
        let unit: Vec<_> = allocation
            .iter()
            .filter(|r| {
                r["resource"] == resource
                    && r["billed_category"] == *category
                    && r["direction"] == *direction
            })
            .collect();
        let total = billed_cost[&format!("{resource} {category} {direction}")];
        let sum: i128 = unit.iter().map(|r| cents(&r["cost"])).sum();
        assert_eq!(
            sum,
            (total + 5_000_000) / 10_000_000,
            "{resource} {category} {direction}"
        );
        for row in unit {
            assert_eq!(row["unallocated_reason"], "", "{row:?}");
            let team_bytes: u64 = metered
                .expected
                .iter()
                .filter(|((n, k), _)| {
                    n == node && k.0 == row["team"] && k.3 == *category && k.4 == *direction
                })
                .map(|(_, b)| b)
                .sum();
            assert_eq!(row["bytes"], team_bytes.to_string(), "{row:?}");
            let exact = total * i128::from(team_bytes) / i128::from(bytes);
            assert!(
                (cents(&row["cost"]) * 10_000_000 - exact).abs() <= 10_000_000,
                "{row:?}: exact share {exact} billionths"
            );
        }
    }
    let rest: Vec<_> = allocation
        .iter()
        .filter(|r| r["team"] == "unallocated")
        .map(|r| {
            (
                r["resource"].as_str(),
                r["cost"].as_str(),
                r["unallocated_reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(rest, unallocated);
    let all: i128 = allocation.iter().map(|r| cents(&r["cost"])).sum();
    let network: i128 = billed_cost
        .values()
        .map(|n| (n + 5_000_000) / 10_000_000)
        .sum();
    let rest: i128 = unallocated.iter().map(|(_, cost, _)| cents(cost)).sum();
    assert_eq!(
        all,
        network + rest,
        "the bill's network lines, no other line"
    );
}

#[test]
fn a_bill_from_nftables_counters_is_covered_to_the_byte_and_allocated_to_the_cent() {
    let Some(metered) = meter_traffic(Cloud::Aws, "reconcile") else {
        return;
    };
    let (ch, dir, parquet) = (metered.ch, &metered.dir, &metered.parquet);

    // The bill: per node, billed category and direction, the bytes its
    // nftables counters saw, in two line items (two hours); then noise.
    let per_unit = metered.billed_units(Cloud::Aws);
    let hour = bills::billing_hours();
    let by_instance = metered.by_instance(Cloud::Aws, &per_unit);
    let (mut lines, billed_cost) = bills::instance_transfer(&by_instance, hour, PRICES);
    lines.extend(bills::other_lines(&instance_id(0), hour));
    let csv_bill = dir.join("cur-00001.csv.gz");
    bills::write_cur_csv(&csv_bill, &lines).unwrap();
    let parquet_bill = dir.join("cur2-00001.snappy.parquet");
    bills::write_cur2_parquet(&parquet_bill, &lines).unwrap();

    let clickhouse_args = ["--clickhouse", ch.url(), "--database", &metered.database];
    let from_clickhouse = dir.join("from-clickhouse");
    let log = reconcile(&clickhouse_args, &csv_bill, &from_clickhouse);
    eprintln!("{log}");
    let parquet_args = ["--parquet", parquet.to_str().unwrap()];
    let from_parquet = dir.join("from-parquet");
    reconcile(&parquet_args, &csv_bill, &from_parquet);
    let from_cur2 = dir.join("from-cur2");
    reconcile(&clickhouse_args, &parquet_bill, &from_cur2);
    for table in ["coverage.csv", "allocation.csv"] {
        let report = std::fs::read_to_string(from_clickhouse.join(table)).unwrap();
        for other in [&from_parquet, &from_cur2] {
            assert_eq!(
                std::fs::read_to_string(other.join(table)).unwrap(),
                report,
                "{table}: {} differs from ClickHouse with the CSV bill; Parquet files: {:?}",
                other.display(),
                parquet_files(parquet)
            );
        }
    }
    check_report(
        &metered,
        Cloud::Aws,
        &per_unit,
        &billed_cost,
        &from_clickhouse,
        &UNALLOCATED,
    );
    nat_gateways_declared_per_zone(&metered, &lines, hour);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two NAT gateways in the bill, each billed what nftables counted of the
/// cluster's internet connections, both ways: one in the zone whose node
/// opened them, one in a zone whose node opened none. Declared with
/// `--nat-gateway`, the first is covered to the byte and its cost goes to
/// the team that opened them, the second's is unallocated with no metered
/// bytes, from ClickHouse and Parquet alike; undeclared, both are split
/// over the whole cloud and the idle zone's gateway is charged to that
/// team.
fn nat_gateways_declared_per_zone(metered: &Metered, lines: &[bills::CurLine], hour: i64) {
    let mut internet: BTreeMap<&str, (u64, std::collections::BTreeSet<&str>)> = BTreeMap::new();
    for ((node, key), bytes) in &metered.expected {
        if key.3 == "internet" {
            let zone = internet
                .entry(metered.cluster.nodes[*node].zone)
                .or_default();
            zone.0 += bytes;
            zone.1.insert(key.0.as_str());
        }
    }
    let [(busy_zone, (busy_bytes, ref teams))] = internet.into_iter().collect::<Vec<_>>()[..]
    else {
        panic!(
            "the internet connections come from one zone: {:#?}",
            metered.expected
        );
    };
    let [team] = teams.iter().copied().collect::<Vec<_>>()[..] else {
        panic!("one team opens the internet connections");
    };
    let idle_zone = metered
        .cluster
        .nodes
        .iter()
        .map(|n| n.zone)
        .find(|&z| z != busy_zone)
        .unwrap();
    let gateway = |id: &str| format!("arn:aws:ec2:eu-west-1:111122223333:natgateway/{id}");
    let mut with_nat = lines.to_vec();
    let mut costs = Vec::new();
    for id in ["nat-0aaa", "nat-0bbb"] {
        let mut line = bills::ec2_line("EUW1-NatGateway-Bytes", "NatGateway", &gateway(id), hour);
        line.amount = bills::gigabytes(busy_bytes);
        line.cost = bills::cost(&line.amount, "4500");
        costs.push(bills::nanos(&line.cost));
        with_nat.push(line);
    }
    let bill = metered.dir.join("cur-nat.csv.gz");
    bills::write_cur_csv(&bill, &with_nat).unwrap();
    let nat_rows = |report: &Path, file: &str| -> Vec<BTreeMap<String, String>> {
        rows(&report.join(file))
            .into_iter()
            .filter(|r| r["billed_category"] == "nat_gateway")
            .collect()
    };
    let cents_of = |nanos: i128| (nanos + 5_000_000) / 10_000_000;

    let declared = metered.reconcile_from_both(
        &bill,
        &[
            "--nat-gateway".to_owned(),
            format!("nat-0aaa={busy_zone}"),
            "--nat-gateway".to_owned(),
            format!("nat-0bbb={idle_zone}"),
        ],
    );
    let coverage = nat_rows(&declared, "coverage.csv");
    let covered: Vec<_> = coverage
        .iter()
        .map(|r| {
            (
                r["resource"].as_str(),
                r["billed_bytes"].as_str(),
                r["metered_bytes"].as_str(),
                r["status"].as_str(),
            )
        })
        .collect();
    let busy = busy_bytes.to_string();
    assert_eq!(
        covered,
        [
            (
                gateway("nat-0aaa").as_str(),
                busy.as_str(),
                busy.as_str(),
                "ok"
            ),
            (gateway("nat-0bbb").as_str(), busy.as_str(), "0", "low"),
        ]
    );
    let allocation = nat_rows(&declared, "allocation.csv");
    let allocated: Vec<_> = allocation
        .iter()
        .map(|r| {
            (
                r["resource"].as_str(),
                r["team"].as_str(),
                r["unallocated_reason"].as_str(),
                cents(&r["cost"]),
            )
        })
        .collect();
    assert_eq!(
        allocated,
        [
            (gateway("nat-0aaa").as_str(), team, "", cents_of(costs[0])),
            (
                gateway("nat-0bbb").as_str(),
                "unallocated",
                "no_metered_bytes",
                cents_of(costs[1])
            ),
        ]
    );

    let shared = metered.reconcile_from_both(&bill, &[]);
    let idle_gateway: Vec<_> = nat_rows(&shared, "allocation.csv")
        .into_iter()
        .filter(|r| r["resource"] == gateway("nat-0bbb"))
        .map(|r| (r["team"].clone(), cents(&r["cost"])))
        .collect();
    assert_eq!(idle_gateway, [(team.to_owned(), cents_of(costs[1]))]);

    // A typo, and one gateway declared twice, are said.
    let full = gateway("nat-0aaa");
    let log = reconcile(
        &[
            "--clickhouse",
            metered.ch.url(),
            "--database",
            &metered.database,
            "--nat-gateway",
            &format!("nat-0aaa={busy_zone}"),
            "--nat-gateway",
            &format!("{full}={idle_zone}"),
            "--nat-gateway",
            &format!("nat-0zzz={idle_zone}"),
        ],
        &bill,
        &metered.dir.join("warned"),
    );
    for warning in [
        "--nat-gateway nat-0zzz: no NAT gateway line item of the bills names it".to_owned(),
        format!("{full} is declared by --nat-gateway nat-0aaa and {full}: only the first one's zones count"),
    ] {
        assert!(log.contains(&warning), "{warning:?} not in {log}");
    }
}

/// Metering of the simulated cluster as instances of `cloud`, reconciled
/// from ClickHouse and from Parquet against a bill of `cloud` written from
/// the nodes' nftables counters: the same report from both, the bill's
/// transfer covered to the byte and allocated to the cent, and only its
/// noise unallocated.
fn a_bill_from_the_counters_reconciles(cloud: Cloud, name: &str) {
    let Some(metered) = meter_traffic(cloud, name) else {
        return;
    };
    let per_unit = metered.billed_units(cloud);
    let hour = bills::billing_hours();
    let by_instance = metered.by_instance(cloud, &per_unit);
    let node_a = metered.instance(cloud, 0);
    let (bill, (mut lines, billed_cost), noise, unallocated) = match cloud {
        Cloud::Gcp => (
            metered.dir.join("gcp-billing-export.jsonl"),
            bills::gce_instance_transfer(&by_instance, hour, PRICES),
            bills::gcp_other_lines(&node_a, hour),
            &bills::GCP_UNALLOCATED,
        ),
        Cloud::Azure => (
            metered.dir.join("azure-cost-details.csv"),
            bills::azure_vm_transfer(&by_instance, hour, PRICES),
            bills::azure_other_lines(&node_a, hour),
            &bills::AZURE_UNALLOCATED,
        ),
        Cloud::Aws => panic!("AWS has tests of its own, with a CSV and a Parquet CUR"),
    };
    lines.extend(noise);
    if cloud == Cloud::Azure {
        lines.insert(0, bills::AZURE_EA_HEADER.to_owned());
    }
    std::fs::write(&bill, lines.join("\n") + "\n").unwrap();
    let report = metered.reconcile_from_both(&bill, &[]);
    check_report(
        &metered,
        cloud,
        &per_unit,
        &billed_cost,
        &report,
        unallocated,
    );
    std::fs::remove_dir_all(&metered.dir).unwrap();
}

/// The same on GCP: the nodes are GCE instances (`gce://project/zone/name`),
/// the bill a detailed billing export in JSON lines, matched by project and
/// instance name, with a core-hour, transfer to Google's services and an
/// instance without an agent as noise.
#[test]
fn a_gcp_export_from_nftables_counters_is_covered_to_the_byte_and_allocated_to_the_cent() {
    a_bill_from_the_counters_reconciles(Cloud::Gcp, "reconcile_gcp");
}

/// The same on Azure: the nodes are virtual machines
/// (`azure:///subscriptions/.../virtualMachines/NAME`), the bill cost
/// details in the Enterprise Agreement layout, matched by resource id,
/// with a day of a virtual machine, a load balancer's processing and a
/// machine without an agent as noise.
#[test]
fn azure_cost_details_from_nftables_counters_are_covered_to_the_byte_and_allocated_to_the_cent() {
    a_bill_from_the_counters_reconciles(Cloud::Azure, "reconcile_azure");
}

/// A GCP billing export (JSON lines) and Azure cost details (CSV) in one
/// run, against records of GKE and AKS nodes loaded into ClickHouse and
/// Parquet at once: each bill meets its nodes (GCP by instance name, Azure
/// by the scale set the nodes' virtual machines belong to), and the
/// figures are those computed by hand, from either store.
#[test]
fn gcp_and_azure_bills_meet_their_nodes_and_split_by_hand_computed_figures() {
    let Some(ch) = clickhouse::require("reconcile") else {
        return;
    };
    let database = ch.fresh_database("reconcile_clouds");
    tollgate::migrate(ch.url(), &database);
    let dir =
        std::env::temp_dir().join(format!("tollgate-reconcile-clouds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    const GIB: u64 = 1 << 30;
    let gke = "gce://shop-prod/europe-west1-b/gke-pool-1-abcd";
    let aks = |vm: u32| {
        format!(
            "azure:///subscriptions/5ab1e7c4-0000-4000-8000-00000000aa01/resourceGroups/mc_shop_aks_westeurope/\
             providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool-12345678-vmss/virtualMachines/{vm}"
        )
    };
    let mut records = String::new();
    for (node, provider_id, team, category, bytes) in [
        ("gke-a", gke.to_owned(), "web", Category::Internet, 2 * GIB),
        ("gke-a", gke.to_owned(), "data", Category::Internet, GIB),
        ("gke-a", gke.to_owned(), "web", Category::CrossZone, GIB),
        ("aks-3", aks(3), "web", Category::Internet, GIB),
        ("aks-4", aks(4), "data", Category::Internet, GIB),
    ] {
        let mut record = fixtures::record(node, ("shop", team, team), ("", "", ""), category);
        record.local_provider_id = provider_id.as_str().into();
        record.bytes_sent = bytes;
        record.bytes_received = 1_000;
        record.conntrack_id = records.len() as u32;
        records.push_str(&serde_json::to_string(&record).unwrap());
        records.push('\n');
    }
    let input = dir.join("records.jsonl");
    std::fs::write(&input, records).unwrap();
    let parquet = dir.join("parquet");
    tollgate::load_into_both(
        &input,
        &dir.join("spool"),
        ch.url(),
        &database,
        &parquet,
        100,
    );

    let day =
        chrono::DateTime::from_timestamp(i64::from(fixtures::day_before_yesterday()), 0).unwrap();
    let month = day.format("%Y-%m").to_string();
    let start = day
        .date_naive()
        .and_hms_opt(7, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let gcp_line = |sku: &str, cost: &str, amount: u64, unit: &str, credits: &str| {
        bills::gcp_export_line(sku, "gke-pool-1-abcd", start, (cost, credits), amount, unit)
    };
    let gcp = dir.join("gcp-billing-export.jsonl");
    std::fs::write(
        &gcp,
        [
            // 3 GiB to the internet, 0.36 less a 0.12 free-tier credit.
            gcp_line(
                "Network Internet Data Transfer Out from EMEA to Americas",
                "0.36",
                3 * GIB,
                "bytes",
                r#"{"name":"Free tier","amount":-0.12,"full_name":null,"id":"","type":"FREE_TIER"}"#,
            ),
            // 2 GiB across zones, of which tollgate metered 1.
            gcp_line(
                "Network Inter Zone Data Transfer Out",
                "0.02",
                2 * GIB,
                "bytes",
                "",
            ),
            gcp_line(
                "N2 Instance Core running in Belgium",
                "0.031611",
                3600,
                "seconds",
                "",
            ),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let azure = dir.join("azure-cost-details.csv");
    let vmss = "/subscriptions/5AB1E7C4-0000-4000-8000-00000000AA01/resourceGroups/MC_shop_aks_westeurope/\
                providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool-12345678-vmss";
    std::fs::write(
        &azure,
        [
            bills::AZURE_EA_HEADER.to_owned(),
            bills::azure_cost_line(
                start,
                (
                    "Bandwidth",
                    "Rtn Preference: MGN",
                    "Standard Data Transfer Out",
                ),
                ("2", "1 GB", "0.174"),
                vmss,
            ),
            bills::azure_cost_line(
                start,
                ("Virtual Machines", "Dv5 Series", "D4 v5"),
                ("24", "1 Hour", "4.608"),
                vmss,
            ),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();

    let out = |name: &str| dir.join(name);
    let bills = [gcp.to_str().unwrap(), azure.to_str().unwrap()];
    for (source, target) in [
        (
            vec!["--clickhouse", ch.url(), "--database", &database],
            "from-clickhouse",
        ),
        (vec!["--parquet", parquet.to_str().unwrap()], "from-parquet"),
    ] {
        let output = Command::new(binary())
            .args(["reconcile", "--month", &month, "--bill"])
            .args(bills)
            .args(&source)
            .arg("--out")
            .arg(out(target))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for table in ["coverage.csv", "allocation.csv"] {
        assert_eq!(
            std::fs::read_to_string(out("from-parquet").join(table)).unwrap(),
            std::fs::read_to_string(out("from-clickhouse").join(table)).unwrap(),
            "{table}"
        );
    }
    let allocation: Vec<(String, String, String, String, String)> =
        rows(&out("from-clickhouse").join("allocation.csv"))
            .into_iter()
            .map(|r| {
                (
                    r["provider"].clone(),
                    r["billed_category"].clone(),
                    r["team"].clone(),
                    r["cost"].clone(),
                    r["unallocated_reason"].clone(),
                )
            })
            .collect();
    let row = |p: &str, c: &str, t: &str, cost: &str, why: &str| {
        (
            p.to_owned(),
            c.to_owned(),
            t.to_owned(),
            cost.to_owned(),
            why.to_owned(),
        )
    };
    assert_eq!(
        allocation,
        [
            // GCP: half the cross-zone bytes metered, half unexplained.
            row("gcp", "cross_zone", "web", "0.01", ""),
            row(
                "gcp",
                "cross_zone",
                "unallocated",
                "0.01",
                "unexplained_bytes"
            ),
            // 0.24 net of the credit, 2:1.
            row("gcp", "internet", "data", "0.08", ""),
            row("gcp", "internet", "web", "0.16", ""),
            // Azure: 0.174 over two scale-set instances' 1 GiB each: 8.7
            // cents each, 17 in all, the cent left over to the first.
            row("azure", "internet", "data", "0.09", ""),
            row("azure", "internet", "web", "0.08", ""),
        ]
    );
    let coverage: Vec<(String, String, String, String)> =
        rows(&out("from-clickhouse").join("coverage.csv"))
            .into_iter()
            .map(|r| {
                (
                    r["provider"].clone(),
                    r["billed_category"].clone(),
                    r["ratio"].clone(),
                    r["status"].clone(),
                )
            })
            .collect();
    let line = |p: &str, c: &str, ratio: &str, status: &str| {
        (
            p.to_owned(),
            c.to_owned(),
            ratio.to_owned(),
            status.to_owned(),
        )
    };
    assert_eq!(
        coverage,
        [
            line("gcp", "cross_zone", "0.500000", "low"),
            line("gcp", "internet", "1.000000", "ok"),
            line("azure", "internet", "1.000000", "ok"),
            // Received bytes, which these bills do not charge: metered,
            // not billed (the scale set's instances shown once, as it).
            line("gcp", "cross_zone", "", "not_billed"),
            line("gcp", "internet", "", "not_billed"),
            line("azure", "internet", "", "not_billed"),
        ]
    );
    // Against a store without the month's metering: said, and nothing
    // allocated.
    std::fs::create_dir_all(out("empty")).unwrap();
    let output = Command::new(binary())
        .args(["reconcile", "--month", &month, "--bill"])
        .args(bills)
        .arg("--parquet")
        .arg(out("empty"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains(&format!("no metering for {month}")), "{log}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reasons: Vec<&str> = report["allocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["unallocated_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["node_not_metered"; 3], "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
