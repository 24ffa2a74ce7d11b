//! Azure cost details (Cost Management exports and downloads, "cost and
//! usage details"), CSV (`.csv` or `.csv.gz`): read record by record into
//! one reused record, its columns found by their header names regardless
//! of case (Enterprise Agreement files write `MeterCategory`, Microsoft
//! Customer Agreement files `meterCategory`).
//!
//! # Columns
//!
//! | column (first name found) | use |
//! |---|---|
//! | `MeterCategory`, `MeterSubCategory`, `MeterName` | what the line bills: the table below; `MeterName` is the line item's `usage`, followed by the subcategory in parentheses when there is one (`Standard Data Transfer Out (Rtn Preference: MGN)`), as the two internet routing preferences share meter names |
//! | `Date` (older files: `UsageDate`, `UsageDateTime`, `UsageStart`) | its day: `MM/DD/YYYY` (EA) or `YYYY-MM-DD` (MCA), a time after it ignored |
//! | `Quantity` (older: `ConsumedQuantity`, `UsageQuantity`), `UnitOfMeasure` | its bytes: the quantity counts units of `1 GB`, `10 GB`, `100 GB`... of 2^30 bytes; any other unit on a network meter is an error |
//! | `CostInBillingCurrency` (older EA files: `Cost`; pay-as-you-go: `PreTaxCost`) | its cost, exactly as written, before credits and taxes (the invoice applies those to the whole bill) |
//! | `BillingCurrencyCode` (EA), `BillingCurrency` (MCA; older files: `Currency`) | its currency |
//! | `ResourceId` (`InstanceId`) | its resource, as written |
//! | `SubscriptionId` (`SubscriptionGuid`) | its account |
//!
//! # Meters
//!
//! Matched ignoring case.
//!
//! | `MeterCategory` | `MeterSubCategory`, `MeterName` | billed | direction |
//! |---|---|---|---|
//! | `Bandwidth` | naming `Availability Zone`: `Inter Availability Zone Data Transfer Out` (free; may appear at zero cost) | cross_zone | out |
//! | `Bandwidth` | naming `Availability Zone`: `Inter Availability Zone Data Transfer In` | cross_zone | in |
//! | `Bandwidth` | naming `Inter-Region`, `Inter Region`, `Intra Continent` or `Inter Continent`: `Intra Continent Data Transfer Out`, `Inter Continent Data Transfer Out - NAM or EU To Any`, ... | cross_region | out (in if the meter says `Data Transfer In` or `Ingress`) |
//! | `Bandwidth` | any other meter naming `Data Transfer Out`: `Standard Data Transfer Out` (routing preference Microsoft network, `Rtn Preference: MGN`, or Internet), `Data Transfer Out (GB)`, ... | internet | out |
//! | `Bandwidth` | any other meter naming `Data Transfer In`: `Data Transfer In`, `Standard Data Transfer In` | internet | in |
//! | `NAT Gateway`, or `Virtual Network` with a `NAT Gateway` subcategory | a meter naming `Data Processed`: `Standard Data Processed`, `Data Processed` | nat_gateway | out |
//! | anything else: `Virtual Machines`, `Storage`, `Load Balancer` (its `Standard Data Processed` too), `Azure Firewall`, `Virtual Network` peering, `Bandwidth` meters naming no transfer, ... | | not network | |
//!
//! A NAT gateway's `Data Processed` meter counts both directions of its
//! connections alike. Every line read counts in [`FileSummary::lines`];
//! line N is the N-th record after the header.

use std::path::Path;

use chrono::NaiveDate;

use super::{
    next_record, open_text, BillError, Billed, Decimal, Direction, Expect, FileSummary, LineItem,
};

/// The columns [`read`] takes, each by the names it goes by, the first
/// found taken.
const COLUMNS: [&[&str]; 10] = [
    &["MeterCategory"],
    &["MeterSubCategory"],
    &["MeterName"],
    &["Date", "UsageDate", "UsageDateTime", "UsageStart"],
    &["Quantity", "ConsumedQuantity", "UsageQuantity"],
    &["UnitOfMeasure"],
    &["CostInBillingCurrency", "Cost", "PreTaxCost"],
    &["BillingCurrencyCode", "BillingCurrency", "Currency"],
    &["ResourceId", "InstanceId"],
    &["SubscriptionId", "SubscriptionGuid"],
];

/// Reads the cost details `file`, handing each network line item to
/// `on_item`.
pub fn read(
    file: &Path,
    mut expect: Expect<'_>,
    on_item: &mut dyn FnMut(LineItem<'_>) -> Result<(), BillError>,
) -> Result<FileSummary, BillError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open_text(file)?);
    let header = reader
        .headers()
        .map_err(|e| BillError::new(file, 0, "-", e))?
        .clone();
    // A byte order mark would stick to the first name.
    let name = |column: usize| {
        header
            .get(column)
            .unwrap_or("-")
            .trim_start_matches('\u{feff}')
            .trim()
    };
    let mut columns = [0; COLUMNS.len()];
    for (slot, names) in columns.iter_mut().zip(COLUMNS) {
        *slot = names
            .iter()
            .find_map(|wanted| (0..header.len()).find(|&at| name(at).eq_ignore_ascii_case(wanted)))
            .ok_or_else(|| {
                BillError::new(
                    file,
                    0,
                    names[0],
                    format!(
                        "no such column in the header (as {}, in any case): not Azure cost \
                         details, or a layout without it",
                        names.join(" or ")
                    ),
                )
            })?;
    }
    let [category, subcategory, meter, date, quantity, unit, cost, currency, resource, subscription] =
        columns;
    let mut summary = FileSummary::default();
    let mut record = csv::StringRecord::new();
    let mut usage = String::new();
    let mut line = 0;
    while next_record(&mut reader, &mut record, file, &mut line)? {
        summary.lines += 1;
        let field = |column: usize| record.get(column).unwrap_or("").trim();
        let Some((billed, direction)) = classify(field(category), field(subcategory), field(meter))
        else {
            continue;
        };
        let error =
            |column: usize, message: String| BillError::new(file, line, name(column), message);
        let day = parse_day(field(date)).ok_or_else(|| {
            error(
                date,
                format!(
                    "{:?} is not a date like 10/01/2026 or 2026-10-01",
                    field(date)
                ),
            )
        })?;
        expect.check(line, (day, name(date)), (field(currency), name(currency)))?;
        let units = gigabytes(field(unit)).ok_or_else(|| {
            error(
                unit,
                format!(
                    "unit {:?} on a network meter: expected a number of GB (1 GB, 10 GB...)",
                    field(unit)
                ),
            )
        })?;
        let bytes = Decimal::parse(field(quantity))
            .ok_or_else(|| error(quantity, format!("{:?} is not a number", field(quantity))))?
            .times(units << 30, 1)
            .and_then(|bytes| u128::try_from(bytes).ok())
            .ok_or_else(|| {
                error(
                    quantity,
                    format!(
                        "{} × {} is negative or too large",
                        field(quantity),
                        field(unit)
                    ),
                )
            })?;
        let cost_nanos = Decimal::parse(field(cost))
            .ok_or_else(|| error(cost, format!("{:?} is not a number", field(cost))))?
            .nanos()
            .ok_or_else(|| error(cost, "too large a cost".to_owned()))?;
        usage.clear();
        usage.push_str(field(meter));
        if !field(subcategory).is_empty() {
            usage.push_str(" (");
            usage.push_str(field(subcategory));
            usage.push(')');
        }
        on_item(LineItem {
            line,
            resource: field(resource),
            usage: &usage,
            billed,
            direction,
            day,
            bytes,
            cost_nanos,
            currency: field(currency),
            account: field(subscription),
        })?;
        summary.network_lines += 1;
    }
    Ok(summary)
}

/// What a meter bills (the module's table); `None` for anything but
/// network transfer.
fn classify(category: &str, subcategory: &str, meter: &str) -> Option<(Billed, Direction)> {
    let has = |text: &str, needle: &str| {
        text.as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
    };
    let either = |needle: &str| has(meter, needle) || has(subcategory, needle);
    if category.eq_ignore_ascii_case("NAT Gateway")
        || category.eq_ignore_ascii_case("Virtual Network") && has(subcategory, "NAT Gateway")
    {
        return has(meter, "Data Processed").then_some((Billed::NatGateway, Direction::Out));
    }
    let processing_or_transfer = has(meter, "Data Processed")
        || has(meter, "Data Transfer")
        || has(meter, "Ingress")
        || has(meter, "Egress");
    if (category.eq_ignore_ascii_case("Load Balancer")
        || category.eq_ignore_ascii_case("Content Delivery Network")
        || category.eq_ignore_ascii_case("Azure Front Door")
        || category.eq_ignore_ascii_case("Virtual Network") && either("Private Link"))
        && processing_or_transfer
    {
        // A load balancer's processing, a CDN's transfer, Private Link's
        // processing: network cost no node's conntrack table sees.
        return Some((Billed::Unmetered, Direction::Out));
    }
    if !category.eq_ignore_ascii_case("Bandwidth") {
        return None;
    }
    let direction = if has(meter, "Data Transfer In") || has(meter, "Ingress") {
        Direction::In
    } else {
        Direction::Out
    };
    if either("Availability Zone") {
        Some((Billed::CrossZone, direction))
    } else if [
        "Inter-Region",
        "Inter Region",
        "Intra Continent",
        "Inter Continent",
    ]
    .into_iter()
    .any(either)
    {
        Some((Billed::CrossRegion, direction))
    } else if has(meter, "Data Transfer Out") || has(meter, "Data Transfer In") {
        Some((Billed::Internet, direction))
    } else {
        None
    }
}

/// The day of `MM/DD/YYYY` or `YYYY-MM-DD`, any time after it ignored.
fn parse_day(text: &str) -> Option<NaiveDate> {
    let date = text.split([' ', 'T']).next()?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date, "%m/%d/%Y"))
        .ok()
}

/// The GB in a unit of measure: 10 for `10 GB`, 1 for `GB`.
fn gigabytes(unit: &str) -> Option<i128> {
    let count = unit
        .strip_suffix("GB")
        .or_else(|| unit.strip_suffix("gb"))?
        .trim();
    if count.is_empty() {
        Some(1)
    } else if count.bytes().all(|b| b.is_ascii_digit()) {
        count
            .parse()
            .ok()
            .filter(|&count| count > 0 && count < 1 << 60)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use std::path::PathBuf;

    use super::*;
    use crate::reconcile::bill::{describe, read_described, Format};
    use crate::test_support::TempDir;

    /// The Enterprise Agreement cost and usage details file, version
    /// 2024-08-01, its columns in order.
    const EA: [&str; 57] = [
        "InvoiceSectionName",
        "AccountName",
        "AccountOwnerId",
        "SubscriptionId",
        "SubscriptionName",
        "ResourceGroup",
        "ResourceLocation",
        "Date",
        "ProductName",
        "MeterCategory",
        "MeterSubCategory",
        "MeterId",
        "MeterName",
        "MeterRegion",
        "UnitOfMeasure",
        "Quantity",
        "EffectivePrice",
        "CostInBillingCurrency",
        "CostCenter",
        "ConsumedService",
        "ResourceId",
        "Tags",
        "OfferId",
        "AdditionalInfo",
        "ServiceInfo1",
        "ServiceInfo2",
        "ResourceName",
        "ReservationId",
        "ReservationName",
        "UnitPrice",
        "ProductOrderId",
        "ProductOrderName",
        "Term",
        "PublisherType",
        "PublisherName",
        "ChargeType",
        "Frequency",
        "PricingModel",
        "AvailabilityZone",
        "BillingAccountId",
        "BillingAccountName",
        "BillingCurrencyCode",
        "BillingPeriodStartDate",
        "BillingPeriodEndDate",
        "BillingProfileId",
        "BillingProfileName",
        "InvoiceSectionId",
        "IsAzureCreditEligible",
        "PartNumber",
        "PayGPrice",
        "PlanName",
        "ServiceFamily",
        "CostAllocationRuleName",
        "benefitId",
        "benefitName",
        "AccountId",
        "ResourceLocationNormalized",
    ];

    /// The Microsoft Customer Agreement cost and usage details file,
    /// version 2023-12-01-preview, its columns in order.
    const MCA: [&str; 65] = [
        "invoiceId",
        "previousInvoiceId",
        "billingAccountId",
        "billingAccountName",
        "billingProfileId",
        "billingProfileName",
        "invoiceSectionId",
        "invoiceSectionName",
        "resellerName",
        "resellerMpnId",
        "costCenter",
        "billingPeriodEndDate",
        "billingPeriodStartDate",
        "servicePeriodEndDate",
        "servicePeriodStartDate",
        "date",
        "serviceFamily",
        "productOrderId",
        "productOrderName",
        "consumedService",
        "meterId",
        "meterName",
        "meterCategory",
        "meterSubCategory",
        "meterRegion",
        "ProductId",
        "ProductName",
        "SubscriptionId",
        "subscriptionName",
        "publisherType",
        "publisherId",
        "publisherName",
        "resourceGroupName",
        "ResourceId",
        "resourceLocation",
        "location",
        "effectivePrice",
        "quantity",
        "unitOfMeasure",
        "chargeType",
        "billingCurrency",
        "pricingCurrency",
        "costInBillingCurrency",
        "costInPricingCurrency",
        "costInUsd",
        "paygCostInBillingCurrency",
        "paygCostInUsd",
        "exchangeRatePricingToBilling",
        "exchangeRateDate",
        "isAzureCreditEligible",
        "serviceInfo1",
        "serviceInfo2",
        "additionalInfo",
        "tags",
        "PayGPrice",
        "frequency",
        "term",
        "reservationId",
        "reservationName",
        "pricingModel",
        "unitPrice",
        "costAllocationRuleName",
        "benefitId",
        "benefitName",
        "provider",
    ];

    const SUBSCRIPTION: &str = "6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b";
    const VMSS_WEU: &str = "/subscriptions/6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b/resourceGroups/MC_shop-prod_aks-weu_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-31415926-vmss";
    const VMSS_NEU: &str = "/subscriptions/6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b/resourceGroups/MC_shop-prod_aks-neu_northeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-27182818-vmss";
    const NAT: &str = "/subscriptions/6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b/resourceGroups/MC_shop-prod_aks-weu_westeurope/providers/Microsoft.Network/natGateways/aks-natgw";

    /// One line of cost details: what varies, by EA column name.
    #[derive(Clone, Copy)]
    struct Line {
        date: &'static str,
        location: &'static str,
        resource: &'static str,
        category: &'static str,
        subcategory: &'static str,
        product: &'static str,
        meter: &'static str,
        unit: &'static str,
        quantity: &'static str,
        cost: &'static str,
        currency: &'static str,
    }

    const EGRESS: Line = Line {
        date: "10/03/2026",
        location: "westeurope",
        resource: VMSS_WEU,
        category: "Bandwidth",
        subcategory: "Rtn Preference: MGN",
        product: "Rtn Preference: MGN",
        meter: "Standard Data Transfer Out",
        unit: "1 GB",
        quantity: "12.5",
        cost: "1.0875",
        currency: "USD",
    };

    /// A month of two AKS clusters (West and North Europe): VM hours,
    /// disks, the uptime SLA, transfer of each kind, a NAT gateway and a
    /// load balancer.
    const MONTH: [Line; 12] = [
        Line {
            category: "Virtual Machines",
            subcategory: "Dsv5 Series",
            product: "Virtual Machines Dsv5 Series",
            meter: "D4s v5",
            unit: "1 Hour",
            quantity: "72",
            cost: "13.824",
            ..EGRESS
        },
        Line {
            category: "Storage",
            subcategory: "Premium SSD Managed Disks",
            product: "Premium SSD Managed Disks",
            meter: "P10 LRS Disk",
            unit: "1/Month",
            quantity: "0.0967741935",
            cost: "1.8548387097",
            ..EGRESS
        },
        EGRESS,
        Line {
            date: "10/04/2026",
            subcategory: "Routing Preference: Internet",
            product: "Bandwidth - Routing Preference: Internet",
            unit: "10 GB",
            quantity: "0.35",
            cost: "0.2625",
            ..EGRESS
        },
        Line {
            date: "10/04/2026",
            subcategory: "",
            product: "Bandwidth",
            meter: "Standard Data Transfer In",
            quantity: "48.204",
            cost: "0",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            subcategory: "Inter-Region",
            product: "Rtn Preference: MGN",
            meter: "Intra Continent Data Transfer Out",
            quantity: "3.2",
            cost: "0.064",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            subcategory: "Inter Availability Zone",
            product: "Bandwidth",
            meter: "Inter Availability Zone Data Transfer Out",
            quantity: "40",
            cost: "0",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            subcategory: "Inter Availability Zone",
            product: "Bandwidth",
            meter: "Inter Availability Zone Data Transfer In",
            quantity: "38.75",
            cost: "0",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            resource: NAT,
            category: "NAT Gateway",
            subcategory: "",
            product: "NAT Gateway",
            meter: "Standard Data Processed",
            quantity: "6.000000001",
            cost: "0.27000000004500001",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            resource: "/subscriptions/6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b/resourceGroups/MC_shop-prod_aks-weu_westeurope/providers/Microsoft.Network/loadBalancers/kubernetes",
            category: "Load Balancer",
            subcategory: "",
            product: "Load Balancer",
            meter: "Standard Data Processed",
            quantity: "210.4",
            cost: "1.052",
            ..EGRESS
        },
        Line {
            date: "10/17/2026",
            resource: "/subscriptions/6f1c2a3b-5d4e-4f60-8a9b-0c1d2e3f4a5b/resourcegroups/shop-prod/providers/Microsoft.ContainerService/managedClusters/aks-weu",
            category: "Azure Kubernetes Service",
            subcategory: "Standard",
            product: "Azure Kubernetes Service",
            meter: "Standard Uptime SLA",
            unit: "1 Hour",
            quantity: "24",
            cost: "2.4",
            ..EGRESS
        },
        Line {
            date: "10/31/2026",
            location: "northeurope",
            resource: VMSS_NEU,
            quantity: "7.25E-1",
            cost: "6.3075E-2",
            ..EGRESS
        },
    ];

    const EXPECTED: [&str; 9] = [
        "3 aks-nodepool1-31415926-vmss | Standard Data Transfer Out (Rtn Preference: MGN) | internet out 2026-10-03 13421772800 1087500000 USD",
        "4 aks-nodepool1-31415926-vmss | Standard Data Transfer Out (Routing Preference: Internet) | internet out 2026-10-04 3758096384 262500000 USD",
        "5 aks-nodepool1-31415926-vmss | Standard Data Transfer In | internet in 2026-10-04 51758650884 0 USD",
        "6 aks-nodepool1-31415926-vmss | Intra Continent Data Transfer Out (Inter-Region) | cross_region out 2026-10-17 3435973837 64000000 USD",
        "7 aks-nodepool1-31415926-vmss | Inter Availability Zone Data Transfer Out (Inter Availability Zone) | cross_zone out 2026-10-17 42949672960 0 USD",
        "8 aks-nodepool1-31415926-vmss | Inter Availability Zone Data Transfer In (Inter Availability Zone) | cross_zone in 2026-10-17 41607495680 0 USD",
        "9 aks-natgw | Standard Data Processed | nat_gateway out 2026-10-17 6442450945 270000000 USD",
        "10 kubernetes | Standard Data Processed | not_metered out 2026-10-17 225915279770 1052000000 USD",
        "12 aks-nodepool1-27182818-vmss | Standard Data Transfer Out (Rtn Preference: MGN) | internet out 2026-10-31 778462822 63075000 USD",
    ];

    /// The line as an EA file's record, by column name.
    fn ea(line: &Line) -> Vec<(&'static str, String)> {
        let name = line.resource.rsplit('/').next().unwrap_or_default();
        [
            ("InvoiceSectionName", "Platform"),
            ("AccountName", "Platform engineering"),
            ("AccountOwnerId", "platform@shop.example"),
            ("SubscriptionId", SUBSCRIPTION),
            ("SubscriptionName", "shop-prod"),
            ("ResourceGroup", "MC_shop-prod_aks-weu_westeurope"),
            ("ResourceLocation", line.location),
            ("Date", line.date),
            ("ProductName", line.product),
            ("MeterCategory", line.category),
            ("MeterSubCategory", line.subcategory),
            ("MeterId", "9995d93a-7d35-4d3f-9c69-7a7fea447ef4"),
            ("MeterName", line.meter),
            ("MeterRegion", "Zone 1"),
            ("UnitOfMeasure", line.unit),
            ("Quantity", line.quantity),
            ("EffectivePrice", "0.087"),
            ("CostInBillingCurrency", line.cost),
            ("ConsumedService", "Microsoft.Compute"),
            ("ResourceId", line.resource),
            (
                "Tags",
                r#""aks-managed-cluster-name": "aks-weu","aks-managed-poolName": "nodepool1""#,
            ),
            ("OfferId", "MS-AZR-0017P"),
            ("AdditionalInfo", r#"{"UsageResourceKind":"DataTrOut"}"#),
            ("ResourceName", name),
            ("UnitPrice", "0.087"),
            ("PublisherType", "Azure"),
            ("PublisherName", "Microsoft"),
            ("ChargeType", "Usage"),
            ("Frequency", "UsageBased"),
            ("PricingModel", "OnDemand"),
            ("BillingAccountId", "87654321"),
            ("BillingAccountName", "Shop Holdings"),
            ("BillingCurrencyCode", line.currency),
            ("BillingPeriodStartDate", "10/01/2026"),
            ("BillingPeriodEndDate", "10/31/2026"),
            ("BillingProfileId", "87654321"),
            ("BillingProfileName", "Shop Holdings"),
            ("InvoiceSectionId", "1234567"),
            ("IsAzureCreditEligible", "True"),
            ("PartNumber", "AAA-12345"),
            ("PayGPrice", "0.087"),
            ("ServiceFamily", "Networking"),
            ("AccountId", "7654321"),
            ("ResourceLocationNormalized", line.location),
        ]
        .map(|(column, value)| (column, value.to_owned()))
        .to_vec()
    }

    /// The line as an MCA file's record: ISO dates, camelCase names.
    fn mca(line: &Line) -> Vec<(&'static str, String)> {
        let date = NaiveDate::parse_from_str(line.date, "%m/%d/%Y")
            .unwrap()
            .to_string();
        [
            ("invoiceId", "G041234567"),
            ("billingAccountId", "1a2b3c4d-0000-1111-2222-333344445555:66667777-8888-9999-aaaa-bbbbccccdddd_2019-05-31"),
            ("billingAccountName", "Shop Holdings"),
            ("billingProfileId", "ABCD-EF12-BG7-TGB"),
            ("billingProfileName", "Shop Holdings"),
            ("invoiceSectionId", "WXYZ-1234-PJA-TGB"),
            ("invoiceSectionName", "Platform"),
            ("billingPeriodEndDate", "2026-10-31"),
            ("billingPeriodStartDate", "2026-10-01"),
            ("servicePeriodEndDate", "2026-10-31"),
            ("servicePeriodStartDate", "2026-10-01"),
            ("date", &date),
            ("serviceFamily", "Networking"),
            ("consumedService", "Microsoft.Compute"),
            ("meterId", "9995d93a-7d35-4d3f-9c69-7a7fea447ef4"),
            ("meterName", line.meter),
            ("meterCategory", line.category),
            ("meterSubCategory", line.subcategory),
            ("meterRegion", "Zone 1"),
            ("ProductId", "DZH318Z0BNVX"),
            ("ProductName", line.product),
            ("SubscriptionId", SUBSCRIPTION),
            ("subscriptionName", "shop-prod"),
            ("publisherType", "Microsoft"),
            ("publisherName", "Microsoft"),
            ("resourceGroupName", "MC_shop-prod_aks-weu_westeurope"),
            ("ResourceId", line.resource),
            ("resourceLocation", line.location),
            ("location", "EU West"),
            ("effectivePrice", "0.087"),
            ("quantity", line.quantity),
            ("unitOfMeasure", line.unit),
            ("chargeType", "Usage"),
            ("billingCurrency", line.currency),
            ("pricingCurrency", "USD"),
            ("costInBillingCurrency", line.cost),
            ("costInPricingCurrency", line.cost),
            ("costInUsd", line.cost),
            ("paygCostInBillingCurrency", line.cost),
            ("paygCostInUsd", line.cost),
            ("exchangeRatePricingToBilling", "1"),
            ("exchangeRateDate", "2026-10-01"),
            ("isAzureCreditEligible", "True"),
            ("tags", r#"{"aks-managed-cluster-name":"aks-weu"}"#),
            ("PayGPrice", "0.087"),
            ("frequency", "UsageBased"),
            ("pricingModel", "OnDemand"),
            ("unitPrice", "0.087"),
            ("provider", "Azure"),
        ]
        .map(|(column, value)| (column, value.to_owned()))
        .to_vec()
    }

    /// Writes `lines` under `header`, each record's columns by name (an
    /// unknown name fails the test), the rest empty.
    fn write(
        path: &Path,
        header: &[&str],
        lines: &[Line],
        record: fn(&Line) -> Vec<(&'static str, String)>,
    ) -> PathBuf {
        let mut writer = csv::Writer::from_path(path).unwrap();
        writer.write_record(header).unwrap();
        for line in lines {
            let mut row = vec![String::new(); header.len()];
            for (column, value) in record(line) {
                let at = header.iter().position(|name| *name == column);
                row[at.unwrap_or_else(|| panic!("no column {column}"))] = value;
            }
            writer.write_record(&row).unwrap();
        }
        writer.flush().unwrap();
        path.to_owned()
    }

    /// Reads `file` as `tollgate reconcile` does, for October 2026: its
    /// format, summary and line items (the resource's last name), or the
    /// error's message.
    fn read_file(file: &Path) -> Result<(Format, FileSummary, Vec<String>), String> {
        read_described(file, |item| {
            assert_eq!(item.account, SUBSCRIPTION);
            assert!(item.resource.starts_with("/subscriptions/"));
            describe(item, item.resource.rsplit('/').next().unwrap())
        })
    }

    fn month() -> (Format, FileSummary, Vec<String>) {
        let summary = FileSummary {
            lines: 12,
            network_lines: 9,
        };
        (
            Format::AzureCsv,
            summary,
            EXPECTED.map(str::to_owned).to_vec(),
        )
    }

    #[test]
    fn an_enterprise_agreement_file_hands_on_the_network_meters() {
        let dir = TempDir::new("azure-ea");
        let file = write(&dir.join("costdetails.csv"), &EA, &MONTH, ea);
        assert_eq!(read_file(&file).unwrap(), month());
    }

    #[test]
    fn a_customer_agreement_file_reads_the_same() {
        let dir = TempDir::new("azure-mca");
        let file = write(&dir.join("costdetails.csv"), &MCA, &MONTH, mca);
        assert_eq!(read_file(&file).unwrap(), month());
    }

    /// Microsoft's older names of the columns `Date`, `Quantity` and
    /// `ResourceId`.
    fn older(column: &'static str) -> &'static str {
        match column {
            "Date" => "UsageDate",
            "Quantity" => "ConsumedQuantity",
            "ResourceId" => "InstanceId",
            other => other,
        }
    }

    #[test]
    fn a_file_with_the_older_column_names_reads_the_same() {
        let dir = TempDir::new("azure-older");
        let header = EA.map(older);
        let file = write(&dir.join("usage.csv"), &header, &MONTH, |line| {
            ea(line)
                .into_iter()
                .map(|(column, value)| (older(column), value))
                .collect()
        });
        assert_eq!(read_file(&file).unwrap(), month());
    }

    #[test]
    fn meters_are_classified_by_category_and_name() {
        use Billed::*;
        use Direction::*;
        for ((category, subcategory, meter), expected) in [
            (
                ("Bandwidth", "", "Data Transfer Out (GB)"),
                Some((Internet, Out)),
            ),
            (
                ("Bandwidth", "", "Data Transfer In (GB)"),
                Some((Internet, In)),
            ),
            (
                (
                    "Bandwidth",
                    "Inter-Region",
                    "Inter Continent Data Transfer Out - NAM or EU To Any",
                ),
                Some((CrossRegion, Out)),
            ),
            (
                ("Bandwidth", "", "Standard Inter-Region Data Transfer"),
                Some((CrossRegion, Out)),
            ),
            (
                ("Virtual Network", "NAT Gateway", "Data Processed"),
                Some((NatGateway, Out)),
            ),
            (("NAT Gateway", "", "Standard Gateway"), None),
            (("Azure Firewall", "", "Standard Data Processed"), None),
            (("Virtual Network", "Peering", "Intra-Region Egress"), None),
            (
                (
                    "Bandwidth",
                    "",
                    "Standard Routing Preference Internet Static IP",
                ),
                None,
            ),
        ] {
            assert_eq!(classify(category, subcategory, meter), expected, "{meter}");
        }
    }

    /// The error reading [`EGRESS`] followed by `bad`, in an EA file.
    fn error(name: &str, bad: Line) -> (PathBuf, String) {
        let dir = TempDir::new(name);
        let file = write(&dir.join("costdetails.csv"), &EA, &[EGRESS, bad], ea);
        let error = read_file(&file).unwrap_err();
        (file, error)
    }

    #[test]
    fn a_line_of_another_month_is_an_error() {
        let (file, message) = error(
            "azure-month",
            Line {
                date: "11/01/2026",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column Date: 2026-11-01 is not in 2026-10: this is a bill of another month",
                file.display()
            )
        );
    }

    #[test]
    fn a_line_in_another_currency_is_an_error() {
        let (file, message) = error(
            "azure-currency",
            Line {
                currency: "EUR",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column BillingCurrencyCode: currency \"EUR\", but earlier line items are in \"USD\": one currency per reconciliation",
                file.display()
            )
        );
    }

    #[test]
    fn a_network_meter_in_another_unit_is_an_error() {
        let (file, message) = error(
            "azure-unit",
            Line {
                unit: "1 Hour",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column UnitOfMeasure: unit \"1 Hour\" on a network meter: expected a number of GB (1 GB, 10 GB...)",
                file.display()
            )
        );
    }

    #[test]
    fn a_bad_number_or_date_is_an_error() {
        let (file, message) = error(
            "azure-quantity",
            Line {
                quantity: "12,5",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column Quantity: \"12,5\" is not a number",
                file.display()
            )
        );
        let (file, message) = error(
            "azure-cost",
            Line {
                cost: "$1.09",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column CostInBillingCurrency: \"$1.09\" is not a number",
                file.display()
            )
        );
        let (file, message) = error(
            "azure-date",
            Line {
                date: "31.10.2026",
                ..EGRESS
            },
        );
        assert_eq!(
            message,
            format!(
                "{}:2: column Date: \"31.10.2026\" is not a date like 10/01/2026 or 2026-10-01",
                file.display()
            )
        );
    }

    #[test]
    fn a_missing_column_is_an_error_of_the_file() {
        let dir = TempDir::new("azure-column");
        let header: Vec<&str> = MCA
            .into_iter()
            .filter(|name| *name != "unitOfMeasure")
            .collect();
        let file = dir.join("costdetails.csv");
        let mut writer = csv::Writer::from_path(&file).unwrap();
        writer.write_record(&header).unwrap();
        writer.flush().unwrap();
        assert_eq!(
            read_file(&file).unwrap_err(),
            format!(
                "{}: column UnitOfMeasure: no such column in the header (as UnitOfMeasure, in any \
                 case): not Azure cost details, or a layout without it",
                file.display()
            )
        );
    }
}
