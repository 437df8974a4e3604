//! Running the host's iptables tools: `iptables-restore`, `iptables-save` and `iptables`
//! (and their `ip6tables` twins), on the backend the rest of the node uses.
//!
//! Never through a shell: every argument is passed as its own argv element and the restore
//! input goes to the process's standard input.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_model::IpFamily;

use crate::error::ApplyError;
use crate::restore::RestoreInput;
use crate::save;

/// Which iptables implementation the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft`: the xtables API on nf_tables.
    Nft,
    /// `iptables-legacy`: the original xtables kernel API.
    Legacy,
}

impl Backend {
    fn suffix(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// Picks the backend the way upstream's `iptables-wrapper` (the script in the official
    /// kube-proxy image) does: the one in which kubelet left its `KUBE-IPTABLES-HINT` (or
    /// `KUBE-KUBELET-CANARY`) chain in the mangle table; otherwise the one holding more
    /// rules; nft on a tie (Debian's default). Both families are looked at.
    pub fn detect() -> Backend {
        let marker = |b: Backend| {
            IpFamily::ALL.iter().any(|&f| {
                save_output(f, b, "mangle").is_some_and(|text| {
                    text.lines().any(|l| {
                        l.starts_with(":KUBE-IPTABLES-HINT ")
                            || l.starts_with(":KUBE-KUBELET-CANARY ")
                    })
                })
            })
        };
        if marker(Backend::Nft) {
            return Backend::Nft;
        }
        if marker(Backend::Legacy) {
            return Backend::Legacy;
        }
        let rules = |b: Backend| -> usize {
            IpFamily::ALL
                .iter()
                .filter_map(|&f| {
                    Command::new(tool(f, b, "-save"))
                        .stdin(Stdio::null())
                        .stderr(Stdio::null())
                        .output()
                        .ok()
                })
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| l.starts_with('-'))
                        .count()
                })
                .sum()
        };
        if rules(Backend::Legacy) > rules(Backend::Nft) {
            Backend::Legacy
        } else {
            Backend::Nft
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}

/// `iptables`, `ip6tables-nft-restore`, …
fn tool(family: IpFamily, backend: Backend, what: &str) -> String {
    let base = match family {
        IpFamily::V4 => "iptables",
        IpFamily::V6 => "ip6tables",
    };
    format!("{base}-{}{what}", backend.suffix())
}

fn save_output(family: IpFamily, backend: Backend, table: &str) -> Option<String> {
    let out = Command::new(tool(family, backend, "-save"))
        .args(["-t", table])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one family's iptables tools on one backend.
#[derive(Debug, Clone)]
pub struct Iptables {
    family: IpFamily,
    backend: Backend,
    version: (u32, u32, u32),
}

/// What an `iptables-restore` run took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreTiming {
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// Bytes fed.
    pub bytes: usize,
}

impl Iptables {
    /// The tools for `family` on `backend`; fails if they do not run.
    pub fn new(family: IpFamily, backend: Backend) -> Result<Iptables, ApplyError> {
        let program = tool(family, backend, "");
        let out = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| ApplyError::Failed {
            command: format!("{program} --version"),
            status: out.status.code(),
            stderr: format!("unexpected output {text:?}"),
            context: String::new(),
        })?;
        Ok(Iptables {
            family,
            backend,
            version,
        })
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The tools' version.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Whether MASQUERADE supports `--random-fully` (≥ 1.6.2).
    pub fn has_random_fully(&self) -> bool {
        self.version >= (1, 6, 2)
    }

    /// Wait flags for `iptables` (spec §4.4).
    fn wait_flags(&self) -> &'static [&'static str] {
        if self.version >= (1, 6, 1) {
            &["-w", "5", "-W", "100000"]
        } else if self.version >= (1, 4, 22) {
            &["-w", "5"]
        } else if self.version >= (1, 4, 20) {
            &["-w"]
        } else {
            &[]
        }
    }

    /// Wait flags for `iptables-restore` (spec §4.3).
    fn restore_wait_flags(&self) -> &'static [&'static str] {
        if self.version >= (1, 6, 2) {
            &["-w", "5", "-W", "100000"]
        } else {
            &["-w"]
        }
    }

    /// Feeds `input` to `iptables-restore --noflush --counters` (with `-T table` if given).
    /// On failure the error carries the tool's message and the input lines around the line
    /// it names.
    pub fn restore(
        &self,
        input: &RestoreInput,
        table: Option<&str>,
    ) -> Result<RestoreTiming, ApplyError> {
        let program = tool(self.family, self.backend, "-restore");
        let mut args: Vec<&str> = self.restore_wait_flags().to_vec();
        if let Some(t) = table {
            args.extend(["-T", t]);
        }
        args.extend(["--noflush", "--counters"]);
        let start = Instant::now();
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        let mut stdin = child.stdin.take().ok_or_else(|| ApplyError::Spawn {
            program: program.clone(),
            source: std::io::Error::other("no stdin"),
        })?;
        // Write on this thread; stderr is small and read after exit (the tool reads all of
        // its input before reporting).
        let write_result = input.write_to(&mut stdin).and_then(|()| stdin.flush());
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        let elapsed = start.elapsed();
        if !out.status.success() || write_result.is_err() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(ApplyError::Failed {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.code(),
                context: error_context(input, &stderr),
                stderr,
            });
        }
        Ok(RestoreTiming {
            elapsed,
            bytes: input.len(),
        })
    }

    /// `iptables-save` of every table.
    pub fn save_all(&self) -> Result<String, ApplyError> {
        self.save_tables(&[])
    }

    /// `iptables-save -t table`.
    pub fn save(&self, table: &str) -> Result<String, ApplyError> {
        self.save_tables(&["-t", table])
    }

    fn save_tables(&self, args: &[&str]) -> Result<String, ApplyError> {
        let table = args.last().copied().unwrap_or("(all)");
        let program = tool(self.family, self.backend, "-save");
        let out = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ApplyError::Failed {
                command: format!("{program} -t {table}"),
                status: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                context: String::new(),
            });
        }
        String::from_utf8(out.stdout).map_err(|_| ApplyError::Failed {
            command: format!("{program} -t {table}"),
            status: None,
            stderr: "output is not UTF-8".into(),
            context: String::new(),
        })
    }

    /// The names of the chains of `table`.
    pub fn chains(&self, table: &str) -> Result<Vec<String>, ApplyError> {
        let text = self.save(table)?;
        let parsed = save::parse(&text).map_err(|e| ApplyError::Failed {
            command: format!("iptables-save -t {table}"),
            status: None,
            stderr: format!("unparsable output: {e}"),
            context: String::new(),
        })?;
        Ok(parsed
            .table(table)
            .map(|t| t.chain_names().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Runs `iptables <wait> -t <table> <op> <chain> <args…>`; `Ok(false)` when the tool
    /// exits with status 1 (the rule or chain does not exist / already exists).
    fn run(&self, op: &str, table: &str, chain: &str, args: &[&str]) -> Result<bool, ApplyError> {
        let program = tool(self.family, self.backend, "");
        let out = Command::new(&program)
            .args(self.wait_flags())
            .args(["-t", table, op, chain])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            code => Err(ApplyError::Failed {
                command: format!("{program} -t {table} {op} {chain} {}", args.join(" ")),
                status: code,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                context: String::new(),
            }),
        }
    }

    /// Creates `chain` in `table` unless it exists. Returns whether it existed.
    pub fn ensure_chain(&self, table: &str, chain: &str) -> Result<bool, ApplyError> {
        if self.chain_exists(table, chain)? {
            return Ok(true);
        }
        // Status 1 here means it was created meanwhile: fine either way.
        self.run("-N", table, chain, &[])?;
        Ok(false)
    }

    /// Whether `chain` exists in `table`.
    pub fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, ApplyError> {
        self.run("-S", table, chain, &["1"])
    }

    /// Whether the rule `args` exists in `chain`.
    pub fn rule_exists(&self, table: &str, chain: &str, args: &[&str]) -> Result<bool, ApplyError> {
        self.run("-C", table, chain, args)
    }

    /// Inserts the rule `args` at the top of `chain` unless it exists anywhere in it.
    /// Returns whether it existed.
    pub fn ensure_rule_first(
        &self,
        table: &str,
        chain: &str,
        args: &[&str],
    ) -> Result<bool, ApplyError> {
        if self.rule_exists(table, chain, args)? {
            return Ok(true);
        }
        if !self.run("-I", table, chain, args)? {
            return Err(ApplyError::Failed {
                command: format!("iptables -I {chain} -t {table} {}", args.join(" ")),
                status: Some(1),
                stderr: "rule could not be inserted".into(),
                context: String::new(),
            });
        }
        Ok(false)
    }

    /// Deletes every copy of the rule `args` from `chain` (no error if absent).
    pub fn delete_rule(&self, table: &str, chain: &str, args: &[&str]) -> Result<(), ApplyError> {
        // A rule added twice needs two deletions; bound the loop.
        for _ in 0..16 {
            if !self.run("-D", table, chain, args)? {
                break;
            }
        }
        Ok(())
    }

    /// Deletes `chain` from `table` (flushing it first); no error if absent.
    pub fn delete_chain(&self, table: &str, chain: &str) -> Result<(), ApplyError> {
        if self.chain_exists(table, chain)? {
            self.run("-F", table, chain, &[])?;
            self.run("-X", table, chain, &[])?;
        }
        Ok(())
    }
}

/// Parses `iptables v1.8.9 (nf_tables)`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The input lines around the line an iptables-restore error names ("line 12 failed",
/// "line 7: RULE_APPEND failed"), as upstream logs them.
fn error_context(input: &RestoreInput, stderr: &str) -> String {
    let line = stderr
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|w| {
            (w[0] == "line").then(|| w[1].trim_end_matches(':').parse::<usize>().ok())?
        });
    let Some(line) = line else {
        return String::new();
    };
    let text = input.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let from = line.saturating_sub(1).max(1);
    let to = (line + 1).min(lines.len());
    (from..=to)
        .filter_map(|n| lines.get(n - 1).map(|l| format!("{n:>6}: {l}")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)"),
            Some((1, 8, 9))
        );
        assert_eq!(
            parse_version("ip6tables-legacy v1.8.7 (legacy)"),
            Some((1, 8, 7))
        );
        assert_eq!(parse_version("iptables v1.6"), Some((1, 6, 0)));
        assert_eq!(parse_version("nope"), None);
    }

    #[test]
    fn tool_names() {
        assert_eq!(
            tool(IpFamily::V4, Backend::Nft, "-restore"),
            "iptables-nft-restore"
        );
        assert_eq!(
            tool(IpFamily::V6, Backend::Legacy, "-save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(tool(IpFamily::V4, Backend::Legacy, ""), "iptables-legacy");
    }

    #[test]
    fn error_context_names_the_failing_line() {
        let input = RestoreInput::from_parts(vec![Bytes::from_static(
            b"*nat\n:A - [0:0]\n-A A -j B\n-A A -j C\nCOMMIT\n",
        )]);
        let ctx = error_context(
            &input,
            "iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed",
        );
        assert_eq!(
            ctx,
            "     2: :A - [0:0]\n     3: -A A -j B\n     4: -A A -j C"
        );
        // The last line has no successor.
        assert_eq!(
            error_context(&input, "iptables-restore: line 5 failed")
                .lines()
                .count(),
            2
        );
        assert_eq!(error_context(&input, "no line here"), "");
    }
}
