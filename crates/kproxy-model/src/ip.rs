//! IP address and CIDR parsing as Kubernetes does it.
//!
//! Kubernetes (and kube-proxy) parse addresses "sloppily": an IPv4 literal may carry leading
//! zeros, which are read as *decimal* (`172.30.0.041` is `172.30.0.41`, never octal), and an
//! IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is an IPv4 address. Everything kproxy prints is
//! the canonical form (Go's `net.IP.String()`), which is what Rust's `Display` prints for the
//! values returned here.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses an IP address the way Kubernetes' `ParseIPSloppy` does.
///
/// Returns `None` for anything that is not an address (including surrounding whitespace).
///
/// ```
/// use kproxy_model::ip::parse_ip_sloppy;
/// assert_eq!(parse_ip_sloppy("172.30.0.041").unwrap().to_string(), "172.30.0.41");
/// assert_eq!(parse_ip_sloppy("::ffff:10.0.0.1").unwrap().to_string(), "10.0.0.1");
/// assert_eq!(parse_ip_sloppy("2001:DB8::1").unwrap().to_string(), "2001:db8::1");
/// assert!(parse_ip_sloppy("10.0.0.256").is_none());
/// ```
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        // IPv6 (possibly with an embedded IPv4 part). Rust's parser rejects leading zeros in
        // the embedded dotted quad; normalise that part first.
        let parsed = match s.rfind(':') {
            Some(i) if s[i + 1..].contains('.') => {
                let v4 = parse_ipv4_sloppy(&s[i + 1..])?;
                format!("{}{}", &s[..=i], v4)
                    .parse::<std::net::Ipv6Addr>()
                    .ok()?
            }
            _ => s.parse::<std::net::Ipv6Addr>().ok()?,
        };
        return Some(IpAddr::V6(parsed).to_canonical());
    }
    parse_ipv4_sloppy(s).map(IpAddr::V4)
}

fn parse_ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = part.trim_start_matches('0');
        if digits.len() > 3 {
            return None;
        }
        let value: u16 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Parses a CIDR the way Kubernetes' `ParseCIDRSloppy` does and returns the *network*
/// (host bits cleared), as Go's `IPNet.String()` would print it.
///
/// ```
/// use kproxy_model::ip::parse_cidr_sloppy;
/// assert_eq!(parse_cidr_sloppy("203.0.113.000/025").unwrap().to_string(), "203.0.113.0/25");
/// assert_eq!(parse_cidr_sloppy("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
/// assert!(parse_cidr_sloppy("10.0.0.0").is_none());
/// assert!(parse_cidr_sloppy("10.0.0.0/33").is_none());
/// ```
pub fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = prefix.trim_start_matches('0');
    if digits.len() > 3 {
        return None;
    }
    let prefix: u8 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    // A CIDR keeps the family it was written in: `::ffff:1.2.3.0/120` is an IPv6 network.
    let ip = if addr.contains(':') {
        let v4_tail = addr.rfind(':').filter(|&i| addr[i + 1..].contains('.'));
        let v6: std::net::Ipv6Addr = match v4_tail {
            Some(i) => format!("{}{}", &addr[..=i], parse_ipv4_sloppy(&addr[i + 1..])?)
                .parse()
                .ok()?,
            None => addr.parse().ok()?,
        };
        IpAddr::V6(v6)
    } else {
        IpAddr::V4(parse_ipv4_sloppy(addr)?)
    };
    IpNet::new(ip, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ipv4() {
        for (input, want) in [
            ("1.2.3.4", Some("1.2.3.4")),
            ("001.002.003.004", Some("1.2.3.4")),
            ("0.0.0.0", Some("0.0.0.0")),
            ("00000000010.0.0.1", Some("10.0.0.1")),
            ("255.255.255.255", Some("255.255.255.255")),
            ("256.1.1.1", None),
            ("1.2.3", None),
            ("1.2.3.4.5", None),
            ("1..2.3", None),
            ("+1.2.3.4", None),
            (" 1.2.3.4", None),
            ("1.2.3.4 ", None),
            ("", None),
            ("0x1.2.3.4", None),
        ] {
            assert_eq!(
                parse_ip_sloppy(input).map(|ip| ip.to_string()).as_deref(),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn sloppy_ipv6() {
        for (input, want) in [
            ("fd00::1", Some("fd00::1")),
            ("FD00:0:0:0:0:0:0:1", Some("fd00::1")),
            ("::ffff:1.2.3.004", Some("1.2.3.4")),
            ("64:ff9b::1.2.3.4", Some("64:ff9b::102:304")),
            ("::", Some("::")),
            ("fd00::1::2", None),
            ("fd00::1%eth0", None),
            ("[fd00::1]", None),
        ] {
            assert_eq!(
                parse_ip_sloppy(input).map(|ip| ip.to_string()).as_deref(),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn sloppy_cidr() {
        for (input, want) in [
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("010.000.0.1/08", Some("10.0.0.0/8")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("fd00:10::/64", Some("fd00:10::/64")),
            ("fd00:10::5/64", Some("fd00:10::/64")),
            ("::/0", Some("::/0")),
            ("1.2.3.4/32", Some("1.2.3.4/32")),
            ("1.2.3.4/33", None),
            ("fd00::/129", None),
            ("1.2.3.4/", None),
            ("1.2.3.4", None),
            ("1.2.3.4/-1", None),
        ] {
            assert_eq!(
                parse_cidr_sloppy(input).map(|n| n.to_string()).as_deref(),
                want,
                "{input:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn canonical_ips_round_trip(ip in proptest::prelude::any::<IpAddr>()) {
            let ip = ip.to_canonical();
            proptest::prop_assert_eq!(parse_ip_sloppy(&ip.to_string()), Some(ip));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_ip_sloppy(&s);
            let _ = parse_cidr_sloppy(&s);
        }
    }
}
