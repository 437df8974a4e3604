//! The crate's one error type.

use std::io;

/// Everything that can go wrong in this crate.
///
/// Kernel answers are never trusted: malformed bytes become [`Error::Decode`], never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket system call failed (creating, binding, sending, receiving, setting options).
    #[error("netlink socket: {operation} failed: {source}")]
    Socket {
        /// What was being done, e.g. `"send conntrack dump request"`.
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The kernel did not answer within the socket's receive timeout.
    #[error("netlink: no answer from the kernel to {operation} within {timeout_ms} ms")]
    Timeout {
        /// The request that went unanswered.
        operation: &'static str,
        /// The receive timeout in milliseconds.
        timeout_ms: u64,
    },

    /// The kernel refused a request with an error number (`NLMSG_ERROR`, or a failed dump's
    /// `NLMSG_DONE`).
    #[error("netlink: the kernel refused {operation}: {source}")]
    Kernel {
        /// The request the kernel refused.
        operation: &'static str,
        /// The kernel's error number as an [`io::Error`] (`raw_os_error()` gives the errno).
        #[source]
        source: io::Error,
    },

    /// Bytes from the kernel could not be decoded.
    #[error("netlink: cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded, e.g. `"conntrack entry"`.
        what: &'static str,
        /// Why it could not be decoded.
        reason: String,
    },

    /// A decoded message lacks an attribute that must be there.
    #[error("netlink: {what} has no {attribute} attribute")]
    MissingAttribute {
        /// What was being decoded.
        what: &'static str,
        /// The kernel's name of the missing attribute, e.g. `"CTA_TUPLE_ORIG"`.
        attribute: &'static str,
    },

    /// A datagram from the kernel did not fit the receive buffer and was cut.
    #[error("netlink: a {len}-byte datagram did not fit the {capacity}-byte receive buffer")]
    Truncated {
        /// The datagram's real length.
        len: usize,
        /// The receive buffer's size.
        capacity: usize,
    },

    /// The kernel flagged a dump as inconsistent (`NLM_F_DUMP_INTR`) every time it was tried.
    #[error("netlink: {operation} was interrupted by concurrent changes {attempts} times")]
    DumpInterrupted {
        /// The dump that was interrupted.
        operation: &'static str,
        /// How many times it was tried.
        attempts: u32,
    },

    /// Entries of this protocol cannot be addressed by their ports alone, so this crate cannot
    /// build a delete request for them (ICMP, for instance, needs type, code and id).
    #[error("conntrack: deleting entries of IP protocol {protocol} is not supported")]
    UnsupportedProtocol {
        /// The IP protocol number.
        protocol: u8,
    },

    /// A flow's addresses are not all of one family.
    #[error("conntrack: flow mixes IPv4 and IPv6 addresses: {flow}")]
    MixedFamilies {
        /// The flow, as text.
        flow: String,
    },

    /// Some deletions of a [`delete_many`](crate::Conntrack::delete_many) failed; the others
    /// were still tried.
    #[error(
        "conntrack: {failed} of {attempted} deletions failed ({deleted} deleted, {vanished} already gone); first failure: {first}"
    )]
    DeleteFailed {
        /// How many deletions were tried.
        attempted: usize,
        /// How many entries were deleted.
        deleted: usize,
        /// How many entries had already vanished.
        vanished: usize,
        /// How many deletions failed.
        failed: usize,
        /// The first failure.
        #[source]
        first: Box<Error>,
    },

    /// An nfacct counter name the kernel would reject.
    #[error("nfacct: invalid counter name {name:?}: {reason}")]
    InvalidCounterName {
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kernel's error number when the kernel refused a request ([`Error::Kernel`]), e.g.
    /// `libc::ENOENT`; `None` for every other error.
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
