//! Traffic probes: one TCP connection or UDP exchange with a [`Backend`](crate::Backend), made
//! from inside a namespace, reported as what a test wants to assert on.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::Netns;
use crate::sock::{self, ConnectError};

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// A backend answered: its name, and the client address it saw (the probe's own address,
    /// or a masquerading node's).
    Answered {
        /// The backend's name.
        backend: String,
        /// The peer address the backend reported.
        seen_peer: SocketAddr,
    },
    /// The connection was refused: a TCP RST or an ICMP port unreachable. This is what an
    /// iptables `REJECT` (with its default `icmp-port-unreachable`, or `tcp-reset`) produces,
    /// and what a port without a listener gives.
    ///
    /// An ICMP error is reported as soon as it arrives: the probe sockets set `IP_RECVERR`,
    /// since the kernel otherwise keeps an error that reaches a TCP socket while `connect`
    /// still holds it (common over a veth) as a "soft" error until the next SYN, a second
    /// later.
    Refused,
    /// No answer before the timeout: what an iptables `DROP` (or a black hole) produces.
    Timeout,
    /// An ICMP host/network unreachable or a missing route (`EHOSTUNREACH`, `ENETUNREACH`):
    /// e.g. `REJECT --reject-with icmp-host-unreachable`, or an `unreachable` route. The
    /// string is the error's description.
    Unreachable(String),
    /// Anything else, described: an unexpected reply, a reset after connecting, a failed bind…
    Other(String),
}

/// Histogram keys used by [`ProbeResult::key`] for outcomes other than an answer.
pub mod keys {
    /// Key for [`ProbeResult::Refused`](super::ProbeResult::Refused).
    pub const REFUSED: &str = "<refused>";
    /// Key for [`ProbeResult::Timeout`](super::ProbeResult::Timeout).
    pub const TIMEOUT: &str = "<timeout>";
    /// Key for [`ProbeResult::Unreachable`](super::ProbeResult::Unreachable).
    pub const UNREACHABLE: &str = "<unreachable>";
}

impl ProbeResult {
    /// The backend's name, if one answered.
    pub fn backend(&self) -> Option<&str> {
        match self {
            ProbeResult::Answered { backend, .. } => Some(backend),
            _ => None,
        }
    }

    /// The peer address the backend saw, if one answered.
    pub fn seen_peer(&self) -> Option<SocketAddr> {
        match self {
            ProbeResult::Answered { seen_peer, .. } => Some(*seen_peer),
            _ => None,
        }
    }

    /// Whether a backend answered.
    pub fn is_answered(&self) -> bool {
        matches!(self, ProbeResult::Answered { .. })
    }

    /// The histogram key: the backend's name for an answer, otherwise `"<refused>"`,
    /// `"<timeout>"`, `"<unreachable>"` or `"<other: …>"` (see [`keys`]). Backend names cannot
    /// start with `<`, so the two never clash.
    pub fn key(&self) -> String {
        match self {
            ProbeResult::Answered { backend, .. } => backend.clone(),
            ProbeResult::Refused => keys::REFUSED.to_owned(),
            ProbeResult::Timeout => keys::TIMEOUT.to_owned(),
            ProbeResult::Unreachable(_) => keys::UNREACHABLE.to_owned(),
            ProbeResult::Other(msg) => format!("<other: {msg}>"),
        }
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Answered { backend, seen_peer } => {
                write!(f, "answered by {backend} (saw {seen_peer})")
            }
            ProbeResult::Refused => f.write_str("refused"),
            ProbeResult::Timeout => f.write_str("timed out"),
            ProbeResult::Unreachable(m) => write!(f, "unreachable: {m}"),
            ProbeResult::Other(m) => write!(f, "failed: {m}"),
        }
    }
}

/// Probe outcomes counted by [`ProbeResult::key`].
pub type Histogram = BTreeMap<String, usize>;

/// The transport a [`Probe`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// A TCP connection; the backend's line is read until it closes.
    Tcp,
    /// One UDP datagram on a connected socket, and one reply.
    Udp,
}

/// A description of one probe: protocol, target, optional source address, timeout.
///
/// Build one with [`Probe::tcp`] or [`Probe::udp`] and the `with_*` methods, then run it with
/// [`Probe::run`] (in a namespace), [`Probe::run_here`] (in the calling thread's namespace),
/// [`probe_many`] or [`ProbeLoop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to connect or send.
    pub target: SocketAddr,
    /// Local address (and port, if non-zero) to bind before connecting; `None` lets the kernel
    /// choose. A fixed UDP source port keeps a conntrack flow alive across probes.
    pub source: Option<SocketAddr>,
    /// How long the whole exchange may take; expired, the result is [`ProbeResult::Timeout`]
    /// (nothing connected) or [`ProbeResult::Other`] (connected, but no reply).
    pub timeout: Duration,
}

/// The timeout of [`Probe::tcp`] and [`Probe::udp`] unless changed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl Probe {
    /// A TCP probe of `target` with [`DEFAULT_TIMEOUT`].
    pub fn tcp(target: SocketAddr) -> Probe {
        Probe {
            proto: Proto::Tcp,
            target,
            source: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A UDP probe of `target` with [`DEFAULT_TIMEOUT`].
    pub fn udp(target: SocketAddr) -> Probe {
        Probe {
            proto: Proto::Udp,
            ..Probe::tcp(target)
        }
    }

    /// The same probe bound to `source` first.
    pub fn with_source(mut self, source: SocketAddr) -> Probe {
        self.source = Some(source);
        self
    }

    /// The same probe bound to `ip` (any port) first.
    pub fn with_source_ip(self, ip: IpAddr) -> Probe {
        self.with_source(SocketAddr::new(ip, 0))
    }

    /// The same probe with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Probe {
        self.timeout = timeout;
        self
    }

    /// Runs the probe from a thread inside `ns`. A failure to enter the namespace is reported
    /// as [`ProbeResult::Other`].
    pub fn run(&self, ns: &Netns) -> ProbeResult {
        let probe = self.clone();
        ns.enter(move || probe.run_here())
            .unwrap_or_else(|e| ProbeResult::Other(format!("entering {}: {e}", ns.name())))
    }

    /// Runs the probe in the calling thread's namespace (for use inside [`Netns::enter`]).
    pub fn run_here(&self) -> ProbeResult {
        match self.proto {
            Proto::Tcp => tcp_once(self.source, self.target, self.timeout),
            Proto::Udp => udp_once(self.source, self.target, self.timeout),
        }
    }
}

/// One TCP probe of `target` from inside `ns`.
pub fn tcp_probe(ns: &Netns, target: SocketAddr, timeout: Duration) -> ProbeResult {
    Probe::tcp(target).with_timeout(timeout).run(ns)
}

/// One TCP probe of `target` from inside `ns`, bound to `source` first (port 0: any port).
pub fn tcp_probe_from(
    ns: &Netns,
    source: SocketAddr,
    target: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    Probe::tcp(target)
        .with_source(source)
        .with_timeout(timeout)
        .run(ns)
}

/// One UDP probe of `target` from inside `ns`, from `source` if given (a fixed port keeps the
/// same conntrack flow across calls). An ICMP port unreachable is [`ProbeResult::Refused`].
pub fn udp_probe(
    ns: &Netns,
    source: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    let mut p = Probe::udp(target).with_timeout(timeout);
    p.source = source;
    p.run(ns)
}

/// Runs `probe` `n` times in a row from one thread inside `ns` and counts the outcomes by
/// [`ProbeResult::key`]. No process is spawned: hundreds of probes of a local backend take well
/// under a second (probes that time out take their timeout each).
pub fn probe_many(ns: &Netns, probe: &Probe, n: usize) -> Histogram {
    let p = probe.clone();
    match ns.enter(move || {
        let mut h = Histogram::new();
        for _ in 0..n {
            *h.entry(p.run_here().key()).or_default() += 1;
        }
        h
    }) {
        Ok(h) => h,
        Err(e) => {
            let r = ProbeResult::Other(format!("entering {}: {e}", ns.name()));
            Histogram::from([(r.key(), n)])
        }
    }
}

/// Counts `results` by [`ProbeResult::key`].
pub fn histogram<'a>(results: impl IntoIterator<Item = &'a ProbeResult>) -> Histogram {
    let mut h = Histogram::new();
    for r in results {
        *h.entry(r.key()).or_default() += 1;
    }
    h
}

/// One outcome recorded by a [`ProbeLoop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    /// When the attempt started.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
    /// What it found.
    pub result: ProbeResult,
}

/// A background thread in a namespace that keeps probing a target until stopped, recording
/// every outcome with its time: for churn tests that must show no connection failed while
/// rules changed underneath.
///
/// ```no_run
/// # use kproxy_testutil::{Netns, Probe, ProbeLoop};
/// # use std::time::Duration;
/// # let client = Netns::new("c")?;
/// let probe = Probe::tcp("10.96.0.10:80".parse().unwrap()).with_timeout(Duration::from_secs(1));
/// let prober = ProbeLoop::start(&client, probe, Duration::from_millis(5))?;
/// // ... change the rules ...
/// prober.wait_for_attempts(100, Duration::from_secs(10));
/// let records = prober.stop();
/// assert!(records.iter().all(|r| r.result.is_answered()));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ProbeLoop {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    records: Arc<Mutex<Vec<ProbeRecord>>>,
    thread: Option<JoinHandle<()>>,
}

impl ProbeLoop {
    /// Starts probing from inside `ns`: one `probe`, then a `pause`, and again, until
    /// [`ProbeLoop::stop`] (or drop). Each attempt is bounded by the probe's timeout.
    pub fn start(ns: &Netns, probe: Probe, pause: Duration) -> io::Result<ProbeLoop> {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let records = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, attempts, records) = (stop.clone(), attempts.clone(), records.clone());
            ns.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let result = probe.run_here();
                    let rec = ProbeRecord {
                        at,
                        took: at.elapsed(),
                        result,
                    };
                    records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })?
        };
        Ok(ProbeLoop {
            stop,
            attempts,
            records,
            thread: Some(thread),
        })
    }

    /// Attempts recorded so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// A copy of the records so far, without stopping.
    pub fn snapshot(&self) -> Vec<ProbeRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` attempts were recorded (in total, since start), or `timeout`
    /// passed; returns whether `n` was reached.
    pub fn wait_for_attempts(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.attempts() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Stops the loop (after the attempt in flight) and returns every record, oldest first.
    pub fn stop(mut self) -> Vec<ProbeRecord> {
        self.halt();
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProbeLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

fn errno_result(e: Errno) -> ProbeResult {
    match e {
        Errno::ECONNREFUSED => ProbeResult::Refused,
        Errno::ETIMEDOUT => ProbeResult::Timeout,
        Errno::EHOSTUNREACH | Errno::ENETUNREACH => ProbeResult::Unreachable(e.desc().to_owned()),
        _ => ProbeResult::Other(format!("{e}: {}", e.desc())),
    }
}

fn io_result(e: &io::Error) -> ProbeResult {
    match e.raw_os_error() {
        Some(code) => match Errno::from_raw(code) {
            Errno::EAGAIN => ProbeResult::Timeout,
            errno => errno_result(errno),
        },
        None if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            ProbeResult::Timeout
        }
        None => ProbeResult::Other(e.to_string()),
    }
}

/// Parses a backend's `"<name> <peer>\n"`.
fn parse_reply(bytes: &[u8]) -> ProbeResult {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim_end_matches(['\n', '\r']);
    let parsed = line
        .split_once(' ')
        .and_then(|(name, peer)| Some((name, peer.parse::<SocketAddr>().ok()?)));
    match parsed {
        Some((name, seen_peer)) if !name.is_empty() => ProbeResult::Answered {
            backend: name.to_owned(),
            seen_peer,
        },
        _ => ProbeResult::Other(format!("unexpected reply {line:?}")),
    }
}

fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

fn tcp_once(source: Option<SocketAddr>, target: SocketAddr, timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let mut stream = match sock::tcp_connect(source, target, deadline) {
        Ok(s) => s,
        Err(ConnectError::Timeout) => return ProbeResult::Timeout,
        Err(ConnectError::Errno(e)) => return errno_result(e),
        Err(ConnectError::Io(e)) => return ProbeResult::Other(e.to_string()),
    };
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = stream.set_read_timeout(Some(at_least_1ms(left))) {
            return ProbeResult::Other(e.to_string());
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') || buf.len() > 4096 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return match io_result(&e) {
                    ProbeResult::Timeout => ProbeResult::Other(format!(
                        "connected, but no reply within {timeout:?} (got {:?})",
                        String::from_utf8_lossy(&buf)
                    )),
                    ProbeResult::Refused => ProbeResult::Other("reset after connecting".into()),
                    other => ProbeResult::Other(format!("reading reply: {other}")),
                };
            }
        }
    }
    // Close now, even if a spawning child briefly holds a copy of the descriptor: a probe from
    // the same fixed source port may follow at once and needs the 4-tuple free.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    parse_reply(&buf)
}

fn udp_once(source: Option<SocketAddr>, target: SocketAddr, timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let socket = match sock::udp_client(source, target) {
        Ok(s) => s,
        Err(e) => return ProbeResult::Other(e.to_string()),
    };
    if let Err(e) = socket.connect(target) {
        return io_result(&e);
    }
    if let Err(e) = socket.send(b"probe\n") {
        return io_result(&e);
    }
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ProbeResult::Timeout;
        }
        if let Err(e) = socket.set_read_timeout(Some(at_least_1ms(left))) {
            return ProbeResult::Other(e.to_string());
        }
        match socket.recv(&mut buf) {
            Ok(n) => return parse_reply(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return io_result(&e),
        }
    }
}
