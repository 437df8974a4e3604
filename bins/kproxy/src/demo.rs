//! `kproxy demo`: a newcomer's first look at the real thing. Builds a sandbox of network
//! namespaces shaped like the bundled example cluster (nodes, pods with the example's
//! addresses, an external client), runs `kproxy run` on the sandbox's node, sends traffic
//! to every Service and prints which backend answered how often, then removes everything.
//! It touches nothing outside its own namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ipnet::IpNet;
use kproxy_iptables::Backend;
use kproxy_model::{Protocol, ServiceType};
use kproxy_testutil::{
    Backend as Server, Lab, LabConfig, Netns, Pod, PodHost, Probe, Protocols, probe_many,
};

/// The bundled example cluster, embedded so that the demo runs from anywhere.
const EXAMPLE: &[(&str, &str)] = &[
    (
        "nodes.yaml",
        include_str!("../../../examples/cluster/nodes.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../../examples/cluster/services.yaml"),
    ),
    (
        "endpointslices.yaml",
        include_str!("../../../examples/cluster/endpointslices.yaml"),
    ),
    (
        "kube-proxy-config.yaml",
        include_str!("../../../examples/cluster/kube-proxy-config.yaml"),
    ),
];

/// Arguments of `kproxy demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The proxy mode to demonstrate.
    #[arg(long, default_value = "iptables")]
    pub proxy_mode: String,

    /// The iptables backend inside the sandbox.
    #[arg(long, default_value = "nft", value_parser = parse_backend)]
    pub iptables_backend: Backend,

    /// Connections (or datagrams) per Service and client.
    #[arg(long, default_value_t = 60)]
    pub requests: usize,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "nft" => Ok(Backend::Nft),
        "legacy" => Ok(Backend::Legacy),
        other => Err(format!("unknown backend {other:?} (nft or legacy)")),
    }
}

/// Node names of the example, mapped onto the sandbox.
fn pod_host(node: Option<&str>) -> Option<PodHost> {
    match node {
        Some("node-a") => Some(PodHost::Node),
        Some("node-b") => Some(PodHost::Node2),
        _ => None,
    }
}

/// The host number the sandbox gives an address in a pod CIDR (`10.244.0.21` → 21;
/// `fd00:10:244::21` → 21: the lab writes IPv6 host parts like the IPv4 ones).
fn host_number(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => Some(u32::from(v4.octets()[3])),
        IpAddr::V6(v6) => format!("{:x}", v6.segments()[7]).parse().ok(),
    }
}

/// One line of the report.
struct Row {
    service: String,
    from: String,
    target: String,
    result: String,
    /// The client address the backend saw (masqueraded or not).
    saw: String,
}

/// Runs the demo.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<()> {
    if args.proxy_mode != "iptables" {
        bail!(
            "proxy mode {:?} is not implemented yet: only iptables",
            args.proxy_mode
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("kproxy demo builds network namespaces: run it as root (sudo)");
    }
    let dir = tempfile::tempdir()?;
    for (name, text) in EXAMPLE {
        std::fs::write(dir.path().join(name), text)?;
    }
    let manifests = kproxy_k8s::manifests::load_path(dir.path())?;
    writeln!(
        out,
        "kproxy demo: the bundled example cluster ({} Services, {} EndpointSlices) in a sandbox of network namespaces",
        manifests.services.len(),
        manifests.endpoint_slices.len()
    )?;

    let net = |s: &str| -> Result<IpNet> { s.parse().context("address plan") };
    let lab = Lab::with_config(LabConfig {
        lan_v4: as_v4(net("192.168.49.0/24")?)?,
        lan_v6: as_v6(net("fd00:49::/64")?)?,
        node_pods_v4: as_v4(net("10.244.0.0/24")?)?,
        node_pods_v6: as_v6(net("fd00:10:244::/64")?)?,
        node2_pods_v4: as_v4(net("10.244.1.0/24")?)?,
        node2_pods_v6: as_v6(net("fd00:10:244:1::/64")?)?,
        internet_v4: as_v4(net("203.0.113.0/24")?)?,
        internet_v6: as_v6(net("2001:db8:113::/64")?)?,
        local_pods: 0,
        remote_pods: 0,
    })?;

    // One pod per (node, host number) with the example's endpoint addresses, serving every
    // (protocol, port) its slices list; host-network endpoints are served by the node.
    let mut wanted: BTreeMap<(PodHost, u32), BTreeSet<(Protocol, u16)>> = BTreeMap::new();
    let mut node_ports: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    for slice in &manifests.endpoint_slices {
        for ep in &slice.endpoints {
            let ports = slice.ports.iter().map(|p| (p.protocol, p.port));
            if IpAddr::from(lab.node.v4) == ep.address || IpAddr::from(lab.node.v6) == ep.address {
                node_ports.extend(ports);
                continue;
            }
            let (Some(host), Some(n)) =
                (pod_host(ep.node_name.as_deref()), host_number(ep.address))
            else {
                continue;
            };
            wanted.entry((host, n)).or_default().extend(ports);
        }
    }
    let mut pods: Vec<Pod> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    for ((host, n), ports) in &wanted {
        let pod = lab.new_pod_numbered(*host, *n)?;
        let addrs = [IpAddr::from(pod.v4), IpAddr::from(pod.v6)];
        servers.extend(serve(&pod, &pod_name(&pod), &addrs, ports)?);
        pods.push(pod);
    }
    let node_addrs = [IpAddr::from(lab.node.v4), IpAddr::from(lab.node.v6)];
    servers.extend(serve(
        &lab.node,
        "node-a/host-network",
        &node_addrs,
        &node_ports,
    )?);
    let client_pod = lab.new_pod(PodHost::Node)?;
    for svc in &manifests.services {
        for ing in &svc.load_balancer_ingress {
            lab.route_via_node(IpNet::from(ing.ip))?;
        }
    }
    writeln!(
        out,
        "sandbox: node-a {} / {}, node-b {} / {}, {} pods, external client {} (and {})",
        lab.node.v4,
        lab.node.v6,
        lab.node2.v4,
        lab.node2.v6,
        pods.len(),
        lab.client.v4,
        lab.client_internet_v4
    )?;

    // The real daemon, on the sandbox's node.
    let exe = std::env::current_exe()?;
    let mut daemon = lab
        .node
        .command(&exe)
        .args(["run", "--source"])
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("kube-proxy-config.yaml"))
        .arg(format!("--iptables-backend={}", args.iptables_backend))
        .args(["--logging-format=json", "--iptables-min-sync-period=0s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kproxy in the sandbox")?;
    let stderr = daemon.stderr.take().context("daemon stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut synced = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while synced.len() < 2 {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => l,
            Err(_) => {
                let _ = daemon.kill();
                bail!("kproxy did not sync within 30 s; its log:\n{log}");
            }
        };
        log.push_str(&line);
        log.push('\n');
        let record = serde_json::from_str::<serde_json::Value>(&line).ok();
        if let Some(v) = record.filter(|v| v["fields"]["message"] == "synced") {
            writeln!(
                out,
                "kproxy synced {}: {} rules in {:.1} ms",
                v["fields"]["family"].as_str().unwrap_or("?"),
                v["fields"]["kind"].as_str().unwrap_or("?"),
                v["fields"]["restore_ms"].as_f64().unwrap_or(0.0)
            )?;
            synced.insert(v["fields"]["family"].to_string());
        }
    }

    // Traffic.
    let mut rows = Vec::new();
    let n = args.requests;
    for svc in &manifests.services {
        for port in &svc.ports {
            let name = if port.name.is_empty() {
                format!("{}/{}", svc.namespace, svc.name)
            } else {
                format!("{}/{}:{}", svc.namespace, svc.name, port.name)
            };
            let mk = |ip: IpAddr, p: u16| match port.protocol {
                Protocol::Udp => Probe::udp(SocketAddr::new(ip, p)),
                _ => Probe::tcp(SocketAddr::new(ip, p)),
            };
            let proto = port.protocol.lower();
            for ip in &svc.cluster_ips {
                rows.push(row(
                    &name,
                    "a pod on node-a",
                    &client_pod,
                    mk(*ip, port.port),
                    proto,
                    n,
                ));
            }
            if svc.cluster_ips.is_empty() {
                rows.push(Row {
                    service: name.clone(),
                    from: "-".into(),
                    target: "headless: no virtual IP".into(),
                    result: "not proxied (DNS only)".into(),
                    saw: String::new(),
                });
            }
            if port.node_port != 0 && svc.service_type != ServiceType::ClusterIp {
                let np = port.node_port;
                rows.push(row(
                    &name,
                    "external client",
                    &lab.client,
                    mk(lab.node.v4.into(), np),
                    proto,
                    n,
                ));
                rows.push(row(
                    &name,
                    "node-a itself",
                    &lab.node,
                    mk([127, 0, 0, 1].into(), np),
                    proto,
                    n,
                ));
            }
            for ing in &svc.load_balancer_ingress {
                let probe = mk(ing.ip, port.port).with_source_ip(lab.client_internet_v4.into());
                rows.push(row(
                    &name,
                    "external client (203.0.113.100)",
                    &lab.client,
                    probe,
                    proto,
                    n,
                ));
            }
        }
        if svc.health_check_node_port != 0 {
            let target = SocketAddr::new(lab.node.v4.into(), svc.health_check_node_port);
            let status = http_status(&lab.client, target);
            rows.push(Row {
                service: format!("{}/{}", svc.namespace, svc.name),
                from: "load balancer health check".into(),
                target: format!("{target} (http)"),
                result: status,
                saw: String::new(),
            });
        }
    }

    let widths = [
        rows.iter()
            .map(|r| r.service.len())
            .max()
            .unwrap_or(7)
            .max(7),
        rows.iter().map(|r| r.from.len()).max().unwrap_or(4).max(4),
        rows.iter()
            .map(|r| r.target.len())
            .max()
            .unwrap_or(6)
            .max(6),
    ];
    writeln!(out)?;
    let w3 = rows.iter().map(|r| r.saw.len()).max().unwrap_or(9).max(13);
    writeln!(
        out,
        "{:w0$}  {:w1$}  {:w2$}  {:w3$}  ANSWERED BY ({n} tries each)",
        "SERVICE",
        "FROM",
        "TARGET",
        "BACKEND SAW",
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r.service,
            r.from,
            r.target,
            r.saw,
            r.result,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )?;
    }
    writeln!(
        out,
        "\nBACKEND SAW: the client address the backend saw — the node's own address when kproxy\n\
         masqueraded the connection (NodePorts with externalTrafficPolicy: Cluster), the client's\n\
         with externalTrafficPolicy: Local. \"refused\": no endpoints, rejected at once."
    )?;
    writeln!(out)?;

    // Stop the daemon (its rules would stay; the namespaces go with them).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    drop(servers);
    drop(client_pod);
    drop(pods);
    let count = lab.namespaces().len() + wanted.len() + 1;
    drop(lab);
    writeln!(out, "removed the sandbox ({count} network namespaces)")?;
    Ok(())
}

fn as_v4(n: IpNet) -> Result<ipnet::Ipv4Net> {
    match n {
        IpNet::V4(v) => Ok(v),
        IpNet::V6(_) => bail!("expected IPv4"),
    }
}

fn as_v6(n: IpNet) -> Result<ipnet::Ipv6Net> {
    match n {
        IpNet::V6(v) => Ok(v),
        IpNet::V4(_) => bail!("expected IPv6"),
    }
}

fn pod_name(pod: &Pod) -> String {
    let node = match pod.host {
        PodHost::Node => "node-a",
        PodHost::Node2 => "node-b",
    };
    format!("{node}/pod-{}", pod.v4)
}

/// Servers for every (protocol, port) in `ns`, on `ips`.
fn serve(
    ns: &Netns,
    name: &str,
    ips: &[IpAddr],
    ports: &BTreeSet<(Protocol, u16)>,
) -> Result<Vec<Server>> {
    let mut out = Vec::new();
    for (proto, port) in ports {
        let which = match proto {
            Protocol::Udp => Protocols::Udp,
            _ => Protocols::Tcp,
        };
        let listen: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, *port)).collect();
        out.push(Server::start_with(ns, name, &listen, which)?);
    }
    Ok(out)
}

fn row(service: &str, from: &str, ns: &Netns, probe: Probe, proto: &str, n: usize) -> Row {
    let target = format!("{} ({proto})", probe_target(&probe));
    let probe = probe.with_timeout(Duration::from_millis(500));
    let saw = probe
        .run(ns)
        .seen_peer()
        .map(|p| p.ip().to_string())
        .unwrap_or_default();
    let hist = probe_many(ns, &probe, n);
    let result = hist
        .iter()
        .map(|(k, v)| format!("{} ×{v}", k.trim_start_matches('<').trim_end_matches('>')))
        .collect::<Vec<_>>()
        .join(", ");
    Row {
        service: service.into(),
        from: from.into(),
        target,
        result,
        saw,
    }
}

fn probe_target(p: &Probe) -> String {
    p.target.to_string()
}

/// `GET /` on a health-check node port: "200 (…localEndpoints…)" or the failure.
fn http_status(ns: &Netns, target: SocketAddr) -> String {
    let res = ns.enter(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    match res {
        Ok(Ok(text)) => {
            let status = text.lines().next().unwrap_or("").to_owned();
            let eps = text
                .lines()
                .find(|l| l.contains("localEndpoints"))
                .map(|l| l.trim().trim_end_matches(',').to_owned())
                .unwrap_or_default();
            format!("{status} {eps}")
        }
        Ok(Err(e)) => format!("error: {e}"),
        Err(e) => format!("error: {e}"),
    }
}
