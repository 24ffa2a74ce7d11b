//! The bill's and metering's sides of a month, summed per billed unit (a
//! resource, what it bills, which way) and day, matched by the instance a
//! node's `spec.providerID` names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::bill::{self, BillError, Billed, Direction, FileSummary, Format};
use super::metered::Metered;
use super::nat::NatRoutes;
use crate::export::{Grouping, Month};

/// The cloud a bill is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl Provider {
    /// Its name, as records name it (`local_provider`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        }
    }

    fn of(format: Format) -> Provider {
        match format {
            Format::AwsCsv | Format::AwsParquet => Provider::Aws,
            Format::GcpJson | Format::GcpCsv => Provider::Gcp,
            Format::AzureCsv => Provider::Azure,
        }
    }

    /// A billed resource of `account` as matched: a GCP instance's name is
    /// unique only in its project; Azure resource ids are case-insensitive.
    fn key(self, account: &str, resource: &str) -> String {
        match self {
            Provider::Gcp => format!("{account}/{resource}"),
            Provider::Azure => resource.to_ascii_lowercase(),
            Provider::Aws => resource.to_owned(),
        }
    }
}

/// The resources a bill may name for a node, from its `spec.providerID`:
/// the instance id on AWS (`aws:///eu-west-1a/i-0abc` bills `i-0abc`), the
/// project and the instance's name on GCP (`gce://project/zone/name`:
/// `project/name`, the bill's `project.id` and `resource.name`), on Azure the
/// virtual machine's resource id and, for a scale set's instance, the scale
/// set's (`azure:///subscriptions/.../virtualMachineScaleSets/s/virtualMachines/3`).
pub fn node_resources(provider_id: &str) -> Vec<(Provider, String)> {
    let Some((scheme, path)) = provider_id.split_once("://") else {
        return Vec::new();
    };
    let last = || path.rsplit('/').next().unwrap_or_default().to_owned();
    match scheme {
        "aws" => vec![(Provider::Aws, last())],
        "gce" => {
            let project = path.split('/').next().unwrap_or_default();
            vec![(Provider::Gcp, format!("{project}/{}", last()))]
        }
        "azure" => {
            let id = path.to_ascii_lowercase();
            let mut keys = Vec::new();
            if let Some((set, _)) = id
                .split_once("/virtualmachines/")
                .filter(|(set, _)| set.contains("/virtualmachinescalesets/"))
            {
                keys.push((Provider::Azure, set.to_owned()));
            }
            keys.push((Provider::Azure, id));
            keys
        }
        _ => Vec::new(),
    }
}

/// One billed resource, what it bills and which way: the unit whose cost
/// is split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unit {
    /// The cloud.
    pub provider: Provider,
    /// The resource as matched (see [`node_resources`]).
    pub resource: String,
    /// What it bills.
    pub billed: Billed,
    /// Which way.
    pub direction: Direction,
}

/// A unit's side of the bill.
#[derive(Debug, Clone, Default)]
pub struct UnitBill {
    /// The resource as the bill first wrote it.
    pub resource: String,
    /// The accounts its line items belong to.
    pub accounts: BTreeSet<String>,
    /// The provider's names for its usage.
    pub usages: BTreeSet<String>,
    /// Bytes and cost in billionths, per day.
    pub days: BTreeMap<NaiveDate, (u128, i128)>,
}

/// The bills of a month, summed per unit and day.
#[derive(Debug, Default)]
pub struct Bills {
    /// The units billed.
    pub units: BTreeMap<Unit, UnitBill>,
    /// The currency of every line item.
    pub currency: Option<String>,
    /// Each file read, its format and what was in it.
    pub files: Vec<(PathBuf, Format, FileSummary)>,
}

impl Bills {
    /// Adds the network line items of `file`.
    pub fn add_file(&mut self, file: &Path, month: Month) -> Result<(), BillError> {
        let units = &mut self.units;
        let format = bill::detect(file)?;
        let cloud = Provider::of(format);
        let summary = bill::read(file, format, month, &mut self.currency, &mut |item| {
            let unit = Unit {
                provider: cloud,
                resource: cloud.key(item.account, item.resource),
                billed: item.billed,
                direction: item.direction,
            };
            let entry = units.entry(unit).or_default();
            if entry.resource.is_empty() {
                entry.resource = item.resource.to_owned();
            }
            if !entry.accounts.contains(item.account) {
                entry.accounts.insert(item.account.to_owned());
            }
            if !entry.usages.contains(item.usage) {
                entry.usages.insert(item.usage.to_owned());
            }
            let day = entry.days.entry(item.day).or_default();
            day.0 += item.bytes;
            day.1 += item.cost_nanos;
            Ok(())
        })?;
        self.files.push((file.to_owned(), format, summary));
        Ok(())
    }

    /// The clouds the bills are from.
    pub fn providers(&self) -> BTreeSet<Provider> {
        self.files
            .iter()
            .map(|(_, f, _)| Provider::of(*f))
            .collect()
    }
}

/// The billed category a metered category is billed under, if any
/// (same-zone transfer is free; cloud services' traffic is billed by the
/// service, not as instance transfer).
pub fn billed_as(category: &str) -> Option<Billed> {
    match category {
        "cross_zone" | "public_in_region" => Some(Billed::CrossZone),
        "cross_region" => Some(Billed::CrossRegion),
        "internet" => Some(Billed::Internet),
        _ => None,
    }
}

/// Bytes per group on each day.
pub type DailyBytes = BTreeMap<NaiveDate, BTreeMap<Vec<String>, u64>>;

/// Metering's side of the month, per unit and day, with its groups.
#[derive(Debug, Default)]
pub struct Metering {
    /// Metered bytes per unit, day and group.
    pub units: HashMap<Unit, DailyBytes>,
    /// The clusters and nodes behind each resource.
    pub nodes: HashMap<(Provider, String), BTreeSet<(String, String)>>,
    /// Internet bytes of connections opened locally, both ways, per
    /// provider: what its NAT gateways processed.
    pub nat: HashMap<Provider, DailyBytes>,
    /// The same per declared gateway, from the zones it serves (an entry
    /// once any node of those zones was metered).
    pub nat_routed: HashMap<(Provider, String), DailyBytes>,
    /// The declared gateways.
    pub routes: NatRoutes,
    /// Metered bytes of records without a provider id (from agents older
    /// than the column): they cannot be matched to a bill.
    pub without_instance: u64,
    /// For each resource, the others its nodes may be billed under (an
    /// Azure scale set's instances and the scale set), itself included.
    pub aliases: HashMap<(Provider, String), BTreeSet<String>>,
    /// The resources that name a node first (the scale set, not each of
    /// its instances): the ones a metered unit the bill lacks is shown as.
    pub primary: BTreeSet<(Provider, String)>,
}

impl Metering {
    /// The metered rows of the clouds in `providers`, grouped by
    /// `grouping`'s labels; a gateway `routes` declares is split over the
    /// nodes of its zones.
    pub fn new(
        rows: &[Metered],
        grouping: Grouping,
        providers: &BTreeSet<Provider>,
        routes: NatRoutes,
    ) -> Self {
        let labels = grouping.label_columns().len();
        let mut metering = Metering {
            routes,
            ..Metering::default()
        };
        for row in rows {
            if row.provider_id.is_empty() {
                if billed_as(&row.category).is_some() {
                    metering.without_instance += row.bytes;
                }
                continue;
            }
            let group = row.group[..labels].to_vec();
            let direction = if row.direction == "out" {
                Direction::Out
            } else {
                Direction::In
            };
            let resources = node_resources(&row.provider_id);
            if let Some(first) = resources.first() {
                metering.primary.insert(first.clone());
            }
            for (provider, resource) in &resources {
                metering
                    .aliases
                    .entry((*provider, resource.clone()))
                    .or_default()
                    .extend(resources.iter().map(|(_, r)| r.clone()));
            }
            // Once per row, not per name its node goes by (an Azure scale
            // set's instance is also the scale set).
            if let Some(&(provider, _)) = resources.first().filter(|(p, _)| providers.contains(p)) {
                metering.add_nat(provider, row, &group);
            }
            for (provider, resource) in resources {
                if !providers.contains(&provider) {
                    continue;
                }
                metering
                    .nodes
                    .entry((provider, resource.clone()))
                    .or_default()
                    .insert((row.group[0].clone(), row.node.clone()));
                let Some(billed) = billed_as(&row.category) else {
                    continue;
                };
                let unit = Unit {
                    provider,
                    resource,
                    billed,
                    direction,
                };
                *metering
                    .units
                    .entry(unit)
                    .or_default()
                    .entry(row.day)
                    .or_default()
                    .entry(group.clone())
                    .or_default() += row.bytes;
            }
        }
        metering
    }

    /// Counts `row`'s locally opened internet bytes as processed by its
    /// cloud's NAT gateways, and by the declared gateways of its zone.
    fn add_nat(&mut self, provider: Provider, row: &Metered, group: &[String]) {
        let routed: Vec<String> = self
            .routes
            .0
            .iter()
            .filter(|route| route.zones.contains(&row.zone))
            .map(|route| route.gateway.clone())
            .collect();
        for gateway in &routed {
            self.nat_routed
                .entry((provider, gateway.clone()))
                .or_default();
        }
        if row.category != "internet" || row.initiated_bytes == 0 {
            return;
        }
        let add = |days: &mut DailyBytes| {
            *days
                .entry(row.day)
                .or_default()
                .entry(group.to_vec())
                .or_default() += row.initiated_bytes;
        };
        add(self.nat.entry(provider).or_default());
        for gateway in routed {
            add(self.nat_routed.entry((provider, gateway)).or_default());
        }
    }

    /// The metered bytes a unit's cost is split by, per day and group: a    /// The metered bytes a unit's cost is split by, per day and group: a
    /// NAT gateway's are the internet bytes of connections opened locally
    /// by the nodes of the zones declared for it, or by all of its cloud's
    /// nodes when it is not declared (a bill does not say which nodes use
    /// which gateway).
    pub fn basis(&self, unit: &Unit) -> Option<&DailyBytes> {
        match unit.billed {
            Billed::NatGateway => match self.routes.of(&unit.resource) {
                Some(route) => self.nat_routed.get(&(unit.provider, route.gateway.clone())),
                None => self.nat.get(&unit.provider),
            },
            Billed::Unmetered => None,
            _ => self.units.get(unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_provider_id_names_the_resources_its_bill_names() {
        assert_eq!(
            node_resources("aws:///eu-west-1a/i-0abc"),
            [(Provider::Aws, "i-0abc".to_owned())]
        );
        assert_eq!(
            node_resources("gce://shop-prod/europe-west1-b/gke-pool-1-abcd"),
            [(Provider::Gcp, "shop-prod/gke-pool-1-abcd".to_owned())]
        );
        assert_eq!(
            node_resources(
                "azure:///subscriptions/S/resourceGroups/MC_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool-1-vmss/virtualMachines/3"
            ),
            [
                (Provider::Azure, "/subscriptions/s/resourcegroups/mc_rg/providers/microsoft.compute/virtualmachinescalesets/aks-pool-1-vmss".to_owned()),
                (Provider::Azure, "/subscriptions/s/resourcegroups/mc_rg/providers/microsoft.compute/virtualmachinescalesets/aks-pool-1-vmss/virtualmachines/3".to_owned()),
            ]
        );
        assert!(node_resources("kind://docker/k/n").is_empty());
        assert!(node_resources("").is_empty());
    }
}
