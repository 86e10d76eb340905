//! Enumeration (`getent passwd`, `getent group`): the first request (generation 0) takes a
//! snapshot of the listing; the module then pages through it by (generation, cursor), so a
//! listing stays consistent while the cache changes. Snapshots are kept for a short while and
//! built from already-encoded entries, so paging costs no re-encoding.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use toolforge_nss_protocol::message::{encode_batch_body, END_OF_ENUMERATION};
use toolforge_nss_protocol::ResponseKind;

use crate::resolver::BodyRef;

/// Target size of one batch (one frame) of entries.
const BATCH_BYTES: usize = 256 * 1024;
/// Snapshots kept at once.
const MAX_SNAPSHOTS: usize = 8;
/// How long a client may take to page through a snapshot.
const SNAPSHOT_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Users,
    Groups,
}

pub struct Snapshot {
    generation: u64,
    what: Listing,
    reusable: bool,
    created: Instant,
    entries: Vec<BodyRef>,
}

impl Snapshot {
    /// The batch starting at `cursor` (an out-of-range cursor gives an empty, final batch).
    pub fn batch(&self, cursor: u32) -> (ResponseKind, Vec<u8>) {
        let start = (cursor as usize).min(self.entries.len());
        let mut size = 0;
        let mut end = start;
        while end < self.entries.len() {
            let len = self.entries[end].bytes().len();
            if end > start && size + len > BATCH_BYTES {
                break;
            }
            size += len;
            end += 1;
        }
        let next = if end >= self.entries.len() {
            END_OF_ENUMERATION
        } else {
            end as u32
        };
        let slices: Vec<&[u8]> = self.entries[start..end]
            .iter()
            .map(BodyRef::bytes)
            .collect();
        let mut body = Vec::with_capacity(size + 16);
        encode_batch_body(&mut body, self.generation, next, &slices);
        let kind = match self.what {
            Listing::Users => ResponseKind::PasswdBatch,
            Listing::Groups => ResponseKind::GroupBatch,
        };
        (kind, body)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The generation clients page through it by.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub struct Enumerations {
    snapshots: Mutex<VecDeque<Arc<Snapshot>>>,
    next_generation: AtomicU64,
    reuse_for: Duration,
}

impl Enumerations {
    /// `reuse_for`: how long a directory listing answers new enumerations.
    pub fn new(reuse_for: Duration) -> Self {
        Enumerations {
            snapshots: Mutex::new(VecDeque::new()),
            next_generation: AtomicU64::new(1),
            reuse_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Snapshot>>> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, generation: u64) -> Option<Arc<Snapshot>> {
        self.lock()
            .iter()
            .find(|s| s.generation == generation && s.created.elapsed() < SNAPSHOT_LIFETIME)
            .cloned()
    }

    /// A recent reusable (directory) listing of `what`, if any.
    pub fn recent(&self, what: Listing) -> Option<Arc<Snapshot>> {
        self.lock()
            .iter()
            .rev()
            .find(|s| s.what == what && s.reusable && s.created.elapsed() < self.reuse_for)
            .cloned()
    }

    pub fn publish(&self, what: Listing, entries: Vec<BodyRef>, reusable: bool) -> Arc<Snapshot> {
        let s = Arc::new(Snapshot {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            what,
            reusable,
            created: Instant::now(),
            entries,
        });
        let mut q = self.lock();
        q.push_back(s.clone());
        while q.len() > MAX_SNAPSHOTS {
            q.pop_front();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolforge_nss_protocol::{Passwd, Response, ResponseRef};

    fn body(i: u32, pad: usize) -> BodyRef {
        let mut b = Vec::new();
        Response::Passwd(Passwd {
            name: format!("u{i}"),
            passwd: "x".into(),
            uid: i,
            gid: 1,
            gecos: "g".repeat(pad),
            dir: "/".into(),
            shell: "/bin/sh".into(),
        })
        .encode_body(&mut b);
        BodyRef::Owned(Arc::new(b))
    }

    #[test]
    fn pages_through_a_snapshot_in_bounded_batches() {
        let e = Enumerations::new(Duration::from_secs(60));
        let s = e.publish(
            Listing::Users,
            (0..3000).map(|i| body(i, 200)).collect(),
            false,
        );
        let mut cursor = 0;
        let mut seen = 0;
        let mut batches = 0;
        while cursor != END_OF_ENUMERATION {
            let (kind, b) = e.get(s.generation).unwrap().batch(cursor);
            assert!(b.len() <= BATCH_BYTES + 1024);
            match ResponseRef::decode(kind as u16, &b).unwrap() {
                ResponseRef::PasswdBatch {
                    generation,
                    next_cursor,
                    entries,
                } => {
                    assert_eq!(generation, s.generation);
                    assert_eq!(entries[0].uid, seen);
                    seen += entries.len() as u32;
                    cursor = next_cursor;
                }
                other => panic!("{other:?}"),
            }
            batches += 1;
        }
        assert_eq!(seen, 3000);
        assert!(batches > 1);
        assert!(
            e.recent(Listing::Users).is_none(),
            "cache listings are not reused"
        );
    }

    #[test]
    fn old_snapshots_are_dropped() {
        let e = Enumerations::new(Duration::from_secs(60));
        let first = e.publish(Listing::Groups, vec![], true);
        for _ in 0..MAX_SNAPSHOTS {
            e.publish(Listing::Groups, vec![], true);
        }
        assert!(e.get(first.generation).is_none());
        assert!(e.recent(Listing::Groups).is_some());
    }
}
