//! The iptables proxier: keeps one family's kernel rules in step with the service state.
//!
//! It decides between full, partial and delta syncs (spec §5.2, plus kproxy's delta),
//! ensures the jump rules from the built-in chains and the nfacct counters on full syncs
//! (§1.2, §3.9), deletes stale chains, feeds the compiled input to `iptables-restore`, falls
//! back to a full sync after any failure (§5.5), watches for someone flushing the tables
//! (§5.6, extended), cleans stale UDP conntrack entries (§5.7), and removes everything on
//! `--cleanup` (§5.8).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kproxy_conntrack::nfacct::NfAcct;
use kproxy_conntrack::{Conntrack, Family, Protocol as CtProtocol, StaleFlowFilter};
use kproxy_model::{Changes, IpFamily, Protocol, ProxyState};

use crate::compile::{Compiler, ExtraLine, SyncKind, SyncRequest, SyncStats};
use crate::config::Config;
use crate::error::ApplyError;
use crate::exec::{Iptables, RestoreTiming};
use crate::names::is_service_chain;
use crate::restore::RestoreInput;
use crate::save;

/// Upstream's period of full syncs when nothing else forces one (`FullSyncPeriod`).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The jump rules from built-in chains (spec §1.2): (table, from, extra args, comment, to),
/// in upstream's order (each is inserted at the top when missing).
const JUMPS: &[(&str, &str, &[&str], &str, &str)] = &[
    (
        "filter",
        "INPUT",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        &[],
        "kubernetes health check service ports",
        "KUBE-NODEPORTS",
    ),
    (
        "filter",
        "FORWARD",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        &[],
        "kubernetes forwarding rules",
        "KUBE-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        &["-m", "conntrack", "--ctstate", "NEW"],
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "nat",
        "OUTPUT",
        &[],
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "PREROUTING",
        &[],
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        &[],
        "kubernetes postrouting rules",
        "KUBE-POSTROUTING",
    ),
    // Shared with kubelet; created but never removed.
    ("filter", "INPUT", &[], "", "KUBE-FIREWALL"),
    ("filter", "OUTPUT", &[], "", "KUBE-FIREWALL"),
];

/// The canary chain (spec §5.6).
const CANARY: &str = "KUBE-PROXY-CANARY";

fn jump_args<'a>(extra: &[&'a str], comment: &'a str, to: &'a str) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    if !comment.is_empty() {
        args.extend(["-m", "comment", "--comment", comment]);
    }
    args.extend(["-j", to]);
    args
}

/// How a [`Proxier`] syncs.
#[derive(Debug, Clone)]
pub struct ProxierOptions {
    /// Between syncs that need no full one: [`SyncKind::Delta`] (kproxy, the default) or
    /// [`SyncKind::Partial`] (upstream's restore input).
    pub incremental_kind: SyncKind,
    /// Full syncs at least this often (upstream: one hour; skipped in large-cluster mode as
    /// in newest upstream).
    pub full_sync_period: Duration,
    /// Delete stale UDP conntrack entries after syncs that changed UDP endpoints.
    pub conntrack_cleanup: bool,
    /// Create the nfacct counters on full syncs.
    pub nfacct: bool,
    /// Keep the last restore input (for debugging and benchmarks; a full sync's input can
    /// be tens of megabytes).
    pub keep_last_input: bool,
}

impl Default for ProxierOptions {
    fn default() -> Self {
        ProxierOptions {
            incremental_kind: SyncKind::Delta,
            full_sync_period: FULL_SYNC_PERIOD,
            conntrack_cleanup: true,
            nfacct: true,
            keep_last_input: false,
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// The kind of restore input written.
    pub kind: SyncKind,
    /// The compiler's figures.
    pub stats: SyncStats,
    /// Time spent compiling.
    pub compile_time: Duration,
    /// The restore, if anything had to be written.
    pub restore: Option<RestoreTiming>,
    /// Conntrack entries deleted.
    pub conntrack_deleted: usize,
    /// A non-fatal problem (conntrack cleanup, nfacct), if any.
    pub warning: Option<String>,
    /// Time for the whole sync.
    pub total_time: Duration,
}

/// A failed sync. The next sync will be full.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} sync failed: {source}")]
pub struct SyncError {
    /// The kind of sync that failed (a failed partial or delta sync is a bug indicator:
    /// upstream counts them in `sync_proxy_rules_iptables_partial_restore_failures_total`).
    pub kind: SyncKind,
    /// Whether the restore itself failed (rather than a preparation step).
    pub restore_failed: bool,
    /// Why.
    #[source]
    pub source: ApplyError,
}

/// Keeps one family's iptables rules in step with the service state.
#[derive(Debug)]
pub struct Proxier {
    iptables: Iptables,
    compiler: Compiler,
    options: ProxierOptions,
    need_full: bool,
    last_full: Option<Instant>,
    conntrack: Option<Conntrack>,
    last_input: Option<RestoreInput>,
}

impl Proxier {
    /// A proxier writing with `iptables`, compiling with `config`. Its first sync is full.
    pub fn new(iptables: Iptables, mut config: Config, options: ProxierOptions) -> Proxier {
        config.random_fully = iptables.has_random_fully();
        Proxier {
            iptables,
            compiler: Compiler::new(config),
            options,
            need_full: true,
            last_full: None,
            conntrack: None,
            last_input: None,
        }
    }

    /// The tools in use.
    pub fn iptables(&self) -> &Iptables {
        &self.iptables
    }

    /// The compiler (its configuration, large-cluster mode).
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// The compiler, to update the node topology or interface addresses.
    pub fn compiler_mut(&mut self) -> &mut Compiler {
        &mut self.compiler
    }

    /// The last restore input, if [`ProxierOptions::keep_last_input`].
    pub fn last_input(&self) -> Option<&RestoreInput> {
        self.last_input.as_ref()
    }

    /// Makes the next sync full (the node's topology changed, the tables were flushed).
    pub fn force_full_sync(&mut self) {
        self.need_full = true;
    }

    /// Whether the next sync will be full.
    pub fn full_sync_due(&self, now: Instant) -> bool {
        self.need_full
            || (!self.compiler.large_cluster_mode()
                && self.last_full.is_none_or(|t| {
                    now.saturating_duration_since(t) >= self.options.full_sync_period
                }))
    }

    /// Sets the sysctls the rules rely on: `route_localnet` when localhost NodePorts are in
    /// effect (IPv4), as kube-proxy does at start-up. Acts on the calling thread's network
    /// namespace.
    pub fn ensure_sysctls(&self) -> std::io::Result<()> {
        if self.compiler.config().localhost_nodeports_effective() {
            std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1")?;
        }
        Ok(())
    }

    /// Brings the kernel up to `state`. `changes` are those of the commit that produced
    /// `state`.
    pub fn sync(
        &mut self,
        state: &ProxyState,
        changes: &Changes,
        now: Instant,
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let kind = if self.full_sync_due(now) {
            SyncKind::Full
        } else {
            self.options.incremental_kind
        };
        // Whatever happens next, a failure means the kernel and the compiler's idea of it
        // may differ: only a full sync brings them back together.
        self.need_full = true;
        let fail = |restore_failed: bool, source: ApplyError| SyncError {
            kind,
            restore_failed,
            source,
        };
        let mut warning = None;
        let mut extra = Vec::new();
        let existing = if kind == SyncKind::Full {
            if let Err(e) = self.ensure_nfacct() {
                warning = Some(format!("nfacct counters: {e}"));
            }
            // One look at every table: stale chains, missing jumps from the built-in
            // chains; the restore below then creates what is missing, atomically.
            let saved = self.iptables.save_all().map_err(|e| fail(false, e))?;
            // Only the built-in chains' rules matter here (the jumps); the chain lines are
            // all kept (stale chains).
            let saved = save::parse_rules_of(&saved, is_builtin_chain).map_err(|e| {
                fail(
                    false,
                    ApplyError::Failed {
                        command: "iptables-save".into(),
                        status: None,
                        stderr: format!("unparsable output: {e}"),
                        context: String::new(),
                    },
                )
            })?;
            extra = missing_jumps(
                self.compiler.config().localhost_nodeports_effective(),
                &saved,
            );
            self.compiler.record_stale_chain_cleanup(now);
            Some(
                saved
                    .table("nat")
                    .map(|t| t.chain_names().map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        } else if kind == SyncKind::Partial && self.compiler.stale_chain_cleanup_due(state, now) {
            // Upstream-style partial syncs look for stale chains when due; delta syncs know
            // exactly which chains they retire.
            self.compiler.record_stale_chain_cleanup(now);
            match self.iptables.chains("nat") {
                Ok(chains) => Some(chains),
                Err(e) => {
                    warning = Some(format!("stale chains will not be deleted: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let compile_start = Instant::now();
        let compiled = self.compiler.compile_with_extra(
            state,
            SyncRequest {
                kind,
                changed: changes,
                existing_nat_chains: existing.as_deref(),
            },
            &extra,
        );
        let compile_time = compile_start.elapsed();
        let actual_kind = if compiled.stats.delta {
            SyncKind::Delta
        } else if kind == SyncKind::Full {
            SyncKind::Full
        } else {
            SyncKind::Partial
        };
        if self.options.keep_last_input {
            self.last_input = Some(compiled.restore.clone());
        }
        let restore = if compiled.restore.is_empty() {
            None
        } else {
            Some(
                self.iptables
                    .restore(&compiled.restore, None)
                    .map_err(|e| fail(true, e))?,
            )
        };
        self.need_full = false;
        if kind == SyncKind::Full {
            self.last_full = Some(now);
        }
        let mut conntrack_deleted = 0;
        if self.options.conntrack_cleanup
            && (kind == SyncKind::Full || !changes.udp_endpoints.is_empty())
        {
            match self.clean_conntrack(state) {
                Ok(n) => conntrack_deleted = n,
                Err(e) => warning = Some(format!("conntrack cleanup: {e}")),
            }
        }
        Ok(SyncReport {
            kind: actual_kind,
            stats: compiled.stats,
            compile_time,
            restore,
            conntrack_deleted,
            warning,
            total_time: start.elapsed(),
        })
    }

    /// Creates the nfacct counters if needed; the compiler writes the `-m nfacct` matches
    /// only for counters that exist.
    fn ensure_nfacct(&mut self) -> Result<(), ApplyError> {
        if !self.options.nfacct {
            self.compiler.set_nfacct(false, false);
            return Ok(());
        }
        let result = (|| -> Result<(), ApplyError> {
            let mut acct = NfAcct::new()?;
            acct.ensure(kproxy_conntrack::nfacct::CT_STATE_INVALID_DROPPED_PKTS)?;
            acct.ensure(kproxy_conntrack::nfacct::LOCALHOST_NPS_ACCEPTED_PKTS)?;
            Ok(())
        })();
        match &result {
            Ok(()) => self.compiler.set_nfacct(true, true),
            Err(_) => self.compiler.set_nfacct(false, false),
        }
        result
    }

    /// Whether someone flushed or deleted our rules since the last sync (a firewall
    /// reload, `iptables -F`): upstream watches the mangle canary chain; kproxy also checks
    /// that the nat and filter entry points still jump to its chains, which catches
    /// `iptables -t nat -F`, which upstream misses (kubernetes/kubernetes#129128).
    pub fn tables_flushed(&self) -> Result<bool, ApplyError> {
        if !self.iptables.chain_exists("mangle", CANARY)? {
            return Ok(true);
        }
        let checks: [(&str, &str, &str, &str); 2] = [
            (
                "nat",
                "PREROUTING",
                "kubernetes service portals",
                "KUBE-SERVICES",
            ),
            (
                "filter",
                "FORWARD",
                "kubernetes forwarding rules",
                "KUBE-FORWARD",
            ),
        ];
        for (table, from, comment, to) in checks {
            // One look per table (on legacy every look reads the whole table from the kernel:
            // ~1 s of CPU at 10k Services): a jump exists only while its target chain does.
            match self
                .iptables
                .rule_exists(table, from, &jump_args(&[], comment, to))
            {
                Ok(true) => {}
                Ok(false) => return Ok(true),
                // `-C` fails outright when the target chain is gone (`iptables -X`).
                Err(e) => {
                    if !self.iptables.chain_exists(table, to)? {
                        return Ok(true);
                    }
                    return Err(e);
                }
            }
        }
        Ok(false)
    }

    fn clean_conntrack(&mut self, state: &ProxyState) -> Result<usize, ApplyError> {
        let family = match self.compiler.config().family {
            IpFamily::V4 => Family::Ipv4,
            IpFamily::V6 => Family::Ipv6,
        };
        let mut filter = StaleFlowFilter::with_protocol(CtProtocol::Udp);
        for (svc, eps) in state.service_ports() {
            if svc.protocol() != Protocol::Udp {
                continue;
            }
            let mut vips: Vec<(IpAddr, u16)> = vec![(svc.cluster_ip, svc.port)];
            vips.extend(svc.external_ips.iter().map(|ip| (*ip, svc.port)));
            vips.extend(svc.load_balancer_vips.iter().map(|ip| (*ip, svc.port)));
            let serving: Vec<SocketAddr> = eps
                .iter()
                .filter(|e| e.serving)
                .map(|e| SocketAddr::new(e.ip(), e.port()))
                .collect();
            let node_port = (svc.node_port != 0).then_some(svc.node_port);
            filter.add_service_port_endpoints(&vips, node_port, &serving);
        }
        if filter.is_empty() {
            return Ok(0);
        }
        let ct = match &mut self.conntrack {
            Some(ct) => ct,
            none => none.insert(Conntrack::new()?),
        };
        let stats = kproxy_conntrack::clean_stale_flows(ct, family, &filter)?;
        Ok(stats.deleted)
    }
}

/// Whether `chain` is one of the kernel's built-in chains (the only ones a full sync reads
/// the rules of).
fn is_builtin_chain(chain: &str) -> bool {
    matches!(
        chain,
        "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING"
    )
}

/// The restore lines a full sync adds to create what the kernel's tables (`saved`, from
/// `iptables-save`) lack: the canary chains, the shared `KUBE-FIREWALL` chain (unless the
/// compiler declares it, with localhost NodePorts in effect), and the jump rules from the
/// built-in chains (spec §1.2: each missing one inserted at the top, in table order). On a
/// fresh node (`saved` empty) that is all of them.
pub fn missing_jumps(localhost_nodeports_effective: bool, saved: &save::Ruleset) -> Vec<ExtraLine> {
    let mut extra = Vec::new();
    for table in ["mangle", "nat", "filter"] {
        extra.push(ExtraLine {
            table,
            line: format!(":{CANARY} - [0:0]"),
        });
    }
    let has_chain = |table: &str, chain: &str| {
        saved
            .table(table)
            .is_some_and(|t| t.chain_names().any(|c| c == chain))
    };
    if !has_chain("filter", "KUBE-FIREWALL") && !localhost_nodeports_effective {
        extra.push(ExtraLine {
            table: "filter",
            line: ":KUBE-FIREWALL - [0:0]".into(),
        });
    }
    for (table, from, args_extra, comment, to) in JUMPS {
        let args: Vec<String> = jump_args(args_extra, comment, to)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let present = saved
            .table(table)
            .is_some_and(|t| t.rules_of(from).iter().any(|r| r.args == args));
        if !present {
            let rule = save::Rule {
                chain: (*from).to_owned(),
                args,
            };
            // "-A CHAIN …" → "-I CHAIN 1 …"
            let text = rule.to_string();
            let line = format!("-I {from} 1{}", &text[3 + from.len()..]);
            extra.push(ExtraLine { table, line });
        }
    }
    extra
}

/// Removes everything kproxy (or kube-proxy's iptables mode) created in one family, and
/// nothing else (spec §5.8): the jump rules from built-in chains (not kubelet's
/// `KUBE-FIREWALL` jumps), the top-level chains, every per-service chain and the canaries.
pub fn cleanup(iptables: &Iptables) -> Result<(), ApplyError> {
    for (table, from, extra, comment, to) in &JUMPS[..12] {
        // A rule can only point at an existing chain.
        if iptables.chain_exists(table, to)? {
            iptables.delete_rule(table, from, &jump_args(extra, comment, to))?;
        }
    }
    for (table, fixed) in [
        (
            "nat",
            &[
                "KUBE-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-POSTROUTING",
                "KUBE-MARK-MASQ",
                CANARY,
            ][..],
        ),
        (
            "filter",
            &[
                "KUBE-SERVICES",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-FORWARD",
                "KUBE-NODEPORTS",
                "KUBE-PROXY-FIREWALL",
                CANARY,
            ][..],
        ),
    ] {
        let existing = iptables.chains(table)?;
        let doomed: Vec<&String> = existing
            .iter()
            .filter(|c| fixed.contains(&c.as_str()) || (table == "nat" && is_service_chain(c)))
            .collect();
        if doomed.is_empty() {
            continue;
        }
        let mut text = format!("*{table}\n");
        for c in &doomed {
            text.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &doomed {
            text.push_str(&format!("-X {c}\n"));
        }
        text.push_str("COMMIT\n");
        iptables.restore(
            &RestoreInput::from_parts(vec![bytes::Bytes::from(text)]),
            Some(table),
        )?;
    }
    let _ = iptables.delete_chain("mangle", CANARY);
    Ok(())
}
