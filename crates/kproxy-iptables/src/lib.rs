//! kube-proxy's iptables mode: compiles kproxy's service model into exactly the
//! `iptables-restore` input upstream kube-proxy writes.
//!
//! (Documentation in progress.)

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
pub use proxier::{Proxier, ProxierOptions, SyncError, SyncReport};
pub use names::{ChainName, ServicePortChains};
pub use restore::RestoreInput;
