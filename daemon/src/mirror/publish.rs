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
use crate::mirror::state::{Changes, State};
use crate::mirror::{Answer, Mirror};
use crate::policy::Policy;
use crate::records::GroupRecord;
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
    // `None`: dropped (too large) since the check above, while this waited for the lock: an
    // empty mirror must never be published as complete.
    let fits = m.read(|s| {
        m.is_complete()
            .then(|| add_all(s, &policy, &mut b, until, max_bytes, &mut added))
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

/// Adds every record of the whole mirror `s` to `b`, each valid until `until`, counting them
/// in `added`; `false` as soon as the publication would pass `max_bytes`.
fn add_all(
    s: &State,
    policy: &Policy,
    b: &mut MapBuilder,
    until: u64,
    max_bytes: usize,
    added: &mut usize,
) -> bool {
    let mut put = |b: &mut MapBuilder, table, key: &[u8], kind, body: &[u8]| {
        b.add(table, key, until, kind, body);
        *added += 1;
    };
    for (u, by_uid) in s.served_users(policy) {
        let (name, kind) = (u.passwd.name.as_bytes(), ResponseKind::Passwd);
        let passwd = encode(&Response::Passwd(u.passwd.clone()));
        put(b, Table::PasswdByName, name, kind, &passwd);
        if by_uid {
            put(
                b,
                Table::PasswdByUid,
                &u.passwd.uid.to_le_bytes(),
                kind,
                &passwd,
            );
        }
        if let Answer::Ids(gids) = s.groups_of(&u.passwd.name, policy) {
            let ids = encode(&Response::GroupIds(gids));
            put(b, Table::InitGroups, name, ResponseKind::GroupIds, &ids);
        }
        if b.approximate_len() > max_bytes {
            return false;
        }
    }
    for (g, by_gid) in s.served_groups(policy) {
        if Response::group_encoded_len(&g.group) > MAX_RESPONSE_BODY as usize {
            continue;
        }
        let (name, kind) = (g.group.name.as_bytes(), ResponseKind::Group);
        let group = encode(&Response::Group(g.group.clone()));
        put(b, Table::GroupByName, name, kind, &group);
        if by_gid {
            put(
                b,
                Table::GroupByGid,
                &g.group.gid.to_le_bytes(),
                kind,
                &group,
            );
        }
        if b.approximate_len() > max_bytes {
            return false;
        }
    }
    true
}

/// One key of the publication as it is now: `None` when the publication must not hold it.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<(ResponseKind, Vec<u8>)>,
}

/// The records of the keys `changes` names, exactly as [`build`] would write them now (policy
/// applied, ambiguous names and ids left out, groups over the body limit left out), to patch
/// the published data with; `None` when `m` is not (or no longer) a complete mirror.
pub fn delta(m: &Mirror, policy: &Policy, changes: &Changes) -> Option<Vec<Delta>> {
    if !m.is_complete() {
        return None;
    }
    m.read(|s| m.is_complete().then(|| records_for(s, policy, changes)))
}

/// The records of the keys `changes` names in a publication of the whole mirror `s` (what
/// [`add_all`] writes for them, or `None` where it writes nothing).
pub fn records_for(s: &State, policy: &Policy, changes: &Changes) -> Vec<Delta> {
    let keys = s.changed_keys(changes);
    let mut out = Vec::with_capacity(2 * keys.users.len() + keys.uids.len());
    let mut put = |table, key: &[u8], value| {
        out.push(Delta {
            table,
            key: key.to_vec(),
            value,
        })
    };
    for name in &keys.users {
        let user = match s.user_by_name(name, policy) {
            Answer::User(u) if u.passwd.name == *name => Some(u),
            _ => None,
        };
        let ids = match user.as_ref().map(|_| s.groups_of(name, policy)) {
            Some(Answer::Ids(gids)) => Some(encode(&Response::GroupIds(gids))),
            _ => None,
        };
        let passwd = user.map(|u| encode(&Response::Passwd(u.passwd)));
        let key = name.as_bytes();
        put(
            Table::PasswdByName,
            key,
            passwd.map(|b| (ResponseKind::Passwd, b)),
        );
        put(
            Table::InitGroups,
            key,
            ids.map(|b| (ResponseKind::GroupIds, b)),
        );
    }
    for &uid in &keys.uids {
        let passwd = s
            .served_user_by_uid(uid, policy)
            .map(|u| (ResponseKind::Passwd, encode(&Response::Passwd(u.passwd))));
        put(Table::PasswdByUid, &uid.to_le_bytes(), passwd);
    }
    let group = |g: Option<GroupRecord>| {
        g.filter(|g| Response::group_encoded_len(&g.group) <= MAX_RESPONSE_BODY as usize)
            .map(|g| (ResponseKind::Group, encode(&Response::Group(g.group))))
    };
    for name in &keys.groups {
        let g = match s.group_by_name(name, policy) {
            Answer::Group(g) if g.group.name == *name => Some(g),
            _ => None,
        };
        put(Table::GroupByName, name.as_bytes(), group(g));
    }
    for &gid in &keys.gids {
        let g = s.served_group_by_gid(gid, policy);
        put(Table::GroupByGid, &gid.to_le_bytes(), group(g));
    }
    out
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

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
