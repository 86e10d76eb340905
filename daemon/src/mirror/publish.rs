//! The whole mirror as the shared cache data (issue 11's format), flagged `COMPLETE`: every
//! user by name (and by uid when no other user claims it), every group by name and gid, the
//! initgroups list of every user, so that every lookup in every container is answered by the
//! module without a socket round trip. `publish.rs` calls [`build`] first; `None` (no
//! mirror, not complete, or beyond `map_file_max_mib`) leaves it publishing the cache.
//!
//! How long it stays valid: every record expires at the earlier of `positive_ttl_secs`
//! from the publication and `max_stale_secs` after the last successful sync. The daemon
//! republishes at every change and at least every quarter of `positive_ttl_secs`
//! ([`crate::mirror::invalidate_on_change`]), so while it runs and syncs the data never
//! lapses; a stopped daemon's data lapses like its cached answers would, and a stalled sync
//! stops extending it past `max_stale_secs` (the module then asks the daemon, which answers
//! flagged stale).

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use toolforge_nss_protocol::mapfile::{MapBuilder, Table};
use toolforge_nss_protocol::{Request, Response, ResponseKind, MAX_RESPONSE_BODY};

use crate::cached::encode;
use crate::directory::Directory;
use crate::mirror::Answer;
use crate::resolver::Resolver;

static TOO_LARGE_LOGGED: AtomicBool = AtomicBool::new(false);

/// The publication of the complete mirror, or `None` (see the module doc). Returns the bytes,
/// the records added and those left out (always 0: all or nothing).
pub fn build<D: Directory>(
    r: &Resolver<D>,
    generation: u64,
    seed: u64,
    miss_key: [u8; 16],
    max_bytes: usize,
) -> Option<(Vec<u8>, usize, usize)> {
    let m = r.mirror.get()?;
    if !m.is_complete() {
        return None;
    }
    let started = std::time::Instant::now();
    let policy = r.policy();
    let now = SystemTime::now();
    let last_sync = (*m.last_sync.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or(now);
    let ttl = r
        .positive_ttl(&Request::GetPwUid(1))
        .min(r.positive_ttl(&Request::GetGrGid(1)));
    let until = (now + ttl).min(last_sync.checked_add(m.max_stale).unwrap_or(now));
    let until = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut b = MapBuilder::new(generation, seed)
        .miss_key(miss_key)
        .complete(Some(until));
    let mut added = 0usize;
    let mut put = |b: &mut MapBuilder, table, key: &[u8], kind, body: &[u8]| {
        b.add(table, key, until, kind, body);
        added += 1;
    };
    // `None`: dropped (too large) since the check above, while this waited for the lock: an
    // empty mirror must never be published as complete.
    let fits = m.read(|s| {
        if !m.is_complete() {
            return None;
        }
        for (u, by_uid) in s.served_users(&policy) {
            let (name, kind) = (u.passwd.name.as_bytes(), ResponseKind::Passwd);
            let passwd = encode(&Response::Passwd(u.passwd.clone()));
            put(&mut b, Table::PasswdByName, name, kind, &passwd);
            if by_uid {
                put(
                    &mut b,
                    Table::PasswdByUid,
                    &u.passwd.uid.to_le_bytes(),
                    kind,
                    &passwd,
                );
            }
            if let Answer::Ids(gids) = s.groups_of(&u.passwd.name, &policy) {
                let ids = encode(&Response::GroupIds(gids));
                put(
                    &mut b,
                    Table::InitGroups,
                    name,
                    ResponseKind::GroupIds,
                    &ids,
                );
            }
            if b.approximate_len() > max_bytes {
                return Some(false);
            }
        }
        for (g, by_gid) in s.served_groups(&policy) {
            if Response::group_encoded_len(&g.group) > MAX_RESPONSE_BODY as usize {
                continue;
            }
            let (name, kind) = (g.group.name.as_bytes(), ResponseKind::Group);
            let group = encode(&Response::Group(g.group.clone()));
            put(&mut b, Table::GroupByName, name, kind, &group);
            if by_gid {
                put(
                    &mut b,
                    Table::GroupByGid,
                    &g.group.gid.to_le_bytes(),
                    kind,
                    &group,
                );
            }
            if b.approximate_len() > max_bytes {
                return Some(false);
            }
        }
        Some(true)
    })?;
    if !fits {
        if !TOO_LARGE_LOGGED.swap(true, Ordering::Relaxed) {
            warn!(
                max_bytes,
                "the complete mirror does not fit in cache.map_file_max_mib: publishing the cache instead (raise it)"
            );
        }
        return None;
    }
    let collected = started.elapsed();
    let bytes = b.build();
    debug!(records = added, ?collected, took = ?started.elapsed(), "mirror publication built");
    Some((bytes, added, 0))
}

/// Longest pause between two publications of a complete mirror while changes keep coming
/// (publications are otherwise paced to a tenth of a core: a whole-directory rebuild of a few
/// hundred milliseconds would hold a change back for seconds).
pub const MAX_PACE: Duration = Duration::from_millis(500);

/// How often a complete mirror is republished without changes (its records' validity is
/// extended): a quarter of the positive TTL, at least a second.
pub fn refresh_interval(positive_ttl: Duration) -> Duration {
    (positive_ttl / 4).max(Duration::from_secs(1))
}
