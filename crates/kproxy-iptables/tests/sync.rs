//! Sync semantics (spec §4.2, §5.2–§5.4): sequences of syncs on one compiler fed by one
//! `ChangeTracker`, applied in order to a simulated kernel (`common::sim`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::arb;
use common::build::*;
use common::names;
use common::sim::SimIptables;
use common::summary::{is_service_chain, summarize};
use kproxy_iptables::{Compiled, Compiler, Config, SyncKind};
use kproxy_model::{
    ChangeTracker, Changes, EndpointSlice, IpFamily, IpMode, LoadBalancerIngress, NodeTopology,
    Protocol, ProxyState, Service, ServiceType, SessionAffinity, TrafficPolicy,
};
use proptest::prelude::*;

const FIXED_NAT: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];
const FIXED_FILTER: [&str; 6] = [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
];

/// One node: the tracker, one compiler fed by it, and the simulated kernel.
struct Node {
    tracker: ChangeTracker,
    compiler: Compiler,
    sim: SimIptables,
    cfg: Config,
}

impl Node {
    fn new(cfg: Config) -> Node {
        Node {
            tracker: ChangeTracker::new(cfg.family, NODE),
            compiler: compiler_with(cfg.clone()),
            sim: SimIptables::new(),
            cfg,
        }
    }

    fn v4() -> Node {
        Node::new(fake_config(IpFamily::V4))
    }

    /// Commits the tracker, compiles with the kernel's nat chains (stale-chain deletion
    /// due), applies the restore input and returns it.
    fn sync(&mut self, kind: SyncKind) -> (Compiled, String) {
        let changes = self.tracker.commit();
        self.sync_changes(kind, &changes, true)
    }

    fn sync_changes(
        &mut self,
        kind: SyncKind,
        changes: &Changes,
        cleanup: bool,
    ) -> (Compiled, String) {
        let existing = self.sim.chain_names("nat");
        let out = sync(
            &mut self.compiler,
            self.tracker.state(),
            kind,
            changes,
            cleanup.then_some(&existing[..]),
        );
        let text = out.restore.to_string();
        self.sim
            .apply(&text)
            .unwrap_or_else(|e| panic!("restore rejected: {e}\n{text}"));
        (out, text)
    }

    /// The kernel must hold exactly what a full sync of the current state writes into an
    /// empty kernel.
    fn assert_converged(&self) {
        let fresh = fresh_tables(&self.cfg, self.tracker.state());
        let (a, b) = (self.sim.normalized(), fresh.normalized());
        assert!(
            a == b,
            "kernel differs from a fresh full sync:\n{}",
            a.diff(&b)
        );
    }
}

fn fresh_tables(cfg: &Config, state: &ProxyState) -> SimIptables {
    let mut c = compiler_with(cfg.clone());
    let text = full(&mut c, state).restore.to_string();
    let mut sim = SimIptables::new();
    sim.apply(&text)
        .expect("a full sync applies to an empty kernel");
    sim
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn owned(s: BTreeSet<&str>) -> BTreeSet<String> {
    s.into_iter().map(str::to_owned).collect()
}

fn three_services(n: &mut Node) {
    for (ns, name, ip, eps) in [
        ("ns1", "svc1", "172.30.0.41", &["10.0.1.1"][..]),
        ("ns2", "svc2", "172.30.0.42", &["10.0.2.1"][..]),
        ("ns3", "svc3", "172.30.0.43", &["10.0.3.1"][..]),
    ] {
        n.tracker
            .update_service(cluster_ip_service(ns, name, ip, 80));
        n.tracker
            .update_endpoint_slice(simple_slice(ns, &format!("{name}-1"), name, 80, eps));
    }
}

#[test]
fn partial_sync_rewrites_only_the_changed_services_chains() {
    let mut n = Node::v4();
    three_services(&mut n);
    let (out, _) = n.sync(SyncKind::Full);
    assert_eq!(out.stats.written_service_ports, 3);

    n.tracker.update_endpoint_slice(simple_slice(
        "ns2",
        "svc2-1",
        "svc2",
        80,
        &["10.0.2.1", "10.0.2.2"],
    ));
    let (out, text) = n.sync(SyncKind::Partial);
    assert!(
        out.stats.incremental,
        "one tracker, one compiler: fast path"
    );
    assert_eq!(out.stats.written_service_ports, 1);
    let s = summarize(&text);
    let svc2 = names::svc("ns2/svc2:p80", "tcp");
    let sep21 = names::sep("ns2/svc2:p80", "tcp", "10.0.2.1:80");
    let sep22 = names::sep("ns2/svc2:p80", "tcp", "10.0.2.2:80");
    let mut want = set(&FIXED_NAT);
    want.extend([svc2.clone(), sep21.clone(), sep22.clone()]);
    assert_eq!(owned(s["nat"].declared()), want, "{text}");
    // Per-service rules only for svc2; KUBE-NODEPORTS has no rules (no NodePorts).
    let mut written = want.clone();
    written.remove("KUBE-NODEPORTS");
    assert_eq!(owned(s["nat"].written()), written, "{text}");
    assert!(s["nat"].deleted.is_empty(), "nothing is stale\n{text}");
    // The top-level chains are complete: every Service keeps its jump (§4.2).
    assert_eq!(s["nat"].rules_of("KUBE-SERVICES").len(), 4, "{text}");
    assert_eq!(owned(s["filter"].declared()), set(&FIXED_FILTER));
    // Unchanged Services' chains are still in the kernel, unchanged.
    for svc in ["ns1/svc1:p80", "ns3/svc3:p80"] {
        assert!(n.sim.has_chain("nat", &names::svc(svc, "tcp")));
    }
    assert_eq!(
        n.sim.rules("nat", &svc2).len(),
        3,
        "masquerade + 2 endpoints"
    );
    n.assert_converged();
}

#[test]
fn partial_sync_deletes_stale_chains_of_the_changed_service() {
    let mut n = Node::v4();
    three_services(&mut n);
    n.tracker.update_endpoint_slice(simple_slice(
        "ns2",
        "svc2-1",
        "svc2",
        80,
        &["10.0.2.1", "10.0.2.2"],
    ));
    n.sync(SyncKind::Full);
    // Scale svc2 down: the chain of 10.0.2.1 is stale.
    n.tracker
        .update_endpoint_slice(simple_slice("ns2", "svc2-1", "svc2", 80, &["10.0.2.2"]));
    let (out, text) = n.sync(SyncKind::Partial);
    let s = summarize(&text);
    let sep21 = names::sep("ns2/svc2:p80", "tcp", "10.0.2.1:80");
    let sep22 = names::sep("ns2/svc2:p80", "tcp", "10.0.2.2:80");
    let svc2 = names::svc("ns2/svc2:p80", "tcp");
    let mut want = set(&FIXED_NAT);
    want.extend([svc2, sep21.clone(), sep22]);
    // The stale chain is declared (flushed) and deleted (§5.3).
    assert_eq!(owned(s["nat"].declared()), want, "{text}");
    assert_eq!(s["nat"].deleted, vec![sep21.clone()], "{text}");
    assert_eq!(out.stats.deleted_chains, 1);
    assert!(!n.sim.has_chain("nat", &sep21));
    n.assert_converged();
}

#[test]
fn deleting_a_service_deletes_every_chain_it_had() {
    let mut n = Node::v4();
    three_services(&mut n);
    let mut lb = mk_service(
        "ns4",
        "lb",
        ServiceType::LoadBalancer,
        "172.30.0.44",
        vec![port("p80", Protocol::Tcp, 80, 30044)],
    );
    lb.external_traffic_policy = TrafficPolicy::Local;
    lb.load_balancer_ingress = vec![LoadBalancerIngress {
        ip: ip("5.5.5.44"),
        ip_mode: IpMode::Vip,
    }];
    lb.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    n.tracker.update_service(lb);
    n.tracker.update_endpoint_slice(mk_slice(
        "ns4",
        "lb-1",
        "lb",
        vec![eport("p80", Protocol::Tcp, 80)],
        vec![ready_ep("10.0.4.1"), local_ep("10.0.4.2")],
    ));
    n.sync(SyncKind::Full);
    let np = "ns4/lb:p80";
    let chains = [
        names::ext(np, "tcp"),
        names::fw(np, "tcp"),
        names::svc(np, "tcp"),
        names::svl(np, "tcp"),
        names::sep(np, "tcp", "10.0.4.1:80"),
        names::sep(np, "tcp", "10.0.4.2:80"),
    ];
    for c in &chains {
        assert!(n.sim.has_chain("nat", c), "{c} after the full sync");
    }
    // The Service goes, its EndpointSlice stays (as in upstream's sync-repeated-3).
    n.tracker.delete_service("ns4", "lb");
    let (_, text) = n.sync(SyncKind::Partial);
    let s = summarize(&text);
    let deleted: BTreeSet<String> = s["nat"].deleted.iter().cloned().collect();
    assert_eq!(deleted, chains.iter().cloned().collect(), "{text}");
    // Only the fixed chains and the stale ones are declared.
    let mut want = set(&FIXED_NAT);
    want.extend(chains.iter().cloned());
    assert_eq!(owned(s["nat"].declared()), want);
    n.assert_converged();
}

#[test]
fn losing_all_endpoints_rejects_and_deletes_the_chains() {
    let mut n = Node::v4();
    three_services(&mut n);
    n.sync(SyncKind::Full);
    n.tracker.delete_endpoint_slice("ns3", "svc3-1");
    let (_, text) = n.sync(SyncKind::Partial);
    let s = summarize(&text);
    let svc3 = names::svc("ns3/svc3:p80", "tcp");
    let sep3 = names::sep("ns3/svc3:p80", "tcp", "10.0.3.1:80");
    assert_eq!(
        s["nat"].deleted.iter().cloned().collect::<BTreeSet<_>>(),
        [svc3, sep3].into_iter().collect()
    );
    assert_eq!(
        s["filter"].rules_of("KUBE-SERVICES"),
        [
            "-A KUBE-SERVICES -m comment --comment \"ns3/svc3:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j REJECT"
        ]
    );
    n.assert_converged();
}

#[test]
fn without_the_chain_list_nothing_is_deleted_until_a_later_cleanup() {
    let mut n = Node::v4();
    three_services(&mut n);
    n.sync(SyncKind::Full);
    n.tracker.delete_service("ns1", "svc1");
    let changes = n.tracker.commit();
    let (_, text) = n.sync_changes(SyncKind::Partial, &changes, false);
    let s = summarize(&text);
    assert!(s["nat"].deleted.is_empty());
    assert!(s["nat"].service_chains().is_empty(), "{text}");
    let svc1 = names::svc("ns1/svc1:p80", "tcp");
    assert!(
        n.sim.has_chain("nat", &svc1),
        "left behind, but unreferenced"
    );
    // The next sync that looks at the kernel's chains cleans up, even with no change.
    let (out, text) = n.sync(SyncKind::Partial);
    assert_eq!(out.stats.deleted_chains, 2, "{text}");
    assert!(!n.sim.has_chain("nat", &svc1));
    n.assert_converged();
}

#[test]
fn stale_chain_deletion_touches_only_per_service_prefixes() {
    let mut n = Node::v4();
    three_services(&mut n);
    n.tracker.commit();
    let active: Vec<String> = vec![
        names::svc("ns1/svc1:p80", "tcp"),
        names::sep("ns1/svc1:p80", "tcp", "10.0.1.1:80"),
        names::svc("ns2/svc2:p80", "tcp"),
    ];
    let mut existing: Vec<String> = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
        "KUBE-MARK-DROP",
        "KUBE-KUBELET-CANARY",
        "KUBE-PROXY-CANARY",
        "KUBE-FIREWALL",
        "KUBE-IPTABLES-HINT",
        "KUBE-NODE-PORT",
        "KUBE-LOAD-BALANCER",
        "KUBE-IPVS-FOO",
        "KUBE-SVCX",
        "KUBE-SEPARATE",
        "KUBE-FWX",
        "kube-svc-lowercase",
        "KUBE-SVC-STALEAAAAAAAAAAAA",
        "KUBE-SVL-STALEAAAAAAAAAAAA",
        "KUBE-EXT-STALEAAAAAAAAAAAA",
        "KUBE-FW-STALEAAAAAAAAAAAA",
        "KUBE-SEP-STALEAAAAAAAAAAAA",
        "KUBE-SEP-X",
        "PREROUTING",
        "OUTPUT",
        "DOCKER",
        "CNI-HOSTPORT-DNAT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    existing.extend(active.iter().cloned());
    for kind in [SyncKind::Full, SyncKind::Partial] {
        let out = sync(
            &mut n.compiler,
            n.tracker.state(),
            kind,
            &Changes::default(),
            Some(&existing),
        );
        let text = out.restore.to_string();
        let s = summarize(&text);
        let deleted: BTreeSet<String> = s["nat"].deleted.iter().cloned().collect();
        assert_eq!(
            deleted,
            set(&[
                "KUBE-SVC-STALEAAAAAAAAAAAA",
                "KUBE-SVL-STALEAAAAAAAAAAAA",
                "KUBE-EXT-STALEAAAAAAAAAAAA",
                "KUBE-FW-STALEAAAAAAAAAAAA",
                "KUBE-SEP-STALEAAAAAAAAAAAA",
                "KUBE-SEP-X",
            ]),
            "{kind:?}\n{text}"
        );
        for d in &deleted {
            assert!(
                s["nat"].declared().contains(d.as_str()),
                "{d} flushed first"
            );
        }
        assert!(s["filter"].deleted.is_empty());
        assert_eq!(out.stats.deleted_chains, 6);
    }
}

#[test]
fn no_op_updates_change_nothing() {
    let mut n = Node::v4();
    three_services(&mut n);
    n.sync(SyncKind::Full);
    // Re-sending identical objects (informer resync) is not a change (§6.3).
    assert!(
        !n.tracker
            .update_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", 80))
    );
    n.tracker
        .update_endpoint_slice(simple_slice("ns1", "svc1-1", "svc1", 80, &["10.0.1.1"]));
    // A change that does not alter the proxied view (another family's address) either.
    let mut svc2 = cluster_ip_service("ns2", "svc2", "172.30.0.42", 80);
    svc2.external_ips = vec![ip("2001:db8::99")];
    n.tracker.update_service(svc2);
    let changes = n.tracker.commit();
    assert!(changes.is_empty(), "{changes:?}");
    let (out, text) = n.sync_changes(SyncKind::Partial, &changes, true);
    assert_eq!(out.stats.written_service_ports, 0);
    assert_eq!(
        owned(summarize(&text)["nat"].declared()),
        set(&FIXED_NAT),
        "{text}"
    );
    n.assert_converged();
}

#[test]
fn every_port_of_a_changed_service_is_rewritten() {
    let mut n = Node::v4();
    n.tracker.update_service(mk_service(
        "ns1",
        "multi",
        ServiceType::ClusterIp,
        "172.30.0.50",
        vec![
            port("http", Protocol::Tcp, 80, 0),
            port("dns", Protocol::Udp, 53, 0),
        ],
    ));
    let slice = |http: &[&str]| {
        mk_slice(
            "ns1",
            "multi-http",
            "multi",
            vec![eport("http", Protocol::Tcp, 8080)],
            http.iter().map(|a| ready_ep(a)).collect(),
        )
    };
    n.tracker.update_endpoint_slice(slice(&["10.0.5.1"]));
    n.tracker.update_endpoint_slice(mk_slice(
        "ns1",
        "multi-dns",
        "multi",
        vec![eport("dns", Protocol::Udp, 5353)],
        vec![ready_ep("10.0.5.9")],
    ));
    three_services(&mut n);
    n.sync(SyncKind::Full);
    // Only the http port's endpoints change; the dns port is rewritten too (§4.2).
    n.tracker
        .update_endpoint_slice(slice(&["10.0.5.1", "10.0.5.2"]));
    let (out, text) = n.sync(SyncKind::Partial);
    assert_eq!(out.stats.written_service_ports, 2);
    let declared = owned(summarize(&text)["nat"].service_chains());
    assert_eq!(
        declared,
        [
            names::svc("ns1/multi:http", "tcp"),
            names::sep("ns1/multi:http", "tcp", "10.0.5.1:8080"),
            names::sep("ns1/multi:http", "tcp", "10.0.5.2:8080"),
            names::svc("ns1/multi:dns", "udp"),
            names::sep("ns1/multi:dns", "udp", "10.0.5.9:5353"),
        ]
        .into_iter()
        .collect(),
        "{text}"
    );
    n.assert_converged();
}

#[test]
fn a_full_sync_after_a_lost_restore_converges() {
    // A failed restore loses the pending changes (§5.2, kubernetes#112604): the next sync
    // must be full, and a full sync repairs the kernel, stale chains included.
    let mut n = Node::v4();
    three_services(&mut n);
    n.sync(SyncKind::Full);
    n.tracker.delete_service("ns2", "svc2");
    n.tracker
        .update_endpoint_slice(simple_slice("ns3", "svc3-1", "svc3", 80, &["10.0.3.7"]));
    let changes = n.tracker.commit();
    // Compiled, but the restore "failed": the kernel never saw it.
    let _lost = sync(
        &mut n.compiler,
        n.tracker.state(),
        SyncKind::Partial,
        &changes,
        None,
    );
    n.tracker
        .update_endpoint_slice(simple_slice("ns1", "svc1-1", "svc1", 80, &["10.0.1.8"]));
    let (_, text) = n.sync(SyncKind::Full);
    let deleted: BTreeSet<String> = summarize(&text)["nat"].deleted.iter().cloned().collect();
    assert!(
        deleted.contains(&names::svc("ns2/svc2:p80", "tcp")),
        "{text}"
    );
    assert!(deleted.contains(&names::sep("ns3/svc3:p80", "tcp", "10.0.3.1:80")));
    n.assert_converged();
}

#[test]
fn topology_change_then_full_sync() {
    let mut cfg = fake_config(IpFamily::V4);
    cfg.node.zone = Some("zone-a".into());
    let mut n = Node::new(cfg);
    n.tracker
        .update_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", 80));
    let mut a = ready_ep("10.0.1.1");
    a.zone_hints = vec!["zone-a".into()];
    let mut b = ready_ep("10.0.1.2");
    b.zone_hints = vec!["zone-b".into()];
    n.tracker.update_endpoint_slice(mk_slice(
        "ns1",
        "svc1-1",
        "svc1",
        vec![eport("p80", Protocol::Tcp, 80)],
        vec![a, b],
    ));
    n.sync(SyncKind::Full);
    let svc1 = names::svc("ns1/svc1:p80", "tcp");
    assert_eq!(
        n.sim.rules("nat", &svc1).len(),
        2,
        "masquerade + the zone-a endpoint"
    );
    // The node moves to zone-b (§5.1: needFullSync).
    let moved = NodeTopology {
        zone: Some("zone-b".into()),
        ..n.cfg.node.clone()
    };
    n.compiler.set_node_topology(moved.clone());
    n.cfg.node = moved;
    let (out, _) = n.sync(SyncKind::Full);
    assert_eq!(out.stats.written_service_ports, 1);
    let last = n.sim.rules("nat", &svc1).last().unwrap().join(" ");
    assert!(
        last.contains(&names::sep("ns1/svc1:p80", "tcp", "10.0.1.2:80")),
        "{last}"
    );
    n.assert_converged();
}

#[test]
fn interface_address_changes_reach_the_final_rules_on_partial_syncs() {
    let mut cfg = fake_config(IpFamily::V4);
    cfg.nodeport_addresses = kproxy_iptables::NodePortAddresses::new(
        IpFamily::V4,
        &["192.168.0.0/16".parse().unwrap()],
        false,
        None,
    );
    let mut n = Node::new(cfg);
    three_services(&mut n);
    n.compiler
        .set_interface_addresses(vec![ip("192.168.0.2"), ip("127.0.0.1")]);
    n.sync(SyncKind::Full);
    let last = |n: &Node| -> Vec<String> {
        n.sim
            .rules("nat", "KUBE-SERVICES")
            .iter()
            .filter(|r| r.iter().any(|a| a.contains("must be the last rule")))
            .map(|r| r.join(" "))
            .collect()
    };
    assert_eq!(last(&n).len(), 1);
    n.compiler
        .set_interface_addresses(vec![ip("192.168.0.2"), ip("192.168.5.5"), ip("127.0.0.1")]);
    n.sync(SyncKind::Partial);
    let rules = last(&n);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules[0].ends_with("-d 192.168.0.2 -j KUBE-NODEPORTS"));
    assert!(rules[1].ends_with("-d 192.168.5.5 -j KUBE-NODEPORTS"));
    // Still the last rules of the chain.
    let all = n.sim.rules("nat", "KUBE-SERVICES");
    assert!(
        all[all.len() - 2..]
            .iter()
            .all(|r| r.join(" ").contains("must be the last rule"))
    );
}

#[test]
fn rule_count_statistics() {
    // §5.7: "iptables_total" counts nat -A lines written plus those left in place for
    // skipped Services; "last" counts the lines actually written.
    let mut n = Node::v4();
    three_services(&mut n);
    let (out, text) = n.sync(SyncKind::Full);
    let s = summarize(&text);
    let full_nat = s["nat"].appends.len();
    assert_eq!(out.stats.nat_rules_written, full_nat);
    assert_eq!(out.stats.nat_rules_total, full_nat);
    assert_eq!(out.stats.filter_rules, s["filter"].appends.len());
    n.tracker.update_endpoint_slice(simple_slice(
        "ns2",
        "svc2-1",
        "svc2",
        80,
        &["10.0.2.1", "10.0.2.2"],
    ));
    let (out, text) = n.sync(SyncKind::Partial);
    let s = summarize(&text);
    assert_eq!(out.stats.nat_rules_written, s["nat"].appends.len());
    let fresh = fresh_tables(&n.cfg, n.tracker.state());
    let total: usize = fresh.tables["nat"].values().map(Vec::len).sum();
    assert_eq!(out.stats.nat_rules_total, total);
    assert_eq!(out.stats.filter_rules, s["filter"].appends.len());
}

#[test]
fn no_local_endpoints_statistics() {
    // §5.7: the number of service ports with a DROP "has no local endpoints" verdict.
    let v = common::rules_vector(&common::fixture("golden/no-local-endpoints.input.yaml"));
    let (cfg, ifaces) = common::config(&v.options);
    let t = common::tracker(cfg.family, NODE, &v.services, &v.endpoint_slices);
    let mut c = Compiler::new(cfg);
    c.set_interface_addresses(ifaces);
    let out = full(&mut c, t.state());
    // iTP Local: c-cl, np-cl, lb-ll; eTP Local: np-lc, lb-lc, lb-ll.
    assert_eq!(out.stats.no_local_endpoints_internal, 3);
    assert_eq!(out.stats.no_local_endpoints_external, 3);
}

// ---- large-cluster mode (§5.4) ----------------------------------------------------------

/// A Service `ns0/filler` with `n` ready remote endpoints.
fn filler(t: &mut ChangeTracker, n: usize) {
    t.update_service(cluster_ip_service("ns0", "filler", "172.30.100.1", 80));
    let eps: Vec<String> = (0..n)
        .map(|i| format!("10.100.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = eps.iter().map(String::as_str).collect();
    t.update_endpoint_slice(simple_slice("ns0", "filler-1", "filler", 80, &refs));
}

/// `ns9/probe`: LoadBalancer, eTP Local, ClientIP affinity 60 s, an external IP, a source
/// range; one remote and one local endpoint.
fn probe() -> (Service, EndpointSlice) {
    let mut s = mk_service(
        "ns9",
        "probe",
        ServiceType::LoadBalancer,
        "172.30.9.9",
        vec![port("p80", Protocol::Tcp, 80, 30099)],
    );
    s.external_traffic_policy = TrafficPolicy::Local;
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    s.external_ips = vec![ip("192.168.99.99")];
    s.load_balancer_ingress = vec![LoadBalancerIngress {
        ip: ip("5.5.9.9"),
        ip_mode: IpMode::Vip,
    }];
    s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    let slice = mk_slice(
        "ns9",
        "probe-1",
        "probe",
        vec![eport("p80", Protocol::Tcp, 80)],
        vec![ready_ep("10.200.0.1"), local_ep("10.200.0.2")],
    );
    (s, slice)
}

/// The probe's per-service chains, written from the spec (§3.3 #12–#17, §3.4), with or
/// without the per-endpoint comments.
fn probe_chains(large: bool) -> Vec<(String, Vec<String>)> {
    let n = "ns9/probe:p80";
    let (svc, svl, ext, fw) = (
        names::svc(n, "tcp"),
        names::svl(n, "tcp"),
        names::ext(n, "tcp"),
        names::fw(n, "tcp"),
    );
    let e1 = "10.200.0.1:80";
    let e2 = "10.200.0.2:80";
    let (s1, s2) = (names::sep(n, "tcp", e1), names::sep(n, "tcp", e2));
    let cm = |ep: &str| {
        if large {
            String::new()
        } else {
            format!(" -m comment --comment \"{n} -> {ep}\"")
        }
    };
    let sc = if large {
        String::new()
    } else {
        format!(" -m comment --comment {n}")
    };
    vec![
        (
            ext.clone(),
            vec![
                format!(
                    "-A {ext} -m comment --comment \"pod traffic for {n} external destinations\" -s 10.0.0.0/8 -j {svc}"
                ),
                format!(
                    "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {n} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
                ),
                format!(
                    "-A {ext} -m comment --comment \"route LOCAL traffic for {n} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
                ),
                format!("-A {ext} -j {svl}"),
            ],
        ),
        (
            fw.clone(),
            vec![
                format!(
                    "-A {fw} -m comment --comment \"{n} loadbalancer IP\" -s 203.0.113.0/24 -j {ext}"
                ),
                format!(
                    "-A {fw} -m comment --comment \"other traffic to {n} will be dropped by KUBE-PROXY-FIREWALL\""
                ),
            ],
        ),
        (
            svc.clone(),
            vec![
                format!(
                    "-A {svc} -m comment --comment \"{n} cluster IP\" -m tcp -p tcp -d 172.30.9.9 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"
                ),
                format!(
                    "-A {svc}{} -m recent --name {s1} --rcheck --seconds 60 --reap -j {s1}",
                    cm(e1)
                ),
                format!(
                    "-A {svc}{} -m recent --name {s2} --rcheck --seconds 60 --reap -j {s2}",
                    cm(e2)
                ),
                format!(
                    "-A {svc}{} -m statistic --mode random --probability 0.5000000000 -j {s1}",
                    cm(e1)
                ),
                format!("-A {svc}{} -j {s2}", cm(e2)),
            ],
        ),
        (
            svl.clone(),
            vec![
                format!(
                    "-A {svl}{} -m recent --name {s2} --rcheck --seconds 60 --reap -j {s2}",
                    cm(e2)
                ),
                format!("-A {svl}{} -j {s2}", cm(e2)),
            ],
        ),
        (
            s1.clone(),
            vec![
                format!("-A {s1}{sc} -s 10.200.0.1 -j KUBE-MARK-MASQ"),
                format!(
                    "-A {s1}{sc} -m recent --name {s1} --set -m tcp -p tcp -j DNAT --to-destination {e1}"
                ),
            ],
        ),
        (
            s2.clone(),
            vec![
                format!("-A {s2}{sc} -s 10.200.0.2 -j KUBE-MARK-MASQ"),
                format!(
                    "-A {s2}{sc} -m recent --name {s2} --set -m tcp -p tcp -j DNAT --to-destination {e2}"
                ),
            ],
        ),
    ]
}

fn assert_probe(text: &str, large: bool) {
    let s = summarize(text);
    for (chain, want) in probe_chains(large) {
        assert_eq!(s["nat"].rules_of(&chain), want, "{chain} (large={large})");
    }
    // Top-level and filter rules keep their comments in any mode.
    for r in s["nat"]
        .rules_of("KUBE-SERVICES")
        .into_iter()
        .chain(s["nat"].rules_of("KUBE-NODEPORTS"))
        .chain(s["filter"].appends.iter().map(|(_, l)| l.as_str()))
    {
        assert!(
            r.contains("--comment") || r.contains("--ctstate INVALID"),
            "{r}"
        );
    }
}

#[test]
fn large_cluster_threshold_is_more_than_1000_endpoints() {
    for (n, large) in [(998, false), (999, true)] {
        // The probe has 2 endpoints: 998 + 2 = 1000 (not large), 999 + 2 = 1001 (large).
        let mut node = Node::v4();
        filler(&mut node.tracker, n);
        let (s, sl) = probe();
        node.tracker.update_service(s);
        node.tracker.update_endpoint_slice(sl);
        let (out, text) = node.sync(SyncKind::Full);
        assert_eq!(out.stats.total_endpoints, n + 2);
        assert_eq!(out.stats.large_cluster, large, "{} endpoints", n + 2);
        assert_eq!(node.compiler.large_cluster_mode(), large);
        assert_probe(&text, large);
    }
}

#[test]
fn large_cluster_counts_every_endpoint_of_existing_service_ports_only() {
    let mut t = ChangeTracker::new(IpFamily::V4, NODE);
    filler(&mut t, 990);
    // 11 unusable endpoints (not ready, not serving) count too: 1001.
    t.update_service(cluster_ip_service("ns1", "dead", "172.30.0.60", 80));
    let mut eps = Vec::new();
    for i in 0..11 {
        let mut e = ready_ep(&format!("10.60.0.{}", i + 1));
        e.ready = false;
        e.serving = false;
        eps.push(e);
    }
    t.update_endpoint_slice(mk_slice(
        "ns1",
        "dead-1",
        "dead",
        vec![eport("p80", Protocol::Tcp, 80)],
        eps,
    ));
    t.commit();
    let mut c = fake_compiler(IpFamily::V4);
    let out = full(&mut c, t.state());
    assert_eq!(out.stats.total_endpoints, 1001);
    assert!(out.stats.large_cluster);
    // A slice of a Service that does not exist does not count, nor does a slice port that
    // matches no Service port.
    t.delete_service("ns1", "dead");
    t.update_endpoint_slice(mk_slice(
        "ns0",
        "filler-extra",
        "filler",
        vec![eport("other", Protocol::Tcp, 81)],
        (0..20)
            .map(|i| ready_ep(&format!("10.61.0.{}", i + 1)))
            .collect(),
    ));
    t.commit();
    let out = full(&mut c, t.state());
    assert_eq!(out.stats.total_endpoints, 990);
    assert!(!out.stats.large_cluster);
}

#[test]
fn crossing_the_threshold_does_not_rewrite_unchanged_chains() {
    let mut n = Node::v4();
    filler(&mut n.tracker, 990);
    let (s, sl) = probe();
    n.tracker.update_service(s);
    n.tracker.update_endpoint_slice(sl);
    n.sync(SyncKind::Full);
    let probe_svc = names::svc("ns9/probe:p80", "tcp");
    let with_comments: Vec<Vec<String>> = n.sim.rules("nat", &probe_svc).to_vec();
    // The filler grows to 1000: 1002 endpoints, large; only the filler is rewritten.
    filler(&mut n.tracker, 1000);
    let (out, text) = n.sync(SyncKind::Partial);
    assert!(out.stats.large_cluster);
    assert_eq!(out.stats.written_service_ports, 1);
    let s = summarize(&text);
    assert!(
        s["nat"]
            .service_chains()
            .iter()
            .all(|c| !c.contains(&names::hash16("ns9/probe:p80tcp"))),
        "the probe is unchanged and not rewritten"
    );
    let filler_svc = names::svc("ns0/filler:p80", "tcp");
    let dispatch = s["nat"].rules_of(&filler_svc);
    assert_eq!(dispatch.len(), 1001);
    assert!(dispatch[0].contains("--comment \"ns0/filler:p80 cluster IP\""));
    assert!(dispatch[1..].iter().all(|r| !r.contains("--comment")));
    // The kernel: the probe still has its comments (§5.4 "asserted by upstream").
    assert_eq!(n.sim.rules("nat", &probe_svc), &with_comments[..]);
    // The next full sync rewrites it without them.
    let (_, text) = n.sync(SyncKind::Full);
    assert_probe(&text, true);
    // Back under the threshold: a partial sync of the filler alone writes comments again
    // for it, the probe keeps its comment-less rules until the next full sync.
    filler(&mut n.tracker, 500);
    let (out, text) = n.sync(SyncKind::Partial);
    assert!(!out.stats.large_cluster);
    let s = summarize(&text);
    assert!(
        s["nat"]
            .rules_of(&filler_svc)
            .iter()
            .all(|r| r.contains("--comment"))
    );
    assert!(
        n.sim
            .rules("nat", &probe_svc)
            .iter()
            .skip(1)
            .all(|r| !r.iter().any(|a| a == "--comment"))
    );
}

#[test]
fn stale_chain_cleanup_at_most_once_per_sync_period_in_large_mode() {
    let mut cfg = fake_config(IpFamily::V4);
    cfg.sync_period = Duration::from_secs(30);
    let mut c = compiler_with(cfg);
    let mut small = ChangeTracker::new(IpFamily::V4, NODE);
    filler(&mut small, 10);
    small.commit();
    let mut large = ChangeTracker::new(IpFamily::V4, NODE);
    filler(&mut large, 1001);
    large.commit();
    let t0 = Instant::now();
    assert!(
        c.stale_chain_cleanup_due(large.state(), t0),
        "never cleaned up yet"
    );
    c.record_stale_chain_cleanup(t0);
    for (dt, due) in [
        (Duration::ZERO, false),
        (Duration::from_secs(1), false),
        (Duration::from_secs(30), false),
        (Duration::from_secs(30) + Duration::from_millis(1), true),
        (Duration::from_secs(3600), true),
    ] {
        assert_eq!(
            c.stale_chain_cleanup_due(large.state(), t0 + dt),
            due,
            "{dt:?}"
        );
        // Small clusters clean up on every sync.
        assert!(c.stale_chain_cleanup_due(small.state(), t0 + dt));
    }
}

// ---- the equivalence property --------------------------------------------------------------

/// Runs a history: one tracker feeding (a) one compiler doing partial syncs (fast path) and
/// (b) a cold compiler per sync; each applied in order to its own simulated kernel with
/// stale-chain cleanup. After every step (a) and (b) hold the same tables, and after the
/// last step they equal one full sync of the final state on an empty kernel (every chain
/// compared in order; in the chains shared by all service ports only the order across
/// service ports, which the spec leaves open, is normalised).
fn check_history(cluster: arb::Cluster, steps: Vec<Vec<arb::Mutation>>) {
    let cfg = fake_config(cluster.family);
    let mut cluster = cluster;
    let mut tracker = ChangeTracker::new(cluster.family, NODE);
    for s in cluster.services() {
        tracker.update_service(s.clone());
    }
    for s in cluster.slices() {
        tracker.update_endpoint_slice(s.clone());
    }
    tracker.commit();
    let mut fast = compiler_with(cfg.clone());
    let (mut sim_fast, mut sim_cold) = (SimIptables::new(), SimIptables::new());
    let apply = |sim: &mut SimIptables, text: &str, who: &str| {
        sim.apply(text)
            .unwrap_or_else(|e| panic!("{who}: restore rejected: {e}\n{text}"));
    };
    let text = full(&mut fast, tracker.state()).restore.to_string();
    apply(&mut sim_fast, &text, "initial");
    apply(&mut sim_cold, &text, "initial");
    for (i, step) in steps.iter().enumerate() {
        arb::apply_step(&mut cluster, &mut tracker, step);
        let changes = tracker.commit();
        let state = tracker.state();

        let existing = sim_fast.chain_names("nat");
        let out = sync(
            &mut fast,
            state,
            SyncKind::Partial,
            &changes,
            Some(&existing),
        );
        assert!(out.stats.incremental, "step {i}: fast path expected");
        let fast_text = out.restore.to_string();
        apply(&mut sim_fast, &fast_text, "fast");

        let mut cold = compiler_with(cfg.clone());
        let existing = sim_cold.chain_names("nat");
        let unknown = Changes::of_services(changes.services.clone());
        let out = sync(
            &mut cold,
            state,
            SyncKind::Partial,
            &unknown,
            Some(&existing),
        );
        assert!(!out.stats.incremental);
        let cold_text = out.restore.to_string();
        apply(&mut sim_cold, &cold_text, "cold");
        assert_eq!(
            common::canonical_strict(&fast_text),
            common::canonical_strict(&cold_text),
            "step {i}: fast and cold restore inputs differ"
        );
        let (a, b) = (sim_fast.normalized(), sim_cold.normalized());
        assert!(a == b, "step {i}: fast vs cold\n{}", a.diff(&b));
    }
    let fresh = fresh_tables(&cfg, tracker.state()).normalized();
    let a = sim_fast.normalized();
    assert!(
        a == fresh,
        "partial syncs vs one full sync\n{}",
        a.diff(&fresh)
    );
    // Nothing but kube-proxy's chains, and no per-service chain nobody jumps to.
    for (table, chains) in &sim_fast.tables {
        for name in chains.keys() {
            assert!(name.starts_with("KUBE-"), "{table} {name}");
            if is_service_chain(name) {
                let referenced = chains.values().flatten().any(|r| {
                    r.iter().position(|a| a == "-j").and_then(|j| r.get(j + 1)) == Some(name)
                });
                assert!(referenced, "{table} {name} is unreferenced");
            }
        }
    }
}

/// `SyncKind::Delta` (beyond upstream: `-D`/`-I` of changed Services' top-level rules) on
/// one compiler fed by the tracker, applied in order: the kernel must end up as after one
/// full sync. `strict` compares the order of a service port's rules within the shared
/// top-level chains too (spec §3.3 gives it: cluster IP, external IPs, LB IPs; #7, #9, #10).
fn check_delta_history(cluster: arb::Cluster, steps: Vec<Vec<arb::Mutation>>, strict: bool) {
    let cfg = fake_config(cluster.family);
    let mut cluster = cluster;
    let tracker = &mut cluster.tracker();
    let mut delta = compiler_with(cfg.clone());
    let mut sim = SimIptables::new();
    let text = full(&mut delta, tracker.state()).restore.to_string();
    sim.apply(&text).unwrap();
    for step in &steps {
        arb::apply_step(&mut cluster, tracker, step);
        let changes = tracker.commit();
        let existing = sim.chain_names("nat");
        let out = sync(
            &mut delta,
            tracker.state(),
            SyncKind::Delta,
            &changes,
            Some(&existing),
        );
        assert!(out.stats.delta);
        let text = out.restore.to_string();
        sim.apply(&text)
            .unwrap_or_else(|e| panic!("delta restore rejected: {e}\n{text}"));
    }
    let fresh = fresh_tables(&cfg, tracker.state());
    let (a, b) = if strict {
        (sim.normalized(), fresh.normalized())
    } else {
        (sim.unordered_shared(), fresh.unordered_shared())
    };
    assert!(a == b, "delta syncs vs one full sync\n{}", a.diff(&b));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn partial_syncs_equal_one_full_sync_ipv4((cluster, steps) in arb::arb_history(IpFamily::V4, 6, 6)) {
        check_history(cluster, steps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn partial_syncs_equal_one_full_sync_ipv6((cluster, steps) in arb::arb_history(IpFamily::V6, 4, 5)) {
        check_history(cluster, steps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn delta_syncs_hold_the_same_rules_as_one_full_sync((cluster, steps) in arb::arb_history(IpFamily::V4, 6, 6)) {
        check_delta_history(cluster, steps, false);
    }

    #[test]
    fn delta_syncs_equal_one_full_sync((cluster, steps) in arb::arb_history(IpFamily::V4, 6, 6)) {
        check_delta_history(cluster, steps, true);
    }
}

#[test]
fn delta_without_exact_changes_falls_back_to_a_partial_sync() {
    // SyncKind::Delta is documented to fall back to Partial when the changes are not
    // exactly those since the compiler's previous sync.
    let mut n = Node::v4();
    three_services(&mut n);
    n.sync(SyncKind::Full);
    n.tracker
        .update_endpoint_slice(simple_slice("ns2", "svc2-1", "svc2", 80, &["10.0.2.9"]));
    let changes = n.tracker.commit();
    let unknown = Changes::of_services(changes.services.clone());
    let (out, text) = n.sync_changes(SyncKind::Delta, &unknown, true);
    assert!(!out.stats.delta && !out.stats.incremental);
    // A partial sync: the fixed chains are declared and rewritten.
    assert_eq!(
        owned(summarize(&text)["nat"].declared())
            .intersection(&set(&FIXED_NAT))
            .count(),
        4
    );
    n.assert_converged();
    // With nothing changed, an exact delta is empty.
    let changes = n.tracker.commit();
    let (out, text) = n.sync_changes(SyncKind::Delta, &changes, true);
    assert!(out.stats.delta);
    assert!(text.is_empty(), "{text}");
    n.assert_converged();
}
