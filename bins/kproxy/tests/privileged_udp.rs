//! UDP conntrack cleanup after endpoint changes (spec §5.7), on a real kernel: a UDP flow
//! (one fixed source port) sticks to its endpoint through conntrack; when that endpoint
//! leaves the Service (its backend still running) the daemon must delete the flow's entry,
//! so the next datagram reaches a remaining endpoint, and must leave the flows to the
//! remaining endpoint alone. A Service going from zero endpoints (or from not existing) to
//! some: datagrams from the same source port reach an endpoint at once. ClusterIP and
//! NodePort, both families, both iptables backends.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;

const PORT: u16 = 53;
const TARGET: u16 = 5353;
const NODE_PORT: u16 = 30053;

fn start(backend_kind: &'static str) -> Cluster {
    Cluster::start(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    })
}

/// The node's UDP conntrack entries of one family, for failure messages.
fn conntrack(c: &Cluster, v6: bool) -> String {
    let family = if v6 { "ipv6" } else { "ipv4" };
    c.lab
        .node
        .run(&["conntrack", "-L", "-f", family, "-p", "udp"])
        .unwrap_or_else(|e| format!("conntrack -L failed: {e}"))
}

/// One datagram from `source` to `target` from inside `ns`.
fn send(ns: &Netns, source: SocketAddr, target: SocketAddr) -> ProbeResult {
    Probe::udp(target)
        .with_source(source)
        .with_timeout(Duration::from_millis(500))
        .run(ns)
}

/// The `conntrack_deleted` of the daemon's syncs of `family` after the first `skip` records.
fn conntrack_deleted(c: &Cluster, family: &str, skip: usize) -> u64 {
    c.records("synced")
        .iter()
        .skip(skip)
        .filter(|r| r["fields"]["family"] == family)
        .map(|r| r["fields"]["conntrack_deleted"].as_u64().unwrap_or(0))
        .sum()
}

/// A flow: who sends, from where, to where.
struct Flow {
    what: String,
    /// From the external client (else from the client pod).
    external: bool,
    source: SocketAddr,
    target: SocketAddr,
}

fn sticky_endpoint_removed(backend_kind: &'static str) {
    let mut c = start(backend_kind);
    let a = c.lab.new_pod(PodHost::Node).expect("pod");
    let b = c.lab.new_pod(PodHost::Node).expect("pod");
    let client = c.lab.new_pod(PodHost::Node).expect("pod");
    let _ba = backend(&a, "a", TARGET);
    let _bb = backend(&b, "b", TARGET);
    let vips = [svc_v4(30), svc_v6(30)];
    c.manifests
        .service(
            ServiceDef::cluster_ip("dns", &vips, PORT, TARGET)
                .udp()
                .node_port(NODE_PORT),
        )
        .set_endpoints("dns", pod_endpoints(&[&a, &b]));
    c.apply();

    // Four flows per family and path: pod → ClusterIP, external client → NodePort.
    let mut flows = Vec::new();
    for vip in vips {
        for i in 0..4 {
            flows.push(Flow {
                what: format!("pod → {vip} from port {}", 40001 + i),
                external: false,
                source: sock(client.ip_like(vip), 40001 + i),
                target: sock(vip, PORT),
            });
            let node_ip = c.lab.node.ip_like(vip);
            flows.push(Flow {
                what: format!("client → NodePort {node_ip} from port {}", 41001 + i),
                external: true,
                source: sock(c.lab.client.ip_like(vip), 41001 + i),
                target: sock(node_ip, NODE_PORT),
            });
        }
    }
    // Each flow sticks to one endpoint.
    let mut stuck: Vec<String> = Vec::new();
    for f in &flows {
        let first = send(
            if f.external { &c.lab.client } else { &client },
            f.source,
            f.target,
        );
        let name = first
            .backend()
            .unwrap_or_else(|| panic!("{backend_kind} {}: {first}", f.what))
            .to_owned();
        for _ in 0..3 {
            let again = send(
                if f.external { &c.lab.client } else { &client },
                f.source,
                f.target,
            );
            assert_eq!(
                again.backend(),
                Some(name.as_str()),
                "{backend_kind} {}: the flow should stick to {name} (conntrack)\n{}",
                f.what,
                conntrack(&c, f.target.is_ipv6())
            );
        }
        stuck.push(name);
    }
    // Per family, remove the endpoint that flows of both paths stick to, if there is one
    // (else the first ClusterIP flow's).
    let mut removed: BTreeMap<bool, &str> = BTreeMap::new();
    for v6 in [false, true] {
        let of = |node_port: bool, name: &str| {
            flows
                .iter()
                .zip(&stuck)
                .any(|(f, s)| f.target.is_ipv6() == v6 && f.external == node_port && s == name)
        };
        let x = ["a", "b"]
            .into_iter()
            .find(|x| of(true, x) && of(false, x))
            .unwrap_or_else(|| if of(false, "a") { "a" } else { "b" });
        removed.insert(v6, x);
    }
    let pod_of = |name: &str| if name == "a" { &a } else { &b };
    let mut eps = Vec::new();
    for (v6, x) in &removed {
        let keep = pod_of(if *x == "a" { "b" } else { "a" });
        let ip: IpAddr = if *v6 { keep.v6.into() } else { keep.v4.into() };
        eps.push(EndpointDef::ready(ip, "node"));
    }
    let before = conntrack_text(&c);
    let skip = c.records("synced").len();
    c.manifests.set_endpoints("dns", eps);
    c.apply();

    // The removed endpoints' backends still run: their flows would still reach them if the
    // entries had stayed.
    for (v6, x) in &removed {
        let pod = pod_of(x);
        let direct = sock(if *v6 { pod.v6.into() } else { pod.v4.into() }, TARGET);
        let r = send(&client, sock(client.ip_like(direct.ip()), 42000), direct);
        assert_eq!(
            r.backend(),
            Some(*x),
            "{backend_kind}: {x} must keep running"
        );
    }
    for (f, was) in flows.iter().zip(&stuck) {
        let v6 = f.target.is_ipv6();
        let x = removed[&v6];
        let other = if x == "a" { "b" } else { "a" };
        let r = send(
            if f.external { &c.lab.client } else { &client },
            f.source,
            f.target,
        );
        assert_eq!(
            r.backend(),
            Some(other),
            "{backend_kind} {} (was on {was}, {x} removed): the next datagram must reach \
             {other}: {r}\nconntrack before the change:\n{before}\nafter:\n{}\nlog:\n{}",
            f.what,
            conntrack(&c, v6),
            c.log()
        );
    }
    // Exactly the removed endpoint's flows were deleted: the others' entries stayed.
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let want = flows
            .iter()
            .zip(&stuck)
            .filter(|(f, s)| f.target.is_ipv6() == v6 && *s == removed[&v6])
            .count() as u64;
        let got = conntrack_deleted(&c, family, skip);
        assert_eq!(
            got, want,
            "{backend_kind} {family}: conntrack entries deleted ({got}) should be the {want} \
             flows to the removed endpoint\nconntrack before:\n{before}"
        );
    }
}

fn conntrack_text(c: &Cluster) -> String {
    format!("{}{}", conntrack(c, false), conntrack(c, true))
}

#[test]
fn udp_flows_leave_a_removed_endpoint_nft() {
    sticky_endpoint_removed("nft");
}

#[test]
fn udp_flows_leave_a_removed_endpoint_legacy() {
    sticky_endpoint_removed("legacy");
}

/// A Service without endpoints rejects datagrams; once it has endpoints, the same source
/// port reaches one. And a Service that does not exist yet: its datagrams are routed away
/// unanswered (a conntrack entry without DNAT remembers that); once the Service exists with
/// endpoints, the daemon must delete that entry, or the same source port would keep going
/// nowhere.
fn zero_to_some_endpoints(backend_kind: &'static str) {
    let mut c = start(backend_kind);
    let a = c.lab.new_pod(PodHost::Node).expect("pod");
    let client = c.lab.new_pod(PodHost::Node).expect("pod");
    let _ba = backend(&a, "a", TARGET);
    let empty = [svc_v4(31), svc_v6(31)];
    let absent = [svc_v4(32), svc_v6(32)];
    c.manifests
        .service(ServiceDef::cluster_ip("empty", &empty, PORT, TARGET).udp())
        .set_endpoints("empty", vec![]);
    c.apply();

    let src = |vip: IpAddr| sock(client.ip_like(vip), 43000);
    for _ in 0..3 {
        for vip in empty {
            let r = send(&client, src(vip), sock(vip, PORT));
            assert_eq!(
                r,
                ProbeResult::Refused,
                "{backend_kind} {vip}: no endpoints"
            );
        }
        for vip in absent {
            let r = send(&client, src(vip), sock(vip, PORT));
            assert_eq!(r, ProbeResult::Timeout, "{backend_kind} {vip}: no Service");
        }
    }
    // The unanswered flows to the absent Service are in conntrack, without DNAT.
    let before = conntrack_text(&c);
    for vip in absent {
        assert!(
            before.contains(&format!("dst={vip} sport=43000 dport={PORT}")),
            "{backend_kind}: expected a conntrack entry for the unanswered {vip} flow:\n{before}"
        );
    }

    c.manifests
        .set_endpoints("empty", pod_endpoints(&[&a]))
        .service(ServiceDef::cluster_ip("absent", &absent, PORT, TARGET).udp())
        .set_endpoints("absent", pod_endpoints(&[&a]));
    c.apply();
    for vip in empty.into_iter().chain(absent) {
        let r = send(&client, src(vip), sock(vip, PORT));
        assert_eq!(
            r.backend(),
            Some("a"),
            "{backend_kind} {vip}: the same source port must now reach the endpoint: {r}\n\
             conntrack before:\n{before}\nafter:\n{}\nlog:\n{}",
            conntrack_text(&c),
            c.log()
        );
    }
}

#[test]
fn udp_service_from_zero_to_some_endpoints_nft() {
    zero_to_some_endpoints("nft");
}

#[test]
fn udp_service_from_zero_to_some_endpoints_legacy() {
    zero_to_some_endpoints("legacy");
}
