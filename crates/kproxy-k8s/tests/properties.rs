//! Property tests: conversion never panics and keeps the model's promises on arbitrary
//! objects; a Service made of valid model values survives model → Kubernetes JSON/YAML →
//! model unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kproxy_k8s::convert;
use kproxy_k8s::manifests::load_str;
use kproxy_model::{
    IpFamily, IpMode, LoadBalancerIngress, Protocol, Service, ServicePort, ServiceType,
    SessionAffinity, TrafficPolicy,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Arbitrary, mostly invalid, Kubernetes objects.

/// Strings that look like addresses or CIDRs, valid or not, or anything at all.
fn ip_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
        any::<[u8; 4]>().prop_map(|o| format!("{:03}.{}.{:02}.{}", o[0], o[1], o[2], o[3])),
        (any::<IpAddr>(), 0u8..140).prop_map(|(ip, p)| format!("{ip}/{p}")),
        "[0-9a-fA-F.:/% ]{0,24}",
        Just("None".to_owned()),
        Just(String::new()),
        "\\PC{0,12}",
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,6}",
        Just(String::new()),
        "\\PC{0,12}",
        Just("TCP".to_owned()),
        Just("UDP".to_owned()),
        Just("SCTP".to_owned()),
        Just("Local".to_owned()),
        Just("Cluster".to_owned()),
        Just("ClientIP".to_owned()),
        Just("LoadBalancer".to_owned()),
        Just("NodePort".to_owned()),
        Just("ExternalName".to_owned()),
        Just("IPv4".to_owned()),
        Just("IPv6".to_owned()),
        Just("FQDN".to_owned()),
        Just("VIP".to_owned()),
        Just("Proxy".to_owned()),
    ]
}

fn int() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), -2..70000i32, Just(0)]
}

fn labels() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("kubernetes.io/service-name".to_owned()),
            Just("service.kubernetes.io/headless".to_owned()),
            Just("service.kubernetes.io/service-proxy-name".to_owned()),
            Just("topology.kubernetes.io/zone".to_owned()),
            "[a-z]{1,5}",
        ],
        word(),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn metadata() -> impl Strategy<Value = Value> {
    (
        option::of(word()),
        option::of(word()),
        labels(),
        option::of(word()),
    )
        .prop_map(|(name, namespace, labels, trigger)| {
            json!({
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": trigger},
            })
        })
}

fn arb_service() -> impl Strategy<Value = Value> {
    let port = (option::of(word()), int(), option::of(int()), option::of(word())).prop_map(
        |(name, port, node_port, protocol)| {
            json!({"name": name, "port": port, "nodePort": node_port, "protocol": protocol})
        },
    );
    let spec = (
        (
            option::of(word()),
            option::of(ip_ish()),
            vec(ip_ish(), 0..4),
            vec(word(), 0..3),
            vec(port, 0..5),
        ),
        (
            vec(ip_ish(), 0..3),
            vec(ip_ish(), 0..3),
            option::of(word()),
            option::of(word()),
            option::of(int()),
            option::of(word()),
            option::of(int()),
            option::of(word()),
        ),
    )
        .prop_map(
            |(
                (kind, cluster_ip, cluster_ips, families, ports),
                (external, ranges, etp, itp, hcnp, affinity, timeout, distribution),
            )| {
                json!({
                    "type": kind,
                    "clusterIP": cluster_ip,
                    "clusterIPs": cluster_ips,
                    "ipFamilies": families,
                    "ports": ports,
                    "externalIPs": external,
                    "loadBalancerSourceRanges": ranges,
                    "externalTrafficPolicy": etp,
                    "internalTrafficPolicy": itp,
                    "healthCheckNodePort": hcnp,
                    "sessionAffinity": affinity,
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                    "trafficDistribution": distribution,
                })
            },
        );
    let ingress = (option::of(ip_ish()), option::of(word()), option::of(word()))
        .prop_map(|(ip, mode, host)| json!({"ip": ip, "ipMode": mode, "hostname": host}));
    (metadata(), option::of(spec), vec(ingress, 0..3)).prop_map(|(metadata, spec, ingress)| {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress}},
        })
    })
}

fn arb_slice() -> impl Strategy<Value = Value> {
    let port = (option::of(word()), option::of(int()), option::of(word())).prop_map(
        |(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}),
    );
    let endpoint = (
        vec(ip_ish(), 0..3),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(word()),
        vec(word(), 0..2),
    )
        .prop_map(|(addresses, ready, serving, terminating, node, zones)| {
            let zones: Vec<Value> = zones.into_iter().map(|z| json!({"name": z})).collect();
            json!({
                "addresses": addresses,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": node,
                "zone": node,
                "hints": {"forZones": zones, "forNodes": [{"name": "n"}]},
            })
        });
    (
        metadata(),
        word(),
        option::of(vec(port, 0..4)),
        vec(endpoint, 0..5),
    )
        .prop_map(|(metadata, address_type, ports, endpoints)| {
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": metadata,
                "addressType": address_type,
                "ports": ports,
                "endpoints": endpoints,
            })
        })
}

fn arb_node() -> impl Strategy<Value = Value> {
    let address =
        (word(), ip_ish()).prop_map(|(kind, address)| json!({"type": kind, "address": address}));
    (
        metadata(),
        option::of(ip_ish()),
        vec(ip_ish(), 0..3),
        vec(address, 0..4),
        vec(word(), 0..2),
    )
        .prop_map(|(metadata, pod_cidr, pod_cidrs, addresses, taints)| {
            let taints: Vec<Value> = taints
                .into_iter()
                .map(|key| json!({"key": key, "effect": "NoSchedule"}))
                .collect();
            json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": metadata,
                "spec": {"podCIDR": pod_cidr, "podCIDRs": pod_cidrs, "taints": taints},
                "status": {"addresses": addresses},
            })
        })
}

/// Any JSON at all, a few levels deep, with Kubernetes-ish keys now and then.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("kind".to_owned()),
                    Just("apiVersion".to_owned()),
                    Just("items".to_owned()),
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("ports".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_warnings(warnings: &[kproxy_k8s::Warning]) -> Result<(), TestCaseError> {
    for w in warnings {
        let line = w.to_string();
        prop_assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
        prop_assert!(line.len() < 4000, "{}", line.len());
    }
    Ok(())
}

fn check_service(svc: &Service) -> Result<(), TestCaseError> {
    prop_assert!(!svc.name.is_empty() && !svc.namespace.is_empty());
    for family in IpFamily::ALL {
        prop_assert!(
            svc.cluster_ips
                .iter()
                .filter(|ip| family.contains(ip))
                .count()
                <= 1
        );
    }
    for (i, p) in svc.ports.iter().enumerate() {
        prop_assert!(p.port != 0);
        prop_assert!(
            svc.ports[..i]
                .iter()
                .all(|q| (&q.name, q.protocol) != (&p.name, p.protocol))
        );
    }
    if let SessionAffinity::ClientIp { timeout_seconds } = svc.session_affinity {
        prop_assert!(timeout_seconds > 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn service_conversion_never_panics(v in arb_service()) {
        if let Ok(svc) = serde_json::from_value::<core::Service>(v.clone()) {
            let (out, warnings) = convert::service(&svc);
            check_warnings(&warnings)?;
            if let Some(out) = out {
                check_service(&out)?;
            }
        }
        let loaded = load_str(&v.to_string(), "svc.json");
        check_warnings(&loaded.warnings)?;
        for svc in &loaded.services {
            check_service(svc)?;
        }
    }

    #[test]
    fn endpoint_slice_conversion_never_panics(v in arb_slice()) {
        if let Ok(slice) = serde_json::from_value::<discovery::EndpointSlice>(v.clone()) {
            let (out, warnings) = convert::endpoint_slice(&slice);
            check_warnings(&warnings)?;
            if let Some(out) = out {
                prop_assert!(!out.name.is_empty() && !out.service_name.is_empty());
                prop_assert!(out.ports.iter().all(|p| p.port != 0));
                prop_assert!(out.endpoints.iter().all(|e| out.address_family.contains(&e.address)));
            }
        }
        check_warnings(&load_str(&v.to_string(), "eps.json").warnings)?;
    }

    #[test]
    fn node_conversion_never_panics(v in arb_node()) {
        if let Ok(node) = serde_json::from_value::<core::Node>(v.clone()) {
            let (_, warnings) = convert::node(&node);
            check_warnings(&warnings)?;
        }
        check_warnings(&load_str(&v.to_string(), "node.json").warnings)?;
    }

    #[test]
    fn loading_any_json_never_panics(v in arb_json()) {
        check_warnings(&load_str(&v.to_string(), "any.json").warnings)?;
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [v]});
        check_warnings(&load_str(&list.to_string(), "list.json").warnings)?;
    }
}

// ---------------------------------------------------------------------------------------
// Round trip: valid model values → Kubernetes objects → the same model values.

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<Ipv4Addr>().prop_map(IpAddr::V4)
}

fn v6() -> impl Strategy<Value = IpAddr> {
    // An IPv4-mapped address is an IPv4 address to Kubernetes.
    any::<Ipv6Addr>().prop_map(|ip| IpAddr::V6(ip).to_canonical())
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![v4(), v6()]
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn model_service() -> impl Strategy<Value = Service> {
    let cluster_ips = prop_oneof![
        Just(vec![]),
        vec(v4(), 1..=1),
        vec(v6(), 1..=1),
        (v4(), v6()).prop_map(|(a, b)| vec![a, b]),
        (v6(), v4()).prop_map(|(a, b)| vec![a, b]),
    ]
    .prop_filter("one address per family", |ips| {
        ips.len() < 2 || IpFamily::of(&ips[0]) != IpFamily::of(&ips[1])
    });
    let protocol = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    let port = (
        prop_oneof![Just(String::new()), dns_label()],
        protocol,
        1..=u16::MAX,
        any::<u16>(),
    )
        .prop_map(|(name, protocol, port, node_port)| ServicePort {
            name,
            protocol,
            port,
            node_port,
        });
    let ports = vec(port, 0..5).prop_map(|mut ports| {
        let mut seen = Vec::new();
        ports.retain(|p| {
            let key = (p.name.clone(), p.protocol);
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
        ports
    });
    let ingress = (
        any_ip(),
        prop_oneof![Just(IpMode::Vip), Just(IpMode::Proxy)],
    )
        .prop_map(|(ip, ip_mode)| LoadBalancerIngress { ip, ip_mode });
    let range = (any_ip(), any::<u8>()).prop_map(|(ip, prefix)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, prefix % (max + 1)).unwrap().trunc()
    });
    let service_type = prop_oneof![
        Just(ServiceType::ClusterIp),
        Just(ServiceType::NodePort),
        Just(ServiceType::LoadBalancer),
        Just(ServiceType::ExternalName),
    ];
    let policy = || prop_oneof![Just(TrafficPolicy::Cluster), Just(TrafficPolicy::Local)];
    let affinity = prop_oneof![
        Just(SessionAffinity::None),
        (1..=86400u32).prop_map(|timeout_seconds| SessionAffinity::ClientIp { timeout_seconds }),
    ];
    (
        (dns_label(), dns_label(), service_type, cluster_ips, ports),
        (
            vec(any_ip(), 0..3),
            vec(ingress, 0..3),
            vec(range, 0..3),
            policy(),
            policy(),
            any::<u16>(),
            affinity,
            option::of(prop_oneof![
                Just("PreferClose".to_owned()),
                "[A-Za-z]{1,12}"
            ]),
        ),
    )
        .prop_map(
            |(
                (namespace, name, service_type, cluster_ips, ports),
                (external_ips, ingress, ranges, etp, itp, hcnp, affinity, distribution),
            )| Service {
                namespace,
                name,
                service_type,
                cluster_ips,
                ports,
                external_ips,
                load_balancer_ingress: ingress,
                load_balancer_source_ranges: ranges,
                external_traffic_policy: etp,
                internal_traffic_policy: itp,
                health_check_node_port: hcnp,
                session_affinity: affinity,
                traffic_distribution: distribution,
            },
        )
}

fn family_name(ip: &IpAddr) -> &'static str {
    match IpFamily::of(ip) {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// The Kubernetes Service an API server would hold for `svc`.
fn to_k8s(svc: &Service) -> core::Service {
    let cluster_ip = svc
        .cluster_ips
        .first()
        .map_or("None".to_owned(), ToString::to_string);
    let ports: Vec<Value> = svc
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({"name": p.name, "protocol": p.protocol.as_str(), "port": p.port, "targetPort": 8080});
            if p.node_port != 0 {
                port["nodePort"] = json!(p.node_port);
            }
            port
        })
        .collect();
    let mut spec = json!({
        "type": match svc.service_type {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        },
        "clusterIP": cluster_ip,
        "clusterIPs": svc.cluster_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ipFamilies": svc.cluster_ips.iter().map(family_name).collect::<Vec<_>>(),
        "ports": ports,
        "externalIPs": svc.external_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "loadBalancerSourceRanges": svc.load_balancer_source_ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "externalTrafficPolicy": policy_name(svc.external_traffic_policy),
        "internalTrafficPolicy": policy_name(svc.internal_traffic_policy),
        "trafficDistribution": svc.traffic_distribution,
    });
    if svc.health_check_node_port != 0 {
        spec["healthCheckNodePort"] = json!(svc.health_check_node_port);
    }
    match svc.session_affinity {
        SessionAffinity::None => spec["sessionAffinity"] = json!("None"),
        SessionAffinity::ClientIp { timeout_seconds } => {
            spec["sessionAffinity"] = json!("ClientIP");
            spec["sessionAffinityConfig"] =
                json!({"clientIP": {"timeoutSeconds": timeout_seconds}});
        }
    }
    let ingress: Vec<Value> = svc
        .load_balancer_ingress
        .iter()
        .map(|i| {
            json!({
                "ip": i.ip.to_string(),
                "ipMode": match i.ip_mode { IpMode::Vip => "VIP", IpMode::Proxy => "Proxy" },
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace, "uid": "u", "resourceVersion": "1"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap()
}

fn policy_name(p: TrafficPolicy) -> &'static str {
    match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn service_round_trips(svc in model_service()) {
        let k8s = to_k8s(&svc);

        let (direct, warnings) = convert::service(&k8s);
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        prop_assert_eq!(direct.as_ref(), Some(&svc));

        let json = serde_json::to_string_pretty(&k8s).unwrap();
        let loaded = load_str(&json, "svc.json");
        prop_assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        prop_assert_eq!(&loaded.services, &vec![svc.clone()]);

        let yaml = serde_saphyr::to_string(&k8s).unwrap();
        let loaded = load_str(&yaml, "svc.yaml");
        prop_assert!(loaded.warnings.is_empty(), "{:?}\n{}", loaded.warnings, yaml);
        prop_assert_eq!(&loaded.services, &vec![svc]);
    }
}
