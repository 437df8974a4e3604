//! List this network namespace's conntrack table over netlink (root):
//! `sudo cargo run -p kproxy-examples --example conntrack_flows`.

use kproxy_conntrack::{Conntrack, Family};

fn main() -> anyhow::Result<()> {
    let mut ct = Conntrack::new()?;
    for family in [Family::Ipv4, Family::Ipv6] {
        let flows = ct.list(family)?;
        println!("{family:?}: {} entries", flows.len());
        for flow in flows.iter().take(20) {
            println!(
                "  {:?} {} -> {} (reply from {})",
                flow.protocol,
                flow.original.src_addr(),
                flow.original.dst_addr(),
                flow.reply.src_addr()
            );
        }
    }
    Ok(())
}
