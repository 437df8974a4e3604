//! A fake Kubernetes API server for tests: Services, EndpointSlices and Nodes, listed and
//! watched the way the real API server serves them, controlled by the test.
//!
//! It speaks HTTP/1.1 on 127.0.0.1 (hyper 1) and answers what kube-runtime's watcher asks:
//!
//! - `GET /api/v1/services?labelSelector=…&limit=500` (lists, paginated with `continue`
//!   when [`FakeApi::set_page_size`] is set), likewise `/apis/discovery.k8s.io/v1/endpointslices`
//!   and `/api/v1/nodes?fieldSelector=metadata.name%3D…`;
//! - `…?watch=true&timeoutSeconds=290&labelSelector=…&allowWatchBookmarks=true&resourceVersion=N`:
//!   newline-delimited JSON events `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`,
//!   first the history after `N`, then live changes.
//!
//! Label selectors (`k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (…)`, `k notin (…)`) and field
//! selectors (`metadata.name`, `metadata.namespace`) are really applied, including the
//! real server's rule that a change which makes an object stop (start) matching a watch's
//! selector is sent as DELETED (ADDED). Every request is recorded ([`FakeApi::requests`]).
//!
//! The test can: apply and delete objects, send bookmarks, compact the history (a watch
//! resuming from before it gets an ERROR event with a 410 Status, and a list continuing a
//! page from before it gets HTTP 410), expire open watches (ERROR 410), end open watches,
//! hold back one kind's lists, and take the server down (connections dropped, new ones
//! refused) and up again on the same port.
//!
//! The server runs on its own thread with its own Tokio runtime, so it serves sync and
//! async tests alike; started from a thread inside a network namespace, it listens there.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// The three resources served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    /// `v1` Services.
    Services,
    /// `discovery.k8s.io/v1` EndpointSlices.
    EndpointSlices,
    /// `v1` Nodes.
    Nodes,
}

impl Res {
    /// The collection's path.
    pub fn path(self) -> &'static str {
        match self {
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::Nodes => "/api/v1/nodes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Nodes => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn namespaced(self) -> bool {
        self != Res::Nodes
    }

    fn from_kind(kind: &str) -> Res {
        match kind {
            "Service" => Res::Services,
            "EndpointSlice" => Res::EndpointSlices,
            "Node" => Res::Nodes,
            other => panic!("fake API server: unsupported kind {other:?}"),
        }
    }

    fn from_path(path: &str) -> Option<Res> {
        [Res::Services, Res::EndpointSlices, Res::Nodes]
            .into_iter()
            .find(|r| r.path() == path)
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The path.
    pub path: String,
    /// The query parameters, decoded.
    pub query: BTreeMap<String, String>,
    /// The response's status code (0 while the request is pending).
    pub status: u16,
}

impl Recorded {
    /// Whether this was a watch.
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|v| v == "true")
    }

    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

/// A change in the history.
#[derive(Clone)]
struct Change {
    rv: u64,
    res: Res,
    /// The object before (None: added).
    old: Option<Value>,
    /// The object after (None: deleted; then `old` is the deleted object with the new rv).
    new: Option<Value>,
}

/// An open watch.
struct OpenWatch {
    res: Res,
    bookmarks: bool,
    labels: Selector,
    fields: FieldSelector,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Changes with rv <= `compacted` are gone: resuming from an older rv gives 410.
    compacted: u64,
    objects: BTreeMap<(Res, String, String), Value>,
    history: Vec<Change>,
    watches: Vec<OpenWatch>,
    requests: Vec<Recorded>,
    page_size: Option<usize>,
    expire_next_continue: bool,
    held: HashSet<Res>,
    down: bool,
    /// Whether the port is open (the accept loop's view).
    listening: bool,
    conns: Vec<tokio::task::AbortHandle>,
}

/// The fake API server. Dropping it stops the server.
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    /// Up/down for the accept loop; the held kinds for waiting list requests.
    down_tx: watch::Sender<bool>,
    held_tx: watch::Sender<u64>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a server on 127.0.0.1, on a free port.
    pub fn start() -> FakeApi {
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            // The listener is bound before `start` returns.
            listening: true,
            ..State::default()
        }));
        let (down_tx, down_rx) = watch::channel(false);
        let (held_tx, held_rx) = watch::channel(0u64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    addr_tx.send(addr).expect("addr channel");
                    tokio::select! {
                        _ = accept_loop(listener, addr, st, down_rx, held_rx) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("thread");
        let addr = addr_rx.recv().expect("fake API server did not start");
        FakeApi {
            state,
            addr,
            down_tx,
            held_tx,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates or replaces an object (`kind`, `metadata.name` and, for namespaced kinds,
    /// `metadata.namespace` — `default` when missing — identify it). Returns its new
    /// resource version.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let res = Res::from_kind(obj["kind"].as_str().expect("object without kind"));
        obj["apiVersion"] = json!(res.api_version());
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object without metadata.name")
            .to_owned();
        let ns = if res.namespaced() {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            String::new()
        };
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let old = st.objects.insert((res, ns, name), obj.clone());
        st.record(Change {
            rv,
            res,
            old,
            new: Some(obj),
        });
        rv
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let res = Res::from_kind(kind);
        let ns = if res.namespaced() { namespace } else { "" };
        let mut st = self.lock();
        let Some(mut old) = st.objects.remove(&(res, ns.to_owned(), name.to_owned())) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.record(Change {
            rv,
            res,
            old: Some(old),
            new: None,
        });
        true
    }

    /// Sends a BOOKMARK with the current resource version to every open watch that asked
    /// for bookmarks.
    pub fn bookmark(&self) {
        let st = self.lock();
        let rv = st.rv;
        for w in st.watches.iter().filter(|w| w.bookmarks) {
            let _ = w.tx.send(line(&json!({
                "type": "BOOKMARK",
                "object": {"kind": w.res.kind(), "apiVersion": w.res.api_version(),
                           "metadata": {"resourceVersion": rv.to_string()}}
            })));
        }
    }

    /// Forgets the history so far: watches resuming from an older resource version, and
    /// lists continuing from a page of an older one, get `410 Gone`.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Compacts, then sends every open watch an ERROR event with a 410 Status
    /// ("too old resource version") and closes it, as the API server does to a watcher
    /// that fell too far behind.
    pub fn expire_watches(&self) {
        self.compact();
        let mut st = self.lock();
        let rv = st.rv;
        for w in st.watches.drain(..) {
            let _ = w.tx.send(line(
                &json!({"type": "ERROR", "object": gone_status(rv - 1, rv)}),
            ));
        }
    }

    /// Ends every open watch cleanly (as the server's watch timeout does); clients resume
    /// from their last resource version.
    pub fn end_watches(&self) {
        self.lock().watches.clear();
    }

    /// Makes list requests for `res` wait until [`release`](FakeApi::release).
    pub fn hold(&self, res: Res) {
        self.lock().held.insert(res);
        self.held_tx.send_modify(|n| *n += 1);
    }

    /// Lets held list requests for `res` through.
    pub fn release(&self, res: Res) {
        self.lock().held.remove(&res);
        self.held_tx.send_modify(|n| *n += 1);
    }

    /// At most this many items per list page (the server may always return fewer than
    /// `limit`); `None`: only `limit` counts.
    pub fn set_page_size(&self, size: Option<usize>) {
        self.lock().page_size = size;
    }

    /// Makes the next list request with a continue token fail with `410 Gone`, as if the
    /// history had been compacted between two pages.
    pub fn expire_next_continue(&self) {
        self.lock().expire_next_continue = true;
    }

    /// Takes the server down (every connection dropped mid-stream, the port closed: new
    /// connections are refused) or brings it back on the same port.
    pub fn set_down(&self, down: bool) {
        {
            let mut st = self.lock();
            st.down = down;
            if down {
                st.watches.clear();
                for c in st.conns.drain(..) {
                    c.abort();
                }
            }
        }
        self.down_tx.send_replace(down);
        // Wait until the port is closed or open again. (Not by connecting: the caller's
        // thread may be in another network namespace than the server.)
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.lock().listening == down {
            assert!(
                Instant::now() < deadline,
                "fake API server did not go down/up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests for `res` so far.
    pub fn requests_for(&self, res: Res) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == res.path())
            .collect()
    }

    /// How many watches are open for `res`.
    pub fn open_watches(&self, res: Res) -> usize {
        let mut st = self.lock();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.iter().filter(|w| w.res == res).count()
    }

    /// Waits until `n` watches for `res` are open.
    pub fn wait_watching(&self, res: Res, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.open_watches(res) < n {
            assert!(
                Instant::now() < deadline,
                "no watch on {res:?} within {timeout:?}; requests: {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    /// Appends a change to the history and sends it to the open watches it concerns.
    fn record(&mut self, change: Change) {
        self.watches.retain(|w| {
            if w.res != change.res {
                return true;
            }
            match event_for(&change, &w.labels, &w.fields) {
                Some(ev) => w.tx.send(line(&ev)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        self.history.push(change);
    }
}

/// The watch event a change gives a watch with these selectors (the API server's rules:
/// leaving the selection is DELETED, entering it ADDED).
fn event_for(change: &Change, labels: &Selector, fields: &FieldSelector) -> Option<Value> {
    let matches = |o: &Option<Value>| {
        o.as_ref()
            .is_some_and(|o| labels.matches(o) && fields.matches(o))
    };
    let (was, is) = (matches(&change.old), matches(&change.new));
    let (kind, obj) = match (&change.new, was, is) {
        (None, true, _) => ("DELETED", change.old.as_ref()?.clone()),
        (Some(new), false, true) => ("ADDED", new.clone()),
        (Some(new), true, true) => ("MODIFIED", new.clone()),
        (Some(new), true, false) => ("DELETED", new.clone()),
        _ => return None,
    };
    let mut obj = obj;
    obj["kind"] = json!(change.res.kind());
    Some(json!({"type": kind, "object": obj}))
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).unwrap();
    s.push(b'\n');
    Bytes::from(s)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn gone_status(asked: u64, current: u64) -> Value {
    status(
        410,
        "Expired",
        &format!("too old resource version: {asked} ({current})"),
    )
}

async fn accept_loop(
    first: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mut down: watch::Receiver<bool>,
    held: watch::Receiver<u64>,
) {
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                let _ = down.wait_for(|d| !*d).await;
                // The port was ours a moment ago: rebinding it only races TIME_WAIT, which
                // SO_REUSEADDR (set by Tokio) allows.
                let l = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                };
                state.lock().unwrap().listening = true;
                l
            }
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let st = state.clone();
                    let held = held.clone();
                    let task = tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            handle(req, st.clone(), held.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                    let mut st = state.lock().unwrap();
                    st.conns.retain(|c| !c.is_finished());
                    if st.down {
                        task.abort();
                    } else {
                        st.conns.push(task.abort_handle());
                    }
                }
                _ = down.wait_for(|d| *d) => break,
            }
        }
        drop(l);
        state.lock().unwrap().listening = false;
    }
}

/// A response body: all at once, or a watch stream.
enum ApiBody {
    Full(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ApiBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<ApiBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(ApiBody::Full(Some(Bytes::from(
            serde_json::to_vec(body).unwrap(),
        ))))
        .unwrap()
}

/// Decodes `application/x-www-form-urlencoded`.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    held: watch::Receiver<u64>,
) -> Result<Response<ApiBody>, Infallible> {
    let rec = Recorded {
        path: req.uri().path().to_owned(),
        query: parse_query(req.uri().query().unwrap_or("")),
        status: 0,
    };
    let index = {
        let mut st = state.lock().unwrap();
        st.requests.push(rec.clone());
        st.requests.len() - 1
    };
    let resp = answer(req.method().clone(), rec, &state, held).await;
    state.lock().unwrap().requests[index].status = resp.status().as_u16();
    Ok(resp)
}

async fn answer(
    method: hyper::Method,
    rec: Recorded,
    state: &Mutex<State>,
    mut held: watch::Receiver<u64>,
) -> Response<ApiBody> {
    let path = rec.path.clone();
    let Some(res) = Res::from_path(&path) else {
        return respond(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    if method != hyper::Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", "only GET is served"),
        );
    }
    let labels = match Selector::parse(rec.param("labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                &status(
                    400,
                    "BadRequest",
                    &format!("unable to parse requirement: {e}"),
                ),
            );
        }
    };
    let fields = match FieldSelector::parse(rec.param("fieldSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => {
            return respond(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e));
        }
    };
    if rec.is_watch() {
        return watch(res, &rec, labels, fields, state);
    }
    // A held kind's lists wait.
    let _ = held
        .wait_for(|_| !state.lock().unwrap().held.contains(&res))
        .await;
    list(res, &rec, &labels, &fields, state)
}

fn list(
    res: Res,
    rec: &Recorded,
    labels: &Selector,
    fields: &FieldSelector,
    state: &Mutex<State>,
) -> Response<ApiBody> {
    let mut st = state.lock().unwrap();
    // A continue token is "<rv>:<offset>": the list's resource version and where the next
    // page starts.
    let (rv, offset) = match rec.param("continue") {
        Some(token) => {
            let (rv, offset) = token.split_once(':').unwrap_or(("0", "0"));
            let rv: u64 = rv.parse().unwrap_or(0);
            let expire = std::mem::take(&mut st.expire_next_continue);
            if rv < st.compacted || expire {
                return respond(
                    StatusCode::GONE,
                    &status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                );
            }
            (rv, offset.parse().unwrap_or(0))
        }
        None => {
            if let Some(asked) = rec
                .param("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                && asked != 0
                && asked < st.compacted
            {
                return respond(StatusCode::GONE, &gone_status(asked, st.rv));
            }
            (st.rv, 0usize)
        }
    };
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((r, _, _), o)| *r == res && labels.matches(o) && fields.matches(o))
        .map(|(_, o)| {
            let mut o = o.clone();
            // The API server leaves kind and apiVersion out of list items.
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let limit = rec
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX)
        .min(st.page_size.unwrap_or(usize::MAX));
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(format!("{rv}:{next}"));
    }
    respond(
        StatusCode::OK,
        &json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(),
                "metadata": metadata, "items": page}),
    )
}

fn watch(
    res: Res,
    rec: &Recorded,
    labels: Selector,
    fields: FieldSelector,
    state: &Mutex<State>,
) -> Response<ApiBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = state.lock().unwrap();
    let from = rec.param("resourceVersion").unwrap_or("");
    match from.parse::<u64>() {
        // "" or "0": the current state as ADDED events, then changes.
        Err(_) | Ok(0) => {
            for ((r, _, _), o) in &st.objects {
                if *r == res && labels.matches(o) && fields.matches(o) {
                    let mut o = o.clone();
                    o["kind"] = json!(res.kind());
                    let _ = tx.send(line(&json!({"type": "ADDED", "object": o})));
                }
            }
        }
        Ok(rv) if rv < st.compacted => {
            let _ = tx.send(line(
                &json!({"type": "ERROR", "object": gone_status(rv, st.rv)}),
            ));
            drop(tx);
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(ApiBody::Stream(rx))
                .unwrap();
        }
        Ok(rv) => {
            for c in st.history.iter().filter(|c| c.rv > rv && c.res == res) {
                if let Some(ev) = event_for(c, &labels, &fields) {
                    let _ = tx.send(line(&ev));
                }
            }
        }
    }
    st.watches.push(OpenWatch {
        res,
        bookmarks: rec.param("allowWatchBookmarks") == Some("true"),
        labels,
        fields,
        tx,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(ApiBody::Stream(rx))
        .unwrap()
}

/// A parsed label selector.
#[derive(Clone, Debug, Default)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    /// Parses a label selector as the API server does (the subset kube-proxy uses and the
    /// set-based forms).
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for part in parts.into_iter().map(str::trim) {
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty requirement in {s:?}"));
            }
            let valid_key = |k: &str| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(k.trim().to_owned(), vec![v.trim().to_owned()])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::In(k.trim().to_owned(), vec![v.trim().to_owned()])
            } else if let Some((k, set)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().to_owned(), set_values(set)?)
            } else if let Some((k, set)) = part.split_once(" in ") {
                Requirement::In(k.trim().to_owned(), set_values(set)?)
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &req {
                Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _) => k,
            };
            if !valid_key(key) {
                return Err(format!("invalid label key {key:?}"));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }
}

fn set_values(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values) in {set:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

/// A parsed field selector: `metadata.name` and `metadata.namespace`, `=`, `==`, `!=`.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a field selector.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector: {part:?}"));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {field}"));
            }
            out.push((field.to_owned(), eq, value.to_owned()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether an object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let key = field.trim_start_matches("metadata.");
            let actual = obj["metadata"][key].as_str().unwrap_or("");
            (actual == value) == *eq
        })
    }
}
