//! `kproxy --cleanup`: remove everything kproxy (or kube-proxy's iptables mode) created.

use anyhow::Result;
use kproxy_iptables::{Backend, Iptables};
use kproxy_model::IpFamily;
use tracing::{info, warn};

/// Cleans both families on `backend` (by default the one the node uses).
pub fn run(backend: Option<Backend>) -> Result<()> {
    let mut errors = 0;
    for b in [backend.unwrap_or_else(Backend::detect)] {
        for family in IpFamily::ALL {
            let Ok(ipt) = Iptables::new(family, b) else {
                continue;
            };
            match kproxy_iptables::proxier::cleanup(&ipt) {
                Ok(()) => info!(%family, backend = %b, "cleaned up"),
                Err(e) => {
                    errors += 1;
                    warn!(%family, backend = %b, error = %e, "cleanup failed");
                }
            }
        }
    }
    if errors > 0 {
        anyhow::bail!("cleanup failed for {errors} table set(s)");
    }
    Ok(())
}
