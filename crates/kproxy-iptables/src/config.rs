//! Compiler configuration: the node- and flag-dependent facts that shape the ruleset.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use kproxy_model::{IpFamily, NodeTopology};

/// How "traffic from a pod on this node" is recognised (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalDetector {
    /// No detector: no ClusterIP masquerade rule, no pod short-circuit for eTP Local.
    #[default]
    None,
    /// Source address in a CIDR (modes `ClusterCIDR` and `NodeCIDR`): `-s <cidr>`.
    Cidr(IpNet),
    /// Arriving on a bridge (`BridgeInterface`): `-i <bridge>`.
    BridgeInterface(String),
    /// Arriving on an interface with a name prefix (`InterfaceNamePrefix`): `-i <prefix>+`.
    InterfaceNamePrefix(String),
}

impl LocalDetector {
    /// Whether a detector is configured.
    pub fn is_implemented(&self) -> bool {
        !matches!(self, LocalDetector::None)
    }

    /// The match for "local" traffic (`-s 10.0.0.0/8`), without a leading space.
    pub fn if_local(&self) -> String {
        match self {
            LocalDetector::None => String::new(),
            LocalDetector::Cidr(net) => format!("-s {net}"),
            LocalDetector::BridgeInterface(br) => format!("-i {br}"),
            LocalDetector::InterfaceNamePrefix(p) => format!("-i {p}+"),
        }
    }

    /// The match for "not local" traffic (`! -s 10.0.0.0/8`), without a leading space.
    pub fn if_not_local(&self) -> String {
        match self {
            LocalDetector::None => String::new(),
            other => format!("! {}", other.if_local()),
        }
    }
}

/// `--nodeport-addresses` for one family: which node addresses accept NodePort traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePortAddresses {
    cidrs: Vec<IpNet>,
    match_all: bool,
    contains_ipv4_loopback: bool,
}

impl NodePortAddresses {
    /// Builds the family's view of `--nodeport-addresses` (upstream `NewNodePortAddresses`):
    /// entries of the other family are ignored, `primary` is replaced by the node's primary
    /// IP (as a /32 or /128), and no entry (or `0.0.0.0/0` / `::/0`) means every address.
    pub fn new(
        family: IpFamily,
        cidrs: &[IpNet],
        use_primary: bool,
        primary_ip: Option<IpAddr>,
    ) -> NodePortAddresses {
        let mut own: Vec<IpNet> = cidrs
            .iter()
            .copied()
            .filter(|n| family.contains(&n.addr()))
            .collect();
        if let Some(ip) = primary_ip.filter(|ip| use_primary && family.contains(ip)) {
            own.push(IpNet::from(ip));
        }
        let match_all = own.is_empty() || own.iter().any(|n| n.prefix_len() == 0);
        // Upstream tests whether 127.0.0.0 masked by the CIDR's mask is the CIDR's address,
        // Upstream: a CIDR whose address is a loopback address, or that contains 127.0.0.0.
        let loopback_start: IpAddr = [127, 0, 0, 0].into();
        let contains_ipv4_loopback = family == IpFamily::V4
            && (match_all
                || own
                    .iter()
                    .any(|n| n.addr().is_loopback() || n.contains(&loopback_start)));
        NodePortAddresses {
            cidrs: own,
            match_all,
            contains_ipv4_loopback,
        }
    }

    /// Every node address accepts NodePorts.
    pub fn match_all(&self) -> bool {
        self.match_all
    }

    /// Whether the selection includes IPv4 loopback (a precondition of localhost NodePorts).
    pub fn contains_ipv4_loopback(&self) -> bool {
        self.contains_ipv4_loopback
    }

    /// The node addresses (from `interface_addresses`) that accept NodePorts, sorted and
    /// unique. Meaningless when [`match_all`](Self::match_all).
    pub fn node_ips(&self, interface_addresses: &[IpAddr]) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = interface_addresses
            .iter()
            .copied()
            .filter(|ip| self.cidrs.iter().any(|n| n.contains(ip)))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// Everything besides Services and endpoints that decides the ruleset of one family.
#[derive(Debug, Clone)]
pub struct Config {
    /// The family (`iptables` for IPv4, `ip6tables` for IPv6).
    pub family: IpFamily,
    /// The masquerade mark as written in rules; see [`Config::mark_for_bit`].
    pub masquerade_mark: String,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--detect-local-mode` and its value for this family.
    pub local_detector: LocalDetector,
    /// `--iptables-localhost-nodeports` (effective only for IPv4 and when the NodePort
    /// addresses include 127.0.0.0).
    pub localhost_nodeports: bool,
    /// `--nodeport-addresses` for this family.
    pub nodeport_addresses: NodePortAddresses,
    /// The node's primary IP of this family (decides the "allow from node" rules of
    /// `loadBalancerSourceRanges`).
    pub node_ip: Option<IpAddr>,
    /// This node, for local endpoints and topology hints.
    pub node: NodeTopology,
    /// The host's iptables supports `--random-fully` on MASQUERADE.
    pub random_fully: bool,
    /// Write the `KUBE-FORWARD` INVALID-drop rule (`nf_conntrack_tcp_be_liberal` is 0).
    pub drop_invalid: bool,
    /// The nfacct counter `ct_state_invalid_dropped_pkts` exists.
    pub nfacct_invalid_dropped: bool,
    /// The nfacct counter `localhost_nps_accepted_pkts` exists.
    pub nfacct_localhost_nodeports: bool,
    /// Above this many endpoints the ruleset drops per-endpoint comments (upstream: 1000).
    pub large_cluster_threshold: usize,
    /// `--iptables-sync-period`: in large-cluster mode, stale chains are deleted at most
    /// this often.
    pub sync_period: Duration,
}

impl Config {
    /// Upstream's defaults for `family` on node `node_name`: mark bit 14, localhost NodePorts
    /// on, all addresses accept NodePorts, no local-traffic detector, `--random-fully`
    /// available, INVALID drop on, both nfacct counters present.
    pub fn new(family: IpFamily, node_name: impl Into<String>) -> Config {
        Config {
            family,
            masquerade_mark: Config::mark_for_bit(14),
            masquerade_all: false,
            local_detector: LocalDetector::None,
            localhost_nodeports: true,
            nodeport_addresses: NodePortAddresses::new(family, &[], false, None),
            node_ip: None,
            node: NodeTopology::named(node_name),
            random_fully: true,
            drop_invalid: true,
            nfacct_invalid_dropped: true,
            nfacct_localhost_nodeports: true,
            large_cluster_threshold: 1000,
            sync_period: Duration::from_secs(30),
        }
    }

    /// The mark string for `--iptables-masquerade-bit` as kube-proxy writes it (Go's
    /// `%#08x`: `0x` and eight hex digits, so bit 14 is `0x00004000`). Bits above 31 are
    /// clamped to 31; validate the flag before.
    pub fn mark_for_bit(bit: u32) -> String {
        format!("0x{:08x}", 1u64 << bit.min(31))
    }

    /// Whether localhost NodePorts are in effect (`127.0.0.1:<nodePort>` works).
    pub fn localhost_nodeports_effective(&self) -> bool {
        self.family == IpFamily::V4
            && self.localhost_nodeports
            && self.nodeport_addresses.contains_ipv4_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_format() {
        assert_eq!(Config::mark_for_bit(14), "0x00004000");
        assert_eq!(Config::mark_for_bit(0), "0x00000001");
        assert_eq!(Config::mark_for_bit(31), "0x80000000");
    }

    #[test]
    fn nodeport_addresses() {
        let v4 = |s: &[&str]| -> Vec<IpNet> { s.iter().map(|c| c.parse().unwrap()).collect() };
        let all = NodePortAddresses::new(IpFamily::V4, &[], false, None);
        assert!(all.match_all() && all.contains_ipv4_loopback());
        let only6 = NodePortAddresses::new(IpFamily::V4, &v4(&["2001:db8::/64"]), false, None);
        assert!(only6.match_all());
        let some = NodePortAddresses::new(
            IpFamily::V4,
            &v4(&["192.168.0.0/24", "127.0.0.1/32"]),
            false,
            None,
        );
        assert!(!some.match_all());
        // 127.0.0.1/32 is a loopback CIDR (upstream: `cidr.IP.IsLoopback()`).
        assert!(some.contains_ipv4_loopback());
        let lan = NodePortAddresses::new(IpFamily::V4, &v4(&["192.168.0.0/24"]), false, None);
        assert!(!lan.contains_ipv4_loopback());
        let lo = NodePortAddresses::new(IpFamily::V4, &v4(&["127.0.0.0/8"]), false, None);
        assert!(lo.contains_ipv4_loopback());
        let ifaces: Vec<IpAddr> = ["192.168.0.2", "127.0.0.1", "192.168.1.2", "fd00::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            some.node_ips(&ifaces),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "192.168.0.2".parse().unwrap()
            ]
        );
        let primary = NodePortAddresses::new(
            IpFamily::V4,
            &[],
            true,
            Some("192.168.1.2".parse().unwrap()),
        );
        assert!(!primary.match_all());
        assert_eq!(
            primary.node_ips(&ifaces),
            vec!["192.168.1.2".parse::<IpAddr>().unwrap()]
        );
    }
}
