//! kproxy's service model: what a Kubernetes service proxy needs to know about Services and
//! EndpointSlices, and the decisions kube-proxy makes from them — with no I/O and no
//! Kubernetes client.
//!
//! Every dataplane (iptables, nftables, IPVS, userspace) compiles rules from this model, so
//! they all agree on which endpoints a packet may reach. Turning Kubernetes objects into
//! model types is the job of the `kproxy-k8s` crate; this crate only sees validated,
//! parsed values, so everything downstream of it is infallible.
//!
//! # What it does
//!
//! - [`Service`] and [`EndpointSlice`]: the proxied fields of the Kubernetes objects,
//!   covering both IP families.
//! - [`ServicePortInfo`] and [`EndpointInfo`]: what one family's proxier on one node sees
//!   (upstream `BaseServicePortInfo` / `BaseEndpointInfo`).
//! - [`ChangeTracker`]: applies add/update/delete events for Services and EndpointSlices and,
//!   at each [`commit`](ChangeTracker::commit), reports which Services changed since the last
//!   sync — the input of a partial sync. Endpoints from several slices merge; the same
//!   objects in any order give the same [`ProxyState`].
//! - [`categorize_endpoints`]: endpoint selection exactly as upstream (cluster and local
//!   sets, the serving-terminating fallback, topology hints, `externalTrafficPolicy` and
//!   `internalTrafficPolicy: Local`).
//! - [`Node`]: the proxier's own Node (name, primary IPs, zone, pod CIDRs).
//! - Health-check inputs: [`ProxyState::health_check_node_ports`] and
//!   [`ProxyState::local_ready_endpoints`].
//! - [`ip`]: address parsing as Kubernetes does it (IPv4 literals with leading zeros).
//!
//! # What it does not do
//!
//! Read or watch anything, talk to a kernel, or know Kubernetes' API types.
//!
//! # Layout
//!
//! - `types`: vocabulary ([`IpFamily`], [`Protocol`], [`ServiceName`], [`ServicePortName`], …)
//! - `service`: [`Service`] → [`ServicePortInfo`]
//! - `endpoints`: [`EndpointSlice`] → [`EndpointInfo`] lists ([`merge_slices`])
//! - `tracker`: [`ChangeTracker`], [`ProxyState`], [`Changes`]
//! - `selection`: [`categorize_endpoints`], [`NodeTopology`]
//! - `node`: [`Node`]
//! - [`ip`]: sloppy IP/CIDR parsing
//!
//! # Example
//!
//! ```
//! use kproxy_model::*;
//!
//! let mut tracker = ChangeTracker::new(IpFamily::V4, "node-a");
//! tracker.update_service(Service {
//!     namespace: "default".into(),
//!     name: "web".into(),
//!     cluster_ips: vec!["10.96.0.10".parse().unwrap()],
//!     ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: 0 }],
//!     ..Service::default()
//! });
//! let mut local = Endpoint::ready("10.244.1.5".parse().unwrap());
//! local.node_name = Some("node-a".into());
//! tracker.update_endpoint_slice(EndpointSlice {
//!     namespace: "default".into(),
//!     name: "web-abc12".into(),
//!     service_name: "web".into(),
//!     address_family: IpFamily::V4,
//!     ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
//!     endpoints: vec![local, Endpoint::ready("10.244.2.7".parse().unwrap())],
//!     trigger_time: None,
//! });
//!
//! let changes = tracker.commit();
//! assert_eq!(changes.services.len(), 1);
//!
//! let node = NodeTopology::named("node-a");
//! for (port, endpoints) in tracker.state().service_ports() {
//!     let sets = categorize_endpoints(endpoints, port, &node);
//!     let all: Vec<&str> = sets.all().map(|e| e.endpoint_str()).collect();
//!     assert_eq!(port.name.to_string(), "default/web:http");
//!     assert_eq!(all, ["10.244.1.5:8080", "10.244.2.7:8080"]);
//! }
//! // Nothing changed since: the next commit is empty.
//! assert!(tracker.commit().is_empty());
//! ```

#![forbid(unsafe_code)]

mod endpoints;
pub mod ip;
mod node;
mod selection;
mod service;
mod tracker;
mod types;

pub use endpoints::{Endpoint, EndpointInfo, EndpointPort, EndpointSlice, PortKey, merge_slices};
pub use node::Node;
pub use selection::{EndpointSets, NodeTopology, TopologyMode, categorize_endpoints};
pub use service::{LoadBalancerIngress, Service, ServicePort, ServicePortInfo};
pub use tracker::{ChangeTracker, Changes, ProxyState, ServiceState};
pub use types::{
    IpFamily, IpMode, Protocol, ServiceName, ServicePortName, ServiceType, SessionAffinity,
    TrafficPolicy, UnknownProtocol,
};
