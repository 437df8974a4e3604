//! kproxy's health-check HTTP servers: the equivalent of kube-proxy's
//! `pkg/proxy/healthcheck`, answering the same requests with the same status codes, headers
//! and bodies.
//!
//! # What it does
//!
//! - [`ProxyHealthServer`] is the proxy's own health. The proxiers report, per IP family,
//!   when a sync was requested ([`queued_update`](ProxyHealthServer::queued_update)) and when
//!   one completed ([`updated`](ProxyHealthServer::updated)); the node watcher reports the
//!   node's state ([`sync_node`](ProxyHealthServer::sync_node)).
//!   [`serve`](ProxyHealthServer::serve) answers `/healthz` (proxy healthy and node not being
//!   deleted) and `/livez` (proxy healthy) with upstream's JSON, on kube-proxy's
//!   `--healthz-bind-address` (default `0.0.0.0:10256`). The answers are counted
//!   ([`request_counts`](ProxyHealthServer::request_counts)) for the binary's
//!   `kubeproxy_proxy_healthz_total{code}` and `kubeproxy_proxy_livez_total{code}`.
//! - [`ServiceHealthServer`] opens one HTTP listener per Service with
//!   `externalTrafficPolicy: Local` on its `healthCheckNodePort`
//!   ([`sync_services`](ServiceHealthServer::sync_services)), answering 200 while the node
//!   has local ready endpoints for it ([`sync_endpoints`](ServiceHealthServer::sync_endpoints))
//!   and the proxy is healthy, 503 otherwise, so that cloud load balancers only send the
//!   Service's traffic to nodes that can serve it locally.
//! - Time is injectable ([`Clock`], [`FakeClock`]) and listeners bind any address, port 0
//!   included, so everything can be tested on loopback without sleeping.
//!
//! # What it does not do
//!
//! It decides nothing about Services or endpoints: the caller computes the health-check node
//! ports and the local ready endpoint counts (`kproxy_model::ProxyState::health_check_node_ports`
//! and `local_ready_endpoints`), resolves `--nodeport-addresses` to IPs, watches the Node,
//! turns [`ServiceHealthServer::sync_services`]'s errors into events or logs, and exports
//! the request counts with whatever metrics library it uses. No TLS, no HTTP/2.
//!
//! # Layout
//!
//! - `proxy_health`: [`ProxyHealthServer`], [`RequestCounts`].
//! - `service_health`: [`ServiceHealthServer`], [`ListenAddresses`].
//! - `clock`: [`Clock`], [`SystemClock`], [`FakeClock`], and Go's JSON time format.
//! - `net`: [`bind`] (Go's listening-socket semantics) and the HTTP/1 serving loop (hyper).
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use kproxy_healthcheck::{ListenAddresses, ProxyHealthServer, ServiceHealthServer};
//! use kproxy_model::{IpFamily, ServiceName};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The proxy's health, served on /healthz and /livez (kube-proxy: 0.0.0.0:10256 and
//! // 2 × syncPeriod).
//! let proxy = ProxyHealthServer::new(Duration::from_secs(60));
//! let listener = kproxy_healthcheck::bind("127.0.0.1:0".parse()?)?;
//! let healthz = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn({
//!     let proxy = proxy.clone();
//!     async move { proxy.serve(listener, async { let _ = stopped.await; }).await }
//! });
//!
//! // A proxier's sync loop.
//! proxy.queued_update(IpFamily::V4);
//! proxy.updated(IpFamily::V4);
//!
//! // One health check per Local Service (port 0: any free port, for the example).
//! let services = ServiceHealthServer::new(
//!     ListenAddresses::Ips(vec!["127.0.0.1".parse()?]),
//!     proxy.clone(),
//! )?;
//! let errors = services.sync_services(&BTreeMap::from([(ServiceName::new("default", "web"), 0)]));
//! assert!(errors.is_empty(), "{errors:?}");
//! services.sync_endpoints(&BTreeMap::from([(ServiceName::new("default", "web"), 2)]));
//!
//! let addr = services.local_addrs(&ServiceName::new("default", "web"))[0];
//! let mut conn = tokio::net::TcpStream::connect(addr).await?;
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").await?;
//! let mut response = String::new();
//! conn.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.contains("x-load-balancing-endpoint-weight: 2\r\n"));
//! assert!(response.ends_with("\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"));
//!
//! let mut conn = tokio::net::TcpStream::connect(healthz).await?;
//! conn.write_all(b"GET /livez HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n").await?;
//! let mut response = String::new();
//! conn.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert_eq!(proxy.request_counts().livez_200, 1);
//!
//! stop.send(()).ok();
//! server.await?;
//! # Ok(())
//! # }
//! ```

mod clock;
mod net;
mod proxy_health;
mod service_health;

use std::io;
use std::net::SocketAddr;

pub use clock::{Clock, FakeClock, SystemClock};
pub use net::bind;
pub use proxy_health::{ProxyHealthServer, RequestCounts};
pub use service_health::{ListenAddresses, ServiceHealthServer};

use kproxy_model::ServiceName;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listening socket could not be opened (see [`bind`]).
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why (typically `EADDRINUSE` or `EADDRNOTAVAIL`).
        #[source]
        source: io::Error,
    },
    /// A Service's health-check node port could not be opened on one of the addresses; it
    /// is open on none of them (upstream's `FailedToStartServiceHealthcheck` event).
    #[error("failed to start health check for service {service} on {addr}: {source}")]
    ServiceListen {
        /// The Service.
        service: ServiceName,
        /// The address (and health-check node port) that failed.
        addr: SocketAddr,
        /// Why (typically `EADDRINUSE`: something else holds the port).
        #[source]
        source: io::Error,
    },
    /// A [`ServiceHealthServer`] was made outside a Tokio runtime, which it needs to serve
    /// its listeners on.
    #[error("the service health server must be created within a Tokio runtime")]
    NoRuntime,
}
