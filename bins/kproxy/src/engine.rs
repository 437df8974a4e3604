//! The sync engine: one OS thread that owns the change trackers and the proxiers, applies
//! source events, and runs syncs with kube-proxy's bounded-frequency semantics.
//!
//! - A requested sync runs at once unless the previous one *started* less than
//!   `--iptables-min-sync-period` ago; requests in between coalesce into one sync.
//! - A failed sync is retried after `--iptables-sync-period`.
//! - Every `--iptables-sync-period` the tables are checked for a flush by someone else; a
//!   flush forces a full sync.
//! - Nothing syncs before the source has delivered its initial list.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use kproxy_healthcheck::{ProxyHealthServer, ServiceHealthServer};
use kproxy_iptables::Proxier;
use kproxy_model::{ChangeTracker, EndpointSlice, Node, Service, ServiceName};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// What a source tells the engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// A Service was added or updated.
    Service(Service),
    /// A Service was deleted.
    ServiceDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An EndpointSlice was added or updated.
    Slice(EndpointSlice),
    /// An EndpointSlice was deleted.
    SliceDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// This node's Node object was added or updated.
    Node(Node),
    /// The source's initial list is complete: syncing may start.
    Synced,
    /// Revision `revision` of the source's input: these events, applied together (no sync
    /// sees only part of them). The revision is logged with each sync, so operators and
    /// tests can tell what a sync included.
    Batch {
        /// The revision they make.
        revision: u64,
        /// The object events.
        events: Vec<Event>,
    },
    /// Internal: the end of a [`Event::Batch`].
    BatchDone(u64),
    /// Stop the engine (rules stay in place).
    Shutdown,
}

/// One family's pipeline.
pub struct FamilyProxier {
    /// The family's change tracker.
    pub tracker: ChangeTracker,
    /// The family's proxier.
    pub proxier: Proxier,
}

/// Everything the engine drives.
pub struct Engine {
    /// One entry per family, the primary one first.
    pub families: Vec<FamilyProxier>,
    /// `--iptables-min-sync-period`.
    pub min_sync_period: Duration,
    /// `--iptables-sync-period` (retry interval and flush-check interval).
    pub sync_period: Duration,
    /// The proxy's health (healthz/livez).
    pub health: ProxyHealthServer,
    /// Health-check node ports, if served.
    pub service_health: Option<ServiceHealthServer>,
    /// Metrics.
    pub metrics: Metrics,
    /// Read the host's interface addresses before each sync (`--nodeport-addresses`).
    pub interface_addresses: fn() -> Vec<std::net::IpAddr>,
}

impl Engine {
    /// Runs until [`Event::Shutdown`] or until every sender is gone.
    pub fn run(mut self, events: Receiver<Event>) {
        let mut synced = false;
        let mut pending = false;
        let mut last_start: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let mut check_at = Instant::now() + self.sync_period;
        let mut node: Option<Node> = None;
        let mut revision = 0;
        loop {
            let now = Instant::now();
            let mut deadline = check_at;
            if synced && pending {
                let ready = last_start.map_or(now, |t| t + self.min_sync_period);
                deadline = deadline.min(ready);
            }
            if let Some(r) = retry_at {
                deadline = deadline.min(r);
            }
            match events.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(first) => {
                    // Take everything already queued: a burst becomes one sync.
                    let mut batch = Vec::new();
                    for ev in std::iter::once(first).chain(events.try_iter()) {
                        match ev {
                            Event::Batch {
                                revision,
                                events: inner,
                            } => {
                                batch.extend(inner);
                                batch.push(Event::BatchDone(revision));
                            }
                            other => batch.push(other),
                        }
                    }
                    for ev in batch {
                        match ev {
                            Event::Shutdown => {
                                info!("sync engine stopping; rules stay in place");
                                return;
                            }
                            Event::Synced => {
                                if !synced {
                                    info!("initial state received");
                                }
                                synced = true;
                                pending = true;
                            }
                            // The batch's events were applied just before: the next sync
                            // includes them all.
                            Event::BatchDone(n) => revision = n,
                            Event::Node(n) => {
                                if self.apply_node(&n, node.as_ref()) {
                                    pending = true;
                                }
                                node = Some(n);
                            }
                            other => {
                                if self.apply(other) {
                                    pending = true;
                                }
                            }
                        }
                    }
                    if pending {
                        self.metrics.record_queued();
                        for f in &self.families {
                            self.health.queued_update(f.tracker.family());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= check_at {
                check_at = now + self.sync_period;
                if synced && self.check_tables() {
                    pending = true;
                }
                // A periodic full sync may be due even without changes.
                if synced && self.families.iter().any(|f| f.proxier.full_sync_due(now)) {
                    pending = true;
                }
            }
            if retry_at.is_some_and(|r| now >= r) {
                retry_at = None;
                pending = true;
            }
            let ready = last_start.is_none_or(|t| now >= t + self.min_sync_period);
            if synced && pending && ready {
                pending = false;
                last_start = Some(now);
                if !self.sync_all(revision) {
                    retry_at = Some(Instant::now() + self.sync_period);
                }
            }
        }
    }

    /// Applies one object event to every family; returns whether any view changed.
    fn apply(&mut self, ev: Event) -> bool {
        let (total, pending) = match &ev {
            Event::Service(_) | Event::ServiceDeleted { .. } => (
                &self.metrics.service_changes,
                &self.metrics.service_changes_pending,
            ),
            _ => (
                &self.metrics.endpoint_changes,
                &self.metrics.endpoint_changes_pending,
            ),
        };
        total.inc();
        pending.set(pending.get() + 1.0);
        let mut changed = false;
        for f in &mut self.families {
            changed |= match &ev {
                Event::Service(s) => f.tracker.update_service(s.clone()),
                Event::ServiceDeleted { namespace, name } => {
                    f.tracker.delete_service(namespace, name)
                }
                Event::Slice(s) => f.tracker.update_endpoint_slice(s.clone()),
                Event::SliceDeleted { namespace, name } => {
                    f.tracker.delete_endpoint_slice(namespace, name)
                }
                _ => false,
            };
        }
        changed
    }

    /// A Node update: a zone change means every rule may change (full sync).
    fn apply_node(&mut self, node: &Node, old: Option<&Node>) -> bool {
        self.health.sync_node(node);
        if old.is_some_and(|o| o.zone == node.zone) {
            return false;
        }
        let mut changed = false;
        for f in &mut self.families {
            let topology = kproxy_model::NodeTopology {
                prefer_same_node_hints: f.proxier.compiler().config().node.prefer_same_node_hints,
                ..node.topology()
            };
            if topology != f.proxier.compiler().config().node {
                info!(zone = ?node.zone, "node topology changed: full sync");
                f.proxier.compiler_mut().set_node_topology(topology);
                f.proxier.force_full_sync();
                changed = true;
            }
        }
        changed
    }

    /// Looks for a flush by someone else; forces full syncs where found.
    fn check_tables(&mut self) -> bool {
        let mut flushed = false;
        for f in &mut self.families {
            match f.proxier.tables_flushed() {
                Ok(true) => {
                    warn!(
                        family = %f.tracker.family(),
                        "kproxy's rules were flushed by someone else: full resync"
                    );
                    f.proxier.force_full_sync();
                    flushed = true;
                }
                Ok(false) => {}
                Err(e) => debug!(error = %e, "flush check failed"),
            }
        }
        flushed
    }

    /// Syncs every family; returns whether all succeeded.
    fn sync_all(&mut self, revision: u64) -> bool {
        self.metrics.service_changes_pending.set(0.0);
        self.metrics.endpoint_changes_pending.set(0.0);
        let mut ok = true;
        let addresses = (self.interface_addresses)();
        for f in &mut self.families {
            let family = f.tracker.family();
            let changes = f.tracker.commit();
            f.proxier
                .compiler_mut()
                .set_interface_addresses(addresses.clone());
            let now = Instant::now();
            match f.proxier.sync(f.tracker.state(), &changes, now) {
                Ok(report) => {
                    self.health.updated(family);
                    self.metrics.record_sync(family, &report, &changes);
                    info!(
                        %family,
                        kind = ?report.kind,
                        services = report.stats.service_ports,
                        endpoints = report.stats.total_endpoints,
                        changed = changes.services.len(),
                        bytes = report.restore.map_or(0, |r| r.bytes),
                        compile_ms = report.compile_time.as_secs_f64() * 1e3,
                        restore_ms = report.restore.map_or(0.0, |r| r.elapsed.as_secs_f64() * 1e3),
                        conntrack_deleted = report.conntrack_deleted,
                        revision,
                        "synced"
                    );
                    if let Some(w) = &report.warning {
                        warn!(%family, "{w}");
                    }
                }
                Err(e) => {
                    ok = false;
                    self.metrics.record_failure(&e);
                    warn!(%family, error = %e, "sync failed; the next sync will be full");
                }
            }
        }
        if ok {
            self.sync_health_checks();
        }
        ok
    }

    /// Opens/closes health-check node ports and updates their local endpoint counts: the
    /// union of the families' Services, the largest count per Service.
    fn sync_health_checks(&mut self) {
        let Some(hc) = &self.service_health else {
            return;
        };
        let mut ports: BTreeMap<ServiceName, u16> = BTreeMap::new();
        let mut counts: BTreeMap<ServiceName, usize> = BTreeMap::new();
        for f in &self.families {
            ports.extend(f.tracker.state().health_check_node_ports());
            for (name, n) in f.tracker.state().local_ready_endpoints() {
                let c = counts.entry(name).or_default();
                *c = (*c).max(n);
            }
        }
        for err in hc.sync_services(&ports) {
            warn!(error = %err, "health check node port");
        }
        hc.sync_endpoints(&counts);
    }
}

/// A channel to an engine.
pub fn channel() -> (Sender<Event>, Receiver<Event>) {
    std::sync::mpsc::channel()
}
