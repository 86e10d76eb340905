//! Single-flight: concurrent misses for the same key share one directory query. The first
//! caller runs the query; the others wait for its result. If the running caller is cancelled
//! (its client went away), one of the waiters takes over, so nobody waits forever.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<K, V> {
    inflight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `query` for `key` unless a run for the same key is under way, then returns its result.
    pub async fn run<F, Fut>(&self, key: K, query: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let value = cell.get_or_init(query).await.clone();
        let mut map = self.lock();
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a query for `key` is under way.
    pub fn running(&self, key: &K) -> bool {
        self.lock().contains_key(key)
    }

    /// Keys with a query under way (for tests and status).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_concurrent_callers_make_one_query() {
        let sf = Arc::new(SingleFlight::<String, u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (sf, calls) = (sf.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                sf.run("alice".to_string(), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over() {
        let sf = Arc::new(SingleFlight::<u8, u8>::default());
        let leader = {
            let sf = sf.clone();
            tokio::spawn(async move { sf.run(1, std::future::pending::<u8>).await })
        };
        tokio::task::yield_now().await;
        leader.abort();
        let v = tokio::time::timeout(Duration::from_secs(1), sf.run(1, || async { 9 })).await;
        assert_eq!(v.unwrap(), 9);
    }
}
