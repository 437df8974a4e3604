//! Manifests in, upstream kube-proxy's iptables rules out:
//! `cargo run -p kproxy-examples --example compile_rules [PATH]` (default: the bundled
//! example cluster).

use kproxy_iptables::{Compiler, Config, LocalDetector, SyncKind, SyncRequest};
use kproxy_model::{ChangeTracker, IpFamily};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/cluster").to_owned());
    let manifests = kproxy_k8s::manifests::load_path(&path)?;
    for warning in &manifests.warnings {
        eprintln!("{warning}");
    }

    let mut tracker = ChangeTracker::new(IpFamily::V4, "node-a");
    for svc in &manifests.services {
        tracker.update_service(svc.clone());
    }
    for slice in &manifests.endpoint_slices {
        tracker.update_endpoint_slice(slice.clone());
    }
    let changes = tracker.commit();

    let mut config = Config::new(IpFamily::V4, "node-a");
    config.local_detector = LocalDetector::Cidr("10.244.0.0/16".parse()?);
    let mut compiler = Compiler::new(config);
    let out = compiler.compile(
        tracker.state(),
        SyncRequest {
            kind: SyncKind::Full,
            changed: &changes,
            existing_nat_chains: None,
        },
    );
    print!("{}", out.restore);
    eprintln!(
        "{} service ports, {} endpoints, {} nat and {} filter rules, {} bytes",
        out.stats.service_ports,
        out.stats.total_endpoints,
        out.stats.nat_rules_total,
        out.stats.filter_rules,
        out.restore.len()
    );
    Ok(())
}
