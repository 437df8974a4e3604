//! Golden tests for `kproxy_k8s::convert`: exact model values and exact warning texts.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kproxy_k8s::convert;
use kproxy_model::{
    Endpoint, EndpointPort, EndpointSlice, IpFamily, IpMode, LoadBalancerIngress, Node, Protocol,
    Service, ServicePort, ServiceType, SessionAffinity, TrafficPolicy,
};
use serde_json::{Value, json};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(v: Value) -> (Option<Service>, Vec<String>) {
    let svc: core::Service = serde_json::from_value(v).unwrap();
    let (out, warnings) = convert::service(&svc);
    (out, warnings.iter().map(ToString::to_string).collect())
}

fn slice(v: Value) -> (Option<EndpointSlice>, Vec<String>) {
    let slice: discovery::EndpointSlice = serde_json::from_value(v).unwrap();
    let (out, warnings) = convert::endpoint_slice(&slice);
    (out, warnings.iter().map(ToString::to_string).collect())
}

fn node(v: Value) -> (Node, Vec<String>) {
    let node: core::Node = serde_json::from_value(v).unwrap();
    let (out, warnings) = convert::node(&node);
    (out, warnings.iter().map(ToString::to_string).collect())
}

/// A minimal ClusterIP Service with `spec` merged in.
fn svc_with(spec: Value) -> Value {
    let mut base = json!({
        "metadata": {"name": "svc", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "p80", "port": 80}]},
    });
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    base
}

fn tcp(name: &str, port: u16, node_port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol: Protocol::Tcp,
        port,
        node_port,
    }
}

#[test]
fn full_dual_stack_load_balancer() {
    let (svc, warnings) = service(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb", "namespace": "prod", "labels": {"app": "lb"}},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:96::10"],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "sig", "port": 9000, "protocol": "SCTP", "nodePort": 30900}
            ],
            "externalIPs": ["192.0.2.1", "2001:db8::1"],
            "loadBalancerSourceRanges": [" 203.0.113.0/24 ", "10.1.2.3/8", "2001:db8:2::/48"],
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Cluster",
            "healthCheckNodePort": 32000,
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "trafficDistribution": "PreferClose"
        },
        "status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.1"},
            {"ip": "198.51.100.2", "ipMode": "Proxy"},
            {"ip": "2001:db8:1::1", "ipMode": "VIP"},
            {"hostname": "lb.example.com"}
        ]}}
    }));
    assert_eq!(warnings, Vec::<String>::new());
    let want = Service {
        namespace: "prod".into(),
        name: "lb".into(),
        service_type: ServiceType::LoadBalancer,
        cluster_ips: vec![ip("10.96.0.10"), ip("fd00:96::10")],
        ports: vec![
            tcp("http", 80, 30080),
            ServicePort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: 30053,
            },
            ServicePort {
                name: "sig".into(),
                protocol: Protocol::Sctp,
                port: 9000,
                node_port: 30900,
            },
        ],
        external_ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
        load_balancer_ingress: vec![
            LoadBalancerIngress {
                ip: ip("198.51.100.1"),
                ip_mode: IpMode::Vip,
            },
            LoadBalancerIngress {
                ip: ip("198.51.100.2"),
                ip_mode: IpMode::Proxy,
            },
            LoadBalancerIngress {
                ip: ip("2001:db8:1::1"),
                ip_mode: IpMode::Vip,
            },
        ],
        load_balancer_source_ranges: vec![
            "203.0.113.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:2::/48".parse().unwrap(),
        ],
        external_traffic_policy: TrafficPolicy::Local,
        internal_traffic_policy: TrafficPolicy::Cluster,
        health_check_node_port: 32000,
        session_affinity: SessionAffinity::ClientIp {
            timeout_seconds: 60,
        },
        traffic_distribution: Some("PreferClose".into()),
    };
    assert_eq!(svc, Some(want));
}

#[test]
fn defaults_for_a_minimal_service() {
    let (svc, warnings) = service(json!({
        "metadata": {"name": "svc"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
    }));
    assert!(warnings.is_empty(), "{warnings:?}");
    let svc = svc.unwrap();
    assert_eq!(svc.namespace, "default");
    assert_eq!(svc.service_type, ServiceType::ClusterIp);
    assert_eq!(svc.ports, vec![tcp("", 80, 0)]);
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.session_affinity, SessionAffinity::None);
    assert_eq!(svc.health_check_node_port, 0);
    assert_eq!(svc.traffic_distribution, None);
}

#[test]
fn invalid_cluster_ip() {
    let (svc, warnings) = service(svc_with(json!({"clusterIP": "10.0.0.256"})));
    assert_eq!(svc.unwrap().cluster_ips, Vec::<IpAddr>::new());
    assert_eq!(
        warnings,
        ["Service ns/svc: spec.clusterIP: invalid IP address \"10.0.0.256\"; ignored"]
    );
}

#[test]
fn headless_and_external_name_services() {
    for spec in [
        json!({"clusterIP": "None"}),
        json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        json!({"clusterIP": ""}),
        json!({"clusterIP": null}),
    ] {
        let (svc, warnings) = service(svc_with(spec.clone()));
        assert_eq!(svc.unwrap().cluster_ips, Vec::<IpAddr>::new(), "{spec}");
        assert!(warnings.is_empty(), "{spec}: {warnings:?}");
    }
    let (svc, warnings) = service(svc_with(
        json!({"type": "ExternalName", "clusterIP": null, "externalName": "example.com"}),
    ));
    let svc = svc.unwrap();
    assert_eq!(svc.service_type, ServiceType::ExternalName);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (svc, _) = service(json!({"metadata": {"name": "nospec"}}));
    assert_eq!(svc.unwrap().cluster_ips, Vec::<IpAddr>::new());
}

#[test]
fn cluster_ips_follow_ip_families() {
    // The IPv6-primary order of clusterIPs is kept.
    let (svc, warnings) = service(svc_with(json!({
        "clusterIP": "fd00::10",
        "clusterIPs": ["fd00::10", "10.96.0.10"],
        "ipFamilies": ["IPv6", "IPv4"],
    })));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        svc.unwrap().cluster_ips,
        vec![ip("fd00::10"), ip("10.96.0.10")]
    );

    let (svc, warnings) = service(svc_with(json!({
        "clusterIP": "10.96.0.1",
        "clusterIPs": ["10.96.0.10", "10.96.0.11", "fd00::10"],
        "ipFamilies": ["IPv4", "IPv6"],
    })));
    assert_eq!(svc.unwrap().cluster_ips, vec![ip("10.96.0.10")]);
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.clusterIP: \"10.96.0.1\" differs from spec.clusterIPs[0] \"10.96.0.10\"; using spec.clusterIPs",
            "Service ns/svc: spec.clusterIPs[1]: 10.96.0.11 is not an IPv6 address, as spec.ipFamilies[1] says; ignored",
            "Service ns/svc: spec.clusterIPs[2]: no matching spec.ipFamilies entry; ignored",
        ]
    );

    let (svc, warnings) = service(svc_with(json!({
        "clusterIP": null,
        "clusterIPs": ["10.96.0.10", "10.96.0.11", "fd00::10"],
        "ipFamilies": ["IPv4", "IPv5"],
    })));
    assert_eq!(svc.unwrap().cluster_ips, vec![ip("10.96.0.10")]);
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.ipFamilies[1]: unknown IP family \"IPv5\" (expected IPv4 or IPv6); ignored",
            "Service ns/svc: spec.clusterIPs[1]: a second IPv4 cluster IP; ignored",
            "Service ns/svc: spec.clusterIPs[2]: no matching spec.ipFamilies entry; ignored",
        ]
    );

    // Without ipFamilies (a hand-written manifest), each address's own family counts.
    let (svc, warnings) = service(svc_with(json!({
        "clusterIP": null,
        "clusterIPs": ["fd00::10", "010.96.0.10"],
    })));
    assert_eq!(
        svc.unwrap().cluster_ips,
        vec![ip("fd00::10"), ip("10.96.0.10")]
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.clusterIPs[1]: IPv4 address \"010.96.0.10\" has leading zeros; read as 10.96.0.10"
        ]
    );
}

#[test]
fn bad_ports_are_skipped_one_by_one() {
    let (svc, warnings) = service(svc_with(json!({
        "type": "NodePort",
        "ports": [
            {"name": "zero", "port": 0},
            {"name": "big", "port": 70000},
            {"name": "icmp", "port": 1, "protocol": "ICMP"},
            {"name": "lower", "port": 2, "protocol": "tcp"},
            {"name": "badnp", "port": 3, "nodePort": -1},
            {"name": "bignp", "port": 4, "nodePort": 65536},
            {"name": "ok", "port": 5, "nodePort": 30005},
            {"name": "empty-proto", "port": 6, "protocol": ""},
            {"name": "ok", "port": 7, "protocol": "UDP"},
            {"name": "ok", "port": 8},
        ],
    })));
    assert_eq!(
        svc.unwrap().ports,
        vec![
            // The later "ok"/TCP port replaced the earlier one in place.
            tcp("ok", 8, 0),
            tcp("empty-proto", 6, 0),
            ServicePort {
                name: "ok".into(),
                protocol: Protocol::Udp,
                port: 7,
                node_port: 0
            },
        ]
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.ports[0].port: 0 is out of range 1-65535; port ignored",
            "Service ns/svc: spec.ports[1].port: 70000 is out of range 1-65535; port ignored",
            "Service ns/svc: spec.ports[2].protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP); port ignored",
            "Service ns/svc: spec.ports[3].protocol: unknown protocol \"tcp\" (expected TCP, UDP or SCTP); port ignored",
            "Service ns/svc: spec.ports[4].nodePort: -1 is out of range 0-65535; port ignored",
            "Service ns/svc: spec.ports[5].nodePort: 65536 is out of range 0-65535; port ignored",
            "Service ns/svc: spec.ports[9]: same name \"ok\" and protocol TCP as spec.ports[6]; replaces it",
        ]
    );
}

#[test]
fn external_ips() {
    let (svc, warnings) = service(svc_with(json!({
        "externalIPs": ["172.30.0.041", "", "  ", "not-an-ip", " 192.0.2.1", "::ffff:192.0.2.2", "2001:DB8::1"],
    })));
    assert_eq!(
        svc.unwrap().external_ips,
        vec![ip("172.30.0.41"), ip("192.0.2.2"), ip("2001:db8::1")]
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.externalIPs[0]: IPv4 address \"172.30.0.041\" has leading zeros; read as 172.30.0.41",
            "Service ns/svc: spec.externalIPs[3]: invalid IP address \"not-an-ip\"; ignored",
            "Service ns/svc: spec.externalIPs[4]: invalid IP address \" 192.0.2.1\"; ignored",
        ]
    );
}

#[test]
fn load_balancer_ingress() {
    let mut v = svc_with(json!({"type": "LoadBalancer"}));
    v["status"] = json!({"loadBalancer": {"ingress": [
        {"ip": "198.51.100.300"},
        {"ip": "198.51.100.1", "ipMode": "Tunnel"},
        {"ip": "", "hostname": "a.example.com"},
        {"hostname": "b.example.com"},
        {},
        {"ip": "198.051.100.2"},
    ]}});
    let (svc, warnings) = service(v);
    assert_eq!(
        svc.unwrap().load_balancer_ingress,
        vec![
            LoadBalancerIngress {
                ip: ip("198.51.100.1"),
                ip_mode: IpMode::Proxy
            },
            LoadBalancerIngress {
                ip: ip("198.51.100.2"),
                ip_mode: IpMode::Vip
            },
        ]
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: status.loadBalancer.ingress[0].ip: invalid IP address \"198.51.100.300\"; ignored",
            "Service ns/svc: status.loadBalancer.ingress[1].ipMode: unknown value \"Tunnel\" (expected VIP or Proxy); treated as Proxy, as kube-proxy handles only VIP ingress IPs",
            "Service ns/svc: status.loadBalancer.ingress[5].ip: IPv4 address \"198.051.100.2\" has leading zeros; read as 198.51.100.2",
        ]
    );
}

#[test]
fn malformed_source_ranges() {
    let (svc, warnings) = service(svc_with(json!({
        "type": "LoadBalancer",
        "loadBalancerSourceRanges": ["10.0.0.0/33", "1.2.3.4", "", "\t192.168.1.7/24\n", "010.0.0.0/8", "fd00::/129"],
    })));
    assert_eq!(
        svc.unwrap().load_balancer_source_ranges,
        vec![
            "192.168.1.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap()
        ]
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.loadBalancerSourceRanges[0]: invalid CIDR \"10.0.0.0/33\"; ignored",
            "Service ns/svc: spec.loadBalancerSourceRanges[1]: invalid CIDR \"1.2.3.4\"; ignored",
            "Service ns/svc: spec.loadBalancerSourceRanges[4]: CIDR \"010.0.0.0/8\" has leading zeros; read as 10.0.0.0/8",
            "Service ns/svc: spec.loadBalancerSourceRanges[5]: invalid CIDR \"fd00::/129\"; ignored",
        ]
    );
}

#[test]
fn policies_affinity_and_type() {
    let (svc, warnings) = service(svc_with(json!({
        "type": "Weird",
        "externalTrafficPolicy": "Global",
        "internalTrafficPolicy": "Local",
        "sessionAffinity": "ClientIP",
        "healthCheckNodePort": 70000,
    })));
    let svc = svc.unwrap();
    assert_eq!(svc.service_type, ServiceType::ClusterIp);
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(
        svc.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
    assert_eq!(svc.health_check_node_port, 0);
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.type: unknown type \"Weird\" (expected ClusterIP, NodePort, LoadBalancer or ExternalName); treated as ClusterIP",
            "Service ns/svc: spec.externalTrafficPolicy: unknown value \"Global\" (expected Cluster or Local); treated as Cluster",
            "Service ns/svc: spec.healthCheckNodePort: 70000 is out of range 0-65535; ignored",
        ]
    );

    let (svc, warnings) = service(svc_with(json!({
        "internalTrafficPolicy": "Nearby",
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
    })));
    let svc = svc.unwrap();
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(
        svc.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.internalTrafficPolicy: unknown value \"Nearby\" (expected Cluster or Local); treated as Cluster",
            "Service ns/svc: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is not positive; using 10800",
        ]
    );

    let (svc, warnings) = service(svc_with(json!({"sessionAffinity": "Cookie"})));
    assert_eq!(svc.unwrap().session_affinity, SessionAffinity::None);
    assert_eq!(
        warnings,
        [
            "Service ns/svc: spec.sessionAffinity: unknown value \"Cookie\" (expected None or ClientIP); treated as None"
        ]
    );
}

#[test]
fn unproxied_and_unnamed_services() {
    for label in [
        "service.kubernetes.io/service-proxy-name",
        "service.kubernetes.io/headless",
    ] {
        let mut v = svc_with(json!({}));
        v["metadata"]["labels"] = json!({label: ""});
        let (svc, warnings) = service(v);
        assert_eq!(svc, None);
        assert!(warnings.is_empty());
    }
    let (svc, warnings) = service(json!({"metadata": {"namespace": "ns"}, "spec": {}}));
    assert_eq!(svc, None);
    assert_eq!(
        warnings,
        ["Service ns/<unnamed>: metadata.name: missing; Service ignored"]
    );
}

fn slice_with(extra: Value) -> Value {
    let mut base = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-abc12",
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": "svc"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
        "endpoints": [],
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn full_endpoint_slice() {
    let mut v = slice_with(json!({
        "ports": [
            {"name": "p80", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
            {"name": "", "port": 53},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
        "endpoints": [
            {"addresses": ["10.0.1.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "nodeName": "node-a", "zone": "z1",
             "hints": {"forZones": [{"name": "z1"}, {"name": "z2"}], "forNodes": [{"name": "node-a"}]},
             "targetRef": {"kind": "Pod", "name": "p1", "namespace": "ns"}},
            {"addresses": ["10.0.1.2", "10.0.1.3"], "conditions": {}},
            {"addresses": ["10.0.1.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.1.5"]},
        ],
    }));
    v["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": "2024-05-06T07:08:09.5Z"});
    let (out, warnings) = slice(v);
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut first = Endpoint::ready(ip("10.0.1.1"));
    first.node_name = Some("node-a".into());
    first.zone = Some("z1".into());
    first.zone_hints = vec!["z1".into(), "z2".into()];
    first.node_hints = vec!["node-a".into()];
    let mut terminating = Endpoint::ready(ip("10.0.1.4"));
    terminating.ready = false;
    terminating.terminating = true;
    let want = EndpointSlice {
        namespace: "ns".into(),
        name: "svc-abc12".into(),
        service_name: "svc".into(),
        address_family: IpFamily::V4,
        ports: vec![
            EndpointPort {
                name: "p80".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            },
            EndpointPort {
                name: "".into(),
                protocol: Protocol::Tcp,
                port: 53,
            },
            EndpointPort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 5353,
            },
        ],
        endpoints: vec![
            first,
            Endpoint::ready(ip("10.0.1.2")),
            terminating,
            Endpoint::ready(ip("10.0.1.5")),
        ],
        trigger_time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_979_289_500)),
    };
    assert_eq!(out, Some(want));
}

#[test]
fn slice_with_bad_addresses() {
    let (out, warnings) = slice(slice_with(json!({
        "endpoints": [
            {"addresses": []},
            {"addresses": ["10.0.0.300"]},
            {"addresses": ["fd00::1"]},
            {"addresses": ["::ffff:10.0.0.9"]},
            {"addresses": ["10.0.0.07"], "conditions": {"serving": false}},
            {"addresses": ["10.0.0.8"]},
        ],
    })));
    let mut not_serving = Endpoint::ready(ip("10.0.0.7"));
    not_serving.serving = false;
    assert_eq!(
        out.unwrap().endpoints,
        vec![
            Endpoint::ready(ip("10.0.0.9")),
            not_serving,
            Endpoint::ready(ip("10.0.0.8"))
        ]
    );
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: endpoints[0].addresses: empty; endpoint ignored",
            "EndpointSlice ns/svc-abc12: endpoints[1].addresses[0]: invalid IP address \"10.0.0.300\"; endpoint ignored",
            "EndpointSlice ns/svc-abc12: endpoints[2].addresses[0]: fd00::1 is not an IPv4 address, as the slice's addressType says; endpoint ignored",
            "EndpointSlice ns/svc-abc12: endpoints[4].addresses[0]: IPv4 address \"10.0.0.07\" has leading zeros; read as 10.0.0.7",
        ]
    );

    // An IPv4(-mapped) address in an IPv6 slice is of the wrong family too.
    let (out, warnings) = slice(slice_with(json!({
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["::ffff:10.0.0.9"]}, {"addresses": ["FD00::0001"]}],
    })));
    let out = out.unwrap();
    assert_eq!(out.address_family, IpFamily::V6);
    assert_eq!(out.endpoints, vec![Endpoint::ready(ip("fd00::1"))]);
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: endpoints[0].addresses[0]: 10.0.0.9 is not an IPv6 address, as the slice's addressType says; endpoint ignored"
        ]
    );
}

#[test]
fn slice_ports() {
    let (out, warnings) = slice(slice_with(json!({
        "ports": [
            {"port": 80},
            {"name": "nil-port"},
            {"name": "zero", "port": 0},
            {"name": "big", "port": 65536},
            {"name": "icmp", "port": 1, "protocol": "ICMP"},
            {"name": "empty-proto", "port": 2, "protocol": ""},
            {"name": "ok", "port": 3},
        ],
    })));
    assert_eq!(
        out.unwrap().ports,
        vec![EndpointPort {
            name: "ok".into(),
            protocol: Protocol::Tcp,
            port: 3
        }]
    );
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: ports[0].name: missing (an unnamed port has name \"\"); port ignored",
            "EndpointSlice ns/svc-abc12: ports[1].port: missing; port ignored",
            "EndpointSlice ns/svc-abc12: ports[2].port: 0 is out of range 1-65535; port ignored",
            "EndpointSlice ns/svc-abc12: ports[3].port: 65536 is out of range 1-65535; port ignored",
            "EndpointSlice ns/svc-abc12: ports[4].protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP); port ignored",
            "EndpointSlice ns/svc-abc12: ports[5].protocol: unknown protocol \"\" (expected TCP, UDP or SCTP); port ignored",
        ]
    );
    // A slice without ports is fine (it has nothing to offer).
    let mut v = slice_with(json!({}));
    v.as_object_mut().unwrap().remove("ports");
    let (out, warnings) = slice(v);
    assert_eq!(out.unwrap().ports, vec![]);
    assert!(warnings.is_empty());
}

#[test]
fn skipped_slices() {
    // FQDN: never proxied, silently.
    let (out, warnings) = slice(slice_with(json!({"addressType": "FQDN",
        "endpoints": [{"addresses": ["example.com"]}]})));
    assert_eq!(out, None);
    assert!(warnings.is_empty());

    let (out, warnings) = slice(slice_with(json!({"addressType": "IPv7"})));
    assert_eq!(out, None);
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: addressType: unknown address type \"IPv7\" (expected IPv4, IPv6 or FQDN); EndpointSlice ignored"
        ]
    );

    let mut v = slice_with(json!({}));
    v["metadata"]["labels"] = json!({"app": "x"});
    let (out, warnings) = slice(v);
    assert_eq!(out, None);
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: metadata.labels[\"kubernetes.io/service-name\"]: missing; EndpointSlice ignored"
        ]
    );

    let mut v = slice_with(json!({}));
    v["metadata"]["labels"] = json!({"kubernetes.io/service-name": ""});
    let (out, warnings) = slice(v);
    assert_eq!(out, None);
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: metadata.labels[\"kubernetes.io/service-name\"]: empty; EndpointSlice ignored"
        ]
    );

    let mut v = slice_with(json!({}));
    v["metadata"]["labels"]["service.kubernetes.io/headless"] = json!("");
    assert_eq!(slice(v), (None, vec![]));

    let mut v = slice_with(json!({}));
    v["metadata"]["name"] = Value::Null;
    assert_eq!(
        slice(v),
        (
            None,
            vec![
                "EndpointSlice ns/<unnamed>: metadata.name: missing; EndpointSlice ignored"
                    .to_string()
            ]
        )
    );
}

#[test]
fn invalid_trigger_time() {
    let mut v = slice_with(json!({}));
    v["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": "yesterday"});
    let (out, warnings) = slice(v);
    assert_eq!(out.unwrap().trigger_time, None);
    assert_eq!(
        warnings,
        [
            "EndpointSlice ns/svc-abc12: metadata.annotations[\"endpoints.kubernetes.io/last-change-trigger-time\"]: invalid RFC 3339 time \"yesterday\"; ignored"
        ]
    );
}

#[test]
fn full_node() {
    let (out, warnings) = node(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "node-a",
            "labels": {"topology.kubernetes.io/zone": "z1", "kubernetes.io/hostname": "node-a"},
            "deletionTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"],
            "taints": [
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"},
            ],
        },
        "status": {"addresses": [
            {"type": "Hostname", "address": "node-a"},
            {"type": "InternalIP", "address": "192.168.0.10"},
            {"type": "ExternalIP", "address": "203.0.113.10"},
            {"type": "InternalIP", "address": "fd00::10"},
        ]},
    }));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        out,
        Node {
            name: "node-a".into(),
            internal_ips: vec![ip("192.168.0.10"), ip("fd00::10")],
            external_ips: vec![ip("203.0.113.10")],
            zone: Some("z1".into()),
            pod_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:244:1::/64".parse().unwrap()
            ],
            deleting: true,
            to_be_deleted_taint: true,
        }
    );
}

#[test]
fn node_fallbacks_and_bad_values() {
    let (out, warnings) = node(json!({
        "metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": ""}},
        "spec": {"podCIDR": "10.244.1.7/24"},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "192.168.0.300"},
            {"type": "InternalIP", "address": "192.168.000.10"},
        ]},
    }));
    assert_eq!(
        out,
        Node {
            name: "n".into(),
            internal_ips: vec![ip("192.168.0.10")],
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            ..Node::default()
        }
    );
    assert_eq!(
        warnings,
        [
            "Node n: status.addresses[0].address: invalid IP address \"192.168.0.300\"; ignored",
            "Node n: status.addresses[1].address: IPv4 address \"192.168.000.10\" has leading zeros; read as 192.168.0.10",
        ]
    );

    let (out, warnings) = node(json!({"metadata": {}, "spec": {"podCIDRs": ["10.244.0.0/33"]}}));
    assert_eq!(out, Node::default());
    assert_eq!(
        warnings,
        [
            "Node <unnamed>: metadata.name: missing",
            "Node <unnamed>: spec.podCIDRs[0]: invalid CIDR \"10.244.0.0/33\"; ignored",
        ]
    );
}

#[test]
fn label_selector_matches_is_proxied() {
    assert_eq!(
        convert::PROXIED_LABEL_SELECTOR,
        format!(
            "!{},!{}",
            convert::LABEL_SERVICE_PROXY_NAME,
            convert::LABEL_HEADLESS
        )
    );
}
