//! One bounded map of the daemon's cache: positive answers in an LRU bounded by entry count
//! and by bytes (each value says what it weighs, [`Weigh`]), and negative answers ("no such
//! entry") in an LRU of their own, so misses can never evict found entries. Each slot has its
//! own expiry. Expired slots are kept (until evicted, or `max_stale` past expiry) so they can
//! be served while the directory is away. [`Lookup`] names the state a key is in, in the
//! manner of kanidm's cache states.

use std::hash::Hash;
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

/// What a cached value (or key) costs in memory, in bytes: an estimate that counts heap
/// data, so a 10,000-member group weighs what it weighs.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for String {
    fn weight(&self) -> usize {
        std::mem::size_of::<String>() + self.capacity()
    }
}

impl Weigh for u32 {
    fn weight(&self) -> usize {
        4
    }
}

/// Bookkeeping of one slot in the LRU (hash bucket, list links), on top of key and value.
const SLOT_OVERHEAD: usize = 64;

/// 32 bytes besides the key: one of these per cached key.
struct Slot<V> {
    value: Option<V>,
    expires: Instant,
    /// The refresh-ahead point, this many milliseconds before `expires`.
    refresh_before_ms: u32,
    /// What this slot was charged (key + value + overhead).
    weight: u32,
}

impl<V> Slot<V> {
    fn new(value: Option<V>, refresh_at: Instant, expires: Instant, weight: usize) -> Slot<V> {
        let before = expires.saturating_duration_since(refresh_at).as_millis();
        Slot {
            value,
            expires,
            refresh_before_ms: u32::try_from(before).unwrap_or(u32::MAX),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    fn refresh_at(&self) -> Instant {
        self.expires
            .checked_sub(Duration::from_millis(u64::from(self.refresh_before_ms)))
            .unwrap_or(self.expires)
    }
}

/// One entry as persistence sees it.
pub struct Stored<K, V> {
    pub key: K,
    pub value: Option<V>,
    pub expires: Instant,
}

/// One entry as copied out of a map for publication or saving. The map's lock is held only
/// while rows are made, and every lookup needs it: so a found entry is its shared value (an
/// `Arc` clone, no allocation: its key is read back from the value), and only a known
/// absence, which has no value, carries a copy of its key.
pub enum Row<K, V> {
    Found(V),
    Absent(K),
}

/// Rows with their time (refresh point or expiry), as a map lists them.
pub type RowList<K, V> = Vec<(Row<K, V>, Instant)>;

impl<K: Clone, V: Clone> Row<K, V> {
    fn of(key: &K, slot: &Slot<V>) -> Row<K, V> {
        match &slot.value {
            Some(v) => Row::Found(v.clone()),
            None => Row::Absent(key.clone()),
        }
    }
}

/// The bounds of one map.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Most positive entries.
    pub entries: usize,
    /// Most negative entries (their own LRU).
    pub negative_entries: usize,
    /// Most bytes of positive entries (their [`Weigh`]t plus key and bookkeeping).
    pub bytes: usize,
}

impl Bounds {
    /// Entry bounds only (tests).
    pub fn entries(n: usize) -> Bounds {
        Bounds {
            entries: n,
            negative_entries: n,
            bytes: usize::MAX,
        }
    }
}

struct Inner<K: Hash + Eq, V> {
    found: LruCache<K, Slot<V>>,
    absent: LruCache<K, Slot<V>>,
    bytes: usize,
}

impl<K: Hash + Eq, V> Inner<K, V> {
    fn peek(&self, key: &K) -> Option<&Slot<V>> {
        self.found.peek(key).or_else(|| self.absent.peek(key))
    }

    fn get(&mut self, key: &K) -> Option<&Slot<V>> {
        if self.found.contains(key) {
            self.found.get(key)
        } else {
            self.absent.get(key)
        }
    }

    fn pop(&mut self, key: &K) -> Option<Slot<V>> {
        if let Some(s) = self.found.pop(key) {
            self.bytes -= s.weight as usize;
            return Some(s);
        }
        self.absent.pop(key)
    }

    fn iter_all(&self) -> impl Iterator<Item = (&K, &Slot<V>)> {
        self.found.iter().chain(self.absent.iter())
    }
}

/// A bounded, TTL-aware LRU shared between tasks.
pub struct TtlLru<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    /// The LRUs grow with what they hold (no table sized for the bound up front) and are
    /// trimmed to these.
    max_entries: usize,
    max_negative: usize,
    max_bytes: usize,
    /// Fraction of the TTL after which a hit is `Due` (1.0: never).
    refresh_ahead: f64,
    max_stale: Duration,
}

impl<K: Hash + Eq + Clone + Weigh, V: Clone + Weigh> TtlLru<K, V> {
    /// `refresh_ahead_percent` 0 disables refresh-ahead.
    pub fn new(bounds: Bounds, refresh_ahead_percent: u8, max_stale: Duration) -> Self {
        let refresh_ahead = if refresh_ahead_percent == 0 {
            1.0
        } else {
            f64::from(refresh_ahead_percent.min(99)) / 100.0
        };
        TtlLru {
            inner: Mutex::new(Inner {
                found: LruCache::unbounded(),
                absent: LruCache::unbounded(),
                bytes: 0,
            }),
            max_entries: bounds.entries.max(1),
            max_negative: bounds.negative_entries.max(1),
            max_bytes: bounds.bytes,
            refresh_ahead,
            max_stale,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock cannot leave a slot half-written; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &K, now: Instant) -> Lookup<V> {
        let mut map = self.lock();
        let Some(slot) = map.get(key) else {
            return Lookup::Miss;
        };
        if now < slot.refresh_at() {
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
        let state = if now < slot.refresh_at() {
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
        self.insert(key, value, refresh_at, now + ttl);
    }

    fn insert(&self, key: K, value: Option<V>, refresh_at: Instant, expires: Instant) {
        let weight = key.weight() + value.as_ref().map_or(0, Weigh::weight) + SLOT_OVERHEAD;
        let mut map = self.lock();
        map.pop(&key);
        let slot = Slot::new(value, refresh_at, expires, weight);
        if slot.value.is_none() {
            map.absent.put(key, slot);
            while map.absent.len() > self.max_negative {
                map.absent.pop_lru();
            }
            return;
        }
        if weight > self.max_bytes {
            return; // larger than the whole budget: not cached (answered, never kept)
        }
        map.bytes += weight;
        if let Some((_, old)) = map.found.push(key, slot) {
            map.bytes -= old.weight as usize;
        }
        while map.bytes > self.max_bytes || map.found.len() > self.max_entries {
            match map.found.pop_lru() {
                Some((_, old)) => map.bytes -= old.weight as usize,
                None => break,
            }
        }
    }

    /// Stores an answer with a given expiry (a persisted entry being loaded).
    pub fn restore(&self, key: K, value: Option<V>, expires: Instant) {
        self.insert(key, value, expires, expires);
    }

    /// Removes `key`; returns what it held (`Some(None)`: a negative entry).
    pub fn remove(&self, key: &K) -> Option<Option<V>> {
        self.lock().pop(key).map(|s| s.value)
    }

    /// Removes every found entry whose value `pred` accepts; returns their values.
    pub fn remove_where(&self, mut pred: impl FnMut(&V) -> bool) -> Vec<V> {
        let mut map = self.lock();
        let keys: Vec<K> = map
            .found
            .iter()
            .filter(|(_, s)| s.value.as_ref().is_some_and(&mut pred))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| map.pop(k).and_then(|s| s.value))
            .collect()
    }

    pub fn clear(&self) {
        let mut map = self.lock();
        map.found.clear();
        map.absent.clear();
        map.bytes = 0;
    }

    /// Entries, positive and negative.
    pub fn len(&self) -> usize {
        let map = self.lock();
        map.found.len() + map.absent.len()
    }

    /// Negative entries.
    pub fn negative_len(&self) -> usize {
        self.lock().absent.len()
    }

    /// Bytes charged to positive entries.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every positive value still within its TTL, most recently used first.
    pub fn fresh_values(&self, now: Instant) -> Vec<V> {
        self.lock()
            .found
            .iter()
            .filter(|(_, s)| now < s.expires)
            .filter_map(|(_, s)| s.value.clone())
            .collect()
    }

    /// Entries past their TTL (served stale while the directory is away).
    pub fn expired_count(&self, now: Instant) -> usize {
        self.lock()
            .iter_all()
            .filter(|(_, s)| now >= s.expires)
            .count()
    }

    /// Each entry a reader may use at `now`, with its refresh-ahead point, most recently
    /// used first, found entries before known absences. See [`Row`] for what is copied
    /// while the map is locked.
    pub fn publishable(&self, now: Instant) -> RowList<K, V> {
        let map = self.lock();
        let mut out = Vec::with_capacity(map.found.len() + map.absent.len());
        for (k, s) in map.iter_all() {
            let until = s.refresh_at();
            if now < until {
                out.push((Row::of(k, s), until));
            }
        }
        out
    }

    /// Every entry still servable (fresh or within `max_stale`), least recently used first
    /// (negative entries, then found ones), so restoring them in order rebuilds both LRUs.
    pub fn snapshot(&self, now: Instant) -> Vec<Stored<K, V>> {
        let map = self.lock();
        let mut out = Vec::new();
        for (k, s) in map.absent.iter().rev().chain(map.found.iter().rev()) {
            if self.keep(s, now) {
                out.push(Stored {
                    key: k.clone(),
                    value: s.value.clone(),
                    expires: s.expires,
                });
            }
        }
        out
    }

    /// What [`TtlLru::snapshot`] lists, in the same order, as [`Row`]s with their expiry:
    /// what saving the cache needs, copied cheaply while the map is locked.
    pub fn stored(&self, now: Instant) -> RowList<K, V> {
        let map = self.lock();
        let mut out = Vec::with_capacity(map.found.len() + map.absent.len());
        for (k, s) in map.absent.iter().rev().chain(map.found.iter().rev()) {
            if self.keep(s, now) {
                out.push((Row::of(k, s), s.expires));
            }
        }
        out
    }

    /// Whether a slot is still servable (fresh, or expired within `max_stale`).
    fn keep(&self, s: &Slot<V>, now: Instant) -> bool {
        now.saturating_duration_since(s.expires) <= self.max_stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const STALE: Duration = Duration::from_secs(100);

    impl Weigh for &str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    impl Weigh for i32 {
        fn weight(&self) -> usize {
            4
        }
    }

    fn cache<K: Hash + Eq + Clone + Weigh, V: Clone + Weigh>(cap: usize) -> TtlLru<K, V> {
        TtlLru::new(Bounds::entries(cap), 75, STALE)
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
        let c: TtlLru<&str, i32> = TtlLru::new(Bounds::entries(4), 0, STALE);
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
        let publishable = |now| {
            c.publishable(now)
                .into_iter()
                .map(|(row, until)| match row {
                    Row::Found(v) => (None, Some(v), until),
                    Row::Absent(k) => (Some(k), None, until),
                })
                .collect::<Vec<_>>()
        };
        let t1 = t0 + TTL.mul_f64(0.75);
        assert_eq!(
            publishable(t0),
            vec![(None, Some(1), t1), (Some("b"), None, t1)],
            "found entries first (their value, no key copied), until their refresh point"
        );
        assert!(
            publishable(t0 + Duration::from_millis(7_600)).is_empty(),
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
        let rows: Vec<_> = c
            .stored(t0)
            .into_iter()
            .map(|(row, expires)| match row {
                Row::Found(v) => (None, Some(v), expires),
                Row::Absent(k) => (Some(k), None, expires),
            })
            .collect();
        let listed: Vec<_> = snap
            .iter()
            .map(|s| (s.value.is_none().then_some(s.key), s.value, s.expires))
            .collect();
        assert_eq!(rows, listed, "rows are the snapshot, in its order");
        let d = TtlLru::new(
            Bounds {
                entries: 1,
                negative_entries: 1,
                bytes: usize::MAX,
            },
            75,
            STALE,
        );
        for s in snap {
            d.restore(s.key, s.value, s.expires);
        }
        assert_eq!(d.get(&"new", t0), Lookup::Fresh(Some(2)));
        assert_eq!(d.get(&"gone", t0), Lookup::Fresh(None));
        assert_eq!(
            d.get(&"old", t0),
            Lookup::Miss,
            "capacity 1 kept the most recent"
        );
    }

    #[test]
    fn misses_never_evict_found_entries() {
        let c: TtlLru<String, i32> = TtlLru::new(
            Bounds {
                entries: 100,
                negative_entries: 10,
                bytes: usize::MAX,
            },
            75,
            STALE,
        );
        let t0 = Instant::now();
        for i in 0..100 {
            c.put(format!("user{i}"), Some(i), TTL, t0);
        }
        for i in 0..50_000 {
            c.put(format!("nosuch{i}"), None, TTL, t0);
        }
        assert_eq!(c.negative_len(), 10);
        for i in 0..100 {
            assert_eq!(c.get(&format!("user{i}"), t0), Lookup::Fresh(Some(i)));
        }
        assert_eq!(c.get(&"nosuch49999".to_string(), t0), Lookup::Fresh(None));
        assert_eq!(c.get(&"nosuch0".to_string(), t0), Lookup::Miss);
        c.put("user1".into(), None, TTL, t0);
        assert_eq!(
            c.get(&"user1".to_string(), t0),
            Lookup::Fresh(None),
            "a key is in one LRU"
        );
        assert_eq!(c.len(), 99 + 10);
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Blob(usize);
    impl Weigh for Blob {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn bytes_bound_found_entries_least_recent_first() {
        let c: TtlLru<u32, Blob> = TtlLru::new(
            Bounds {
                entries: 1000,
                negative_entries: 10,
                bytes: 10_000,
            },
            75,
            STALE,
        );
        let t0 = Instant::now();
        for k in 0..10 {
            c.put(k, Some(Blob(900)), TTL, t0);
        }
        assert!(c.bytes() <= 10_000, "{}", c.bytes());
        assert_eq!(c.len(), 10, "10 x (900 + key + overhead) fit");
        let _ = c.get(&0, t0);
        c.put(99, Some(Blob(3_000)), TTL, t0);
        assert!(c.bytes() <= 10_000);
        assert!(
            matches!(c.get(&0, t0), Lookup::Fresh(Some(_))),
            "recently used stays"
        );
        assert_eq!(c.get(&1, t0), Lookup::Miss, "least recently used went");
        c.put(100, Some(Blob(20_000)), TTL, t0);
        assert_eq!(
            c.get(&100, t0),
            Lookup::Miss,
            "larger than the budget: not kept"
        );
        assert_eq!(c.remove_where(|b| b.0 == 3_000), vec![Blob(3_000)]);
        assert_eq!(c.get(&99, t0), Lookup::Miss);
    }
}
