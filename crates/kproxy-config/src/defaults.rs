//! Upstream's defaulting: `SetDefaults_KubeProxyConfiguration`
//! (`pkg/proxy/apis/config/v1alpha1/defaults.go`) and Linux `platformApplyDefaults`
//! (`cmd/kube-proxy/app/server_linux.go`).
//!
//! Like upstream, defaulting fills Go *zero values*: a missing field, `null`, and an
//! explicit zero (`syncPeriod: 0s`, `contentType: ""`, `qps: 0`) are all replaced.
//! Fields that are pointers in Go (`Option` here) are only filled when absent/`null`,
//! so `conntrack.maxPerCore: 0` stays 0.

use std::net::IpAddr;
use std::time::Duration;

use super::{KubeProxyConfiguration, LocalMode, ProxyMode};

/// `bindAddress` default (defaults.go).
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0";
/// Port of the health check server: `ports.ProxyHealthzPort` (pkg/cluster/ports).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
/// Port of the metrics server: `ports.ProxyStatusPort` (pkg/cluster/ports).
pub const DEFAULT_METRICS_PORT: u16 = 10249;
/// `oomScoreAdj` default: `qos.KubeProxyOOMScoreAdj` (pkg/kubelet/qos).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;
/// `iptables.masqueradeBit` and `nftables.masqueradeBit` default (defaults.go).
pub const DEFAULT_MASQUERADE_BIT: i32 = 14;
/// `iptables/ipvs/nftables.syncPeriod` default (defaults.go).
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);
/// `iptables/nftables.minSyncPeriod` default (defaults.go); `ipvs.minSyncPeriod` has none.
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// `configSyncPeriod` default (defaults.go).
pub const DEFAULT_CONFIG_SYNC_PERIOD: Duration = Duration::from_secs(15 * 60);
/// `conntrack.maxPerCore` default, 32 * 1024 (defaults.go).
pub const DEFAULT_CONNTRACK_MAX_PER_CORE: i32 = 32 * 1024;
/// `conntrack.min` default, 128 * 1024 (defaults.go).
pub const DEFAULT_CONNTRACK_MIN: i32 = 128 * 1024;
/// `conntrack.tcpEstablishedTimeout` default, one day (defaults.go).
pub const DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// `conntrack.tcpCloseWaitTimeout` default, one hour (defaults.go; kubernetes#32551).
pub const DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// `clientConnection.contentType` default (defaults.go).
pub const DEFAULT_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// `clientConnection.qps` default (defaults.go).
pub const DEFAULT_QPS: f32 = 5.0;
/// `clientConnection.burst` default (defaults.go).
pub const DEFAULT_BURST: i32 = 10;
/// `logging.format` default (component-base `SetRecommendedLoggingConfiguration`).
pub const DEFAULT_LOGGING_FORMAT: &str = "text";
/// `logging.flushFrequency` default (component-base `SetRecommendedLoggingConfiguration`).
pub const DEFAULT_LOG_FLUSH_FREQUENCY: Duration = Duration::from_secs(5);
/// The `nodePortAddresses` keyword for the node's primary IPs.
pub const NODE_PORT_ADDRESSES_PRIMARY: &str = "primary";

/// Go's `netutils.ParseIPSloppy(s).To4() != nil`: an IPv4 address, or an
/// IPv4-mapped IPv6 one. (Sloppy: leading zeros allowed in IPv4 octets.)
pub fn is_ipv4_like(s: &str) -> bool {
    match parse_ip_sloppy(s) {
        Some(IpAddr::V4(_)) => true,
        Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some(),
        None => false,
    }
}

/// Go's `netutils.ParseIPSloppy` (IPv4 octets may have leading zeros, read as decimal):
/// [`kproxy_model::ip::parse_ip_sloppy`].
pub use kproxy_model::ip::parse_ip_sloppy;

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port` → (host, port).
pub fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    let Some(colon) = s.rfind(':') else {
        return Err("missing port in address");
    };
    let (host, host_start, host_end) = if let Some(rest) = s.strip_prefix('[') {
        let Some(close) = rest.find(']').map(|i| i + 1) else {
            return Err("missing ']' in address");
        };
        if close + 1 == s.len() {
            return Err("missing port in address");
        }
        if close + 1 != colon {
            return Err(if s.as_bytes()[close + 1] == b':' {
                "too many colons in address"
            } else {
                "missing port in address"
            });
        }
        (&s[1..close], 1, close + 1)
    } else {
        let host = &s[..colon];
        if host.contains(':') {
            return Err("too many colons in address");
        }
        (host, 0, 0)
    };
    if s[host_start..].contains('[') {
        return Err("unexpected '[' in address");
    }
    if s[host_end..].contains(']') {
        return Err("unexpected ']' in address");
    }
    Ok((host, &s[colon + 1..]))
}

/// Upstream's `proxyutil.AppendPortIfNeeded`: `addr` unchanged if it is already
/// `host:port` or not an IP at all (validation reports that), else `ip:port` /
/// `[ip]:port`.
pub fn append_port_if_needed(addr: &str, port: u16) -> String {
    if split_host_port(addr).is_ok() {
        return addr.to_owned();
    }
    match parse_ip_sloppy(addr) {
        None => addr.to_owned(),
        Some(_) if is_ipv4_like(addr) => format!("{addr}:{port}"),
        Some(_) => format!("[{addr}]:{port}"),
    }
}

impl KubeProxyConfiguration {
    /// Applies upstream's `SetDefaults_KubeProxyConfiguration` (Kubernetes 1.34),
    /// which replaces zero values too. Idempotent. [`super::parse`] calls it.
    pub fn set_defaults(&mut self) {
        if self.bind_address.is_empty() {
            self.bind_address = DEFAULT_BIND_ADDRESS.to_owned();
        }
        // healthz/metrics follow bindAddress's family: 0.0.0.0 / 127.0.0.1 when it is
        // IPv4, [::] / [::1] otherwise (also when it is not an IP: upstream quirk).
        let (healthz_host, metrics_host) = if is_ipv4_like(&self.bind_address) {
            ("0.0.0.0", "127.0.0.1")
        } else {
            ("[::]", "[::1]")
        };
        self.healthz_bind_address = if self.healthz_bind_address.is_empty() {
            format!("{healthz_host}:{DEFAULT_HEALTHZ_PORT}")
        } else {
            append_port_if_needed(&self.healthz_bind_address, DEFAULT_HEALTHZ_PORT)
        };
        self.metrics_bind_address = if self.metrics_bind_address.is_empty() {
            format!("{metrics_host}:{DEFAULT_METRICS_PORT}")
        } else {
            append_port_if_needed(&self.metrics_bind_address, DEFAULT_METRICS_PORT)
        };

        self.oom_score_adj.get_or_insert(DEFAULT_OOM_SCORE_ADJ);

        let iptables = &mut self.iptables;
        if iptables.sync_period.is_zero() {
            iptables.sync_period = DEFAULT_SYNC_PERIOD;
        }
        if iptables.min_sync_period.is_zero() {
            iptables.min_sync_period = DEFAULT_MIN_SYNC_PERIOD;
        }
        iptables.localhost_node_ports.get_or_insert(true);
        iptables
            .masquerade_bit
            .get_or_insert(DEFAULT_MASQUERADE_BIT);

        // ipvs.minSyncPeriod has no default upstream: it stays 0.
        if self.ipvs.sync_period.is_zero() {
            self.ipvs.sync_period = DEFAULT_SYNC_PERIOD;
        }

        let nftables = &mut self.nftables;
        if nftables.sync_period.is_zero() {
            nftables.sync_period = DEFAULT_SYNC_PERIOD;
        }
        if nftables.min_sync_period.is_zero() {
            nftables.min_sync_period = DEFAULT_MIN_SYNC_PERIOD;
        }
        nftables
            .masquerade_bit
            .get_or_insert(DEFAULT_MASQUERADE_BIT);

        // conntrack.udpTimeout/udpStreamTimeout have no default: 0 leaves the sysctls.
        let conntrack = &mut self.conntrack;
        conntrack
            .max_per_core
            .get_or_insert(DEFAULT_CONNTRACK_MAX_PER_CORE);
        conntrack.min.get_or_insert(DEFAULT_CONNTRACK_MIN);
        conntrack
            .tcp_established_timeout
            .get_or_insert(DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT);
        conntrack
            .tcp_close_wait_timeout
            .get_or_insert(DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT);

        if self.config_sync_period.is_zero() {
            self.config_sync_period = DEFAULT_CONFIG_SYNC_PERIOD;
        }

        let client = &mut self.client_connection;
        if client.content_type.is_empty() {
            client.content_type = DEFAULT_CONTENT_TYPE.to_owned();
        }
        if client.qps == 0.0 {
            client.qps = DEFAULT_QPS;
        }
        if client.burst == 0 {
            client.burst = DEFAULT_BURST;
        }

        let logging = &mut self.logging;
        if logging.format.is_empty() {
            logging.format = DEFAULT_LOGGING_FORMAT.to_owned();
        }
        if logging.flush_frequency.is_zero() {
            logging.flush_frequency = DEFAULT_LOG_FLUSH_FREQUENCY;
        }
        for stream in [&mut logging.options.text, &mut logging.options.json] {
            if stream.info_buffer_size.is_empty() {
                stream.info_buffer_size = "0".to_owned();
            }
        }
    }

    /// Applies upstream's Linux `platformApplyDefaults`, which kube-proxy runs after
    /// flags and the config file are merged and before validation:
    /// - empty `mode` → `iptables`;
    /// - `nftables` mode with empty `nodePortAddresses` → `["primary"]`;
    /// - empty `detectLocalMode` → `ClusterCIDR`.
    pub fn apply_platform_defaults(&mut self) {
        if self.mode == ProxyMode::Unset {
            self.mode = ProxyMode::Iptables;
        }
        if self.mode == ProxyMode::Nftables && self.node_port_addresses.is_empty() {
            self.node_port_addresses = vec![NODE_PORT_ADDRESSES_PRIMARY.to_owned()];
        }
        if self.detect_local_mode == LocalMode::Unset {
            self.detect_local_mode = LocalMode::ClusterCidr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(split_host_port("0.0.0.0:10256"), Ok(("0.0.0.0", "10256")));
        assert_eq!(split_host_port("[::1]:10249"), Ok(("::1", "10249")));
        assert_eq!(split_host_port("host:"), Ok(("host", "")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert_eq!(split_host_port("0.0.0.0"), Err("missing port in address"));
        assert_eq!(split_host_port("::1"), Err("too many colons in address"));
        assert_eq!(split_host_port("::1:80"), Err("too many colons in address"));
        assert_eq!(split_host_port("[::1]"), Err("missing port in address"));
        assert_eq!(
            split_host_port("[::1]::80"),
            Err("too many colons in address")
        );
        assert_eq!(split_host_port("[::1]x:80"), Err("missing port in address"));
        assert_eq!(split_host_port("[::1:80"), Err("missing ']' in address"));
        assert_eq!(split_host_port("a]:80"), Err("unexpected ']' in address"));
        assert_eq!(split_host_port("a[:80"), Err("unexpected '[' in address"));
    }

    #[test]
    fn append_port_if_needed_like_upstream() {
        assert_eq!(append_port_if_needed("127.0.0.1", 10249), "127.0.0.1:10249");
        assert_eq!(append_port_if_needed("127.0.0.1:99", 10249), "127.0.0.1:99");
        assert_eq!(append_port_if_needed("::", 10256), "[::]:10256");
        assert_eq!(append_port_if_needed("[::1]:1", 10256), "[::1]:1");
        assert_eq!(
            append_port_if_needed("::ffff:1.2.3.4", 1),
            "::ffff:1.2.3.4:1"
        );
        assert_eq!(append_port_if_needed("not-an-ip", 1), "not-an-ip");
    }

    #[test]
    fn sloppy_ip_parsing() {
        assert_eq!(
            parse_ip_sloppy("010.001.0.1"),
            Some(IpAddr::from([10, 1, 0, 1]))
        );
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("256.0.0.1"), None);
        assert!(is_ipv4_like("::ffff:10.0.0.1"));
        assert!(!is_ipv4_like("::1"));
        assert!(!is_ipv4_like("bogus"));
    }
}
