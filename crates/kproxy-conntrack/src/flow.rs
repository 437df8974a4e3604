//! Conntrack entries as plain data: [`Flow`], [`Tuple`], [`Protocol`], [`Family`], and their
//! decoding from the kernel's ctnetlink attributes.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLA_TYPE_MASK, NetlinkPayload, Nla};
use netlink_packet_netfilter::NetfilterMessageInner;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple as NlTuple,
};

use crate::error::{Error, Result};
use crate::netlink::decode_message;

// Top-level ctnetlink attributes (`enum ctattr_type`, include/uapi/linux/netfilter/
// nfnetlink_conntrack.h) that netlink-packet-netfilter 0.4 hands over as raw attributes.
/// `CTA_ID`: be32, the entry's id (a hash the kernel derives from the entry's address).
pub(crate) const CTA_ID: u16 = 12;
/// `CTA_ZONE`: be16, the entry's conntrack zone; absent for the default zone 0.
pub(crate) const CTA_ZONE: u16 = 18;

// Address families, as in the `nfgenmsg` header.
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

// IP protocol numbers.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// An address family: conntrack tables are listed one family at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Ipv4,
    /// IPv6 (`AF_INET6`).
    Ipv6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The `AF_*` number the kernel uses in the netfilter header.
    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        }
    }
}

/// The layer-4 protocol of a flow.
///
/// Equality and hashing go by protocol number, so `Protocol::Other(17) == Protocol::Udp`;
/// [`Protocol::from_number`] (and everything this crate decodes) never yields `Other` for
/// TCP, UDP or SCTP.
#[derive(Debug, Clone, Copy, Eq)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// Any other IP protocol, by number.
    Other(u8),
}

impl Protocol {
    /// The protocol with IP protocol number `number`.
    pub fn from_number(number: u8) -> Protocol {
        match number {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            IPPROTO_SCTP => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => IPPROTO_SCTP,
            Protocol::Other(n) => n,
        }
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Protocol) -> bool {
        self.number() == other.number()
    }
}

impl Hash for Protocol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.number().hash(state);
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Sctp => f.write_str("sctp"),
            Protocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// One direction of a flow: source and destination address and port.
///
/// Ports are 0 for protocols without ports (ICMP, GRE, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Tuple {
    /// A tuple from its source and destination socket addresses.
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Tuple {
        Tuple {
            src: src.ip(),
            dst: dst.ip(),
            src_port: src.port(),
            dst_port: dst.port(),
        }
    }

    /// The source as a socket address.
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.src_port)
    }

    /// The destination as a socket address.
    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dst_port)
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src_addr(), self.dst_addr())
    }
}

/// One conntrack entry: protocol, original tuple (as the first packet was seen) and reply
/// tuple (as answers are expected, i.e. after NAT).
///
/// For a UDP datagram from `10.0.0.5:40000` to a service `10.96.0.10:53` DNATed to
/// `10.244.1.7:5353`, `original` is `10.0.0.5:40000 -> 10.96.0.10:53` and `reply` is
/// `10.244.1.7:5353 -> 10.0.0.5:40000`.
///
/// Equality and hashing take every field, `id` and `zone` included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Flow {
    /// The layer-4 protocol.
    pub protocol: Protocol,
    /// The original direction (`CTA_TUPLE_ORIG`).
    pub original: Tuple,
    /// The reply direction (`CTA_TUPLE_REPLY`).
    pub reply: Tuple,
    /// The kernel's id of this entry (`CTA_ID`), when known. A delete request carrying it
    /// removes only this very entry, not a newer one with the same tuple.
    pub id: Option<u32>,
    /// The conntrack zone (`CTA_ZONE`); 0 is the default zone.
    pub zone: u16,
}

impl Flow {
    /// A flow in the default zone with no kernel id.
    pub fn new(protocol: Protocol, original: Tuple, reply: Tuple) -> Flow {
        Flow {
            protocol,
            original,
            reply,
            id: None,
            zone: 0,
        }
    }

    /// The same flow with the kernel id `id`.
    pub fn with_id(mut self, id: Option<u32>) -> Flow {
        self.id = id;
        self
    }

    /// The same flow in conntrack zone `zone`.
    pub fn with_zone(mut self, zone: u16) -> Flow {
        self.zone = zone;
        self
    }

    /// The family of the original tuple's source address.
    pub fn family(&self) -> Family {
        Family::of(self.original.src)
    }

    /// Decodes one complete netlink message as the kernel sends it in a conntrack dump or
    /// event: `nlmsghdr`, `nfgenmsg`, then ctnetlink attributes.
    ///
    /// Never panics: malformed input is an [`Error::Decode`] or [`Error::MissingAttribute`].
    pub fn from_netlink(message: &[u8]) -> Result<Flow> {
        let msg = decode_message(message)?;
        match msg.payload {
            NetlinkPayload::InnerMessage(nf) => match nf.inner {
                NetfilterMessageInner::Conntrack(
                    ConntrackMessage::New(attrs)
                    | ConntrackMessage::Get(attrs)
                    | ConntrackMessage::Delete(attrs),
                ) => Flow::from_attributes(&attrs),
                _ => Err(Error::Decode {
                    what: "conntrack entry",
                    reason: format!(
                        "message type {:#06x} is not a conntrack entry",
                        msg.header.message_type
                    ),
                }),
            },
            _ => Err(Error::Decode {
                what: "conntrack entry",
                reason: format!(
                    "message type {:#06x} is a control message",
                    msg.header.message_type
                ),
            }),
        }
    }

    /// Builds a flow from the top-level attributes of a conntrack message.
    pub(crate) fn from_attributes(attrs: &[ConntrackAttribute]) -> Result<Flow> {
        let mut original = None;
        let mut reply = None;
        let mut id = None;
        let mut zone = 0;
        for attr in attrs {
            match attr {
                ConntrackAttribute::CtaTupleOrig(t) => {
                    original = Some(decode_tuple(t, "CTA_TUPLE_ORIG")?);
                }
                ConntrackAttribute::CtaTupleReply(t) => {
                    reply = Some(decode_tuple(t, "CTA_TUPLE_REPLY")?);
                }
                ConntrackAttribute::Other(nla) => match nla.kind() & NLA_TYPE_MASK {
                    CTA_ID => id = Some(u32::from_be_bytes(fixed_value(nla, "CTA_ID")?)),
                    CTA_ZONE => zone = u16::from_be_bytes(fixed_value(nla, "CTA_ZONE")?),
                    _ => {}
                },
                _ => {}
            }
        }
        let (proto, original) = original.ok_or(Error::MissingAttribute {
            what: "conntrack entry",
            attribute: "CTA_TUPLE_ORIG",
        })?;
        let (reply_proto, reply) = reply.ok_or(Error::MissingAttribute {
            what: "conntrack entry",
            attribute: "CTA_TUPLE_REPLY",
        })?;
        if proto != reply_proto {
            return Err(Error::Decode {
                what: "conntrack entry",
                reason: format!(
                    "original protocol {proto} differs from reply protocol {reply_proto}"
                ),
            });
        }
        if Family::of(original.dst) != Family::of(original.src)
            || Family::of(reply.src) != Family::of(original.src)
            || Family::of(reply.dst) != Family::of(original.src)
        {
            return Err(Error::Decode {
                what: "conntrack entry",
                reason: format!("tuples mix address families: {original} / {reply}"),
            });
        }
        Ok(Flow {
            protocol: proto,
            original,
            reply,
            id,
            zone,
        })
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} reply {}",
            self.protocol, self.original, self.reply
        )?;
        if self.zone != 0 {
            write!(f, " zone {}", self.zone)?;
        }
        if let Some(id) = self.id {
            write!(f, " id {id}")?;
        }
        Ok(())
    }
}

/// The value of a raw attribute that must be exactly `N` bytes long.
fn fixed_value<const N: usize>(nla: &impl Nla, attribute: &'static str) -> Result<[u8; N]> {
    let len = nla.value_len();
    if len != N {
        return Err(Error::Decode {
            what: "conntrack entry",
            reason: format!("{attribute} is {len} bytes, expected {N}"),
        });
    }
    let mut out = [0u8; N];
    nla.emit_value(&mut out);
    Ok(out)
}

/// Decodes the nested `CTA_TUPLE_IP` and `CTA_TUPLE_PROTO` of one tuple.
fn decode_tuple(parts: &[NlTuple], which: &'static str) -> Result<(Protocol, Tuple)> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut src_port = 0;
    let mut dst_port = 0;
    for part in parts {
        match part {
            NlTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            NlTuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(n) => {
                            proto = Some(Protocol::from_number(u8::from(*n)));
                        }
                        ProtoTuple::SourcePort(port) => src_port = *port,
                        ProtoTuple::DestinationPort(port) => dst_port = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let missing = |attribute| Error::MissingAttribute {
        what: which,
        attribute,
    };
    Ok((
        proto.ok_or_else(|| missing("CTA_PROTO_NUM"))?,
        Tuple {
            src: src.ok_or_else(|| missing("CTA_IP_V4_SRC/CTA_IP_V6_SRC"))?,
            dst: dst.ok_or_else(|| missing("CTA_IP_V4_DST/CTA_IP_V6_DST"))?,
            src_port,
            dst_port,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conntrack entry as the kernel sends it in a dump (IPv4, UDP, DNATed), with the
    /// attributes the kernel adds that this crate ignores.
    #[rustfmt::skip]
    pub(crate) const KERNEL_UDP_ENTRY: &[u8] = &[
        // nlmsghdr
        172, 0, 0, 0,            // nlmsg_len = 172
        0x00, 0x01,              // CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (dump entries are "new")
        0x02, 0x00,              // NLM_F_MULTIPART
        9, 0, 0, 0,              // seq 9
        0x39, 0x30, 0, 0,        // pid 12345
        // nfgenmsg
        2, 0, 0, 0,              // AF_INET, v0, res_id 0
        // CTA_TUPLE_ORIG (nested, 52 bytes): 10.0.0.5:40000 -> 10.96.0.10:53
        52, 0, 0x01, 0x80,
          20, 0, 0x01, 0x80,     // CTA_TUPLE_IP
            8, 0, 1, 0, 10, 0, 0, 5,       // CTA_IP_V4_SRC 10.0.0.5
            8, 0, 2, 0, 10, 96, 0, 10,     // CTA_IP_V4_DST 10.96.0.10
          28, 0, 0x02, 0x80,     // CTA_TUPLE_PROTO
            5, 0, 1, 0, 17, 0, 0, 0,       // CTA_PROTO_NUM 17
            6, 0, 2, 0, 0x9c, 0x40, 0, 0,  // CTA_PROTO_SRC_PORT 40000
            6, 0, 3, 0, 0x00, 0x35, 0, 0,  // CTA_PROTO_DST_PORT 53
        // CTA_TUPLE_REPLY (nested, 52 bytes): 10.244.1.7:5353 -> 10.0.0.5:40000
        52, 0, 0x02, 0x80,
          20, 0, 0x01, 0x80,
            8, 0, 1, 0, 10, 244, 1, 7,     // CTA_IP_V4_SRC 10.244.1.7
            8, 0, 2, 0, 10, 0, 0, 5,       // CTA_IP_V4_DST 10.0.0.5
          28, 0, 0x02, 0x80,
            5, 0, 1, 0, 17, 0, 0, 0,       // CTA_PROTO_NUM 17
            6, 0, 2, 0, 0x14, 0xe9, 0, 0,  // CTA_PROTO_SRC_PORT 5353
            6, 0, 3, 0, 0x9c, 0x40, 0, 0,  // CTA_PROTO_DST_PORT 40000
        8, 0, 3, 0, 0, 0, 0x01, 0x88,      // CTA_STATUS: CONFIRMED | DST_NAT | DST_NAT_DONE
        8, 0, 7, 0, 0, 0, 0, 30,           // CTA_TIMEOUT: 30 s
        8, 0, 8, 0, 0, 0, 0, 0,            // CTA_MARK: 0
        8, 0, 11, 0, 0, 0, 0, 1,           // CTA_USE: 1 (ignored)
        8, 0, 12, 0, 0xde, 0xad, 0xbe, 0xef, // CTA_ID: 0xdeadbeef
        6, 0, 18, 0, 0, 5, 0, 0,           // CTA_ZONE: 5 + 2 bytes padding
    ];

    fn expected_flow() -> Flow {
        Flow::new(
            Protocol::Udp,
            Tuple::new(
                "10.0.0.5:40000".parse().unwrap(),
                "10.96.0.10:53".parse().unwrap(),
            ),
            Tuple::new(
                "10.244.1.7:5353".parse().unwrap(),
                "10.0.0.5:40000".parse().unwrap(),
            ),
        )
        .with_id(Some(0xdead_beef))
        .with_zone(5)
    }

    #[test]
    fn golden_kernel_entry_decodes_and_re_emits_byte_for_byte() {
        assert_eq!(KERNEL_UDP_ENTRY.len(), 172);
        let flow = Flow::from_netlink(KERNEL_UDP_ENTRY).unwrap();
        assert_eq!(flow, expected_flow());
        assert_eq!(
            flow.to_string(),
            "udp 10.0.0.5:40000 -> 10.96.0.10:53 reply 10.244.1.7:5353 -> 10.0.0.5:40000 zone 5 id 3735928559"
        );
        let parsed = decode_message(KERNEL_UDP_ENTRY).unwrap();
        let mut again = vec![0; parsed.buffer_len()];
        parsed.serialize(&mut again);
        assert_eq!(again, KERNEL_UDP_ENTRY);
    }

    #[test]
    fn every_truncation_and_byte_flip_of_an_entry_is_handled_without_panic() {
        for len in 0..KERNEL_UDP_ENTRY.len() {
            let _ = Flow::from_netlink(&KERNEL_UDP_ENTRY[..len]);
        }
        let mut bytes = KERNEL_UDP_ENTRY.to_vec();
        for i in 0..bytes.len() {
            for v in [0u8, 1, 3, 4, 5, 0x7f, 0x80, 0xff] {
                let old = bytes[i];
                bytes[i] = v;
                let _ = Flow::from_netlink(&bytes);
                bytes[i] = old;
            }
        }
    }

    #[test]
    fn missing_tuples_and_wrong_sizes_are_errors() {
        // Header and nfgenmsg only.
        let mut bare = KERNEL_UDP_ENTRY[..20].to_vec();
        bare[0] = 20;
        assert!(matches!(
            Flow::from_netlink(&bare),
            Err(Error::MissingAttribute {
                attribute: "CTA_TUPLE_ORIG",
                ..
            })
        ));
        // CTA_ID of 3 bytes.
        let mut short_id = KERNEL_UDP_ENTRY.to_vec();
        let at = short_id.len() - 16;
        assert_eq!(&short_id[at..at + 4], &[8, 0, 12, 0]);
        short_id[at] = 7;
        assert!(matches!(
            Flow::from_netlink(&short_id),
            Err(Error::Decode { .. })
        ));
        // A control message is not an entry.
        let mut done = vec![20, 0, 0, 0, 3, 0, 2, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        done.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            Flow::from_netlink(&done),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn protocols_compare_by_number() {
        assert_eq!(Protocol::Other(17), Protocol::Udp);
        assert_eq!(Protocol::from_number(132), Protocol::Sctp);
        assert!(matches!(Protocol::from_number(6), Protocol::Tcp));
        assert_eq!(Protocol::from_number(1), Protocol::Other(1));
        assert_eq!(Protocol::Other(47).to_string(), "proto-47");
        use std::collections::HashSet;
        let set: HashSet<_> = [Protocol::Udp, Protocol::Other(17)].into();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn public_types_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Flow>();
        send_sync::<Error>();
        send_sync::<crate::Conntrack>();
        send_sync::<crate::nfacct::NfAcct>();
        send_sync::<crate::StaleFlowFilter>();
    }

    #[test]
    fn families() {
        assert_eq!(Family::Ipv4.af(), 2);
        assert_eq!(Family::Ipv6.af(), 10);
        assert_eq!(expected_flow().family(), Family::Ipv4);
    }
}
