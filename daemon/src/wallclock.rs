//! Conversions between the monotonic clock the cache runs on and wall-clock time, which the
//! persisted cache and the shared cache file store.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Converts between monotonic and wall-clock time around one reference point.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub unix_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            now: Instant::now(),
            unix_ms: unix_ms_now(),
        }
    }
    /// `t` in milliseconds since the epoch.
    pub fn to_unix(self, t: Instant) -> u64 {
        if t >= self.now {
            self.unix_ms
                .saturating_add((t - self.now).as_millis() as u64)
        } else {
            self.unix_ms
                .saturating_sub((self.now - t).as_millis() as u64)
        }
    }
    /// Milliseconds since the epoch as an `Instant`.
    pub fn to_instant(self, ms: u64) -> Instant {
        if ms >= self.unix_ms {
            self.now + Duration::from_millis(ms - self.unix_ms)
        } else {
            // Before boot or far in the past: as old as Instant can say.
            let back = Duration::from_millis(self.unix_ms - ms);
            self.now.checked_sub(back).unwrap_or(self.now)
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}
