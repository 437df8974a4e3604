//! `discovery.k8s.io/v1` EndpointSlice → [`kproxy_model::EndpointSlice`].

use std::time::SystemTime;

use k8s_openapi::api::discovery::v1 as discovery;
use kproxy_model::{Endpoint, EndpointPort, IpFamily, Protocol};

use super::{Ctx, LABEL_SERVICE_NAME, is_proxied, namespace_or_default};
use crate::warning::{Warning, quote};

/// The annotation the EndpointSlice controller stamps with the time of the change that
/// triggered the slice's update.
const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Converts a `discovery.k8s.io/v1` EndpointSlice as kube-proxy reads it.
///
/// Returns `None` for a slice kube-proxy never proxies: silently for one it never sees
/// (labelled `service.kubernetes.io/service-proxy-name` or `service.kubernetes.io/headless`)
/// and for `addressType: FQDN`; with a warning for an unknown `addressType`, a missing or
/// empty `kubernetes.io/service-name` label, or a missing name.
///
/// Field by field:
/// - `ports`: a port without a name (`""` is a name) or without a non-zero port in
///   1–65535, or with a protocol other than TCP/UDP/SCTP (missing = TCP), is skipped.
/// - `endpoints`: one without addresses is skipped; only `addresses[0]` is used, parsed
///   sloppily; an invalid address, or one of the other family than `addressType`, skips
///   the endpoint. Conditions: `ready` and `serving` unless false, `terminating` only
///   if true. `nodeName`, `zone` and the `forZones` / `forNodes` hints are kept.
/// - Annotation `endpoints.kubernetes.io/last-change-trigger-time` (RFC 3339) becomes
///   `trigger_time`; an invalid one is ignored with a warning.
pub fn endpoint_slice(
    slice: &discovery::EndpointSlice,
) -> (Option<kproxy_model::EndpointSlice>, Vec<Warning>) {
    let meta = &slice.metadata;
    let namespace = namespace_or_default(meta.namespace.as_deref());
    let name = meta.name.as_deref().unwrap_or_default();
    let mut ctx = Ctx::new("EndpointSlice", Some(namespace), name);
    let labels = meta.labels.as_ref();
    if labels.is_some_and(|l| !is_proxied(l)) {
        return (None, ctx.warnings);
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        // kube-proxy ignores FQDN slices entirely.
        "FQDN" => return (None, ctx.warnings),
        other => {
            ctx.warn(
                "addressType",
                format!(
                    "unknown address type {} (expected IPv4, IPv6 or FQDN); EndpointSlice ignored",
                    quote(other)
                ),
            );
            return (None, ctx.warnings);
        }
    };
    let service_name = match labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) {
        Some(s) if !s.is_empty() => s.clone(),
        found => {
            let what = if found.is_some() { "empty" } else { "missing" };
            ctx.warn(
                format!("metadata.labels[\"{LABEL_SERVICE_NAME}\"]"),
                format!("{what}; EndpointSlice ignored"),
            );
            return (None, ctx.warnings);
        }
    };
    if name.is_empty() {
        ctx.warn("metadata.name", "missing; EndpointSlice ignored");
        return (None, ctx.warnings);
    }

    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(port_name) = &p.name else {
            ctx.warn(
                format!("ports[{i}].name"),
                "missing (an unnamed port has name \"\"); port ignored",
            );
            continue;
        };
        let port = match p.port {
            None => {
                ctx.warn(format!("ports[{i}].port"), "missing; port ignored");
                continue;
            }
            Some(n) => match u16::try_from(n) {
                Ok(port) if port != 0 => port,
                _ => {
                    ctx.warn(
                        format!("ports[{i}].port"),
                        format!("{n} is out of range 1-65535; port ignored"),
                    );
                    continue;
                }
            },
        };
        let protocol = match p.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(s) => match s.parse::<Protocol>() {
                Ok(protocol) => protocol,
                Err(_) => {
                    ctx.warn(
                        format!("ports[{i}].protocol"),
                        format!(
                            "unknown protocol {} (expected TCP, UDP or SCTP); port ignored",
                            quote(s)
                        ),
                    );
                    continue;
                }
            },
        };
        ports.push(EndpointPort {
            name: port_name.clone(),
            protocol,
            port,
        });
    }

    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let Some(address) = ep.addresses.first() else {
            ctx.warn(
                format!("endpoints[{i}].addresses"),
                "empty; endpoint ignored",
            );
            continue;
        };
        let field = format!("endpoints[{i}].addresses[0]");
        let Some(ip) = ctx.ip(&field, address, "endpoint ignored") else {
            continue;
        };
        if !family.contains(&ip) {
            ctx.warn(
                field,
                format!(
                    "{ip} is not an {family} address, as the slice's addressType says; endpoint ignored"
                ),
            );
            continue;
        }
        let conditions = ep.conditions.as_ref();
        let hints = ep.hints.as_ref();
        endpoints.push(Endpoint {
            address: ip,
            ready: conditions.and_then(|c| c.ready) != Some(false),
            serving: conditions.and_then(|c| c.serving) != Some(false),
            terminating: conditions.and_then(|c| c.terminating) == Some(true),
            node_name: ep.node_name.clone(),
            zone: ep.zone.clone(),
            zone_hints: hints
                .and_then(|h| h.for_zones.as_ref())
                .map(|zones| zones.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_default(),
            node_hints: hints
                .and_then(|h| h.for_nodes.as_ref())
                .map(|nodes| nodes.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_default(),
        });
    }

    let trigger_time = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_TRIGGER_TIME))
        .and_then(|s| match s.parse::<jiff::Timestamp>() {
            Ok(t) => Some(SystemTime::from(t)),
            Err(_) => {
                ctx.warn(
                    format!("metadata.annotations[\"{ANNOTATION_TRIGGER_TIME}\"]"),
                    format!("invalid RFC 3339 time {}; ignored", quote(s)),
                );
                None
            }
        });

    let out = kproxy_model::EndpointSlice {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        service_name,
        address_family: family,
        ports,
        endpoints,
        trigger_time,
    };
    (Some(out), ctx.warnings)
}
