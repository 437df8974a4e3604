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
