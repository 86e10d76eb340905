//! Enumeration (`getent passwd`, `getent group`) from a complete mirror: every user or group
//! it serves (policy applied, ambiguous names left out, as keyed lookups), encoded once into
//! the snapshot the client pages through (`crate::enumeration`), ordered by id. No directory
//! listing, whatever `[cache] enumerate` says: the mirror already holds the whole directory.

use std::sync::Arc;

use toolforge_nss_protocol::{Response, MAX_RESPONSE_BODY};

use crate::cached::encode;
use crate::enumeration::Listing;
use crate::mirror::Mirror;
use crate::policy::Policy;
use crate::resolver::BodyRef;

fn encoded(resp: &Response) -> BodyRef {
    BodyRef::Owned(Arc::new(encode(resp)))
}

/// The listing of `what`, or `None` when the mirror is not authoritative (not complete).
pub fn listing(m: &Mirror, what: Listing, policy: &Policy) -> Option<Vec<BodyRef>> {
    if !m.is_complete() {
        return None;
    }
    m.read(|s| {
        // Dropped (too large) while waiting for the lock: not authoritative any more.
        if !m.is_complete() {
            return None;
        }
        Some(match what {
            Listing::Users => {
                let mut users: Vec<_> = s.served_users(policy).map(|(u, _)| u).collect();
                users.sort_by(|a, b| {
                    (a.passwd.uid, &a.passwd.name).cmp(&(b.passwd.uid, &b.passwd.name))
                });
                users
                    .into_iter()
                    .map(|u| encoded(&Response::Passwd(u.passwd)))
                    .collect()
            }
            Listing::Groups => {
                let mut groups: Vec<_> = s
                    .served_groups(policy)
                    .map(|(g, _)| g)
                    .filter(|g| Response::group_encoded_len(&g.group) <= MAX_RESPONSE_BODY as usize)
                    .collect();
                groups.sort_by(|a, b| {
                    (a.group.gid, &a.group.name).cmp(&(b.group.gid, &b.group.name))
                });
                groups
                    .into_iter()
                    .map(|g| encoded(&Response::Group(g.group)))
                    .collect()
            }
        })
    })
}
