//! Service health-check node ports over real HTTP on loopback.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{get, refused};
use kproxy_healthcheck::{
    Error, FakeClock, ListenAddresses, ProxyHealthServer, ServiceHealthServer,
};
use kproxy_model::{IpFamily, Node, ServiceName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn nsn(ns: &str, name: &str) -> ServiceName {
    ServiceName::new(ns, name)
}

fn ports(entries: &[(&ServiceName, u16)]) -> BTreeMap<ServiceName, u16> {
    entries.iter().map(|&(n, p)| (n.clone(), p)).collect()
}

fn counts(entries: &[(&ServiceName, usize)]) -> BTreeMap<ServiceName, usize> {
    entries.iter().map(|&(n, c)| (n.clone(), c)).collect()
}

fn loopback_v4() -> ListenAddresses {
    ListenAddresses::Ips(vec!["127.0.0.1".parse().unwrap()])
}

fn healthy_proxy() -> ProxyHealthServer {
    ProxyHealthServer::new(Duration::from_secs(60))
}

fn expected_body(name: &ServiceName, endpoints: usize, proxy_healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"{}\",\n\t\t\"name\": \"{}\"\n\t}},\n\t\"localEndpoints\": {endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        name.namespace, name.name
    )
}

/// Asserts what every listener of `name` answers (upstream `tHandler`).
async fn check(
    server: &ServiceHealthServer,
    name: &ServiceName,
    status: u16,
    endpoints: usize,
    proxy_healthy: bool,
) {
    let addrs = server.local_addrs(name);
    assert!(!addrs.is_empty(), "{name} is not open");
    for addr in addrs {
        let reply = get(addr, "/healthz").await;
        assert_eq!(reply.status, status, "{name} on {addr}: {reply:?}");
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(
            reply.header("x-load-balancing-endpoint-weight"),
            endpoints.to_string()
        );
        assert_eq!(reply.body, expected_body(name, endpoints, proxy_healthy));
    }
}

#[tokio::test]
async fn exact_response() {
    let server = ServiceHealthServer::new(loopback_v4(), healthy_proxy()).unwrap();
    let name = nsn("ns", "svc");
    assert!(server.sync_services(&ports(&[(&name, 0)])).is_empty());
    server.sync_endpoints(&counts(&[(&name, 3)]));
    let addr = server.local_addrs(&name)[0];
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"svc\"\n\t},\n\t\"localEndpoints\": 3,\n\t\"serviceProxyHealthy\": true\n}"
    );
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());

    // Any method and path get the same answer.
    let reply = common::request(addr, "POST", "/anything?x=y")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, expected_body(&name, 3, true));
}

/// Upstream's `TestServer` sequence, over HTTP.
#[tokio::test]
async fn upstream_sync_sequence() {
    let server = ServiceHealthServer::new(loopback_v4(), healthy_proxy()).unwrap();

    // Nothing, and endpoints of unknown services are dropped.
    assert!(server.sync_services(&BTreeMap::new()).is_empty());
    server.sync_endpoints(&BTreeMap::new());
    server.sync_endpoints(&counts(&[(&nsn("a", "b"), 93)]));

    // One service: open, no endpoints yet.
    let ab = nsn("a", "b");
    assert!(server.sync_services(&ports(&[(&ab, 0)])).is_empty());
    assert_eq!(server.local_addrs(&ab).len(), 1);
    check(&server, &ab, 503, 0, true).await;

    server.sync_endpoints(&counts(&[(&ab, 18)]));
    check(&server, &ab, 200, 18, true).await;
    server.sync_endpoints(&counts(&[(&ab, 0)]));
    check(&server, &ab, 503, 0, true).await;
    server.sync_endpoints(&counts(&[(&ab, 11)]));
    check(&server, &ab, 200, 11, true).await;
    // Missing from the map: 0.
    server.sync_endpoints(&BTreeMap::new());
    check(&server, &ab, 503, 0, true).await;
    server.sync_endpoints(&counts(&[(&ab, 18)]));

    // Removed: closed.
    let old = server.local_addrs(&ab)[0];
    assert!(server.sync_services(&BTreeMap::new()).is_empty());
    assert!(server.local_addrs(&ab).is_empty());
    assert!(refused(old).await);

    // Several services.
    let (n1, n2, n3, n4) = (nsn("a", "b"), nsn("c", "d"), nsn("e", "f"), nsn("g", "h"));
    assert!(
        server
            .sync_services(&ports(&[(&n1, 0), (&n2, 0), (&n3, 0)]))
            .is_empty()
    );
    for n in [&n1, &n2, &n3] {
        check(&server, n, 503, 0, true).await;
    }
    server.sync_endpoints(&counts(&[(&n1, 9), (&n2, 3), (&n3, 7)]));
    check(&server, &n1, 200, 9, true).await;
    check(&server, &n2, 200, 3, true).await;
    check(&server, &n3, 200, 7, true).await;

    // Remove n1, keep n2, change n3's port, add n4. n3 moves from "any port" to the port
    // it was bound to: the old socket must be closed before the new one binds it.
    let n1_addr = server.local_addrs(&n1)[0];
    let n2_addr = server.local_addrs(&n2)[0];
    let n3_port = server.local_addrs(&n3)[0].port();
    assert!(
        server
            .sync_services(&ports(&[(&n2, 0), (&n3, n3_port), (&n4, 0)]))
            .is_empty()
    );
    assert!(refused(n1_addr).await);
    assert_eq!(server.local_addrs(&n2), vec![n2_addr]);
    assert_eq!(server.local_addrs(&n3)[0].port(), n3_port);
    check(&server, &n2, 200, 3, true).await;
    check(&server, &n3, 503, 0, true).await;
    check(&server, &n4, 503, 0, true).await;

    server.sync_endpoints(&counts(&[(&n1, 9), (&n2, 3), (&n3, 7), (&n4, 6)]));
    check(&server, &n2, 200, 3, true).await;
    check(&server, &n3, 200, 7, true).await;
    check(&server, &n4, 200, 6, true).await;

    server.sync_endpoints(&counts(&[(&n3, 7), (&n4, 6)]));
    check(&server, &n2, 503, 0, true).await;
    check(&server, &n3, 200, 7, true).await;
    check(&server, &n4, 200, 6, true).await;
}

#[tokio::test]
async fn proxy_health_counts_but_node_state_does_not() {
    let clock = FakeClock::new(SystemTime::UNIX_EPOCH);
    let proxy = ProxyHealthServer::with_clock(Duration::from_secs(10), Arc::new(clock.clone()));
    let server = ServiceHealthServer::new(loopback_v4(), proxy.clone()).unwrap();
    let (a, b) = (nsn("ns", "with-endpoints"), nsn("ns", "without"));
    assert!(server.sync_services(&ports(&[(&a, 0), (&b, 0)])).is_empty());
    server.sync_endpoints(&counts(&[(&a, 7)]));

    proxy.updated(IpFamily::V4);
    proxy.queued_update(IpFamily::V4);
    clock.step(Duration::from_secs(10));
    check(&server, &a, 503, 7, false).await;
    check(&server, &b, 503, 0, false).await;

    proxy.updated(IpFamily::V4);
    check(&server, &a, 200, 7, true).await;
    check(&server, &b, 503, 0, true).await;

    // A node being deleted fails /healthz but not the service health checks.
    proxy.sync_node(&Node {
        deleting: true,
        ..Node::default()
    });
    check(&server, &a, 200, 7, true).await;
}

#[tokio::test]
async fn a_port_in_use_fails_alone_and_is_retried() {
    let server = ServiceHealthServer::new(loopback_v4(), healthy_proxy()).unwrap();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = blocker.local_addr().unwrap();
    let (a, b) = (nsn("ns", "busy"), nsn("ns", "free"));
    let wanted = ports(&[(&a, busy.port()), (&b, 0)]);

    let errors = server.sync_services(&wanted);
    match &errors[..] {
        [
            Error::ServiceListen {
                service,
                addr,
                source,
            },
        ] => {
            assert_eq!(service, &a);
            assert_eq!(*addr, busy);
            assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        }
        other => panic!("expected one ServiceListen error, got {other:?}"),
    }
    assert!(errors[0].to_string().starts_with(&format!(
        "failed to start health check for service ns/busy on {busy}: "
    )));
    assert!(server.local_addrs(&a).is_empty());
    check(&server, &b, 503, 0, true).await;

    // The next sync tries again.
    drop(blocker);
    assert!(server.sync_services(&wanted).is_empty());
    assert_eq!(server.local_addrs(&a), vec![busy]);
    check(&server, &a, 503, 0, true).await;
}

#[tokio::test]
async fn every_address_or_none() {
    let server = ServiceHealthServer::new(
        ListenAddresses::Ips(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
        healthy_proxy(),
    )
    .unwrap();
    let blocker = std::net::TcpListener::bind("[::1]:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let v4: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    let name = nsn("ns", "dual");

    // ::1 is taken: the IPv4 socket opened first is closed again.
    let errors = server.sync_services(&ports(&[(&name, port)]));
    assert!(
        matches!(&errors[..], [Error::ServiceListen { addr, .. }] if addr.is_ipv6()),
        "{errors:?}"
    );
    assert!(server.local_addrs(&name).is_empty());
    assert!(refused(v4).await);

    drop(blocker);
    assert!(server.sync_services(&ports(&[(&name, port)])).is_empty());
    let addrs = server.local_addrs(&name);
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], v4);
    assert_eq!(addrs[1].to_string(), format!("[::1]:{port}"));
    server.sync_endpoints(&counts(&[(&name, 1)]));
    check(&server, &name, 200, 1, true).await;
}

#[tokio::test]
async fn ipv6_only() {
    let server = ServiceHealthServer::new(
        ListenAddresses::Ips(vec!["::1".parse().unwrap()]),
        healthy_proxy(),
    )
    .unwrap();
    let name = nsn("ns", "v6");
    assert!(server.sync_services(&ports(&[(&name, 0)])).is_empty());
    server.sync_endpoints(&counts(&[(&name, 2)]));
    assert!(server.local_addrs(&name)[0].is_ipv6());
    check(&server, &name, 200, 2, true).await;
}

/// `All` listens on one dual-stack wildcard socket, as Go's `net.Listen("tcp", "0.0.0.0:p")`
/// does. (It listens on every address briefly; the test only connects over loopback.)
#[tokio::test]
async fn all_addresses_is_dual_stack() {
    let server = ServiceHealthServer::new(ListenAddresses::All, healthy_proxy()).unwrap();
    let name = nsn("ns", "all");
    assert!(server.sync_services(&ports(&[(&name, 0)])).is_empty());
    server.sync_endpoints(&counts(&[(&name, 1)]));
    let addrs = server.local_addrs(&name);
    assert_eq!(addrs.len(), 1);
    assert!(addrs[0].ip().is_unspecified());
    let port = addrs[0].port();
    for ip in ["127.0.0.1", "::1"] {
        let reply = get(SocketAddr::new(ip.parse().unwrap(), port), "/").await;
        assert_eq!(reply.status, 200, "via {ip}");
        assert_eq!(reply.body, expected_body(&name, 1, true));
    }
    assert!(server.sync_services(&BTreeMap::new()).is_empty());
    assert!(refused(SocketAddr::new("127.0.0.1".parse().unwrap(), port)).await);
}

#[tokio::test]
async fn closing_drops_open_connections() {
    let server = ServiceHealthServer::new(loopback_v4(), healthy_proxy()).unwrap();
    let name = nsn("ns", "keepalive");
    assert!(server.sync_services(&ports(&[(&name, 0)])).is_empty());
    let addr = server.local_addrs(&name)[0];

    // A kept-alive connection that has been served once.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let body = expected_body(&name, 0, true);
    let mut raw = Vec::new();
    while !raw.ends_with(body.as_bytes()) {
        let mut buf = [0; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert_ne!(
            n,
            0,
            "connection closed early: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(common::parse(&String::from_utf8(raw).unwrap()).status, 503);

    assert!(server.sync_services(&BTreeMap::new()).is_empty());
    let mut buf = [0; 16];
    match conn.read(&mut buf).await {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_server_closes_every_port() {
    let server = ServiceHealthServer::new(loopback_v4(), healthy_proxy()).unwrap();
    let (a, b) = (nsn("ns", "a"), nsn("ns", "b"));
    assert!(server.sync_services(&ports(&[(&a, 0), (&b, 0)])).is_empty());
    let addrs = [server.local_addrs(&a)[0], server.local_addrs(&b)[0]];
    check(&server, &a, 503, 0, true).await;
    drop(server);
    for addr in addrs {
        assert!(refused(addr).await, "{addr}");
    }
}

#[test]
fn needs_a_runtime() {
    assert!(matches!(
        ServiceHealthServer::new(loopback_v4(), healthy_proxy()),
        Err(Error::NoRuntime)
    ));
}

#[test]
fn serves_from_other_threads() {
    // Made on a runtime, synced from a plain thread, as a blocking proxier loop would.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(async { ServiceHealthServer::new(loopback_v4(), healthy_proxy()) })
        .unwrap();
    let name = nsn("ns", "threads");
    let addr = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(server.sync_services(&ports(&[(&name, 0)])).is_empty());
            server.sync_endpoints(&counts(&[(&name, 4)]));
            server.local_addrs(&name)[0]
        })
        .join()
        .unwrap()
    });
    let reply = runtime.block_on(get(addr, "/"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, expected_body(&name, 4, true));
}
