//! Socket plumbing shared by the backends and the probes: the few options `std::net` lacks
//! (`IPV6_V6ONLY` before bind, binding a client socket before connecting, a connect with a
//! deadline that reports the raw errno), done with `nix`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, SockaddrStorage, bind, connect,
    getsockopt, listen, recv, setsockopt, shutdown, socket, sockopt,
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
///
/// A port still held for a moment by a just-closed socket (a process being spawned elsewhere
/// in this program keeps copies of all descriptors until it execs) is retried for a short
/// while; there is no `SO_REUSEADDR` here, which for UDP would let two servers share a port.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = Instant::now() + Duration::from_millis(250);
    loop {
        let fd = new_socket(&addr, SockType::Datagram, true)?;
        match bind_to(&fd, addr) {
            Ok(()) => return Ok(UdpSocket::from(fd)),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks for every ICMP error to be reported on `fd` (`IP_RECVERR` / `IPV6_RECVERR`).
///
/// Without it, a connected UDP socket ignores "soft" errors such as host unreachable, and a
/// TCP socket in `SYN_SENT` keeps an ICMP error that arrives while `connect` still holds the
/// socket (over a veth it arrives that fast) only as a soft error, retrying the SYN a second
/// later. With it the error is queued and wakes `poll`, and `SO_ERROR` hands it over.
fn report_icmp_errors(fd: &OwnedFd, target: &SocketAddr) -> io::Result<()> {
    match target {
        SocketAddr::V4(_) => setsockopt(fd, sockopt::Ipv4RecvErr, &true)?,
        SocketAddr::V6(_) => setsockopt(fd, sockopt::Ipv6RecvErr, &true)?,
    }
    Ok(())
}

/// A blocking UDP socket bound to `source` (or the wildcard of the target's family) that
/// reports every ICMP error.
pub(crate) fn udp_client(source: Option<SocketAddr>, target: SocketAddr) -> io::Result<UdpSocket> {
    let fd = new_socket(&target, SockType::Datagram, false)?;
    report_icmp_errors(&fd, &target)?;
    if let Some(src) = source {
        // The previous probe's socket on this fixed port may still be open for a moment: a
        // process being spawned anywhere in this program holds a copy of every descriptor
        // until it execs.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
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
    report_icmp_errors(&fd, &target).map_err(ConnectError::Io)?;
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
            let connected = match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => return Err(ConnectError::Timeout),
                Ok(_) => fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLOUT)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ConnectError::Io(e.into())),
            };
            // SO_ERROR gives the hard error, or else the soft one (an ICMP error the kernel
            // would only act on at the next SYN).
            match getsockopt(&fd, sockopt::SocketError) {
                Ok(0) if connected => break,
                Ok(0) => {
                    // Woken by the error queue without an error to report: clear it, wait on.
                    let mut buf = [0u8; 256];
                    let _ = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_ERRQUEUE);
                }
                Ok(err) => return Err(ConnectError::Errno(Errno::from_raw(err))),
                Err(e) => return Err(ConnectError::Io(e.into())),
            }
        },
        Err(e) => return Err(ConnectError::Errno(e)),
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

/// Makes a listener stop listening now, even if a copy of its descriptor lives on for a
/// moment in a process being spawned: connections are refused from here on.
pub(crate) fn stop_listening(listener: &TcpListener) {
    let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
}

/// Makes a UDP server socket deaf to clients now, even if a copy of its descriptor lives on
/// for a moment: connected to its own port on loopback, it matches no other sender, so the
/// kernel answers clients with ICMP port unreachable.
pub(crate) fn stop_receiving(socket: &UdpSocket) {
    if let Ok(local) = socket.local_addr() {
        let lo: IpAddr = match local {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        let _ = socket.connect(SocketAddr::new(lo, local.port()));
    }
}
