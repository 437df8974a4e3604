//! Packet flows traced through compiled rulesets (`tests/fixtures/flows/*.flows.yaml`, the
//! conformance flow schema; semantics in `fixtures/conformance/README.md`). Expected outputs
//! were written from the spec's behavioural descriptions (§3.5, §3.7, §6.5), not from the
//! compiler.

mod common;

use common::run_flow_file;

#[test]
fn traffic_policy() {
    assert!(run_flow_file("flows/traffic-policy.flows.yaml") >= 40);
}

#[test]
fn source_ranges() {
    assert!(run_flow_file("flows/source-ranges.flows.yaml") >= 15);
}

#[test]
fn nodeports() {
    assert!(run_flow_file("flows/nodeports.flows.yaml") >= 20);
}

#[test]
fn masquerade() {
    assert!(run_flow_file("flows/masquerade.flows.yaml") >= 15);
}

#[test]
fn terminating() {
    assert!(run_flow_file("flows/terminating.flows.yaml") >= 8);
}
