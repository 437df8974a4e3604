//! Decoding netlink messages from the kernel must never panic: conntrack entries
//! (`Flow::from_netlink`) and nfacct counters (`Counter::from_netlink`).
//!
//! Run with `cargo +nightly fuzz run conntrack_flow` from this directory.

#![no_main]

use kproxy_conntrack::nfacct::Counter;
use kproxy_conntrack::{Family, Flow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(flow) = Flow::from_netlink(data) {
        // What decodes is consistent: one family throughout, and printable.
        let family = flow.family();
        for ip in [flow.original.dst, flow.reply.src, flow.reply.dst] {
            assert_eq!(Family::of(ip), family);
        }
        let _ = flow.to_string();
    }
    if let Ok(counter) = Counter::from_netlink(data) {
        assert!(!counter.name.contains('\0'));
    }
});
