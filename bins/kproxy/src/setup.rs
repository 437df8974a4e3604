//! From the effective configuration, the node and the host to each mode's settings.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use kproxy_iptables::{Config as IptablesConfig, LocalDetector, NodePortAddresses};
use kproxy_model::ip::parse_cidr_sloppy;
use kproxy_model::{IpFamily, Node, NodeTopology};

use crate::config::{KubeProxyConfiguration, LocalMode, NODE_PORT_ADDRESSES_PRIMARY};

/// Host facts that shape the ruleset, read once at start-up.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// MASQUERADE supports `--random-fully`.
    pub random_fully: bool,
    /// `nf_conntrack_tcp_be_liberal` is set.
    pub tcp_be_liberal: bool,
    /// The nfacct counters exist (or will be created).
    pub nfacct: bool,
}

impl HostFacts {
    /// Reads the facts from this host.
    pub fn detect() -> HostFacts {
        HostFacts {
            random_fully: crate::host::random_fully_supported(),
            tcp_be_liberal: crate::host::conntrack_tcp_be_liberal(),
            nfacct: true,
        }
    }
}

/// The node name kube-proxy would use: `hostnameOverride`, else the host name.
pub fn node_name(cfg: &KubeProxyConfiguration) -> String {
    if cfg.hostname_override.trim().is_empty() {
        crate::host::hostname()
    } else {
        cfg.hostname_override.trim().to_lowercase()
    }
}

/// The node's primary IP of `family`, as upstream's `detectNodeIPs`: a specified
/// `bindAddress` of that family wins, else the Node object's (first InternalIP, then
/// ExternalIP).
pub fn primary_ip(cfg: &KubeProxyConfiguration, family: IpFamily, node: &Node) -> Option<IpAddr> {
    kproxy_model::ip::parse_ip_sloppy(cfg.bind_address.trim())
        .filter(|ip| !ip.is_unspecified() && family.contains(ip))
        .or_else(|| node.primary_ip(family))
}

/// The local-traffic detector of `family` (upstream `getLocalDetectors`).
pub fn local_detector(
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
    node: &Node,
) -> Result<LocalDetector> {
    Ok(match cfg.detect_local_mode {
        LocalMode::ClusterCidr | LocalMode::Unset => {
            let mut found = None;
            for cidr in cfg
                .cluster_cidr
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let net = parse_cidr_sloppy(cidr)
                    .with_context(|| format!("clusterCIDR: invalid CIDR {cidr:?}"))?;
                if family.contains(&net.addr()) && found.is_none() {
                    found = Some(net);
                }
            }
            found.map(LocalDetector::Cidr).unwrap_or_default()
        }
        LocalMode::NodeCidr => node
            .pod_cidr(family)
            .map(LocalDetector::Cidr)
            .unwrap_or_default(),
        LocalMode::BridgeInterface => {
            LocalDetector::BridgeInterface(cfg.detect_local.bridge_interface.clone())
        }
        LocalMode::InterfaceNamePrefix => {
            LocalDetector::InterfaceNamePrefix(cfg.detect_local.interface_name_prefix.clone())
        }
        LocalMode::Other(ref other) => bail!("detectLocalMode: unknown mode {other:?}"),
    })
}

/// `nodePortAddresses` of `family`.
pub fn nodeport_addresses(
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
    primary_ip: Option<IpAddr>,
) -> Result<NodePortAddresses> {
    let mut cidrs: Vec<IpNet> = Vec::new();
    let mut primary = false;
    for entry in &cfg.node_port_addresses {
        if entry == NODE_PORT_ADDRESSES_PRIMARY {
            primary = true;
            continue;
        }
        cidrs.push(
            parse_cidr_sloppy(entry)
                .with_context(|| format!("nodePortAddresses: invalid CIDR {entry:?}"))?,
        );
    }
    Ok(NodePortAddresses::new(family, &cidrs, primary, primary_ip))
}

/// The iptables compiler's configuration for `family` on `node`.
pub fn iptables_config(
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
    node: &Node,
    host: &HostFacts,
) -> Result<IptablesConfig> {
    let bit = cfg.masquerade_bit();
    if !(0..=31).contains(&bit) {
        bail!("iptables.masqueradeBit: must be in the range [0, 31], got {bit}");
    }
    let primary_ip = primary_ip(cfg, family, node);
    let (sync_period, _) = cfg.sync_periods();
    let mut c = IptablesConfig::new(family, &node.name);
    c.masquerade_mark = IptablesConfig::mark_for_bit(bit as u32);
    c.masquerade_all = cfg.masquerade_all();
    c.local_detector = local_detector(cfg, family, node)?;
    c.localhost_nodeports = cfg.iptables.localhost_node_ports.unwrap_or(true);
    c.nodeport_addresses = nodeport_addresses(cfg, family, primary_ip)?;
    c.node_ip = primary_ip;
    c.node = NodeTopology {
        name: node.name.clone(),
        zone: node.zone.clone(),
        prefer_same_node_hints: cfg
            .feature_gates
            .get("PreferSameTrafficDistribution")
            .copied()
            .unwrap_or(true),
    };
    c.random_fully = host.random_fully;
    c.drop_invalid = !(host.tcp_be_liberal || cfg.conntrack.tcp_be_liberal);
    c.nfacct_invalid_dropped = host.nfacct;
    c.nfacct_localhost_nodeports = host.nfacct;
    c.sync_period = sync_period;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_address_overrides_the_primary_ip_of_its_family() {
        let node = Node {
            name: "n".into(),
            internal_ips: vec!["192.168.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ..Node::default()
        };
        let mut cfg = KubeProxyConfiguration::default();
        assert_eq!(
            primary_ip(&cfg, IpFamily::V4, &node),
            Some("192.168.0.2".parse().unwrap())
        );
        cfg.bind_address = "0.0.0.0".into();
        assert_eq!(
            primary_ip(&cfg, IpFamily::V4, &node),
            Some("192.168.0.2".parse().unwrap())
        );
        cfg.bind_address = "10.1.2.3".into();
        assert_eq!(
            primary_ip(&cfg, IpFamily::V4, &node),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            primary_ip(&cfg, IpFamily::V6, &node),
            Some("fd00::2".parse().unwrap())
        );
    }

    #[test]
    fn local_detectors() {
        let node = Node {
            name: "n".into(),
            pod_cidrs: vec!["10.244.3.0/24".parse().unwrap()],
            ..Node::default()
        };
        let mut cfg = KubeProxyConfiguration {
            cluster_cidr: "10.244.0.0/16, fd00:10::/48".into(),
            ..KubeProxyConfiguration::default()
        };
        assert_eq!(
            local_detector(&cfg, IpFamily::V6, &node).unwrap(),
            LocalDetector::Cidr("fd00:10::/48".parse().unwrap())
        );
        cfg.detect_local_mode = LocalMode::NodeCidr;
        assert_eq!(
            local_detector(&cfg, IpFamily::V4, &node).unwrap(),
            LocalDetector::Cidr("10.244.3.0/24".parse().unwrap())
        );
        assert_eq!(
            local_detector(&cfg, IpFamily::V6, &node).unwrap(),
            LocalDetector::None
        );
        cfg.detect_local_mode = LocalMode::InterfaceNamePrefix;
        cfg.detect_local.interface_name_prefix = "veth".into();
        assert_eq!(
            local_detector(&cfg, IpFamily::V4, &node).unwrap(),
            LocalDetector::InterfaceNamePrefix("veth".into())
        );
    }
}
