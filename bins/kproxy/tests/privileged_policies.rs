//! Traffic policies and session affinity on a real kernel, over both iptables backends and
//! both families: `externalTrafficPolicy: Local` (local endpoints only for external
//! traffic, the client's address preserved, pods and the node short-circuited to every
//! endpoint, the health-check node port), `internalTrafficPolicy: Local` (local endpoints
//! only, DROP without one) and `sessionAffinity: ClientIP`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;

/// Timeout of a probe that is expected to fail (DROP).
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

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address")
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
        "{} {} → {} (from {:?}): want answers from exactly {allowed:?}, got {hist:?}\n{}",
        c.backend(),
        ns.name(),
        probe.target,
        probe.source,
        rules(c)
    );
    results
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

/// Upstream's health-check body for `default/<name>` with `n` local endpoints.
fn health_body(name: &str, n: usize) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"{name}\"\n\t}},\n\t\"localEndpoints\": {n},\n\t\"serviceProxyHealthy\": true\n}}"
    )
}

/// GETs the health check at `target` from the external client until it reports `status`
/// (the daemon updates health checks right after the sync that `apply` waits for), then
/// checks the whole answer.
fn check_health(c: &Cluster, target: SocketAddr, name: &str, status: u16, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        let got = http_get(&c.lab.client, target, "/healthz");
        match got {
            Ok(r) if r.status == status => break r,
            _ if Instant::now() >= deadline => panic!(
                "{} health check {target}: want {status}, got {got:?}\nlog:\n{}",
                c.backend(),
                c.log()
            ),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(resp.body, health_body(name, n), "{} {target}", c.backend());
    let weight = n.to_string();
    assert_eq!(
        resp.header("X-Load-Balancing-Endpoint-Weight"),
        Some(weight.as_str()),
        "{} {target}: {resp:?}",
        c.backend()
    );
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/json"),
        "{resp:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. externalTrafficPolicy: Local
// ---------------------------------------------------------------------------------------

/// A LoadBalancer with eTP Local, an external IP and endpoints on both nodes: the external
/// client reaches only the node's own endpoints (through the VIP, the external IP and the
/// NodePort) and they see its address; a pod and the node itself reach every endpoint. The
/// health-check node port says 200 with two local endpoints.
///
/// Then the local endpoint is serving but terminating (not ready): external traffic falls
/// back to it, while pods and the node use the ready remote one; the health check says 503
/// with no local endpoint (terminating ones do not count). Last, with the endpoint only on
/// node2: 503, external traffic is dropped (a timeout), pods still get through.
fn external_policy_local(backend_kind: &'static str) {
    const NODE_PORT: u16 = 30090;
    const HC_PORT: u16 = 32000;
    let mut c = start(backend_kind, 3, 1);
    let (l0, l1, remote) = (
        &c.lab.local_pods[0],
        &c.lab.local_pods[1],
        &c.lab.remote_pods[0],
    );
    let _b0 = backend(l0, "local0", TARGET);
    let _b1 = backend(l1, "local1", TARGET);
    let _b2 = backend(remote, "remote", TARGET);
    let vips = [ip("198.51.100.50"), ip("2001:db8:51::50")];
    let external = [ip("198.51.100.52"), ip("2001:db8:51::52")];
    let mut svc =
        ServiceDef::cluster_ip("lb", &[svc_v4(50), svc_v6(50)], PORT, TARGET).node_port(NODE_PORT);
    svc.kind = "LoadBalancer";
    svc.lb_ips = vips.to_vec();
    svc.external_ips = external.to_vec();
    svc.external_policy = "Local";
    svc.health_check_node_port = HC_PORT;
    let eps = endpoints(&[l0, l1, remote]);
    c.manifests.service(svc).set_endpoints("lb", eps);
    c.apply();

    // Every external destination of the Service, both families.
    let targets: Vec<SocketAddr> = vips
        .iter()
        .zip(&external)
        .flat_map(|(vip, ext)| {
            [
                sock(*vip, PORT),
                sock(*ext, PORT),
                sock(c.lab.node.ip_like(*vip), NODE_PORT),
            ]
        })
        .collect();
    let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[2]);
    for &target in &targets {
        let client_ip = client.ip_like(target.ip());
        let results = answered_by_all(&c, client, &Probe::tcp(target), 60, &["local0", "local1"]);
        for r in &results {
            assert_eq!(
                r.seen_peer().map(|p| p.ip()),
                Some(client_ip),
                "{backend_kind} client → {target}: eTP Local keeps the client's address"
            );
        }
        // Pods (by the cluster CIDR) and the node itself (a local source) are
        // short-circuited to every endpoint.
        for ns in [&**pod, &**node] {
            answered_by_all(
                &c,
                ns,
                &Probe::tcp(target),
                60,
                &["local0", "local1", "remote"],
            );
        }
    }
    for hc in node.socks(HC_PORT) {
        check_health(&c, hc, "lb", 200, 2);
    }

    // The local endpoint is terminating (still serving), the remote one ready.
    let mut eps = endpoints(&[&c.lab.local_pods[0], &c.lab.remote_pods[0]]);
    for e in &mut eps {
        if e.node == "node" {
            e.ready = false;
            e.terminating = true;
        }
    }
    c.manifests.set_endpoints("lb", eps);
    c.apply();
    let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[2]);
    for hc in node.socks(HC_PORT) {
        check_health(&c, hc, "lb", 503, 0);
    }
    for &target in &targets {
        let results = answered_by_all(&c, client, &Probe::tcp(target), 10, &["local0"]);
        for r in &results {
            assert_eq!(
                r.seen_peer().map(|p| p.ip()),
                Some(client.ip_like(target.ip())),
                "{backend_kind} client → {target}: eTP Local keeps the client's address"
            );
        }
        for ns in [&**pod, &**node] {
            answered_by_all(&c, ns, &Probe::tcp(target), 10, &["remote"]);
        }
    }

    // No local endpoint left.
    let eps = endpoints(&[&c.lab.remote_pods[0]]);
    c.manifests.set_endpoints("lb", eps);
    c.apply();
    let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[2]);
    for hc in node.socks(HC_PORT) {
        check_health(&c, hc, "lb", 503, 0);
    }
    let drops: Vec<(&Netns, Probe)> = targets
        .iter()
        .map(|t| (&**client, Probe::tcp(*t)))
        .collect();
    for ((_, probe), r) in drops.iter().zip(concurrently(&drops)) {
        assert_eq!(
            r,
            ProbeResult::Timeout,
            "{backend_kind} client → {}: eTP Local without local endpoints drops\n{}",
            probe.target,
            rules(&c)
        );
    }
    for &target in &targets {
        for ns in [&**pod, &**node] {
            answered_by_all(&c, ns, &Probe::tcp(target), 5, &["remote"]);
        }
    }
    no_failed_syncs(&c);
}

/// Waits (up to 5 s, health checks follow the sync) until nothing listens on `target`.
fn wait_refused(c: &Cluster, target: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = http_get(&c.lab.client, target, "/healthz");
        if got.as_ref().is_err_and(|e| e.contains("refused")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} {target}: want no health check, got {got:?}",
            c.backend()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `healthCheckNodePort` counts only on a LoadBalancer with eTP Local: on a NodePort
/// Service with eTP Local and on a LoadBalancer with eTP Cluster nothing listens (the
/// client is refused), while the LoadBalancer with eTP Local next to them answers.
fn health_check_only_for_local_load_balancers(backend_kind: &'static str) {
    let mut c = start(backend_kind, 1, 0);
    let eps = endpoints(&[&c.lab.local_pods[0]]);
    let mut np_local = ServiceDef::cluster_ip("np-local", &[svc_v4(80), svc_v6(80)], PORT, TARGET)
        .node_port(30092);
    np_local.external_policy = "Local";
    np_local.health_check_node_port = 32002;
    let mut lb_cluster =
        ServiceDef::cluster_ip("lb-cluster", &[svc_v4(81), svc_v6(81)], PORT, TARGET)
            .node_port(30093);
    lb_cluster.kind = "LoadBalancer";
    lb_cluster.health_check_node_port = 32003;
    let mut lb_local = lb_cluster.clone();
    lb_local.name = "lb-local".into();
    lb_local.cluster_ips = vec![svc_v4(82), svc_v6(82)];
    lb_local.ports[0].node_port = 30094;
    lb_local.external_policy = "Local";
    lb_local.health_check_node_port = 32004;
    c.manifests
        .service(np_local)
        .set_endpoints("np-local", eps.clone())
        .service(lb_cluster)
        .set_endpoints("lb-cluster", eps.clone())
        .service(lb_local)
        .set_endpoints("lb-local", eps);
    c.apply();
    for hc in c.lab.node.socks(32004) {
        check_health(&c, hc, "lb-local", 200, 1);
    }
    // The health checks of a sync open together: with lb-local's open, the others would be.
    for port in [32002, 32003] {
        for hc in c.lab.node.socks(port) {
            let got = http_get(&c.lab.client, hc, "/healthz");
            assert!(
                got.as_ref().is_err_and(|e| e.contains("refused")),
                "{backend_kind} {hc}: want no health check, got {got:?}"
            );
        }
    }
    no_failed_syncs(&c);
}

#[test]
fn health_check_only_for_local_load_balancers_nft() {
    health_check_only_for_local_load_balancers("nft");
}

#[test]
fn health_check_only_for_local_load_balancers_legacy() {
    health_check_only_for_local_load_balancers("legacy");
}

/// A health-check node port closes when its Service goes away.
fn health_check_closes_with_its_service(backend_kind: &'static str) {
    const HC_PORT: u16 = 32005;
    let mut c = start(backend_kind, 1, 0);
    let mut svc =
        ServiceDef::cluster_ip("lb", &[svc_v4(83), svc_v6(83)], PORT, TARGET).node_port(30095);
    svc.kind = "LoadBalancer";
    svc.external_policy = "Local";
    svc.health_check_node_port = HC_PORT;
    let eps = endpoints(&[&c.lab.local_pods[0]]);
    c.manifests.service(svc).set_endpoints("lb", eps);
    c.apply();
    for hc in c.lab.node.socks(HC_PORT) {
        check_health(&c, hc, "lb", 200, 1);
    }
    c.manifests.remove("lb");
    c.apply();
    for hc in c.lab.node.socks(HC_PORT) {
        wait_refused(&c, hc);
    }
    no_failed_syncs(&c);
}

#[test]
fn health_check_closes_with_its_service_nft() {
    health_check_closes_with_its_service("nft");
}

#[test]
fn health_check_closes_with_its_service_legacy() {
    health_check_closes_with_its_service("legacy");
}

#[test]
fn external_policy_local_nft() {
    external_policy_local("nft");
}

#[test]
fn external_policy_local_legacy() {
    external_policy_local("legacy");
}

// ---------------------------------------------------------------------------------------
// 5. internalTrafficPolicy: Local
// ---------------------------------------------------------------------------------------

/// A NodePort Service with iTP Local and endpoints on both nodes: a pod and the node reach
/// only the local endpoint through the ClusterIP; the external client still reaches both
/// through the NodePort. With the endpoint only on node2, the ClusterIP drops (a timeout,
/// not a refusal), for the pod and the node, and the NodePort still works.
fn internal_policy_local(backend_kind: &'static str) {
    const NODE_PORT: u16 = 30091;
    let mut c = start(backend_kind, 2, 1);
    let (local, remote) = (&c.lab.local_pods[0], &c.lab.remote_pods[0]);
    let _b0 = backend(local, "local", TARGET);
    let _b1 = backend(remote, "remote", TARGET);
    let mut svc =
        ServiceDef::cluster_ip("itp", &[svc_v4(60), svc_v6(60)], PORT, TARGET).node_port(NODE_PORT);
    svc.internal_policy = "Local";
    let eps = endpoints(&[local, remote]);
    c.manifests.service(svc).set_endpoints("itp", eps);
    c.apply();

    let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
    for vip in [svc_v4(60), svc_v6(60)] {
        for ns in [&**pod, &**node] {
            answered_by_all(&c, ns, &Probe::tcp(sock(vip, PORT)), 40, &["local"]);
        }
        answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(node.ip_like(vip), NODE_PORT)),
            40,
            &["local", "remote"],
        );
    }

    let eps = endpoints(&[&c.lab.remote_pods[0]]);
    c.manifests.set_endpoints("itp", eps);
    c.apply();
    let (client, node, pod) = (&c.lab.client, &c.lab.node, &c.lab.local_pods[1]);
    let drops: Vec<(&Netns, Probe)> = [svc_v4(60), svc_v6(60)]
        .into_iter()
        .flat_map(|vip| {
            [
                (&**pod, Probe::tcp(sock(vip, PORT))),
                (&**node, Probe::tcp(sock(vip, PORT))),
            ]
        })
        .collect();
    for ((ns, probe), r) in drops.iter().zip(concurrently(&drops)) {
        // The node's own SYN, dropped in OUTPUT, may also fail at once (EPERM).
        let ok = if ns.name() == node.name() {
            !r.is_answered() && r != ProbeResult::Refused
        } else {
            r == ProbeResult::Timeout
        };
        assert!(
            ok,
            "{backend_kind} {} → {}: iTP Local without local endpoints drops: {r}\n{}",
            ns.name(),
            probe.target,
            rules(&c)
        );
    }
    for vip in [svc_v4(60), svc_v6(60)] {
        answered_by_all(
            &c,
            client,
            &Probe::tcp(sock(node.ip_like(vip), NODE_PORT)),
            5,
            &["remote"],
        );
    }
    no_failed_syncs(&c);
}

#[test]
fn internal_policy_local_nft() {
    internal_policy_local("nft");
}

#[test]
fn internal_policy_local_legacy() {
    internal_policy_local("legacy");
}

// ---------------------------------------------------------------------------------------
// 6. sessionAffinity: ClientIP
// ---------------------------------------------------------------------------------------

/// Extra source addresses of the external client (in its "internet" network, which both
/// nodes route to it).
const EXTRA_CLIENTS: u8 = 12;

/// A ClusterIP Service with ClientIP affinity and three endpoints: each client (a pod, and
/// the external client from twelve source addresses) lands on one backend for 20
/// connections in a row; over thirteen clients more than one backend is used (all on one
/// would happen with probability 3 · 3⁻¹³). The same Service without affinity spreads one
/// client over all three. When the pod's backend leaves, its clients stick to another one,
/// and every other client keeps its backend across the sync (the `recent` lists survive).
/// With eTP Local behind a NodePort, each external source sticks to a local endpoint.
fn client_ip_affinity(backend_kind: &'static str) {
    let mut c = start(backend_kind, 3, 1);
    let pods = [
        &c.lab.local_pods[0],
        &c.lab.local_pods[1],
        &c.lab.remote_pods[0],
    ];
    let _backends: Vec<Backend> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| backend(p, &format!("b{i}"), TARGET))
        .collect();
    let mut sticky = ServiceDef::cluster_ip("sticky", &[svc_v4(70), svc_v6(70)], PORT, TARGET);
    sticky.affinity_timeout = Some(600);
    let eps = endpoints(&pods);
    c.manifests
        .service(sticky)
        .set_endpoints("sticky", eps.clone())
        .service(ServiceDef::cluster_ip(
            "loose",
            &[svc_v4(71), svc_v6(71)],
            PORT,
            TARGET,
        ))
        .set_endpoints("loose", eps.clone());
    // The same with eTP Local behind a NodePort: affinity among the local endpoints.
    let mut sticky_local =
        ServiceDef::cluster_ip("sticky-local", &[svc_v4(72), svc_v6(72)], PORT, TARGET)
            .node_port(30096);
    sticky_local.affinity_timeout = Some(600);
    sticky_local.external_policy = "Local";
    c.manifests
        .service(sticky_local)
        .set_endpoints("sticky-local", eps);
    let cfg = c.lab.config().clone();
    // Host `i` of the client's internet networks, of `family_of`'s family.
    let extra = |i: u8, family_of: IpAddr| -> IpAddr {
        match family_of {
            IpAddr::V4(_) => {
                std::net::Ipv4Addr::from(u32::from(cfg.internet_v4.network()) + u32::from(i)).into()
            }
            IpAddr::V6(_) => {
                std::net::Ipv6Addr::from(u128::from(cfg.internet_v6.network()) + u128::from(i))
                    .into()
            }
        }
    };
    let mut cmds = Vec::new();
    for i in 1..=EXTRA_CLIENTS {
        cmds.push(format!("addr add {}/32 dev lo", extra(i, svc_v4(0))));
        cmds.push(format!("addr add {}/128 dev lo nodad", extra(i, svc_v6(0))));
    }
    c.lab.client.ip_batch(&cmds).expect("client addresses");
    c.apply();

    let all = ["b0", "b1", "b2"];
    // The clients: (namespace, source address), the pod first.
    let sources = |c: &Cluster, vip: IpAddr| -> Vec<(String, Option<IpAddr>)> {
        let mut v = vec![(c.lab.local_pods[2].name().to_owned(), None)];
        for i in 1..=EXTRA_CLIENTS {
            v.push((c.lab.client.name().to_owned(), Some(extra(i, vip))));
        }
        v
    };
    // Where each client lands, 20 connections in a row; asserts it is one backend.
    let land = |c: &Cluster, vip: IpAddr, candidates: &[&str]| -> Vec<String> {
        let namespaces: [&Netns; 2] = [&c.lab.local_pods[2], &c.lab.client];
        sources(c, vip)
            .into_iter()
            .map(|(ns_name, src)| {
                let ns = *namespaces
                    .iter()
                    .find(|n| n.name() == ns_name)
                    .expect("known namespace");
                let mut probe = Probe::tcp(sock(vip, PORT));
                probe.source = src.map(|ip| SocketAddr::new(ip, 0));
                let results: Vec<ProbeResult> = ns
                    .enter(move || (0..20).map(|_| probe.run_here()).collect())
                    .expect("enter namespace");
                let hist = histogram(&results);
                assert!(
                    hist.len() == 1 && hist.keys().all(|k| candidates.contains(&k.as_str())),
                    "{} {ns_name} (from {src:?}) → {vip}: want one of {candidates:?} for every \
                     connection, got {hist:?}\n{}",
                    c.backend(),
                    rules(c)
                );
                hist.into_keys().next().expect("one key")
            })
            .collect()
    };

    let mut before = Vec::new();
    for (vip, loose) in [(svc_v4(70), svc_v4(71)), (svc_v6(70), svc_v6(71))] {
        let landed = land(&c, vip, &all);
        let distinct: std::collections::BTreeSet<_> = landed.iter().collect();
        assert!(
            distinct.len() > 1,
            "{backend_kind} {vip}: {} clients all landed on {distinct:?}",
            landed.len()
        );
        before.push((vip, landed));
        // Without affinity the same client is spread.
        answered_by_all(
            &c,
            &c.lab.local_pods[2],
            &Probe::tcp(sock(loose, PORT)),
            60,
            &all,
        );
    }

    // eTP Local with affinity: each external source sticks to one local endpoint, and the
    // endpoint sees it.
    for family_of in [svc_v4(0), svc_v6(0)] {
        let node_ip = c.lab.node.ip_like(family_of);
        for i in 1..=EXTRA_CLIENTS {
            let src = extra(i, family_of);
            let probe = Probe::tcp(sock(node_ip, 30096)).with_source_ip(src);
            let results: Vec<ProbeResult> = c
                .lab
                .client
                .enter(move || (0..10).map(|_| probe.run_here()).collect())
                .expect("enter namespace");
            let hist = histogram(&results);
            let peers_ok = results
                .iter()
                .all(|r| r.seen_peer().map(|p| p.ip()) == Some(src));
            assert!(
                hist.len() == 1 && ["b0", "b1"].iter().any(|b| hist.contains_key(*b)) && peers_ok,
                "{backend_kind} client from {src} → {node_ip}:30096 (eTP Local, ClientIP): \
                 want one local backend seeing the client, got {hist:?}; e.g. {}\n{}",
                results[0],
                rules(&c)
            );
        }
    }

    // Remove the endpoint the pod landed on (IPv4): its clients move to one other backend
    // each and stick there; every other client keeps its backend across the sync.
    let gone = before[0].1[0].clone();
    let index: usize = gone[1..].parse().expect("bN");
    let kept: Vec<&Pod> = [
        &c.lab.local_pods[0],
        &c.lab.local_pods[1],
        &c.lab.remote_pods[0],
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| *i != index)
    .map(|(_, p)| p)
    .collect();
    let eps = endpoints(&kept);
    c.manifests.set_endpoints("sticky", eps);
    c.apply();
    let remaining: Vec<&str> = all.iter().copied().filter(|b| **b != gone).collect();
    for (vip, landed_before) in &before {
        let landed = land(&c, *vip, &remaining);
        for (i, (was, is)) in landed_before.iter().zip(&landed).enumerate() {
            if *was != gone {
                assert_eq!(
                    was,
                    is,
                    "{backend_kind} {vip}: client {:?} moved after an unrelated endpoint left",
                    sources(&c, *vip)[i]
                );
            }
        }
    }
    no_failed_syncs(&c);
}

#[test]
fn client_ip_affinity_nft() {
    client_ip_affinity("nft");
}

#[test]
fn client_ip_affinity_legacy() {
    client_ip_affinity("legacy");
}
