//! Endpoint selection: which endpoints traffic to a service port may use on this node
//! (upstream `CategorizeEndpoints`, including topology hints, traffic policies and the
//! terminating-endpoint fallback).

use crate::endpoints::EndpointInfo;
use crate::service::ServicePortInfo;

/// What a proxier knows about its own node for endpoint selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeTopology {
    /// The node's name (matches `EndpointSlice` `nodeName` and `hints.forNodes`).
    pub name: String,
    /// The node's `topology.kubernetes.io/zone` label, if any.
    pub zone: Option<String>,
    /// Feature gate `PreferSameTrafficDistribution` (node hints); on by default upstream.
    pub prefer_same_node_hints: bool,
}

impl NodeTopology {
    /// A node with a name, no zone, and upstream's default feature gates.
    pub fn named(name: impl Into<String>) -> NodeTopology {
        NodeTopology {
            name: name.into(),
            zone: None,
            prefer_same_node_hints: true,
        }
    }
}

/// The topology mode chosen for a service port from its endpoints' hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyMode {
    /// Hints are not used: every ready endpoint is a cluster endpoint.
    None,
    /// Only ready endpoints hinted for this node.
    PreferSameNode,
    /// Only ready endpoints hinted for this node's zone.
    PreferSameZone,
}

/// The result of endpoint selection for one service port: which of the port's endpoints
/// each kind of traffic may use. Every list keeps the endpoints' order (sorted by endpoint
/// string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSets<'a> {
    endpoints: &'a [EndpointInfo],
    /// Per endpoint: `CLUSTER` and/or `LOCAL`.
    flags: Vec<u8>,
    cluster_len: usize,
    local_len: usize,
    all_len: usize,
    /// Whether usable endpoints exist anywhere in the cluster (decides REJECT vs DROP).
    pub has_any: bool,
    /// The topology mode used for the cluster set.
    pub topology: TopologyMode,
}

const CLUSTER: u8 = 1;
const LOCAL: u8 = 2;

impl<'a> EndpointSets<'a> {
    /// Endpoints for traffic under the Cluster policy (none unless the port uses cluster
    /// endpoints).
    pub fn cluster(&self) -> impl Iterator<Item = &'a EndpointInfo> + '_ {
        self.with(CLUSTER)
    }

    /// Endpoints for traffic under the Local policy (none unless the port uses local
    /// endpoints).
    pub fn local(&self) -> impl Iterator<Item = &'a EndpointInfo> + '_ {
        self.with(LOCAL)
    }

    /// Every endpoint some traffic can reach (the union of the two): the endpoints that get a
    /// per-endpoint chain.
    pub fn all(&self) -> impl Iterator<Item = &'a EndpointInfo> + '_ {
        self.with(CLUSTER | LOCAL)
    }

    /// Each endpoint of [`all`](Self::all) with whether it is in the cluster set and in the
    /// local set.
    pub fn all_with_membership(&self) -> impl Iterator<Item = (&'a EndpointInfo, bool, bool)> + '_ {
        self.endpoints
            .iter()
            .zip(&self.flags)
            .filter(|(_, f)| **f != 0)
            .map(|(e, f)| (e, f & CLUSTER != 0, f & LOCAL != 0))
    }

    /// The number of cluster endpoints.
    pub fn cluster_len(&self) -> usize {
        self.cluster_len
    }

    /// The number of local endpoints.
    pub fn local_len(&self) -> usize {
        self.local_len
    }

    /// The number of reachable endpoints.
    pub fn all_len(&self) -> usize {
        self.all_len
    }

    fn with(&self, mask: u8) -> impl Iterator<Item = &'a EndpointInfo> + '_ {
        self.endpoints
            .iter()
            .zip(&self.flags)
            .filter(move |(_, f)| **f & mask != 0)
            .map(|(e, _)| e)
    }

    fn mark(&mut self, flag: u8, pick: impl Fn(&EndpointInfo) -> bool) -> usize {
        let mut n = 0;
        for (e, f) in self.endpoints.iter().zip(self.flags.iter_mut()) {
            if pick(e) {
                *f |= flag;
                n += 1;
            }
        }
        n
    }
}

/// Picks the endpoints of one service port (`endpoints` sorted by endpoint string, as the
/// change tracker keeps them) for this node, exactly as upstream kube-proxy does.
pub fn categorize_endpoints<'a>(
    endpoints: &'a [EndpointInfo],
    svc: &ServicePortInfo,
    node: &NodeTopology,
) -> EndpointSets<'a> {
    let mut sets = EndpointSets {
        endpoints,
        flags: vec![0; endpoints.len()],
        cluster_len: 0,
        local_len: 0,
        all_len: 0,
        has_any: false,
        topology: TopologyMode::None,
    };
    if endpoints.is_empty() {
        return sets;
    }
    if svc.uses_cluster_endpoints() {
        let mode = topology_mode(endpoints, node);
        sets.topology = mode;
        sets.cluster_len = sets.mark(CLUSTER, |ep| {
            ep.ready && available_for_topology(ep, mode, node)
        });
        if sets.cluster_len == 0 {
            // Nothing ready (anywhere, or topology would have been ignored): fall back to
            // serving-terminating endpoints, on any node.
            sets.cluster_len = sets.mark(CLUSTER, |ep| ep.serving && ep.terminating);
        }
        sets.has_any = sets.cluster_len > 0;
    }
    if svc.uses_local_endpoints() {
        let mut local_ready = false;
        let mut local_serving_terminating = false;
        for ep in endpoints {
            if ep.ready {
                sets.has_any = true;
                local_ready |= ep.is_local;
            } else if ep.serving && ep.terminating {
                sets.has_any = true;
                local_serving_terminating |= ep.is_local;
            }
        }
        // Topology hints never filter local endpoints; local serving-terminating ones are
        // used only when no local endpoint is ready.
        sets.local_len = if local_ready {
            sets.mark(LOCAL, |ep| ep.is_local && ep.ready)
        } else if local_serving_terminating {
            sets.mark(LOCAL, |ep| ep.is_local && ep.serving && ep.terminating)
        } else {
            0
        };
    }
    // The union: without topology or terminating fallback the cluster set already holds the
    // local one; otherwise both contribute (upstream merges them).
    sets.all_len = sets.flags.iter().filter(|f| **f != 0).count();
    sets
}

/// Upstream `topologyModeFromHints`: hints are used only if *every* ready endpoint carries
/// one of the kind and at least one is for this node (zone).
fn topology_mode(endpoints: &[EndpointInfo], node: &NodeTopology) -> TopologyMode {
    let zone = node.zone.as_deref().unwrap_or("");
    let mut any_ready = false;
    let mut all_node_hints = true;
    let mut for_node = false;
    let mut all_zone_hints = true;
    let mut for_zone = false;
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        any_ready = true;
        if ep.node_hints.is_empty() {
            all_node_hints = false;
        } else if ep.node_hints.contains(&node.name) {
            for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if !zone.is_empty() && ep.zone_hints.iter().any(|z| z == zone) {
            for_zone = true;
        }
    }
    if !any_ready {
        return TopologyMode::None;
    }
    if node.prefer_same_node_hints && all_node_hints && for_node {
        return TopologyMode::PreferSameNode;
    }
    if all_zone_hints && for_zone {
        return TopologyMode::PreferSameZone;
    }
    TopologyMode::None
}

fn available_for_topology(ep: &EndpointInfo, mode: TopologyMode, node: &NodeTopology) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.contains(&node.name),
        TopologyMode::PreferSameZone => node
            .zone
            .as_deref()
            .is_some_and(|zone| ep.zone_hints.iter().any(|z| z == zone)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IpFamily, Protocol, ServicePortName};

    fn svc(itp_local: bool, etp_local: bool, node_port: u16) -> ServicePortInfo {
        ServicePortInfo {
            name: ServicePortName::new("ns", "svc", "p", Protocol::Tcp),
            cluster_ip: "172.30.0.1".parse().unwrap(),
            port: 80,
            node_port,
            external_ips: vec![],
            load_balancer_vips: vec![],
            load_balancer_source_ranges: vec![],
            session_affinity_timeout: None,
            external_policy_local: etp_local,
            internal_policy_local: itp_local,
            health_check_node_port: 0,
            traffic_distribution: None,
        }
    }

    /// `spec` letters: R ready, T serving-terminating, U unusable (not ready, not serving);
    /// L local. Hints: `z:<zones>` / `n:<nodes>` comma lists.
    fn ep(ip: &str, spec: &str, zones: &[&str], nodes: &[&str]) -> EndpointInfo {
        let mut e = EndpointInfo::new(ip.parse().unwrap(), 80);
        e.ready = spec.contains('R');
        e.serving = spec.contains('R') || spec.contains('T');
        e.terminating = spec.contains('T') || spec.contains('U');
        e.is_local = spec.contains('L');
        e.zone_hints = zones.iter().map(|s| s.to_string()).collect();
        e.node_hints = nodes.iter().map(|s| s.to_string()).collect();
        e
    }

    fn ips<'a>(v: impl Iterator<Item = &'a EndpointInfo>) -> Vec<String> {
        v.map(|e| e.ip().to_string()).collect()
    }

    fn node() -> NodeTopology {
        NodeTopology {
            name: "node-a".into(),
            zone: Some("zone-a".into()),
            prefer_same_node_hints: true,
        }
    }

    #[test]
    fn no_endpoints() {
        let s = categorize_endpoints(&[], &svc(false, false, 0), &node());
        assert!(!s.has_any && s.all_len() == 0);
    }

    #[test]
    fn cluster_policy_uses_all_ready() {
        let eps = [
            ep("10.0.0.1", "R", &[], &[]),
            ep("10.0.0.2", "RL", &[], &[]),
            ep("10.0.0.3", "T", &[], &[]),
            ep("10.0.0.4", "U", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(ips(s.cluster()), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(s.local_len(), 0);
        assert_eq!(ips(s.all()), ["10.0.0.1", "10.0.0.2"]);
        assert!(s.has_any);
    }

    #[test]
    fn cluster_policy_falls_back_to_serving_terminating() {
        let eps = [
            ep("10.0.0.1", "T", &[], &[]),
            ep("10.0.0.2", "TL", &[], &[]),
            ep("10.0.0.3", "U", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(ips(s.cluster()), ["10.0.0.1", "10.0.0.2"]);
        assert!(s.has_any);
    }

    #[test]
    fn only_unusable_endpoints_means_none() {
        let eps = [ep("10.0.0.1", "U", &[], &[])];
        let s = categorize_endpoints(&eps, &svc(false, true, 30000), &node());
        assert!(!s.has_any);
        assert_eq!(s.all_len(), 0);
    }

    #[test]
    fn internal_local_policy() {
        let eps = [
            ep("10.0.0.1", "R", &[], &[]),
            ep("10.0.0.2", "RL", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(true, false, 0), &node());
        assert_eq!(s.cluster_len(), 0);
        assert_eq!(ips(s.local()), ["10.0.0.2"]);
        assert_eq!(ips(s.all()), ["10.0.0.2"]);
        // No local endpoint: none reachable, but some exist (DROP, not REJECT).
        let eps = [ep("10.0.0.1", "R", &[], &[])];
        let s = categorize_endpoints(&eps, &svc(true, false, 0), &node());
        assert!(s.local_len() == 0 && s.all_len() == 0 && s.has_any);
    }

    #[test]
    fn external_local_policy_keeps_cluster_endpoints_for_short_circuit() {
        let eps = [
            ep("10.0.0.1", "R", &[], &[]),
            ep("10.0.0.2", "RL", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, true, 30000), &node());
        assert_eq!(ips(s.cluster()), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(s.local()), ["10.0.0.2"]);
        assert_eq!(ips(s.all()), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn local_terminating_fallback_merges_lists() {
        // Ready remote endpoint, local one only serving-terminating.
        let eps = [
            ep("10.0.0.1", "R", &[], &[]),
            ep("10.0.0.2", "TL", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, true, 30000), &node());
        assert_eq!(ips(s.cluster()), ["10.0.0.1"]);
        assert_eq!(ips(s.local()), ["10.0.0.2"]);
        assert_eq!(ips(s.all()), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn zone_hints() {
        let eps = [
            ep("10.0.0.1", "R", &["zone-a"], &[]),
            ep("10.0.0.2", "R", &["zone-b"], &[]),
            ep("10.0.0.3", "R", &["zone-a", "zone-c"], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(s.topology, TopologyMode::PreferSameZone);
        assert_eq!(ips(s.cluster()), ["10.0.0.1", "10.0.0.3"]);
        // One ready endpoint without hints: hints are ignored.
        let eps = [
            ep("10.0.0.1", "R", &["zone-a"], &[]),
            ep("10.0.0.2", "R", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(s.topology, TopologyMode::None);
        assert_eq!(s.cluster_len(), 2);
        // No endpoint for our zone: hints are ignored.
        let eps = [ep("10.0.0.2", "R", &["zone-b"], &[])];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(s.topology, TopologyMode::None);
        // Hints of a not-ready endpoint don't count.
        let eps = [
            ep("10.0.0.1", "R", &["zone-a"], &[]),
            ep("10.0.0.2", "T", &[], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(s.topology, TopologyMode::PreferSameZone);
        assert_eq!(ips(s.cluster()), ["10.0.0.1"]);
        // A node without a zone label never matches zone hints.
        let mut n = node();
        n.zone = None;
        let eps = [ep("10.0.0.1", "R", &[""], &[])];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &n);
        assert_eq!(s.topology, TopologyMode::None);
    }

    #[test]
    fn node_hints_win_over_zone_hints_when_enabled() {
        let eps = [
            ep("10.0.0.1", "R", &["zone-a"], &["node-a"]),
            ep("10.0.0.2", "R", &["zone-a"], &["node-b"]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &node());
        assert_eq!(s.topology, TopologyMode::PreferSameNode);
        assert_eq!(ips(s.cluster()), ["10.0.0.1"]);
        let mut n = node();
        n.prefer_same_node_hints = false;
        let s = categorize_endpoints(&eps, &svc(false, false, 0), &n);
        assert_eq!(s.topology, TopologyMode::PreferSameZone);
        assert_eq!(s.cluster_len(), 2);
    }

    #[test]
    fn topology_with_local_policy_merges_lists() {
        // eTP Local + zone hints excluding the local endpoint: local endpoints still used.
        let eps = [
            ep("10.0.0.1", "R", &["zone-a"], &[]),
            ep("10.0.0.2", "RL", &["zone-b"], &[]),
        ];
        let s = categorize_endpoints(&eps, &svc(false, true, 30000), &node());
        assert_eq!(ips(s.cluster()), ["10.0.0.1"]);
        assert_eq!(ips(s.local()), ["10.0.0.2"]);
        assert_eq!(ips(s.all()), ["10.0.0.1", "10.0.0.2"]);
        let _ = IpFamily::V4;
    }
}
