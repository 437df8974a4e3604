//! Small vocabulary types shared by the whole model.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP family. kproxy, like kube-proxy, runs one independent proxier per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

impl IpFamily {
    /// The family of an address (IPv4-mapped IPv6 addresses count as IPv6 here; parse with
    /// [`crate::ip::parse_ip_sloppy`] to normalise them first).
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self
    }

    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The lower-case spelling iptables uses and chain names hash: `tcp`, `udp`, `sctp`.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number (6, 17, 132).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected TCP, UDP or SCTP)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    /// Kubernetes protocol names are case-sensitive: `TCP`, `UDP`, `SCTP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// A namespaced name (`namespace/name`) of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// The namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceName {
    /// Makes a name from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceName {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The identity of one service port: the Service, the port's name and its protocol
/// (upstream `ServicePortName`).
///
/// Its [`Display`](fmt::Display) form, `namespace/name:port` (or `namespace/name` for an
/// unnamed port), is what rule comments show and what chain names are hashed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    /// The Service.
    pub service: ServiceName,
    /// The port's name (`""` for an unnamed port).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Makes a service port name.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
        protocol: Protocol,
    ) -> ServicePortName {
        ServicePortName {
            service: ServiceName::new(namespace, name),
            port: port.into(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    /// `ClusterIP` (the default).
    #[default]
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName` (never proxied).
    ExternalName,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Route to endpoints anywhere in the cluster (the default).
    #[default]
    Cluster,
    /// Route only to endpoints on this node.
    Local,
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// No affinity.
    #[default]
    None,
    /// Requests from one client IP go to the same endpoint for `timeout_seconds` after its
    /// last one.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes' default: 10800).
        timeout_seconds: u32,
    },
}

impl SessionAffinity {
    /// Kubernetes' default ClientIP affinity timeout (3 hours).
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10800;
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpMode {
    /// Traffic arrives with the VIP as destination; the proxy must handle it (the default).
    #[default]
    Vip,
    /// The load balancer proxies and rewrites the destination; the proxy ignores the VIP.
    Proxy,
}
