//! Test helpers for kproxy's privileged tests.
//!
//! Every kernel-facing test in this workspace runs inside network namespaces it creates itself,
//! so the host's own namespace, interfaces and rules are never touched, and traffic goes only to
//! addresses inside those namespaces. This crate provides:
//!
//! - [`Netns`]: an RAII guard for a named network namespace (`ip netns add` / `ip netns del`),
//!   with helpers to run commands in it (`ip netns exec`, `ip -n`, `ip -batch`), to set its
//!   `net.*` sysctls, and to run Rust code on a thread that has entered it (`setns(2)` affects
//!   only the calling thread).
//! - [`veth`]: a veth pair joining two namespaces.
//! - [`Backend`]: a TCP/UDP server in a namespace that answers every client with its name and
//!   the client address it saw, so a test can tell which endpoint answered and whether the
//!   traffic was masqueraded.
//! - Probes, run from a thread inside a namespace without spawning processes: [`tcp_probe`],
//!   [`udp_probe`], the general [`Probe`], [`probe_many`] (a [`Histogram`] of hundreds of
//!   probes, for load-balancing distributions) and [`ProbeLoop`] (keeps connecting in the
//!   background and records every outcome, for churn tests). A [`ProbeResult`] tells an answer
//!   from a refusal (`REJECT`, no listener), a timeout (`DROP`) and other failures.
//! - [`Lab`]: a small routed, dual-stack cluster: the node under test, pods on it, a second
//!   node with its own pods, and an external client.
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); [`require_root`] says whether
//! the current process has it.
//!
//! # The lab
//!
//! Addresses are [`LabConfig::default`]'s; interface names are fixed.
//!
//! ```text
//!                    client                      203.0.113.100/32, 2001:db8:113::100/128 on lo
//!                    eth0 192.168.0.100/24       ("internet" addresses, routed to the client
//!                         2001:db8::100/64        by both nodes)
//!                    default via the node (192.168.0.2, 2001:db8::2)
//!                      |
//!   ===================+============ br0, in namespace "lan": the node network ==============
//!        |                            192.168.0.0/24, 2001:db8::/64               |
//!        | eth0 192.168.0.2/24, 2001:db8::2/64              eth0 192.168.0.3/24,  |
//!        |                                                       2001:db8::3/64   |
//!   +----+------------------------------------+      +----------------------------+---+
//!   | node  (kproxy's rules go here)          |      | node2                          |
//!   |  forwarding on, rp_filter off           |      |  forwarding on                 |
//!   |  lo: Lab::add_node_address addresses    |      |  10.0.1.0/24, fd00:10:1::/64   |
//!   |  10.0.2.0/24, fd00:10:2::/64 via node2  |      |    via node                    |
//!   |  203.0.113.0/24, 2001:db8:113::/64      |      |  203.0.113.0/24, ... via client|
//!   |    via client; default via client       |      |  default via client            |
//!   |  vpod0 10.0.1.1/32 fe80::1   vpod1 ...  |      |  vpod0 10.0.2.1/32 fe80::1     |
//!   +----+-------------------------+----------+      +----+---------------------------+
//!        | veth                    | veth                 | veth
//!   +----+---------------+    +----+---------------+ +----+---------------+
//!   | pod0  eth0         |    | pod1  eth0         | | rpod0  eth0        |
//!   | 10.0.1.10/32       |    | 10.0.1.11/32       | | 10.0.2.10/32       |
//!   | fd00:10:1::10/128  |    | fd00:10:1::11/128  | | fd00:10:2::10/128  |
//!   | default via        |    | (same)             | | default via        |
//!   |  10.0.1.1, fe80::1 |    |                    | |  10.0.2.1, fe80::1 |
//!   +--------------------+    +--------------------+ +--------------------+
//! ```
//!
//! - Pods are routed, not bridged: the node has a `/32` and a `/128` route per pod through
//!   its veth (`vpodN`), and its own `.1` of the pod CIDR (and `fe80::1`) on every pod veth as
//!   the pods' gateway. A pod reaching a service whose endpoint is itself goes out and back
//!   in through the same veth (hairpin); as on a real node, the node must masquerade that
//!   traffic (the pod would drop a packet from its own address), and the backend then sees
//!   the gateway (`10.0.1.1`) or, on IPv6, the node's `2001:db8::2`.
//! - The client's default routes point at the node, so service, external and load-balancer
//!   IPs all reach the node without extra routes; [`Lab::route_via_node`] adds routes on node2
//!   too. A probe bound to [`Lab::client_internet_v4`] comes "from the internet".
//! - Traffic from node2's pods back to the client goes straight over the node network, not
//!   through the node: as in a real cluster, a node that forwards a client to a remote endpoint
//!   without masquerading breaks the connection.
//! - The nodes' default routes point at the client, which does not forward: a node can open
//!   connections to service IPs (source `192.168.0.2`, then the OUTPUT chain's DNAT), and
//!   traffic to addresses nobody has dies quietly at the client.
//! - IPv6 duplicate address detection is off and the lab waits for every address's local
//!   route, so every address is usable at once. ICMP error rate limits are off in the lab's
//!   namespaces, so a rejected port is refused every time, however many probes.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use kproxy_testutil::{Backend, Lab, ProbeResult, tcp_probe};
//!
//! let lab = Lab::new()?;
//! let pod = &lab.local_pods[0];
//! let backend = Backend::start(pod, "pod0", &pod.socks(8080))?;
//!
//! // kproxy's rules go in the node's namespace; here, a hand-made DNAT.
//! lab.node.run(&[
//!     "iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.96.0.10", "-p", "tcp",
//!     "--dport", "80", "-j", "DNAT", "--to-destination", "10.0.1.10:8080",
//! ])?;
//! let result = tcp_probe(&lab.client, "10.96.0.10:80".parse().unwrap(), Duration::from_secs(1));
//! assert_eq!(
//!     result,
//!     ProbeResult::Answered {
//!         backend: "pod0".into(),
//!         seen_peer: result.seen_peer().unwrap(), // the client's own address: no masquerade
//!     }
//! );
//! assert_eq!(result.seen_peer().unwrap().ip(), lab.client.v4);
//! assert_eq!(backend.tcp_served(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```

mod backend;
mod lab;
mod netns;
mod probe;
mod sock;

pub use backend::{Backend, Protocols};
pub use lab::{BRIDGE_IF, Host, LAN_IF, Lab, LabConfig, NODE_ADDR_IF, POD_IF, Pod, PodHost};
pub use netns::{Netns, require_root, veth};
pub use probe::{
    DEFAULT_TIMEOUT, Histogram, Probe, ProbeLoop, ProbeRecord, ProbeResult, Proto, histogram, keys,
    probe_many, tcp_probe, tcp_probe_from, udp_probe,
};
