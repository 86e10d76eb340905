//! Health of the configured directory servers, in `[ldap] uri` order. A server that fails
//! (connect, bind, I/O or timeout) is skipped for a backoff that doubles with each consecutive
//! failure, up to a cap, with jitter so that a fleet of daemons does not retry in step. While
//! every server is in backoff, asking costs nothing: the caller learns at once that the
//! directory is unreachable and serves from cache.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First backoff after a failure.
const BASE_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Default)]
struct State {
    /// Failures since the last success (drives the backoff).
    failures: u32,
    /// Failures since start (metrics).
    errors_total: u64,
    down_until: Option<Instant>,
    last_error: Option<String>,
}

/// What status reports about one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    pub uri: String,
    pub failures: u32,
    pub errors_total: u64,
    pub retry_in: Option<Duration>,
    pub last_error: Option<String>,
}

pub struct Servers {
    uris: Vec<String>,
    max_backoff: Duration,
    state: Mutex<Vec<State>>,
}

/// A small xorshift for jitter (no cryptographic needs; seeded per process).
fn jitter_fraction() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut x = SEED.load(Ordering::Relaxed);
    if x == 0 {
        x = u64::from(std::process::id())
            ^ Instant::now().elapsed().subsec_nanos() as u64
            ^ 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    SEED.store(x, Ordering::Relaxed);
    (x % 10_000) as f64 / 10_000.0
}

impl Servers {
    pub fn new(uris: Vec<String>, max_backoff: Duration) -> Servers {
        let state = Mutex::new(vec![State::default(); uris.len()]);
        Servers {
            uris,
            max_backoff,
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<State>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn uri(&self, i: usize) -> &str {
        &self.uris[i]
    }

    pub fn len(&self) -> usize {
        self.uris.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    /// Servers that may be tried now, in preference order.
    pub fn available(&self, now: Instant) -> Vec<usize> {
        let st = self.lock();
        (0..self.uris.len())
            .filter(|&i| st[i].down_until.is_none_or(|t| now >= t))
            .collect()
    }

    /// How long until the first server leaves its backoff (zero when one is available).
    pub fn next_retry(&self, now: Instant) -> Duration {
        let st = self.lock();
        st.iter()
            .map(|s| {
                s.down_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(Duration::ZERO)
    }

    /// Records a failure; returns the backoff chosen.
    pub fn failed(&self, i: usize, error: &str, now: Instant) -> Duration {
        let mut st = self.lock();
        let s = &mut st[i];
        s.failures = s.failures.saturating_add(1);
        s.errors_total += 1;
        let exp = BASE_BACKOFF.saturating_mul(1u32 << (s.failures - 1).min(16));
        let capped = exp.min(self.max_backoff);
        // Jitter: between 75% and 125% of the capped value.
        let backoff = capped.mul_f64(0.75 + 0.5 * jitter_fraction());
        s.down_until = Some(now + backoff);
        s.last_error = Some(error.to_owned());
        backoff
    }

    /// Records a success: the server is healthy again.
    /// How many times server `i` has failed since start: taken before connecting, it tells
    /// [`Servers::succeeded_unless_failed_since`] whether a failure came in meanwhile.
    pub fn failures_so_far(&self, i: usize) -> u64 {
        self.lock()[i].errors_total
    }

    /// Records a success of server `i` (as [`Servers::succeeded`]) unless it failed since
    /// [`Servers::failures_so_far`] returned `seen`: a connection that opened while another
    /// operation on the server failed does not end that failure's backoff. Whether it did.
    pub fn succeeded_unless_failed_since(&self, i: usize, seen: u64) -> bool {
        let mut st = self.lock();
        if st[i].errors_total != seen {
            return false;
        }
        st[i] = State {
            errors_total: seen,
            ..State::default()
        };
        true
    }

    pub fn succeeded(&self, i: usize) {
        let mut st = self.lock();
        st[i] = State {
            errors_total: st[i].errors_total,
            ..State::default()
        };
    }

    pub fn health(&self, now: Instant) -> Vec<ServerHealth> {
        let st = self.lock();
        self.uris
            .iter()
            .zip(st.iter())
            .map(|(uri, s)| ServerHealth {
                uri: uri.clone(),
                failures: s.failures,
                errors_total: s.errors_total,
                retry_in: s
                    .down_until
                    .map(|t| t.saturating_duration_since(now))
                    .filter(|d| !d.is_zero()),
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Servers {
        Servers::new(
            vec!["ldap://a".into(), "ldap://b".into()],
            Duration::from_secs(4),
        )
    }

    #[test]
    fn failed_servers_are_skipped_until_their_backoff_ends() {
        let s = servers();
        let t0 = Instant::now();
        assert_eq!(s.available(t0), vec![0, 1]);
        let b = s.failed(0, "refused", t0);
        assert!(
            b >= Duration::from_millis(187) && b <= Duration::from_millis(313),
            "{b:?}"
        );
        assert_eq!(s.available(t0), vec![1]);
        assert_eq!(s.available(t0 + b), vec![0, 1]);
        s.succeeded(0);
        assert_eq!(s.available(t0), vec![0, 1]);
    }

    #[test]
    fn a_connection_that_opened_during_a_failure_does_not_end_its_backoff() {
        let s = servers();
        let t0 = Instant::now();
        let seen = s.failures_so_far(0);
        s.failed(0, "busy", t0);
        assert!(
            !s.succeeded_unless_failed_since(0, seen),
            "failed meanwhile"
        );
        assert_eq!(s.available(t0), vec![1], "still in backoff");
        let seen = s.failures_so_far(0);
        assert!(s.succeeded_unless_failed_since(0, seen));
        assert_eq!(s.available(t0), vec![0, 1]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let s = servers();
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for n in 1..=10 {
            let b = s.failed(1, "timeout", t0);
            assert!(b <= Duration::from_secs(5), "cap with jitter: {b:?}");
            if n <= 3 {
                assert!(b > last.mul_f64(1.1), "grows: {last:?} -> {b:?}");
            }
            last = b;
        }
        assert!(last >= Duration::from_secs(3), "reaches the cap: {last:?}");
        assert_eq!(s.health(t0)[1].failures, 10);
        assert_eq!(s.health(t0)[1].last_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn all_down_means_nothing_to_try_and_a_known_wait() {
        let s = servers();
        let t0 = Instant::now();
        s.failed(0, "x", t0);
        s.failed(1, "x", t0);
        assert!(s.available(t0).is_empty());
        assert!(s.next_retry(t0) > Duration::ZERO);
    }
}
