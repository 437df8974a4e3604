//! Facts read from the host: its name, its interface addresses, its iptables.

use std::net::IpAddr;
use std::process::Command;

/// The host's name as kube-proxy uses it when `--hostname-override` is not given: the
/// kernel's node name, lower-cased.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

/// Every address configured on the host's interfaces (what `--nodeport-addresses` selects
/// from), in the calling thread's network namespace.
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `iptables --version` of the host: (major, minor, patch), if iptables runs.
pub fn iptables_version() -> Option<(u32, u32, u32)> {
    let out = Command::new("iptables").arg("--version").output().ok()?;
    parse_iptables_version(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `iptables v1.8.9 (nf_tables)`.
pub fn parse_iptables_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Whether MASQUERADE supports `--random-fully` (iptables ≥ 1.6.2). Without an iptables
/// to ask (a dry run elsewhere), assume a modern one.
pub fn random_fully_supported() -> bool {
    iptables_version().is_none_or(|v| v >= (1, 6, 2))
}

/// `net.netfilter.nf_conntrack_tcp_be_liberal` is non-zero (then kube-proxy does not
/// write its INVALID-drop rule).
pub fn conntrack_tcp_be_liberal() -> bool {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
        .map(|s| s.trim() != "0")
        .unwrap_or(false)
}

/// A sysctl under `/proc/sys` (per network namespace for `net.*`), set only when it
/// differs, as upstream's `sysctl` helper does. Returns whether it was written.
pub fn set_sysctl(key: &str, value: &str) -> std::io::Result<bool> {
    let path = std::path::Path::new("/proc/sys").join(key.replace('.', "/"));
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur.trim() == value) {
        return Ok(false);
    }
    std::fs::write(&path, value)?;
    Ok(true)
}

/// kube-proxy's start-up conntrack settings (`conntrack.*` of the configuration):
/// `nf_conntrack_max` from `maxPerCore` × CPUs (at least `min`), the TCP established and
/// close-wait timeouts, `tcpBeLiberal`, the UDP timeouts. Failures are returned per key (a
/// read-only `/proc/sys`, or `nf_conntrack_max` outside the host's network namespace, is
/// not fatal, as upstream). kproxy never writes the module-wide `hashsize`.
pub fn apply_conntrack_settings(
    cfg: &kproxy_config::KubeProxyConntrackConfiguration,
) -> Vec<(String, std::io::Error)> {
    let mut settings: Vec<(&str, String)> = Vec::new();
    if let Some(per_core) = cfg.max_per_core.filter(|v| *v > 0) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let max = (i64::from(per_core) * cpus).max(i64::from(cfg.min.unwrap_or(0)));
        settings.push(("net.netfilter.nf_conntrack_max", max.to_string()));
    }
    if let Some(t) = cfg.tcp_established_timeout.filter(|t| !t.is_zero()) {
        settings.push((
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            t.as_secs().to_string(),
        ));
    }
    if let Some(t) = cfg.tcp_close_wait_timeout.filter(|t| !t.is_zero()) {
        settings.push((
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
            t.as_secs().to_string(),
        ));
    }
    if cfg.tcp_be_liberal {
        settings.push(("net.netfilter.nf_conntrack_tcp_be_liberal", "1".into()));
    }
    if !cfg.udp_timeout.is_zero() {
        settings.push((
            "net.netfilter.nf_conntrack_udp_timeout",
            cfg.udp_timeout.as_secs().to_string(),
        ));
    }
    if !cfg.udp_stream_timeout.is_zero() {
        settings.push((
            "net.netfilter.nf_conntrack_udp_timeout_stream",
            cfg.udp_stream_timeout.as_secs().to_string(),
        ));
    }
    settings
        .into_iter()
        .filter_map(|(k, v)| set_sysctl(k, &v).err().map(|e| (k.to_owned(), e)))
        .collect()
}

/// `oomScoreAdj`: this process's OOM score adjustment (kube-proxy: -999).
pub fn set_oom_score_adj(value: i32) -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_versions() {
        assert_eq!(
            parse_iptables_version("iptables v1.8.9 (nf_tables)\n"),
            Some((1, 8, 9))
        );
        assert_eq!(parse_iptables_version("iptables v1.6.1\n"), Some((1, 6, 1)));
        assert_eq!(
            parse_iptables_version("iptables v1.8 (legacy)"),
            Some((1, 8, 0))
        );
        assert_eq!(parse_iptables_version("garbage"), None);
    }
}
