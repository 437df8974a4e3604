//! Change tracking: what counts as a change, and order independence.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kproxy_model::*;
use proptest::prelude::*;

fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, Protocol, u16)]) -> Service {
    Service {
        namespace: ns.into(),
        name: name.into(),
        cluster_ips: vec![ip.parse().unwrap()],
        ports: ports
            .iter()
            .map(|&(n, protocol, port)| ServicePort {
                name: n.into(),
                protocol,
                port,
                node_port: 0,
            })
            .collect(),
        ..Service::default()
    }
}

fn slice(ns: &str, name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        namespace: ns.into(),
        name: name.into(),
        service_name: service.into(),
        address_family: IpFamily::V4,
        ports: vec![EndpointPort {
            name: "p".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: ips
            .iter()
            .map(|ip| Endpoint::ready(ip.parse().unwrap()))
            .collect(),
        trigger_time: None,
    }
}

fn names(changes: &Changes) -> Vec<String> {
    changes.services.iter().map(|s| s.to_string()).collect()
}

#[test]
fn reports_exactly_the_changed_services() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    assert!(t.update_service(svc("a", "s1", "10.0.0.1", &[("p", Protocol::Tcp, 80)])));
    assert!(t.update_service(svc("a", "s2", "10.0.0.2", &[("p", Protocol::Tcp, 80)])));
    assert!(t.update_endpoint_slice(slice("a", "s1-x", "s1", &["10.1.0.1"])));
    assert_eq!(names(&t.commit()), ["a/s1", "a/s2"]);

    // The same objects again: nothing to do.
    assert!(!t.update_service(svc("a", "s1", "10.0.0.1", &[("p", Protocol::Tcp, 80)])));
    assert!(!t.update_endpoint_slice(slice("a", "s1-x", "s1", &["10.1.0.1"])));
    assert!(t.commit().is_empty());

    // An endpoint change marks only its Service, as an endpoints change.
    assert!(t.update_endpoint_slice(slice("a", "s1-x", "s1", &["10.1.0.1", "10.1.0.2"])));
    let c = t.commit();
    assert_eq!(names(&c), ["a/s1"]);
    assert_eq!(c.endpoints.len(), 1);
    assert!(c.udp_endpoints.is_empty());

    // A change that is undone before the commit is no change.
    t.update_service(svc("a", "s2", "10.0.0.2", &[("p", Protocol::Tcp, 81)]));
    t.update_service(svc("a", "s2", "10.0.0.2", &[("p", Protocol::Tcp, 80)]));
    assert!(t.commit().is_empty());
}

#[test]
fn other_family_changes_are_not_changes() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    let mut s = svc("a", "s", "10.0.0.1", &[("p", Protocol::Tcp, 80)]);
    s.cluster_ips.push("fd00::1".parse().unwrap());
    t.update_service(s.clone());
    t.commit();
    s.cluster_ips[1] = "fd00::2".parse().unwrap();
    assert!(!t.update_service(s));
    let mut v6 = slice("a", "s-v6", "s", &[]);
    v6.address_family = IpFamily::V6;
    v6.endpoints = vec![Endpoint::ready("fd00::9".parse().unwrap())];
    assert!(!t.update_endpoint_slice(v6));
    assert!(t.commit().is_empty());
    // A v6-only Service does not exist for the v4 tracker.
    let mut only6 = svc("a", "six", "fd00::3", &[("p", Protocol::Tcp, 80)]);
    only6.cluster_ips = vec!["fd00::3".parse().unwrap()];
    assert!(!t.update_service(only6));
    assert!(!t.delete_service("a", "six"));
}

#[test]
fn deleting_a_service_keeps_its_slices_for_later() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    t.update_service(svc("a", "s", "10.0.0.1", &[("p", Protocol::Tcp, 80)]));
    t.update_endpoint_slice(slice("a", "s-1", "s", &["10.1.0.1"]));
    t.commit();
    assert!(t.delete_service("a", "s"));
    assert_eq!(names(&t.commit()), ["a/s"]);
    assert_eq!(t.state().service_port_count(), 0);
    assert_eq!(t.state().total_endpoints(), 0, "orphan slices do not count");
    // The Service comes back: its endpoints are there at once.
    t.update_service(svc("a", "s", "10.0.0.1", &[("p", Protocol::Tcp, 80)]));
    t.commit();
    assert_eq!(t.state().total_endpoints(), 1);
    // Deleting the slice empties the Service.
    assert!(t.delete_endpoint_slice("a", "s-1"));
    assert!(!t.delete_endpoint_slice("a", "s-1"));
    let c = t.commit();
    assert_eq!(names(&c), ["a/s"]);
    assert_eq!(t.state().total_endpoints(), 0);
}

#[test]
fn a_slice_moving_between_services_changes_both() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    t.update_service(svc("a", "s1", "10.0.0.1", &[("p", Protocol::Tcp, 80)]));
    t.update_service(svc("a", "s2", "10.0.0.2", &[("p", Protocol::Tcp, 80)]));
    t.update_endpoint_slice(slice("a", "x", "s1", &["10.1.0.1"]));
    t.commit();
    t.update_endpoint_slice(slice("a", "x", "s2", &["10.1.0.1"]));
    assert_eq!(names(&t.commit()), ["a/s1", "a/s2"]);
    let s1 = t.state().service(&ServiceName::new("a", "s1")).unwrap();
    assert!(s1.endpoints.is_empty());
}

#[test]
fn udp_and_trigger_times() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    t.update_service(svc("a", "dns", "10.0.0.10", &[("p", Protocol::Udp, 53)]));
    let mut s = slice("a", "dns-1", "dns", &["10.1.0.1"]);
    s.ports[0].protocol = Protocol::Udp;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    s.trigger_time = Some(when);
    t.update_endpoint_slice(s);
    let c = t.commit();
    assert_eq!(c.udp_endpoints.len(), 1);
    assert_eq!(c.trigger_times, vec![(ServiceName::new("a", "dns"), when)]);
    assert!(t.commit().trigger_times.is_empty());
}

#[test]
fn health_check_inputs() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    let mut lb = svc(
        "a",
        "lb",
        "10.0.0.1",
        &[("p", Protocol::Tcp, 80), ("q", Protocol::Tcp, 443)],
    );
    lb.service_type = ServiceType::LoadBalancer;
    lb.external_traffic_policy = TrafficPolicy::Local;
    lb.health_check_node_port = 31000;
    t.update_service(lb);
    let mut s = slice("a", "lb-1", "lb", &[]);
    s.ports.push(EndpointPort {
        name: "q".into(),
        protocol: Protocol::Tcp,
        port: 8443,
    });
    let mk = |ip: &str, node: &str, ready: bool| {
        let mut e = Endpoint::ready(ip.parse().unwrap());
        e.node_name = Some(node.into());
        e.ready = ready;
        e.terminating = !ready;
        e
    };
    s.endpoints = vec![
        mk("10.1.0.1", "n1", true),
        mk("10.1.0.2", "n1", false),
        mk("10.1.0.3", "n2", true),
    ];
    t.update_endpoint_slice(s);
    t.commit();
    let name = ServiceName::new("a", "lb");
    assert_eq!(t.state().health_check_node_ports()[&name], 31000);
    // One local ready IP, counted once although it serves two ports.
    assert_eq!(t.state().local_ready_endpoints()[&name], 1);
}

// ---- order independence ----------------------------------------------------------------

#[derive(Debug, Clone)]
enum Event {
    Svc(Service),
    DelSvc(String, String),
    Slice(EndpointSlice),
    DelSlice(String, String),
}

fn apply(t: &mut ChangeTracker, e: &Event) {
    match e {
        Event::Svc(s) => {
            t.update_service(s.clone());
        }
        Event::DelSvc(ns, n) => {
            t.delete_service(ns, n);
        }
        Event::Slice(s) => {
            t.update_endpoint_slice(s.clone());
        }
        Event::DelSlice(ns, n) => {
            t.delete_endpoint_slice(ns, n);
        }
    }
}

fn arb_service() -> impl Strategy<Value = Service> {
    (0..2usize, 0..4usize, 1..3u8, proptest::bool::ANY).prop_map(|(ns, n, ip, udp)| {
        let proto = if udp { Protocol::Udp } else { Protocol::Tcp };
        svc(
            &format!("ns{ns}"),
            &format!("s{n}"),
            &format!("10.0.{n}.{ip}"),
            &[("p", proto, 80)],
        )
    })
}

fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    (
        0..2usize,
        0..5usize,
        0..4usize,
        proptest::collection::vec((0..6u8, proptest::bool::ANY, 0..3u8), 0..5),
    )
        .prop_map(|(ns, n, svc_idx, eps)| {
            let mut s = slice(
                &format!("ns{ns}"),
                &format!("x{n}"),
                &format!("s{svc_idx}"),
                &[],
            );
            s.endpoints = eps
                .into_iter()
                .map(|(ip, ready, node)| {
                    let mut e = Endpoint::ready(IpAddr::from([10, 1, 0, ip]));
                    e.ready = ready;
                    e.terminating = !ready;
                    e.node_name = Some(format!("n{node}"));
                    e
                })
                .collect();
            s
        })
}

proptest! {
    /// The final set of objects decides the state; event order and intermediate objects do
    /// not, and neither do commits in between.
    #[test]
    fn same_objects_any_order_same_state(
        services in proptest::collection::vec(arb_service(), 0..6),
        slices in proptest::collection::vec(arb_slice(), 0..8),
        noise in proptest::collection::vec(proptest::bool::ANY, 0..10),
        seed in proptest::prelude::any::<u64>(),
        commit_mask in proptest::prelude::any::<u32>(),
    ) {
        // Final objects: last writer per key wins in the reference order.
        let mut events: Vec<Event> = services.iter().cloned().map(Event::Svc)
            .chain(slices.iter().cloned().map(Event::Slice)).collect();
        let mut reference = ChangeTracker::new(IpFamily::V4, "n1");
        for e in &events { apply(&mut reference, e); }
        reference.commit();

        // The final value of every key, to replay in another order.
        let mut final_svcs = std::collections::BTreeMap::new();
        for s in &services { final_svcs.insert((s.namespace.clone(), s.name.clone()), s.clone()); }
        let mut final_slices = std::collections::BTreeMap::new();
        for s in &slices { final_slices.insert((s.namespace.clone(), s.name.clone()), s.clone()); }
        events = final_svcs.values().cloned().map(Event::Svc)
            .chain(final_slices.values().cloned().map(Event::Slice)).collect();
        // Shuffle deterministically from the seed.
        let mut x = seed | 1;
        for i in (1..events.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            events.swap(i, (x % (i as u64 + 1)) as usize);
        }
        // Noise: delete-and-readd some objects before their final event.
        let mut replay = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            if noise.get(i).copied().unwrap_or(false) {
                match &e {
                    Event::Svc(s) => {
                        replay.push(Event::Svc(svc(&s.namespace, &s.name, "10.9.9.9", &[("z", Protocol::Sctp, 9)])));
                        replay.push(Event::DelSvc(s.namespace.clone(), s.name.clone()));
                    }
                    Event::Slice(s) => replay.push(Event::DelSlice(s.namespace.clone(), s.name.clone())),
                    _ => {}
                }
            }
            replay.push(e);
        }
        let mut other = ChangeTracker::new(IpFamily::V4, "n1");
        for (i, e) in replay.iter().enumerate() {
            apply(&mut other, e);
            if commit_mask & (1 << (i % 32)) != 0 { other.commit(); }
        }
        other.commit();
        prop_assert_eq!(reference.state(), other.state());
        // The running totals match a recount.
        let st = other.state();
        prop_assert_eq!(st.total_endpoints(), st.service_ports().map(|(_, e)| e.len()).sum::<usize>());
        prop_assert_eq!(st.service_port_count(), st.service_ports().count());
    }
}

#[test]
fn a_later_duplicate_port_replaces_an_earlier_one() {
    let mut t = ChangeTracker::new(IpFamily::V4, "n1");
    t.update_service(svc(
        "a",
        "s",
        "10.0.0.1",
        &[("p", Protocol::Tcp, 80), ("p", Protocol::Tcp, 81)],
    ));
    t.commit();
    let ports: Vec<u16> = t.state().service_ports().map(|(p, _)| p.port).collect();
    assert_eq!(ports, [81]);
}
