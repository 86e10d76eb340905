//! RFC 4533 Content Synchronization, `refreshAndPersist`: one sync search per base and map
//! (users, groups) on the mirror's connection, the control sent critical (a server without
//! it refuses instead of running a plain search). Present, add, modify and delete are applied
//! per entry; the refresh's present phase deletes what the server did not mention; cookies
//! are kept per search and saved with the entries. `e-syncRefreshRequired` (4096) drops the
//! cookies and reloads in the background while the old mirror answers. Every sync message is
//! parsed under `catch_unwind` (ldap3's parsers panic on malformed input): a malformed one
//! is an error of this connection, never a crash.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use ldap3::controls::{
    parse_syncinfo, ControlType, EntryState, MakeCritical, RefreshMode, SyncDone, SyncInfo,
    SyncRequest, SyncState,
};
use ldap3::{Ldap, ResultEntry, Scope};
use tracing::{debug, info, warn};

use crate::directory::op;
use crate::mirror::load::{self, key_of};
use crate::mirror::{Kind, Mirror};

/// The Content Synchronization control's OID, looked for in the root DSE.
pub const SYNC_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// `e-syncRefreshRequired`.
const REFRESH_REQUIRED: u32 = 4096;
/// Quiet this long on a persist search: the connection is probed (and the sync counted
/// successful when it answers).
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server will not run the sync search (unavailableCriticalExtension, insufficient
    /// access...): `auto` polls instead.
    #[error("sync search refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for SyncError {
    fn from(s: String) -> SyncError {
        SyncError::Failed(s)
    }
}

/// Whether the root DSE lists the Content Synchronization control.
pub async fn advertised(m: &Mirror, mut ldap: Ldap) -> bool {
    m.searches.fetch_add(1, Ordering::Relaxed);
    let read = ldap
        .with_timeout(Duration::from_millis(m.ldap.search_timeout_ms))
        .search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"]);
    match read.await {
        Ok(ldap3::SearchResult(entries, res)) if res.rc == 0 => {
            entries.into_iter().filter_map(op::parse_entry).any(|e| {
                e.attrs
                    .get("supportedcontrol")
                    .is_some_and(|v| v.iter().any(|c| c.trim() == SYNC_OID))
            })
        }
        _ => false,
    }
}

/// An RFC 4122 UUID's text form, as `entryUUID` reads.
pub fn uuid_text(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn parse<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, SyncError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| SyncError::Failed(format!("malformed {what} from the server")))
}

/// The sync searches: one per base of each map, with the id its cookie is kept under.
/// Cookies are kept per server (`users:BASE@URI`): another server's cookie is never sent, a
/// failover takes new cookies and reloads (swapped in whole, so no entry is ever held twice
/// under two servers' entryUUIDs).
pub fn streams(m: &Mirror) -> Vec<(Kind, String, String, String)> {
    let server = m.server();
    let mut v = Vec::new();
    for kind in [Kind::User, Kind::Group] {
        let (bases, filter) = load::scope(m, kind);
        for base in bases {
            let map = if kind == Kind::User {
                "users"
            } else {
                "groups"
            };
            let id = format!("{map}:{base}@{server}");
            v.push((kind, base, filter.clone(), id));
        }
    }
    v
}

/// Whether every sync search has a cookie to resume from.
pub fn has_cookies(m: &Mirror) -> bool {
    streams(m)
        .iter()
        .all(|(_, _, _, id)| m.cookie(id).is_some())
}

/// Takes a cookie for every sync search before a full load, with a `refreshOnly` search that
/// matches nothing: the persist searches then resume from it with the changes made during
/// and after the load, instead of a refresh of the whole directory (which a server's size
/// limit, 2,048 entries on Wikimedia's replicas, would refuse; paged searches are not).
pub async fn prime(m: &Mirror, ldap: Ldap) -> Result<(), SyncError> {
    m.clear_cookies();
    for (_, base, filter, id) in streams(m) {
        let mut ldap = ldap.clone();
        m.searches.fetch_add(1, Ordering::Relaxed);
        let req = SyncRequest {
            mode: RefreshMode::RefreshOnly,
            cookie: None,
            reload_hint: false,
        };
        let none = format!("(&{filter}(!(objectClass=*)))");
        let r = ldap
            .with_controls(req.critical())
            .with_timeout(Duration::from_millis(m.ldap.search_timeout_ms))
            .search(&base, Scope::Subtree, &none, vec!["1.1"])
            .await
            .map_err(|e| SyncError::Failed(format!("sync cookie for {base}: {e}")))?;
        let res = r.1;
        if res.rc != 0 {
            let why = format!("rc={} {}", res.rc, res.text);
            return Err(match res.rc {
                4 | 11 | 12 | 50 | 53 => SyncError::Refused(why),
                _ => SyncError::Failed(why),
            });
        }
        let done = res
            .ctrls
            .iter()
            .find(|c| matches!(c.0, Some(ControlType::SyncDone)))
            .map(|c| parse("syncDone", || c.1.parse::<SyncDone>()))
            .transpose()?;
        match done.and_then(|d| d.cookie) {
            Some(c) => m.set_cookie(&id, c),
            None => return Err(SyncError::Refused(format!("no sync cookie for {base}"))),
        }
    }
    Ok(())
}

/// Runs every sync search until one fails; a refresh required (or a cookie refused) takes
/// new cookies and reloads in the background while the mirror answers, then starts again.
pub async fn run(m: &Arc<Mirror>, ldap: Ldap) -> Result<(), SyncError> {
    loop {
        let mut searches = Vec::new();
        for (kind, base, filter, id) in streams(m) {
            searches.push(Box::pin(stream(
                m.clone(),
                ldap.clone(),
                kind,
                base,
                filter,
                id,
            )));
        }
        let (first, _, rest) = select_all(searches).await;
        drop(rest);
        match first {
            Err(SyncError::Failed(e)) if e == "refresh required" => {
                warn!("the server requires a full refresh (e-syncRefreshRequired, or our cookie refused): reloading while the mirror answers");
                prime(m, ldap.clone()).await?;
                let state = load::full(m, ldap.clone()).await?;
                m.swap(state);
                m.synced();
            }
            Err(e) => return Err(e),
            Ok(()) => return Err(SyncError::Failed("a sync search ended".into())),
        }
    }
}

/// One `refreshAndPersist` search.
async fn stream(
    m: Arc<Mirror>,
    mut ldap: Ldap,
    kind: Kind,
    base: String,
    filter: String,
    id: String,
) -> Result<(), SyncError> {
    let cookie = m.cookie(&id);
    let resumed = cookie.is_some();
    debug!(%base, cookie = %String::from_utf8_lossy(cookie.as_deref().unwrap_or_default()), "sync: resuming");
    let req = SyncRequest {
        mode: RefreshMode::RefreshAndPersist,
        cookie,
        reload_hint: false,
    };
    m.searches.fetch_add(1, Ordering::Relaxed);
    let attrs = load::attrs(&m, kind);
    let mut s = ldap
        .with_controls(req.critical())
        .streaming_search(&base, Scope::Subtree, &filter, attrs)
        .await
        .map_err(|e| SyncError::Failed(format!("sync search of {base}: {e}")))?;
    debug!(%base, resumed, "sync search started");
    // Keys mentioned during the refresh (present phase); `None` once the refresh is over.
    let mut mentioned: Option<HashSet<String>> = Some(HashSet::new());
    let base_lc = base.to_ascii_lowercase();
    loop {
        let next = match tokio::time::timeout(HEARTBEAT, s.next()).await {
            Ok(n) => n,
            Err(_) => {
                if mentioned.is_none() {
                    if op::probe(ldap.clone(), HEARTBEAT).await {
                        m.synced();
                        continue;
                    }
                    return Err(SyncError::Failed("sync connection does not answer".into()));
                }
                continue;
            }
        };
        let re = match next {
            Ok(Some(re)) => re,
            Ok(None) => break,
            Err(e) => return Err(SyncError::Failed(format!("sync search of {base}: {e}"))),
        };
        if re.is_ref() {
            continue;
        }
        if re.is_intermediate() {
            let info = parse("syncInfo", || parse_syncinfo(re))?;
            on_info(&m, &id, kind, &base_lc, info, &mut mentioned);
            continue;
        }
        on_entry(&m, &id, kind, &base_lc, re, &mut mentioned)?;
    }
    let res = s.finish().await;
    if res.rc == REFRESH_REQUIRED {
        warn!(%base, "e-syncRefreshRequired from the server");
        return Err(SyncError::Failed("refresh required".into()));
    }
    if resumed && res.rc != 0 {
        // A cookie this server does not take (another server's, or newer than its state after
        // a crash: "consumer state is newer than provider"): start again from a full load.
        warn!(%base, rc = res.rc, text = %res.text, "the server refused our sync cookie");
        return Err(SyncError::Failed("refresh required".into()));
    }
    if res.rc != 0 {
        let why = format!("rc={} {}", res.rc, res.text);
        return Err(match res.rc {
            4 | 11 | 12 | 50 | 53 => SyncError::Refused(why),
            _ => SyncError::Failed(why),
        });
    }
    for c in &res.ctrls {
        if matches!(c.0, Some(ControlType::SyncDone)) {
            let done: SyncDone = parse("syncDone", || c.1.parse::<SyncDone>())?;
            if let Some(cookie) = done.cookie {
                m.set_cookie(&id, cookie);
            }
        }
    }
    Ok(())
}

fn on_entry(
    m: &Mirror,
    id: &str,
    kind: Kind,
    base_lc: &str,
    re: ResultEntry,
    mentioned: &mut Option<HashSet<String>>,
) -> Result<(), SyncError> {
    let state =
        re.1.iter()
            .find(|c| matches!(c.0, Some(ControlType::SyncState)))
            .map(|c| parse("syncState", || c.1.parse::<SyncState>()))
            .transpose()?
            .ok_or_else(|| SyncError::Failed("a sync entry without a syncState control".into()))?;
    let uuid = uuid_text(&state.entry_uuid)
        .ok_or_else(|| SyncError::Failed("a syncState with a malformed entryUUID".into()))?;
    match state.state {
        EntryState::Present => {}
        EntryState::Delete => {
            let gone = m.apply(|s, _| remove_under(s, kind, &uuid, base_lc));
            debug!(%uuid, gone, "sync: delete");
        }
        EntryState::Add | EntryState::Modify => {
            let Some(mut e) = op::parse_entry(re) else {
                return Err(SyncError::Failed(
                    "a malformed entry in the sync search".into(),
                ));
            };
            e.attrs.insert(load::UUID_ATTR.into(), vec![uuid.clone()]);
            let dn = e.dn.clone();
            debug!(%dn, state = ?state.state, "sync: entry");
            debug_assert_eq!(key_of(&e), uuid);
            if let Err(why) = m.apply(|s, mapper| s.upsert(mapper, kind, &uuid, e)) {
                // Not (or no longer) a well-formed entry: nothing to serve under its key.
                m.apply(|s, _| s.remove(kind, &uuid));
                warn!(%dn, reason = %why, "mirror: skipped entry");
            }
        }
    }
    if let Some(set) = mentioned.as_mut() {
        set.insert(uuid);
    }
    if let Some(c) = state.cookie {
        m.set_cookie(id, c);
    }
    Ok(())
}

fn on_info(
    m: &Mirror,
    id: &str,
    kind: Kind,
    base_lc: &str,
    info: SyncInfo,
    mentioned: &mut Option<HashSet<String>>,
) {
    match info {
        SyncInfo::NewCookie(c) => {
            debug!(cookie = %String::from_utf8_lossy(&c), "sync: new cookie");
            m.set_cookie(id, c)
        }
        SyncInfo::RefreshDelete {
            cookie,
            refresh_done,
        } => {
            if let Some(c) = cookie {
                m.set_cookie(id, c);
            }
            if refresh_done {
                refreshed(m, mentioned);
            }
        }
        SyncInfo::RefreshPresent {
            cookie,
            refresh_done,
        } => {
            if let Some(c) = cookie {
                m.set_cookie(id, c);
            }
            if refresh_done {
                // Present phase over: what was neither mentioned nor changed is gone.
                if let Some(set) = mentioned.as_ref() {
                    let removed = m.apply(|s, _| {
                        let mut n = 0;
                        for key in s.keys(kind) {
                            if !set.contains(&key) && remove_under(s, kind, &key, base_lc) {
                                n += 1;
                            }
                        }
                        n
                    });
                    if removed > 0 {
                        info!(removed, "sync: entries absent from the refresh removed");
                    }
                }
                refreshed(m, mentioned);
            }
        }
        SyncInfo::SyncIdSet {
            cookie,
            refresh_deletes,
            sync_uuids,
        } => {
            if let Some(c) = cookie {
                m.set_cookie(id, c);
            }
            let keys: Vec<String> = sync_uuids.iter().filter_map(|u| uuid_text(u)).collect();
            if refresh_deletes {
                m.apply(|s, _| {
                    for k in &keys {
                        remove_under(s, kind, k, base_lc);
                    }
                });
            } else if let Some(set) = mentioned.as_mut() {
                set.extend(keys);
            }
        }
    }
}

/// Removes `key` if it is held under `base_lc`: one search's deletions never touch entries
/// of another base (OpenLDAP reports an entry that changed under another base as gone from
/// this search's content).
fn remove_under(s: &mut crate::mirror::State, kind: Kind, key: &str, base_lc: &str) -> bool {
    let under = s.dn_of(kind, key).is_some_and(|dn| dn_under(dn, base_lc));
    under && s.remove(kind, key)
}

/// Whether `dn` is `base_lc` or below it (case-insensitive).
fn dn_under(dn: &str, base_lc: &str) -> bool {
    let dn = dn.to_ascii_lowercase();
    dn == base_lc || dn.ends_with(&format!(",{base_lc}"))
}

fn refreshed(m: &Mirror, mentioned: &mut Option<HashSet<String>>) {
    *mentioned = None;
    m.became_complete();
    m.synced();
    m.set_live(true);
    debug!("sync: refresh done, persisting");
}
