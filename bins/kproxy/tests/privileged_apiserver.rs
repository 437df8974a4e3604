//! The real daemon against an API server: `kproxy run --master http://127.0.0.1:<port>`
//! (no `--source`) in a network namespace, with the fake API server of kproxy-k8s's tests
//! listening inside the same namespace. The Services, EndpointSlices and Node it serves
//! become iptables rules there, and changes made through it follow.

#[path = "../../../crates/kproxy-k8s/tests/support/fake_api.rs"]
mod fake_api;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use kproxy_testutil::{Netns, require_root};
use serde_json::{Value, json};

const NODE_IP: &str = "192.168.50.10";

fn service(name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "kind": "Service",
        "metadata": {"namespace": "default", "name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    })
}

fn slice(name: &str, svc: &str, ip: &str) -> Value {
    json!({
        "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node"}]
    })
}

/// The daemon, killed on drop, its stderr collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Whether the nat table sends `ip`:80 to a Service chain.
fn has_service(rules: &str, ip: &str) -> bool {
    let start = format!("-A KUBE-SERVICES -d {ip}/32 -p tcp");
    rules
        .lines()
        .any(|l| l.starts_with(&start) && l.contains("--dport 80 -j KUBE-SVC-"))
}

fn nat_rules(ns: &Netns) -> String {
    ns.run(&["iptables-nft-save", "-t", "nat"])
        .expect("iptables-save")
}

/// Waits until the nat table satisfies `ok`.
fn wait_rules(ns: &Netns, daemon: &Daemon, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = nat_rules(ns);
        if ok(&rules) {
            return rules;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in time.\nrules:\n{rules}\nlog:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn services_from_the_api_server_become_rules() {
    assert!(require_root(), "privileged test: run as root (CI does)");
    let ns = Netns::new("api").expect("netns");
    ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])
        .expect("node address");

    // The API server listens on 127.0.0.1 inside the namespace.
    let api = ns
        .spawn(FakeApi::start)
        .expect("thread in namespace")
        .join()
        .expect("fake API server");
    api.apply(service("web", "10.96.0.10", json!({})));
    api.apply(slice("web-1", "web", "10.244.1.5"));
    // Handed to another proxy: never programmed.
    api.apply(service(
        "elsewhere",
        "10.96.0.20",
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    ));
    api.apply(json!({
        "kind": "Node",
        "metadata": {"name": "node", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
    }));

    let mut child = ns
        .command(env!("CARGO_BIN_EXE_kproxy"))
        .args([
            "run",
            &format!("--master={}", api.url()),
            "--hostname-override=node",
            "--cluster-cidr=10.244.0.0/16",
            "--iptables-backend=nft",
            "--iptables-min-sync-period=0s",
            "--iptables-sync-period=2s",
            "--kube-api-content-type=application/vnd.kubernetes.protobuf",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kproxy");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let daemon = Daemon { child, log };

    let rules = wait_rules(&ns, &daemon, "web's rules", |r| {
        has_service(r, "10.96.0.10") && r.contains("10.244.1.5:8080")
    });
    assert!(!rules.contains("10.96.0.20"), "{rules}");
    let log = daemon.log();
    for line in [
        "waiting for the node's Node object",
        "node found",
        "initial lists complete",
        "speaks JSON only",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    // The local-traffic detector: the cluster CIDR given.
    assert!(rules.contains("10.244.0.0/16"), "{rules}");

    // Changes made on the API server follow: a new Service, a new endpoint, a delete.
    api.apply(service("db", "10.96.0.11", json!({})));
    api.apply(slice("db-1", "db", "10.244.1.6"));
    api.apply(slice("web-2", "web", "10.244.1.7"));
    wait_rules(&ns, &daemon, "db and web-2", |r| {
        has_service(r, "10.96.0.11")
            && r.contains("10.244.1.6:8080")
            && r.contains("10.244.1.7:8080")
    });
    assert!(api.delete("Service", "default", "web"));
    assert!(api.delete("EndpointSlice", "default", "web-1"));
    assert!(api.delete("EndpointSlice", "default", "web-2"));
    let rules = wait_rules(&ns, &daemon, "web gone", |r| !r.contains("10.96.0.10"));
    assert!(has_service(&rules, "10.96.0.11"), "{rules}");

    // An API outage changes nothing; after it, changes flow again.
    api.set_down(true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(nat_rules(&ns).contains("10.244.1.6:8080"));
    // Meanwhile db's endpoint moves, and the history is compacted: the daemon's watch
    // cannot resume (410), it re-lists, and the missed delete is applied.
    assert!(api.delete("EndpointSlice", "default", "db-1"));
    api.apply(slice("db-2", "db", "10.244.1.8"));
    api.compact();
    api.set_down(false);
    wait_rules(
        &ns,
        &daemon,
        "db-1 gone and db-2 in after the outage",
        |r| !r.contains("10.244.1.6:8080") && r.contains("10.244.1.8:8080"),
    );
    drop(daemon);
}
