//! Stale UDP flow reconciliation on the real kernel, proven with real traffic (needs root;
//! CI runs as root). Every test works in network namespaces of its own.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};

use common::{Backend, exchange, list, rule_packets, sh, udp_client};
use kproxy_conntrack::{
    Conntrack, DeleteStats, Family, Protocol, StaleFlowFilter, clean_stale_flows,
};
use kproxy_testutil::{Netns, veth};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn reconcile(ns: &Netns, family: Family, filter: StaleFlowFilter) -> DeleteStats {
    ns.enter(move || {
        let mut ct = Conntrack::new()?;
        clean_stale_flows(&mut ct, family, &filter)
    })
    .unwrap()
    .expect("reconcile")
}

/// A client on the node talks to a ClusterIP whose endpoint moves from pod A to pod B. The
/// client keeps its source port, so without reconciliation conntrack keeps sending it to A;
/// after reconciliation its next datagram reaches B. A TCP connection to the same
/// `IP:port`, also DNATed to A, is left alone.
#[test]
fn cluster_ip_flow_follows_the_remaining_endpoint_after_reconciliation() {
    let node = Netns::new("rcn").unwrap();
    let pod_a = Netns::new("rca").unwrap();
    let pod_b = Netns::new("rcb").unwrap();
    veth(&node, "va", &pod_a, "eth0").unwrap();
    veth(&node, "vb", &pod_b, "eth0").unwrap();
    sh(&node, &["ip", "addr", "add", "10.244.1.1/24", "dev", "va"]);
    sh(&node, &["ip", "addr", "add", "10.244.2.1/24", "dev", "vb"]);
    sh(
        &pod_a,
        &["ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"],
    );
    sh(
        &pod_b,
        &["ip", "addr", "add", "10.244.2.2/24", "dev", "eth0"],
    );
    sh(
        &pod_a,
        &["ip", "route", "add", "default", "via", "10.244.1.1"],
    );
    sh(
        &pod_b,
        &["ip", "route", "add", "default", "via", "10.244.2.1"],
    );
    sh(&node, &["ip", "route", "add", "10.96.0.0/16", "dev", "va"]);
    for proto in ["udp", "tcp"] {
        sh(
            &node,
            &[
                "iptables",
                "-w",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                "10.96.0.10/32",
                "-p",
                proto,
                "--dport",
                "53",
                "-j",
                "DNAT",
                "--to-destination",
                "10.244.1.2:5353",
            ],
        );
    }
    let vip: SocketAddr = "10.96.0.10:53".parse().unwrap();

    let a = Backend::start(&pod_a, "10.244.1.2:5353".parse().unwrap(), "A");
    let b = Backend::start(&pod_b, "10.244.2.2:5353".parse().unwrap(), "B");
    let tcp_listener = pod_a
        .enter(|| std::net::TcpListener::bind("10.244.1.2:5353"))
        .unwrap()
        .unwrap();
    let tcp = node
        .enter(move || std::net::TcpStream::connect(vip))
        .unwrap()
        .unwrap();
    let _tcp_peer = tcp_listener.accept().unwrap();

    let client = udp_client(&node, "0.0.0.0:0");
    let port = client.local_addr().unwrap().port();
    assert_eq!(
        exchange(&client, vip, "1").unwrap(),
        Some(("A".into(), vip))
    );

    // Endpoint A goes away: its server stops, the rule now DNATs new flows to B.
    a.stop();
    sh(
        &node,
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-R",
            "OUTPUT",
            "1",
            "-d",
            "10.96.0.10/32",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            "10.244.2.2:5353",
        ],
    );
    // The stale entry still sends the client to A: no answer, B sees nothing.
    assert_eq!(exchange(&client, vip, "2").unwrap(), None);
    assert_eq!(b.received(), 0);

    let mut filter = StaleFlowFilter::new();
    filter.add_service_port(&[(ip("10.96.0.10"), 53)], None, &[ip("10.244.2.2")]);
    let stats = reconcile(&node, Family::Ipv4, filter.clone());
    assert_eq!((stats.deleted, stats.vanished), (1, 0));

    // Same socket, same source port: now B answers.
    assert_eq!(
        exchange(&client, vip, "3").unwrap(),
        Some(("B".into(), vip))
    );
    assert_eq!(b.received(), 1);

    let flows = list(&node, Family::Ipv4);
    let udp: Vec<_> = flows
        .iter()
        .filter(|f| f.protocol == Protocol::Udp && f.original.dst_addr() == vip)
        .collect();
    assert_eq!(udp.len(), 1, "{flows:#?}");
    assert_eq!(udp[0].original.src_port, port);
    assert_eq!(udp[0].reply.src, ip("10.244.2.2"));
    // The TCP connection to the same IP:port, still DNATed to A, is untouched.
    let tcp_flows: Vec<_> = flows
        .iter()
        .filter(|f| f.protocol == Protocol::Tcp && f.original.dst_addr() == vip)
        .collect();
    assert_eq!(tcp_flows.len(), 1, "{flows:#?}");
    assert_eq!(tcp_flows[0].reply.src, ip("10.244.1.2"));

    // Reconciling again finds nothing stale.
    let stats = reconcile(&node, Family::Ipv4, filter);
    assert_eq!((stats.deleted, stats.vanished), (0, 0));
    drop(tcp);
}

/// An external client talks to a NodePort; the service then loses its only endpoint and
/// kube-proxy's rules reject new flows to the node port. The stale entry keeps blackholing
/// the client to the deleted endpoint (the reject rule only sees new flows) until the
/// zero-endpoint reconciliation (kubernetes/kubernetes#139629) deletes it; then the client
/// is rejected at once. Upstream's older behaviour (skip services without endpoints) leaves
/// the entry in place. An unrelated UDP flow to the node survives.
#[test]
fn node_port_flow_of_a_service_without_endpoints_is_cleared() {
    let node = Netns::new("npn").unwrap();
    let pod = Netns::new("npp").unwrap();
    let ext = Netns::new("npc").unwrap();
    veth(&node, "va", &pod, "eth0").unwrap();
    veth(&node, "vc", &ext, "eth0").unwrap();
    sh(&node, &["ip", "addr", "add", "10.244.1.1/24", "dev", "va"]);
    sh(&node, &["ip", "addr", "add", "10.200.0.1/24", "dev", "vc"]);
    sh(&pod, &["ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"]);
    sh(&ext, &["ip", "addr", "add", "10.200.0.2/24", "dev", "eth0"]);
    sh(
        &pod,
        &["ip", "route", "add", "default", "via", "10.244.1.1"],
    );
    sh(
        &ext,
        &["ip", "route", "add", "default", "via", "10.200.0.1"],
    );
    sh(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    sh(
        &node,
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "udp",
            "--dport",
            "30053",
            "-j",
            "DNAT",
            "--to-destination",
            "10.244.1.2:5353",
        ],
    );
    // A counting rule for datagrams forwarded to the (soon deleted) endpoint.
    sh(
        &node,
        &[
            "iptables",
            "-w",
            "-A",
            "FORWARD",
            "-d",
            "10.244.1.2/32",
            "-p",
            "udp",
        ],
    );

    let node_port: SocketAddr = "10.200.0.1:30053".parse().unwrap();
    let a = Backend::start(&pod, "10.244.1.2:5353".parse().unwrap(), "A");
    let other = Backend::start(&node, "10.200.0.1:9999".parse().unwrap(), "other");
    let client = udp_client(&ext, "0.0.0.0:0");
    client.connect(node_port).unwrap();
    let other_client = udp_client(&ext, "0.0.0.0:0");
    assert_eq!(
        exchange(&client, node_port, "1").unwrap(),
        Some(("A".into(), node_port))
    );
    let to_other: SocketAddr = "10.200.0.1:9999".parse().unwrap();
    assert_eq!(
        exchange(&other_client, to_other, "x").unwrap(),
        Some(("other".into(), to_other))
    );
    let forwarded = rule_packets(&node, "iptables", "filter", "FORWARD", "10.244.1.2");
    assert_eq!(forwarded, 1);

    // The service loses its endpoint: the pod silently drops (it is gone), the DNAT rule
    // goes, and new flows to the node port are rejected.
    a.stop();
    sh(
        &pod,
        &["iptables", "-w", "-A", "INPUT", "-p", "udp", "-j", "DROP"],
    );
    sh(&node, &["iptables", "-w", "-t", "nat", "-F", "PREROUTING"]);
    sh(
        &node,
        &[
            "iptables",
            "-w",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "30053",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "REJECT",
        ],
    );
    // Blackholed: forwarded to the deleted endpoint, no answer, no rejection.
    assert_eq!(exchange(&client, node_port, "2").unwrap(), None);
    assert_eq!(
        rule_packets(&node, "iptables", "filter", "FORWARD", "10.244.1.2"),
        2
    );
    assert_eq!(
        rule_packets(&node, "iptables", "filter", "INPUT", "REJECT"),
        0
    );

    // Upstream before kubernetes/kubernetes#139629: a service without endpoints is skipped.
    let mut old = StaleFlowFilter::new();
    old.clear_services_without_endpoints(false);
    old.add_service_port(&[(ip("10.96.0.20"), 53)], Some(30053), &[]);
    assert!(old.is_empty());
    let stats = reconcile(&node, Family::Ipv4, old);
    assert_eq!((stats.deleted, stats.vanished), (0, 0));
    assert_eq!(exchange(&client, node_port, "3").unwrap(), None);
    assert_eq!(
        rule_packets(&node, "iptables", "filter", "FORWARD", "10.244.1.2"),
        3
    );

    // With the fix: the node-port entry is deleted whatever its destination IP.
    let mut filter = StaleFlowFilter::new();
    filter.add_service_port(&[(ip("10.96.0.20"), 53)], Some(30053), &[]);
    let stats = reconcile(&node, Family::Ipv4, filter);
    assert_eq!((stats.deleted, stats.vanished), (1, 0));

    // Same socket, same source port: now a new flow, rejected by the node at once.
    let err = exchange(&client, node_port, "4").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        rule_packets(&node, "iptables", "filter", "INPUT", "REJECT"),
        1
    );
    assert_eq!(
        rule_packets(&node, "iptables", "filter", "FORWARD", "10.244.1.2"),
        3
    );

    // The unrelated flow to the node's port 9999 survived.
    let flows = list(&node, Family::Ipv4);
    assert!(
        flows.iter().any(|f| f.original.dst_addr() == to_other),
        "{flows:#?}"
    );
    assert_eq!(other.received(), 1);
}

/// The same reconciliation on IPv6: a ClusterIP entry DNATed to a deleted endpoint goes,
/// the entry of the serving endpoint stays.
#[test]
fn ipv6_reconciliation_deletes_only_flows_to_gone_endpoints() {
    let node = Netns::new("r6n").unwrap();
    let pod = Netns::new("r6p").unwrap();
    veth(&node, "va", &pod, "eth0").unwrap();
    sh(
        &node,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:244:1::1/64",
            "dev",
            "va",
            "nodad",
        ],
    );
    sh(
        &pod,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:244:1::2/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    sh(
        &pod,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:244:1::3/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    sh(
        &pod,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:244:1::1",
        ],
    );
    sh(
        &node,
        &["ip", "-6", "route", "add", "fd00:96::/64", "dev", "va"],
    );
    // Two services: ::10 goes to ::2, ::11 goes to ::3.
    for (vip, ep) in [
        ("fd00:96::10", "[fd00:244:1::2]:5353"),
        ("fd00:96::11", "[fd00:244:1::3]:5353"),
    ] {
        sh(
            &node,
            &[
                "ip6tables",
                "-w",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                vip,
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "DNAT",
                "--to-destination",
                ep,
            ],
        );
    }
    let _a = Backend::start(&pod, "[fd00:244:1::2]:5353".parse().unwrap(), "A");
    let _b = Backend::start(&pod, "[fd00:244:1::3]:5353".parse().unwrap(), "B");
    let vip1: SocketAddr = "[fd00:96::10]:53".parse().unwrap();
    let vip2: SocketAddr = "[fd00:96::11]:53".parse().unwrap();
    let client = udp_client(&node, "[::]:0");
    assert_eq!(
        exchange(&client, vip1, "1").unwrap(),
        Some(("A".into(), vip1))
    );
    assert_eq!(
        exchange(&client, vip2, "1").unwrap(),
        Some(("B".into(), vip2))
    );

    // Service 1's endpoint is now ::9 (A is stale); service 2 keeps ::3.
    let mut filter = StaleFlowFilter::new();
    filter.add_service_port(&[(ip("fd00:96::10"), 53)], None, &[ip("fd00:244:1::9")]);
    filter.add_service_port(&[(ip("fd00:96::11"), 53)], None, &[ip("fd00:244:1::3")]);
    // The IPv4 pass finds nothing.
    assert_eq!(reconcile(&node, Family::Ipv4, filter.clone()).deleted, 0);
    let stats = reconcile(&node, Family::Ipv6, filter);
    assert_eq!((stats.deleted, stats.vanished), (1, 0));
    let flows = list(&node, Family::Ipv6);
    assert!(
        !flows.iter().any(|f| f.original.dst_addr() == vip1),
        "{flows:#?}"
    );
    assert!(
        flows.iter().any(|f| f.original.dst_addr() == vip2),
        "{flows:#?}"
    );
}

/// The endpoint keeps its IP but its target port moves (5353 -> 5354). Comparing IPs only
/// (Kubernetes 1.32) keeps the stale entry; comparing `IP:port` (1.33+) deletes it, and the
/// client's next datagram from the same source port reaches the new port.
#[test]
fn a_changed_target_port_on_the_same_endpoint_ip_is_reconciled() {
    let node = Netns::new("tpn").unwrap();
    let pod = Netns::new("tpp").unwrap();
    veth(&node, "va", &pod, "eth0").unwrap();
    sh(&node, &["ip", "addr", "add", "10.244.1.1/24", "dev", "va"]);
    sh(&pod, &["ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"]);
    sh(
        &pod,
        &["ip", "route", "add", "default", "via", "10.244.1.1"],
    );
    sh(&node, &["ip", "route", "add", "10.96.0.0/16", "dev", "va"]);
    let rule = |op: &[&str], to: &str| {
        let mut args = vec!["iptables", "-w", "-t", "nat"];
        args.extend_from_slice(op);
        args.extend_from_slice(&["-d", "10.96.0.10/32", "-p", "udp", "--dport", "53"]);
        args.extend_from_slice(&["-j", "DNAT", "--to-destination", to]);
        sh(&node, &args);
    };
    rule(&["-A", "OUTPUT"], "10.244.1.2:5353");
    let vip: SocketAddr = "10.96.0.10:53".parse().unwrap();

    let old = Backend::start(&pod, "10.244.1.2:5353".parse().unwrap(), "old");
    let new = Backend::start(&pod, "10.244.1.2:5354".parse().unwrap(), "new");
    let client = udp_client(&node, "0.0.0.0:0");
    assert_eq!(
        exchange(&client, vip, "1").unwrap(),
        Some(("old".into(), vip))
    );

    // The service's target port changes: the old server goes, the rule points to 5354.
    old.stop();
    rule(&["-R", "OUTPUT", "1"], "10.244.1.2:5354");
    assert_eq!(exchange(&client, vip, "2").unwrap(), None);
    assert_eq!(new.received(), 0);

    let mut by_ip = StaleFlowFilter::new();
    by_ip.add_service_port(&[(ip("10.96.0.10"), 53)], None, &[ip("10.244.1.2")]);
    assert_eq!(reconcile(&node, Family::Ipv4, by_ip).deleted, 0);
    assert_eq!(exchange(&client, vip, "3").unwrap(), None);

    let mut by_endpoint = StaleFlowFilter::new();
    by_endpoint.add_service_port_endpoints(
        &[(ip("10.96.0.10"), 53)],
        None,
        &["10.244.1.2:5354".parse().unwrap()],
    );
    let stats = reconcile(&node, Family::Ipv4, by_endpoint);
    assert_eq!((stats.deleted, stats.vanished), (1, 0));
    assert_eq!(
        exchange(&client, vip, "4").unwrap(),
        Some(("new".into(), vip))
    );
    assert_eq!(new.received(), 1);
}
