//! Restore input: the text fed to `iptables-restore`.

use std::fmt;
use std::io;

/// Input for `iptables-restore` / `ip6tables-restore`, kept as a few large parts so that a
/// multi-megabyte ruleset is streamed to the process without being copied into one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInput {
    parts: Vec<String>,
}

impl RestoreInput {
    /// Input made of `parts`, in order.
    pub fn from_parts(parts: Vec<String>) -> RestoreInput {
        RestoreInput { parts }
    }

    /// The parts, in order; their concatenation is the input.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(String::len).sum()
    }

    /// Whether there is no input at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the input to `w` (e.g. the restore process's stdin).
    pub fn write_to(&self, w: &mut impl io::Write) -> io::Result<()> {
        for part in &self.parts {
            w.write_all(part.as_bytes())?;
        }
        Ok(())
    }

    /// The lines of the input, in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().flat_map(|p| p.lines())
    }
}

impl fmt::Display for RestoreInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            f.write_str(part)?;
        }
        Ok(())
    }
}
