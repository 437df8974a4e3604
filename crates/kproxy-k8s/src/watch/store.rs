//! What the watch source has sent, per kind, and the events that bring a consumer from
//! there to what the API server says now.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube_runtime::watcher;
use tracing::{info, warn};

use super::WatchEvent;
use crate::Warning;
use crate::convert::{self, namespace_or_default};

/// A namespace/name key (`""` for the namespace of cluster-scoped objects).
pub(crate) type Key = (String, String);

/// One watched kind: how its objects are keyed and converted, and which events report
/// them.
pub(crate) trait Kind {
    /// The Kubernetes type.
    type Object;
    /// The model type.
    type Model: Hash;
    /// `Service`, `EndpointSlice`, `Node` (for logs).
    const NAME: &'static str;
    /// The object's key.
    fn key(obj: &Self::Object) -> Key;
    /// The model value, if the object is proxied, and the warnings.
    fn convert(obj: &Self::Object) -> (Option<Self::Model>, Vec<Warning>);
    /// The event for an added or changed object.
    fn applied(model: Self::Model) -> WatchEvent;
    /// The event for a deleted object.
    fn deleted(key: Key) -> WatchEvent;
}

/// Services.
pub(crate) struct Services;
/// EndpointSlices.
pub(crate) struct Slices;
/// This node's Node.
pub(crate) struct Nodes;

fn namespaced_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        namespace_or_default(meta.namespace.as_deref()).to_owned(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Kind for Services {
    type Object = core::Service;
    type Model = kproxy_model::Service;
    const NAME: &'static str = "Service";
    fn key(obj: &core::Service) -> Key {
        namespaced_key(&obj.metadata)
    }
    fn convert(obj: &core::Service) -> (Option<Self::Model>, Vec<Warning>) {
        convert::service(obj)
    }
    fn applied(model: Self::Model) -> WatchEvent {
        WatchEvent::ServiceApplied(model)
    }
    fn deleted((namespace, name): Key) -> WatchEvent {
        WatchEvent::ServiceDeleted { namespace, name }
    }
}

impl Kind for Slices {
    type Object = discovery::EndpointSlice;
    type Model = kproxy_model::EndpointSlice;
    const NAME: &'static str = "EndpointSlice";
    fn key(obj: &discovery::EndpointSlice) -> Key {
        namespaced_key(&obj.metadata)
    }
    fn convert(obj: &discovery::EndpointSlice) -> (Option<Self::Model>, Vec<Warning>) {
        convert::endpoint_slice(obj)
    }
    fn applied(model: Self::Model) -> WatchEvent {
        WatchEvent::SliceApplied(model)
    }
    fn deleted((namespace, name): Key) -> WatchEvent {
        WatchEvent::SliceDeleted { namespace, name }
    }
}

impl Kind for Nodes {
    type Object = core::Node;
    type Model = kproxy_model::Node;
    const NAME: &'static str = "Node";
    fn key(obj: &core::Node) -> Key {
        (String::new(), obj.metadata.name.clone().unwrap_or_default())
    }
    fn convert(obj: &core::Node) -> (Option<Self::Model>, Vec<Warning>) {
        let (node, warnings) = convert::node(obj);
        (Some(node), warnings)
    }
    fn applied(model: Self::Model) -> WatchEvent {
        WatchEvent::NodeApplied(model)
    }
    fn deleted((_, name): Key) -> WatchEvent {
        WatchEvent::NodeDeleted { name }
    }
}

/// A 128-bit fingerprint of a model value: what the store keeps of what it sent, instead
/// of a second copy of every object (the consumer has the first). Two different values
/// get the same fingerprint with a probability of about 2^-128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64, u64);

impl Fingerprint {
    fn of(model: &impl Hash) -> Fingerprint {
        // Two SipHash-1-3 runs, the second over a different stream (a prefix), so the halves
        // are independent.
        let mut a = DefaultHasher::new();
        model.hash(&mut a);
        let mut b = DefaultHasher::new();
        0x6b70_726f_7879_u64.hash(&mut b);
        model.hash(&mut b);
        Fingerprint(a.finish(), b.finish())
    }
}

/// The state of one kind: what was last sent per key, the warnings last logged per key,
/// and the re-list being collected.
pub(crate) struct Store<K: Kind> {
    /// The fingerprint of the last model value sent for each key.
    sent: BTreeMap<Key, Fingerprint>,
    /// The warnings last logged for each key (logged again only when they change).
    warned: BTreeMap<Key, Vec<Warning>>,
    /// Between `Init` and `InitDone`: every listed object, converted (`None`: listed but
    /// not proxied, or not convertible).
    relist: Option<BTreeMap<Key, Option<K::Model>>>,
    /// Whether one list has completed.
    listed: bool,
    /// Only objects with this name are accepted (the Node watch), if set.
    only_name: Option<String>,
}

impl<K: Kind> Store<K> {
    /// An empty store.
    pub(crate) fn new(only_name: Option<String>) -> Store<K> {
        Store {
            sent: BTreeMap::new(),
            warned: BTreeMap::new(),
            relist: None,
            listed: false,
            only_name,
        }
    }

    /// Whether one complete list has been received.
    pub(crate) fn listed(&self) -> bool {
        self.listed
    }

    /// How many objects the consumer has now.
    pub(crate) fn len(&self) -> usize {
        self.sent.len()
    }

    /// Converts `obj`, logging its warnings if they are new; `None` for an object of
    /// another name than the one watched.
    fn convert(&mut self, obj: &K::Object) -> Option<(Key, Option<K::Model>)> {
        let key = K::key(obj);
        if self.only_name.as_ref().is_some_and(|n| *n != key.1) {
            return None;
        }
        let (model, warnings) = K::convert(obj);
        if warnings.is_empty() {
            self.warned.remove(&key);
        } else if self.warned.get(&key) != Some(&warnings) {
            for w in &warnings {
                warn!("{w}");
            }
            self.warned.insert(key.clone(), warnings);
        }
        Some((key, model))
    }

    /// Records that `model` (or nothing, for an object that is not proxied) is the current
    /// value for `key`, pushing the event that tells the consumer if it differs from what
    /// was sent.
    fn set(&mut self, key: Key, model: Option<K::Model>, out: &mut Vec<WatchEvent>) {
        match model {
            Some(m) => {
                let fingerprint = Fingerprint::of(&m);
                if self.sent.get(&key) != Some(&fingerprint) {
                    self.sent.insert(key, fingerprint);
                    out.push(K::applied(m));
                }
            }
            None => {
                if self.sent.remove(&key).is_some() {
                    out.push(K::deleted(key));
                }
            }
        }
    }

    /// Handles one watcher event, pushing what the consumer must be told to `out`.
    pub(crate) fn handle(&mut self, ev: watcher::Event<K::Object>, out: &mut Vec<WatchEvent>) {
        match ev {
            watcher::Event::Init => self.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some((key, model)) = self.convert(&obj) {
                    self.relist.get_or_insert_default().insert(key, model);
                }
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let before = out.len();
                let gone: Vec<Key> = self
                    .sent
                    .keys()
                    .filter(|k| !matches!(listed.get(*k), Some(Some(_))))
                    .cloned()
                    .collect();
                let deleted = gone.len();
                for key in gone {
                    self.set(key, None, out);
                }
                self.warned.retain(|k, _| listed.contains_key(k));
                for (key, model) in listed {
                    if model.is_some() {
                        self.set(key, model, out);
                    }
                }
                if self.listed {
                    info!(
                        kind = K::NAME,
                        objects = self.sent.len(),
                        changed = out.len() - before - deleted,
                        deleted,
                        "re-listed"
                    );
                }
                self.listed = true;
            }
            watcher::Event::Apply(obj) => {
                if let Some((key, model)) = self.convert(&obj) {
                    self.set(key, model, out);
                }
            }
            watcher::Event::Delete(obj) => {
                let key = K::key(&obj);
                self.warned.remove(&key);
                self.set(key, None, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> core::Service {
        core::Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(core::ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..core::ServiceSpec::default()
            }),
            ..core::Service::default()
        }
    }

    fn names(out: &[WatchEvent]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                WatchEvent::ServiceApplied(s) => format!("+{}", s.name),
                WatchEvent::ServiceDeleted { name, .. } => format!("-{name}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn relist_sends_deletes_and_only_changes() {
        let mut store = Store::<Services>::new(None);
        let mut out = Vec::new();
        store.handle(watcher::Event::Init, &mut out);
        store.handle(watcher::Event::InitApply(svc("a", "10.0.0.1")), &mut out);
        store.handle(watcher::Event::InitApply(svc("b", "10.0.0.2")), &mut out);
        assert!(out.is_empty() && !store.listed());
        store.handle(watcher::Event::InitDone, &mut out);
        assert_eq!(names(&out), ["+a", "+b"]);
        assert!(store.listed());

        // The same object again: nothing to send.
        out.clear();
        store.handle(watcher::Event::Apply(svc("a", "10.0.0.1")), &mut out);
        assert!(out.is_empty());

        // A re-list without b, with a changed and c new.
        store.handle(watcher::Event::Init, &mut out);
        store.handle(watcher::Event::InitApply(svc("a", "10.0.0.9")), &mut out);
        store.handle(watcher::Event::InitApply(svc("c", "10.0.0.3")), &mut out);
        assert!(out.is_empty());
        store.handle(watcher::Event::InitDone, &mut out);
        assert_eq!(names(&out), ["-b", "+a", "+c"]);
        assert_eq!(store.len(), 2);

        // A delete of something never sent says nothing.
        out.clear();
        store.handle(watcher::Event::Delete(svc("zz", "10.0.0.1")), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn an_object_that_stops_being_proxied_is_deleted() {
        let mut store = Store::<Services>::new(None);
        let mut out = Vec::new();
        store.handle(watcher::Event::Apply(svc("a", "10.0.0.1")), &mut out);
        let mut labelled = svc("a", "10.0.0.1");
        labelled.metadata.labels = Some(
            [(convert::LABEL_HEADLESS.to_string(), String::new())]
                .into_iter()
                .collect(),
        );
        store.handle(watcher::Event::Apply(labelled), &mut out);
        assert_eq!(names(&out), ["+a", "-a"]);
    }

    #[test]
    fn node_store_ignores_other_names() {
        let mut store = Store::<Nodes>::new(Some("me".into()));
        let mut out = Vec::new();
        let node = |name: &str| core::Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..core::Node::default()
        };
        store.handle(watcher::Event::Apply(node("other")), &mut out);
        assert!(out.is_empty());
        store.handle(watcher::Event::Apply(node("me")), &mut out);
        assert!(matches!(&out[..], [WatchEvent::NodeApplied(n)] if n.name == "me"));
    }
}
