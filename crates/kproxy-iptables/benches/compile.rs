//! Compile-time benchmark: full compiles of 1k/10k/20k services × 10 endpoints, and a
//! partial compile of one changed service at 10k. Prints a table (median of several runs)
//! and the peak RSS. Run with `cargo bench -p kproxy-iptables --bench compile`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use kproxy_iptables::{Compiler, Config, LocalDetector, SyncKind, SyncRequest};
use kproxy_model::{
    ChangeTracker, Changes, Endpoint, EndpointPort, EndpointSlice, IpFamily, Protocol, Service,
    ServicePort, ServiceType,
};

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

fn slice(i: usize, eps: usize, generation: u32) -> EndpointSlice {
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
        endpoints: (0..eps)
            .map(|e| {
                let ip = 0x0a00_0000u32 + (i * eps + e) as u32 + generation;
                let mut ep = Endpoint::ready(IpAddr::V4(Ipv4Addr::from(ip)));
                ep.node_name = Some(format!("node{}", e % 7));
                ep
            })
            .collect(),
        trigger_time: None,
    }
}

fn state(services: usize, eps: usize) -> ChangeTracker {
    let mut t = ChangeTracker::new(IpFamily::V4, "node1");
    for i in 0..services {
        t.update_service(service(i));
        t.update_endpoint_slice(slice(i, eps, 0));
    }
    t.commit();
    t
}

fn config() -> Config {
    let mut c = Config::new(IpFamily::V4, "node1");
    c.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().unwrap());
    c
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run tiny sizes.
    let quick = !std::env::args().any(|a| a == "--bench");
    if let Ok(what) = std::env::var("KPROXY_BENCH_PROFILE") {
        return profile(&what);
    }
    if let Ok(n) = std::env::var("KPROXY_BENCH_MEMORY") {
        return memory(n.parse().expect("size"));
    }
    let sizes: &[usize] = if quick {
        &[100]
    } else {
        &[1_000, 10_000, 20_000]
    };
    let eps = 10;
    let runs = if quick { 1 } else { 7 };
    println!("| case | services | endpoints | time (median of {runs}) | output | rules |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let t = state(n, eps);
        let empty = Changes::default();
        let mut times = Vec::new();
        let mut out_len = 0;
        let mut rules = 0;
        for _ in 0..runs {
            let mut compiler = Compiler::new(config());
            let start = Instant::now();
            let out = compiler.compile(
                t.state(),
                SyncRequest {
                    kind: SyncKind::Full,
                    changed: &empty,
                    existing_nat_chains: None,
                },
            );
            times.push(start.elapsed());
            out_len = out.restore.len();
            rules = out.stats.nat_rules_written + out.stats.filter_rules;
        }
        println!(
            "| full, cold compiler | {n} | {} | {:.1} ms | {:.1} MiB | {rules} |",
            n * eps,
            median(times).as_secs_f64() * 1e3,
            out_len as f64 / (1 << 20) as f64
        );
    }
    let n = if quick { 100 } else { 10_000 };
    let mut t = state(n, eps);
    let mut compiler = Compiler::new(config());
    let empty = Changes::default();
    compiler.compile(
        t.state(),
        SyncRequest {
            kind: SyncKind::Full,
            changed: &empty,
            existing_nat_chains: None,
        },
    );
    // Warm full sync (periodic resync): chain names reused from the cache.
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = compiler.compile(
            t.state(),
            SyncRequest {
                kind: SyncKind::Full,
                changed: &empty,
                existing_nat_chains: None,
            },
        );
        times.push(start.elapsed());
        std::hint::black_box(out);
    }
    println!(
        "| full, warm compiler | {n} | {} | {:.1} ms | | |",
        n * eps,
        median(times).as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    let mut out_len = 0;
    for generation in 1..=runs as u32 {
        t.update_endpoint_slice(slice(n / 2, eps, generation * 1_000_000));
        let changes = t.commit();
        let start = Instant::now();
        let out = compiler.compile(
            t.state(),
            SyncRequest {
                kind: SyncKind::Partial,
                changed: &changes,
                existing_nat_chains: None,
            },
        );
        times.push(start.elapsed());
        out_len = out.restore.len();
        assert_eq!(out.stats.written_service_ports, 1);
        assert!(out.stats.incremental);
    }
    println!(
        "| partial, 1 changed service | {n} | {} | {:.3} ms | {:.2} MiB | |",
        n * eps,
        median(times).as_secs_f64() * 1e3,
        out_len as f64 / (1 << 20) as f64
    );
    // Peak memory of one full compile, each size in its own process (state + compiler +
    // output, as a node daemon holds them).
    println!(
        "\n| services × {eps} endpoints | peak RSS (state + compiler + full output) |\n|---:|---:|"
    );
    let exe = std::env::current_exe().expect("self");
    for &n in sizes {
        let out = std::process::Command::new(&exe)
            .env("KPROXY_BENCH_MEMORY", n.to_string())
            .output()
            .expect("run self");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn memory(n: usize) {
    let t = state(n, 10);
    let mut compiler = Compiler::new(config());
    let out = compiler.compile(
        t.state(),
        SyncRequest {
            kind: SyncKind::Full,
            changed: &Changes::default(),
            existing_nat_chains: None,
        },
    );
    std::hint::black_box(&out);
    println!("| {n} | {:.0} MiB |", peak_rss_mib());
}

/// Runs one case in a loop, for `perf record`: `KPROXY_BENCH_PROFILE=full|partial`.
fn profile(what: &str) {
    let n = 10_000;
    let mut t = state(n, 10);
    let empty = Changes::default();
    let mut compiler = Compiler::new(config());
    let full = SyncRequest {
        kind: SyncKind::Full,
        changed: &empty,
        existing_nat_chains: None,
    };
    compiler.compile(t.state(), full);
    let start = Instant::now();
    for generation in 1..=50u32 {
        if what == "partial" {
            t.update_endpoint_slice(slice(n / 2, 10, generation * 1_000_000));
            let changes = t.commit();
            let req = SyncRequest {
                kind: SyncKind::Partial,
                changed: &changes,
                existing_nat_chains: None,
            };
            std::hint::black_box(compiler.compile(t.state(), req));
        } else {
            let mut c = Compiler::new(config());
            std::hint::black_box(c.compile(t.state(), full));
        }
    }
    println!(
        "{what}: {:.2} ms per compile",
        start.elapsed().as_secs_f64() * 1e3 / 50.0
    );
}
