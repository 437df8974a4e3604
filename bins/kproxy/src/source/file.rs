//! Manifests on disk (a file or a directory), re-read when they change: the daemon's source
//! when there is no cluster, and the test harness's way to add and remove endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use kproxy_k8s::manifests::{self, Manifests};
use kproxy_model::{EndpointSlice, Node, Service};
use notify::{RecursiveMode, Watcher};
use tracing::{info, warn};

use crate::engine::Event;

/// The objects of one reading, keyed by namespace/name.
#[derive(Debug, Default, Clone, PartialEq)]
struct Snapshot {
    services: BTreeMap<(String, String), Service>,
    slices: BTreeMap<(String, String), EndpointSlice>,
    node: Option<Node>,
}

impl Snapshot {
    fn from(m: Manifests, node_name: &str) -> Snapshot {
        Snapshot {
            services: m
                .services
                .into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect(),
            slices: m
                .endpoint_slices
                .into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect(),
            node: m.nodes.into_iter().find(|n| n.name == node_name),
        }
    }

    /// The events that turn `self` into `next`.
    fn diff(&self, next: &Snapshot) -> Vec<Event> {
        let mut out = Vec::new();
        for (k, s) in &next.services {
            if self.services.get(k) != Some(s) {
                out.push(Event::Service(s.clone()));
            }
        }
        for (k, s) in &next.slices {
            if self.slices.get(k) != Some(s) {
                out.push(Event::Slice(s.clone()));
            }
        }
        for (ns, name) in self.slices.keys().filter(|k| !next.slices.contains_key(*k)) {
            out.push(Event::SliceDeleted {
                namespace: ns.clone(),
                name: name.clone(),
            });
        }
        for (ns, name) in self
            .services
            .keys()
            .filter(|k| !next.services.contains_key(*k))
        {
            out.push(Event::ServiceDeleted {
                namespace: ns.clone(),
                name: name.clone(),
            });
        }
        if let Some(n) = next
            .node
            .as_ref()
            .filter(|n| self.node.as_ref() != Some(*n))
        {
            out.push(Event::Node(n.clone()));
        }
        out
    }
}

fn read(path: &Path, node_name: &str) -> Option<Snapshot> {
    match manifests::load_path(path) {
        Ok(m) => {
            for w in &m.warnings {
                warn!("{w}");
            }
            Some(Snapshot::from(m, node_name))
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read manifests; keeping the last ones");
            None
        }
    }
}

/// Watches `path` and sends the changes to `events`: the whole content first, then
/// [`Event::Synced`], then a diff after every change on disk. Runs until `events` closes.
/// Returns an error only if the first reading fails.
pub fn spawn(
    path: PathBuf,
    node_name: String,
    events: Sender<Event>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let first = manifests::load_path(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    for w in &first.warnings {
        warn!("{w}");
    }
    let mut current = Snapshot::from(first, &node_name);
    if current.node.is_none() {
        warn!(node = %node_name, "no Node object for this node in the manifests");
    }
    let _ = events.send(Event::Batch {
        revision: 0,
        events: Snapshot::default().diff(&current),
    });
    let _ = events.send(Event::Synced);
    info!(
        path = %path.display(),
        services = current.services.len(),
        slices = current.slices.len(),
        "manifests loaded"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(());
        }
    })?;
    // Watch the parent directory too: editors and `mv` replace files.
    let watch_root = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    watcher.watch(&watch_root, RecursiveMode::Recursive)?;
    Ok(std::thread::Builder::new()
        .name("file-source".into())
        .spawn(move || {
            let _watcher = watcher;
            let mut revision = 0;
            while rx.recv().is_ok() {
                // Let a burst of writes settle, then read once.
                std::thread::sleep(Duration::from_millis(20));
                while rx.try_recv().is_ok() {}
                let Some(next) = read(&path, &node_name) else {
                    continue;
                };
                let changes = current.diff(&next);
                if changes.is_empty() {
                    continue;
                }
                revision += 1;
                info!(changes = changes.len(), revision, "manifests changed");
                let batch = Event::Batch {
                    revision,
                    events: changes,
                };
                if events.send(batch).is_err() {
                    return;
                }
                current = next;
            }
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_adds_updates_and_deletes() {
        let m = manifests::load_str(
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: s}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n",
            "test",
        );
        let a = Snapshot::from(m, "n");
        let none = Snapshot::default();
        let ev = none.diff(&a);
        assert!(matches!(&ev[..], [Event::Service(s)] if s.name == "s"));
        assert!(a.diff(&a).is_empty());
        let ev = a.diff(&none);
        assert!(matches!(&ev[..], [Event::ServiceDeleted { name, .. }] if name == "s"));
    }
}
