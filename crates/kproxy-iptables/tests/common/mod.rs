//! Shared test support: the conformance vector schema, the canonical sort of upstream's
//! tests, and a packet tracer over restore input.

#![allow(dead_code)]

pub mod arb;
pub mod build;
pub mod names;
pub mod sim;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_iptables::save::{self, Rule};
use kproxy_iptables::{Compiler, Config, LocalDetector, NodePortAddresses, SyncKind, SyncRequest};
use kproxy_model::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use kproxy_model::{
    ChangeTracker, Changes, Endpoint, EndpointPort, EndpointSlice, IpFamily, IpMode,
    LoadBalancerIngress, NodeTopology, Protocol, Service, ServiceName, ServicePort, ServiceType,
    SessionAffinity, TrafficPolicy,
};
use serde::Deserialize;
use serde_json::Value;

// ---- the vector schema (see tests/fixtures/conformance/README.md) ----------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    pub ip_family: String,
    pub node_name: String,
    #[serde(rename = "nodeIP")]
    pub node_ip: Option<String>,
    pub masquerade_bit: Option<u32>,
    pub masquerade_mark: Option<String>,
    #[serde(default)]
    pub masquerade_all: bool,
    pub local_detector: Option<Detector>,
    pub localhost_node_ports: bool,
    #[serde(default)]
    pub node_port_addresses: Vec<String>,
    #[serde(default)]
    pub node_interface_addresses: Vec<String>,
    #[serde(default)]
    pub iptables_has_random_fully: bool,
    #[serde(rename = "conntrackTCPBeLiberal", default)]
    pub conntrack_tcp_be_liberal: bool,
    #[serde(default)]
    pub nfacct_counters: BTreeMap<String, bool>,
    #[serde(default)]
    pub topology_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Detector {
    pub mode: String,
    pub cidr: Option<String>,
    pub interface: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Sync {
    pub kind: String,
    #[serde(default)]
    pub changed_services: Vec<String>,
    #[serde(default)]
    pub nat_chains_before_sync: Vec<String>,
    pub stale_cleanup_due: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VService {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    /// Dual-stack Services: every cluster IP (`spec.clusterIPs`); when given it replaces
    /// `clusterIP`. (An extension of the conformance schema, used by the golden vectors.)
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<VPort>,
    #[serde(rename = "externalIPs", default)]
    pub external_ips: Vec<String>,
    #[serde(default)]
    pub load_balancer_ingress: Vec<VIngress>,
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    #[serde(default)]
    pub health_check_node_port: u16,
    pub session_affinity: Option<String>,
    pub session_affinity_timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VPort {
    #[serde(default)]
    pub name: String,
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub node_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VIngress {
    pub ip: String,
    pub ip_mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VSlice {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub address_type: String,
    #[serde(default)]
    pub ports: Vec<VPort>,
    #[serde(default)]
    pub endpoints: Vec<VEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VEndpoint {
    pub addresses: Vec<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
    pub hints: Option<VHints>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VHints {
    #[serde(default)]
    pub for_zones: Vec<String>,
    #[serde(default)]
    pub for_nodes: Vec<String>,
}

/// A rules vector (`*.input.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesVector {
    pub options: Options,
    #[serde(default)]
    pub sync: Sync,
    #[serde(default)]
    pub services: Vec<VService>,
    #[serde(default)]
    pub endpoint_slices: Vec<VSlice>,
}

/// A packet-flow file (`*.flows.yaml`), with per-case options merged over the file's.
#[derive(Debug, Clone)]
pub struct FlowCase {
    pub name: String,
    pub options: Options,
    pub local_ips: Vec<IpAddr>,
    pub expect_kube_firewall_rule: Option<bool>,
    pub services: Vec<VService>,
    pub endpoint_slices: Vec<VSlice>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub name: String,
    #[serde(rename = "sourceIP")]
    pub source_ip: String,
    pub protocol: Option<String>,
    #[serde(rename = "destIP")]
    pub dest_ip: String,
    pub dest_port: u16,
    pub output: String,
    #[serde(default)]
    pub masq: bool,
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("vector YAML parses")
}

pub fn rules_vector(text: &str) -> RulesVector {
    serde_json::from_value(yaml_value(text)).expect("vector matches the schema")
}

pub fn flow_cases(text: &str) -> Vec<FlowCase> {
    let doc = yaml_value(text);
    let base = doc["options"].clone();
    let local_ips: Vec<IpAddr> = doc["localIPs"]
        .as_array()
        .expect("localIPs")
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let mut options = base.clone();
            if let Some(over) = case.get("options").and_then(Value::as_object) {
                for (k, v) in over {
                    options[k] = v.clone();
                }
            }
            FlowCase {
                name: case["name"].as_str().unwrap().to_owned(),
                options: serde_json::from_value(options).expect("options"),
                local_ips: local_ips.clone(),
                expect_kube_firewall_rule: case
                    .get("expectKubeFirewallRule")
                    .and_then(Value::as_bool),
                services: serde_json::from_value(case["services"].clone()).expect("services"),
                endpoint_slices: serde_json::from_value(case["endpointSlices"].clone())
                    .expect("slices"),
                flows: serde_json::from_value(case["flows"].clone()).expect("flows"),
            }
        })
        .collect()
}

// ---- vector → model / config ---------------------------------------------------------------

pub fn family(options: &Options) -> IpFamily {
    match options.ip_family.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        other => panic!("bad family {other}"),
    }
}

pub fn config(options: &Options) -> (Config, Vec<IpAddr>) {
    let fam = family(options);
    let mut cfg = Config::new(fam, &options.node_name);
    cfg.masquerade_mark = match (&options.masquerade_mark, options.masquerade_bit) {
        (Some(mark), _) => mark.clone(),
        (None, bit) => Config::mark_for_bit(bit.unwrap_or(14)),
    };
    cfg.masquerade_all = options.masquerade_all;
    cfg.local_detector = match &options.local_detector {
        None => LocalDetector::None,
        Some(d) => match d.mode.as_str() {
            "ClusterCIDR" | "NodeCIDR" => d
                .cidr
                .as_deref()
                .map(|c| LocalDetector::Cidr(parse_cidr_sloppy(c).expect("detector cidr")))
                .unwrap_or_default(),
            "BridgeInterface" => {
                LocalDetector::BridgeInterface(d.interface.clone().expect("interface"))
            }
            "InterfaceNamePrefix" => {
                LocalDetector::InterfaceNamePrefix(d.prefix.clone().expect("prefix"))
            }
            _ => LocalDetector::None,
        },
    };
    cfg.localhost_nodeports = options.localhost_node_ports;
    let node_ip = options
        .node_ip
        .as_deref()
        .and_then(parse_ip_sloppy)
        .filter(|ip| fam.contains(ip));
    cfg.node_ip = node_ip;
    let use_primary = options.node_port_addresses.iter().any(|a| a == "primary");
    let cidrs: Vec<IpNet> = options
        .node_port_addresses
        .iter()
        .filter(|a| *a != "primary")
        .map(|c| c.parse().expect("nodePortAddresses cidr"))
        .collect();
    cfg.nodeport_addresses = NodePortAddresses::new(fam, &cidrs, use_primary, node_ip);
    cfg.random_fully = options.iptables_has_random_fully;
    cfg.drop_invalid = !options.conntrack_tcp_be_liberal;
    cfg.nfacct_invalid_dropped = options
        .nfacct_counters
        .get("ct_state_invalid_dropped_pkts")
        .copied()
        .unwrap_or(false);
    cfg.nfacct_localhost_nodeports = options
        .nfacct_counters
        .get("localhost_nps_accepted_pkts")
        .copied()
        .unwrap_or(false);
    cfg.node = NodeTopology {
        name: options.node_name.clone(),
        zone: options
            .topology_labels
            .get("topology.kubernetes.io/zone")
            .cloned(),
        prefer_same_node_hints: options
            .feature_gates
            .get("PreferSameTrafficDistribution")
            .copied()
            .unwrap_or(true),
    };
    let ifaces = options
        .node_interface_addresses
        .iter()
        .map(|a| {
            let ip = a.split('/').next().unwrap();
            ip.parse().expect("interface address")
        })
        .collect();
    (cfg, ifaces)
}

fn protocol(s: &str) -> Protocol {
    s.parse().expect("protocol")
}

pub fn service(v: &VService) -> Service {
    Service {
        namespace: v.namespace.clone(),
        name: v.name.clone(),
        service_type: match v.kind.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIp,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => panic!("type {other}"),
        },
        cluster_ips: if v.cluster_ips.is_empty() {
            parse_ip_sloppy(&v.cluster_ip).into_iter().collect()
        } else {
            v.cluster_ips
                .iter()
                .map(|s| parse_ip_sloppy(s).expect("clusterIPs"))
                .collect()
        },
        ports: v
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                protocol: protocol(&p.protocol),
                port: p.port,
                node_port: p.node_port,
            })
            .collect(),
        external_ips: v
            .external_ips
            .iter()
            .map(|s| parse_ip_sloppy(s).expect("externalIP"))
            .collect(),
        load_balancer_ingress: v
            .load_balancer_ingress
            .iter()
            .map(|i| LoadBalancerIngress {
                ip: parse_ip_sloppy(&i.ip).expect("ingress ip"),
                ip_mode: match i.ip_mode.as_deref() {
                    Some("Proxy") => IpMode::Proxy,
                    _ => IpMode::Vip,
                },
            })
            .collect(),
        load_balancer_source_ranges: v
            .load_balancer_source_ranges
            .iter()
            .filter_map(|s| parse_cidr_sloppy(s.trim()))
            .collect(),
        external_traffic_policy: policy(v.external_traffic_policy.as_deref()),
        internal_traffic_policy: policy(v.internal_traffic_policy.as_deref()),
        health_check_node_port: v.health_check_node_port,
        session_affinity: match v.session_affinity.as_deref() {
            Some("ClientIP") => SessionAffinity::ClientIp {
                timeout_seconds: v
                    .session_affinity_timeout_seconds
                    .unwrap_or(SessionAffinity::DEFAULT_TIMEOUT_SECONDS),
            },
            _ => SessionAffinity::None,
        },
        traffic_distribution: None,
    }
}

fn policy(s: Option<&str>) -> TrafficPolicy {
    match s {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

pub fn slice(v: &VSlice) -> EndpointSlice {
    EndpointSlice {
        namespace: v.namespace.clone(),
        name: v.name.clone(),
        service_name: v.service.clone(),
        address_family: match v.address_type.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            other => panic!("addressType {other}"),
        },
        ports: v
            .ports
            .iter()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                protocol: protocol(&p.protocol),
                port: p.port,
            })
            .collect(),
        endpoints: v
            .endpoints
            .iter()
            .map(|e| {
                let hints = e.hints.clone().unwrap_or_default();
                Endpoint {
                    address: parse_ip_sloppy(&e.addresses[0]).expect("endpoint address"),
                    ready: e.ready.unwrap_or(true),
                    serving: e.serving.unwrap_or(true),
                    terminating: e.terminating.unwrap_or(false),
                    node_name: e.node_name.clone(),
                    zone: None,
                    zone_hints: hints.for_zones,
                    node_hints: hints.for_nodes,
                }
            })
            .collect(),
        trigger_time: None,
    }
}

pub fn tracker(
    fam: IpFamily,
    node: &str,
    services: &[VService],
    slices: &[VSlice],
) -> ChangeTracker {
    let mut t = ChangeTracker::new(fam, node);
    for s in services {
        t.update_service(service(s));
    }
    for s in slices {
        t.update_endpoint_slice(slice(s));
    }
    t.commit();
    t
}

// ---- canonical form (spec §7.1) -----------------------------------------------------------

fn chain_rank(name: &str) -> (u8, String) {
    match name {
        "KUBE-NODEPORTS" => (0, String::new()),
        "KUBE-SERVICES" => (1, String::new()),
        n if n.starts_with("KUBE-") => (2, n.to_owned()),
        n => (3, n.to_owned()),
    }
}

fn service_of_comment(rule: &Rule) -> String {
    let c = rule.value_of("--comment").unwrap_or("");
    c.split([' ', ':']).next().unwrap_or("").to_owned()
}

/// Sorts restore input into upstream's canonical form for comparison.
pub fn canonical(text: &str) -> String {
    let rs = save::parse(text).unwrap_or_else(|e| panic!("restore input parses: {e}\n{text}"));
    let mut tables = rs.tables.clone();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for t in &tables {
        out.push_str(&format!("*{}\n", t.name));
        let mut chains: Vec<&str> = t.chain_names().collect();
        chains.sort_by_key(|c| chain_rank(c));
        chains.dedup();
        let deleted: BTreeSet<&str> = t
            .commands
            .iter()
            .filter_map(|c| match c {
                save::Command::DeleteChain(c) => Some(c.as_str()),
                _ => None,
            })
            .collect();
        for c in &chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            let mut rules: Vec<&Rule> = t.appended().filter(|r| r.chain == *c).collect();
            let sort_by_service = *c == "KUBE-NODEPORTS" || (*c == "KUBE-SERVICES");
            if sort_by_service {
                rules.sort_by_key(|r| {
                    let last = r
                        .value_of("--comment")
                        .is_some_and(|c| c.contains("must be the last rule"));
                    (last, service_of_comment(r))
                });
            }
            for r in rules {
                out.push_str(&r.to_string());
                out.push('\n');
            }
        }
        for c in &chains {
            if deleted.contains(c) {
                out.push_str(&format!("-X {c}\n"));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

// ---- packet tracer (conformance README, "Packet-flow vectors") ---------------------------

pub struct Tracer<'a> {
    rules: &'a save::Ruleset,
    local_ips: &'a [IpAddr],
}

#[derive(Debug, Default)]
struct TraceState {
    outputs: Vec<String>,
    masq: bool,
}

fn addr_matches(spec: &str, ip: IpAddr) -> bool {
    match spec.parse::<IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => spec.parse::<IpAddr>().map(|a| a == ip).unwrap_or(false),
    }
}

impl<'a> Tracer<'a> {
    pub fn new(rules: &'a save::Ruleset, local_ips: &'a [IpAddr]) -> Self {
        Tracer { rules, local_ips }
    }

    /// Returns (output, masq) as the vectors define them.
    pub fn trace(&self, src: IpAddr, proto: &str, dst: IpAddr, dport: u16) -> (String, bool) {
        let mut st = TraceState::default();
        self.run_chain("nat", "KUBE-SERVICES", src, proto, dst, dport, &mut st);
        let dnat_dest = st.outputs.first().map(|t| {
            let host = t.rsplit_once(':').map(|(h, _)| h).unwrap_or(t);
            host.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .unwrap()
        });
        let dst2 = dnat_dest.unwrap_or(dst);
        for chain in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
        ] {
            self.run_chain("filter", chain, src, proto, dst2, dport, &mut st);
        }
        (st.outputs.join(", "), st.masq)
    }

    /// Runs a chain; returns true if it ended in a terminal verdict.
    #[allow(clippy::too_many_arguments)]
    fn run_chain(
        &self,
        table: &str,
        chain: &str,
        src: IpAddr,
        proto: &str,
        dst: IpAddr,
        dport: u16,
        st: &mut TraceState,
    ) -> bool {
        let Some(t) = self.rules.table(table) else {
            return false;
        };
        for rule in t.rules_of(chain) {
            if !self.matches(rule, src, proto, dst, dport) {
                continue;
            }
            let probabilistic = rule.args.iter().any(|a| a == "--probability");
            match rule.target() {
                None => continue,
                Some("KUBE-MARK-MASQ") => st.masq = true,
                Some("DNAT") => {
                    st.outputs
                        .push(rule.value_of("--to-destination").unwrap().to_owned());
                    return true;
                }
                Some(v @ ("ACCEPT" | "DROP" | "REJECT")) => {
                    st.outputs.push(v.to_owned());
                    return true;
                }
                Some("RETURN") => return false,
                Some(next) => {
                    let terminal = self.run_chain(table, next, src, proto, dst, dport, st);
                    if terminal && !probabilistic {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn matches(&self, rule: &Rule, src: IpAddr, proto: &str, dst: IpAddr, dport: u16) -> bool {
        let a = &rule.args;
        let mut i = 0;
        while i < a.len() {
            let (neg, flag) = if a[i] == "!" {
                i += 1;
                (true, a[i].as_str())
            } else {
                (false, a[i].as_str())
            };
            let val = a.get(i + 1).map(String::as_str).unwrap_or("");
            let ok = match flag {
                "-s" => addr_matches(val, src),
                "-d" => addr_matches(val, dst),
                "-p" => val == proto,
                "--dport" => val.parse::<u16>().ok() == Some(dport),
                "--src-type" => self.local_ips.contains(&src) == (val == "LOCAL"),
                "--dst-type" => self.local_ips.contains(&dst) == (val == "LOCAL"),
                "--rcheck" | "--mark" | "--ctstate" => return false,
                "-i" => return false,
                _ => {
                    i += 1;
                    continue;
                }
            };
            if ok == neg {
                return false;
            }
            i += if matches!(flag, "--rcheck") { 1 } else { 2 };
        }
        true
    }
}

/// [`canonical`], refined: the chains whose rules come from many service ports in an
/// order the spec leaves open (§4.1: upstream iterates service ports in random order) —
/// `KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-EXTERNAL-SERVICES`, `KUBE-PROXY-FIREWALL` —
/// are stably sorted by the *service port* name `N` (the comment up to its first space),
/// keeping the "must be the last rule" rule(s) last. Rules of one service port keep their
/// relative order, so any spec-conforming output has exactly one such form. Equal to
/// [`canonical`]'s result whenever every Service has one port.
pub fn canonical_strict(text: &str) -> String {
    let rs = save::parse(text).unwrap_or_else(|e| panic!("restore input parses: {e}\n{text}"));
    let mut tables = rs.tables.clone();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for t in &tables {
        out.push_str(&format!("*{}\n", t.name));
        let mut chains: Vec<&str> = t.chain_names().collect();
        chains.sort_by_key(|c| chain_rank(c));
        chains.dedup();
        let deleted: BTreeSet<&str> = t
            .commands
            .iter()
            .filter_map(|c| match c {
                save::Command::DeleteChain(c) => Some(c.as_str()),
                _ => None,
            })
            .collect();
        for c in &chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            let mut rules: Vec<&Rule> = t.appended().filter(|r| r.chain == *c).collect();
            if [
                "KUBE-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-PROXY-FIREWALL",
            ]
            .contains(c)
            {
                rules.sort_by_key(|r| {
                    let comment = r.value_of("--comment").unwrap_or("");
                    let last = comment.contains("must be the last rule");
                    (last, comment.split(' ').next().unwrap_or("").to_owned())
                });
            }
            for r in rules {
                out.push_str(&r.to_string());
                out.push('\n');
            }
        }
        for c in &chains {
            if deleted.contains(c) {
                out.push_str(&format!("-X {c}\n"));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Compiles a rules vector (one sync on a fresh compiler) and returns the restore input.
pub fn compile_vector(v: &RulesVector) -> String {
    let (cfg, ifaces) = config(&v.options);
    let t = tracker(
        cfg.family,
        &v.options.node_name,
        &v.services,
        &v.endpoint_slices,
    );
    let changed: BTreeSet<ServiceName> = v
        .sync
        .changed_services
        .iter()
        .map(|s| {
            let (ns, n) = s.split_once('/').unwrap();
            ServiceName::new(ns, n)
        })
        .collect();
    let mut compiler = Compiler::new(cfg);
    compiler.set_interface_addresses(ifaces);
    let existing =
        (v.sync.stale_cleanup_due != Some(false)).then_some(&v.sync.nat_chains_before_sync[..]);
    let out = compiler.compile(
        t.state(),
        SyncRequest {
            kind: if v.sync.kind == "partial" {
                SyncKind::Partial
            } else {
                SyncKind::Full
            },
            changed: &Changes::of_services(changed),
            existing_nat_chains: existing,
        },
    );
    out.restore.to_string()
}

/// Runs every case of a flow file (path under tests/fixtures) through a full sync and the
/// [`Tracer`]; returns the number of flows checked. Failures are collected and reported
/// together.
pub fn run_flow_file(name: &str) -> usize {
    let cases = flow_cases(&fixture(name));
    assert!(!cases.is_empty(), "{name}: no cases");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases {
        let (cfg, ifaces) = config(&case.options);
        let t = tracker(
            cfg.family,
            &case.options.node_name,
            &case.services,
            &case.endpoint_slices,
        );
        let mut compiler = Compiler::new(cfg);
        compiler.set_interface_addresses(ifaces);
        let out = compiler.compile(
            t.state(),
            SyncRequest {
                kind: SyncKind::Full,
                changed: &Changes::default(),
                existing_nat_chains: None,
            },
        );
        let text = out.restore.to_string();
        let rules = save::parse(&text).unwrap();
        if let Some(want) = case.expect_kube_firewall_rule {
            let has = rules
                .table("filter")
                .unwrap()
                .rules_of("KUBE-FIREWALL")
                .iter()
                .any(|r| r.target() == Some("DROP"));
            if has != want {
                failures.push(format!("{}: KUBE-FIREWALL rule present={has}", case.name));
            }
        }
        let tracer = Tracer::new(&rules, &case.local_ips);
        for flow in &case.flows {
            let proto = flow.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            let (output, masq) = tracer.trace(
                flow.source_ip.parse().unwrap(),
                &proto,
                flow.dest_ip.parse().unwrap(),
                flow.dest_port,
            );
            if output != flow.output {
                failures.push(format!(
                    "{} / {}: output {output:?}, want {:?}",
                    case.name, flow.name, flow.output
                ));
            } else if !flow.output.is_empty()
                && !["DROP", "REJECT"].contains(&flow.output.as_str())
                && masq != flow.masq
            {
                failures.push(format!(
                    "{} / {}: masq {masq}, want {}",
                    case.name, flow.name, flow.masq
                ));
            }
            checked += 1;
        }
        if !failures.is_empty() && failures.iter().any(|f| f.starts_with(&case.name)) {
            failures.push(format!(
                "--- ruleset of {}:\n{}",
                case.name,
                canonical(&text)
            ));
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    checked
}

/// A short line-level difference between two texts (lines only in `want` with `-`, only
/// in `got` with `+`, as multisets), for assertion messages.
pub fn line_diff(want: &str, got: &str) -> String {
    let mut left: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for l in want.lines() {
        match left.iter().position(|g| *g == l) {
            Some(i) => {
                left.remove(i);
            }
            None => {
                out.push_str("- ");
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    for l in left {
        out.push_str("+ ");
        out.push_str(l);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("(same lines, different order)\n");
    }
    out
}
