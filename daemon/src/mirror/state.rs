//! The in-memory mirror: every user and group entry of the configured bases, keyed by a
//! stable entry key (the `entryUUID`, or the DN when the server has none), with the indexes a
//! lookup needs (users by name and uid, groups by name and gid, DNs to keys, and the reverse
//! membership index member -> groups that initgroups reads). Every index is kept up to date
//! incrementally by [`State::upsert`] and [`State::remove`]; answers are derived on demand
//! (rfc2307bis member DNs resolved against the mirror, nested groups followed, policy
//! applied exactly as to single lookups), so derived data can never drift from the entries.

use std::collections::{HashMap, HashSet};

use toolforge_nss_config::Schema;
use toolforge_nss_protocol::names::is_valid_name;

use crate::directory::members::normalize_dn;
use crate::mapping::{Mapper, RawEntry};
use crate::policy::Policy;
use crate::records::{GroupRecord, Membership, UserRecord};

/// A DN as the indexes hold it: two spellings of one DN are one key (as in lookup mode).
fn norm(dn: &str) -> String {
    normalize_dn(dn).unwrap_or_else(|| dn.trim().to_ascii_lowercase())
}

/// Which map an entry belongs to (which search found it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
}

/// A group as held: the record without members, and its raw member values (names for
/// RFC 2307, normalised DNs for RFC 2307bis).
#[derive(Clone, Debug)]
pub struct HeldGroup {
    pub record: GroupRecord,
    pub members: Vec<String>,
    /// The group's DN normalised (what member values of parent groups hold).
    pub ndn: String,
}

/// The mirror: mapped records (policy is applied when answering, so a changed policy applies
/// at once) and their indexes.
#[derive(Default)]
pub struct State {
    schema: Schema,
    /// `ldap.group_nesting_level`: levels of nested groups followed, as in lookup mode.
    nesting: u32,
    users: HashMap<String, UserRecord>,
    groups: HashMap<String, HeldGroup>,
    user_by_dn: HashMap<String, String>,
    /// Key -> the user's normalised DN (initgroups starts from it).
    user_ndn: HashMap<String, String>,
    group_by_dn: HashMap<String, String>,
    users_by_name: HashMap<String, Keys>,
    users_by_uid: HashMap<u32, Keys>,
    groups_by_name: HashMap<String, Keys>,
    groups_by_gid: HashMap<u32, Keys>,
    /// Member value (name or lowercased DN) -> keys of the groups that list it.
    member_of: HashMap<String, Keys>,
}

/// What the mirror answers for one lookup (policy applied).
#[derive(Debug, PartialEq)]
pub enum Answer {
    User(UserRecord),
    Group(GroupRecord),
    Ids(Vec<u32>),
    NotFound,
}

/// The keys of the entries an index value points to: almost always one, so a small vector
/// (a set per value would cost a hash table each).
type Keys = Vec<String>;

fn index<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Keys>, k: K, key: &str) {
    let keys = m.entry(k).or_default();
    if !keys.iter().any(|x| x == key) {
        keys.push(key.to_owned());
        keys.shrink_to_fit();
    }
}

fn unindex<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Keys>, k: &K, key: &str) {
    if let Some(keys) = m.get_mut(k) {
        keys.retain(|x| x != key);
        if keys.is_empty() {
            m.remove(k);
        }
    }
}

/// The single key of an index entry; none when absent or ambiguous (several entries claim
/// the name or id: serving either would hand one the other's files).
fn only<'a, K: std::hash::Hash + Eq>(m: &'a HashMap<K, Keys>, k: &K) -> Option<&'a str> {
    match m.get(k)?.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    }
}

impl State {
    pub fn new(schema: Schema, nesting: u32) -> State {
        State {
            schema,
            nesting,
            ..State::default()
        }
    }

    /// Users plus groups held.
    pub fn len(&self) -> usize {
        self.users.len() + self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.groups.len())
    }

    /// Adds or replaces the entry `key` (a rename or a changed uid moves it in every index);
    /// `Err` (why) for an entry the mapping refuses, which is then not held.
    pub fn upsert(
        &mut self,
        mapper: &Mapper,
        kind: Kind,
        key: &str,
        e: RawEntry,
    ) -> Result<(), String> {
        self.remove(kind, key);
        match kind {
            Kind::User => {
                let u = mapper.user(&e, None)?;
                self.insert_user(key, u);
            }
            Kind::Group => {
                let mut g = mapper.group(&e, None)?.record;
                let members: Vec<String> = match self.schema {
                    Schema::Rfc2307 => std::mem::take(&mut g.group.members),
                    Schema::Rfc2307bis => {
                        g.group.members = Vec::new();
                        let attr = mapper.membership_attr();
                        let mut v: Vec<String> = e
                            .attrs
                            .get(attr)
                            .map(|v| v.iter().map(|d| norm(d)).collect())
                            .unwrap_or_default();
                        v.sort_unstable();
                        v.dedup();
                        v
                    }
                };
                self.insert_group(key, g, members);
            }
        }
        Ok(())
    }

    /// Adds a mapped user under `key` (replacing one held under it).
    pub fn insert_user(&mut self, key: &str, mut u: UserRecord) {
        self.remove(Kind::User, key);
        shrink_user(&mut u);
        let ndn = norm(&u.dn);
        self.user_by_dn.insert(ndn.clone(), key.to_owned());
        self.user_ndn.insert(key.to_owned(), ndn);
        index(&mut self.users_by_name, u.passwd.name.clone(), key);
        index(&mut self.users_by_uid, u.passwd.uid, key);
        self.users.insert(key.to_owned(), u);
    }

    /// Adds a group under `key` with its raw member values (names, or normalised DNs).
    pub fn insert_group(&mut self, key: &str, mut g: GroupRecord, mut members: Vec<String>) {
        self.remove(Kind::Group, key);
        g.dn.shrink_to_fit();
        g.group.name.shrink_to_fit();
        members.shrink_to_fit();
        for m in &members {
            index(&mut self.member_of, m.clone(), key);
        }
        let ndn = norm(&g.dn);
        self.group_by_dn.insert(ndn.clone(), key.to_owned());
        index(&mut self.groups_by_name, g.group.name.clone(), key);
        index(&mut self.groups_by_gid, g.group.gid, key);
        self.groups.insert(
            key.to_owned(),
            HeldGroup {
                record: g,
                members,
                ndn,
            },
        );
    }

    /// Every user held, by key (persistence).
    pub fn users(&self) -> impl Iterator<Item = (&String, &UserRecord)> {
        self.users.iter()
    }

    /// Every group held, by key (persistence).
    pub fn groups(&self) -> impl Iterator<Item = (&String, &HeldGroup)> {
        self.groups.iter()
    }

    /// The DN of the entry held under `key`.
    pub fn dn_of(&self, kind: Kind, key: &str) -> Option<&str> {
        match kind {
            Kind::User => self.users.get(key).map(|u| u.dn.as_str()),
            Kind::Group => self.groups.get(key).map(|g| g.record.dn.as_str()),
        }
    }

    /// Removes the entry `key` from every index; `true` when it was held.
    pub fn remove(&mut self, kind: Kind, key: &str) -> bool {
        match kind {
            Kind::User => {
                let Some(u) = self.users.remove(key) else {
                    return false;
                };
                if let Some(ndn) = self.user_ndn.remove(key) {
                    self.user_by_dn.remove(&ndn);
                }
                unindex(&mut self.users_by_name, &u.passwd.name, key);
                unindex(&mut self.users_by_uid, &u.passwd.uid, key);
            }
            Kind::Group => {
                let Some(g) = self.groups.remove(key) else {
                    return false;
                };
                for m in &g.members {
                    unindex(&mut self.member_of, m, key);
                }
                self.group_by_dn.remove(&g.ndn);
                unindex(&mut self.groups_by_name, &g.record.group.name, key);
                unindex(&mut self.groups_by_gid, &g.record.group.gid, key);
            }
        }
        true
    }

    /// Keys held of one kind (for the present phase of a sync and reconciliations).
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::User => self.users.keys().cloned().collect(),
            Kind::Group => self.groups.keys().cloned().collect(),
        }
    }

    fn user_answer(&self, key: Option<&str>, policy: &Policy) -> Answer {
        match key.and_then(|k| self.users.get(k)) {
            Some(u) => policy
                .user(u.clone())
                .map_or(Answer::NotFound, Answer::User),
            None => Answer::NotFound,
        }
    }

    pub fn user_by_name(&self, name: &str, policy: &Policy) -> Answer {
        self.user_answer(only(&self.users_by_name, &name.to_owned()), policy)
    }

    pub fn user_by_uid(&self, uid: u32, policy: &Policy) -> Answer {
        self.user_answer(only(&self.users_by_uid, &uid), policy)
    }

    /// Member names of a group: RFC 2307 names as listed; RFC 2307bis DNs resolved against
    /// the mirror as lookup mode resolves them (`directory::members`): users at any level,
    /// a member group met at level L <= `nesting` expanded at level L + 1, DNs that name no
    /// entry dropped.
    fn members_of(&self, g: &HeldGroup) -> Vec<String> {
        let mut out = Vec::new();
        match self.schema {
            Schema::Rfc2307 => out.extend(
                g.members
                    .iter()
                    .filter(|m| is_valid_name(m.as_bytes()))
                    .cloned(),
            ),
            Schema::Rfc2307bis => {
                let mut seen = HashSet::new();
                self.collect(&g.members, 1, &mut seen, &mut out);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect<'a>(
        &'a self,
        dns: &'a [String],
        level: u32,
        seen: &mut HashSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        for dn in dns {
            if let Some(u) = self.user_by_dn.get(dn).and_then(|k| self.users.get(k)) {
                out.push(u.passwd.name.clone());
            } else if let Some(n) = self.group_by_dn.get(dn).and_then(|k| self.groups.get(k)) {
                if level <= self.nesting && seen.insert(dn.as_str()) {
                    self.collect(&n.members, level + 1, seen, out);
                }
            }
        }
    }

    fn group_answer(&self, key: Option<&str>, policy: &Policy) -> Answer {
        let Some(g) = key.and_then(|k| self.groups.get(k)) else {
            return Answer::NotFound;
        };
        let mut rec = g.record.clone();
        rec.group.members = self.members_of(g);
        policy.group(rec).map_or(Answer::NotFound, Answer::Group)
    }

    pub fn group_by_name(&self, name: &str, policy: &Policy) -> Answer {
        self.group_answer(only(&self.groups_by_name, &name.to_owned()), policy)
    }

    pub fn group_by_gid(&self, gid: u32, policy: &Policy) -> Answer {
        self.group_answer(only(&self.groups_by_gid, &gid), policy)
    }

    /// The gids of the groups that list `name` (RFC 2307), or its DN (RFC 2307bis) and then
    /// up to `nesting` levels of the groups that list those (as lookup mode climbs), policy
    /// applied; `NotFound` when none.
    pub fn groups_of(&self, name: &str, policy: &Policy) -> Answer {
        let start: Vec<String> = match self.schema {
            Schema::Rfc2307 => vec![name.to_owned()],
            Schema::Rfc2307bis => {
                match only(&self.users_by_name, &name.to_owned()).and_then(|k| self.user_ndn.get(k))
                {
                    Some(ndn) => vec![ndn.clone()],
                    None => return Answer::NotFound,
                }
            }
        };
        let mut seen: HashSet<&str> = HashSet::new();
        let mut gids = Vec::new();
        let mut level_members = start;
        let mut level = 0u32;
        loop {
            let mut parents = Vec::new();
            for m in &level_members {
                for key in self.member_of.get(m).into_iter().flatten() {
                    let Some(g) = self.groups.get(key) else {
                        continue;
                    };
                    if !seen.insert(key.as_str()) {
                        continue;
                    }
                    let ms = Membership {
                        name: g.record.group.name.clone(),
                        gid: g.record.group.gid,
                    };
                    if policy.membership_allowed(&ms) {
                        gids.push(ms.gid);
                    }
                    parents.push(g.ndn.clone());
                }
            }
            if self.schema == Schema::Rfc2307 || level >= self.nesting || parents.is_empty() {
                break;
            }
            level += 1;
            level_members = parents;
        }
        gids.sort_unstable();
        gids.dedup();
        if gids.is_empty() {
            Answer::NotFound
        } else {
            Answer::Ids(gids)
        }
    }
}

impl State {
    /// Every user served (policy applied; ambiguous names left out), with whether its uid is
    /// claimed by it alone (only then is it served by uid).
    pub fn served_users(&self, policy: &Policy) -> Vec<(UserRecord, bool)> {
        let mut out = Vec::with_capacity(self.users.len());
        for (name, keys) in &self.users_by_name {
            let Some(Answer::User(u)) = (keys.len() == 1).then(|| self.user_by_name(name, policy))
            else {
                continue;
            };
            let unique = self
                .users_by_uid
                .get(&u.passwd.uid)
                .is_some_and(|k| k.len() == 1);
            out.push((u, unique));
        }
        out
    }

    /// Every group served, as [`State::served_users`].
    pub fn served_groups(&self, policy: &Policy) -> Vec<(GroupRecord, bool)> {
        let mut out = Vec::with_capacity(self.groups.len());
        for (name, keys) in &self.groups_by_name {
            let Some(Answer::Group(g)) =
                (keys.len() == 1).then(|| self.group_by_name(name, policy))
            else {
                continue;
            };
            let unique = self
                .groups_by_gid
                .get(&g.group.gid)
                .is_some_and(|k| k.len() == 1);
            out.push((g, unique));
        }
        out
    }
}

fn shrink_user(u: &mut UserRecord) {
    let p = &mut u.passwd;
    for f in [
        &mut u.dn,
        &mut p.name,
        &mut p.passwd,
        &mut p.gecos,
        &mut p.dir,
        &mut p.shell,
    ] {
        f.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolforge_nss_config::{AttributeMap, PolicyConfig};

    fn entry(dn: &str, kv: &[(&str, &[&str])]) -> RawEntry {
        RawEntry::new(
            dn.into(),
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    fn user(name: &str, uid: &str) -> RawEntry {
        entry(
            &format!("uid={name},ou=people,dc=x"),
            &[
                ("uid", &[name]),
                ("uidNumber", &[uid]),
                ("gidNumber", &[uid]),
                ("homeDirectory", &["/home/x"]),
            ],
        )
    }

    #[test]
    fn bis_members_renames_and_reverse_index_stay_consistent() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307bis, 2);
        s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
            .unwrap();
        s.upsert(&mapper, Kind::User, "u2", user("bob", "5002"))
            .unwrap();
        s.upsert(
            &mapper,
            Kind::Group,
            "g1",
            entry(
                "cn=inner,ou=groups,dc=x",
                &[
                    ("cn", &["inner"]),
                    ("gidNumber", &["7001"]),
                    ("member", &["uid=alice,ou=people,dc=x"]),
                ],
            ),
        )
        .unwrap();
        s.upsert(
            &mapper,
            Kind::Group,
            "g2",
            entry(
                "cn=outer,ou=groups,dc=x",
                &[
                    ("cn", &["outer"]),
                    ("gidNumber", &["7002"]),
                    (
                        "member",
                        &[
                            "cn=inner,ou=groups,dc=x",
                            "UID=bob,ou=people,dc=x",
                            "uid=ghost,ou=people,dc=x",
                        ],
                    ),
                ],
            ),
        )
        .unwrap();
        let Answer::Group(g) = s.group_by_name("outer", &policy) else {
            panic!()
        };
        assert_eq!(g.group.members, vec!["alice", "bob"]);
        assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7001, 7002]));
        // alice renamed (same key, new DN): the old DN no longer resolves.
        s.upsert(&mapper, Kind::User, "u1", user("alicia", "5001"))
            .unwrap();
        let Answer::Group(g) = s.group_by_name("outer", &policy) else {
            panic!()
        };
        assert_eq!(g.group.members, vec!["bob"]);
        assert_eq!(s.user_by_name("alice", &policy), Answer::NotFound);
        assert!(
            matches!(s.user_by_uid(5001, &policy), Answer::User(u) if u.passwd.name == "alicia")
        );
        // A group deleted leaves no trace in the reverse index.
        assert!(s.remove(Kind::Group, "g2"));
        assert_eq!(s.groups_of("bob", &policy), Answer::NotFound);
        // Two users claiming one uid: neither is served by uid.
        s.upsert(&mapper, Kind::User, "u3", user("carol", "5002"))
            .unwrap();
        assert_eq!(s.user_by_uid(5002, &policy), Answer::NotFound);
        assert!(matches!(s.user_by_name("carol", &policy), Answer::User(_)));
    }

    #[test]
    fn policy_applies_to_mirror_answers() {
        let mapper = Mapper::new(Schema::Rfc2307, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307, 2);
        s.upsert(&mapper, Kind::User, "r", user("root", "0"))
            .unwrap();
        s.upsert(&mapper, Kind::User, "z", user("zero", "0"))
            .unwrap();
        s.upsert(
            &mapper,
            Kind::Group,
            "g",
            entry(
                "cn=wheel,dc=x",
                &[
                    ("cn", &["wheel"]),
                    ("gidNumber", &["0"]),
                    ("memberUid", &["zero"]),
                ],
            ),
        )
        .unwrap();
        assert_eq!(s.user_by_name("root", &policy), Answer::NotFound);
        assert_eq!(s.user_by_uid(0, &policy), Answer::NotFound);
        assert_eq!(s.group_by_gid(0, &policy), Answer::NotFound);
        assert_eq!(s.groups_of("zero", &policy), Answer::NotFound);
    }
}
