//! Properties of compiled rulesets over random clusters (proptest): dispatch probabilities
//! (§3.4), chain names (§2.2), independence from event order (§6.2/§6.3), the restore input's
//! layout (§4.1), its parse/print round trip, references between chains, and what packets
//! to cluster IPs and NodePorts reach (§3.5, §6.5).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::arb;
use common::build::*;
use common::names;
use common::sim::{BUILTIN_TARGETS, SimIptables};
use common::summary::{is_service_chain, summarize};
use common::{Tracer, canonical};
use kproxy_iptables::save::{self, Command};
use kproxy_iptables::{Compiler, SyncKind};
use kproxy_model::{
    ChangeTracker, IpFamily, NodeTopology, Protocol, ProxyState, categorize_endpoints,
};
use proptest::prelude::*;

// ---- probabilities (§3.4) ------------------------------------------------------------------

/// Go's `fmt.Sprintf("%0.10f", 1.0/k)`, computed exactly: the binary double `1.0/k` times
/// 10^10, rounded half to even (Go's strconv rounds the exact decimal expansion so).
fn go_probability(k: u64) -> String {
    let x = 1.0f64 / k as f64;
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    assert!((-127..0).contains(&e), "k too large for this helper");
    let num = u128::from(m) * 10u128.pow(10);
    let shift = (-e) as u32;
    let (mut q, r, half) = (
        num >> shift,
        num & ((1u128 << shift) - 1),
        1u128 << (shift - 1),
    );
    if r > half || (r == half && q % 2 == 1) {
        q += 1;
    }
    format!("{}.{:010}", q / 10u128.pow(10), q % 10u128.pow(10))
}

#[test]
fn go_probability_reference_values() {
    // Upstream TestComputeProbability (spec §3.4).
    for (k, want) in [
        (1, "1.0000000000"),
        (2, "0.5000000000"),
        (3, "0.3333333333"),
        (4, "0.2500000000"),
        (10, "0.1000000000"),
        (1000, "0.0010000000"),
        (100000, "0.0000100000"),
        (100001, "0.0000099999"),
        // 1/2048 = 0.00048828125 exactly: a tie, rounded to even.
        (2048, "0.0004882812"),
        (16384, "0.0000610352"),
    ] {
        assert_eq!(go_probability(k), want, "1/{k}");
    }
}

/// The state of one ClusterIP Service `ns1/svc:p80` with `n` ready endpoints.
fn n_endpoints(n: usize) -> ProxyState {
    let mut t = ChangeTracker::new(IpFamily::V4, NODE);
    t.update_service(cluster_ip_service("ns1", "svc", "172.30.0.1", 80));
    let ips: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.{}", 1 + i / 62500, (i / 250) % 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    t.update_endpoint_slice(simple_slice("ns1", "svc-1", "svc", 80, &refs));
    t.commit();
    t.state().clone()
}

fn check_dispatch(n: usize) {
    let state = n_endpoints(n);
    let text = full(&mut fake_compiler(IpFamily::V4), &state)
        .restore
        .to_string();
    let rs = save::parse(&text).unwrap();
    let nat = rs.table("nat").unwrap();
    let chain = names::svc("ns1/svc:p80", "tcp");
    let rules: Vec<_> = nat
        .rules_of(&chain)
        .into_iter()
        .filter(|r| r.target() != Some("KUBE-MARK-MASQ"))
        .collect();
    assert_eq!(rules.len(), n);
    let mut reach = 1.0f64;
    let mut seps = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let p = r.value_of("--probability");
        let chosen = if i + 1 < n {
            let p = p.unwrap_or_else(|| panic!("rule {i} of {n} has no probability"));
            assert_eq!(p, go_probability((n - i) as u64), "rule {i} of {n}");
            assert_eq!(r.value_of("--mode"), Some("random"));
            let p: f64 = p.parse().unwrap();
            let chosen = reach * p;
            reach *= 1.0 - p;
            chosen
        } else {
            assert!(p.is_none(), "the last rule has no statistic match");
            assert!(!r.args.iter().any(|a| a == "statistic"));
            reach
        };
        let want = 1.0 / n as f64;
        let tolerance = want * (2e-10 * n as f64 + 1e-12);
        assert!(
            (chosen - want).abs() <= tolerance,
            "endpoint {i} of {n}: {chosen} vs {want}"
        );
        assert!(seps.insert(r.target().unwrap().to_owned()));
    }
}

#[test]
fn dispatch_probabilities_for_chosen_sizes() {
    for n in [1, 2, 3, 4, 5, 7, 10, 64, 999, 1000, 1001, 2048] {
        check_dispatch(n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn dispatch_probabilities_compose_to_a_uniform_choice(n in 1usize..1200) {
        check_dispatch(n);
    }
}

// ---- helpers over random clusters ---------------------------------------------------------

fn compile_full(cluster: &arb::Cluster, node: Option<NodeTopology>) -> String {
    let t = cluster.tracker();
    let mut cfg = fake_config(cluster.family);
    if let Some(n) = node {
        cfg.node = n;
    }
    full(&mut compiler_with(cfg), t.state()).restore.to_string()
}

fn zone_a() -> NodeTopology {
    NodeTopology {
        name: NODE.into(),
        zone: Some("zone-a".into()),
        prefer_same_node_hints: true,
    }
}

// ---- chain names (§2.2) --------------------------------------------------------------------

fn check_names(cluster: &arb::Cluster) {
    let t = cluster.tracker();
    let text = full(&mut fake_compiler(cluster.family), t.state())
        .restore
        .to_string();
    let s = summarize(&text);
    // Every (service port, endpoint) pair has its own name; the same for every per-port
    // chain kind.
    let mut sep_of: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut port_of: BTreeMap<String, String> = BTreeMap::new();
    for (port, eps) in t.state().service_ports() {
        let n = port.name.to_string();
        let p = port.protocol().lower();
        for kind in [
            names::svc(&n, p),
            names::svl(&n, p),
            names::ext(&n, p),
            names::fw(&n, p),
        ] {
            if let Some(other) = port_of.insert(kind.clone(), n.clone()) {
                assert_eq!(other, n, "{kind} names two service ports");
            }
        }
        for ep in eps {
            let name = names::sep(&n, p, ep.endpoint_str());
            let prev = sep_of.insert(name.clone(), (n.clone(), ep.endpoint_str().to_owned()));
            assert!(prev.is_none(), "{name} collides");
        }
    }
    for table in s.values() {
        for c in &table.chain_lines {
            assert!(c.len() <= 28, "{c} is longer than 28 bytes");
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
                "{c}"
            );
        }
    }
    // Every declared per-service chain is the spec's name of what it serves: SEP chains DNAT
    // to their endpoint, and their comment is the service port's name.
    let large = t.state().total_endpoints() > 1000;
    for c in s["nat"].service_chains() {
        if c.starts_with("KUBE-SEP-") {
            let (n, ep) = sep_of.get(c).unwrap_or_else(|| panic!("{c}: no such pair"));
            let rules = s["nat"].rules_of(c);
            assert_eq!(rules.len(), 2, "{c}");
            assert!(
                rules[1].ends_with(&format!("-j DNAT --to-destination {ep}")),
                "{c}"
            );
            if !large {
                assert!(rules[0].starts_with(&format!("-A {c} -m comment --comment {n} -s ")));
            }
        } else {
            assert!(port_of.contains_key(c), "{c}: not a service port's chain");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chain_names_follow_the_formula_and_are_unique(cluster in arb::arb_cluster(IpFamily::V4, 6)) {
        check_names(&cluster);
    }

    #[test]
    fn chain_names_follow_the_formula_ipv6(cluster in arb::arb_cluster(IpFamily::V6, 4)) {
        check_names(&cluster);
    }

    #[test]
    fn compiling_is_deterministic(cluster in arb::arb_cluster(IpFamily::V4, 6)) {
        let a = compile_full(&cluster, None);
        let b = compile_full(&cluster, None);
        prop_assert_eq!(a, b);
    }
}

// ---- order independence --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Event {
    Service(kproxy_model::Service),
    Slice(kproxy_model::EndpointSlice),
}

fn arb_shuffled(
    family: IpFamily,
) -> impl Strategy<Value = (arb::Cluster, Vec<Event>, Vec<usize>, Vec<usize>)> {
    arb::arb_cluster(family, 6).prop_flat_map(|cluster| {
        let events: Vec<Event> = cluster
            .services()
            .cloned()
            .map(Event::Service)
            .chain(cluster.slices().cloned().map(Event::Slice))
            .collect();
        let n = events.len();
        (
            Just(cluster),
            Just(events).prop_shuffle(),
            proptest::collection::vec(0..=n, 0..3),
            proptest::collection::vec(0..n.max(1), 0..4),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same objects given in any order, with commits at arbitrary points and some
    /// objects sent twice, compile to the same ruleset (§6.2: endpoints merge by string,
    /// sorted; §6.3: the state is the objects, not the history).
    #[test]
    fn output_does_not_depend_on_event_order((cluster, events, commits, repeats) in arb_shuffled(IpFamily::V4)) {
        let want = compile_full(&cluster, Some(zone_a()));
        let mut t = ChangeTracker::new(cluster.family, NODE);
        for (i, e) in events.iter().enumerate() {
            if commits.contains(&i) {
                t.commit();
            }
            match e {
                Event::Service(s) => { t.update_service(s.clone()); }
                Event::Slice(s) => { t.update_endpoint_slice(s.clone()); }
            }
        }
        for &i in &repeats {
            if let Some(e) = events.get(i) {
                match e {
                    Event::Service(s) => { t.update_service(s.clone()); }
                    Event::Slice(s) => { t.update_endpoint_slice(s.clone()); }
                }
            }
        }
        t.commit();
        let mut cfg = fake_config(cluster.family);
        cfg.node = zone_a();
        let got = full(&mut compiler_with(cfg), t.state()).restore.to_string();
        prop_assert_eq!(got, want);
    }

    /// Splitting a slice's endpoints over several slices changes nothing (§6.2).
    #[test]
    fn splitting_slices_changes_nothing(cluster in arb::arb_cluster(IpFamily::V4, 5), cut in 0usize..6) {
        let want = compile_full(&cluster, Some(zone_a()));
        let mut split = cluster.clone();
        for slot in &mut split.slots {
            let mut more = Vec::new();
            for s in &mut slot.slices {
                if s.endpoints.len() > 1 {
                    let at = cut.min(s.endpoints.len() - 1).max(1);
                    let mut tail = s.clone();
                    tail.name = format!("{}-tail", s.name);
                    tail.endpoints = s.endpoints.split_off(at);
                    more.push(tail);
                }
            }
            slot.slices.extend(more);
        }
        prop_assert_eq!(compile_full(&split, Some(zone_a())), want);
    }
}

// ---- layout (§4.1), parsing, references ---------------------------------------------------

fn check_layout(text: &str, family: IpFamily, localhost_np: bool) {
    assert!(text.ends_with("COMMIT\n"));
    assert!(
        !text.contains("\n\n") && !text.starts_with('\n'),
        "no blank lines"
    );
    assert!(!text.lines().any(|l| l.starts_with('#')), "no comments");
    let tables: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(tables, ["*filter", "*nat"], "filter first, then nat");
    let s = summarize(text);
    let mut filter_chains = vec![
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ];
    if localhost_np {
        filter_chains.push("KUBE-FIREWALL");
    }
    assert_eq!(s["filter"].chain_lines, filter_chains);
    assert_eq!(
        family == IpFamily::V4 && localhost_np,
        s["filter"].chain_lines.len() == 6
    );
    // filter rules: the KUBE-FIREWALL rule first (if any), the KUBE-FORWARD rules last.
    let fc = &s["filter"].commands;
    if localhost_np {
        assert!(fc[0].starts_with("-A KUBE-FIREWALL "), "{}", fc[0]);
    }
    let forward = fc
        .iter()
        .rev()
        .take_while(|l| l.starts_with("-A KUBE-FORWARD "))
        .count();
    assert!((2..=3).contains(&forward), "KUBE-FORWARD rules last");
    assert_eq!(
        fc.iter()
            .filter(|l| l.starts_with("-A KUBE-FORWARD "))
            .count(),
        forward
    );
    // Chain lines come before every rule of their table.
    let mut in_rules = false;
    for l in text.lines() {
        if l.starts_with('*') {
            in_rules = false;
        } else if l.starts_with(':') {
            assert!(!in_rules, "chain line after a rule: {l}");
        } else if l != "COMMIT" {
            in_rules = true;
        }
    }
    let nat = &s["nat"];
    assert_eq!(
        nat.chain_lines[..4],
        [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ"
        ]
    );
    // The 4 fixed rules first.
    let fixed: Vec<&str> = nat.commands[..4]
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        fixed,
        [
            "KUBE-POSTROUTING",
            "KUBE-POSTROUTING",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ"
        ]
    );
    // Then per-service rules, then -X lines, then the final KUBE-SERVICES rule(s).
    let last_rules = nat
        .commands
        .iter()
        .rev()
        .take_while(|l| l.contains("must be the last rule"))
        .count();
    let body = &nat.commands[..nat.commands.len() - last_rules];
    let first_x = body
        .iter()
        .position(|l| l.starts_with("-X "))
        .unwrap_or(body.len());
    assert!(body[first_x..].iter().all(|l| l.starts_with("-X ")));
    assert!(
        !nat.commands[..nat.commands.len() - last_rules]
            .iter()
            .any(|l| l.contains("must be the last rule"))
    );
    // Per port: chain lines EXT, FW, SVC, SVL, then its SEPs, contiguous; stale chains
    // (deleted with -X) come last.
    let rank = |c: &str| {
        [
            "KUBE-EXT-",
            "KUBE-FW-",
            "KUBE-SVC-",
            "KUBE-SVL-",
            "KUBE-SEP-",
        ]
        .iter()
        .position(|p| c.starts_with(p))
        .unwrap_or_else(|| panic!("{c} is not a per-service chain"))
    };
    let deleted: BTreeSet<&str> = nat.deleted.iter().map(String::as_str).collect();
    let chains: Vec<&str> = nat.chain_lines[4..].iter().map(String::as_str).collect();
    let live = chains.iter().take_while(|c| !deleted.contains(*c)).count();
    assert!(
        chains[live..].iter().all(|c| deleted.contains(*c)),
        "stale chains last"
    );
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let (mut suffix, mut last) = ("", usize::MAX);
    for c in &chains[..live] {
        let r = rank(c);
        let new_group = r < 4 && (c[c.len() - 16..] != *suffix || last == 4 || r <= last);
        if new_group {
            suffix = &c[c.len() - 16..];
            assert!(seen.insert(suffix), "port {suffix} split: {chains:?}");
        } else {
            assert!(
                last != usize::MAX && r >= last,
                "{c} out of order: {chains:?}"
            );
        }
        last = r;
    }
}

fn check_parse_and_references(text: &str, full_sync: bool) {
    let rs = save::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Round trip: chain lines + Display of every command give back the same text, and
    // parsing that gives the same ruleset.
    let mut out = String::new();
    for t in &rs.tables {
        out.push_str(&format!("*{}\n", t.name));
        for c in &t.chains {
            assert_eq!(c.policy, None);
            out.push_str(&format!(":{} - [0:0]\n", c.name));
        }
        for cmd in &t.commands {
            match cmd {
                Command::Append(r) => out.push_str(&format!("{r}\n")),
                Command::DeleteChain(c) => out.push_str(&format!("-X {c}\n")),
                other => panic!("unexpected command {other:?}"),
            }
        }
        out.push_str("COMMIT\n");
    }
    assert_eq!(out, text, "parse -> Display is the identity");
    assert_eq!(save::parse(&out).unwrap(), rs);
    for t in &rs.tables {
        let declared: BTreeSet<&str> = t.chain_names().collect();
        for r in t.appended() {
            assert!(
                declared.contains(r.chain.as_str()),
                "-A to undeclared {}",
                r.chain
            );
            if let Some(target) = r.target() {
                let ok = BUILTIN_TARGETS.contains(&target)
                    || target == "KUBE-MARK-MASQ"
                    || declared.contains(target)
                    || (!full_sync && is_service_chain(target));
                assert!(ok, "{}: -j {target} is not declared", r.chain);
            }
            assert!(r.chain.starts_with("KUBE-"), "{}", r.chain);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn full_sync_layout_parse_and_references(cluster in arb::arb_cluster(IpFamily::V4, 6)) {
        let text = compile_full(&cluster, Some(zone_a()));
        check_layout(&text, IpFamily::V4, true);
        check_parse_and_references(&text, true);
        // The canonical form is a permutation of the lines.
        let mut a: Vec<&str> = text.lines().collect();
        let c = canonical(&text);
        let mut b: Vec<&str> = c.lines().collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn full_sync_layout_ipv6(cluster in arb::arb_cluster(IpFamily::V6, 4)) {
        let text = compile_full(&cluster, None);
        check_layout(&text, IpFamily::V6, false);
        check_parse_and_references(&text, true);
    }

    #[test]
    fn partial_sync_outputs_parse((cluster, steps) in arb::arb_history(IpFamily::V4, 5, 4)) {
        let mut cluster = cluster;
        let mut t = cluster.tracker();
        let mut c = fake_compiler(IpFamily::V4);
        let mut kernel = SimIptables::new();
        let text = full(&mut c, t.state()).restore.to_string();
        check_parse_and_references(&text, true);
        kernel.apply(&text).unwrap();
        for step in &steps {
            arb::apply_step(&mut cluster, &mut t, step);
            let changes = t.commit();
            let existing = kernel.chain_names("nat");
            let out = sync(&mut c, t.state(), SyncKind::Partial, &changes, Some(&existing));
            let text = out.restore.to_string();
            check_layout(&text, IpFamily::V4, true);
            check_parse_and_references(&text, false);
            kernel.apply(&text).unwrap();
        }
    }
}

// ---- what packets reach (§3.5, §6.5) --------------------------------------------------------

/// For every service port of a random cluster: a pod's packet to the cluster IP, and an
/// off-cluster packet to the NodePort, reach exactly the endpoints endpoint selection gives
/// (internal: local endpoints for iTP Local, else the cluster set; external: local for eTP
/// Local, else the cluster set), or are rejected (no usable endpoint anywhere) / dropped
/// (none usable here).
fn check_reachability(cluster: &arb::Cluster) {
    let node = zone_a();
    let t = cluster.tracker();
    let mut cfg = fake_config(cluster.family);
    cfg.node = node.clone();
    let text = full(&mut compiler_with(cfg), t.state()).restore.to_string();
    let rs = save::parse(&text).unwrap();
    let local: Vec<IpAddr> = fake_interfaces();
    let tracer = Tracer::new(&rs, &local);
    let (pod, outside, node_ip): (IpAddr, IpAddr, IpAddr) = match cluster.family {
        IpFamily::V4 => (ip("10.0.0.2"), ip("203.0.113.2"), ip("192.168.0.2")),
        IpFamily::V6 => (ip("fd00:10::2"), ip("2001:db8:77::2"), ip("2001:db8::1")),
    };
    for (port, eps) in t.state().service_ports() {
        let sets = categorize_endpoints(eps, port, &node);
        let join = |it: &mut dyn Iterator<Item = &kproxy_model::EndpointInfo>| -> String {
            it.map(|e| e.endpoint_str().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = port.protocol().lower();
        let internal = if !sets.has_any {
            "REJECT".to_owned()
        } else if port.internal_policy_local {
            if sets.local_len() == 0 {
                "DROP".to_owned()
            } else {
                join(&mut sets.local())
            }
        } else {
            join(&mut sets.cluster())
        };
        let (got, _) = tracer.trace(pod, p, port.cluster_ip, port.port);
        assert_eq!(got, internal, "{} cluster IP\n{text}", port.name);
        if port.node_port != 0 {
            let external = if !sets.has_any {
                "REJECT".to_owned()
            } else if port.external_policy_local {
                if sets.local_len() == 0 {
                    "DROP".to_owned()
                } else {
                    join(&mut sets.local())
                }
            } else {
                join(&mut sets.cluster())
            };
            let (got, masq) = tracer.trace(outside, p, node_ip, port.node_port);
            assert_eq!(got, external, "{} NodePort\n{text}", port.name);
            if sets.has_any && (!port.external_policy_local || sets.local_len() > 0) {
                // eTP Cluster masquerades external traffic, eTP Local never does.
                assert_eq!(
                    masq, !port.external_policy_local,
                    "{} NodePort masq",
                    port.name
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn packets_reach_the_selected_endpoints(cluster in arb::arb_cluster(IpFamily::V4, 6)) {
        check_reachability(&cluster);
    }

    #[test]
    fn packets_reach_the_selected_endpoints_ipv6(cluster in arb::arb_cluster(IpFamily::V6, 4)) {
        check_reachability(&cluster);
    }
}

#[test]
fn chain_names_are_stable_across_compilers_and_unrelated_services() {
    // Same input, same names, whatever else is in the cluster (§2.2: names depend on N, p
    // and EP only).
    let mut a = ChangeTracker::new(IpFamily::V4, NODE);
    a.update_service(cluster_ip_service("ns1", "svc1", "172.30.0.41", 80));
    a.update_endpoint_slice(simple_slice("ns1", "svc1-1", "svc1", 80, &["10.180.0.1"]));
    a.commit();
    let mut b = a.clone();
    b.update_service(mk_service(
        "ns2",
        "other",
        kproxy_model::ServiceType::NodePort,
        "172.30.0.42",
        vec![port("p80", Protocol::Udp, 80, 30080)],
    ));
    b.commit();
    let ta = full(&mut fake_compiler(IpFamily::V4), a.state())
        .restore
        .to_string();
    let tb = full(&mut Compiler::new(fake_config(IpFamily::V4)), b.state())
        .restore
        .to_string();
    for name in ["KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SXIVWICOYRO3J4NJ"] {
        assert!(ta.contains(&format!(":{name} - [0:0]")), "{ta}");
        assert!(tb.contains(&format!(":{name} - [0:0]")), "{tb}");
    }
}
