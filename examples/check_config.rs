//! Check a KubeProxyConfiguration file as kube-proxy (and kproxy) reads it:
//! `cargo run -p kproxy-examples --example check_config [FILE]` (default: the bundled one).

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cluster/kube-proxy-config.yaml"
        )
        .to_owned()
    });
    let loaded = kproxy_config::load(&path)?;
    for warning in &loaded.warnings {
        println!("warning: {warning}");
    }
    let mut config = loaded.config;
    config.apply_platform_defaults();
    match config.validate() {
        Ok(()) => {
            let (sync, min_sync) = config.sync_periods();
            println!(
                "valid: mode {}, syncPeriod {sync:?}, minSyncPeriod {min_sync:?}, clusterCIDR {:?}",
                config.effective_mode().as_str(),
                config.cluster_cidr
            );
        }
        Err(e) => println!("invalid: {e}"),
    }
    Ok(())
}
