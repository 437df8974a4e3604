//! Validation, after upstream's `pkg/proxy/apis/config/validation/validation.go`
//! (1.31+ shape: per-mode sections are validated only in their mode), reported with
//! v1alpha1 field paths as upstream's `TestValidateV1Alpha1FieldPaths` expects
//! (`iptables.masqueradeBit`, `conntrack.min`, `nftables.syncPeriod`, ...).
//!
//! Differences, all deliberate:
//! - `mode` also accepts `userspace` (kproxy's userspace proxy).
//! - `ipvs.scheduler` is checked against the scheduler names kproxy knows (upstream
//!   stopped validating it and fails at runtime instead).
//! - `featureGates` names are not checked (kproxy does not know upstream's gate list).
//! - `metricsBindAddress` may be empty (disabled), as the upstream flag's help says.
//! - Negative durations never get this far: the duration parser rejects them.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::defaults::{parse_ip_sloppy, split_host_port};
use super::duration;
use super::{
    ConfigError, KubeProxyConfiguration, LocalMode, NODE_PORT_ADDRESSES_PRIMARY, ProxyMode,
};

/// One invalid field: `iptables.masqueradeBit: must be in the range [0, 31], got 40`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The v1alpha1 field path, e.g. `iptables.masqueradeBit` or `nodePortAddresses[1]`.
    pub path: String,
    /// What is wrong, including the offending value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// IPVS schedulers kproxy accepts (besides empty, meaning `rr`): the Linux IPVS
/// schedulers kube-proxy documents.
pub const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
];

/// Accepted `logging.format` values.
pub const LOGGING_FORMATS: &[&str] = &["text", "json"];

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn masquerade_bit(&mut self, path: &str, bit: Option<i32>) {
        if let Some(bit) = bit
            && !(0..=31).contains(&bit)
        {
            self.push(path, format!("must be in the range [0, 31], got {bit}"));
        }
    }

    fn non_negative(&mut self, path: &str, value: Option<i32>) {
        if let Some(value) = value
            && value < 0
        {
            self.push(
                path,
                format!("must be greater than or equal to 0, got {value}"),
            );
        }
    }

    fn cidr(&mut self, path: String, value: &str) {
        if parse_cidr(value).is_none() {
            self.push(path, format!("must be a valid CIDR, got {value:?}"));
        }
    }

    /// `IP:port`, with a valid IP and a port in 1..=65535 (upstream `validateHostPort`).
    fn host_port(&mut self, path: &str, value: &str) {
        let Ok((host, port)) = split_host_port(value) else {
            self.push(path, format!("must be IP:port, got {value:?}"));
            return;
        };
        if parse_ip_sloppy(host).is_none() {
            self.push(path, format!("must be a valid IP, got {host:?}"));
        }
        match port.parse::<i64>() {
            Ok(1..=65535) => {}
            _ => self.push(
                path,
                format!("must be a valid port (1-65535), got {port:?}"),
            ),
        }
    }
}

/// Go's `netutils.ParseCIDRSloppy`: `ip/prefix` (host bits may be set, IPv4 octets may
/// have leading zeros).
pub(crate) fn parse_cidr(s: &str) -> Option<IpNet> {
    kproxy_model::ip::parse_cidr_sloppy(s)
}

impl KubeProxyConfiguration {
    /// Validates like upstream, collecting every error (see the module documentation
    /// of `validation` for kproxy's differences). Run it after applying flags and
    /// [`KubeProxyConfiguration::apply_platform_defaults`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = self.validation_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Every validation error, in a stable order (empty when valid).
    pub fn validation_errors(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        let mode = self.effective_mode();

        // Proxy mode.
        match &self.mode {
            ProxyMode::Other(other) => errs.push(
                "mode",
                format!(
                    "must be iptables, ipvs, nftables, userspace or blank (blank means iptables), got {other:?}"
                ),
            ),
            ProxyMode::Unset
            | ProxyMode::Iptables
            | ProxyMode::Ipvs
            | ProxyMode::Nftables
            | ProxyMode::Userspace => {}
        }

        // iptables.masqueradeBit is validated in every mode (ipvs uses it too).
        errs.masquerade_bit("iptables.masqueradeBit", self.iptables.masquerade_bit);

        // The sync periods of the mode in effect (upstream converts only those).
        let section = match mode {
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
            _ => "iptables",
        };
        let (sync, min_sync) = self.sync_periods();
        if sync.is_zero() {
            errs.push(
                format!("{section}.syncPeriod"),
                "must be greater than 0, got 0s",
            );
        }
        if min_sync > sync {
            errs.push(
                format!("{section}.syncPeriod"),
                format!(
                    "must be greater than or equal to {section}.minSyncPeriod ({}), got {}",
                    duration::format(min_sync),
                    duration::format(sync)
                ),
            );
        }

        if mode == ProxyMode::Ipvs {
            let scheduler = self.ipvs.scheduler.as_str();
            if !scheduler.is_empty() && !IPVS_SCHEDULERS.contains(&scheduler) {
                errs.push(
                    "ipvs.scheduler",
                    format!(
                        "must be one of {} or blank (blank means rr), got {scheduler:?}",
                        IPVS_SCHEDULERS.join(", ")
                    ),
                );
            }
            for (i, cidr) in self.ipvs.exclude_cidrs.iter().enumerate() {
                errs.cidr(format!("ipvs.excludeCIDRs[{i}]"), cidr);
            }
        }
        if mode == ProxyMode::Nftables {
            errs.masquerade_bit("nftables.masqueradeBit", self.nftables.masquerade_bit);
        }

        // Conntrack and OOM score (upstream's "linux" section).
        errs.non_negative("conntrack.maxPerCore", self.conntrack.max_per_core);
        errs.non_negative("conntrack.min", self.conntrack.min);
        if let Some(adj) = self.oom_score_adj
            && !(-1000..=1000).contains(&adj)
        {
            errs.push(
                "oomScoreAdj",
                format!("must be in the range [-1000, 1000], got {adj}"),
            );
        }

        if self.client_connection.burst < 0 {
            errs.push(
                "clientConnection.burst",
                format!(
                    "must be greater than or equal to 0, got {}",
                    self.client_connection.burst
                ),
            );
        }
        if !self.client_connection.qps.is_finite() {
            errs.push(
                "clientConnection.qps",
                format!(
                    "must be a finite number, got {}",
                    self.client_connection.qps
                ),
            );
        }

        if self.config_sync_period == Duration::ZERO {
            errs.push("configSyncPeriod", "must be greater than 0, got 0s");
        }

        // Addresses.
        if parse_ip_sloppy(&self.bind_address).is_none() {
            errs.push(
                "bindAddress",
                format!("must be a valid IP address, got {:?}", self.bind_address),
            );
        }
        if !self.healthz_bind_address.is_empty() {
            errs.host_port("healthzBindAddress", &self.healthz_bind_address);
        }
        if !self.metrics_bind_address.is_empty() {
            errs.host_port("metricsBindAddress", &self.metrics_bind_address);
        }

        for (i, address) in self.node_port_addresses.iter().enumerate() {
            if address == NODE_PORT_ADDRESSES_PRIMARY {
                if i != 0 || self.node_port_addresses.len() != 1 {
                    errs.push(
                        format!("nodePortAddresses[{i}]"),
                        "can't use both 'primary' and CIDRs",
                    );
                }
                break;
            }
            errs.cidr(format!("nodePortAddresses[{i}]"), address);
        }

        // Local traffic detection.
        match &self.detect_local_mode {
            LocalMode::Other(other) => errs.push(
                "detectLocalMode",
                format!(
                    "must be one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or blank (blank means ClusterCIDR), got {other:?}"
                ),
            ),
            LocalMode::BridgeInterface if self.detect_local.bridge_interface.is_empty() => {
                errs.push(
                    "detectLocal.bridgeInterface",
                    "must not be empty when detectLocalMode is BridgeInterface",
                )
            }
            LocalMode::InterfaceNamePrefix
                if self.detect_local.interface_name_prefix.is_empty() =>
            {
                errs.push(
                    "detectLocal.interfaceNamePrefix",
                    "must not be empty when detectLocalMode is InterfaceNamePrefix",
                )
            }
            LocalMode::Unset | LocalMode::ClusterCidr if !self.cluster_cidr.is_empty() => {
                if let Some(message) = cluster_cidr_error(&self.cluster_cidr) {
                    errs.push("clusterCIDR", message);
                }
            }
            _ => {}
        }

        // Logging.
        if !LOGGING_FORMATS.contains(&self.logging.format.as_str()) {
            errs.push(
                "logging.format",
                format!(
                    "must be one of {}, got {:?}",
                    LOGGING_FORMATS.join(", "),
                    self.logging.format
                ),
            );
        }
        if self.logging.format == "json" && !self.logging.vmodule.is_empty() {
            errs.push(
                "logging.vmodule",
                "is only supported with the text log format",
            );
        }

        errs.0
    }
}

/// `clusterCIDR`: one CIDR, or a comma-separated pair of one IPv4 and one IPv6 CIDR
/// (upstream `validateDualStackCIDRStrings`).
fn cluster_cidr_error(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split(',').collect();
    if parts.len() > 2 {
        return Some(format!(
            "must be a single CIDR or a dual-stack pair of CIDRs (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48), got {value:?}"
        ));
    }
    let nets: Vec<Option<IpNet>> = parts.iter().map(|p| parse_cidr(p)).collect();
    if let Some(i) = nets.iter().position(Option::is_none) {
        return Some(format!(
            "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48), got {:?}",
            parts[i]
        ));
    }
    if let [Some(a), Some(b)] = nets.as_slice() {
        let family = |n: &IpNet| matches!(n.addr(), IpAddr::V4(_));
        if family(a) == family(b) {
            return Some(format!(
                "must be a single CIDR or a dual-stack pair of CIDRs (one IPv4, one IPv6), got {value:?}"
            ));
        }
    }
    None
}
