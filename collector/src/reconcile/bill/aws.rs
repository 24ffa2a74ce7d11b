//! What the two AWS readers share: which line items are network
//! transfer, what each bills, and how one line item becomes a
//! [`LineItem`]. [`aws_csv`](super::aws_csv) and
//! [`aws_parquet`](super::aws_parquet) only find the columns.
//!
//! # Usage types
//!
//! A usage type carries the region's code as a prefix (`USE2-`, `EU-`,
//! `APN1-`...); us-east-1 has none, except in the pair of an inter-region
//! type (`USE1-EU-AWS-Out-Bytes`). `R-` below is that optional prefix,
//! `A-B-` the pair (from A to B for `Out`, into A from B for `In`).
//!
//! | usage type | operation | billed | direction |
//! |---|---|---|---|
//! | `[R-]DataTransfer-Regional-Bytes` | `InterZone-In`, `PublicIP-In`, `LoadBalancing-PublicIP-In`, `VPCPeering-In`, ... (`*-In`) | cross_zone | in |
//! | `[R-]DataTransfer-Regional-Bytes` | `InterZone-Out`, `PublicIP-Out`, ... (`*-Out`) | cross_zone | out |
//! | `[R-]DataTransfer-xAZ-In-Bytes` | any | cross_zone | in |
//! | `[R-]DataTransfer-xAZ-Out-Bytes` | any | cross_zone | out |
//! | `[R-]DataTransfer-Out-Bytes` (every price tier) | any | internet | out |
//! | `[R-]DataTransfer-In-Bytes` | any | internet | in |
//! | `[R-]VpcPeering-In-Bytes` | any | cross_zone | in |
//! | `[R-]VpcPeering-Out-Bytes` | any | cross_zone | out |
//! | `A-B-AWS-Out-Bytes`, `[R-]AWS-Out-Bytes` (over VPC peering) | any | cross_region | out |
//! | `A-B-AWS-In-Bytes`, `[R-]AWS-In-Bytes` (over VPC peering) | any | cross_region | in |
//! | `[R-]NatGateway-Bytes`, `[R-]RegionalNatGateway-Bytes` | any | nat_gateway | out |
//! | anything else: `BoxUsage:*`, `EBS:*`, `NatGateway-Hours`, `Requests-Tier1`, `DataTransfer-Out-OBytes`, ... | | not network | |
//!
//! Regional transfer (`DataTransfer-Regional-Bytes`) is billed once on
//! each side, and only the operation says which side: one ending in
//! neither `-In` nor `-Out` is an error. A network line item's
//! `pricing/unit` must be `GB` (2^30 bytes), anything else is an error.
//! AWS's CUR guide lists the inter-region types, the single-region form
//! among them ("appears when traffic flows via VPC Peering"); VPC peering
//! across zones has had types of its own since 2025 (`VpcPeering-*-Bytes`,
//! AWS's networking blog), earlier it was regional transfer.
//!
//! Amazon CloudFront bills its edge transfer as `US-DataTransfer-Out-Bytes`,
//! `EU-DataTransfer-Out-Bytes`... (`EU` is also eu-west-1's prefix): when
//! the bill has the product code column, lines of `AmazonCloudFront` are
//! `not_metered` ([`Billed::Unmetered`]): network cost no node sends, shown
//! and never allocated. So are load balancers', PrivateLink endpoints' and
//! transit gateways' processing (`[R-]DataProcessing-Bytes`,
//! `[R-]VpcEndpoint-Bytes`, `[R-]TransitGateway-Bytes`).
//!
//! # Line item types
//!
//! | line item type | handed on |
//! |---|---|
//! | `Usage`, `DiscountedUsage`, `SavingsPlanCoveredUsage` | bytes and cost |
//! | `Credit`, `Refund`, `Discount`, `BundledDiscount`, `EdpDiscount`, `PrivateRateDiscount`, `DistributorDiscount`, `SavingsPlanNegation` | cost only, 0 bytes |
//! | `Tax`, `Fee`, `RIFee`, `SavingsPlanUpfrontFee`, `SavingsPlanRecurringFee` | never |
//! | any other | an error if its usage type is network, else never |
//!
//! A credit, refund or discount on a network usage type is handed on with
//! its (negative) cost so that the allocated cost sums to the bill's; its
//! bytes are 0, as the usage line it adjusts already carries them (and
//! its unit and amount are not read). Tax is not a price of transfer, and
//! fees are commitments, not bytes.
//!
//! Cost is the unblended cost. Every line item read counts in
//! [`FileSummary::lines`], network or not.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::{BillError, Billed, Decimal, Direction, Expect, FileSummary, LineItem};

/// The product code whose `DataTransfer-Out-Bytes` lines are not a node's.
const CLOUDFRONT: &str = "AmazonCloudFront";

/// The columns the readers take, by their names in one format.
#[derive(Debug)]
pub struct Columns {
    /// The line item type.
    pub line_item_type: &'static str,
    /// The usage account.
    pub account: &'static str,
    /// When the usage began.
    pub start: &'static str,
    /// The usage type.
    pub usage_type: &'static str,
    /// The operation.
    pub operation: &'static str,
    /// The resource id.
    pub resource: &'static str,
    /// The usage amount.
    pub amount: &'static str,
    /// The currency code.
    pub currency: &'static str,
    /// The unblended cost.
    pub cost: &'static str,
    /// The pricing unit.
    pub unit: &'static str,
    /// The product code: optional, only CloudFront's lines need it.
    pub product_code: &'static str,
}

impl Columns {
    /// The columns a bill must have.
    pub fn required(&self) -> [&'static str; 10] {
        [
            self.line_item_type,
            self.account,
            self.start,
            self.usage_type,
            self.operation,
            self.resource,
            self.amount,
            self.currency,
            self.cost,
            self.unit,
        ]
    }
}

/// The legacy Cost and Usage Report's column names (CSV).
pub const CSV: Columns = Columns {
    line_item_type: "lineItem/LineItemType",
    account: "lineItem/UsageAccountId",
    start: "lineItem/UsageStartDate",
    usage_type: "lineItem/UsageType",
    operation: "lineItem/Operation",
    resource: "lineItem/ResourceId",
    amount: "lineItem/UsageAmount",
    currency: "lineItem/CurrencyCode",
    cost: "lineItem/UnblendedCost",
    unit: "pricing/unit",
    product_code: "lineItem/ProductCode",
};

/// CUR 2.0's column names (Data Exports, Parquet).
pub const CUR2: Columns = Columns {
    line_item_type: "line_item_line_item_type",
    account: "line_item_usage_account_id",
    start: "line_item_usage_start_date",
    usage_type: "line_item_usage_type",
    operation: "line_item_operation",
    resource: "line_item_resource_id",
    amount: "line_item_usage_amount",
    currency: "line_item_currency_code",
    cost: "line_item_unblended_cost",
    unit: "pricing_unit",
    product_code: "line_item_product_code",
};

/// A number as the bill holds it.
#[derive(Debug, Clone, Copy)]
pub enum Number<'a> {
    /// Decimal text (CSV).
    Text(&'a str),
    /// A double (Parquet), `None` if null.
    Double(Option<f64>),
}

impl std::fmt::Display for Number<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Text(text) => f.write_str(text),
            Number::Double(Some(value)) => write!(f, "{value}"),
            Number::Double(None) => Ok(()),
        }
    }
}

/// One line item's fields, as the bill writes them (empty if null).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// `Usage`, `Credit`, `Tax`...
    pub line_item_type: &'a str,
    /// `AmazonEC2`...; empty if the bill lacks the column.
    pub product_code: &'a str,
    /// `USE2-DataTransfer-Regional-Bytes`...
    pub usage_type: &'a str,
    /// `InterZone-Out`...
    pub operation: &'a str,
    /// `i-0abc...`, a NAT gateway's ARN...
    pub resource: &'a str,
    /// The usage account id.
    pub account: &'a str,
    /// `USD`...
    pub currency: &'a str,
    /// `GB`, `Hrs`...
    pub unit: &'a str,
    /// The usage amount, in `unit`.
    pub amount: Number<'a>,
    /// The unblended cost.
    pub cost: Number<'a>,
}

/// How a line item type counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Usage: its bytes and cost.
    Usage,
    /// A credit, refund or discount on usage: its cost only.
    Adjustment,
    /// Never network (tax, fees).
    Other,
}

/// How line items of `line_item_type` count; `None` for a type not known.
pub fn charge(line_item_type: &str) -> Option<Charge> {
    match line_item_type {
        "Usage" | "DiscountedUsage" | "SavingsPlanCoveredUsage" => Some(Charge::Usage),
        "Credit"
        | "Refund"
        | "Discount"
        | "BundledDiscount"
        | "EdpDiscount"
        | "PrivateRateDiscount"
        | "DistributorDiscount"
        | "SavingsPlanNegation" => Some(Charge::Adjustment),
        "Tax" | "Fee" | "RIFee" | "SavingsPlanUpfrontFee" | "SavingsPlanRecurringFee" => {
            Some(Charge::Other)
        }
        _ => None,
    }
}

/// A regional transfer line item whose operation ends in neither `-In`
/// nor `-Out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDirection;

/// What a usage type's line items bill: given, or from the operation.
#[derive(Clone, Copy)]
enum Bills {
    Fixed(Billed, Direction),
    ByOperation(Billed),
}

/// Usage types by what follows their region prefix (none, one region or
/// a pair).
const USAGE_TYPES: [(&str, Bills); 14] = [
    (
        "DataTransfer-Regional-Bytes",
        Bills::ByOperation(Billed::CrossZone),
    ),
    (
        "DataTransfer-xAZ-In-Bytes",
        Bills::Fixed(Billed::CrossZone, Direction::In),
    ),
    (
        "DataTransfer-xAZ-Out-Bytes",
        Bills::Fixed(Billed::CrossZone, Direction::Out),
    ),
    (
        "DataTransfer-Out-Bytes",
        Bills::Fixed(Billed::Internet, Direction::Out),
    ),
    (
        "DataTransfer-In-Bytes",
        Bills::Fixed(Billed::Internet, Direction::In),
    ),
    (
        "VpcPeering-Out-Bytes",
        Bills::Fixed(Billed::CrossZone, Direction::Out),
    ),
    (
        "VpcPeering-In-Bytes",
        Bills::Fixed(Billed::CrossZone, Direction::In),
    ),
    (
        "AWS-Out-Bytes",
        Bills::Fixed(Billed::CrossRegion, Direction::Out),
    ),
    (
        "AWS-In-Bytes",
        Bills::Fixed(Billed::CrossRegion, Direction::In),
    ),
    (
        "NatGateway-Bytes",
        Bills::Fixed(Billed::NatGateway, Direction::Out),
    ),
    (
        "RegionalNatGateway-Bytes",
        Bills::Fixed(Billed::NatGateway, Direction::Out),
    ),
    // Processing no node's conntrack table sees: load balancers',
    // PrivateLink endpoints', transit gateways'.
    (
        "DataProcessing-Bytes",
        Bills::Fixed(Billed::Unmetered, Direction::Out),
    ),
    (
        "VpcEndpoint-Bytes",
        Bills::Fixed(Billed::Unmetered, Direction::Out),
    ),
    (
        "TransitGateway-Bytes",
        Bills::Fixed(Billed::Unmetered, Direction::Out),
    ),
];

/// What a line item of `usage_type` and `operation` bills (see the
/// module's table); `Ok(None)` if it is not network transfer.
pub fn classify(
    usage_type: &str,
    operation: &str,
) -> Result<Option<(Billed, Direction)>, NoDirection> {
    for (base, bills) in USAGE_TYPES {
        let Some(prefix) = usage_type.strip_suffix(base) else {
            continue;
        };
        if !region_codes(prefix) {
            continue;
        }
        return match bills {
            Bills::Fixed(billed, direction) => Ok(Some((billed, direction))),
            Bills::ByOperation(billed) => {
                let direction = if operation.ends_with("-In") {
                    Direction::In
                } else if operation.ends_with("-Out") {
                    Direction::Out
                } else {
                    return Err(NoDirection);
                };
                Ok(Some((billed, direction)))
            }
        };
    }
    Ok(None)
}

/// Whether `prefix` is region (or zone) codes, each followed by `-`
/// (`""`, `"USE2-"`, `"USE1-EU-"`). Codes are upper case letters and
/// digits, so `RegionalNatGateway-Bytes` is not `Regional`-prefixed
/// `NatGateway-Bytes`.
fn region_codes(prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    prefix.strip_suffix('-').is_some_and(|codes| {
        codes.split('-').all(|code| {
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    })
}

/// Turns one file's line items into [`LineItem`]s, counting them.
pub struct Items<'e> {
    expect: Expect<'e>,
    columns: &'static Columns,
    summary: FileSummary,
    /// The current line item's `usage`, reused.
    usage: String,
    /// A double's text, reused.
    number: String,
}

impl<'e> Items<'e> {
    /// For a file whose columns are named as in `columns`.
    pub fn new(expect: Expect<'e>, columns: &'static Columns) -> Items<'e> {
        Items {
            expect,
            columns,
            summary: FileSummary::default(),
            usage: String::new(),
            number: String::new(),
        }
    }

    /// Counts the line item at `line`, and hands it to `on_item` if it is
    /// network transfer. `day` (the UTC day its usage began) is only asked
    /// of network line items.
    pub fn line(
        &mut self,
        line: u64,
        fields: &Fields<'_>,
        day: impl FnOnce() -> Result<NaiveDate, String>,
        on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
    ) -> Result<(), BillError> {
        self.summary.lines += 1;
        let columns = self.columns;
        let file = self.expect.file;
        let error = |column: &str, message: String| BillError::new(file, line, column, message);
        let charge = charge(fields.line_item_type);
        if charge == Some(Charge::Other) {
            return Ok(());
        }
        let Some((mut billed, direction)) =
            classify(fields.usage_type, fields.operation).map_err(|NoDirection| {
                error(
                    columns.operation,
                    format!(
                        "{:?} on {}: an operation ending in neither -In nor -Out, so which \
                         side of the transfer this line bills is not known",
                        fields.operation, fields.usage_type
                    ),
                )
            })?
        else {
            return Ok(());
        };
        if fields.product_code == CLOUDFRONT {
            billed = Billed::Unmetered;
        }
        let bytes = match charge {
            Some(Charge::Usage) => {
                if fields.unit != "GB" {
                    return Err(error(
                        columns.unit,
                        format!(
                            "{:?} on {}: a unit not understood (network usage is in GB)",
                            fields.unit, fields.usage_type
                        ),
                    ));
                }
                let amount = self.decimal(fields.amount, columns.amount, line)?;
                amount.gib_to_bytes().ok_or_else(|| {
                    error(
                        columns.amount,
                        format!("{} GB: negative, or too large", fields.amount),
                    )
                })?
            }
            Some(Charge::Adjustment) => 0,
            Some(Charge::Other) | None => {
                return Err(error(
                    columns.line_item_type,
                    format!(
                        "{:?} on {}: a line item type not understood",
                        fields.line_item_type, fields.usage_type
                    ),
                ))
            }
        };
        let cost = self.decimal(fields.cost, columns.cost, line)?;
        let cost_nanos = cost
            .nanos()
            .ok_or_else(|| error(columns.cost, format!("{}: too large", fields.cost)))?;
        let day = day().map_err(|message| error(columns.start, message))?;
        self.expect.check(
            line,
            (day, columns.start),
            (fields.currency, columns.currency),
        )?;
        self.usage.clear();
        self.usage.push_str(fields.usage_type);
        self.usage.push(' ');
        self.usage.push_str(fields.operation);
        on_item(LineItem {
            line,
            resource: fields.resource,
            usage: &self.usage,
            billed,
            direction,
            day,
            bytes,
            cost_nanos,
            currency: fields.currency,
            account: fields.account,
        })?;
        self.summary.network_lines += 1;
        Ok(())
    }

    /// `number` as an exact decimal. A double goes through its shortest
    /// text that reads back as the same double (`0.01` is `1e-2`, exactly
    /// 0.01, not the binary fraction nearest it); exponent form keeps the
    /// digits within what [`Decimal`] holds at any magnitude.
    fn decimal(
        &mut self,
        number: Number<'_>,
        column: &str,
        line: u64,
    ) -> Result<Decimal, BillError> {
        let text = match number {
            Number::Text(text) => text,
            Number::Double(None) => "",
            Number::Double(Some(value)) => {
                self.number.clear();
                // Writing to a String cannot fail.
                let _ = write!(self.number, "{value:e}");
                &self.number
            }
        };
        Decimal::parse(text).ok_or_else(|| {
            BillError::new(
                self.expect.file,
                line,
                column,
                format!("{text:?} is not a number"),
            )
        })
    }

    /// What the file held.
    pub fn finish(self) -> FileSummary {
        self.summary
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the AWS readers' tests share.

    use std::path::Path;

    use chrono::NaiveDate;

    use super::super::{BillError, Billed, Direction, Expect, FileSummary, LineItem};

    /// A reader.
    pub(crate) type Read = fn(
        &Path,
        Expect<'_>,
        &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
    ) -> Result<FileSummary, BillError>;

    /// A handed-on line item, owned.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Item {
        pub line: u64,
        pub resource: String,
        pub usage: String,
        pub billed: Billed,
        pub direction: Direction,
        pub day: NaiveDate,
        pub bytes: u128,
        pub cost_nanos: i128,
        pub currency: String,
        pub account: String,
    }

    /// A line item of account 111122223333, in USD.
    pub(crate) fn item(
        line: u64,
        resource: &str,
        usage: &str,
        (billed, direction): (Billed, Direction),
        day: &str,
        bytes: u128,
        cost_nanos: i128,
    ) -> Item {
        Item {
            line,
            resource: resource.to_owned(),
            usage: usage.to_owned(),
            billed,
            direction,
            day: day.parse().unwrap(),
            bytes,
            cost_nanos,
            currency: "USD".to_owned(),
            account: "111122223333".to_owned(),
        }
    }

    /// Everything `read` hands on from `file`, for October 2026, with the
    /// run's currency so far in `currency`.
    pub(crate) fn read_all(
        read: Read,
        file: &Path,
        currency: &mut Option<String>,
    ) -> Result<(FileSummary, Vec<Item>), BillError> {
        let mut items = Vec::new();
        let expect = Expect {
            file,
            month: "2026-10".parse().unwrap(),
            currency,
        };
        let summary = read(file, expect, &mut |item| {
            items.push(Item {
                line: item.line,
                resource: item.resource.to_owned(),
                usage: item.usage.to_owned(),
                billed: item.billed,
                direction: item.direction,
                day: item.day,
                bytes: item.bytes,
                cost_nanos: item.cost_nanos,
                currency: item.currency.to_owned(),
                account: item.account.to_owned(),
            });
            Ok(())
        })?;
        Ok((summary, items))
    }

    /// The error `read` stops at in `file`, as it reads.
    pub(crate) fn read_error(read: Read, file: &Path) -> String {
        read_all(read, file, &mut None).unwrap_err().to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    #[test]
    fn usage_types_classify_with_and_without_region_prefix() {
        use Billed::*;
        use Direction::*;
        let cases = [
            (
                "DataTransfer-Regional-Bytes",
                "InterZone-In",
                Some((CrossZone, In)),
            ),
            (
                "USE2-DataTransfer-Regional-Bytes",
                "InterZone-Out",
                Some((CrossZone, Out)),
            ),
            (
                "EU-DataTransfer-Regional-Bytes",
                "PublicIP-In",
                Some((CrossZone, In)),
            ),
            (
                "APN1-DataTransfer-Regional-Bytes",
                "LoadBalancing-PublicIP-Out",
                Some((CrossZone, Out)),
            ),
            (
                "USE1-DataTransfer-xAZ-In-Bytes",
                "InterZone-In",
                Some((CrossZone, In)),
            ),
            (
                "EUW2-DataTransfer-xAZ-Out-Bytes",
                "",
                Some((CrossZone, Out)),
            ),
            (
                "DataTransfer-Out-Bytes",
                "RunInstances",
                Some((Internet, Out)),
            ),
            (
                "USE2-DataTransfer-Out-Bytes",
                "RunInstances",
                Some((Internet, Out)),
            ),
            (
                "DataTransfer-In-Bytes",
                "RunInstances",
                Some((Internet, In)),
            ),
            (
                "USE1-EU-AWS-Out-Bytes",
                "RunInstances",
                Some((CrossRegion, Out)),
            ),
            (
                "EUW2-USE1-AWS-In-Bytes",
                "RunInstances",
                Some((CrossRegion, In)),
            ),
            ("NatGateway-Bytes", "NatGateway", Some((NatGateway, Out))),
            (
                "APN1-NatGateway-Bytes",
                "NatGateway",
                Some((NatGateway, Out)),
            ),
            (
                "EU-RegionalNatGateway-Bytes",
                "RegionalNatGateway",
                Some((NatGateway, Out)),
            ),
            ("NatGateway-Hours", "NatGateway", None),
            ("BoxUsage:m5.xlarge", "RunInstances", None),
            ("USE2-EBS:VolumeUsage.gp3", "CreateVolume-Gp3", None),
            ("US-DataTransfer-Out-OBytes", "GET", None),
            ("USE1-CloudFront-Out-Bytes", "", None),
            ("Requests-Tier1", "PutObject", None),
            // One region: inter-region over VPC peering.
            (
                "USE2-AWS-Out-Bytes",
                "VPCPeering-Out",
                Some((CrossRegion, Out)),
            ),
            ("AWS-In-Bytes", "VPCPeering-In", Some((CrossRegion, In))),
            (
                "USE1-VpcPeering-Out-Bytes",
                "VPCPeering-Out",
                Some((CrossZone, Out)),
            ),
            (
                "EUW2-VpcPeering-In-Bytes",
                "VPCPeering-In",
                Some((CrossZone, In)),
            ),
            ("use2-DataTransfer-Out-Bytes", "RunInstances", None),
            ("", "", None),
        ];
        for (usage_type, operation, expected) in cases {
            assert_eq!(
                classify(usage_type, operation),
                Ok(expected),
                "{usage_type}"
            );
        }
        assert_eq!(
            classify("USE2-DataTransfer-Regional-Bytes", "RunInstances"),
            Err(NoDirection)
        );
        assert_eq!(
            classify("DataTransfer-Regional-Bytes", ""),
            Err(NoDirection)
        );
    }

    fn fields<'a>(
        line_item_type: &'a str,
        product_code: &'a str,
        usage_type: &'a str,
        operation: &'a str,
    ) -> Fields<'a> {
        Fields {
            line_item_type,
            product_code,
            usage_type,
            operation,
            resource: "i-0a1b2c3d4e5f60001",
            account: "111122223333",
            currency: "USD",
            unit: "GB",
            amount: Number::Text("2"),
            cost: Number::Text("0.18"),
        }
    }

    type Seen = (Billed, Direction, u128, i128);

    /// What [`Items::line`] makes of `lines` (lines 1, 2...), all of
    /// 2026-10-01.
    fn run(lines: &[Fields<'_>]) -> Result<(FileSummary, Vec<Seen>), BillError> {
        let mut currency = None;
        let expect = Expect {
            file: std::path::Path::new("bill.csv"),
            month: "2026-10".parse().unwrap(),
            currency: &mut currency,
        };
        let mut items = Items::new(expect, &CSV);
        let mut seen = Vec::new();
        for (line, fields) in (1..).zip(lines) {
            items.line(
                line,
                fields,
                || Ok(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()),
                &mut |item| {
                    seen.push((item.billed, item.direction, item.bytes, item.cost_nanos));
                    Ok(())
                },
            )?;
        }
        Ok((items.finish(), seen))
    }

    #[test]
    fn adjustments_carry_their_cost_only_and_tax_fees_and_cloudfront_are_not_network() {
        use Billed::*;
        use Direction::*;
        let out = "DataTransfer-Out-Bytes";
        let lines = [
            fields("Usage", "AmazonEC2", out, "RunInstances"),
            Fields {
                unit: "",
                amount: Number::Text(""),
                cost: Number::Text("-5.0000000000"),
                ..fields("Credit", "AWSDataTransfer", out, "RunInstances")
            },
            Fields {
                amount: Number::Text("-2"),
                cost: Number::Text("-0.18"),
                ..fields("Refund", "AmazonEC2", out, "RunInstances")
            },
            fields("Tax", "AmazonEC2", out, "RunInstances"),
            fields("RIFee", "AmazonEC2", "DataTransfer-Regional-Bytes", ""),
            fields(
                "Usage",
                "AmazonCloudFront",
                "EU-DataTransfer-Out-Bytes",
                "GET",
            ),
            fields(
                "SomethingNew",
                "AmazonEC2",
                "BoxUsage:m5.large",
                "RunInstances",
            ),
            Fields {
                amount: Number::Double(Some(2.0)),
                cost: Number::Double(Some(0.18)),
                ..fields(
                    "DiscountedUsage",
                    "",
                    "USE2-DataTransfer-In-Bytes",
                    "RunInstances",
                )
            },
        ];
        let (summary, seen) = run(&lines).unwrap();
        assert_eq!(
            summary,
            FileSummary {
                lines: 8,
                network_lines: 5
            }
        );
        assert_eq!(
            seen,
            [
                (Internet, Out, 2 << 30, 180_000_000),
                (Internet, Out, 0, -5_000_000_000),
                (Internet, Out, 0, -180_000_000),
                // CloudFront's edge transfer: shown, not a node's.
                (Unmetered, Out, 2 << 30, 180_000_000),
                (Internet, In, 2 << 30, 180_000_000),
            ]
        );
    }

    #[test]
    fn an_unknown_line_item_type_of_network_usage_is_an_error() {
        let lines = [
            fields("Usage", "AmazonEC2", "BoxUsage:m5.large", "RunInstances"),
            fields(
                "SomethingNew",
                "AmazonEC2",
                "DataTransfer-Out-Bytes",
                "RunInstances",
            ),
        ];
        assert_eq!(
            run(&lines).unwrap_err().to_string(),
            "bill.csv:2: column lineItem/LineItemType: \"SomethingNew\" on \
             DataTransfer-Out-Bytes: a line item type not understood"
        );
    }

    #[test]
    fn doubles_are_exact_through_their_shortest_text() {
        let mut currency = None;
        let expect = Expect {
            file: std::path::Path::new("bill.parquet"),
            month: "2026-10".parse().unwrap(),
            currency: &mut currency,
        };
        let mut items = Items::new(expect, &CUR2);
        let mut decimal = |value| items.decimal(Number::Double(Some(value)), "c", 1);
        assert_eq!(decimal(0.01).unwrap().nanos(), Some(10_000_000));
        assert_eq!(decimal(0.1 + 0.2).unwrap().nanos(), Some(300_000_000));
        assert_eq!(decimal(5e-10).unwrap().nanos(), Some(1));
        assert_eq!(decimal(1234.5678).unwrap().nanos(), Some(1_234_567_800_000));
        assert_eq!(
            decimal(1e25).unwrap().nanos(),
            Some(10_000_000_000_000_000_000_000_000_000_000_000)
        );
        assert_eq!(
            decimal(4.656612873077393e-10).unwrap().gib_to_bytes(),
            Some(1)
        );
        assert_eq!(decimal(12.5).unwrap().gib_to_bytes(), Some(25 << 29));
        assert_eq!(
            decimal(f64::NAN).unwrap_err().to_string(),
            "bill.parquet:1: column c: \"NaN\" is not a number"
        );
        assert_eq!(
            items
                .decimal(Number::Double(None), "c", 2)
                .unwrap_err()
                .to_string(),
            "bill.parquet:2: column c: \"\" is not a number"
        );
    }

    #[test]
    fn line_item_types_are_all_decided() {
        for usage in ["Usage", "DiscountedUsage", "SavingsPlanCoveredUsage"] {
            assert_eq!(charge(usage), Some(Charge::Usage));
        }
        for adjustment in ["Credit", "Refund", "EdpDiscount", "SavingsPlanNegation"] {
            assert_eq!(charge(adjustment), Some(Charge::Adjustment));
        }
        for other in ["Tax", "Fee", "RIFee", "SavingsPlanRecurringFee"] {
            assert_eq!(charge(other), Some(Charge::Other));
        }
        assert_eq!(charge("usage"), None);
        assert_eq!(charge(""), None);
    }
}
