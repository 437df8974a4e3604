//! Builders for model objects and compilers in the upstream fake proxier's setting
//! (spec §7.1: node `test-node`, node IP 192.168.0.2, mark `0x4000`, cluster CIDR
//! 10.0.0.0/8, localhost NodePorts on, both nfacct counters, no `--random-fully`).

use std::net::IpAddr;

use kproxy_iptables::{Compiled, Compiler, Config, LocalDetector, SyncKind, SyncRequest};
use kproxy_model::{
    Changes, Endpoint, EndpointPort, EndpointSlice, IpFamily, Protocol, ProxyState, Service,
    ServicePort, ServiceType,
};

pub const NODE: &str = "test-node";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The fake proxier's configuration for `family`.
pub fn fake_config(family: IpFamily) -> Config {
    let mut cfg = Config::new(family, NODE);
    cfg.masquerade_mark = "0x4000".into();
    cfg.local_detector = LocalDetector::Cidr(match family {
        IpFamily::V4 => "10.0.0.0/8".parse().unwrap(),
        IpFamily::V6 => "fd00:10::/64".parse().unwrap(),
    });
    cfg.node_ip = Some(match family {
        IpFamily::V4 => ip("192.168.0.2"),
        IpFamily::V6 => ip("2001:db8::1"),
    });
    cfg.random_fully = false;
    cfg
}

/// The fake node's interface addresses (both families).
pub fn fake_interfaces() -> Vec<IpAddr> {
    [
        "127.0.0.1",
        "::1",
        "192.168.0.2",
        "192.168.1.2",
        "192.168.99.11",
        "2001:db8::1",
        "2001:db8:1::2",
    ]
    .iter()
    .map(|s| ip(s))
    .collect()
}

pub fn fake_compiler(family: IpFamily) -> Compiler {
    compiler_with(fake_config(family))
}

pub fn compiler_with(cfg: Config) -> Compiler {
    let mut c = Compiler::new(cfg);
    c.set_interface_addresses(fake_interfaces());
    c
}

pub fn port(name: &str, protocol: Protocol, port: u16, node_port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol,
        port,
        node_port,
    }
}

pub fn tcp(name: &str, p: u16) -> ServicePort {
    port(name, Protocol::Tcp, p, 0)
}

/// A Service with `ports` (type and cluster IP as given; everything else default).
pub fn mk_service(
    ns: &str,
    name: &str,
    service_type: ServiceType,
    cluster_ip: &str,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        namespace: ns.into(),
        name: name.into(),
        service_type,
        cluster_ips: vec![ip(cluster_ip)],
        ports,
        ..Service::default()
    }
}

pub fn cluster_ip_service(ns: &str, name: &str, cluster_ip: &str, p: u16) -> Service {
    mk_service(
        ns,
        name,
        ServiceType::ClusterIp,
        cluster_ip,
        vec![tcp(&format!("p{p}"), p)],
    )
}

pub fn eport(name: &str, protocol: Protocol, port: u16) -> EndpointPort {
    EndpointPort {
        name: name.into(),
        protocol,
        port,
    }
}

pub fn ready_ep(addr: &str) -> Endpoint {
    Endpoint::ready(ip(addr))
}

pub fn local_ep(addr: &str) -> Endpoint {
    let mut e = Endpoint::ready(ip(addr));
    e.node_name = Some(NODE.into());
    e
}

/// A slice named `name` for Service `service` (family from the first endpoint, IPv4 if
/// none).
pub fn mk_slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        namespace: ns.into(),
        name: name.into(),
        service_name: service.into(),
        address_family: endpoints
            .first()
            .map(|e| IpFamily::of(&e.address))
            .unwrap_or(IpFamily::V4),
        ports,
        endpoints,
        trigger_time: None,
    }
}

/// A one-port TCP slice (`p<port>`) with ready remote endpoints `ips`.
pub fn simple_slice(ns: &str, name: &str, service: &str, p: u16, ips: &[&str]) -> EndpointSlice {
    mk_slice(
        ns,
        name,
        service,
        vec![eport(&format!("p{p}"), Protocol::Tcp, p)],
        ips.iter().map(|a| ready_ep(a)).collect(),
    )
}

pub fn full(compiler: &mut Compiler, state: &ProxyState) -> Compiled {
    compiler.compile(
        state,
        SyncRequest {
            kind: SyncKind::Full,
            changed: &Changes::default(),
            existing_nat_chains: None,
        },
    )
}

pub fn sync(
    compiler: &mut Compiler,
    state: &ProxyState,
    kind: SyncKind,
    changed: &Changes,
    existing: Option<&[String]>,
) -> Compiled {
    compiler.compile(
        state,
        SyncRequest {
            kind,
            changed,
            existing_nat_chains: existing,
        },
    )
}
