//! A circuit breaker: after the daemon failed, calls skip it for a short interval and answer
//! UNAVAIL at once, so a hung daemon costs one budget, not one per call. Lock-free; state is
//! per process (a forked child inherits it, which is harmless).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::now_ns;

/// Skip interval after the socket is missing or refuses connections (the daemon is down).
pub const DOWN_INTERVAL_MS: u64 = 250;
/// Skip interval after a timeout or a malformed answer (the daemon is sick).
pub const SICK_INTERVAL_MS: u64 = 2_000;

static OPEN_UNTIL_NS: AtomicU64 = AtomicU64::new(0);

/// Whether calls should skip the daemon now.
pub fn is_open() -> bool {
    let until = OPEN_UNTIL_NS.load(Ordering::Relaxed);
    until != 0 && now_ns() < until
}

/// Opens the breaker for `ms` milliseconds.
pub fn trip(ms: u64) {
    OPEN_UNTIL_NS.store(now_ns().saturating_add(ms * 1_000_000), Ordering::Relaxed);
}

/// Closes the breaker after a success.
pub fn reset() {
    if OPEN_UNTIL_NS.load(Ordering::Relaxed) != 0 {
        OPEN_UNTIL_NS.store(0, Ordering::Relaxed);
    }
}
