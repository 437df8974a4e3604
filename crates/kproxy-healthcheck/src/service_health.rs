//! Health-check node ports of `externalTrafficPolicy: Local` Services (upstream
//! `service_health.go`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::HeaderValue;
use kproxy_model::ServiceName;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::net::{self, Handler, SharedListener};
use crate::proxy_health::json_response;
use crate::{Error, ProxyHealthServer};

/// Where the health-check node ports listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddresses {
    /// Every address of the node, both families (kube-proxy without `--nodeport-addresses`,
    /// or when it cannot list the node's addresses): one dual-stack wildcard socket per port.
    All,
    /// These addresses only: the node's IPs that `--nodeport-addresses` selects, resolved by
    /// the caller. A port opens one socket per address, and opens only if every one binds.
    /// An empty list opens nothing (as upstream does when no node IP matches).
    Ips(Vec<IpAddr>),
}

/// Serves one HTTP health check per Service with `externalTrafficPolicy: Local` and a
/// `healthCheckNodePort`, telling load balancers whether this node has local endpoints to
/// send the Service's traffic to (upstream `ServiceHealthServer`).
///
/// Each listener answers every request (any method, any path) with:
///
/// - status 200 when the Service has at least one local ready endpoint and the proxy is
///   healthy ([`ProxyHealthServer::is_healthy`], which ignores the node's state), else 503;
/// - headers `Content-Type: application/json`, `X-Content-Type-Options: nosniff` and
///   `X-Load-Balancing-Endpoint-Weight: <local endpoints>`;
/// - upstream's body, byte for byte: the JSON object
///   `{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":true}`
///   laid out as Go's template does, indented with tabs and without a trailing newline:
///
/// ```text
/// "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"svc\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
/// ```
///
/// The sockets are served on the Tokio runtime the server was made on; the methods are
/// synchronous and can be called from any thread. Dropping the server closes every port.
pub struct ServiceHealthServer {
    shared: Arc<Shared>,
    runtime: Handle,
}

struct Shared {
    addresses: ListenAddresses,
    proxy: ProxyHealthServer,
    services: Mutex<BTreeMap<ServiceName, Instance>>,
}

/// One open health check.
struct Instance {
    port: u16,
    endpoints: usize,
    listeners: Vec<Listening>,
}

/// One listening socket of a health check; dropping it closes the socket at once and stops
/// its task and connections.
struct Listening {
    addr: SocketAddr,
    listener: SharedListener,
    _stop: watch::Sender<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.listener.close();
        // `_stop` drops next, which wakes the accepting task and the connections.
    }
}

impl ServiceHealthServer {
    /// A server with no health check open yet, listening on `addresses`, reporting the
    /// proxy's health from `proxy`.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] when not called within a Tokio runtime.
    pub fn new(
        addresses: ListenAddresses,
        proxy: ProxyHealthServer,
    ) -> Result<ServiceHealthServer, Error> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Ok(ServiceHealthServer {
            shared: Arc::new(Shared {
                addresses,
                proxy,
                services: Mutex::new(BTreeMap::new()),
            }),
            runtime,
        })
    }

    /// Makes `services` (Service → health-check node port) the open set: closes the health
    /// checks of Services no longer in it or whose port changed, opens those of new Services
    /// (and of changed ports, with their local endpoint count back at 0), leaves the others
    /// alone.
    ///
    /// A port that fails to open does not stop the others; it is returned as an
    /// [`Error::ServiceListen`] (upstream emits a `FailedToStartServiceHealthcheck` warning
    /// event on the Service) and tried again on the next call. Port 0 binds a free port (for
    /// tests; see [`local_addrs`](Self::local_addrs)).
    #[must_use = "ports that failed to open are only reported here"]
    pub fn sync_services(&self, services: &BTreeMap<ServiceName, u16>) -> Vec<Error> {
        let mut open = self.shared.services();
        open.retain(|name, instance| {
            let keep = services.get(name) == Some(&instance.port);
            if !keep {
                tracing::debug!(service = %name, port = instance.port, "closing health check");
            }
            keep
        });
        let mut errors = Vec::new();
        for (name, &port) in services {
            if open.contains_key(name) {
                continue;
            }
            tracing::debug!(service = %name, port, "opening health check");
            match self.open(name, port) {
                Ok(listeners) => {
                    open.insert(
                        name.clone(),
                        Instance {
                            port,
                            endpoints: 0,
                            listeners,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(service = %name, port, %error, "failed to start health check");
                    errors.push(error);
                }
            }
        }
        errors
    }

    /// Records how many local ready endpoints each open Service has; open Services missing
    /// from `endpoints` have 0, entries for Services not open are ignored.
    pub fn sync_endpoints(&self, endpoints: &BTreeMap<ServiceName, usize>) {
        for (name, instance) in self.shared.services().iter_mut() {
            instance.endpoints = endpoints.get(name).copied().unwrap_or(0);
        }
    }

    /// The addresses `service`'s health check listens on (empty when it is not open).
    pub fn local_addrs(&self, service: &ServiceName) -> Vec<SocketAddr> {
        self.shared
            .services()
            .get(service)
            .map(|instance| instance.listeners.iter().map(|l| l.addr).collect())
            .unwrap_or_default()
    }

    /// Opens and serves `port` on every configured address, or on none if one fails.
    fn open(&self, name: &ServiceName, port: u16) -> Result<Vec<Listening>, Error> {
        let addrs = match &self.shared.addresses {
            ListenAddresses::All => vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)],
            ListenAddresses::Ips(ips) => ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect(),
        };
        let _runtime = self.runtime.enter();
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in addrs {
            // On error, `listeners` drops and closes whatever was opened already.
            let listener = net::listen(addr).map_err(|source| Error::ServiceListen {
                service: name.clone(),
                addr,
                source,
            })?;
            let bound = listener.local_addr().unwrap_or(addr);
            let listener = SharedListener::new(listener);
            let (stop, stopped) = watch::channel(());
            self.runtime.spawn(net::serve(
                listener.clone(),
                self.handler(name.clone()),
                stopped,
            ));
            listeners.push(Listening {
                addr: bound,
                listener,
                _stop: stop,
            });
        }
        Ok(listeners)
    }

    fn handler(&self, name: ServiceName) -> Handler {
        let shared = Arc::downgrade(&self.shared);
        Arc::new(move |_request| respond(&shared, &name))
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        // Close synchronously even if a request in flight still holds the shared state.
        self.shared.services().clear();
    }
}

impl fmt::Debug for ServiceHealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services = self.shared.services();
        f.debug_struct("ServiceHealthServer")
            .field("addresses", &self.shared.addresses)
            .field(
                "services",
                &services
                    .iter()
                    .map(|(name, i)| (name.to_string(), i.port, i.endpoints))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn services(&self) -> MutexGuard<'_, BTreeMap<ServiceName, Instance>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn respond(shared: &Weak<Shared>, name: &ServiceName) -> Response<Full<Bytes>> {
    let shared = shared.upgrade();
    let count = shared
        .as_ref()
        .and_then(|shared| Some(shared.services().get(name)?.endpoints));
    let (Some(shared), Some(count)) = (shared, count) else {
        // Upstream answers a request that races with the closing of its health check
        // with an empty 200.
        tracing::debug!(service = %name, "request for a closed health check");
        return Response::new(Full::new(Bytes::new()));
    };
    let proxy_healthy = shared.proxy.is_healthy();
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&name.namespace),
        quote(&name.name),
    );
    let mut response = json_response(count != 0 && proxy_healthy, body);
    response
        .headers_mut()
        .insert("x-load-balancing-endpoint-weight", HeaderValue::from(count));
    response
}

/// A string as Go's `%q` quotes it, for the characters Kubernetes names can hold (and JSON
/// escapes for the rest).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
