//! The node's routing table, from `/proc/net/route` (IPv4, the main table)
//! and `/proc/net/ipv6_route`: which interfaces the default routes leave by
//! (the uplinks, for coverage), and which addresses are routed to a device
//! of this node as single hosts (its pods, on CNIs that give each pod a
//! host route: AWS VPC CNI, Calico, Cilium), so a pod the inventory has not
//! heard of yet is still recognised as local.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `RTF_GATEWAY`: the route goes through a next hop.
const RTF_GATEWAY: u32 = 0x2;

/// One route: where to, how long a prefix, through which device, via a
/// gateway or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    destination: IpAddr,
    prefix_len: u8,
    device: String,
    gateway: bool,
}

/// The routes of this network namespace.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<Route>,
}

impl Table {
    /// Reads this network namespace's tables (empty where unreadable).
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Self::parse(&read("/proc/net/route"), &read("/proc/net/ipv6_route"))
    }

    /// Parses the two files' text.
    pub fn parse(route: &str, ipv6_route: &str) -> Self {
        let hex32 = |text: &str| u32::from_str_radix(text, 16).ok();
        let v4 = route.lines().skip(1).filter_map(|line| {
            // Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask
            let f: Vec<&str> = line.split_whitespace().collect();
            let mask = hex32(f.get(7)?)?;
            Some(Route {
                // The kernel prints the address in memory order.
                destination: IpAddr::V4(Ipv4Addr::from(hex32(f[1])?.swap_bytes())),
                prefix_len: u8::try_from(mask.count_ones()).ok()?,
                device: f[0].to_owned(),
                gateway: hex32(f[3])? & RTF_GATEWAY != 0,
            })
        });
        let v6 = ipv6_route.lines().filter_map(|line| {
            // destination, prefix length, source, source length, next hop,
            // metric, reference count, use, flags, device
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 10 {
                return None;
            }
            Some(Route {
                destination: IpAddr::V6(Ipv6Addr::from(u128::from_str_radix(f[0], 16).ok()?)),
                prefix_len: u8::from_str_radix(f[1], 16).ok()?,
                device: f[9].to_owned(),
                gateway: hex32(f[8])? & RTF_GATEWAY != 0,
            })
        });
        Self {
            routes: v4.chain(v6).collect(),
        }
    }

    /// The interfaces a default route leaves by, sorted, loopback aside.
    pub fn uplinks(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.prefix_len == 0 && r.destination.is_unspecified() && r.device != "lo")
            .map(|r| r.device.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Addresses routed as single hosts straight to a device of this node
    /// that is not an uplink nor loopback: its pods, on CNIs that route each
    /// pod to its interface.
    pub fn routed_here(&self) -> Vec<IpAddr> {
        let uplinks = self.uplinks();
        self.routes
            .iter()
            .filter(|r| {
                let host = match r.destination {
                    IpAddr::V4(_) => 32,
                    IpAddr::V6(_) => 128,
                };
                r.prefix_len == host
                    && !r.gateway
                    && r.device != "lo"
                    && !uplinks.contains(&r.device)
                    && !r.destination.is_loopback()
                    && !r.destination.is_multicast()
            })
            .map(|r| r.destination)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        eni3a\t0B01010A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        eth0\t0901010A\t010200C0\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        eth0\t0A01010A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    const IPV6: &str = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
        fd910001000000000000000000000011 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001    cali7\n\
        00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     ens6\n\
        00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
        ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001    cali7\n";

    #[test]
    fn uplinks_are_the_default_routes_interfaces() {
        assert_eq!(Table::parse(ROUTE, IPV6).uplinks(), ["ens6", "eth0"]);
    }

    /// A host route to a pod's interface is a pod here; a host route
    /// through a gateway or out of an uplink is not.
    #[test]
    fn host_routes_to_this_nodes_devices_are_its_pods() {
        let here = Table::parse(ROUTE, IPV6).routed_here();
        assert_eq!(
            here,
            [
                "10.1.1.11".parse::<IpAddr>().unwrap(),
                "fd91:1::11".parse().unwrap()
            ]
        );
    }
}
