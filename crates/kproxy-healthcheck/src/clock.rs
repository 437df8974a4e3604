//! Time, injectable so that health transitions can be tested without sleeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of time for [`ProxyHealthServer`](crate::ProxyHealthServer).
///
/// Two readings, as Go's `time.Now()` carries both: the wall clock, which the responses
/// report (`lastUpdated`, `currentTime`), and a monotonic clock, which measures how long an
/// update has been pending, so that a wall-clock step (NTP, a manual change) neither makes a
/// healthy proxy look late nor hides a stuck one.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// The current monotonic time.
    fn monotonic(&self) -> Instant;
}

/// The real clocks: [`SystemTime::now`] and [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to (upstream's `clocktesting.FakeClock`).
///
/// Clones share the same time, so a test keeps one clone and hands another to the server.
#[derive(Clone)]
pub struct FakeClock {
    state: Arc<Mutex<(SystemTime, Instant)>>,
}

impl FakeClock {
    /// A clock standing at wall-clock time `start`.
    pub fn new(start: SystemTime) -> FakeClock {
        FakeClock {
            state: Arc::new(Mutex::new((start, Instant::now()))),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn step(&self, by: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += by;
        state.1 += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn monotonic(&self) -> Instant {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClock")
            .field("now", &self.now())
            .finish()
    }
}

/// Formats a wall-clock time as Go's `time.Time` marshals to JSON (RFC 3339 with up to nine
/// fractional digits, trailing zeros dropped), in UTC; `None` is Go's zero time.
pub(crate) fn go_json_time(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "0001-01-01T00:00:00Z".to_owned();
    };
    let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `day` is in 1..=31 and `month` in 1..=12, so the casts cannot truncate.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(go_json_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_json_time(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(go_json_time(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(
            go_json_time(at(1_700_000_000, 500_000_000)),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(
            go_json_time(at(1_700_000_000, 123_456_789)),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            go_json_time(at(1_700_000_000, 1_000)),
            "2023-11-14T22:13:20.000001Z"
        );
        // A leap day and the turn of a century.
        assert_eq!(go_json_time(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(go_json_time(at(4_107_542_399, 0)), "2100-02-28T23:59:59Z");
        // Before the epoch.
        assert_eq!(
            go_json_time(Some(SystemTime::UNIX_EPOCH - Duration::new(1, 500_000_000))),
            "1969-12-31T23:59:58.5Z"
        );
    }

    #[test]
    fn fake_clock_steps_both_readings() {
        let clock = FakeClock::new(SystemTime::UNIX_EPOCH);
        let other = clock.clone();
        let mono = clock.monotonic();
        other.step(Duration::from_secs(25));
        assert_eq!(
            clock.now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(25)
        );
        assert_eq!(clock.monotonic() - mono, Duration::from_secs(25));
    }
}
