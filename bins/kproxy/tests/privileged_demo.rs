//! `kproxy demo`, the README's first command, end to end: it builds its sandbox, runs the
//! real daemon on the bundled example cluster, sends traffic to every Service, prints the
//! table, and removes every namespace it made.

use std::process::{Command, Stdio};

use kproxy_testutil::require_root;

/// The namespaces on the host (`ip netns list`), names only.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The row of `table` for `service` from `from` to `target`.
fn row<'a>(table: &'a str, service: &str, from: &str, target: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(service) && l.contains(from) && l.contains(target))
        .unwrap_or_else(|| panic!("no row {service} / {from} / {target} in:\n{table}"))
}

#[test]
fn demo_shows_where_traffic_went_and_cleans_up() {
    assert!(require_root(), "privileged test: run as root (CI does)");
    let child = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .arg("demo")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kproxy demo");
    // The sandbox's namespaces are named `kpt-<tag>-<pid>-<n>`, after the demo's process.
    let mark = format!("-{}-", child.id());
    let out = child.wait_with_output().expect("kproxy demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");

    assert!(all.contains("kproxy synced IPv4: Full"), "{all}");
    assert!(all.contains("kproxy synced IPv6: Full"), "{all}");
    // Two endpoints on two nodes: both answer (60 tries each; the chance that one of
    // them never does is 2^-59).
    let dns = row(
        &all,
        "kube-system/kube-dns:dns ",
        "a pod on node-a",
        "10.96.0.10:53 (udp)",
    );
    assert!(
        dns.contains("node-a/pod-10.244.0.11 ×") && dns.contains("node-b/pod-10.244.1.12 ×"),
        "{dns}"
    );
    // The dual-stack Service over IPv6.
    let v6 = row(
        &all,
        "shop/api:grpc",
        "a pod on node-a",
        "[fd00:10:96::c80]:9090",
    );
    assert!(v6.contains("×"), "{v6}");
    // externalTrafficPolicy Local from outside: only node-a's own endpoint, and the backend
    // sees the client's address.
    let local = row(
        &all,
        "shop/ingress:https",
        "external client ",
        "192.168.49.2:30443",
    );
    assert!(local.contains("192.168.49.100"), "{local}");
    assert!(local.contains("node-a/pod-10.244.0.41 ×60"), "{local}");
    // Its health-check node port reports the local endpoint.
    let hc = row(
        &all,
        "shop/ingress ",
        "load balancer health check",
        ":32100",
    );
    assert!(
        hc.contains("200 OK") && hc.contains("\"localEndpoints\": 1"),
        "{hc}"
    );
    // No endpoints: refused at once, every time.
    let refused = row(
        &all,
        "shop/legacy:http",
        "a pod on node-a",
        "10.96.12.70:8000",
    );
    assert!(refused.contains("refused ×60"), "{refused}");
    // Headless: not proxied.
    assert!(row(&all, "shop/db:postgres", "-", "headless").contains("not proxied"));

    assert!(all.contains("removed the sandbox"), "{all}");
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with("kpt-") && n.contains(&mark))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
