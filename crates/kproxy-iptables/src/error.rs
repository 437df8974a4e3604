//! Errors of applying rules to the kernel (compiling cannot fail).

/// An error running the host's iptables tools or talking to netfilter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A tool could not be started (not installed, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{command} failed (exit status {status:?}): {stderr}{}", if context.is_empty() { String::new() } else { format!("\ninput around the failing line:\n{context}") })]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status, if it exited.
        status: Option<i32>,
        /// What it printed on standard error.
        stderr: String,
        /// The restore input lines around the line the error names, if any.
        context: String,
    },
    /// A netfilter netlink operation (nfacct counters, conntrack) failed.
    #[error("netfilter: {0}")]
    Netfilter(#[from] kproxy_conntrack::Error),
}
