//! Tests of loading, defaulting and validation.

use std::time::Duration;

use super::*;

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn parse_ok(body: &str) -> Loaded {
    parse(&format!("{HEADER}{body}")).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Upstream's defaulted v1alpha1 object (the values of upstream's
/// `scheme/testdata/KubeProxyConfiguration/after/v1alpha1.yaml`, 1.31+), written as
/// a config file.
const UPSTREAM_DEFAULTS_YAML: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: ""
  qps: 5
clusterCIDR: ""
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpBeLiberal: false
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: 0.0.0.0:10256
hostnameOverride: ""
iptables:
  localhostNodePorts: true
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 30s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 5s
  format: text
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: 127.0.0.1:10249
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
nodePortAddresses: null
oomScoreAdj: -999
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

/// What kubeadm (1.3x) puts in the kube-proxy ConfigMap's `config.conf`: the
/// v1alpha1 struct marshalled undefaulted, so zero values and nulls everywhere.
const KUBEADM_CONFIG_CONF: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

#[test]
fn defaults_match_upstream_set_defaults() {
    let c = KubeProxyConfiguration::default();
    assert_eq!(c.bind_address, "0.0.0.0");
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
    assert_eq!(c.oom_score_adj, Some(-999));
    assert_eq!(c.mode, ProxyMode::Unset);
    assert_eq!(c.effective_mode(), ProxyMode::Iptables);
    assert_eq!(c.detect_local_mode, LocalMode::Unset);
    assert_eq!(c.iptables.masquerade_bit, Some(14));
    assert_eq!(c.iptables.localhost_node_ports, Some(true));
    assert!(!c.iptables.masquerade_all);
    assert_eq!(c.iptables.sync_period, secs(30));
    assert_eq!(c.iptables.min_sync_period, secs(1));
    assert_eq!(c.ipvs.sync_period, secs(30));
    assert_eq!(c.ipvs.min_sync_period, Duration::ZERO);
    assert_eq!(c.nftables.masquerade_bit, Some(14));
    assert_eq!(c.nftables.sync_period, secs(30));
    assert_eq!(c.nftables.min_sync_period, secs(1));
    assert_eq!(c.conntrack.max_per_core, Some(32768));
    assert_eq!(c.conntrack.min, Some(131072));
    assert_eq!(c.conntrack.tcp_established_timeout, Some(secs(86400)));
    assert_eq!(c.conntrack.tcp_close_wait_timeout, Some(secs(3600)));
    assert_eq!(c.conntrack.udp_timeout, Duration::ZERO);
    assert_eq!(c.conntrack.udp_stream_timeout, Duration::ZERO);
    assert!(!c.conntrack.tcp_be_liberal);
    assert_eq!(c.config_sync_period, secs(900));
    assert_eq!(
        c.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
    assert_eq!(c.client_connection.kubeconfig, "");
    assert_eq!(c.logging.format, "text");
    assert_eq!(c.logging.flush_frequency, secs(5));
    assert_eq!(c.logging.verbosity, 0);
    assert!(c.feature_gates.is_empty());
    assert!(c.node_port_addresses.is_empty());
    assert_eq!(c.sync_periods(), (secs(30), secs(1)));
    assert_eq!(c.masquerade_bit(), 14);
    assert!(!c.masquerade_all());
    assert_eq!(c.validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn empty_config_file_is_upstream_defaults() {
    let loaded = parse_ok("");
    assert_eq!(loaded.config, KubeProxyConfiguration::default());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn upstream_defaulted_object_round_trips_to_defaults() {
    let loaded = parse(UPSTREAM_DEFAULTS_YAML).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config, KubeProxyConfiguration::default());
}

#[test]
fn kubeadm_config_map_gets_upstream_defaults() {
    let loaded = parse(KUBEADM_CONFIG_CONF).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let mut want = KubeProxyConfiguration::default();
    want.client_connection.kubeconfig = "/var/lib/kube-proxy/kubeconfig.conf".into();
    want.cluster_cidr = "10.244.0.0/16".into();
    // Zero values and nulls are defaulted: minSyncPeriod 0s -> 1s, masqueradeBit null -> 14,
    // configSyncPeriod 0s -> 15m, qps 0 -> 5, healthzBindAddress "" -> 0.0.0.0:10256, ...
    assert_eq!(loaded.config, want);
    let mut complete = loaded.config.clone();
    complete.apply_platform_defaults();
    assert_eq!(complete.validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn old_kubeadm_fields_are_warned_about_not_rejected() {
    // A 1.19-era kubeadm config: udpIdleTimeout and resourceContainer are gone.
    let loaded = parse_ok(
        "udpIdleTimeout: 250ms\nresourceContainer: /kube-proxy\nconntrack:\n  max: 0\n  maxPerCore: 0\n",
    );
    assert_eq!(
        loaded.warnings,
        vec![
            "<input>: unknown field \"conntrack.max\" (ignored)",
            "<input>: unknown field \"resourceContainer\" (ignored)",
            "<input>: unknown field \"udpIdleTimeout\" (ignored)",
        ]
    );
    // An explicit 0 in a Go pointer field is kept.
    assert_eq!(loaded.config.conntrack.max_per_core, Some(0));
}

#[test]
fn unknown_fields_carry_their_path() {
    let loaded = parse_ok(
        "iptables:\n  masqueradeBitt: 12\nlogging:\n  vmodule:\n  - filePattern: a*\n    verbosity: 4\n    level: 3\nfeatureGates:\n  Anything: true\n",
    );
    let unknown: Vec<&str> = loaded.warnings.iter().map(String::as_str).collect();
    assert!(
        unknown.contains(&"<input>: unknown field \"iptables.masqueradeBitt\" (ignored)"),
        "{unknown:?}"
    );
    assert!(
        unknown.contains(&"<input>: unknown field \"logging.vmodule[0].level\" (ignored)"),
        "{unknown:?}"
    );
    assert_eq!(
        unknown.len(),
        2,
        "feature gate names are free-form: {unknown:?}"
    );
    assert_eq!(loaded.config.iptables.masquerade_bit, Some(14));
    assert_eq!(loaded.config.feature_gates.get("Anything"), Some(&true));
    assert_eq!(
        loaded.config.logging.vmodule,
        vec![VModuleItem {
            file_pattern: "a*".into(),
            verbosity: 4
        }]
    );
}

#[test]
fn field_names_are_case_sensitive() {
    let loaded = parse_ok("clusterCidr: 10.0.0.0/8\n");
    assert_eq!(loaded.config.cluster_cidr, "");
    assert_eq!(
        loaded.warnings,
        vec!["<input>: unknown field \"clusterCidr\" (ignored)"]
    );
}

#[test]
fn wrong_type_meta_is_an_error() {
    let err = parse("apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n")
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::UnsupportedApiVersion { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "<input>: unsupported apiVersion \"kubeproxy.config.k8s.io/v1alpha2\": kproxy reads only \"kubeproxy.config.k8s.io/v1alpha1\""
    );
    let err =
        parse("apiVersion: componentconfig/v1alpha1\nkind: KubeProxyConfiguration\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::UnsupportedApiVersion { .. }),
        "{err}"
    );
    let err = parse("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "<input>: unsupported kind \"KubeletConfiguration\": expected \"KubeProxyConfiguration\""
    );
    let err = parse("kind: KubeProxyConfiguration\nmode: ipvs\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<input>: apiVersion is missing (expected \"kubeproxy.config.k8s.io/v1alpha1\")"
    );
    let err = parse("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<input>: kind is missing (expected \"KubeProxyConfiguration\")"
    );
    for not_a_mapping in ["", "# just a comment\n", "- a\n- b\n", "hello\n"] {
        let err = parse(not_a_mapping).unwrap_err();
        assert!(
            matches!(err, ConfigError::NotAConfiguration { .. }),
            "{not_a_mapping:?}: {err}"
        );
    }
}

#[test]
fn syntax_errors_are_errors() {
    let err = parse(&format!("{HEADER}iptables: [\n")).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn type_errors_name_the_field() {
    let err = parse(&format!("{HEADER}iptables:\n  syncPeriod: 30\n")).unwrap_err();
    let ConfigError::Decode { path, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, "iptables.syncPeriod");
    assert!(message.contains("string"), "{message}");

    let err = parse(&format!("{HEADER}conntrack:\n  udpTimeout: 5 minutes\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<input>: conntrack.udpTimeout: unknown unit \" minutes\" in duration \"5 minutes\""
    );

    let err = parse(&format!("{HEADER}ipvs:\n  tcpTimeout: -5s\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<input>: ipvs.tcpTimeout: negative duration \"-5s\": must be greater than or equal to 0"
    );

    let err = parse(&format!("{HEADER}nodePortAddresses: [10.0.0.0/8, 12]\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("<input>: nodePortAddresses[1]: "),
        "{err}"
    );

    let err = parse(&format!("{HEADER}iptables:\n  masqueradeBit: lots\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("<input>: iptables.masqueradeBit: "),
        "{err}"
    );
}

#[test]
fn null_means_zero_value_then_default() {
    let loaded = parse_ok(
        "iptables: null\nipvs:\n  syncPeriod: null\n  excludeCIDRs: null\nfeatureGates: null\nmode: null\nclusterCIDR: ~\noomScoreAdj:\nconntrack:\n  tcpEstablishedTimeout: null\n",
    );
    assert_eq!(loaded.config, KubeProxyConfiguration::default());
}

#[test]
fn explicit_zero_durations_are_defaulted_like_upstream() {
    let c = parse_ok(
        "iptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\nipvs:\n  minSyncPeriod: 0s\nconfigSyncPeriod: \"0\"\nconntrack:\n  tcpEstablishedTimeout: 0s\n",
    )
    .config;
    assert_eq!(c.iptables.sync_period, secs(30));
    // Defaulting replaces zero: a file cannot ask for minSyncPeriod 0 in iptables mode.
    assert_eq!(c.iptables.min_sync_period, secs(1));
    assert_eq!(c.ipvs.min_sync_period, Duration::ZERO);
    assert_eq!(c.config_sync_period, secs(900));
    // A pointer field: an explicit 0s is kept (leave the sysctl alone).
    assert_eq!(c.conntrack.tcp_established_timeout, Some(Duration::ZERO));
}

#[test]
fn bind_address_family_picks_server_defaults() {
    let c = parse_ok("bindAddress: \"::\"\n").config;
    assert_eq!(c.healthz_bind_address, "[::]:10256");
    assert_eq!(c.metrics_bind_address, "[::1]:10249");
    let c = parse_ok(
        "bindAddress: 10.1.2.3\nhealthzBindAddress: 10.1.2.3\nmetricsBindAddress: \"::\"\n",
    )
    .config;
    assert_eq!(c.healthz_bind_address, "10.1.2.3:10256");
    assert_eq!(c.metrics_bind_address, "[::]:10249");
    let c = parse_ok("metricsBindAddress: 0.0.0.0:9999\n").config;
    assert_eq!(c.metrics_bind_address, "0.0.0.0:9999");
}

#[test]
fn full_config_is_read() {
    let c = parse_ok(
        r#"
bindAddress: 192.168.1.10
bindAddressHardFail: true
enableProfiling: true
healthzBindAddress: 0.0.0.0:12345
metricsBindAddress: 0.0.0.0:10249
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
hostnameOverride: node-1
mode: ipvs
featureGates: {TopologyAwareHints: true, SomethingElse: false}
clientConnection: {kubeconfig: /etc/kp.conf, acceptContentTypes: application/json, contentType: application/json, qps: 20.5, burst: 40}
iptables: {masqueradeBit: 13, masqueradeAll: true, localhostNodePorts: false, syncPeriod: 1m, minSyncPeriod: 10s}
ipvs:
  syncPeriod: 1h2m3.5s
  minSyncPeriod: 500ms
  scheduler: wlc
  excludeCIDRs: [10.0.0.0/8, "fd00::/8"]
  strictARP: true
  tcpTimeout: 15m
  tcpFinTimeout: 2m
  udpTimeout: 30s
nftables: {masqueradeBit: 20, masqueradeAll: true, syncPeriod: 45s, minSyncPeriod: 2s}
nodePortAddresses: [10.0.0.0/8, "::/0"]
conntrack:
  maxPerCore: 0
  min: 1000
  tcpEstablishedTimeout: 1h
  tcpCloseWaitTimeout: 30s
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m
detectLocalMode: InterfaceNamePrefix
detectLocal: {bridgeInterface: cbr0, interfaceNamePrefix: veth}
configSyncPeriod: 1m
oomScoreAdj: -500
logging: {format: json, verbosity: 4, flushFrequency: 1000000000}
"#,
    )
    .config;
    assert_eq!(c.bind_address, "192.168.1.10");
    assert!(c.bind_address_hard_fail && c.enable_profiling);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:12345");
    assert_eq!(c.cluster_cidr, "10.244.0.0/16,fd00:10:244::/56");
    assert_eq!(c.hostname_override, "node-1");
    assert_eq!(c.mode, ProxyMode::Ipvs);
    assert_eq!(c.feature_gates.len(), 2);
    assert_eq!(c.client_connection.kubeconfig, "/etc/kp.conf");
    assert_eq!(c.client_connection.accept_content_types, "application/json");
    assert_eq!(c.client_connection.qps, 20.5);
    assert_eq!(c.client_connection.burst, 40);
    assert_eq!(c.iptables.masquerade_bit, Some(13));
    assert!(c.iptables.masquerade_all);
    assert_eq!(c.iptables.localhost_node_ports, Some(false));
    assert_eq!(c.iptables.sync_period, secs(60));
    assert_eq!(c.ipvs.sync_period, Duration::from_millis(3_723_500));
    assert_eq!(c.ipvs.min_sync_period, Duration::from_millis(500));
    assert_eq!(c.ipvs.scheduler, "wlc");
    assert_eq!(c.ipvs.exclude_cidrs, vec!["10.0.0.0/8", "fd00::/8"]);
    assert!(c.ipvs.strict_arp);
    assert_eq!(c.ipvs.tcp_timeout, secs(900));
    assert_eq!(c.ipvs.tcp_fin_timeout, secs(120));
    assert_eq!(c.ipvs.udp_timeout, secs(30));
    assert_eq!(c.nftables.masquerade_bit, Some(20));
    assert_eq!(c.node_port_addresses, vec!["10.0.0.0/8", "::/0"]);
    assert_eq!(c.conntrack.max_per_core, Some(0));
    assert_eq!(c.conntrack.min, Some(1000));
    assert_eq!(c.conntrack.tcp_established_timeout, Some(secs(3600)));
    assert_eq!(c.conntrack.tcp_close_wait_timeout, Some(secs(30)));
    assert!(c.conntrack.tcp_be_liberal);
    assert_eq!(c.conntrack.udp_timeout, secs(30));
    assert_eq!(c.conntrack.udp_stream_timeout, secs(120));
    assert_eq!(c.detect_local_mode, LocalMode::InterfaceNamePrefix);
    assert_eq!(c.detect_local.interface_name_prefix, "veth");
    assert_eq!(c.config_sync_period, secs(60));
    assert_eq!(c.oom_score_adj, Some(-500));
    assert_eq!(c.logging.format, "json");
    assert_eq!(c.logging.verbosity, 4);
    assert_eq!(c.logging.flush_frequency, secs(1));
    // ipvs mode: the ipvs sync periods are in effect, iptables' masquerade settings.
    assert_eq!(
        c.sync_periods(),
        (Duration::from_millis(3_723_500), Duration::from_millis(500))
    );
    assert_eq!(c.masquerade_bit(), 13);
    assert!(c.masquerade_all());
    assert_eq!(c.validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn json_is_accepted() {
    let c = parse(
        r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "nftables", "nftables": {"syncPeriod": "10s"}, "conntrack": {"maxPerCore": null}}"#,
    )
    .unwrap()
    .config;
    assert_eq!(c.mode, ProxyMode::Nftables);
    assert_eq!(c.sync_periods(), (secs(10), secs(1)));
    assert_eq!(c.conntrack.max_per_core, Some(32768));
}

#[test]
fn duplicate_keys_warn_and_last_wins() {
    let loaded = parse_ok("mode: ipvs\nmode: nftables\n");
    assert_eq!(loaded.config.mode, ProxyMode::Nftables);
    assert_eq!(
        loaded.warnings,
        vec!["<input>: duplicate key mode at line 4 (the last value is used)"]
    );
}

#[test]
fn ignored_settings_are_warned_about() {
    let loaded = parse_ok(
        "portRange: 30000-32767\nwinkernel:\n  networkName: l2bridge\nwindowsRunAsService: true\nshowHiddenMetricsForVersion: \"1.33\"\niptables:\n  snatNodeInternalIP: true\n",
    );
    assert_eq!(
        loaded.warnings,
        vec![
            "<input>: portRange \"30000-32767\" is deprecated and ignored",
            "<input>: winkernel settings are Windows-only and ignored",
            "<input>: windowsRunAsService is Windows-only and ignored",
            "<input>: showHiddenMetricsForVersion \"1.33\" is ignored (kproxy has no hidden metrics)",
            "<input>: iptables.snatNodeInternalIP is not implemented by kproxy and ignored",
        ]
    );
}

#[test]
fn platform_defaults_like_upstream_linux() {
    let mut c = KubeProxyConfiguration::default();
    c.apply_platform_defaults();
    assert_eq!(c.mode, ProxyMode::Iptables);
    assert_eq!(c.detect_local_mode, LocalMode::ClusterCidr);
    assert!(c.node_port_addresses.is_empty());

    let mut c = parse_ok("mode: nftables\n").config;
    c.apply_platform_defaults();
    assert_eq!(c.node_port_addresses, vec!["primary"]);

    let mut c =
        parse_ok("mode: nftables\nnodePortAddresses: [10.0.0.0/8]\ndetectLocalMode: NodeCIDR\n")
            .config;
    c.apply_platform_defaults();
    assert_eq!(c.node_port_addresses, vec!["10.0.0.0/8"]);
    assert_eq!(c.detect_local_mode, LocalMode::NodeCidr);
}

#[test]
fn yaml_output_round_trips() {
    let original = parse_ok(
        "mode: ipvs\nipvs: {scheduler: sh, minSyncPeriod: 1h2m3.5s}\nconntrack: {maxPerCore: 0}\nfeatureGates: {A: true}\n",
    )
    .config;
    let yaml = original.to_yaml();
    assert!(
        yaml.contains("apiVersion: kubeproxy.config.k8s.io/v1alpha1"),
        "{yaml}"
    );
    assert!(yaml.contains("kind: KubeProxyConfiguration"), "{yaml}");
    assert!(yaml.contains("minSyncPeriod: 1h2m3.5s"), "{yaml}");
    assert!(yaml.contains("tcpEstablishedTimeout: 24h0m0s"), "{yaml}");
    let reparsed = parse(&yaml).unwrap();
    assert!(reparsed.warnings.is_empty(), "{:?}", reparsed.warnings);
    assert_eq!(reparsed.config, original);
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.conf");
    std::fs::write(&path, format!("{HEADER}mode: nftables\nbogus: 1\n")).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.config.mode, ProxyMode::Nftables);
    assert_eq!(
        loaded.warnings,
        vec![format!(
            "{}: unknown field \"bogus\" (ignored)",
            path.display()
        )]
    );
    let missing = dir.path().join("missing.conf");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("reading {}: ", missing.display())),
        "{err}"
    );
}

// ---- validation ----

fn errors_of(body: &str) -> Vec<String> {
    let mut c = parse_ok(body).config;
    c.apply_platform_defaults();
    c.validation_errors()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_validation_error_text() {
    let cases: &[(&str, &[&str])] = &[
        (
            "mode: kernelspace\n",
            &[
                "mode: must be iptables, ipvs, nftables, userspace or blank (blank means iptables), got \"kernelspace\"",
            ],
        ),
        (
            "mode: IPVS\n",
            &[
                "mode: must be iptables, ipvs, nftables, userspace or blank (blank means iptables), got \"IPVS\"",
            ],
        ),
        (
            "iptables: {masqueradeBit: 40}\n",
            &["iptables.masqueradeBit: must be in the range [0, 31], got 40"],
        ),
        (
            "iptables: {masqueradeBit: -1}\n",
            &["iptables.masqueradeBit: must be in the range [0, 31], got -1"],
        ),
        (
            "mode: nftables\nnftables: {masqueradeBit: 32}\n",
            &["nftables.masqueradeBit: must be in the range [0, 31], got 32"],
        ),
        // nftables.masqueradeBit is only checked in nftables mode, like upstream.
        ("nftables: {masqueradeBit: 32}\n", &[]),
        (
            "iptables: {syncPeriod: 5s, minSyncPeriod: 10s}\n",
            &[
                "iptables.syncPeriod: must be greater than or equal to iptables.minSyncPeriod (10s), got 5s",
            ],
        ),
        (
            "mode: ipvs\nipvs: {syncPeriod: 5s, minSyncPeriod: 1m}\n",
            &[
                "ipvs.syncPeriod: must be greater than or equal to ipvs.minSyncPeriod (1m0s), got 5s",
            ],
        ),
        (
            "mode: nftables\nnftables: {syncPeriod: 500ms, minSyncPeriod: 1s}\n",
            &[
                "nftables.syncPeriod: must be greater than or equal to nftables.minSyncPeriod (1s), got 500ms",
            ],
        ),
        // Only the section of the mode in effect is checked.
        (
            "mode: ipvs\niptables: {syncPeriod: 5s, minSyncPeriod: 10s}\n",
            &[],
        ),
        (
            "mode: ipvs\nipvs: {scheduler: fifo, excludeCIDRs: [10.0.0.0/8, 10.0.0.1, bogus]}\n",
            &[
                "ipvs.scheduler: must be one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh or blank (blank means rr), got \"fifo\"",
                "ipvs.excludeCIDRs[1]: must be a valid CIDR, got \"10.0.0.1\"",
                "ipvs.excludeCIDRs[2]: must be a valid CIDR, got \"bogus\"",
            ],
        ),
        ("ipvs: {scheduler: fifo}\n", &[]),
        (
            "conntrack: {maxPerCore: -1, min: -2}\n",
            &[
                "conntrack.maxPerCore: must be greater than or equal to 0, got -1",
                "conntrack.min: must be greater than or equal to 0, got -2",
            ],
        ),
        (
            "oomScoreAdj: 1001\n",
            &["oomScoreAdj: must be in the range [-1000, 1000], got 1001"],
        ),
        ("oomScoreAdj: -1000\n", &[]),
        (
            "clientConnection: {burst: -1}\n",
            &["clientConnection.burst: must be greater than or equal to 0, got -1"],
        ),
        (
            "bindAddress: 10.10.12.11:2000\n",
            &["bindAddress: must be a valid IP address, got \"10.10.12.11:2000\""],
        ),
        (
            "healthzBindAddress: localhost:10256\nmetricsBindAddress: 127.0.0.1:0\n",
            &[
                "healthzBindAddress: must be a valid IP, got \"localhost\"",
                "metricsBindAddress: must be a valid port (1-65535), got \"0\"",
            ],
        ),
        // "::1:80" is an IPv6 address, which defaulting turns into "[::1:80]:10256".
        (
            "healthzBindAddress: \"1.2.3.4:5:6\"\nmetricsBindAddress: 1.2.3.4:http\n",
            &[
                "healthzBindAddress: must be IP:port, got \"1.2.3.4:5:6\"",
                "metricsBindAddress: must be a valid port (1-65535), got \"http\"",
            ],
        ),
        (
            "healthzBindAddress: bogus\n",
            &["healthzBindAddress: must be IP:port, got \"bogus\""],
        ),
        (
            "nodePortAddresses: [10.0.0.0/8, primary]\n",
            &["nodePortAddresses[1]: can't use both 'primary' and CIDRs"],
        ),
        (
            "nodePortAddresses: [primary, 10.0.0.0/8]\n",
            &["nodePortAddresses[0]: can't use both 'primary' and CIDRs"],
        ),
        ("nodePortAddresses: [primary]\n", &[]),
        (
            "nodePortAddresses: [127.0.0.1/32, \"0\", 10.20.30.40, \"::/0\"]\n",
            &[
                "nodePortAddresses[1]: must be a valid CIDR, got \"0\"",
                "nodePortAddresses[2]: must be a valid CIDR, got \"10.20.30.40\"",
            ],
        ),
        (
            "detectLocalMode: LocalOnly\n",
            &[
                "detectLocalMode: must be one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or blank (blank means ClusterCIDR), got \"LocalOnly\"",
            ],
        ),
        (
            "detectLocalMode: BridgeInterface\n",
            &[
                "detectLocal.bridgeInterface: must not be empty when detectLocalMode is BridgeInterface",
            ],
        ),
        (
            "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n",
            &[],
        ),
        (
            "detectLocalMode: InterfaceNamePrefix\n",
            &[
                "detectLocal.interfaceNamePrefix: must not be empty when detectLocalMode is InterfaceNamePrefix",
            ],
        ),
        (
            "clusterCIDR: 192.168.0.0/16,invalid\n",
            &[
                "clusterCIDR: must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48), got \"invalid\"",
            ],
        ),
        (
            "detectLocalMode: ClusterCIDR\nclusterCIDR: 192.168.0.0/16,10.0.0.0/8\n",
            &[
                "clusterCIDR: must be a single CIDR or a dual-stack pair of CIDRs (one IPv4, one IPv6), got \"192.168.0.0/16,10.0.0.0/8\"",
            ],
        ),
        (
            "clusterCIDR: 10.0.0.0/8,fd00::/8,10.1.0.0/16\n",
            &[
                "clusterCIDR: must be a single CIDR or a dual-stack pair of CIDRs (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48), got \"10.0.0.0/8,fd00::/8,10.1.0.0/16\"",
            ],
        ),
        ("clusterCIDR: \"fd00::/8,10.0.0.0/8\"\n", &[]),
        // clusterCIDR is only used (and checked) in ClusterCIDR mode, like upstream.
        ("detectLocalMode: NodeCIDR\nclusterCIDR: bogus\n", &[]),
        (
            "logging: {format: yaml}\n",
            &["logging.format: must be one of text, json, got \"yaml\""],
        ),
        (
            "logging: {format: json, vmodule: [{filePattern: x, verbosity: 2}]}\n",
            &["logging.vmodule: is only supported with the text log format"],
        ),
    ];
    for (body, want) in cases {
        assert_eq!(errors_of(body), *want, "for config:\n{body}");
    }
}

#[test]
fn all_errors_are_reported_together() {
    let mut c = parse_ok(
        "iptables: {masqueradeBit: 40}\nconntrack: {min: -1}\nmode: bogus\nnodePortAddresses: [x]\noomScoreAdj: 5000\n",
    )
    .config;
    c.apply_platform_defaults();
    let err = c.validate().unwrap_err();
    assert_eq!(err.field_errors().len(), 5, "{err}");
    assert_eq!(
        err.to_string(),
        "invalid KubeProxyConfiguration: \
         mode: must be iptables, ipvs, nftables, userspace or blank (blank means iptables), got \"bogus\"; \
         iptables.masqueradeBit: must be in the range [0, 31], got 40; \
         conntrack.min: must be greater than or equal to 0, got -1; \
         oomScoreAdj: must be in the range [-1000, 1000], got 5000; \
         nodePortAddresses[0]: must be a valid CIDR, got \"x\""
    );
}

#[test]
fn zero_periods_set_after_defaulting_are_rejected() {
    // Only reachable through flags (defaulting replaces zeros from the file).
    let mut c = KubeProxyConfiguration::default();
    c.iptables.sync_period = Duration::ZERO;
    c.iptables.min_sync_period = Duration::ZERO;
    c.config_sync_period = Duration::ZERO;
    let errs: Vec<String> = c
        .validation_errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "iptables.syncPeriod: must be greater than 0, got 0s",
            "configSyncPeriod: must be greater than 0, got 0s",
        ]
    );
    c.iptables.min_sync_period = secs(1);
    let errs: Vec<String> = c
        .validation_errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    // An empty healthz/metrics address means "disabled" and is valid.
    let mut c = KubeProxyConfiguration::default();
    c.healthz_bind_address.clear();
    c.metrics_bind_address.clear();
    assert!(c.validation_errors().is_empty());
}
