//! A small model of the kernel's iptables tables, to "apply" restore inputs in order.
//!
//! Semantics of `iptables-restore --noflush` as the spec (§4.1, §5.3) describes them:
//!
//! * `*table` … `COMMIT` is one transaction per table: if any line fails, the table is left
//!   as it was (and [`SimIptables::apply`] reports the error; the whole input is then
//!   rejected, as kube-proxy treats a failed restore as a failed sync).
//! * `:CHAIN - [0:0]` creates the chain if missing and flushes it if present.
//! * `-A CHAIN args` appends; the chain must exist, and a `-j` target must be a built-in
//!   target or an existing chain (iptables: "Couldn't load target").
//! * `-I CHAIN [n] args` inserts (at position n, 1-based, default 1); `-D CHAIN args`
//!   deletes the first rule with exactly these arguments (it must exist).
//! * `-X CHAIN` deletes a chain: it must exist, be empty, and no rule may jump to it
//!   ("Too many links").
//!
//! Written independently of `kproxy_iptables::save` (the code under test).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Targets that are not chains.
pub const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "DNAT",
    "SNAT",
    "MARK",
    "MASQUERADE",
    "LOG",
];

/// One table: chain name → rules (each rule = its arguments after the chain name).
pub type SimTable = BTreeMap<String, Vec<Vec<String>>>;

/// The simulated tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimIptables {
    pub tables: BTreeMap<String, SimTable>,
}

/// Splits a line into words: whitespace separates, double quotes group, a backslash inside
/// quotes escapes the next character.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut quoted) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.push(chars.next().ok_or("dangling backslash")?),
            c if c.is_ascii_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn target_of(args: &[String]) -> Option<&str> {
    args.iter()
        .position(|a| a == "-j")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn check_target(table: &SimTable, args: &[String], line: &str) -> Result<(), String> {
    match target_of(args) {
        None => Ok(()),
        Some(t) if BUILTIN_TARGETS.contains(&t) || table.contains_key(t) => Ok(()),
        Some(t) => Err(format!("jump to missing chain {t}: {line}")),
    }
}

impl SimIptables {
    /// An empty kernel.
    pub fn new() -> SimIptables {
        SimIptables::default()
    }

    /// Applies one restore input; on error nothing changes.
    pub fn apply(&mut self, input: &str) -> Result<(), String> {
        let mut work = self.clone();
        let mut current: Option<(String, SimTable)> = None;
        for (i, line) in input.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}", i + 1);
            if line.is_empty() {
                return Err(err("blank line".into()));
            }
            if let Some(name) = line.strip_prefix('*') {
                if current.is_some() {
                    return Err(err("table not committed".into()));
                }
                let t = work.tables.remove(name).unwrap_or_default();
                current = Some((name.to_owned(), t));
                continue;
            }
            let Some((tname, table)) = current.as_mut() else {
                return Err(err(format!("outside a table: {line}")));
            };
            if line == "COMMIT" {
                let (n, t) = current.take().unwrap();
                work.tables.insert(n, t);
                continue;
            }
            if let Some(rest) = line.strip_prefix(':') {
                let w: Vec<&str> = rest.split(' ').collect();
                if w.len() != 3 || w[1] != "-" || w[2] != "[0:0]" {
                    return Err(err(format!("bad chain line {line:?}")));
                }
                table.entry(w[0].to_owned()).or_default().clear();
                continue;
            }
            let w = words(line).map_err(err)?;
            if w.len() < 2 {
                return Err(err(format!("short command {line:?}")));
            }
            let (op, chain, args) = (&w[0], w[1].clone(), &w[2..]);
            match op.as_str() {
                "-A" => {
                    check_target(table, args, line).map_err(err)?;
                    table
                        .get_mut(&chain)
                        .ok_or_else(|| err(format!("{tname}: no chain {chain}")))?
                        .push(args.to_vec());
                }
                "-I" => {
                    let (pos, args) = match args.first().and_then(|a| a.parse::<usize>().ok()) {
                        Some(p) => (p, &args[1..]),
                        None => (1, args),
                    };
                    check_target(table, args, line).map_err(err)?;
                    let rules = table
                        .get_mut(&chain)
                        .ok_or_else(|| err(format!("{tname}: no chain {chain}")))?;
                    if pos == 0 || pos > rules.len() + 1 {
                        return Err(err(format!("bad insert position {pos}")));
                    }
                    rules.insert(pos - 1, args.to_vec());
                }
                "-D" => {
                    let rules = table
                        .get_mut(&chain)
                        .ok_or_else(|| err(format!("{tname}: no chain {chain}")))?;
                    let at = rules
                        .iter()
                        .position(|r| r[..] == args[..])
                        .ok_or_else(|| err(format!("no such rule: {line}")))?;
                    rules.remove(at);
                }
                "-X" => {
                    if !args.is_empty() {
                        return Err(err(format!("junk after -X: {line}")));
                    }
                    match table.get(&chain) {
                        None => return Err(err(format!("-X of missing chain {chain}"))),
                        Some(r) if !r.is_empty() => {
                            return Err(err(format!("-X of non-empty chain {chain}")));
                        }
                        _ => {}
                    }
                    let referenced = table
                        .iter()
                        .any(|(_, rules)| rules.iter().any(|r| target_of(r) == Some(&chain)));
                    if referenced {
                        return Err(err(format!("-X of referenced chain {chain}")));
                    }
                    table.remove(&chain);
                }
                other => return Err(err(format!("unknown command {other}"))),
            }
        }
        if current.is_some() {
            return Err("input ends inside a table".into());
        }
        *self = work;
        Ok(())
    }

    /// The chains of `table`, sorted.
    pub fn chain_names(&self, table: &str) -> Vec<String> {
        self.tables
            .get(table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The rules of one chain (empty if the chain does not exist).
    pub fn rules(&self, table: &str, chain: &str) -> &[Vec<String>] {
        self.tables
            .get(table)
            .and_then(|t| t.get(chain))
            .map(|r| &r[..])
            .unwrap_or(&[])
    }

    /// Whether `chain` exists in `table`.
    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.contains_key(chain))
    }

    /// A readable description of how `self` and `other` differ (empty when equal).
    pub fn diff(&self, other: &SimIptables) -> String {
        let mut out = String::new();
        let names: std::collections::BTreeSet<&String> =
            self.tables.keys().chain(other.tables.keys()).collect();
        for t in names {
            let empty = SimTable::new();
            let a = self.tables.get(t).unwrap_or(&empty);
            let b = other.tables.get(t).unwrap_or(&empty);
            let chains: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for c in chains {
                match (a.get(c), b.get(c)) {
                    (Some(x), Some(y)) if x == y => {}
                    (x, y) => {
                        let _ = writeln!(out, "{t} {c}:");
                        let _ = writeln!(out, "  left:  {x:?}");
                        let _ = writeln!(out, "  right: {y:?}");
                    }
                }
            }
        }
        out
    }

    /// Every rule as text `-A CHAIN args`, by table (for messages).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (t, chains) in &self.tables {
            let _ = writeln!(out, "*{t}");
            for c in chains.keys() {
                let _ = writeln!(out, ":{c}");
            }
            for (c, rules) in chains {
                for r in rules {
                    let _ = writeln!(out, "-A {c} {}", r.join(" "));
                }
            }
        }
        out
    }
}

/// The chains whose rules come from many service ports in an order the spec leaves open
/// (§4.1: upstream iterates service ports in random order).
pub const SHARED_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-PROXY-FIREWALL",
];

fn comment_of(rule: &[String]) -> &str {
    rule.iter()
        .position(|a| a == "--comment")
        .and_then(|i| rule.get(i + 1))
        .map(String::as_str)
        .unwrap_or("")
}

impl SimIptables {
    /// The tables with the rules of [`SHARED_CHAINS`] stably sorted by service port name
    /// (the comment up to its first space), the "must be the last rule" rules kept last:
    /// rules of one service port keep their order, only the (unspecified) order across
    /// service ports is normalised. Every other chain is compared exactly.
    pub fn normalized(&self) -> SimIptables {
        let mut out = self.clone();
        for table in out.tables.values_mut() {
            for name in SHARED_CHAINS {
                if let Some(rules) = table.get_mut(*name) {
                    rules.sort_by_key(|r| {
                        let c = comment_of(r);
                        (
                            c.contains("must be the last rule"),
                            c.split(' ').next().unwrap_or("").to_owned(),
                        )
                    });
                }
            }
        }
        out
    }
}

impl SimIptables {
    /// Like [`SimIptables::normalized`], but the rules of [`SHARED_CHAINS`] are compared
    /// as a multiset (order within a service port ignored too).
    pub fn unordered_shared(&self) -> SimIptables {
        let mut out = self.clone();
        for table in out.tables.values_mut() {
            for name in SHARED_CHAINS {
                if let Some(rules) = table.get_mut(*name) {
                    rules.sort();
                }
            }
        }
        out
    }
}
