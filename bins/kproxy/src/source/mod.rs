//! Where Services, EndpointSlices and the Node come from: manifests on disk, or the
//! Kubernetes API. Every source turns its input into [`Event`](crate::engine::Event)s.

pub mod file;
pub mod kube;
