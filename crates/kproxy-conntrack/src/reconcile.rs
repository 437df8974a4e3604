//! Stale flow reconciliation, as kube-proxy's conntrack reconciler does it
//! (`CleanStaleEntries` in `pkg/proxy/conntrack/cleanup.go`, Kubernetes 1.32 and later,
//! with the fix of kubernetes/kubernetes#139629 for services without endpoints).
//!
//! # The rule
//!
//! For every service port of the filter's protocol (UDP, as upstream), the caller gives its
//! frontends — `clusterIP:port`, each `externalIP:port`, each `loadBalancerIP:port` — its
//! node port if any, and its *serving* endpoints (ready or not, terminating or not: upstream
//! deliberately ignores traffic policies, topology and terminating state, so that changing a
//! service does not break its existing flows, as for TCP).
//!
//! An entry of the filter's protocol is stale when either
//!
//! - its **original destination** `IP:port` is a frontend of a service port, and its
//!   **reply source** is not one of that port's serving endpoints; or
//! - its **original destination port** is a service port's node port (whatever the
//!   destination IP: node ports are reached on every node address), and its **reply
//!   source** is not one of that port's serving endpoints.
//!
//! "Is a serving endpoint" comes in two strengths, chosen per service port:
//!
//! - [`StaleFlowFilter::add_service_port_endpoints`] takes endpoints as `IP:port` and
//!   compares the reply source address *and port*, as upstream does since Kubernetes 1.33
//!   (kubernetes/kubernetes#130542): an endpoint that keeps its IP but changes its target
//!   port leaves stale entries too. Prefer this one.
//! - [`StaleFlowFilter::add_service_port`] takes endpoint IPs only and compares the reply
//!   source IP, as Kubernetes 1.32 did.
//!
//! The reply source is where the kernel expects answers from, so after DNAT it is the
//! endpoint the flow is stuck to. An entry that was never DNATed (created while no rule
//! existed) has the frontend itself as reply source, which is never an endpoint, so it is
//! stale too: that is what lets a client whose first datagrams raced the rules reach the
//! service once it has endpoints.
//!
//! A service port with **no** serving endpoints makes every entry to its frontends or node
//! port stale (kubernetes/kubernetes#139628): such entries keep one-way senders DNATed to a
//! deleted endpoint forever, because the service's reject rule only sees new flows. Upstream
//! skipped these services before kubernetes/kubernetes#139629;
//! [`StaleFlowFilter::clear_services_without_endpoints`] restores that behaviour if ever
//! needed.
//!
//! Entries of other protocols (TCP above all) are never selected. Upstream reconciles UDP
//! only; [`StaleFlowFilter::with_protocol`] lets a caller reconcile SCTP the same way, which
//! upstream does not do.
//!
//! Families: the filter itself does not care. Upstream runs once per IP family with that
//! family's services; callers should do the same ([`clean_stale_flows`] lists one family).
//! IPv4-mapped IPv6 addresses are compared as the IPv4 addresses they map.
//!
//! Where upstream would need the same frontend twice (two service ports claiming one
//! `IP:port`, or one node port; impossible in a valid cluster), this filter takes the union
//! of their endpoints, so it never deletes a flow to an endpoint any caller declared serving.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::conntrack::{Conntrack, DeleteStats};
use crate::error::Result;
use crate::flow::{Family, Flow, Protocol};

/// Which conntrack entries are stale, given the current services and serving endpoints.
///
/// A pure value: build it from the service model, then ask [`StaleFlowFilter::is_stale`] or
/// [`StaleFlowFilter::select`], or hand it to [`clean_stale_flows`].
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use kproxy_conntrack::{Flow, Protocol, StaleFlowFilter, Tuple};
///
/// let vip: IpAddr = "10.96.0.10".parse().unwrap();
/// let client: SocketAddr = "10.0.0.5:40000".parse().unwrap();
/// let alive: SocketAddr = "10.244.2.2:5353".parse().unwrap();
/// let gone: SocketAddr = "10.244.1.2:5353".parse().unwrap();
///
/// let mut filter = StaleFlowFilter::new(); // UDP
/// filter.add_service_port_endpoints(&[(vip, 53)], Some(30053), &[alive]);
///
/// let to = |backend: SocketAddr| {
///     let original = Tuple::new(client, SocketAddr::new(vip, 53));
///     Flow::new(Protocol::Udp, original, Tuple::new(backend, client))
/// };
/// assert!(filter.is_stale(&to(gone)));
/// assert!(!filter.is_stale(&to(alive)));
/// // Same endpoint IP, old target port: stale too.
/// assert!(filter.is_stale(&to("10.244.2.2:5300".parse().unwrap())));
/// ```
#[derive(Debug, Clone)]
pub struct StaleFlowFilter {
    protocol: Protocol,
    clear_without_endpoints: bool,
    by_frontend: HashMap<(IpAddr, u16), HashSet<Serving>>,
    by_node_port: HashMap<u16, HashSet<Serving>>,
}

/// A serving endpoint as the filter compares it with a reply source: an IP with any port
/// (Kubernetes 1.32) or an exact `IP:port` (1.33 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Serving {
    AnyPort(IpAddr),
    Exact(IpAddr, u16),
}

impl Default for StaleFlowFilter {
    fn default() -> Self {
        StaleFlowFilter::new()
    }
}

impl StaleFlowFilter {
    /// An empty filter for UDP, as upstream.
    pub fn new() -> StaleFlowFilter {
        StaleFlowFilter::with_protocol(Protocol::Udp)
    }

    /// An empty filter for `protocol`'s entries (e.g. [`Protocol::Sctp`]; upstream only
    /// reconciles UDP). The caller adds only service ports of that protocol.
    pub fn with_protocol(protocol: Protocol) -> StaleFlowFilter {
        StaleFlowFilter {
            protocol,
            clear_without_endpoints: true,
            by_frontend: HashMap::new(),
            by_node_port: HashMap::new(),
        }
    }

    /// Whether service ports with zero serving endpoints have all their entries cleared
    /// (`true`, the default, as upstream since kubernetes/kubernetes#139629) or are ignored
    /// (`false`, as upstream before that fix). Applies to the service ports added afterwards.
    pub fn clear_services_without_endpoints(&mut self, clear: bool) -> &mut Self {
        self.clear_without_endpoints = clear;
        self
    }

    /// The protocol whose entries this filter selects.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether no service port was added (then nothing is ever stale).
    pub fn is_empty(&self) -> bool {
        self.by_frontend.is_empty() && self.by_node_port.is_empty()
    }

    /// Adds one service port: its frontends `vips` (`clusterIP:port`, `externalIP:port`,
    /// `loadBalancerIP:port`), its node port (`None` or `Some(0)` for none) and the IPs of
    /// its serving endpoints. A reply from a serving endpoint IP keeps the flow whatever the
    /// port (Kubernetes 1.32); [`add_service_port_endpoints`](Self::add_service_port_endpoints)
    /// also compares the port, as upstream does today.
    pub fn add_service_port(
        &mut self,
        vips: &[(IpAddr, u16)],
        node_port: Option<u16>,
        serving_endpoint_ips: &[IpAddr],
    ) -> &mut Self {
        let serving: Vec<Serving> = serving_endpoint_ips
            .iter()
            .map(|ip| Serving::AnyPort(ip.to_canonical()))
            .collect();
        self.add(vips, node_port, &serving)
    }

    /// Adds one service port like [`add_service_port`](Self::add_service_port), with its
    /// serving endpoints as `IP:targetPort`: a flow is kept only if its reply source address
    /// *and port* are one of them (Kubernetes 1.33+, kubernetes/kubernetes#130542).
    pub fn add_service_port_endpoints(
        &mut self,
        vips: &[(IpAddr, u16)],
        node_port: Option<u16>,
        serving_endpoints: &[SocketAddr],
    ) -> &mut Self {
        let serving: Vec<Serving> = serving_endpoints
            .iter()
            .map(|ep| Serving::Exact(ep.ip().to_canonical(), ep.port()))
            .collect();
        self.add(vips, node_port, &serving)
    }

    fn add(
        &mut self,
        vips: &[(IpAddr, u16)],
        node_port: Option<u16>,
        serving: &[Serving],
    ) -> &mut Self {
        if serving.is_empty() && !self.clear_without_endpoints {
            return self;
        }
        for &(ip, port) in vips {
            self.by_frontend
                .entry((ip.to_canonical(), port))
                .or_default()
                .extend(serving);
        }
        if let Some(port) = node_port.filter(|&p| p != 0) {
            self.by_node_port.entry(port).or_default().extend(serving);
        }
        self
    }

    /// Whether `flow` is stale under the rule in the [module docs](self).
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != self.protocol {
            return false;
        }
        let src = flow.reply.src.to_canonical();
        let any_port = Serving::AnyPort(src);
        let exact = Serving::Exact(src, flow.reply.src_port);
        let frontend = (flow.original.dst.to_canonical(), flow.original.dst_port);
        let stale = |endpoints: Option<&HashSet<Serving>>| {
            endpoints
                .is_some_and(|serving| !serving.contains(&any_port) && !serving.contains(&exact))
        };
        stale(self.by_frontend.get(&frontend))
            || stale(self.by_node_port.get(&flow.original.dst_port))
    }

    /// The stale flows among `flows`, in their order.
    pub fn select<'a>(&'a self, flows: &'a [Flow]) -> impl Iterator<Item = &'a Flow> + 'a {
        flows.iter().filter(|f| self.is_stale(f))
    }
}

/// Lists `family`'s conntrack entries and deletes the stale ones: kube-proxy's
/// `CleanStaleEntries`. Entries that vanish meanwhile are counted, not errors.
///
/// An empty filter selects nothing, so the table is not even listed.
pub fn clean_stale_flows(
    ct: &mut Conntrack,
    family: Family,
    filter: &StaleFlowFilter,
) -> Result<DeleteStats> {
    if filter.is_empty() {
        return Ok(DeleteStats::default());
    }
    let flows = ct.list(family)?;
    ct.delete_many(filter.select(&flows))
}
