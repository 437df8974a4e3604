//! A small routed, dual-stack cluster built out of network namespaces; see [`Lab`].

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::Netns;

/// Host number of the node on the node network (`.2`, `::2`).
const NODE_HOST: u32 = 2;
/// Host number of the second node on the node network (`.3`, `::3`).
const NODE2_HOST: u32 = 3;
/// Host number of the external client on the node network and on the "internet" network.
const CLIENT_HOST: u32 = 100;
/// Host number of a node's own address on its pod links (`.1`).
const GATEWAY_HOST: u32 = 1;
/// Host number of the first pod of a node (`.10`, `::10`).
const FIRST_POD_HOST: u32 = 10;
/// The node's link-local address on every pod link: the pods' IPv6 default gateway.
const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// How long to wait for IPv6 addresses to become usable (normally a few milliseconds).
const IPV6_READY: Duration = Duration::from_secs(10);

/// Name of the node-network interface in the node, node2 and the client.
pub const LAN_IF: &str = "eth0";
/// Name of a pod's interface inside the pod.
pub const POD_IF: &str = "eth0";
/// The interface in the node that holds [`Lab::add_node_address`] addresses (the test kernel
/// may have no `dummy` driver, so `lo`).
pub const NODE_ADDR_IF: &str = "lo";
/// Name of the bridge (in the lab's private `lan` namespace) that is the node network.
pub const BRIDGE_IF: &str = "br0";

/// Addresses and sizes of a [`Lab`]. [`LabConfig::default`] gives the documented defaults;
/// change fields to avoid clashes with addresses a test needs for something else.
///
/// Host numbers are fixed: on the node network the node is `.2`, node2 `.3`, the client
/// `.100`; in a pod CIDR the node is `.1` and pods are `.10`, `.11`, …; in the internet
/// network the client is `.100`. IPv6 host parts read like the IPv4 ones (`.10` ↔ `::10`,
/// i.e. 0x10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabConfig {
    /// IPv4 node network (default `192.168.0.0/24`).
    pub lan_v4: Ipv4Net,
    /// IPv6 node network (default `2001:db8::/64`).
    pub lan_v6: Ipv6Net,
    /// The node's IPv4 pod CIDR (default `10.0.1.0/24`).
    pub node_pods_v4: Ipv4Net,
    /// The node's IPv6 pod CIDR (default `fd00:10:1::/64`).
    pub node_pods_v6: Ipv6Net,
    /// node2's IPv4 pod CIDR (default `10.0.2.0/24`).
    pub node2_pods_v4: Ipv4Net,
    /// node2's IPv6 pod CIDR (default `fd00:10:2::/64`).
    pub node2_pods_v6: Ipv6Net,
    /// IPv4 network "beyond" the client, routed to it by both nodes (default
    /// `203.0.113.0/24`); the client holds `.100` of it.
    pub internet_v4: Ipv4Net,
    /// IPv6 network "beyond" the client (default `2001:db8:113::/64`).
    pub internet_v6: Ipv6Net,
    /// Pods created on the node by [`Lab::new`] (default 2).
    pub local_pods: usize,
    /// Pods created on node2 by [`Lab::new`] (default 1).
    pub remote_pods: usize,
}

impl Default for LabConfig {
    fn default() -> Self {
        fn v4(s: &str) -> Ipv4Net {
            s.parse().expect("valid default")
        }
        fn v6(s: &str) -> Ipv6Net {
            s.parse().expect("valid default")
        }
        LabConfig {
            lan_v4: v4("192.168.0.0/24"),
            lan_v6: v6("2001:db8::/64"),
            node_pods_v4: v4("10.0.1.0/24"),
            node_pods_v6: v6("fd00:10:1::/64"),
            node2_pods_v4: v4("10.0.2.0/24"),
            node2_pods_v6: v6("fd00:10:2::/64"),
            internet_v4: v4("203.0.113.0/24"),
            internet_v6: v6("2001:db8:113::/64"),
            local_pods: 2,
            remote_pods: 1,
        }
    }
}

/// Host number `host` of `net`, or an error if it does not fit.
fn nth_v4(net: Ipv4Net, host: u32) -> io::Result<Ipv4Addr> {
    let ip = u32::from(net.network())
        .checked_add(host)
        .map(Ipv4Addr::from)
        .filter(|ip| net.contains(ip) && *ip != net.broadcast());
    ip.ok_or_else(|| invalid(format!("host .{host} does not fit in {net}")))
}

/// Host number `host` of `net`, written like the IPv4 one (`10` → `::10`).
fn nth_v6(net: Ipv6Net, host: u32) -> io::Result<Ipv6Addr> {
    let offset = u128::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex");
    let ip = u128::from(net.network())
        .checked_add(offset)
        .map(Ipv6Addr::from)
        .filter(|ip| net.contains(ip));
    ip.ok_or_else(|| invalid(format!("host ::{host} does not fit in {net}")))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Which node a pod runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodHost {
    /// The node under test, where kproxy's rules go: a "local" endpoint.
    Node,
    /// The other node: a "remote" endpoint.
    Node2,
}

/// A machine on the node network (the node, node2 or the external client): its namespace
/// (through `Deref`) and addresses.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    /// Its IPv4 address on the node network.
    pub v4: Ipv4Addr,
    /// Its IPv6 address on the node network.
    pub v6: Ipv6Addr,
}

impl Host {
    /// The namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Its node-network address of the same family as `family_of`.
    pub fn ip_like(&self, family_of: IpAddr) -> IpAddr {
        match family_of {
            IpAddr::V4(_) => self.v4.into(),
            IpAddr::V6(_) => self.v6.into(),
        }
    }

    /// `v4:port`.
    pub fn sock_v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.v4.into(), port)
    }

    /// `[v6]:port`.
    pub fn sock_v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.v6.into(), port)
    }

    /// Both node-network addresses with `port`, IPv4 first.
    pub fn socks(&self, port: u16) -> [SocketAddr; 2] {
        [self.sock_v4(port), self.sock_v6(port)]
    }
}

impl Deref for Host {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// A pod: its own namespace (through `Deref`) joined to its node by a veth, routed (no
/// bridge). Dropping it deletes the veth (and with it the node's routes to the pod) and the
/// namespace.
#[derive(Debug)]
pub struct Pod {
    ns: Netns,
    /// The pod's IPv4 address (`/32` on its `eth0`).
    pub v4: Ipv4Addr,
    /// The pod's IPv6 address (`/128` on its `eth0`).
    pub v6: Ipv6Addr,
    /// Which node it runs on.
    pub host: PodHost,
    /// The node-side end of its veth (in the node's or node2's namespace), e.g. `vpod0`.
    pub host_if: String,
    /// The node's IPv4 address on the pod link (the pod's gateway; `.1` of the pod CIDR).
    /// Hairpin traffic masqueraded by the node appears to come from it.
    pub gateway_v4: Ipv4Addr,
    /// The pod's IPv6 gateway: the node's link-local `fe80::1` on the pod link.
    pub gateway_v6: Ipv6Addr,
}

impl Pod {
    /// The namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The pod address of the same family as `family_of`.
    pub fn ip_like(&self, family_of: IpAddr) -> IpAddr {
        match family_of {
            IpAddr::V4(_) => self.v4.into(),
            IpAddr::V6(_) => self.v6.into(),
        }
    }

    /// `v4:port`.
    pub fn sock_v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.v4.into(), port)
    }

    /// `[v6]:port`.
    pub fn sock_v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.v6.into(), port)
    }

    /// Both pod addresses with `port`, IPv4 first: what a [`Backend`](crate::Backend) in the
    /// pod listens on.
    pub fn socks(&self, port: u16) -> [SocketAddr; 2] {
        [self.sock_v4(port), self.sock_v6(port)]
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Deleting the namespace frees the veth only when the kernel gets round to cleaning the
        // namespace up; delete the pair now so the node's routes to the pod go at once.
        let _ = self.ns.ip(&["link", "del", POD_IF]);
    }
}

impl Deref for Pod {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// A small routed, dual-stack cluster in network namespaces; see the [crate docs](crate) for
/// the diagram.
///
/// - `node`: the node under test, where kproxy's rules go. IPv4 and IPv6 forwarding on,
///   `rp_filter` off, redirects off. Holds `eth0` on the node network and a `vpodN` veth per
///   local pod; [`Lab::add_node_address`] puts extra local addresses on its `lo`. Its default
///   routes point at the client, so that, as on a real node, a connection from the node
///   itself to a service IP finds a route (source `eth0`'s address) and reaches the OUTPUT
///   chain's DNAT.
/// - `node2`: another node, reachable over the node network, routing its own pod CIDR; the
///   same default routes.
/// - `client`: an external client on the node network whose default routes point at the node
///   (so any service, external or load-balancer IP reaches the node), with a second address
///   in the "internet" network, routed to it by both nodes, to play a client from afar. It does
///   not forward: traffic to an address nobody has ends there, silently (a probe times out).
/// - pods: each in its own namespace, with a `/32` and a `/128` on `eth0` and default routes
///   via the node (`.1` of the pod CIDR on IPv4, `fe80::1` on IPv6). Hairpin works: the node
///   routes a pod's traffic back out of the veth it came in on.
///
/// In every namespace IPv6 duplicate address detection is off and the lab waits for the
/// addresses' local routes, so addresses are usable at once; ICMP error rate limits are off,
/// so hundreds of probes of a rejected port are all refused. (Errors the node sends for a
/// *missing route* are still limited by a host-wide setting the lab does not touch: use an
/// explicit `REJECT` to test refusals.)
///
/// Every namespace is deleted when the lab (or a pod from [`Lab::new_pod`]) is dropped;
/// processes a test started inside them are the test's to stop.
#[derive(Debug)]
pub struct Lab {
    /// The node under test.
    pub node: Host,
    /// The other node.
    pub node2: Host,
    /// The external client.
    pub client: Host,
    /// The client's IPv4 address in the internet network (`.100`), on its `lo`: bind a probe
    /// to it to connect from outside the node network.
    pub client_internet_v4: Ipv4Addr,
    /// The client's IPv6 address in the internet network (`::100`), on its `lo`.
    pub client_internet_v6: Ipv6Addr,
    /// The pods [`Lab::new`] made on the node.
    pub local_pods: Vec<Pod>,
    /// The pods [`Lab::new`] made on node2.
    pub remote_pods: Vec<Pod>,
    config: LabConfig,
    lan: Netns,
    next_pod: [AtomicU32; 2],
}

/// Settings for every namespace of the lab: no DAD (addresses usable at once), and the
/// kernel's own defaults for what a new namespace inherits from the host's IPv4 settings
/// (a host may turn on the reverse path filter, forwarding, ARP restrictions, …).
const COMMON_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.arp_ignore", "0"),
    ("net.ipv4.conf.default.arp_ignore", "0"),
    ("net.ipv4.conf.all.arp_announce", "0"),
    ("net.ipv4.conf.default.arp_announce", "0"),
    ("net.ipv4.conf.all.route_localnet", "0"),
    ("net.ipv4.conf.all.accept_local", "0"),
    ("net.ipv4.conf.default.accept_local", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
];

/// No ICMP rate limits: a test that sends hundreds of probes to a rejected port must get a
/// refusal every time, not a timeout once the kernel's per-destination budget runs out. Not
/// every kernel has all of them; missing ones are skipped.
const ICMP_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.icmp_ratemask", "0"),
    ("net.ipv4.icmp_ratelimit", "0"),
    ("net.ipv6.icmp.ratemask", ""),
    ("net.ipv6.icmp.ratelimit", "0"),
];

/// Applies [`COMMON_SYSCTLS`] and [`ICMP_SYSCTLS`], then `role`'s.
fn configure(ns: &Netns, role: &[(&str, &str)]) -> io::Result<()> {
    ns.sysctls(COMMON_SYSCTLS)?;
    for &(key, value) in ICMP_SYSCTLS {
        match ns.sysctl(key, value) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    ns.sysctls(role)
}

/// Settings for the two nodes: they route.
const ROUTER_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
];

/// Settings for pods and the client: hosts that do not forward, and ignore redirects (a
/// hairpinned pod would otherwise be told to talk to itself).
const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "0"),
    ("net.ipv6.conf.all.forwarding", "0"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
];

impl Lab {
    /// Builds the lab with [`LabConfig::default`]: two pods on the node, one on node2.
    pub fn new() -> io::Result<Lab> {
        Lab::with_config(LabConfig::default())
    }

    /// Builds the lab with `config`.
    pub fn with_config(config: LabConfig) -> io::Result<Lab> {
        let c = &config;
        let client_internet_v4 = nth_v4(c.internet_v4, CLIENT_HOST)?;
        let client_internet_v6 = nth_v6(c.internet_v6, CLIENT_HOST)?;
        // Check the whole address plan before creating anything.
        for host in [NODE_HOST, NODE2_HOST, CLIENT_HOST] {
            nth_v4(c.lan_v4, host)?;
            nth_v6(c.lan_v6, host)?;
        }
        for (v4, v6, pods) in [
            (c.node_pods_v4, c.node_pods_v6, c.local_pods),
            (c.node2_pods_v4, c.node2_pods_v6, c.remote_pods),
        ] {
            let last = FIRST_POD_HOST + u32::try_from(pods).unwrap_or(u32::MAX).saturating_sub(1);
            for host in [GATEWAY_HOST, last] {
                nth_v4(v4, host)?;
                nth_v6(v6, host)?;
            }
        }

        // The node network: a bridge in a namespace of its own.
        let lan = Netns::new("lan")?;
        configure(
            &lan,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
        // A bridge is plain L2 here: no iptables for bridged frames, should the kernel have
        // br_netfilter (then these exist).
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            match lan.sysctl(key, "0") {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        lan.ip_batch(&[
            format!(
                "link add {BRIDGE_IF} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
            ),
            format!("link set {BRIDGE_IF} up"),
        ])?;

        let node = Lab::lan_host(&lan, "node", "p-node", c, NODE_HOST, true)?;
        let node2 = Lab::lan_host(&lan, "node2", "p-node2", c, NODE2_HOST, true)?;
        let client = Lab::lan_host(&lan, "client", "p-client", c, CLIENT_HOST, false)?;

        // Both nodes have default routes, as real nodes do: a connection from the node to a
        // service IP needs a route (and a source address) before the OUTPUT chain's DNAT. The
        // client, which does not forward, silently drops what nobody else routes.
        node.ip_batch(&[
            format!("route add {} via {}", c.node2_pods_v4, node2.v4),
            format!("route add {} via {}", c.node2_pods_v6, node2.v6),
            format!("route add {} via {}", c.internet_v4, client.v4),
            format!("route add {} via {}", c.internet_v6, client.v6),
            format!("route add default via {}", client.v4),
            format!("route add default via {}", client.v6),
        ])?;
        node2.ip_batch(&[
            format!("route add {} via {}", c.node_pods_v4, node.v4),
            format!("route add {} via {}", c.node_pods_v6, node.v6),
            format!("route add {} via {}", c.internet_v4, client.v4),
            format!("route add {} via {}", c.internet_v6, client.v6),
            format!("route add default via {}", client.v4),
            format!("route add default via {}", client.v6),
        ])?;
        client.ip_batch(&[
            format!("addr add {client_internet_v4}/32 dev lo"),
            format!("addr add {client_internet_v6}/128 dev lo nodad"),
            format!("route add default via {}", node.v4),
            format!("route add default via {}", node.v6),
        ])?;

        for ns in [&node, &node2, &client] {
            ns.wait_ipv6_ready(IPV6_READY)?;
        }

        let mut lab = Lab {
            node,
            node2,
            client,
            client_internet_v4,
            client_internet_v6,
            local_pods: Vec::new(),
            remote_pods: Vec::new(),
            config,
            lan,
            next_pod: [AtomicU32::new(0), AtomicU32::new(0)],
        };
        for _ in 0..lab.config.local_pods {
            let pod = lab.new_pod(PodHost::Node)?;
            lab.local_pods.push(pod);
        }
        for _ in 0..lab.config.remote_pods {
            let pod = lab.new_pod(PodHost::Node2)?;
            lab.remote_pods.push(pod);
        }
        Ok(lab)
    }

    /// Creates a namespace attached to the node network with host number `host`.
    fn lan_host(
        lan: &Netns,
        tag: &str,
        port: &str,
        c: &LabConfig,
        host: u32,
        router: bool,
    ) -> io::Result<Host> {
        let v4 = nth_v4(c.lan_v4, host)?;
        let v6 = nth_v6(c.lan_v6, host)?;
        let ns = Netns::new(tag)?;
        configure(&ns, if router { ROUTER_SYSCTLS } else { HOST_SYSCTLS })?;
        ns.ip_batch(&[
            format!(
                "link add {LAN_IF} type veth peer name {port} netns {}",
                lan.name()
            ),
            format!("link set {LAN_IF} up"),
            format!("addr add {v4}/{} dev {LAN_IF}", c.lan_v4.prefix_len()),
            format!("addr add {v6}/{} dev {LAN_IF} nodad", c.lan_v6.prefix_len()),
        ])?;
        lan.ip_batch(&[
            format!("link set {port} master {BRIDGE_IF}"),
            format!("link set {port} up"),
        ])?;
        Ok(Host { ns, v4, v6 })
    }

    /// The configuration the lab was built with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The namespace holding the node network's bridge (nothing to do there, but handy for
    /// `tcpdump` while debugging).
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// Adds a pod on `host`, with the next free addresses of that node's pod CIDR. The pod is
    /// the caller's: dropping it removes it from the lab.
    pub fn new_pod(&self, host: PodHost) -> io::Result<Pod> {
        self.add_pod(host, None)
    }

    /// Adds a pod on `host` with host number `n` of that node's pod CIDRs (`n = 21` in
    /// `10.244.0.0/24` and `fd00:10:244::/64` gives `10.244.0.21` and `fd00:10:244::21`), to
    /// reproduce a given cluster's addresses. The caller keeps numbers unique (and clear of
    /// the `.10`, `.11`, … that [`Lab::new_pod`] hands out).
    pub fn new_pod_numbered(&self, host: PodHost, n: u32) -> io::Result<Pod> {
        self.add_pod(host, Some(n))
    }

    fn add_pod(&self, host: PodHost, number: Option<u32>) -> io::Result<Pod> {
        let c = &self.config;
        let (node, v4net, v6net, tag) = match host {
            PodHost::Node => (&self.node, c.node_pods_v4, c.node_pods_v6, "pod"),
            PodHost::Node2 => (&self.node2, c.node2_pods_v4, c.node2_pods_v6, "rpod"),
        };
        let index = self.next_pod[host as usize].fetch_add(1, Ordering::SeqCst);
        let n = number.unwrap_or(FIRST_POD_HOST + index);
        if n == GATEWAY_HOST {
            return Err(invalid(format!("host .{n} is the node's own address")));
        }
        let v4 = nth_v4(v4net, n)?;
        let v6 = nth_v6(v6net, n)?;
        let gateway_v4 = nth_v4(v4net, GATEWAY_HOST)?;
        let gw6 = POD_GATEWAY_V6;
        let host_if = format!("vpod{index}");
        let ns = Netns::new(&format!("{tag}{index}"))?;
        configure(&ns, HOST_SYSCTLS)?;
        node.ip_batch(&[
            format!(
                "link add {host_if} type veth peer name {POD_IF} netns {}",
                ns.name()
            ),
            format!("addr add {gateway_v4}/32 dev {host_if}"),
            format!("addr add {gw6}/64 dev {host_if} nodad"),
            format!("link set {host_if} up"),
            format!("route add {v4}/32 dev {host_if}"),
            format!("route add {v6}/128 dev {host_if}"),
        ])?;
        ns.ip_batch(&[
            format!("addr add {v4}/32 dev {POD_IF}"),
            format!("addr add {v6}/128 dev {POD_IF} nodad"),
            format!("link set {POD_IF} up"),
            format!("route add {gateway_v4}/32 dev {POD_IF} scope link"),
            format!("route add default via {gateway_v4} dev {POD_IF}"),
            format!("route add default via {gw6} dev {POD_IF}"),
        ])?;
        node.wait_ipv6_ready(IPV6_READY)?;
        ns.wait_ipv6_ready(IPV6_READY)?;
        Ok(Pod {
            ns,
            v4,
            v6,
            host,
            host_if,
            gateway_v4,
            gateway_v6: gw6,
        })
    }

    /// Gives the node one more local address (a `/32` or `/128` on its `lo`): for
    /// NodePorts on secondary addresses, or a load-balancer / external IP that must be local.
    /// node2 gets a route to it via the node; the client reaches it by its default route.
    ///
    /// Service, external and load-balancer IPs that kproxy only intercepts need no address:
    /// the client already routes everything unknown to the node.
    pub fn add_node_address(&self, ip: IpAddr) -> io::Result<()> {
        let (prefix, nodad, via) = match ip {
            IpAddr::V4(_) => (32, "", IpAddr::from(self.node.v4)),
            IpAddr::V6(_) => (128, " nodad", IpAddr::from(self.node.v6)),
        };
        self.node
            .ip_batch(&[format!("addr add {ip}/{prefix} dev {NODE_ADDR_IF}{nodad}")])?;
        if ip.is_ipv6() {
            self.node.wait_ipv6_ready(IPV6_READY)?;
        }
        self.node2
            .ip_batch(&[format!("route replace {ip}/{prefix} via {via}")])
    }

    /// Removes an address added by [`Lab::add_node_address`], and node2's route to it.
    pub fn remove_node_address(&self, ip: IpAddr) -> io::Result<()> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        self.node
            .ip_batch(&[format!("addr del {ip}/{prefix} dev {NODE_ADDR_IF}")])?;
        self.node2.ip_batch(&[format!("route del {ip}/{prefix}")])
    }

    /// Routes `dest` to the node from node2 and the client (`ip route replace`), e.g. a
    /// load-balancer range that must reach the node from node2 too. The client's default
    /// route already points at the node.
    pub fn route_via_node(&self, dest: IpNet) -> io::Result<()> {
        let via = match dest {
            IpNet::V4(_) => IpAddr::from(self.node.v4),
            IpNet::V6(_) => IpAddr::from(self.node.v6),
        };
        let cmd = [format!("route replace {dest} via {via}")];
        self.node2.ip_batch(&cmd)?;
        self.client.ip_batch(&cmd)
    }

    /// Sets `net.ipv4.conf.all.route_localnet` in the node (NodePorts on 127.0.0.1 need it).
    pub fn set_route_localnet(&self, on: bool) -> io::Result<()> {
        self.node.sysctl(
            "net.ipv4.conf.all.route_localnet",
            if on { "1" } else { "0" },
        )
    }

    /// Every namespace of the lab with a short role name: `lan`, `node`, `node2`, `client`,
    /// then `pod0`… and `rpod0`… for the lab's own pods.
    pub fn namespaces(&self) -> Vec<(String, &Netns)> {
        let mut all = vec![
            ("lan".to_owned(), &self.lan),
            ("node".to_owned(), &self.node.ns),
            ("node2".to_owned(), &self.node2.ns),
            ("client".to_owned(), &self.client.ns),
        ];
        for (i, p) in self.local_pods.iter().enumerate() {
            all.push((format!("pod{i}"), &p.ns));
        }
        for (i, p) in self.remote_pods.iter().enumerate() {
            all.push((format!("rpod{i}"), &p.ns));
        }
        all
    }

    /// Addresses and routes of every namespace, and the node's iptables rules, for a failing
    /// test's message.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let _ = writeln!(out, "== node: {tool}");
            match self.node.run(&[tool]) {
                Ok(s) => out.push_str(&s),
                Err(e) => {
                    let _ = writeln!(out, "{e}");
                }
            }
        }
        for (role, ns) in self.namespaces() {
            let _ = writeln!(out, "== {role} ({})", ns.name());
            for args in [&["-br", "addr"][..], &["route"][..], &["-6", "route"][..]] {
                match ns.ip(args) {
                    Ok(s) => out.push_str(&s),
                    Err(e) => {
                        let _ = writeln!(out, "ip {}: {e}", args.join(" "));
                    }
                }
            }
        }
        out
    }
}
