//! Who is connected: the peer uid of each client connection (SO_PEERCRED, which the client
//! cannot forge) and a cap on connections per uid, so one tool's processes cannot take every
//! slot of a node's daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

pub struct PeerLimits {
    per_uid: usize,
    counts: Mutex<HashMap<u32, usize>>,
    last_warning: AtomicU64,
}

/// Holds one connection slot of a uid; released on drop.
pub struct PeerSlot {
    limits: Arc<PeerLimits>,
    uid: u32,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}

impl PeerLimits {
    pub fn new(per_uid: usize) -> Arc<PeerLimits> {
        Arc::new(PeerLimits {
            per_uid,
            counts: Mutex::new(HashMap::new()),
            last_warning: AtomicU64::new(0),
        })
    }

    /// A slot for `uid`, or `None` when it holds `per_uid` connections already.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<PeerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(uid).or_insert(0);
        if *n >= self.per_uid {
            drop(counts);
            self.warn_limited(uid);
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            limits: self.clone(),
            uid,
        })
    }

    /// Connections per uid now.
    pub fn connections(&self) -> HashMap<u32, usize> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// At most one warning every ten seconds, however hard a client pushes.
    fn warn_limited(&self, uid: u32) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                uid,
                max_connections_per_uid = self.per_uid,
                "per-uid connection limit reached; refusing"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_uid_separately_and_frees_on_drop() {
        let l = PeerLimits::new(2);
        let a1 = l.admit(1000).unwrap();
        let _a2 = l.admit(1000).unwrap();
        assert!(l.admit(1000).is_none(), "third from the same uid refused");
        let _b = l.admit(2000).expect("another uid is not affected");
        drop(a1);
        assert!(l.admit(1000).is_some(), "a slot is freed on drop");
        assert_eq!(l.connections().get(&2000), Some(&1));
    }
}
