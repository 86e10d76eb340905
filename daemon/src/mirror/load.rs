//! The full load: paged searches of every user and group base on the mirror's own connection
//! (outside the pool, exempt from its expiry), into a fresh [`State`] that the caller swaps
//! in (so the old mirror answers until the new one is whole). Also the search primitive the
//! poller uses for its deltas.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ldap3::{Ldap, Scope};
use tracing::warn;

use crate::directory::op;
use crate::mapping::RawEntry;
use crate::mirror::{Kind, Mirror, State};

/// The attribute that gives an entry a key that survives renames.
pub const UUID_ATTR: &str = "entryuuid";

/// A whole listing may take this long at most (a Toolforge-sized directory takes seconds).
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// An entry's key: its `entryUUID` (lowercase text, as RFC 4533 sync states are converted
/// to), else its DN.
pub fn key_of(e: &RawEntry) -> String {
    match e.attrs.get(UUID_ATTR).and_then(|v| v.first()) {
        Some(u) => u.to_ascii_lowercase(),
        None => format!("dn:{}", e.dn.to_ascii_lowercase()),
    }
}

/// The attributes requested for `kind`.
pub fn attrs(m: &Mirror, kind: Kind) -> Vec<String> {
    let mut a = match kind {
        Kind::User => m.mapper.user_attrs(),
        Kind::Group => m.mapper.group_attrs(true),
    };
    a.push("entryUUID".into());
    a
}

/// The bases and filter of `kind`.
pub fn scope(m: &Mirror, kind: Kind) -> (Vec<String>, String) {
    match kind {
        Kind::User => (m.ldap.user_bases(), m.ldap.users.filter.clone()),
        Kind::Group => (m.ldap.group_bases(), m.ldap.groups.filter.clone()),
    }
}

/// A paged search of every base of `kind` with `filter` (the poller's deltas).
pub async fn search(
    m: &Mirror,
    ldap: &Ldap,
    kind: Kind,
    filter: &str,
) -> Result<Vec<RawEntry>, String> {
    let mut out = Vec::new();
    search_each(m, ldap, kind, filter, &mut |e| out.push(e)).await?;
    Ok(out)
}

/// [`search`] handing each entry to `each` as it arrives.
async fn search_each(
    m: &Mirror,
    ldap: &Ldap,
    kind: Kind,
    filter: &str,
    each: &mut (dyn FnMut(RawEntry) + Send),
) -> Result<(), String> {
    let (bases, _) = scope(m, kind);
    let attrs = attrs(m, kind);
    for base in &bases {
        m.searches.fetch_add(1, Ordering::Relaxed);
        op::search_each_on(
            ldap.clone(),
            base,
            Scope::Subtree,
            filter,
            &attrs,
            m.ldap.page_size,
            LOAD_TIMEOUT,
            &m.references,
            each,
        )
        .await
        .map_err(|e| format!("search of {base} for {filter}: {e}"))?;
    }
    Ok(())
}

/// Loads everything into a new state, each entry mapped and held as it arrives (the
/// directory is never held twice, as raw entries and as the mirror); past `max_entries`
/// the caller's swap refuses it.
pub async fn full(m: &Mirror, ldap: Ldap) -> Result<State, String> {
    let mut state = State::new(m.ldap.schema, m.ldap.group_nesting_level);
    for kind in [Kind::User, Kind::Group] {
        let (_, filter) = scope(m, kind);
        let mut add = |e: RawEntry| {
            let key = key_of(&e);
            let dn = e.dn.clone();
            if let Err(why) = state.upsert(&m.mapper, kind, &key, e) {
                warn!(%dn, reason = %why, "mirror: skipped entry");
            }
        };
        search_each(m, &ldap, kind, &filter, &mut add).await?;
        if state.len() > m.cfg.max_entries {
            // Let the caller's swap say so loudly and fall back to lookup mode.
            return Ok(state);
        }
    }
    state.compact();
    Ok(state)
}
