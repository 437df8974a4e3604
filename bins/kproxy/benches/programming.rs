//! Network programming latency of the whole daemon (root; `cargo bench -p kproxy --bench
//! programming`): the real `kproxy run` in a network namespace, watching the fake API server
//! of kproxy-k8s's tests (the real HTTP list/watch protocol, served from the same namespace)
//! that holds N Services × 10 endpoints. After the first sync, one endpoint of one Service is
//! changed at the API, again and again; each time the bench takes the time from the change at
//! the API to the end of the sync that wrote it to the kernel (the daemon's "synced" log line,
//! printed right after `iptables-restore` exited) — the next change is made only when the
//! previous one is in, so each change is a lone one, as on a quiet cluster. Then the daemon
//! is left alone and its CPU use (its own and its children's) and memory are read from /proc.
//!
//! Prints a table: p50/p90/p99/max over the changes, and which part of each was whose (the
//! API server and watch → the sync engine; compiling; the restore tool).
//!
//! `KPROXY_BENCH_CASES=legacy:10000,nft:2000` (backend:services, the default),
//! `KPROXY_BENCH_CHANGES=1000` (default), `KPROXY_BENCH_IDLE_SECS=60` (default).
//! The daemon runs with `--iptables-min-sync-period=0s`: the bench measures the pipeline, not
//! the rate limit (with the default 1 s a lone change is applied at once too; only a second
//! change within a second of a sync waits).

#[path = "../../../crates/kproxy-k8s/tests/support/fake_api.rs"]
mod fake_api;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use kproxy_testutil::{Netns, require_root};
use serde_json::{Value, json};

const NODE_IP: &str = "192.168.50.10";
const EPS: usize = 10;

fn service(i: usize) -> Value {
    let ip = format!("172.16.{}.{}", i >> 8, i & 255);
    let node_port = i.is_multiple_of(10);
    let mut port = json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080});
    if node_port {
        port["nodePort"] = json!(30000 + (i / 10) % 2700);
    }
    json!({
        "kind": "Service",
        "metadata": {"namespace": format!("ns{}", i % 50), "name": format!("svc{i}")},
        "spec": {
            "type": if node_port { "NodePort" } else { "ClusterIP" },
            "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
            "ports": [port]
        }
    })
}

/// Service `i`'s slice; its last endpoint's last octet is `last`.
fn slice(i: usize, last: u8) -> Value {
    let endpoints: Vec<Value> = (0..EPS)
        .map(|e| {
            let octet = if e + 1 == EPS { last } else { e as u8 + 1 };
            json!({
                "addresses": [format!("10.{}.{}.{octet}", i >> 8, i & 255)],
                "conditions": {"ready": true},
                "nodeName": "node"
            })
        })
        .collect();
    json!({
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": format!("ns{}", i % 50), "name": format!("svc{i}-abcde"),
            "labels": {"kubernetes.io/service-name": format!("svc{i}")}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// One "synced" line of the daemon's log, with the time it arrived.
struct Synced {
    at: Instant,
    family: String,
    kind: String,
    changed: usize,
    compile_ms: f64,
    restore_ms: f64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
}

fn parse_synced(at: Instant, line: &str) -> Option<Synced> {
    if !line.contains(" synced") {
        return None;
    }
    Some(Synced {
        at,
        family: field(line, "family")?.to_owned(),
        kind: field(line, "kind")?.to_owned(),
        changed: field(line, "changed")?.parse().ok()?,
        compile_ms: field(line, "compile_ms")?.parse().ok()?,
        restore_ms: field(line, "restore_ms")?.parse().ok()?,
    })
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime + cutime + cstime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14 of stat(5), i.e. index 11 after the state (field 3).
    f[11..15]
        .iter()
        .map(|v| v.parse::<u64>().expect("ticks"))
        .sum()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("status field")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Outcome {
    backend: String,
    services: usize,
    first_sync: Duration,
    first_restore_ms: f64,
    latencies: Vec<Duration>,
    compile_ms: Vec<f64>,
    restore_ms: Vec<f64>,
    idle_cpu_percent: f64,
    rss_mib: f64,
    hwm_mib: f64,
}

fn run_case(backend: &str, services: usize, changes: usize, idle: Duration) -> Outcome {
    let ns = Netns::new("prog").expect("netns");
    ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])
        .expect("node address");
    let api = ns
        .spawn(FakeApi::start)
        .expect("thread in namespace")
        .join()
        .expect("fake API server");
    api.apply(json!({
        "kind": "Node",
        "metadata": {"name": "node", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
    }));
    let mut last = vec![EPS as u8; services];
    for (i, &octet) in last.iter().enumerate() {
        api.apply(service(i));
        api.apply(slice(i, octet));
    }

    let started = Instant::now();
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_kproxy"))
        .args([
            "run",
            &format!("--master={}", api.url()),
            "--hostname-override=node",
            "--cluster-cidr=10.0.0.0/8",
            &format!("--iptables-backend={backend}"),
            "--iptables-min-sync-period=0s",
            // The default: every 30 s the daemon checks that its rules are still there.
            "--iptables-sync-period=30s",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kproxy");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let daemon = Daemon { child };
    let (tx, rx) = mpsc::channel::<Synced>();
    let verbose = std::env::var_os("KPROXY_BENCH_VERBOSE").is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if verbose {
                eprintln!("kproxy: {line}");
            }
            if let Some(s) = parse_synced(Instant::now(), &line) {
                if tx.send(s).is_err() {
                    return;
                }
            } else if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("kproxy: {line}");
            }
        }
    });

    let first = rx
        .recv_timeout(Duration::from_secs(3600))
        .expect("no first sync within an hour");
    assert_eq!(
        (&*first.family, &*first.kind),
        ("IPv4", "Full"),
        "first sync"
    );
    let first_sync = first.at - started;
    // The IPv4 rules are the ones that change. When the host has IPv6, each sync also syncs
    // IPv6 after IPv4 (nothing to write there): wait for that part before the next change.
    let dual = rx
        .recv_timeout(Duration::from_secs(60))
        .is_ok_and(|s| s.family == "IPv6");
    let next = |what: &str| {
        let s = rx
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("{what}: no sync within 10 minutes"));
        if dual {
            let v6 = rx
                .recv_timeout(Duration::from_secs(600))
                .unwrap_or_else(|_| panic!("{what}: no IPv6 sync within 10 minutes"));
            assert_eq!(v6.family, "IPv6", "{what}");
        }
        s
    };

    let mut latencies = Vec::with_capacity(changes);
    let mut compile_ms = Vec::with_capacity(changes);
    let mut restore_ms = Vec::with_capacity(changes);
    let mut changed = (0, 0, 0);
    for k in 0..changes {
        let i = (k * 7919) % services;
        let old = last[i];
        last[i] = if last[i] >= 250 {
            EPS as u8
        } else {
            last[i] + 1
        };
        changed = (i, old, last[i]);
        let t0 = Instant::now();
        api.apply(slice(i, last[i]));
        let s = next(&format!("change {k}"));
        assert!(
            s.family == "IPv4" && s.changed == 1 && s.kind != "Full",
            "change {k}: unexpected sync kind={} changed={}",
            s.kind,
            s.changed
        );
        latencies.push(s.at - t0);
        compile_ms.push(s.compile_ms);
        restore_ms.push(s.restore_ms);
    }

    // The kernel really has the last change.
    let (i, old, new) = changed;
    let rules = ns
        .run(&[&format!("iptables-{backend}-save"), "-t", "nat"])
        .expect("iptables-save");
    let prefix = format!("10.{}.{}.", i >> 8, i & 255);
    assert!(
        rules.contains(&format!("{prefix}{new}:8080")),
        "last change not in the kernel"
    );
    assert!(
        old == new || !rules.contains(&format!("{prefix}{old}:8080")),
        "replaced endpoint still in the kernel"
    );

    // Idle: nothing changes for a while.
    let ticks0 = cpu_ticks(pid);
    std::thread::sleep(idle);
    let ticks1 = cpu_ticks(pid);
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let idle_cpu_percent = (ticks1 - ticks0) as f64 / hz / idle.as_secs_f64() * 100.0;
    let rss_mib = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let hwm_mib = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    drop(daemon);
    drop(api);
    Outcome {
        backend: backend.to_owned(),
        services,
        first_sync,
        first_restore_ms: first.restore_ms,
        latencies,
        compile_ms,
        restore_ms,
        idle_cpu_percent,
        rss_mib,
        hwm_mib,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    if !require_root() {
        println!("programming benchmark skipped: it needs root (network namespaces)");
        return;
    }
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`): a tiny run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let cases = std::env::var("KPROXY_BENCH_CASES").unwrap_or_else(|_| {
        if quick {
            "nft:50".into()
        } else {
            "legacy:10000,nft:2000".into()
        }
    });
    let changes: usize = std::env::var("KPROXY_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 1000 });
    let idle = Duration::from_secs(
        std::env::var("KPROXY_BENCH_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 2 } else { 60 }),
    );
    let mut outcomes = Vec::new();
    for case in cases.split(',') {
        let (backend, n) = case.split_once(':').expect("backend:services");
        let n: usize = n.parse().expect("services");
        eprintln!("case {backend}, {n} services × {EPS} endpoints, {changes} changes…");
        outcomes.push(run_case(backend, n, changes, idle));
    }
    println!(
        "| backend | services × {EPS} | first full sync (restore) | changes | p50 | p90 | p99 | max | mean: API, watch, engine | compile | restore | idle CPU ({}s) | RSS (peak) |",
        idle.as_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        let mut sorted = o.latencies.clone();
        sorted.sort();
        let mean_total =
            o.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / sorted.len() as f64;
        let compile = mean(&o.compile_ms);
        let restore = mean(&o.restore_ms);
        println!(
            "| {} | {} | {:.2} s ({:.2} s) | {} | {} | {} | {} | {} | {:.1} ms | {:.2} ms | {:.1} ms | {:.2} % | {:.0} MiB ({:.0} MiB) |",
            o.backend,
            o.services,
            o.first_sync.as_secs_f64(),
            o.first_restore_ms / 1e3,
            sorted.len(),
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.90)),
            ms(percentile(&sorted, 0.99)),
            ms(*sorted.last().expect("changes")),
            mean_total - compile - restore,
            compile,
            restore,
            o.idle_cpu_percent,
            o.rss_mib,
            o.hwm_mib,
        );
    }
}
