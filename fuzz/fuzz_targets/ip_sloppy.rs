//! Kubernetes-style ("sloppy") IP and CIDR parsing must never panic, and every address it
//! accepts prints canonically and parses back to itself.

#![no_main]

use kproxy_model::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ip) = parse_ip_sloppy(text) {
        assert_eq!(parse_ip_sloppy(&ip.to_string()), Some(ip));
    }
    if let Some(net) = parse_cidr_sloppy(text) {
        assert_eq!(parse_cidr_sloppy(&net.to_string()), Some(net));
    }
});
