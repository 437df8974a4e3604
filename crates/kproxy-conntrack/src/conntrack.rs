//! The conntrack client: list (dump) and delete entries over ctnetlink.

use std::time::Duration;

use netlink_packet_core::{DefaultNla, NLM_F_DUMP};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple as NlTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use crate::error::{Error, Result};
use crate::flow::{CTA_ID, CTA_ZONE, Family, Flow};
use crate::netlink::NfnlSocket;

/// `NFNETLINK_V0`, the only version of the netfilter header.
const NFNETLINK_V0: u8 = 0;

/// `ENOENT`: the entry to delete is gone (or, with `CTA_ID`, was replaced by a newer one).
const ENOENT: i32 = libc::ENOENT;

/// How often a dump flagged `NLM_F_DUMP_INTR` is tried before giving up.
const DUMP_ATTEMPTS: u32 = 3;

// IP protocols whose conntrack tuples are identified by source and destination port
// (`nf_ct_port_nlattr_to_tuple` in the kernel), so a delete request can name them.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_DCCP: u8 = 33;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// A conntrack client for the network namespace of the thread that created it.
///
/// The socket stays in that namespace whichever thread uses it later. Every call waits for the
/// kernel's answer (at most [`Conntrack::set_timeout`] per datagram, 10 s by default).
///
/// ```no_run
/// use kproxy_conntrack::{Conntrack, Family, Protocol};
///
/// let mut ct = Conntrack::new()?;
/// for flow in ct.list(Family::Ipv4)? {
///     if flow.protocol == Protocol::Udp && flow.original.dst_port == 53 {
///         ct.delete(&flow)?;
///     }
/// }
/// # Ok::<(), kproxy_conntrack::Error>(())
/// ```
#[derive(Debug)]
pub struct Conntrack {
    sock: NfnlSocket,
}

/// What [`Conntrack::delete_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteStats {
    /// Entries the kernel deleted.
    pub deleted: usize,
    /// Entries that were already gone (`ENOENT`): expired, deleted by someone else, or, for a
    /// flow with an id, replaced by a newer entry with the same tuple.
    pub vanished: usize,
}

impl Conntrack {
    /// Opens a ctnetlink socket in the calling thread's network namespace.
    ///
    /// Needs `CAP_NET_ADMIN` in that namespace for anything but opening.
    pub fn new() -> Result<Conntrack> {
        Ok(Conntrack {
            sock: NfnlSocket::new()?,
        })
    }

    /// Sets how long one receive waits for the kernel (at least 1 ms).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.sock.set_timeout(timeout)
    }

    /// Lists every entry of `family` in this namespace's conntrack table (a dump:
    /// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`).
    ///
    /// A dump the kernel flags as interrupted by concurrent changes is tried again, up to 3
    /// times in all, then [`Error::DumpInterrupted`].
    pub fn list(&mut self, family: Family) -> Result<Vec<Flow>> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut flows = Vec::new();
            let outcome =
                self.sock
                    .request("conntrack dump", dump_request(family), NLM_F_DUMP, |msg| {
                        match msg.inner {
                            NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) => {
                                flows.push(Flow::from_attributes(&attrs)?);
                            }
                            other => {
                                return Err(Error::Decode {
                                    what: "conntrack dump",
                                    reason: format!("unexpected message {other:?}"),
                                });
                            }
                        }
                        Ok(())
                    })?;
            if !outcome.interrupted {
                return Ok(flows);
            }
        }
        Err(Error::DumpInterrupted {
            operation: "conntrack dump",
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// Deletes the entry with `flow`'s original tuple (`IPCTNL_MSG_CT_DELETE`), in `flow`'s zone
    /// and, if `flow.id` is set, only if the entry still has that id.
    ///
    /// Returns `true` if the kernel deleted it, `false` if it was already gone (`ENOENT` is
    /// not an error). Only port-based protocols (TCP, UDP, UDP-Lite, SCTP, DCCP) can be
    /// deleted; others are [`Error::UnsupportedProtocol`].
    pub fn delete(&mut self, flow: &Flow) -> Result<bool> {
        let request = delete_request(flow)?;
        match self
            .sock
            .request("conntrack delete", request, 0, |_| Ok(()))
        {
            Ok(_) => Ok(true),
            Err(e) if e.kernel_errno() == Some(ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes every flow in `flows`, one request each, going on past failures.
    ///
    /// If any deletion failed the result is [`Error::DeleteFailed`] with the counts and the
    /// first failure.
    pub fn delete_many<'a>(
        &mut self,
        flows: impl IntoIterator<Item = &'a Flow>,
    ) -> Result<DeleteStats> {
        let mut stats = DeleteStats::default();
        let mut failed = 0;
        let mut first = None;
        for flow in flows {
            match self.delete(flow) {
                Ok(true) => stats.deleted += 1,
                Ok(false) => stats.vanished += 1,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(stats),
            Some(first) => Err(Error::DeleteFailed {
                attempted: stats.deleted + stats.vanished + failed,
                deleted: stats.deleted,
                vanished: stats.vanished,
                failed,
                first: Box::new(first),
            }),
        }
    }
}

fn nf_family(family: Family) -> NetfilterProtoFamily {
    match family {
        Family::Ipv4 => NetfilterProtoFamily::IPv4,
        Family::Ipv6 => NetfilterProtoFamily::IPv6,
    }
}

/// The dump request: a netfilter header naming the family and no attributes.
pub(crate) fn dump_request(family: Family) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(nf_family(family), NFNETLINK_V0, 0),
        ConntrackMessage::Get(vec![]),
    )
}

/// The delete request for `flow`. Layout of the attributes (all nested ones carry
/// `NLA_F_NESTED`; integers are big-endian):
///
/// ```text
/// CTA_TUPLE_ORIG (1, nested)
///   CTA_TUPLE_IP (1, nested)
///     CTA_IP_V4_SRC (1) / CTA_IP_V6_SRC (3)   4 / 16 bytes
///     CTA_IP_V4_DST (2) / CTA_IP_V6_DST (4)   4 / 16 bytes
///   CTA_TUPLE_PROTO (2, nested)
///     CTA_PROTO_NUM (1)        u8 (+3 bytes padding)
///     CTA_PROTO_SRC_PORT (2)   be16 (+2 bytes padding)
///     CTA_PROTO_DST_PORT (3)   be16 (+2 bytes padding)
/// CTA_ZONE (18)                be16, only for a non-default zone
/// CTA_ID (12)                  be32, only if the flow has an id
/// ```
///
/// A delete request without a tuple would flush the whole table, so a tuple is always sent.
pub(crate) fn delete_request(flow: &Flow) -> Result<NetfilterMessage> {
    let proto = flow.protocol.number();
    if !matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_DCCP | IPPROTO_SCTP | IPPROTO_UDPLITE
    ) {
        return Err(Error::UnsupportedProtocol { protocol: proto });
    }
    let family = Family::of(flow.original.src);
    if Family::of(flow.original.dst) != family {
        return Err(Error::MixedFamilies {
            flow: flow.to_string(),
        });
    }
    let o = &flow.original;
    let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(vec![
        NlTuple::Ip(vec![
            IPTuple::SourceAddress(o.src),
            IPTuple::DestinationAddress(o.dst),
        ]),
        NlTuple::Proto(vec![
            ProtoTuple::Protocol(proto.into()),
            ProtoTuple::SourcePort(o.src_port),
            ProtoTuple::DestinationPort(o.dst_port),
        ]),
    ])];
    if flow.zone != 0 {
        attrs.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            flow.zone.to_be_bytes().to_vec(),
        )));
    }
    if let Some(id) = flow.id {
        attrs.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ID,
            id.to_be_bytes().to_vec(),
        )));
    }
    Ok(NetfilterMessage::new(
        NetfilterHeader::new(nf_family(family), NFNETLINK_V0, 0),
        ConntrackMessage::Delete(attrs),
    ))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};

    use super::*;
    use crate::flow::{Protocol, Tuple};
    use crate::netlink::{decode_message, encode_request};

    fn udp_flow() -> Flow {
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
    }

    /// Parses `bytes` back and emits the parsed message again: the same bytes must come out.
    fn assert_round_trip(bytes: &[u8]) {
        let parsed = decode_message(bytes).unwrap();
        let mut again = vec![0; parsed.buffer_len()];
        parsed.serialize(&mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn golden_ipv4_delete_with_id() {
        let flow = udp_flow().with_id(Some(0x0102_0304));
        let bytes = encode_request(delete_request(&flow).unwrap(), NLM_F_ACK, 7);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            // nlmsghdr (host byte order)
            80, 0, 0, 0,             // nlmsg_len = 80
            0x02, 0x01,              // nlmsg_type = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
            0x05, 0x00,              // nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK
            7, 0, 0, 0,              // nlmsg_seq = 7
            0, 0, 0, 0,              // nlmsg_pid = 0 (the kernel fills in the sender)
            // nfgenmsg
            2,                       // nfgen_family = AF_INET
            0,                       // version = NFNETLINK_V0
            0, 0,                    // res_id = 0 (be16)
            // CTA_TUPLE_ORIG
            52, 0, 0x01, 0x80,       // len 52, type 1 | NLA_F_NESTED
              20, 0, 0x01, 0x80,     // CTA_TUPLE_IP: len 20, type 1 | NLA_F_NESTED
                8, 0, 1, 0,          // CTA_IP_V4_SRC: len 8, type 1
                10, 0, 0, 5,         //   10.0.0.5
                8, 0, 2, 0,          // CTA_IP_V4_DST: len 8, type 2
                10, 96, 0, 10,       //   10.96.0.10
              28, 0, 0x02, 0x80,     // CTA_TUPLE_PROTO: len 28, type 2 | NLA_F_NESTED
                5, 0, 1, 0,          // CTA_PROTO_NUM: len 5, type 1
                17, 0, 0, 0,         //   17 (UDP) + 3 bytes padding
                6, 0, 2, 0,          // CTA_PROTO_SRC_PORT: len 6, type 2
                0x9c, 0x40, 0, 0,    //   40000 (be16) + 2 bytes padding
                6, 0, 3, 0,          // CTA_PROTO_DST_PORT: len 6, type 3
                0x00, 0x35, 0, 0,    //   53 (be16) + 2 bytes padding
            // CTA_ID
            8, 0, 12, 0,             // len 8, type 12
            1, 2, 3, 4,              //   0x01020304 (be32)
        ];
        assert_eq!(bytes, expected);
        assert_round_trip(&bytes);
    }

    #[test]
    fn golden_ipv6_delete_in_a_zone() {
        let flow = Flow::new(
            Protocol::Tcp,
            Tuple::new(
                "[fd00::5]:40000".parse().unwrap(),
                "[fd00:96::10]:443".parse().unwrap(),
            ),
            Tuple::new(
                "[fd00:244::7]:8443".parse().unwrap(),
                "[fd00::5]:40000".parse().unwrap(),
            ),
        )
        .with_zone(7);
        let bytes = encode_request(delete_request(&flow).unwrap(), NLM_F_ACK, 1);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            104, 0, 0, 0,            // nlmsg_len = 104
            0x02, 0x01,              // CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
            0x05, 0x00,              // NLM_F_REQUEST | NLM_F_ACK
            1, 0, 0, 0,              // seq 1
            0, 0, 0, 0,              // pid 0
            10, 0, 0, 0,             // nfgenmsg: AF_INET6, v0, res_id 0
            76, 0, 0x01, 0x80,       // CTA_TUPLE_ORIG, nested, len 76
              44, 0, 0x01, 0x80,     // CTA_TUPLE_IP, nested, len 44
                20, 0, 3, 0,         // CTA_IP_V6_SRC: len 20, type 3
                0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,       // fd00::5
                20, 0, 4, 0,         // CTA_IP_V6_DST: len 20, type 4
                0xfd, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // fd00:96::10
              28, 0, 0x02, 0x80,     // CTA_TUPLE_PROTO, nested, len 28
                5, 0, 1, 0, 6, 0, 0, 0,            // CTA_PROTO_NUM = 6 (TCP) + padding
                6, 0, 2, 0, 0x9c, 0x40, 0, 0,      // CTA_PROTO_SRC_PORT = 40000
                6, 0, 3, 0, 0x01, 0xbb, 0, 0,      // CTA_PROTO_DST_PORT = 443
            6, 0, 18, 0,             // CTA_ZONE: len 6, type 18
            0, 7, 0, 0,              //   7 (be16) + 2 bytes padding
        ];
        assert_eq!(bytes, expected);
        assert_round_trip(&bytes);
    }

    #[test]
    fn golden_dump_requests() {
        for (family, af) in [(Family::Ipv4, 2u8), (Family::Ipv6, 10u8)] {
            let bytes = encode_request(dump_request(family), NLM_F_DUMP, 0x0a0b_0c0d);
            #[rustfmt::skip]
            let expected: &[u8] = &[
                20, 0, 0, 0,             // nlmsg_len = 20: header and nfgenmsg, no attributes
                0x01, 0x01,              // CTNETLINK << 8 | IPCTNL_MSG_CT_GET
                0x01, 0x03,              // NLM_F_REQUEST | NLM_F_DUMP (NLM_F_ROOT | NLM_F_MATCH)
                0x0d, 0x0c, 0x0b, 0x0a,  // seq
                0, 0, 0, 0,              // pid
                af, 0, 0, 0,             // nfgenmsg: family, v0, res_id 0
            ];
            assert_eq!(bytes, expected);
            assert_round_trip(&bytes);
        }
    }

    #[test]
    fn only_port_based_protocols_can_be_deleted() {
        let mut flow = udp_flow();
        for (p, ok) in [
            (1, false),
            (6, true),
            (17, true),
            (33, true),
            (47, false),
            (58, false),
            (132, true),
            (136, true),
        ] {
            flow.protocol = Protocol::from_number(p);
            let r = delete_request(&flow);
            assert_eq!(r.is_ok(), ok, "protocol {p}");
            if !ok {
                assert!(matches!(r, Err(Error::UnsupportedProtocol { protocol }) if protocol == p));
            }
        }
    }

    #[test]
    fn mixed_family_flows_are_refused() {
        let mut flow = udp_flow();
        flow.original.dst = "fd00::1".parse().unwrap();
        assert!(matches!(
            delete_request(&flow),
            Err(Error::MixedFamilies { .. })
        ));
    }
}
