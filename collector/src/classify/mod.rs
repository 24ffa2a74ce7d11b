//! Which billing category a transfer falls in, and why.
//!
//! [`Classifier::classify`] is a pure function of the local endpoint's
//! place (zone, region), what the remote endpoint is, and the rules; no I/O,
//! no clock. Precedence, first match wins:
//!
//! 1. a remote in this cluster (pod, node): compare zones and regions;
//! 2. the user's `direct_classification` CIDRs, which place an address in a
//!    region (and zone), then compared like a cluster peer;
//! 3. the user's `internet` CIDRs;
//! 4. the user's `in_zone`, `in_region` and `cross_region` CIDRs;
//! 5. a cloud provider's published range or a user-defined service:
//!    `cloud_service`;
//! 6. anything else: `internet`.
//!
//! Steps 2-4 and 6 are Kubecost's documented semantics. Within one list the
//! longest prefix wins. Cloud tagging (provider, service, region) is reported
//! for every external address it matches, whatever decided the category.

pub mod prefix;
pub mod ranges;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use tollgate_schema::{Category, Name};

use crate::inventory::Interner;
use prefix::PrefixMap;
use ranges::{CloudTag, Provider, RangeFileError};

/// The network rules of the configuration file (`network:`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// CIDRs placed in a region and optionally a zone (Kubecost's
    /// `direct-classification`); these win over every other list.
    #[serde(default)]
    pub direct_classification: Vec<DirectRule>,
    /// CIDRs that are always internet.
    #[serde(default)]
    pub internet: Vec<IpNet>,
    /// CIDRs in the local zone (free).
    #[serde(default)]
    pub in_zone: Vec<IpNet>,
    /// CIDRs in the local region, another zone.
    #[serde(default)]
    pub in_region: Vec<IpNet>,
    /// CIDRs in another region.
    #[serde(default)]
    pub cross_region: Vec<IpNet>,
    /// User-defined services: name -> CIDRs.
    #[serde(default)]
    pub services: Vec<ServiceRule>,
    /// The providers' published range files, by provider.
    #[serde(default)]
    pub cloud_ranges: CloudRanges,
}

/// CIDRs placed in a region (and zone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectRule {
    /// The addresses.
    pub cidrs: Vec<IpNet>,
    /// Their region.
    pub region: String,
    /// Their zone; without one, an address in the local region counts as
    /// another zone of it (Kubecost's `in-region`).
    #[serde(default)]
    pub zone: Option<String>,
}

/// A user-defined service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    /// Service name, reported as the remote's cloud service.
    pub name: String,
    /// Its addresses.
    pub cidrs: Vec<IpNet>,
}

/// Paths of the providers' range files (relative paths are relative to the
/// configuration file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRanges {
    /// AWS `ip-ranges.json`.
    pub aws: Option<PathBuf>,
    /// GCP `cloud.json`.
    pub gcp: Option<PathBuf>,
    /// Azure Service Tags JSON.
    pub azure: Option<PathBuf>,
}

/// A zone and a region; empty when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// Zone.
    pub zone: &'a str,
    /// Region.
    pub region: &'a str,
}

/// The remote endpoint, as far as the inventory knows it.
#[derive(Debug, Clone, Copy)]
pub enum Remote<'a> {
    /// A pod or node of this cluster, in this place.
    InCluster(Place<'a>),
    /// A ClusterIP whose backend is not known (the connection was never
    /// translated to a backend).
    ServiceAddress,
    /// Anything else: classified by the rules.
    External(IpAddr),
}

/// The rule that decided a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A cluster peer, compared by zone and region.
    Cluster,
    /// `direct_classification`, this prefix.
    Direct(IpNet),
    /// `internet`, this prefix.
    InternetList(IpNet),
    /// `in_zone`, this prefix.
    InZoneList(IpNet),
    /// `in_region`, this prefix.
    InRegionList(IpNet),
    /// `cross_region`, this prefix.
    CrossRegionList(IpNet),
    /// A provider's published range or a user service, this prefix.
    CloudRange(IpNet),
    /// A ClusterIP without a known backend.
    ServiceAddress,
    /// Nothing matched.
    Unmatched,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Cluster => f.write_str("cluster peer: zones and regions compared"),
            Rule::Direct(net) => write!(f, "network.direct_classification {net}"),
            Rule::InternetList(net) => write!(f, "network.internet {net}"),
            Rule::InZoneList(net) => write!(f, "network.in_zone {net}"),
            Rule::InRegionList(net) => write!(f, "network.in_region {net}"),
            Rule::CrossRegionList(net) => write!(f, "network.cross_region {net}"),
            Rule::CloudRange(net) => write!(f, "cloud range {net}"),
            Rule::ServiceAddress => f.write_str("Service address without a known backend"),
            Rule::Unmatched => f.write_str("no rule matched: internet"),
        }
    }
}

/// A classification: the category, the rule, and what is known of the
/// remote's place and cloud.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// Billing category.
    pub category: Category,
    /// What decided it.
    pub rule: Rule,
    /// The remote's region as a direct classification places it or as its
    /// cloud range says.
    pub region: Option<&'a Name>,
    /// The remote's zone, when a direct classification gives one.
    pub zone: Option<&'a Name>,
    /// The remote's cloud provider and service, when in a published range
    /// or a user service.
    pub cloud: Option<&'a CloudTag>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A range file is unusable.
    #[error(transparent)]
    RangeFile(#[from] RangeFileError),
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct Classifier {
    direct: PrefixMap<(Name, Option<Name>)>,
    internet: PrefixMap<()>,
    in_zone: PrefixMap<()>,
    in_region: PrefixMap<()>,
    cross_region: PrefixMap<()>,
    clouds: PrefixMap<CloudTag>,
}

impl Classifier {
    /// Compiles the rules, reading range files relative to `base`.
    pub fn new(
        config: &NetworkConfig,
        base: &Path,
        names: &mut Interner,
    ) -> Result<Self, RulesError> {
        let plain = |list: &[IpNet]| PrefixMap::new(list.iter().map(|n| (*n, (), 0)));
        let mut direct = Vec::new();
        for rule in &config.direct_classification {
            let place = (
                names.name(&rule.region),
                rule.zone.as_deref().map(|z| names.name(z)),
            );
            direct.extend(rule.cidrs.iter().map(|n| (*n, place.clone(), 0)));
        }
        let mut clouds = Vec::new();
        let files = [
            (Provider::Aws, &config.cloud_ranges.aws),
            (Provider::Gcp, &config.cloud_ranges.gcp),
            (Provider::Azure, &config.cloud_ranges.azure),
        ];
        for (provider, path) in files {
            if let Some(path) = path {
                clouds.extend(ranges::load(provider, &base.join(path), names)?);
            }
        }
        // A user's service is more specific than any provider's range.
        let no_provider = names.name("");
        for service in &config.services {
            let tag = CloudTag {
                provider: no_provider.clone(),
                service: names.name(&service.name),
                region: no_provider.clone(),
            };
            clouds.extend(service.cidrs.iter().map(|n| (*n, tag.clone(), u8::MAX)));
        }
        Ok(Self {
            direct: PrefixMap::new(direct),
            internet: plain(&config.internet),
            in_zone: plain(&config.in_zone),
            in_region: plain(&config.in_region),
            cross_region: plain(&config.cross_region),
            clouds: PrefixMap::new(clouds),
        })
    }

    /// Asks for the memory that step `step` (below
    /// [`Classifier::PREFETCH_STEPS`]) of classifying `ip` as an external
    /// address reads, without waiting for it; see [`PrefixMap::prefetch`].
    pub fn prefetch(&self, ip: IpAddr, step: usize) {
        self.clouds.prefetch(ip, step);
    }

    /// The steps of [`Classifier::prefetch`].
    pub const PREFETCH_STEPS: usize = PrefixMap::<CloudTag>::PREFETCH_STEPS;

    /// Number of cloud and user-service prefixes loaded.
    pub fn cloud_prefixes(&self) -> usize {
        self.clouds.len()
    }

    /// The category of a transfer between `local` and `remote`.
    pub fn classify<'a>(&'a self, local: Place<'_>, remote: Remote<'a>) -> Verdict<'a> {
        let verdict = |category, rule| Verdict {
            category,
            rule,
            region: None,
            zone: None,
            cloud: None,
        };
        let ip = match remote {
            Remote::InCluster(place) => {
                return verdict(compare(local, place.zone, place.region), Rule::Cluster)
            }
            Remote::ServiceAddress => return verdict(Category::Unknown, Rule::ServiceAddress),
            Remote::External(ip) => ip,
        };
        let cloud = self.clouds.lookup(ip);
        let cloud_region = cloud.map(|(_, tag)| &tag.region).filter(|r| !r.is_empty());
        let tagged = |category, rule| Verdict {
            category,
            rule,
            region: cloud_region,
            zone: None,
            cloud: cloud.map(|(_, tag)| tag),
        };
        if let Some((net, (region, zone))) = self.direct.lookup(ip) {
            let category = match zone {
                Some(zone) => compare(local, zone, region),
                // Region only: another zone of the local region, or another
                // region.
                None if !local.region.is_empty() && local.region == &**region => {
                    Category::CrossZone
                }
                None if !local.region.is_empty() => Category::CrossRegion,
                None => Category::Unknown,
            };
            return Verdict {
                region: Some(region),
                zone: zone.as_ref(),
                ..tagged(category, Rule::Direct(net))
            };
        }
        if let Some((net, ())) = self.internet.lookup(ip) {
            return tagged(Category::Internet, Rule::InternetList(net));
        }
        if let Some((net, ())) = self.in_zone.lookup(ip) {
            return tagged(Category::SameZone, Rule::InZoneList(net));
        }
        if let Some((net, ())) = self.in_region.lookup(ip) {
            return tagged(Category::CrossZone, Rule::InRegionList(net));
        }
        if let Some((net, ())) = self.cross_region.lookup(ip) {
            return tagged(Category::CrossRegion, Rule::CrossRegionList(net));
        }
        if let Some((net, _)) = cloud {
            return tagged(Category::CloudService, Rule::CloudRange(net));
        }
        tagged(Category::Internet, Rule::Unmatched)
    }
}

/// Two places of known zone and region: same zone, cross-zone or
/// cross-region; unknown where what is missing matters.
fn compare(local: Place<'_>, zone: &str, region: &str) -> Category {
    let regions_known = !local.region.is_empty() && !region.is_empty();
    let zones_known = !local.zone.is_empty() && !zone.is_empty();
    if regions_known && local.region != region {
        Category::CrossRegion
    } else if zones_known && local.zone == zone {
        // The same zone is the same region, whatever is known of regions.
        Category::SameZone
    } else if zones_known && regions_known {
        Category::CrossZone
    } else {
        Category::Unknown
    }
}

#[cfg(test)]
mod tests;
