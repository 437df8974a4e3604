//! A plain reading of one restore input, for assertions about which lines it contains.
//! (Independent of `kproxy_iptables::save`.)

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone)]
pub struct TableSummary {
    /// Chain lines, in input order.
    pub chain_lines: Vec<String>,
    /// `-A` lines as (chain, full line), in input order.
    pub appends: Vec<(String, String)>,
    /// `-X` chains, in input order.
    pub deleted: Vec<String>,
    /// Every non-chain line, in order (for layout checks).
    pub commands: Vec<String>,
}

impl TableSummary {
    pub fn declared(&self) -> BTreeSet<&str> {
        self.chain_lines.iter().map(String::as_str).collect()
    }

    /// Chains that received `-A` lines.
    pub fn written(&self) -> BTreeSet<&str> {
        self.appends.iter().map(|(c, _)| c.as_str()).collect()
    }

    pub fn rules_of(&self, chain: &str) -> Vec<&str> {
        self.appends
            .iter()
            .filter(|(c, _)| c == chain)
            .map(|(_, l)| l.as_str())
            .collect()
    }

    /// Declared per-service chains (KUBE-SVC/SVL/EXT/FW/SEP-).
    pub fn service_chains(&self) -> BTreeSet<&str> {
        self.chain_lines
            .iter()
            .map(String::as_str)
            .filter(|c| is_service_chain(c))
            .collect()
    }
}

pub fn is_service_chain(c: &str) -> bool {
    [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-EXT-",
        "KUBE-FW-",
        "KUBE-SEP-",
    ]
    .iter()
    .any(|p| c.starts_with(p))
}

/// Tables by name.
pub fn summarize(text: &str) -> BTreeMap<String, TableSummary> {
    let mut out: BTreeMap<String, TableSummary> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            cur = Some(t.to_owned());
            out.entry(t.to_owned()).or_default();
            continue;
        }
        if line == "COMMIT" {
            cur = None;
            continue;
        }
        let t = out
            .get_mut(cur.as_deref().expect("line outside a table"))
            .unwrap();
        if let Some(rest) = line.strip_prefix(':') {
            t.chain_lines
                .push(rest.split(' ').next().unwrap().to_owned());
        } else {
            t.commands.push(line.to_owned());
            let mut w = line.split(' ');
            match (w.next(), w.next()) {
                (Some("-A"), Some(c)) => t.appends.push((c.to_owned(), line.to_owned())),
                (Some("-X"), Some(c)) => t.deleted.push(c.to_owned()),
                _ => {}
            }
        }
    }
    out
}
