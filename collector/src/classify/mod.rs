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
//! 5. a cloud provider's published range or a user-defined service, as the
//!    provider bills it:
//!    - a service range (object storage, APIs; a user service): in the
//!      local region or in none, `cloud_service`; in another region,
//!      `cross_region`;
//!    - addresses the provider's customers rent (AWS `EC2`, Azure
//!      `AzureCloud`, GCP `cloud.json`): on AWS, `public_in_region` in the
//!      local region (billed each way even within a zone) and
//!      `cross_region` in another; elsewhere `internet`;
//!    - any range of another provider than the local node's: `internet`;
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
use tollgate_schema::{Category, Name, RemoteKind};

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
    /// What an overlay's outer packets look like between two nodes.
    #[serde(default)]
    pub tunnels: Tunnels,
}

/// The outer flows of overlay networks and encrypted node links: between
/// two node addresses, to or from one of these UDP ports or in one of these
/// IP protocols. Their bytes carry pod traffic that the pods' own records
/// already bill, so they are counted (`tollgate_tunnel_bytes_total`), never
/// billed again as node traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunnels {
    /// UDP ports: VXLAN 8472 (Linux, flannel, Cilium) and 4789 (IANA,
    /// Calico), Geneve 6081 (Antrea, OVN-Kubernetes), WireGuard 51820
    /// (Calico, flannel) and 51871 (Cilium).
    pub udp_ports: Vec<u16>,
    /// IP protocols: IPIP 4 (Calico), GRE 47, ESP 50 (IPsec).
    pub protocols: Vec<u8>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            udp_ports: vec![8472, 4789, 6081, 51820, 51871],
            protocols: vec![4, 47, 50],
        }
    }
}

impl NetworkConfig {
    /// What YAML cannot check: every network written without host bits,
    /// no rule without addresses, every region, zone and service named.
    /// Errors name the field, e.g. `network.in_zone[2]`.
    pub fn check(&self) -> Result<(), String> {
        let networks = |field: &str, list: &[IpNet], required: bool| {
            if required && list.is_empty() {
                return Err(format!("{field}: give at least one CIDR"));
            }
            list.iter()
                .enumerate()
                .try_for_each(|(i, n)| crate::input::check_network(&format!("{field}[{i}]"), n))
        };
        for (name, list) in [
            ("internet", &self.internet),
            ("in_zone", &self.in_zone),
            ("in_region", &self.in_region),
            ("cross_region", &self.cross_region),
        ] {
            networks(&format!("network.{name}"), list, false)?;
        }
        let mut seen: Vec<(IpNet, String)> = Vec::new();
        for (name, list) in [
            ("internet", &self.internet),
            ("in_zone", &self.in_zone),
            ("in_region", &self.in_region),
            ("cross_region", &self.cross_region),
        ] {
            for (i, network) in list.iter().enumerate() {
                let field = format!("network.{name}[{i}]");
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == network) {
                    return Err(format!(
                        "{field}: {network} is also {first}: a network has one category"
                    ));
                }
                seen.push((*network, field));
            }
        }
        for (i, rule) in self.direct_classification.iter().enumerate() {
            let field = format!("network.direct_classification[{i}]");
            networks(&format!("{field}.cidrs"), &rule.cidrs, true)?;
            crate::input::check_name(&format!("{field}.region"), &rule.region, true)?;
            if let Some(zone) = &rule.zone {
                crate::input::check_name(&format!("{field}.zone"), zone, true)?;
            }
        }
        if self.cloud_ranges.google.is_some() && self.cloud_ranges.gcp.is_none() {
            return Err(
                "network.cloud_ranges.google: give gcp (cloud.json) too: goog.json also lists GCP customers' ranges, and only cloud.json tells them apart"
                    .into(),
            );
        }
        if self.tunnels.udp_ports.contains(&0) {
            return Err("network.tunnels.udp_ports: 0 is no port".into());
        }
        if let Some(p) = self
            .tunnels
            .protocols
            .iter()
            .find(|&&p| matches!(p, 6 | 17))
        {
            return Err(format!(
                "network.tunnels.protocols: {p} is {}, not a tunnel protocol (give its ports in udp_ports)",
                if *p == 6 { "TCP" } else { "UDP" }
            ));
        }
        for (i, rule) in self.services.iter().enumerate() {
            let field = format!("network.services[{i}]");
            crate::input::check_name(&format!("{field}.name"), &rule.name, true)?;
            networks(&format!("{field}.cidrs"), &rule.cidrs, true)?;
        }
        Ok(())
    }
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
    /// GCP `cloud.json`: addresses of customers' resources.
    pub gcp: Option<PathBuf>,
    /// GCP `goog.json`: Google's services (less what `cloud.json` lists).
    pub google: Option<PathBuf>,
    /// Azure Service Tags JSON.
    pub azure: Option<PathBuf>,
}

/// A zone, a region and a cloud provider; empty when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place<'a> {
    /// Zone.
    pub zone: &'a str,
    /// Region.
    pub region: &'a str,
    /// Cloud provider (`aws`, `gcp`, `azure`): another provider's ranges
    /// are internet to it. Where unknown, ranges are taken as its own
    /// provider's.
    pub provider: &'a str,
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
    /// A provider's service range or a user service, this prefix.
    CloudRange(IpNet),
    /// A provider's range of addresses its customers rent, this prefix.
    CustomerRange(IpNet),
    /// Another provider's range than the local one, this prefix.
    OtherProvider(IpNet),
    /// A special-purpose address (loopback, link-local: the metadata
    /// service and NodeLocal DNS; multicast, broadcast): never internet.
    Special(IpNet),
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
            Rule::CustomerRange(net) => {
                write!(
                    f,
                    "cloud customers' range {net}: billed as a public address"
                )
            }
            Rule::OtherProvider(net) => write!(f, "another provider's range {net}: internet"),
            Rule::Special(net) => write!(
                f,
                "special-purpose range {net} (loopback, link-local or multicast): in the zone"
            ),
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

impl Verdict<'_> {
    /// What an address outside the cluster is, by what classified it: a
    /// cloud (or user) service, a public address, or unknown.
    pub fn external_kind(&self) -> RemoteKind {
        match (self.rule, self.category) {
            (Rule::CloudRange(_), _) | (_, Category::CloudService) => RemoteKind::CloudService,
            (Rule::CustomerRange(_), _) | (_, Category::Internet | Category::PublicInRegion) => {
                RemoteKind::Internet
            }
            _ => RemoteKind::Unknown,
        }
    }
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
    tunnels: Tunnels,
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
            (Provider::Google, &config.cloud_ranges.google),
            (Provider::Azure, &config.cloud_ranges.azure),
        ];
        let mut customers_of_gcp = Vec::new();
        for (provider, path) in files {
            let Some(path) = path else { continue };
            let loaded = ranges::load(provider, &base.join(path), names)?;
            match provider {
                Provider::Gcp => customers_of_gcp.extend(loaded.iter().map(|(net, ..)| *net)),
                // goog.json lists cloud.json's ranges too: those are
                // customers', and a range inside one of them would win it
                // by its longer prefix.
                Provider::Google => {
                    clouds.extend(loaded.into_iter().filter(|(net, ..)| {
                        !customers_of_gcp
                            .iter()
                            .any(|customers| customers.contains(net))
                    }));
                    continue;
                }
                Provider::Aws | Provider::Azure => {}
            }
            clouds.extend(loaded);
        }
        // A user's service is more specific than any provider's range.
        let no_provider = names.name("");
        for service in &config.services {
            let tag = CloudTag {
                provider: no_provider.clone(),
                service: names.name(&service.name),
                region: no_provider.clone(),
                service_range: true,
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
            tunnels: config.tunnels.clone(),
        })
    }

    /// Whether a connection between two nodes, in IP protocol `protocol`
    /// with these ports, is a tunnel's outer flow.
    pub fn is_tunnel(&self, protocol: u8, ports: Option<(u16, u16)>) -> bool {
        const UDP: u8 = 17;
        match ports {
            Some((src, dst)) if protocol == UDP => self
                .tunnels
                .udp_ports
                .iter()
                .any(|&port| port == src || port == dst),
            _ => self.tunnels.protocols.contains(&protocol),
        }
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
        // A special-purpose address is never internet, whatever rule would
        // make it so; checked only then, off the path of every other address.
        let internet = |rule| match special_range(ip) {
            Some(net) => verdict(Category::SameZone, Rule::Special(net)),
            None => tagged(Category::Internet, rule),
        };
        if let Some((net, ())) = self.internet.lookup(ip) {
            return internet(Rule::InternetList(net));
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
        if let Some((net, tag)) = cloud {
            // Transfer to another cloud leaves this one: internet, whatever
            // the range is to its own provider's customers.
            if !tag.provider.is_empty()
                && !local.provider.is_empty()
                && *tag.provider != *local.provider
            {
                return tagged(Category::Internet, Rule::OtherProvider(net));
            }
            let regions_known = !local.region.is_empty() && !tag.region.is_empty();
            let elsewhere = regions_known && *tag.region != *local.region;
            if tag.service_range {
                let category = if elsewhere {
                    Category::CrossRegion
                } else {
                    Category::CloudService
                };
                return tagged(category, Rule::CloudRange(net));
            }
            let category = match &*tag.provider {
                "aws" if elsewhere => Category::CrossRegion,
                "aws" if regions_known => Category::PublicInRegion,
                _ => Category::Internet,
            };
            return tagged(category, Rule::CustomerRange(net));
        }
        internet(Rule::Unmatched)
    }
}

/// The special-purpose range holding `ip`, if any: addresses that never
/// leave the node or its link (loopback; link-local, where the clouds'
/// metadata service at 169.254.169.254 and NodeLocal DNS at 169.254.20.10
/// answer; multicast and broadcast). Kubecost ships them as in-zone; no
/// cloud bills them as transfer.
fn special_range(ip: IpAddr) -> Option<IpNet> {
    // Decided by the first bytes, which almost every address fails at once:
    // this runs for every address outside the cluster.
    let (base, len): (IpAddr, u8) = match ip.to_canonical() {
        IpAddr::V4(v4) => match v4.octets() {
            [0, ..] => ([0, 0, 0, 0].into(), 8),
            [127, ..] => ([127, 0, 0, 0].into(), 8),
            [169, 254, ..] => ([169, 254, 0, 0].into(), 16),
            [224..=239, ..] => ([224, 0, 0, 0].into(), 4),
            [255, 255, 255, 255] => ([255, 255, 255, 255].into(), 32),
            _ => return None,
        },
        IpAddr::V6(v6) => match v6.segments() {
            [0, 0, 0, 0, 0, 0, 0, last @ (0 | 1)] => {
                (std::net::Ipv6Addr::from(u128::from(last)).into(), 128)
            }
            [first, ..] if first & 0xffc0 == 0xfe80 => ("fe80::".parse().ok()?, 10),
            [first, ..] if first & 0xff00 == 0xff00 => ("ff00::".parse().ok()?, 8),
            _ => return None,
        },
    };
    IpNet::new(base, len).ok()
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
