//! Which zones' nodes reach the internet through which NAT gateway, as the
//! operator declares it (`--nat-gateway ID=ZONE[,ZONE...]`): a bill names
//! the gateway, never the nodes behind it, and only the network's route
//! tables know them.

use std::str::FromStr;

/// One gateway and the zones whose nodes it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRoute {
    /// The gateway as the operator names it: its id (`nat-0abc...`, a Cloud
    /// NAT gateway's name, an Azure NAT gateway's name) or the bill's whole
    /// resource id.
    pub gateway: String,
    /// The zones (`topology.kubernetes.io/zone`) of the nodes it serves.
    pub zones: Vec<String>,
}

impl NatRoute {
    /// Whether the bill's resource (as matched: AWS's ARN, GCP's
    /// `project/name`, Azure's lower-cased resource id) is this gateway:
    /// the whole of it, or its last path segment(s), ignoring case.
    pub fn names(&self, resource: &str) -> bool {
        let (resource, gateway) = (resource.as_bytes(), self.gateway.as_bytes());
        if resource.eq_ignore_ascii_case(gateway) {
            return true;
        }
        resource.len() > gateway.len()
            && resource[resource.len() - gateway.len()..].eq_ignore_ascii_case(gateway)
            && resource[resource.len() - gateway.len() - 1] == b'/'
    }
}

/// Why a `--nat-gateway` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRoute(String);

impl FromStr for NatRoute {
    type Err = BadRoute;

    fn from_str(text: &str) -> Result<Self, BadRoute> {
        let Some((gateway, zones)) = text.split_once('=') else {
            return Err(BadRoute(format!(
                "{text:?}: expected GATEWAY=ZONE[,ZONE...], e.g. nat-0abc=eu-west-1a"
            )));
        };
        let gateway = gateway.trim();
        if gateway.is_empty() || gateway.ends_with('/') {
            return Err(BadRoute(format!("{text:?}: the gateway's id is missing")));
        }
        let zones: Vec<String> = zones
            .split(',')
            .map(|z| z.trim().to_owned())
            .filter(|z| !z.is_empty())
            .collect();
        if zones.is_empty() {
            return Err(BadRoute(format!(
                "{text:?}: name the zones whose nodes use {gateway}"
            )));
        }
        Ok(NatRoute {
            gateway: gateway.to_owned(),
            zones,
        })
    }
}

/// The declared routes; a gateway none of them names is shared by all of
/// its cloud's nodes.
#[derive(Debug, Clone, Default)]
pub struct NatRoutes(pub Vec<NatRoute>);

impl NatRoutes {
    /// The route of the gateway the bill names `resource`, if declared.
    pub fn of(&self, resource: &str) -> Option<&NatRoute> {
        self.0.iter().find(|route| route.names(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_names_its_gateway_by_id_or_whole_resource_id() {
        let route: NatRoute = "nat-0f1e2d3c4b5a69788=eu-west-1a, eu-west-1b"
            .parse()
            .unwrap();
        assert_eq!(route.zones, ["eu-west-1a", "eu-west-1b"]);
        assert!(route.names("arn:aws:ec2:eu-west-1:111122223333:natgateway/nat-0f1e2d3c4b5a69788"));
        assert!(route.names("nat-0f1e2d3c4b5a69788"));
        assert!(
            !route.names("arn:aws:ec2:eu-west-1:111122223333:natgateway/xnat-0f1e2d3c4b5a69788")
        );
        assert!(!route.names("nat-0f1e2d3c4b5a6978"));
        let azure: NatRoute = "nat-prod=westeurope-1".parse().unwrap();
        assert!(azure.names(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/natgateways/nat-prod"
        ));
        let gcp: NatRoute = "shop-prod/nat-prod-eu=europe-west1-b".parse().unwrap();
        assert!(gcp.names("shop-prod/nat-prod-eu"));
    }

    #[test]
    fn a_route_without_zones_or_gateway_is_refused_with_the_form_it_takes() {
        for (text, says) in [
            ("nat-0abc", "expected GATEWAY=ZONE"),
            ("nat-0abc=", "name the zones whose nodes use nat-0abc"),
            ("=eu-west-1a", "the gateway's id is missing"),
        ] {
            let error = text.parse::<NatRoute>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
