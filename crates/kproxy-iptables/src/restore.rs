//! Restore input: the text fed to `iptables-restore`.

use std::fmt;
use std::io;

use bytes::Bytes;

/// Input for `iptables-restore` / `ip6tables-restore`, kept as a few large parts so that a
/// multi-megabyte ruleset is streamed to the process without being copied into one buffer.
///
/// The text is ASCII except for names taken from Kubernetes objects (which are ASCII too
/// when the API server validated them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInput {
    parts: Vec<Bytes>,
}

impl RestoreInput {
    /// Input made of `parts`, in order (no copy).
    pub fn from_parts(parts: Vec<Bytes>) -> RestoreInput {
        RestoreInput { parts }
    }

    /// The parts, in order; their concatenation is the input.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// Whether there is no input at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the input to `w` (e.g. the restore process's stdin).
    pub fn write_to(&self, w: &mut impl io::Write) -> io::Result<()> {
        for part in &self.parts {
            w.write_all(part)?;
        }
        Ok(())
    }

    /// The lines of the input, in order (lossily decoded).
    pub fn lines(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
        self.parts
            .iter()
            .flat_map(|p| p.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
            .map(String::from_utf8_lossy)
    }
}

impl fmt::Display for RestoreInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            f.write_str(&String::from_utf8_lossy(part))?;
        }
        Ok(())
    }
}
