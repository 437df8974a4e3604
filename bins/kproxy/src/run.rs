//! `kproxy run`: the node daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use kproxy_healthcheck::{ListenAddresses, ProxyHealthServer, ServiceHealthServer};
use kproxy_iptables::{Backend, Iptables, Proxier, ProxierOptions};
use kproxy_model::{ChangeTracker, IpFamily, Node};
use tracing::{info, warn};

use crate::config::{KubeProxyConfiguration, LocalMode, ProxyMode};
use crate::engine::{self, Engine, Event, FamilyProxier};
use crate::flags::ProxyFlags;
use crate::metrics::Metrics;
use crate::setup::{self, HostFacts};

/// Arguments of `kproxy run` (and of `kproxy` without a subcommand).
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Kubernetes manifests to serve instead of a cluster: a file or a directory, re-read
    /// when it changes (replace files atomically). Without it, kproxy watches the API
    /// server (in-cluster configuration, `--kubeconfig` or `--master`).
    #[arg(long, value_name = "PATH")]
    pub source: Option<PathBuf>,

    /// Use this iptables backend instead of detecting the one the node uses.
    #[arg(long, value_name = "nft|legacy", value_parser = parse_backend)]
    pub iptables_backend: Option<Backend>,

    /// Write upstream's partial restore input (all of KUBE-SERVICES each sync) instead of
    /// kproxy's delta (only what changed).
    #[arg(long)]
    pub upstream_partial_syncs: bool,

    #[command(flatten)]
    pub flags: ProxyFlags,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "nft" => Ok(Backend::Nft),
        "legacy" => Ok(Backend::Legacy),
        other => Err(format!("unknown backend {other:?} (nft or legacy)")),
    }
}

/// The families this host can proxy: IPv4, and IPv6 when the kernel has it and ip6tables
/// works.
fn host_families(backend: Backend) -> Vec<IpFamily> {
    let mut out = vec![IpFamily::V4];
    if std::path::Path::new("/proc/net/if_inet6").exists()
        && Iptables::new(IpFamily::V6, backend).is_ok()
    {
        out.push(IpFamily::V6);
    }
    out
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: RunArgs) -> Result<()> {
    let resolved = args.flags.resolve().context("invalid configuration")?;
    for w in &resolved.warnings {
        warn!("{w}");
    }
    let cfg = resolved.config;
    if cfg.effective_mode() != ProxyMode::Iptables {
        bail!(
            "proxy mode {:?} is not implemented yet: only iptables",
            cfg.effective_mode().as_str()
        );
    }
    // Start-up settings kube-proxy makes (its --init-only steps).
    for (key, err) in crate::host::apply_conntrack_settings(&cfg.conntrack) {
        warn!(%key, error = %err, "cannot set conntrack sysctl");
    }
    if let Some(Err(e)) = cfg.oom_score_adj.map(crate::host::set_oom_score_adj) {
        warn!(error = %e, "cannot set oom_score_adj");
    }
    if args.flags.init_only == Some(true) {
        if cfg.iptables.localhost_node_ports.unwrap_or(true) {
            crate::host::set_sysctl("net.ipv4.conf.all.route_localnet", "1")?;
        }
        info!("initialization done (--init-only)");
        return Ok(());
    }
    let node_name = setup::node_name(&cfg);
    let backend = args.iptables_backend.unwrap_or_else(Backend::detect);
    info!(node = %node_name, %backend, "starting kproxy (iptables mode)");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (tx, rx) = engine::channel();

    // The node as the source knows it, for IPs, zone and pod CIDRs.
    let node = match &args.source {
        Some(source) => {
            let manifests = kproxy_k8s::manifests::load_path(source)
                .with_context(|| format!("reading {}", source.display()))?;
            manifests.nodes.into_iter().find(|n| n.name == node_name)
        }
        // No manifests: the API server. Its events wait in the channel for the engine.
        None => {
            let settings = crate::source::kube::settings(&cfg, args.flags.master.as_deref());
            let started =
                crate::source::kube::spawn(&runtime, &settings, node_name.clone(), tx.clone())?;
            let need_cidrs = matches!(cfg.detect_local_mode, LocalMode::NodeCidr);
            let wait = if need_cidrs {
                crate::source::kube::POD_CIDR_WAIT
            } else {
                crate::source::kube::NODE_WAIT
            };
            let node = started.wait_for_node(&node_name, wait, |n| {
                !need_cidrs || !n.pod_cidrs.is_empty()
            });
            if node.is_none() {
                warn!(node = %node_name, "no Node object from the API server in time: going on without the node's IPs, zone and pod CIDRs");
            }
            node
        }
    }
    .unwrap_or_else(|| Node {
        name: node_name.clone(),
        ..Node::default()
    });

    let host = HostFacts::detect();
    let mut families = Vec::new();
    for family in host_families(backend) {
        let iptables =
            Iptables::new(family, backend).with_context(|| format!("{family} iptables tools"))?;
        let config = setup::iptables_config(&cfg, family, &node, &host)?;
        let options = ProxierOptions {
            incremental_kind: if args.upstream_partial_syncs {
                kproxy_iptables::compile::SyncKind::Partial
            } else {
                kproxy_iptables::compile::SyncKind::Delta
            },
            ..ProxierOptions::default()
        };
        let proxier = Proxier::new(iptables, config, options);
        if let Err(e) = proxier.ensure_sysctls() {
            warn!(%family, error = %e, "cannot set route_localnet: localhost NodePorts will not work");
        }
        families.push(FamilyProxier {
            tracker: ChangeTracker::new(family, &node_name),
            proxier,
        });
    }

    let (sync_period, min_sync_period) = cfg.sync_periods();
    let health = ProxyHealthServer::new(2 * sync_period);
    let metrics = Metrics::new();
    let service_health = runtime.block_on(async {
        ServiceHealthServer::new(health_listen_addresses(&cfg, &node), health.clone())
    });
    let service_health = match service_health {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "health check node ports disabled");
            None
        }
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    runtime.block_on(start_http_servers(&cfg, &health, &metrics, shutdown_rx))?;

    let engine = Engine {
        families,
        min_sync_period,
        sync_period,
        health: health.clone(),
        service_health,
        metrics,
        interface_addresses: crate::host::interface_addresses,
    };
    let engine_thread = std::thread::Builder::new()
        .name("sync".into())
        .spawn(move || engine.run(rx))?;
    let _source = match args.source {
        Some(source) => Some(crate::source::file::spawn(source, node_name, tx.clone())?),
        None => None,
    };

    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
        Ok::<_, std::io::Error>(())
    })?;
    let _ = shutdown_tx.send(true);
    let _ = tx.send(Event::Shutdown);
    let _ = engine_thread.join();
    info!("stopped; rules stay in place");
    Ok(())
}

/// Where health-check node ports listen: the NodePort addresses' node IPs, or everywhere.
fn health_listen_addresses(cfg: &KubeProxyConfiguration, node: &Node) -> ListenAddresses {
    if cfg.node_port_addresses.is_empty() {
        return ListenAddresses::All;
    }
    let ifaces = crate::host::interface_addresses();
    let mut ips = Vec::new();
    for family in IpFamily::ALL {
        if let Ok(npa) =
            setup::nodeport_addresses(cfg, family, setup::primary_ip(cfg, family, node))
        {
            if npa.match_all() {
                return ListenAddresses::All;
            }
            ips.extend(npa.node_ips(&ifaces));
        }
    }
    ListenAddresses::Ips(ips)
}

/// `/healthz` + `/livez` and `/metrics`, on their bind addresses (empty: disabled).
async fn start_http_servers(
    cfg: &KubeProxyConfiguration,
    health: &ProxyHealthServer,
    metrics: &Metrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    if !cfg.healthz_bind_address.is_empty() {
        let addr: SocketAddr = cfg
            .healthz_bind_address
            .parse()
            .with_context(|| format!("healthzBindAddress {:?}", cfg.healthz_bind_address))?;
        let listener = kproxy_healthcheck::bind(addr)
            .with_context(|| format!("listening on {addr} for /healthz"))?;
        let server = health.clone();
        let rx = shutdown.clone();
        tokio::spawn(async move { server.serve(listener, stop(rx)).await });
        info!(%addr, "serving /healthz and /livez");
    }
    if !cfg.metrics_bind_address.is_empty() {
        let addr: SocketAddr = cfg
            .metrics_bind_address
            .parse()
            .with_context(|| format!("metricsBindAddress {:?}", cfg.metrics_bind_address))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for /metrics"))?;
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(crate::http::serve_metrics(
            listener,
            metrics,
            health,
            stop(shutdown),
        ));
        info!(%addr, "serving /metrics");
    }
    Ok(())
}
