//! The probes on the real kernel: each outcome is reported for what produced it (an answer, an
//! iptables REJECT, a DROP, …), batches give histograms, and the background loop records
//! everything. Rules are added only inside the lab's own node namespace. Needs root.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use kproxy_testutil::{
    Backend, Lab, LabConfig, Netns, Probe, ProbeLoop, ProbeResult, Proto, histogram, keys,
    probe_many, tcp_probe, tcp_probe_from, udp_probe,
};

/// Timeout for probes that should succeed.
const OK: Duration = Duration::from_secs(2);
/// Timeout for probes that should time out.
const FAIL: Duration = Duration::from_millis(500);

fn sh(ns: &Netns, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    ns.run(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
}

fn small_lab(local_pods: usize) -> Lab {
    Lab::with_config(LabConfig {
        local_pods,
        remote_pods: 0,
        ..LabConfig::default()
    })
    .unwrap()
}

/// A DNAT of `vip:80` (TCP and UDP) spread at random over `pods`' port 8080, as kube-proxy
/// does with the statistic match.
fn random_dnat(node: &Netns, vip: &str, pods: &[String]) {
    let (ipt, wrap): (&str, fn(&str) -> String) = if vip.contains(':') {
        ("ip6tables", |ip: &str| format!("[{ip}]"))
    } else {
        ("iptables", |ip: &str| ip.to_owned())
    };
    for proto in ["tcp", "udp"] {
        let n = pods.len();
        for (i, pod) in pods.iter().enumerate() {
            let stat = if i + 1 < n {
                format!(
                    "-m statistic --mode random --probability {:.5}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            sh(
                node,
                &format!(
                    "{ipt} -t nat -A PREROUTING -d {vip} -p {proto} --dport 80 {stat} \
                     -j DNAT --to-destination {}:8080",
                    wrap(pod)
                ),
            );
        }
    }
}

#[test]
fn answer_reject_and_drop_are_told_apart_for_tcp_and_udp_on_both_families() {
    let lab = small_lab(1);
    let pod = &lab.local_pods[0];
    let mut addrs = Vec::new();
    for port in [8080, 8081, 8082] {
        addrs.extend(pod.socks(port));
    }
    let backend = Backend::start(pod, "pod0", &addrs).unwrap();
    for ipt in ["iptables", "ip6tables"] {
        for proto in ["tcp", "udp"] {
            sh(
                &lab.node,
                &format!("{ipt} -A FORWARD -p {proto} --dport 8081 -j REJECT"),
            );
            sh(
                &lab.node,
                &format!("{ipt} -A FORWARD -p {proto} --dport 8082 -j DROP"),
            );
        }
    }
    // Run every case at once: the timeouts overlap instead of adding up.
    let mut cases = Vec::new();
    for target in pod.socks(8080).into_iter() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let expect_peer = lab.client.ip_like(target.ip());
            cases.push((proto, target, Some(expect_peer)));
            let mut refused = target;
            refused.set_port(8081);
            cases.push((proto, refused, None));
            let mut dropped = target;
            dropped.set_port(8082);
            cases.push((proto, dropped, None));
        }
    }
    let client = &lab.client;
    thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(proto, target, peer)| {
                s.spawn(move || {
                    let probe = match proto {
                        Proto::Tcp => Probe::tcp(target),
                        Proto::Udp => Probe::udp(target),
                    };
                    let r = probe.with_timeout(FAIL).run(client);
                    (proto, target, peer, r)
                })
            })
            .collect();
        for h in handles {
            let (proto, target, peer, r) = h.join().unwrap();
            let expected = match (target.port(), peer) {
                (8080, Some(ip)) => {
                    assert_eq!(r.backend(), Some("pod0"), "{proto:?} {target}: {r:?}");
                    assert_eq!(r.seen_peer().unwrap().ip(), ip);
                    continue;
                }
                (8081, _) => ProbeResult::Refused,
                _ => ProbeResult::Timeout,
            };
            assert_eq!(r, expected, "{proto:?} {target}");
        }
    });
    // Only the answered probes reached the backend.
    assert_eq!(backend.tcp_served(), 2);
    assert_eq!(backend.udp_served(), 2);
}

#[test]
fn other_rejections_and_missing_listeners() {
    let lab = small_lab(1);
    let pod = &lab.local_pods[0];
    let c = &lab.client;
    // Nothing listens: TCP gets a reset, UDP an ICMP port unreachable.
    for target in pod.socks(9999) {
        assert_eq!(tcp_probe(c, target, OK), ProbeResult::Refused);
        assert_eq!(udp_probe(c, None, target, OK), ProbeResult::Refused);
    }
    sh(
        &lab.node,
        "iptables -A FORWARD -p tcp --dport 9000 -j REJECT --reject-with tcp-reset",
    );
    sh(
        &lab.node,
        "iptables -A FORWARD -p tcp --dport 9001 -j REJECT --reject-with icmp-host-unreachable",
    );
    sh(
        &lab.node,
        "ip6tables -A FORWARD -p udp --dport 9001 -j REJECT --reject-with icmp6-addr-unreachable",
    );
    let _b = Backend::start(pod, "pod0", &[pod.sock_v4(9000), pod.sock_v4(9001)]).unwrap();
    assert_eq!(tcp_probe(c, pod.sock_v4(9000), OK), ProbeResult::Refused);
    let r = tcp_probe(c, pod.sock_v4(9001), OK);
    assert!(matches!(r, ProbeResult::Unreachable(_)), "{r:?}");
    assert_eq!(r.key(), keys::UNREACHABLE);
    let r = udp_probe(c, None, pod.sock_v6(9001), OK);
    assert!(matches!(r, ProbeResult::Unreachable(_)), "{r:?}");
    // An unreachable route on the node.
    sh(&lab.node, "ip route add unreachable 192.0.2.0/24");
    let r = tcp_probe(pod, "192.0.2.99:80".parse().unwrap(), OK);
    assert!(matches!(r, ProbeResult::Unreachable(_)), "{r:?}");
    // An address nobody has: the node sends it to the client, which drops it.
    let r = udp_probe(pod, None, "198.51.100.99:80".parse().unwrap(), FAIL);
    assert_eq!(r, ProbeResult::Timeout);
}

#[test]
fn connected_but_silent_is_not_a_timeout() {
    let ns = Netns::new("silent").unwrap();
    // A listener that never accepts: the kernel completes the handshake, nobody writes.
    let listener = ns
        .enter(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let target = listener.local_addr().unwrap();
    let r = tcp_probe(&ns, target, Duration::from_millis(300));
    match &r {
        ProbeResult::Other(msg) => assert!(msg.contains("no reply"), "{msg}"),
        other => panic!("expected Other, got {other:?}"),
    }
    assert!(r.key().starts_with("<other: "));
    // A UDP socket that says something else.
    let udp = ns
        .enter(|| std::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let target = udp.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (_, peer) = udp.recv_from(&mut buf).unwrap();
        udp.send_to(b"garbage\n", peer).unwrap();
    });
    let r = udp_probe(&ns, None, target, OK);
    echo.join().unwrap();
    assert!(
        matches!(&r, ProbeResult::Other(m) if m.contains("garbage")),
        "{r:?}"
    );
}

#[test]
fn probes_bind_the_source_they_are_given() {
    let lab = small_lab(1);
    let pod = &lab.local_pods[0];
    let _b = Backend::start(pod, "pod0", &pod.socks(8080)).unwrap();
    let c = &lab.client;
    let far4 = SocketAddr::new(lab.client_internet_v4.into(), 0);
    let r = tcp_probe_from(c, far4, pod.sock_v4(8080), OK);
    assert_eq!(r.seen_peer().unwrap().ip(), far4.ip(), "{r:?}");
    let fixed = SocketAddr::new(lab.client.v6.into(), 41234);
    for _ in 0..3 {
        // The same fixed TCP source port, again and again (the backend closes first, so the
        // client side has no TIME_WAIT).
        let r = tcp_probe_from(c, fixed, pod.sock_v6(8080), OK);
        assert_eq!(r.seen_peer(), Some(fixed), "{r:?}");
        let r = udp_probe(c, Some(fixed), pod.sock_v6(8080), OK);
        assert_eq!(r.seen_peer(), Some(fixed), "{r:?}");
    }
    // A source the client does not have is a local failure, not a network outcome.
    let r = tcp_probe_from(c, "10.9.9.9:0".parse().unwrap(), pod.sock_v4(8080), OK);
    assert!(
        matches!(&r, ProbeResult::Other(m) if m.contains("bind")),
        "{r:?}"
    );
}

#[test]
fn probe_many_gives_a_histogram_of_the_load_balancing() {
    let lab = small_lab(2);
    let (p0, p1) = (&lab.local_pods[0], &lab.local_pods[1]);
    let b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let b1 = Backend::start(p1, "pod1", &p1.socks(8080)).unwrap();
    random_dnat(
        &lab.node,
        "10.96.0.10",
        &[p0.v4.to_string(), p1.v4.to_string()],
    );
    random_dnat(
        &lab.node,
        "fd00:10:96::10",
        &[p0.v6.to_string(), p1.v6.to_string()],
    );

    let start = std::time::Instant::now();
    let h = probe_many(
        &lab.client,
        &Probe::tcp("10.96.0.10:80".parse().unwrap()),
        600,
    );
    let took = start.elapsed();
    assert_eq!(h.values().sum::<usize>(), 600);
    assert_eq!(h.len(), 2, "only answers: {h:?}");
    // Binomial(600, 1/2): sd ~12, so 200 is more than 8 sd away.
    for name in ["pod0", "pod1"] {
        assert!(h[name] > 200, "{h:?}");
    }
    assert!(took < Duration::from_secs(10), "600 probes took {took:?}");
    assert_eq!(b0.tcp_served() + b1.tcp_served(), 600);
    eprintln!("600 TCP probes: {h:?} in {took:?}");

    // UDP: a fresh source port per probe, so a fresh conntrack flow and a fresh choice.
    let h = probe_many(
        &lab.client,
        &Probe::udp("[fd00:10:96::10]:80".parse().unwrap()),
        200,
    );
    assert_eq!(h.values().sum::<usize>(), 200);
    for name in ["pod0", "pod1"] {
        assert!(h.get(name).copied().unwrap_or(0) > 50, "{h:?}");
    }

    // Failures are counted too: a service port whose endpoints have no listener.
    sh(
        &lab.node,
        "iptables -t nat -A PREROUTING -d 10.96.0.10 -p tcp --dport 81 \
         -j DNAT --to-destination 10.0.1.10:9",
    );
    let h = probe_many(
        &lab.client,
        &Probe::tcp("10.96.0.10:81".parse().unwrap()),
        100,
    );
    assert_eq!(h.get(keys::REFUSED), Some(&100), "{h:?}");
}

#[test]
fn a_fixed_udp_source_port_keeps_its_conntrack_flow() {
    let lab = small_lab(2);
    let (p0, p1) = (&lab.local_pods[0], &lab.local_pods[1]);
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _b1 = Backend::start(p1, "pod1", &p1.socks(8080)).unwrap();
    random_dnat(
        &lab.node,
        "10.96.0.11",
        &[p0.v4.to_string(), p1.v4.to_string()],
    );
    let vip: SocketAddr = "10.96.0.11:80".parse().unwrap();
    let source = SocketAddr::new(lab.client.v4.into(), 40123);
    let results: Vec<ProbeResult> = (0..20)
        .map(|_| udp_probe(&lab.client, Some(source), vip, OK))
        .collect();
    let h = histogram(&results);
    assert_eq!(h.len(), 1, "one flow, one backend: {h:?}");
    assert!(results[0].is_answered(), "{results:?}");
    // The flow is in the node's conntrack table (and only there).
    let table = lab
        .node
        .run(&["conntrack", "-L", "-p", "udp", "--orig-port-src", "40123"])
        .unwrap();
    assert!(table.contains("dport=80"), "{table}");
}

#[test]
fn probe_loop_records_every_attempt_across_a_rule_change() {
    let lab = small_lab(2);
    let (p0, p1) = (&lab.local_pods[0], &lab.local_pods[1]);
    let _b0 = Backend::start(p0, "pod0", &p0.socks(8080)).unwrap();
    let _b1 = Backend::start(p1, "pod1", &p1.socks(8080)).unwrap();
    let node = &lab.node;
    sh(
        node,
        "iptables -t nat -A PREROUTING -d 10.96.0.12 -p tcp --dport 80 \
         -j DNAT --to-destination 10.0.1.10:8080",
    );
    let probe = Probe::tcp("10.96.0.12:80".parse().unwrap()).with_timeout(OK);
    let prober = ProbeLoop::start(&lab.client, probe, Duration::from_millis(1)).unwrap();
    assert!(prober.wait_for_attempts(30, Duration::from_secs(10)));
    // Swap the endpoint in one atomic replace, as a proxy resync would.
    sh(
        node,
        "iptables -t nat -R PREROUTING 1 -d 10.96.0.12 -p tcp --dport 80 \
         -j DNAT --to-destination 10.0.1.11:8080",
    );
    let seen = prober.attempts();
    assert!(prober.wait_for_attempts(seen + 30, Duration::from_secs(10)));
    assert!(prober.snapshot().len() >= seen + 30);
    let records = prober.stop();
    assert!(records.len() >= 60);
    let failed: Vec<_> = records.iter().filter(|r| !r.result.is_answered()).collect();
    assert!(failed.is_empty(), "failed attempts: {failed:?}");
    assert_eq!(records.first().unwrap().result.backend(), Some("pod0"));
    assert_eq!(records.last().unwrap().result.backend(), Some("pod1"));
    assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(records.iter().all(|r| r.took < OK));
}

#[test]
fn probe_loop_sees_failures_and_recovery() {
    let lab = small_lab(1);
    let pod = &lab.local_pods[0];
    let _b = Backend::start(pod, "pod0", &pod.socks(8080)).unwrap();
    let probe = Probe::udp(pod.sock_v6(8080)).with_timeout(OK);
    let prober = ProbeLoop::start(&lab.client, probe, Duration::from_millis(1)).unwrap();
    assert!(prober.wait_for_attempts(10, Duration::from_secs(10)));
    sh(&lab.node, "ip6tables -I FORWARD -p udp -j REJECT");
    let n = prober.attempts();
    assert!(prober.wait_for_attempts(n + 10, Duration::from_secs(10)));
    sh(&lab.node, "ip6tables -D FORWARD 1");
    let n = prober.attempts();
    assert!(prober.wait_for_attempts(n + 10, Duration::from_secs(10)));
    let records = prober.stop();
    let h = histogram(records.iter().map(|r| &r.result));
    assert!(h.get(keys::REFUSED).copied().unwrap_or(0) >= 9, "{h:?}");
    assert!(h["pod0"] >= 19, "{h:?}");
    assert!(records.last().unwrap().result.is_answered());
    // Dropping a loop without stop() also ends its thread.
    let again = ProbeLoop::start(
        &lab.client,
        Probe::tcp(pod.sock_v4(8080)),
        Duration::from_millis(5),
    )
    .unwrap();
    assert!(again.wait_for_attempts(1, Duration::from_secs(5)));
    drop(again);
}
