//! Backend servers that answer with their identity and the peer address they saw.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::Netns;
use crate::sock;

/// Which protocols a [`Backend`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP on the same addresses and ports.
    Both,
}

impl Protocols {
    fn tcp(self) -> bool {
        matches!(self, Protocols::Tcp | Protocols::Both)
    }
    fn udp(self) -> bool {
        matches!(self, Protocols::Udp | Protocols::Both)
    }
}

#[derive(Debug, Default)]
struct Counters {
    tcp: AtomicU64,
    udp: AtomicU64,
}

/// A TCP and/or UDP server inside a namespace that answers every client with one line,
/// `"<name> <peer>\n"`, where `<peer>` is the client address the server saw (`1.2.3.4:5678` or
/// `[fd00::1]:5678`).
///
/// On TCP it writes the line right after `accept` and closes the connection (it never reads);
/// on UDP it replies to each datagram, whatever it holds, from the address it was sent to (so
/// bind specific addresses rather than wildcards when the namespace has several addresses of a
/// family). The peer tells a test whether traffic was masqueraded: it is the client's own
/// address, or the node's.
///
/// All sockets are served by one thread, which the guard stops and joins on drop; after that
/// the sockets are closed and the ports free again.
#[derive(Debug)]
pub struct Backend {
    name: String,
    tcp_addrs: Vec<SocketAddr>,
    udp_addrs: Vec<SocketAddr>,
    counters: Arc<Counters>,
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend called `name` in `ns`, serving TCP and UDP on every address of `addrs`.
    ///
    /// A port of 0 picks a free port (the same one for TCP and UDP); [`Backend::tcp_addrs`] and
    /// [`Backend::udp_addrs`] tell which. `name` must be non-empty, without whitespace, and not
    /// start with `<` (kept for the outcome keys of a [`Histogram`](crate::Histogram)).
    pub fn start(ns: &Netns, name: &str, addrs: &[SocketAddr]) -> io::Result<Backend> {
        Backend::start_with(ns, name, addrs, Protocols::Both)
    }

    /// Like [`Backend::start`], for TCP only.
    pub fn start_tcp(ns: &Netns, name: &str, addrs: &[SocketAddr]) -> io::Result<Backend> {
        Backend::start_with(ns, name, addrs, Protocols::Tcp)
    }

    /// Like [`Backend::start`], for UDP only.
    pub fn start_udp(ns: &Netns, name: &str, addrs: &[SocketAddr]) -> io::Result<Backend> {
        Backend::start_with(ns, name, addrs, Protocols::Udp)
    }

    /// Starts a backend serving `protocols` on every address of `addrs`; see [`Backend::start`].
    pub fn start_with(
        ns: &Netns,
        name: &str,
        addrs: &[SocketAddr],
        protocols: Protocols,
    ) -> io::Result<Backend> {
        if name.is_empty() || name.starts_with('<') || name.chars().any(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backend name {name:?} must be non-empty, without whitespace, \
                     and not start with '<'"
                ),
            ));
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a backend needs at least one address",
            ));
        }
        let wanted = addrs.to_vec();
        let (listeners, udps) = ns.enter(move || bind_all(&wanted, protocols))??;
        let tcp_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let udp_addrs = udps
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = UnixStream::pair()?;
        let server = Server {
            name: name.to_owned(),
            listeners,
            udps,
            counters: counters.clone(),
            stop: stop_rx,
        };
        let thread = ns.spawn(move || server.run())?;
        Ok(Backend {
            name: name.to_owned(),
            tcp_addrs,
            udp_addrs,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The name this backend answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses it listens on for TCP (ports resolved).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The addresses it receives UDP on (ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// TCP connections answered so far.
    pub fn tcp_served(&self) -> u64 {
        self.counters.tcp.load(Ordering::SeqCst)
    }

    /// UDP datagrams answered so far.
    pub fn udp_served(&self) -> u64 {
        self.counters.udp.load(Ordering::SeqCst)
    }

    /// TCP connections plus UDP datagrams answered so far.
    pub fn served(&self) -> u64 {
        self.tcp_served() + self.udp_served()
    }

    /// Sets both counters back to zero.
    pub fn reset_counters(&self) {
        self.counters.tcp.store(0, Ordering::SeqCst);
        self.counters.udp.store(0, Ordering::SeqCst);
    }

    /// Stops serving and closes every socket; the same as dropping the guard, but reports a
    /// panic of the server thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        // Closing our end of the pair wakes the server's poll.
        drop(self.stop.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other(format!("backend {} panicked", self.name))),
            None => Ok(()),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Binds every address for the requested protocols, in the calling thread's namespace.
fn bind_all(
    addrs: &[SocketAddr],
    protocols: Protocols,
) -> io::Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
    let mut listeners = Vec::new();
    let mut udps = Vec::new();
    for &addr in addrs {
        if addr.port() == 0 && protocols == Protocols::Both {
            // Find a port free for both protocols.
            let mut last = None;
            for _ in 0..20 {
                let l = sock::tcp_listener(addr)?;
                let port = l.local_addr()?.port();
                match sock::udp_socket(SocketAddr::new(addr.ip(), port)) {
                    Ok(u) => {
                        listeners.push(l);
                        udps.push(u);
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
            continue;
        }
        if protocols.tcp() {
            listeners.push(sock::tcp_listener(addr)?);
        }
        if protocols.udp() {
            udps.push(sock::udp_socket(addr)?);
        }
    }
    Ok((listeners, udps))
}

struct Server {
    name: String,
    listeners: Vec<TcpListener>,
    udps: Vec<UdpSocket>,
    counters: Arc<Counters>,
    stop: UnixStream,
}

impl Server {
    fn run(self) {
        let n_tcp = self.listeners.len();
        loop {
            let mut ready = Vec::with_capacity(1 + n_tcp + self.udps.len());
            {
                let mut fds = Vec::with_capacity(ready.capacity());
                fds.push(PollFd::new(self.stop.as_fd(), PollFlags::POLLIN));
                for l in &self.listeners {
                    fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
                for u in &self.udps {
                    fds.push(PollFd::new(u.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    // Nothing sensible to do but stop; the guard's join still works.
                    Err(_) => return,
                }
                ready.extend(fds.iter().map(|f| f.any().unwrap_or(true)));
            }
            if ready[0] {
                self.listeners.iter().for_each(sock::stop_listening);
                self.udps.iter().for_each(sock::stop_receiving);
                return;
            }
            for (i, l) in self.listeners.iter().enumerate() {
                if ready[1 + i] {
                    self.accept_all(l);
                }
            }
            for (i, u) in self.udps.iter().enumerate() {
                if ready[1 + n_tcp + i] {
                    self.answer_all(u);
                }
            }
        }
    }

    fn line(&self, peer: SocketAddr) -> String {
        format!("{} {}\n", self.name, canonical(peer))
    }

    fn accept_all(&self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    // Count first: a client that got its answer must find it counted.
                    self.counters.tcp.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = stream.write_all(self.line(peer).as_bytes());
                    // FIN now, even if a spawning child briefly holds a copy of the descriptor.
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Anything else (ECONNABORTED, EMFILE): try again on the
                // next poll rather than spinning here.
                Err(_) => return,
            }
        }
    }

    fn answer_all(&self, socket: &UdpSocket) {
        let mut buf = [0u8; 2048];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((_, peer)) => {
                    self.counters.udp.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(self.line(peer).as_bytes(), peer);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }
}

/// The peer as the backend reports it: IPv4-mapped IPv6 addresses are shown as IPv4.
fn canonical(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}
