//! EndpointSlices, and the per-family endpoint lists proxies program.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::types::{IpFamily, Protocol};

/// An EndpointSlice as kproxy needs it: the fields of a `discovery.k8s.io/v1` EndpointSlice
/// that influence proxying, already validated and parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`), in the same namespace.
    pub service_name: String,
    /// `addressType` (`FQDN` slices are never proxied, so they are not representable).
    pub address_family: IpFamily,
    /// `ports` that have a name (possibly `""`) and a non-zero port.
    pub ports: Vec<EndpointPort>,
    /// `endpoints` that have at least one address; only the first address is used.
    pub endpoints: Vec<Endpoint>,
    /// Annotation `endpoints.kubernetes.io/last-change-trigger-time`, for the network
    /// programming latency metric.
    pub trigger_time: Option<SystemTime>,
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// `name` (`""` matches an unnamed Service port).
    pub name: String,
    /// `protocol`.
    pub protocol: Protocol,
    /// `port` (the target port; never 0).
    pub port: u16,
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// `conditions.ready` (unset means true).
    pub ready: bool,
    /// `conditions.serving` (unset means true).
    pub serving: bool,
    /// `conditions.terminating` (unset means false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`.
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// A ready endpoint with no node, zone or hints.
    pub fn ready(address: IpAddr) -> Endpoint {
        Endpoint {
            address,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }
}

/// One endpoint of one service port, as one family's proxier on one node sees it
/// (upstream `BaseEndpointInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    ip: IpAddr,
    port: u16,
    endpoint: EndpointString,
    /// The endpoint is ready.
    pub ready: bool,
    /// The endpoint is serving (possibly while terminating).
    pub serving: bool,
    /// The endpoint is terminating.
    pub terminating: bool,
    /// The endpoint runs on this node.
    pub is_local: bool,
    /// Zones this endpoint is hinted for (sorted, unique).
    pub zone_hints: Box<[String]>,
    /// Nodes this endpoint is hinted for (sorted, unique).
    pub node_hints: Box<[String]>,
}

impl EndpointInfo {
    /// Makes an endpoint; `endpoint_str()` is derived from `ip` and `port`.
    pub fn new(ip: IpAddr, port: u16) -> EndpointInfo {
        let mut endpoint = EndpointString::default();
        match ip {
            IpAddr::V4(v4) => {
                let _ = write!(endpoint, "{v4}:{port}");
            }
            IpAddr::V6(v6) => {
                let _ = write!(endpoint, "[{v6}]:{port}");
            }
        }
        EndpointInfo {
            ip,
            port,
            endpoint,
            ready: true,
            serving: true,
            terminating: false,
            is_local: false,
            zone_hints: Box::default(),
            node_hints: Box::default(),
        }
    }

    /// The endpoint's IP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The endpoint's (target) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ip:port`, or `[ip]:port` for IPv6 (Go's `net.JoinHostPort`); endpoint lists are
    /// sorted by this string and chain names are hashed from it.
    pub fn endpoint_str(&self) -> &str {
        self.endpoint.as_str()
    }

    /// [`endpoint_str`](Self::endpoint_str) as bytes (ASCII), without the UTF-8 check.
    pub fn endpoint_bytes(&self) -> &[u8] {
        self.endpoint.as_bytes()
    }

    /// The IP part of [`endpoint_str`](Self::endpoint_str) as bytes (`10.0.0.1`,
    /// `fd00::1`): the canonical text of [`ip`](Self::ip), without formatting it again.
    pub fn ip_bytes(&self) -> &[u8] {
        let s = self.endpoint.as_bytes();
        let colon = s.iter().rposition(|&b| b == b':').unwrap_or(s.len());
        match self.ip {
            IpAddr::V4(_) => &s[..colon],
            IpAddr::V6(_) => &s[1..colon.saturating_sub(1).max(1)],
        }
    }

    /// Ready, or serving while terminating: usable as a fallback when nothing is ready.
    pub fn is_serving_terminating(&self) -> bool {
        !self.ready && self.serving && self.terminating
    }
}

/// `ip:port` / `[ip]:port` stored inline: the longest, `[` + 39 + `]:` + 5, fits in 47
/// bytes. Kept next to the rest of the endpoint so that compilers reading it do not chase a
/// pointer per endpoint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct EndpointString {
    len: u8,
    buf: [u8; 47],
}

impl Default for EndpointString {
    fn default() -> Self {
        EndpointString {
            len: 0,
            buf: [0; 47],
        }
    }
}

impl EndpointString {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever written (address and port digits, `[`, `]`, `:`, `.`).
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Write for EndpointString {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = self.len as usize;
        let end = start + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl PartialOrd for EndpointString {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EndpointString {
    /// Byte-wise, as the strings compare.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for EndpointString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Key of an endpoint list within one Service: (port name, protocol).
pub type PortKey = (String, Protocol);

/// Merges all EndpointSlices of one Service (for one family) into per-port endpoint lists,
/// as upstream's `EndpointSliceCache` does: slice ports without a usable port are skipped,
/// duplicate endpoints (same `ip:port`, from one or several slices) collapse to one with a
/// non-terminating instance preferred, and each list is sorted by endpoint string.
///
/// Slices are taken in the order given; pass them sorted by name for a deterministic result.
pub fn merge_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    family: IpFamily,
    node_name: &str,
) -> BTreeMap<PortKey, Vec<EndpointInfo>> {
    let mut by_port: BTreeMap<PortKey, BTreeMap<EndpointString, EndpointInfo>> = BTreeMap::new();
    for slice in slices {
        if slice.address_family != family {
            continue;
        }
        let mut ports: Vec<&EndpointPort> = slice.ports.iter().filter(|p| p.port != 0).collect();
        ports.sort_by_key(|p| p.port);
        let mut endpoints: Vec<&Endpoint> = slice
            .endpoints
            .iter()
            .filter(|e| family.contains(&e.address))
            .collect();
        endpoints.sort_by_cached_key(|e| e.address.to_string());
        for port in ports {
            let set = by_port
                .entry((port.name.clone(), port.protocol))
                .or_default();
            for ep in &endpoints {
                let info = endpoint_info(ep, port.port, node_name);
                match set.entry(info.endpoint) {
                    Entry::Vacant(v) => {
                        v.insert(info);
                    }
                    Entry::Occupied(mut o) => {
                        if !info.terminating {
                            o.insert(info);
                        }
                    }
                }
            }
        }
    }
    by_port
        .into_iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(key, set)| (key, set.into_values().collect()))
        .collect()
}

fn endpoint_info(ep: &Endpoint, port: u16, node_name: &str) -> EndpointInfo {
    let mut info = EndpointInfo::new(ep.address, port);
    info.ready = ep.ready;
    info.serving = ep.serving;
    info.terminating = ep.terminating;
    info.is_local = !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name);
    info.zone_hints = sorted_unique(&ep.zone_hints);
    info.node_hints = sorted_unique(&ep.node_hints);
    info
}

fn sorted_unique(v: &[String]) -> Box<[String]> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, family: IpFamily, eps: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            namespace: "ns".into(),
            name: name.into(),
            service_name: "svc".into(),
            address_family: family,
            ports: vec![
                EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                },
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                },
            ],
            endpoints: eps,
            trigger_time: None,
        }
    }

    fn ep(addr: &str) -> Endpoint {
        Endpoint::ready(addr.parse().unwrap())
    }

    #[test]
    fn endpoint_strings() {
        assert_eq!(
            EndpointInfo::new("10.0.0.1".parse().unwrap(), 80).endpoint_str(),
            "10.0.0.1:80"
        );
        let v6 = EndpointInfo::new("fd00::1".parse().unwrap(), 80);
        assert_eq!(v6.endpoint_str(), "[fd00::1]:80");
        assert_eq!(v6.ip_bytes(), b"fd00::1");
        let v4 = EndpointInfo::new("10.0.0.1".parse().unwrap(), 65535);
        assert_eq!(v4.ip_bytes(), b"10.0.0.1");
        let longest: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(
            EndpointInfo::new(longest, 65535).endpoint_str(),
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
        );
    }

    #[test]
    fn merges_sorts_and_deduplicates() {
        let mut term = ep("10.0.0.2");
        term.ready = false;
        term.terminating = true;
        let mut local = ep("10.0.0.10");
        local.node_name = Some("me".into());
        let a = slice("a", IpFamily::V4, vec![ep("10.0.0.2"), local]);
        let b = slice("b", IpFamily::V4, vec![term, ep("10.0.0.3")]);
        let v6 = slice("c", IpFamily::V6, vec![ep("fd00::1")]);
        let merged = merge_slices([&a, &b, &v6], IpFamily::V4, "me");
        let http = &merged[&("http".to_string(), Protocol::Tcp)];
        let strs: Vec<&str> = http.iter().map(|e| e.endpoint_str()).collect();
        // Byte-wise order: "10.0.0.10" sorts before "10.0.0.2".
        assert_eq!(strs, ["10.0.0.10:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
        assert!(http[0].is_local);
        // The terminating duplicate from slice b did not replace the ready one from a.
        assert!(http[1].ready && !http[1].terminating);
        assert_eq!(merged[&("dns".to_string(), Protocol::Udp)].len(), 3);
    }

    #[test]
    fn non_terminating_duplicate_replaces_terminating_one() {
        let mut term = ep("10.0.0.2");
        term.ready = false;
        term.terminating = true;
        let a = slice("a", IpFamily::V4, vec![term]);
        let b = slice("b", IpFamily::V4, vec![ep("10.0.0.2")]);
        let merged = merge_slices([&a, &b], IpFamily::V4, "me");
        assert!(merged[&("http".to_string(), Protocol::Tcp)][0].ready);
    }

    #[test]
    fn empty_node_name_is_never_local() {
        let mut e = ep("10.0.0.1");
        e.node_name = Some(String::new());
        let merged = merge_slices([&slice("a", IpFamily::V4, vec![e])], IpFamily::V4, "");
        assert!(!merged[&("http".to_string(), Protocol::Tcp)][0].is_local);
    }
}
