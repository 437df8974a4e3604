//! Loading manifests must never panic, whatever the text: `kproxy_k8s::manifests::load_str`
//! on arbitrary UTF-8 (YAML streams, JSON, lists, broken and hostile documents).
//!
//! Run with `cargo +nightly fuzz run manifests -- -dict=manifests.dict` from this directory;
//! `../crates/kproxy-k8s/tests/fixtures` makes a good seed corpus.

#![no_main]

use kproxy_k8s::manifests::load_str;
use kproxy_model::IpFamily;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 is the file reader's business; fuzz the longest valid prefix.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap(),
    };
    let loaded = load_str(text, "fuzz.yaml");

    // What loads is what the model promises.
    for svc in &loaded.services {
        assert!(!svc.name.is_empty());
        assert!(svc.ports.iter().all(|p| p.port != 0));
        for family in IpFamily::ALL {
            assert!(
                svc.cluster_ips
                    .iter()
                    .filter(|ip| family.contains(ip))
                    .count()
                    <= 1
            );
        }
    }
    for slice in &loaded.endpoint_slices {
        assert!(!slice.service_name.is_empty());
        assert!(slice.ports.iter().all(|p| p.port != 0));
        assert!(
            slice
                .endpoints
                .iter()
                .all(|e| slice.address_family.contains(&e.address))
        );
    }
    // Every warning is one line.
    for warning in &loaded.warnings {
        let line = warning.to_string();
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    }
});
