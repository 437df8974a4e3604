//! Upstream's conformance vectors (tests/fixtures/conformance, transcribed from upstream
//! kube-proxy's own unit tests): restore input compared byte for byte after the canonical
//! sort, and packet flows traced through the compiled rules.

mod common;

use std::collections::BTreeSet;

use common::*;
use kproxy_iptables::save;
use kproxy_iptables::{Compiler, SyncKind, SyncRequest};
use kproxy_model::{Changes, ServiceName};

fn run_rules_vector(name: &str) {
    let v = rules_vector(&fixture(&format!("conformance/{name}.input.yaml")));
    let expected = fixture(&format!("conformance/{name}.expected.rules"));
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
    let got = canonical(&out.restore.to_string());
    assert_eq!(
        got, expected,
        "\n--- {name}: canonical output differs ---\n{got}"
    );
}

#[test]
fn overall_rules() {
    run_rules_vector("overall-rules");
}

#[test]
fn sync_repeated_1_initial() {
    run_rules_vector("sync-repeated-1-initial");
}

#[test]
fn sync_repeated_2_add_service() {
    run_rules_vector("sync-repeated-2-add-service");
}

#[test]
fn sync_repeated_3_delete_service() {
    run_rules_vector("sync-repeated-3-delete-service");
}

fn run_flows(name: &str) {
    let cases = flow_cases(&fixture(&format!("conformance/{name}.flows.yaml")));
    assert!(!cases.is_empty());
    let mut checked = 0;
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
            assert_eq!(has, want, "{}: KUBE-FIREWALL rule\n{text}", case.name);
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
            assert_eq!(
                output, flow.output,
                "{} / {}: output\n{text}",
                case.name, flow.name
            );
            if !flow.output.is_empty() && !["DROP", "REJECT"].contains(&flow.output.as_str()) {
                assert_eq!(masq, flow.masq, "{} / {}: masquerade", case.name, flow.name);
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn flows_cluster_ip_general() {
    run_flows("flows-cluster-ip-general");
}

#[test]
fn flows_node_ports() {
    run_flows("flows-node-ports");
}
