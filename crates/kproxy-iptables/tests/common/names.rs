//! Chain names computed independently of the code under test, from the spec's formula
//! (§2.2): `hash16(s)` = the first 16 characters of RFC 4648 base32 (upper case) of
//! SHA-256(s); `KUBE-SVC/SVL/EXT/FW-` + hash16(N + p), `KUBE-SEP-` + hash16(N + p + EP).

use sha2::{Digest, Sha256};

pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    while !out.len().is_multiple_of(8) {
        out.push('=');
    }
    out
}

pub fn hash16(s: &str) -> String {
    base32(&Sha256::digest(s.as_bytes()))[..16].to_owned()
}

/// `n` is the service port name (`ns/name[:port]`), `p` the lower-case protocol.
pub fn svc(n: &str, p: &str) -> String {
    format!("KUBE-SVC-{}", hash16(&format!("{n}{p}")))
}

pub fn svl(n: &str, p: &str) -> String {
    format!("KUBE-SVL-{}", hash16(&format!("{n}{p}")))
}

pub fn ext(n: &str, p: &str) -> String {
    format!("KUBE-EXT-{}", hash16(&format!("{n}{p}")))
}

pub fn fw(n: &str, p: &str) -> String {
    format!("KUBE-FW-{}", hash16(&format!("{n}{p}")))
}

/// `ep` is the endpoint string (`ip:port`, `[ip]:port`).
pub fn sep(n: &str, p: &str, ep: &str) -> String {
    format!("KUBE-SEP-{}", hash16(&format!("{n}{p}{ep}")))
}
