//! The stale flow rule as a pure function: examples and properties (no root needed).

use std::net::{IpAddr, SocketAddr};

use kproxy_conntrack::{Flow, Protocol, StaleFlowFilter, Tuple};
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const CLIENT: &str = "10.0.0.5";

/// A flow from the client to `dst:dport` answered by `reply_src:5353`.
fn flow(protocol: Protocol, dst: &str, dport: u16, reply_src: &str) -> Flow {
    Flow::new(
        protocol,
        Tuple {
            src: ip(CLIENT),
            dst: ip(dst),
            src_port: 40000,
            dst_port: dport,
        },
        Tuple {
            src: ip(reply_src),
            dst: ip(CLIENT),
            src_port: 5353,
            dst_port: 40000,
        },
    )
}

fn udp(dst: &str, dport: u16, reply_src: &str) -> Flow {
    flow(Protocol::Udp, dst, dport, reply_src)
}

/// A service with ClusterIP 10.96.0.10, external IP 192.0.2.10, load-balancer IP
/// 198.51.100.10, port 53, node port 30053, and the given serving endpoints.
fn dns(endpoints: &[&str]) -> StaleFlowFilter {
    let eps: Vec<IpAddr> = endpoints.iter().map(|e| ip(e)).collect();
    let mut f = StaleFlowFilter::new();
    f.add_service_port(
        &[
            (ip("10.96.0.10"), 53),
            (ip("192.0.2.10"), 53),
            (ip("198.51.100.10"), 53),
        ],
        Some(30053),
        &eps,
    );
    f
}

#[test]
fn flows_to_serving_endpoints_stay() {
    let f = dns(&["10.244.1.2", "10.244.2.2"]);
    for vip in ["10.96.0.10", "192.0.2.10", "198.51.100.10"] {
        assert!(!f.is_stale(&udp(vip, 53, "10.244.1.2")), "{vip}");
        assert!(!f.is_stale(&udp(vip, 53, "10.244.2.2")), "{vip}");
    }
    assert!(!f.is_stale(&udp("172.18.0.2", 30053, "10.244.2.2")));
}

#[test]
fn flows_to_gone_endpoints_are_stale_for_every_frontend() {
    let f = dns(&["10.244.2.2"]);
    for vip in ["10.96.0.10", "192.0.2.10", "198.51.100.10"] {
        assert!(f.is_stale(&udp(vip, 53, "10.244.1.2")), "{vip}");
    }
}

#[test]
fn flows_never_dnated_are_stale() {
    // Created before the rules existed: the reply comes "from the VIP" itself.
    let f = dns(&["10.244.2.2"]);
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.96.0.10")));
}

#[test]
fn the_frontend_port_must_match() {
    let f = dns(&["10.244.2.2"]);
    assert!(!f.is_stale(&udp("10.96.0.10", 54, "10.244.1.2")));
    assert!(!f.is_stale(&udp("10.96.0.11", 53, "10.244.1.2")));
}

#[test]
fn node_ports_match_on_any_destination_ip() {
    let f = dns(&["10.244.2.2"]);
    for node_ip in ["172.18.0.2", "127.0.0.1", "10.96.0.99"] {
        assert!(f.is_stale(&udp(node_ip, 30053, "10.244.1.2")), "{node_ip}");
        assert!(!f.is_stale(&udp(node_ip, 30053, "10.244.2.2")), "{node_ip}");
    }
    assert!(!f.is_stale(&udp("172.18.0.2", 30054, "10.244.1.2")));
}

#[test]
fn tcp_and_other_protocols_are_never_stale() {
    let f = dns(&["10.244.2.2"]);
    for p in [Protocol::Tcp, Protocol::Sctp, Protocol::Other(1)] {
        assert!(!f.is_stale(&flow(p, "10.96.0.10", 53, "10.244.1.2")), "{p}");
        assert!(
            !f.is_stale(&flow(p, "172.18.0.2", 30053, "10.244.1.2")),
            "{p}"
        );
    }
}

#[test]
fn sctp_can_be_reconciled_the_same_way() {
    let mut f = StaleFlowFilter::with_protocol(Protocol::Sctp);
    f.add_service_port(&[(ip("10.96.0.10"), 53)], None, &[ip("10.244.2.2")]);
    assert_eq!(f.protocol(), Protocol::Sctp);
    assert!(f.is_stale(&flow(Protocol::Sctp, "10.96.0.10", 53, "10.244.1.2")));
    assert!(!f.is_stale(&flow(Protocol::Udp, "10.96.0.10", 53, "10.244.1.2")));
}

#[test]
fn services_without_endpoints_lose_all_their_flows() {
    let f = dns(&[]);
    assert!(!f.is_empty());
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.244.1.2")));
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.96.0.10")));
    assert!(f.is_stale(&udp("172.18.0.2", 30053, "10.244.1.2")));
    assert!(!f.is_stale(&flow(Protocol::Tcp, "10.96.0.10", 53, "10.244.1.2")));

    // Upstream skipped them before kubernetes/kubernetes#139629.
    let mut old = StaleFlowFilter::new();
    old.clear_services_without_endpoints(false);
    old.add_service_port(&[(ip("10.96.0.10"), 53)], Some(30053), &[]);
    assert!(old.is_empty());
    assert!(!old.is_stale(&udp("10.96.0.10", 53, "10.244.1.2")));
}

#[test]
fn a_zero_node_port_means_none() {
    let mut f = StaleFlowFilter::new();
    f.add_service_port(&[], Some(0), &[ip("10.244.2.2")]);
    assert!(f.is_empty());
    assert!(!f.is_stale(&udp("172.18.0.2", 0, "10.244.1.2")));
}

#[test]
fn ipv6_and_ipv4_mapped_addresses() {
    let mut f = StaleFlowFilter::new();
    f.add_service_port(&[(ip("fd00:96::10"), 53)], None, &[ip("fd00:244::2")]);
    // An IPv4 service given with mapped addresses matches plain IPv4 flows.
    f.add_service_port(
        &[(ip("::ffff:10.96.0.10"), 53)],
        None,
        &[ip("::ffff:10.244.2.2")],
    );
    assert!(f.is_stale(&udp("fd00:96::10", 53, "fd00:244::1")));
    assert!(!f.is_stale(&udp("fd00:96::10", 53, "fd00:244::2")));
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.244.1.2")));
    assert!(!f.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
}

#[test]
fn a_frontend_claimed_twice_keeps_the_union_of_endpoints() {
    let mut f = StaleFlowFilter::new();
    f.add_service_port(&[(ip("10.96.0.10"), 53)], Some(30053), &[ip("10.244.1.2")]);
    f.add_service_port(&[(ip("10.96.0.10"), 53)], Some(30053), &[ip("10.244.2.2")]);
    assert!(!f.is_stale(&udp("10.96.0.10", 53, "10.244.1.2")));
    assert!(!f.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.244.3.2")));
}

#[test]
fn select_keeps_order_and_an_empty_filter_selects_nothing() {
    let flows = vec![
        udp("10.96.0.10", 53, "10.244.1.2"),
        udp("10.96.0.10", 53, "10.244.2.2"),
        flow(Protocol::Tcp, "10.96.0.10", 53, "10.244.1.2"),
        udp("172.18.0.2", 30053, "10.244.3.2"),
    ];
    let f = dns(&["10.244.2.2"]);
    let stale: Vec<_> = f.select(&flows).collect();
    assert_eq!(stale, vec![&flows[0], &flows[3]]);
    let empty = StaleFlowFilter::default();
    assert!(empty.is_empty());
    assert_eq!(empty.select(&flows).count(), 0);
}

#[test]
fn with_endpoint_ports_a_changed_target_port_is_stale() {
    // Kubernetes 1.33+: the endpoint keeps its IP, the target port moves 5353 -> 5354.
    let ep = |s: &str| -> SocketAddr { s.parse().unwrap() };
    let mut f = StaleFlowFilter::new();
    f.add_service_port_endpoints(
        &[(ip("10.96.0.10"), 53)],
        Some(30053),
        &[ep("10.244.2.2:5354")],
    );
    // `udp()` flows are answered from port 5353.
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
    assert!(f.is_stale(&udp("172.18.0.2", 30053, "10.244.2.2")));
    let mut current = udp("10.96.0.10", 53, "10.244.2.2");
    current.reply.src_port = 5354;
    assert!(!f.is_stale(&current));
    current.original.dst = ip("172.18.0.2");
    current.original.dst_port = 30053;
    assert!(!f.is_stale(&current));

    // Kubernetes 1.32 compared IPs only and kept it.
    let mut old = StaleFlowFilter::new();
    old.add_service_port(&[(ip("10.96.0.10"), 53)], Some(30053), &[ip("10.244.2.2")]);
    assert!(!old.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
}

#[test]
fn endpoints_with_ports_and_without_can_share_a_frontend() {
    let mut f = StaleFlowFilter::new();
    f.add_service_port_endpoints(
        &[(ip("10.96.0.10"), 53)],
        None,
        &["10.244.1.2:5354".parse().unwrap()],
    );
    f.add_service_port(&[(ip("10.96.0.10"), 53)], None, &[ip("10.244.2.2")]);
    assert!(f.is_stale(&udp("10.96.0.10", 53, "10.244.1.2")));
    assert!(!f.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
    // An empty exact list is "no endpoints" like an empty IP list.
    let mut none = StaleFlowFilter::new();
    none.add_service_port_endpoints(&[(ip("10.96.0.10"), 53)], None, &[]);
    assert!(none.is_stale(&udp("10.96.0.10", 53, "10.244.2.2")));
}

// ---- properties ----

/// A small address pool so that generated flows hit services often.
fn pool_ip() -> impl Strategy<Value = IpAddr> {
    prop::sample::select(vec![
        ip("10.96.0.10"),
        ip("10.96.0.11"),
        ip("10.244.1.2"),
        ip("10.244.2.2"),
        ip("10.244.3.2"),
        ip("172.18.0.2"),
        ip("fd00:96::10"),
        ip("fd00:244::2"),
        ip("::ffff:10.244.1.2"),
    ])
}

fn pool_port() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![53u16, 80, 30053, 30080])
}

fn any_protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Udp),
        Just(Protocol::Tcp),
        Just(Protocol::Sctp),
        any::<u8>().prop_map(Protocol::from_number),
    ]
}

prop_compose! {
    fn any_flow()(
        protocol in any_protocol(),
        src in pool_ip(), dst in pool_ip(), rsrc in pool_ip(), rdst in pool_ip(),
        sport in any::<u16>(), dport in pool_port(), rsport in pool_port(), rdport in any::<u16>(),
    ) -> Flow {
        Flow::new(
            protocol,
            Tuple { src, dst, src_port: sport, dst_port: dport },
            Tuple { src: rsrc, dst: rdst, src_port: rsport, dst_port: rdport },
        )
    }
}

/// Serving endpoints, given as IPs (Kubernetes 1.32) or as `IP:port` (1.33+).
#[derive(Debug, Clone)]
enum Eps {
    Ips(Vec<IpAddr>),
    Exact(Vec<SocketAddr>),
}

impl Eps {
    fn is_empty(&self) -> bool {
        match self {
            Eps::Ips(v) => v.is_empty(),
            Eps::Exact(v) => v.is_empty(),
        }
    }

    /// Whether a reply from `src` counts as coming from a serving endpoint.
    fn serves(&self, src: SocketAddr) -> bool {
        let ip = src.ip().to_canonical();
        match self {
            Eps::Ips(v) => v.iter().any(|e| e.to_canonical() == ip),
            Eps::Exact(v) => v
                .iter()
                .any(|e| e.ip().to_canonical() == ip && e.port() == src.port()),
        }
    }

    fn push(&mut self, ip: IpAddr, port: u16) {
        match self {
            Eps::Ips(v) => v.push(ip),
            Eps::Exact(v) => v.push(SocketAddr::new(ip, port)),
        }
    }
}

/// One service port: frontends, node port, serving endpoints.
type Svc = (Vec<(IpAddr, u16)>, Option<u16>, Eps);

fn any_endpoints() -> impl Strategy<Value = Eps> {
    prop_oneof![
        prop::collection::vec(pool_ip(), 0..3).prop_map(Eps::Ips),
        prop::collection::vec((pool_ip(), pool_port()), 0..3).prop_map(|v| {
            Eps::Exact(v.into_iter().map(|(i, p)| SocketAddr::new(i, p)).collect())
        }),
    ]
}

fn any_service() -> impl Strategy<Value = Svc> {
    (
        prop::collection::vec((pool_ip(), pool_port()), 0..3),
        prop::option::of(pool_port()),
        any_endpoints(),
    )
}

fn build(services: &[Svc], protocol: Protocol, clear_empty: bool) -> StaleFlowFilter {
    let mut f = StaleFlowFilter::with_protocol(protocol);
    f.clear_services_without_endpoints(clear_empty);
    for (vips, np, eps) in services {
        match eps {
            Eps::Ips(ips) => f.add_service_port(vips, *np, ips),
            Eps::Exact(eps) => f.add_service_port_endpoints(vips, *np, eps),
        };
    }
    f
}

/// The rule written out naively over the service list (frontends and node ports are
/// unique here, as in a valid cluster).
fn model(services: &[Svc], protocol: Protocol, clear_empty: bool, flow: &Flow) -> bool {
    if flow.protocol != protocol {
        return false;
    }
    let canon = |a: IpAddr| a.to_canonical();
    services.iter().any(|(vips, np, eps)| {
        if eps.is_empty() && !clear_empty {
            return false;
        }
        let targets = vips
            .iter()
            .any(|&(v, p)| canon(v) == canon(flow.original.dst) && p == flow.original.dst_port)
            || (np.is_some_and(|n| n != 0 && n == flow.original.dst_port));
        targets && !eps.serves(flow.reply.src_addr())
    })
}

/// Drops services whose frontends or node port an earlier service already claimed.
fn unique(services: Vec<Svc>) -> Vec<Svc> {
    let mut seen_vips = std::collections::HashSet::new();
    let mut seen_np = std::collections::HashSet::new();
    services
        .into_iter()
        .filter(|(vips, np, _)| {
            let vips_free = vips
                .iter()
                .all(|&(v, p)| !seen_vips.contains(&(v.to_canonical(), p)));
            let distinct = {
                let mut s = std::collections::HashSet::new();
                vips.iter().all(|&(v, p)| s.insert((v.to_canonical(), p)))
            };
            let np_free = np.is_none_or(|n| !seen_np.contains(&n));
            if vips_free && distinct && np_free {
                seen_vips.extend(vips.iter().map(|&(v, p)| (v.to_canonical(), p)));
                seen_np.extend(*np);
                true
            } else {
                false
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn tcp_is_never_selected(
        services in prop::collection::vec(any_service(), 0..5),
        flows in prop::collection::vec(any_flow(), 0..20),
        clear in any::<bool>(),
    ) {
        let f = build(&services, Protocol::Udp, clear);
        for mut fl in flows {
            fl.protocol = Protocol::Tcp;
            prop_assert!(!f.is_stale(&fl));
        }
    }

    #[test]
    fn a_flow_whose_reply_source_serves_every_matching_service_is_kept(
        services in prop::collection::vec(any_service(), 0..5),
        flow in any_flow(),
        clear in any::<bool>(),
    ) {
        let f = build(&services, Protocol::Udp, clear);
        let serves_all = services.iter().all(|(vips, np, eps)| {
            let matches = vips.iter().any(|&(v, p)| {
                v.to_canonical() == flow.original.dst.to_canonical() && p == flow.original.dst_port
            }) || np.is_some_and(|n| n != 0 && n == flow.original.dst_port);
            !matches || eps.serves(flow.reply.src_addr())
        });
        if serves_all {
            prop_assert!(!f.is_stale(&flow), "{flow}");
        }
    }

    #[test]
    fn a_flow_to_no_frontend_and_no_node_port_is_kept(
        services in prop::collection::vec(any_service(), 0..5),
        mut flow in any_flow(),
        clear in any::<bool>(),
    ) {
        let f = build(&services, Protocol::Udp, clear);
        // Port 9 is neither a frontend port nor a node port in the pools.
        flow.original.dst_port = 9;
        prop_assert!(!f.is_stale(&flow));
    }

    #[test]
    fn matches_the_naive_model(
        services in prop::collection::vec(any_service(), 0..6).prop_map(unique),
        flows in prop::collection::vec(any_flow(), 0..30),
        protocol in prop_oneof![Just(Protocol::Udp), Just(Protocol::Sctp)],
        clear in any::<bool>(),
    ) {
        let f = build(&services, protocol, clear);
        for fl in &flows {
            prop_assert_eq!(f.is_stale(fl), model(&services, protocol, clear, fl), "{}", fl);
        }
        let selected: Vec<_> = f.select(&flows).collect();
        let expected: Vec<_> = flows.iter().filter(|fl| model(&services, protocol, clear, fl)).collect();
        prop_assert_eq!(selected, expected);
    }

    #[test]
    fn adding_a_serving_endpoint_never_makes_a_flow_stale(
        services in prop::collection::vec(any_service(), 1..5),
        extra in pool_ip(),
        extra_port in pool_port(),
        flow in any_flow(),
    ) {
        let before = build(&services, Protocol::Udp, true).is_stale(&flow);
        let mut more = services.clone();
        more[0].2.push(extra, extra_port);
        // Only when the service already had endpoints: going from none to one changes
        // "clear everything" into "clear the others".
        if !services[0].2.is_empty() {
            let after = build(&more, Protocol::Udp, true).is_stale(&flow);
            prop_assert!(!after || before);
        }
    }
}
