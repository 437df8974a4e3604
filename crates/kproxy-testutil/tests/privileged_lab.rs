//! The lab topology on the real kernel, without any kproxy rules: every path a kproxy test
//! relies on works, for IPv4 and IPv6. The only rules here are hand-made ones, inside the lab's
//! node namespace. Needs root (CI runs as root).

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use kproxy_testutil::{
    Backend, Lab, LabConfig, Netns, Pod, PodHost, ProbeResult, tcp_probe, tcp_probe_from, udp_probe,
};

/// Timeout for probes that should succeed.
const OK: Duration = Duration::from_secs(2);
/// Timeout for probes that should fail.
const FAIL: Duration = Duration::from_millis(300);

/// Runs a whitespace-separated command line in `ns` (test rules contain no quoted words).
fn sh(ns: &Netns, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    ns.run(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
}

/// Asserts `r` is an answer from `backend` that saw `peer_ip`, and returns the seen port.
#[track_caller]
fn assert_answer(r: &ProbeResult, backend: &str, peer_ip: IpAddr) -> u16 {
    match r {
        ProbeResult::Answered {
            backend: b,
            seen_peer,
        } if b == backend && seen_peer.ip() == peer_ip => seen_peer.port(),
        other => panic!("expected an answer from {backend} seeing {peer_ip}, got {other:?}"),
    }
}

/// Probes `target` over TCP and UDP from `from`, expecting `backend` to see `peer_ip`.
#[track_caller]
fn assert_both(from: &Netns, target: SocketAddr, backend: &str, peer_ip: IpAddr) {
    let r = tcp_probe(from, target, OK);
    assert_answer(&r, backend, peer_ip);
    let r = udp_probe(from, None, target, OK);
    assert_answer(&r, backend, peer_ip);
}

/// The names `ip netns list` shows (each line is a name, maybe followed by an id).
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn namespaces_exist_with_short_interface_names_and_go_away_on_drop() {
    let lab = Lab::new().unwrap();
    let namespaces: Vec<String> = lab
        .namespaces()
        .iter()
        .map(|(_, ns)| ns.name().to_owned())
        .collect();
    assert_eq!(
        namespaces.len(),
        7,
        "lan, node, node2, client, 2 pods, 1 remote pod"
    );
    let listed = netns_list();
    for (role, ns) in lab.namespaces() {
        assert!(
            listed.iter().any(|n| n == ns.name()),
            "{role} missing from {listed:?}"
        );
        let links = ns.ip(&["-o", "link"]).unwrap();
        for line in links.lines() {
            let name = line.split(':').nth(1).unwrap().trim();
            let name = name.split('@').next().unwrap();
            assert!(name.len() <= 15, "{role}: interface {name:?} too long");
        }
    }
    assert_eq!(lab.local_pods[0].host_if, "vpod0");
    assert_eq!(lab.local_pods[1].host, PodHost::Node);
    assert_eq!(lab.remote_pods[0].host, PodHost::Node2);
    // DAD is off: no address is ever tentative.
    for (role, ns) in lab.namespaces() {
        let tentative = ns.ip(&["-6", "addr", "show", "tentative"]).unwrap();
        assert!(tentative.trim().is_empty(), "{role}: {tentative}");
    }
    drop(lab);
    let listed = netns_list();
    for name in namespaces {
        assert!(!listed.contains(&name), "{name} left behind: {listed:?}");
    }
}

#[test]
fn default_addresses_match_the_docs() {
    let lab = Lab::new().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(IpAddr::from(lab.node.v4), ip("192.168.0.2"));
    assert_eq!(IpAddr::from(lab.node.v6), ip("2001:db8::2"));
    assert_eq!(IpAddr::from(lab.node2.v4), ip("192.168.0.3"));
    assert_eq!(IpAddr::from(lab.node2.v6), ip("2001:db8::3"));
    assert_eq!(IpAddr::from(lab.client.v4), ip("192.168.0.100"));
    assert_eq!(IpAddr::from(lab.client.v6), ip("2001:db8::100"));
    assert_eq!(IpAddr::from(lab.client_internet_v4), ip("203.0.113.100"));
    assert_eq!(
        IpAddr::from(lab.client_internet_v6),
        ip("2001:db8:113::100")
    );
    let (p0, p1, r0) = (&lab.local_pods[0], &lab.local_pods[1], &lab.remote_pods[0]);
    assert_eq!(IpAddr::from(p0.v4), ip("10.0.1.10"));
    assert_eq!(IpAddr::from(p0.v6), ip("fd00:10:1::10"));
    assert_eq!(IpAddr::from(p1.v4), ip("10.0.1.11"));
    assert_eq!(IpAddr::from(p1.v6), ip("fd00:10:1::11"));
    assert_eq!(IpAddr::from(r0.v4), ip("10.0.2.10"));
    assert_eq!(IpAddr::from(r0.v6), ip("fd00:10:2::10"));
    assert_eq!(IpAddr::from(p0.gateway_v4), ip("10.0.1.1"));
    assert_eq!(IpAddr::from(r0.gateway_v4), ip("10.0.2.1"));
    assert_eq!(IpAddr::from(p0.gateway_v6), ip("fe80::1"));
    assert_eq!(lab.node.read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        lab.node2
            .read_sysctl("net.ipv6.conf.all.forwarding")
            .unwrap(),
        "1"
    );
}

#[test]
fn pods_reach_pods_on_the_same_node_and_on_the_other_node() {
    let lab = Lab::new().unwrap();
    let (p0, p1, r0) = (&lab.local_pods[0], &lab.local_pods[1], &lab.remote_pods[0]);
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _b1 = Backend::start(p1, "pod1", &p1.socks(8080)).unwrap();
    let _r0 = Backend::start(r0, "rpod0", &r0.socks(8080)).unwrap();
    for v4 in [true, false] {
        let pick = |p: &Pod| if v4 { p.sock_v4(8080) } else { p.sock_v6(8080) };
        let own = |p: &Pod| pick(p).ip();
        // Same node, both directions; the backend sees the other pod's own address.
        assert_both(p0, pick(p1), "pod1", own(p0));
        assert_both(p1, pick(p0), "pod0", own(p1));
        // Across nodes, both directions.
        assert_both(p0, pick(r0), "rpod0", own(p0));
        assert_both(r0, pick(p1), "pod1", own(r0));
    }
}

#[test]
fn client_reaches_node_addresses_pods_and_node2_without_nat() {
    let lab = Lab::new().unwrap();
    let node_backend = Backend::start(&lab.node, "node", &lab.node.socks(30080)).unwrap();
    let _n2 = Backend::start(&lab.node2, "node2", &lab.node2.socks(30080)).unwrap();
    let p0 = &lab.local_pods[0];
    let r0 = &lab.remote_pods[0];
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _r0 = Backend::start(r0, "rpod0", &r0.socks(8080)).unwrap();
    let c = &lab.client;
    for (target, name) in [
        (lab.node.sock_v4(30080), "node"),
        (lab.node2.sock_v4(30080), "node2"),
        (p0.sock_v4(8080), "pod0"),
        (r0.sock_v4(8080), "rpod0"),
    ] {
        assert_both(c, target, name, c.v4.into());
    }
    for (target, name) in [
        (lab.node.sock_v6(30080), "node"),
        (lab.node2.sock_v6(30080), "node2"),
        (p0.sock_v6(8080), "pod0"),
        (r0.sock_v6(8080), "rpod0"),
    ] {
        assert_both(c, target, name, c.v6.into());
    }
    // From "the internet": both nodes route the client's far addresses back to it.
    for (src, target) in [
        (
            IpAddr::from(lab.client_internet_v4),
            lab.node.sock_v4(30080),
        ),
        (lab.client_internet_v4.into(), r0.sock_v4(8080)),
        (lab.client_internet_v6.into(), lab.node.sock_v6(30080)),
        (lab.client_internet_v6.into(), p0.sock_v6(8080)),
    ] {
        let r = tcp_probe_from(c, SocketAddr::new(src, 0), target, OK);
        assert!(r.is_answered(), "{src} -> {target}: {r:?}");
        assert_eq!(r.seen_peer().unwrap().ip(), src);
    }
    assert_eq!(node_backend.tcp_served(), 4);
    assert_eq!(node_backend.udp_served(), 2);
}

#[test]
fn nodes_reach_pods() {
    let lab = Lab::new().unwrap();
    let p0 = &lab.local_pods[0];
    let r0 = &lab.remote_pods[0];
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _r0 = Backend::start(r0, "rpod0", &r0.socks(8080)).unwrap();
    // The node talks to its own pods from its address on the pod link.
    assert_both(&lab.node, p0.sock_v4(8080), "pod0", p0.gateway_v4.into());
    // To remote pods it goes over the node network.
    assert_both(&lab.node, r0.sock_v4(8080), "rpod0", lab.node.v4.into());
    assert_both(&lab.node, r0.sock_v6(8080), "rpod0", lab.node.v6.into());
    let r = tcp_probe(&lab.node, p0.sock_v6(8080), OK);
    assert_eq!(r.backend(), Some("pod0"), "{r:?}");
    assert_both(&lab.node2, r0.sock_v4(8080), "rpod0", r0.gateway_v4.into());
}

#[test]
fn node_reaches_services_through_output_dnat_and_clients_through_nodeports() {
    let lab = Lab::new().unwrap();
    let (p0, r0) = (&lab.local_pods[0], &lab.remote_pods[0]);
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _r0 = Backend::start(r0, "rpod0", &r0.socks(8080)).unwrap();
    let node = &lab.node;
    // A ClusterIP from the node itself: OUTPUT DNAT, after a route lookup that needs the
    // node's default route.
    sh(
        node,
        "iptables -t nat -A OUTPUT -d 10.96.0.30 -p tcp --dport 80 \
         -j DNAT --to-destination 10.0.2.10:8080",
    );
    sh(
        node,
        "ip6tables -t nat -A OUTPUT -d fd00:10:96::30 -p udp --dport 80 \
         -j DNAT --to-destination [fd00:10:1::10]:8080",
    );
    let r = tcp_probe(node, "10.96.0.30:80".parse().unwrap(), OK);
    assert_answer(&r, "rpod0", lab.node.v4.into());
    let r = udp_probe(node, None, "[fd00:10:96::30]:80".parse().unwrap(), OK);
    assert_answer(&r, "pod0", lab.node.v6.into());
    // A NodePort on the node's own address, from the client and from a pod.
    sh(
        node,
        "iptables -t nat -A PREROUTING -d 192.168.0.2 -p tcp --dport 30080 \
         -j DNAT --to-destination 10.0.1.10:8080",
    );
    let nodeport = lab.node.sock_v4(30080);
    assert_answer(
        &tcp_probe(&lab.client, nodeport, OK),
        "pod0",
        lab.client.v4.into(),
    );
    let p1 = &lab.local_pods[1];
    assert_answer(&tcp_probe(p1, nodeport, OK), "pod0", p1.v4.into());
    // Nothing answers for an unknown address: it ends quietly at the client.
    let r = tcp_probe(node, "10.96.0.31:80".parse().unwrap(), FAIL);
    assert_eq!(r, ProbeResult::Timeout);
}

#[test]
fn hairpin_through_dnat_needs_and_works_with_masquerade() {
    let lab = Lab::new().unwrap();
    let p0 = &lab.local_pods[0];
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let node = &lab.node;
    for proto in ["tcp", "udp"] {
        sh(
            node,
            &format!(
                "iptables -t nat -A PREROUTING -d 10.96.0.10 -p {proto} --dport 80 \
                 -j DNAT --to-destination 10.0.1.10:8080"
            ),
        );
        sh(
            node,
            &format!(
                "ip6tables -t nat -A PREROUTING -d fd00:10:96::10 -p {proto} --dport 80 \
                 -j DNAT --to-destination [fd00:10:1::10]:8080"
            ),
        );
    }
    let vip4: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let vip6: SocketAddr = "[fd00:10:96::10]:80".parse().unwrap();

    // Without masquerading, the pod drops a packet from its own address.
    assert_eq!(tcp_probe(p0, vip4, FAIL), ProbeResult::Timeout);
    assert_eq!(udp_probe(p0, None, vip6, FAIL), ProbeResult::Timeout);

    // As kube-proxy does: masquerade traffic from an endpoint to itself.
    sh(
        node,
        "iptables -t nat -A POSTROUTING -s 10.0.1.10 -d 10.0.1.10 -j MASQUERADE",
    );
    sh(
        node,
        "ip6tables -t nat -A POSTROUTING -s fd00:10:1::10 -d fd00:10:1::10 -j MASQUERADE",
    );
    assert_both(p0, vip4, "pod0", p0.gateway_v4.into());
    assert_both(p0, vip6, "pod0", lab.node.v6.into());

    // Another pod and the client reach the same service without masquerade.
    let p1 = &lab.local_pods[1];
    assert_both(p1, vip4, "pod0", p1.v4.into());
    assert_both(&lab.client, vip6, "pod0", lab.client.v6.into());
}

#[test]
fn remote_endpoints_need_masquerade_for_external_clients() {
    let lab = Lab::new().unwrap();
    let r0 = &lab.remote_pods[0];
    let _r0 = Backend::start(r0, "rpod0", &r0.socks(8080)).unwrap();
    let node = &lab.node;
    sh(
        node,
        "iptables -t nat -A PREROUTING -d 10.96.0.20 -p tcp --dport 80 \
         -j DNAT --to-destination 10.0.2.10:8080",
    );
    let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
    // node2's pod answers the client directly over the node network, not through the node:
    // the client never sees the service address answer.
    assert_eq!(tcp_probe(&lab.client, vip, FAIL), ProbeResult::Timeout);
    sh(
        node,
        "iptables -t nat -A POSTROUTING -d 10.0.2.0/24 -o eth0 -j MASQUERADE",
    );
    let r = tcp_probe(&lab.client, vip, OK);
    assert_answer(&r, "rpod0", lab.node.v4.into());
}

#[test]
fn added_node_addresses_are_local_and_reachable() {
    let lab = Lab::new().unwrap();
    let extra4: IpAddr = "192.0.2.10".parse().unwrap();
    let extra6: IpAddr = "2001:db8:ee::10".parse().unwrap();
    lab.add_node_address(extra4).unwrap();
    lab.add_node_address(extra6).unwrap();
    let on_node = [
        SocketAddr::new(extra4, 30081),
        SocketAddr::new(extra6, 30081),
    ];
    let b = Backend::start(&lab.node, "node-extra", &on_node).unwrap();
    for target in on_node {
        assert_both(
            &lab.client,
            target,
            "node-extra",
            lab.client.ip_like(target.ip()),
        );
        assert_both(
            &lab.node2,
            target,
            "node-extra",
            lab.node2.ip_like(target.ip()),
        );
        let pod = &lab.local_pods[0];
        let r = tcp_probe(pod, target, OK);
        assert_answer(&r, "node-extra", pod.ip_like(target.ip()));
    }
    drop(b);
    lab.remove_node_address(extra4).unwrap();
    let r = tcp_probe(&lab.client, SocketAddr::new(extra4, 30081), FAIL);
    assert!(!r.is_answered(), "{r:?}");

    // A range routed to the node from node2 and the client, e.g. load-balancer IPs.
    lab.route_via_node("198.51.100.0/24".parse().unwrap())
        .unwrap();
    let routes = lab.node2.ip(&["route"]).unwrap();
    assert!(
        routes.contains("198.51.100.0/24 via 192.168.0.2"),
        "{routes}"
    );
}

#[test]
fn pods_can_be_added_and_removed_after_build() {
    let lab = Lab::with_config(LabConfig {
        local_pods: 1,
        remote_pods: 0,
        ..LabConfig::default()
    })
    .unwrap();
    assert!(lab.remote_pods.is_empty());
    let extra = lab.new_pod(PodHost::Node).unwrap();
    let remote = lab.new_pod(PodHost::Node2).unwrap();
    assert_eq!(extra.v4.to_string(), "10.0.1.11");
    assert_eq!(extra.host_if, "vpod1");
    assert_eq!(remote.v6.to_string(), "fd00:10:2::10");
    let _b = Backend::start(&extra, "extra", &extra.socks(8080)).unwrap();
    let _r = Backend::start(&remote, "remote", &remote.socks(8080)).unwrap();
    assert_both(
        &lab.client,
        extra.sock_v4(8080),
        "extra",
        lab.client.v4.into(),
    );
    assert_both(&extra, remote.sock_v6(8080), "remote", extra.v6.into());
    let target = extra.sock_v4(8080);
    drop(_b);
    drop(extra);
    // The node's veth and route went with the pod's namespace.
    let routes = lab.node.ip(&["route"]).unwrap();
    assert!(!routes.contains("10.0.1.11"), "{routes}");
    let r = tcp_probe(&lab.client, target, FAIL);
    assert!(!r.is_answered(), "{r:?}");
}

#[test]
fn other_address_plans_work() {
    let config = LabConfig {
        lan_v4: "172.31.5.0/24".parse().unwrap(),
        lan_v6: "fd00:cafe::/64".parse().unwrap(),
        node_pods_v4: "10.244.7.0/24".parse().unwrap(),
        node_pods_v6: "fd00:244:7::/64".parse().unwrap(),
        local_pods: 1,
        remote_pods: 1,
        ..LabConfig::default()
    };
    let lab = Lab::with_config(config.clone()).unwrap();
    assert_eq!(lab.config(), &config);
    assert_eq!(lab.node.v4.to_string(), "172.31.5.2");
    let p0 = &lab.local_pods[0];
    assert_eq!(p0.v6.to_string(), "fd00:244:7::10");
    let r0 = &lab.remote_pods[0];
    let _b = Backend::start(r0, "rpod0", &r0.socks(9000)).unwrap();
    assert_both(p0, r0.sock_v4(9000), "rpod0", p0.v4.into());
    assert_both(p0, r0.sock_v6(9000), "rpod0", p0.v6.into());

    // A node network too small for the client's .100 is refused up front.
    let err = Lab::with_config(LabConfig {
        lan_v4: "192.168.7.0/26".parse().unwrap(),
        ..LabConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains(".100"), "{err}");
}

#[test]
fn route_localnet_is_settable_on_the_node() {
    let lab = Lab::with_config(LabConfig {
        local_pods: 0,
        remote_pods: 0,
        ..LabConfig::default()
    })
    .unwrap();
    let key = "net.ipv4.conf.all.route_localnet";
    assert_eq!(lab.node.read_sysctl(key).unwrap(), "0");
    lab.set_route_localnet(true).unwrap();
    assert_eq!(lab.node.read_sysctl(key).unwrap(), "1");
    lab.set_route_localnet(false).unwrap();
    assert_eq!(lab.node.read_sysctl(key).unwrap(), "0");
    assert!(lab.dump().contains("== node "));
}
