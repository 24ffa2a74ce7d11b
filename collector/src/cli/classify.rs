//! `tollgate classify`: who an address is, and why a transfer to it falls
//! in its category.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Map, Value};
use tollgate::classify::{Classifier, Place, Remote};
use tollgate::config::{self, Config, ConfigError};
use tollgate::inventory::{Holder, Inventory, NodeInfo};

use super::BadInput;

/// Prints, one JSON object per address, what the inventory says it is
/// (kind, pod, namespace, workload, team, node, zone, region, cloud provider
/// and service) and, with `--from`, the category of a transfer between the
/// two and the rule that decided it.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The configuration file (inventory and network rules).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The local endpoint: a pod's or a node's address.
    #[arg(long, value_name = "IP")]
    from: Option<IpAddr>,
    /// Addresses to explain.
    #[arg(value_name = "IP", required = true)]
    addresses: Vec<IpAddr>,
}

/// Runs the command.
pub fn run(args: ClassifyArgs) -> anyhow::Result<()> {
    let (config, base) = Config::load(&args.config).map_err(bad_input)?;
    let prepared = config::prepare(&config, &base).map_err(bad_input)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let world = runtime
        .block_on(config::load_world(&config, prepared))
        .map_err(bad_input)?;
    let inventory = match world.inventory.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let from = match args.from {
        None => None,
        Some(ip) => Some(local_place(&inventory, ip, now).ok_or_else(|| {
            BadInput(format!(
                "--from {ip}: not a pod or node address in the inventory ({})",
                args.config.display()
            ))
        })?),
    };
    let mut out = std::io::stdout().lock();
    for ip in args.addresses {
        let object = explain(&inventory, &world.classifier, ip, from.as_ref(), now);
        writeln!(out, "{object}").context("writing to stdout")?;
    }
    // The API's watch task keeps running: leave without waiting for it.
    drop(inventory);
    runtime.shutdown_background();
    Ok(())
}

fn bad_input(error: ConfigError) -> anyhow::Error {
    BadInput(error.to_string()).into()
}

/// The zone, region and provider of the node an address lives on.
fn local_place(inventory: &Inventory, ip: IpAddr, now: u64) -> Option<(String, String, String)> {
    let node = match inventory.lookup(ip, now)? {
        Holder::Pod(pod) => inventory.node_of(pod)?.clone(),
        Holder::Node(node) => node.clone(),
        Holder::Service(_) => return None,
    };
    Some((
        node.zone.to_string(),
        node.region.to_string(),
        node.provider.to_string(),
    ))
}

fn explain(
    inventory: &Inventory,
    classifier: &Classifier,
    ip: IpAddr,
    from: Option<&(String, String, String)>,
    now: u64,
) -> Value {
    let mut o = Map::new();
    o.insert("ip".into(), json!(ip.to_string()));
    let node_place = |o: &mut Map<String, Value>, node: Option<&NodeInfo>| {
        if let Some(node) = node {
            o.insert("node".into(), json!(&*node.name));
            o.insert("zone".into(), json!(&*node.zone));
            o.insert("region".into(), json!(&*node.region));
        }
        node.map(|n| (n.zone.to_string(), n.region.to_string()))
    };
    let place = match inventory.lookup(ip, now) {
        Some(Holder::Pod(pod)) => {
            o.insert("kind".into(), json!("pod"));
            o.insert("pod".into(), json!(&*pod.name));
            o.insert("namespace".into(), json!(&*pod.namespace));
            o.insert("workload_kind".into(), json!(&*pod.workload_kind));
            o.insert("workload".into(), json!(&*pod.workload));
            o.insert("team".into(), json!(&*pod.team));
            Some(node_place(&mut o, inventory.node_of(pod).map(|n| &**n)))
        }
        Some(Holder::Node(node)) => {
            o.insert("kind".into(), json!("node"));
            Some(node_place(&mut o, Some(node)))
        }
        Some(Holder::Service(service)) => {
            o.insert("kind".into(), json!("service"));
            o.insert("service".into(), json!(&*service.name));
            None
        }
        None => None,
    };
    let is_service = matches!(inventory.lookup(ip, now), Some(Holder::Service(_)));
    let local = from.map(|(zone, region, provider)| Place {
        zone,
        region,
        provider,
    });
    let remote = match &place {
        Some(Some((zone, region))) => Remote::InCluster(Place {
            zone,
            region,
            provider: "",
        }),
        Some(None) => Remote::InCluster(Place::default()),
        None if is_service => Remote::ServiceAddress,
        None => Remote::External(ip),
    };
    let verdict = classifier.classify(local.unwrap_or_default(), remote);
    if let Remote::External(_) = remote {
        o.insert("kind".into(), json!(verdict.external_kind().as_str()));
        if let Some(zone) = verdict.zone {
            o.insert("zone".into(), json!(&**zone));
        }
        if let Some(region) = verdict.region {
            o.insert("region".into(), json!(&**region));
        }
        if let Some(tag) = verdict.cloud {
            if !tag.provider.is_empty() {
                o.insert("cloud_provider".into(), json!(&*tag.provider));
            }
            o.insert("cloud_service".into(), json!(&*tag.service));
        }
    }
    if local.is_some() {
        o.insert("category".into(), json!(verdict.category.as_str()));
        o.insert("rule".into(), json!(verdict.rule.to_string()));
    }
    Value::Object(o)
}
