//! The sync machinery under churn, on a real kernel with real traffic: endpoints added and
//! removed a hundred times while connections keep being opened (none may fail, each must
//! reach an endpoint of that moment, every sync after the first a delta), and the
//! bounded-frequency runner (`--iptables-min-sync-period`: a burst coalesces, a lone change
//! is applied at once). Both iptables backends, both families.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// One state of the churned Service: which pool members were endpoints, from (at the
/// earliest) `written` until (at the latest) the next state's `synced`.
struct Step {
    members: BTreeSet<usize>,
    written: Instant,
    synced: Instant,
}

/// Bystander Services (endpoints that run nothing, never probed): they make a full sync
/// large, so a delta sync's size shows it writes only the change.
const BYSTANDERS: u8 = 20;

fn churn(backend_kind: &'static str) {
    let mut c = Cluster::start(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    });
    // The pool: four pods here, one on node2; a decoy on node2 is never an endpoint.
    let new_pod = |host| c.lab.new_pod(host).expect("pod");
    let pods: Vec<Pod> = vec![
        new_pod(PodHost::Node),
        new_pod(PodHost::Node),
        new_pod(PodHost::Node),
        new_pod(PodHost::Node),
        new_pod(PodHost::Node2),
    ];
    let decoy_pod = new_pod(PodHost::Node2);
    let client = new_pod(PodHost::Node);
    let pool: Vec<&Pod> = pods.iter().collect();
    let backends: Vec<Backend> = pool
        .iter()
        .enumerate()
        .map(|(i, p)| backend(p, &format!("b{i}"), 8080))
        .collect();
    let decoy = backend(&decoy_pod, "decoy", 8080);
    let pool_eps: Vec<Vec<EndpointDef>> = pool.iter().map(|p| pod_endpoints(&[p])).collect();

    for n in 0..BYSTANDERS {
        let name = format!("bystander{n}");
        c.manifests
            .service(ServiceDef::cluster_ip(
                &name,
                &[svc_v4(100 + n), svc_v6(100 + n)],
                80,
                8080,
            ))
            .set_endpoints(
                &name,
                vec![
                    EndpointDef::ready([10, 0, 1, 200 + n], "node"),
                    EndpointDef::ready(
                        format!("fd00:10:1::{:x}", 0x200 + u16::from(n))
                            .parse::<std::net::IpAddr>()
                            .unwrap(),
                        "node",
                    ),
                ],
            );
    }
    let endpoints_of = |members: &BTreeSet<usize>| -> Vec<EndpointDef> {
        members
            .iter()
            .flat_map(|&i| pool_eps[i].iter().cloned())
            .collect()
    };
    let mut members: BTreeSet<usize> = [0].into();
    let svc = ServiceDef::cluster_ip("web", &[svc_v4(10), svc_v6(10)], 80, 8080);
    c.manifests
        .service(svc)
        .set_endpoints("web", endpoints_of(&members));
    let t = Instant::now();
    c.apply();
    let mut steps = vec![Step {
        members: members.clone(),
        written: t,
        synced: Instant::now(),
    }];

    let loops: Vec<(std::net::IpAddr, ProbeLoop)> = [svc_v4(10), svc_v6(10)]
        .into_iter()
        .map(|vip| {
            let p = ProbeLoop::start(
                &client,
                Probe::tcp(sock(vip, 80)).with_timeout(Duration::from_secs(2)),
                Duration::from_millis(2),
            )
            .expect("probe loop");
            (vip, p)
        })
        .collect();
    for (_, p) in &loops {
        assert!(p.wait_for_attempts(5, Duration::from_secs(10)));
    }

    let seed = 0x5eed_c4a2_u64 ^ u64::from(backend_kind.len() as u32);
    let mut rng = Rng(seed);
    for _ in 0..100 {
        let absent: Vec<usize> = (0..pool.len()).filter(|i| !members.contains(i)).collect();
        let add = members.len() == 1 || (!absent.is_empty() && rng.one_in(2));
        if add {
            members.insert(absent[rng.below(absent.len())]);
        } else {
            let present: Vec<usize> = members.iter().copied().collect();
            members.remove(&present[rng.below(present.len())]);
        }
        c.manifests.set_endpoints("web", endpoints_of(&members));
        let written = Instant::now();
        c.apply();
        steps.push(Step {
            members: members.clone(),
            written,
            synced: Instant::now(),
        });
    }
    // Let the last state be probed a little too.
    std::thread::sleep(Duration::from_millis(200));

    let mut answered_by = BTreeSet::new();
    for (vip, p) in loops {
        let records = p.stop();
        assert!(records.len() > 100, "{vip}: only {} probes", records.len());
        let failed: Vec<&ProbeRecord> =
            records.iter().filter(|r| !r.result.is_answered()).collect();
        assert!(
            failed.is_empty(),
            "{backend_kind} {vip}: {} of {} connections failed while endpoints changed, \
             first: {:?}\nlog:\n{}",
            failed.len(),
            records.len(),
            failed.iter().take(5).collect::<Vec<_>>(),
            c.log()
        );
        for r in &records {
            let name = r.result.backend().expect("answered");
            let index: Option<usize> = name.strip_prefix('b').and_then(|n| n.parse().ok());
            let end = r.at + r.took;
            // The states that may have been in the kernel while the probe connected.
            let possible: Vec<&Step> = steps
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    s.written <= end && steps.get(i + 1).is_none_or(|next| r.at <= next.synced)
                })
                .map(|(_, s)| s)
                .collect();
            assert!(
                index.is_some_and(|i| possible.iter().any(|s| s.members.contains(&i))),
                "{backend_kind} {vip}: answered by {name}, not an endpoint at the time; \
                 possible endpoint sets: {:?}",
                possible.iter().map(|s| &s.members).collect::<Vec<_>>()
            );
            answered_by.insert(name.to_owned());
        }
    }
    assert_eq!(decoy.served(), 0, "the decoy was never an endpoint");
    assert!(
        answered_by.len() >= 4,
        "churn should have spread connections over the pool: {answered_by:?}"
    );
    drop(backends);

    // The O(change) path was what ran: delta syncs, each a fraction of the full sync.
    c.assert_delta_syncs();
    let records = c.records("synced");
    for fam in ["IPv4", "IPv6"] {
        let of: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["fields"]["family"] == fam)
            .collect();
        // Revision 1 added every Service (a delta the size of a full sync).
        let rev = |r: &serde_json::Value| r["fields"]["revision"].as_u64().unwrap();
        let full: u64 = of
            .iter()
            .filter(|r| rev(r) <= 1)
            .map(|r| r["fields"]["bytes"].as_u64().unwrap())
            .sum();
        for r in of.iter().filter(|r| rev(r) >= 2) {
            let bytes = r["fields"]["bytes"].as_u64().unwrap();
            if r["fields"]["kind"] == "Delta" {
                assert!(
                    bytes * 3 < full,
                    "{backend_kind} {fam}: a delta sync of one endpoint change wrote {bytes} \
                     bytes, the one that added all Services {full}: {r}"
                );
            }
        }
    }
}

#[test]
fn endpoint_churn_loses_no_connection_nft() {
    churn("nft");
}

#[test]
fn endpoint_churn_loses_no_connection_legacy() {
    churn("legacy");
}

/// Waits until the daemon has logged `n` "synced" records in all; returns when it saw it.
fn wait_sync_count(c: &Cluster, n: usize, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    while c.records("synced").len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} syncs not logged in {timeout:?}: {:?}",
            c.syncs()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Instant::now()
}

/// `--iptables-min-sync-period=2s`: after a quiet period a change is applied at once, a
/// burst of ten changes is applied in at most two syncs (the first at once, the rest
/// coalesced once the period is over), and what the last one programmed is the burst's
/// final state.
fn bounded_frequency(backend_kind: &'static str) {
    let mut c = Cluster::prepare(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    });
    let args = c.daemon_args_with(&["--iptables-min-sync-period=2s"]);
    c.start_daemon_with_args(args);
    let pods: Vec<Pod> = (0..3)
        .map(|_| c.lab.new_pod(PodHost::Node).expect("pod"))
        .collect();
    let b0 = backend(&pods[0], "b0", 8080);
    let b1 = backend(&pods[1], "b1", 8080);
    let client = &pods[2];
    let ep0 = pod_endpoints(&[&pods[0]]);
    let ep1 = pod_endpoints(&[&pods[1]]);
    let vips = [svc_v4(20), svc_v6(20)];
    let only = |want: &str, c: &Cluster| {
        for vip in vips {
            let h = probe_many(client, &Probe::tcp(sock(vip, 80)), 20);
            assert_eq!(
                h,
                Histogram::from([(want.to_owned(), 20)]),
                "{backend_kind} {vip}: want only {want}; syncs {:?}",
                c.syncs()
            );
        }
    };

    // The Service, with b1; then a lone change to b0 after a quiet period (longer than
    // the min sync period) is in the kernel at once: traffic moves within a second.
    c.manifests
        .service(ServiceDef::cluster_ip("web", &vips, 80, 8080))
        .set_endpoints("web", ep1.clone());
    c.apply_within(Duration::from_secs(10));
    only("b1", &c);
    std::thread::sleep(Duration::from_millis(2200));
    let synced_before = c.records("synced").len();
    c.manifests.set_endpoints("web", ep0.clone());
    let t = Instant::now();
    let rev = c.write_seen(Duration::from_secs(5));
    let short = |vip| Probe::tcp(sock(vip, 80)).with_timeout(Duration::from_millis(200));
    for vip in vips {
        loop {
            let r = short(vip).run(client);
            if r.backend() == Some("b0") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{backend_kind} {vip}: a lone change was not applied within 1 s (last probe: \
                 {r}); syncs {:?}",
                c.syncs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let first = wait_sync_count(&c, synced_before + 2, Duration::from_secs(5));
    assert!(
        first - t < Duration::from_secs(1),
        "{backend_kind}: the lone change's sync came after {:?}",
        first - t
    );
    c.wait_synced(rev, Duration::from_secs(5));
    only("b0", &c);

    // A burst of ten changes, each seen by the source as a revision of its own, alternating
    // between b1 and both; the last leaves b1.
    std::thread::sleep(Duration::from_millis(2200));
    let before = c.records("synced").len();
    let burst_start = Instant::now();
    let mut first_seen: Option<Instant> = None;
    let mut last = 0;
    for i in 0..10 {
        let eps = if i % 2 == 1 {
            ep1.clone()
        } else {
            [ep0.clone(), ep1.clone()].concat()
        };
        c.manifests.set_endpoints("web", eps);
        last = c.write_seen(Duration::from_secs(5));
        if first_seen.is_none() && c.records("synced").len() >= before + 2 {
            first_seen = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let burst_took = burst_start.elapsed();
    assert!(
        burst_took < Duration::from_millis(1800),
        "the burst itself took {burst_took:?}: too slow a machine for this test"
    );
    let first_seen =
        first_seen.unwrap_or_else(|| wait_sync_count(&c, before + 2, Duration::from_secs(5)));
    assert!(
        first_seen - burst_start < Duration::from_secs(1),
        "{backend_kind}: the burst's first change waited {:?}",
        first_seen - burst_start
    );
    c.wait_synced(last, Duration::from_secs(10));
    let done = Instant::now();
    // No sync for the rest: give a would-be third one time to show up.
    std::thread::sleep(Duration::from_millis(2500));
    let burst_syncs: Vec<_> = c.syncs().split_off(before);
    for fam in ["IPv4", "IPv6"] {
        let n = burst_syncs.iter().filter(|s| s.0 == fam).count();
        assert!(
            (1..=2).contains(&n),
            "{backend_kind} {fam}: ten changes within {burst_took:?} made {n} syncs (at \
             most two): {burst_syncs:?}"
        );
    }
    assert!(
        done - burst_start >= Duration::from_millis(1900),
        "{backend_kind}: the burst was fully synced after {:?}, before the min sync period \
         was over: {burst_syncs:?}",
        done - burst_start
    );
    for fam in ["IPv4", "IPv6"] {
        let of: Vec<_> = burst_syncs.iter().filter(|s| s.0 == fam).collect();
        assert_eq!(
            of.last().map(|s| s.2),
            Some(last),
            "{fam}: the last sync includes revision {last}: {burst_syncs:?}"
        );
    }
    only("b1", &c);
    assert!(c.failed_syncs().is_empty(), "{:?}", c.failed_syncs());
    drop((b0, b1));
}

#[test]
fn bounded_frequency_runner_nft() {
    bounded_frequency("nft");
}

#[test]
fn bounded_frequency_runner_legacy() {
    bounded_frequency("legacy");
}

/// With a min sync period, a lone change is synced at once *and reported* at once, in one
/// sync per family: the revision the daemon logs is that of the change it applied.
fn lone_change_reported_in_one_sync(backend_kind: &'static str) {
    let mut c = Cluster::prepare(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 0,
            remote_pods: 0,
            ..LabConfig::default()
        },
        ..Options::default()
    });
    let args = c.daemon_args_with(&["--iptables-min-sync-period=2s"]);
    c.start_daemon_with_args(args);
    let vips = [svc_v4(21), svc_v6(21)];
    for port in [81, 82, 83] {
        std::thread::sleep(Duration::from_millis(2200));
        let before = c.records("synced").len();
        c.manifests
            .service(ServiceDef::cluster_ip("web", &vips, port, 8080));
        let t = Instant::now();
        let rev = c.write_seen(Duration::from_secs(5));
        c.wait_synced(rev, Duration::from_secs(5));
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(2200));
        let syncs = c.syncs().split_off(before);
        assert!(
            took < Duration::from_secs(1) && syncs.len() == 2,
            "{backend_kind}: revision {rev} (one Service port change) was reported after \
             {took:?}, in these syncs: {syncs:?}"
        );
    }
}

#[test]
fn lone_change_reported_in_one_sync_nft() {
    lone_change_reported_in_one_sync("nft");
}

#[test]
fn lone_change_reported_in_one_sync_legacy() {
    lone_change_reported_in_one_sync("legacy");
}
