//! The identity backends on the real kernel, on a namespace's loopback. Needs root.

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use kproxy_testutil::{
    Backend, Netns, Probe, ProbeResult, Protocols, probe_many, tcp_probe, udp_probe,
};

const T: Duration = Duration::from_secs(2);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn answers_tcp_and_udp_on_both_families_and_counts() {
    let ns = Netns::new("be").unwrap();
    let b = Backend::start(&ns, "be-1", &[sa("127.0.0.1:0"), sa("[::1]:0")]).unwrap();
    assert_eq!(b.name(), "be-1");
    assert_eq!(b.tcp_addrs().len(), 2);
    // A port of 0 resolves to one port for both protocols.
    assert_eq!(b.tcp_addrs(), b.udp_addrs());
    for &addr in b.tcp_addrs() {
        assert_ne!(addr.port(), 0);
        let r = tcp_probe(&ns, addr, T);
        assert_eq!(r.backend(), Some("be-1"), "{r:?}");
        assert_eq!(r.seen_peer().unwrap().ip(), addr.ip());
        let src = SocketAddr::new(addr.ip(), 45000);
        let r = udp_probe(&ns, Some(src), addr, T);
        assert_eq!(
            r,
            ProbeResult::Answered {
                backend: "be-1".into(),
                seen_peer: src
            }
        );
    }
    assert_eq!(b.tcp_served(), 2);
    assert_eq!(b.udp_served(), 2);
    assert_eq!(b.served(), 4);
    b.reset_counters();
    assert_eq!(b.served(), 0);
    b.stop().unwrap();
}

#[test]
fn both_wildcards_share_a_port() {
    let ns = Netns::new("bw").unwrap();
    // IPv6 sockets are v6-only, so [::]:p and 0.0.0.0:p do not clash.
    let b = Backend::start(&ns, "wild", &[sa("0.0.0.0:9000"), sa("[::]:9000")]).unwrap();
    assert_eq!(b.tcp_addrs(), &[sa("0.0.0.0:9000"), sa("[::]:9000")]);
    for target in [sa("127.0.0.1:9000"), sa("[::1]:9000")] {
        assert!(tcp_probe(&ns, target, T).is_answered());
        assert!(udp_probe(&ns, None, target, T).is_answered());
    }
}

#[test]
fn drop_stops_serving_and_frees_the_ports() {
    let ns = Netns::new("bd").unwrap();
    let addrs = [sa("127.0.0.1:9100"), sa("[::1]:9100")];
    let b = Backend::start(&ns, "short-lived", &addrs).unwrap();
    assert!(tcp_probe(&ns, addrs[0], T).is_answered());
    drop(b);
    for addr in addrs {
        assert_eq!(tcp_probe(&ns, addr, T), ProbeResult::Refused);
        assert_eq!(udp_probe(&ns, None, addr, T), ProbeResult::Refused);
    }
    // The port can be bound again at once (SO_REUSEADDR despite the server's TIME_WAIT).
    let again = Backend::start(&ns, "again", &addrs).unwrap();
    assert_eq!(tcp_probe(&ns, addrs[1], T).backend(), Some("again"));
    // And by a plain listener once that is gone too.
    drop(again);
    ns.enter(move || TcpListener::bind(addrs[0]))
        .unwrap()
        .unwrap();
}

#[test]
fn single_protocol_backends() {
    let ns = Netns::new("bp").unwrap();
    let tcp = Backend::start_tcp(&ns, "tcp-only", &[sa("127.0.0.1:9200")]).unwrap();
    let udp = Backend::start_udp(&ns, "udp-only", &[sa("127.0.0.1:9201")]).unwrap();
    assert!(tcp.udp_addrs().is_empty());
    assert!(udp.tcp_addrs().is_empty());
    assert!(tcp_probe(&ns, sa("127.0.0.1:9200"), T).is_answered());
    assert_eq!(
        udp_probe(&ns, None, sa("127.0.0.1:9200"), T),
        ProbeResult::Refused
    );
    assert!(udp_probe(&ns, None, sa("127.0.0.1:9201"), T).is_answered());
    assert_eq!(
        tcp_probe(&ns, sa("127.0.0.1:9201"), T),
        ProbeResult::Refused
    );
    // Two backends of different protocols may share a port.
    let _udp2 =
        Backend::start_with(&ns, "udp-too", &[sa("127.0.0.1:9200")], Protocols::Udp).unwrap();
    assert_eq!(
        udp_probe(&ns, None, sa("127.0.0.1:9200"), T).backend(),
        Some("udp-too")
    );
}

#[test]
fn bad_arguments_and_busy_ports_are_errors() {
    let ns = Netns::new("bb").unwrap();
    let a = [sa("127.0.0.1:0")];
    for bad in ["", "two words", "<refused>"] {
        let err = Backend::start(&ns, bad, &a).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
    assert!(Backend::start(&ns, "none", &[]).is_err());
    let first = Backend::start(&ns, "first", &[sa("127.0.0.1:9300")]).unwrap();
    let err = Backend::start(&ns, "second", &[sa("127.0.0.1:9300")]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // An address the namespace does not have.
    assert!(Backend::start(&ns, "nowhere", &[sa("10.77.0.1:80")]).is_err());
    drop(first);
}

#[test]
fn many_clients_at_once() {
    let ns = Netns::new("bm").unwrap();
    let b = Backend::start(&ns, "busy", &[sa("127.0.0.1:0"), sa("[::1]:0")]).unwrap();
    let (v4, v6) = (b.tcp_addrs()[0], b.tcp_addrs()[1]);
    thread::scope(|s| {
        let ns = &ns;
        let handles: Vec<_> = [
            Probe::tcp(v4),
            Probe::tcp(v6),
            Probe::udp(v4),
            Probe::udp(v6),
        ]
        .into_iter()
        .map(|p| s.spawn(move || probe_many(ns, &p, 250)))
        .collect();
        for h in handles {
            let hist = h.join().unwrap();
            assert_eq!(hist.get("busy"), Some(&250), "{hist:?}");
        }
    });
    assert_eq!(b.tcp_served(), 500);
    assert_eq!(b.udp_served(), 500);
}
