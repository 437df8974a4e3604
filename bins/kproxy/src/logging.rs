//! Logging: `tracing` with kube-proxy's `-v=N` verbosity mapped to levels.

use tracing_subscriber::EnvFilter;

/// `-v` 0–1: info; 2–3: debug for kproxy; 4 and more: trace. `RUST_LOG` overrides.
pub fn init(verbosity: u32, json: bool) {
    let level = match verbosity {
        0..=1 => "info",
        2..=3 => "info,kproxy=debug,kproxy_iptables=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
