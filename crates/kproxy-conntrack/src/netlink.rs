//! The request/answer plumbing shared by the conntrack and nfacct clients: one
//! `NETLINK_NETFILTER` socket, sequence numbers, multi-part dumps, acks and kernel errors.
//!
//! Framing (all integers in the netlink header are in host byte order):
//!
//! ```text
//! nlmsghdr   u32 length (header included) | u16 type | u16 flags | u32 seq | u32 port id
//! nfgenmsg   u8 family (AF_INET, AF_INET6, AF_UNSPEC) | u8 version (0) | be16 resource id (0)
//! attributes u16 length | u16 type (| NLA_F_NESTED) | value, each padded to 4 bytes
//! ```
//!
//! The type of a netfilter message is `subsystem << 8 | message`. A dump request carries
//! `NLM_F_DUMP` and is answered by messages flagged `NLM_F_MULTIPART`, ended by `NLMSG_DONE`
//! (whose payload is an `i32` error code, 0 on success). Any other request here carries
//! `NLM_F_ACK` and is answered by zero or more data messages and then one `NLMSG_ERROR` whose
//! code is 0 (an ack) or a negative errno.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::NetfilterMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::error::{Error, Result};

/// Size of the receive buffer. The kernel caps the datagrams of a dump at 32 KiB
/// (`SKB_WITH_OVERHEAD(32768)` in `netlink_recvmsg`), so 64 KiB never truncates.
const RECV_BUFFER_LEN: usize = 64 * 1024;

/// How long one `recv` waits for the kernel before giving up.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// `NLMSG_ALIGN`: netlink messages in one datagram start at 4-byte boundaries.
const fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}

/// A `NETLINK_NETFILTER` socket bound to the network namespace of the thread that created it.
#[derive(Debug)]
pub(crate) struct NfnlSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    timeout: Duration,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The kernel flagged at least one message of a dump with `NLM_F_DUMP_INTR`.
    pub(crate) interrupted: bool,
}

impl NfnlSocket {
    /// Opens a socket in the calling thread's network namespace and connects it to the kernel.
    pub(crate) fn new() -> Result<NfnlSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|source| Error::Socket {
            operation: "create NETLINK_NETFILTER socket",
            source,
        })?;
        socket.bind_auto().map_err(|source| Error::Socket {
            operation: "bind netlink socket",
            source,
        })?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|source| Error::Socket {
                operation: "connect netlink socket to the kernel",
                source,
            })?;
        // Errors then echo only the request's header, not the whole request.
        socket.set_cap_ack(true).map_err(|source| Error::Socket {
            operation: "set NETLINK_CAP_ACK",
            source,
        })?;
        let mut sock = NfnlSocket {
            socket,
            // Any start works; replies are matched on it.
            seq: std::process::id().wrapping_mul(2_654_435_761),
            buf: Vec::with_capacity(RECV_BUFFER_LEN),
            timeout: DEFAULT_TIMEOUT,
        };
        sock.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(sock)
    }

    /// Sets how long one receive waits for the kernel (at least 1 ms).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        setsockopt(
            &self.socket.as_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::milliseconds(ms),
        )
        .map_err(|errno| Error::Socket {
            operation: "set SO_RCVTIMEO",
            source: errno.into(),
        })?;
        self.timeout = timeout;
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sends `message` and reads the kernel's answer, handing every data message to
    /// `on_message`.
    ///
    /// `flags` is `NLM_F_DUMP` for a dump (ended by `NLMSG_DONE`); otherwise `NLM_F_ACK` is
    /// added and the answer ends with the ack or error. A negative code from the kernel is
    /// [`Error::Kernel`]. Messages with another sequence number (late answers to an earlier
    /// request that timed out) are skipped.
    pub(crate) fn request(
        &mut self,
        operation: &'static str,
        message: NetfilterMessage,
        flags: u16,
        mut on_message: impl FnMut(NetfilterMessage) -> Result<()>,
    ) -> Result<Outcome> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let flags = if dump { flags } else { flags | NLM_F_ACK };
        let seq = self.next_seq();
        let bytes = encode_request(message, flags, seq);
        self.send(operation, &bytes)?;

        let mut outcome = Outcome { interrupted: false };
        // The first error seen while handling data messages; the rest of the answer is still
        // read so the socket stays in step.
        let mut deferred: Option<Error> = None;
        loop {
            let len = self.recv(operation)?;
            let datagram = &self.buf[..len];
            for raw in split_messages(datagram) {
                let raw = raw?;
                let msg = decode_message(raw)?;
                if msg.header.sequence_number != seq {
                    continue;
                }
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    outcome.interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => {
                        // An ack ends a plain request; an error ends either kind.
                        if let Some(code) = err.code {
                            return Err(kernel_error(operation, code.get()));
                        }
                        if !dump {
                            return deferred.map_or(Ok(outcome), Err);
                        }
                    }
                    NetlinkPayload::Done(done) => {
                        if done.code != 0 {
                            return Err(kernel_error(operation, done.code));
                        }
                        if dump {
                            return deferred.map_or(Ok(outcome), Err);
                        }
                    }
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(Error::Decode {
                            what: "netlink answer",
                            reason: "the kernel reported an overrun (NLMSG_OVERRUN)".into(),
                        });
                    }
                    NetlinkPayload::InnerMessage(inner) if deferred.is_none() => {
                        deferred = on_message(inner).err();
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, operation: &'static str, bytes: &[u8]) -> Result<()> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(Error::Socket {
                        operation,
                        source: std::io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Error::Socket { operation, source }),
            }
        }
    }

    /// Receives one datagram into `self.buf` and returns its length.
    fn recv(&mut self, operation: &'static str) -> Result<usize> {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    return Err(Error::Truncated {
                        len: n,
                        capacity: self.buf.capacity(),
                    });
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::Timeout {
                        operation,
                        timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                Err(source) => return Err(Error::Socket { operation, source }),
            }
        }
    }
}

/// An [`Error::Kernel`] for a negative (or, defensively, positive) errno from the kernel.
fn kernel_error(operation: &'static str, code: i32) -> Error {
    Error::Kernel {
        operation,
        source: std::io::Error::from_raw_os_error(code.checked_abs().unwrap_or(i32::MAX)),
    }
}

/// Serializes a request: netlink header (flags `NLM_F_REQUEST | flags`, port id 0, which the
/// kernel reads as "the sender"), netfilter header and attributes.
pub(crate) fn encode_request(message: NetfilterMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Splits a datagram into its netlink messages, checking every length field; a bad length
/// ends the iteration with an error.
pub(crate) fn split_messages(datagram: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(len_bytes) = rest.first_chunk::<4>() else {
            let reason = format!("{} trailing bytes after the last message", rest.len());
            rest = &[];
            return Some(Err(Error::Decode {
                what: "netlink datagram",
                reason,
            }));
        };
        let len = u32::from_ne_bytes(*len_bytes) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            let reason = format!(
                "message length field {len} with {} bytes left (a header is {NLMSG_HDRLEN})",
                rest.len()
            );
            rest = &[];
            return Some(Err(Error::Decode {
                what: "netlink datagram",
                reason,
            }));
        }
        let (msg, after) = rest.split_at(len);
        // The last message may lack its padding.
        rest = after.get(nlmsg_align(len) - len..).unwrap_or(&[]);
        Some(Ok(msg))
    })
}

/// `NLMSG_MIN_TYPE`: types below it are netlink control messages (`NLMSG_NOOP`,
/// `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_OVERRUN`).
const NLMSG_MIN_TYPE: u16 = 0x10;
/// `NFNL_SUBSYS_CTNETLINK` (include/uapi/linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_CTNETLINK: u8 = 1;
/// `NFNL_SUBSYS_ACCT`.
const NFNL_SUBSYS_ACCT: u8 = 7;

/// Decodes one complete netlink message (header included).
///
/// Only control messages and the two subsystems this crate talks to are decoded. Anything
/// else is refused before it reaches netlink-packet-netfilter, whose parsers for other
/// subsystems (nftables) can panic on malformed input (found by the `conntrack_flow` fuzz
/// target).
pub(crate) fn decode_message(raw: &[u8]) -> Result<NetlinkMessage<NetfilterMessage>> {
    if let Some(ty) = raw.get(4..6) {
        let ty = u16::from_ne_bytes([ty[0], ty[1]]);
        let subsys = (ty >> 8) as u8;
        if ty >= NLMSG_MIN_TYPE && subsys != NFNL_SUBSYS_CTNETLINK && subsys != NFNL_SUBSYS_ACCT {
            return Err(Error::Decode {
                what: "netlink message",
                reason: format!("message type {ty:#06x} is not from ctnetlink or nfacct"),
            });
        }
    }
    NetlinkMessage::<NetfilterMessage>::deserialize(raw).map_err(|e| Error::Decode {
        what: "netlink message",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, ty: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&[0; 10]);
        v
    }

    #[test]
    fn split_handles_padding_and_bad_lengths() {
        // Two messages: 18 bytes (padded to 20) and 16 bytes.
        let mut d = header(18, 3);
        d.extend_from_slice(&[1, 2, 0, 0]);
        d.extend_from_slice(&header(16, 3));
        let msgs: Vec<_> = split_messages(&d).collect::<Result<_>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].len(), 18);
        assert_eq!(msgs[1].len(), 16);

        // Last message without its padding.
        let mut d = header(18, 3);
        d.extend_from_slice(&[1, 2]);
        assert_eq!(split_messages(&d).count(), 1);

        for bad in [header(15, 3), header(17, 3), vec![1, 2, 3]] {
            let r: Vec<_> = split_messages(&bad).collect();
            assert_eq!(r.len(), 1);
            assert!(matches!(r[0], Err(Error::Decode { .. })), "{bad:?}");
        }
        assert_eq!(split_messages(&[]).count(), 0);
    }

    #[test]
    fn other_subsystems_are_refused_undecoded() {
        for crash in FUZZ_CRASHES {
            assert!(matches!(decode_message(crash), Err(Error::Decode { .. })));
        }
        // ctnetlink, nfacct and control messages still decode.
        for ty in [0x0100u16, 0x0700, 3] {
            let mut m = header(20, ty);
            m.extend_from_slice(&[0, 0, 0, 0]);
            assert!(decode_message(&m).is_ok(), "{ty:#x}");
        }
    }

    /// Inputs the fuzz target found (nftables set messages that crash the upstream parser).
    const FUZZ_CRASHES: &[&[u8]] = &[
        &[
            51, 0, 0, 0, 9, 10, 0, 0, 5, 24, 0, 5, 28, 0, 2, 128, 5, 0, 1, 0, 6, 0, 17, 0, 2, 0, 0,
            0, 20, 233, 0, 0, 6, 0, 2, 0, 10, 0, 0, 5, 28, 0, 96, 1, 10, 28, 0, 2, 128, 177, 64, 0,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 5,
        ],
        &[
            0x33, 0x00, 0x00, 0x00, 0x09, 0x0a, 0x00, 0x00, 0x05, 0x18, 0x00, 0x05, 0x1c, 0x11,
            0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x05, 0x00, 0x11, 0x00, 0x01, 0x00, 0x11, 0x00,
            0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x14, 0x25, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
            0x0a, 0x00, 0x00, 0x05, 0x1c, 0x00, 0x60, 0x01, 0x0a, 0x1c, 0x00, 0x02, 0x80, 0x00,
            0x40, 0x00, 0x00, 0x00, 0x00, 0x05,
        ],
    ];

    #[test]
    fn kernel_error_keeps_errno() {
        let e = kernel_error("x", -libc::ENOENT);
        match e {
            Error::Kernel { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOENT)),
            other => panic!("{other:?}"),
        }
        // i32::MIN has no absolute value; must not panic.
        let _ = kernel_error("x", i32::MIN);
    }
}
