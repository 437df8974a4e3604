//! nfacct counters on the real kernel (needs root; CI runs as root). Counters are per network
//! namespace; every test works in namespaces of its own.

mod common;

use std::net::UdpSocket;

use common::sh;
use kproxy_conntrack::Error;
use kproxy_conntrack::nfacct::{
    CT_STATE_INVALID_DROPPED_PKTS, Counter, LOCALHOST_NPS_ACCEPTED_PKTS, NfAcct,
};
use kproxy_testutil::Netns;

#[test]
fn counters_are_created_once_listed_and_count_matching_packets() {
    let ns = Netns::new("acct").unwrap();
    let (first, second, other, fresh, listed, absent) = ns
        .enter(|| -> Result<_, Error> {
            let mut acct = NfAcct::new()?;
            let absent = acct.get(CT_STATE_INVALID_DROPPED_PKTS)?;
            let first = acct.ensure(CT_STATE_INVALID_DROPPED_PKTS)?;
            let second = acct.ensure(CT_STATE_INVALID_DROPPED_PKTS)?;
            let other = acct.ensure(LOCALHOST_NPS_ACCEPTED_PKTS)?;
            let fresh = acct.get(CT_STATE_INVALID_DROPPED_PKTS)?;
            let mut listed = acct.list()?;
            listed.sort_by(|a, b| a.name.cmp(&b.name));
            Ok((first, second, other, fresh, listed, absent))
        })
        .unwrap()
        .unwrap();
    assert_eq!(absent, None);
    assert!(first, "created");
    assert!(!second, "already there");
    assert!(other);
    let fresh = fresh.expect("counter exists");
    assert_eq!(
        (fresh.name.as_str(), fresh.packets, fresh.bytes),
        (CT_STATE_INVALID_DROPPED_PKTS, 0, 0)
    );
    let names: Vec<_> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [CT_STATE_INVALID_DROPPED_PKTS, LOCALHOST_NPS_ACCEPTED_PKTS]
    );

    // The `-m nfacct` match loads only because the counter exists now.
    sh(
        &ns,
        &[
            "iptables",
            "-w",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-d",
            "127.0.0.1",
            "--dport",
            "9",
            "-m",
            "nfacct",
            "--nfacct-name",
            CT_STATE_INVALID_DROPPED_PKTS,
            "-j",
            "ACCEPT",
        ],
    );
    let sock = ns
        .enter(|| UdpSocket::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    for _ in 0..3 {
        sock.send_to(&[0u8; 100], "127.0.0.1:9").unwrap();
    }
    // Another destination does not match the rule.
    sock.send_to(&[0u8; 100], "127.0.0.1:10").unwrap();

    let counted = ns
        .enter(|| NfAcct::new()?.get(CT_STATE_INVALID_DROPPED_PKTS))
        .unwrap()
        .unwrap()
        .unwrap();
    // 3 packets of 20 (IPv4) + 8 (UDP) + 100 bytes.
    assert_eq!((counted.packets, counted.bytes), (3, 3 * 128));
    // Creating it again keeps the values.
    let (again, kept) = ns
        .enter(|| -> Result<(bool, Option<Counter>), Error> {
            let mut acct = NfAcct::new()?;
            Ok((
                acct.ensure(CT_STATE_INVALID_DROPPED_PKTS)?,
                acct.get(CT_STATE_INVALID_DROPPED_PKTS)?,
            ))
        })
        .unwrap()
        .unwrap();
    assert!(!again);
    assert_eq!(kept.unwrap().packets, 3);
}

#[test]
fn without_the_counter_the_nfacct_match_is_refused() {
    // What kube-proxy relies on to fall back to rules without the match.
    let ns = Netns::new("acct0").unwrap();
    let out = ns
        .command("iptables")
        .args([
            "-w",
            "-A",
            "OUTPUT",
            "-m",
            "nfacct",
            "--nfacct-name",
            "missing_counter",
            "-j",
            "ACCEPT",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let listed = ns.enter(|| NfAcct::new()?.list()).unwrap().unwrap();
    assert_eq!(listed, vec![]);
}

#[test]
fn invalid_names_are_refused_before_reaching_the_kernel() {
    let ns = Netns::new("acct1").unwrap();
    let errors = ns
        .enter(|| {
            let mut acct = NfAcct::new().unwrap();
            ["", "a\0b", &"x".repeat(32)].map(|name| acct.ensure(name).unwrap_err())
        })
        .unwrap();
    for e in errors {
        assert!(matches!(e, Error::InvalidCounterName { .. }), "{e}");
    }
    // 31 bytes is the longest name the kernel takes.
    let long = "y".repeat(31);
    let got = ns
        .enter(move || {
            let mut acct = NfAcct::new().unwrap();
            assert!(acct.ensure(&long).unwrap());
            acct.get(&long).unwrap()
        })
        .unwrap();
    assert_eq!(got.unwrap().name.len(), 31);
}
