//! `/healthz` and `/livez` over real HTTP on loopback, with a fake clock.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{get, refused};
use kproxy_healthcheck::{FakeClock, ProxyHealthServer, RequestCounts, bind};
use kproxy_model::{IpFamily, Node};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    health: ProxyHealthServer,
    clock: FakeClock,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_on(ip: &str) -> Running {
    let clock = FakeClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    let health = ProxyHealthServer::with_clock(TIMEOUT, Arc::new(clock.clone()));
    let listener = bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = health.clone();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        health,
        clock,
        addr,
        stop,
        task,
    }
}

async fn start() -> Running {
    start_on("127.0.0.1").await
}

/// Asserts the status of both endpoints and upstream's headers.
async fn expect(r: &Running, healthz: u16, livez: u16) {
    for (path, status) in [("/healthz", healthz), ("/livez", livez)] {
        let reply = get(r.addr, path).await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("content-length"), reply.body.len().to_string());
    }
}

#[tokio::test]
async fn bodies_are_upstreams_json() {
    let r = start().await;

    // Nothing synced yet: healthy, "lastUpdated" is now, no per-family status.
    let reply = get(r.addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","nodeEligible":true,"healthy":true}"#
    );
    let reply = get(r.addr, "/livez").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","healthy":true}"#
    );

    // Both families synced, then time passes with nothing queued: still healthy, and a
    // healthy answer reports "now" as lastUpdated.
    r.health.updated(IpFamily::V6);
    r.health.updated(IpFamily::V4);
    r.clock.step(Duration::from_millis(25_500));
    let reply = get(r.addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        concat!(
            r#"{"lastUpdated":"2023-11-14T22:13:45.5Z","currentTime":"2023-11-14T22:13:45.5Z","#,
            r#""nodeEligible":true,"healthy":true,"status":{"#,
            r#""IPv4":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":true},"#,
            r#""IPv6":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":true}}}"#
        )
    );

    // IPv4 late: 503, lastUpdated is the most recent update of any family.
    r.health.updated(IpFamily::V6);
    r.health.queued_update(IpFamily::V4);
    r.clock.step(TIMEOUT);
    let reply = get(r.addr, "/livez").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        concat!(
            r#"{"lastUpdated":"2023-11-14T22:13:45.5Z","currentTime":"2023-11-14T22:13:55.5Z","#,
            r#""healthy":false,"status":{"#,
            r#""IPv4":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":false},"#,
            r#""IPv6":{"lastUpdated":"2023-11-14T22:13:45.5Z","healthy":true}}}"#
        )
    );
}

/// Upstream's `testProxyHealthUpdater` sequence, on both endpoints, with its request
/// counting.
#[tokio::test]
async fn upstream_update_sequence() {
    let r = start().await;
    let (v4, v6) = (IpFamily::V4, IpFamily::V6);
    let step = |secs| r.clock.step(Duration::from_secs(secs));
    let mut expected = RequestCounts::default();
    macro_rules! check {
        ($status:expr) => {
            expect(&r, $status, $status).await;
            if $status == 200 {
                expected.healthz_200 += 1;
                expected.livez_200 += 1;
            } else {
                expected.healthz_503 += 1;
                expected.livez_503 += 1;
            }
            assert_eq!(r.health.request_counts(), expected);
            assert_eq!(r.health.is_healthy(), $status == 200);
        };
    }

    // 200 by default.
    check!(200);
    // 200 after the first update of both families.
    r.health.updated(v4);
    r.health.updated(v6);
    check!(200);
    // Still 200 while nothing is queued, however long.
    step(25);
    check!(200);
    // 503 when IPv4 exceeds the timeout.
    r.health.queued_update(v4);
    step(25);
    check!(503);
    // 200 after both update.
    r.health.updated(v4);
    r.health.updated(v6);
    step(5);
    check!(200);
    // 503 when IPv6 exceeds the timeout.
    r.health.queued_update(v6);
    step(25);
    check!(503);
    r.health.updated(v4);
    r.health.updated(v6);
    step(5);
    check!(200);
    // 503 when both exceed it.
    r.health.queued_update(v4);
    r.health.queued_update(v6);
    step(25);
    check!(503);
    r.health.updated(v4);
    r.health.updated(v6);
    step(5);
    check!(200);
    // IPv6 late: updating IPv4 does not help.
    r.health.queued_update(v6);
    step(25);
    check!(503);
    r.health.updated(v4);
    check!(503);
    r.health.updated(v6);
    check!(200);
    // Both late: 503 until both have updated.
    r.health.queued_update(v4);
    r.health.queued_update(v6);
    step(25);
    check!(503);
    r.health.updated(v4);
    check!(503);
    r.health.updated(v6);
    check!(200);
}

#[tokio::test]
async fn timeout_boundary_and_oldest_queued_update() {
    let r = start().await;
    r.health.updated(IpFamily::V4);
    r.health.queued_update(IpFamily::V4);
    r.clock.step(TIMEOUT - Duration::from_nanos(1));
    // A later queued update does not move the deadline.
    r.health.queued_update(IpFamily::V4);
    expect(&r, 200, 200).await;
    r.clock.step(Duration::from_nanos(1));
    expect(&r, 503, 503).await;
}

#[tokio::test]
async fn family_never_synced_is_not_considered() {
    let r = start().await;
    r.health.updated(IpFamily::V4);
    // IPv6 has queued an update but never completed a sync: still starting up.
    r.health.queued_update(IpFamily::V6);
    r.clock.step(TIMEOUT * 10);
    expect(&r, 200, 200).await;
}

#[tokio::test]
async fn node_state_only_affects_healthz() {
    let r = start().await;
    r.health.updated(IpFamily::V4);
    assert!(r.health.node_eligible());

    // Neither being deleted nor tainted for deletion (other taints are not modelled): eligible.
    r.health.sync_node(&Node::default());
    expect(&r, 200, 200).await;

    // Marked for deletion by the cluster autoscaler.
    r.health.sync_node(&Node {
        to_be_deleted_taint: true,
        ..Node::default()
    });
    assert!(!r.health.node_eligible());
    assert!(r.health.is_healthy());
    expect(&r, 503, 200).await;
    let reply = get(r.addr, "/healthz").await;
    // The proxy itself is healthy; lastUpdated is the last update, not now.
    assert_eq!(
        reply.body,
        concat!(
            r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","#,
            r#""nodeEligible":false,"healthy":true,"status":{"#,
            r#""IPv4":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":true}}}"#
        )
    );

    r.health.sync_node(&Node::default());
    expect(&r, 200, 200).await;

    // Being deleted.
    r.health.sync_node(&Node {
        deleting: true,
        ..Node::default()
    });
    expect(&r, 503, 200).await;

    assert_eq!(
        r.health.request_counts(),
        RequestCounts {
            healthz_200: 2,
            healthz_503: 3,
            livez_200: 4,
            livez_503: 0,
        }
    );
}

#[tokio::test]
async fn other_paths_are_not_found_and_not_counted() {
    let r = start().await;
    for path in ["/", "/healthz/", "/livez/x", "/metrics"] {
        let reply = get(r.addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.body, "404 page not found\n");
        assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
    }
    // The query string does not matter.
    assert_eq!(get(r.addr, "/healthz?verbose=1").await.status, 200);
    assert_eq!(
        r.health.request_counts(),
        RequestCounts {
            healthz_200: 1,
            ..RequestCounts::default()
        }
    );
}

#[tokio::test]
async fn head_has_no_body() {
    let r = start().await;
    let reply = common::request(r.addr, "HEAD", "/healthz").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.body, "");
}

#[tokio::test]
async fn serves_ipv6() {
    let r = start_on("::1").await;
    assert!(r.addr.is_ipv6());
    r.health.updated(IpFamily::V6);
    expect(&r, 200, 200).await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let r = start().await;
    expect(&r, 200, 200).await;
    r.stop.send(()).unwrap();
    r.task.await.unwrap();
    assert!(refused(r.addr).await);
}
