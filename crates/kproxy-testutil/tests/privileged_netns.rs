//! The namespace guard itself, on the real kernel (needs root; CI runs as root).

use kproxy_testutil::{Netns, veth};

#[test]
fn namespace_is_isolated_and_removed_on_drop() {
    let ns = Netns::new("iso").unwrap();
    let name = ns.name().to_owned();
    let links = ns.run(&["ip", "-o", "link"]).unwrap();
    assert_eq!(
        links.lines().count(),
        1,
        "a fresh namespace has only lo: {links}"
    );
    assert!(links.contains("lo:"));
    drop(ns);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}

#[test]
fn veth_joins_two_namespaces_and_threads_enter_them() {
    let a = Netns::new("va").unwrap();
    let b = Netns::new("vb").unwrap();
    veth(&a, "to-b", &b, "to-a").unwrap();
    a.run(&["ip", "addr", "add", "10.250.0.1/30", "dev", "to-b"])
        .unwrap();
    b.run(&["ip", "addr", "add", "10.250.0.2/30", "dev", "to-a"])
        .unwrap();
    let listener = b
        .enter(|| std::net::TcpListener::bind("10.250.0.2:7000"))
        .unwrap()
        .unwrap();
    let peer = a
        .enter(|| {
            let s = std::net::TcpStream::connect("10.250.0.2:7000")?;
            s.local_addr()
        })
        .unwrap()
        .unwrap();
    let (_, seen) = listener.accept().unwrap();
    assert_eq!(seen, peer);
    assert_eq!(peer.ip().to_string(), "10.250.0.1");
}

#[test]
fn sysctls_are_per_namespace_and_limited_to_net() {
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = Netns::new("sys").unwrap();
    let other = Netns::new("sys2").unwrap();
    ns.sysctls(&[
        ("net.ipv4.ip_forward", "1"),
        ("net/ipv4/conf/lo/rp_filter", "2"),
    ])
    .unwrap();
    assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(ns.read_sysctl("net.ipv4.conf.lo.rp_filter").unwrap(), "2");
    assert_eq!(other.read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
    // The host's value is untouched (only read here).
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(host_before, host_after);
    for refused in ["kernel.hostname", "net/../kernel/hostname", "vm.swappiness"] {
        let err = ns.sysctl(refused, "x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{refused}");
    }
    let err = ns.sysctl("net.ipv4.no_such_knob", "1").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn ip_and_ip_batch_run_against_the_namespace() {
    let ns = Netns::new("ipb").unwrap();
    // No duplicate address detection (a second or two per address otherwise).
    ns.sysctls(&[
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ])
    .unwrap();
    ns.ip_batch(&[
        "link add a0 type veth peer name a1",
        "addr add 10.251.0.1/24 dev a0",
        "link set a0 up",
    ])
    .unwrap();
    let addrs = ns.ip(&["-br", "addr", "show", "a0"]).unwrap();
    assert!(addrs.contains("10.251.0.1/24"), "{addrs}");
    // IPv6 addresses get their local route a moment later; wait_ipv6_ready waits for it.
    ns.ip_batch(&["link set a1 up", "addr add fd00:251::1/64 dev a0 nodad"])
        .unwrap();
    ns.wait_ipv6_ready(std::time::Duration::from_secs(5))
        .unwrap();
    let local = ns.ip(&["-6", "route", "show", "table", "local"]).unwrap();
    assert!(local.contains("local fd00:251::1 dev a0"), "{local}");
    let err = ns
        .ip_batch(&["link set a1 down", "link set nosuchdev up"])
        .unwrap_err();
    assert!(err.to_string().contains("nosuchdev"), "{err}");
    assert!(ns.ip_batch(&["link set a0 up\nlink del a0"]).is_err());
}
