//! Flow records for suites that write to the stores: a pod-side record
//! with the fields a test does not care about left empty, and the clock.

use std::net::{IpAddr, Ipv6Addr};

use tollgate_schema::{Category, Family, FlowRecord, Initiator, Protocol, RemoteKind};

/// An address as records store it (IPv4 as IPv4-mapped IPv6).
pub fn ip(text: &str) -> Ipv6Addr {
    match text.parse::<IpAddr>().expect("an IP address") {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The real clock, in seconds, as ClickHouse's now() sees it.
pub fn unix_now() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    u32::try_from(now).expect("clock before 2106")
}

/// Midnight UTC two days ago: a whole day that retention keeps and that has ended.
pub fn day_before_yesterday() -> u32 {
    let now = unix_now();
    now - now % 86_400 - 2 * 86_400
}

/// A pod-side record; the fields a test does not care about stay empty.
pub fn record(
    node: &str,
    local: (&str, &str, &str),
    remote: (&str, &str, &str),
    category: Category,
) -> FlowRecord {
    let zone = |node: &str| if node == "n-a" { "zone-a" } else { "zone-b" };
    FlowRecord {
        observed_at: day_before_yesterday(),
        interval_seconds: 10,
        cluster: "c1".into(),
        node: node.into(),
        family: Family::Ipv4,
        protocol: Protocol::TCP,
        local_ip: ip("10.0.0.1"),
        local_port: 40000,
        local_pod: format!("{}-0", local.1).into(),
        local_namespace: local.0.into(),
        local_workload_kind: "Deployment".into(),
        local_workload: local.1.into(),
        local_team: local.2.into(),
        local_zone: zone(node).into(),
        local_region: "r1".into(),
        local_provider: "".into(),
        local_provider_id: "".into(),
        remote_ip: ip("10.0.1.1"),
        remote_port: 5432,
        remote_kind: if remote.0.is_empty() {
            RemoteKind::Internet
        } else {
            RemoteKind::Pod
        },
        remote_pod: "".into(),
        remote_namespace: remote.0.into(),
        remote_workload_kind: "".into(),
        remote_workload: remote.1.into(),
        remote_team: remote.2.into(),
        remote_node: "".into(),
        remote_zone: "".into(),
        remote_region: "".into(),
        remote_cloud_provider: "".into(),
        remote_cloud_service: "".into(),
        remote_service: "".into(),
        initiator: Initiator::Local,
        bytes_sent: 0,
        bytes_received: 0,
        packets_sent: 1,
        packets_received: 1,
        category,
        ended: false,
        conntrack_id: 7,
    }
}
