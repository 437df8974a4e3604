//! Traffic from outside the node on a real kernel, over both iptables backends and both
//! families: NodePorts (node address, a secondary address, 127.0.0.1 from the node itself;
//! never `::1`), external IPs, load-balancer IPs behind `loadBalancerSourceRanges`, Services
//! without endpoints (refused at once), and who the backend sees as its peer (masquerading
//! exactly where upstream masquerades).

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;

/// Timeout of a probe that is expected to fail (DROP): short, the lab answers in
/// milliseconds.
const SHORT: Duration = Duration::from_millis(600);

const PORT: u16 = 80;
const TARGET: u16 = 8080;

fn start(backend_kind: &'static str, local_pods: usize, remote_pods: usize) -> Cluster {
    Cluster::start(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods,
            remote_pods,
            ..LabConfig::default()
        },
        ..Options::default()
    })
}

fn node_name(p: &Pod) -> &'static str {
    match p.host {
        PodHost::Node => "node",
        PodHost::Node2 => "node2",
    }
}

/// Ready endpoints, both families, for `pods`.
fn endpoints(pods: &[&Pod]) -> Vec<EndpointDef> {
    pods.iter()
        .flat_map(|p| {
            [
                EndpointDef::ready(p.v4, node_name(p)),
                EndpointDef::ready(p.v6, node_name(p)),
            ]
        })
        .collect()
}

fn v4(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

/// A LoadBalancer Service `default/<name>` with VIPs `lb_ips` and NodePort `node_port`.
fn load_balancer(
    name: &str,
    cluster_ips: &[IpAddr],
    node_port: u16,
    lb_ips: &[IpAddr],
) -> ServiceDef {
    let mut s = ServiceDef::cluster_ip(name, cluster_ips, PORT, TARGET).node_port(node_port);
    s.kind = "LoadBalancer";
    s.lb_ips = lb_ips.to_vec();
    s
}

/// The node's iptables rules, both families, for failure messages.
fn rules(c: &Cluster) -> String {
    let mut out = String::new();
    for v6 in [false, true] {
        for table in ["nat", "filter"] {
            out.push_str(&format!(
                "== {} {table}\n{}\n",
                if v6 { "ip6tables" } else { "iptables" },
                c.save(v6, table)
            ));
        }
    }
    out
}

/// Probes `probe` `n` times from `ns`; asserts every probe was answered, only by backends
/// in `allowed`, and by each of `allowed` at least once. Returns every result.
fn answered_by_all(
    c: &Cluster,
    ns: &Netns,
    probe: &Probe,
    n: usize,
    allowed: &[&str],
) -> Vec<ProbeResult> {
    let p = probe.clone();
    let results: Vec<ProbeResult> = ns
        .enter(move || (0..n).map(|_| p.run_here()).collect())
        .expect("enter namespace");
    let hist = histogram(&results);
    let ok = hist.keys().all(|k| allowed.contains(&k.as_str()))
        && allowed.iter().all(|b| hist.contains_key(*b));
    assert!(
        ok,
        "{} {} → {}: want answers from exactly {allowed:?}, got {hist:?}\n{}",
        c.backend(),
        ns.name(),
        probe.target,
        rules(c)
    );
    results
}

/// Runs `probe` from `ns` once and asserts the outcome, and for a refusal that it came at
/// once (a REJECT, not a timeout nor a retransmission).
fn expect(c: &Cluster, ns: &Netns, probe: Probe, want: &ProbeResult) {
    let p = probe.clone();
    let (got, took) = ns
        .enter(move || {
            let t = Instant::now();
            (p.run_here(), t.elapsed())
        })
        .expect("enter namespace");
    assert_eq!(
        &got,
        want,
        "{} {} → {} (from {:?}): took {took:?}\n{}",
        c.backend(),
        ns.name(),
        probe.target,
        probe.source,
        rules(c)
    );
    if *want == ProbeResult::Refused {
        assert!(
            took < Duration::from_millis(500),
            "{} {} → {}: refused, but only after {took:?}",
            c.backend(),
            ns.name(),
            probe.target
        );
    }
}

/// Runs every probe (with [`SHORT`] as its timeout) at the same time, each from a thread in
/// its namespace: expected drops take their whole timeout, so they are not run in a row.
fn concurrently(probes: &[(&Netns, Probe)]) -> Vec<ProbeResult> {
    let handles: Vec<_> = probes
        .iter()
        .map(|(ns, p)| {
            let p = p.clone().with_timeout(SHORT);
            ns.spawn(move || p.run_here()).expect("enter namespace")
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("probe thread"))
        .collect()
}

/// Asserts the daemon never failed a sync, but for waits on the host-wide xtables lock
/// (other programs on the machine may hold it for seconds; the daemon retries).
fn no_failed_syncs(c: &Cluster) {
    let failed: Vec<_> = c
        .records("sync failed; the next sync will be full")
        .into_iter()
        .filter(|r| {
            !r["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("xtables lock"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{}: failed syncs: {failed:?}",
        c.backend()
    );
}

// ---------------------------------------------------------------------------------------
// 1. NodePorts
// ---------------------------------------------------------------------------------------

/// A NodePort answers on the node's address and on a secondary address from the external
/// client (both families, both endpoints used, TCP and UDP), on 127.0.0.1 from the node
/// itself (the daemon turned `route_localnet` on), and never on `[::1]`.
fn node_ports(backend_kind: &'static str) {
    let mut c = start(backend_kind, 1, 1);
    let (local, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(local, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let secondary = [v4("198.51.100.7"), v4("2001:db8:51::7")];
    for ip in secondary {
        c.lab.add_node_address(ip).expect("secondary address");
    }
    let eps = endpoints(&[local, remote]);
    c.manifests
        .service(
            ServiceDef::cluster_ip("np", &[svc_v4(20), svc_v6(20)], PORT, TARGET).node_port(30080),
        )
        .set_endpoints("np", eps.clone())
        .service(
            ServiceDef::cluster_ip("np-udp", &[svc_v4(22), svc_v6(22)], PORT, TARGET)
                .udp()
                .node_port(30085),
        )
        .set_endpoints("np-udp", eps);
    c.apply();

    let node = &c.lab.node;
    for target in [
        IpAddr::from(node.v4),
        IpAddr::from(node.v6),
        secondary[0],
        secondary[1],
    ] {
        for probe in [
            Probe::tcp(sock(target, 30080)),
            Probe::udp(sock(target, 30085)),
        ] {
            answered_by_all(&c, &c.lab.client, &probe, 40, &["local", "remote"]);
        }
    }
    // Localhost NodePort, IPv4 only, from the node itself.
    answered_by_all(
        &c,
        &c.lab.node,
        &Probe::tcp(sock(v4("127.0.0.1"), 30080)),
        40,
        &["local", "remote"],
    );
    assert_eq!(
        c.lab
            .node
            .read_sysctl("net.ipv4.conf.all.route_localnet")
            .expect("sysctl"),
        "1",
        "localhost NodePorts are on by default: the daemon must set route_localnet"
    );
    // Never on IPv6 loopback: nothing listens on the node, so the node's own stack refuses.
    expect(
        &c,
        &c.lab.node,
        Probe::tcp(sock(v4("::1"), 30080)).with_timeout(SHORT),
        &ProbeResult::Refused,
    );
    no_failed_syncs(&c);
}

#[test]
fn node_ports_nft() {
    node_ports("nft");
}

#[test]
fn node_ports_legacy() {
    node_ports("legacy");
}

/// With `--nodeport-addresses` on the node network: the NodePort answers on the node's
/// address, and on an address of that network given to the node after start-up (node IPs
/// are read at every sync), but not on an address outside it nor on 127.0.0.1 (localhost
/// NodePorts are not in effect, and `route_localnet` stays off); the health-check node port
/// listens on the node's addresses only.
fn node_port_addresses(backend_kind: &'static str) {
    let mut c = Cluster::start(Options {
        backend: backend_kind,
        args: vec!["--nodeport-addresses=192.168.0.0/24,2001:db8::/64".into()],
        lab: LabConfig {
            local_pods: 1,
            remote_pods: 1,
            ..LabConfig::default()
        },
    });
    let (local, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(local, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let outside = [v4("198.51.100.8"), v4("2001:db8:51::8")];
    for ip in outside {
        c.lab.add_node_address(ip).expect("secondary address");
    }
    let inside = [v4("192.168.0.50"), v4("2001:db8::50")];
    c.lab
        .node
        .ip_batch(&[
            format!("addr add {}/24 dev {LAN_IF}", inside[0]),
            format!("addr add {}/64 dev {LAN_IF} nodad", inside[1]),
        ])
        .expect("address on the node network");
    c.lab
        .node
        .wait_ipv6_ready(Duration::from_secs(10))
        .expect("IPv6 ready");
    let mut svc = load_balancer("np", &[svc_v4(23), svc_v6(23)], 30087, &[]);
    svc.external_policy = "Local";
    svc.health_check_node_port = 32001;
    let eps = endpoints(&[local, remote]);
    c.manifests.service(svc).set_endpoints("np", eps);
    c.apply();

    let (client, node) = (&c.lab.client, &c.lab.node);
    for ip in [
        IpAddr::from(node.v4),
        IpAddr::from(node.v6),
        inside[0],
        inside[1],
    ] {
        // eTP Local: the local endpoint only.
        answered_by_all(&c, client, &Probe::tcp(sock(ip, 30087)), 10, &["local"]);
    }
    for ip in outside {
        expect(
            &c,
            client,
            Probe::tcp(sock(ip, 30087)).with_timeout(SHORT),
            &ProbeResult::Refused,
        );
    }
    expect(
        &c,
        node,
        Probe::tcp(sock(v4("127.0.0.1"), 30087)).with_timeout(SHORT),
        &ProbeResult::Refused,
    );
    assert_eq!(
        node.read_sysctl("net.ipv4.conf.all.route_localnet")
            .expect("sysctl"),
        "0",
        "{backend_kind}: localhost NodePorts are not in effect, route_localnet must stay off"
    );

    // The health check: on the node's addresses (after the sync that `apply` waited for).
    for hc in node.socks(32001) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match http_get(client, hc, "/") {
                Ok(r) if r.status == 200 => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{backend_kind} health check {hc}: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for ip in outside {
        let r = http_get(client, sock(ip, 32001), "/");
        assert!(
            r.as_ref().is_err_and(|e| e.contains("refused")),
            "{backend_kind} health check on {ip}, outside --nodeport-addresses: {r:?}"
        );
    }
    no_failed_syncs(&c);
}

#[test]
fn node_port_addresses_nft() {
    node_port_addresses("nft");
}

#[test]
fn node_port_addresses_legacy() {
    node_port_addresses("legacy");
}

// ---------------------------------------------------------------------------------------
// 2. External IPs
// ---------------------------------------------------------------------------------------

/// External IPs, one held by the node and one only routed to it, reached from the external
/// client over both families; eTP Cluster, so the backend sees the node, not the client.
fn external_ips(backend_kind: &'static str) {
    let mut c = start(backend_kind, 1, 1);
    let (local, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(local, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let on_node = [v4("198.51.100.20"), v4("2001:db8:51::20")];
    let routed = [v4("198.51.100.21"), v4("2001:db8:51::21")];
    for ip in on_node {
        c.lab.add_node_address(ip).expect("node address");
    }
    let mut svc = ServiceDef::cluster_ip("ext", &[svc_v4(21), svc_v6(21)], PORT, TARGET);
    svc.external_ips = on_node.iter().chain(&routed).copied().collect();
    let eps = endpoints(&[local, remote]);
    c.manifests.service(svc).set_endpoints("ext", eps);
    c.apply();

    let client = &c.lab.client;
    for ip in on_node.iter().chain(&routed) {
        let results = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(*ip, PORT)),
            40,
            &["local", "remote"],
        );
        for r in &results {
            let peer = r.seen_peer().expect("answered").ip();
            assert_ne!(
                peer,
                client.ip_like(*ip),
                "{backend_kind} external IP {ip}: eTP Cluster must masquerade: {r}"
            );
        }
    }
    // Another port of the external IP is not the Service's.
    expect(
        &c,
        client,
        Probe::tcp(sock(routed[0], PORT + 1)).with_timeout(SHORT),
        &ProbeResult::Timeout,
    );
    no_failed_syncs(&c);
}

#[test]
fn external_ips_nft() {
    external_ips("nft");
}

#[test]
fn external_ips_legacy() {
    external_ips("legacy");
}

// ---------------------------------------------------------------------------------------
// 3. Load-balancer IPs and loadBalancerSourceRanges
// ---------------------------------------------------------------------------------------

/// A load-balancer VIP with source ranges covering the client's "internet" address but not
/// its LAN address: the first is served, the second dropped (a timeout, not a refusal); the
/// node itself, outside the ranges, does not get through either. The Service's NodePort is
/// not subject to the ranges. A second VIP, held by the node, with ranges that hold only the
/// node's primary address: the node reaches it (from the VIP itself as source, which upstream
/// allows whenever a range contains the node's IP), the client does not.
fn lb_source_ranges(backend_kind: &'static str) {
    let mut c = start(backend_kind, 1, 1);
    let (local, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(local, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let vips = [v4("198.51.100.30"), v4("2001:db8:51::30")];
    for vip in vips {
        c.lab
            .route_via_node(ipnet::IpNet::from(vip))
            .expect("route to the VIP");
    }
    let node_vips = [v4("198.51.100.31"), v4("2001:db8:51::31")];
    for vip in node_vips {
        c.lab.add_node_address(vip).expect("VIP on the node");
    }
    let mut svc = load_balancer("lb", &[svc_v4(30), svc_v6(30)], 30081, &vips);
    svc.source_ranges = vec![
        c.lab.config().internet_v4.to_string(),
        c.lab.config().internet_v6.to_string(),
    ];
    let mut node_only = load_balancer("lb-node", &[svc_v4(31), svc_v6(31)], 30086, &node_vips);
    node_only.source_ranges = vec![
        format!("{}/32", c.lab.node.v4),
        format!("{}/128", c.lab.node.v6),
    ];
    let eps = endpoints(&[local, remote]);
    c.manifests
        .service(svc)
        .set_endpoints("lb", eps.clone())
        .service(node_only)
        .set_endpoints("lb-node", eps);
    c.apply();

    let (client, node) = (&c.lab.client, &c.lab.node);
    let mut drops: Vec<(&Netns, Probe)> = Vec::new();
    for (vip, node_vip) in vips.into_iter().zip(node_vips) {
        let allowed = if vip.is_ipv4() {
            IpAddr::from(c.lab.client_internet_v4)
        } else {
            IpAddr::from(c.lab.client_internet_v6)
        };
        let refused = client.ip_like(vip);
        answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(vip, PORT)).with_source_ip(allowed),
            40,
            &["local", "remote"],
        );
        // Expected drops, run together below.
        drops.push((
            &**client,
            Probe::tcp(sock(vip, PORT)).with_source_ip(refused),
        ));
        // The node is outside the ranges too.
        drops.push((&**node, Probe::tcp(sock(vip, PORT))));
        // The NodePort of the same Service takes the refused source.
        answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(node.ip_like(vip), 30081)).with_source_ip(refused),
            40,
            &["local", "remote"],
        );

        // The VIP on the node: the node gets through, from the VIP as its source.
        answered_by_all(
            &c,
            node,
            &Probe::tcp(sock(node_vip, PORT)),
            40,
            &["local", "remote"],
        );
        answered_by_all(
            &c,
            node,
            &Probe::tcp(sock(node_vip, PORT)).with_source_ip(node_vip),
            40,
            &["local", "remote"],
        );
        for src in [refused, allowed] {
            drops.push((
                &**client,
                Probe::tcp(sock(node_vip, PORT)).with_source_ip(src),
            ));
        }
    }
    let results = concurrently(&drops);
    for ((ns, probe), r) in drops.iter().zip(results) {
        // A SYN the node itself sends and drops in OUTPUT may also fail at once (EPERM);
        // never answered, never refused.
        let ok = if ns.name() == c.lab.node.name() {
            !r.is_answered() && r != ProbeResult::Refused
        } else {
            r == ProbeResult::Timeout
        };
        assert!(
            ok,
            "{backend_kind} {} → {} (from {:?}), outside the source ranges: {r}\n{}",
            ns.name(),
            probe.target,
            probe.source,
            rules(&c)
        );
    }
    no_failed_syncs(&c);
}

#[test]
fn lb_source_ranges_nft() {
    lb_source_ranges("nft");
}

#[test]
fn lb_source_ranges_legacy() {
    lb_source_ranges("legacy");
}

// ---------------------------------------------------------------------------------------
// 7. No endpoints
// ---------------------------------------------------------------------------------------

/// A NodePort Service without endpoints: its ClusterIP (from a pod and from the external
/// client) and its NodePort (from the client) are refused at once, both families. So is a
/// Service whose only endpoint is serving but neither ready nor terminating (unusable),
/// although that pod listens. A decoy listener on the node holds the NodePorts, so a refusal
/// can only be kproxy's REJECT (and the ClusterIPs, which nobody holds, would otherwise
/// time out).
fn no_endpoints(backend_kind: &'static str) {
    let mut c = start(backend_kind, 2, 0);
    let node_socks: Vec<_> = [30082, 30088]
        .iter()
        .flat_map(|p| c.lab.node.socks(*p))
        .collect();
    let decoy = Backend::start_tcp(&c.lab.node, "decoy", &node_socks).expect("decoy");
    // The decoy answers while there is no Service.
    for port in [30082, 30088] {
        let r = Probe::tcp(c.lab.node.sock_v4(port)).run(&c.lab.client);
        assert_eq!(r.backend(), Some("decoy"), "{backend_kind}: {r}");
    }
    decoy.reset_counters();
    let unready_pod = &c.lab.local_pods[1];
    let _b = backend(unready_pod, "unready", TARGET);
    let unready: Vec<EndpointDef> = endpoints(&[unready_pod])
        .into_iter()
        .map(|e| EndpointDef {
            ready: false,
            serving: true,
            terminating: false,
            ..e
        })
        .collect();
    c.manifests
        .service(
            ServiceDef::cluster_ip("empty", &[svc_v4(40), svc_v6(40)], PORT, TARGET)
                .node_port(30082),
        )
        .set_endpoints("empty", vec![])
        .service(
            ServiceDef::cluster_ip("unready", &[svc_v4(41), svc_v6(41)], PORT, TARGET)
                .node_port(30088),
        )
        .set_endpoints("unready", unready);
    c.apply();

    let pod = &c.lab.local_pods[0];
    let client = &c.lab.client;
    for (vip, node_port) in [
        (svc_v4(40), 30082),
        (svc_v6(40), 30082),
        (svc_v4(41), 30088),
        (svc_v6(41), 30088),
    ] {
        for ns in [&**pod, &**client] {
            expect(
                &c,
                ns,
                Probe::tcp(sock(vip, PORT)).with_timeout(SHORT),
                &ProbeResult::Refused,
            );
        }
        expect(
            &c,
            client,
            Probe::tcp(sock(c.lab.node.ip_like(vip), node_port)).with_timeout(SHORT),
            &ProbeResult::Refused,
        );
    }
    assert_eq!(
        decoy.tcp_served(),
        0,
        "the NodePorts must be rejected, not served by the node"
    );

    no_failed_syncs(&c);
}

#[test]
fn no_endpoints_nft() {
    no_endpoints("nft");
}

#[test]
fn no_endpoints_legacy() {
    no_endpoints("legacy");
}

// ---------------------------------------------------------------------------------------
// 8. Masquerading
// ---------------------------------------------------------------------------------------

/// The address the node masquerades to towards a pod of `host`, of `family_of`'s family:
/// towards its own pods the address of the pod link (`10.0.1.1`; on IPv6 the link has only
/// `fe80::1`, so the node's `2001:db8::2`), towards node2's pods its node-network address.
fn masqueraded_as(c: &Cluster, host: PodHost, family_of: IpAddr) -> IpAddr {
    match (host, family_of) {
        (PodHost::Node, IpAddr::V4(_)) => c.lab.local_pods[0].gateway_v4.into(),
        _ => c.lab.node.ip_like(family_of),
    }
}

/// Asserts every answer in `results` saw `want(backend name)` as its peer.
fn assert_peers(c: &Cluster, what: &str, results: &[ProbeResult], want: impl Fn(&str) -> IpAddr) {
    for r in results {
        let (name, peer) = (
            r.backend().expect("answered"),
            r.seen_peer().expect("answered"),
        );
        assert_eq!(
            peer.ip(),
            want(name),
            "{} {what}: {name} saw {peer}\n{}",
            c.backend(),
            rules(c)
        );
    }
}

/// Who the backend sees: the node after external → NodePort with eTP Cluster and after
/// external → ClusterIP; the pod itself after pod → ClusterIP; the node after a hairpin
/// (an endpoint reaching itself through its Service; reaching the other endpoint it is
/// not masqueraded); the client itself after external → NodePort with eTP Local.
///
/// `args` are extra daemon flags: another local-traffic detector (the same results, the
/// pods being detected by their interfaces or the Node's pod CIDR), or `--masquerade-all`
/// (then pod → ClusterIP is masqueraded too, but nothing else changes).
fn masquerading(backend_kind: &'static str, args: &[&str]) {
    let masquerade_all = args.contains(&"--masquerade-all");
    let mut c = Cluster::start(Options {
        backend: backend_kind,
        args: args.iter().map(|a| a.to_string()).collect(),
        lab: LabConfig {
            local_pods: 2,
            remote_pods: 1,
            ..LabConfig::default()
        },
    });
    let (ep, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(ep, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let eps = endpoints(&[ep, remote]);
    let mut local_policy =
        ServiceDef::cluster_ip("etp-local", &[svc_v4(51), svc_v6(51)], PORT, TARGET)
            .node_port(30084);
    local_policy.external_policy = "Local";
    c.manifests
        .service(
            ServiceDef::cluster_ip("etp-cluster", &[svc_v4(50), svc_v6(50)], PORT, TARGET)
                .node_port(30083),
        )
        .set_endpoints("etp-cluster", eps.clone())
        .service(local_policy)
        .set_endpoints("etp-local", eps)
        .service(ServiceDef::cluster_ip(
            "local-only",
            &[svc_v4(52), svc_v6(52)],
            PORT,
            TARGET,
        ))
        .set_endpoints("local-only", endpoints(&[ep]));
    // The external client also holds an address in the cluster CIDR but outside the node's
    // pod CIDR, behind no pod interface: only the ClusterCIDR detector takes it for a pod.
    let odd = [v4("10.0.9.9"), v4("fd00:10:9::9")];
    c.lab
        .client
        .ip_batch(&[
            format!("addr add {}/32 dev lo", odd[0]),
            format!("addr add {}/128 dev lo nodad", odd[1]),
        ])
        .expect("client addresses");
    let cluster_cidr_detector = !args.iter().any(|a| a.starts_with("--detect-local-mode"));
    c.apply();
    let (ep, other) = (&c.lab.local_pods[0], &c.lab.local_pods[1]);

    let host_of = |name: &str| {
        if name == "local" {
            PodHost::Node
        } else {
            PodHost::Node2
        }
    };
    let client = &c.lab.client;
    for (vip, vip_local) in [(svc_v4(50), svc_v4(51)), (svc_v6(50), svc_v6(51))] {
        let node_ip = c.lab.node.ip_like(vip);
        let client_ip = client.ip_like(vip);

        // From the client's address in the cluster CIDR to a ClusterIP with a local
        // endpoint (a remote one would answer it directly, bypassing the node): masqueraded
        // unless the detector is ClusterCIDR.
        let src = if vip.is_ipv4() { odd[0] } else { odd[1] };
        let local_only = if vip.is_ipv4() {
            svc_v4(52)
        } else {
            svc_v6(52)
        };
        let r = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(local_only, PORT)).with_source_ip(src),
            10,
            &["local"],
        );
        assert_peers(&c, "client (cluster CIDR source) → ClusterIP", &r, |n| {
            if cluster_cidr_detector && !masquerade_all {
                src
            } else {
                masqueraded_as(&c, host_of(n), vip)
            }
        });

        // External → NodePort, eTP Cluster: masqueraded.
        let r = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(node_ip, 30083)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "client → NodePort (eTP Cluster)", &r, |n| {
            masqueraded_as(&c, host_of(n), vip)
        });

        // External → ClusterIP: the source is outside the cluster CIDR, masqueraded.
        let r = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(vip, PORT)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "client → ClusterIP", &r, |n| {
            masqueraded_as(&c, host_of(n), vip)
        });

        // Pod → ClusterIP: the pod's own address.
        let r = answered_by_all(
            &c,
            other,
            &Probe::tcp(sock(vip, PORT)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "pod → ClusterIP", &r, |n| {
            if masquerade_all {
                masqueraded_as(&c, host_of(n), vip)
            } else {
                other.ip_like(vip)
            }
        });

        // The endpoint through its own Service: masqueraded when it lands on itself
        // (hairpin), not when it lands on the other endpoint.
        let r = answered_by_all(
            &c,
            ep,
            &Probe::tcp(sock(vip, PORT)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "endpoint → its own ClusterIP", &r, |n| {
            if n == "local" || masquerade_all {
                masqueraded_as(&c, host_of(n), vip)
            } else {
                ep.ip_like(vip)
            }
        });

        // External → NodePort, eTP Local: only the local endpoint, and it sees the client.
        let r = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(node_ip, 30084)),
            20,
            &["local"],
        );
        assert_peers(&c, "client → NodePort (eTP Local)", &r, |_| client_ip);
        // A pod to that NodePort is short-circuited to every endpoint, not masqueraded
        // (not even with --masquerade-all, which is about ClusterIPs).
        let r = answered_by_all(
            &c,
            other,
            &Probe::tcp(sock(node_ip, 30084)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "pod → NodePort (eTP Local)", &r, |_| {
            other.ip_like(vip)
        });
        // … and the ClusterIP of that Service still masquerades the client (eTP is for
        // external destinations only).
        let r = answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(vip_local, PORT)),
            40,
            &["local", "remote"],
        );
        assert_peers(&c, "client → ClusterIP (eTP Local)", &r, |n| {
            masqueraded_as(&c, host_of(n), vip)
        });
    }
    no_failed_syncs(&c);
}

#[test]
fn masquerading_nft() {
    masquerading("nft", &[]);
}

#[test]
fn masquerading_legacy() {
    masquerading("legacy", &[]);
}

const BY_INTERFACE: &[&str] = &[
    "--detect-local-mode=InterfaceNamePrefix",
    "--pod-interface-name-prefix=vpod",
];
const BY_NODE_CIDR: &[&str] = &["--detect-local-mode=NodeCIDR"];

#[test]
fn masquerading_interface_prefix_nft() {
    masquerading("nft", BY_INTERFACE);
}

#[test]
fn masquerading_interface_prefix_legacy() {
    masquerading("legacy", BY_INTERFACE);
}

#[test]
fn masquerading_node_cidr_nft() {
    masquerading("nft", BY_NODE_CIDR);
}

#[test]
fn masquerading_node_cidr_legacy() {
    masquerading("legacy", BY_NODE_CIDR);
}

#[test]
fn masquerade_all_nft() {
    masquerading("nft", &["--masquerade-all"]);
}

#[test]
fn masquerade_all_legacy() {
    masquerading("legacy", &["--masquerade-all"]);
}

// ---------------------------------------------------------------------------------------
// One Service changed step by step
// ---------------------------------------------------------------------------------------

/// What a [`Check`] expects.
enum Want {
    /// Answered every time, by exactly these backends (each at least once), and, if given,
    /// with this peer seen.
    Answered(&'static [&'static str], Option<IpAddr>),
    /// Refused at once.
    Refused,
    /// Dropped.
    Timeout,
}

/// One expectation: `probe` from `ns`.
struct Check<'a> {
    ns: &'a Netns,
    probe: Probe,
    want: Want,
}

fn check<'a>(ns: &'a Netns, probe: Probe, want: Want) -> Check<'a> {
    Check { ns, probe, want }
}

/// Verifies `checks` after `step`: the expected drops all at once, the rest one by one.
fn verify(c: &Cluster, step: &str, checks: &[Check<'_>]) {
    let drops: Vec<(&Netns, Probe)> = checks
        .iter()
        .filter(|k| matches!(k.want, Want::Timeout))
        .map(|k| (k.ns, k.probe.clone()))
        .collect();
    for ((ns, probe), r) in drops.iter().zip(concurrently(&drops)) {
        assert_eq!(
            r,
            ProbeResult::Timeout,
            "{} step {step:?}: {} → {} (from {:?})\n{}",
            c.backend(),
            ns.name(),
            probe.target,
            probe.source,
            rules(c)
        );
    }
    for k in checks {
        match k.want {
            Want::Timeout => {}
            Want::Refused => {
                let p = k.probe.clone().with_timeout(SHORT);
                let (got, took) =
                    k.ns.enter(move || {
                        let t = Instant::now();
                        (p.run_here(), t.elapsed())
                    })
                    .expect("enter namespace");
                assert!(
                    got == ProbeResult::Refused && took < Duration::from_millis(500),
                    "{} step {step:?}: {} → {}: want refused at once, got {got} after \
                     {took:?}\n{}",
                    c.backend(),
                    k.ns.name(),
                    k.probe.target,
                    rules(c)
                );
            }
            Want::Answered(by, peer) => {
                let p = k.probe.clone();
                let results: Vec<ProbeResult> =
                    k.ns.enter(move || (0..30).map(|_| p.run_here()).collect())
                        .expect("enter namespace");
                let hist = histogram(&results);
                let ok = hist.keys().all(|b| by.contains(&b.as_str()))
                    && by.iter().all(|b| hist.contains_key(*b))
                    && peer.is_none_or(|want| {
                        results
                            .iter()
                            .all(|r| r.seen_peer().map(|p| p.ip()) == Some(want))
                    });
                assert!(
                    ok,
                    "{} step {step:?}: {} → {} (from {:?}): want {by:?} (peer {peer:?}), got \
                     {hist:?}; e.g. {}\n{}",
                    c.backend(),
                    k.ns.name(),
                    k.probe.target,
                    k.probe.source,
                    results[0],
                    rules(c)
                );
            }
        }
    }
}

/// One Service taken through every kind of change, with traffic checked after each sync
/// (most of them incremental): a ClusterIP gets a NodePort, an external IP, becomes a
/// LoadBalancer with source ranges, loses them, turns to eTP Local, changes its NodePort,
/// loses its endpoints, gets a remote one back, returns to eTP Cluster with another VIP,
/// and goes away. Both families.
#[allow(clippy::needless_range_loop)] // `f` indexes several per-family arrays
fn service_changes(backend_kind: &'static str) {
    const NP1: u16 = 30100;
    const NP2: u16 = 30101;
    let mut c = start(backend_kind, 2, 1);
    let _b0 = backend(&c.lab.local_pods[0], "local", TARGET);
    let _b1 = backend(&c.lab.remote_pods[0], "remote", TARGET);
    let both = endpoints(&[&c.lab.local_pods[0], &c.lab.remote_pods[0]]);
    let only_remote = endpoints(&[&c.lab.remote_pods[0]]);
    let vip1 = [v4("198.51.100.90"), v4("2001:db8:51::90")];
    let vip2 = [v4("198.51.100.91"), v4("2001:db8:51::91")];
    let ext = [v4("198.51.100.92"), v4("2001:db8:51::92")];
    let cluster_ips = [svc_v4(90), svc_v6(90)];
    let internet = [
        IpAddr::from(c.lab.client_internet_v4),
        IpAddr::from(c.lab.client_internet_v6),
    ];
    let ranges = vec![
        c.lab.config().internet_v4.to_string(),
        c.lab.config().internet_v6.to_string(),
    ];
    const BOTH: &[&str] = &["local", "remote"];
    const LOCAL: &[&str] = &["local"];
    const REMOTE: &[&str] = &["remote"];

    let mut svc = ServiceDef::cluster_ip("web", &cluster_ips, PORT, TARGET);
    // Writes the Service (or removes it) with `eps`, and waits for the sync.
    let step = |c: &mut Cluster, svc: Option<&ServiceDef>, eps: &[EndpointDef]| {
        match svc {
            Some(s) => {
                c.manifests
                    .service(s.clone())
                    .set_endpoints("web", eps.to_vec());
            }
            None => {
                c.manifests.remove("web");
            }
        }
        c.apply();
    };

    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let (client, pod, node) = (&c.lab.client, &c.lab.local_pods[1], &c.lab.node);
        verify(
            &c,
            "ClusterIP",
            &[
                check(
                    pod,
                    Probe::tcp(sock(cluster_ips[f], PORT)),
                    Want::Answered(BOTH, Some(pod.ip_like(cluster_ips[f]))),
                ),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(cluster_ips[f]), NP1)),
                    Want::Refused,
                ),
            ],
        );
    }

    svc = svc.node_port(NP1);
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let (client, node) = (&c.lab.client, &c.lab.node);
        verify(
            &c,
            "NodePort",
            &[check(
                client,
                Probe::tcp(sock(node.ip_like(cluster_ips[f]), NP1)),
                Want::Answered(BOTH, None),
            )],
        );
    }

    svc.external_ips = ext.to_vec();
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let client = &c.lab.client;
        verify(
            &c,
            "external IP",
            &[check(
                client,
                Probe::tcp(sock(ext[f], PORT)),
                Want::Answered(BOTH, None),
            )],
        );
    }

    svc.kind = "LoadBalancer";
    svc.lb_ips = vip1.to_vec();
    svc.source_ranges = ranges.clone();
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let (client, node) = (&c.lab.client, &c.lab.node);
        let lan = client.ip_like(vip1[f]);
        verify(
            &c,
            "LoadBalancer with source ranges",
            &[
                check(
                    client,
                    Probe::tcp(sock(vip1[f], PORT)).with_source_ip(internet[f]),
                    Want::Answered(BOTH, None),
                ),
                check(
                    client,
                    Probe::tcp(sock(vip1[f], PORT)).with_source_ip(lan),
                    Want::Timeout,
                ),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP1)).with_source_ip(lan),
                    Want::Answered(BOTH, None),
                ),
                check(
                    client,
                    Probe::tcp(sock(ext[f], PORT)).with_source_ip(lan),
                    Want::Answered(BOTH, None),
                ),
            ],
        );
    }

    svc.source_ranges = vec![];
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let client = &c.lab.client;
        verify(
            &c,
            "no source ranges",
            &[check(
                client,
                Probe::tcp(sock(vip1[f], PORT)),
                Want::Answered(BOTH, None),
            )],
        );
    }

    svc.external_policy = "Local";
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
        let me = Some(client.ip_like(vip1[f]));
        verify(
            &c,
            "eTP Local",
            &[
                check(
                    client,
                    Probe::tcp(sock(vip1[f], PORT)),
                    Want::Answered(LOCAL, me),
                ),
                check(
                    client,
                    Probe::tcp(sock(ext[f], PORT)),
                    Want::Answered(LOCAL, me),
                ),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP1)),
                    Want::Answered(LOCAL, me),
                ),
                check(
                    pod,
                    Probe::tcp(sock(vip1[f], PORT)),
                    Want::Answered(BOTH, None),
                ),
            ],
        );
    }

    svc.ports[0].node_port = NP2;
    step(&mut c, Some(&svc), &both);
    for f in 0..2 {
        let (client, node) = (&c.lab.client, &c.lab.node);
        let me = Some(client.ip_like(vip1[f]));
        verify(
            &c,
            "NodePort changed",
            &[
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP2)),
                    Want::Answered(LOCAL, me),
                ),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP1)),
                    Want::Refused,
                ),
            ],
        );
    }

    step(&mut c, Some(&svc), &[]);
    for f in 0..2 {
        let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
        verify(
            &c,
            "no endpoints",
            &[
                check(pod, Probe::tcp(sock(cluster_ips[f], PORT)), Want::Refused),
                check(client, Probe::tcp(sock(vip1[f], PORT)), Want::Refused),
                check(client, Probe::tcp(sock(ext[f], PORT)), Want::Refused),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP2)),
                    Want::Refused,
                ),
            ],
        );
    }

    step(&mut c, Some(&svc), &only_remote);
    for f in 0..2 {
        let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
        verify(
            &c,
            "remote endpoint only",
            &[
                check(
                    pod,
                    Probe::tcp(sock(cluster_ips[f], PORT)),
                    Want::Answered(REMOTE, None),
                ),
                check(
                    pod,
                    Probe::tcp(sock(vip1[f], PORT)),
                    Want::Answered(REMOTE, None),
                ),
                check(client, Probe::tcp(sock(vip1[f], PORT)), Want::Timeout),
                check(client, Probe::tcp(sock(ext[f], PORT)), Want::Timeout),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP2)),
                    Want::Timeout,
                ),
            ],
        );
    }

    svc.external_policy = "Cluster";
    svc.lb_ips = vip2.to_vec();
    step(&mut c, Some(&svc), &only_remote);
    for f in 0..2 {
        let (client, node) = (&c.lab.client, &c.lab.node);
        verify(
            &c,
            "eTP Cluster, new VIP",
            &[
                check(
                    client,
                    Probe::tcp(sock(vip2[f], PORT)),
                    Want::Answered(REMOTE, None),
                ),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP2)),
                    Want::Answered(REMOTE, None),
                ),
                check(client, Probe::tcp(sock(vip1[f], PORT)), Want::Timeout),
            ],
        );
    }

    step(&mut c, None, &[]);
    for f in 0..2 {
        let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
        verify(
            &c,
            "deleted",
            &[
                check(pod, Probe::tcp(sock(cluster_ips[f], PORT)), Want::Timeout),
                check(client, Probe::tcp(sock(vip2[f], PORT)), Want::Timeout),
                check(client, Probe::tcp(sock(ext[f], PORT)), Want::Timeout),
                check(
                    client,
                    Probe::tcp(sock(node.ip_like(vip1[f]), NP2)),
                    Want::Refused,
                ),
            ],
        );
    }
    no_failed_syncs(&c);
}

#[test]
fn service_changes_nft() {
    service_changes("nft");
}

#[test]
fn service_changes_legacy() {
    service_changes("legacy");
}

/// The daemon reports every source revision it has applied: twenty changes of one object each
/// (a Service's port), each awaited for at most 5 s. Isolates the bug that breaks
/// `service_changes`: a one-object change is often synced before its `Revision` event
/// reaches the engine, under the previous revision's label, and its own revision is then
/// never logged.
fn single_object_changes_are_reported(backend_kind: &'static str) {
    let mut c = start(backend_kind, 1, 0);
    let mut svc = ServiceDef::cluster_ip("one", &[svc_v4(99), svc_v6(99)], PORT, TARGET);
    for i in 0..20 {
        svc.ports[0].port = 1000 + i;
        c.manifests.service(svc.clone());
        c.apply_within(Duration::from_secs(5));
    }
    // No endpoints: the last port is rejected.
    for vip in [svc_v4(99), svc_v6(99)] {
        expect(
            &c,
            &c.lab.local_pods[0],
            Probe::tcp(sock(vip, 1019)).with_timeout(SHORT),
            &ProbeResult::Refused,
        );
    }
}

#[test]
fn single_object_changes_are_reported_nft() {
    single_object_changes_are_reported("nft");
}

#[test]
fn single_object_changes_are_reported_legacy() {
    single_object_changes_are_reported("legacy");
}
