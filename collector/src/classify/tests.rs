//! Table tests: every precedence rule, both families, overlapping prefixes,
//! the providers' real file formats.

use super::*;

const RULES: &str = "
direct_classification:
  - {cidrs: [172.16.0.0/16, 'fd10::/32'], region: r1, zone: r1-b}
  - {cidrs: [172.17.0.0/16], region: r1}
  - {cidrs: [172.18.0.0/16], region: r2}
  - {cidrs: [52.95.144.0/25], region: r1, zone: r1-a}
internet: [172.16.9.0/24, 100.64.0.0/10, '2001:db8:ffff::/48']
in_zone: [10.0.0.0/8, 100.64.1.0/24, 'fd00::/16']
in_region: [10.20.0.0/16, 192.168.0.0/16]
cross_region: [10.20.30.0/24, 192.168.0.0/16, 'fd00:30::/32']
services:
  - {name: corp-backup, cidrs: [198.51.100.0/24, 13.69.40.128/25]}
cloud_ranges:
  aws: aws-ip-ranges.json
  gcp: gcp-cloud.json
  azure: azure-service-tags.json
";

fn classifier() -> Classifier {
    let config: NetworkConfig = serde_saphyr::from_str(RULES).unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ranges");
    Classifier::new(&config, &base, &mut Interner::default()).unwrap()
}

const LOCAL: Place<'static> = Place {
    zone: "r1-a",
    region: "r1",
    provider: "",
};

#[test]
fn cluster_peers_compare_zones_and_regions() {
    let c = classifier();
    let peer = |zone, region| {
        c.classify(
            LOCAL,
            Remote::InCluster(Place {
                zone,
                region,
                provider: "",
            }),
        )
    };
    let table = [
        ("r1-a", "r1", Category::SameZone),
        ("r1-b", "r1", Category::CrossZone),
        ("r2-a", "r2", Category::CrossRegion),
        // Unknowns are not guessed...
        ("", "r1", Category::Unknown),
        ("r1-b", "", Category::Unknown),
        ("", "", Category::Unknown),
        // ...except what is certain: a same zone, another region.
        ("r1-a", "", Category::SameZone),
        ("", "r2", Category::CrossRegion),
    ];
    for (zone, region, expected) in table {
        let v = peer(zone, region);
        assert_eq!(v.category, expected, "peer in {zone:?}/{region:?}");
        assert_eq!(v.rule, Rule::Cluster);
    }
    // A cluster peer wins over every CIDR list: the inventory knows better.
    assert_eq!(
        c.classify(LOCAL, Remote::ServiceAddress).category,
        Category::Unknown
    );
}

#[test]
fn external_addresses_follow_the_precedence() {
    let c = classifier();
    // (address, category, rule that must decide, cloud service)
    let table: &[(&str, Category, &str, Option<&str>)] = &[
        // 1. direct classification first, compared with the local place.
        (
            "172.16.1.1",
            Category::CrossZone,
            "network.direct_classification 172.16.0.0/16",
            None,
        ),
        (
            "fd10::1",
            Category::CrossZone,
            "network.direct_classification fd10::/32",
            None,
        ),
        // ...even inside an `internet` prefix that is longer.
        (
            "172.16.9.9",
            Category::CrossZone,
            "network.direct_classification 172.16.0.0/16",
            None,
        ),
        // Region only: the local region is another zone of it; another region.
        (
            "172.17.0.1",
            Category::CrossZone,
            "network.direct_classification 172.17.0.0/16",
            None,
        ),
        (
            "172.18.0.1",
            Category::CrossRegion,
            "network.direct_classification 172.18.0.0/16",
            None,
        ),
        // Direct classification also beats a provider range (and keeps the tag).
        (
            "52.95.144.5",
            Category::SameZone,
            "network.direct_classification 52.95.144.0/25",
            Some("S3"),
        ),
        // 2. internet before the in-zone/in-region/cross-region lists.
        (
            "100.64.1.1",
            Category::Internet,
            "network.internet 100.64.0.0/10",
            None,
        ),
        (
            "2001:db8:ffff::1",
            Category::Internet,
            "network.internet 2001:db8:ffff::/48",
            None,
        ),
        // 3. in-zone, then in-region, then cross-region: list order, not
        //    prefix length, decides between lists.
        (
            "10.20.30.1",
            Category::SameZone,
            "network.in_zone 10.0.0.0/8",
            None,
        ),
        (
            "fd00:30::1",
            Category::SameZone,
            "network.in_zone fd00::/16",
            None,
        ),
        (
            "192.168.5.5",
            Category::CrossZone,
            "network.in_region 192.168.0.0/16",
            None,
        ),
        // 4. cloud ranges and user services: a service in another region
        //    (the local region is r1) is cross-region...
        (
            "52.95.144.200",
            Category::CrossRegion,
            "cloud range 52.95.144.0/24",
            Some("S3"),
        ),
        (
            "2600:1fa0:4000::9",
            Category::CrossRegion,
            "cloud range 2600:1fa0:4000::/40",
            Some("S3"),
        ),
        (
            "13.69.40.5",
            Category::CrossRegion,
            "cloud range 13.69.40.0/24",
            Some("AzureStorage"),
        ),
        // ...AWS's own endpoints without a region are a cloud service...
        (
            "3.5.1.1",
            Category::CloudService,
            "cloud range 3.5.0.0/16",
            Some("AMAZON"),
        ),
        // ...and customers' addresses are public ones.
        (
            "34.104.112.7",
            Category::Internet,
            "cloud customers' range 34.104.112.0/23: billed as a public address",
            Some("Google Cloud"),
        ),
        // A user service beats the provider range it sits in.
        (
            "13.69.40.200",
            Category::CloudService,
            "cloud range 13.69.40.128/25",
            Some("corp-backup"),
        ),
        (
            "198.51.100.1",
            Category::CloudService,
            "cloud range 198.51.100.0/24",
            Some("corp-backup"),
        ),
        // 5. anything else is internet.
        (
            "8.8.8.8",
            Category::Internet,
            "no rule matched: internet",
            None,
        ),
        (
            "2a00:1450::1",
            Category::Internet,
            "no rule matched: internet",
            None,
        ),
    ];
    for (ip, category, rule, service) in table {
        let v = c.classify(LOCAL, Remote::External(ip.parse().unwrap()));
        assert_eq!(v.category, *category, "{ip}");
        assert_eq!(v.rule.to_string(), *rule, "{ip}");
        assert_eq!(v.cloud.map(|t| &*t.service), *service, "{ip}");
    }
}

#[test]
fn the_remote_place_comes_from_the_rule_or_the_cloud_range() {
    let c = classifier();
    let place = |ip: &str| {
        let v = c.classify(LOCAL, Remote::External(ip.parse().unwrap()));
        (
            v.zone.map(|z| z.to_string()),
            v.region.map(|r| r.to_string()),
        )
    };
    assert_eq!(
        place("172.16.1.1"),
        (Some("r1-b".into()), Some("r1".into()))
    );
    assert_eq!(place("172.17.0.1"), (None, Some("r1".into())));
    assert_eq!(place("52.95.144.200"), (None, Some("eu-west-2".into())));
    assert_eq!(place("3.5.1.1"), (None, None), "AWS GLOBAL has no region");
    assert_eq!(place("8.8.8.8"), (None, None));
    let v = c.classify(LOCAL, Remote::External("52.95.144.200".parse().unwrap()));
    assert_eq!(v.cloud.map(|t| &*t.provider), Some("aws"));
}

#[test]
fn without_a_local_region_region_only_rules_stay_unknown() {
    let c = classifier();
    let nowhere = Place::default();
    let v = c.classify(nowhere, Remote::External("172.17.0.1".parse().unwrap()));
    assert_eq!(v.category, Category::Unknown);
}

#[test]
fn a_missing_range_file_is_named() {
    let config: NetworkConfig =
        serde_saphyr::from_str("cloud_ranges: {aws: nowhere/ip-ranges.json}").unwrap();
    let error = Classifier::new(
        &config,
        Path::new("/etc/tollgate"),
        &mut Interner::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("/etc/tollgate/nowhere/ip-ranges.json"),
        "{error}"
    );
}

/// Loopback, link-local (the metadata service, NodeLocal DNS), multicast and
/// broadcast never leave the node's link: in the zone, never internet, even
/// under an `internet` rule that covers them; a direct rule still wins.
#[test]
fn special_purpose_addresses_are_in_the_zone_never_internet() {
    let config: NetworkConfig = serde_saphyr::from_str(
        "internet: [0.0.0.0/0, '::/0']\ndirect_classification: [{cidrs: [169.254.7.0/24], region: r2}]\n",
    )
    .unwrap();
    let c = Classifier::new(&config, Path::new("."), &mut Interner::default()).unwrap();
    for (ip, range) in [
        ("169.254.169.254", "169.254.0.0/16"),
        ("169.254.20.10", "169.254.0.0/16"),
        ("127.0.0.53", "127.0.0.0/8"),
        ("224.0.0.251", "224.0.0.0/4"),
        ("255.255.255.255", "255.255.255.255/32"),
        ("::1", "::1/128"),
        ("fe80::1", "fe80::/10"),
        ("ff02::fb", "ff00::/8"),
        ("::ffff:169.254.169.254", "169.254.0.0/16"),
    ] {
        let verdict = c.classify(LOCAL, Remote::External(ip.parse().unwrap()));
        assert_eq!(verdict.category, Category::SameZone, "{ip}");
        assert_eq!(verdict.rule, Rule::Special(range.parse().unwrap()), "{ip}");
    }
    for ip in ["169.255.0.1", "223.255.255.255", "fec0::1", "8.8.8.8"] {
        let verdict = c.classify(LOCAL, Remote::External(ip.parse().unwrap()));
        assert_eq!(verdict.category, Category::Internet, "{ip}");
    }
    let direct = c.classify(LOCAL, Remote::External("169.254.7.1".parse().unwrap()));
    assert_eq!(direct.category, Category::CrossRegion);
}

/// How providers bill their published ranges: only service ranges are
/// cloud services, in the local region; customers' addresses are public
/// ones; another provider's ranges are internet.
#[test]
fn cloud_ranges_are_billed_as_their_provider_bills_them() {
    let config: NetworkConfig = serde_saphyr::from_str(
        "cloud_ranges:
  aws: aws-ip-ranges.json
  gcp: gcp-cloud.json
  google: gcp-goog.json
  azure: azure-service-tags.json
",
    )
    .unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ranges");
    let c = Classifier::new(&config, &base, &mut Interner::default()).unwrap();
    let local = Place {
        zone: "use1-az1",
        region: "us-east-1",
        provider: "aws",
    };
    let on_gcp = Place {
        zone: "us-east1-b",
        region: "us-east1",
        provider: "gcp",
    };
    let on_azure = Place {
        zone: "northeurope-1",
        region: "northeurope",
        provider: "azure",
    };
    // Each range as seen from a node of its own provider: AWS us-east-1,
    // GCP us-east1, Azure northeurope.
    let table = [
        // S3 in this region: a cloud service (free through a gateway endpoint).
        ("52.216.1.1", Category::CloudService, "us-east-1", "S3"),
        // S3 in another region: cross-region, priced by the pair.
        ("52.95.144.9", Category::CrossRegion, "eu-west-2", "S3"),
        (
            "2600:1fa0:4000::9",
            Category::CrossRegion,
            "eu-west-2",
            "S3",
        ),
        // An EC2 address (a customer's) in this region: AWS bills a public
        // address in the region each way.
        ("18.34.0.9", Category::PublicInRegion, "us-east-1", "EC2"),
        // AWS's own endpoints listed only as AMAZON (SQS, STS...): free
        // from EC2 in the same region, like S3.
        ("52.94.1.1", Category::CloudService, "us-east-1", "AMAZON"),
        (
            "2600:1f18::1",
            Category::CloudService,
            "us-east-1",
            "AMAZON",
        ),
        // Google's APIs (goog.json less cloud.json): a cloud service.
        ("142.250.1.1", Category::CloudService, "", "Google APIs"),
        ("34.0.0.1", Category::CloudService, "", "Google APIs"),
        ("2001:4860::8888", Category::CloudService, "", "Google APIs"),
        // GCP customers' addresses, even where goog.json lists them too.
        (
            "34.1.208.5",
            Category::Internet,
            "africa-south1",
            "Google Cloud",
        ),
        (
            "34.104.112.7",
            Category::Internet,
            "europe-west1",
            "Google Cloud",
        ),
        (
            "2600:1900:4010::1",
            Category::Internet,
            "europe-west1",
            "Google Cloud",
        ),
        // Azure: a tag with a system service is a service; AzureCloud is
        // customers'.
        (
            "13.69.40.5",
            Category::CrossRegion,
            "westeurope",
            "AzureStorage",
        ),
        ("13.69.1.1", Category::Internet, "westeurope", "AzureCloud"),
        ("8.8.8.8", Category::Internet, "", ""),
    ];
    for (ip, category, region, service) in table {
        let place = match service {
            "Google APIs" | "Google Cloud" => on_gcp,
            "AzureStorage" | "AzureCloud" => on_azure,
            _ => local,
        };
        let v = c.classify(place, Remote::External(ip.parse().unwrap()));
        assert_eq!(v.category, category, "{ip}: {}", v.rule);
        assert_eq!(v.region.map_or("", |r| &**r), region, "{ip}");
        assert_eq!(v.cloud.map_or("", |t| &*t.service), service, "{ip}");
        let kind = match category {
            Category::CloudService => RemoteKind::CloudService,
            Category::CrossRegion if service != "Google Cloud" => RemoteKind::CloudService,
            _ => RemoteKind::Internet,
        };
        assert_eq!(v.external_kind(), kind, "{ip}");
    }
    // From another region, an AWS customer's address is cross-region
    // (AWS bills transfer between regions as such, over public addresses
    // too); another provider's customers are internet from anywhere.
    let elsewhere = Place {
        zone: "euw1-az1",
        region: "eu-west-1",
        provider: "aws",
    };
    let v = c.classify(elsewhere, Remote::External("18.34.0.9".parse().unwrap()));
    assert_eq!(
        (v.category, v.region.map(|r| r.to_string())),
        (Category::CrossRegion, Some("us-east-1".into()))
    );
    assert_eq!(v.external_kind(), RemoteKind::Internet);
    // Another provider's ranges, services or not, are internet: a GCP
    // node reaching S3, an AWS node reaching Google's APIs or Azure Storage.
    for (place, ip) in [
        (on_gcp, "52.216.1.1"),
        (on_gcp, "18.34.0.9"),
        (local, "142.250.1.1"),
        (local, "13.69.40.5"),
    ] {
        let v = c.classify(place, Remote::External(ip.parse().unwrap()));
        assert_eq!(v.category, Category::Internet, "{ip} from {place:?}");
        assert!(
            v.rule.to_string().starts_with("another provider's range"),
            "{ip}: {}",
            v.rule
        );
        assert!(v.cloud.is_some(), "{ip} keeps its tag");
    }
    // goog.json alone cannot tell Google's services from its customers.
    let config: NetworkConfig =
        serde_saphyr::from_str("cloud_ranges: {google: gcp-goog.json}").unwrap();
    let error = config.check().unwrap_err();
    assert!(error.contains("network.cloud_ranges.google"), "{error}");
}
