//! `v1` Node → [`kproxy_model::Node`].

use k8s_openapi::api::core::v1 as core;

use super::Ctx;
use crate::warning::Warning;

/// The zone label kube-proxy's topology-aware routing reads.
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The taint the cluster autoscaler puts on a node it is about to delete.
const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

/// Converts a `v1` Node to what a proxier uses from its own Node.
///
/// - `status.addresses` of type `InternalIP` and `ExternalIP`, in order, parsed sloppily
///   (invalid ones skipped with a warning; other types ignored).
/// - Label `topology.kubernetes.io/zone` (an empty value counts as none).
/// - `spec.podCIDRs`, or `spec.podCIDR` when that list is empty (invalid ones skipped with
///   a warning).
/// - `metadata.deletionTimestamp` set → `deleting`; a `ToBeDeletedByClusterAutoscaler`
///   taint → `to_be_deleted_taint`.
///
/// A Node without a name gives a model Node with an empty name, and a warning.
pub fn node(node: &core::Node) -> (kproxy_model::Node, Vec<Warning>) {
    let meta = &node.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    let mut ctx = Ctx::new("Node", None, name);
    if name.is_empty() {
        ctx.warn("metadata.name", "missing");
    }
    let mut out = kproxy_model::Node {
        name: name.to_owned(),
        zone: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ZONE))
            .filter(|z| !z.is_empty())
            .cloned(),
        deleting: meta.deletion_timestamp.is_some(),
        ..kproxy_model::Node::default()
    };

    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    for (i, a) in addresses.iter().enumerate() {
        let list = match a.type_.as_str() {
            "InternalIP" => &mut out.internal_ips,
            "ExternalIP" => &mut out.external_ips,
            _ => continue,
        };
        if let Some(ip) = ctx.ip(
            &format!("status.addresses[{i}].address"),
            &a.address,
            "ignored",
        ) {
            list.push(ip);
        }
    }

    if let Some(spec) = &node.spec {
        match spec.pod_cidrs.as_deref() {
            Some(cidrs) if !cidrs.is_empty() => {
                for (i, s) in cidrs.iter().enumerate() {
                    if let Some(net) = ctx.cidr(&format!("spec.podCIDRs[{i}]"), s) {
                        out.pod_cidrs.push(net);
                    }
                }
            }
            _ => {
                if let Some(s) = spec.pod_cidr.as_deref().filter(|s| !s.is_empty())
                    && let Some(net) = ctx.cidr("spec.podCIDR", s)
                {
                    out.pod_cidrs.push(net);
                }
            }
        }
        out.to_be_deleted_taint = spec
            .taints
            .iter()
            .flatten()
            .any(|t| t.key == TAINT_TO_BE_DELETED);
    }
    (out, ctx.warnings)
}
