//! The clocks the module reads (vDSO, no syscall): monotonic nanoseconds and deadlines built
//! on them, and whole seconds of a coarse clock for the cache file's expiries and checks.

fn read(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// Whole seconds on `clock` (e.g. CLOCK_REALTIME_COARSE).
pub fn secs(clock: libc::clockid_t) -> u64 {
    u64::try_from(read(clock).tv_sec).unwrap_or(0)
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let ts = read(libc::CLOCK_MONOTONIC);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A point in time by which a call must be done.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_ms(ms: u64) -> Deadline {
        Deadline(now_ns().saturating_add(ms.saturating_mul(1_000_000)))
    }

    /// Milliseconds left for `poll`, rounded up; 0 when past.
    pub fn remaining_ms(&self) -> i32 {
        let left = self.0.saturating_sub(now_ns());
        left.div_ceil(1_000_000).min(i32::MAX as u64) as i32
    }

    pub fn passed(&self) -> bool {
        now_ns() >= self.0
    }
}
