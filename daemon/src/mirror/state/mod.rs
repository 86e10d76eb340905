//! The in-memory mirror: every user and group entry of the configured bases, keyed by a
//! stable entry key (the `entryUUID`, or the DN when the server has none), with the indexes a
//! lookup needs (users by name and uid, groups by name and gid, DNs to entries, and the
//! reverse membership index member -> groups that initgroups reads). Every index is kept up
//! to date incrementally by [`State::upsert`] and [`State::remove`]; answers are derived on
//! demand (rfc2307bis member DNs resolved against the mirror, nested groups followed, policy
//! applied exactly as to single lookups), so derived data can never drift from the entries.
//!
//! Held compactly (a Toolforge-sized directory is 40,000 entries): entries live in slabs
//! (`Slab`) under `u32` ids; every string (a user's DN and passwd fields one after the
//! other, a group's DN and name, the interned values) is in one buffer (`Texts`, `u32`
//! offsets: 4 GiB, far beyond `mirror.max_entries`), so the whole mirror is a few large
//! allocations that never pin heap pages among a load's short-lived ones; every index is a `hashbrown::HashTable` of ids hashed by the field the slab
//! holds (no key is stored twice), and a multiset: a name or id claimed by two entries is
//! simply there twice, which is how ambiguity is seen. Member values (names for RFC 2307,
//! normalised DNs for RFC 2307bis) and the normalised DNs of the entries themselves are
//! interned once each (`Value`, reference-counted); a value knows the user and the group
//! whose DN it is, so a member DN that arrives before its entry resolves as soon as the entry
//! does, and stops resolving when the entry is renamed or deleted. The entry key (a UUID in
//! 16 bytes) lives only in its entry.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;
use toolforge_nss_config::Schema;
use toolforge_nss_protocol::names::is_valid_name;
use toolforge_nss_protocol::Group;

use crate::mapping::{Mapper, RawEntry};
use crate::policy::Policy;
use crate::records::{GroupRecord, Membership, UserRecord};

mod changes;
mod layout;

pub use changes::{ChangedKeys, Changes};
use layout::{norm, HeldGroup, Key, Slab, Span, Texts, User, Value, NONE, REPACK_MIN};

/// Which map an entry belongs to (which search found it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
}

/// A user as persisted (`store.rs`).
pub struct UserView<'a> {
    pub key: String,
    pub dn: &'a str,
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a str,
    pub dir: &'a str,
    pub shell: &'a str,
}

/// A group as persisted: its raw member values (names, or normalised DNs).
pub struct GroupView<'a> {
    pub key: String,
    pub dn: &'a str,
    pub name: &'a str,
    pub gid: u32,
    pub members: Vec<&'a str>,
}

/// The mirror: mapped records (policy is applied when answering, so a changed policy applies
/// at once) and their indexes.
#[derive(Default)]
pub struct State {
    schema: Schema,
    /// `ldap.group_nesting_level`: levels of nested groups followed, as in lookup mode.
    nesting: u32,
    hasher: RandomState,
    texts: Texts,
    users: Slab<User>,
    groups: Slab<HeldGroup>,
    values: Slab<Value>,
    /// Ids by entry key.
    user_keys: HashTable<u32>,
    group_keys: HashTable<u32>,
    /// Ids by name and by number (multisets: an ambiguous name is there twice).
    users_by_name: HashTable<u32>,
    users_by_uid: HashTable<u32>,
    groups_by_name: HashTable<u32>,
    groups_by_gid: HashTable<u32>,
    /// Value ids by text.
    value_ids: HashTable<u32>,
    /// (member value, group id), by member value: the groups that list a value.
    member_of: HashTable<(u32, u32)>,
    /// What changed since the publisher last took them (a new state: everything).
    changes: Changes,
}

/// What the mirror answers for one lookup (policy applied).
#[derive(Debug, PartialEq)]
pub enum Answer {
    User(UserRecord),
    Group(GroupRecord),
    Ids(Vec<u32>),
    NotFound,
}

/// The single id among the matches of an index lookup; none when absent or ambiguous (several
/// entries claim the name or id: serving either would hand one the other's files).
fn only(mut ids: impl Iterator<Item = u32>) -> Option<u32> {
    let first = ids.next()?;
    ids.next().is_none().then_some(first)
}

fn hash<T: Hash + ?Sized>(h: &RandomState, t: &T) -> u64 {
    h.hash_one(t)
}

/// Removes `id` from a multiset index, where it was inserted under `at`.
fn unindex(t: &mut HashTable<u32>, at: u64, id: u32) {
    if let Ok(e) = t.find_entry(at, |&x| x == id) {
        e.remove();
    }
}

fn user_at(users: &Slab<User>, id: u32) -> &User {
    // Every id in an index is held: the indexes change with the slab.
    users.get(id).expect("a user index points at a held user")
}

fn group_at(groups: &Slab<HeldGroup>, id: u32) -> &HeldGroup {
    groups
        .get(id)
        .expect("a group index points at a held group")
}

fn value_at(values: &Slab<Value>, id: u32) -> &Value {
    values.get(id).expect("an interned value is held")
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
        self.users.len + self.groups.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.users.len, self.groups.len)
    }

    /// The bytes the mirror holds on the heap (capacities, not lengths): its strings, slabs,
    /// indexes and member lists (status, metrics).
    pub fn heap_bytes(&self) -> usize {
        fn table<T>(t: &HashTable<T>) -> usize {
            // A bucket per slot plus its control byte (and a group's worth of trailing ones).
            if t.capacity() == 0 {
                0
            } else {
                let buckets = (t.capacity() * 8 / 7).next_power_of_two();
                buckets * (std::mem::size_of::<T>() + 1) + 16
            }
        }
        fn slab<T>(s: &Slab<T>) -> usize {
            s.items.capacity() * std::mem::size_of::<Option<T>>() + s.free.capacity() * 4
        }
        let key = |k: &Key| match k {
            Key::Text(t) => t.len(),
            Key::Uuid(_) => 0,
        };
        self.texts.buf.capacity()
            + slab(&self.users)
            + slab(&self.groups)
            + slab(&self.values)
            + [
                &self.user_keys,
                &self.users_by_name,
                &self.users_by_uid,
                &self.group_keys,
                &self.groups_by_name,
                &self.groups_by_gid,
                &self.value_ids,
            ]
            .into_iter()
            .map(table)
            .sum::<usize>()
            + table(&self.member_of)
            + self.users.iter().map(|(_, u)| key(&u.key)).sum::<usize>()
            + self
                .groups
                .iter()
                .map(|(_, g)| key(&g.key) + g.members.len() * 4)
                .sum::<usize>()
    }

    /// Gives back what the load's growth left over (after a load or a restore).
    pub fn compact(&mut self) {
        let h = &self.hasher;
        let (users, groups, values, t) = (&self.users, &self.groups, &self.values, &self.texts);
        self.user_keys
            .shrink_to_fit(|&i| hash(h, &user_at(users, i).key));
        self.users_by_name
            .shrink_to_fit(|&i| hash(h, user_at(users, i).name(t)));
        self.users_by_uid
            .shrink_to_fit(|&i| hash(h, &user_at(users, i).uid));
        self.group_keys
            .shrink_to_fit(|&i| hash(h, &group_at(groups, i).key));
        self.groups_by_name
            .shrink_to_fit(|&i| hash(h, t.get(group_at(groups, i).name)));
        self.groups_by_gid
            .shrink_to_fit(|&i| hash(h, &group_at(groups, i).gid));
        self.value_ids
            .shrink_to_fit(|&i| hash(h, t.get(value_at(values, i).text)));
        self.member_of.shrink_to_fit(|&(v, _)| hash(h, &v));
        self.users.shrink();
        self.groups.shrink();
        self.values.shrink();
        if self.texts.dead > 0 {
            self.repack();
        }
        self.texts.buf.shrink_to_fit();
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
        // A refused entry is not held (the one it replaces goes); an accepted one replaces
        // it in place (see `insert_user`, `insert_group`: what changed is noted).
        let refused = |s: &mut State, why: String| {
            s.remove(kind, key);
            Err(why)
        };
        // Offsets into the string buffer are u32: an entry that would take it past 4 GiB
        // (unreachable within `mirror.max_entries` of directory-sized entries) is refused.
        let size: usize =
            e.attrs.values().flatten().map(String::len).sum::<usize>() + 2 * e.dn.len();
        if !self.has_room_for(size) {
            return refused(self, "the mirror's strings would pass 4 GiB".into());
        }
        match kind {
            Kind::User => {
                let u = match mapper.user(&e, None) {
                    Ok(u) => u,
                    Err(why) => return refused(self, why),
                };
                self.insert_user(key, u);
            }
            Kind::Group => {
                let mut g = match mapper.group(&e, None) {
                    Ok(g) => g.record,
                    Err(why) => return refused(self, why),
                };
                let members: Vec<String> = match self.schema {
                    Schema::Rfc2307 => std::mem::take(&mut g.group.members),
                    Schema::Rfc2307bis => {
                        g.group.members = Vec::new();
                        let attr = mapper.membership_attr();
                        e.attrs
                            .get(attr)
                            .map(|v| v.iter().map(|d| norm(d)).collect())
                            .unwrap_or_default()
                    }
                };
                self.insert_group(key, g, members);
            }
        }
        Ok(())
    }

    /// The value `text`, interned (a reference taken).
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(id) = self.value_id(text) {
            if let Some(v) = self.values.get_mut(id) {
                v.refs += 1;
            }
            return id;
        }
        let span = self.texts.push(text);
        let id = self.values.insert(Value {
            text: span,
            refs: 1,
            user: NONE,
            group: NONE,
        });
        let (h, values, t) = (&self.hasher, &self.values, &self.texts);
        self.value_ids.insert_unique(hash(h, text), id, |&i| {
            hash(h, t.get(value_at(values, i).text))
        });
        id
    }

    /// Drops a reference to the value `id`; the last one frees it.
    fn release(&mut self, id: u32) {
        let Some(v) = self.values.get_mut(id) else {
            return;
        };
        v.refs -= 1;
        if v.refs == 0 {
            let span = v.text;
            let at = hash(&self.hasher, self.texts.get(span));
            unindex(&mut self.value_ids, at, id);
            self.values.remove(id);
            self.texts.free(span);
        }
    }

    fn value_id(&self, text: &str) -> Option<u32> {
        let (values, t) = (&self.values, &self.texts);
        self.value_ids
            .find(hash(&self.hasher, text), |&i| {
                t.get(value_at(values, i).text) == text
            })
            .copied()
    }

    fn user_id(&self, key: &Key) -> Option<u32> {
        let users = &self.users;
        self.user_keys
            .find(hash(&self.hasher, key), |&i| user_at(users, i).key == *key)
            .copied()
    }

    fn group_id(&self, key: &Key) -> Option<u32> {
        let groups = &self.groups;
        self.group_keys
            .find(hash(&self.hasher, key), |&i| {
                group_at(groups, i).key == *key
            })
            .copied()
    }

    /// Ids of the users named `name` (several: ambiguous).
    fn users_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.users_by_name
            .iter_hash(hash(&self.hasher, name))
            .copied()
            .filter(move |&i| user_at(&self.users, i).name(&self.texts) == name)
    }

    fn users_with_uid(&self, uid: u32) -> impl Iterator<Item = u32> + '_ {
        self.users_by_uid
            .iter_hash(hash(&self.hasher, &uid))
            .copied()
            .filter(move |&i| user_at(&self.users, i).uid == uid)
    }

    fn groups_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.groups_by_name
            .iter_hash(hash(&self.hasher, name))
            .copied()
            .filter(move |&i| self.texts.get(group_at(&self.groups, i).name) == name)
    }

    fn groups_with_gid(&self, gid: u32) -> impl Iterator<Item = u32> + '_ {
        self.groups_by_gid
            .iter_hash(hash(&self.hasher, &gid))
            .copied()
            .filter(move |&i| group_at(&self.groups, i).gid == gid)
    }

    /// The groups (ids) that list the value `v`.
    fn listing(&self, v: u32) -> impl Iterator<Item = u32> + '_ {
        self.member_of
            .iter_hash(hash(&self.hasher, &v))
            .filter(move |&&(m, _)| m == v)
            .map(|&(_, g)| g)
    }

    /// Adds a mapped user under `key` (replacing one held under it).
    /// Whether `bytes` more of strings fit the string buffer's `u32` offsets (every way in,
    /// [`State::upsert`] and a restored file, checks before it inserts).
    pub fn has_room_for(&self, bytes: usize) -> bool {
        self.texts.buf.len().saturating_add(bytes) <= u32::MAX as usize
    }

    pub fn insert_user(&mut self, key: &str, u: UserRecord) {
        // The same name and DN: group member lists that show it do not change.
        let dn = match self.schema {
            Schema::Rfc2307bis => Some(norm(&u.dn)),
            Schema::Rfc2307 => None,
        };
        let moved = match self.user_id(&Key::new(key)) {
            Some(id) => {
                let old = user_at(&self.users, id);
                let moved = old.name(&self.texts) != u.passwd.name
                    || self.value_text(old.ndn) != dn.as_deref();
                self.note_user(id, moved);
                self.remove_as(Kind::User, key, false);
                moved
            }
            None => true,
        };
        let p = u.passwd;
        self.texts
            .reserve(u.dn.len() + p.name.len() + p.gecos.len() + p.dir.len() + p.shell.len());
        let start = self.texts.buf.len();
        let mut ends = [0u32; 4];
        for (i, f) in [&u.dn, &p.name, &p.gecos, &p.dir].into_iter().enumerate() {
            self.texts.buf.push_str(f);
            ends[i] = (self.texts.buf.len() - start) as u32;
        }
        self.texts.buf.push_str(&p.shell);
        let text = Span {
            at: start as u32,
            len: (self.texts.buf.len() - start) as u32,
        };
        let ndn = match dn {
            Some(dn) => self.intern(&dn),
            None => NONE,
        };
        let id = self.users.insert(User {
            key: Key::new(key),
            text,
            ends,
            uid: p.uid,
            gid: p.gid,
            ndn,
        });
        if let Some(v) = self.values.get_mut(ndn) {
            v.user = id;
        }
        let (h, users, t) = (&self.hasher, &self.users, &self.texts);
        let u = user_at(users, id);
        self.user_keys
            .insert_unique(hash(h, &u.key), id, |&i| hash(h, &user_at(users, i).key));
        self.users_by_name
            .insert_unique(hash(h, u.name(t)), id, |&i| {
                hash(h, user_at(users, i).name(t))
            });
        self.users_by_uid
            .insert_unique(hash(h, &u.uid), id, |&i| hash(h, &user_at(users, i).uid));
        self.note_user(id, moved);
    }

    /// Adds a group under `key` with its raw member values (names, or normalised DNs).
    pub fn insert_group(&mut self, key: &str, g: GroupRecord, mut members: Vec<String>) {
        members.sort_unstable();
        members.dedup();
        let dn = match self.schema {
            Schema::Rfc2307bis => Some(norm(&g.dn)),
            Schema::Rfc2307 => None,
        };
        // The same name, gid and DN: only the members that came or went are noted (a
        // member added to a 10,000-member group is one user's change, not 10,000).
        let mut changed_members = None;
        if let Some(id) = self.group_id(&Key::new(key)) {
            let old = group_at(&self.groups, id);
            let same = self.texts.get(old.name) == g.group.name
                && old.gid == g.group.gid
                && self.value_text(old.ndn) == dn.as_deref();
            if same {
                let was: Vec<String> = old
                    .members
                    .iter()
                    .map(|&v| self.texts.get(value_at(&self.values, v).text).to_owned())
                    .collect();
                changed_members = Some(changes::symmetric_difference(&was, &members));
            } else {
                self.note_group(id);
            }
            self.remove_as(Kind::Group, key, false);
        }
        let member_ids: Box<[u32]> = members.iter().map(|m| self.intern(m)).collect();
        drop(members);
        let ndn = match dn {
            Some(dn) => self.intern(&dn),
            None => NONE,
        };
        let id = self.groups.insert(HeldGroup {
            key: Key::new(key),
            dn: self.texts.push(&g.dn),
            name: self.texts.push(&g.group.name),
            gid: g.group.gid,
            ndn,
            members: member_ids,
        });
        if let Some(v) = self.values.get_mut(ndn) {
            v.group = id;
        }
        let (h, groups, t) = (&self.hasher, &self.groups, &self.texts);
        let g = group_at(groups, id);
        for &v in g.members.iter() {
            self.member_of
                .insert_unique(hash(h, &v), (v, id), |&(v, _)| hash(h, &v));
        }
        self.group_keys
            .insert_unique(hash(h, &g.key), id, |&i| hash(h, &group_at(groups, i).key));
        self.groups_by_name
            .insert_unique(hash(h, t.get(g.name)), id, |&i| {
                hash(h, t.get(group_at(groups, i).name))
            });
        self.groups_by_gid
            .insert_unique(hash(h, &g.gid), id, |&i| hash(h, &group_at(groups, i).gid));
        match changed_members {
            Some(changed) => self.note_members_of(id, &changed),
            None => self.note_group(id),
        }
    }

    /// The text of the value `v` (`None` for `NONE`).
    fn value_text(&self, v: u32) -> Option<&str> {
        self.values.get(v).map(|v| self.texts.get(v.text))
    }

    /// Every user held (persistence).
    pub fn users(&self) -> impl Iterator<Item = UserView<'_>> {
        let t = &self.texts;
        self.users.iter().map(move |(_, u)| UserView {
            key: u.key.text(),
            dn: u.dn(t),
            name: u.name(t),
            uid: u.uid,
            gid: u.gid,
            gecos: u.field(t, 2),
            dir: u.field(t, 3),
            shell: u.field(t, 4),
        })
    }

    /// Every group held, with its raw member values (persistence).
    pub fn groups(&self) -> impl Iterator<Item = GroupView<'_>> {
        self.groups.iter().map(|(_, g)| GroupView {
            key: g.key.text(),
            dn: self.texts.get(g.dn),
            name: self.texts.get(g.name),
            gid: g.gid,
            members: g
                .members
                .iter()
                .map(|&v| self.texts.get(value_at(&self.values, v).text))
                .collect(),
        })
    }

    /// The DN of the entry held under `key`.
    pub fn dn_of(&self, kind: Kind, key: &str) -> Option<&str> {
        let key = Key::new(key);
        match kind {
            Kind::User => self
                .user_id(&key)
                .map(|i| user_at(&self.users, i).dn(&self.texts)),
            Kind::Group => self
                .group_id(&key)
                .map(|i| self.texts.get(group_at(&self.groups, i).dn)),
        }
    }

    /// Removes the entry `key` from every index; `true` when it was held.
    pub fn remove(&mut self, kind: Kind, key: &str) -> bool {
        self.remove_as(kind, key, true)
    }

    /// [`State::remove`]; `note`: what the removal changes is noted (a replacement notes it
    /// itself).
    fn remove_as(&mut self, kind: Kind, key: &str, note: bool) -> bool {
        let key = Key::new(key);
        match kind {
            Kind::User => {
                let Some(id) = self.user_id(&key) else {
                    return false;
                };
                if note {
                    self.note_user(id, true);
                }
                let h = &self.hasher;
                let u = user_at(&self.users, id);
                unindex(&mut self.user_keys, hash(h, &u.key), id);
                unindex(&mut self.users_by_name, hash(h, u.name(&self.texts)), id);
                unindex(&mut self.users_by_uid, hash(h, &u.uid), id);
                let (ndn, text) = (u.ndn, u.text);
                self.users.remove(id);
                self.texts.free(text);
                if let Some(v) = self.values.get_mut(ndn) {
                    if v.user == id {
                        v.user = NONE;
                    }
                    self.release(ndn);
                }
            }
            Kind::Group => {
                let Some(id) = self.group_id(&key) else {
                    return false;
                };
                if note {
                    self.note_group(id);
                }
                let h = &self.hasher;
                let g = group_at(&self.groups, id);
                unindex(&mut self.group_keys, hash(h, &g.key), id);
                unindex(
                    &mut self.groups_by_name,
                    hash(h, self.texts.get(g.name)),
                    id,
                );
                unindex(&mut self.groups_by_gid, hash(h, &g.gid), id);
                for &v in g.members.iter() {
                    if let Ok(e) = self
                        .member_of
                        .find_entry(hash(h, &v), |&(m, gr)| m == v && gr == id)
                    {
                        e.remove();
                    }
                }
                let Some(g) = self.groups.remove(id) else {
                    return false;
                };
                self.texts.free(g.dn);
                self.texts.free(g.name);
                for &v in g.members.iter() {
                    self.release(v);
                }
                if let Some(v) = self.values.get_mut(g.ndn) {
                    if v.group == id {
                        v.group = NONE;
                    }
                    self.release(g.ndn);
                }
            }
        }
        if self.texts.dead > REPACK_MIN && self.texts.dead * 2 > self.texts.buf.len() {
            self.repack();
        }
        true
    }

    /// Copies the live strings into a new buffer (dead bytes dropped) and points every
    /// entry and value at its copy. Hashes are of the strings, so no index changes.
    fn repack(&mut self) {
        let old = std::mem::take(&mut self.texts);
        let mut new = Texts {
            buf: String::with_capacity(old.buf.len() - old.dead),
            dead: 0,
        };
        for u in self.users.items.iter_mut().flatten() {
            u.text = new.push(old.get(u.text));
        }
        for g in self.groups.items.iter_mut().flatten() {
            g.dn = new.push(old.get(g.dn));
            g.name = new.push(old.get(g.name));
        }
        for v in self.values.items.iter_mut().flatten() {
            v.text = new.push(old.get(v.text));
        }
        self.texts = new;
    }

    /// Keys held of one kind (for the present phase of a sync and reconciliations).
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::User => self.users.iter().map(|(_, u)| u.key.text()).collect(),
            Kind::Group => self.groups.iter().map(|(_, g)| g.key.text()).collect(),
        }
    }

    fn user_answer(&self, id: Option<u32>, policy: &Policy) -> Answer {
        match id.and_then(|i| self.users.get(i)) {
            Some(u) => policy
                .user(u.record(&self.texts))
                .map_or(Answer::NotFound, Answer::User),
            None => Answer::NotFound,
        }
    }

    pub fn user_by_name(&self, name: &str, policy: &Policy) -> Answer {
        self.user_answer(only(self.users_named(name)), policy)
    }

    pub fn user_by_uid(&self, uid: u32, policy: &Policy) -> Answer {
        self.user_answer(only(self.users_with_uid(uid)), policy)
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
                    .map(|&v| self.texts.get(value_at(&self.values, v).text))
                    .filter(|m| is_valid_name(m.as_bytes()))
                    .map(str::to_owned),
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

    fn collect(&self, dns: &[u32], level: u32, seen: &mut HashSet<u32>, out: &mut Vec<String>) {
        for &dn in dns {
            let v = value_at(&self.values, dn);
            if let Some(u) = self.users.get(v.user) {
                out.push(u.name(&self.texts).to_owned());
            } else if let Some(n) = self.groups.get(v.group) {
                if level <= self.nesting && seen.insert(dn) {
                    self.collect(&n.members, level + 1, seen, out);
                }
            }
        }
    }

    fn group_answer(&self, id: Option<u32>, policy: &Policy) -> Answer {
        let Some(g) = id.and_then(|i| self.groups.get(i)) else {
            return Answer::NotFound;
        };
        let rec = GroupRecord {
            dn: self.texts.get(g.dn).to_owned(),
            group: Group {
                name: self.texts.get(g.name).to_owned(),
                passwd: "x".into(),
                gid: g.gid,
                members: self.members_of(g),
            },
        };
        policy.group(rec).map_or(Answer::NotFound, Answer::Group)
    }

    pub fn group_by_name(&self, name: &str, policy: &Policy) -> Answer {
        self.group_answer(only(self.groups_named(name)), policy)
    }

    pub fn group_by_gid(&self, gid: u32, policy: &Policy) -> Answer {
        self.group_answer(only(self.groups_with_gid(gid)), policy)
    }

    /// The gids of the groups that list `name` (RFC 2307), or its DN (RFC 2307bis) and then
    /// up to `nesting` levels of the groups that list those (as lookup mode climbs), policy
    /// applied; `NotFound` when none.
    pub fn groups_of(&self, name: &str, policy: &Policy) -> Answer {
        let start = match self.schema {
            Schema::Rfc2307 => self.value_id(name),
            Schema::Rfc2307bis => only(self.users_named(name))
                .map(|i| user_at(&self.users, i).ndn)
                .filter(|&v| v != NONE),
        };
        let Some(start) = start else {
            return Answer::NotFound;
        };
        let mut seen: HashSet<u32> = HashSet::new();
        let mut gids = Vec::new();
        let mut level_members = vec![start];
        let mut level = 0u32;
        loop {
            let mut parents = Vec::new();
            for &m in &level_members {
                for gid in self.listing(m) {
                    if !seen.insert(gid) {
                        continue;
                    }
                    let g = group_at(&self.groups, gid);
                    let ms = Membership {
                        name: self.texts.get(g.name).to_owned(),
                        gid: g.gid,
                    };
                    if policy.membership_allowed(&ms) {
                        gids.push(ms.gid);
                    }
                    if g.ndn != NONE {
                        parents.push(g.ndn);
                    }
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

    /// Every user served (policy applied; ambiguous names left out), with whether its uid is
    /// claimed by it alone (only then is it served by uid), one at a time.
    pub fn served_users<'a>(
        &'a self,
        policy: &'a Policy,
    ) -> impl Iterator<Item = (UserRecord, bool)> + 'a {
        self.users.iter().filter_map(move |(id, u)| {
            only(self.users_named(u.name(&self.texts)))?;
            let Answer::User(rec) = self.user_answer(Some(id), policy) else {
                return None;
            };
            let unique = only(self.users_with_uid(rec.passwd.uid)).is_some();
            Some((rec, unique))
        })
    }

    /// Every group served, as [`State::served_users`].
    pub fn served_groups<'a>(
        &'a self,
        policy: &'a Policy,
    ) -> impl Iterator<Item = (GroupRecord, bool)> + 'a {
        self.groups.iter().filter_map(move |(id, g)| {
            only(self.groups_named(self.texts.get(g.name)))?;
            let Answer::Group(rec) = self.group_answer(Some(id), policy) else {
                return None;
            };
            let unique = only(self.groups_with_gid(rec.group.gid)).is_some();
            Some((rec, unique))
        })
    }
}

#[cfg(test)]
mod tests;
