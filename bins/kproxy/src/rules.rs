//! `kproxy rules`: the dry run. Prints the restore input the node daemon would apply at its
//! first, full sync, for a cluster given as manifests. Needs no root.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use kproxy_iptables::{Compiler, SyncKind, SyncRequest};
use kproxy_model::{ChangeTracker, IpFamily, Node};

use crate::config::{KubeProxyConfiguration, ProxyMode};
use crate::flags::ProxyFlags;
use crate::setup::{self, HostFacts};

/// Arguments of `kproxy rules`.
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Kubernetes manifests: a file or a directory of YAML/JSON files (Services,
    /// EndpointSlices, Nodes; other kinds are ignored).
    #[arg(long, value_name = "PATH")]
    pub source: PathBuf,

    /// The node's interface addresses as CIDRs (`192.168.0.2/24,...`), for a dry run of
    /// another machine; default: this host's.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub node_addresses: Option<Vec<IpNet>>,

    /// Print only one family's ruleset.
    #[arg(long, value_name = "FAMILY")]
    pub ip_family: Option<Family>,

    /// Print only what upstream kube-proxy feeds to `iptables-restore` (its jumps from the
    /// built-in chains and its canaries are made by separate commands), to diff against
    /// kube-proxy. By default the output is kproxy's whole first restore on a fresh node,
    /// which creates those in the same transaction.
    #[arg(long)]
    pub upstream_restore_input: bool,

    #[command(flatten)]
    pub flags: ProxyFlags,
}

/// An IP family on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Family {
    /// IPv4 (`iptables`).
    Ipv4,
    /// IPv6 (`ip6tables`).
    Ipv6,
}

/// Runs the dry run, writing rules to `out` and one line per problem to `err`.
pub fn run(args: &RulesArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let resolved = args.flags.resolve().context("invalid configuration")?;
    for w in &resolved.warnings {
        writeln!(err, "warning: {w}")?;
    }
    let cfg = resolved.config;
    match cfg.effective_mode() {
        ProxyMode::Iptables => {}
        other => bail!(
            "kproxy rules: proxy mode {} is not supported yet",
            other.as_str()
        ),
    }
    let manifests = kproxy_k8s::manifests::load_path(&args.source)
        .with_context(|| format!("reading {}", args.source.display()))?;
    for w in &manifests.warnings {
        writeln!(err, "{w}")?;
    }
    let node_name = setup::node_name(&cfg);
    let node = manifests
        .nodes
        .iter()
        .find(|n| n.name == node_name)
        .cloned()
        .unwrap_or_else(|| {
            let _ = writeln!(
                err,
                "warning: no Node {node_name:?} in {}: node IP, zone and pod CIDRs unknown",
                args.source.display()
            );
            Node {
                name: node_name.clone(),
                ..Node::default()
            }
        });
    let interface_addresses: Vec<IpAddr> = match &args.node_addresses {
        Some(nets) => nets.iter().map(IpNet::addr).collect(),
        None => crate::host::interface_addresses(),
    };
    let families = families(&args.ip_family, &manifests, &node);
    let host = HostFacts::detect();
    let dual = families.len() > 1;
    for family in families {
        let text = compile(
            &cfg,
            family,
            &node,
            &host,
            &interface_addresses,
            &manifests,
            !args.upstream_restore_input,
        )?;
        if dual {
            writeln!(
                out,
                "# {} input ({family})",
                match family {
                    IpFamily::V4 => "iptables-restore",
                    IpFamily::V6 => "ip6tables-restore",
                }
            )?;
        }
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// The families to print: the one asked for, else those the objects carry.
fn families(
    asked: &Option<Family>,
    manifests: &kproxy_k8s::manifests::Manifests,
    node: &Node,
) -> Vec<IpFamily> {
    match asked {
        Some(Family::Ipv4) => return vec![IpFamily::V4],
        Some(Family::Ipv6) => return vec![IpFamily::V6],
        None => {}
    }
    let mut seen = BTreeSet::new();
    for s in &manifests.services {
        seen.extend(s.cluster_ips.iter().map(IpFamily::of));
    }
    seen.extend(manifests.endpoint_slices.iter().map(|s| s.address_family));
    seen.extend(node.internal_ips.iter().map(IpFamily::of));
    if seen.is_empty() {
        seen.insert(IpFamily::V4);
    }
    seen.into_iter().collect()
}

fn compile(
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
    node: &Node,
    host: &HostFacts,
    interface_addresses: &[IpAddr],
    manifests: &kproxy_k8s::manifests::Manifests,
    with_jumps: bool,
) -> Result<String> {
    let mut tracker = ChangeTracker::new(family, &node.name);
    for s in &manifests.services {
        tracker.update_service(s.clone());
    }
    for s in &manifests.endpoint_slices {
        tracker.update_endpoint_slice(s.clone());
    }
    let changes = tracker.commit();
    let config = setup::iptables_config(cfg, family, node, host)?;
    // On a fresh node every jump and canary is missing.
    let extra = if with_jumps {
        kproxy_iptables::proxier::missing_jumps(
            config.localhost_nodeports_effective(),
            &kproxy_iptables::save::Ruleset::default(),
        )
    } else {
        Vec::new()
    };
    let mut compiler = Compiler::new(config);
    compiler.set_interface_addresses(interface_addresses.to_vec());
    let compiled = compiler.compile_with_extra(
        tracker.state(),
        SyncRequest {
            kind: SyncKind::Full,
            changed: &changes,
            existing_nat_chains: None,
        },
        &extra,
    );
    Ok(compiled.restore.to_string())
}
