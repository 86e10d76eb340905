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
use toolforge_nss_protocol::{Group, Passwd};

use crate::directory::members::normalize_dn;
use crate::mapping::{Mapper, RawEntry};
use crate::policy::Policy;
use crate::records::{GroupRecord, Membership, UserRecord};

/// A DN as the indexes hold it: two spellings of one DN are one key (as in lookup mode).
fn norm(dn: &str) -> String {
    normalize_dn(dn).unwrap_or_else(|| dn.trim().to_ascii_lowercase())
}

/// Dead bytes in [`Texts`] worth a repack (when they are also half of it).
const REPACK_MIN: usize = 1 << 20;

/// No entry (an id field that points nowhere).
const NONE: u32 = u32::MAX;

/// Which map an entry belongs to (which search found it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
}

/// An entry key: a UUID in its canonical text form (lowercase, hyphenated: what `entryUUID`
/// and the sync state give) packed into 16 bytes, any other key as text. [`Key::new`] is
/// deterministic, so one text is always one key, and [`Key::text`] gives the text back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Key {
    fn new(s: &str) -> Key {
        match parse_uuid(s) {
            Some(u) => Key::Uuid(u),
            None => Key::Text(s.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Key::Text(t) => t.to_string(),
            Key::Uuid(u) => {
                let mut s = String::with_capacity(36);
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        s.push('-');
                    }
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 15)]));
                }
                s
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex; `None` for any
/// other text (which then stays text, so the key's text always comes back as it was).
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0usize;
    let mut hi: Option<u8> = None;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                *out.get_mut(n)? = (h << 4) | v;
                n += 1;
            }
        }
    }
    (n == 16).then_some(out)
}

/// Entries under `u32` ids; a removed entry's id is reused by the next insert.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, t: T) -> u32 {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            if let Some(slot) = self.items.get_mut(id as usize) {
                *slot = Some(t);
                return id;
            }
        }
        self.items.push(Some(t));
        (self.items.len() - 1) as u32
    }

    fn remove(&mut self, id: u32) -> Option<T> {
        let t = self.items.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.len -= 1;
        Some(t)
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.items.get_mut(id as usize)?.as_mut()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i as u32, t.as_ref()?)))
    }

    fn shrink(&mut self) {
        while self.items.last().is_some_and(Option::is_none) {
            self.items.pop();
        }
        let n = self.items.len() as u32;
        self.free.retain(|&id| id < n);
        self.items.shrink_to_fit();
        self.free.shrink_to_fit();
    }
}

/// Where a string is in [`Texts`].
#[derive(Clone, Copy, Default)]
struct Span {
    at: u32,
    len: u32,
}

/// Every string of the mirror one after the other in one buffer: a few large allocations
/// (mapped apart from the heap, given back whole) instead of one small allocation per
/// string scattered among the load's short-lived ones, which kept whole pages resident.
/// A removed string's bytes are dead until [`State::repack`] copies the live ones out.
#[derive(Default)]
struct Texts {
    buf: String,
    dead: usize,
}

impl Texts {
    /// Room for `n` more bytes, growing by an eighth (not doubling: the buffer is most of
    /// the mirror, and a change after the load should not double it).
    fn reserve(&mut self, n: usize) {
        if self.buf.capacity() - self.buf.len() < n {
            self.buf.reserve_exact(n.max(self.buf.len() / 8).max(4096));
        }
    }

    fn push(&mut self, s: &str) -> Span {
        self.reserve(s.len());
        let at = self.buf.len() as u32;
        self.buf.push_str(s);
        Span {
            at,
            len: s.len() as u32,
        }
    }

    fn get(&self, sp: Span) -> &str {
        let at = sp.at as usize;
        self.buf.get(at..at + sp.len as usize).unwrap_or_default()
    }

    fn free(&mut self, sp: Span) {
        self.dead += sp.len as usize;
    }
}

/// A user as held: its DN and passwd strings one after the other in [`Texts`].
struct User {
    key: Key,
    /// DN, name, gecos, home directory, shell.
    text: Span,
    /// Where the DN, name, gecos and home directory end in `text`.
    ends: [u32; 4],
    uid: u32,
    gid: u32,
    /// The value of its normalised DN (RFC 2307bis), else `NONE`.
    ndn: u32,
}

impl User {
    fn field<'a>(&self, t: &'a Texts, i: usize) -> &'a str {
        let text = t.get(self.text);
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(text.len(), |&e| e as usize);
        text.get(start..end).unwrap_or_default()
    }
    fn dn<'a>(&self, t: &'a Texts) -> &'a str {
        self.field(t, 0)
    }
    fn name<'a>(&self, t: &'a Texts) -> &'a str {
        self.field(t, 1)
    }
    fn record(&self, t: &Texts) -> UserRecord {
        UserRecord {
            dn: self.dn(t).to_owned(),
            passwd: Passwd {
                name: self.name(t).to_owned(),
                passwd: "x".into(),
                uid: self.uid,
                gid: self.gid,
                gecos: self.field(t, 2).to_owned(),
                dir: self.field(t, 3).to_owned(),
                shell: self.field(t, 4).to_owned(),
            },
        }
    }
}

/// A group as held: the record's fields and its members as interned values.
struct HeldGroup {
    key: Key,
    dn: Span,
    name: Span,
    gid: u32,
    /// The value of its normalised DN (RFC 2307bis: what parent groups list), else `NONE`.
    ndn: u32,
    /// Member values (names for RFC 2307, normalised DNs for RFC 2307bis), each once.
    members: Box<[u32]>,
}

/// An interned member value or normalised entry DN, with the entries whose DN it is.
struct Value {
    text: Span,
    /// Group member lists and entries that hold it.
    refs: u32,
    /// The user (`NONE`: none) and the group whose normalised DN this is (RFC 2307bis).
    user: u32,
    group: u32,
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
        self.remove(kind, key);
        // Offsets into the string buffer are u32: an entry that would take it past 4 GiB
        // (unreachable within `mirror.max_entries` of directory-sized entries) is refused.
        let size: usize =
            e.attrs.values().flatten().map(String::len).sum::<usize>() + 2 * e.dn.len();
        if self.texts.buf.len().saturating_add(size) > u32::MAX as usize {
            return Err("the mirror's strings would pass 4 GiB".into());
        }
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
    pub fn insert_user(&mut self, key: &str, u: UserRecord) {
        self.remove(Kind::User, key);
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
        let ndn = match self.schema {
            Schema::Rfc2307bis => self.intern(&norm(&u.dn)),
            Schema::Rfc2307 => NONE,
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
    }

    /// Adds a group under `key` with its raw member values (names, or normalised DNs).
    pub fn insert_group(&mut self, key: &str, g: GroupRecord, mut members: Vec<String>) {
        self.remove(Kind::Group, key);
        members.sort_unstable();
        members.dedup();
        let member_ids: Box<[u32]> = members.iter().map(|m| self.intern(m)).collect();
        drop(members);
        let ndn = match self.schema {
            Schema::Rfc2307bis => self.intern(&norm(&g.dn)),
            Schema::Rfc2307 => NONE,
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
        let key = Key::new(key);
        let h = &self.hasher;
        match kind {
            Kind::User => {
                let Some(id) = self.user_id(&key) else {
                    return false;
                };
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

    fn group(dn: &str, name: &str, gid: &str, members: &[&str]) -> RawEntry {
        entry(
            dn,
            &[("cn", &[name]), ("gidNumber", &[gid]), ("member", members)],
        )
    }

    fn names(a: Answer) -> Vec<String> {
        match a {
            Answer::Group(g) => g.group.members,
            other => panic!("not a group: {other:?}"),
        }
    }

    #[test]
    fn uuid_keys_are_packed_and_any_other_key_stays_text() {
        for k in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5bxd9cb-469f-a165-70867728950e",
            "dn:uid=alice,ou=people,dc=x",
            "",
        ] {
            assert_eq!(Key::new(k).text(), k);
        }
        assert!(matches!(
            Key::new("0f8fad5b-d9cb-469f-a165-70867728950e"),
            Key::Uuid(_)
        ));
        assert!(matches!(
            Key::new("0F8FAD5B-D9CB-469F-A165-70867728950E"),
            Key::Text(_)
        ));
    }

    #[test]
    fn a_member_dn_before_its_user_resolves_when_the_user_arrives() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307bis, 2);
        s.upsert(
            &mapper,
            Kind::Group,
            "g1",
            group(
                "cn=t,ou=groups,dc=x",
                "t",
                "7001",
                &["uid=alice,ou=people,dc=x"],
            ),
        )
        .unwrap();
        assert!(names(s.group_by_name("t", &policy)).is_empty());
        assert_eq!(s.groups_of("alice", &policy), Answer::NotFound);
        s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
            .unwrap();
        assert_eq!(names(s.group_by_name("t", &policy)), vec!["alice"]);
        assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7001]));
        // Deleted again: the DN stays listed and resolves to nobody.
        assert!(s.remove(Kind::User, "u1"));
        assert!(names(s.group_by_name("t", &policy)).is_empty());
        assert_eq!(s.values.len, 2, "the member DN and the group's own DN");
        // The group gone too: nothing interned is left.
        assert!(s.remove(Kind::Group, "g1"));
        assert_eq!(s.values.len, 0);
        assert!(s.is_empty());
    }

    #[test]
    fn an_id_reused_after_a_delete_carries_nothing_of_the_old_entry() {
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
            group(
                "cn=t,ou=groups,dc=x",
                "t",
                "7001",
                &["uid=alice,ou=people,dc=x", "uid=bob,ou=people,dc=x"],
            ),
        )
        .unwrap();
        let alice_id = s.user_id(&Key::new("u1")).unwrap();
        assert!(s.remove(Kind::User, "u1"));
        s.upsert(&mapper, Kind::User, "u3", user("carol", "5001"))
            .unwrap();
        assert_eq!(s.user_id(&Key::new("u3")), Some(alice_id), "id reused");
        assert_eq!(s.user_by_name("alice", &policy), Answer::NotFound);
        assert!(
            matches!(s.user_by_uid(5001, &policy), Answer::User(u) if u.passwd.name == "carol")
        );
        assert_eq!(names(s.group_by_name("t", &policy)), vec!["bob"]);
        assert_eq!(s.groups_of("carol", &policy), Answer::NotFound);
        assert_eq!(s.dn_of(Kind::User, "u1"), None);
        assert_eq!(s.dn_of(Kind::User, "u3"), Some("uid=carol,ou=people,dc=x"));
        // A group's id reused: the reverse index of the old group's members is gone.
        assert!(s.remove(Kind::Group, "g1"));
        s.upsert(
            &mapper,
            Kind::Group,
            "g2",
            group(
                "cn=u,ou=groups,dc=x",
                "u",
                "7002",
                &["uid=carol,ou=people,dc=x"],
            ),
        )
        .unwrap();
        assert_eq!(s.groups_of("bob", &policy), Answer::NotFound);
        assert_eq!(s.groups_of("carol", &policy), Answer::Ids(vec![7002]));
        let mut keys = s.keys(Kind::User);
        keys.sort();
        assert_eq!(keys, vec!["u2", "u3"]);
    }

    #[test]
    fn nesting_cycles_and_ambiguous_names_as_in_lookup_mode() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307bis, 1);
        s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
            .unwrap();
        // a -> b -> c -> a (a cycle), alice in c.
        for (k, n, gid, m) in [
            ("ga", "a", "7001", "cn=b,dc=x"),
            ("gb", "b", "7002", "cn=c,dc=x"),
            ("gc", "c", "7003", "cn=a,dc=x"),
        ] {
            s.upsert(
                &mapper,
                Kind::Group,
                k,
                group(&format!("cn={n},dc=x"), n, gid, &[m]),
            )
            .unwrap();
        }
        s.upsert(
            &mapper,
            Kind::Group,
            "gc",
            group(
                "cn=c,dc=x",
                "c",
                "7003",
                &["cn=a,dc=x", "uid=alice,ou=people,dc=x"],
            ),
        )
        .unwrap();
        // Nesting 1: b expanded from a (level 1), c listed by b met at level 2: not expanded.
        assert!(names(s.group_by_name("a", &policy)).is_empty());
        assert_eq!(names(s.group_by_name("b", &policy)), vec!["alice"]);
        // initgroups climbs one level above the direct group.
        assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7002, 7003]));
        // A second group named b: neither is served by name (each still by its own gid).
        s.upsert(
            &mapper,
            Kind::Group,
            "gb2",
            group("cn=b2,dc=x", "b", "7004", &[]),
        )
        .unwrap();
        assert_eq!(s.group_by_name("b", &policy), Answer::NotFound);
        assert!(matches!(s.group_by_gid(7004, &policy), Answer::Group(_)));
        let served: Vec<String> = s
            .served_groups(&policy)
            .map(|(g, _)| g.group.name)
            .collect();
        assert_eq!(served.len(), 2);
        assert!(!served.iter().any(|n| n == "b"));
        assert!(s.remove(Kind::Group, "gb2"));
        assert!(matches!(s.group_by_name("b", &policy), Answer::Group(_)));
    }

    #[test]
    fn compact_keeps_every_index() {
        let mapper = Mapper::new(Schema::Rfc2307, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307, 2);
        for i in 0..300u32 {
            s.upsert(
                &mapper,
                Kind::User,
                &format!("u{i}"),
                user(&format!("n{i}"), &(5000 + i).to_string()),
            )
            .unwrap();
        }
        for i in 0..290u32 {
            assert!(s.remove(Kind::User, &format!("u{i}")));
        }
        s.upsert(
            &mapper,
            Kind::Group,
            "g",
            entry(
                "cn=g,dc=x",
                &[
                    ("cn", &["g"]),
                    ("gidNumber", &["7000"]),
                    ("memberUid", &["n295", "n295", "ghost"]),
                ],
            ),
        )
        .unwrap();
        s.compact();
        assert_eq!(s.counts(), (10, 1));
        for i in 290..300u32 {
            assert!(
                matches!(s.user_by_uid(5000 + i, &policy), Answer::User(u) if u.passwd.name == format!("n{i}"))
            );
        }
        assert_eq!(names(s.group_by_gid(7000, &policy)), vec!["ghost", "n295"]);
        assert_eq!(s.groups_of("n295", &policy), Answer::Ids(vec![7000]));
        assert_eq!(s.groups_of("ghost", &policy), Answer::Ids(vec![7000]));
        let served: Vec<_> = s.served_users(&policy).collect();
        assert_eq!(served.len(), 10);
        assert!(served.iter().all(|(_, unique)| *unique));
        s.upsert(&mapper, Kind::User, "new", user("n0", "5000"))
            .unwrap();
        assert!(matches!(s.user_by_name("n0", &policy), Answer::User(_)));
    }

    #[test]
    fn strings_of_removed_entries_are_repacked_away() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let policy = Policy::new(&PolicyConfig::default());
        let mut s = State::new(Schema::Rfc2307bis, 2);
        let gecos = "g".repeat(1000);
        let with_gecos = |name: &str, uid: u32| {
            let mut e = user(name, &uid.to_string());
            e.attrs.insert("gecos".into(), vec![gecos.clone()]);
            e
        };
        for i in 0..3000u32 {
            s.upsert(
                &mapper,
                Kind::User,
                &format!("u{i}"),
                with_gecos(&format!("n{i}"), 5000 + i),
            )
            .unwrap();
        }
        s.upsert(
            &mapper,
            Kind::Group,
            "g",
            group("cn=g,dc=x", "g", "7000", &["uid=n2999,ou=people,dc=x"]),
        )
        .unwrap();
        let full = s.texts.buf.len();
        for i in 0..2900u32 {
            assert!(s.remove(Kind::User, &format!("u{i}")));
        }
        assert!(s.texts.buf.len() < full / 2, "repacked as it went");
        assert!(s.texts.dead * 2 <= s.texts.buf.len() + REPACK_MIN);
        s.compact();
        assert_eq!(s.texts.dead, 0);
        for i in 2900..3000u32 {
            let Answer::User(u) = s.user_by_uid(5000 + i, &policy) else {
                panic!("n{i} lost")
            };
            assert_eq!(u.passwd.name, format!("n{i}"));
            assert_eq!(u.passwd.gecos, gecos);
            assert_eq!(u.dn, format!("uid=n{i},ou=people,dc=x"));
        }
        assert_eq!(names(s.group_by_name("g", &policy)), vec!["n2999"]);
        assert_eq!(s.groups_of("n2999", &policy), Answer::Ids(vec![7000]));
        assert_eq!(s.dn_of(Kind::Group, "g"), Some("cn=g,dc=x"));
    }

    #[test]
    fn a_toolforge_shaped_mirror_is_small() {
        // 10,000 users with entryUUID keys, 1,000 tool groups of 5 members and one group of
        // every user: about 250 bytes an entry held (the layout of hash maps of UUID strings
        // it replaced held about 1,200 on the Toolforge-shaped directory).
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let mut s = State::new(Schema::Rfc2307bis, 2);
        let uuid = |i: u32| format!("{i:08x}-0000-4000-8000-{i:012x}");
        let dn = |i: u32| format!("uid=user{i},ou=people,dc=wikimedia,dc=org");
        for i in 0..10_000u32 {
            let mut e = user(&format!("user{i}"), &(10_000 + i).to_string());
            e.dn = dn(i);
            e.attrs
                .insert("loginShell".into(), vec!["/bin/bash".into()]);
            e.attrs
                .insert("homeDirectory".into(), vec![format!("/home/user{i}")]);
            s.upsert(&mapper, Kind::User, &uuid(i), e).unwrap();
        }
        for t in 0..1_000u32 {
            let members: Vec<String> = (0..5).map(|j| dn((t * 7 + j) % 10_000)).collect();
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            s.upsert(
                &mapper,
                Kind::Group,
                &uuid(100_000 + t),
                group(
                    &format!("cn=tools.t{t},ou=servicegroups,dc=wikimedia,dc=org"),
                    &format!("tools.t{t}"),
                    &(50_000 + t).to_string(),
                    &members,
                ),
            )
            .unwrap();
        }
        let all: Vec<String> = (0..10_000).map(dn).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        s.upsert(
            &mapper,
            Kind::Group,
            &uuid(200_000),
            group(
                "cn=project-tools,ou=groups,dc=wikimedia,dc=org",
                "project-tools",
                "40000",
                &all,
            ),
        )
        .unwrap();
        s.compact();
        let per_entry = s.heap_bytes() / s.len();
        assert!(
            (100..400).contains(&per_entry),
            "{per_entry} bytes an entry ({} in all)",
            s.heap_bytes()
        );
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
