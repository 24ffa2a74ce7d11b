//! The legacy AWS Cost and Usage Report, CSV (`.csv` or `.csv.gz`): read
//! record by record into one reused record, its columns found by their
//! header names (their order varies from report to report, and the many
//! other columns, `resourceTags/user:*` among them, are skipped). What
//! counts as network transfer is [`aws`]'s table.
//!
//! Line 1 is the first record after the header.

use std::path::Path;

use chrono::{NaiveDate, Utc};

use super::aws::{self, Fields, Items, Number};
use super::{next_record, open_text, BillError, Expect, FileSummary, LineItem};

/// Reads the CUR CSV `file`, handing each network line item to `on_item`.
pub fn read(
    file: &Path,
    expect: Expect<'_>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let columns = &aws::CSV;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open_text(file)?);
    let header = reader
        .headers()
        .map_err(|e| BillError::new(file, 0, "-", e))?;
    // A byte order mark would stick to the first name.
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
    };
    let required = |name: &str| {
        find(name).ok_or_else(|| {
            BillError::new(
                file,
                0,
                name,
                "no such column in the header: not an AWS Cost and Usage Report, or one \
                 without it",
            )
        })
    };
    let line_item_type = required(columns.line_item_type)?;
    let account = required(columns.account)?;
    let start = required(columns.start)?;
    let usage_type = required(columns.usage_type)?;
    let operation = required(columns.operation)?;
    let resource = required(columns.resource)?;
    let amount = required(columns.amount)?;
    let currency = required(columns.currency)?;
    let cost = required(columns.cost)?;
    let unit = required(columns.unit)?;
    let product_code = find(columns.product_code);
    let mut items = Items::new(expect, columns);
    let mut record = csv::StringRecord::new();
    let mut line = 0;
    while next_record(&mut reader, &mut record, file, &mut line)? {
        let field = |at: usize| record.get(at).unwrap_or("");
        let fields = Fields {
            line_item_type: field(line_item_type),
            product_code: product_code.map_or("", field),
            usage_type: field(usage_type),
            operation: field(operation),
            resource: field(resource),
            account: field(account),
            currency: field(currency),
            unit: field(unit),
            amount: Number::Text(field(amount)),
            cost: Number::Text(field(cost)),
        };
        items.line(line, &fields, || day(field(start)), on_item)?;
    }
    Ok(items.finish())
}

/// The UTC day of `2026-10-01T00:00:00Z` (ISO 8601, as the report writes
/// times; another offset is converted to UTC).
fn day(text: &str) -> Result<NaiveDate, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc).date_naive())
        .map_err(|_| format!("{text:?} is not a time like 2026-10-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use std::io::Write;

    use super::*;
    use crate::reconcile::bill::aws::testing::{item, read_all, read_error, Item};
    use crate::reconcile::bill::{Billed, Direction};
    use crate::test_support::TempDir;

    const CROSS_ZONE_OUT: (Billed, Direction) = (Billed::CrossZone, Direction::Out);
    const CROSS_ZONE_IN: (Billed, Direction) = (Billed::CrossZone, Direction::In);
    const INTERNET_OUT: (Billed, Direction) = (Billed::Internet, Direction::Out);
    const CROSS_REGION_OUT: (Billed, Direction) = (Billed::CrossRegion, Direction::Out);
    const CROSS_REGION_IN: (Billed, Direction) = (Billed::CrossRegion, Direction::In);
    const NAT: (Billed, Direction) = (Billed::NatGateway, Direction::Out);

    const NAT_GATEWAY: &str = "arn:aws:ec2:us-east-1:111122223333:natgateway/nat-0abc12345def67890";

    /// A day of October 2026 in two regions, us-east-1 and us-east-2, in
    /// the legacy report's columns.
    const OCTOBER: &str = "\
identity/LineItemId,identity/TimeInterval,bill/PayerAccountId,lineItem/LineItemType,lineItem/UsageAccountId,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/UsageType,lineItem/Operation,lineItem/AvailabilityZone,lineItem/ResourceId,lineItem/UsageAmount,lineItem/CurrencyCode,lineItem/UnblendedRate,lineItem/UnblendedCost,lineItem/LineItemDescription,pricing/unit,product/region,resourceTags/user:team
qu4ztdo5ifjyiyl3ugg6mq4mka7jxcn2vbvoa3gvxz2zsxqbmfqa,2026-10-01T00:00:00Z/2026-10-01T01:00:00Z,999988887777,Usage,111122223333,2026-10-01T00:00:00Z,2026-10-01T01:00:00Z,AmazonEC2,BoxUsage:m5.xlarge,RunInstances,us-east-1a,i-0a1b2c3d4e5f60001,1.0000000000,USD,0.1920000000,0.1920000000,$0.192 per On Demand Linux m5.xlarge Instance Hour,Hrs,us-east-1,payments
kd2ltqgd7pcofvnyhbmsrzmevwbwvq5ywltpsxwmksaacbx6ws3q,2026-10-01T00:00:00Z/2026-10-01T01:00:00Z,999988887777,Usage,111122223333,2026-10-01T00:00:00Z,2026-10-01T01:00:00Z,AmazonEC2,DataTransfer-Regional-Bytes,InterZone-Out,us-east-1a,i-0a1b2c3d4e5f60001,12.5000000000,USD,0.0100000000,0.1250000000,$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using elastic IPs or ELB,GB,us-east-1,payments
2f5n7mnlhzqmv3jckuxq6dkxiab4hvi3w3bbflkrf5dygb3cgz6q,2026-10-01T00:00:00Z/2026-10-01T01:00:00Z,999988887777,Usage,111122223333,2026-10-01T00:00:00Z,2026-10-01T01:00:00Z,AmazonEC2,DataTransfer-Regional-Bytes,InterZone-In,us-east-1b,i-0a1b2c3d4e5f60002,12.5000000000,USD,0.0100000000,0.1250000000,$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using elastic IPs or ELB,GB,us-east-1,search
n7f3p4nd3l3oq6ynxq2sptvrmtnmnm7cn5gxbsbj4f4ghc7ikiva,2026-10-02T00:00:00Z/2026-10-02T01:00:00Z,999988887777,Usage,111122223333,2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,AmazonEC2,DataTransfer-Out-Bytes,RunInstances,,i-0a1b2c3d4e5f60001,1024.0000000000,USD,0.0900000000,92.1600000000,$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier,GB,us-east-1,payments
rpcmbhpvkuj5lxqqzhjbnc6z7yoayv5cn5ke3aywf6fd6wbdqfkq,2026-10-02T00:00:00Z/2026-10-02T01:00:00Z,999988887777,Usage,111122223333,2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,AmazonEC2,DataTransfer-Out-Bytes,RunInstances,,i-0a1b2c3d4e5f60002,512.0000000000,USD,0.0850000000,43.5200000000,$0.085 per GB - next 40 TB / month data transfer out,GB,us-east-1,search
fq3wrs4ii2cbkzscvkskd5qtkuoogbcv36fosbiw6kqpi7qihx2q,2026-10-03T05:00:00Z/2026-10-03T06:00:00Z,999988887777,Usage,111122223333,2026-10-03T05:00:00Z,2026-10-03T06:00:00Z,AmazonEC2,USE1-USE2-AWS-Out-Bytes,RunInstances,,i-0a1b2c3d4e5f60002,100.0000000000,USD,0.0100000000,1.0000000000,$0.010 per GB - US East (Northern Virginia) data transfer to US East (Ohio),GB,us-east-1,search
p6cc4r2hryvxlyqoyzqvm5vd6hamqjzz6ilmqnnm3b3hiq2hg4aa,2026-10-03T05:00:00Z/2026-10-03T06:00:00Z,999988887777,Usage,111122223333,2026-10-03T05:00:00Z,2026-10-03T06:00:00Z,AmazonEC2,USE2-USE1-AWS-In-Bytes,RunInstances,,i-0f9e8d7c6b5a40003,100.0000000000,USD,0.0000000000,0.0000000000,$0.00 per GB - US East (Ohio) data transfer from US East (Northern Virginia),GB,us-east-2,search
s4xkb2wdbjb7mw6dh5ceuh3vfqdbq4hbojkm2u3jzqfh4rvozx2a,2026-10-04T00:00:00Z/2026-10-04T01:00:00Z,999988887777,Usage,111122223333,2026-10-04T00:00:00Z,2026-10-04T01:00:00Z,AmazonEC2,USE2-DataTransfer-Regional-Bytes,InterZone-In,us-east-2a,i-0f9e8d7c6b5a40003,3.2500000000,USD,0.0100000000,0.0325000000,$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using elastic IPs or ELB,GB,us-east-2,search
c2jnmb3jfp3qqkb5axhxmcmvjm6uzdpkf3xkrr3qe7h3rq4d4cka,2026-10-04T00:00:00Z/2026-10-04T01:00:00Z,999988887777,Usage,444455556666,2026-10-04T00:00:00Z,2026-10-04T01:00:00Z,AmazonEC2,USE2-DataTransfer-xAZ-Out-Bytes,InterZone-Out,us-east-2b,i-0f9e8d7c6b5a40004,0.5000000000,USD,0.0100000000,0.0050000000,$0.010 per GB - cross-AZ data transfer out,GB,us-east-2,
hj5nwf3opo5n6nxxiwfbhzbqy3fy2xdj4ffhpk7j2r5lwkbrfuwq,2026-10-05T00:00:00Z/2026-10-05T01:00:00Z,999988887777,Usage,111122223333,2026-10-05T00:00:00Z,2026-10-05T01:00:00Z,AmazonEC2,NatGateway-Bytes,NatGateway,us-east-1a,arn:aws:ec2:us-east-1:111122223333:natgateway/nat-0abc12345def67890,250.7500000000,USD,0.0450000000,11.2837500000,$0.045 per GB Data Processed by NAT Gateways,GB,us-east-1,platform
b5zr6mvyqwumwqz6pzj2v5a3ggcoxbyy3yyb3kk5c6yjy4yeeoyq,2026-10-05T00:00:00Z/2026-10-06T00:00:00Z,999988887777,Usage,111122223333,2026-10-05T00:00:00Z,2026-10-06T00:00:00Z,AmazonEC2,NatGateway-Hours,NatGateway,us-east-1a,arn:aws:ec2:us-east-1:111122223333:natgateway/nat-0abc12345def67890,24.0000000000,USD,0.0450000000,1.0800000000,$0.045 per NAT Gateway Hour,Hrs,us-east-1,platform
y3tyd6bbbo3gkxb5j6k3oyzh5pnq3qsd5qovqm4vv4gkyr6tqzuq,2026-10-04T00:00:00Z/2026-10-05T00:00:00Z,999988887777,Usage,111122223333,2026-10-04T00:00:00Z,2026-10-05T00:00:00Z,AmazonEC2,USE2-BoxUsage:m5.large,RunInstances,us-east-2a,i-0f9e8d7c6b5a40003,24.0000000000,USD,0.0960000000,2.3040000000,$0.096 per On Demand Linux m5.large Instance Hour,Hrs,us-east-2,search
zfowwz3mlcyq3cxrlj2yxlqj6ofmfvguu5u5hbrbqyhfm3q3utga,2026-10-01T00:00:00Z/2026-11-01T00:00:00Z,999988887777,Tax,111122223333,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,AmazonEC2,,,,,1.0000000000,USD,,14.5200000000,\"Tax for product code AmazonEC2, usage in October\",,,
";

    /// Another day, with the columns in another order, a byte order mark,
    /// a credit and CloudFront's edge transfer (`EU-` here is CloudFront's
    /// Europe, then eu-west-1).
    const OCTOBER_REORDERED: &str = "\u{feff}\
resourceTags/user:team,lineItem/UnblendedCost,pricing/unit,lineItem/UsageType,lineItem/Operation,lineItem/ResourceId,lineItem/UsageAmount,lineItem/CurrencyCode,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/UsageAccountId,lineItem/ProductCode,lineItem/LineItemDescription,identity/LineItemId,bill/PayerAccountId
payments,0.1920000000,Hrs,BoxUsage:m5.xlarge,RunInstances,i-0a1b2c3d4e5f60001,1.0000000000,USD,SavingsPlanCoveredUsage,2026-10-06T00:00:00Z,2026-10-06T01:00:00Z,111122223333,AmazonEC2,1.0 hrs of m5.xlarge covered by Savings Plan,4xw2qe2v5xxu6gqcfnvfxcbr3vqybu3fqw7kdcqjyyo7bqxokq6a,999988887777
payments,0.0100000000,GB,DataTransfer-Out-Bytes,RunInstances,i-0a1b2c3d4e5f60001,0.1111111111,USD,Usage,2026-10-06T00:00:00Z,2026-10-06T01:00:00Z,111122223333,AWSDataTransfer,$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier,jh3mukt2k5ldpn5ytbvknr6lqmwksnzjbzn6xmn5gtbsvzjzlkaq,999988887777
,-5.0000000000,,DataTransfer-Out-Bytes,RunInstances,,0.0000000000,USD,Credit,2026-10-06T00:00:00Z,2026-10-07T00:00:00Z,111122223333,AWSDataTransfer,AWS Activate credit,a2hcvoj3oqrk7ahxpsjvjtqvktzxpmtc4rdttyheowrgfqkzmcmq,999988887777
web,3.4000000000,GB,US-DataTransfer-Out-Bytes,GET,arn:aws:cloudfront::111122223333:distribution/E2QWRUHAPOMQZL,40.0000000000,USD,Usage,2026-10-06T00:00:00Z,2026-10-06T01:00:00Z,111122223333,AmazonCloudFront,$0.085 per GB - first 10 TB / month data transfer out (United States),qg2iktqcltkx3jlbztn5fi2tdltqqqxi5fnk6kk2zxppcdsdhy5q,999988887777
web,0.0900000000,GB,EU-DataTransfer-Out-Bytes,RunInstances,i-0e1d2c3b4a5f60005,1.0000000000,USD,Usage,2026-10-06T00:00:00Z,2026-10-06T01:00:00Z,111122223333,AmazonEC2,$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier,d3yhfdd6vkvyq5dfkcqnvgn2q2llwxh6atkxqb6ybpmrmhbgxnrq,999988887777
";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        if name.ends_with(".gz") {
            let file = std::fs::File::create(&path).unwrap();
            let mut gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gzip.write_all(text.as_bytes()).unwrap();
            gzip.finish().unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        path
    }

    fn october() -> Vec<Item> {
        vec![
            item(
                2,
                "i-0a1b2c3d4e5f60001",
                "DataTransfer-Regional-Bytes InterZone-Out",
                CROSS_ZONE_OUT,
                "2026-10-01",
                25 << 29,
                125_000_000,
            ),
            item(
                3,
                "i-0a1b2c3d4e5f60002",
                "DataTransfer-Regional-Bytes InterZone-In",
                CROSS_ZONE_IN,
                "2026-10-01",
                25 << 29,
                125_000_000,
            ),
            item(
                4,
                "i-0a1b2c3d4e5f60001",
                "DataTransfer-Out-Bytes RunInstances",
                INTERNET_OUT,
                "2026-10-02",
                1024 << 30,
                92_160_000_000,
            ),
            item(
                5,
                "i-0a1b2c3d4e5f60002",
                "DataTransfer-Out-Bytes RunInstances",
                INTERNET_OUT,
                "2026-10-02",
                512 << 30,
                43_520_000_000,
            ),
            item(
                6,
                "i-0a1b2c3d4e5f60002",
                "USE1-USE2-AWS-Out-Bytes RunInstances",
                CROSS_REGION_OUT,
                "2026-10-03",
                100 << 30,
                1_000_000_000,
            ),
            item(
                7,
                "i-0f9e8d7c6b5a40003",
                "USE2-USE1-AWS-In-Bytes RunInstances",
                CROSS_REGION_IN,
                "2026-10-03",
                100 << 30,
                0,
            ),
            item(
                8,
                "i-0f9e8d7c6b5a40003",
                "USE2-DataTransfer-Regional-Bytes InterZone-In",
                CROSS_ZONE_IN,
                "2026-10-04",
                13 << 28,
                32_500_000,
            ),
            Item {
                account: "444455556666".to_owned(),
                ..item(
                    9,
                    "i-0f9e8d7c6b5a40004",
                    "USE2-DataTransfer-xAZ-Out-Bytes InterZone-Out",
                    CROSS_ZONE_OUT,
                    "2026-10-04",
                    1 << 29,
                    5_000_000,
                )
            },
            item(
                10,
                NAT_GATEWAY,
                "NatGateway-Bytes NatGateway",
                NAT,
                "2026-10-05",
                1003 << 28,
                11_283_750_000,
            ),
        ]
    }

    #[test]
    fn reads_the_network_line_items_of_a_plain_and_a_gzipped_report() {
        let dir = TempDir::new("aws-csv");
        for name in ["october.csv", "october.csv.gz"] {
            let path = write(&dir, name, OCTOBER);
            let mut currency = None;
            let (summary, items) = read_all(read, &path, &mut currency).unwrap();
            assert_eq!(
                summary,
                FileSummary {
                    lines: 13,
                    network_lines: 9
                },
                "{name}"
            );
            assert_eq!(items, october(), "{name}");
            assert_eq!(currency.as_deref(), Some("USD"));
        }
    }

    #[test]
    fn finds_columns_in_any_order_and_hands_on_credits() {
        let dir = TempDir::new("aws-csv-reordered");
        let path = write(&dir, "october-2.csv.gz", OCTOBER_REORDERED);
        let (summary, items) = read_all(read, &path, &mut Some("USD".to_owned())).unwrap();
        assert_eq!(
            summary,
            FileSummary {
                lines: 5,
                network_lines: 4
            }
        );
        assert_eq!(
            items,
            [
                item(
                    2,
                    "i-0a1b2c3d4e5f60001",
                    "DataTransfer-Out-Bytes RunInstances",
                    INTERNET_OUT,
                    "2026-10-06",
                    119_304_647,
                    10_000_000
                ),
                item(
                    3,
                    "",
                    "DataTransfer-Out-Bytes RunInstances",
                    INTERNET_OUT,
                    "2026-10-06",
                    0,
                    -5_000_000_000
                ),
                // CloudFront's edge transfer: network cost, not a node's.
                item(
                    4,
                    "arn:aws:cloudfront::111122223333:distribution/E2QWRUHAPOMQZL",
                    "US-DataTransfer-Out-Bytes GET",
                    (Billed::Unmetered, Direction::Out),
                    "2026-10-06",
                    40 << 30,
                    3_400_000_000
                ),
                item(
                    5,
                    "i-0e1d2c3b4a5f60005",
                    "EU-DataTransfer-Out-Bytes RunInstances",
                    INTERNET_OUT,
                    "2026-10-06",
                    1 << 30,
                    90_000_000
                ),
            ]
        );
    }

    /// `OCTOBER` with its line `line` (from 1) edited by `edit`.
    fn edited(dir: &Path, line: usize, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
        let text: Vec<String> = OCTOBER
            .lines()
            .enumerate()
            .map(|(at, text)| {
                if at == line {
                    edit(text)
                } else {
                    text.to_owned()
                }
            })
            .collect();
        write(dir, "bad.csv", &(text.join("\n") + "\n"))
    }

    #[test]
    fn a_missing_column_is_an_error_naming_it() {
        let dir = TempDir::new("aws-csv-missing");
        let path = edited(&dir, 0, |header| {
            header.replace("lineItem/UnblendedCost", "lineItem/BlendedCost")
        });
        assert_eq!(
            read_error(read, &path),
            format!(
                "{}: column lineItem/UnblendedCost: no such column in the header: not an AWS \
                 Cost and Usage Report, or one without it",
                path.display()
            )
        );
    }

    #[test]
    fn bad_network_lines_are_errors_naming_file_line_and_column() {
        let dir = TempDir::new("aws-csv-bad");
        let cases: [(usize, &str, &str, &str); 8] = [
            (
                4,
                "2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,AmazonEC2",
                "2026-11-02T00:00:00Z,2026-11-02T01:00:00Z,AmazonEC2",
                ":4: column lineItem/UsageStartDate: 2026-11-02 is not in 2026-10: this is a \
                 bill of another month",
            ),
            (
                5,
                ",USD,0.0850000000",
                ",EUR,0.0850000000",
                ":5: column lineItem/CurrencyCode: currency \"EUR\", but earlier line items \
                 are in \"USD\": one currency per reconciliation",
            ),
            (
                10,
                "Data Processed by NAT Gateways,GB,",
                "Data Processed by NAT Gateways,Hrs,",
                ":10: column pricing/unit: \"Hrs\" on NatGateway-Bytes: a unit not understood \
                 (network usage is in GB)",
            ),
            (
                6,
                ",100.0000000000,",
                ",1OO.0000000000,",
                ":6: column lineItem/UsageAmount: \"1OO.0000000000\" is not a number",
            ),
            (
                7,
                ",100.0000000000,USD,",
                ",-100.0000000000,USD,",
                ":7: column lineItem/UsageAmount: -100.0000000000 GB: negative, or too large",
            ),
            (
                8,
                ",0.0325000000,",
                ",$0.0325,",
                ":8: column lineItem/UnblendedCost: \"$0.0325\" is not a number",
            ),
            (
                2,
                "InterZone-Out",
                "InterZone",
                ":2: column lineItem/Operation: \"InterZone\" on DataTransfer-Regional-Bytes: \
                 an operation ending in neither -In nor -Out, so which side of the transfer \
                 this line bills is not known",
            ),
            (
                3,
                "Usage,111122223333,2026-10-01T00:00:00Z",
                "Usage,111122223333,1 October 2026",
                ":3: column lineItem/UsageStartDate: \"1 October 2026\" is not a time like \
                 2026-10-01T00:00:00Z",
            ),
        ];
        for (line, from, to, expected) in cases {
            let path = edited(&dir, line, |text| {
                assert!(text.contains(from), "{from}");
                text.replacen(from, to, 1)
            });
            assert_eq!(
                read_error(read, &path),
                format!("{}{expected}", path.display())
            );
        }
    }

    #[test]
    fn lines_that_are_not_network_are_counted_not_checked() {
        let dir = TempDir::new("aws-csv-other");
        // BoxUsage of another month, in another currency: not a network line.
        let path = edited(&dir, 1, |text| {
            text.replace("2026-10-01T", "2026-09-30T")
                .replace(",USD,", ",EUR,")
        });
        let (summary, items) = read_all(read, &path, &mut None).unwrap();
        assert_eq!(
            summary,
            FileSummary {
                lines: 13,
                network_lines: 9
            }
        );
        assert_eq!(items, october());
    }
}
