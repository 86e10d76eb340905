//! What the cache holds for one answer: its encoded response body (what a client is sent and
//! the shared cache data publishes) and a label (for users and groups the entry's DN, where
//! RFC 2307bis membership starts; for a user's gid list the user's name, its key) in one
//! heap buffer, beside the id the maps key on.
//!
//! Nothing else is kept: the name, the other fields and a group's members are read back from
//! the body with the protocol crate's decoders when the daemon needs them (keys, `cache
//! invalidate`, admin output). A decoded record per entry (a `Passwd` with five `String`s, a
//! member list of `String`s) doubled the daemon's memory for a fully cached directory.

use std::marker::PhantomData;
use std::sync::Arc;

use toolforge_nss_protocol::{warm, Group, Passwd, Response};

use crate::cache::Weigh;
use crate::records::{GroupRecord, UserRecord};

/// Marks an entry that holds a `Passwd` body.
#[derive(Debug)]
pub enum User {}
/// Marks an entry that holds a `Group` body.
#[derive(Debug)]
pub enum GroupKind {}
/// Marks an entry that holds a `GroupIds` body (a user's groups, for initgroups).
#[derive(Debug)]
pub enum Ids {}

/// One cached answer of kind `T`.
pub struct Cached<T> {
    /// The label's bytes, then the body's.
    bytes: Box<[u8]>,
    label_len: u32,
    /// The uid or gid (0 for a gid list).
    id: u32,
    kind: PhantomData<T>,
}

impl<T> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("label", &self.label())
            .field("id", &self.id)
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// A cached answer as the maps share it.
pub type Entry<T> = Arc<Cached<T>>;
pub type UserEntry = Arc<Cached<User>>;
pub type GroupEntry = Arc<Cached<GroupKind>>;
pub type GroupIds = Arc<Cached<Ids>>;

/// A response's body, as sent.
pub fn encode(resp: &Response) -> Vec<u8> {
    let mut body = Vec::new();
    resp.encode_body(&mut body);
    body
}

impl<T> Cached<T> {
    fn new(label: &str, id: u32, body: &[u8]) -> Cached<T> {
        // A label longer than 4 GiB cannot come from a bounded LDAP message.
        let label = if u32::try_from(label.len()).is_ok() {
            label
        } else {
            ""
        };
        let mut bytes = Vec::with_capacity(label.len() + body.len());
        bytes.extend_from_slice(label.as_bytes());
        bytes.extend_from_slice(body);
        Cached {
            bytes: bytes.into_boxed_slice(),
            label_len: label.len() as u32,
            id,
            kind: PhantomData,
        }
    }

    /// The encoded response body.
    pub fn body(&self) -> &[u8] {
        self.bytes
            .get(self.label_len as usize..)
            .unwrap_or_default()
    }

    fn label(&self) -> &str {
        self.bytes
            .get(..self.label_len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// What a slot's value costs: the shared allocation (counted once per map that holds it, a
/// conservative bound), the buffer and malloc's per-chunk overhead of both.
impl<T> Weigh for Arc<Cached<T>> {
    fn weight(&self) -> usize {
        16 + std::mem::size_of::<Cached<T>>() + self.bytes.len() + 2 * 8
    }
}

impl Cached<User> {
    /// A user as cached (policy already applied).
    pub fn user(rec: &UserRecord) -> Cached<User> {
        let body = encode(&Response::Passwd(rec.passwd.clone()));
        Cached::new(&rec.dn, rec.passwd.uid, &body)
    }

    pub fn uid(&self) -> u32 {
        self.id
    }

    /// The entry's DN.
    pub fn dn(&self) -> &str {
        self.label()
    }

    /// The user's name (from the body the daemon encoded itself, so always there).
    pub fn name(&self) -> &str {
        warm::passwd(self.body())
            .and_then(|p| std::str::from_utf8(p.name).ok())
            .unwrap_or_default()
    }

    /// The whole `passwd` entry, decoded from the body.
    pub fn passwd(&self) -> Passwd {
        warm::passwd(self.body())
            .and_then(|p| p.to_owned().ok())
            .unwrap_or_default()
    }
}

impl Cached<GroupKind> {
    /// A group as cached (policy already applied; the caller has checked that its body fits
    /// a response).
    pub fn group(rec: &GroupRecord) -> Cached<GroupKind> {
        let body = encode(&Response::Group(rec.group.clone()));
        Cached::new(&rec.dn, rec.group.gid, &body)
    }

    pub fn gid(&self) -> u32 {
        self.id
    }

    /// The entry's DN.
    pub fn dn(&self) -> &str {
        self.label()
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        warm::group(self.body())
            .and_then(|g| std::str::from_utf8(g.name).ok())
            .unwrap_or_default()
    }

    /// The member names, in order.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        warm::group(self.body())
            .into_iter()
            .flat_map(|g| g.members())
            .filter_map(|m| std::str::from_utf8(m).ok())
    }

    /// The whole group, decoded from the body.
    pub fn to_group(&self) -> Group {
        Group {
            name: self.name().to_owned(),
            passwd: warm::group(self.body())
                .and_then(|g| std::str::from_utf8(g.passwd).ok())
                .unwrap_or_default()
                .to_owned(),
            gid: self.id,
            members: self.members().map(str::to_owned).collect(),
        }
    }
}

impl Cached<Ids> {
    /// The gids of the user `name` as cached.
    pub fn ids(name: &str, gids: &[u32]) -> Cached<Ids> {
        let body = encode(&Response::GroupIds(gids.to_vec()));
        Cached::new(name, 0, &body)
    }

    /// The user's name (the initgroups map's key).
    pub fn name(&self) -> &str {
        self.label()
    }

    /// The gids, in order.
    pub fn gids(&self) -> impl Iterator<Item = u32> + '_ {
        warm::gid_list(self.body()).into_iter().flat_map(warm::gids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_from_the_one_buffer() {
        let passwd = Passwd {
            name: "alice".into(),
            passwd: "x".into(),
            uid: 1001,
            gid: 500,
            gecos: "Alice".into(),
            dir: "/home/alice".into(),
            shell: "/bin/bash".into(),
        };
        let u = Cached::user(&UserRecord {
            dn: "uid=alice,ou=people,dc=example".into(),
            passwd: passwd.clone(),
        });
        assert_eq!(u.name(), "alice");
        assert_eq!(u.uid(), 1001);
        assert_eq!(u.dn(), "uid=alice,ou=people,dc=example");
        assert_eq!(u.passwd(), passwd);
        assert_eq!(u.body(), encode(&Response::Passwd(passwd)));

        let group = Group {
            name: "tools.x".into(),
            passwd: "*".into(),
            gid: 50001,
            members: vec!["alice".into(), "tools.y".into()],
        };
        let g = Cached::group(&GroupRecord {
            dn: "cn=tools.x,ou=servicegroups,dc=example".into(),
            group: group.clone(),
        });
        assert_eq!(g.name(), "tools.x");
        assert_eq!(g.gid(), 50001);
        assert_eq!(g.members().collect::<Vec<_>>(), ["alice", "tools.y"]);
        assert_eq!(g.to_group(), group);

        let ids = Cached::ids("alice", &[500, 50001]);
        assert_eq!(ids.gids().collect::<Vec<_>>(), [500, 50001]);
        assert_eq!(ids.name(), "alice");
    }
}
