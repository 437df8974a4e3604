//! The watch source against a fake API server (tests/support/fake_api.rs) that lists and
//! watches the way the real one does: initial sync, changes, the label selector, re-lists
//! after `410 Gone`, outages, and bad objects.

#![cfg(feature = "watch")]

#[path = "support/fake_api.rs"]
mod fake_api;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::{FakeApi, Res};
use kproxy_k8s::convert::PROXIED_LABEL_SELECTOR;
use kproxy_k8s::watch::{self, ClientSettings, WatchEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, sleep, timeout};

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn service(name: &str, ip: &str) -> Value {
    json!({
        "kind": "Service",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {
            "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    })
}

fn slice(name: &str, svc: &str, ip: &str) -> Value {
    json!({
        "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": NODE}]
    })
}

fn node(zone: &str) -> Value {
    json!({
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"},
                                 {"type": "Hostname", "address": NODE}]}
    })
}

fn with_labels(mut obj: Value, labels: Value) -> Value {
    let mut all = obj["metadata"]["labels"].clone();
    if all.is_null() {
        all = json!({});
    }
    for (k, v) in labels.as_object().unwrap() {
        all[k] = v.clone();
    }
    obj["metadata"]["labels"] = all;
    obj
}

/// An event in a line: `+svc shop/web`, `-slice shop/web-1`, `+node node-a`, `synced`.
fn brief(e: &WatchEvent) -> String {
    match e {
        WatchEvent::ServiceApplied(s) => format!("+svc {}/{}", s.namespace, s.name),
        WatchEvent::ServiceDeleted { namespace, name } => format!("-svc {namespace}/{name}"),
        WatchEvent::SliceApplied(s) => format!("+slice {}/{}", s.namespace, s.name),
        WatchEvent::SliceDeleted { namespace, name } => format!("-slice {namespace}/{name}"),
        WatchEvent::NodeApplied(n) => format!("+node {}", n.name),
        WatchEvent::NodeDeleted { name } => format!("-node {name}"),
        WatchEvent::Synced => "synced".into(),
        other => format!("{other:?}"),
    }
}

fn briefs(events: &[WatchEvent]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(brief).collect();
    v.sort();
    v
}

/// The watch source running against a fake API server, its batches in a channel.
struct Rig {
    api: FakeApi,
    rx: UnboundedReceiver<Vec<WatchEvent>>,
    task: tokio::task::JoinHandle<()>,
    /// Every event received so far.
    seen: Vec<WatchEvent>,
}

impl Rig {
    async fn start(api: FakeApi) -> Rig {
        let client = watch::client(&ClientSettings::new().master(api.url()))
            .await
            .expect("client");
        let (tx, rx) = unbounded_channel();
        let task = tokio::spawn(async move { watch::run(client, NODE, tx).await });
        Rig {
            api,
            rx,
            task,
            seen: Vec::new(),
        }
    }

    /// The next batch.
    async fn batch(&mut self) -> Vec<WatchEvent> {
        let b = timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no batch within {WAIT:?}; seen {:?}", briefs(&self.seen)))
            .expect("watch source stopped");
        assert!(!b.is_empty(), "empty batch");
        self.seen.extend(b.iter().cloned());
        b
    }

    /// Every event until (and including) the batch with one that `done` accepts.
    async fn until(&mut self, done: impl Fn(&WatchEvent) -> bool) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        loop {
            let b = self.batch().await;
            let found = b.iter().any(&done);
            out.extend(b);
            if found {
                return out;
            }
        }
    }

    /// Until the event briefly described as `what`.
    async fn until_brief(&mut self, what: &str) -> Vec<WatchEvent> {
        self.until(|e| brief(e) == what).await
    }

    /// The events that arrive within `d` (to show that none do).
    async fn within(&mut self, d: Duration) -> Vec<WatchEvent> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(Some(b)) = timeout(
            end.saturating_duration_since(Instant::now()),
            self.rx.recv(),
        )
        .await
        {
            self.seen.extend(b.iter().cloned());
            out.extend(b);
        }
        out
    }

    /// Waits until the source watches `res`.
    async fn watching(&self, res: Res) {
        let end = Instant::now() + WAIT;
        while self.api.open_watches(res) == 0 {
            assert!(
                Instant::now() < end,
                "no watch on {res:?}: {:?}",
                self.api.requests()
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts with the usual objects (web, its slice, the node) and waits for the sync.
    async fn synced(api: FakeApi) -> Rig {
        api.apply(service("web", "10.96.0.10"));
        api.apply(slice("web-1", "web", "10.244.1.5"));
        api.apply(node("z1"));
        let mut rig = Rig::start(api).await;
        let initial = briefs(&rig.until(|e| *e == WatchEvent::Synced).await);
        for base in [
            "+node node-a",
            "+slice shop/web-1",
            "+svc shop/web",
            "synced",
        ] {
            assert!(
                initial.iter().any(|e| e == base),
                "{base} not in {initial:?}"
            );
        }
        assert!(!initial.iter().any(|e| e.starts_with('-')), "{initial:?}");
        rig
    }

    fn deletions(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(brief)
            .filter(|b| b.starts_with('-'))
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn service_of(events: &[WatchEvent], name: &str) -> kproxy_model::Service {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            WatchEvent::ServiceApplied(s) if s.name == name => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Service {name} in {:?}", briefs(events)))
}

#[tokio::test]
async fn initial_sync_waits_for_all_three_lists() {
    let api = FakeApi::start();
    api.apply(service("web", "10.96.0.10"));
    api.apply(slice("web-1", "web", "10.244.1.5"));
    api.apply(node("z1"));
    api.hold(Res::Nodes);
    let mut rig = Rig::start(api).await;

    // Services and slices come, but no Synced while the Node list is pending.
    let mut early = Vec::new();
    while !(early.iter().any(|e| brief(e) == "+svc shop/web")
        && early.iter().any(|e| brief(e) == "+slice shop/web-1"))
    {
        early.extend(rig.batch().await);
    }
    early.extend(rig.within(Duration::from_millis(500)).await);
    assert_eq!(briefs(&early), ["+slice shop/web-1", "+svc shop/web"]);

    rig.api.release(Res::Nodes);
    let rest = rig.until(|e| *e == WatchEvent::Synced).await;
    // The Node and Synced come together, Synced last.
    assert_eq!(
        rest.iter().map(brief).collect::<Vec<_>>(),
        ["+node node-a", "synced"]
    );
    let WatchEvent::NodeApplied(n) = &rest[0] else {
        unreachable!()
    };
    assert_eq!(n.zone.as_deref(), Some("z1"));
    assert_eq!(n.internal_ips[0].to_string(), "192.168.0.10");
    assert_eq!(n.pod_cidrs[0].to_string(), "10.244.1.0/24");

    // The requests are what kube-proxy's informers ask.
    for res in [Res::Services, Res::EndpointSlices] {
        let reqs = rig.api.requests_for(res);
        assert!(!reqs.is_empty());
        for r in reqs {
            assert_eq!(
                r.param("labelSelector"),
                Some("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"),
                "{r:?}"
            );
        }
    }
    let node_reqs = rig.api.requests_for(Res::Nodes);
    assert!(
        node_reqs
            .iter()
            .all(|r| r.param("fieldSelector") == Some("metadata.name=node-a")),
        "{node_reqs:?}"
    );

    // A later change: no second Synced.
    rig.api.apply(service("db", "10.96.0.11"));
    let b = rig.until_brief("+svc shop/db").await;
    assert!(!b.contains(&WatchEvent::Synced));
}

#[tokio::test]
async fn adds_updates_and_deletes_flow_through() {
    let mut rig = Rig::synced(FakeApi::start()).await;

    rig.api.apply(service("db", "10.96.0.11"));
    assert_eq!(briefs(&rig.batch().await), ["+svc shop/db"]);

    // An update the model shows.
    let mut db = service("db", "10.96.0.11");
    db["spec"]["ports"][0]["port"] = json!(5432);
    rig.api.apply(db.clone());
    let b = rig.batch().await;
    assert_eq!(service_of(&b, "db").ports[0].port, 5432);

    // Changes the model does not show send nothing: an annotation, a bookmark.
    db["metadata"]["annotations"] = json!({"note": "x"});
    rig.api.apply(db);
    rig.api.bookmark();
    assert_eq!(
        briefs(&rig.within(Duration::from_millis(500)).await),
        Vec::<String>::new()
    );

    // A slice with the trigger-time annotation.
    let mut s = slice("db-1", "db", "10.244.1.6");
    s["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": "2025-01-02T03:04:05Z"});
    rig.api.apply(s);
    let b = rig.batch().await;
    let WatchEvent::SliceApplied(sl) = &b[0] else {
        panic!("{:?}", briefs(&b))
    };
    assert_eq!(sl.service_name, "db");
    assert_eq!(
        sl.trigger_time,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_735_787_045))
    );

    // The node: a zone change is sent, a heartbeat is not.
    rig.api.apply(node("z2"));
    let b = rig.batch().await;
    assert!(matches!(&b[..], [WatchEvent::NodeApplied(n)] if n.zone.as_deref() == Some("z2")));
    let mut beat = node("z2");
    beat["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    rig.api.apply(beat);
    assert!(rig.within(Duration::from_millis(300)).await.is_empty());

    // Another node's changes never reach this node's watch.
    let mut other = node("z9");
    other["metadata"]["name"] = json!("node-b");
    rig.api.apply(other);
    assert!(rig.within(Duration::from_millis(300)).await.is_empty());

    assert!(rig.api.delete("EndpointSlice", "shop", "db-1"));
    assert_eq!(briefs(&rig.batch().await), ["-slice shop/db-1"]);
    assert!(rig.api.delete("Service", "shop", "db"));
    assert_eq!(briefs(&rig.batch().await), ["-svc shop/db"]);
}

#[tokio::test]
async fn the_label_selector_is_honoured() {
    let api = FakeApi::start();
    api.apply(with_labels(
        service("other-proxy", "10.96.0.20"),
        json!({"service.kubernetes.io/service-proxy-name": "cilium"}),
    ));
    api.apply(with_labels(
        service("headless", "10.96.0.21"),
        json!({"service.kubernetes.io/headless": ""}),
    ));
    api.apply(with_labels(
        slice("headless-1", "headless", "10.244.1.9"),
        json!({"service.kubernetes.io/headless": ""}),
    ));
    api.apply(with_labels(
        slice("other-1", "other-proxy", "10.244.1.8"),
        json!({"service.kubernetes.io/service-proxy-name": "cilium"}),
    ));
    let mut rig = Rig::synced(api).await;

    // Handing web to another proxy: the server sends DELETED (it left the selection).
    rig.api.apply(with_labels(
        service("web", "10.96.0.10"),
        json!({"service.kubernetes.io/service-proxy-name": "cilium"}),
    ));
    assert_eq!(briefs(&rig.batch().await), ["-svc shop/web"]);
    // And back: ADDED.
    rig.api.apply(service("web", "10.96.0.10"));
    assert_eq!(briefs(&rig.batch().await), ["+svc shop/web"]);
    // Changes to excluded objects are never seen.
    rig.api.apply(with_labels(
        service("headless", "10.96.0.22"),
        json!({"service.kubernetes.io/headless": ""}),
    ));
    assert!(rig.within(Duration::from_millis(300)).await.is_empty());
    assert!(
        rig.seen
            .iter()
            .all(|e| !brief(e).contains("headless") && !brief(e).contains("other")),
        "{:?}",
        briefs(&rig.seen)
    );

    // Lists and watches of both kinds carried exactly kube-proxy's selector.
    assert_eq!(
        PROXIED_LABEL_SELECTOR,
        "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    );
    for res in [Res::Services, Res::EndpointSlices] {
        let reqs = rig.api.requests_for(res);
        assert!(reqs.iter().any(|r| r.is_watch()) && reqs.iter().any(|r| !r.is_watch()));
        for r in &reqs {
            assert_eq!(
                r.param("labelSelector"),
                Some(PROXIED_LABEL_SELECTOR),
                "{r:?}"
            );
            assert_eq!(r.param("fieldSelector"), None, "{r:?}");
        }
    }
}

#[tokio::test]
async fn a_delete_missed_while_the_watch_was_down_is_delivered_after_the_relist() {
    let api = FakeApi::start();
    api.apply(service("db", "10.96.0.11"));
    api.apply(slice("db-1", "db", "10.244.1.6"));
    let mut rig = Rig::synced(api).await;
    let _ = rig.within(Duration::from_millis(100)).await;
    rig.watching(Res::Services).await;
    rig.watching(Res::EndpointSlices).await;
    let lists_before = rig
        .api
        .requests_for(Res::Services)
        .iter()
        .filter(|r| !r.is_watch())
        .count();

    // The watch breaks; meanwhile db is deleted, web changes, cache is added, and the
    // history is compacted: resuming the watch gets a 410, and a re-list follows.
    rig.api.set_down(true);
    assert!(rig.api.delete("Service", "shop", "db"));
    assert!(rig.api.delete("EndpointSlice", "shop", "db-1"));
    rig.api.apply(service("web", "10.96.0.99"));
    rig.api.apply(service("cache", "10.96.0.12"));
    rig.api.compact();
    rig.api.set_down(false);

    let mut events = Vec::new();
    while !(events.iter().any(|e| brief(e) == "-svc shop/db")
        && events.iter().any(|e| brief(e) == "-slice shop/db-1"))
    {
        events.extend(rig.batch().await);
    }
    assert_eq!(
        briefs(&events),
        [
            "+svc shop/cache",
            "+svc shop/web",
            "-slice shop/db-1",
            "-svc shop/db"
        ]
    );
    assert_eq!(
        service_of(&events, "web").cluster_ips[0].to_string(),
        "10.96.0.99"
    );
    assert!(!events.contains(&WatchEvent::Synced));
    let reqs = rig.api.requests_for(Res::Services);
    // A watch resumed from the old resource version, and a new list.
    assert!(reqs.iter().filter(|r| !r.is_watch()).count() > lists_before);

    // The same with the server up: an open watch expires (ERROR event with a 410
    // Status), the re-list is paginated and its second page's continue token expires
    // too (HTTP 410), and a Service deleted before the list is still reported.
    rig.api.apply(service("extra", "10.96.0.13"));
    rig.until_brief("+svc shop/extra").await;
    rig.watching(Res::Services).await;
    rig.api.set_page_size(Some(1));
    rig.api.hold(Res::Services);
    rig.api.expire_watches();
    // The Service list is now pending: nothing sees this delete as an event.
    assert!(rig.api.delete("Service", "shop", "cache"));
    rig.api.expire_next_continue();
    rig.api.release(Res::Services);
    let b = rig.until_brief("-svc shop/cache").await;
    assert_eq!(briefs(&b), ["-svc shop/cache"]);
    let continued: Vec<u16> = rig
        .api
        .requests_for(Res::Services)
        .into_iter()
        .filter(|r| r.param("continue").is_some())
        .map(|r| r.status)
        .collect();
    assert_eq!(continued, [410, 200]);

    // Nothing deleted that exists.
    let mut deletions = rig.deletions();
    deletions.sort();
    assert_eq!(
        deletions,
        ["-slice shop/db-1", "-svc shop/cache", "-svc shop/db"]
    );
}

#[tokio::test]
async fn an_outage_sends_no_deletions_and_recovery_resumes_events() {
    let mut rig = Rig::synced(FakeApi::start()).await;
    rig.watching(Res::Services).await;
    rig.watching(Res::EndpointSlices).await;
    rig.watching(Res::Nodes).await;

    rig.api.set_down(true);
    // Several retries fail while the server is down: nothing is sent.
    assert!(rig.within(Duration::from_secs(3)).await.is_empty());
    // Changes made meanwhile (the history is kept: the watch resumes without a re-list).
    rig.api.apply(service("db", "10.96.0.11"));
    rig.api.set_down(false);
    assert_eq!(
        briefs(&rig.until_brief("+svc shop/db").await),
        ["+svc shop/db"]
    );
    rig.api.apply(slice("db-1", "db", "10.244.1.6"));
    rig.until_brief("+slice shop/db-1").await;
    assert!(rig.deletions().is_empty(), "{:?}", rig.deletions());

    // The watches resumed from where they were: no second list of Services.
    let lists = rig
        .api
        .requests_for(Res::Services)
        .iter()
        .filter(|r| !r.is_watch())
        .count();
    assert_eq!(lists, 1);
}

/// Collects what `tracing` writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn bad_objects_are_warned_about_and_the_rest_continue() {
    use tracing_subscriber::util::SubscriberInitExt;
    let logs = Logs::default();
    let writer = logs.clone();
    let _guard = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();

    let api = FakeApi::start();
    let mut bad = service("bad", "10.96.0.300");
    bad["spec"]["ports"] = json!([
        {"name": "ping", "port": 7, "protocol": "ICMP"},
        {"name": "http", "port": 80, "protocol": "TCP"}
    ]);
    api.apply(bad.clone());
    let mut bad_slice = slice("bad-1", "bad", "not-an-ip");
    bad_slice["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"addresses": ["10.244.1.7"], "conditions": {"ready": true}}));
    api.apply(bad_slice);
    let mut odd = slice("odd-1", "bad", "10.244.1.8");
    odd["addressType"] = json!("IPv5");
    api.apply(odd);
    let mut rig = Rig::synced(api).await;

    let bad = service_of(&rig.seen, "bad");
    assert!(bad.cluster_ips.is_empty());
    assert_eq!(bad.ports.len(), 1);
    let slice = rig
        .seen
        .iter()
        .find_map(|e| match e {
            WatchEvent::SliceApplied(s) if s.name == "bad-1" => Some(s.clone()),
            _ => None,
        })
        .expect("bad-1 sent");
    assert_eq!(slice.endpoints.len(), 1);
    assert_eq!(slice.endpoints[0].address.to_string(), "10.244.1.7");
    assert!(!rig.seen.iter().any(|e| brief(e).contains("odd-1")));

    let text = logs.text();
    for needle in [
        "Service shop/bad: spec.clusterIPs[0]: invalid IP address \\\"10.96.0.300\\\"",
        "Service shop/bad: spec.ports[0].protocol: unknown protocol \\\"ICMP\\\"",
        "EndpointSlice shop/bad-1: endpoints[0].addresses[0]: invalid IP address \\\"not-an-ip\\\"",
        "EndpointSlice shop/odd-1: addressType: unknown address type \\\"IPv5\\\"",
    ] {
        let plain = needle.replace("\\\"", "\"");
        assert!(
            text.contains(needle) || text.contains(&plain),
            "missing {plain:?} in:\n{text}"
        );
    }

    // The rest goes on; the same bad object again is not warned about again.
    let warned = text.matches("ICMP").count();
    let mut again = service("bad", "10.96.0.300");
    again["spec"]["ports"] = json!([
        {"name": "ping", "port": 7, "protocol": "ICMP"},
        {"name": "http", "port": 80, "protocol": "TCP"}
    ]);
    again["metadata"]["annotations"] = json!({"touched": "yes"});
    rig.api.apply(again);
    rig.api.apply(service("good", "10.96.0.30"));
    rig.until_brief("+svc shop/good").await;
    assert_eq!(logs.text().matches("ICMP").count(), warned);
}
