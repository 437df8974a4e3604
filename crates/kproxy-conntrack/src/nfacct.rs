//! Netfilter accounting counters (nfacct, `NFNL_SUBSYS_ACCT`), per network namespace.
//!
//! kube-proxy creates two named counters at start-up, [`CT_STATE_INVALID_DROPPED_PKTS`] and
//! [`LOCALHOST_NPS_ACCEPTED_PKTS`], and then matches them in rules with
//! `-m nfacct --nfacct-name NAME` (the match fails to load if the counter does not exist, so
//! when creation fails the rule is written without the match). It reads them back for its
//! metrics. This module does the creating and reading; the rules are the callers' business.
//!
//! ```no_run
//! use kproxy_conntrack::nfacct::{NfAcct, CT_STATE_INVALID_DROPPED_PKTS};
//!
//! let mut acct = NfAcct::new()?;
//! let usable = acct.ensure(CT_STATE_INVALID_DROPPED_PKTS).is_ok();
//! // ... write `-m nfacct --nfacct-name ct_state_invalid_dropped_pkts` only if `usable` ...
//! if let Some(c) = acct.get(CT_STATE_INVALID_DROPPED_PKTS)? {
//!     println!("{} packets, {} bytes", c.packets, c.bytes);
//! }
//! # Ok::<(), kproxy_conntrack::Error>(())
//! ```
//!
//! # Messages
//!
//! A request is `nlmsghdr` (type `NFNL_SUBSYS_ACCT << 8 | command`), `nfgenmsg` (family
//! `AF_UNSPEC`, version 0, resource id 0) and these attributes (integers big-endian):
//!
//! ```text
//! NFACCT_NAME  (1)  NUL-terminated string, at most 32 bytes with the NUL
//! NFACCT_PKTS  (2)  be64 (answers only here)
//! NFACCT_BYTES (3)  be64 (answers only here)
//! NFACCT_USE   (4)  be32, how many rules use the counter (answers)
//! NFACCT_PAD   (8)  alignment padding before 64-bit values (ignored)
//! ```
//!
//! Commands: `NFNL_MSG_ACCT_NEW` (0) with `NLM_F_CREATE | NLM_F_EXCL` creates (an existing
//! counter is `EEXIST`); `NFNL_MSG_ACCT_GET` (1) with a name reads one counter (`ENOENT` if
//! absent) and with `NLM_F_DUMP` lists them all. Answers are `NFNL_MSG_ACCT_NEW` messages.

use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};

use crate::error::{Error, Result};
use crate::netlink::{NfnlSocket, decode_message};

/// The counter kube-proxy's rules bump for packets dropped as `ctstate INVALID`.
pub const CT_STATE_INVALID_DROPPED_PKTS: &str = "ct_state_invalid_dropped_pkts";

/// The counter kube-proxy's rules bump for packets accepted to node ports on localhost.
pub const LOCALHOST_NPS_ACCEPTED_PKTS: &str = "localhost_nps_accepted_pkts";

/// The longest counter name the kernel accepts, in bytes (`NFACCT_NAME_MAX` less the NUL).
pub const MAX_NAME_LEN: usize = NFACCT_NAME_MAX - 1;

/// `NFNL_SUBSYS_ACCT` (include/uapi/linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_ACCT: u8 = 7;
// `enum nfnl_acct_msg_types` (include/uapi/linux/netfilter/nfnetlink_acct.h).
const NFNL_MSG_ACCT_NEW: u8 = 0;
const NFNL_MSG_ACCT_GET: u8 = 1;
// `enum nfnl_acct_type`.
const NFACCT_NAME: u16 = 1;
const NFACCT_PKTS: u16 = 2;
const NFACCT_BYTES: u16 = 3;
/// `NFACCT_NAME_MAX`: the name's buffer size in the kernel, NUL included.
const NFACCT_NAME_MAX: usize = 32;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
const EEXIST: i32 = libc::EEXIST;
/// Answer of kernels that see `NLM_F_CREATE` without `NLM_F_EXCL` on an existing counter.
const EBUSY: i32 = libc::EBUSY;
const ENOENT: i32 = libc::ENOENT;

/// One nfacct counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Counter {
    /// The counter's name.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole IP packets, headers included).
    pub bytes: u64,
}

impl Counter {
    /// Decodes one complete netlink message as the kernel sends it for a counter
    /// (`nlmsghdr`, `nfgenmsg`, nfacct attributes).
    ///
    /// Never panics: malformed input is an [`Error::Decode`] or [`Error::MissingAttribute`].
    pub fn from_netlink(message: &[u8]) -> Result<Counter> {
        let msg = decode_message(message)?;
        match msg.payload {
            NetlinkPayload::InnerMessage(nf) => Counter::from_message(nf),
            _ => Err(Error::Decode {
                what: "nfacct counter",
                reason: format!(
                    "message type {:#06x} is a control message",
                    msg.header.message_type
                ),
            }),
        }
    }

    fn from_message(msg: NetfilterMessage) -> Result<Counter> {
        let attributes = match msg.inner {
            NetfilterMessageInner::Other {
                subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_ACCT),
                attributes,
                ..
            } => attributes,
            other => {
                return Err(Error::Decode {
                    what: "nfacct counter",
                    reason: format!("not an nfacct message: {other:?}"),
                });
            }
        };
        let mut name = None;
        let mut packets = None;
        let mut bytes = None;
        for nla in &attributes {
            let mut value = vec![0u8; nla.value_len()];
            nla.emit_value(&mut value);
            match nla.kind() & NLA_TYPE_MASK {
                NFACCT_NAME => {
                    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                    value.truncate(end);
                    name = Some(String::from_utf8(value).map_err(|e| Error::Decode {
                        what: "nfacct counter",
                        reason: format!("NFACCT_NAME is not UTF-8: {e}"),
                    })?);
                }
                NFACCT_PKTS => packets = Some(be64(&value, "NFACCT_PKTS")?),
                NFACCT_BYTES => bytes = Some(be64(&value, "NFACCT_BYTES")?),
                _ => {}
            }
        }
        let missing = |attribute| Error::MissingAttribute {
            what: "nfacct counter",
            attribute,
        };
        Ok(Counter {
            name: name.ok_or_else(|| missing("NFACCT_NAME"))?,
            packets: packets.ok_or_else(|| missing("NFACCT_PKTS"))?,
            bytes: bytes.ok_or_else(|| missing("NFACCT_BYTES"))?,
        })
    }
}

fn be64(value: &[u8], attribute: &'static str) -> Result<u64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| Error::Decode {
        what: "nfacct counter",
        reason: format!("{attribute} is {} bytes, expected 8", value.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// An nfacct client for the network namespace of the thread that created it.
#[derive(Debug)]
pub struct NfAcct {
    sock: NfnlSocket,
}

impl NfAcct {
    /// Opens a netfilter netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<NfAcct> {
        Ok(NfAcct {
            sock: NfnlSocket::new()?,
        })
    }

    /// Sets how long one receive waits for the kernel (at least 1 ms).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.sock.set_timeout(timeout)
    }

    /// Creates the counter `name` if it does not exist. Returns `true` if it was created,
    /// `false` if it already existed (its values are kept).
    ///
    /// Any error (a kernel without nfacct, no `CAP_NET_ADMIN`, an invalid name) means rules
    /// must not use `-m nfacct --nfacct-name name`: iptables would refuse them.
    pub fn ensure(&mut self, name: &str) -> Result<bool> {
        let request = new_request(name)?;
        match self
            .sock
            .request("nfacct create", request, NLM_F_CREATE | NLM_F_EXCL, |_| {
                Ok(())
            }) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kernel_errno(), Some(EEXIST | EBUSY)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the counter `name`; `None` if there is no such counter.
    pub fn get(&mut self, name: &str) -> Result<Option<Counter>> {
        let request = get_request(Some(name))?;
        let mut found = None;
        let result = self.sock.request("nfacct get", request, 0, |msg| {
            let counter = Counter::from_message(msg)?;
            if counter.name == name {
                found = Some(counter);
            }
            Ok(())
        });
        match result {
            Ok(_) => Ok(found),
            Err(e) if e.kernel_errno() == Some(ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists every counter of this namespace.
    pub fn list(&mut self) -> Result<Vec<Counter>> {
        let mut counters = Vec::new();
        self.sock
            .request("nfacct dump", get_request(None)?, NLM_F_DUMP, |msg| {
                counters.push(Counter::from_message(msg)?);
                Ok(())
            })?;
        Ok(counters)
    }
}

/// Checks `name` as the kernel would and returns the `NFACCT_NAME` attribute for it.
fn name_attribute(name: &str) -> Result<DefaultNla> {
    let invalid = |reason| Error::InvalidCounterName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 31 bytes"));
    }
    if name.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut value = Vec::with_capacity(name.len() + 1);
    value.extend_from_slice(name.as_bytes());
    value.push(0);
    Ok(DefaultNla::new(NFACCT_NAME, value))
}

fn acct_message(message_type: u8, attributes: Vec<DefaultNla>) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_ACCT),
            message_type,
            attributes,
        },
    )
}

/// `NFNL_MSG_ACCT_NEW` with `NFACCT_NAME`.
pub(crate) fn new_request(name: &str) -> Result<NetfilterMessage> {
    Ok(acct_message(NFNL_MSG_ACCT_NEW, vec![name_attribute(name)?]))
}

/// `NFNL_MSG_ACCT_GET`, with `NFACCT_NAME` for one counter or without for a dump.
pub(crate) fn get_request(name: Option<&str>) -> Result<NetfilterMessage> {
    let attributes = match name {
        Some(name) => vec![name_attribute(name)?],
        None => vec![],
    };
    Ok(acct_message(NFNL_MSG_ACCT_GET, attributes))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};

    use super::*;
    use crate::netlink::encode_request;

    fn assert_round_trip(bytes: &[u8]) {
        let parsed = decode_message(bytes).unwrap();
        let mut again = vec![0; parsed.buffer_len()];
        parsed.serialize(&mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn golden_new_request() {
        let bytes = encode_request(
            new_request(CT_STATE_INVALID_DROPPED_PKTS).unwrap(),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            3,
        );
        let mut expected: Vec<u8> = vec![
            56, 0, 0, 0, // nlmsg_len = 56
            0x00, 0x07, // NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_NEW
            0x05,
            0x06, // NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL (0x200) | NLM_F_CREATE (0x400)
            3, 0, 0, 0, // seq 3
            0, 0, 0, 0, // pid 0
            0, 0, 0, 0, // nfgenmsg: AF_UNSPEC, v0, res_id 0
            34, 0, 1, 0, // NFACCT_NAME: len 34 (4 + 29 characters + NUL), type 1
        ];
        expected.extend_from_slice(b"ct_state_invalid_dropped_pkts\0");
        expected.extend_from_slice(&[0, 0]); // padding to 4 bytes
        assert_eq!(bytes, expected);
        assert_round_trip(&bytes);
    }

    #[test]
    fn golden_get_and_dump_requests() {
        let get = encode_request(get_request(Some("x")).unwrap(), NLM_F_ACK, 4);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            28, 0, 0, 0,             // nlmsg_len = 28
            0x01, 0x07,              // NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_GET
            0x05, 0x00,              // NLM_F_REQUEST | NLM_F_ACK
            4, 0, 0, 0,              // seq 4
            0, 0, 0, 0,              // pid 0
            0, 0, 0, 0,              // nfgenmsg
            6, 0, 1, 0,              // NFACCT_NAME: len 6, type 1
            b'x', 0, 0, 0,           //   "x\0" + 2 bytes padding
        ];
        assert_eq!(get, expected);
        assert_round_trip(&get);

        let dump = encode_request(get_request(None).unwrap(), NLM_F_DUMP, 5);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            20, 0, 0, 0,             // nlmsg_len = 20
            0x01, 0x07,              // NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_GET
            0x01, 0x03,              // NLM_F_REQUEST | NLM_F_DUMP
            5, 0, 0, 0,              // seq 5
            0, 0, 0, 0,              // pid 0
            0, 0, 0, 0,              // nfgenmsg
        ];
        assert_eq!(dump, expected);
        assert_round_trip(&dump);
    }

    /// A counter as the kernel sends it (`nfnl_acct_fill_info`).
    #[rustfmt::skip]
    const KERNEL_COUNTER: &[u8] = &[
        64, 0, 0, 0,                 // nlmsg_len = 64
        0x00, 0x07,                  // NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_NEW
        0x02, 0x00,                  // NLM_F_MULTIPART
        5, 0, 0, 0,                  // seq 5
        0x39, 0x30, 0, 0,            // pid 12345
        0, 0, 0, 0,                  // nfgenmsg: AF_UNSPEC
        6, 0, 1, 0, b'x', 0, 0, 0,   // NFACCT_NAME "x\0" + padding
        4, 0, 8, 0,                  // NFACCT_PAD (empty, aligns the be64s on some arches)
        12, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3,        // NFACCT_PKTS = 3 (be64)
        12, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x80,  // NFACCT_BYTES = 384 (be64)
        8, 0, 4, 0, 0, 0, 0, 1,      // NFACCT_USE = 1 (ignored)
    ];

    #[test]
    fn golden_kernel_counter_decodes() {
        let c = Counter::from_netlink(KERNEL_COUNTER).unwrap();
        assert_eq!(
            c,
            Counter {
                name: "x".into(),
                packets: 3,
                bytes: 384
            }
        );
        assert_round_trip(KERNEL_COUNTER);
        for len in 0..KERNEL_COUNTER.len() {
            let _ = Counter::from_netlink(&KERNEL_COUNTER[..len]);
        }
        // An NFACCT_PKTS of 4 bytes is an error, not a panic.
        let mut bad = KERNEL_COUNTER.to_vec();
        assert_eq!(&bad[32..36], &[12, 0, 2, 0]);
        bad[32] = 8;
        assert!(Counter::from_netlink(&bad).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(name_attribute("ok").is_ok());
        assert!(name_attribute(&"a".repeat(MAX_NAME_LEN)).is_ok());
        for bad in ["", "a\0", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(matches!(
                name_attribute(bad),
                Err(Error::InvalidCounterName { .. })
            ));
        }
    }
}
