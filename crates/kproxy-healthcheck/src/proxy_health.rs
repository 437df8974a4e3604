//! The proxy's own health: `/healthz` and `/livez` (upstream `proxy_health.go`).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Request, Response, StatusCode};
use kproxy_model::{IpFamily, Node};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock, go_json_time};
use crate::net::{self, Handler, SharedListener};

/// The proxy's health, shared by the proxiers (which report their syncs), the node watcher,
/// the `/healthz` + `/livez` HTTP server and [`ServiceHealthServer`](crate::ServiceHealthServer)
/// (upstream `ProxyHealthServer`).
///
/// Cheap to clone: clones share one state.
///
/// The proxier of an IP family is *late* when an update has been queued
/// ([`queued_update`](Self::queued_update)) for `health_timeout` or longer without a
/// completed sync ([`updated`](Self::updated)) since. The proxy is healthy when no proxier
/// is late; a family that has never completed a sync is not considered at all (the proxy is
/// healthy while starting up). kube-proxy uses `2 × syncPeriod` as `health_timeout`.
///
/// `/healthz` answers 200 when the proxy is healthy *and* the node is eligible (see
/// [`sync_node`](Self::sync_node)), else 503; `/livez` answers 200 when the proxy is healthy,
/// whatever the node's state, else 503. Any other path answers 404.
#[derive(Clone)]
pub struct ProxyHealthServer {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    health_timeout: Duration,
    state: Mutex<State>,
    healthz_200: AtomicU64,
    healthz_503: AtomicU64,
    livez_200: AtomicU64,
    livez_503: AtomicU64,
}

struct State {
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_pending_queued: BTreeMap<IpFamily, Instant>,
    node_eligible: bool,
}

/// How many `/healthz` and `/livez` requests were answered, by status code: the values of
/// upstream's `kubeproxy_proxy_healthz_total{code}` and `kubeproxy_proxy_livez_total{code}`
/// counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `/healthz` answered 200.
    pub healthz_200: u64,
    /// `/healthz` answered 503.
    pub healthz_503: u64,
    /// `/livez` answered 200.
    pub livez_200: u64,
    /// `/livez` answered 503.
    pub livez_503: u64,
}

/// One evaluation of the proxiers' health (upstream `ProxyHealth`).
struct Health {
    healthy: bool,
    last_updated: Option<SystemTime>,
    current_time: SystemTime,
    /// Per family that has completed a sync: its last update and whether it is healthy.
    status: BTreeMap<IpFamily, (SystemTime, bool)>,
}

impl ProxyHealthServer {
    /// A health state on the real clock; `health_timeout` is how long a queued update may
    /// stay pending before the proxy is unhealthy.
    pub fn new(health_timeout: Duration) -> ProxyHealthServer {
        ProxyHealthServer::with_clock(health_timeout, Arc::new(SystemClock))
    }

    /// As [`new`](Self::new), on the given clock (a [`FakeClock`](crate::FakeClock) in
    /// tests).
    pub fn with_clock(health_timeout: Duration, clock: Arc<dyn Clock>) -> ProxyHealthServer {
        ProxyHealthServer {
            inner: Arc::new(Inner {
                clock,
                health_timeout,
                state: Mutex::new(State {
                    last_updated: BTreeMap::new(),
                    oldest_pending_queued: BTreeMap::new(),
                    // Eligible while starting up, until a node sync says otherwise.
                    node_eligible: true,
                }),
                healthz_200: AtomicU64::new(0),
                healthz_503: AtomicU64::new(0),
                livez_200: AtomicU64::new(0),
                livez_503: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the proxier of `family` has received a change it has not yet synced.
    /// Only the oldest pending change counts: a later call before [`updated`](Self::updated)
    /// does not move the deadline.
    pub fn queued_update(&self, family: IpFamily) {
        let now = self.inner.clock.monotonic();
        self.state()
            .oldest_pending_queued
            .entry(family)
            .or_insert(now);
    }

    /// Records that the proxier of `family` has just completed a sync: nothing of it is
    /// pending any more.
    pub fn updated(&self, family: IpFamily) {
        let now = self.inner.clock.now();
        let mut state = self.state();
        state.oldest_pending_queued.remove(&family);
        state.last_updated.insert(family, now);
    }

    /// Records the node's state for `/healthz`: the node is *eligible* unless it is being
    /// deleted (`deletionTimestamp` set) or carries the cluster autoscaler's
    /// `ToBeDeletedByClusterAutoscaler` taint. Until the first call the node counts as
    /// eligible.
    pub fn sync_node(&self, node: &Node) {
        self.state().node_eligible = !node.deleting && !node.to_be_deleted_taint;
    }

    /// Whether the node is eligible (see [`sync_node`](Self::sync_node)).
    pub fn node_eligible(&self) -> bool {
        self.state().node_eligible
    }

    /// Whether no proxier is late, ignoring the node's state: what `/livez` reports and what
    /// service health checks take into account.
    pub fn is_healthy(&self) -> bool {
        self.health().healthy
    }

    /// The counts of `/healthz` and `/livez` answers so far, for the binary's metrics.
    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            healthz_200: self.inner.healthz_200.load(Ordering::Relaxed),
            healthz_503: self.inner.healthz_503.load(Ordering::Relaxed),
            livez_200: self.inner.livez_200.load(Ordering::Relaxed),
            livez_503: self.inner.livez_503.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> Health {
        let state = self.state();
        let current_time = self.inner.clock.now();
        let now = self.inner.clock.monotonic();
        let mut health = Health {
            healthy: true,
            last_updated: state.last_updated.values().max().copied(),
            current_time,
            status: BTreeMap::new(),
        };
        for (&family, &last_updated) in &state.last_updated {
            let late = state
                .oldest_pending_queued
                .get(&family)
                .is_some_and(|&queued| {
                    now.saturating_duration_since(queued) >= self.inner.health_timeout
                });
            health.healthy &= !late;
            health.status.insert(family, (last_updated, !late));
        }
        health
    }

    /// Serves `/healthz` and `/livez` on `listener` until `shutdown` completes; then stops
    /// accepting, drops the connections still open and returns.
    ///
    /// Open the listener with [`bind`](crate::bind) for kube-proxy's socket semantics
    /// (`0.0.0.0:10256` listens on both families). Serving several addresses is calling this
    /// once per listener, on clones.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let this = self.clone();
        let handler: Handler = Arc::new(move |request| this.respond(request));
        let (stop, stopped) = watch::channel(());
        tokio::select! {
            () = net::serve(SharedListener::new(listener), handler, stopped) => {}
            () = shutdown => {}
        }
        drop(stop);
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/healthz" => self.respond_healthz(),
            "/livez" => self.respond_livez(),
            _ => not_found(),
        }
    }

    fn respond_healthz(&self) -> Response<Full<Bytes>> {
        let mut health = self.health();
        let node_eligible = self.node_eligible();
        let ok = health.healthy && node_eligible;
        self.count(ok, &self.inner.healthz_200, &self.inner.healthz_503);
        if ok {
            // For compatibility with old releases, where lastUpdated was the last time the
            // sync loop ran even when nothing changed, a healthy proxy reports "now".
            health.last_updated = Some(self.inner.clock.now());
        }
        json_response(ok, health.to_json(Some(node_eligible)))
    }

    fn respond_livez(&self) -> Response<Full<Bytes>> {
        let mut health = self.health();
        let ok = health.healthy;
        self.count(ok, &self.inner.livez_200, &self.inner.livez_503);
        if ok {
            health.last_updated = Some(self.inner.clock.now());
        }
        json_response(ok, health.to_json(None))
    }

    fn count(&self, ok: bool, ok_counter: &AtomicU64, unavailable_counter: &AtomicU64) {
        let counter = if ok { ok_counter } else { unavailable_counter };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for ProxyHealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("ProxyHealthServer")
            .field("health_timeout", &self.inner.health_timeout)
            .field("last_updated", &state.last_updated)
            .field("pending", &state.oldest_pending_queued.keys())
            .field("node_eligible", &state.node_eligible)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Go's `json.Marshal` of upstream's `ProxyHealth`: fields in declaration order,
    /// `nodeEligible` only for `/healthz`, `status` omitted when empty, its keys sorted.
    fn to_json(&self, node_eligible: Option<bool>) -> String {
        let mut out = format!(
            r#"{{"lastUpdated":"{}","currentTime":"{}""#,
            go_json_time(self.last_updated),
            go_json_time(Some(self.current_time)),
        );
        if let Some(eligible) = node_eligible {
            let _ = write!(out, r#","nodeEligible":{eligible}"#);
        }
        let _ = write!(out, r#","healthy":{}"#, self.healthy);
        if !self.status.is_empty() {
            out.push_str(r#","status":{"#);
            for (i, (family, (last_updated, healthy))) in self.status.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#""{family}":{{"lastUpdated":"{}","healthy":{healthy}}}"#,
                    go_json_time(Some(*last_updated)),
                );
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// A JSON answer with upstream's headers: 200 when `ok`, else 503.
pub(crate) fn json_response(ok: bool, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Go's `http.NotFound`, which its `ServeMux` answers unknown paths with.
fn not_found() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
