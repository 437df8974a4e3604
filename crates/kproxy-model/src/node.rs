//! The proxier's own Node.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::selection::NodeTopology;
use crate::types::IpFamily;

/// What a proxier uses from its own Node object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses` of type `InternalIP`, in status order.
    pub internal_ips: Vec<IpAddr>,
    /// `status.addresses` of type `ExternalIP`, in status order.
    pub external_ips: Vec<IpAddr>,
    /// Label `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The node carries the `ToBeDeletedByClusterAutoscaler` taint.
    pub to_be_deleted_taint: bool,
}

impl Node {
    /// The node's primary IP of `family`, as upstream picks it (`GetNodeHostIPs`): the first
    /// `InternalIP` of the family, else the first `ExternalIP` of the family.
    pub fn primary_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.internal_ips
            .iter()
            .chain(&self.external_ips)
            .copied()
            .find(|ip| family.contains(ip))
    }

    /// The first pod CIDR of `family` (what `--detect-local-mode=NodeCIDR` uses).
    pub fn pod_cidr(&self, family: IpFamily) -> Option<IpNet> {
        self.pod_cidrs
            .iter()
            .copied()
            .find(|net| family.contains(&net.addr()))
    }

    /// The node's topology for endpoint selection, with upstream's default feature gates.
    pub fn topology(&self) -> NodeTopology {
        NodeTopology {
            name: self.name.clone(),
            zone: self.zone.clone(),
            prefer_same_node_hints: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_ip_prefers_internal_of_the_family() {
        let node = Node {
            name: "n".into(),
            internal_ips: vec!["fd00::2".parse().unwrap(), "192.168.0.2".parse().unwrap()],
            external_ips: vec![
                "203.0.113.2".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            ],
            ..Node::default()
        };
        assert_eq!(
            node.primary_ip(IpFamily::V4).unwrap().to_string(),
            "192.168.0.2"
        );
        assert_eq!(
            node.primary_ip(IpFamily::V6).unwrap().to_string(),
            "fd00::2"
        );
        let ext_only = Node {
            external_ips: vec!["203.0.113.2".parse().unwrap()],
            ..Node::default()
        };
        assert_eq!(
            ext_only.primary_ip(IpFamily::V4).unwrap().to_string(),
            "203.0.113.2"
        );
        assert_eq!(ext_only.primary_ip(IpFamily::V6), None);
    }
}
