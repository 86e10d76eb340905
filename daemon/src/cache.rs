//! One bounded map of the daemon's cache: an LRU of at most `capacity` keys, each holding a
//! positive answer or a negative one ("no such entry") with its own expiry. Expired slots are
//! kept (until evicted) so later work can serve them stale; [`Lookup`] says which state a key
//! is in, in the manner of kanidm's explicit cache states.

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
    /// Past its TTL: usable only when the directory cannot be asked.
    Expired(Option<V>),
    /// Never seen, or evicted.
    Miss,
}

struct Slot<V> {
    value: Option<V>,
    expires: Instant,
}

/// A bounded, TTL-aware LRU shared between tasks.
pub struct TtlLru<K: Hash + Eq, V> {
    inner: Mutex<LruCache<K, Slot<V>>>,
}

impl<K: Hash + Eq, V: Clone> TtlLru<K, V> {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TtlLru {
            inner: Mutex::new(LruCache::new(cap)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, Slot<V>>> {
        // A panic while holding the lock cannot leave a slot half-written; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &K, now: Instant) -> Lookup<V> {
        match self.lock().get(key) {
            None => Lookup::Miss,
            Some(slot) if now < slot.expires => Lookup::Fresh(slot.value.clone()),
            Some(slot) => Lookup::Expired(slot.value.clone()),
        }
    }

    /// Stores an answer (`None`: known absent) valid for `ttl` from `now`. A zero TTL stores
    /// nothing (negative caching off).
    pub fn put(&self, key: K, value: Option<V>, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        self.lock().put(
            key,
            Slot {
                value,
                expires: now + ttl,
            },
        );
    }

    pub fn remove(&self, key: &K) {
        self.lock().pop(key);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn fresh_expired_and_miss() {
        let c = TtlLru::new(4);
        let t0 = Instant::now();
        c.put("a", Some(1), TTL, t0);
        c.put("b", None, TTL, t0);
        assert_eq!(c.get(&"a", t0), Lookup::Fresh(Some(1)));
        assert_eq!(c.get(&"b", t0), Lookup::Fresh(None));
        assert_eq!(c.get(&"a", t0 + TTL), Lookup::Expired(Some(1)));
        assert_eq!(c.get(&"z", t0), Lookup::Miss);
    }

    #[test]
    fn bounded_least_recently_used_goes_first() {
        let c = TtlLru::new(2);
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
        let c = TtlLru::new(8);
        let t0 = Instant::now();
        c.put("n", None, Duration::ZERO, t0);
        assert_eq!(c.get(&"n", t0), Lookup::Miss);
        c.put("a", Some(1), TTL, t0);
        c.put("b", None, TTL, t0);
        c.put("c", Some(3), Duration::from_secs(1), t0);
        assert_eq!(c.fresh_values(t0 + Duration::from_secs(2)), vec![1]);
    }
}
