//! The crate's error type.

use std::path::PathBuf;

/// Why [`load_path`](crate::manifests::load_path) could not read its input at all.
///
/// Problems *inside* readable input (bad YAML, a malformed object, an invalid field) are
/// never errors: they are [`Warning`](crate::Warning)s, and everything else still loads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path could not be read: it does not exist, permission was denied, or another I/O
    /// error occurred (on the path itself, or on a directory or file below it).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid UTF-8.
    #[error("{}: not valid UTF-8 (first invalid byte at offset {valid_up_to})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// A file is larger than the loader accepts
    /// ([`MAX_INPUT_BYTES`](crate::manifests::MAX_INPUT_BYTES)).
    #[error("{}: larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: usize,
    },
}
