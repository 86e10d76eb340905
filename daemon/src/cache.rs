//! One bounded map of the daemon's cache: an LRU of at most `capacity` keys, each holding a
//! positive answer or a negative one ("no such entry") with its own expiry. Expired slots are
//! kept (until evicted, or `max_stale` past expiry) so they can be served while the directory
//! is away. [`Lookup`] names the state a key is in, in the manner of kanidm's cache states.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// The state of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    /// Within its TTL: `Some` found, `None` known absent.
    Fresh(Option<V>),
    /// Within its TTL but past the refresh-ahead point: serve it, refresh in the background.
    Due(Option<V>),
    /// Past its TTL, within `max_stale`: usable only when the directory cannot answer.
    Expired(Option<V>),
    /// Never seen, evicted, or too stale to serve.
    Miss,
}

struct Slot<V> {
    value: Option<V>,
    refresh_at: Instant,
    expires: Instant,
}

/// One entry as the cache file publisher sees it: key, value (`None`: known absent), and the
/// refresh-ahead point until which a reader may use it.
pub type Publishable<K, V> = (K, Option<V>, Instant);

/// One entry as persistence sees it.
pub struct Stored<K, V> {
    pub key: K,
    pub value: Option<V>,
    pub expires: Instant,
}

/// A bounded, TTL-aware LRU shared between tasks.
pub struct TtlLru<K: Hash + Eq, V> {
    inner: Mutex<LruCache<K, Slot<V>>>,
    /// Fraction of the TTL after which a hit is `Due` (1.0: never).
    refresh_ahead: f64,
    max_stale: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlLru<K, V> {
    /// `refresh_ahead_percent` 0 disables refresh-ahead.
    pub fn new(capacity: usize, refresh_ahead_percent: u8, max_stale: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let refresh_ahead = if refresh_ahead_percent == 0 {
            1.0
        } else {
            f64::from(refresh_ahead_percent.min(99)) / 100.0
        };
        TtlLru {
            inner: Mutex::new(LruCache::new(cap)),
            refresh_ahead,
            max_stale,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, Slot<V>>> {
        // A panic while holding the lock cannot leave a slot half-written; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &K, now: Instant) -> Lookup<V> {
        let mut map = self.lock();
        let Some(slot) = map.get(key) else {
            return Lookup::Miss;
        };
        if now < slot.refresh_at {
            Lookup::Fresh(slot.value.clone())
        } else if now < slot.expires {
            Lookup::Due(slot.value.clone())
        } else if now.saturating_duration_since(slot.expires) <= self.max_stale {
            Lookup::Expired(slot.value.clone())
        } else {
            map.pop(key);
            Lookup::Miss
        }
    }

    /// The state of `key` without changing its LRU position: `fresh`, `due`, `expired` or
    /// `too-stale`, its value (`None`: absent), and its expiry.
    pub fn peek(&self, key: &K, now: Instant) -> Option<(&'static str, Option<V>, Instant)> {
        let map = self.lock();
        let slot = map.peek(key)?;
        let state = if now < slot.refresh_at {
            "fresh"
        } else if now < slot.expires {
            "due"
        } else if now.saturating_duration_since(slot.expires) <= self.max_stale {
            "expired"
        } else {
            "too-stale"
        };
        Some((state, slot.value.clone(), slot.expires))
    }

    /// Stores an answer (`None`: known absent) valid for `ttl` from `now`. A zero TTL stores
    /// nothing (negative caching off).
    pub fn put(&self, key: K, value: Option<V>, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let refresh_at = now + ttl.mul_f64(self.refresh_ahead);
        self.lock().put(
            key,
            Slot {
                value,
                refresh_at,
                expires: now + ttl,
            },
        );
    }

    /// Stores an answer with a given expiry (a persisted entry being loaded).
    pub fn restore(&self, key: K, value: Option<V>, expires: Instant) {
        self.lock().put(
            key,
            Slot {
                value,
                refresh_at: expires,
                expires,
            },
        );
    }

    /// Removes `key`; returns what it held (`Some(None)`: a negative entry).
    pub fn remove(&self, key: &K) -> Option<Option<V>> {
        self.lock().pop(key).map(|s| s.value)
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every positive value still within its TTL, most recently used first.
    pub fn fresh_values(&self, now: Instant) -> Vec<V> {
        self.lock()
            .iter()
            .filter(|(_, s)| now < s.expires)
            .filter_map(|(_, s)| s.value.clone())
            .collect()
    }

    /// Entries past their TTL (served stale while the directory is away).
    pub fn expired_count(&self, now: Instant) -> usize {
        self.lock().iter().filter(|(_, s)| now >= s.expires).count()
    }

    /// Every entry before its refresh-ahead point (answers a reader may take without asking),
    /// most recently used first, with that point.
    pub fn publishable(&self, now: Instant) -> Vec<Publishable<K, V>> {
        self.lock()
            .iter()
            .filter(|(_, s)| now < s.refresh_at)
            .map(|(k, s)| (k.clone(), s.value.clone(), s.refresh_at))
            .collect()
    }

    /// Every entry still servable (fresh or within `max_stale`), least recently used first, so
    /// restoring them in order rebuilds the same LRU order.
    pub fn snapshot(&self, now: Instant) -> Vec<Stored<K, V>> {
        let map = self.lock();
        let mut v: Vec<Stored<K, V>> = map
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.expires) <= self.max_stale)
            .map(|(k, s)| Stored {
                key: k.clone(),
                value: s.value.clone(),
                expires: s.expires,
            })
            .collect();
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const STALE: Duration = Duration::from_secs(100);

    fn cache<K: Hash + Eq + Clone, V: Clone>(cap: usize) -> TtlLru<K, V> {
        TtlLru::new(cap, 75, STALE)
    }

    #[test]
    fn fresh_due_expired_too_stale_and_miss() {
        let c = cache(4);
        let t0 = Instant::now();
        c.put("a", Some(1), TTL, t0);
        c.put("b", None, TTL, t0);
        assert_eq!(c.get(&"a", t0), Lookup::Fresh(Some(1)));
        assert_eq!(c.get(&"b", t0), Lookup::Fresh(None));
        assert_eq!(
            c.get(&"a", t0 + Duration::from_millis(7_600)),
            Lookup::Due(Some(1))
        );
        assert_eq!(c.get(&"a", t0 + TTL), Lookup::Expired(Some(1)));
        assert_eq!(c.get(&"a", t0 + TTL + STALE), Lookup::Expired(Some(1)));
        assert_eq!(
            c.get(&"a", t0 + TTL + STALE + Duration::from_secs(1)),
            Lookup::Miss
        );
        assert_eq!(c.len(), 1, "a too-stale entry is dropped");
        assert_eq!(c.get(&"z", t0), Lookup::Miss);
    }

    #[test]
    fn refresh_ahead_can_be_disabled() {
        let c: TtlLru<&str, i32> = TtlLru::new(4, 0, STALE);
        let t0 = Instant::now();
        c.put("a", Some(1), TTL, t0);
        assert_eq!(
            c.get(&"a", t0 + TTL - Duration::from_millis(1)),
            Lookup::Fresh(Some(1))
        );
    }

    #[test]
    fn bounded_least_recently_used_goes_first() {
        let c = cache(2);
        let t0 = Instant::now();
        c.put(1, Some(1), TTL, t0);
        c.put(2, Some(2), TTL, t0);
        let _ = c.get(&1, t0);
        c.put(3, Some(3), TTL, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&2, t0), Lookup::Miss);
        assert_eq!(c.get(&1, t0), Lookup::Fresh(Some(1)));
    }

    #[test]
    fn zero_ttl_stores_nothing_and_listing_skips_negative_and_expired() {
        let c = cache(8);
        let t0 = Instant::now();
        c.put("n", None, Duration::ZERO, t0);
        assert_eq!(c.get(&"n", t0), Lookup::Miss);
        c.put("a", Some(1), TTL, t0);
        c.put("b", None, TTL, t0);
        c.put("c", Some(3), Duration::from_secs(1), t0);
        assert_eq!(c.fresh_values(t0 + Duration::from_secs(2)), vec![1]);
        assert_eq!(c.expired_count(t0 + Duration::from_secs(2)), 1);
    }

    #[test]
    fn publishable_entries_end_at_their_refresh_point_most_recent_first() {
        let c = cache(8);
        let t0 = Instant::now();
        c.put("a", Some(1), TTL, t0);
        c.put("b", None, TTL, t0);
        let keys: Vec<_> = c
            .publishable(t0)
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        assert_eq!(keys, vec![("b", None), ("a", Some(1))]);
        assert_eq!(
            c.publishable(t0).first().map(|e| e.2),
            Some(t0 + TTL.mul_f64(0.75))
        );
        assert!(
            c.publishable(t0 + Duration::from_millis(7_600)).is_empty(),
            "due: not published"
        );
    }

    #[test]
    fn snapshot_and_restore_keep_values_expiry_and_order() {
        let c = cache(8);
        let t0 = Instant::now();
        c.put("old", Some(1), TTL, t0);
        c.put("new", Some(2), TTL, t0);
        c.put("gone", None, Duration::from_secs(1), t0);
        let later = t0 + Duration::from_secs(1) + STALE + Duration::from_secs(1);
        assert_eq!(
            c.snapshot(later).len(),
            2,
            "too-stale entries are not saved"
        );
        let snap = c.snapshot(t0);
        let d = cache(2);
        for s in snap {
            d.restore(s.key, s.value, s.expires);
        }
        assert_eq!(d.get(&"new", t0), Lookup::Fresh(Some(2)));
        assert_eq!(d.get(&"gone", t0), Lookup::Fresh(None));
        assert_eq!(
            d.get(&"old", t0),
            Lookup::Miss,
            "capacity 2 kept the most recent"
        );
    }
}
