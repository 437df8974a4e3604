//! Recovery on a real kernel: someone flushes the tables (`iptables -t nat -F`, with `-X`
//! too, `iptables -F`) and service traffic comes back within the flush-check period with
//! the same rules; the daemon restarts (SIGTERM, SIGKILL) under traffic without losing a
//! connection and adopts the rules in place unchanged; rules left by upstream kube-proxy
//! (with stale chains) are adopted without a gap, stale chains deleted, foreign chains
//! untouched. Both iptables backends, both families.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;

const SYNC_PERIOD: Duration = Duration::from_secs(2);

/// The Services of these tests: `web` (two endpoints, one here and one on node2, also a
/// NodePort), `api` (one endpoint, added in a later change than `web`, so that delta and
/// full syncs order KUBE-SERVICES differently) and `empty` (no endpoints: REJECTed).
struct Setup {
    c: Cluster,
    pods: Vec<Pod>,
    client: Pod,
    _backends: Vec<Backend>,
}

const WEB: u8 = 40;
const API: u8 = 41;
const EMPTY: u8 = 42;

fn setup(backend_kind: &'static str, start_daemon: bool) -> Setup {
    let opts = Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    };
    let mut c = if start_daemon {
        Cluster::start(opts)
    } else {
        Cluster::prepare(opts)
    };
    let pods = vec![
        c.lab.new_pod(PodHost::Node).expect("pod"),
        c.lab.new_pod(PodHost::Node2).expect("pod"),
    ];
    let client = c.lab.new_pod(PodHost::Node).expect("pod");
    let backends = vec![backend(&pods[0], "b0", 8080), backend(&pods[1], "b1", 8080)];
    c.manifests
        .service(
            ServiceDef::cluster_ip("web", &[svc_v4(WEB), svc_v6(WEB)], 80, 8080).node_port(30080),
        )
        .set_endpoints("web", pod_endpoints(&[&pods[0], &pods[1]]))
        .service(ServiceDef::cluster_ip(
            "empty",
            &[svc_v4(EMPTY), svc_v6(EMPTY)],
            80,
            8080,
        ))
        .set_endpoints("empty", vec![]);
    let api = ServiceDef::cluster_ip("api", &[svc_v4(API), svc_v6(API)], 80, 8080);
    if start_daemon {
        c.apply();
        c.manifests
            .service(api)
            .set_endpoints("api", pod_endpoints(&[&pods[1]]));
        c.apply();
    } else {
        c.manifests
            .service(api)
            .set_endpoints("api", pod_endpoints(&[&pods[1]]));
        c.write_manifests();
    }
    Setup {
        c,
        pods,
        client,
        _backends: backends,
    }
}

/// `(family, table)` → the table, for mangle, nat and filter of both families.
type Snapshot = Vec<((bool, &'static str), SavedTable)>;

fn snapshot(c: &Cluster) -> Snapshot {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for table in ["mangle", "nat", "filter"] {
            out.push(((v6, table), SavedTable::parse(&c.save(v6, table))));
        }
    }
    out
}

/// Asserts two snapshots hold the same rules (top-level chains in any order).
fn assert_same(what: &str, before: &Snapshot, after: &Snapshot, c: &Cluster) {
    for (((v6, table), a), (_, b)) in before.iter().zip(after) {
        if let Some(d) = table_differences(a, b, is_top_level_chain) {
            panic!(
                "{} {what}: {} {table} differs (first: before, second: after):\n{d}\nlog:\n{}",
                c.backend(),
                if *v6 { "IPv6" } else { "IPv4" },
                c.log()
            );
        }
    }
}

/// A probe loop on one Service and family, with the outcome each probe should have.
struct Watch {
    what: String,
    /// Which Service (WEB, API, EMPTY).
    service: u8,
    want: fn(&ProbeResult) -> bool,
    probes: ProbeLoop,
}

fn answered(r: &ProbeResult) -> bool {
    r.is_answered()
}

fn refused(r: &ProbeResult) -> bool {
    *r == ProbeResult::Refused
}

fn watch(
    ns: &Netns,
    service: u8,
    v6: bool,
    want: fn(&ProbeResult) -> bool,
    timeout: Duration,
) -> Watch {
    let vip: IpAddr = if v6 { svc_v6(service) } else { svc_v4(service) };
    let probe = Probe::tcp(sock(vip, 80)).with_timeout(timeout);
    let probes = ProbeLoop::start(ns, probe, Duration::from_millis(10)).expect("probe loop");
    assert!(probes.wait_for_attempts(3, Duration::from_secs(10)));
    Watch {
        what: format!("{vip}:80"),
        service,
        want,
        probes,
    }
}

/// Watches of every Service, both families, with the normal timeout.
fn watch_all(ns: &Netns) -> Vec<Watch> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for (service, want) in [
            (WEB, answered as fn(&ProbeResult) -> bool),
            (API, answered),
            (EMPTY, refused),
        ] {
            out.push(watch(ns, service, v6, want, Duration::from_secs(2)));
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// `iptables -t nat -F`.
    Nat,
    /// `iptables -t nat -F; iptables -t nat -X`.
    NatAndChains,
    /// `iptables -F` (the filter table).
    Filter,
    /// `iptables -F; iptables -X`.
    FilterAndChains,
}

fn flush_recovers(backend_kind: &'static str, flush: Flush) {
    let s = setup(backend_kind, true);
    let c = &s.c;
    let before = snapshot(c);
    let short = Duration::from_millis(300);
    // Which Service the flush breaks: nat rules make `web` work, filter rules make
    // `empty` refuse (without them its packets are routed away: a timeout).
    let mut watches = Vec::new();
    for v6 in [false, true] {
        watches.push(watch(&s.client, WEB, v6, answered, short));
        watches.push(watch(&s.client, EMPTY, v6, refused, short));
    }
    let filter = matches!(flush, Flush::Filter | Flush::FilterAndChains);
    let breaks = |w: &Watch| w.service == if filter { EMPTY } else { WEB };
    let syncs_before = c.records("synced").len();
    let flushed_at = Instant::now();
    for v6 in [false, true] {
        match flush {
            Flush::Nat => {
                c.iptables(v6, &["-t", "nat", "-F"]);
            }
            Flush::NatAndChains => {
                c.iptables(v6, &["-t", "nat", "-F"]);
                c.iptables(v6, &["-t", "nat", "-X"]);
            }
            Flush::Filter => {
                c.iptables(v6, &["-F"]);
            }
            Flush::FilterAndChains => {
                c.iptables(v6, &["-F"]);
                c.iptables(v6, &["-X"]);
            }
        }
    }
    let flushed_save = snapshot(c);
    // Recovery: a full sync of each family after the flush.
    let deadline = flushed_at + 2 * SYNC_PERIOD + Duration::from_secs(4);
    loop {
        let full = c.syncs()[syncs_before..]
            .iter()
            .filter(|s| s.1 == "Full")
            .count();
        if full >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend_kind} {flush:?}: no full resync after the flush; log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let limit = 2 * SYNC_PERIOD + Duration::from_secs(2);
    for w in watches {
        let broken = breaks(&w);
        let records = w.probes.stop();
        let bad: Vec<&ProbeRecord> = records
            .iter()
            .filter(|r| r.at >= flushed_at && !(w.want)(&r.result))
            .collect();
        let failed_before: Vec<&ProbeRecord> = records
            .iter()
            .filter(|r| r.at < flushed_at && !(w.want)(&r.result))
            .collect();
        assert!(
            failed_before.is_empty(),
            "{backend_kind} {}: failed before the flush: {failed_before:?}",
            w.what
        );
        if broken {
            assert!(
                !bad.is_empty(),
                "{backend_kind} {flush:?} {}: the flush should have broken it for a while \
                 ({} probes after it); rules right after the flush: {flushed_save:?}",
                w.what,
                records.iter().filter(|r| r.at >= flushed_at).count()
            );
            let last_bad = bad.last().expect("some");
            let recovered = last_bad.at + last_bad.took - flushed_at;
            assert!(
                recovered <= limit,
                "{backend_kind} {flush:?} {}: traffic came back only after {recovered:?} \
                 (limit {limit:?}); last failure {:?}",
                w.what,
                last_bad.result
            );
            let last = records.last().expect("records");
            assert!((w.want)(&last.result), "{}: still broken: {last:?}", w.what);
        } else {
            assert!(
                bad.is_empty(),
                "{backend_kind} {flush:?} {}: should not be affected by the flush: {:?}",
                w.what,
                bad.iter().take(3).collect::<Vec<_>>()
            );
        }
    }
    assert!(
        c.records("kproxy's rules were flushed by someone else: full resync")
            .len()
            >= 2,
        "{backend_kind}: the flush should be logged for both families:\n{}",
        c.log()
    );
    assert_same(&format!("{flush:?}"), &before, &snapshot(c), c);
    assert!(c.failed_syncs().is_empty(), "{:?}", c.failed_syncs());
}

#[test]
fn nat_flush_recovers_nft() {
    flush_recovers("nft", Flush::Nat);
}

#[test]
fn nat_flush_recovers_legacy() {
    flush_recovers("legacy", Flush::Nat);
}

#[test]
fn nat_flush_and_delete_recovers_nft() {
    flush_recovers("nft", Flush::NatAndChains);
}

#[test]
fn nat_flush_and_delete_recovers_legacy() {
    flush_recovers("legacy", Flush::NatAndChains);
}

#[test]
fn filter_flush_recovers_nft() {
    flush_recovers("nft", Flush::Filter);
}

#[test]
fn filter_flush_recovers_legacy() {
    flush_recovers("legacy", Flush::Filter);
}

#[test]
fn filter_flush_and_delete_recovers_nft() {
    flush_recovers("nft", Flush::FilterAndChains);
}

#[test]
fn filter_flush_and_delete_recovers_legacy() {
    flush_recovers("legacy", Flush::FilterAndChains);
}

/// The daemon stops (SIGTERM) or dies (SIGKILL) and starts again while connections keep
/// being opened: none fails, and the restart's full sync leaves the rules as they were.
fn restart(backend_kind: &'static str, kill: bool) {
    let mut s = setup(backend_kind, true);
    let before = snapshot(&s.c);
    let watches = watch_all(&s.client);
    if kill {
        s.c.kill_daemon();
    } else {
        s.c.stop_daemon();
    }
    std::thread::sleep(Duration::from_millis(300));
    let stopped = snapshot(&s.c);
    assert_same("while stopped", &before, &stopped, &s.c);
    s.c.start_daemon();
    let syncs = s.c.syncs();
    assert!(
        syncs.iter().all(|x| x.1 == "Full"),
        "the restart's first syncs are full: {syncs:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    for w in watches {
        let records = w.probes.stop();
        let bad: Vec<&ProbeRecord> = records.iter().filter(|r| !(w.want)(&r.result)).collect();
        assert!(
            bad.is_empty(),
            "{backend_kind} {}: {} of {} probes failed across the restart: {:?}",
            w.what,
            bad.len(),
            records.len(),
            bad.iter().take(3).collect::<Vec<_>>()
        );
    }
    assert_same("after the restart", &before, &snapshot(&s.c), &s.c);
    // Still live: a change is applied.
    s.c.manifests
        .set_endpoints("api", pod_endpoints(&[&s.pods[0]]));
    s.c.apply();
    let h = probe_many(&s.client, &Probe::tcp(sock(svc_v4(API), 80)), 10);
    assert_eq!(h, Histogram::from([("b0".to_owned(), 10)]));
    s.c.assert_delta_syncs();
}

#[test]
fn restart_after_sigterm_nft() {
    restart("nft", false);
}

#[test]
fn restart_after_sigterm_legacy() {
    restart("legacy", false);
}

#[test]
fn restart_after_sigkill_nft() {
    restart("nft", true);
}

#[test]
fn restart_after_sigkill_legacy() {
    restart("legacy", true);
}

/// `kproxy rules` for the cluster's manifests and flags, one family.
fn rules_output(c: &Cluster, v6: bool) -> String {
    let mut args: Vec<String> = vec![
        "rules".into(),
        "--source".into(),
        c.source_dir().to_string_lossy().into_owned(),
        format!("--ip-family={}", if v6 { "ipv6" } else { "ipv4" }),
    ];
    let daemon = c.daemon_args();
    let mut skip = false;
    for a in daemon {
        if skip {
            skip = false;
            continue;
        }
        match a.as_str() {
            "run" => {}
            "--source" => skip = true,
            _ if a.starts_with("--iptables-backend") => {}
            _ => args.push(a),
        }
    }
    let out = c
        .lab
        .node
        .command(env!("CARGO_BIN_EXE_kproxy"))
        .args(&args)
        .output()
        .expect("kproxy rules");
    assert!(
        out.status.success(),
        "kproxy rules: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// What upstream kube-proxy may leave behind besides its rules: a Service that no longer
/// exists (its KUBE-SERVICES jump, KUBE-SVC and KUBE-SEP chains), and what is not kube-proxy's
/// at all: kubelet's canary and a user chain with a rule and a jump to it.
fn leftovers(v6: bool) -> String {
    let (gone, ep, user) = if v6 {
        (
            "fd00:96::99/128",
            "[fd00:10:1::99]:8080",
            "2001:db8:ffff::1/128",
        )
    } else {
        ("10.96.0.99/32", "10.0.1.99:8080", "192.0.2.1/32")
    };
    format!(
        "*mangle\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         COMMIT\n\
         *nat\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]\n\
         :KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]\n\
         :MY-CHAIN - [0:0]\n\
         -I KUBE-SERVICES 1 -d {gone} -p tcp -m comment --comment \"gone/old:p cluster IP\" -m tcp --dport 80 -j KUBE-SVC-BBBBBBBBBBBBBBBB\n\
         -A KUBE-SVC-BBBBBBBBBBBBBBBB -m comment --comment \"gone/old:p -> {ep}\" -j KUBE-SEP-AAAAAAAAAAAAAAAA\n\
         -A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment gone/old:p -m tcp -j DNAT --to-destination {ep}\n\
         -A MY-CHAIN -s {user} -j RETURN\n\
         -A PREROUTING -j MY-CHAIN\n\
         COMMIT\n\
         *filter\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :MY-CHAIN - [0:0]\n\
         -A MY-CHAIN -s {user} -j DROP\n\
         -A INPUT -j MY-CHAIN\n\
         COMMIT\n"
    )
}

/// A rule without its nfacct matches (`-m nfacct --nfacct-name NAME`; iptables-save puts
/// two spaces before the name).
fn strip_nfacct(rule: &str) -> String {
    if !rule.contains("nfacct") {
        return rule.to_owned();
    }
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "-m" && words.get(i + 1) == Some(&"nfacct") {
            i += 4;
        } else {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

/// A snapshot without nfacct matches.
fn without_nfacct(mut s: Snapshot) -> Snapshot {
    for ((_, _), t) in &mut s {
        for rules in t.rules.values_mut() {
            for r in rules.iter_mut() {
                *r = strip_nfacct(r);
            }
        }
    }
    s
}

/// Removes the leftovers of [`leftovers`] that are not kube-proxy's from a snapshot.
fn without_foreign(mut s: Snapshot) -> Snapshot {
    for ((_, _), t) in &mut s {
        for chain in ["KUBE-KUBELET-CANARY", "MY-CHAIN"] {
            t.chains.remove(chain);
            t.rules.remove(chain);
        }
        for rules in t.rules.values_mut() {
            rules.retain(|r| r != "-j MY-CHAIN");
        }
    }
    s
}

/// Rules left by upstream kube-proxy (the same rules, as `kproxy rules` prints them, plus a
/// deleted Service's chains) are adopted: traffic never fails while the daemon starts, its
/// first sync deletes the stale chains, leaves kproxy's rules as they were, and does not
/// touch chains that are not kube-proxy's.
fn adopts_upstream_rules(backend_kind: &'static str) {
    let mut s = setup(backend_kind, false);
    // Upstream writes its nfacct matches only where its counters exist; this node has none
    // (and the test no tool to make them): upstream's rules without them. The daemon creates
    // the counters and adds the matches, so those are left out of the comparison.
    for v6 in [false, true] {
        let rules: String = rules_output(&s.c, v6)
            .lines()
            .map(|l| strip_nfacct(l) + "\n")
            .collect();
        s.c.restore(v6, &rules);
    }
    let upstream = snapshot(&s.c);
    for v6 in [false, true] {
        s.c.restore(v6, &leftovers(v6));
    }
    let with_leftovers = snapshot(&s.c);
    for ((v6, table), t) in &with_leftovers {
        if *table == "nat" {
            assert!(
                t.chains.contains_key("KUBE-SEP-AAAAAAAAAAAAAAAA")
                    && t.chains.contains_key("KUBE-SVC-BBBBBBBBBBBBBBBB"),
                "v6={v6}: leftovers installed: {t:?}"
            );
        }
    }
    // Upstream's rules work before kproxy runs.
    let watches = watch_all(&s.client);
    s.c.start_daemon();
    std::thread::sleep(Duration::from_millis(300));
    for w in watches {
        let records = w.probes.stop();
        let bad: Vec<&ProbeRecord> = records.iter().filter(|r| !(w.want)(&r.result)).collect();
        assert!(
            bad.is_empty(),
            "{backend_kind} {}: {} of {} probes failed while kproxy took over: {:?}",
            w.what,
            bad.len(),
            records.len(),
            bad.iter().take(3).collect::<Vec<_>>()
        );
    }
    let after = snapshot(&s.c);
    // Foreign chains and rules untouched.
    for (((v6, table), was), (_, now)) in with_leftovers.iter().zip(&after) {
        for chain in ["KUBE-KUBELET-CANARY", "MY-CHAIN"] {
            assert_eq!(
                was.chains.contains_key(chain),
                now.chains.contains_key(chain),
                "{backend_kind} v6={v6} {table}: {chain}"
            );
            assert_eq!(
                was.chain(chain),
                now.chain(chain),
                "{backend_kind} v6={v6} {table}: {chain}"
            );
        }
        for builtin in ["PREROUTING", "INPUT"] {
            let jumps = |t: &SavedTable| {
                t.chain(builtin)
                    .iter()
                    .filter(|r| *r == "-j MY-CHAIN")
                    .count()
            };
            assert_eq!(
                jumps(was),
                jumps(now),
                "{backend_kind} v6={v6} {table} {builtin}"
            );
        }
        if *table == "nat" {
            for stale in ["KUBE-SEP-AAAAAAAAAAAAAAAA", "KUBE-SVC-BBBBBBBBBBBBBBBB"] {
                assert!(
                    !now.chains.contains_key(stale),
                    "{backend_kind} v6={v6}: the stale chain {stale} should be gone: {:?}",
                    now.chains.keys()
                );
            }
        }
    }
    // kproxy's own rules are what upstream had, stale parts gone.
    assert_same(
        "adopting upstream's rules",
        &upstream,
        &without_nfacct(without_foreign(after)),
        &s.c,
    );
    assert!(s.c.failed_syncs().is_empty(), "{:?}", s.c.failed_syncs());
    drop(s.pods);
}

#[test]
fn adopts_upstream_rules_nft() {
    adopts_upstream_rules("nft");
}

#[test]
fn adopts_upstream_rules_legacy() {
    adopts_upstream_rules("legacy");
}
