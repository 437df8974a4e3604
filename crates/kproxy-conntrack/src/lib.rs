//! Talking to the kernel's netfilter over netlink, for every kproxy mode.
//!
//! # What it does
//!
//! - **Conntrack** ([`Conntrack`]): lists the entries of one family (a ctnetlink dump,
//!   multi-part answers and all) as plain [`Flow`]s, and deletes entries by their original
//!   tuple — one or many; an entry that vanished meanwhile is not an error.
//! - **Stale flow reconciliation** ([`StaleFlowFilter`], [`clean_stale_flows`]): kube-proxy's
//!   conntrack reconciler (Kubernetes 1.32+, `pkg/proxy/conntrack/cleanup.go`, including the
//!   fix for services without endpoints). The rule is a pure function, tested without root;
//!   the [`reconcile`] module documents it.
//! - **nfacct** ([`nfacct`]): creates named netfilter accounting counters and reads them.
//!
//! Everything goes through `NETLINK_NETFILTER` sockets (netlink-sys, netlink-packet-core,
//! netlink-packet-netfilter); no `conntrack` or `nfacct` program is run. A client belongs to
//! the network namespace of the thread that created it (`setns(2)` is per thread): create it
//! on a thread that has entered the namespace you mean.
//!
//! # What it does not do
//!
//! - No iptables/nftables/IPVS rules, no conntrack sysctls, no conntrack events (no
//!   multicast subscription), no entry creation or update, no flushing of a whole table.
//! - No async API: calls block until the kernel answers (with a receive timeout).
//! - Deletion is for port-based protocols (TCP, UDP, UDP-Lite, SCTP, DCCP) only.
//!
//! # Modules
//!
//! - [`conntrack`]: the [`Conntrack`] client and [`DeleteStats`].
//! - [`flow`]: [`Flow`], [`Tuple`], [`Protocol`], [`Family`] and decoding kernel messages.
//! - [`reconcile`]: [`StaleFlowFilter`] and [`clean_stale_flows`].
//! - [`nfacct`]: [`nfacct::NfAcct`] and [`nfacct::Counter`].
//! - [`error`]: the crate's [`Error`].
//! - `netlink` (private): socket, sequence numbers, dumps, acks, framing.
//!
//! # Example
//!
//! Needs root (`CAP_NET_ADMIN`); deletes stale UDP entries of one service whose only serving
//! endpoint is now `10.244.2.2:5353`:
//!
//! ```no_run
//! use std::net::{IpAddr, SocketAddr};
//! use kproxy_conntrack::{clean_stale_flows, Conntrack, Family, StaleFlowFilter};
//!
//! let cluster_ip: IpAddr = "10.96.0.10".parse().unwrap();
//! let endpoint: SocketAddr = "10.244.2.2:5353".parse().unwrap();
//!
//! let mut filter = StaleFlowFilter::new(); // UDP, as kube-proxy
//! filter.add_service_port_endpoints(&[(cluster_ip, 53)], Some(30053), &[endpoint]);
//!
//! let mut ct = Conntrack::new()?;
//! let stats = clean_stale_flows(&mut ct, Family::Ipv4, &filter)?;
//! println!("deleted {} stale entries ({} already gone)", stats.deleted, stats.vanished);
//! # Ok::<(), kproxy_conntrack::Error>(())
//! ```

pub mod conntrack;
pub mod error;
pub mod flow;
mod netlink;
pub mod nfacct;
pub mod reconcile;

pub use conntrack::{Conntrack, DeleteStats};
pub use error::{Error, Result};
pub use flow::{Family, Flow, Protocol, Tuple};
pub use reconcile::{StaleFlowFilter, clean_stale_flows};
