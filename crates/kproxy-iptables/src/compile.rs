//! The compiler: a [`ProxyState`] in, the `iptables-restore` input upstream kube-proxy would
//! write out.
//!
//! # How it stays fast
//!
//! Every sync, full or partial, rewrites the top-level chains (`KUBE-SERVICES`,
//! `KUBE-NODEPORTS`, the filter chains): O(service ports) lines. The compiler keeps each
//! service port's rendered top-level rules, grouped into chunks of a few tens of kilobytes;
//! a partial sync re-renders only the changed Services and the chunks they sit in, and the
//! output shares the unchanged chunks without copying them. Totals (rule counts, active
//! chains) are kept up to date the same way, so a partial sync costs O(change) plus handing
//! over the chunk list. This fast path needs the exact changes since the compiler's last
//! sync, which [`Changes`] from one [`ChangeTracker::commit`](kproxy_model::ChangeTracker)
//! carry (by generation); with anything else the compiler walks the whole state, which is
//! always correct.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;

use kproxy_model::{
    Changes, EndpointInfo, EndpointSets, IpFamily, NodeTopology, ProxyState, ServiceName,
    ServicePortInfo, categorize_endpoints,
};

use crate::config::Config;
use crate::names::{ChainName, EndpointChains, ServicePortChains, is_service_chain};
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
    /// Beyond upstream: a restore input proportional to the change. Top-level chains are
    /// not rewritten; the changed Services' rules in them are deleted (`-D`) and inserted
    /// (`-I`/`-A`) in the same transaction, their chains rewritten, their stale chains
    /// deleted. Equivalent to a partial sync when the kernel holds what this compiler wrote
    /// last (a failed restore must be followed by a full sync). Falls back to
    /// [`SyncKind::Partial`] when the changes are not exactly those since this compiler's
    /// previous sync.
    Delta,
}

/// The inputs of one sync besides the service state.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// Full or partial.
    pub kind: SyncKind,
    /// What changed since this compiler's previous sync: the [`Changes`] of the commit that
    /// produced `state`. A partial sync rewrites the chains of `changed.services`.
    pub changed: &'a Changes,
    /// The nat table's existing chains (from `iptables-save -t nat`), when stale chains
    /// should be deleted this sync (see [`Compiler::stale_chain_cleanup_due`]); `None` skips
    /// the deletion.
    pub existing_nat_chains: Option<&'a [String]>,
}

/// A line for [`Compiler::compile_with_extra`]: a chain line or a command (`-I INPUT 1 …`,
/// `-N CHAIN`) in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraLine {
    /// `filter`, `nat` or `mangle`.
    pub table: &'static str,
    /// The line, without the newline.
    pub line: String,
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
    /// The compiler walked only the changed Services (the O(change) path).
    pub incremental: bool,
    /// The restore input is a delta (see [`SyncKind::Delta`]).
    pub delta: bool,
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
/// needs from the host (configuration, interface addresses, existing chains).
#[derive(Debug)]
pub struct Compiler {
    config: Config,
    interface_addresses: Vec<IpAddr>,
    if_local: String,
    if_not_local: String,
    probabilities: Vec<String>,
    large_cluster: bool,
    last_cleanup: Option<Instant>,
    cache: Cache,
    /// Scratch buffer for service port names.
    name_buf: String,
}

/// A fast multiplicative hasher (FxHash-style) for in-memory maps of names: no DoS concern
/// here (keys come from the API server, and the maps are private), SipHash was a tenth of a
/// full compile.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// What the previous sync rendered, per Service, and the running totals over it.
#[derive(Debug, Default)]
struct Cache {
    /// The state generation the cache reflects (`None`: nothing trustworthy).
    generation: Option<u64>,
    /// Service → its slot in `slots`.
    services: FastMap<ServiceName, u32>,
    /// The entries; freed slots are `None` and listed in `free`.
    slots: Vec<Option<ServiceEntry>>,
    free: Vec<u32>,
    chunks: Vec<Chunk>,
    totals: Totals,
    /// The last `KUBE-SERVICES` rule(s) as last written.
    nodeports_rules: Vec<String>,
}

impl Cache {
    fn entry(&self, name: &ServiceName) -> Option<&ServiceEntry> {
        let slot = *self.services.get(name)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.slots.iter().flatten()
    }
}

/// A changed Service's top-level rules and chains before and after, for a delta.
#[derive(Default)]
struct DeltaOps {
    filter_delete: Vec<u8>,
    filter_add: Vec<u8>,
    nat_delete: Vec<u8>,
    /// New `KUBE-SERVICES` rules (inserted at the top: the last rule must stay last).
    nat_insert: Vec<Vec<u8>>,
    nat_append: Vec<u8>,
    stale_chains: Vec<ChainName>,
}

impl DeltaOps {
    fn is_empty(&self) -> bool {
        self.filter_delete.is_empty()
            && self.filter_add.is_empty()
            && self.nat_delete.is_empty()
            && self.nat_insert.is_empty()
            && self.nat_append.is_empty()
            && self.stale_chains.is_empty()
    }

    /// Records the difference between a Service's old and new top-level rules and chains.
    fn record(&mut self, old: Option<&ServiceEntry>, new: Option<&ServiceEntry>) {
        let lines = |e: Option<&ServiceEntry>, nat: bool| -> Vec<Vec<u8>> {
            e.map(|e| {
                e.ports
                    .iter()
                    .flat_map(|p| {
                        let text = if nat { &p.top_nat } else { &p.top_filter };
                        text.split(|&b| b == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(<[u8]>::to_vec)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        for nat in [false, true] {
            let (old_lines, new_lines) = (lines(old, nat), lines(new, nat));
            if old_lines == new_lines {
                continue;
            }
            // Rewrite the Service's rules as a whole, so that their order within each chain
            // stays what a full sync writes (it can matter when a port's addresses overlap).
            for line in &old_lines {
                let out = if nat {
                    &mut self.nat_delete
                } else {
                    &mut self.filter_delete
                };
                // "-A CHAIN …" → "-D CHAIN …"
                out.extend_from_slice(b"-D");
                out.extend_from_slice(&line[2..]);
                out.push(b'\n');
            }
            for line in new_lines {
                if !nat {
                    self.filter_add.extend_from_slice(&line);
                    self.filter_add.push(b'\n');
                } else if line.starts_with(b"-A KUBE-SERVICES ") {
                    self.nat_insert.push(line);
                } else {
                    self.nat_append.extend_from_slice(&line);
                    self.nat_append.push(b'\n');
                }
            }
        }
        let chains = |e: Option<&ServiceEntry>| -> Vec<ChainName> {
            e.map(|e| {
                e.ports
                    .iter()
                    .flat_map(|p| p.chains.iter().copied())
                    .collect()
            })
            .unwrap_or_default()
        };
        let new_chains: FastSet<ChainName> = chains(new).into_iter().collect();
        self.stale_chains
            .extend(chains(old).into_iter().filter(|c| !new_chains.contains(c)));
    }
}

/// The elements of `a` not matched one-for-one by an element of `b`, in `a`'s order.
fn multiset_minus(a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut left: Vec<Option<&Vec<u8>>> = b.iter().map(Some).collect();
    a.iter()
        .filter(
            |line| match left.iter_mut().find(|x| x.is_some_and(|x| x == *line)) {
                Some(slot) => {
                    *slot = None;
                    false
                }
                None => true,
            },
        )
        .cloned()
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    nat_top_lines: usize,
    nat_chain_lines: usize,
    filter_lines: usize,
    no_local_internal: usize,
    no_local_external: usize,
}

impl Totals {
    fn add(&mut self, p: &PortCache) {
        self.nat_top_lines += p.top_nat_lines;
        self.nat_chain_lines += p.chain_rule_lines;
        self.filter_lines += p.top_filter_lines;
        self.no_local_internal += usize::from(p.no_local_internal);
        self.no_local_external += usize::from(p.no_local_external);
    }

    fn sub(&mut self, p: &PortCache) {
        self.nat_top_lines -= p.top_nat_lines;
        self.nat_chain_lines -= p.chain_rule_lines;
        self.filter_lines -= p.top_filter_lines;
        self.no_local_internal -= usize::from(p.no_local_internal);
        self.no_local_external -= usize::from(p.no_local_external);
    }
}

#[derive(Debug)]
struct ServiceEntry {
    ports: Vec<PortCache>,
    chunk: usize,
}

/// A group of Services whose top-level rules are kept concatenated.
#[derive(Debug, Default)]
struct Chunk {
    /// Slots of the member Services.
    members: Vec<u32>,
    nat: Bytes,
    filter: Bytes,
    bytes: usize,
    dirty: bool,
}

/// Concatenated top-level text kept per chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a service port rendered last time.
#[derive(Debug)]
struct PortCache {
    /// (port name, protocol, ClientIP affinity, large-cluster mode): while these stay the
    /// same, an endpoint chain with the same name has the same rules.
    sep_key: (String, kproxy_model::Protocol, bool, bool),
    /// Its `KUBE-SERVICES` / `KUBE-NODEPORTS` nat rules.
    top_nat: Vec<u8>,
    top_nat_lines: usize,
    /// Its filter rules.
    top_filter: Vec<u8>,
    top_filter_lines: usize,
    /// Its per-service chains, in chain-line order (EXT, FW, SVC, SVL, SEP…).
    chains: Vec<ChainName>,
    /// `-A` lines of those chains (for "rules in the kernel" figures when they are skipped).
    chain_rule_lines: usize,
    no_local_internal: bool,
    no_local_external: bool,
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
            probabilities: vec![String::new()],
            large_cluster: false,
            last_cleanup: None,
            cache: Cache::default(),
            name_buf: String::with_capacity(64),
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
            self.cache = Cache::default();
        }
    }

    /// Which nfacct counters exist (they decide the `-m nfacct` matches). A change makes the
    /// next sync rewrite everything.
    pub fn set_nfacct(&mut self, invalid_dropped: bool, localhost_nodeports: bool) {
        if (invalid_dropped, localhost_nodeports)
            != (
                self.config.nfacct_invalid_dropped,
                self.config.nfacct_localhost_nodeports,
            )
        {
            self.config.nfacct_invalid_dropped = invalid_dropped;
            self.config.nfacct_localhost_nodeports = localhost_nodeports;
            self.cache = Cache::default();
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
        self.compile_with_extra(state, req, &[])
    }

    /// Like [`Compiler::compile`], with `extra` lines added at the end of their table's
    /// section (a `mangle` section is added when needed): the proxier's way to create the
    /// jump rules from built-in chains and the canaries in the same transaction as a full
    /// sync. Ignored by delta syncs.
    pub fn compile_with_extra(
        &mut self,
        state: &ProxyState,
        req: SyncRequest<'_>,
        extra: &[ExtraLine],
    ) -> Compiled {
        let full = req.kind == SyncKind::Full;
        let mut stats = SyncStats {
            service_ports: state.service_port_count(),
            total_endpoints: state.total_endpoints(),
            ..SyncStats::default()
        };
        let large = stats.total_endpoints > self.config.large_cluster_threshold;
        stats.large_cluster = large;
        self.large_cluster = large;

        let (chain_cap, rules_cap) = if full {
            (
                (stats.total_endpoints + 4 * stats.service_ports) * 36 + 4096,
                stats.total_endpoints * 280 + stats.service_ports * 400 + 4096,
            )
        } else {
            (4096, 16 * 1024)
        };
        let mut nat_chains: Vec<u8> = Vec::with_capacity(chain_cap);
        let mut nat_rules: Vec<u8> = Vec::with_capacity(rules_cap);

        let incremental = !full
            && self.cache.generation == Some(req.changed.base_generation)
            && req.changed.generation == state.generation();
        stats.incremental = incremental;
        let delta = incremental && req.kind == SyncKind::Delta;
        stats.delta = delta;
        let mut ops = DeltaOps::default();
        if incremental {
            for name in &req.changed.services {
                let old = self.forget_service(name);
                if let Some(service) = state.service(name) {
                    let reuse = if delta { old.as_ref() } else { None };
                    self.add_service(
                        name,
                        service,
                        true,
                        large,
                        reuse,
                        &mut stats,
                        &mut nat_chains,
                        &mut nat_rules,
                    );
                }
                if delta {
                    ops.record(old.as_ref(), self.cache.entry(name));
                }
            }
        } else {
            self.cache = Cache::default();
            self.cache.services.reserve(stats.service_ports);
            self.cache.slots.reserve(stats.service_ports);
            for (name, service) in state.services() {
                let write_chains = full || req.changed.services.contains(name);
                self.add_service(
                    name,
                    service,
                    write_chains,
                    large,
                    None,
                    &mut stats,
                    &mut nat_chains,
                    &mut nat_rules,
                );
            }
        }
        self.cache.generation = Some(state.generation());
        if delta {
            return self.finish_delta(ops, stats, nat_chains, nat_rules);
        }
        for chunk in &mut self.cache.chunks {
            if chunk.dirty {
                chunk.rebuild(&self.cache.slots);
            }
        }
        if self.cache.chunks.iter().any(|c| c.members.is_empty()) {
            // Rare (every Service of a chunk went away): drop empty chunks and renumber.
            self.cache.chunks.retain(|c| !c.members.is_empty());
            for (i, chunk) in self.cache.chunks.iter().enumerate() {
                for &m in &chunk.members {
                    if let Some(Some(e)) = self.cache.slots.get_mut(m as usize) {
                        e.chunk = i;
                    }
                }
            }
        }

        // Stale per-service chains: flush (chain line) and delete.
        let mut deletions: Vec<u8> = Vec::new();
        if let Some(existing) = req.existing_nat_chains {
            // Every chain in use (built only when needed: in large clusters this runs once
            // per sync period).
            let active: FastSet<ChainName> = self
                .cache
                .entries()
                .flat_map(|e| e.ports.iter().flat_map(|p| p.chains.iter().copied()))
                .collect();
            let mut stale: Vec<&str> = existing
                .iter()
                .map(String::as_str)
                .filter(|c| is_service_chain(c))
                .filter(|c| ChainName::new(c).is_none_or(|n| !active.contains(&n)))
                .collect();
            stale.sort_unstable();
            stale.dedup();
            for chain in &stale {
                chain_line(&mut nat_chains, chain.as_bytes());
                let _ = writeln!(deletions, "-X {chain}");
            }
            stats.deleted_chains = stale.len();
        }

        let totals = self.cache.totals;
        stats.nat_rules_written += totals.nat_top_lines;
        stats.nat_rules_total += totals.nat_top_lines + totals.nat_chain_lines;
        stats.filter_rules += totals.filter_lines;
        stats.no_local_endpoints_internal = totals.no_local_internal;
        stats.no_local_endpoints_external = totals.no_local_external;

        let (filter_head, mut filter_tail) = self.filter_frame(&mut stats);
        let (nat_head, mut nat_tail) = self.nat_frame(&mut stats);
        self.cache.nodeports_rules = self.nodeports_rules();
        let mut mangle = Vec::new();
        for (table, section) in [
            ("filter", &mut filter_tail),
            ("nat", &mut nat_tail),
            ("mangle", &mut mangle),
        ] {
            for e in extra.iter().filter(|e| e.table == table) {
                section.extend_from_slice(e.line.as_bytes());
                section.push(b'\n');
            }
            section.extend_from_slice(b"COMMIT\n");
        }

        let mut parts: Vec<Bytes> = Vec::with_capacity(self.cache.chunks.len() * 2 + 9);
        if extra.iter().any(|e| e.table == "mangle") {
            let mut section = b"*mangle\n".to_vec();
            section.extend_from_slice(&mangle);
            parts.push(section.into());
        }
        parts.push(filter_head.into());
        parts.extend(self.cache.chunks.iter().map(|c| c.filter.clone()));
        parts.push(filter_tail.into());
        parts.push(nat_head_chains().into());
        parts.push(nat_chains.into());
        parts.push(nat_head.into());
        parts.extend(self.cache.chunks.iter().map(|c| c.nat.clone()));
        parts.push(nat_rules.into());
        parts.push(deletions.into());
        parts.push(nat_tail.into());
        parts.retain(|p| !p.is_empty());
        Compiled {
            restore: RestoreInput::from_parts(parts),
            stats,
        }
    }

    /// The filter table's start (chain lines, `KUBE-FIREWALL`) and end (`KUBE-FORWARD`,
    /// without `COMMIT`).
    fn filter_frame(&self, stats: &mut SyncStats) -> (Vec<u8>, Vec<u8>) {
        let mark = &self.config.masquerade_mark;
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(b"*filter\n");
        for chain in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
        ] {
            chain_line(&mut head, chain.as_bytes());
        }
        if self.config.localhost_nodeports_effective() {
            chain_line(&mut head, b"KUBE-FIREWALL");
            head.extend_from_slice(
                b"-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
                 -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
                 -j DROP\n",
            );
            stats.filter_rules += 1;
        }
        let mut tail = Vec::with_capacity(512);
        if self.config.drop_invalid {
            tail.extend_from_slice(b"-A KUBE-FORWARD -m conntrack --ctstate INVALID");
            if self.config.nfacct_invalid_dropped {
                tail.extend_from_slice(b" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts");
            }
            tail.extend_from_slice(b" -j DROP\n");
            stats.filter_rules += 1;
        }
        let _ = write!(
            tail,
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        );
        stats.filter_rules += 2;
        (head, tail)
    }

    /// The nat table's fixed rules (`KUBE-POSTROUTING`, `KUBE-MARK-MASQ`) and its end (the
    /// last `KUBE-SERVICES` rules, without `COMMIT`).
    fn nat_frame(&self, stats: &mut SyncStats) -> (Vec<u8>, Vec<u8>) {
        let mark = &self.config.masquerade_mark;
        let mut head = Vec::with_capacity(512);
        let _ = write!(
            head,
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
        stats.nat_rules_total += 4;
        let mut tail = Vec::with_capacity(512);
        for rule in self.nodeports_rules() {
            tail.extend_from_slice(rule.as_bytes());
            tail.push(b'\n');
            stats.nat_rules_written += 1;
            stats.nat_rules_total += 1;
        }
        (head, tail)
    }

    /// The last rule(s) of `KUBE-SERVICES`: everything addressed to the node goes on to
    /// `KUBE-NODEPORTS`.
    fn nodeports_rules(&self) -> Vec<String> {
        const RULE: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
        let v4 = self.config.family == IpFamily::V4;
        let localhost_np = self.config.localhost_nodeports_effective();
        if self.config.nodeport_addresses.match_all() {
            let exclude = if !v4 {
                " ! -d ::1/128"
            } else if !localhost_np {
                " ! -d 127.0.0.0/8"
            } else {
                ""
            };
            return vec![format!(
                "{RULE} -m addrtype --dst-type LOCAL{exclude} -j KUBE-NODEPORTS"
            )];
        }
        self.config
            .nodeport_addresses
            .node_ips(&self.interface_addresses)
            .into_iter()
            .filter(|ip| !ip.is_loopback() || (v4 && localhost_np))
            .map(|ip| format!("{RULE} -d {ip} -j KUBE-NODEPORTS"))
            .collect()
    }

    /// The output of a delta sync (see [`SyncKind::Delta`]).
    fn finish_delta(
        &mut self,
        mut ops: DeltaOps,
        mut stats: SyncStats,
        mut nat_chains: Vec<u8>,
        nat_rules: Vec<u8>,
    ) -> Compiled {
        // Chunks stay dirty until a sync that emits them (no need to rebuild now).
        let totals = self.cache.totals;
        stats.nat_rules_total = totals.nat_top_lines + totals.nat_chain_lines + 4;
        stats.filter_rules = 0;
        stats.no_local_endpoints_internal = totals.no_local_internal;
        stats.no_local_endpoints_external = totals.no_local_external;
        // The last KUBE-SERVICES rule(s) change only with the node's addresses.
        let nodeports = self.nodeports_rules();
        let old_np: Vec<Vec<u8>> = self
            .cache
            .nodeports_rules
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect();
        let new_np: Vec<Vec<u8>> = nodeports.iter().map(|r| r.as_bytes().to_vec()).collect();
        let np_delete = multiset_minus(&old_np, &new_np);
        let np_add = multiset_minus(&new_np, &old_np);
        stats.nat_rules_total += new_np.len();
        self.cache.nodeports_rules = nodeports;
        if ops.is_empty() && nat_rules.is_empty() && np_delete.is_empty() && np_add.is_empty() {
            return Compiled {
                restore: RestoreInput::default(),
                stats,
            };
        }
        let mut parts: Vec<Bytes> = Vec::new();
        if !ops.filter_delete.is_empty() || !ops.filter_add.is_empty() {
            let mut filter =
                Vec::with_capacity(ops.filter_delete.len() + ops.filter_add.len() + 32);
            filter.extend_from_slice(b"*filter\n");
            filter.extend_from_slice(&ops.filter_delete);
            filter.extend_from_slice(&ops.filter_add);
            filter.extend_from_slice(b"COMMIT\n");
            stats.filter_rules = ops.filter_add.iter().filter(|&&b| b == b'\n').count();
            parts.push(filter.into());
        }
        ops.stale_chains.sort_unstable();
        ops.stale_chains.dedup();
        let mut nat = Vec::with_capacity(4096);
        nat.extend_from_slice(b"*nat\n");
        for chain in &ops.stale_chains {
            chain_line(&mut nat_chains, chain.as_bytes());
        }
        nat.extend_from_slice(&nat_chains);
        nat.extend_from_slice(&ops.nat_delete);
        for line in &np_delete {
            nat.extend_from_slice(b"-D");
            nat.extend_from_slice(&line[2..]);
            nat.push(b'\n');
        }
        // Inserted at the top in reverse, so they keep their relative order.
        for line in ops.nat_insert.iter().rev() {
            nat.extend_from_slice(b"-I KUBE-SERVICES 1");
            nat.extend_from_slice(&line[b"-A KUBE-SERVICES".len()..]);
            nat.push(b'\n');
            stats.nat_rules_written += 1;
        }
        nat.extend_from_slice(&ops.nat_append);
        stats.nat_rules_written += ops.nat_append.iter().filter(|&&b| b == b'\n').count();
        for line in &np_add {
            nat.extend_from_slice(line);
            nat.push(b'\n');
            stats.nat_rules_written += 1;
        }
        parts.push(nat.into());
        parts.push(nat_rules.into());
        let mut tail = Vec::new();
        for chain in &ops.stale_chains {
            let _ = writeln!(tail, "-X {chain}");
        }
        stats.deleted_chains = ops.stale_chains.len();
        tail.extend_from_slice(b"COMMIT\n");
        parts.push(tail.into());
        Compiled {
            restore: RestoreInput::from_parts(parts),
            stats,
        }
    }

    /// Forgets what the cache holds for a Service (it changed or went away) and returns it.
    fn forget_service(&mut self, name: &ServiceName) -> Option<ServiceEntry> {
        let slot = self.cache.services.remove(name)?;
        let old = self.cache.slots.get_mut(slot as usize)?.take()?;
        self.cache.free.push(slot);
        for p in &old.ports {
            self.cache.totals.sub(p);
        }
        if let Some(chunk) = self.cache.chunks.get_mut(old.chunk) {
            if let Some(i) = chunk.members.iter().position(|m| *m == slot) {
                chunk.members.swap_remove(i);
            }
            chunk.dirty = true;
        }
        Some(old)
    }

    /// Renders a Service's top-level rules into the cache and, if `write_chains`, its
    /// per-service chains into the output. With `reuse` (a delta sync: what the kernel holds
    /// for this Service), endpoint chains that exist there with the same rules are kept
    /// rather than rewritten.
    #[allow(clippy::too_many_arguments)]
    fn add_service(
        &mut self,
        name: &ServiceName,
        service: &kproxy_model::ServiceState,
        write_chains: bool,
        large: bool,
        reuse: Option<&ServiceEntry>,
        stats: &mut SyncStats,
        nat_chains: &mut Vec<u8>,
        nat_rules: &mut Vec<u8>,
    ) {
        if service.ports.is_empty() {
            return;
        }
        let localhost_np = self.config.localhost_nodeports_effective();
        let mut ports = Vec::with_capacity(service.ports.len());
        let mut bytes = 0;
        for (svc, eps) in service.ports_with_endpoints() {
            let eps: &[EndpointInfo] = eps.map(|e| &e[..]).unwrap_or(&[]);
            let plan = self.plan(svc, eps);
            let mut n = std::mem::take(&mut self.name_buf);
            n.clear();
            let _ = std::fmt::Write::write_fmt(&mut n, format_args!("{}", svc.name));
            let mut entry = self.render_top(&plan, svc, &n, localhost_np);
            entry.sep_key.3 = large;
            entry.chains = self.port_chains(svc, &plan);
            if write_chains {
                let kept: FastSet<ChainName> = reuse
                    .and_then(|old| old.ports.iter().find(|p| p.sep_key == entry.sep_key))
                    .map(|old| {
                        old.chains
                            .iter()
                            .copied()
                            .filter(|c| c.starts_with("KUBE-SEP-"))
                            .collect()
                    })
                    .unwrap_or_default();
                for chain in entry.chains.iter().filter(|c| !kept.contains(*c)) {
                    chain_line(nat_chains, chain.as_bytes());
                }
                let seps = &entry.chains[entry.chains.len() - plan.sets.all_len()..];
                let lines = self.render_chains(svc, &plan, &n, large, seps, &kept, nat_rules);
                entry.chain_rule_lines = lines;
                stats.nat_rules_written += lines;
                stats.written_service_ports += 1;
            } else {
                entry.chain_rule_lines = self.chain_rule_count(svc, &plan);
            }
            self.name_buf = n;
            self.cache.totals.add(&entry);
            bytes += entry.top_nat.len() + entry.top_filter.len();
            ports.push(entry);
        }
        // Into the last chunk, or a new one when it is full.
        let fits = self
            .cache
            .chunks
            .last()
            .is_some_and(|c| c.bytes + bytes <= CHUNK_BYTES);
        if !fits {
            self.cache.chunks.push(Chunk::default());
        }
        let chunk_index = self.cache.chunks.len() - 1;
        let entry = ServiceEntry {
            ports,
            chunk: chunk_index,
        };
        let slot = match self.cache.free.pop() {
            Some(slot) => {
                self.cache.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.cache.slots.push(Some(entry));
                (self.cache.slots.len() - 1) as u32
            }
        };
        let chunk = &mut self.cache.chunks[chunk_index];
        chunk.members.push(slot);
        chunk.bytes += bytes;
        chunk.dirty = true;
        self.cache.services.insert(name.clone(), slot);
    }

    /// Endpoint selection and the per-port decisions of spec §3.1.
    fn plan<'a>(&self, svc: &ServicePortInfo, eps: &'a [EndpointInfo]) -> Plan<'a> {
        let sets = categorize_endpoints(eps, svc, &self.config.node);
        let has_any = sets.has_any;
        let itp_local = svc.internal_policy_local;
        let etp_local = svc.external_policy_local;
        let has_local = sets.local_len() > 0;
        Plan {
            chains: ServicePortChains::of(&svc.name),
            has_internal: has_any && (!itp_local || has_local),
            has_external: has_any && (!etp_local || has_local),
            uses_ext: has_any && svc.externally_accessible(),
            uses_fw: has_any
                && !svc.load_balancer_vips.is_empty()
                && !svc.load_balancer_source_ranges.is_empty(),
            uses_svc: sets.cluster_len() > 0 && svc.uses_cluster_endpoints(),
            uses_svl: has_local && svc.uses_local_endpoints(),
            sets,
        }
    }

    /// The top-level rules of one service port (spec §3.3 #1–#11).
    fn render_top(
        &self,
        plan: &Plan<'_>,
        svc: &ServicePortInfo,
        n: &str,
        localhost_np: bool,
    ) -> PortCache {
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
        let mut nat = Vec::with_capacity(160);
        let mut nat_lines = 0;
        let mut filter = Vec::new();
        let mut filter_lines = 0;
        let port = svc.port;

        // #1 / #6: the cluster IP.
        if plan.has_internal {
            nat.extend_from_slice(b"-A KUBE-SERVICES -m comment --comment \"");
            nat.extend_from_slice(n.as_bytes());
            nat.extend_from_slice(b" cluster IP\" -m ");
            nat.extend_from_slice(p.as_bytes());
            nat.extend_from_slice(b" -p ");
            nat.extend_from_slice(p.as_bytes());
            nat.extend_from_slice(b" -d ");
            push_ip(&mut nat, svc.cluster_ip);
            nat.extend_from_slice(b" --dport ");
            nat.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
            nat.extend_from_slice(b" -j ");
            nat.extend_from_slice(internal_chain.as_bytes());
            nat.push(b'\n');
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
            sep_key: (
                svc.name.port.clone(),
                svc.name.protocol,
                svc.session_affinity_timeout.is_some(),
                false,
            ),
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

    /// The per-service chains of a port in chain-line order: EXT, FW, SVC, SVL (those in
    /// use), then one `KUBE-SEP-` per endpoint of `plan.sets.all`, in order.
    fn port_chains(&self, svc: &ServicePortInfo, plan: &Plan<'_>) -> Vec<ChainName> {
        let c = &plan.chains;
        let mut chains = Vec::with_capacity(plan.sets.all_len() + 4);
        for (uses, chain) in [
            (plan.uses_ext, c.external),
            (plan.uses_fw, c.firewall),
            (plan.uses_svc, c.cluster),
            (plan.uses_svl, c.local),
        ] {
            if uses {
                chains.push(chain);
            }
        }
        let mut namer = EndpointChains::new(&svc.name);
        chains.extend(plan.sets.all().map(|ep| namer.chain(ep.endpoint_bytes())));
        chains
    }

    /// The number of `-A` lines [`Self::render_chains`] writes for a port, without
    /// rendering (for ports whose chains a partial sync leaves in place).
    fn chain_rule_count(&self, svc: &ServicePortInfo, plan: &Plan<'_>) -> usize {
        let mut lines = 0;
        let affinity = usize::from(svc.session_affinity_timeout.is_some());
        lines += usize::from(
            plan.has_internal
                && (self.config.masquerade_all || self.config.local_detector.is_implemented()),
        );
        if plan.uses_ext {
            lines += if svc.external_policy_local {
                2 + usize::from(self.config.local_detector.is_implemented())
            } else {
                1
            } + usize::from(plan.has_external);
        }
        if plan.uses_fw {
            lines += svc.load_balancer_source_ranges.len()
                + 1
                + if self.allow_from_node(svc) {
                    svc.load_balancer_vips.len()
                } else {
                    0
                };
        }
        if plan.uses_svc {
            lines += plan.sets.cluster_len() * (1 + affinity);
        }
        if plan.uses_svl {
            lines += plan.sets.local_len() * (1 + affinity);
        }
        lines + 2 * plan.sets.all_len()
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

    /// Renders the rules of the per-service chains of one port (spec §3.3 #12–#17, §3.4)
    /// into `out` and returns the number of `-A` lines the chains hold. `seps` are the
    /// endpoint chains of `plan.sets.all`, in order; those in `kept` are already in the
    /// kernel with these very rules and are not written.
    #[allow(clippy::too_many_arguments)]
    fn render_chains(
        &mut self,
        svc: &ServicePortInfo,
        plan: &Plan<'_>,
        n: &str,
        large: bool,
        seps: &[ChainName],
        kept: &FastSet<ChainName>,
        out: &mut Vec<u8>,
    ) -> usize {
        let p = svc.protocol().lower();
        let c = plan.chains;
        let mut lines = 0;
        let internal_chain = if svc.internal_policy_local {
            c.local
        } else {
            c.cluster
        };

        // #12: masquerade off-cluster traffic to the cluster IP.
        if plan.has_internal
            && (self.config.masquerade_all || self.config.local_detector.is_implemented())
        {
            out.extend_from_slice(b"-A ");
            out.extend_from_slice(internal_chain.as_bytes());
            out.extend_from_slice(b" -m comment --comment \"");
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b" cluster IP\" -m ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b" -p ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b" -d ");
            push_ip(out, svc.cluster_ip);
            out.extend_from_slice(b" --dport ");
            out.extend_from_slice(itoa::Buffer::new().format(svc.port).as_bytes());
            if !self.config.masquerade_all {
                out.push(b' ');
                out.extend_from_slice(self.if_not_local.as_bytes());
            }
            out.extend_from_slice(b" -j KUBE-MARK-MASQ\n");
            lines += 1;
        }

        // #13: KUBE-EXT.
        if plan.uses_ext {
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

        // #15 / #16: dispatch. `seps[j]` is the chain of the j-th endpoint of `all`.
        for (uses, chain, local, count) in [
            (plan.uses_svc, c.cluster, false, plan.sets.cluster_len()),
            (plan.uses_svl, c.local, true, plan.sets.local_len()),
        ] {
            if !uses {
                continue;
            }
            let members = || {
                plan.sets
                    .all_with_membership()
                    .enumerate()
                    .filter(
                        move |(_, (_, in_cluster, in_local))| {
                            if local { *in_local } else { *in_cluster }
                        },
                    )
                    .map(|(j, (ep, _, _))| (j, ep))
            };
            if let Some(timeout) = svc.session_affinity_timeout {
                for (j, ep) in members() {
                    let sep = seps[j];
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
            for (i, (j, ep)) in members().enumerate() {
                out.extend_from_slice(b"-A ");
                out.extend_from_slice(chain.as_bytes());
                if !large {
                    out.extend_from_slice(b" -m comment --comment \"");
                    out.extend_from_slice(n.as_bytes());
                    out.extend_from_slice(b" -> ");
                    out.extend_from_slice(ep.endpoint_bytes());
                    out.push(b'"');
                }
                if i + 1 < count {
                    out.extend_from_slice(b" -m statistic --mode random --probability ");
                    out.extend_from_slice(self.probability(count - i).as_bytes());
                }
                out.extend_from_slice(b" -j ");
                out.extend_from_slice(seps[j].as_bytes());
                out.push(b'\n');
                lines += 1;
            }
        }

        // #17: one chain per endpoint.
        for (ep, sep) in plan.sets.all().zip(seps) {
            lines += 2;
            if kept.contains(sep) {
                continue;
            }
            let ep_str = ep.endpoint_bytes();
            let ip = ep.ip_bytes();
            // Hairpin: an endpoint reaching itself through the service is masqueraded.
            out.extend_from_slice(b"-A ");
            out.extend_from_slice(sep.as_bytes());
            if !large {
                out.extend_from_slice(b" -m comment --comment ");
                out.extend_from_slice(n.as_bytes());
            }
            out.extend_from_slice(b" -s ");
            out.extend_from_slice(ip);
            out.extend_from_slice(b" -j KUBE-MARK-MASQ\n");
            // DNAT, recording the client for affinity.
            out.extend_from_slice(b"-A ");
            out.extend_from_slice(sep.as_bytes());
            if !large {
                out.extend_from_slice(b" -m comment --comment ");
                out.extend_from_slice(n.as_bytes());
            }
            if svc.session_affinity_timeout.is_some() {
                out.extend_from_slice(b" -m recent --name ");
                out.extend_from_slice(sep.as_bytes());
                out.extend_from_slice(b" --set");
            }
            out.extend_from_slice(b" -m ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b" -p ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b" -j DNAT --to-destination ");
            out.extend_from_slice(ep_str);
            out.push(b'\n');
        }
        lines
    }
}

impl Chunk {
    fn rebuild(&mut self, slots: &[Option<ServiceEntry>]) {
        let mut nat = Vec::with_capacity(self.bytes);
        let mut filter = Vec::new();
        for &m in &self.members {
            if let Some(Some(e)) = slots.get(m as usize) {
                for p in &e.ports {
                    nat.extend_from_slice(&p.top_nat);
                    filter.extend_from_slice(&p.top_filter);
                }
            }
        }
        self.bytes = nat.len() + filter.len();
        self.nat = nat.into();
        self.filter = filter.into();
        self.dirty = false;
    }
}

/// The nat table's header and fixed chain lines.
fn nat_head_chains() -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"*nat\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        chain_line(&mut out, chain.as_bytes());
    }
    out
}

fn chain_line(out: &mut Vec<u8>, chain: &[u8]) {
    out.push(b':');
    out.extend_from_slice(chain);
    out.extend_from_slice(b" - [0:0]\n");
}

/// Appends an address in canonical form (IPv4 without the formatting machinery).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(buf.format(*octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}
