//! The conntrack client on the real kernel (needs root; CI runs as root). Every test works in
//! network namespaces of its own; the host's namespace and conntrack table are never touched.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Backend, conntrack_cli, exchange, keys, list, sh, udp_client};
use kproxy_conntrack::{Conntrack, Error, Family, Flow, Protocol};
use kproxy_testutil::{Netns, veth};

/// A node namespace whose OUTPUT nat DNATs `10.96.0.10:53/udp` to a pod namespace's
/// `10.244.1.2:5353`, where a backend answers "A".
struct V4 {
    node: Netns,
    pod: Netns,
}

fn v4_topology() -> V4 {
    let node = Netns::new("ctn").unwrap();
    let pod = Netns::new("ctp").unwrap();
    veth(&node, "va", &pod, "eth0").unwrap();
    sh(&node, &["ip", "addr", "add", "10.244.1.1/24", "dev", "va"]);
    sh(&pod, &["ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"]);
    sh(
        &pod,
        &["ip", "route", "add", "default", "via", "10.244.1.1"],
    );
    sh(&node, &["ip", "route", "add", "10.96.0.0/16", "dev", "va"]);
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
            "udp",
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            "10.244.1.2:5353",
        ],
    );
    V4 { node, pod }
}

fn vip() -> SocketAddr {
    "10.96.0.10:53".parse().unwrap()
}

fn flows_to(flows: &[Flow], dst: SocketAddr) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.original.dst_addr() == dst)
        .cloned()
        .collect()
}

#[test]
fn listing_an_empty_table_gives_no_entries() {
    let ns = Netns::new("cte").unwrap();
    assert_eq!(list(&ns, Family::Ipv4), vec![]);
    assert_eq!(list(&ns, Family::Ipv6), vec![]);
    // With conntrack active (a nat rule) but no traffic, still empty.
    sh(
        &ns,
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.96.0.1",
            "-j",
            "ACCEPT",
        ],
    );
    assert_eq!(list(&ns, Family::Ipv4), vec![]);
    assert_eq!(conntrack_cli(&ns, Family::Ipv4).len(), 0);
}

#[test]
fn lists_a_dnat_udp_flow_with_both_tuples_like_the_conntrack_cli() {
    let t = v4_topology();
    let _a = Backend::start(&t.pod, "10.244.1.2:5353".parse().unwrap(), "A");
    let client = udp_client(&t.node, "0.0.0.0:0");
    let port = client.local_addr().unwrap().port();
    let answer = exchange(&client, vip(), "hello").unwrap();
    assert_eq!(answer, Some(("A".to_owned(), vip())));

    let flows = list(&t.node, Family::Ipv4);
    let mine = flows_to(&flows, vip());
    assert_eq!(mine.len(), 1, "{flows:#?}");
    let f = &mine[0];
    assert_eq!(f.protocol, Protocol::Udp);
    assert_eq!(
        f.original.src_addr(),
        SocketAddr::new("10.244.1.1".parse().unwrap(), port)
    );
    assert_eq!(f.original.dst_addr(), vip());
    assert_eq!(f.reply.src_addr(), "10.244.1.2:5353".parse().unwrap());
    assert_eq!(
        f.reply.dst_addr(),
        SocketAddr::new("10.244.1.1".parse().unwrap(), port)
    );
    assert!(f.id.is_some());
    assert_eq!(f.zone, 0);
    assert_eq!(f.family(), Family::Ipv4);

    // The whole table, entry for entry, ids included, matches `conntrack -L`.
    assert_eq!(keys(&flows), conntrack_cli(&t.node, Family::Ipv4));
    // The IPv6 table does not hold it.
    assert!(flows_to(&list(&t.node, Family::Ipv6), vip()).is_empty());
}

#[test]
fn multi_part_dump_of_many_entries_matches_the_cli() {
    let t = v4_topology();
    let _a = Backend::start(&t.pod, "10.244.1.2:5353".parse().unwrap(), "A");
    // ~300 entries need several 16-32 KiB datagrams (each entry is ~200 bytes).
    let clients: Vec<_> = (0..300).map(|_| udp_client(&t.node, "0.0.0.0:0")).collect();
    for c in &clients {
        c.send_to(b"x", vip()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let flows = list(&t.node, Family::Ipv4);
    assert_eq!(flows_to(&flows, vip()).len(), 300);
    assert_eq!(keys(&flows), conntrack_cli(&t.node, Family::Ipv4));
}

#[test]
fn delete_removes_one_entry_and_a_vanished_entry_is_not_an_error() {
    let t = v4_topology();
    let _a = Backend::start(&t.pod, "10.244.1.2:5353".parse().unwrap(), "A");
    let c1 = udp_client(&t.node, "0.0.0.0:0");
    let c2 = udp_client(&t.node, "0.0.0.0:0");
    let c3 = udp_client(&t.node, "0.0.0.0:0");
    for c in [&c1, &c2, &c3] {
        assert!(exchange(c, vip(), "x").unwrap().is_some());
    }
    let flows = flows_to(&list(&t.node, Family::Ipv4), vip());
    assert_eq!(flows.len(), 3);

    let (first, rest) = (flows[0].clone(), flows[1..].to_vec());
    let wrong_id = first.clone().with_id(first.id.map(|id| id.wrapping_add(1)));
    let r = t
        .node
        .enter(move || -> Result<_, Error> {
            let mut ct = Conntrack::new()?;
            // An entry with this tuple exists, but not with this id: nothing is deleted.
            let by_wrong_id = ct.delete(&wrong_id)?;
            let still_there = ct.list(Family::Ipv4)?.contains(&first);
            let deleted = ct.delete(&first)?;
            let again = ct.delete(&first)?;
            // Without an id, deletion goes by tuple alone.
            let stats = ct.delete_many(rest.iter().chain([&first]))?;
            Ok((by_wrong_id, still_there, deleted, again, stats))
        })
        .unwrap()
        .unwrap();
    let (by_wrong_id, still_there, deleted, again, stats) = r;
    assert!(!by_wrong_id);
    assert!(still_there);
    assert!(deleted);
    assert!(!again);
    assert_eq!((stats.deleted, stats.vanished), (2, 1));
    assert!(flows_to(&list(&t.node, Family::Ipv4), vip()).is_empty());
    assert!(
        conntrack_cli(&t.node, Family::Ipv4)
            .iter()
            .all(|k| !k.contains("10.96.0.10:53"))
    );
}

#[test]
fn delete_by_tuple_without_id_and_unsupported_protocols() {
    let t = v4_topology();
    let _a = Backend::start(&t.pod, "10.244.1.2:5353".parse().unwrap(), "A");
    let c = udp_client(&t.node, "0.0.0.0:0");
    assert!(exchange(&c, vip(), "x").unwrap().is_some());
    let flow = flows_to(&list(&t.node, Family::Ipv4), vip()).remove(0);
    let icmp = Flow::new(Protocol::Other(1), flow.original, flow.reply);
    let by_tuple = flow.clone().with_id(None);
    let (icmp_err, deleted) = t
        .node
        .enter(move || {
            let mut ct = Conntrack::new().unwrap();
            (ct.delete(&icmp).unwrap_err(), ct.delete(&by_tuple).unwrap())
        })
        .unwrap();
    assert!(
        matches!(icmp_err, Error::UnsupportedProtocol { protocol: 1 }),
        "{icmp_err}"
    );
    assert!(deleted);
    assert!(flows_to(&list(&t.node, Family::Ipv4), vip()).is_empty());
}

#[test]
fn ipv6_flows_are_listed_and_deleted() {
    let node = Netns::new("ct6n").unwrap();
    let pod = Netns::new("ct6p").unwrap();
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
            "fd00:96::10/128",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            "[fd00:244:1::2]:5353",
        ],
    );
    let _a = Backend::start(&pod, "[fd00:244:1::2]:5353".parse().unwrap(), "A6");
    let vip6: SocketAddr = "[fd00:96::10]:53".parse().unwrap();
    let client = udp_client(&node, "[::]:0");
    let port = client.local_addr().unwrap().port();
    assert_eq!(
        exchange(&client, vip6, "hi").unwrap(),
        Some(("A6".to_owned(), vip6))
    );

    let flows = list(&node, Family::Ipv6);
    let mine = flows_to(&flows, vip6);
    assert_eq!(mine.len(), 1, "{flows:#?}");
    let f = mine[0].clone();
    let node_ip: IpAddr = "fd00:244:1::1".parse().unwrap();
    assert_eq!(f.protocol, Protocol::Udp);
    assert_eq!(f.original.src_addr(), SocketAddr::new(node_ip, port));
    assert_eq!(f.reply.src_addr(), "[fd00:244:1::2]:5353".parse().unwrap());
    assert_eq!(f.reply.dst_addr(), SocketAddr::new(node_ip, port));
    assert_eq!(f.family(), Family::Ipv6);
    assert_eq!(keys(&flows), conntrack_cli(&node, Family::Ipv6));
    assert!(flows_to(&list(&node, Family::Ipv4), vip6).is_empty());

    let (deleted, again) = node
        .enter(move || {
            let mut ct = Conntrack::new().unwrap();
            (ct.delete(&f).unwrap(), ct.delete(&f).unwrap())
        })
        .unwrap();
    assert!(deleted);
    assert!(!again);
    assert!(flows_to(&list(&node, Family::Ipv6), vip6).is_empty());
}
