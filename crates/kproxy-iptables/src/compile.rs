//! The compiler: a [`ProxyState`] in, the `iptables-restore` input upstream kube-proxy would
//! write out.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use kproxy_model::{
    EndpointInfo, EndpointSets, IpFamily, NodeTopology, ProxyState, ServiceName, ServicePortInfo,
    categorize_endpoints,
};

use crate::config::Config;
use crate::names::{ChainName, ServicePortChains, endpoint_chain, is_service_chain};
use crate::restore::RestoreInput;

/// Whether a sync rewrites every chain or only those of changed Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Rewrite everything (first sync, after a failure, periodically).
    Full,
    /// Rewrite the top-level chains and the per-service chains of changed Services only,
    /// leaving the kernel's copy of the other per-service chains in place (upstream
    /// `MinimizeIPTablesRestore`).
    Partial,
}

/// The inputs of one sync besides the service state.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// Full or partial.
    pub kind: SyncKind,
    /// Services whose Service object or EndpointSlices changed since the last successful
    /// sync ([`kproxy_model::Changes::services`]). Ignored by full syncs.
    pub changed: &'a BTreeSet<ServiceName>,
    /// The nat table's existing chains (from `iptables-save -t nat`), when stale chains
    /// should be deleted this sync (see [`Compiler::stale_chain_cleanup_due`]); `None` skips
    /// the deletion.
    pub existing_nat_chains: Option<&'a [String]>,
}

/// Figures about one compiled sync, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// The ruleset was generated in large-cluster mode (more endpoints than the threshold:
    /// per-endpoint comments dropped).
    pub large_cluster: bool,
    /// Service ports in the state.
    pub service_ports: usize,
    /// Endpoints of those ports, any condition.
    pub total_endpoints: usize,
    /// Service ports whose per-service chains were written.
    pub written_service_ports: usize,
    /// `-A` lines written to the nat table.
    pub nat_rules_written: usize,
    /// `-A` lines the nat table holds after this sync (written + left in place).
    pub nat_rules_total: usize,
    /// `-A` lines written to the filter table (always all of them).
    pub filter_rules: usize,
    /// Stale chains deleted.
    pub deleted_chains: usize,
    /// Service ports with endpoints elsewhere but none here, internal traffic (DROP).
    pub no_local_endpoints_internal: usize,
    /// Service ports with endpoints elsewhere but none here, external traffic (DROP).
    pub no_local_endpoints_external: usize,
}

/// The result of [`Compiler::compile`].
#[derive(Debug, Clone)]
pub struct Compiled {
    /// What to feed to `iptables-restore --noflush` (resp. `ip6tables-restore`).
    pub restore: RestoreInput,
    /// Figures about it.
    pub stats: SyncStats,
}

/// Compiles service state into `iptables-restore` input, one family per compiler.
///
/// The compiler is pure: it runs no process and reads nothing; the caller passes in what it
/// needs from the host (configuration, interface addresses, existing chains). It keeps the
/// text it rendered per service port between syncs, so a partial sync costs a copy of the
/// top-level rules plus the rendering of what changed.
#[derive(Debug)]
pub struct Compiler {
    config: Config,
    interface_addresses: Vec<IpAddr>,
    if_local: String,
    if_not_local: String,
    cache: Vec<ServiceCache>,
    probabilities: Vec<String>,
    large_cluster: bool,
    last_cleanup: Option<Instant>,
}

#[derive(Debug)]
struct ServiceCache {
    name: ServiceName,
    ports: Vec<PortCache>,
}

/// What a service port rendered last time, kept while its inputs stay the same.
#[derive(Debug)]
struct PortCache {
    svc: Arc<ServicePortInfo>,
    eps: Option<Arc<[EndpointInfo]>>,
    /// Its `KUBE-SERVICES` / `KUBE-NODEPORTS` nat rules.
    top_nat: String,
    top_nat_lines: usize,
    /// Its filter rules.
    top_filter: String,
    top_filter_lines: usize,
    /// Its per-service chains, in chain-line order (EXT, FW, SVC, SVL, SEP…).
    chains: Vec<ChainName>,
    /// `-A` lines of those chains (for "rules in the kernel" figures when they are skipped).
    chain_rule_lines: usize,
    no_local_internal: bool,
    no_local_external: bool,
}

impl PortCache {
    fn matches(&self, svc: &Arc<ServicePortInfo>, eps: Option<&Arc<[EndpointInfo]>>) -> bool {
        let same_svc = Arc::ptr_eq(&self.svc, svc) || *self.svc == **svc;
        let same_eps = match (&self.eps, eps) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
            _ => false,
        };
        same_svc && same_eps
    }
}

/// How one service port is programmed (spec §3.1).
struct Plan<'a> {
    sets: EndpointSets<'a>,
    chains: ServicePortChains,
    has_internal: bool,
    has_external: bool,
    uses_ext: bool,
    uses_fw: bool,
    uses_svc: bool,
    uses_svl: bool,
}

impl Compiler {
    /// A compiler for `config` that has not synced yet.
    pub fn new(config: Config) -> Compiler {
        Compiler {
            if_local: config.local_detector.if_local(),
            if_not_local: config.local_detector.if_not_local(),
            config,
            interface_addresses: Vec::new(),
            cache: Vec::new(),
            probabilities: vec![String::new()],
            large_cluster: false,
            last_cleanup: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The host's interface addresses (all families; the compiler picks its own), which
    /// `--nodeport-addresses` selects from. Read them before each sync, as upstream does.
    pub fn set_interface_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.interface_addresses = addresses;
    }

    /// Updates the node's topology (its zone label changed). Every rule may change: the
    /// next sync must be full.
    pub fn set_node_topology(&mut self, node: NodeTopology) {
        if node != self.config.node {
            self.config.node = node;
            self.cache.clear();
        }
    }

    /// Whether the previous sync ran in large-cluster mode.
    pub fn large_cluster_mode(&self) -> bool {
        self.large_cluster
    }

    /// Whether a sync of `state` at `now` should delete stale chains (and so needs the
    /// kernel's nat chain list): always, except in large-cluster mode where it happens at
    /// most once per sync period (upstream: `iptables-save` is slow on big rulesets).
    pub fn stale_chain_cleanup_due(&self, state: &ProxyState, now: Instant) -> bool {
        let large = state.total_endpoints() > self.config.large_cluster_threshold;
        !large
            || self
                .last_cleanup
                .is_none_or(|t| now.saturating_duration_since(t) > self.config.sync_period)
    }

    /// Records that stale chains were looked for at `now` (call it when you passed
    /// `existing_nat_chains`, whether or not the restore then succeeded, as upstream does).
    pub fn record_stale_chain_cleanup(&mut self, now: Instant) {
        self.last_cleanup = Some(now);
    }

    /// Compiles `state` into restore input.
    pub fn compile(&mut self, state: &ProxyState, req: SyncRequest<'_>) -> Compiled {
        let full = req.kind == SyncKind::Full;
        let v4 = self.config.family == IpFamily::V4;
        let localhost_np = self.config.localhost_nodeports_effective();
        let mut stats = SyncStats {
            service_ports: state.service_port_count(),
            total_endpoints: state.total_endpoints(),
            ..SyncStats::default()
        };
        let large = stats.total_endpoints > self.config.large_cluster_threshold;
        stats.large_cluster = large;
        self.large_cluster = large;

        let mark = self.config.masquerade_mark.clone();
        let mut filter = String::with_capacity(4096);
        filter.push_str("*filter\n");
        for chain in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
        ] {
            chain_line(&mut filter, chain);
        }
        if localhost_np {
            chain_line(&mut filter, "KUBE-FIREWALL");
            filter.push_str(
                "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
                 -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
                 -j DROP\n",
            );
            stats.filter_rules += 1;
        }

        let mut nat_chains = String::with_capacity(4096);
        nat_chains.push_str("*nat\n");
        for chain in [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
        ] {
            chain_line(&mut nat_chains, chain);
        }
        let mut nat_rules = String::with_capacity(if full {
            stats.total_endpoints * 280 + stats.service_ports * 600
        } else {
            stats.service_ports * 200
        });
        let _ = write!(
            nat_rules,
            "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --xor-mark {mark}\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}\n\
             -A KUBE-MARK-MASQ -j MARK --or-mark {mark}\n",
            if self.config.random_fully {
                " --random-fully"
            } else {
                ""
            }
        );
        stats.nat_rules_written += 4;

        let track_active = req.existing_nat_chains.is_some();
        let mut active: HashSet<ChainName> = HashSet::new();
        let old_cache = std::mem::take(&mut self.cache);
        let mut old_iter = old_cache.into_iter().peekable();
        let mut new_cache: Vec<ServiceCache> = Vec::with_capacity(state.services().count());

        for (name, service) in state.services() {
            if service.ports.is_empty() {
                continue;
            }
            // Merge-join with the previous sync's cache (both sorted by name).
            while old_iter.peek().is_some_and(|c| c.name < *name) {
                old_iter.next();
            }
            let mut old_ports = match old_iter.peek() {
                Some(c) if c.name == *name => old_iter.next().map(|c| c.ports).unwrap_or_default(),
                _ => Vec::new(),
            };
            let write_chains = full || req.changed.contains(name);
            let mut ports = Vec::with_capacity(service.ports.len());
            for svc in &service.ports {
                let eps = service.endpoint_list(svc);
                let cached = old_ports
                    .iter()
                    .position(|c| c.svc.name == svc.name)
                    .map(|i| old_ports.swap_remove(i))
                    .filter(|c| c.matches(svc, eps));
                let entry = match cached {
                    Some(c) if !write_chains => c,
                    cached => {
                        let eps_slice: &[EndpointInfo] = eps.map(|e| &e[..]).unwrap_or(&[]);
                        let plan = self.plan(svc, eps_slice);
                        let mut entry = self.render_top(svc, eps, &plan, localhost_np);
                        if write_chains {
                            let reuse = cached.as_ref().map(|c| &c.chains[..]);
                            nat_rules.push_str(&entry.top_nat);
                            let lines = self.render_chains(
                                svc,
                                &plan,
                                large,
                                reuse,
                                &mut entry.chains,
                                &mut nat_chains,
                                &mut nat_rules,
                            );
                            entry.chain_rule_lines = lines;
                            stats.nat_rules_written += entry.top_nat_lines + lines;
                            stats.written_service_ports += 1;
                        } else {
                            // Not written: we still need the chain names (to keep them) and
                            // the number of rules they hold.
                            let (chains, lines) = self.chain_names(svc, &plan);
                            entry.chains = chains;
                            entry.chain_rule_lines = lines;
                            nat_rules.push_str(&entry.top_nat);
                            stats.nat_rules_written += entry.top_nat_lines;
                        }
                        ports.push(entry);
                        continue;
                    }
                };
                nat_rules.push_str(&entry.top_nat);
                stats.nat_rules_written += entry.top_nat_lines;
                ports.push(entry);
            }
            for entry in &ports {
                filter.push_str(&entry.top_filter);
                stats.filter_rules += entry.top_filter_lines;
                stats.nat_rules_total += entry.top_nat_lines + entry.chain_rule_lines;
                stats.no_local_endpoints_internal += usize::from(entry.no_local_internal);
                stats.no_local_endpoints_external += usize::from(entry.no_local_external);
                if track_active {
                    active.extend(entry.chains.iter().copied());
                }
            }
            new_cache.push(ServiceCache {
                name: name.clone(),
                ports,
            });
        }
        self.cache = new_cache;

        // Stale per-service chains: flush (chain line) and delete.
        if let Some(existing) = req.existing_nat_chains {
            let mut stale: Vec<&str> = existing
                .iter()
                .map(String::as_str)
                .filter(|c| is_service_chain(c))
                .filter(|c| ChainName::new(c).is_none_or(|n| !active.contains(&n)))
                .collect();
            stale.sort_unstable();
            stale.dedup();
            for chain in &stale {
                chain_line(&mut nat_chains, chain);
                let _ = writeln!(nat_rules, "-X {chain}");
            }
            stats.deleted_chains = stale.len();
        }

        // The last rule(s) of KUBE-SERVICES: everything addressed to the node goes on to
        // KUBE-NODEPORTS.
        const NODEPORTS_COMMENT: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
        if self.config.nodeport_addresses.match_all() {
            nat_rules.push_str(NODEPORTS_COMMENT);
            nat_rules.push_str(" -m addrtype --dst-type LOCAL");
            if !v4 {
                nat_rules.push_str(" ! -d ::1/128");
            } else if !localhost_np {
                nat_rules.push_str(" ! -d 127.0.0.0/8");
            }
            nat_rules.push_str(" -j KUBE-NODEPORTS\n");
            stats.nat_rules_written += 1;
            stats.nat_rules_total += 1;
        } else {
            for ip in self
                .config
                .nodeport_addresses
                .node_ips(&self.interface_addresses)
            {
                if ip.is_loopback() && (!v4 || !localhost_np) {
                    continue;
                }
                let _ = writeln!(nat_rules, "{NODEPORTS_COMMENT} -d {ip} -j KUBE-NODEPORTS");
                stats.nat_rules_written += 1;
                stats.nat_rules_total += 1;
            }
        }
        nat_rules.push_str("COMMIT\n");
        stats.nat_rules_total += 4;

        // KUBE-FORWARD comes last in the filter table.
        if self.config.drop_invalid {
            filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID");
            if self.config.nfacct_invalid_dropped {
                filter.push_str(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts");
            }
            filter.push_str(" -j DROP\n");
            stats.filter_rules += 1;
        }
        let _ = write!(
            filter,
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             COMMIT\n"
        );
        stats.filter_rules += 2;

        Compiled {
            restore: RestoreInput::from_parts(vec![filter, nat_chains, nat_rules]),
            stats,
        }
    }

    /// Endpoint selection and the per-port decisions of spec §3.1.
    fn plan<'a>(&self, svc: &ServicePortInfo, eps: &'a [EndpointInfo]) -> Plan<'a> {
        let sets = categorize_endpoints(eps, svc, &self.config.node);
        let has_any = sets.has_any;
        let itp_local = svc.internal_policy_local;
        let etp_local = svc.external_policy_local;
        let has_local = !sets.local.is_empty();
        Plan {
            chains: ServicePortChains::of(&svc.name),
            has_internal: has_any && (!itp_local || has_local),
            has_external: has_any && (!etp_local || has_local),
            uses_ext: has_any && svc.externally_accessible(),
            uses_fw: has_any
                && !svc.load_balancer_vips.is_empty()
                && !svc.load_balancer_source_ranges.is_empty(),
            uses_svc: !sets.cluster.is_empty() && svc.uses_cluster_endpoints(),
            uses_svl: has_local && svc.uses_local_endpoints(),
            sets,
        }
    }

    /// The top-level rules of one service port (spec §3.3 #1–#11).
    fn render_top(
        &self,
        svc: &Arc<ServicePortInfo>,
        eps: Option<&Arc<[EndpointInfo]>>,
        plan: &Plan<'_>,
        localhost_np: bool,
    ) -> PortCache {
        let n = svc.name.to_string();
        let p = svc.protocol().lower();
        let c = &plan.chains;
        let has_any = plan.sets.has_any;
        let internal_chain = if svc.internal_policy_local {
            c.local
        } else {
            c.cluster
        };
        let lb_target = if plan.uses_fw { c.firewall } else { c.external };
        let (verdict, verdict_comment_suffix) = if has_any {
            ("DROP", "has no local endpoints")
        } else {
            ("REJECT", "has no endpoints")
        };
        let mut nat = String::with_capacity(256);
        let mut nat_lines = 0;
        let mut filter = String::new();
        let mut filter_lines = 0;
        let port = itoa::Buffer::new().format(svc.port).to_owned();

        // #1 / #6: the cluster IP.
        if plan.has_internal {
            let _ = writeln!(
                nat,
                "-A KUBE-SERVICES -m comment --comment \"{n} cluster IP\" -m {p} -p {p} -d {} --dport {port} -j {internal_chain}",
                svc.cluster_ip
            );
            nat_lines += 1;
        } else {
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -m comment --comment \"{n} {verdict_comment_suffix}\" -m {p} -p {p} -d {} --dport {port} -j {verdict}",
                svc.cluster_ip
            );
            filter_lines += 1;
        }
        // #2 / #7: external IPs.
        for ip in &svc.external_ips {
            if has_any {
                let _ = writeln!(
                    nat,
                    "-A KUBE-SERVICES -m comment --comment \"{n} external IP\" -m {p} -p {p} -d {ip} --dport {port} -j {}",
                    c.external
                );
                nat_lines += 1;
            }
            if !plan.has_external {
                let _ = writeln!(
                    filter,
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{n} {verdict_comment_suffix}\" -m {p} -p {p} -d {ip} --dport {port} -j {verdict}"
                );
                filter_lines += 1;
            }
        }
        // #3 / #8: load-balancer VIPs.
        for ip in &svc.load_balancer_vips {
            if has_any {
                let _ = writeln!(
                    nat,
                    "-A KUBE-SERVICES -m comment --comment \"{n} loadbalancer IP\" -m {p} -p {p} -d {ip} --dport {port} -j {lb_target}"
                );
                nat_lines += 1;
            }
            if plan.uses_fw {
                let _ = writeln!(
                    filter,
                    "-A KUBE-PROXY-FIREWALL -m comment --comment \"{n} traffic not accepted by {}\" -m {p} -p {p} -d {ip} --dport {port} -j DROP",
                    c.firewall
                );
                filter_lines += 1;
            }
        }
        // #9
        if !plan.has_external {
            for ip in &svc.load_balancer_vips {
                let _ = writeln!(
                    filter,
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{n} {verdict_comment_suffix}\" -m {p} -p {p} -d {ip} --dport {port} -j {verdict}"
                );
                filter_lines += 1;
            }
        }
        // #4 / #5 / #10: the node port.
        if svc.node_port != 0 {
            let np = svc.node_port;
            if has_any {
                if localhost_np && self.config.nfacct_localhost_nodeports {
                    let _ = writeln!(
                        nat,
                        "-A KUBE-NODEPORTS -m comment --comment {n} -m {p} -p {p} -d 127.0.0.0/8 --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {}",
                        c.external
                    );
                    nat_lines += 1;
                }
                let _ = writeln!(
                    nat,
                    "-A KUBE-NODEPORTS -m comment --comment {n} -m {p} -p {p} --dport {np} -j {}",
                    c.external
                );
                nat_lines += 1;
            }
            if !plan.has_external {
                let _ = writeln!(
                    filter,
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{n} {verdict_comment_suffix}\" -m addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j {verdict}"
                );
                filter_lines += 1;
            }
        }
        // #11: the health-check node port.
        if svc.health_check_node_port != 0 {
            let _ = writeln!(
                filter,
                "-A KUBE-NODEPORTS -m comment --comment \"{n} health check node port\" -m tcp -p tcp --dport {} -j ACCEPT",
                svc.health_check_node_port
            );
            filter_lines += 1;
        }
        PortCache {
            svc: Arc::clone(svc),
            eps: eps.cloned(),
            top_nat: nat,
            top_nat_lines: nat_lines,
            top_filter: filter,
            top_filter_lines: filter_lines,
            chains: Vec::new(),
            chain_rule_lines: 0,
            no_local_internal: has_any && !plan.has_internal,
            no_local_external: has_any && !plan.has_external,
        }
    }

    /// The chain names a service port uses and the number of rules they hold, without
    /// rendering them (for ports whose chains a partial sync leaves in place).
    fn chain_names(&self, svc: &ServicePortInfo, plan: &Plan<'_>) -> (Vec<ChainName>, usize) {
        let mut chains = Vec::with_capacity(plan.sets.all.len() + 4);
        let mut lines = 0;
        let c = &plan.chains;
        let affinity = usize::from(svc.session_affinity_timeout.is_some());
        lines += usize::from(plan.has_internal && self.config.masquerade_all)
            + usize::from(
                plan.has_internal
                    && !self.config.masquerade_all
                    && self.config.local_detector.is_implemented(),
            );
        if plan.uses_ext {
            chains.push(c.external);
            lines += if svc.external_policy_local {
                2 + usize::from(self.config.local_detector.is_implemented())
            } else {
                1
            } + usize::from(plan.has_external);
        }
        if plan.uses_fw {
            chains.push(c.firewall);
            lines += svc.load_balancer_source_ranges.len()
                + 1
                + if self.allow_from_node(svc) {
                    svc.load_balancer_vips.len()
                } else {
                    0
                };
        }
        if plan.uses_svc {
            chains.push(c.cluster);
            lines += plan.sets.cluster.len() * (1 + affinity);
        }
        if plan.uses_svl {
            chains.push(c.local);
            lines += plan.sets.local.len() * (1 + affinity);
        }
        for ep in &plan.sets.all {
            chains.push(endpoint_chain(&svc.name, ep.endpoint_str()));
            lines += 2;
        }
        (chains, lines)
    }

    fn allow_from_node(&self, svc: &ServicePortInfo) -> bool {
        self.config.node_ip.is_some_and(|ip| {
            svc.load_balancer_source_ranges
                .iter()
                .any(|net| net.contains(&ip))
        })
    }

    fn probability(&mut self, k: usize) -> &str {
        while self.probabilities.len() <= k {
            let i = self.probabilities.len();
            self.probabilities.push(format!("{:.10}", 1.0 / i as f64));
        }
        &self.probabilities[k]
    }

    /// Renders the per-service chains of one port (spec §3.3 #12–#17, §3.4) and returns the
    /// number of `-A` lines written. `reuse` holds the chain names of the same port with
    /// the same endpoints from an earlier sync, to skip hashing.
    #[allow(clippy::too_many_arguments)]
    fn render_chains(
        &mut self,
        svc: &ServicePortInfo,
        plan: &Plan<'_>,
        large: bool,
        reuse: Option<&[ChainName]>,
        chains_out: &mut Vec<ChainName>,
        nat_chains: &mut String,
        out: &mut String,
    ) -> usize {
        let n = svc.name.to_string();
        let p = svc.protocol().lower();
        let c = plan.chains;
        let mut lines = 0;
        let internal_chain = if svc.internal_policy_local {
            c.local
        } else {
            c.cluster
        };

        // Endpoint chain names, in `all` order.
        let seps: Vec<ChainName> = match reuse {
            Some(prev) if prev.len() >= plan.sets.all.len() => {
                prev[prev.len() - plan.sets.all.len()..].to_vec()
            }
            _ => plan
                .sets
                .all
                .iter()
                .map(|ep| endpoint_chain(&svc.name, ep.endpoint_str()))
                .collect(),
        };
        let sep_of = |ep: &EndpointInfo| -> ChainName {
            let i = plan
                .sets
                .all
                .binary_search_by(|e| e.endpoint_str().cmp(ep.endpoint_str()))
                .unwrap_or(0);
            seps[i]
        };

        // #12: masquerade off-cluster traffic to the cluster IP.
        if plan.has_internal
            && (self.config.masquerade_all || self.config.local_detector.is_implemented())
        {
            let _ = write!(
                out,
                "-A {internal_chain} -m comment --comment \"{n} cluster IP\" -m {p} -p {p} -d {} --dport {}",
                svc.cluster_ip, svc.port
            );
            if !self.config.masquerade_all {
                out.push(' ');
                out.push_str(&self.if_not_local);
            }
            out.push_str(" -j KUBE-MARK-MASQ\n");
            lines += 1;
        }

        // #13: KUBE-EXT.
        if plan.uses_ext {
            chain_line(nat_chains, &c.external);
            chains_out.push(c.external);
            if !svc.external_policy_local {
                let _ = writeln!(
                    out,
                    "-A {} -m comment --comment \"masquerade traffic for {n} external destinations\" -j KUBE-MARK-MASQ",
                    c.external
                );
                lines += 1;
            } else {
                if self.config.local_detector.is_implemented() {
                    let _ = writeln!(
                        out,
                        "-A {} -m comment --comment \"pod traffic for {n} external destinations\" {} -j {}",
                        c.external, self.if_local, c.cluster
                    );
                    lines += 1;
                }
                let _ = writeln!(
                    out,
                    "-A {} -m comment --comment \"masquerade LOCAL traffic for {n} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n\
                     -A {} -m comment --comment \"route LOCAL traffic for {n} external destinations\" -m addrtype --src-type LOCAL -j {}",
                    c.external, c.external, c.cluster
                );
                lines += 2;
            }
            if plan.has_external {
                let policy_chain = if svc.external_policy_local {
                    c.local
                } else {
                    c.cluster
                };
                let _ = writeln!(out, "-A {} -j {policy_chain}", c.external);
                lines += 1;
            }
        }

        // #14: KUBE-FW.
        if plan.uses_fw {
            chain_line(nat_chains, &c.firewall);
            chains_out.push(c.firewall);
            for cidr in &svc.load_balancer_source_ranges {
                let _ = writeln!(
                    out,
                    "-A {} -m comment --comment \"{n} loadbalancer IP\" -s {cidr} -j {}",
                    c.firewall, c.external
                );
                lines += 1;
            }
            if self.allow_from_node(svc) {
                for ip in &svc.load_balancer_vips {
                    let _ = writeln!(
                        out,
                        "-A {} -m comment --comment \"{n} loadbalancer IP\" -s {ip} -j {}",
                        c.firewall, c.external
                    );
                    lines += 1;
                }
            }
            let _ = writeln!(
                out,
                "-A {} -m comment --comment \"other traffic to {n} will be dropped by KUBE-PROXY-FIREWALL\"",
                c.firewall
            );
            lines += 1;
        }

        // #15 / #16: dispatch.
        for (uses, chain, endpoints) in [
            (plan.uses_svc, c.cluster, &plan.sets.cluster),
            (plan.uses_svl, c.local, &plan.sets.local),
        ] {
            if !uses {
                continue;
            }
            chain_line(nat_chains, &chain);
            chains_out.push(chain);
            if let Some(timeout) = svc.session_affinity_timeout {
                for ep in endpoints.iter() {
                    let sep = sep_of(ep);
                    let _ = write!(out, "-A {chain}");
                    if !large {
                        let _ = write!(
                            out,
                            " -m comment --comment \"{n} -> {}\"",
                            ep.endpoint_str()
                        );
                    }
                    let _ = writeln!(
                        out,
                        " -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}"
                    );
                    lines += 1;
                }
            }
            let count = endpoints.len();
            for (i, ep) in endpoints.iter().enumerate() {
                let sep = sep_of(ep);
                out.push_str("-A ");
                out.push_str(&chain);
                if !large {
                    out.push_str(" -m comment --comment \"");
                    out.push_str(&n);
                    out.push_str(" -> ");
                    out.push_str(ep.endpoint_str());
                    out.push('"');
                }
                if i + 1 < count {
                    out.push_str(" -m statistic --mode random --probability ");
                    out.push_str(self.probability(count - i));
                }
                out.push_str(" -j ");
                out.push_str(&sep);
                out.push('\n');
                lines += 1;
            }
        }

        // #17: one chain per endpoint.
        for (ep, sep) in plan.sets.all.iter().zip(&seps) {
            chain_line(nat_chains, sep);
            chains_out.push(*sep);
            let ep_str = ep.endpoint_str();
            let ip = match ep.ip() {
                IpAddr::V4(_) => &ep_str[..ep_str.rfind(':').unwrap_or(ep_str.len())],
                IpAddr::V6(_) => &ep_str[1..ep_str.rfind(']').unwrap_or(1)],
            };
            for second in [false, true] {
                out.push_str("-A ");
                out.push_str(sep);
                if !large {
                    out.push_str(" -m comment --comment ");
                    out.push_str(&n);
                }
                if !second {
                    out.push_str(" -s ");
                    out.push_str(ip);
                    out.push_str(" -j KUBE-MARK-MASQ\n");
                } else {
                    if svc.session_affinity_timeout.is_some() {
                        out.push_str(" -m recent --name ");
                        out.push_str(sep);
                        out.push_str(" --set");
                    }
                    out.push_str(" -m ");
                    out.push_str(p);
                    out.push_str(" -p ");
                    out.push_str(p);
                    out.push_str(" -j DNAT --to-destination ");
                    out.push_str(ep_str);
                    out.push('\n');
                }
            }
            lines += 2;
        }
        lines
    }
}

fn chain_line(out: &mut String, chain: &str) {
    out.push(':');
    out.push_str(chain);
    out.push_str(" - [0:0]\n");
}
