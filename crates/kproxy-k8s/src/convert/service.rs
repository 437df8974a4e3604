//! `v1` Service → [`kproxy_model::Service`].

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use kproxy_model::{
    IpFamily, IpMode, LoadBalancerIngress, Protocol, ServicePort, ServiceType, SessionAffinity,
    TrafficPolicy,
};

use super::{Ctx, is_proxied, namespace_or_default};
use crate::warning::{Warning, quote};

/// Converts a `v1` Service as kube-proxy reads it.
///
/// Returns `None` (without a warning) for a Service kube-proxy never sees (labelled
/// `service.kubernetes.io/service-proxy-name` or `service.kubernetes.io/headless`), and
/// `None` with a warning for one without a name. Everything else gives a Service; headless
/// ones (`clusterIP: None`) have no cluster IPs and ExternalName ones keep their type, and
/// [`kproxy_model::ServicePortInfo::from_service`] skips both, as upstream does.
///
/// Field by field:
/// - `spec.clusterIPs` (or `spec.clusterIP` when `clusterIPs` is empty): a primary address
///   of `None` or `""` means headless. Each address is parsed sloppily; with
///   `spec.ipFamilies` set, `clusterIPs[i]` must be of family `ipFamilies[i]` and addresses
///   beyond `ipFamilies` are ignored (upstream `GetClusterIPByFamily`); at most one per
///   family is kept, in spec order.
/// - `spec.ports`: a port whose protocol is not TCP/UDP/SCTP (missing = TCP), whose `port`
///   is not 1–65535 or whose `nodePort` is not 0–65535 is skipped; a later port with the
///   same name and protocol replaces an earlier one (upstream keys ports by both).
/// - `spec.externalIPs`, `status.loadBalancer.ingress[].ip`: parsed sloppily, invalid ones
///   skipped; hostname-only ingress entries are ignored; an `ipMode` other than `VIP` or
///   `Proxy` counts as not-VIP, as upstream `IsVIPMode` does.
/// - `spec.loadBalancerSourceRanges`: trimmed, parsed sloppily with host bits cleared,
///   invalid ones skipped. Empty entries in these three lists are skipped silently, as
///   upstream does.
/// - Traffic policies (missing = Cluster), `sessionAffinity` (ClientIP timeout from
///   `sessionAffinityConfig`, default 10800 s), `type` (missing = ClusterIP): unknown
///   values fall back to the default with a warning.
pub fn service(svc: &core::Service) -> (Option<kproxy_model::Service>, Vec<Warning>) {
    let meta = &svc.metadata;
    let namespace = namespace_or_default(meta.namespace.as_deref());
    let name = meta.name.as_deref().unwrap_or_default();
    let mut ctx = Ctx::new("Service", Some(namespace), name);
    if meta.labels.as_ref().is_some_and(|l| !is_proxied(l)) {
        return (None, ctx.warnings);
    }
    if name.is_empty() {
        ctx.warn("metadata.name", "missing; Service ignored");
        return (None, ctx.warnings);
    }
    let default_spec = core::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);

    let mut out = kproxy_model::Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        service_type: service_type(&mut ctx, spec.type_.as_deref()),
        cluster_ips: cluster_ips(&mut ctx, spec),
        ports: ports(&mut ctx, spec.ports.as_deref().unwrap_or_default()),
        traffic_distribution: spec.traffic_distribution.clone(),
        ..kproxy_model::Service::default()
    };

    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        if s.trim().is_empty() {
            continue;
        }
        if let Some(ip) = ctx.ip(&format!("spec.externalIPs[{i}]"), s, "ignored") {
            out.external_ips.push(ip);
        }
    }

    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        // Hostname-only entries (DNS-based load balancers) give kube-proxy nothing to do.
        let Some(s) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let Some(ip) = ctx.ip(
            &format!("status.loadBalancer.ingress[{i}].ip"),
            s,
            "ignored",
        ) else {
            continue;
        };
        let ip_mode = match ing.ip_mode.as_deref() {
            None | Some("VIP") => IpMode::Vip,
            Some("Proxy") => IpMode::Proxy,
            Some(other) => {
                ctx.warn(
                    format!("status.loadBalancer.ingress[{i}].ipMode"),
                    format!(
                        "unknown value {} (expected VIP or Proxy); treated as Proxy, as kube-proxy handles only VIP ingress IPs",
                        quote(other)
                    ),
                );
                IpMode::Proxy
            }
        };
        out.load_balancer_ingress
            .push(LoadBalancerIngress { ip, ip_mode });
    }

    for (i, s) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        // Validation lets whitespace padding through; upstream trims it.
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        if let Some(net) = ctx.cidr(&format!("spec.loadBalancerSourceRanges[{i}]"), s) {
            out.load_balancer_source_ranges.push(net);
        }
    }

    out.external_traffic_policy = traffic_policy(
        &mut ctx,
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    );
    out.internal_traffic_policy = traffic_policy(
        &mut ctx,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    );

    if let Some(p) = spec.health_check_node_port {
        match u16::try_from(p) {
            Ok(p) => out.health_check_node_port = p,
            Err(_) => ctx.warn(
                "spec.healthCheckNodePort",
                format!("{p} is out of range 0-65535; ignored"),
            ),
        }
    }

    out.session_affinity = session_affinity(&mut ctx, spec);
    (Some(out), ctx.warnings)
}

fn service_type(ctx: &mut Ctx, value: Option<&str>) -> ServiceType {
    match value {
        None | Some("" | "ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            ctx.warn(
                "spec.type",
                format!(
                    "unknown type {} (expected ClusterIP, NodePort, LoadBalancer or ExternalName); treated as ClusterIP",
                    quote(other)
                ),
            );
            ServiceType::ClusterIp
        }
    }
}

fn cluster_ips(ctx: &mut Ctx, spec: &core::ServiceSpec) -> Vec<IpAddr> {
    let list = spec.cluster_ips.as_deref().unwrap_or_default();
    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let (base, addrs): (&str, Vec<&str>) = if list.is_empty() {
        ("spec.clusterIP", single.into_iter().collect())
    } else {
        if let Some(single) = single
            && single != list[0]
        {
            ctx.warn(
                "spec.clusterIP",
                format!(
                    "{} differs from spec.clusterIPs[0] {}; using spec.clusterIPs",
                    quote(single),
                    quote(&list[0])
                ),
            );
        }
        ("spec.clusterIPs", list.iter().map(String::as_str).collect())
    };
    // A primary address of "None" (or none yet) is a headless Service: nothing to proxy.
    match addrs.first() {
        None | Some(&("" | "None")) => return Vec::new(),
        Some(_) => {}
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let mut ips: Vec<IpAddr> = Vec::new();
    for (i, s) in addrs.iter().enumerate() {
        let field = if list.is_empty() {
            base.to_owned()
        } else {
            format!("{base}[{i}]")
        };
        if !families.is_empty() && i >= families.len() {
            ctx.warn(field, "no matching spec.ipFamilies entry; ignored");
            continue;
        }
        let Some(ip) = ctx.ip(&field, s, "ignored") else {
            continue;
        };
        let family = IpFamily::of(&ip);
        if let Some(declared) = families.get(i) {
            match ip_family(declared) {
                Some(declared) if declared != family => {
                    ctx.warn(
                        field,
                        format!(
                            "{ip} is not an {declared} address, as spec.ipFamilies[{i}] says; ignored"
                        ),
                    );
                    continue;
                }
                Some(_) => {}
                None => ctx.warn(
                    format!("spec.ipFamilies[{i}]"),
                    format!(
                        "unknown IP family {} (expected IPv4 or IPv6); ignored",
                        quote(declared)
                    ),
                ),
            }
        }
        if ips.iter().any(|other| IpFamily::of(other) == family) {
            ctx.warn(field, format!("a second {family} cluster IP; ignored"));
            continue;
        }
        ips.push(ip);
    }
    ips
}

fn ip_family(s: &str) -> Option<IpFamily> {
    match s {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

fn ports(ctx: &mut Ctx, ports: &[core::ServicePort]) -> Vec<ServicePort> {
    let mut out: Vec<ServicePort> = Vec::with_capacity(ports.len());
    // For each entry of `out`, the index in spec.ports it came from.
    let mut origin: Vec<usize> = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let protocol = match p.protocol.as_deref() {
            // Go's API defaulting treats "" as unset.
            None | Some("") => Protocol::Tcp,
            Some(s) => match s.parse::<Protocol>() {
                Ok(protocol) => protocol,
                Err(_) => {
                    ctx.warn(
                        format!("spec.ports[{i}].protocol"),
                        format!(
                            "unknown protocol {} (expected TCP, UDP or SCTP); port ignored",
                            quote(s)
                        ),
                    );
                    continue;
                }
            },
        };
        let port = match u16::try_from(p.port) {
            Ok(port) if port != 0 => port,
            _ => {
                ctx.warn(
                    format!("spec.ports[{i}].port"),
                    format!("{} is out of range 1-65535; port ignored", p.port),
                );
                continue;
            }
        };
        let node_port = match p.node_port.map(u16::try_from) {
            None => 0,
            Some(Ok(node_port)) => node_port,
            Some(Err(_)) => {
                ctx.warn(
                    format!("spec.ports[{i}].nodePort"),
                    format!(
                        "{} is out of range 0-65535; port ignored",
                        p.node_port.unwrap_or_default()
                    ),
                );
                continue;
            }
        };
        let port = ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port,
        };
        match out
            .iter()
            .position(|q| q.name == port.name && q.protocol == port.protocol)
        {
            Some(j) => {
                ctx.warn(
                    format!("spec.ports[{i}]"),
                    format!(
                        "same name {} and protocol {protocol} as spec.ports[{}]; replaces it",
                        quote(&port.name),
                        origin[j]
                    ),
                );
                out[j] = port;
                origin[j] = i;
            }
            None => {
                out.push(port);
                origin.push(i);
            }
        }
    }
    out
}

fn traffic_policy(ctx: &mut Ctx, field: &str, value: Option<&str>) -> TrafficPolicy {
    match value {
        None | Some("" | "Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            ctx.warn(
                field,
                format!(
                    "unknown value {} (expected Cluster or Local); treated as Cluster",
                    quote(other)
                ),
            );
            TrafficPolicy::Cluster
        }
    }
}

fn session_affinity(ctx: &mut Ctx, spec: &core::ServiceSpec) -> SessionAffinity {
    match spec.session_affinity.as_deref() {
        None | Some("" | "None") => SessionAffinity::None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => SessionAffinity::DEFAULT_TIMEOUT_SECONDS,
                Some(t) => match u32::try_from(t) {
                    Ok(t) if t > 0 => t,
                    _ => {
                        ctx.warn(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                            format!(
                                "{t} is not positive; using {}",
                                SessionAffinity::DEFAULT_TIMEOUT_SECONDS
                            ),
                        );
                        SessionAffinity::DEFAULT_TIMEOUT_SECONDS
                    }
                },
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        Some(other) => {
            ctx.warn(
                "spec.sessionAffinity",
                format!(
                    "unknown value {} (expected None or ClientIP); treated as None",
                    quote(other)
                ),
            );
            SessionAffinity::None
        }
    }
}
