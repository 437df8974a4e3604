//! Socket plumbing shared by the backends and the probes: the few options `std::net` lacks
//! (`IPV6_V6ONLY` before bind, binding a client socket before connecting, a connect with a
//! deadline that reports the raw errno), done with `nix`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, connect, getsockopt, listen,
    setsockopt, socket, sockopt,
};

fn family(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn new_socket(addr: &SocketAddr, ty: SockType, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket(family(addr), ty, flags, None)?;
    if addr.is_ipv6() {
        // An IPv6 wildcard must not also claim the IPv4 port: tests bind both families.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    Ok(fd)
}

fn bind_to(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("bind {addr}: {e}")))
}

/// A nonblocking TCP listener on `addr` (`SO_REUSEADDR`, IPv6 sockets are v6-only).
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = new_socket(&addr, SockType::Stream, true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind_to(&fd, addr)?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

/// A nonblocking UDP socket bound to `addr` (IPv6 sockets are v6-only).
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let fd = new_socket(&addr, SockType::Datagram, true)?;
    bind_to(&fd, addr)?;
    Ok(UdpSocket::from(fd))
}

/// A blocking UDP socket bound to `source` (or the wildcard of the target's family).
pub(crate) fn udp_client(source: Option<SocketAddr>, target: SocketAddr) -> io::Result<UdpSocket> {
    let fd = new_socket(&target, SockType::Datagram, false)?;
    if let Some(src) = source {
        bind_to(&fd, src)?;
    }
    Ok(UdpSocket::from(fd))
}

/// Why a TCP connect did not complete.
pub(crate) enum ConnectError {
    /// The deadline passed with the handshake still pending.
    Timeout,
    /// The kernel reported this errno (from `connect` or from `SO_ERROR`).
    Errno(Errno),
    /// Something else went wrong (socket creation, bind, poll).
    Io(io::Error),
}

/// Connects to `target` from `source` (if given), giving up at `deadline`. The returned stream
/// is blocking.
pub(crate) fn tcp_connect(
    source: Option<SocketAddr>,
    target: SocketAddr,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let fd = new_socket(&target, SockType::Stream, true).map_err(ConnectError::Io)?;
    if let Some(src) = source {
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ConnectError::Io(e.into()))?;
        bind_to(&fd, src).map_err(ConnectError::Io)?;
    }
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(target)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectError::Timeout);
            }
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => return Err(ConnectError::Timeout),
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ConnectError::Io(e.into())),
            }
        },
        Err(e) => return Err(ConnectError::Errno(e)),
    }
    match getsockopt(&fd, sockopt::SocketError) {
        Ok(0) => {}
        Ok(err) => return Err(ConnectError::Errno(Errno::from_raw(err))),
        Err(e) => return Err(ConnectError::Io(e.into())),
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false).map_err(ConnectError::Io)?;
    Ok(stream)
}

/// A poll timeout of `d` rounded up to whole milliseconds (so a short wait is never zero).
pub(crate) fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}
