//! A parser for the `iptables-save` / `iptables-restore` text format.
//!
//! kproxy uses it to read the kernel's state back (`iptables-save -t nat` for the list of
//! existing chains, and in tests to compare rulesets), and to read its own restore input.
//! It understands tables (`*nat` … `COMMIT`), chain lines (`:NAME POLICY [packets:bytes]`),
//! rules (`-A`, `-I`, `-D` with a rule spec, `-X`, `-F`, `-N`), comments (`#`) and
//! double-quoted arguments with backslash escapes, as iptables-save prints them.

use std::fmt;

/// A parse error: the line number (1-based) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// A parsed ruleset: tables in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The tables, in input order.
    pub tables: Vec<Table>,
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// `filter`, `nat`, `mangle`, …
    pub name: String,
    /// Chain lines, in input order.
    pub chains: Vec<ChainLine>,
    /// Commands, in input order.
    pub commands: Vec<Command>,
}

/// A chain line (`:KUBE-SERVICES - [0:0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLine {
    /// The chain's name.
    pub name: String,
    /// Its policy (`ACCEPT`, `DROP`, …) for built-in chains; `None` for `-`.
    pub policy: Option<String>,
}

/// One command line of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A CHAIN args…`
    Append(Rule),
    /// `-I CHAIN [pos] args…`
    Insert(Option<u32>, Rule),
    /// `-D CHAIN args…` (delete by rule spec) or `-D CHAIN num`.
    Delete(Rule),
    /// `-X CHAIN`
    DeleteChain(String),
    /// `-F CHAIN`
    Flush(String),
    /// `-N CHAIN`
    NewChain(String),
}

/// A rule: its chain and its arguments (after the chain name), unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// The chain the rule is in.
    pub chain: String,
    /// The arguments, e.g. `["-m", "comment", "--comment", "ns/svc:p cluster IP", …]`.
    pub args: Vec<String>,
}

impl Rule {
    /// The rule's jump target (`-j X`), if any.
    pub fn target(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == "-j")
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The value following `flag` (e.g. `--comment`), if present.
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }
}

impl fmt::Display for Rule {
    /// The rule as iptables-save prints it: `-A CHAIN args`, quoting arguments that need it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("-A ")?;
        write_arg(f, &self.chain)?;
        for arg in &self.args {
            f.write_str(" ")?;
            write_arg(f, arg)?;
        }
        Ok(())
    }
}

fn write_arg(f: &mut fmt::Formatter<'_>, arg: &str) -> fmt::Result {
    if !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        return f.write_str(arg);
    }
    f.write_str("\"")?;
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl Ruleset {
    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl Table {
    /// The rules in `chain` after applying the commands in order to an empty table (what
    /// the chain holds if the input were restored with flushing).
    pub fn rules_of(&self, chain: &str) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = Vec::new();
        for cmd in &self.commands {
            match cmd {
                Command::Append(r) if r.chain == chain => out.push(r),
                Command::Insert(pos, r) if r.chain == chain => {
                    let at = pos
                        .map_or(0, |p| (p as usize).saturating_sub(1))
                        .min(out.len());
                    out.insert(at, r);
                }
                Command::Delete(r) if r.chain == chain => {
                    if let Some(i) = out.iter().position(|x| x.args == r.args) {
                        out.remove(i);
                    }
                }
                Command::Flush(c) if c == chain => out.clear(),
                _ => {}
            }
        }
        out
    }

    /// Every `-A` rule, in order.
    pub fn appended(&self) -> impl Iterator<Item = &Rule> {
        self.commands.iter().filter_map(|c| match c {
            Command::Append(r) => Some(r),
            _ => None,
        })
    }

    /// Names of declared chains.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.name.as_str())
    }
}

/// Parses `iptables-save` output or `iptables-restore` input.
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    parse_rules_of(text, |_| true)
}

/// Like [`parse`], but keeps only the rules of the chains `keep` accepts (every chain line
/// is kept); the other rule lines are skipped without being split into arguments, or
/// checked. A full sync needs the rules of the built-in chains only, and at 10k Services
/// the others are hundreds of thousands of lines.
pub fn parse_rules_of(text: &str, keep: impl Fn(&str) -> bool) -> Result<Ruleset, ParseError> {
    let mut ruleset = Ruleset::default();
    let mut current: Option<Table> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let lineno = i + 1;
        let err = |reason: &str| ParseError {
            line: lineno,
            reason: reason.to_owned(),
        };
        if line.trim_start().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(err("table started before the previous one was committed"));
            }
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err("bad table name"));
            }
            current = Some(Table {
                name: name.to_owned(),
                ..Table::default()
            });
            continue;
        }
        let table = current
            .as_mut()
            .ok_or_else(|| err("line outside a table"))?;
        if line == "COMMIT" {
            ruleset.tables.extend(current.take());
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            let mut parts = rest.split_whitespace();
            let name = parts
                .next()
                .ok_or_else(|| err("chain line without a name"))?;
            let policy = parts
                .next()
                .ok_or_else(|| err("chain line without a policy"))?;
            table.chains.push(ChainLine {
                name: name.to_owned(),
                policy: (policy != "-").then(|| policy.to_owned()),
            });
            continue;
        }
        if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|chain| !keep(chain))
        {
            continue;
        }
        let words = split_args(line).map_err(|r| err(&r))?;
        let (op, rest) = words.split_first().ok_or_else(|| err("empty command"))?;
        let (chain, args) = rest
            .split_first()
            .ok_or_else(|| err("command without a chain"))?;
        if chain.is_empty() {
            return Err(err("empty chain name"));
        }
        let rule = |args: &[String]| Rule {
            chain: chain.clone(),
            args: args.to_vec(),
        };
        let cmd = match op.as_str() {
            "-A" | "--append" => Command::Append(rule(args)),
            "-I" | "--insert" => match args.first().and_then(|a| a.parse::<u32>().ok()) {
                Some(pos) => Command::Insert(Some(pos), rule(&args[1..])),
                None => Command::Insert(None, rule(args)),
            },
            "-D" | "--delete" => Command::Delete(rule(args)),
            "-X" | "--delete-chain" => Command::DeleteChain(chain.clone()),
            "-F" | "--flush" => Command::Flush(chain.clone()),
            "-N" | "--new-chain" => Command::NewChain(chain.clone()),
            other => return Err(err(&format!("unknown command {other:?}"))),
        };
        table.commands.push(cmd);
    }
    if current.is_some() {
        return Err(ParseError {
            line: text.lines().count(),
            reason: "table not committed".into(),
        });
    }
    Ok(ruleset)
}

/// Splits a rule line into arguments the way iptables-restore does: whitespace separates,
/// double quotes group, a backslash escapes the next character inside quotes.
pub fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("dangling backslash".into()),
            },
            c if c.is_whitespace() && !quoted => {
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
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iptables_save_output() {
        let text = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sat Nov 21 16:51:31 2026\n\
            *nat\n\
            :PREROUTING ACCEPT [0:0]\n\
            :KUBE-TEST - [0:0]\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-TEST\n\
            -A KUBE-TEST -m comment --comment \"say \\\"hi\\\"\" -m statistic --mode random --probability 0.50000000000 -j RETURN\n\
            COMMIT\n\
            # Completed on Sat Nov 21 16:51:31 2026\n";
        let rs = parse(text).unwrap();
        let nat = rs.table("nat").unwrap();
        assert_eq!(nat.chains[0].policy.as_deref(), Some("ACCEPT"));
        assert_eq!(nat.chains[1].policy, None);
        let rules = nat.rules_of("KUBE-TEST");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].value_of("--comment"), Some("say \"hi\""));
        assert_eq!(rules[0].target(), Some("RETURN"));
        assert_eq!(
            rules[0].to_string(),
            "-A KUBE-TEST -m comment --comment \"say \\\"hi\\\"\" -m statistic --mode random --probability 0.50000000000 -j RETURN"
        );
    }

    #[test]
    fn parses_only_the_rules_asked_for() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n\
            -A PREROUTING -j KUBE-A\n-A KUBE-A -m comment --comment \"x y\" -j KUBE-B\n\
            -A KUBE-B -j RETURN\nCOMMIT\n";
        let all = parse(text).unwrap();
        let some = parse_rules_of(text, |c| !c.starts_with("KUBE-")).unwrap();
        let (all, some) = (all.table("nat").unwrap(), some.table("nat").unwrap());
        assert_eq!(some.chains, all.chains);
        assert_eq!(some.rules_of("PREROUTING"), all.rules_of("PREROUTING"));
        assert_eq!(all.rules_of("KUBE-A").len(), 1);
        assert!(some.rules_of("KUBE-A").is_empty() && some.rules_of("KUBE-B").is_empty());
        // A skipped line is not checked; a kept one still is.
        assert!(parse_rules_of("*nat\n-A KUBE-A \"open\nCOMMIT\n", |c| c == "X").is_ok());
        assert!(parse_rules_of("*nat\n-A X \"open\nCOMMIT\n", |c| c == "X").is_err());
    }

    #[test]
    fn applies_insert_delete_flush() {
        let text = "*nat\n:X - [0:0]\n-A X -j A\n-A X -j B\n-I X 1 -j C\n-D X -j A\n-I X 3 -j D\n-X Y\nCOMMIT\n";
        let rs = parse(text).unwrap();
        let t = rs.table("nat").unwrap();
        let targets: Vec<_> = t
            .rules_of("X")
            .iter()
            .map(|r| r.target().unwrap())
            .collect();
        assert_eq!(targets, ["C", "B", "D"]);
        assert!(matches!(t.commands.last(), Some(Command::DeleteChain(c)) if c == "Y"));
    }

    #[test]
    fn any_whitespace_is_quoted_on_output() {
        // Found by the fuzzer: a vertical tab splits arguments when parsing, so printing
        // must quote it.
        let rule = Rule {
            chain: "X".into(),
            args: vec!["a\u{b}b".into(), "".into(), "c".into()],
        };
        let text = format!("*t\n{rule}\nCOMMIT\n");
        let back = parse(&text).unwrap();
        assert_eq!(back.tables[0].rules_of("X"), vec![&rule]);
    }

    #[test]
    fn errors() {
        assert!(parse("-A X -j Y\n").is_err());
        assert!(parse("*nat\n-A X \"unterminated\nCOMMIT\n").is_err());
        assert!(parse("*nat\n:X - [0:0]\n").is_err());
        assert!(parse("*nat\n-Z X\nCOMMIT\n").is_err());
        // Found by the fuzzer: a quoted empty chain name.
        assert!(parse("*nat\n-A \"\" -j X\nCOMMIT\n").is_err());
        assert_eq!(parse("*nat\n*filter\nCOMMIT\n").unwrap_err().line, 2);
    }
}
