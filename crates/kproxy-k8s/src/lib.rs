//! Kubernetes objects → kproxy's service model.
//!
//! This crate is kproxy's boundary with the Kubernetes API: it turns `v1` Services,
//! `discovery.k8s.io/v1` EndpointSlices and `v1` Nodes ([k8s-openapi] types) into
//! [`kproxy_model`] values, reading every field exactly as upstream kube-proxy does, and it
//! loads such objects from manifests on disk (YAML or JSON, as `kubectl get -o yaml|json`
//! prints them). Only this crate and the binary know Kubernetes types.
//!
//! Nothing here panics on input or fails because of one bad object: what kube-proxy would
//! skip or correct is skipped or corrected, and reported as a [`Warning`] that says which
//! file, object and field, what was wrong and what was done.
//!
//! # What it does not do
//!
//! Decide anything a proxier decides: which service ports a family programs and which endpoints they use is
//! [`kproxy_model`]'s job.
//!
//! # Layout
//!
//! - [`convert`]: [`convert::service`], [`convert::endpoint_slice`], [`convert::node`], and
//!   [`convert::is_proxied`] (the label filter kube-proxy's informers apply).
//! - [`manifests`]: [`manifests::load_path`] and [`manifests::load_str`] →
//!   [`manifests::Manifests`].
//! - [`Warning`] and [`ObjectRef`]: what was skipped or corrected, and where.
//! - [`Error`]: input that cannot be read at all.
//! - `watch` (feature `watch`, on by default): the API server source, which watches
//!   Services, EndpointSlices and this node's Node with kube-rs and sends what changed,
//!   converted, re-lists and outages included. Without the feature the crate does not
//!   depend on kube (the fuzz targets and model-only users build it so).
//!
//! # Example
//!
//! ```
//! use kproxy_k8s::manifests::load_str;
//! use kproxy_model::{IpFamily, Protocol};
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web, namespace: shop}
//! spec:
//!   clusterIP: 10.96.0.10
//!   ports:
//!   - {name: http, port: 80, targetPort: 8080}
//!   - {name: ping, port: 7, protocol: ICMP}
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata:
//!   name: web-x1
//!   namespace: shop
//!   labels: {kubernetes.io/service-name: web}
//! addressType: IPv4
//! ports: [{name: http, port: 8080, protocol: TCP}]
//! endpoints:
//! - addresses: ["10.244.1.5"]
//!   conditions: {ready: true}
//!   nodeName: node-a
//! "#;
//!
//! let loaded = load_str(yaml, "web.yaml");
//! let svc = &loaded.services[0];
//! assert_eq!(svc.cluster_ip(IpFamily::V4).unwrap().to_string(), "10.96.0.10");
//! assert_eq!(svc.ports.len(), 1);
//! assert_eq!(svc.ports[0].protocol, Protocol::Tcp);
//! assert_eq!(loaded.endpoint_slices[0].service_name, "web");
//! assert_eq!(loaded.endpoint_slices[0].endpoints[0].node_name.as_deref(), Some("node-a"));
//!
//! // The ICMP port was skipped, and said so.
//! assert_eq!(
//!     loaded.warnings[0].to_string(),
//!     "web.yaml: Service shop/web: spec.ports[1].protocol: \
//!      unknown protocol \"ICMP\" (expected TCP, UDP or SCTP); port ignored"
//! );
//! ```
//!
//! [k8s-openapi]: k8s_openapi

#![forbid(unsafe_code)]

pub mod convert;
mod error;
pub mod manifests;
mod warning;
#[cfg(feature = "watch")]
pub mod watch;

pub use error::Error;
pub use warning::{ObjectRef, Warning};
