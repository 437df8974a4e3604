//! The Kubernetes API source: Services, EndpointSlices and this node's Node, watched on
//! an API server and converted to kproxy's model (feature `watch`, on by default).
//!
//! [`run`] starts three kube-runtime [watchers](kube_runtime::watcher()), the ones
//! kube-proxy's informers correspond to:
//!
//! - `v1` Services and `discovery.k8s.io/v1` EndpointSlices in all namespaces, with
//!   kube-proxy's label selector [`PROXIED_LABEL_SELECTOR`]
//!   (objects labelled `service.kubernetes.io/service-proxy-name` or
//!   `service.kubernetes.io/headless` are never seen);
//! - `v1` Nodes with the field selector `metadata.name=<node>`.
//!
//! Every object is converted with [`convert`](crate::convert) (its [`Warning`](crate::Warning)s
//! are logged with `tracing` at `warn`, once per object until they change), and what changed
//! for the consumer is handed to a [`Sink`] as a batch of [`WatchEvent`]s.
//!
//! # Guarantees
//!
//! - **Initial sync.** The first [`WatchEvent::Synced`] comes once the initial lists of
//!   all three kinds are complete, at the end of the batch that completes the last one.
//!   It is sent once.
//! - **Only changes.** The source keeps the last model value it sent per object and sends
//!   an `…Applied` event only when the converted object differs (a Node's heartbeat or an
//!   annotation kproxy does not read sends nothing). An object that stops being proxied
//!   (relabelled, or no longer convertible) is reported deleted.
//! - **Re-lists lose no deletes.** When a watch cannot resume (`410 Gone`: the resource
//!   version is too old, or a list's continue token expired), kube-runtime lists again
//!   (`Init`, `InitApply`…, `InitDone`). The source collects the new list and, at
//!   `InitDone`, sends a deletion for every object it had sent that the list no longer
//!   has, and an apply for every new or changed one, in one batch. A delete that happened
//!   while the watch was broken is thus delivered.
//! - **Outages.** Errors (connection refused, dropped streams, 5xx) are logged, and each
//!   watcher retries with kube-runtime's default backoff (0.8 s doubling to 30 s, with
//!   jitter; reset after 2 minutes without errors). Nothing is sent because of an error:
//!   in particular never a deletion, so a proxier keeps its rules through an outage. When
//!   the server is back, the watch resumes from the last resource version (or re-lists,
//!   as above).
//! - **Bad objects** cost at most themselves (or the field, port or endpoint that is
//!   wrong), never the other objects.
//!
//! # Settings kube-proxy has and this source does not need
//!
//! `configSyncPeriod` (the informers' resync period) replays the informer cache to the
//! handlers without asking the API server anything; with this source every object is
//! already delivered exactly when it changes, so there is nothing to replay. For
//! `clientConnection` see [`ClientSettings`].
//!
//! # Example
//!
//! ```no_run
//! use kproxy_k8s::watch::{self, ClientSettings, WatchEvent};
//!
//! # async fn example() -> Result<(), watch::Error> {
//! let settings = ClientSettings::new()
//!     .kubeconfig("/var/lib/kube-proxy/kubeconfig.conf")
//!     .master("https://10.0.0.1:6443");
//! let client = watch::client(&settings).await?;
//! watch::run(client, "node-a", |batch: Vec<WatchEvent>| {
//!     for event in batch {
//!         match event {
//!             WatchEvent::ServiceApplied(svc) => println!("service {}/{}", svc.namespace, svc.name),
//!             WatchEvent::SliceApplied(slice) => {
//!                 println!("slice {} (trigger {:?})", slice.name, slice.trigger_time)
//!             }
//!             WatchEvent::Synced => println!("initial state complete"),
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     true // keep watching; false stops `run`
//! })
//! .await;
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::Api;
use kube_runtime::WatchStreamExt;
use kube_runtime::watcher;
use tracing::{debug, info, warn};

use crate::convert::PROXIED_LABEL_SELECTOR;

mod client;
mod store;

pub use client::{ClientSettings, client, client_config};
pub use kube::Client;

use store::{Nodes, Services, Slices, Store};

/// A change the consumer must apply, in kproxy's model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A Service was added, or changed in a way its model shows.
    ServiceApplied(kproxy_model::Service),
    /// A Service the source had sent is gone (deleted, no longer proxied, or missing from
    /// a re-list).
    ServiceDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An EndpointSlice was added or changed (its
    /// [`trigger_time`](kproxy_model::EndpointSlice::trigger_time) carries the
    /// `endpoints.kubernetes.io/last-change-trigger-time` annotation).
    SliceApplied(kproxy_model::EndpointSlice),
    /// An EndpointSlice the source had sent is gone.
    SliceDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// This node's Node object was added or changed.
    NodeApplied(kproxy_model::Node),
    /// This node's Node object was deleted.
    NodeDeleted {
        /// Its name.
        name: String,
    },
    /// The initial lists of all three kinds are complete (sent once).
    Synced,
}

/// Where the source hands its events: one batch per watcher event (one object change, or
/// a whole re-list). Returns `false` when the consumer is gone, which stops [`run`].
///
/// Implemented by closures `FnMut(Vec<WatchEvent>) -> bool`, by
/// `std::sync::mpsc::Sender<Vec<WatchEvent>>` and by
/// `tokio::sync::mpsc::UnboundedSender<Vec<WatchEvent>>`.
pub trait Sink: Send {
    /// Delivers one non-empty batch.
    fn send(&mut self, batch: Vec<WatchEvent>) -> bool;
}

impl<F: FnMut(Vec<WatchEvent>) -> bool + Send> Sink for F {
    fn send(&mut self, batch: Vec<WatchEvent>) -> bool {
        self(batch)
    }
}

impl Sink for std::sync::mpsc::Sender<Vec<WatchEvent>> {
    fn send(&mut self, batch: Vec<WatchEvent>) -> bool {
        std::sync::mpsc::Sender::send(self, batch).is_ok()
    }
}

impl Sink for tokio::sync::mpsc::UnboundedSender<Vec<WatchEvent>> {
    fn send(&mut self, batch: Vec<WatchEvent>) -> bool {
        tokio::sync::mpsc::UnboundedSender::send(self, batch).is_ok()
    }
}

/// Why an API client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor a master URL was given, and this is not a pod with a
    /// service account.
    #[error("in-cluster configuration: {0} (give --kubeconfig or --master outside a cluster)")]
    InCluster(#[source] kube::config::InClusterError),
    /// `--master` is not an http(s) URL.
    #[error("invalid master URL {url:?}: {reason}")]
    InvalidMaster {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS settings, credentials).
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
}

/// One watcher's item (boxed: the objects are large and of very different sizes).
type Item<K> = Box<Result<watcher::Event<K>, watcher::Error>>;

/// One watcher's item, tagged with its kind.
enum Raw {
    Service(Item<core::Service>),
    Slice(Item<discovery::EndpointSlice>),
    Node(Item<core::Node>),
}

/// Logs a watcher error: the watcher retries by itself, after a backoff.
fn log_error(kind: &str, err: &watcher::Error) {
    match err {
        // A 410 is the normal way out of a too-old watch: a re-list follows.
        watcher::Error::WatchError(status) if status.code == 410 => {
            info!(kind, reason = %status.message, "watch expired; re-listing");
        }
        _ => warn!(kind, error = %err, "watch failed; retrying with backoff"),
    }
}

/// Watches Services, EndpointSlices and the Node named `node_name` on `client`'s API
/// server and hands the changes to `sink` (see the [module documentation](self) for what
/// is sent when). Runs until `sink` returns `false`; errors are retried forever.
pub async fn run(client: Client, node_name: &str, mut sink: impl Sink) {
    let labels = watcher::Config::default().labels(PROXIED_LABEL_SELECTOR);
    let services = watcher(Api::<core::Service>::all(client.clone()), labels.clone())
        .default_backoff()
        .map(|r| Raw::Service(Box::new(r)));
    let slices = watcher(Api::<discovery::EndpointSlice>::all(client.clone()), labels)
        .default_backoff()
        .map(|r| Raw::Slice(Box::new(r)));
    let nodes = watcher(
        Api::<core::Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    )
    .default_backoff()
    .map(|r| Raw::Node(Box::new(r)));
    let events = futures::stream::select(services, futures::stream::select(slices, nodes));
    let mut events = std::pin::pin!(events);

    let mut services = Store::<Services>::new(None);
    let mut slices = Store::<Slices>::new(None);
    let mut node = Store::<Nodes>::new(Some(node_name.to_owned()));
    let mut synced = false;
    info!(
        node = node_name,
        "watching Services, EndpointSlices and the Node"
    );
    while let Some(raw) = events.next().await {
        let mut batch = Vec::new();
        match raw {
            Raw::Service(r) => match *r {
                Ok(ev) => services.handle(ev, &mut batch),
                Err(e) => log_error("Service", &e),
            },
            Raw::Slice(r) => match *r {
                Ok(ev) => slices.handle(ev, &mut batch),
                Err(e) => log_error("EndpointSlice", &e),
            },
            Raw::Node(r) => match *r {
                Ok(ev) => node.handle(ev, &mut batch),
                Err(e) => log_error("Node", &e),
            },
        }
        if !synced && services.listed() && slices.listed() && node.listed() {
            synced = true;
            batch.push(WatchEvent::Synced);
            info!(
                services = services.len(),
                slices = slices.len(),
                node_found = node.len() == 1,
                "initial lists complete"
            );
            if node.len() == 0 {
                warn!(node = node_name, "no Node object with this node's name");
            }
        }
        if batch.is_empty() {
            continue;
        }
        debug!(events = batch.len(), "sending a batch");
        if !sink.send(batch) {
            info!("watch source stopping: its consumer is gone");
            return;
        }
    }
}
