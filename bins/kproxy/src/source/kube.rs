//! The Kubernetes API server: Services, EndpointSlices and this node's Node, watched with
//! [`kproxy_k8s::watch`], as the engine's [`Event`]s. The daemon's source when `--source`
//! is not given.

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use kproxy_k8s::watch::{self, ClientSettings, WatchEvent};
use kproxy_model::Node;
use tracing::{debug, info, warn};

use crate::config::KubeProxyConfiguration;
use crate::engine::Event;

/// How long [`Started::wait_for_node`] waits for the Node object (kube-proxy waits as
/// long before it gives up on the node's IPs).
pub const NODE_WAIT: Duration = Duration::from_secs(30);
/// How long it waits for pod CIDRs when `detectLocalMode: NodeCIDR` needs them (kube-proxy
/// waits as long for the allocator to assign them).
pub const POD_CIDR_WAIT: Duration = Duration::from_secs(300);

/// The client settings from the configuration and `--master`.
pub fn settings(cfg: &KubeProxyConfiguration, master: Option<&str>) -> ClientSettings {
    let client = &cfg.client_connection;
    let mut s = ClientSettings::new()
        .kubeconfig(client.kubeconfig.as_str())
        .content_type(client.content_type.as_str())
        .rate_limit(client.qps, client.burst);
    if let Some(m) = master {
        s = s.master(m);
    }
    s
}

/// The running source: its Node updates, for the daemon's start-up.
pub struct Started {
    nodes: Receiver<Node>,
}

impl Started {
    /// The Node object of this node, waiting up to `timeout` for the first one that
    /// `ready` accepts; the last one seen (or none) when the time is up.
    pub fn wait_for_node(
        &self,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&Node) -> bool,
    ) -> Option<Node> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        info!(
            node = name,
            timeout_s = timeout.as_secs(),
            "waiting for the node's Node object"
        );
        while let Ok(node) = self
            .nodes
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if ready(&node) {
                info!(node = name, ips = ?node.internal_ips, zone = ?node.zone, pod_cidrs = ?node.pod_cidrs, "node found");
                return Some(node);
            }
            last = Some(node);
        }
        last
    }
}

/// Connects to the API server and starts watching on `runtime`, sending every batch of
/// changes to `events` as an [`Event::Batch`] (revisions 1, 2, …) and [`Event::Synced`]
/// once the initial lists are in. Fails only if the client cannot be built (bad
/// kubeconfig, no in-cluster configuration); an unreachable server is retried forever.
pub fn spawn(
    runtime: &tokio::runtime::Runtime,
    settings: &ClientSettings,
    node_name: String,
    events: Sender<Event>,
) -> anyhow::Result<Started> {
    let client = runtime
        .block_on(watch::client(settings))
        .context("Kubernetes API client")?;
    let (node_tx, nodes) = std::sync::mpsc::channel();
    let mut revision = 0;
    let sink = move |batch: Vec<WatchEvent>| {
        let mut out = Vec::with_capacity(batch.len());
        let mut synced = false;
        for ev in batch {
            match ev {
                WatchEvent::ServiceApplied(s) => out.push(Event::Service(s)),
                WatchEvent::ServiceDeleted { namespace, name } => {
                    out.push(Event::ServiceDeleted { namespace, name })
                }
                WatchEvent::SliceApplied(s) => out.push(Event::Slice(s)),
                WatchEvent::SliceDeleted { namespace, name } => {
                    out.push(Event::SliceDeleted { namespace, name })
                }
                WatchEvent::NodeApplied(n) => {
                    // Only start-up listens; later the receiver is gone.
                    let _ = node_tx.send(n.clone());
                    out.push(Event::Node(n));
                }
                WatchEvent::NodeDeleted { name } => {
                    warn!(node = %name, "this node's Node object was deleted; keeping its last state");
                }
                WatchEvent::Synced => synced = true,
                other => debug!(?other, "unknown watch event"),
            }
        }
        if !out.is_empty() {
            revision += 1;
            debug!(revision, changes = out.len(), "API changes");
            let batch = Event::Batch {
                revision,
                events: out,
            };
            if events.send(batch).is_err() {
                return false;
            }
        }
        !synced || events.send(Event::Synced).is_ok()
    };
    runtime.spawn(async move { watch::run(client, &node_name, sink).await });
    Ok(Started { nodes })
}
