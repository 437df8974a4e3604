//! Delta syncs against full syncs on a real kernel: forty random changes (Services added,
//! removed and changed: endpoints and their conditions, ports, NodePorts, load balancers,
//! policies, affinity, external IPs), each applied by the daemon as a delta sync, leave the
//! kernel with the same rules as one full sync of the final manifests on a fresh node. And
//! `kproxy --cleanup` removes everything kproxy made and nothing else. Both iptables
//! backends, both families.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::*;

/// Services in the random scenario.
const SERVICES: usize = 6;
/// Random changes applied.
const CHANGES: usize = 40;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP")
}

/// Endpoint addresses the scenario picks from: pods here (`.20`…) and on node2 (nothing
/// needs to run there: only the rules are compared).
fn endpoint_pool() -> Vec<(IpAddr, IpAddr, &'static str)> {
    let mut out = Vec::new();
    for n in 0..6u32 {
        out.push((
            ip(&format!("10.0.1.{}", 20 + n)),
            ip(&format!("fd00:10:1::{}", 20 + n)),
            "node",
        ));
    }
    for n in 0..4u32 {
        out.push((
            ip(&format!("10.0.2.{}", 20 + n)),
            ip(&format!("fd00:10:2::{}", 20 + n)),
            "node2",
        ));
    }
    out
}

fn random_endpoints(rng: &mut Rng) -> Vec<EndpointDef> {
    let mut out = Vec::new();
    for (v4, v6, node) in endpoint_pool() {
        if !rng.one_in(3) {
            continue;
        }
        // Mostly ready; sometimes terminating (serving or not), or not ready at all.
        let (ready, serving, terminating) = match rng.below(6) {
            0 => (false, true, true),
            1 => (false, false, true),
            2 => (false, false, false),
            _ => (true, true, false),
        };
        for addr in [v4, v6] {
            // Now and then one family only.
            if rng.one_in(8) {
                continue;
            }
            out.push(EndpointDef {
                ip: addr,
                node,
                ready,
                serving,
                terminating,
            });
        }
    }
    out
}

/// A random spec for Service `s<i>` (dual-stack ClusterIP `.50+i`).
fn random_service(rng: &mut Rng, i: usize) -> ServiceDef {
    let n = i as u8;
    let mut svc = ServiceDef::cluster_ip(
        &format!("s{i}"),
        &[svc_v4(50 + n), svc_v6(50 + n)],
        80,
        8080,
    );
    if rng.one_in(3) {
        svc.ports.push(PortDef {
            name: "p1".into(),
            protocol: if rng.one_in(2) { "UDP" } else { "TCP" },
            port: 53,
            node_port: 0,
            target_port: 5353,
        });
    }
    svc.ports[0].name = "p0".into();
    match rng.below(3) {
        0 => {}
        1 => set_kind(&mut svc, i, "NodePort"),
        _ => set_kind(&mut svc, i, "LoadBalancer"),
    }
    tweak_policies(rng, &mut svc, i);
    if rng.one_in(4) {
        svc.external_ips = vec![
            ip(&format!("192.0.2.{}", 10 + i)),
            ip(&format!("2001:db8:2::{}", 10 + i)),
        ];
    }
    if rng.one_in(4) {
        svc.affinity_timeout = Some(if rng.one_in(2) { 10800 } else { 60 });
    }
    svc
}

/// Makes `svc` a ClusterIP, NodePort or LoadBalancer Service, with node ports (and
/// load-balancer IPs, source ranges) fixed per Service.
fn set_kind(svc: &mut ServiceDef, i: usize, kind: &'static str) {
    svc.kind = kind;
    let external = kind != "ClusterIP";
    for (k, p) in svc.ports.iter_mut().enumerate() {
        p.node_port = if external {
            30000 + 10 * i as u16 + k as u16
        } else {
            0
        };
    }
    if kind == "LoadBalancer" {
        svc.lb_ips = vec![
            ip(&format!("198.51.100.{}", 1 + i)),
            ip(&format!("2001:db8:51::{}", 1 + i)),
        ];
        if i.is_multiple_of(2) {
            svc.source_ranges = vec!["203.0.113.0/24".into(), "2001:db8:113::/64".into()];
        }
    } else {
        svc.lb_ips.clear();
        svc.source_ranges.clear();
    }
    if !external {
        svc.external_policy = "Cluster";
    }
    svc.health_check_node_port = if kind == "LoadBalancer" && svc.external_policy == "Local" {
        32000 + i as u16
    } else {
        0
    };
}

fn tweak_policies(rng: &mut Rng, svc: &mut ServiceDef, i: usize) {
    svc.internal_policy = if rng.one_in(3) { "Local" } else { "Cluster" };
    svc.external_policy = if svc.kind != "ClusterIP" && rng.one_in(2) {
        "Local"
    } else {
        "Cluster"
    };
    let kind = svc.kind;
    set_kind(svc, i, kind);
}

/// One random change to the manifests; returns what it did.
fn random_change(rng: &mut Rng, m: &mut Manifests) -> String {
    let i = rng.below(SERVICES);
    let name = format!("s{i}");
    let Some(mut svc) = m.services.get(&name).cloned() else {
        let svc = random_service(rng, i);
        let eps = random_endpoints(rng);
        m.service(svc).set_endpoints(&name, eps);
        return format!("add {name}");
    };
    match rng.below(9) {
        0 => {
            m.remove(&name);
            format!("remove {name}")
        }
        1..=3 => {
            m.set_endpoints(&name, random_endpoints(rng));
            format!("endpoints of {name}")
        }
        4 => {
            if svc.ports.len() > 1 {
                svc.ports.truncate(1);
            } else {
                svc.ports.push(PortDef {
                    name: "p1".into(),
                    protocol: if rng.one_in(2) { "UDP" } else { "TCP" },
                    port: 53,
                    node_port: 0,
                    target_port: 5353,
                });
            }
            let kind = svc.kind;
            set_kind(&mut svc, i, kind);
            m.service(svc);
            format!("ports of {name}")
        }
        5 => {
            let kinds = ["ClusterIP", "NodePort", "LoadBalancer"];
            let kind = kinds
                [(kinds.iter().position(|k| *k == svc.kind).unwrap_or(0) + 1 + rng.below(2)) % 3];
            set_kind(&mut svc, i, kind);
            m.service(svc);
            format!("{name} becomes {kind}")
        }
        6 => {
            tweak_policies(rng, &mut svc, i);
            svc.affinity_timeout = match svc.affinity_timeout {
                Some(_) if rng.one_in(2) => None,
                None if rng.one_in(2) => Some(10800),
                other => other,
            };
            m.service(svc);
            format!("policies of {name}")
        }
        7 => {
            svc.external_ips = if svc.external_ips.is_empty() {
                vec![
                    ip(&format!("192.0.2.{}", 10 + i)),
                    ip(&format!("2001:db8:2::{}", 10 + i)),
                ]
            } else {
                vec![]
            };
            m.service(svc);
            format!("external IPs of {name}")
        }
        _ => {
            m.service(random_service(rng, i));
            format!("new spec for {name}")
        }
    }
}

type Snapshot = Vec<((bool, &'static str), SavedTable)>;

fn snapshot(c: &Cluster, tables: &[&'static str]) -> Snapshot {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for &table in tables {
            out.push(((v6, table), SavedTable::parse(&c.save(v6, table))));
        }
    }
    out
}

const LAST_RULE: &str =
    "kubernetes service nodeports; NOTE: this must be the last rule in this chain";

/// The Service port a KUBE-SERVICES rule is for: the first word of its comment.
fn rule_service(rule: &str) -> String {
    rule.split_once("--comment ")
        .map(|(_, c)| {
            c.trim_start_matches('"')
                .split([' ', '"'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn delta_equals_full(backend_kind: &'static str, seed: u64) {
    let opts = Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    };
    let mut c = Cluster::start(opts.clone());
    let mut rng = Rng(seed);
    let mut done = Vec::new();
    for _ in 0..CHANGES {
        let before = c.manifests.services.clone();
        let before_eps = c.manifests.endpoints.clone();
        let what = random_change(&mut rng, &mut c.manifests);
        // A change that changed nothing would not be a new revision.
        if c.manifests.services.len() == before.len()
            && format!("{:?}{:?}", c.manifests.services, c.manifests.endpoints)
                == format!("{before:?}{before_eps:?}")
        {
            continue;
        }
        c.apply();
        done.push(what);
    }
    assert!(done.len() >= 30, "only {} effective changes", done.len());
    c.assert_delta_syncs();
    let tables = ["mangle", "nat", "filter"];
    let delta = snapshot(&c, &tables);

    // The final manifests, in one full sync on a fresh node.
    let mut fresh = Cluster::prepare(opts);
    fresh.manifests = c.manifests.clone();
    fresh.write_manifests();
    fresh.start_daemon();
    let syncs = fresh.syncs();
    assert!(syncs.iter().all(|s| s.1 == "Full"), "{syncs:?}");
    let full = snapshot(&fresh, &tables);

    let context = || {
        format!(
            "{backend_kind}, seed {seed:#x}, changes: {done:?}\nfinal services: {:#?}",
            c.manifests.services.keys().collect::<Vec<_>>()
        )
    };
    for (((v6, table), d), (_, f)) in delta.iter().zip(&full) {
        let fam = if *v6 { "IPv6" } else { "IPv4" };
        if let Some(diff) = table_differences(d, f, is_top_level_chain) {
            panic!(
                "{fam} {table}: after delta syncs (first) vs one full sync (second):\n{diff}\n{}",
                context()
            );
        }
        if *table == "nat" {
            // The last KUBE-SERVICES rule stays last.
            for (what, t) in [("delta", d), ("full", f)] {
                let last = t.chain("KUBE-SERVICES").last().cloned().unwrap_or_default();
                assert!(
                    last.contains(LAST_RULE),
                    "{fam} {what}: last KUBE-SERVICES rule is {last:?}\n{}",
                    context()
                );
            }
            // Each Service port's rules keep their relative order.
            let by_service = |t: &SavedTable| {
                let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in t.chain("KUBE-SERVICES") {
                    m.entry(rule_service(r)).or_default().push(r.clone());
                }
                m
            };
            assert_eq!(
                by_service(d),
                by_service(f),
                "{fam}: per-Service order in KUBE-SERVICES\n{}",
                context()
            );
            // The scenario was rich: the final state has per-service chains of each kind.
            let kinds: Vec<&str> = ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"]
                .into_iter()
                .filter(|k| !d.chains.keys().any(|c| c.starts_with(k)))
                .collect();
            assert!(
                kinds.is_empty(),
                "{fam}: no {kinds:?} chains\n{}",
                context()
            );
        }
    }
}

#[test]
fn delta_syncs_equal_a_full_sync_nft() {
    delta_equals_full("nft", 0x0de1_7a01);
}

#[test]
fn delta_syncs_equal_a_full_sync_legacy() {
    delta_equals_full("legacy", 0x0de1_7a02);
}

/// What is on the node before kproxy: kubelet's canaries and hint, a user's chains with
/// rules and jumps to them from built-in chains.
fn foreign_rules(v6: bool) -> String {
    let user = if v6 {
        "2001:db8:ffff::1/128"
    } else {
        "192.0.2.1/32"
    };
    format!(
        "*mangle\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-IPTABLES-HINT - [0:0]\n\
         :MY-CHAIN - [0:0]\n\
         -A MY-CHAIN -s {user} -j MARK --set-xmark 0x1/0x1\n\
         -A PREROUTING -j MY-CHAIN\n\
         COMMIT\n\
         *nat\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :MY-CHAIN - [0:0]\n\
         -A MY-CHAIN -s {user} -j RETURN\n\
         -A PREROUTING -j MY-CHAIN\n\
         -A POSTROUTING -j MY-CHAIN\n\
         COMMIT\n\
         *filter\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :MY-CHAIN - [0:0]\n\
         -A MY-CHAIN -s {user} -j DROP\n\
         -A INPUT -j MY-CHAIN\n\
         -A FORWARD -j MY-CHAIN\n\
         -A OUTPUT -j MY-CHAIN\n\
         COMMIT\n"
    )
}

/// After the daemon ran with many kinds of Services, `kproxy --cleanup` leaves the node as
/// it was before, but for kubelet's shared KUBE-FIREWALL chain and its jumps (spec §5.8);
/// Services stop working.
fn cleanup(backend_kind: &'static str) {
    let mut c = Cluster::prepare(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    });
    for v6 in [false, true] {
        c.restore(v6, &foreign_rules(v6));
    }
    let tables = ["mangle", "nat", "filter"];
    let baseline = snapshot(&c, &tables);
    c.start_daemon();
    let pod = c.lab.new_pod(PodHost::Node).expect("pod");
    let client = c.lab.new_pod(PodHost::Node).expect("pod");
    let _b = backend(&pod, "b0", 8080);
    let eps = || {
        let mut e = pod_endpoints(&[&pod]);
        e.push(EndpointDef::ready(ip("10.0.2.20"), "node2"));
        e.push(EndpointDef::ready(ip("fd00:10:2::20"), "node2"));
        e
    };
    let mut m = c.manifests.clone();
    let mut rng = Rng(0xc1ea_0001);
    for i in 0..SERVICES {
        let mut svc = random_service(&mut rng, i);
        let kind = ["ClusterIP", "NodePort", "LoadBalancer"][i % 3];
        set_kind(&mut svc, i, kind);
        if i == 2 {
            svc.external_policy = "Local";
            set_kind(&mut svc, i, kind);
        }
        let name = svc.name.clone();
        m.service(svc);
        m.set_endpoints(&name, if i == 5 { vec![] } else { eps() });
    }
    // And one Service whose only endpoint runs: traffic to check.
    m.service(ServiceDef::cluster_ip(
        "real",
        &[svc_v4(60), svc_v6(60)],
        80,
        8080,
    ))
    .set_endpoints("real", pod_endpoints(&[&pod]));
    c.manifests = m;
    c.apply();
    let vips = [svc_v4(60), svc_v6(60)];
    for vip in vips {
        let r = Probe::tcp(sock(vip, 80)).run(&client);
        assert_eq!(
            r.backend(),
            Some("b0"),
            "{backend_kind}: before cleanup: {r}"
        );
    }
    let ran = snapshot(&c, &tables);
    for ((v6, table), t) in &ran {
        if *table == "nat" {
            assert!(
                [
                    "KUBE-SVC-",
                    "KUBE-SEP-",
                    "KUBE-EXT-",
                    "KUBE-FW-",
                    "KUBE-SVL-"
                ]
                .iter()
                .all(|k| t.chains.keys().any(|c| c.starts_with(k))),
                "v6={v6}: a rich ruleset: {:?}",
                t.chains.keys()
            );
        }
    }
    c.stop_daemon();

    let out = c
        .lab
        .node
        .command(env!("CARGO_BIN_EXE_kproxy"))
        .args(["--cleanup", &format!("--iptables-backend={backend_kind}")])
        .output()
        .expect("kproxy --cleanup");
    assert!(
        out.status.success(),
        "kproxy --cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = snapshot(&c, &tables);
    for (((v6, table), was), (_, mut now)) in baseline.iter().zip(after) {
        let fam = if *v6 { "IPv6" } else { "IPv4" };
        if *table == "filter" {
            // Kubelet's, shared: kept (and, on IPv4 with localhost NodePorts, its rule).
            assert!(
                now.chains.contains_key("KUBE-FIREWALL"),
                "{fam}: KUBE-FIREWALL kept"
            );
            now.chains.remove("KUBE-FIREWALL");
            now.rules.remove("KUBE-FIREWALL");
            for builtin in ["INPUT", "OUTPUT"] {
                let rules = now.rules.entry(builtin.into()).or_default();
                let n = rules.len();
                rules.retain(|r| r != "-j KUBE-FIREWALL");
                assert_eq!(n - rules.len(), 1, "{fam}: {builtin} → KUBE-FIREWALL kept");
            }
        }
        if let Some(d) = table_differences(was, &now, |_| false) {
            panic!(
                "{backend_kind} {fam} {table}: before the daemon (first) vs after --cleanup \
                 (second):\n{d}\nwhile running:\n{:?}",
                ran.iter()
                    .find(|(k, _)| k == &(*v6, *table))
                    .map(|(_, t)| t)
            );
        }
    }
    // The Service is gone from the kernel: its address leads nowhere.
    for vip in vips {
        let r = Probe::tcp(sock(vip, 80))
            .with_timeout(Duration::from_millis(500))
            .run(&client);
        assert_eq!(
            r,
            ProbeResult::Timeout,
            "{backend_kind} {vip}: after cleanup"
        );
    }
}

#[test]
fn cleanup_removes_only_kproxys_rules_nft() {
    cleanup("nft");
}

#[test]
fn cleanup_removes_only_kproxys_rules_legacy() {
    cleanup("legacy");
}
