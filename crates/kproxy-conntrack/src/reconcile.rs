//! Stale flow reconciliation, as kube-proxy's conntrack reconciler does it
//! (`CleanStaleEntries` in `pkg/proxy/conntrack/cleanup.go`, Kubernetes 1.32 and later, with
//! the fix of kubernetes/kubernetes#139629 for services without endpoints).
//!
//! # The rule
//!
//! For every service port of the filter's protocol (UDP, as upstream), the caller gives its
//! frontends — `clusterIP:port`, each `externalIP:port`, each `loadBalancerIP:port` — its
//! node port if any, and the IPs of its *serving* endpoints (ready or not, terminating or not:
//! upstream deliberately ignores traffic policies, topology and terminating state, so that
//! changing a service does not break its existing flows, as for TCP).
//!
//! An entry of the filter's protocol is stale when either
//!
//! - its **original destination** `IP:port` is a frontend of a service port, and its
//!   **reply source IP** is not one of that port's serving endpoint IPs; or
//! - its **original destination port** is a service port's node port (whatever the
//!   destination IP: node ports are reached on every node address), and its **reply source
//!   IP** is not one of that port's serving endpoint IPs.
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
//! 1.32 to 1.35 skipped these services; [`StaleFlowFilter::clear_services_without_endpoints`]
//! restores that behaviour if ever needed.
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
//! of their endpoint IPs, so it never deletes a flow to an IP any caller declared serving.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::conntrack::{Conntrack, DeleteStats};
use crate::error::Result;
use crate::flow::{Family, Flow, Protocol};

/// Which conntrack entries are stale, given the current services and serving endpoints.
///
/// A pure value: build it from the service model, then ask [`StaleFlowFilter::is_stale`] or
/// [`StaleFlowFilter::select`], or hand it to [`clean_stale_flows`].
///
/// ```
/// use std::net::IpAddr;
/// use kproxy_conntrack::{Flow, Protocol, StaleFlowFilter, Tuple};
///
/// let vip: IpAddr = "10.96.0.10".parse().unwrap();
/// let alive: IpAddr = "10.244.2.2".parse().unwrap();
/// let gone: IpAddr = "10.244.1.2".parse().unwrap();
/// let client: IpAddr = "10.0.0.5".parse().unwrap();
///
/// let mut filter = StaleFlowFilter::new();
/// filter.add_service_port(&[(vip, 53)], Some(30053), &[alive]);
///
/// let to = |backend: IpAddr| {
///     Flow::new(
///         Protocol::Udp,
///         Tuple { src: client, dst: vip, src_port: 40000, dst_port: 53 },
///         Tuple { src: backend, dst: client, src_port: 5353, dst_port: 40000 },
///     )
/// };
/// assert!(filter.is_stale(&to(gone)));
/// assert!(!filter.is_stale(&to(alive)));
/// ```
#[derive(Debug, Clone)]
pub struct StaleFlowFilter {
    protocol: Protocol,
    clear_without_endpoints: bool,
    by_frontend: HashMap<(IpAddr, u16), HashSet<IpAddr>>,
    by_node_port: HashMap<u16, HashSet<IpAddr>>,
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
    /// (`false`, as Kubernetes 1.32 to 1.35). Applies to the service ports added afterwards.
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
    /// its serving endpoints.
    pub fn add_service_port(
        &mut self,
        vips: &[(IpAddr, u16)],
        node_port: Option<u16>,
        serving_endpoint_ips: &[IpAddr],
    ) -> &mut Self {
        if serving_endpoint_ips.is_empty() && !self.clear_without_endpoints {
            return self;
        }
        let endpoints = || serving_endpoint_ips.iter().map(|ip| ip.to_canonical());
        for &(ip, port) in vips {
            self.by_frontend
                .entry((ip.to_canonical(), port))
                .or_default()
                .extend(endpoints());
        }
        if let Some(port) = node_port.filter(|&p| p != 0) {
            self.by_node_port
                .entry(port)
                .or_default()
                .extend(endpoints());
        }
        self
    }

    /// Whether `flow` is stale under the rule in the [module docs](self).
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != self.protocol {
            return false;
        }
        let reply_src = flow.reply.src.to_canonical();
        let frontend = (flow.original.dst.to_canonical(), flow.original.dst_port);
        let stale = |endpoints: Option<&HashSet<IpAddr>>| {
            endpoints.is_some_and(|serving| !serving.contains(&reply_src))
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
