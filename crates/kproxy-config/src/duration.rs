//! Go `time.Duration` text syntax (`30s`, `1m0s`, `1h2m3.5s`, `500ms`), as used by
//! `metav1.Duration` in the config file and by pflag's duration flags.
//!
//! Parsing follows Go's `time.ParseDuration`: an optional sign, then one or more
//! `<decimal number><unit>` terms with units `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`;
//! a bare `0` is allowed; the total must fit Go's `int64` nanoseconds. Negative
//! durations are rejected: every duration of KubeProxyConfiguration is either
//! required to be `> 0` or `>= 0` upstream.
//!
//! Formatting follows Go's `Duration.String()`: `0s`, `500ms`, `1.5µs`, `30s`, `1m0s`,
//! `24h0m0s`, `1h2m3.5s`.

use std::time::Duration;

/// Why a Go duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]<number><unit>...` (empty, stray characters, `.` alone...).
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit (only a bare `0` may omit it).
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// Larger than Go's maximum duration (2^63-1 ns, about 292 years).
    #[error("duration {0:?} is out of range")]
    OutOfRange(String),
    /// A negative, non-zero duration.
    #[error("negative duration {0:?}: must be greater than or equal to 0")]
    Negative(String),
}

const NANOS_PER_UNIT: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Go's largest `time.Duration`, in nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string (see the module documentation).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        rest = after_int;
        // Fraction part.
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, rest) = after_dot.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            // Also covers a term that starts with neither a digit nor '.'.
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let (unit, after_unit) = rest.split_at(unit_len);
        rest = after_unit;
        let Some(&(_, unit_nanos)) = NANOS_PER_UNIT.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
                input: input.to_owned(),
            });
        };
        let out_of_range = || DurationError::OutOfRange(input.to_owned());
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| out_of_range())?
        };
        let mut term = int.checked_mul(unit_nanos).ok_or_else(out_of_range)?;
        // Like Go, digits of the fraction beyond what can matter are dropped: 18 digits
        // keep `frac * unit_nanos` (< 10^18 * 3.6 * 10^12) far from overflowing u128,
        // and are far finer than a nanosecond of the largest unit.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_digits.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        term += frac * unit_nanos / scale;
        total = total.checked_add(term).ok_or_else(out_of_range)?;
        if total > MAX_NANOS + 1 {
            return Err(out_of_range());
        }
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    if total > MAX_NANOS {
        return Err(DurationError::OutOfRange(input.to_owned()));
    }
    // total <= i64::MAX, so the split cannot overflow.
    Ok(Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
}

/// Formats `value / 10^precision` as `int[.frac]`, dropping trailing zeros of the
/// fraction (and the dot when the fraction is zero), like Go's `fmtFrac`+`fmtInt`.
fn push_fraction(out: &mut String, value: u128, precision: u32) {
    let scale = 10u128.pow(precision);
    out.push_str(&(value / scale).to_string());
    let frac = value % scale;
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = precision as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Formats a duration the way Go's `time.Duration.String()` does.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    let mut out = String::new();
    if nanos < 1_000_000_000 {
        match nanos {
            0 => out.push_str("0s"),
            1..1_000 => {
                out.push_str(&nanos.to_string());
                out.push_str("ns");
            }
            1_000..1_000_000 => {
                push_fraction(&mut out, nanos, 3);
                out.push_str("µs");
            }
            _ => {
                push_fraction(&mut out, nanos, 6);
                out.push_str("ms");
            }
        }
        return out;
    }
    let total_secs = nanos / 1_000_000_000;
    let sub_nanos = nanos % 1_000_000_000;
    let hours = total_secs / 3600;
    let minutes = (total_secs / 60) % 60;
    let seconds = total_secs % 60;
    if hours > 0 {
        out.push_str(&format!("{hours}h{minutes}m"));
    } else if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    push_fraction(&mut out, seconds * 1_000_000_000 + sub_nanos, 9);
    out.push('s');
    out
}

/// Serde adapters for `Duration` fields written as Go duration strings; `null`
/// reads as zero (Go leaves a non-pointer field at its zero value on `null`).
pub mod serde_go {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as a Go duration string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads a Go duration string; `null` reads as zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Duration::ZERO),
            Some(text) => super::parse(&text).map_err(serde::de::Error::custom),
        }
    }

    /// The same for `Option<Duration>` (a Go `*metav1.Duration`): `null` reads as `None`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `Some` as a Go duration string and `None` as `null`.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&super::super::format(*d)),
                None => s.serialize_none(),
            }
        }

        /// Reads a Go duration string; `null` reads as `None`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| super::super::parse(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_syntax() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("+30s", Duration::from_secs(30)),
            ("1m0s", Duration::from_secs(60)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("15m0s", Duration::from_secs(900)),
            ("24h0m0s", Duration::from_secs(86400)),
            ("500ms", ms(500)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("2h22m", Duration::from_secs(2 * 3600 + 22 * 60)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", ms(500)),
            ("5.s", Duration::from_secs(5)),
            ("1.s", Duration::from_secs(1)),
            ("10ns", Duration::from_nanos(10)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("3μs", Duration::from_micros(3)),
            ("1.004ms", Duration::from_micros(1004)),
            ("1s500ms", ms(1500)),
            ("300ms1h", Duration::from_secs(3600) + ms(300)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.1234567891s", Duration::from_nanos(123_456_789)),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(*want), "parse({text:?})");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for text in [
            "", "-", "+", ".", "s", "1", "30", "1.5", "1x", "1sec", "1 s", " 1s", "1s ", "1..5s",
            "--1s", "ms1",
        ] {
            assert!(parse(text).is_err(), "parse({text:?}) should fail");
        }
        assert_eq!(parse("30"), Err(DurationError::MissingUnit("30".into())));
        assert_eq!(
            parse("3d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "3d".into()
            })
        );
        assert_eq!(parse(""), Err(DurationError::Invalid(String::new())));
    }

    #[test]
    fn rejects_negative_and_out_of_range() {
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("-1ns"), Err(DurationError::Negative("-1ns".into())));
        assert_eq!(
            parse("2562047h47m16.854775808s"),
            Err(DurationError::OutOfRange("2562047h47m16.854775808s".into()))
        );
        assert!(matches!(
            parse("9999999999999999999h"),
            Err(DurationError::OutOfRange(_))
        ));
        assert!(matches!(
            parse("99999999999999999999999999999999999999999h"),
            Err(DurationError::OutOfRange(_))
        ));
        assert_eq!(
            parse("-1s").unwrap_err().to_string(),
            "negative duration \"-1s\": must be greater than or equal to 0"
        );
    }

    #[test]
    fn long_fractions_do_not_overflow() {
        // Found by the kube_proxy_config fuzz target: a long fraction of hours.
        assert_eq!(
            parse("1.666666666666666666666666666666666h"),
            Ok(Duration::from_nanos(5_999_999_999_999))
        );
        assert_eq!(
            parse("0.999999999999999999999999999999999999999999h"),
            Ok(Duration::from_nanos(3_599_999_999_999))
        );
        assert!(parse("666666666.666666666666666666666666664256666666425333s3333332h").is_err());
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (Duration::from_micros(1), "1µs"),
            (Duration::from_micros(2_200), "2.2ms"),
            (ms(1), "1ms"),
            (ms(250), "250ms"),
            (ms(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (ms(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(900), "15m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(86400), "24h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_nanos(61_000_000_001), "1m1.000000001s"),
            (
                Duration::from_nanos(i64::MAX as u64),
                "2562047h47m16.854775807s",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(format(*d), *want, "format({d:?})");
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [
            0u64,
            1,
            999,
            1_000,
            1_500,
            999_999,
            1_000_000,
            1_234_567_891,
            59_999_999_999,
            3_600_000_000_000,
            93_784_005_006_007,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse(&format(d)), Ok(d), "{nanos}ns -> {}", format(d));
        }
    }
}
