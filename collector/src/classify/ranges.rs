//! The cloud providers' published address ranges: AWS `ip-ranges.json`,
//! GCP `cloud.json` and `goog.json`, Azure Service Tags JSON.
//!
//! Each file becomes prefixes tagged with provider, service and region, and
//! whether the range is the provider's own service or addresses its
//! customers rent. Providers list broad ranges (AWS `AMAZON`, Azure
//! `AzureCloud`) and the specific services inside them, sometimes with the
//! very same prefix: the specific entry gets the higher priority, so it wins
//! a tie.
//!
//! Customers' addresses: AWS `EC2` (instances' public and Elastic IPs),
//! Azure tags without a `systemService` (`AzureCloud`), GCP `cloud.json`
//! (external addresses of customers' resources). Services: every other AWS
//! code (`S3`, `DYNAMODB`..., and `AMAZON` where no other code lists the
//! address: AWS's own endpoints), Azure tags with a `systemService`, and
//! GCP's `goog.json` (Google's APIs and services) less what `cloud.json`
//! lists.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use tollgate_schema::Name;

use crate::inventory::Interner;

/// Which provider's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// AWS `ip-ranges.json`.
    Aws,
    /// GCP `cloud.json`.
    Gcp,
    /// GCP `goog.json`: Google's own services.
    Google,
    /// Azure Service Tags (`ServiceTags_Public_*.json`).
    Azure,
}

impl Provider {
    /// The provider's name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp | Provider::Google => "gcp",
            Provider::Azure => "azure",
        }
    }
}

/// What an address of a published range is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloudTag {
    /// `aws`, `gcp`, `azure`, or empty for a user-defined service.
    pub provider: Name,
    /// The provider's service name (`S3`, `AzureStorage`, `Google Cloud`),
    /// or the user's.
    pub service: Name,
    /// The provider's region, when the range has one.
    pub region: Name,
    /// A provider's (or the user's) service, not addresses the provider's
    /// customers rent: only these are `cloud_service`.
    pub service_range: bool,
}

/// A range file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RangeFileError {
    /// The file could not be read, or is not text.
    #[error(transparent)]
    Read(#[from] crate::input::InputError),
    /// The file is not in the provider's format.
    #[error("{provider} range file {path}: {message}")]
    Format {
        /// Provider whose file it is.
        provider: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column or the entry.
        message: String,
    },
}

#[derive(Deserialize)]
struct AwsFile {
    prefixes: Vec<AwsPrefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsPrefix6>,
}

#[derive(Deserialize)]
struct AwsPrefix {
    ip_prefix: IpNet,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct AwsPrefix6 {
    ipv6_prefix: IpNet,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct GcpFile {
    prefixes: Vec<GcpPrefix>,
}

#[derive(Deserialize)]
struct GcpPrefix {
    #[serde(rename = "ipv4Prefix")]
    ipv4: Option<IpNet>,
    #[serde(rename = "ipv6Prefix")]
    ipv6: Option<IpNet>,
    service: String,
    scope: String,
}

#[derive(Deserialize)]
struct GoogleFile {
    prefixes: Vec<GooglePrefix>,
}

#[derive(Deserialize)]
struct GooglePrefix {
    #[serde(rename = "ipv4Prefix")]
    ipv4: Option<IpNet>,
    #[serde(rename = "ipv6Prefix")]
    ipv6: Option<IpNet>,
}

/// One address family's prefix of a GCP file entry.
fn gcp_prefix(i: usize, ipv4: Option<IpNet>, ipv6: Option<IpNet>) -> Result<IpNet, String> {
    let net = match (ipv4, ipv6) {
        (Some(v4), None) => (v4, true),
        (None, Some(v6)) => (v6, false),
        (None, None) => {
            return Err(format!(
                "prefixes[{i}] has neither ipv4Prefix nor ipv6Prefix"
            ))
        }
        (Some(_), Some(_)) => {
            return Err(format!(
                "prefixes[{i}] has both ipv4Prefix and ipv6Prefix: one each"
            ))
        }
    };
    check(&format!("prefixes[{i}]"), &net.0, Some(net.1))?;
    Ok(net.0)
}

/// The name given to `goog.json`'s ranges, which name no service.
pub const GOOGLE_SERVICES: &str = "Google APIs";

#[derive(Deserialize)]
struct AzureFile {
    values: Vec<AzureTag>,
}

#[derive(Deserialize)]
struct AzureTag {
    name: String,
    properties: AzureProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureProperties {
    #[serde(default)]
    region: String,
    #[serde(default)]
    system_service: String,
    address_prefixes: Vec<IpNet>,
}

/// Reads one provider's file into tagged prefixes with their priority.
pub fn load(
    provider: Provider,
    path: &Path,
    names: &mut Interner,
) -> Result<Vec<(IpNet, CloudTag, u8)>, RangeFileError> {
    let what = format!("{} range file", provider.as_str());
    let text = crate::input::read_text(&what, path)?;
    parse(provider, &text, names).map_err(|message| RangeFileError::Format {
        provider: provider.as_str(),
        path: path.to_owned(),
        message,
    })
}

fn parse(
    provider: Provider,
    text: &str,
    names: &mut Interner,
) -> Result<Vec<(IpNet, CloudTag, u8)>, String> {
    let json_error = |e: serde_json::Error| e.to_string();
    let provider_name = names.name(provider.as_str());
    let mut tag = |service: &str, region: &str, service_range: bool| CloudTag {
        provider: provider_name.clone(),
        service: names.name(service),
        region: names.name(region),
        service_range,
    };
    let mut out = Vec::new();
    match provider {
        Provider::Aws => {
            let file: AwsFile = serde_json::from_str(text).map_err(json_error)?;
            let specific = |service: &str| u8::from(service != "AMAZON");
            // Customers' public and Elastic IPs are EC2's; AMAZON-only
            // ranges are AWS's own endpoints without a code of their own.
            let is_service = |service: &str| service != "EC2";
            let region = |r: &str| if r == "GLOBAL" { "" } else { r }.to_owned();
            for (i, p) in file.prefixes.iter().enumerate() {
                let field = format!("prefixes[{i}]");
                check(&field, &p.ip_prefix, Some(true))?;
                crate::input::check_name(&format!("{field}.service"), &p.service, true)?;
                out.push((
                    p.ip_prefix,
                    tag(&p.service, &region(&p.region), is_service(&p.service)),
                    specific(&p.service),
                ));
            }
            for (i, p) in file.ipv6_prefixes.iter().enumerate() {
                let field = format!("ipv6_prefixes[{i}]");
                check(&field, &p.ipv6_prefix, Some(false))?;
                crate::input::check_name(&format!("{field}.service"), &p.service, true)?;
                out.push((
                    p.ipv6_prefix,
                    tag(&p.service, &region(&p.region), is_service(&p.service)),
                    specific(&p.service),
                ));
            }
        }
        Provider::Gcp => {
            let file: GcpFile = serde_json::from_str(text).map_err(json_error)?;
            for (i, p) in file.prefixes.iter().enumerate() {
                let net = gcp_prefix(i, p.ipv4, p.ipv6)?;
                crate::input::check_name(&format!("prefixes[{i}].service"), &p.service, true)?;
                out.push((net, tag(&p.service, &p.scope, false), 0));
            }
        }
        Provider::Google => {
            let file: GoogleFile = serde_json::from_str(text).map_err(json_error)?;
            for (i, p) in file.prefixes.iter().enumerate() {
                let net = gcp_prefix(i, p.ipv4, p.ipv6)?;
                out.push((net, tag(GOOGLE_SERVICES, "", true), 0));
            }
        }
        Provider::Azure => {
            let file: AzureFile = serde_json::from_str(text).map_err(json_error)?;
            for (i, value) in file.values.iter().enumerate() {
                crate::input::check_name(&format!("values[{i}].name"), &value.name, true)?;
                let props = &value.properties;
                // "AzureCloud.westeurope" has no service: the tag's base name is it.
                let service = if props.system_service.is_empty() {
                    value
                        .name
                        .split('.')
                        .next()
                        .unwrap_or(&value.name)
                        .to_owned()
                } else {
                    props.system_service.clone()
                };
                let priority = 2 * u8::from(!props.system_service.is_empty())
                    + u8::from(!props.region.is_empty());
                for (j, net) in props.address_prefixes.iter().enumerate() {
                    check(
                        &format!("values[{i}].properties.addressPrefixes[{j}]"),
                        net,
                        None,
                    )?;
                    out.push((
                        *net,
                        tag(&service, &props.region, !props.system_service.is_empty()),
                        priority,
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        return Err("no prefixes in the file".into());
    }
    Ok(out)
}

/// A published prefix: of the family its list holds (`Some(true)`: IPv4)
/// and without host bits.
fn check(field: &str, net: &IpNet, ipv4: Option<bool>) -> Result<(), String> {
    if let Some(ipv4) = ipv4 {
        if matches!(net, IpNet::V4(_)) != ipv4 {
            let want = if ipv4 { "IPv4" } else { "IPv6" };
            return Err(format!("{field}: {net} is not an {want} prefix"));
        }
    }
    crate::input::check_network(field, net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::prefix::PrefixMap;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/ranges")
            .join(name)
    }

    fn tag_of(map: &PrefixMap<CloudTag>, ip: &str) -> Option<(String, String, String)> {
        map.lookup(ip.parse().unwrap()).map(|(_, t)| {
            (
                t.provider.to_string(),
                t.service.to_string(),
                t.region.to_string(),
            )
        })
    }

    fn loaded(provider: Provider, file: &str) -> PrefixMap<CloudTag> {
        PrefixMap::new(load(provider, &testdata(file), &mut Interner::default()).unwrap())
    }

    #[test]
    fn aws_specific_services_win_over_amazon_and_global_has_no_region() {
        let aws = loaded(Provider::Aws, "aws-ip-ranges.json");
        let t = |ip| tag_of(&aws, ip);
        assert_eq!(
            t("52.95.144.9"),
            Some(("aws".into(), "S3".into(), "eu-west-2".into()))
        );
        assert_eq!(
            t("52.94.1.1"),
            Some(("aws".into(), "AMAZON".into(), "us-east-1".into()))
        );
        assert_eq!(
            t("3.5.141.1"),
            Some(("aws".into(), "S3".into(), "ap-northeast-2".into()))
        );
        assert_eq!(
            t("3.5.1.1"),
            Some(("aws".into(), "AMAZON".into(), String::new()))
        );
        assert_eq!(
            t("2600:1fa0:4000::5"),
            Some(("aws".into(), "S3".into(), "eu-west-2".into()))
        );
        assert_eq!(
            t("2600:1f18::1"),
            Some(("aws".into(), "AMAZON".into(), "us-east-1".into()))
        );
        assert_eq!(t("8.8.8.8"), None);
    }

    #[test]
    fn gcp_scopes_are_regions() {
        let gcp = loaded(Provider::Gcp, "gcp-cloud.json");
        assert_eq!(
            tag_of(&gcp, "34.104.113.1"),
            Some(("gcp".into(), "Google Cloud".into(), "europe-west1".into()))
        );
        assert_eq!(
            tag_of(&gcp, "2600:1900:4010::1"),
            Some(("gcp".into(), "Google Cloud".into(), "europe-west1".into()))
        );
    }

    #[test]
    fn azure_service_tags_beat_regional_which_beat_global() {
        let azure = loaded(Provider::Azure, "azure-service-tags.json");
        let t = |ip| tag_of(&azure, ip);
        assert_eq!(
            t("13.69.40.5"),
            Some(("azure".into(), "AzureStorage".into(), "westeurope".into()))
        );
        assert_eq!(
            t("13.69.1.1"),
            Some(("azure".into(), "AzureCloud".into(), "westeurope".into()))
        );
        assert_eq!(
            t("13.65.0.1"),
            Some(("azure".into(), "AzureCloud".into(), String::new()))
        );
        assert_eq!(
            t("2603:1020:200::1"),
            Some(("azure".into(), "AzureCloud".into(), "westeurope".into()))
        );
    }

    #[test]
    fn a_malformed_or_wrong_file_names_the_file_and_the_place() {
        let dir = std::env::temp_dir().join(format!("tollgate-ranges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("ip-ranges.json");
        std::fs::write(&bad, "{\"prefixes\": [{\"ip_prefix\": \"52.94.0.0/33\", \"region\": \"x\", \"service\": \"S3\"}]}").unwrap();
        let error = load(Provider::Aws, &bad, &mut Interner::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ip-ranges.json") && error.contains("line 1"),
            "{error}"
        );
        // A GCP file given as AWS.
        let error = load(
            Provider::Aws,
            &testdata("gcp-cloud.json"),
            &mut Interner::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("aws range file") && error.contains("gcp-cloud.json"),
            "{error}"
        );
        let error = load(
            Provider::Gcp,
            &dir.join("missing.json"),
            &mut Interner::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("missing.json"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
