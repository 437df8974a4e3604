//! Test helpers for kproxy's privileged tests.
//!
//! Every kernel-facing test in this workspace runs inside network namespaces it creates itself,
//! so the host's own namespace, interfaces and rules are never touched. This crate provides:
//!
//! - [`Netns`]: an RAII guard for a named network namespace (`ip netns add` / `ip netns del`),
//!   with helpers to run commands in it (`ip netns exec`) and to run Rust code on a thread that
//!   has entered it (`setns(2)` affects only the calling thread).
//! - [`veth`]: a veth pair joining two namespaces.
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); [`require_root`] says whether
//! the current process has it.
//!
//! # Example
//!
//! ```no_run
//! use kproxy_testutil::{veth, Netns};
//!
//! let node = Netns::new("node")?;
//! let pod = Netns::new("pod")?;
//! veth(&node, "eth-pod", &pod, "eth0")?;
//! node.run(&["ip", "addr", "add", "10.99.0.1/24", "dev", "eth-pod"])?;
//! pod.run(&["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
//! let routes = pod.run(&["ip", "route"])?;
//! assert!(routes.contains("10.99.0.0/24"));
//! # Ok::<(), std::io::Error>(())
//! ```

mod netns;

pub use netns::{Netns, require_root, veth};
