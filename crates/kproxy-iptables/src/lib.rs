//! kube-proxy's iptables mode, in Rust: compiles kproxy's service model into exactly the
//! `iptables-restore` input upstream kube-proxy writes, and keeps a kernel in step with it.
//!
//! # What it does
//!
//! - **Compile** ([`Compiler`], pure: no process, no I/O): a [`ProxyState`](kproxy_model::ProxyState)
//!   in, restore input out, with upstream's chains byte for byte — `KUBE-SERVICES`,
//!   `KUBE-SVC-*`, `KUBE-SEP-*` (names from SHA-256 + base32, [`names`]),
//!   `-m statistic --mode random --probability`, `KUBE-MARK-MASQ`, NodePorts, ClientIP
//!   affinity, `externalTrafficPolicy`/`internalTrafficPolicy: Local` (`KUBE-SVL-*`,
//!   `KUBE-EXT-*`), `loadBalancerSourceRanges` (`KUBE-FW-*`, `KUBE-PROXY-FIREWALL`),
//!   REJECT/DROP without endpoints, `KUBE-FORWARD`, local-traffic detection, IPv6, and
//!   large-cluster mode. Full and partial syncs as upstream ([`SyncKind::Full`],
//!   [`SyncKind::Partial`]), plus a delta sync whose input is proportional to the change
//!   ([`SyncKind::Delta`]).
//! - **Apply** ([`Proxier`], [`Iptables`]): feeds the input to `iptables-restore --noflush`
//!   on the backend the node uses (nft or legacy, detected as upstream's image does),
//!   creates the jumps from the built-in chains, the canaries and the nfacct counters, deletes
//!   stale chains, falls back to a full sync after any failure, notices someone flushing the
//!   tables, cleans stale UDP conntrack entries, and removes everything on `--cleanup`.
//! - **Read back** ([`save`]): a parser of `iptables-save` output (and of restore input).
//!
//! # What it does not do
//!
//! Watch Kubernetes (see `kproxy-k8s`), decide which endpoints a packet may use (the model
//! does, [`kproxy_model::categorize_endpoints`]), or schedule syncs (the binary's engine).
//!
//! # Layout
//!
//! - [`compile`] — [`Compiler`], [`SyncRequest`], [`SyncStats`]
//! - [`config`] — [`Config`], [`LocalDetector`], [`NodePortAddresses`]
//! - [`names`] — chain names
//! - [`restore`] — [`RestoreInput`]
//! - [`save`] — the `iptables-save` parser
//! - [`exec`] — running the iptables tools ([`Iptables`], [`Backend`])
//! - [`proxier`] — [`Proxier`], the sync loop's body, and [`proxier::cleanup`]
//! - [`error`] — [`ApplyError`]
//!
//! # Example
//!
//! Compile the rules for one Service (no root needed):
//!
//! ```
//! use kproxy_iptables::{Compiler, Config, SyncKind, SyncRequest};
//! use kproxy_model::*;
//!
//! let mut tracker = ChangeTracker::new(IpFamily::V4, "node-a");
//! tracker.update_service(Service {
//!     namespace: "default".into(),
//!     name: "web".into(),
//!     cluster_ips: vec!["10.96.0.10".parse().unwrap()],
//!     ports: vec![ServicePort { name: "http".into(), protocol: Protocol::Tcp, port: 80, node_port: 0 }],
//!     ..Service::default()
//! });
//! tracker.update_endpoint_slice(EndpointSlice {
//!     namespace: "default".into(),
//!     name: "web-1".into(),
//!     service_name: "web".into(),
//!     address_family: IpFamily::V4,
//!     ports: vec![EndpointPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
//!     endpoints: vec![Endpoint::ready("10.244.1.5".parse().unwrap())],
//!     trigger_time: None,
//! });
//! let changes = tracker.commit();
//!
//! let mut compiler = Compiler::new(Config::new(IpFamily::V4, "node-a"));
//! let out = compiler.compile(
//!     tracker.state(),
//!     SyncRequest { kind: SyncKind::Full, changed: &changes, existing_nat_chains: None },
//! );
//! let text = out.restore.to_string();
//! assert!(text.contains(
//!     "-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" \
//!      -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL\n"
//! ));
//! assert!(text.contains("-j DNAT --to-destination 10.244.1.5:8080\n"));
//! ```
//!
//! Keep a kernel in step (root; the calling thread's network namespace):
//!
//! ```no_run
//! # use kproxy_iptables::*;
//! # use kproxy_model::*;
//! # fn run(mut tracker: ChangeTracker) -> Result<(), Box<dyn std::error::Error>> {
//! let iptables = Iptables::new(IpFamily::V4, Backend::detect())?;
//! let mut proxier = Proxier::new(iptables, Config::new(IpFamily::V4, "node-a"), ProxierOptions::default());
//! loop {
//!     // … feed Service / EndpointSlice events to `tracker` …
//!     let changes = tracker.commit();
//!     let report = proxier.sync(tracker.state(), &changes, std::time::Instant::now())?;
//!     println!("{:?} sync, {} bytes", report.kind, report.restore.map_or(0, |r| r.bytes));
//! }
//! # }
//! ```

pub mod compile;
pub mod config;
pub mod error;
pub mod exec;
pub mod names;
pub mod proxier;
pub mod restore;
pub mod save;

pub use compile::{Compiled, Compiler, ExtraLine, SyncKind, SyncRequest, SyncStats};
pub use config::{Config, LocalDetector, NodePortAddresses};
pub use error::ApplyError;
pub use exec::{Backend, Iptables};
pub use names::{ChainName, ServicePortChains};
pub use proxier::{Proxier, ProxierOptions, SyncError, SyncReport};
pub use restore::RestoreInput;
