//! `tollgate export` against a real ClickHouse 26.x and the Parquet sink's
//! files: the same records loaded into both give byte-identical reports;
//! every line equals the metering and cost views; hand-computed figures;
//! month edges; pyarrow reads the Parquet report; bad input exits 2.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tollgate::export::Month;
use tollgate_schema::{Category, FlowRecord, Initiator};
use tollgate_tests::clickhouse::{self, ClickHouse};
use tollgate_tests::fixtures::{record, unix_now};
use tollgate_tests::python;
use tollgate_tests::tollgate::{binary, load_into_both, migrate};

const GIB: u64 = 1 << 30;
const WEB: (&str, &str, &str) = ("shop", "web", "storefront");
const REPORT: (&str, &str, &str) = ("shop", "report", "storefront");
const DB: (&str, &str, &str) = ("data", "db", "platform");
const BATCH: (&str, &str, &str) = ("jobs", "etl", "analytics");
const NOBODY: (&str, &str, &str) = ("", "", "");

fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// October 2026: closed, inside the daily rollup's retention until 2031,
/// and priced by the shipped flat prices (the shipped internet tiers start
/// on 2026-12-01), so the hand-computed figures hold whatever day it is.
fn priced_month() -> (Month, u32, u32) {
    let month: Month = "2026-10".parse().unwrap();
    let (start, end) = month.unix_range();
    (
        month,
        u32::try_from(start).unwrap(),
        u32::try_from(end).unwrap(),
    )
}

fn flow(
    local: (&str, &str, &str),
    remote: (&str, &str, &str),
    category: Category,
    at: u32,
    sent: u64,
    received: u64,
) -> FlowRecord {
    let mut r = record("n-a", local, remote, category);
    r.observed_at = at;
    r.bytes_sent = sent;
    r.bytes_received = received;
    // As the kernel counts them: no bytes without a packet, and back.
    r.packets_sent = sent.div_ceil(1500);
    r.packets_received = received.div_ceil(1500);
    r
}

/// The month's records: hand-countable ones for storefront and platform,
/// edge records just outside the month, and a few thousand pseudo-random
/// ones for analytics (spread over the month's days and several Parquet
/// files).
fn records(start: u32, end: u32) -> Vec<FlowRecord> {
    let day = 86_400;
    let mut records = vec![
        flow(WEB, DB, Category::CrossZone, start + day, 3 * GIB, GIB),
        flow(WEB, NOBODY, Category::Internet, start + 2 * day, 6 * GIB, 0),
        flow(WEB, NOBODY, Category::Internet, end - 1, 4 * GIB, 0),
        flow(WEB, NOBODY, Category::SameZone, start, 5 * GIB, 5 * GIB),
        flow(DB, WEB, Category::CrossZone, start + day, GIB, 3 * GIB),
        flow(
            DB,
            NOBODY,
            Category::CrossRegion,
            start + 3 * day,
            2 * GIB,
            0,
        ),
        flow(
            REPORT,
            NOBODY,
            Category::Internet,
            start + 4 * day,
            GIB / 2 + 123_457,
            0,
        ),
        flow(REPORT, NOBODY, Category::Unknown, start + 4 * day, 999, 0),
        // Just outside the month on either side.
        flow(WEB, NOBODY, Category::Internet, start - 1, 100 * GIB, 0),
        flow(WEB, NOBODY, Category::Internet, end, 100 * GIB, 0),
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let categories = [
        Category::CrossZone,
        Category::Internet,
        Category::CrossRegion,
    ];
    for i in 0..3000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let workload = ["etl", "loader", "indexer"][(seed % 3) as usize];
        let mut r = flow(
            (BATCH.0, workload, BATCH.2),
            NOBODY,
            categories[(seed >> 8) as usize % 3],
            // Noon of a day of the month: the sink writes one file per
            // batch and hour, so few distinct hours keep the files few.
            start + (seed >> 16) as u32 % ((end - start) / day) * day + day / 2,
            seed >> 40,
            seed >> 44,
        );
        r.conntrack_id = 1000 + i;
        r.local_region = ["r1", "r2"][(seed >> 4) as usize % 2].into();
        records.push(r);
    }
    records.sort_by_key(|r| r.observed_at);
    records
}

/// A migrated database and a Parquet directory holding the same records,
/// loaded by `tollgate load` into both sinks at once.
fn loaded(ch: &ClickHouse, name: &str) -> (String, PathBuf, Month) {
    let (_, start, end) = priced_month();
    loaded_with(ch, name, &records(start, end))
}

/// [`loaded`] with these records (of [`priced_month`]).
fn loaded_with(ch: &ClickHouse, name: &str, records: &[FlowRecord]) -> (String, PathBuf, Month) {
    let database = ch.fresh_database(name);
    migrate(ch.url(), &database);
    let dir = temp(name);
    let month = priced_month().0;
    let input = dir.join("records.jsonl");
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    let parquet = dir.join("flows");
    load_into_both(
        &input,
        &dir.join("spool"),
        ch.url(),
        &database,
        &parquet,
        500,
    );
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES ('c1', 'aws')"
    ))
    .unwrap();
    (database, parquet, month)
}

fn export(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("export")
        .args(args)
        .output()
        .unwrap()
}

/// Exports to `out`, which must succeed; returns the file's bytes.
fn exported(args: &[&str], out: &Path) -> Vec<u8> {
    let output = export(&[args, &["--out", out.to_str().unwrap()]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).unwrap()
}

fn csv_lines(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn clickhouse_and_parquet_give_identical_reports_equal_to_the_views() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (database, parquet, month) = loaded(ch, "agree");
    let dir = parquet.parent().unwrap().to_owned();
    let month_arg = month.to_string();
    let from_clickhouse = ["--clickhouse", ch.url(), "--database", &database];
    let parquet_arg = parquet.to_string_lossy().into_owned();
    let from_parquet = ["--parquet", &parquet_arg, "--provider", "aws"];

    for by in ["team", "namespace", "workload"] {
        for format in ["csv", "json"] {
            let common = ["--month", &month_arg, "--by", by, "--format", format];
            let a = exported(
                &[&common[..], &from_clickhouse].concat(),
                &dir.join(format!("ch-{by}.{format}")),
            );
            let b = exported(
                &[&common[..], &from_parquet].concat(),
                &dir.join(format!("pq-{by}.{format}")),
            );
            assert!(
                a == b,
                "--by {by} --format {format}: ClickHouse\n{}\nParquet\n{}",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            );
        }
    }

    // The records are all cluster c1's: --cluster c1 changes nothing.
    for (name, source) in [("ch", &from_clickhouse[..]), ("pq", &from_parquet[..])] {
        let only_c1 = exported(
            &[&["--month", &month_arg, "--cluster", "c1"][..], source].concat(),
            &dir.join(format!("{name}-c1.csv")),
        );
        assert_eq!(
            only_c1,
            std::fs::read(dir.join(format!("{name}-team.csv"))).unwrap()
        );
    }

    // Every line by team equals the metering and cost views (ClickHouse
    // rounds a Decimal half away from zero, as the export does).
    let report = std::fs::read_to_string(dir.join("ch-team.csv")).unwrap();
    assert_eq!(
        report.lines().next().unwrap(),
        "period,cluster,team,category,direction,bytes,gib,cost,currency,account,pricing"
    );
    let (first, end) = (month.first_day(), month.end_day());
    let views = ch
        .query(&format!(
            "SELECT '{month}', cluster, team, category, direction, sum(bytes), \
             toString(round(toDecimal128(sum(bytes), 12) / 1073741824, 6)), \
             if(category = 'unknown', '', toString(round(sum(cost), 2))), \
             if(category = 'unknown', '', any(currency)), any(account), \
             if(category = 'unknown', 'unpriced', 'flat') \
             FROM {database}.cost_daily WHERE day >= '{first}' AND day < '{end}' \
             GROUP BY cluster, team, category, direction HAVING sum(bytes) > 0 \
             ORDER BY cluster, team, category, direction FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    let normalise = |lines: Vec<Vec<String>>| -> Vec<Vec<String>> {
        lines
            .into_iter()
            .map(|mut l| {
                // ClickHouse prints decimals without trailing zeros.
                for i in [6, 7] {
                    if l[i].contains('.') {
                        l[i] = l[i].trim_end_matches('0').trim_end_matches('.').to_owned();
                    }
                }
                l
            })
            .collect()
    };
    let views: Vec<Vec<String>> = views
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(normalise(csv_lines(&report)), normalise(views), "{report}");

    // Hand-computed figures (AWS list prices: cross-zone 0.01/GiB each
    // way, cross-region 0.02 out, internet 0.09 out, same zone free).
    let line = |team: &str, category: &str, direction: &str| -> Vec<String> {
        csv_lines(&report)
            .into_iter()
            .find(|l| l[2] == team && l[3] == category && l[4] == direction)
            .unwrap_or_else(|| panic!("no {team} {category} {direction} in {report}"))[5..9]
            .to_vec()
    };
    // 6 + 4 GiB of internet (the last second of the month counts, the
    // records just outside do not) + 0.5 GiB + 123,457 bytes of report at
    // 0.09: 0.945010348 USD.
    let internet = (10 * GIB + GIB / 2 + 123_457).to_string();
    let expected = [
        (
            "storefront",
            "cross_zone",
            "out",
            "3221225472",
            "3.000000",
            "0.03",
            "USD",
        ),
        (
            "storefront",
            "cross_zone",
            "in",
            "1073741824",
            "1.000000",
            "0.01",
            "USD",
        ),
        (
            "storefront",
            "internet",
            "out",
            &internet,
            "10.500115",
            "0.95",
            "USD",
        ),
        (
            "storefront",
            "same_zone",
            "in",
            "5368709120",
            "5.000000",
            "0.00",
            "USD",
        ),
        ("storefront", "unknown", "out", "999", "0.000001", "", ""),
        (
            "platform",
            "cross_region",
            "out",
            "2147483648",
            "2.000000",
            "0.04",
            "USD",
        ),
        (
            "platform",
            "cross_zone",
            "in",
            "3221225472",
            "3.000000",
            "0.03",
            "USD",
        ),
    ];
    for (team, category, direction, bytes, gib, cost, currency) in expected {
        assert_eq!(
            line(team, category, direction),
            [bytes, gib, cost, currency],
            "{team} {category} {direction}"
        );
    }

    // pyarrow reads the Parquet report with decimal types and the same
    // totals as the CSV.
    let out = dir.join("report.parquet");
    exported(
        &[
            &["--month", &month_arg, "--format", "parquet"][..],
            &from_clickhouse,
        ]
        .concat(),
        &out,
    );
    let csv_bytes: u64 = csv_lines(&report)
        .iter()
        .map(|l| l[5].parse::<u64>().unwrap())
        .sum();
    let read = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1])\n\
         print(t.schema.field('cost').type, t.schema.field('gib').type, t.schema.field('bytes').type)\n\
         print(sum(t.column('bytes').to_pylist()), sum(c for c in t.column('cost').to_pylist() if c is not None))\n\
         print(t.column_names)",
        &[out.to_str().unwrap()],
    );
    let cents: u64 = csv_lines(&report)
        .iter()
        .filter(|l| !l[7].is_empty())
        .map(|l| l[7].replace('.', "").parse::<u64>().unwrap())
        .sum();
    let expected_cost = format!("{}.{:02}", cents / 100, cents % 100);
    assert_eq!(
        read.lines().collect::<Vec<_>>()[..2],
        [
            "decimal128(38, 2) decimal128(38, 6) uint64".to_owned(),
            format!("{csv_bytes} {expected_cost}"),
        ],
        "{read}"
    );
}

/// Prices in force on each day, region pairs and an exact cost type:
/// hand-computed figures, equal from ClickHouse and Parquet and in
/// `cost_daily`; a later edit of any kind leaves the month's export as it
/// was, byte for byte; a cluster without a provider is reported, not
/// priced 0.
#[test]
fn each_day_is_priced_by_the_prices_then_in_force_and_later_edits_change_no_past_month() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (month, start, _) = priced_month();
    let day = |n: u32| start + (n - 1) * 86_400 + 43_200;
    let at = |mut r: FlowRecord, remote_region: &str, id: u32| {
        r.local_region = "us-east-1".into();
        r.remote_region = remote_region.into();
        r.conntrack_id = id;
        r
    };
    let mut orphan = at(
        flow(BATCH, NOBODY, Category::Internet, day(3), 7 * GIB, 0),
        "",
        7,
    );
    orphan.cluster = "orphan".into();
    let records = vec![
        // 10 GiB before the price change on the 16th, 10 GiB after.
        at(
            flow(WEB, NOBODY, Category::Internet, day(10), 10 * GIB, 0),
            "",
            1,
        ),
        at(
            flow(WEB, NOBODY, Category::Internet, day(20), 10 * GIB, 0),
            "",
            2,
        ),
        // A region pair with its own price, and one at the default.
        at(
            flow(DB, NOBODY, Category::CrossRegion, day(5), 5 * GIB, 0),
            "eu-west-2",
            3,
        ),
        at(
            flow(DB, NOBODY, Category::CrossRegion, day(5), 3 * GIB, 0),
            "us-east-2",
            4,
        ),
        // An AWS customer's public address in the region: 0.01 each way;
        // S3 in the region: free.
        at(
            flow(WEB, NOBODY, Category::PublicInRegion, day(7), 2 * GIB, GIB),
            "us-east-1",
            8,
        ),
        at(
            flow(DB, NOBODY, Category::CloudService, day(7), 10 * GIB, 0),
            "us-east-1",
            9,
        ),
        // 8 PiB in one day: beyond what Decimal(38, 24) holds.
        at(
            flow(REPORT, NOBODY, Category::CrossRegion, day(6), 1 << 53, 0),
            "eu-west-2",
            5,
        ),
        orphan,
    ];
    let (database, parquet, _) = loaded_with(ch, "dated", &records);
    let dir = parquet.parent().unwrap().to_owned();
    let sixteenth = format!("{month}-16");
    ch.query(&format!(
        "INSERT INTO {database}.price_list (provider, region, remote_region, category, direction, \
         valid_from, price_per_gib, currency) VALUES \
         ('aws', '*', '*', 'internet', 'out', '{sixteenth}', 0.08, 'USD'), \
         ('aws', 'us-east-1', 'us-east-2', 'cross_region', 'out', '1970-01-01', 0.01, 'USD')"
    ))
    .unwrap();
    let prices = dir.join("prices.csv");
    let price_file = format!(
        "{}aws,*,*,internet,out,{sixteenth},0,0.08,USD\n\
         aws,us-east-1,us-east-2,cross_region,out,1970-01-01,0,0.01,USD\n",
        tollgate::export::prices::DEFAULTS_CSV
    );
    std::fs::write(&prices, &price_file).unwrap();

    let month_arg = month.to_string();
    let common = ["--month", &month_arg, "--by", "workload", "--cluster", "c1"];
    let from_clickhouse = ["--clickhouse", ch.url(), "--database", &database];
    let (parquet_arg, prices_arg) = (parquet.to_str().unwrap(), prices.to_str().unwrap());
    let from_parquet = [
        "--parquet",
        parquet_arg,
        "--provider",
        "aws",
        "--prices",
        prices_arg,
    ];
    let clickhouse_report = exported(
        &[&common[..], &from_clickhouse].concat(),
        &dir.join("a.csv"),
    );
    let parquet_report = exported(&[&common[..], &from_parquet].concat(), &dir.join("b.csv"));
    let report = String::from_utf8(clickhouse_report.clone()).unwrap();
    assert_eq!(report, String::from_utf8(parquet_report.clone()).unwrap());
    let cost_in = |workload: &str, category: &str, direction: &str| -> String {
        csv_lines(&report)
            .into_iter()
            .find(|l| l[5] == workload && l[6] == category && l[7] == direction)
            .unwrap_or_else(|| panic!("no {workload} {category} {direction} in {report}"))[10]
            .clone()
    };
    let cost = |workload: &str, category: &str| cost_in(workload, category, "out");
    // 10 GiB at 0.09 + 10 GiB at 0.08 (the current price alone: 1.60).
    assert_eq!(cost("web", "internet"), "1.70", "{report}");
    // 5 GiB to eu-west-2 at the default 0.02 + 3 GiB to us-east-2 at 0.01.
    assert_eq!(cost("db", "cross_region"), "0.13", "{report}");
    // 2^53 bytes = 2^23 GiB at 0.02.
    assert_eq!(cost("report", "cross_region"), "167772.16", "{report}");
    assert_eq!(cost("web", "public_in_region"), "0.02", "{report}");
    assert_eq!(cost_in("web", "public_in_region", "in"), "0.01", "{report}");
    assert_eq!(cost("db", "cloud_service"), "0.00", "{report}");

    // cost_daily prices the same days the same, exactly.
    let view = ch
        .query(&format!(
            "SELECT workload, toString(sum(cost)) FROM {database}.cost_daily \
             WHERE cluster = 'c1' AND direction = 'out' AND bytes > 0 \
             GROUP BY workload ORDER BY workload FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(view, "db,0.13\nreport,167772.16\nweb,1.72\n");

    // The cluster without a provider: no cost, listed with its reason,
    // and the export warns.
    let unpriced = ch
        .query(&format!(
            "SELECT cluster, category, bytes, reason, cost IS NULL FROM {database}.unpriced_daily \
             JOIN {database}.cost_daily USING (day, cluster, team, namespace, workload_kind, \
             workload, region, remote_region, category, direction, bytes) FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(
        unpriced,
        format!(
            "orphan,internet,{},cluster orphan has no provider,1\n",
            7 * GIB
        )
    );
    let all = export(
        &[
            &[
                "--month",
                &month_arg,
                "--out",
                dir.join("all.csv").to_str().unwrap(),
            ][..],
            &from_clickhouse,
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&all.stderr);
    assert!(all.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {} bytes have no price (cluster \"orphan\" has no provider)",
            7 * GIB
        )),
        "{stderr}"
    );

    // Edits after the month, each way the docs allow: a row in the old
    // prices table, an undated row in the price list, a dated row in the
    // file. They are in force now, and the month's export is unchanged.
    ch.query(&format!(
        "INSERT INTO {database}.prices (provider, region, category, direction, price_per_gib, \
         currency) VALUES ('aws', '*', 'internet', 'out', 0.05, 'USD')"
    ))
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {database}.price_list (provider, region, category, direction, price_per_gib, \
         currency) VALUES ('aws', '*', 'cross_region', 'out', 0.5, 'USD')"
    ))
    .unwrap();
    let today = ch
        .query("SELECT toDate(now(), 'UTC') FORMAT TSVRaw")
        .unwrap()
        .trim()
        .to_owned();
    std::fs::write(
        &prices,
        format!(
            "{price_file}aws,*,*,internet,out,{today},0,0.05,USD\n\
             aws,*,*,cross_region,out,{today},0,0.5,USD\n"
        ),
    )
    .unwrap();
    let in_force = ch
        .query(&format!(
            "SELECT category, toString(price_per_gib) FROM {database}.current_prices \
             WHERE provider = 'aws' AND region = '*' AND direction = 'out' \
             AND category IN ('internet', 'cross_region') ORDER BY category FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(in_force, "cross_region,0.5\ninternet,0.05\n");
    let again = exported(
        &[&common[..], &from_clickhouse].concat(),
        &dir.join("a2.csv"),
    );
    assert!(
        again == clickhouse_report,
        "{}",
        String::from_utf8_lossy(&again)
    );
    let again = exported(&[&common[..], &from_parquet].concat(), &dir.join("b2.csv"));
    assert!(
        again == parquet_report,
        "{}",
        String::from_utf8_lossy(&again)
    );
}

/// Monthly tiers with a free allowance, shared by the clusters of one
/// account and allocated to workloads pro rata: hand-computed figures
/// (docs/metering.md's worked example), equal from ClickHouse and Parquet
/// and in `cost_daily`; the cents of an account's lines add up to its
/// tiered total; one cluster's export still counts the account's other
/// clusters.
#[test]
fn tiers_and_free_allowance_are_shared_per_account_and_allocated_to_the_cent() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (month, start, _) = priced_month();
    let day = |n: u32| start + (n - 1) * 86_400 + 43_200;
    let mut id = 0;
    let mut at = |cluster: &str, local: (&str, &str, &str), on: u32, gib: u64| {
        let mut r = flow(local, NOBODY, Category::Internet, day(on), gib * GIB, 0);
        r.cluster = cluster.into();
        id += 1;
        r.conntrack_id = id;
        r
    };
    let records = vec![
        // Account acct-t: 60 GiB free on the 3rd; 40 free and 20 at 0.09
        // on the 10th (1.80); 30 at the 16th's 0.08 on the 20th (2.40).
        at("tier", WEB, 3, 60),
        at("tier2", DB, 10, 60),
        at("tier", WEB, 20, 30),
        // An account of its own: 100 free and 50 at 0.08 = 4.00 over three
        // equal workloads.
        at("split", (BATCH.0, "x", BATCH.2), 25, 50),
        at("split", (BATCH.0, "y", BATCH.2), 25, 50),
        at("split", (BATCH.0, "z", BATCH.2), 25, 50),
    ];
    let (database, parquet, _) = loaded_with(ch, "tiers", &records);
    let dir = parquet.parent().unwrap().to_owned();
    let (first, sixteenth) = (format!("{month}-01"), format!("{month}-16"));
    let tiers = format!(
        "aws,*,*,internet,out,{first},0,0,USD\n\
         aws,*,*,internet,out,{first},100,0.09,USD\n\
         aws,*,*,internet,out,{sixteenth},0,0,USD\n\
         aws,*,*,internet,out,{sixteenth},100,0.08,USD\n"
    );
    let values: Vec<String> = tiers
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!(
                "('{}', '{}', '{}', '{}', '{}', '{}', {}, {}, '{}')",
                f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]
            )
        })
        .collect();
    ch.query(&format!(
        "INSERT INTO {database}.price_list (provider, region, remote_region, category, direction, \
         valid_from, tier_from_gib, price_per_gib, currency) VALUES {}",
        values.join(", ")
    ))
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES \
         ('tier', 'aws'), ('tier2', 'aws'), ('split', 'aws'), ('december', 'aws')"
    ))
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {database}.cluster_accounts (cluster, account, valid_from) VALUES \
         ('tier', 'acct-t', '{first}'), ('tier2', 'acct-t', '{first}')"
    ))
    .unwrap();
    let prices = dir.join("prices.csv");
    std::fs::write(
        &prices,
        format!("{}{tiers}", tollgate::export::prices::DEFAULTS_CSV),
    )
    .unwrap();
    let accounts = dir.join("accounts.csv");
    std::fs::write(
        &accounts,
        format!("cluster,account,valid_from\ntier,acct-t,{first}\ntier2,acct-t,{first}\n"),
    )
    .unwrap();

    let month_arg = month.to_string();
    let from_clickhouse = ["--clickhouse", ch.url(), "--database", &database];
    let from_parquet = [
        "--parquet",
        parquet.to_str().unwrap(),
        "--provider",
        "aws",
        "--prices",
        prices.to_str().unwrap(),
        "--accounts",
        accounts.to_str().unwrap(),
    ];
    let report = |source: &[&str], extra: &[&str], name: &str| -> String {
        let args = [
            &["--month", &month_arg, "--by", "workload"][..],
            extra,
            source,
        ]
        .concat();
        String::from_utf8(exported(&args, &dir.join(name))).unwrap()
    };
    let clickhouse_report = report(&from_clickhouse, &[], "a.csv");
    assert_eq!(clickhouse_report, report(&from_parquet, &[], "b.csv"));
    let lines: Vec<String> = csv_lines(&clickhouse_report)
        .into_iter()
        .map(|l| [&l[1][..], &l[5], &l[10], &l[12], &l[13]].join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "split x 1.34 split tiered",
            "split y 1.33 split tiered",
            "split z 1.33 split tiered",
            "tier web 2.52 acct-t tiered",
            "tier2 db 1.68 acct-t tiered",
        ],
        "{clickhouse_report}"
    );
    // One cluster of the shared account: its share of the account's tiers.
    for (source, name) in [
        (&from_clickhouse[..], "a2.csv"),
        (&from_parquet[..], "b2.csv"),
    ] {
        let only = report(source, &["--cluster", "tier2"], name);
        assert_eq!(
            csv_lines(&only)
                .iter()
                .map(|l| l[10].as_str())
                .collect::<Vec<_>>(),
            ["1.68"],
            "{only}"
        );
    }
    // cost_daily: each row's exact share of its account's month.
    let view = ch
        .query(&format!(
            "SELECT cluster, workload, any(account), any(pricing), toString(sum(cost)), \
             toString(any(price_per_gib)) FROM {database}.cost_daily \
             WHERE bytes > 0 AND category = 'internet' AND direction = 'out' \
             GROUP BY cluster, workload ORDER BY cluster, workload FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(
        view,
        "split,x,split,tiered,1.333333333333333333333333333333333333333,0.026666666\n\
         split,y,split,tiered,1.333333333333333333333333333333333333333,0.026666666\n\
         split,z,split,tiered,1.333333333333333333333333333333333333333,0.026666666\n\
         tier,web,acct-t,tiered,2.52,0.028\n\
         tier2,db,acct-t,tiered,1.68,0.028\n"
    );
    // A day of December 2026 (straight into the daily rollup: a loader
    // refuses records from the future), priced by the shipped tiers: 100
    // GiB free, 50 at 0.09.
    ch.query(&format!(
        "INSERT INTO {database}.flows_1d (period, cluster, local_team, local_namespace, \
         local_workload_kind, local_workload, category, bytes_sent) VALUES \
         ('2026-12-15', 'december', 'storefront', 'shop', 'Deployment', 'web', 'internet', {})",
        150 * GIB
    ))
    .unwrap();
    let shipped = ch
        .query(&format!(
            "SELECT pricing, toString(sum(cost)) FROM {database}.cost_daily \
             WHERE cluster = 'december' AND direction = 'out' GROUP BY pricing FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(shipped, "tiered,4.5\n");
}

/// A cluster behind a NAT gateway pays its processing, both ways, on the
/// connections its endpoints opened to public addresses, from the day it
/// is declared: hand-computed, equal from ClickHouse and Parquet and in
/// `cost_daily`.
#[test]
fn a_nat_gateway_charges_processing_on_connections_opened_inside() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (month, start, _) = priced_month();
    let day = |n: u32| start + (n - 1) * 86_400 + 43_200;
    let mut id = 0;
    let mut at = |category, on: u32, sent_gib: u64, received_gib: u64, opened: Initiator| {
        let mut r = flow(
            WEB,
            NOBODY,
            category,
            day(on),
            sent_gib * GIB,
            received_gib * GIB,
        );
        r.cluster = "nat".into();
        r.initiator = opened;
        id += 1;
        r.conntrack_id = id;
        r
    };
    let records = vec![
        // Before the gateway (declared from the 10th).
        at(Category::Internet, 5, 1, 0, Initiator::Local),
        // Through it: 10 + 4 GiB out, 20 + 2 GiB in.
        at(Category::Internet, 12, 10, 20, Initiator::Local),
        at(Category::CloudService, 12, 4, 2, Initiator::Local),
        // Not through it: opened from outside (a load balancer), and
        // cross-zone.
        at(Category::Internet, 12, 5, 1, Initiator::Remote),
        at(Category::CrossZone, 12, 3, 0, Initiator::Local),
    ];
    let (database, parquet, _) = loaded_with(ch, "nat", &records);
    let dir = parquet.parent().unwrap().to_owned();
    let tenth = format!("{month}-10");
    ch.query(&format!(
        "INSERT INTO {database}.clusters (cluster, provider) VALUES ('nat', 'aws')"
    ))
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {database}.cluster_nat (cluster, nat, valid_from) VALUES ('nat', true, '{tenth}')"
    ))
    .unwrap();
    let nat = dir.join("nat.csv");
    std::fs::write(&nat, format!("cluster,nat,valid_from\nnat,true,{tenth}\n")).unwrap();

    let month_arg = month.to_string();
    let common = ["--month", &month_arg, "--cluster", "nat"];
    let from_clickhouse = ["--clickhouse", ch.url(), "--database", &database];
    let from_parquet = [
        "--parquet",
        parquet.to_str().unwrap(),
        "--provider",
        "aws",
        "--nat",
        nat.to_str().unwrap(),
    ];
    let report = String::from_utf8(exported(
        &[&common[..], &from_clickhouse].concat(),
        &dir.join("a.csv"),
    ))
    .unwrap();
    let parquet_report = exported(&[&common[..], &from_parquet].concat(), &dir.join("b.csv"));
    assert_eq!(report, String::from_utf8(parquet_report).unwrap());
    let lines: Vec<String> = csv_lines(&report)
        .into_iter()
        .map(|l| [&l[3][..], &l[4], &l[5], &l[7], &l[10]].join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("cloud_service in {} 0.00 flat", 2 * GIB),
            format!("cloud_service out {} 0.00 flat", 4 * GIB),
            format!("cross_zone out {} 0.03 flat", 3 * GIB),
            format!("internet in {} 0.00 flat", 21 * GIB),
            format!("internet out {} 1.44 flat", 16 * GIB),
            // 22 GiB and 14 GiB at 0.045.
            format!("nat_gateway in {} 0.99 flat", 22 * GIB),
            format!("nat_gateway out {} 0.63 flat", 14 * GIB),
        ],
        "{report}"
    );
    let view = ch
        .query(&format!(
            "SELECT direction, sum(bytes), toString(sum(cost)) FROM {database}.cost_daily \
             WHERE category = 'nat_gateway' GROUP BY direction ORDER BY direction FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(
        view,
        format!("in,{},0.99\nout,{},0.63\n", 22 * GIB, 14 * GIB)
    );
}

/// Each record is priced by its node's provider (`local_provider`), else
/// by its cluster's (`clusters`, or `--provider` for files); files of the
/// previous release, without the column, are read and priced by that
/// fallback, alone or mixed with newer files.
#[test]
fn a_records_provider_prices_it_before_its_clusters() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (month, start, _) = priced_month();
    let mut id = 0;
    let mut at = |cluster: &str, local, provider: &str, sent_gib: u64| {
        let mut r = flow(
            local,
            NOBODY,
            Category::Internet,
            start + 2 * 86_400 + 43_200,
            sent_gib * GIB,
            0,
        );
        r.cluster = cluster.into();
        r.local_provider = provider.into();
        id += 1;
        r.conntrack_id = id;
        r
    };
    let records = vec![
        // `clusters` says c1 runs on AWS: a record from a GCP node of it
        // is priced as GCP (0.12), one naming no provider as AWS (0.09).
        at("c1", WEB, "gcp", 2),
        at("c1", WEB, "", 1),
        // Not in `clusters`: its records say AWS.
        at("newcomer", DB, "aws", 7),
        // Neither: reported, never priced 0.
        at("orphan", BATCH, "", 3),
    ];
    let (database, parquet, _) = loaded_with(ch, "provider", &records);
    let dir = parquet.parent().unwrap().to_owned();
    let month_arg = month.to_string();
    let run = |source: &[&str], out: &str| {
        let out = dir.join(out);
        let output = export(
            &[
                &["--month", &month_arg, "--out", out.to_str().unwrap()],
                source,
            ]
            .concat(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{source:?}: {stderr}");
        (std::fs::read_to_string(out).unwrap(), stderr)
    };
    let summary = |report: &str| -> Vec<String> {
        csv_lines(report)
            .into_iter()
            .map(|l| [&l[1][..], &l[3], &l[4], &l[5], &l[7], &l[10]].join(" "))
            .collect()
    };
    let unpriced = |cluster: &str, gib: u64| {
        format!(
            "{} bytes have no price (cluster \"{cluster}\" has no provider)",
            gib * GIB
        )
    };

    let (report, warning) = run(
        &["--clickhouse", ch.url(), "--database", &database],
        "clickhouse.csv",
    );
    assert_eq!(
        summary(&report),
        [
            format!("c1 internet out {} 0.33 flat", 3 * GIB),
            format!("newcomer internet out {} 0.63 flat", 7 * GIB),
            format!("orphan internet out {}  unpriced", 3 * GIB),
        ],
        "{report}"
    );
    assert!(warning.contains(&unpriced("orphan", 3)), "{warning}");
    let parquet_arg = parquet.to_str().unwrap();
    let (files_report, _) = run(&["--parquet", parquet_arg], "parquet.csv");
    // Without --provider the files have no fallback for c1's record that
    // names none; the others are priced by their records.
    assert_eq!(
        summary(&files_report)[1..],
        summary(&report)[1..],
        "{files_report}"
    );
    // With --provider aws, as `clusters` says for c1: byte for byte.
    for cluster in ["c1", "newcomer"] {
        let (report, _) = run(
            &[
                "--cluster",
                cluster,
                "--clickhouse",
                ch.url(),
                "--database",
                &database,
            ],
            "clickhouse-one.csv",
        );
        let (files_report, warning) = run(
            &[
                "--cluster",
                cluster,
                "--parquet",
                parquet_arg,
                "--provider",
                "aws",
            ],
            "parquet-one.csv",
        );
        assert_eq!(files_report, report);
        assert!(!warning.contains("no price"), "{warning}");
    }
    let view = ch
        .query(&format!(
            "SELECT cluster, provider, record_provider, bytes DIV {GIB}, toString(cost) \
             FROM {database}.cost_daily WHERE bytes > 0 ORDER BY ALL FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    assert_eq!(
        view,
        "c1,aws,,1,0.09\nc1,gcp,gcp,2,0.24\nnewcomer,aws,aws,7,0.63\norphan,,,3,\\N\n"
    );

    // The previous release's files: the same records without the column.
    let old = dir.join("old");
    let rewritten = python(
        "import pathlib, sys, pyarrow.parquet as pq\n\
         src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n\
         files = sorted(src.rglob('*.parquet'))\n\
         for f in files:\n\
         \x20   out = dst / f.relative_to(src)\n\
         \x20   out.parent.mkdir(parents=True, exist_ok=True)\n\
         \x20   pq.write_table(pq.ParquetFile(f).read().drop_columns(['local_provider']), out, compression='zstd')\n\
         print(len(files))\n",
        &[parquet_arg, old.to_str().unwrap()],
    );
    assert_eq!(rewritten.trim(), "1", "one batch, one hour: one file");
    let old_arg = old.to_str().unwrap();
    let (old_report, warning) = run(&["--parquet", old_arg, "--provider", "aws"], "old.csv");
    assert_eq!(
        summary(&old_report),
        [
            format!("c1 internet out {} 0.27 flat", 3 * GIB),
            format!("newcomer internet out {} 0.63 flat", 7 * GIB),
            format!("orphan internet out {} 0.27 flat", 3 * GIB),
        ],
        "{old_report}"
    );
    assert!(!warning.contains("no price"), "{warning}");
    let (_, warning) = run(&["--parquet", old_arg], "old-unpriced.csv");
    for (cluster, gib) in [("c1", 3), ("newcomer", 7), ("orphan", 3)] {
        assert!(warning.contains(&unpriced(cluster, gib)), "{warning}");
    }

    // A directory holding both (the old file older, which ClickHouse would
    // infer the columns from): the views declare the columns, and the old
    // file's rows read without a provider.
    let new_file = walk_parquet(&parquet);
    let old_file = walk_parquet(&old);
    std::fs::copy(&new_file, old_file.with_file_name("0-new.parquet")).unwrap();
    // ClickHouse infers a glob's columns from its oldest file unless told
    // to take the union.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old_file)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let files_db = ch.fresh_database("provider_files");
    ch.query(&format!("CREATE DATABASE {files_db}")).unwrap();
    let views =
        std::fs::read_to_string(tollgate_tests::repo_root().join("sql/parquet/views.sql")).unwrap();
    ch.run_script(&views, &[("database", &files_db), ("param_dir", old_arg)])
        .unwrap();
    let by_provider = ch
        .query_with(
            &format!(
                "SELECT record_provider, sum(bytes) DIV {GIB} FROM metering_daily \
                 WHERE direction = 'out' GROUP BY ALL ORDER BY ALL FORMAT CSV"
            ),
            &[("database", &files_db)],
        )
        .unwrap()
        .replace('"', "");
    // Old: 2 + 1 + 7 + 3 GiB without; new: 1 + 3 without, 7 aws, 2 gcp.
    assert_eq!(by_provider, ",17\naws,7\ngcp,2\n");
}

/// The one `.parquet` file under `dir`.
fn walk_parquet(dir: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = tollgate_tests::files_under(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[test]
fn shipped_prices_equal_the_migrated_price_list() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let database = ch.fresh_database("prices");
    migrate(ch.url(), &database);
    let table = ch
        .query(&format!(
            "SELECT provider, region, remote_region, category, direction, toString(valid_from), \
             tier_from_gib, toString(price_per_gib), currency FROM {database}.price_versions \
             ORDER BY ALL FORMAT CSV"
        ))
        .unwrap()
        .replace('"', "");
    let mut table: Vec<String> = table.lines().map(str::to_owned).collect();
    let mut shipped: Vec<String> =
        tollgate::export::prices::parse_csv("shipped", tollgate::export::prices::DEFAULTS_CSV)
            .unwrap()
            .into_iter()
            .map(|p| {
                let price = format!(
                    "{}.{:09}",
                    p.nanos_per_gib / 1_000_000_000,
                    p.nanos_per_gib % 1_000_000_000
                );
                let price = price.trim_end_matches('0').trim_end_matches('.');
                format!(
                    "{},{},{},{},{},{},{},{price},{}",
                    p.provider,
                    p.region,
                    p.remote_region,
                    p.category,
                    p.direction,
                    p.valid_from,
                    p.tier_from_gib,
                    p.currency
                )
            })
            .collect();
    table.sort();
    shipped.sort();
    assert_eq!(table, shipped);
}

#[test]
fn empty_months_future_months_and_bad_flags_are_refused_clearly() {
    let Some(ch) = clickhouse::require("export") else {
        return;
    };
    let (database, parquet, _) = loaded(ch, "refusals");
    let dir = parquet.parent().unwrap().to_owned();
    let out = dir.join("never.csv");
    let out_arg = out.to_str().unwrap();
    let parquet_arg = parquet.to_str().unwrap();
    let clickhouse_flags = ["--clickhouse", ch.url(), "--database", &database];

    for source in [
        &clickhouse_flags[..],
        &["--parquet", parquet_arg, "--provider", "aws"],
    ] {
        let output = export(&[&["--month", "2020-01", "--out", out_arg][..], source].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no metering data for 2020-01"), "{stderr}");
        assert!(!out.exists(), "nothing is written for an empty month");
        // A cluster without records is as empty as a month without any.
        let last_month = priced_month().0.to_string();
        let args = [
            "--month",
            &last_month,
            "--cluster",
            "other",
            "--out",
            out_arg,
        ];
        let output = export(&[&args[..], source].concat());
        assert_eq!(output.status.code(), Some(1), "--cluster other");
        assert!(!out.exists());
    }

    let prices = dir.join("prices.csv");
    std::fs::write(
        &prices,
        "provider,region,category,direction,price_per_gib,currency\naws,*,internet,out,cheap,USD\n",
    )
    .unwrap();
    let prices_arg = prices.to_str().unwrap();
    // Two years on: in the future whatever the day.
    let future = format!("{}-01", 1972 + unix_now() / 31_556_952);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--month", &future], "in the future"),
        (vec!["--month", "2026-13"], "YYYY-MM"),
        (vec!["--month", "2026-10", "--by", "pod"], "--by"),
        (vec!["--month", "2026-10", "--format", "xlsx"], "--format"),
        (
            vec!["--month", "2026-10"],
            "--clickhouse URL or --parquet DIR",
        ),
        (
            vec![
                "--month",
                "2026-10",
                "--parquet",
                parquet_arg,
                "--provider",
                "oracle",
            ],
            "oracle",
        ),
        (
            vec![
                "--month",
                "2026-10",
                "--parquet",
                parquet_arg,
                "--provider",
                "aws",
                "--prices",
                prices_arg,
            ],
            ":2: price \"cheap\"",
        ),
        (vec!["--month", "2026-10", "--provider", "aws"], "--parquet"),
        (
            vec![
                "--month",
                "2026-10",
                "--parquet",
                parquet_arg,
                "--clickhouse",
                ch.url(),
            ],
            "cannot be used with",
        ),
    ];
    for (args, says) in cases {
        let output = export(&[&args[..], &["--out", out_arg]].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert!(!out.exists());
    }
}
