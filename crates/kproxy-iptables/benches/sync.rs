//! Sync benchmark on a real kernel (root; each case in a fresh network namespace): the
//! first full sync (compile + restore) and one endpoint change at N services (event in →
//! rules in the kernel), each beside the kernel tool's own floor measured in the same run:
//! `iptables-restore` of the same full text, and `iptables-restore --noflush` of a one-rule
//! change to the same table. Prints a table. `cargo bench -p kproxy-iptables --bench sync`.
//! Sizes: `KPROXY_BENCH_SIZES=1000,10000` (default); backends: `KPROXY_BENCH_BACKENDS=nft|legacy`
//! (default both).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_iptables::compile::SyncKind;
use kproxy_iptables::{Backend, Config, Iptables, LocalDetector, Proxier, ProxierOptions};
use kproxy_model::{
    ChangeTracker, Endpoint, EndpointPort, EndpointSlice, IpFamily, Protocol, Service, ServicePort,
    ServiceType,
};
use kproxy_testutil::Netns;

const EPS: usize = 10;

fn service(i: usize) -> Service {
    let node_port = i.is_multiple_of(10);
    Service {
        namespace: format!("ns{}", i % 50),
        name: format!("svc{i}"),
        service_type: if node_port {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIp
        },
        cluster_ips: vec![IpAddr::V4(Ipv4Addr::from(0xac10_0000u32 + i as u32))],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: if node_port {
                30000 + (i % 2000) as u16
            } else {
                0
            },
        }],
        ..Service::default()
    }
}

/// Service `i`'s slice; `generation` > 0 replaces its last endpoint with another address (one
/// endpoint changed).
fn slice(i: usize, generation: u32) -> EndpointSlice {
    EndpointSlice {
        namespace: format!("ns{}", i % 50),
        name: format!("svc{i}-abcde"),
        service_name: format!("svc{i}"),
        address_family: IpFamily::V4,
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: (0..EPS)
            .map(|e| {
                let shift = if e == EPS - 1 { generation } else { 0 };
                let ip = 0x0a00_0000u32 + (i * EPS + e) as u32 + shift;
                let mut ep = Endpoint::ready(IpAddr::V4(Ipv4Addr::from(ip)));
                ep.node_name = Some(format!("node{}", e % 7));
                ep
            })
            .collect(),
        trigger_time: None,
    }
}

fn config() -> Config {
    let mut c = Config::new(IpFamily::V4, "node1");
    c.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    c
}

fn restore_tool(backend: Backend) -> String {
    format!("iptables-{backend}-restore")
}

/// Runs `tool args` in `ns` with `input` on stdin; returns the wall time.
fn timed_restore(ns: &Netns, backend: Backend, args: &[&str], input: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = ns
        .command(restore_tool(backend))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !kproxy_testutil::require_root() {
        eprintln!("the sync benchmark needs root (network namespaces)");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("KPROXY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![200] } else { vec![1000, 10_000] });
    println!(
        "| backend | services × {EPS} eps | first full sync (kproxy) | plain restore of the same text | ratio | one-endpoint change (kproxy, event → kernel) | one-rule --noflush restore | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let backends: Vec<Backend> = match std::env::var("KPROXY_BENCH_BACKENDS").as_deref() {
        Ok("nft") => vec![Backend::Nft],
        Ok("legacy") => vec![Backend::Legacy],
        _ => vec![Backend::Nft, Backend::Legacy],
    };
    for backend in backends {
        for &n in &sizes {
            run_case(backend, n);
        }
    }
}

fn run_case(backend: Backend, n: usize) {
    let verbose = std::env::var_os("KPROXY_BENCH_VERBOSE").is_some();
    let mut tracker = ChangeTracker::new(IpFamily::V4, "node1");
    for i in 0..n {
        tracker.update_service(service(i));
        tracker.update_endpoint_slice(slice(i, 0));
    }
    let changes = tracker.commit();

    // kproxy in a fresh namespace; its processes inherit the thread's namespace. The floors
    // are measured with the same tool on the same tables: the one-rule change in kproxy's
    // namespace right after its full sync, the full restore of kproxy's very input in
    // another fresh namespace.
    let ns = Netns::new("bkp").expect("netns");
    let (full, floor_one, change, input) = ns
        .enter(move || {
            let iptables = Iptables::new(IpFamily::V4, backend).expect("iptables");
            let mut proxier = Proxier::new(
                iptables,
                config(),
                ProxierOptions {
                    incremental_kind: SyncKind::Delta,
                    keep_last_input: true,
                    ..ProxierOptions::default()
                },
            );
            let start = Instant::now();
            let report = proxier
                .sync(tracker.state(), &changes, Instant::now())
                .expect("full sync");
            let full = start.elapsed();
            assert_eq!(report.kind, SyncKind::Full);
            if verbose {
                eprintln!(
                    "full: total {full:?} compile {:?} restore {:?} ({} bytes)",
                    report.compile_time,
                    report.restore.map(|r| r.elapsed),
                    report.restore.map_or(0, |r| r.bytes)
                );
            }
            let mut input = Vec::new();
            proxier
                .last_input()
                .expect("kept")
                .write_to(&mut input)
                .expect("buffer");
            // The tool's floor for a one-rule change to these tables: insert a rule, then
            // delete it again (best of 3 inserts).
            let mut floor_one = Duration::MAX;
            for k in 0..3 {
                let rule = format!(
                    "-m comment --comment \"bench one rule\" -m tcp -p tcp -d 172.31.255.{k} --dport 80 -j KUBE-MARK-MASQ"
                );
                let insert = format!("*nat\n-I KUBE-SERVICES 1 {rule}\nCOMMIT\n");
                let delete = format!("*nat\n-D KUBE-SERVICES {rule}\nCOMMIT\n");
                let start = Instant::now();
                run_restore(backend, insert.as_bytes());
                floor_one = floor_one.min(start.elapsed());
                run_restore(backend, delete.as_bytes());
            }
            let mut best = Duration::MAX;
            for generation in 1..=5u32 {
                let start = Instant::now();
                tracker.update_endpoint_slice(slice(n / 2, generation * 1_000_000));
                let changes = tracker.commit();
                let report = proxier
                    .sync(tracker.state(), &changes, Instant::now())
                    .expect("delta sync");
                best = best.min(start.elapsed());
                assert_eq!(report.kind, SyncKind::Delta);
                if verbose {
                    eprintln!(
                        "delta: total {:?} compile {:?} restore {:?} ({} bytes)",
                        start.elapsed(),
                        report.compile_time,
                        report.restore.map(|r| r.elapsed),
                        report.restore.map_or(0, |r| r.bytes)
                    );
                }
            }
            (full, floor_one, best, input)
        })
        .expect("namespace thread");
    drop(ns);

    let floor_ns = Netns::new("bfl").expect("netns");
    // The input uses kube-proxy's nfacct counters: create them as kproxy did.
    floor_ns
        .enter(|| {
            let mut acct = kproxy_conntrack::nfacct::NfAcct::new().expect("nfacct");
            for name in [
                kproxy_conntrack::nfacct::CT_STATE_INVALID_DROPPED_PKTS,
                kproxy_conntrack::nfacct::LOCALHOST_NPS_ACCEPTED_PKTS,
            ] {
                acct.ensure(name).expect("nfacct counter");
            }
        })
        .expect("namespace thread");
    let floor_full = timed_restore(&floor_ns, backend, &["--noflush", "--counters"], &input);
    drop(floor_ns);

    println!(
        "| {backend} | {n} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
        ms(full),
        ms(floor_full),
        full.as_secs_f64() / floor_full.as_secs_f64(),
        ms(change),
        ms(floor_one),
        change.as_secs_f64() / floor_one.as_secs_f64()
    );
}

/// Runs the restore tool in the calling thread's namespace.
fn run_restore(backend: Backend, input: &[u8]) {
    let mut child = Command::new(restore_tool(backend))
        .args(["--noflush", "--counters"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    assert!(child.wait().expect("wait").success());
}
