//! proptest strategies: random clusters (Services + EndpointSlices) over a small universe
//! of names and addresses, and random sequences of changes to them.

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_model::{
    ChangeTracker, Endpoint, EndpointPort, EndpointSlice, IpFamily, IpMode, LoadBalancerIngress,
    Protocol, Service, ServicePort, ServiceType, SessionAffinity, TrafficPolicy,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::build::NODE;

/// Port layouts a slot's Service (and, mostly, its slices) use.
pub const PORT_LAYOUTS: usize = 4;

fn layout(c: usize) -> Vec<(&'static str, Protocol, u16, u16)> {
    // (name, protocol, service port, target port)
    match c {
        0 => vec![("", Protocol::Tcp, 80, 8080)],
        1 => vec![("p80", Protocol::Tcp, 80, 8080)],
        2 => vec![
            ("dns", Protocol::Udp, 53, 5353),
            ("dns-tcp", Protocol::Tcp, 53, 5353),
        ],
        _ => vec![
            ("p80", Protocol::Tcp, 80, 8080),
            ("s", Protocol::Sctp, 9000, 9001),
        ],
    }
}

fn addr(family: IpFamily, v4: &str, v6: &str) -> IpAddr {
    match family {
        IpFamily::V4 => v4.parse().unwrap(),
        IpFamily::V6 => v6.parse().unwrap(),
    }
}

/// The Service of slot `i` (layout `c`), or `None` (absent).
pub fn arb_service(family: IpFamily, i: usize, c: usize) -> impl Strategy<Value = Service> {
    let ext_pool: Vec<IpAddr> = (1..=3)
        .map(|k| {
            addr(
                family,
                &format!("192.168.99.{}", 20 + k),
                &format!("2001:db8:99::{}", 20 + k),
            )
        })
        .collect();
    let lb_pool: Vec<IpAddr> = (1..=3)
        .map(|k| {
            addr(
                family,
                &format!("203.0.{i}.{k}"),
                &format!("2001:db8:cafe:{i}::{k}"),
            )
        })
        .collect();
    let range_pool: Vec<IpNet> = [
        "203.0.113.0/25",
        "192.168.0.0/24",
        "10.0.0.0/8",
        "2001:db8::/32",
        "fd00::/8",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    (
        prop_oneof![
            4 => Just(Some(ServiceType::ClusterIp)),
            3 => Just(Some(ServiceType::NodePort)),
            3 => Just(Some(ServiceType::LoadBalancer)),
            1 => Just(Some(ServiceType::ExternalName)),
            1 => Just(None), // headless
        ],
        vec(select(ext_pool), 0..=2),
        vec((select(lb_pool), prop::bool::weighted(0.2)), 0..=2),
        vec(select(range_pool), 0..=2),
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.3, select(vec![10800u32, 60])),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            move |(ty, mut ext, lbs, mut ranges, etp, itp, affinity, node_ports, hc)| {
                let headless = ty.is_none();
                let ty = ty.unwrap_or(ServiceType::ClusterIp);
                ext.sort();
                ext.dedup();
                ranges.sort();
                ranges.dedup();
                let is_lb = ty == ServiceType::LoadBalancer;
                let has_np = matches!(ty, ServiceType::NodePort | ServiceType::LoadBalancer)
                    && (node_ports || ty == ServiceType::NodePort);
                let mut ingress: Vec<LoadBalancerIngress> = Vec::new();
                if is_lb {
                    for (ip, proxy) in lbs {
                        if ingress.iter().all(|x| x.ip != ip) {
                            ingress.push(LoadBalancerIngress {
                                ip,
                                ip_mode: if proxy { IpMode::Proxy } else { IpMode::Vip },
                            });
                        }
                    }
                }
                Service {
                    namespace: format!("ns{}", i % 2 + 1),
                    name: format!("svc{i}"),
                    service_type: ty,
                    cluster_ips: if headless {
                        vec![]
                    } else {
                        vec![addr(
                            family,
                            &format!("172.30.0.{}", i + 1),
                            &format!("fd00:172:30::{:x}", i + 1),
                        )]
                    },
                    ports: layout(c)
                        .into_iter()
                        .enumerate()
                        .map(|(k, (name, protocol, port, _))| ServicePort {
                            name: name.into(),
                            protocol,
                            port,
                            node_port: if has_np {
                                30000 + 8 * i as u16 + k as u16
                            } else {
                                0
                            },
                        })
                        .collect(),
                    external_ips: ext,
                    load_balancer_ingress: ingress,
                    load_balancer_source_ranges: if is_lb { ranges } else { vec![] },
                    external_traffic_policy: if etp {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    },
                    internal_traffic_policy: if itp {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    },
                    health_check_node_port: if hc { 32000 + i as u16 } else { 0 },
                    session_affinity: match affinity {
                        Some(t) => SessionAffinity::ClientIp { timeout_seconds: t },
                        None => SessionAffinity::None,
                    },
                    traffic_distribution: None,
                }
            },
        )
}

fn arb_endpoint(family: IpFamily, i: usize, hinted: bool) -> impl Strategy<Value = Endpoint> {
    (
        1u8..=10,
        prop_oneof![
            8 => Just((true, true, false)),
            3 => Just((false, true, true)),
            1 => Just((false, false, true)),
            1 => Just((false, true, false)),
            1 => Just((false, false, false)),
        ],
        select(vec![None, Some(NODE), Some("node-b")]),
        select(vec!["zone-a", "zone-b"]),
        select(vec![NODE, "node-b"]),
    )
        .prop_map(
            move |(k, (ready, serving, terminating), node, zone, hint_node)| Endpoint {
                address: addr(
                    family,
                    &format!("10.{}.0.{k}", 180 + i),
                    &format!("fd00:10:{:x}::{k:x}", 180 + i),
                ),
                ready,
                serving,
                terminating,
                node_name: node.map(str::to_owned),
                zone: None,
                zone_hints: if hinted { vec![zone.into()] } else { vec![] },
                node_hints: if hinted {
                    vec![hint_node.into()]
                } else {
                    vec![]
                },
            },
        )
}

/// The EndpointSlices of slot `i` (layout `c`).
pub fn arb_slices(
    family: IpFamily,
    i: usize,
    c: usize,
) -> impl Strategy<Value = Vec<EndpointSlice>> {
    vec(
        (
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.2),
        )
            .prop_flat_map(move |(hinted, matching, extra)| {
                (
                    vec(arb_endpoint(family, i, hinted), 0..=5),
                    Just(matching),
                    Just(extra),
                )
            }),
        0..=2,
    )
    .prop_map(move |slices| {
        slices
            .into_iter()
            .enumerate()
            .map(|(j, (endpoints, matching, extra))| {
                let lay = if matching {
                    layout(c)
                } else {
                    layout((c + 1) % PORT_LAYOUTS)
                };
                let mut ports: Vec<EndpointPort> = lay
                    .into_iter()
                    .map(|(name, protocol, _, target)| EndpointPort {
                        name: name.into(),
                        protocol,
                        port: target,
                    })
                    .collect();
                if extra {
                    ports.push(EndpointPort {
                        name: "unused".into(),
                        protocol: Protocol::Tcp,
                        port: 7,
                    });
                }
                EndpointSlice {
                    namespace: format!("ns{}", i % 2 + 1),
                    name: format!("svc{i}-{j}"),
                    service_name: format!("svc{i}"),
                    address_family: family,
                    ports,
                    endpoints,
                    trigger_time: None,
                }
            })
            .collect()
    })
}

/// One slot of a cluster: a Service (maybe absent) and its slices.
#[derive(Debug, Clone)]
pub struct Slot {
    pub service: Option<Service>,
    pub slices: Vec<EndpointSlice>,
}

fn arb_slot(family: IpFamily, i: usize, c: usize) -> impl Strategy<Value = Slot> {
    (
        prop::option::weighted(0.9, arb_service(family, i, c)),
        arb_slices(family, i, c),
    )
        .prop_map(|(service, slices)| Slot { service, slices })
}

/// A cluster: its slots (slot `i` holds `ns{i%2+1}/svc{i}`).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub family: IpFamily,
    pub layouts: Vec<usize>,
    pub slots: Vec<Slot>,
}

impl Cluster {
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.slots.iter().filter_map(|s| s.service.as_ref())
    }

    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slots.iter().flat_map(|s| s.slices.iter())
    }

    /// A tracker holding this cluster, committed.
    pub fn tracker(&self) -> ChangeTracker {
        let mut t = ChangeTracker::new(self.family, NODE);
        for s in self.services() {
            t.update_service(s.clone());
        }
        for s in self.slices() {
            t.update_endpoint_slice(s.clone());
        }
        t.commit();
        t
    }
}

pub fn arb_cluster(family: IpFamily, max_slots: usize) -> impl Strategy<Value = Cluster> {
    vec(0..PORT_LAYOUTS, 1..=max_slots).prop_flat_map(move |layouts| {
        let slots: Vec<_> = layouts
            .iter()
            .enumerate()
            .map(|(i, &c)| arb_slot(family, i, c))
            .collect();
        (Just(layouts), slots).prop_map(move |(layouts, slots)| Cluster {
            family,
            layouts,
            slots,
        })
    })
}

/// What happens to one slot in one step.
#[derive(Debug, Clone)]
pub enum Mutation {
    Keep,
    /// Re-send the same objects (no-op updates).
    Touch,
    Service(Option<Service>),
    Slices(Vec<EndpointSlice>),
    Both(Option<Service>, Vec<EndpointSlice>),
}

fn arb_mutation(family: IpFamily, i: usize, c: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => Just(Mutation::Keep),
        1 => Just(Mutation::Touch),
        2 => prop::option::weighted(0.85, arb_service(family, i, c)).prop_map(Mutation::Service),
        3 => arb_slices(family, i, c).prop_map(Mutation::Slices),
        1 => (prop::option::weighted(0.85, arb_service(family, i, c)), arb_slices(family, i, c))
            .prop_map(|(s, e)| Mutation::Both(s, e)),
    ]
}

/// A cluster and `steps` rounds of mutations of its slots.
pub fn arb_history(
    family: IpFamily,
    max_slots: usize,
    steps: usize,
) -> impl Strategy<Value = (Cluster, Vec<Vec<Mutation>>)> {
    arb_cluster(family, max_slots).prop_flat_map(move |cluster| {
        let per_step: Vec<_> = cluster
            .layouts
            .iter()
            .enumerate()
            .map(|(i, &c)| arb_mutation(family, i, c))
            .collect();
        (Just(cluster), vec(per_step, 1..=steps))
    })
}

/// Applies one step of mutations to `cluster` and feeds the events to `tracker`.
pub fn apply_step(cluster: &mut Cluster, tracker: &mut ChangeTracker, step: &[Mutation]) {
    for (slot, m) in cluster.slots.iter_mut().zip(step) {
        let (svc, slices) = match m {
            Mutation::Keep => continue,
            Mutation::Touch => (slot.service.clone(), slot.slices.clone()),
            Mutation::Service(s) => (s.clone(), slot.slices.clone()),
            Mutation::Slices(e) => (slot.service.clone(), e.clone()),
            Mutation::Both(s, e) => (s.clone(), e.clone()),
        };
        match (&slot.service, &svc) {
            (_, Some(new)) => {
                tracker.update_service(new.clone());
            }
            (Some(old), None) => {
                tracker.delete_service(&old.namespace, &old.name);
            }
            (None, None) => {}
        }
        for old in &slot.slices {
            if !slices.iter().any(|s| s.name == old.name) {
                tracker.delete_endpoint_slice(&old.namespace, &old.name);
            }
        }
        for s in &slices {
            tracker.update_endpoint_slice(s.clone());
        }
        slot.service = svc;
        slot.slices = slices;
    }
}
