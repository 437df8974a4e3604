//! kube-proxy's command-line flags (Kubernetes 1.34, `cmd/kube-proxy/app/options.go`
//! and component-base's logging flags), for operators who copy kube-proxy command
//! lines into kproxy's DaemonSet.
//!
//! [`ProxyFlags`] is meant to be `#[command(flatten)]`ed into a clap subcommand.
//! pflag compatibility:
//! - valued flags take `--flag=value` or `--flag value`; like pflag, the next
//!   argument is taken as the value even when it starts with `-` (`--oom-score-adj -999`);
//! - boolean flags take `--flag` or `--flag=true|false` (Go's `strconv.ParseBool`
//!   spellings: `1 t T TRUE true True 0 f F FALSE false False`); `--flag false` is
//!   *not* a value (pflag neither), "false" becomes a stray argument;
//! - list flags are comma-separated and may be repeated (`--nodeport-addresses=a,b
//!   --nodeport-addresses=c`); an empty value means an empty list;
//! - durations are Go durations (`30s`, `1m0s`, `2h22m`);
//! - integers accept Go's base prefixes (`0x1f`, `0o17`, `017`), like pflag's Int32;
//! - `-v=4`, `-v 4`, `-v4`, `--v=4`, `--v 4` set the verbosity;
//! - `_` may be used instead of `-` in flag names (kube-proxy normalizes them).
//!
//! Precedence differs from kube-proxy on purpose: kube-proxy ignores almost every
//! flag when `--config` is given, kproxy lets explicitly given flags override the
//! file (and warns, since the same command line means something else to kube-proxy).
//! Defaults < config file < flags.

// The rest of the binary does not use this API yet.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{
    self, ConfigError, DEFAULT_HEALTHZ_PORT, DEFAULT_METRICS_PORT, KubeProxyConfiguration,
    LocalMode, ProxyMode, VModuleItem,
};

/// kube-proxy's flags. Every field is `None` when the flag was not given.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct ProxyFlags {
    /// The path to the configuration file (KubeProxyConfiguration v1alpha1).
    #[arg(long, value_name = "FILE", allow_hyphen_values = true, value_parser = parse_path)]
    pub config: Option<PathBuf>,

    /// If set, write the default configuration values to this file and exit.
    #[arg(long, alias = "write_config_to", value_name = "FILE", allow_hyphen_values = true,
          value_parser = parse_path)]
    pub write_config_to: Option<PathBuf>,

    /// If true, clean up iptables and ipvs rules and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub cleanup: Option<bool>,

    /// If true, perform the initialization steps that need full root privileges, then exit.
    #[arg(long, alias = "init_only", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub init_only: Option<bool>,

    /// A set of key=value pairs that describe feature gates for alpha/experimental
    /// features, e.g. `A=true,B=false`.
    #[arg(long, alias = "feature_gates", value_name = "KEY=BOOL,...",
          allow_hyphen_values = true, value_parser = parse_feature_gates)]
    pub feature_gates: Option<Vec<FeatureGateList>>,

    /// Path to kubeconfig file with authorization information (the master location
    /// can be overridden by the master flag).
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub kubeconfig: Option<String>,

    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub master: Option<String>,

    /// Content type of requests sent to apiserver.
    #[arg(
        long,
        alias = "kube_api_content_type",
        value_name = "TYPE",
        allow_hyphen_values = true
    )]
    pub kube_api_content_type: Option<String>,

    /// Burst to use while talking with kubernetes apiserver.
    #[arg(long, alias = "kube_api_burst", value_name = "INT", allow_hyphen_values = true,
          value_parser = parse_go_int32)]
    pub kube_api_burst: Option<i32>,

    /// QPS to use while talking with kubernetes apiserver.
    #[arg(long, alias = "kube_api_qps", value_name = "FLOAT", allow_hyphen_values = true,
          value_parser = parse_go_float32)]
    pub kube_api_qps: Option<f32>,

    /// If non-empty, will be used as the name of the Node that kproxy is running on
    /// (trimmed and lower-cased; it wins over the config file, as in kube-proxy).
    #[arg(long, alias = "hostname_override", value_name = "NAME", allow_hyphen_values = true,
          value_parser = parse_hostname_override)]
    pub hostname_override: Option<String>,

    /// Overrides kproxy's idea of what its node's primary IP is (no socket is bound to it).
    #[arg(long, alias = "bind_address", value_name = "IP", allow_hyphen_values = true,
          value_parser = parse_ip)]
    pub bind_address: Option<String>,

    /// The IP address and port for the health check server to serve on (default
    /// "0.0.0.0:10256"); empty disables it.
    #[arg(long, alias = "healthz_bind_address", value_name = "IP[:PORT]",
          allow_hyphen_values = true, value_parser = parse_ip_port)]
    pub healthz_bind_address: Option<String>,

    /// The IP address and port for the metrics server to serve on (default
    /// "127.0.0.1:10249"); empty disables it.
    #[arg(long, alias = "metrics_bind_address", value_name = "IP[:PORT]",
          allow_hyphen_values = true, value_parser = parse_ip_port)]
    pub metrics_bind_address: Option<String>,

    /// If true, treat failure to bind a server port as fatal and exit.
    #[arg(long, alias = "bind_address_hard_fail", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub bind_address_hard_fail: Option<bool>,

    /// If true, enable profiling via web interface on the /debug/pprof handler.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub profiling: Option<bool>,

    /// The previous version for which to show hidden metrics (accepted, ignored).
    #[arg(
        long,
        alias = "show_hidden_metrics_for_version",
        value_name = "VERSION",
        allow_hyphen_values = true
    )]
    pub show_hidden_metrics_for_version: Option<String>,

    /// Which proxy mode to use: 'iptables' (default), 'ipvs', 'nftables' or 'userspace'.
    #[arg(long, alias = "proxy_mode", value_name = "MODE", allow_hyphen_values = true,
          value_parser = parse_proxy_mode)]
    pub proxy_mode: Option<ProxyMode>,

    /// If using the iptables or ipvs proxy mode, the bit of the fwmark space to mark
    /// packets requiring SNAT with. Must be within the range [0, 31].
    #[arg(long, alias = "iptables_masquerade_bit", value_name = "INT",
          allow_hyphen_values = true, value_parser = parse_go_int32)]
    pub iptables_masquerade_bit: Option<i32>,

    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, alias = "masquerade_all", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub masquerade_all: Option<bool>,

    /// If false, do not allow NodePort services to be accessed via localhost
    /// (iptables mode, IPv4 only).
    #[arg(long, alias = "iptables_localhost_nodeports", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub iptables_localhost_nodeports: Option<bool>,

    /// How often various re-synchronizing and cleanup operations are performed
    /// (iptables, nftables and userspace modes), e.g. '5s', '1m', '2h22m'. Must be > 0.
    #[arg(long, alias = "iptables_sync_period", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub iptables_sync_period: Option<Duration>,

    /// The minimum period between rule resyncs (iptables, nftables and userspace
    /// modes); 0 resyncs on every change.
    #[arg(long, alias = "iptables_min_sync_period", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub iptables_min_sync_period: Option<Duration>,

    /// How often various re-synchronizing and cleanup operations are performed in
    /// ipvs mode. Must be > 0.
    #[arg(long, alias = "ipvs_sync_period", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub ipvs_sync_period: Option<Duration>,

    /// The minimum period between IPVS rule resyncs; 0 resyncs on every change.
    #[arg(long, alias = "ipvs_min_sync_period", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub ipvs_min_sync_period: Option<Duration>,

    /// The ipvs scheduler type when proxy mode is ipvs.
    #[arg(
        long,
        alias = "ipvs_scheduler",
        value_name = "NAME",
        allow_hyphen_values = true
    )]
    pub ipvs_scheduler: Option<String>,

    /// A comma-separated list of CIDRs which the ipvs proxier should not touch when
    /// cleaning up IPVS rules.
    #[arg(long, alias = "ipvs_exclude_cidrs", value_name = "CIDR,...",
          allow_hyphen_values = true, value_parser = parse_comma_list)]
    pub ipvs_exclude_cidrs: Option<Vec<CommaList>>,

    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, alias = "ipvs_strict_arp", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub ipvs_strict_arp: Option<bool>,

    /// The timeout for idle IPVS TCP connections, 0 to leave as-is.
    #[arg(long, alias = "ipvs_tcp_timeout", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub ipvs_tcp_timeout: Option<Duration>,

    /// The timeout for IPVS TCP connections after receiving a FIN packet, 0 to leave as-is.
    #[arg(long, alias = "ipvs_tcpfin_timeout", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,

    /// The timeout for IPVS UDP packets, 0 to leave as-is.
    #[arg(long, alias = "ipvs_udp_timeout", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub ipvs_udp_timeout: Option<Duration>,

    /// Mode to use to detect local traffic: ClusterCIDR (default), NodeCIDR,
    /// BridgeInterface or InterfaceNamePrefix.
    #[arg(long, alias = "detect_local_mode", value_name = "MODE", allow_hyphen_values = true,
          value_parser = parse_local_mode)]
    pub detect_local_mode: Option<LocalMode>,

    /// A bridge interface name; with --detect-local-mode=BridgeInterface, traffic
    /// from this bridge is local.
    #[arg(
        long,
        alias = "pod_bridge_interface",
        value_name = "NAME",
        allow_hyphen_values = true
    )]
    pub pod_bridge_interface: Option<String>,

    /// An interface name prefix; with --detect-local-mode=InterfaceNamePrefix,
    /// traffic from interfaces whose name begins with it is local.
    #[arg(
        long,
        alias = "pod_interface_name_prefix",
        value_name = "PREFIX",
        allow_hyphen_values = true
    )]
    pub pod_interface_name_prefix: Option<String>,

    /// The CIDR range of the pods in the cluster (for dual-stack clusters, a
    /// comma-separated pair of CIDRs).
    #[arg(
        long,
        alias = "cluster_cidr",
        value_name = "CIDR[,CIDR]",
        allow_hyphen_values = true
    )]
    pub cluster_cidr: Option<String>,

    /// A list of CIDR ranges that contain valid node IPs, or the single string
    /// 'primary'; NodePort connections are only accepted on those IPs.
    #[arg(long, alias = "nodeport_addresses", value_name = "CIDR,...",
          allow_hyphen_values = true, value_parser = parse_comma_list)]
    pub nodeport_addresses: Option<Vec<CommaList>>,

    /// The oom-score-adj value for the kproxy process, in [-1000, 1000].
    #[arg(long, alias = "oom_score_adj", value_name = "INT", allow_hyphen_values = true,
          value_parser = parse_go_int32)]
    pub oom_score_adj: Option<i32>,

    /// Maximum number of NAT connections to track per CPU core (0 to leave the limit
    /// as-is and ignore conntrack-min).
    #[arg(long, alias = "conntrack_max_per_core", value_name = "INT",
          allow_hyphen_values = true, value_parser = parse_go_int32)]
    pub conntrack_max_per_core: Option<i32>,

    /// Minimum number of conntrack entries to allocate, regardless of conntrack-max-per-core.
    #[arg(long, alias = "conntrack_min", value_name = "INT", allow_hyphen_values = true,
          value_parser = parse_go_int32)]
    pub conntrack_min: Option<i32>,

    /// Enable liberal mode for tracking TCP packets (nf_conntrack_tcp_be_liberal=1).
    #[arg(long, alias = "conntrack_tcp_be_liberal", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub conntrack_tcp_be_liberal: Option<bool>,

    /// Idle timeout for established TCP connections (0 to leave as-is).
    #[arg(long, alias = "conntrack_tcp_timeout_established", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,

    /// NAT timeout for TCP connections in the CLOSE_WAIT state (0 to leave as-is).
    #[arg(long, alias = "conntrack_tcp_timeout_close_wait", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,

    /// Idle timeout for UNREPLIED UDP connections (0 to leave as-is).
    #[arg(long, alias = "conntrack_udp_timeout", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub conntrack_udp_timeout: Option<Duration>,

    /// Idle timeout for ASSURED UDP connections (0 to leave as-is).
    #[arg(long, alias = "conntrack_udp_timeout_stream", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub conntrack_udp_timeout_stream: Option<Duration>,

    /// How often configuration from the apiserver is refreshed. Must be > 0.
    #[arg(long, alias = "config_sync_period", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub config_sync_period: Option<Duration>,

    /// Deprecated: the port of the health check server; 0 disables it. Use
    /// --healthz-bind-address.
    #[arg(long, alias = "healthz_port", value_name = "PORT", hide = true,
          allow_hyphen_values = true, value_parser = parse_port)]
    pub healthz_port: Option<u16>,

    /// Deprecated: the port of the metrics server; 0 disables it. Use
    /// --metrics-bind-address.
    #[arg(long, alias = "metrics_port", value_name = "PORT", hide = true,
          allow_hyphen_values = true, value_parser = parse_port)]
    pub metrics_port: Option<u16>,

    /// Number for the log level verbosity.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", allow_hyphen_values = true,
          value_parser = parse_verbosity)]
    pub verbosity: Option<u32>,

    /// Comma-separated list of pattern=N settings for file-filtered logging (text
    /// format only).
    #[arg(long, value_name = "PATTERN=N,...", allow_hyphen_values = true,
          value_parser = parse_vmodule)]
    pub vmodule: Option<Vec<VModuleList>>,

    /// Sets the log format: "text" or "json".
    #[arg(
        long,
        alias = "logging_format",
        value_name = "FORMAT",
        allow_hyphen_values = true
    )]
    pub logging_format: Option<String>,

    /// Maximum time between log flushes (a Go duration).
    #[arg(long, alias = "log_flush_frequency", value_name = "DURATION",
          allow_hyphen_values = true, value_parser = parse_go_duration)]
    pub log_flush_frequency: Option<Duration>,
}

/// One `--feature-gates` value: `A=true,B=false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGateList(pub Vec<(String, bool)>);

/// One value of a comma-separated list flag (`--nodeport-addresses`,
/// `--ipvs-exclude-cidrs`); an empty value is an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommaList(pub Vec<String>);

/// One `--vmodule` value: `pattern=N,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VModuleList(pub Vec<VModuleItem>);

/// The effective configuration and what the operator should be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Defaults < config file < flags, platform defaults applied, validated.
    pub config: KubeProxyConfiguration,
    /// Config file warnings (unknown fields, ...) and flag warnings (deprecated
    /// flags, flags that kube-proxy would ignore next to --config).
    pub warnings: Vec<String>,
}

fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *target = value.clone();
    }
}

fn flatten(lists: &[CommaList]) -> Vec<String> {
    lists.iter().flat_map(|l| l.0.iter().cloned()).collect()
}

/// `host:port` with `port` replaced (IPv4 defaults when `address` has no usable host).
fn with_port(address: &str, port: u16, default_host: &str) -> String {
    let host = config::split_host_port(address).map_or(default_host, |(host, _)| host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Applies `--*-bind-address` and the deprecated `--*-port` like kube-proxy's
/// `addressFromDeprecatedFlags`: port 0 disables the server, an address without a
/// port gets one. (kube-proxy ignores `--healthz-port` when the address already has a
/// port; kproxy uses it.)
fn apply_server_address(
    target: &mut String,
    address: &Option<String>,
    port: Option<u16>,
    default_port: u16,
    default_host: &str,
) {
    match (address, port) {
        (_, Some(0)) => target.clear(),
        (Some(address), _) if address.is_empty() => target.clear(),
        (Some(address), Some(port)) => {
            let address = config::append_port_if_needed(address, port);
            *target = with_port(&address, port, default_host);
        }
        (Some(address), None) => *target = config::append_port_if_needed(address, default_port),
        (None, Some(port)) => *target = with_port(target, port, default_host),
        (None, None) => {}
    }
}

impl ProxyFlags {
    /// Overrides `config` with every flag that was given; returns warnings (deprecated
    /// flags). Run [`KubeProxyConfiguration::apply_platform_defaults`] and
    /// [`KubeProxyConfiguration::validate`] afterwards (or use [`ProxyFlags::resolve`]).
    ///
    /// Mapping to v1alpha1 (after upstream's `processV1Alpha1Flags` and conversion):
    /// `--masquerade-all` sets `iptables.masqueradeAll` and `nftables.masqueradeAll`;
    /// `--iptables-(min-)sync-period` sets `iptables.*`, and `nftables.*` too when the
    /// mode is nftables (upstream has no nftables flags); `--ipvs-*` set `ipvs.*`.
    pub fn apply(&self, config: &mut KubeProxyConfiguration) -> Vec<String> {
        let mut warnings = Vec::new();

        if let Some(lists) = &self.feature_gates {
            for (name, enabled) in lists.iter().flat_map(|l| &l.0) {
                config.feature_gates.insert(name.clone(), *enabled);
            }
        }
        let client = &mut config.client_connection;
        set(&mut client.kubeconfig, &self.kubeconfig);
        set(&mut client.content_type, &self.kube_api_content_type);
        set(&mut client.burst, &self.kube_api_burst);
        set(&mut client.qps, &self.kube_api_qps);

        if let Some(name) = &self.hostname_override {
            let name = name.trim();
            if !name.is_empty() {
                config.hostname_override = name.to_lowercase();
            }
        }
        set(&mut config.bind_address, &self.bind_address);
        if self.healthz_port.is_some() {
            warnings.push(
                "--healthz-port is deprecated and will be removed; use --healthz-bind-address"
                    .to_owned(),
            );
        }
        if self.metrics_port.is_some() {
            warnings.push(
                "--metrics-port is deprecated and will be removed; use --metrics-bind-address"
                    .to_owned(),
            );
        }
        apply_server_address(
            &mut config.healthz_bind_address,
            &self.healthz_bind_address,
            self.healthz_port,
            DEFAULT_HEALTHZ_PORT,
            "0.0.0.0",
        );
        apply_server_address(
            &mut config.metrics_bind_address,
            &self.metrics_bind_address,
            self.metrics_port,
            DEFAULT_METRICS_PORT,
            "127.0.0.1",
        );
        set(
            &mut config.bind_address_hard_fail,
            &self.bind_address_hard_fail,
        );
        set(&mut config.enable_profiling, &self.profiling);
        set(
            &mut config.show_hidden_metrics_for_version,
            &self.show_hidden_metrics_for_version,
        );

        // The mode first: the sync period flags depend on it.
        set(&mut config.mode, &self.proxy_mode);
        let nftables = config.effective_mode() == ProxyMode::Nftables;

        let iptables = &mut config.iptables;
        if self.iptables_masquerade_bit.is_some() {
            iptables.masquerade_bit = self.iptables_masquerade_bit;
        }
        if self.iptables_localhost_nodeports.is_some() {
            iptables.localhost_node_ports = self.iptables_localhost_nodeports;
        }
        set(&mut iptables.masquerade_all, &self.masquerade_all);
        set(&mut config.nftables.masquerade_all, &self.masquerade_all);
        set(&mut iptables.sync_period, &self.iptables_sync_period);
        set(
            &mut iptables.min_sync_period,
            &self.iptables_min_sync_period,
        );
        if nftables {
            set(&mut config.nftables.sync_period, &self.iptables_sync_period);
            set(
                &mut config.nftables.min_sync_period,
                &self.iptables_min_sync_period,
            );
        }

        let ipvs = &mut config.ipvs;
        set(&mut ipvs.sync_period, &self.ipvs_sync_period);
        set(&mut ipvs.min_sync_period, &self.ipvs_min_sync_period);
        set(&mut ipvs.scheduler, &self.ipvs_scheduler);
        if let Some(lists) = &self.ipvs_exclude_cidrs {
            ipvs.exclude_cidrs = flatten(lists);
        }
        set(&mut ipvs.strict_arp, &self.ipvs_strict_arp);
        set(&mut ipvs.tcp_timeout, &self.ipvs_tcp_timeout);
        set(&mut ipvs.tcp_fin_timeout, &self.ipvs_tcpfin_timeout);
        set(&mut ipvs.udp_timeout, &self.ipvs_udp_timeout);

        set(&mut config.detect_local_mode, &self.detect_local_mode);
        set(
            &mut config.detect_local.bridge_interface,
            &self.pod_bridge_interface,
        );
        set(
            &mut config.detect_local.interface_name_prefix,
            &self.pod_interface_name_prefix,
        );
        set(&mut config.cluster_cidr, &self.cluster_cidr);
        if let Some(lists) = &self.nodeport_addresses {
            config.node_port_addresses = flatten(lists);
        }

        if self.oom_score_adj.is_some() {
            config.oom_score_adj = self.oom_score_adj;
        }
        let conntrack = &mut config.conntrack;
        if self.conntrack_max_per_core.is_some() {
            conntrack.max_per_core = self.conntrack_max_per_core;
        }
        if self.conntrack_min.is_some() {
            conntrack.min = self.conntrack_min;
        }
        set(
            &mut conntrack.tcp_be_liberal,
            &self.conntrack_tcp_be_liberal,
        );
        if self.conntrack_tcp_timeout_established.is_some() {
            conntrack.tcp_established_timeout = self.conntrack_tcp_timeout_established;
        }
        if self.conntrack_tcp_timeout_close_wait.is_some() {
            conntrack.tcp_close_wait_timeout = self.conntrack_tcp_timeout_close_wait;
        }
        set(&mut conntrack.udp_timeout, &self.conntrack_udp_timeout);
        set(
            &mut conntrack.udp_stream_timeout,
            &self.conntrack_udp_timeout_stream,
        );
        set(&mut config.config_sync_period, &self.config_sync_period);

        // Logging flags win over the file in kube-proxy too; --vmodule entries come
        // first, so that they take priority over the file's.
        let logging = &mut config.logging;
        set(&mut logging.verbosity, &self.verbosity);
        if let Some(lists) = &self.vmodule {
            let mut vmodule: Vec<VModuleItem> =
                lists.iter().flat_map(|l| l.0.iter().cloned()).collect();
            vmodule.append(&mut logging.vmodule);
            logging.vmodule = vmodule;
        }
        set(&mut logging.format, &self.logging_format);
        set(&mut logging.flush_frequency, &self.log_flush_frequency);

        warnings
    }

    /// The given flags that map to config file fields and that kube-proxy ignores when
    /// `--config` is given (all but the logging flags and --hostname-override).
    pub fn config_flags_given(&self) -> Vec<&'static str> {
        let given = [
            ("--feature-gates", self.feature_gates.is_some()),
            ("--kubeconfig", self.kubeconfig.is_some()),
            (
                "--kube-api-content-type",
                self.kube_api_content_type.is_some(),
            ),
            ("--kube-api-burst", self.kube_api_burst.is_some()),
            ("--kube-api-qps", self.kube_api_qps.is_some()),
            ("--bind-address", self.bind_address.is_some()),
            (
                "--healthz-bind-address",
                self.healthz_bind_address.is_some(),
            ),
            (
                "--metrics-bind-address",
                self.metrics_bind_address.is_some(),
            ),
            ("--healthz-port", self.healthz_port.is_some()),
            ("--metrics-port", self.metrics_port.is_some()),
            (
                "--bind-address-hard-fail",
                self.bind_address_hard_fail.is_some(),
            ),
            ("--profiling", self.profiling.is_some()),
            (
                "--show-hidden-metrics-for-version",
                self.show_hidden_metrics_for_version.is_some(),
            ),
            ("--proxy-mode", self.proxy_mode.is_some()),
            (
                "--iptables-masquerade-bit",
                self.iptables_masquerade_bit.is_some(),
            ),
            ("--masquerade-all", self.masquerade_all.is_some()),
            (
                "--iptables-localhost-nodeports",
                self.iptables_localhost_nodeports.is_some(),
            ),
            (
                "--iptables-sync-period",
                self.iptables_sync_period.is_some(),
            ),
            (
                "--iptables-min-sync-period",
                self.iptables_min_sync_period.is_some(),
            ),
            ("--ipvs-sync-period", self.ipvs_sync_period.is_some()),
            (
                "--ipvs-min-sync-period",
                self.ipvs_min_sync_period.is_some(),
            ),
            ("--ipvs-scheduler", self.ipvs_scheduler.is_some()),
            ("--ipvs-exclude-cidrs", self.ipvs_exclude_cidrs.is_some()),
            ("--ipvs-strict-arp", self.ipvs_strict_arp.is_some()),
            ("--ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some()),
            ("--ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some()),
            ("--ipvs-udp-timeout", self.ipvs_udp_timeout.is_some()),
            ("--detect-local-mode", self.detect_local_mode.is_some()),
            (
                "--pod-bridge-interface",
                self.pod_bridge_interface.is_some(),
            ),
            (
                "--pod-interface-name-prefix",
                self.pod_interface_name_prefix.is_some(),
            ),
            ("--cluster-cidr", self.cluster_cidr.is_some()),
            ("--nodeport-addresses", self.nodeport_addresses.is_some()),
            ("--oom-score-adj", self.oom_score_adj.is_some()),
            (
                "--conntrack-max-per-core",
                self.conntrack_max_per_core.is_some(),
            ),
            ("--conntrack-min", self.conntrack_min.is_some()),
            (
                "--conntrack-tcp-be-liberal",
                self.conntrack_tcp_be_liberal.is_some(),
            ),
            (
                "--conntrack-tcp-timeout-established",
                self.conntrack_tcp_timeout_established.is_some(),
            ),
            (
                "--conntrack-tcp-timeout-close-wait",
                self.conntrack_tcp_timeout_close_wait.is_some(),
            ),
            (
                "--conntrack-udp-timeout",
                self.conntrack_udp_timeout.is_some(),
            ),
            (
                "--conntrack-udp-timeout-stream",
                self.conntrack_udp_timeout_stream.is_some(),
            ),
            ("--config-sync-period", self.config_sync_period.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }

    /// The config file to read: `--config`, unless empty.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.config
            .as_deref()
            .filter(|path| !path.as_os_str().is_empty())
    }

    /// The whole pipeline: upstream defaults, the `--config` file if any, the flags,
    /// platform defaults, validation.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let (mut config, mut warnings) = match self.config_file() {
            Some(path) => {
                let loaded = config::load(path)?;
                (loaded.config, loaded.warnings)
            }
            None => (KubeProxyConfiguration::default(), Vec::new()),
        };
        if self.config_file().is_some() {
            let overriding = self.config_flags_given();
            if !overriding.is_empty() {
                warnings.push(format!(
                    "{} override the config file (kube-proxy would ignore them because --config is set)",
                    overriding.join(", ")
                ));
            }
        }
        warnings.extend(self.apply(&mut config));
        config.apply_platform_defaults();
        config.validate()?;
        Ok(Resolved { config, warnings })
    }
}

/// A path; empty is allowed (pflag's string flags take `--config=` as "unset").
pub fn parse_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (use true or false)")),
    }
}

/// A Go duration (`30s`, `1m0s`); negative durations are rejected.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s).map_err(|e| e.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 32)`, as pflag's Int32 flags use: decimal, `0x`/`0o`/
/// `0b` prefixes, a leading `0` for octal, `_` between digits.
pub fn parse_go_int32(s: &str) -> Result<i32, String> {
    let err = || format!("invalid integer {s:?}");
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    // Underscores only between digits (or right after a base prefix).
    let body_bytes = body.as_bytes();
    if body.is_empty()
        || body.ends_with('_')
        || body.contains("__")
        || (body.starts_with('_') && !prefixed)
        || body_bytes.iter().any(|b| *b == b'+' || *b == b'-')
    {
        return Err(err());
    }
    let cleaned: String = body.chars().filter(|c| *c != '_').collect();
    let magnitude = i64::from_str_radix(&cleaned, radix).map_err(|_| err())?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).map_err(|_| format!("integer {s:?} is out of range"))
}

/// Go's `strconv.ParseFloat(s, 32)` for `--kube-api-qps`.
pub fn parse_go_float32(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("invalid number {s:?}"))
}

/// A TCP port (`--healthz-port`, `--metrics-port`); 0 disables the server.
pub fn parse_port(s: &str) -> Result<u16, String> {
    let port = parse_go_int32(s)?;
    u16::try_from(port).map_err(|_| format!("invalid port {s:?} (0-65535)"))
}

/// `--bind-address`: an IP address (upstream `IPVar`).
pub fn parse_ip(s: &str) -> Result<String, String> {
    match config::parse_ip_sloppy(s) {
        Some(_) => Ok(s.to_owned()),
        None => Err(format!("{s:?} is not a valid IP address")),
    }
}

/// `--healthz-bind-address`, `--metrics-bind-address`: empty, an IP, or `IP:port`
/// (upstream `IPPortVar`).
pub fn parse_ip_port(s: &str) -> Result<String, String> {
    if s.is_empty() || config::parse_ip_sloppy(s).is_some() {
        return Ok(s.to_owned());
    }
    if let Ok((host, port)) = config::split_host_port(s)
        && config::parse_ip_sloppy(host).is_some()
        && matches!(port.parse::<u32>(), Ok(0..=65535))
    {
        return Ok(s.to_owned());
    }
    Err(format!("{s:?} is not in a valid format (ip or ip:port)"))
}

/// `--hostname-override`: whitespace alone is an error (upstream), empty means unset.
pub fn parse_hostname_override(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.trim().is_empty() {
        return Err("empty hostname-override is invalid".to_owned());
    }
    Ok(s.to_owned())
}

/// `--proxy-mode`: any string (validation rejects unknown modes).
pub fn parse_proxy_mode(s: &str) -> Result<ProxyMode, String> {
    Ok(ProxyMode::from_name(s))
}

/// `--detect-local-mode`: any string (validation rejects unknown modes).
pub fn parse_local_mode(s: &str) -> Result<LocalMode, String> {
    Ok(LocalMode::from_name(s))
}

/// `-v`: a non-negative decimal level.
pub fn parse_verbosity(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("invalid verbosity {s:?} (a number >= 0)"))
}

/// A pflag StringSlice value: comma-separated, items trimmed of nothing, empty
/// value = empty list.
pub fn parse_comma_list(s: &str) -> Result<CommaList, String> {
    if s.is_empty() {
        return Ok(CommaList::default());
    }
    Ok(CommaList(s.split(',').map(str::to_owned).collect()))
}

/// `--feature-gates`: `Name=bool` items separated by commas (component-base
/// `MapStringBool`: items and values are trimmed, empty items skipped).
pub fn parse_feature_gates(s: &str) -> Result<FeatureGateList, String> {
    let mut gates = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("missing bool value for {item}"));
        };
        let enabled = parse_go_bool(value.trim())
            .map_err(|_| format!("invalid value of {}: {}", name.trim(), value.trim()))?;
        gates.push((name.trim().to_owned(), enabled));
    }
    Ok(FeatureGateList(gates))
}

/// `--vmodule`: `pattern=N` items separated by commas.
pub fn parse_vmodule(s: &str) -> Result<VModuleList, String> {
    let mut items = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let Some((pattern, level)) = item.split_once('=') else {
            return Err(format!("{item:?} does not have the pattern=N format"));
        };
        if pattern.is_empty() {
            return Err(format!("{item:?} has an empty pattern"));
        }
        let verbosity = parse_verbosity(level)?;
        items.push(VModuleItem {
            file_pattern: pattern.to_owned(),
            verbosity,
        });
    }
    Ok(VModuleList(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "kube-proxy")]
    struct Cli {
        #[command(flatten)]
        flags: ProxyFlags,
    }

    fn flags(args: &[&str]) -> ProxyFlags {
        try_flags(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn try_flags(args: &[&str]) -> Result<ProxyFlags, clap::Error> {
        Cli::try_parse_from(std::iter::once("kube-proxy").chain(args.iter().copied()))
            .map(|cli| cli.flags)
    }

    fn applied(args: &[&str]) -> KubeProxyConfiguration {
        let mut config = KubeProxyConfiguration::default();
        flags(args).apply(&mut config);
        config
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const HEADER: &str =
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    fn write_config(dir: &tempfile::TempDir, body: &str) -> String {
        let path = dir.path().join("config.conf");
        std::fs::write(&path, format!("{HEADER}{body}")).unwrap();
        path.display().to_string()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_means_nothing_given() {
        assert_eq!(flags(&[]), ProxyFlags::default());
        assert_eq!(applied(&[]), KubeProxyConfiguration::default());
    }

    #[test]
    fn kubeadm_daemonset_command_line() {
        // kubeadm's kube-proxy DaemonSet: the ConfigMap plus the node name.
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            &dir,
            "clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\n",
        );
        let f = flags(&[
            &format!("--config={path}"),
            "--hostname-override=Worker-1.Example.COM",
        ]);
        assert_eq!(f.config_file(), Some(std::path::Path::new(&path)));
        let resolved = f.resolve().unwrap();
        assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
        let c = resolved.config;
        assert_eq!(c.hostname_override, "worker-1.example.com");
        assert_eq!(c.mode, ProxyMode::Iptables);
        assert_eq!(c.detect_local_mode, LocalMode::ClusterCidr);
        assert_eq!(c.cluster_cidr, "10.244.0.0/16");
        assert_eq!(
            c.client_connection.kubeconfig,
            "/var/lib/kube-proxy/kubeconfig.conf"
        );
    }

    #[test]
    fn gke_style_command_line() {
        // Flags only, no config file, as GKE's kube-proxy manifest does.
        let f = flags(&[
            "--master=https://34.1.2.3",
            "--kubeconfig=/var/lib/kube-proxy/kubeconfig",
            "--cluster-cidr=10.4.0.0/14",
            "--oom-score-adj=-998",
            "--v=2",
            "--feature-gates=DisableCloudProviders=true,DisableKubeletCloudCredentialProviders=true",
            "--iptables-sync-period=1m",
            "--iptables-min-sync-period=10s",
            "--ipvs-sync-period=1m",
            "--ipvs-min-sync-period=10s",
            "--detect-local-mode=NodeCIDR",
        ]);
        assert_eq!(f.master.as_deref(), Some("https://34.1.2.3"));
        let resolved = f.resolve().unwrap();
        assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
        let c = resolved.config;
        assert_eq!(
            c.client_connection.kubeconfig,
            "/var/lib/kube-proxy/kubeconfig"
        );
        assert_eq!(c.cluster_cidr, "10.4.0.0/14");
        assert_eq!(c.oom_score_adj, Some(-998));
        assert_eq!(c.logging.verbosity, 2);
        assert_eq!(c.feature_gates.len(), 2);
        assert!(c.feature_gates["DisableCloudProviders"]);
        assert_eq!(c.sync_periods(), (secs(60), secs(10)));
        assert_eq!(c.ipvs.sync_period, secs(60));
        assert_eq!(c.ipvs.min_sync_period, secs(10));
        assert_eq!(c.detect_local_mode, LocalMode::NodeCidr);
    }

    #[test]
    fn eks_style_config_file_and_flags() {
        // EKS: --v=2 --config=... --hostname-override=..., and a config map written by
        // an older kube-proxy (udpIdleTimeout no longer exists).
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            &dir,
            r#"bindAddress: 0.0.0.0
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: /var/lib/kube-proxy/kubeconfig
  qps: 5
clusterCIDR: ""
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
enableProfiling: false
healthzBindAddress: 0.0.0.0:10256
hostnameOverride: ""
iptables:
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 0s
  syncPeriod: 30s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  syncPeriod: 30s
metricsBindAddress: 0.0.0.0:10249
mode: "iptables"
nodePortAddresses: null
oomScoreAdj: -998
portRange: ""
udpIdleTimeout: 250ms
"#,
        );
        let resolved = flags(&[
            "--v=2",
            &format!("--config={path}"),
            "--hostname-override=ip-10-0-1-23.ec2.internal",
        ])
        .resolve()
        .unwrap();
        assert_eq!(
            resolved.warnings,
            vec![format!(
                "{path}: unknown field \"udpIdleTimeout\" (ignored)"
            )]
        );
        let c = resolved.config;
        assert_eq!(c.logging.verbosity, 2);
        assert_eq!(c.metrics_bind_address, "0.0.0.0:10249");
        assert_eq!(c.oom_score_adj, Some(-998));
        assert_eq!(c.hostname_override, "ip-10-0-1-23.ec2.internal");
        // minSyncPeriod: 0s in the file is defaulted to 1s, like upstream.
        assert_eq!(c.sync_periods(), (secs(30), secs(1)));
    }

    #[test]
    fn valued_flags_take_equals_or_next_argument() {
        let a = flags(&[
            "--proxy-mode=ipvs",
            "--ipvs-scheduler=lc",
            "--cluster-cidr=10.0.0.0/8",
        ]);
        let b = flags(&[
            "--proxy-mode",
            "ipvs",
            "--ipvs-scheduler",
            "lc",
            "--cluster-cidr",
            "10.0.0.0/8",
        ]);
        assert_eq!(a, b);
        assert_eq!(a.proxy_mode, Some(ProxyMode::Ipvs));
        // Like pflag, the next argument is the value even if it starts with '-'.
        assert_eq!(
            flags(&["--oom-score-adj", "-999"]).oom_score_adj,
            Some(-999)
        );
        assert_eq!(flags(&["--oom-score-adj=-999"]).oom_score_adj, Some(-999));
        assert_eq!(flags(&["--kubeconfig="]).kubeconfig.as_deref(), Some(""));
        assert!(try_flags(&["--proxy-mode"]).is_err());
    }

    #[test]
    fn boolean_flags_like_pflag() {
        assert_eq!(flags(&["--masquerade-all"]).masquerade_all, Some(true));
        for (text, want) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("t", true),
            ("T", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("FALSE", false),
            ("f", false),
            ("F", false),
            ("0", false),
        ] {
            let arg = format!("--masquerade-all={text}");
            assert_eq!(flags(&[&arg]).masquerade_all, Some(want), "{arg}");
        }
        // "--masquerade-all false": "false" is not the flag's value but a stray
        // argument, which kube-proxy rejects as well.
        assert!(try_flags(&["--masquerade-all", "false"]).is_err());
        let err = try_flags(&["--masquerade-all=yes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid boolean \"yes\""), "{err}");
        let f = flags(&[
            "--bind-address-hard-fail",
            "--profiling=false",
            "--ipvs-strict-arp",
            "--conntrack-tcp-be-liberal=1",
            "--iptables-localhost-nodeports=false",
            "--init-only",
            "--cleanup=false",
        ]);
        assert_eq!(f.bind_address_hard_fail, Some(true));
        assert_eq!(f.profiling, Some(false));
        assert_eq!(f.ipvs_strict_arp, Some(true));
        assert_eq!(f.conntrack_tcp_be_liberal, Some(true));
        assert_eq!(f.iptables_localhost_nodeports, Some(false));
        assert_eq!(f.init_only, Some(true));
        assert_eq!(f.cleanup, Some(false));
        let c = applied(&["--iptables-localhost-nodeports=false", "--masquerade-all"]);
        assert_eq!(c.iptables.localhost_node_ports, Some(false));
        assert!(c.iptables.masquerade_all && c.nftables.masquerade_all);
    }

    #[test]
    fn verbosity_spellings() {
        for args in [
            &["-v=4"][..],
            &["-v", "4"],
            &["-v4"],
            &["--v=4"],
            &["--v", "4"],
        ] {
            assert_eq!(flags(args).verbosity, Some(4), "{args:?}");
        }
        assert!(try_flags(&["-v=-1"]).is_err());
        assert!(try_flags(&["--v=high"]).is_err());
        assert_eq!(applied(&["--v=5"]).logging.verbosity, 5);
    }

    #[test]
    fn underscores_work_like_dashes() {
        let f = flags(&[
            "--cluster_cidr=10.0.0.0/8",
            "--iptables_sync_period=1m",
            "--masquerade_all",
        ]);
        assert_eq!(f.cluster_cidr.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(f.iptables_sync_period, Some(secs(60)));
        assert_eq!(f.masquerade_all, Some(true));
    }

    #[test]
    fn list_flags_split_on_commas_and_accumulate() {
        let c = applied(&["--nodeport-addresses=10.0.0.0/8,primary"]);
        assert_eq!(c.node_port_addresses, vec!["10.0.0.0/8", "primary"]);
        let c = applied(&[
            "--nodeport-addresses=10.0.0.0/8",
            "--nodeport-addresses",
            "192.168.0.0/16,::/0",
        ]);
        assert_eq!(
            c.node_port_addresses,
            vec!["10.0.0.0/8", "192.168.0.0/16", "::/0"]
        );
        let c = applied(&["--ipvs-exclude-cidrs=10.1.0.0/16,10.2.0.0/16"]);
        assert_eq!(c.ipvs.exclude_cidrs, vec!["10.1.0.0/16", "10.2.0.0/16"]);
        // An empty value clears the list from the config file.
        let mut config = KubeProxyConfiguration {
            node_port_addresses: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        flags(&["--nodeport-addresses="]).apply(&mut config);
        assert!(config.node_port_addresses.is_empty());
    }

    #[test]
    fn feature_gates_parse_and_merge_over_the_file() {
        let f = flags(&[
            "--feature-gates=A=true, B=false,,C=t",
            "--feature-gates",
            "A=false",
        ]);
        let mut config = KubeProxyConfiguration::default();
        config.feature_gates.insert("B".into(), true);
        config.feature_gates.insert("FromFile".into(), true);
        f.apply(&mut config);
        let gates: Vec<(&str, bool)> = config
            .feature_gates
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            gates,
            vec![("A", false), ("B", false), ("C", true), ("FromFile", true)]
        );
        let err = try_flags(&["--feature-gates=A"]).unwrap_err().to_string();
        assert!(err.contains("missing bool value for A"), "{err}");
        let err = try_flags(&["--feature-gates=A=maybe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value of A: maybe"), "{err}");
    }

    #[test]
    fn durations_in_go_syntax() {
        let f = flags(&[
            "--iptables-sync-period=1h2m3.5s",
            "--config-sync-period=15m0s",
            "--conntrack-tcp-timeout-established=24h",
            "--conntrack-udp-timeout=500ms",
            "--ipvs-tcpfin-timeout=0",
        ]);
        assert_eq!(
            f.iptables_sync_period,
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(f.config_sync_period, Some(secs(900)));
        assert_eq!(f.conntrack_tcp_timeout_established, Some(secs(86400)));
        assert_eq!(f.conntrack_udp_timeout, Some(Duration::from_millis(500)));
        assert_eq!(f.ipvs_tcpfin_timeout, Some(Duration::ZERO));
        let err = try_flags(&["--iptables-sync-period=30"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing unit in duration \"30\""), "{err}");
        let err = try_flags(&["--iptables-min-sync-period", "-1s"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be greater than or equal to 0"), "{err}");
    }

    #[test]
    fn integers_like_pflag_int32() {
        for (text, want) in [
            ("14", 14),
            ("+14", 14),
            ("-999", -999),
            ("0x1f", 31),
            ("0X1F", 31),
            ("017", 15),
            ("0o17", 15),
            ("0b101", 5),
            ("1_000", 1000),
            ("0", 0),
        ] {
            assert_eq!(parse_go_int32(text), Ok(want), "{text}");
        }
        for text in [
            "",
            "08",
            "1.5",
            "ten",
            "2147483648",
            "_1",
            "1_",
            "1__0",
            "0x",
            "--1",
        ] {
            assert!(parse_go_int32(text).is_err(), "{text}");
        }
        assert_eq!(parse_go_int32("-2147483648"), Ok(i32::MIN));
        assert_eq!(
            flags(&["--iptables-masquerade-bit=0x0e"]).iptables_masquerade_bit,
            Some(14)
        );
        assert_eq!(flags(&["--kube-api-qps=20.5"]).kube_api_qps, Some(20.5));
        assert!(try_flags(&["--kube-api-qps=fast"]).is_err());
        assert!(try_flags(&["--conntrack-min=lots"]).is_err());
    }

    #[test]
    fn address_flags_are_checked_when_parsed() {
        assert!(try_flags(&["--bind-address=10.0.0.1"]).is_ok());
        assert!(try_flags(&["--bind-address=::1"]).is_ok());
        let err = try_flags(&["--bind-address=node1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"node1\" is not a valid IP address"), "{err}");
        for ok in ["", "0.0.0.0", "0.0.0.0:10256", "[::]:10256", "::"] {
            assert!(
                try_flags(&[&format!("--healthz-bind-address={ok}")]).is_ok(),
                "{ok}"
            );
        }
        for bad in ["localhost:10256", "0.0.0.0:99999", ":10256", "[::]"] {
            let err = try_flags(&[&format!("--metrics-bind-address={bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("is not in a valid format (ip or ip:port)"),
                "{bad}: {err}"
            );
        }
        let err = try_flags(&["--hostname-override=  "])
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty hostname-override is invalid"), "{err}");
        // An empty --hostname-override is "not set".
        let mut config = KubeProxyConfiguration {
            hostname_override: "from-file".into(),
            ..Default::default()
        };
        flags(&["--hostname-override="]).apply(&mut config);
        assert_eq!(config.hostname_override, "from-file");
    }

    #[test]
    fn server_addresses_and_deprecated_ports() {
        let c = applied(&[
            "--healthz-bind-address=10.0.0.1",
            "--metrics-bind-address=::",
        ]);
        assert_eq!(c.healthz_bind_address, "10.0.0.1:10256");
        assert_eq!(c.metrics_bind_address, "[::]:10249");
        let c = applied(&[
            "--metrics-bind-address=0.0.0.0:9100",
            "--healthz-bind-address=",
        ]);
        assert_eq!(c.metrics_bind_address, "0.0.0.0:9100");
        assert_eq!(c.healthz_bind_address, "");

        let f = flags(&["--healthz-port=0", "--metrics-port", "9999"]);
        let mut c = KubeProxyConfiguration::default();
        let warnings = f.apply(&mut c);
        assert_eq!(c.healthz_bind_address, "");
        assert_eq!(c.metrics_bind_address, "127.0.0.1:9999");
        assert_eq!(
            warnings,
            vec![
                "--healthz-port is deprecated and will be removed; use --healthz-bind-address",
                "--metrics-port is deprecated and will be removed; use --metrics-bind-address",
            ]
        );
        let c = applied(&["--healthz-bind-address=::1", "--healthz-port=8080"]);
        assert_eq!(c.healthz_bind_address, "[::1]:8080");
        let c = applied(&["--healthz-bind-address=[::1]:1", "--healthz-port=8080"]);
        assert_eq!(c.healthz_bind_address, "[::1]:8080");
        assert!(try_flags(&["--healthz-port=70000"]).is_err());
    }

    #[test]
    fn every_config_flag_reaches_its_field() {
        let c = applied(&[
            "--kubeconfig=/kc",
            "--kube-api-content-type=application/json",
            "--kube-api-burst=20",
            "--kube-api-qps=7.5",
            "--bind-address=10.0.0.5",
            "--bind-address-hard-fail",
            "--profiling",
            "--show-hidden-metrics-for-version=1.33",
            "--proxy-mode=ipvs",
            "--iptables-masquerade-bit=13",
            "--ipvs-scheduler=wrr",
            "--ipvs-strict-arp",
            "--ipvs-sync-period=45s",
            "--ipvs-min-sync-period=2s",
            "--ipvs-tcp-timeout=1m",
            "--ipvs-tcpfin-timeout=30s",
            "--ipvs-udp-timeout=10s",
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface=cbr0",
            "--pod-interface-name-prefix=veth",
            "--conntrack-max-per-core=0",
            "--conntrack-min=1000",
            "--conntrack-tcp-timeout-established=2h",
            "--conntrack-tcp-timeout-close-wait=1m",
            "--conntrack-udp-timeout=30s",
            "--conntrack-udp-timeout-stream=2m",
            "--config-sync-period=5m",
            "--logging-format=json",
            "--log-flush-frequency=10s",
            "--vmodule=proxier*=5,sync=3",
        ]);
        assert_eq!(c.client_connection.kubeconfig, "/kc");
        assert_eq!(c.client_connection.content_type, "application/json");
        assert_eq!(c.client_connection.burst, 20);
        assert_eq!(c.client_connection.qps, 7.5);
        assert_eq!(c.bind_address, "10.0.0.5");
        assert!(c.bind_address_hard_fail && c.enable_profiling);
        assert_eq!(c.show_hidden_metrics_for_version, "1.33");
        assert_eq!(c.mode, ProxyMode::Ipvs);
        assert_eq!(c.iptables.masquerade_bit, Some(13));
        assert_eq!(c.masquerade_bit(), 13);
        assert_eq!(c.ipvs.scheduler, "wrr");
        assert!(c.ipvs.strict_arp);
        assert_eq!(c.sync_periods(), (secs(45), secs(2)));
        assert_eq!(c.ipvs.tcp_timeout, secs(60));
        assert_eq!(c.ipvs.tcp_fin_timeout, secs(30));
        assert_eq!(c.ipvs.udp_timeout, secs(10));
        assert_eq!(c.detect_local_mode, LocalMode::BridgeInterface);
        assert_eq!(c.detect_local.bridge_interface, "cbr0");
        assert_eq!(c.detect_local.interface_name_prefix, "veth");
        assert_eq!(c.conntrack.max_per_core, Some(0));
        assert_eq!(c.conntrack.min, Some(1000));
        assert_eq!(c.conntrack.tcp_established_timeout, Some(secs(7200)));
        assert_eq!(c.conntrack.tcp_close_wait_timeout, Some(secs(60)));
        assert_eq!(c.conntrack.udp_timeout, secs(30));
        assert_eq!(c.conntrack.udp_stream_timeout, secs(120));
        assert_eq!(c.config_sync_period, secs(300));
        assert_eq!(c.logging.format, "json");
        assert_eq!(c.logging.flush_frequency, secs(10));
        assert_eq!(c.logging.vmodule.len(), 2);
        assert_eq!(c.logging.vmodule[0].file_pattern, "proxier*");
        assert_eq!(c.logging.vmodule[0].verbosity, 5);
    }

    #[test]
    fn precedence_default_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            &dir,
            "mode: ipvs\nipvs: {syncPeriod: 1m, scheduler: sh}\nclusterCIDR: 10.0.0.0/8\noomScoreAdj: -500\nconntrack: {min: 5000}\n",
        );
        let resolved = flags(&[
            &format!("--config={path}"),
            "--ipvs-scheduler=rr",
            "--conntrack-min=7000",
            "-v=3",
        ])
        .resolve()
        .unwrap();
        let c = resolved.config;
        assert_eq!(c.ipvs.scheduler, "rr"); // flag over file
        assert_eq!(c.conntrack.min, Some(7000)); // flag over file
        assert_eq!(c.ipvs.sync_period, secs(60)); // file over default
        assert_eq!(c.oom_score_adj, Some(-500)); // file over default
        assert_eq!(c.cluster_cidr, "10.0.0.0/8");
        assert_eq!(c.conntrack.max_per_core, Some(32768)); // default
        assert_eq!(c.config_sync_period, secs(900)); // default
        assert_eq!(c.logging.verbosity, 3);
        assert_eq!(
            resolved.warnings,
            vec![
                "--ipvs-scheduler, --conntrack-min override the config file (kube-proxy would ignore them because --config is set)"
            ]
        );
    }

    #[test]
    fn sync_period_flags_follow_the_mode() {
        // nftables: kube-proxy has no nftables flags; --iptables-* apply.
        let c = applied(&[
            "--proxy-mode=nftables",
            "--iptables-sync-period=10s",
            "--iptables-min-sync-period=0s",
        ]);
        assert_eq!(c.sync_periods(), (secs(10), Duration::ZERO));
        // ipvs: --iptables-* do not change what is in effect.
        let c = applied(&[
            "--proxy-mode=ipvs",
            "--iptables-sync-period=10s",
            "--ipvs-sync-period=20s",
        ]);
        assert_eq!(c.sync_periods(), (secs(20), Duration::ZERO));
        // A flag may set minSyncPeriod to 0 (the file cannot: defaulting).
        let c = applied(&["--iptables-min-sync-period=0"]);
        assert_eq!(c.sync_periods(), (secs(30), Duration::ZERO));
        // The mode may come from the file.
        let mut config = crate::config::parse(&format!("{HEADER}mode: nftables\n"))
            .unwrap()
            .config;
        flags(&["--iptables-sync-period=15s"]).apply(&mut config);
        assert_eq!(config.sync_periods(), (secs(15), secs(1)));
    }

    #[test]
    fn resolve_reports_all_validation_errors() {
        let err = flags(&[
            "--iptables-masquerade-bit=40",
            "--iptables-sync-period=1s",
            "--iptables-min-sync-period=5s",
            "--proxy-mode=kernelspace",
            "--nodeport-addresses=primary,10.0.0.0/8",
            "--detect-local-mode=InterfaceNamePrefix",
            "--conntrack-min=-1",
        ])
        .resolve()
        .unwrap_err();
        let errors: Vec<String> = err.field_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "mode: must be iptables, ipvs, nftables, userspace or blank (blank means iptables), got \"kernelspace\"",
                "iptables.masqueradeBit: must be in the range [0, 31], got 40",
                "iptables.syncPeriod: must be greater than or equal to iptables.minSyncPeriod (5s), got 1s",
                "conntrack.min: must be greater than or equal to 0, got -1",
                "nodePortAddresses[0]: can't use both 'primary' and CIDRs",
                "detectLocal.interfaceNamePrefix: must not be empty when detectLocalMode is InterfaceNamePrefix",
            ]
        );
        let err = flags(&["--iptables-sync-period=0s", "--config-sync-period=0s"])
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid KubeProxyConfiguration: iptables.syncPeriod: must be greater than 0, got 0s; \
             iptables.syncPeriod: must be greater than or equal to iptables.minSyncPeriod (1s), got 0s; \
             configSyncPeriod: must be greater than 0, got 0s"
        );
    }

    #[test]
    fn resolve_surfaces_config_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, "iptables:\n  syncPeriod: soon\n");
        let err = flags(&[&format!("--config={path}")]).resolve().unwrap_err();
        assert!(matches!(err, ConfigError::Decode { .. }), "{err}");
        // --config="" means no config file.
        assert!(flags(&["--config="]).resolve().is_ok());
        let err = flags(&["--config=/nonexistent/kube-proxy.conf"])
            .resolve()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn nftables_mode_defaults_node_ports_to_primary() {
        let c = flags(&["--proxy-mode=nftables"]).resolve().unwrap().config;
        assert_eq!(c.node_port_addresses, vec!["primary"]);
        assert_eq!(c.masquerade_bit(), 14);
    }
}
