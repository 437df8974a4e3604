//! kube-proxy's configuration file: `KubeProxyConfiguration`,
//! `apiVersion: kubeproxy.config.k8s.io/v1alpha1`, in YAML or JSON.
//!
//! The model mirrors upstream's versioned type (`staging/src/k8s.io/kube-proxy/config/
//! v1alpha1/types.go`, Kubernetes 1.34) field for field: Go pointers are `Option`s,
//! Go non-pointer fields are plain values whose Go zero value is Rust's `Default`.
//! Loading follows upstream's decoding and defaulting:
//!
//! 1. [`parse`]/[`load`]: YAML/JSON → typed model. A wrong `apiVersion`/`kind` is an
//!    error; unknown fields (with their path) and duplicate keys are warnings, like
//!    upstream's strict-then-lenient decoding. `null` behaves as in Go: the field keeps
//!    its zero value (so it gets defaulted).
//! 2. [`KubeProxyConfiguration::set_defaults`] (done by `parse`): upstream's
//!    `SetDefaults_KubeProxyConfiguration`, which also replaces *zero* values
//!    (e.g. `iptables.minSyncPeriod: 0s` becomes `1s`).
//! 3. The caller applies command-line flags (the `kproxy` binary's `ProxyFlags::apply`).
//! 4. [`KubeProxyConfiguration::apply_platform_defaults`]: upstream's Linux
//!    `platformApplyDefaults` (empty mode → iptables, ...).
//! 5. [`KubeProxyConfiguration::validate`]: upstream's validation, reporting every
//!    error with its v1alpha1 field path.
//!
//! The `kproxy` binary's `ProxyFlags::resolve` runs all five steps.
//!
//! # Example
//!
//! ```
//! let loaded = kproxy_config::parse(
//!     "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
//!      kind: KubeProxyConfiguration\n\
//!      clusterCIDR: 10.244.0.0/16\n\
//!      iptables:\n  masqueradeBitt: 14\n",
//! )?;
//! // Defaults filled in, unknown fields reported with their path.
//! assert_eq!(loaded.config.iptables.sync_period, std::time::Duration::from_secs(30));
//! assert_eq!(loaded.config.healthz_bind_address, "0.0.0.0:10256");
//! assert!(loaded.warnings.iter().any(|w| w.contains("iptables.masqueradeBitt")));
//! loaded.config.validate()?;
//! # Ok::<(), kproxy_config::ConfigError>(())
//! ```

mod defaults;
pub mod duration;
mod validation;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use defaults::*;
pub use validation::FieldError;

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only supported `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// Reads `null` as the type's zero value, like Go does for non-pointer fields.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// KubeProxyConfiguration v1alpha1: everything kube-proxy (and kproxy) is configured with.
///
/// [`Default`] gives upstream's defaults (an empty file's result). Fields are public
/// and named after their YAML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    /// `featureGates`: feature name → enabled.
    #[serde(default, deserialize_with = "nullable")]
    pub feature_gates: BTreeMap<String, bool>,
    /// `clientConnection`: how to reach the apiserver.
    #[serde(default, deserialize_with = "nullable")]
    pub client_connection: ClientConnectionConfiguration,
    /// `logging`: log verbosity and format.
    #[serde(default, deserialize_with = "nullable")]
    pub logging: LoggingConfiguration,
    /// `hostnameOverride`: the Node name to use instead of the hostname.
    #[serde(default, deserialize_with = "nullable")]
    pub hostname_override: String,
    /// `bindAddress`: overrides the node's primary IP (no socket is bound to it).
    #[serde(default, deserialize_with = "nullable")]
    pub bind_address: String,
    /// `healthzBindAddress`: `IP:port` of the health check server (empty: disabled).
    #[serde(default, deserialize_with = "nullable")]
    pub healthz_bind_address: String,
    /// `metricsBindAddress`: `IP:port` of the metrics server (empty: disabled).
    #[serde(default, deserialize_with = "nullable")]
    pub metrics_bind_address: String,
    /// `bindAddressHardFail`: treat failing to bind a server port as fatal.
    #[serde(default, deserialize_with = "nullable")]
    pub bind_address_hard_fail: bool,
    /// `enableProfiling`: serve /debug/pprof on the metrics server.
    #[serde(default, deserialize_with = "nullable")]
    pub enable_profiling: bool,
    /// `showHiddenMetricsForVersion`: accepted, ignored by kproxy (warned about).
    #[serde(default, deserialize_with = "nullable")]
    pub show_hidden_metrics_for_version: String,
    /// `mode`: the proxy mode; empty means iptables on Linux.
    #[serde(default, deserialize_with = "nullable")]
    pub mode: ProxyMode,
    /// `iptables`: iptables-mode settings (also the masquerade bit of ipvs mode).
    #[serde(default, deserialize_with = "nullable")]
    pub iptables: KubeProxyIPTablesConfiguration,
    /// `ipvs`: ipvs-mode settings.
    #[serde(default, deserialize_with = "nullable")]
    pub ipvs: KubeProxyIPVSConfiguration,
    /// `nftables`: nftables-mode settings.
    #[serde(default, deserialize_with = "nullable")]
    pub nftables: KubeProxyNFTablesConfiguration,
    /// `winkernel`: Windows-only; accepted and ignored (warned about when set).
    #[serde(default, deserialize_with = "nullable")]
    pub winkernel: KubeProxyWinkernelConfiguration,
    /// `detectLocalMode`: how to tell pod-originated ("local") traffic.
    #[serde(default, deserialize_with = "nullable")]
    pub detect_local_mode: LocalMode,
    /// `detectLocal`: settings of the BridgeInterface and InterfaceNamePrefix modes.
    #[serde(default, deserialize_with = "nullable")]
    pub detect_local: DetectLocalConfiguration,
    /// `clusterCIDR`: the pods' CIDR, or a comma-separated dual-stack pair.
    #[serde(rename = "clusterCIDR", default, deserialize_with = "nullable")]
    pub cluster_cidr: String,
    /// `nodePortAddresses`: CIDRs of the node IPs NodePorts are served on, or
    /// `["primary"]`; empty means all local IPs (nftables: primary).
    #[serde(default, deserialize_with = "nullable")]
    pub node_port_addresses: Vec<String>,
    /// `oomScoreAdj`: the process's oom_score_adj, in [-1000, 1000].
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// `conntrack`: conntrack sysctls kube-proxy sets at startup.
    #[serde(default, deserialize_with = "nullable")]
    pub conntrack: KubeProxyConntrackConfiguration,
    /// `configSyncPeriod`: informer resync period; must be > 0.
    #[serde(default, with = "duration::serde_go")]
    pub config_sync_period: Duration,
    /// `portRange`: unused since the userspace proxy's removal upstream; ignored
    /// (warned about when set).
    #[serde(default, deserialize_with = "nullable")]
    pub port_range: String,
    /// `windowsRunAsService`: Windows-only; accepted and ignored.
    #[serde(default, deserialize_with = "nullable")]
    pub windows_run_as_service: bool,
}

/// `clientConnection` (component-base `ClientConnectionConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnectionConfiguration {
    /// `kubeconfig`: path of a kubeconfig file; empty means in-cluster configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub kubeconfig: String,
    /// `acceptContentTypes`: the Accept header sent to the apiserver.
    #[serde(default, deserialize_with = "nullable")]
    pub accept_content_types: String,
    /// `contentType`: content type of requests to the apiserver.
    #[serde(default, deserialize_with = "nullable")]
    pub content_type: String,
    /// `qps`: client-side rate limit, requests per second.
    #[serde(default, deserialize_with = "nullable")]
    pub qps: f32,
    /// `burst`: client-side rate limit burst.
    #[serde(default, deserialize_with = "nullable")]
    pub burst: i32,
}

/// `logging` (component-base `LoggingConfiguration`, the fields kproxy uses; the
/// alpha `options` are accepted and kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfiguration {
    /// `format`: `text` or `json`.
    #[serde(default, deserialize_with = "nullable")]
    pub format: String,
    /// `flushFrequency`: a Go duration string, or an integer of nanoseconds.
    #[serde(default, with = "flush_frequency")]
    pub flush_frequency: Duration,
    /// `verbosity`: klog-style `-v` level.
    #[serde(default, deserialize_with = "nullable")]
    pub verbosity: u32,
    /// `vmodule`: per-file verbosity overrides (text format only).
    #[serde(default, deserialize_with = "nullable")]
    pub vmodule: Vec<VModuleItem>,
    /// `options`: format-specific alpha options; accepted, not used by kproxy.
    #[serde(default, deserialize_with = "nullable")]
    pub options: LoggingFormatOptions,
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VModuleItem {
    /// `filePattern`: a file name glob.
    #[serde(default, deserialize_with = "nullable")]
    pub file_pattern: String,
    /// `verbosity`: the level for matching files.
    #[serde(default, deserialize_with = "nullable")]
    pub verbosity: u32,
}

/// `logging.options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingFormatOptions {
    /// `text` format options.
    #[serde(default, deserialize_with = "nullable")]
    pub text: LogStreamOptions,
    /// `json` format options.
    #[serde(default, deserialize_with = "nullable")]
    pub json: LogStreamOptions,
}

/// `logging.options.text` / `logging.options.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStreamOptions {
    /// `splitStream`: info messages to stdout, errors to stderr.
    #[serde(default, deserialize_with = "nullable")]
    pub split_stream: bool,
    /// `infoBufferSize`: a resource quantity (`"0"`, `64Ki`, or a number).
    #[serde(default, deserialize_with = "quantity")]
    pub info_buffer_size: String,
}

/// Reads a Kubernetes quantity written either as a string or as a number.
fn quantity<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a quantity (string or number), got {other}"
        ))),
    }
}

/// `logging.flushFrequency`: component-base's `TimeOrMetaDuration` (a duration string
/// or integer nanoseconds); written back as a duration string.
mod flush_frequency {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        super::duration::serde_go::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        use serde::de::Error;
        match Option::<serde_json::Value>::deserialize(d)? {
            None | Some(serde_json::Value::Null) => Ok(Duration::ZERO),
            Some(serde_json::Value::String(s)) => {
                super::duration::parse(&s).map_err(D::Error::custom)
            }
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(nanos) if nanos <= i64::MAX as u64 => Ok(Duration::from_nanos(nanos)),
                _ => Err(D::Error::custom(format!(
                    "invalid flushFrequency {n}: must be a duration or a non-negative number of nanoseconds"
                ))),
            },
            Some(other) => Err(D::Error::custom(format!(
                "invalid flushFrequency {other}: must be a duration or a number of nanoseconds"
            ))),
        }
    }
}

/// `iptables`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyIPTablesConfiguration {
    /// `masqueradeBit`: fwmark bit marking packets to SNAT (iptables and ipvs modes), in [0, 31].
    #[serde(default)]
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`: SNAT all traffic to cluster IPs (iptables, ipvs and userspace modes).
    #[serde(default, deserialize_with = "nullable")]
    pub masquerade_all: bool,
    /// `localhostNodePorts`: whether NodePorts answer on 127.0.0.1 (iptables mode, IPv4).
    #[serde(default)]
    pub localhost_node_ports: Option<bool>,
    /// `snatNodeInternalIP`: newer than 1.34 upstream (SNAT to the node's InternalIP);
    /// accepted, not implemented by kproxy (warned about when true).
    #[serde(
        rename = "snatNodeInternalIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub snat_node_internal_ip: Option<bool>,
    /// `syncPeriod`: full resync interval; must be > 0.
    #[serde(default, with = "duration::serde_go")]
    pub sync_period: Duration,
    /// `minSyncPeriod`: minimum interval between rule syncs.
    #[serde(default, with = "duration::serde_go")]
    pub min_sync_period: Duration,
}

/// `ipvs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyIPVSConfiguration {
    /// `syncPeriod`: full resync interval; must be > 0.
    #[serde(default, with = "duration::serde_go")]
    pub sync_period: Duration,
    /// `minSyncPeriod`: minimum interval between rule syncs (not defaulted upstream: 0).
    #[serde(default, with = "duration::serde_go")]
    pub min_sync_period: Duration,
    /// `scheduler`: IPVS scheduler (`rr` when empty).
    #[serde(default, deserialize_with = "nullable")]
    pub scheduler: String,
    /// `excludeCIDRs`: CIDRs whose IPVS services are left alone on cleanup.
    #[serde(rename = "excludeCIDRs", default, deserialize_with = "nullable")]
    pub exclude_cidrs: Vec<String>,
    /// `strictARP`: set arp_ignore=1 and arp_announce=2.
    #[serde(rename = "strictARP", default, deserialize_with = "nullable")]
    pub strict_arp: bool,
    /// `tcpTimeout`: IPVS idle TCP timeout; 0 leaves the system's.
    #[serde(default, with = "duration::serde_go")]
    pub tcp_timeout: Duration,
    /// `tcpFinTimeout`: IPVS TCP timeout after FIN; 0 leaves the system's.
    #[serde(default, with = "duration::serde_go")]
    pub tcp_fin_timeout: Duration,
    /// `udpTimeout`: IPVS UDP timeout; 0 leaves the system's.
    #[serde(default, with = "duration::serde_go")]
    pub udp_timeout: Duration,
}

/// `nftables`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyNFTablesConfiguration {
    /// `masqueradeBit`: fwmark bit marking packets to SNAT in nftables mode, in [0, 31].
    #[serde(default)]
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`: SNAT all traffic to cluster IPs in nftables mode.
    #[serde(default, deserialize_with = "nullable")]
    pub masquerade_all: bool,
    /// `syncPeriod`: full resync interval; must be > 0.
    #[serde(default, with = "duration::serde_go")]
    pub sync_period: Duration,
    /// `minSyncPeriod`: minimum interval between rule syncs.
    #[serde(default, with = "duration::serde_go")]
    pub min_sync_period: Duration,
}

/// `conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConntrackConfiguration {
    /// `maxPerCore`: nf_conntrack_max per CPU (0: leave the limit and ignore `min`).
    #[serde(default)]
    pub max_per_core: Option<i32>,
    /// `min`: lower bound of nf_conntrack_max.
    #[serde(default)]
    pub min: Option<i32>,
    /// `tcpEstablishedTimeout`: nf_conntrack_tcp_timeout_established (0: leave as is).
    #[serde(default, with = "duration::serde_go::option")]
    pub tcp_established_timeout: Option<Duration>,
    /// `tcpCloseWaitTimeout`: nf_conntrack_tcp_timeout_close_wait (0: leave as is).
    #[serde(default, with = "duration::serde_go::option")]
    pub tcp_close_wait_timeout: Option<Duration>,
    /// `tcpBeLiberal`: set nf_conntrack_tcp_be_liberal=1.
    #[serde(default, deserialize_with = "nullable")]
    pub tcp_be_liberal: bool,
    /// `udpTimeout`: nf_conntrack_udp_timeout (0: leave as is).
    #[serde(default, with = "duration::serde_go")]
    pub udp_timeout: Duration,
    /// `udpStreamTimeout`: nf_conntrack_udp_timeout_stream (0: leave as is).
    #[serde(default, with = "duration::serde_go")]
    pub udp_stream_timeout: Duration,
}

/// `winkernel` (Windows only; accepted and ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyWinkernelConfiguration {
    /// `networkName`.
    #[serde(default, deserialize_with = "nullable")]
    pub network_name: String,
    /// `sourceVip`.
    #[serde(default, deserialize_with = "nullable")]
    pub source_vip: String,
    /// `enableDSR`.
    #[serde(rename = "enableDSR", default, deserialize_with = "nullable")]
    pub enable_dsr: bool,
    /// `rootHnsEndpointName`.
    #[serde(default, deserialize_with = "nullable")]
    pub root_hns_endpoint_name: String,
    /// `forwardHealthCheckVip`.
    #[serde(default, deserialize_with = "nullable")]
    pub forward_health_check_vip: bool,
}

/// `detectLocal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocalConfiguration {
    /// `bridgeInterface`: with `detectLocalMode: BridgeInterface`, traffic from this
    /// bridge is local.
    #[serde(default, deserialize_with = "nullable")]
    pub bridge_interface: String,
    /// `interfaceNamePrefix`: with `detectLocalMode: InterfaceNamePrefix`, traffic from
    /// interfaces with this prefix is local.
    #[serde(default, deserialize_with = "nullable")]
    pub interface_name_prefix: String,
}

/// `mode`. Unknown strings are kept (as [`ProxyMode::Other`]) so that validation can
/// report them together with every other error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum ProxyMode {
    /// `""`: the platform default (iptables on Linux).
    #[default]
    Unset,
    /// `iptables`.
    Iptables,
    /// `ipvs`.
    Ipvs,
    /// `nftables`.
    Nftables,
    /// `userspace`: kproxy's userspace proxy (removed from kube-proxy in 1.26).
    Userspace,
    /// Anything else (e.g. Windows' `kernelspace`); rejected by validation.
    Other(String),
}

impl ProxyMode {
    /// The mode as written in the config file.
    pub fn as_str(&self) -> &str {
        match self {
            ProxyMode::Unset => "",
            ProxyMode::Iptables => "iptables",
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
            ProxyMode::Userspace => "userspace",
            ProxyMode::Other(s) => s,
        }
    }

    /// Parses a mode; never fails (unknown strings become [`ProxyMode::Other`]).
    /// Case-sensitive, like upstream.
    pub fn from_name(s: &str) -> Self {
        match s {
            "" => ProxyMode::Unset,
            "iptables" => ProxyMode::Iptables,
            "ipvs" => ProxyMode::Ipvs,
            "nftables" => ProxyMode::Nftables,
            "userspace" => ProxyMode::Userspace,
            other => ProxyMode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProxyMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProxyMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ProxyMode::from_name(&String::deserialize(d)?))
    }
}

/// `detectLocalMode`. Unknown strings are kept (as [`LocalMode::Other`]) for validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum LocalMode {
    /// `""`: the platform default (ClusterCIDR).
    #[default]
    Unset,
    /// `ClusterCIDR`: traffic from `clusterCIDR` is local.
    ClusterCidr,
    /// `NodeCIDR`: traffic from the Node's `spec.podCIDRs` is local.
    NodeCidr,
    /// `BridgeInterface`: traffic from `detectLocal.bridgeInterface` is local.
    BridgeInterface,
    /// `InterfaceNamePrefix`: traffic from interfaces named `detectLocal.interfaceNamePrefix*` is local.
    InterfaceNamePrefix,
    /// Anything else; rejected by validation.
    Other(String),
}

impl LocalMode {
    /// The mode as written in the config file.
    pub fn as_str(&self) -> &str {
        match self {
            LocalMode::Unset => "",
            LocalMode::ClusterCidr => "ClusterCIDR",
            LocalMode::NodeCidr => "NodeCIDR",
            LocalMode::BridgeInterface => "BridgeInterface",
            LocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
            LocalMode::Other(s) => s,
        }
    }

    /// Parses a mode; never fails. Case-sensitive, like upstream.
    pub fn from_name(s: &str) -> Self {
        match s {
            "" => LocalMode::Unset,
            "ClusterCIDR" => LocalMode::ClusterCidr,
            "NodeCIDR" => LocalMode::NodeCidr,
            "BridgeInterface" => LocalMode::BridgeInterface,
            "InterfaceNamePrefix" => LocalMode::InterfaceNamePrefix,
            other => LocalMode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for LocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LocalMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LocalMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LocalMode::from_name(&String::deserialize(d)?))
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not well-formed YAML/JSON.
    #[error("{origin}: not valid YAML or JSON: {message}")]
    Syntax {
        /// The file name, or `<input>`.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// Well-formed, but not a KubeProxyConfiguration (no mapping, missing
    /// `apiVersion`/`kind`).
    #[error("{origin}: {message}")]
    NotAConfiguration {
        /// The file name, or `<input>`.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// An `apiVersion` other than [`API_VERSION`].
    #[error("{origin}: unsupported apiVersion {api_version:?}: kproxy reads only {API_VERSION:?}")]
    UnsupportedApiVersion {
        /// The file name, or `<input>`.
        origin: String,
        /// The apiVersion found.
        api_version: String,
    },
    /// A `kind` other than [`KIND`].
    #[error("{origin}: unsupported kind {kind:?}: expected {KIND:?}")]
    UnsupportedKind {
        /// The file name, or `<input>`.
        origin: String,
        /// The kind found.
        kind: String,
    },
    /// A field has a value of the wrong type or syntax (e.g. a malformed duration).
    #[error("{origin}: {path}: {message}")]
    Decode {
        /// The file name, or `<input>`.
        origin: String,
        /// The field's path, e.g. `iptables.syncPeriod`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Validation failed; every failing field is listed.
    #[error("invalid KubeProxyConfiguration: {}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The field errors of an [`ConfigError::Invalid`] (empty for other errors).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

/// A parsed, defaulted configuration and what is worth telling the operator about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration, upstream defaults applied (not validated yet).
    pub config: KubeProxyConfiguration,
    /// Unknown fields (`unknown field "iptables.masqueradeBitt"`), duplicate keys,
    /// and set-but-ignored fields (portRange, winkernel, ...).
    pub warnings: Vec<String>,
}

/// Reads and parses a config file (see [`parse`]).
pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_with_origin(&text, &path.display().to_string())
}

/// Parses a KubeProxyConfiguration from YAML or JSON and applies upstream's
/// defaults. Does not validate (flags may still change it).
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    parse_with_origin(text, "<input>")
}

fn parse_with_origin(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let document = parse_document(text, origin, &mut warnings)?;
    let not_a_config = |message: &str| ConfigError::NotAConfiguration {
        origin: origin.to_owned(),
        message: message.to_owned(),
    };
    let serde_json::Value::Object(mut fields) = document else {
        return Err(not_a_config(
            "not a KubeProxyConfiguration: the document must be a mapping with apiVersion and kind",
        ));
    };
    match fields.remove("apiVersion") {
        Some(serde_json::Value::String(v)) if v == API_VERSION => {}
        None | Some(serde_json::Value::Null) => {
            return Err(not_a_config(&format!(
                "apiVersion is missing (expected {API_VERSION:?})"
            )));
        }
        Some(other) => {
            return Err(ConfigError::UnsupportedApiVersion {
                origin: origin.to_owned(),
                api_version: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            });
        }
    }
    match fields.remove("kind") {
        Some(serde_json::Value::String(k)) if k == KIND => {}
        None | Some(serde_json::Value::Null) => {
            return Err(not_a_config(&format!(
                "kind is missing (expected {KIND:?})"
            )));
        }
        Some(other) => {
            return Err(ConfigError::UnsupportedKind {
                origin: origin.to_owned(),
                kind: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            });
        }
    }

    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let deserializer =
        serde_ignored::Deserializer::new(serde_json::Value::Object(fields), &mut record_unknown);
    let mut config: KubeProxyConfiguration = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| ConfigError::Decode {
            origin: origin.to_owned(),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    for path in unknown {
        warnings.push(format!("{origin}: unknown field {path:?} (ignored)"));
    }
    warnings.extend(
        config
            .ignored_settings()
            .into_iter()
            .map(|w| format!("{origin}: {w}")),
    );
    config.set_defaults();
    Ok(Loaded { config, warnings })
}

/// A `serde_ignored` path as a v1alpha1 field path: `iptables.masqueradeBitt`,
/// `logging.vmodule[0].level`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// YAML (JSON being YAML) → untyped document. Duplicate keys are a warning (last one
/// wins, as with upstream's lenient decoder), not an error.
fn parse_document(
    text: &str,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Result<serde_json::Value, ConfigError> {
    let syntax = |e: serde_saphyr::Error| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: e.without_snippet().to_string(),
    };
    let value = match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(value) => value,
        Err(e) => {
            let serde_saphyr::Error::DuplicateMappingKey { key, location } = e.without_snippet()
            else {
                return Err(syntax(e));
            };
            warnings.push(format!(
                "{origin}: duplicate key {} at line {} (the last value is used)",
                key.as_deref().unwrap_or("?"),
                location.line()
            ));
            let mut options = serde_saphyr::Options::default();
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
            serde_saphyr::from_str_with_options(text, options).map_err(syntax)?
        }
    };
    Ok(value)
}

impl KubeProxyConfiguration {
    /// Go's zero value: what an empty document decodes to, before defaulting.
    pub fn zero() -> Self {
        KubeProxyConfiguration {
            feature_gates: BTreeMap::new(),
            client_connection: ClientConnectionConfiguration::default(),
            logging: LoggingConfiguration::default(),
            hostname_override: String::new(),
            bind_address: String::new(),
            healthz_bind_address: String::new(),
            metrics_bind_address: String::new(),
            bind_address_hard_fail: false,
            enable_profiling: false,
            show_hidden_metrics_for_version: String::new(),
            mode: ProxyMode::Unset,
            iptables: KubeProxyIPTablesConfiguration::default(),
            ipvs: KubeProxyIPVSConfiguration::default(),
            nftables: KubeProxyNFTablesConfiguration::default(),
            winkernel: KubeProxyWinkernelConfiguration::default(),
            detect_local_mode: LocalMode::Unset,
            detect_local: DetectLocalConfiguration::default(),
            cluster_cidr: String::new(),
            node_port_addresses: Vec::new(),
            oom_score_adj: None,
            conntrack: KubeProxyConntrackConfiguration::default(),
            config_sync_period: Duration::ZERO,
            port_range: String::new(),
            windows_run_as_service: false,
        }
    }

    /// The configuration as YAML, `apiVersion` and `kind` included (what
    /// `--write-config-to` writes).
    pub fn to_yaml(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Typed<'a> {
            api_version: &'static str,
            kind: &'static str,
            #[serde(flatten)]
            config: &'a KubeProxyConfiguration,
        }
        serde_saphyr::to_string(&Typed {
            api_version: API_VERSION,
            kind: KIND,
            config: self,
        })
        // Serializing plain structs, strings and numbers cannot fail.
        .expect("KubeProxyConfiguration serializes to YAML")
    }

    /// The proxy mode in effect: [`ProxyMode::Unset`] means iptables on Linux
    /// (upstream `platformApplyDefaults`).
    pub fn effective_mode(&self) -> ProxyMode {
        match &self.mode {
            ProxyMode::Unset => ProxyMode::Iptables,
            other => other.clone(),
        }
    }

    /// The `(syncPeriod, minSyncPeriod)` in effect: v1alpha1 keeps one pair per mode and
    /// upstream's conversion picks `ipvs.*` in ipvs mode, `nftables.*` in nftables mode
    /// and `iptables.*` otherwise (userspace included).
    pub fn sync_periods(&self) -> (Duration, Duration) {
        match self.effective_mode() {
            ProxyMode::Ipvs => (self.ipvs.sync_period, self.ipvs.min_sync_period),
            ProxyMode::Nftables => (self.nftables.sync_period, self.nftables.min_sync_period),
            _ => (self.iptables.sync_period, self.iptables.min_sync_period),
        }
    }

    /// `masqueradeAll` in effect: `nftables.masqueradeAll` in nftables mode,
    /// `iptables.masqueradeAll` otherwise (upstream's conversion).
    pub fn masquerade_all(&self) -> bool {
        match self.effective_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            _ => self.iptables.masquerade_all,
        }
    }

    /// The masquerade fwmark bit in effect: `nftables.masqueradeBit` in nftables mode,
    /// `iptables.masqueradeBit` otherwise (ipvs uses the iptables one upstream).
    pub fn masquerade_bit(&self) -> i32 {
        let bit = match self.effective_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            _ => self.iptables.masquerade_bit,
        };
        bit.unwrap_or(DEFAULT_MASQUERADE_BIT)
    }

    /// Set fields that kproxy accepts but ignores, as warnings.
    fn ignored_settings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.port_range.is_empty() {
            warnings.push(format!(
                "portRange {:?} is deprecated and ignored",
                self.port_range
            ));
        }
        if self.winkernel != KubeProxyWinkernelConfiguration::default() {
            warnings.push("winkernel settings are Windows-only and ignored".to_owned());
        }
        if self.windows_run_as_service {
            warnings.push("windowsRunAsService is Windows-only and ignored".to_owned());
        }
        if !self.show_hidden_metrics_for_version.is_empty() {
            warnings.push(format!(
                "showHiddenMetricsForVersion {:?} is ignored (kproxy has no hidden metrics)",
                self.show_hidden_metrics_for_version
            ));
        }
        if self.iptables.snat_node_internal_ip == Some(true) {
            warnings.push(
                "iptables.snatNodeInternalIP is not implemented by kproxy and ignored".to_owned(),
            );
        }
        warnings
    }
}

impl Default for KubeProxyConfiguration {
    /// Upstream's defaults: `SetDefaults_KubeProxyConfiguration` applied to the zero value.
    fn default() -> Self {
        let mut config = Self::zero();
        config.set_defaults();
        config
    }
}
