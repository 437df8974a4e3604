//! Listening sockets and the HTTP/1 serving loop both servers share.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// What both servers answer a request with.
pub(crate) type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Go's cap on the listen backlog (the kernel further caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 65_535;

/// Opens a listening TCP socket the way Go's `net.Listen("tcp", addr)` does, which is what
/// kube-proxy's health servers use.
///
/// - An unspecified address (`0.0.0.0` or `::`) listens on both families: one IPv6 socket with
///   `IPV6_V6ONLY` off, falling back to an IPv4 socket where IPv6 sockets cannot be made.
/// - `SO_REUSEADDR` is set, so a port whose previous listener was just closed can be reopened
///   at once.
/// - Port 0 picks a free port; read it back with [`TcpListener::local_addr`].
///
/// Must be called within a Tokio runtime (the socket is registered with its reactor).
///
/// # Errors
///
/// [`Error::Listen`] if the socket cannot be made, bound or put in the listening state
/// (typically `EADDRINUSE` or `EADDRNOTAVAIL`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    listen(addr).map_err(|source| Error::Listen { addr, source })
}

pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.ip().is_unspecified() {
        match dual_stack_socket() {
            Ok(socket) => {
                socket.set_reuse_address(true)?;
                socket.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port()).into())?;
                socket
            }
            Err(e) if addr.is_ipv6() => return Err(e),
            Err(_) => plain_socket(addr)?,
        }
    } else {
        plain_socket(addr)?
    };
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

fn dual_stack_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    Ok(socket)
}

fn plain_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listener that its owner can close synchronously while a task accepts on it: closing
/// drops the socket at once (later connection attempts are refused and the port can be
/// bound again right away), whatever the accepting task is doing.
#[derive(Clone)]
pub(crate) struct SharedListener(Arc<Mutex<Option<TcpListener>>>);

impl SharedListener {
    pub(crate) fn new(listener: TcpListener) -> SharedListener {
        SharedListener(Arc::new(Mutex::new(Some(listener))))
    }

    /// Closes the socket. The accepting task is not woken by this: pair it with a stop
    /// signal.
    pub(crate) fn close(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// The next connection, or `None` once closed.
    async fn accept(&self) -> Option<io::Result<TcpStream>> {
        poll_fn(|cx| {
            let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                None => Poll::Ready(None),
                Some(listener) => listener
                    .poll_accept(cx)
                    .map(|r| Some(r.map(|(stream, _)| stream))),
            }
        })
        .await
    }
}

/// Accepts connections and serves `handler` on each until `stop`'s sender is dropped (or
/// sends) or the listener is closed. Connections still open then are dropped, as Go's
/// `http.Server.Close` does.
pub(crate) async fn serve(listener: SharedListener, handler: Handler, stop: watch::Receiver<()>) {
    // Go's http.Server retries failed accepts after 5 ms, doubling up to 1 s.
    let mut backoff = Duration::ZERO;
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopping.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                backoff = Duration::ZERO;
                tokio::spawn(connection(stream, handler.clone(), stop.clone()));
            }
            Some(Err(e)) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                tracing::warn!(error = %e, retry_in = ?backoff, "health check server: accept failed");
                tokio::select! {
                    _ = stopping.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

async fn connection(stream: TcpStream, handler: Handler, mut stop: watch::Receiver<()>) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = handler(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "health check server: connection error");
            }
        }
        _ = stop.changed() => {}
    }
}
