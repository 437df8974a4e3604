//! End-to-end harness: a namespace lab (kproxy_testutil::Lab), Kubernetes manifests written
//! for it, and the real `kproxy run` daemon in the node namespace, fed through its file
//! source. Every test builds its own lab; the host's namespace is never touched.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use kproxy_testutil::*;

/// The iptables backends.
pub const BACKENDS: [&str; 2] = ["nft", "legacy"];

/// A Service port.
#[derive(Clone, Debug)]
pub struct PortDef {
    pub name: String,
    pub protocol: &'static str,
    pub port: u16,
    pub node_port: u16,
    pub target_port: u16,
}

/// A Service, as the harness writes it.
#[derive(Clone, Debug)]
pub struct ServiceDef {
    pub namespace: String,
    pub name: String,
    pub kind: &'static str,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortDef>,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub source_ranges: Vec<String>,
    pub external_policy: &'static str,
    pub internal_policy: &'static str,
    pub health_check_node_port: u16,
    pub affinity_timeout: Option<u32>,
}

impl ServiceDef {
    /// A ClusterIP Service `default/<name>` with one TCP port `port` → `target`.
    pub fn cluster_ip(name: &str, ips: &[IpAddr], port: u16, target: u16) -> ServiceDef {
        ServiceDef {
            namespace: "default".into(),
            name: name.into(),
            kind: "ClusterIP",
            cluster_ips: ips.to_vec(),
            ports: vec![PortDef {
                name: "p".into(),
                protocol: "TCP",
                port,
                node_port: 0,
                target_port: target,
            }],
            external_ips: vec![],
            lb_ips: vec![],
            source_ranges: vec![],
            external_policy: "Cluster",
            internal_policy: "Cluster",
            health_check_node_port: 0,
            affinity_timeout: None,
        }
    }

    /// Switches every port to UDP.
    pub fn udp(mut self) -> Self {
        for p in &mut self.ports {
            p.protocol = "UDP";
        }
        self
    }

    /// Makes it a NodePort Service on `node_port`.
    pub fn node_port(mut self, node_port: u16) -> Self {
        self.kind = "NodePort";
        self.ports[0].node_port = node_port;
        self
    }

    fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: {}\n  name: {}\nspec:\n  type: {}",
            self.namespace, self.name, self.kind
        );
        let families: Vec<&str> = self
            .cluster_ips
            .iter()
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
        if let Some(first) = self.cluster_ips.first() {
            let _ = writeln!(
                y,
                "  clusterIP: {first}\n  clusterIPs: [{}]\n  ipFamilies: [{}]",
                join(&self.cluster_ips),
                families.join(", ")
            );
        }
        let _ = writeln!(
            y,
            "  externalTrafficPolicy: {}\n  internalTrafficPolicy: {}",
            self.external_policy, self.internal_policy
        );
        if self.health_check_node_port != 0 {
            let _ = writeln!(y, "  healthCheckNodePort: {}", self.health_check_node_port);
        }
        if !self.external_ips.is_empty() {
            let _ = writeln!(y, "  externalIPs: [{}]", join(&self.external_ips));
        }
        if !self.source_ranges.is_empty() {
            let _ = writeln!(
                y,
                "  loadBalancerSourceRanges: [{}]",
                self.source_ranges.join(", ")
            );
        }
        match self.affinity_timeout {
            Some(t) => {
                let _ = writeln!(
                    y,
                    "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {t}"
                );
            }
            None => y.push_str("  sessionAffinity: None\n"),
        }
        y.push_str("  ports:\n");
        for p in &self.ports {
            let _ = writeln!(
                y,
                "  - name: {}\n    protocol: {}\n    port: {}\n    targetPort: {}",
                p.name, p.protocol, p.port, p.target_port
            );
            if p.node_port != 0 {
                let _ = writeln!(y, "    nodePort: {}", p.node_port);
            }
        }
        if !self.lb_ips.is_empty() {
            y.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for ip in &self.lb_ips {
                let _ = writeln!(y, "    - ip: {ip}\n      ipMode: VIP");
            }
        }
        y
    }
}

/// One endpoint of a slice.
#[derive(Clone, Debug)]
pub struct EndpointDef {
    pub ip: IpAddr,
    pub node: &'static str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl EndpointDef {
    /// A ready endpoint on `node` ("node" or "node2").
    pub fn ready(ip: impl Into<IpAddr>, node: &'static str) -> EndpointDef {
        EndpointDef {
            ip: ip.into(),
            node,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The manifests the harness writes: Services and, per Service and family, one
/// EndpointSlice whose ports mirror the Service's (name, protocol, target port).
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub services: BTreeMap<String, ServiceDef>,
    pub endpoints: BTreeMap<String, Vec<EndpointDef>>,
    pub node_yaml: String,
}

impl Manifests {
    /// Adds or replaces a Service.
    pub fn service(&mut self, svc: ServiceDef) -> &mut Self {
        self.services.insert(svc.name.clone(), svc);
        self
    }

    /// Sets a Service's endpoints.
    pub fn set_endpoints(&mut self, service: &str, eps: Vec<EndpointDef>) -> &mut Self {
        self.endpoints.insert(service.into(), eps);
        self
    }

    /// Removes a Service and its endpoints.
    pub fn remove(&mut self, service: &str) -> &mut Self {
        self.services.remove(service);
        self.endpoints.remove(service);
        self
    }

    fn to_yaml(&self) -> String {
        let mut docs = vec![self.node_yaml.clone()];
        for svc in self.services.values() {
            docs.push(svc.to_yaml());
        }
        for (name, eps) in &self.endpoints {
            let Some(svc) = self.services.get(name) else {
                continue;
            };
            for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
                let eps: Vec<&EndpointDef> =
                    eps.iter().filter(|e| e.ip.is_ipv4() == is_v4).collect();
                let mut y = String::new();
                let _ = writeln!(
                    y,
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {}\n  name: {}-{}\n  labels:\n    kubernetes.io/service-name: {}\naddressType: {family}\nports:",
                    svc.namespace,
                    name,
                    family.to_lowercase(),
                    name
                );
                for p in &svc.ports {
                    let _ = writeln!(
                        y,
                        "- name: {}\n  protocol: {}\n  port: {}",
                        p.name, p.protocol, p.target_port
                    );
                }
                if eps.is_empty() {
                    y.push_str("endpoints: []\n");
                } else {
                    y.push_str("endpoints:\n");
                }
                for e in eps {
                    let _ = writeln!(
                        y,
                        "- addresses: [\"{}\"]\n  nodeName: {}\n  conditions: {{ready: {}, serving: {}, terminating: {}}}",
                        e.ip, e.node, e.ready, e.serving, e.terminating
                    );
                }
                docs.push(y);
            }
        }
        docs.join("---\n")
    }
}

/// Options of a [`Cluster`].
#[derive(Clone, Debug)]
pub struct Options {
    /// `nft` or `legacy`.
    pub backend: &'static str,
    /// Extra daemon flags.
    pub args: Vec<String>,
    /// The lab's layout.
    pub lab: LabConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: "nft",
            args: vec![],
            lab: LabConfig::default(),
        }
    }
}

/// A running daemon and its log.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
    raw: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lab with kproxy running on its node.
pub struct Cluster {
    pub lab: Lab,
    pub manifests: Manifests,
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    revision: u64,
    opts: Options,
}

/// Service CIDRs for the tests.
pub fn svc_v4(n: u8) -> IpAddr {
    IpAddr::from([10, 96, 0, n])
}

pub fn svc_v6(n: u8) -> IpAddr {
    format!("fd00:96::{n:x}").parse().expect("valid")
}

impl Cluster {
    /// Builds the lab, writes the Node manifest and starts the daemon; returns after its
    /// first sync.
    pub fn start(opts: Options) -> Cluster {
        assert!(require_root(), "privileged test: run as root (CI does)");
        let lab = Lab::with_config(opts.lab.clone()).expect("lab");
        let cfg = lab.config().clone();
        let node_yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node\n  labels:\n    topology.kubernetes.io/zone: zone-a\nspec:\n  podCIDRs: [\"{}\", \"{}\"]\nstatus:\n  addresses:\n  - {{type: InternalIP, address: \"{}\"}}\n  - {{type: InternalIP, address: \"{}\"}}\n",
            cfg.node_pods_v4, cfg.node_pods_v6, lab.node.v4, lab.node.v6
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster {
            lab,
            manifests: Manifests {
                node_yaml,
                ..Manifests::default()
            },
            dir,
            daemon: None,
            revision: 0,
            opts,
        };
        c.write();
        c.start_daemon();
        c
    }

    fn manifest_path(&self) -> std::path::PathBuf {
        self.dir.path().join("cluster.yaml")
    }

    fn write(&self) {
        // Atomically: the file source must never see half a file.
        let tmp = self.dir.path().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, self.manifests.to_yaml()).expect("write manifests");
        std::fs::rename(&tmp, self.manifest_path()).expect("rename manifests");
    }

    /// The daemon's command line.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--source",
            self.dir.path().to_str().expect("utf-8 path"),
            "--hostname-override=node",
            "--cluster-cidr=10.0.0.0/16,fd00:10::/32",
            "--iptables-min-sync-period=0s",
            "--iptables-sync-period=2s",
            "--logging-format=json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--iptables-backend={}", self.opts.backend));
        args.extend(self.opts.args.iter().cloned());
        args
    }

    /// Starts the daemon (again) and waits for its first sync of both families.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none());
        let mut child = self
            .lab
            .node
            .command(env!("CARGO_BIN_EXE_kproxy"))
            .args(self.daemon_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kproxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        {
            let log = log.clone();
            let raw = raw.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    raw.lock().unwrap().push_str(&line);
                    raw.lock().unwrap().push('\n');
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        log.lock().unwrap().push(v);
                    }
                }
            });
        }
        self.daemon = Some(Daemon { child, log, raw });
        self.wait_synced(self.revision, Duration::from_secs(30));
    }

    /// Stops the daemon (SIGTERM; rules stay in place).
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.child.wait();
            // The file source's revisions restart at 0 with the next daemon.
            self.revision = 0;
        }
    }

    /// Kills the daemon without warning.
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
            self.revision = 0;
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.raw.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The daemon's JSON log records with `message == msg`.
    pub fn records(&self, msg: &str) -> Vec<serde_json::Value> {
        self.daemon
            .as_ref()
            .map(|d| {
                d.log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|v| v["fields"]["message"] == msg)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until both families report a sync that includes source revision `revision`.
    pub fn wait_synced(&self, revision: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let synced = self.records("synced");
            let done = ["IPv4", "IPv6"].iter().all(|fam| {
                synced.iter().any(|r| {
                    r["fields"]["family"] == *fam
                        && r["fields"]["revision"]
                            .as_u64()
                            .is_some_and(|n| n >= revision)
                })
            });
            if done {
                return;
            }
            if let Some(d) = &self.daemon {
                assert!(
                    Instant::now() < deadline,
                    "kproxy did not sync revision {revision} in {timeout:?}; log:\n{}",
                    d.raw.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes the manifests and waits until the daemon has programmed them.
    pub fn apply(&mut self) {
        self.write();
        self.revision += 1;
        self.wait_synced(self.revision, Duration::from_secs(30));
    }

    /// `iptables-save` (or `ip6tables-save`) of the node, without comments and counters.
    pub fn save(&self, v6: bool, table: &str) -> String {
        let tool = format!(
            "{}-{}-save",
            if v6 { "ip6tables" } else { "iptables" },
            self.opts.backend
        );
        self.lab
            .node
            .run(&[&tool, "-t", table])
            .expect("iptables-save")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                if l.starts_with(':') {
                    // ":CHAIN POLICY [p:b]" → drop counters.
                    l.rsplit_once(' ').map_or(l, |(a, _)| a).to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs an iptables command in the node.
    pub fn iptables(&self, v6: bool, args: &[&str]) -> String {
        let tool = format!(
            "{}-{}",
            if v6 { "ip6tables" } else { "iptables" },
            self.opts.backend
        );
        let mut full = vec![tool.as_str()];
        full.extend_from_slice(args);
        self.lab.node.run(&full).expect("iptables")
    }

    pub fn backend(&self) -> &'static str {
        self.opts.backend
    }
}

/// `ip:port` in both families.
pub fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Starts a TCP+UDP backend named after the pod in `pod` on `port` (both families).
pub fn backend(pod: &Pod, name: &str, port: u16) -> Backend {
    Backend::start(pod, name, &pod.socks(port)).expect("backend")
}

/// An HTTP response as read off the wire by [`http_get`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (no chunked encoding expected).
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET <path>` (HTTP/1.1, `Connection: close`) to `target` over a plain TCP socket, from a
/// thread inside `ns`; reads until the server closes. Errors are described.
pub fn http_get(ns: &Netns, target: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let raw = ns
        .enter(move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET {target}: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {raw:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

impl Cluster {
    /// Like [`Cluster::apply`], waiting at most `timeout` for the sync.
    pub fn apply_within(&mut self, timeout: Duration) {
        self.write();
        self.revision += 1;
        self.wait_synced(self.revision, timeout);
    }
}

// ---------------------------------------------------------------------------------------
// Sync machinery tests: a lab without a daemon yet, a daemon with other flags, writes that
// do not wait for a sync, restores, rulesets compared the way the kernel sees them.
// ---------------------------------------------------------------------------------------

/// The node name of a pod's host, as endpoints carry it.
pub fn pod_node(p: &Pod) -> &'static str {
    match p.host {
        PodHost::Node => "node",
        PodHost::Node2 => "node2",
    }
}

/// Ready endpoints for `pods`, both families each.
pub fn pod_endpoints(pods: &[&Pod]) -> Vec<EndpointDef> {
    pods.iter()
        .flat_map(|p| {
            [
                EndpointDef::ready(p.v4, pod_node(p)),
                EndpointDef::ready(p.v6, pod_node(p)),
            ]
        })
        .collect()
}

impl Cluster {
    /// Like [`Cluster::start`], but the daemon is not started: start it with
    /// [`Cluster::start_daemon`] (or [`Cluster::start_daemon_with_args`]) once the node is
    /// set up. The Node manifest is written.
    pub fn prepare(opts: Options) -> Cluster {
        assert!(require_root(), "privileged test: run as root (CI does)");
        let lab = Lab::with_config(opts.lab.clone()).expect("lab");
        let cfg = lab.config().clone();
        let node_yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node\n  labels:\n    topology.kubernetes.io/zone: zone-a\nspec:\n  podCIDRs: [\"{}\", \"{}\"]\nstatus:\n  addresses:\n  - {{type: InternalIP, address: \"{}\"}}\n  - {{type: InternalIP, address: \"{}\"}}\n",
            cfg.node_pods_v4, cfg.node_pods_v6, lab.node.v4, lab.node.v6
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cluster {
            lab,
            manifests: Manifests {
                node_yaml,
                ..Manifests::default()
            },
            dir,
            daemon: None,
            revision: 0,
            opts,
        };
        c.write();
        c
    }

    /// The directory the daemon reads its manifests from.
    pub fn source_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes the manifests without waiting for anything (no daemon needs to run): for a
    /// node set up before the daemon starts. A running daemon's revisions are not tracked:
    /// use [`Cluster::apply`] or [`Cluster::write_seen`] then.
    pub fn write_manifests(&self) {
        self.write();
    }

    /// Starts the daemon with exactly `args` (see [`Cluster::daemon_args`] for the usual
    /// ones) and waits for its first sync of both families.
    pub fn start_daemon_with_args(&mut self, args: Vec<String>) {
        assert!(self.daemon.is_none());
        let mut child = self
            .lab
            .node
            .command(env!("CARGO_BIN_EXE_kproxy"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kproxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        {
            let log = log.clone();
            let raw = raw.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    raw.lock().unwrap().push_str(&line);
                    raw.lock().unwrap().push('\n');
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        log.lock().unwrap().push(v);
                    }
                }
            });
        }
        self.daemon = Some(Daemon { child, log, raw });
        self.revision = 0;
        self.wait_synced(0, Duration::from_secs(30));
    }

    /// [`Cluster::daemon_args`] with each flag of `overrides` (`--name=value`) replacing the
    /// harness's own value of that flag, or added.
    pub fn daemon_args_with(&self, overrides: &[&str]) -> Vec<String> {
        let name = |a: &str| a.split('=').next().unwrap_or(a).to_owned();
        let mut args: Vec<String> = self
            .daemon_args()
            .into_iter()
            .filter(|a| !overrides.iter().any(|o| name(o) == name(a)))
            .collect();
        args.extend(overrides.iter().map(|s| s.to_string()));
        args
    }

    /// Writes the manifests and waits (up to `timeout`) until the daemon's file source has
    /// read them as a new revision ("manifests changed" logged), but not for a sync: for
    /// bursts of changes, each seen separately. Returns the revision.
    pub fn write_seen(&mut self, timeout: Duration) -> u64 {
        let before = self.records("manifests changed").len();
        self.write();
        self.revision += 1;
        let deadline = Instant::now() + timeout;
        while self.records("manifests changed").len() == before {
            assert!(
                Instant::now() < deadline,
                "the file source did not see revision {} in {timeout:?}; log:\n{}",
                self.revision,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.revision
    }

    /// The source revision last written through [`Cluster::apply`] or
    /// [`Cluster::write_seen`].
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Feeds `input` to `iptables-restore --noflush` (or `ip6tables-restore`) in the node.
    pub fn restore(&self, v6: bool, input: &str) {
        let tool = format!(
            "{}-{}-restore",
            if v6 { "ip6tables" } else { "iptables" },
            self.opts.backend
        );
        let out = self
            .lab
            .node
            .run_with_input(&[&tool, "--noflush"], input.as_bytes())
            .expect("run iptables-restore");
        assert!(
            out.status.success(),
            "{tool} failed: {}\ninput:\n{input}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The daemon's "synced" records as (family, kind, revision), in order.
    pub fn syncs(&self) -> Vec<(String, String, u64)> {
        self.records("synced")
            .iter()
            .map(|r| {
                let f = &r["fields"];
                (
                    f["family"].as_str().unwrap_or_default().to_owned(),
                    f["kind"].as_str().unwrap_or_default().to_owned(),
                    f["revision"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Failed syncs, but for waits on the host-wide xtables lock (other tests hold it).
    pub fn failed_syncs(&self) -> Vec<serde_json::Value> {
        self.records("sync failed; the next sync will be full")
            .into_iter()
            .filter(|r| {
                !r["fields"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("xtables lock"))
            })
            .collect()
    }

    /// Asserts that every sync but each family's first was a delta sync: the O(change) path.
    /// A sync that failed on the xtables lock (held by other tests) forces one full sync per
    /// family; those are allowed.
    pub fn assert_delta_syncs(&self) {
        let syncs = self.syncs();
        let lock_failures = self
            .records("sync failed; the next sync will be full")
            .len()
            - self.failed_syncs().len();
        assert!(
            self.failed_syncs().is_empty(),
            "{}: failed syncs: {:?}",
            self.backend(),
            self.failed_syncs()
        );
        let mut not_delta = Vec::new();
        for fam in ["IPv4", "IPv6"] {
            let kinds: Vec<&(String, String, u64)> = syncs.iter().filter(|s| s.0 == fam).collect();
            assert!(!kinds.is_empty(), "no {fam} sync logged");
            assert_eq!(kinds[0].1, "Full", "{fam}: first sync: {kinds:?}");
            not_delta.extend(kinds[1..].iter().filter(|s| s.1 != "Delta").cloned());
        }
        assert!(
            not_delta.len() <= lock_failures,
            "{}: syncs after the first that were not delta syncs: {not_delta:?} \
             (lock failures: {lock_failures}); all syncs: {syncs:?}",
            self.backend()
        );
    }
}

/// One table of an `iptables-save` (as [`Cluster::save`] gives it): chain → policy
/// (`-` for a user chain) and rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Chain name → policy.
    pub chains: BTreeMap<String, String>,
    /// Chain name → its rules (the `-A CHAIN` prefix removed), in order.
    pub rules: BTreeMap<String, Vec<String>>,
}

impl SavedTable {
    /// Parses one table of `iptables-save` output (lines of other tables are ignored).
    pub fn parse(text: &str) -> SavedTable {
        let mut t = SavedTable::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(':') {
                let mut words = rest.split_whitespace();
                let name = words.next().unwrap_or_default().to_owned();
                let policy = words.next().unwrap_or("-").to_owned();
                t.rules.entry(name.clone()).or_default();
                t.chains.insert(name, policy);
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
                t.rules
                    .entry(chain.to_owned())
                    .or_default()
                    .push(rule.to_owned());
            }
        }
        t
    }

    /// The rules of `chain` (empty if none or no such chain).
    pub fn chain(&self, chain: &str) -> &[String] {
        self.rules.get(chain).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The differences between two tables, as kproxy's rules must agree, or `None` if they
/// agree: the same chains; the same rules in the same order in every chain but those for
/// which `as_multiset(chain)` holds, which must hold the same rules in any order.
pub fn table_differences(
    a: &SavedTable,
    b: &SavedTable,
    as_multiset: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut out = String::new();
    let names_a: Vec<&String> = a.chains.keys().collect();
    let names_b: Vec<&String> = b.chains.keys().collect();
    if names_a != names_b {
        let _ = writeln!(
            out,
            "chains differ: only in the first {:?}, only in the second {:?}",
            names_a
                .iter()
                .filter(|c| !b.chains.contains_key(**c))
                .collect::<Vec<_>>(),
            names_b
                .iter()
                .filter(|c| !a.chains.contains_key(**c))
                .collect::<Vec<_>>()
        );
    }
    let all: std::collections::BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
    for chain in all {
        let (ra, rb) = (a.chain(chain), b.chain(chain));
        if as_multiset(chain) {
            let (mut sa, mut sb) = (ra.to_vec(), rb.to_vec());
            sa.sort();
            sb.sort();
            if sa != sb {
                let _ = writeln!(
                    out,
                    "{chain} (any order) differs:\n  only in the first: {:?}\n  only in the second: {:?}",
                    ra.iter().filter(|r| !rb.contains(r)).collect::<Vec<_>>(),
                    rb.iter().filter(|r| !ra.contains(r)).collect::<Vec<_>>()
                );
            }
        } else if ra != rb {
            let _ = writeln!(
                out,
                "{chain} differs:\n  first:  {ra:#?}\n  second: {rb:#?}"
            );
        }
    }
    (!out.is_empty()).then_some(out)
}

/// kproxy's top-level chains, whose rules are ordered by service only by chance: after
/// delta syncs their order is not a full sync's (`KUBE-SERVICES`, `KUBE-NODEPORTS` and the
/// filter chains with per-service rules).
pub fn is_top_level_chain(chain: &str) -> bool {
    matches!(
        chain,
        "KUBE-SERVICES" | "KUBE-NODEPORTS" | "KUBE-EXTERNAL-SERVICES" | "KUBE-PROXY-FIREWALL"
    )
}

/// A small deterministic random number generator (SplitMix64) for reproducible random
/// scenarios; the seed is printed by the tests that use it.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}
