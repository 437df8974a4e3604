//! Change tracking: Service and EndpointSlice events in, a consistent per-family state and
//! the set of Services that changed since the last sync out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::endpoints::{EndpointInfo, EndpointSlice, PortKey, merge_slices};
use crate::service::{Service, ServicePortInfo};
use crate::types::{IpFamily, Protocol, ServiceName};

/// What one family's proxier knows about one Service after a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// The Service's ports for this family, sorted by (port name, protocol). Empty when the
    /// Service does not exist (any more), is not proxied, or has no cluster IP of this family.
    pub ports: Vec<Arc<ServicePortInfo>>,
    /// Endpoint lists by (port name, protocol), each sorted by endpoint string. Lists exist
    /// for every port of the Service's EndpointSlices, matched by a Service port or not.
    pub endpoints: BTreeMap<PortKey, Arc<[EndpointInfo]>>,
    /// `port_endpoints[i]` is the list of `ports[i]` (shared with `endpoints`).
    port_endpoints: Vec<Option<Arc<[EndpointInfo]>>>,
}

impl ServiceState {
    fn new(
        ports: Vec<Arc<ServicePortInfo>>,
        endpoints: BTreeMap<PortKey, Arc<[EndpointInfo]>>,
    ) -> ServiceState {
        let port_endpoints = ports
            .iter()
            .map(|p| {
                endpoints
                    .iter()
                    .find(|((name, proto), _)| *name == p.name.port && *proto == p.name.protocol)
                    .map(|(_, eps)| Arc::clone(eps))
            })
            .collect();
        ServiceState {
            ports,
            endpoints,
            port_endpoints,
        }
    }

    /// The endpoints of one of this Service's ports (empty if none).
    pub fn endpoints_of(&self, port: &ServicePortInfo) -> &[EndpointInfo] {
        self.endpoint_list(port).map(|eps| &eps[..]).unwrap_or(&[])
    }

    /// The shared endpoint list of one of this Service's ports. A list is shared (the same
    /// allocation) for as long as it does not change, so callers can cache work per list
    /// and check it with [`Arc::ptr_eq`].
    pub fn endpoint_list(&self, port: &ServicePortInfo) -> Option<&Arc<[EndpointInfo]>> {
        self.ports
            .iter()
            .position(|p| std::ptr::eq(&**p, port) || **p == *port)
            .and_then(|i| self.port_endpoints[i].as_ref())
    }

    /// Each port with its shared endpoint list, in port order.
    pub fn ports_with_endpoints(
        &self,
    ) -> impl Iterator<Item = (&Arc<ServicePortInfo>, Option<&Arc<[EndpointInfo]>>)> {
        self.ports
            .iter()
            .zip(self.port_endpoints.iter().map(Option::as_ref))
    }

    fn port_endpoint_count(&self) -> usize {
        self.port_endpoints.iter().flatten().map(|e| e.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.endpoints.is_empty()
    }
}

/// The committed state of one family's proxier: every Service and its endpoints.
#[derive(Debug, Clone, Default)]
pub struct ProxyState {
    services: BTreeMap<ServiceName, ServiceState>,
    generation: u64,
    service_ports: usize,
    total_endpoints: usize,
}

impl PartialEq for ProxyState {
    /// Two states are equal when they hold the same Services and endpoints, whatever
    /// their history (generation).
    fn eq(&self, other: &Self) -> bool {
        self.services == other.services
    }
}

impl Eq for ProxyState {}

impl ProxyState {
    /// Every service port with its endpoints, ordered by (namespace, name, port name,
    /// protocol).
    pub fn service_ports(&self) -> impl Iterator<Item = (&Arc<ServicePortInfo>, &[EndpointInfo])> {
        self.services.values().flat_map(|s| {
            s.ports_with_endpoints()
                .map(|(p, eps)| (p, eps.map(|e| &e[..]).unwrap_or(&[])))
        })
    }

    /// Every Service that has ports or endpoints, in name order.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceName, &ServiceState)> {
        self.services.iter()
    }

    /// One Service's state.
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceState> {
        self.services.get(name)
    }

    /// The number of service ports.
    pub fn service_port_count(&self) -> usize {
        self.service_ports
    }

    /// Σ over service ports of the number of their endpoints, whatever their condition
    /// (what decides upstream's large-cluster mode).
    pub fn total_endpoints(&self) -> usize {
        self.total_endpoints
    }

    /// Counts commits: every [`ChangeTracker::commit`] increments it. [`Changes`] say which
    /// generation they lead from and to, so a consumer that caches per-Service work can
    /// tell whether a set of changes is exactly what happened since it last looked.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn insert(&mut self, name: ServiceName, service: ServiceState) {
        self.service_ports += service.ports.len();
        self.total_endpoints += service.port_endpoint_count();
        self.services.insert(name, service);
    }

    fn remove(&mut self, name: &ServiceName) -> Option<ServiceState> {
        let old = self.services.remove(name)?;
        self.service_ports -= old.ports.len();
        self.total_endpoints -= old.port_endpoint_count();
        Some(old)
    }

    /// For each Service with a health-check node port: that port (upstream
    /// `HealthCheckNodePorts`).
    pub fn health_check_node_ports(&self) -> BTreeMap<ServiceName, u16> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                s.ports
                    .iter()
                    .find(|p| p.health_check_node_port != 0)
                    .map(|p| (name.clone(), p.health_check_node_port))
            })
            .collect()
    }

    /// For each Service with local ready endpoints: how many distinct local ready endpoint
    /// IPs it has, over all its ports (upstream `LocalReadyEndpoints`; terminating endpoints
    /// do not count, so a node whose local pods are all terminating fails its health check).
    pub fn local_ready_endpoints(&self) -> BTreeMap<ServiceName, usize> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                let ips: BTreeSet<IpAddr> = s
                    .endpoints
                    .values()
                    .flat_map(|eps| eps.iter())
                    .filter(|e| e.is_local && e.ready)
                    .map(|e| e.ip())
                    .collect();
                (!ips.is_empty()).then(|| (name.clone(), ips.len()))
            })
            .collect()
    }
}

/// What changed in one [`ChangeTracker::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The state generation these changes apply to ([`ProxyState::generation`] before the
    /// commit). [`Changes::UNKNOWN_BASE`] when they were not made by one commit.
    pub base_generation: u64,
    /// The state generation after the commit.
    pub generation: u64,
    /// Services whose proxied view changed: their ports, or their endpoints. A partial sync
    /// rewrites exactly these Services' chains.
    pub services: BTreeSet<ServiceName>,
    /// The subset of `services` whose endpoints changed.
    pub endpoints: BTreeSet<ServiceName>,
    /// Services that had or have a UDP port and whose endpoints changed (upstream triggers
    /// its UDP conntrack cleanup on these).
    pub udp_endpoints: BTreeSet<ServiceName>,
    /// `last-change-trigger-time` annotations of the EndpointSlice changes in this commit.
    pub trigger_times: Vec<(ServiceName, SystemTime)>,
}

impl Changes {
    /// The `base_generation` of changes that do not come from a single commit.
    pub const UNKNOWN_BASE: u64 = u64::MAX;

    /// Changes to `services` of unknown origin (not one commit): consumers must not assume
    /// they are all that changed.
    pub fn of_services(services: BTreeSet<ServiceName>) -> Changes {
        Changes {
            base_generation: Changes::UNKNOWN_BASE,
            generation: Changes::UNKNOWN_BASE,
            services,
            ..Changes::default()
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Tracks Services and EndpointSlices for one IP family on one node (upstream's
/// `ServiceChangeTracker` + `EndpointsChangeTracker`).
///
/// Feed it object events in any order; [`commit`](ChangeTracker::commit) then brings the
/// [`ProxyState`] up to date and says which Services changed since the previous commit.
/// The state after a commit depends only on the set of objects, never on event order.
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    family: IpFamily,
    node_name: String,
    services: HashMap<ServiceName, Service>,
    slices: HashMap<(String, String), EndpointSlice>,
    slices_by_service: HashMap<ServiceName, BTreeSet<String>>,
    dirty: BTreeSet<ServiceName>,
    trigger_times: Vec<(ServiceName, SystemTime)>,
    state: ProxyState,
}

impl ChangeTracker {
    /// A tracker for `family`'s proxier on node `node_name` (which decides which endpoints
    /// are local).
    pub fn new(family: IpFamily, node_name: impl Into<String>) -> ChangeTracker {
        ChangeTracker {
            family,
            node_name: node_name.into(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            dirty: BTreeSet::new(),
            trigger_times: Vec::new(),
            state: ProxyState::default(),
        }
    }

    /// The family this tracker serves.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The node this tracker serves.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The state as of the last commit.
    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// Whether events since the last commit may have changed the state.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// A Service was added or updated. Returns whether this family's view of it changed
    /// (a sync is worth requesting).
    pub fn update_service(&mut self, service: Service) -> bool {
        let name = service.service_name();
        let changed = match self.services.get(&name) {
            Some(old) => {
                old != &service
                    && ServicePortInfo::from_service(old, self.family)
                        != ServicePortInfo::from_service(&service, self.family)
            }
            None => !ServicePortInfo::from_service(&service, self.family).is_empty(),
        };
        self.services.insert(name.clone(), service);
        if changed {
            self.dirty.insert(name);
        }
        changed
    }

    /// A Service was deleted. Returns whether this family's view changed.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> bool {
        let name = ServiceName::new(namespace, name);
        let changed = self
            .services
            .remove(&name)
            .is_some_and(|old| !ServicePortInfo::from_service(&old, self.family).is_empty());
        if changed {
            self.dirty.insert(name);
        }
        changed
    }

    /// An EndpointSlice was added or updated. Returns whether this family's view changed.
    pub fn update_endpoint_slice(&mut self, slice: EndpointSlice) -> bool {
        let key = (slice.namespace.clone(), slice.name.clone());
        let service = ServiceName::new(&slice.namespace, &slice.service_name);
        if slice.address_family != self.family {
            // A slice cannot change its address type, but be safe: forget a stored one.
            return self.remove_slice(&key);
        }
        let mut changed = true;
        if let Some(old) = self.slices.get(&key) {
            let same_view = old.service_name == slice.service_name
                && old.ports == slice.ports
                && old.endpoints == slice.endpoints;
            if same_view {
                changed = false;
            } else if old.service_name != slice.service_name {
                // Moved to another Service: the old one changes too.
                let old_service = ServiceName::new(&old.namespace, &old.service_name);
                self.unindex(&old_service, &key.1);
                self.dirty.insert(old_service);
            }
        }
        if changed {
            if let Some(t) = slice.trigger_time {
                self.trigger_times.push((service.clone(), t));
            }
            self.slices_by_service
                .entry(service.clone())
                .or_default()
                .insert(key.1.clone());
            self.dirty.insert(service);
        }
        self.slices.insert(key, slice);
        changed
    }

    /// An EndpointSlice was deleted. Returns whether this family's view changed.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> bool {
        self.remove_slice(&(namespace.to_owned(), name.to_owned()))
    }

    fn remove_slice(&mut self, key: &(String, String)) -> bool {
        let Some(old) = self.slices.remove(key) else {
            return false;
        };
        let service = ServiceName::new(&old.namespace, &old.service_name);
        self.unindex(&service, &key.1);
        self.dirty.insert(service);
        true
    }

    fn unindex(&mut self, service: &ServiceName, slice_name: &str) {
        if let Some(set) = self.slices_by_service.get_mut(service) {
            set.remove(slice_name);
            if set.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
    }

    /// Forgets everything: every Service and EndpointSlice is gone at the next commit.
    /// Use before re-listing all objects (after a watch expired); objects that come back
    /// unchanged do not count as changed.
    pub fn clear_objects(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
        self.dirty.extend(self.slices_by_service.keys().cloned());
        self.services.clear();
        self.slices.clear();
        self.slices_by_service.clear();
    }

    /// Applies the events since the last commit to the state and returns what changed.
    ///
    /// The cost is proportional to the size of the Services that had events, not to the
    /// size of the cluster.
    pub fn commit(&mut self) -> Changes {
        let base = self.state.generation;
        self.state.generation += 1;
        let mut changes = Changes {
            base_generation: base,
            generation: self.state.generation,
            trigger_times: std::mem::take(&mut self.trigger_times),
            ..Changes::default()
        };
        for name in std::mem::take(&mut self.dirty) {
            let new = self.compute(&name);
            let old = self.state.remove(&name).unwrap_or_default();
            let ports_changed = old.ports != new.ports;
            let endpoints_changed = old.endpoints != new.endpoints;
            if ports_changed || endpoints_changed {
                changes.services.insert(name.clone());
            }
            if endpoints_changed {
                let has_udp =
                    |s: &ServiceState| s.ports.iter().any(|p| p.protocol() == Protocol::Udp);
                if has_udp(&old) || has_udp(&new) {
                    changes.udp_endpoints.insert(name.clone());
                }
                changes.endpoints.insert(name.clone());
            }
            // Keep the old allocations when nothing changed, so unchanged Services keep
            // pointer-equal Arcs (cheap comparisons for caches downstream).
            let keep = if ports_changed || endpoints_changed {
                new
            } else {
                old
            };
            if !keep.is_empty() {
                self.state.insert(name, keep);
            }
        }
        changes
            .trigger_times
            .retain(|(s, _)| changes.endpoints.contains(s));
        changes
    }

    fn compute(&self, name: &ServiceName) -> ServiceState {
        // Keyed by (port name, protocol): a later duplicate replaces an earlier one, as in
        // upstream's map.
        let ports: Vec<Arc<ServicePortInfo>> = self
            .services
            .get(name)
            .map(|svc| ServicePortInfo::from_service(svc, self.family))
            .unwrap_or_default()
            .into_iter()
            .map(|p| ((p.name.port.clone(), p.name.protocol), Arc::new(p)))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect();
        let slices = self
            .slices_by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|slice_name| {
                self.slices
                    .get(&(name.namespace.clone(), slice_name.clone()))
            });
        let endpoints = merge_slices(slices, self.family, &self.node_name)
            .into_iter()
            .map(|(k, v)| (k, Arc::from(v)))
            .collect();
        ServiceState::new(ports, endpoints)
    }
}
