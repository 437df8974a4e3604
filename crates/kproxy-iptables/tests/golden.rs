//! Golden rulesets: for each `tests/fixtures/golden/<name>.input.yaml` (the conformance
//! vector schema, plus `clusterIPs` for dual-stack Services) the full-sync restore input,
//! in strict canonical form (`common::canonical_strict`), must equal
//! `<name>.expected.rules` byte for byte.
//!
//! Every expected text was written by hand from the specification (rule text §3, decision
//! table §3.5, layout §4, endpoint selection §6); `fixtures/golden/src/<name>.tpl` holds
//! the hand-written form with chain names as `@SVC(N,p)`/`@SEP(N,p,EP)` placeholders, and
//! `fixtures/golden/src/expand.py` only computes those names (spec §2.2 formula) and sorts
//! the lines into canonical order.

mod common;

use common::*;

fn golden(name: &str) {
    let v = rules_vector(&fixture(&format!("golden/{name}.input.yaml")));
    let expected = fixture(&format!("golden/{name}.expected.rules"));
    let got = canonical_strict(&compile_vector(&v));
    assert!(
        got == expected,
        "\n--- golden {name}: output differs from the spec ---\n{}\n--- full output ---\n{got}",
        line_diff(&expected, &got)
    );
}

macro_rules! goldens {
    ($($(#[$attr:meta])* $test:ident => $name:literal,)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $test() {
                golden($name);
            }
        )*

        const ALL: &[&str] = &[$($name),*];
    };
}

goldens! {
    service_types => "service-types",
    no_local_endpoints => "no-local-endpoints",
    no_endpoints => "no-endpoints",
    protocols => "protocols",
    lb_source_ranges => "lb-source-ranges",
    dual_stack_ipv4 => "dual-stack-ipv4",
    dual_stack_ipv6 => "dual-stack-ipv6",
    affinity_etp_local => "affinity-etp-local",
    terminating_endpoints => "terminating-endpoints",
    topology_zone => "topology-zone",
    topology_no_zone => "topology-no-zone",
    topology_node_hints_off => "topology-node-hints-off",
    unnamed_port => "unnamed-port",
    leading_zeros => "leading-zeros",
    ipv6_nodeport_addresses => "ipv6-nodeport-addresses",
    partial_sync => "partial-sync",
    base => "base",
    mark_production => "mark-production",
    mark_bit_31 => "mark-bit-31",
    mark_bit_0 => "mark-bit-0",
    masquerade_all => "masquerade-all",
    detector_node_cidr => "detector-node-cidr",
    detector_bridge => "detector-bridge",
    detector_prefix => "detector-prefix",
    detector_none => "detector-none",
    detector_none_masquerade_all => "detector-none-masquerade-all",
    random_fully => "random-fully",
    nfacct_missing => "nfacct-missing",
    be_liberal => "be-liberal",
    localhost_nodeports_disabled => "localhost-nodeports-disabled",
    nodeport_addresses => "nodeport-addresses",
    nodeport_addresses_loopback => "nodeport-addresses-loopback",
    nodeport_addresses_loopback_disabled => "nodeport-addresses-loopback-disabled",
    nodeport_addresses_match_all => "nodeport-addresses-match-all",
    nodeport_addresses_other_family => "nodeport-addresses-other-family",
    nodeport_addresses_primary => "nodeport-addresses-primary",
    nodeport_addresses_loopback_32 => "nodeport-addresses-loopback-32",
}

/// Every fixture has a test, and every expected file is already in canonical form (so
/// the comparison above is exact, not "equal after sorting").
#[test]
fn fixtures_are_complete_and_canonical() {
    let dir = format!("{}/tests/fixtures/golden", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".input.yaml").map(str::to_owned)
        })
        .collect();
    names.sort();
    let mut all: Vec<&str> = ALL.to_vec();
    all.sort();
    assert_eq!(
        names, all,
        "fixtures without a test (or tests without a fixture)"
    );
    for name in ALL {
        let text = fixture(&format!("golden/{name}.expected.rules"));
        assert_eq!(canonical_strict(&text), text, "{name}: not canonical");
    }
}
