//! Helpers shared by the privileged tests: namespace topologies, UDP backends, and reading
//! `conntrack -L` for cross-checks. Everything runs inside namespaces the test creates.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kproxy_conntrack::{Family, Flow, Protocol, Tuple};
use kproxy_testutil::Netns;

/// How long a backend serves at most, so a failed test never leaves a thread spinning.
const BACKEND_LIFETIME: Duration = Duration::from_secs(60);

/// A UDP server in a namespace that answers every datagram with its tag.
pub struct Backend {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl Backend {
    /// Binds `addr` inside `ns` and serves until stopped or dropped.
    pub fn start(ns: &Netns, addr: SocketAddr, tag: &'static str) -> Backend {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let socket = ns
            .enter(move || UdpSocket::bind(addr))
            .expect("enter namespace")
            .expect("bind backend");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (s, r) = (stop.clone(), received.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) && start.elapsed() < BACKEND_LIFETIME {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(tag.as_bytes(), peer);
                }
            }
        });
        Backend {
            stop,
            received,
            handle: Some(handle),
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Stops serving and closes the socket.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A UDP socket created inside `ns` (it stays there whichever thread uses it).
pub fn udp_client(ns: &Netns, bind: &str) -> UdpSocket {
    let bind: SocketAddr = bind.parse().unwrap();
    let sock = ns
        .enter(move || UdpSocket::bind(bind))
        .unwrap()
        .expect("bind client");
    sock.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    sock
}

/// Sends `payload` to `to` and waits for one answer: `Ok(Some((text, from)))`, `Ok(None)` on
/// timeout, or the socket error (e.g. `ConnectionRefused` on a connected socket).
pub fn exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &str,
) -> io::Result<Option<(String, SocketAddr)>> {
    sock.send_to(payload.as_bytes(), to)?;
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Ok(Some((
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            from,
        ))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs a command in `ns`, panicking with its error.
pub fn sh(ns: &Netns, args: &[&str]) -> String {
    ns.run(args)
        .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", ns.name()))
}

/// Lists `family`'s conntrack entries of `ns` with this crate, on a thread inside `ns`.
pub fn list(ns: &Netns, family: Family) -> Vec<Flow> {
    ns.enter(move || {
        let mut ct = kproxy_conntrack::Conntrack::new()?;
        ct.list(family)
    })
    .unwrap()
    .expect("list conntrack entries")
}

/// A flow reduced to what `conntrack -L` prints: protocol, tuples and id.
pub type Key = (u8, Tuple, Tuple, Option<u32>);

/// The keys of `flows`.
pub fn keys(flows: &[Flow]) -> BTreeSet<String> {
    flows
        .iter()
        .map(|f| key_string(&(f.protocol.number(), f.original, f.reply, f.id)))
        .collect()
}

fn key_string(k: &Key) -> String {
    format!("{} {} {} {:?}", k.0, k.1, k.2, k.3)
}

/// Reads `conntrack -L -f <family> -o id` inside `ns` (the CLI, for cross-checks only) and
/// returns the same keys as [`keys`].
pub fn conntrack_cli(ns: &Netns, family: Family) -> BTreeSet<String> {
    let fam = match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    };
    let out = ns
        .command("conntrack")
        .args(["-L", "-f", fam, "-o", "id"])
        .output()
        .expect("run conntrack -L");
    assert!(out.status.success(), "conntrack -L failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_cli_line)
        .map(|k| key_string(&k))
        .collect()
}

/// Parses one `conntrack -L` line such as
/// `udp 17 29 src=A dst=B sport=1 dport=2 [UNREPLIED] src=C dst=D sport=3 dport=4 mark=0 use=1 id=5`.
fn parse_cli_line(line: &str) -> Option<Key> {
    let mut words = line.split_whitespace();
    let _name = words.next()?;
    let proto: u8 = words.next()?.parse().ok()?;
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    let mut id = None;
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "src" | "dst" => ips.push(v.parse().ok()?),
            "sport" | "dport" => ports.push(v.parse().ok()?),
            "id" => id = Some(v.parse().ok()?),
            _ => {}
        }
    }
    if ips.len() < 4 {
        return None;
    }
    let port = |i: usize| ports.get(i).copied().unwrap_or(0);
    let has_ports = matches!(
        Protocol::from_number(proto),
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp
    );
    let (p0, p1, p2, p3) = if has_ports {
        (port(0), port(1), port(2), port(3))
    } else {
        (0, 0, 0, 0)
    };
    Some((
        proto,
        Tuple {
            src: ips[0],
            dst: ips[1],
            src_port: p0,
            dst_port: p1,
        },
        Tuple {
            src: ips[2],
            dst: ips[3],
            src_port: p2,
            dst_port: p3,
        },
        id,
    ))
}

/// The packet counter of the first rule in `table`/`chain` whose `iptables -S`-style spec
/// contains `needle`, read with `iptables -L -v -x` (exact numbers).
pub fn rule_packets(ns: &Netns, cmd: &str, table: &str, chain: &str, needle: &str) -> u64 {
    let out = sh(ns, &[cmd, "-w", "-t", table, "-L", chain, "-v", "-x", "-n"]);
    for line in out.lines().skip(2) {
        if line.contains(needle) {
            return line.split_whitespace().next().unwrap().parse().unwrap();
        }
    }
    panic!("no rule with {needle:?} in {table}/{chain}:\n{out}");
}
