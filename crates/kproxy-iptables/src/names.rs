//! Chain names, derived exactly as upstream kube-proxy derives them.
//!
//! `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and `KUBE-FW-` chains of a service port share one
//! 16-character suffix, `hash16(N + p)`; each endpoint chain `KUBE-SEP-` has
//! `hash16(N + p + EP)`, where `N` is the service port name (`ns/name:port`, or `ns/name` for
//! an unnamed port), `p` the lower-case protocol and `EP` the endpoint string (`ip:port`,
//! `[ip]:port` for IPv6). `hash16(s)` is the first 16 characters of the RFC 4648 base32
//! encoding of SHA-256(s). Names are therefore stable across runs, hosts and
//! implementations, which is what lets kproxy adopt the rules kube-proxy left behind.

use std::fmt;

use kproxy_model::ServicePortName;
use sha2::{Digest, Sha256};

/// The longest chain name iptables accepts.
pub const MAX_CHAIN_NAME_LEN: usize = 28;

/// An iptables chain name, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainName {
    len: u8,
    buf: [u8; MAX_CHAIN_NAME_LEN],
}

impl ChainName {
    /// A chain name from a string; `None` if it is empty, longer than 28 bytes, or has
    /// characters other than ASCII letters, digits, `-` and `_`.
    pub fn new(name: &str) -> Option<ChainName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_CHAIN_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| {
            let mut buf = [0u8; MAX_CHAIN_NAME_LEN];
            buf[..name.len()].copy_from_slice(name.as_bytes());
            ChainName {
                len: name.len() as u8,
                buf,
            }
        })
    }

    fn from_parts(prefix: &str, suffix: &[u8; 16]) -> ChainName {
        let mut buf = [0u8; MAX_CHAIN_NAME_LEN];
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..prefix.len() + 16].copy_from_slice(suffix);
        ChainName {
            len: (prefix.len() + 16) as u8,
            buf,
        }
    }

    /// The name's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl std::hash::Hash for ChainName {
    /// Hashes the last eight bytes (for kproxy's chains: base32 of a SHA-256 digest, so
    /// already well spread) and the length.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let len = self.len as usize;
        let mut tail = [0u8; 8];
        let from = len.saturating_sub(8);
        tail[..len - from].copy_from_slice(&self.buf[from..len]);
        state.write_u64(u64::from_le_bytes(tail) ^ (len as u64).rotate_left(56));
    }
}

impl std::ops::Deref for ChainName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The per-service-port chains (`KUBE-SVC/SVL/EXT/FW-<hash>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePortChains {
    /// `KUBE-SVC-…`: Cluster-policy dispatch.
    pub cluster: ChainName,
    /// `KUBE-SVL-…`: Local-policy dispatch.
    pub local: ChainName,
    /// `KUBE-EXT-…`: external destinations.
    pub external: ChainName,
    /// `KUBE-FW-…`: `loadBalancerSourceRanges` filter.
    pub firewall: ChainName,
}

impl ServicePortChains {
    /// The chains of `name`.
    pub fn of(name: &ServicePortName) -> ServicePortChains {
        let h = hash16(service_port_hasher(name));
        ServicePortChains {
            cluster: ChainName::from_parts("KUBE-SVC-", &h),
            local: ChainName::from_parts("KUBE-SVL-", &h),
            external: ChainName::from_parts("KUBE-EXT-", &h),
            firewall: ChainName::from_parts("KUBE-FW-", &h),
        }
    }
}

/// `KUBE-SEP-…` of endpoint `endpoint` (`ip:port` / `[ip]:port`) of service port `name`.
pub fn endpoint_chain(name: &ServicePortName, endpoint: &str) -> ChainName {
    EndpointChains::new(name).chain(endpoint.as_bytes())
}

/// Names the endpoint chains of one service port: the hash input is the service port's
/// part (built once) followed by the endpoint string, hashed in one call.
#[derive(Clone)]
pub(crate) struct EndpointChains {
    buf: Vec<u8>,
    prefix: usize,
}

impl EndpointChains {
    pub(crate) fn new(name: &ServicePortName) -> EndpointChains {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(name.service.namespace.as_bytes());
        buf.push(b'/');
        buf.extend_from_slice(name.service.name.as_bytes());
        if !name.port.is_empty() {
            buf.push(b':');
            buf.extend_from_slice(name.port.as_bytes());
        }
        buf.extend_from_slice(name.protocol.lower().as_bytes());
        let prefix = buf.len();
        EndpointChains { buf, prefix }
    }

    pub(crate) fn chain(&mut self, endpoint: &[u8]) -> ChainName {
        self.buf.truncate(self.prefix);
        self.buf.extend_from_slice(endpoint);
        ChainName::from_parts("KUBE-SEP-", &hash16_of(&self.buf))
    }
}

/// Whether `chain` is a per-service chain kube-proxy (and kproxy) own and may delete:
/// `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`, `KUBE-FW-`, `KUBE-SEP-`.
pub fn is_service_chain(chain: &str) -> bool {
    [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-EXT-",
        "KUBE-FW-",
        "KUBE-SEP-",
    ]
    .iter()
    .any(|p| chain.starts_with(p))
}

fn service_port_hasher(name: &ServicePortName) -> Sha256 {
    let mut h = Sha256::new();
    h.update(name.service.namespace.as_bytes());
    h.update(b"/");
    h.update(name.service.name.as_bytes());
    if !name.port.is_empty() {
        h.update(b":");
        h.update(name.port.as_bytes());
    }
    h.update(name.protocol.lower().as_bytes());
    h
}

fn hash16(h: Sha256) -> [u8; 16] {
    base32_16(&h.finalize())
}

fn hash16_of(data: &[u8]) -> [u8; 16] {
    base32_16(&Sha256::digest(data))
}

/// The first 16 base32 characters of a digest (80 bits = its first 10 bytes).
fn base32_16(digest: &[u8]) -> [u8; 16] {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = [0u8; 16];
    // Two groups of 40 bits (5 bytes → 8 characters each).
    for (group, chars) in digest[..10].chunks_exact(5).zip(out.chunks_exact_mut(8)) {
        let bits = group.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for (i, c) in chars.iter_mut().enumerate() {
            *c = ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_model::Protocol;

    fn spn(s: &str, proto: Protocol) -> ServicePortName {
        let (ns, rest) = s.split_once('/').unwrap();
        let (name, port) = rest.split_once(':').unwrap_or((rest, ""));
        ServicePortName::new(ns, name, port, proto)
    }

    /// The spec's worked examples (§2.3), each observed in upstream tests or real clusters.
    #[test]
    fn worked_examples() {
        use Protocol::*;
        for (name, proto, endpoint, want) in [
            ("ns1/svc1:p80", Tcp, None, "KUBE-SVC-XPGD46QRK7WJZT7O"),
            ("ns2/svc2:p80", Tcp, None, "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
            ("ns2/svc2:p8080", Tcp, None, "KUBE-SVC-2VJB64SDSIJUP5T6"),
            ("ns4/svc4:p8082", Tcp, None, "KUBE-SVC-EBDQOQU5SJFXRIL3"),
            ("ns1/svc1", Tcp, None, "KUBE-SVC-AQI2S6QIMU7PVVRP"),
            (
                "kube-system/kube-dns:dns",
                Udp,
                None,
                "KUBE-SVC-TCOU7JCQXEZGVUNU",
            ),
            (
                "kube-system/kube-dns:dns-tcp",
                Tcp,
                None,
                "KUBE-SVC-ERIFXISQEP7F7OF4",
            ),
            (
                "kube-system/kube-dns:metrics",
                Tcp,
                None,
                "KUBE-SVC-JD5MR3NA4I4DYORP",
            ),
            (
                "default/kubernetes:https",
                Tcp,
                None,
                "KUBE-SVC-NPX46M4PTMTKRN6Y",
            ),
            ("ns1/svc1:p80", Udp, None, "KUBE-SVC-OJWW7NSBVZTDHXNW"),
            ("ns1/svc1:p80", Sctp, None, "KUBE-SVC-GFCIFIA5VTFSTMSM"),
            (
                "ns1/svc1:p80",
                Tcp,
                Some("10.180.0.1:80"),
                "KUBE-SEP-SXIVWICOYRO3J4NJ",
            ),
            (
                "ns1/svc1:p80",
                Tcp,
                Some("10.0.0.0:80"),
                "KUBE-SEP-DKGQUZGBKLTPAR56",
            ),
            (
                "ns3/svc3:p8081",
                Tcp,
                Some("203.0.113.4:8081"),
                "KUBE-SEP-RUVVH7YV3PHQBDOS",
            ),
            (
                "ns4/svc4:p8082",
                Tcp,
                Some("10.4.0.1:8082"),
                "KUBE-SEP-SU5STNODRYEWJAUF",
            ),
            (
                "ns3/svc3:p80",
                Tcp,
                Some("10.0.3.2:80"),
                "KUBE-SEP-DKCFIS26GWF2WLWC",
            ),
            (
                "ns1/svc1:p80",
                Tcp,
                Some("[fd00:10:180::1]:80"),
                "KUBE-SEP-OGYCNMB4EMRUSJ6N",
            ),
        ] {
            let n = spn(name, proto);
            let got = match endpoint {
                Some(ep) => endpoint_chain(&n, ep),
                None => ServicePortChains::of(&n).cluster,
            };
            assert_eq!(got.as_str(), want, "{name} {proto} {endpoint:?}");
        }
        let c = ServicePortChains::of(&spn("ns5/svc5:p80", Tcp));
        assert_eq!(c.firewall.as_str(), "KUBE-FW-NUKIZ6OKUXPJNT4C");
        assert_eq!(c.external.as_str(), "KUBE-EXT-NUKIZ6OKUXPJNT4C");
        assert_eq!(c.local.as_str(), "KUBE-SVL-NUKIZ6OKUXPJNT4C");
    }

    #[test]
    fn chain_name_validation() {
        assert!(ChainName::new("KUBE-SERVICES").is_some());
        assert!(ChainName::new("").is_none());
        assert!(ChainName::new("A-NAME-THAT-IS-FAR-TOO-LONG-X").is_none());
        assert!(ChainName::new("has space").is_none());
        assert!(is_service_chain("KUBE-SEP-ABC"));
        assert!(!is_service_chain("KUBE-SERVICES"));
        assert!(!is_service_chain("KUBE-MARK-MASQ"));
    }
}
