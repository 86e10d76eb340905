//! What changed in the mirror since the shared cache data was last published, so that a
//! change reaches the published data as a patch of the keys it affects instead of a rebuild
//! of the whole directory (issue 11: "a change must reach the shared data incrementally").
//!
//! [`State`] notes every entry it removes (before) and inserts (after), together with what
//! the entry's change can alter elsewhere: a user's groups (RFC 2307bis: the groups that list
//! its DN, and their parents, whose member lists show its name), a group's members (whose
//! initgroups lists hold its gid: its members, and the members of the groups nested in it)
//! and its parents (whose member lists include its members). Over-approximation is harmless:
//! the publisher recomputes each key noted from the state and writes only what differs.
//! [`State::changed_keys`] turns the notes into the keys of every table, adding the ids that
//! a changed name's ambiguity can move. A new state (a load, a restore, a reconciliation) is
//! "everything changed": the first publication of it is a full one.

use std::collections::HashSet;

use toolforge_nss_config::Schema;

use super::layout::NONE;
use super::{group_at, only, user_at, value_at, State};

/// Keys noted beyond this many make a full publication cheaper than a patch.
pub const MAX_NOTED: usize = 20_000;

/// Names and ids whose published records may have changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes {
    /// Everything may have changed (a new state, or more than [`MAX_NOTED`] keys).
    pub full: bool,
    /// Users whose passwd entry or initgroups list may differ.
    pub users: HashSet<Box<str>>,
    pub uids: HashSet<u32>,
    /// Groups whose entry (members included) may differ.
    pub groups: HashSet<Box<str>>,
    pub gids: HashSet<u32>,
}

impl Default for Changes {
    /// A new state: everything changed.
    fn default() -> Changes {
        Changes {
            full: true,
            ..Changes::none()
        }
    }
}

impl Changes {
    /// Nothing changed.
    pub fn none() -> Changes {
        Changes {
            full: false,
            users: HashSet::new(),
            uids: HashSet::new(),
            groups: HashSet::new(),
            gids: HashSet::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full
            && self.users.is_empty()
            && self.uids.is_empty()
            && self.groups.is_empty()
            && self.gids.is_empty()
    }

    fn len(&self) -> usize {
        self.users.len() + self.uids.len() + self.groups.len() + self.gids.len()
    }

    /// Past the bound, notes are dropped and the next publication is a full one.
    fn overflowed(&mut self) -> bool {
        if !self.full && self.len() > MAX_NOTED {
            *self = Changes::default();
        }
        self.full
    }

    fn user(&mut self, name: &str, uid: Option<u32>) {
        if self.overflowed() {
            return;
        }
        if !self.users.contains(name) {
            self.users.insert(name.into());
        }
        if let Some(uid) = uid {
            self.uids.insert(uid);
        }
    }

    fn group(&mut self, name: &str, gid: u32) {
        if self.overflowed() {
            return;
        }
        if !self.groups.contains(name) {
            self.groups.insert(name.into());
        }
        self.gids.insert(gid);
    }
}

/// The values in one of two sorted lists but not the other.
pub(super) fn symmetric_difference(a: &[String], b: &[String]) -> Vec<String> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => (i, j) = (i + 1, j + 1),
            (Some(x), Some(y)) if x < y => {
                out.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                out.push(x.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The keys of every table that a set of [`Changes`] may have changed, expanded against the
/// state (see [`State::changed_keys`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChangedKeys {
    pub users: Vec<String>,
    pub uids: Vec<u32>,
    pub groups: Vec<String>,
    pub gids: Vec<u32>,
}

impl State {
    /// Asks for a whole publication (the periodic one that extends the records' validity).
    pub fn note_everything(&mut self) {
        self.changes = Changes::default();
    }

    /// Whether changes are noted and a patch can carry them (not "everything").
    pub fn changes_patchable(&self) -> bool {
        !self.changes.full && !self.changes.is_empty()
    }

    /// Takes the changes noted so far (leaving none).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::replace(&mut self.changes, Changes::none())
    }

    /// Levels followed from a changed entry, up or down: the levels `groups_of` climbs and
    /// `members_of` descends, plus one.
    fn reach(&self) -> u32 {
        match self.schema {
            Schema::Rfc2307 => 1,
            Schema::Rfc2307bis => self.nesting + 2,
        }
    }

    /// Notes the user `id` (it is about to be removed, or was just inserted) and, with
    /// `moved` (its name or DN changes, or it comes or goes) and RFC 2307bis, the groups
    /// whose member lists show it.
    pub(super) fn note_user(&mut self, id: u32, moved: bool) {
        if self.changes.full {
            return;
        }
        let u = user_at(&self.users, id);
        let (name, uid, ndn) = (u.name(&self.texts).to_owned(), u.uid, u.ndn);
        self.changes.user(&name, Some(uid));
        if moved && ndn != NONE {
            let mut seen = HashSet::new();
            self.note_parents(ndn, 0, &mut seen);
        }
    }

    /// Notes the group `id`, the users whose initgroups lists may hold its gid (its members
    /// and those of the groups nested in it) and the groups that list it.
    pub(super) fn note_group(&mut self, id: u32) {
        if self.changes.full {
            return;
        }
        let g = group_at(&self.groups, id);
        let (name, gid, ndn) = (self.texts.get(g.name).to_owned(), g.gid, g.ndn);
        self.changes.group(&name, gid);
        let members = g.members.to_vec();
        let mut seen = HashSet::new();
        seen.insert(id);
        self.note_members(&members, 0, &mut seen);
        if ndn != NONE {
            let mut seen = HashSet::new();
            self.note_parents(ndn, 0, &mut seen);
        }
    }

    /// Notes the group `id` (replaced under the same name, gid and DN) whose member values
    /// `changed` came or went: the users they name (and those below a member group), and the
    /// groups that list this one.
    pub(super) fn note_members_of(&mut self, id: u32, changed: &[String]) {
        if self.changes.full {
            return;
        }
        let g = group_at(&self.groups, id);
        let (name, gid, ndn) = (self.texts.get(g.name).to_owned(), g.gid, g.ndn);
        self.changes.group(&name, gid);
        if changed.is_empty() {
            return;
        }
        match self.schema {
            Schema::Rfc2307 => {
                for m in changed {
                    self.changes.user(m, None);
                }
            }
            Schema::Rfc2307bis => {
                // A value no entry holds any more names no one.
                let values: Vec<u32> = changed.iter().filter_map(|m| self.value_id(m)).collect();
                let mut seen = HashSet::new();
                seen.insert(id);
                self.note_members(&values, 0, &mut seen);
                if ndn != NONE {
                    let mut seen = HashSet::new();
                    self.note_parents(ndn, 0, &mut seen);
                }
            }
        }
    }

    /// Notes the users among the member values `members` (and, with RFC 2307bis, descends
    /// into member groups).
    fn note_members(&mut self, members: &[u32], level: u32, seen: &mut HashSet<u32>) {
        for &m in members {
            if self.changes.full {
                return;
            }
            let v = value_at(&self.values, m);
            match self.schema {
                Schema::Rfc2307 => {
                    let name = self.texts.get(v.text).to_owned();
                    self.changes.user(&name, None);
                }
                Schema::Rfc2307bis => {
                    let (user, group) = (v.user, v.group);
                    if let Some(u) = self.users.get(user) {
                        let name = u.name(&self.texts).to_owned();
                        self.changes.user(&name, None);
                    }
                    if let Some(g) = self.groups.get(group) {
                        if level < self.reach() && seen.insert(group) {
                            let nested = g.members.to_vec();
                            self.note_members(&nested, level + 1, seen);
                        }
                    }
                }
            }
        }
    }

    /// Notes the groups that list the value `v` (a DN) and their parents.
    fn note_parents(&mut self, v: u32, level: u32, seen: &mut HashSet<u32>) {
        if level >= self.reach() || self.changes.full {
            return;
        }
        let parents: Vec<u32> = self.listing(v).collect();
        for p in parents {
            if !seen.insert(p) {
                continue;
            }
            let g = group_at(&self.groups, p);
            let (name, gid, ndn) = (self.texts.get(g.name).to_owned(), g.gid, g.ndn);
            self.changes.group(&name, gid);
            if ndn != NONE {
                self.note_parents(ndn, level + 1, seen);
            }
        }
    }

    /// The keys of each table to publish again for `changes`: the names and ids noted, and
    /// the ids of every entry now holding a noted name (a name that became ambiguous, or
    /// stopped being, takes its entries' ids out of the publication, or puts them back).
    pub fn changed_keys(&self, changes: &Changes) -> ChangedKeys {
        let mut uids = changes.uids.clone();
        for name in &changes.users {
            uids.extend(self.users_named(name).map(|i| user_at(&self.users, i).uid));
        }
        let mut gids = changes.gids.clone();
        for name in &changes.groups {
            gids.extend(
                self.groups_named(name)
                    .map(|i| group_at(&self.groups, i).gid),
            );
        }
        let mut out = ChangedKeys {
            users: changes.users.iter().map(|n| n.to_string()).collect(),
            uids: uids.into_iter().collect(),
            groups: changes.groups.iter().map(|n| n.to_string()).collect(),
            gids: gids.into_iter().collect(),
        };
        // Sorted: the publisher's work does not depend on a hash order.
        out.users.sort_unstable();
        out.uids.sort_unstable();
        out.groups.sort_unstable();
        out.gids.sort_unstable();
        out
    }

    /// The user served by `uid` in a publication of the whole mirror: the only user with that
    /// uid, whose name is its alone, allowed by the policy (as [`State::served_users`]).
    pub fn served_user_by_uid(
        &self,
        uid: u32,
        policy: &crate::policy::Policy,
    ) -> Option<crate::records::UserRecord> {
        let id = only(self.users_with_uid(uid))?;
        let name = user_at(&self.users, id).name(&self.texts);
        only(self.users_named(name))?;
        match self.user_answer(Some(id), policy) {
            super::Answer::User(rec) if rec.passwd.uid == uid => Some(rec),
            _ => None,
        }
    }

    /// The group served by `gid` in a publication of the whole mirror (as
    /// [`State::served_groups`]).
    pub fn served_group_by_gid(
        &self,
        gid: u32,
        policy: &crate::policy::Policy,
    ) -> Option<crate::records::GroupRecord> {
        let id = only(self.groups_with_gid(gid))?;
        let name = self.texts.get(group_at(&self.groups, id).name);
        only(self.groups_named(name))?;
        match self.group_answer(Some(id), policy) {
            super::Answer::Group(rec) if rec.group.gid == gid => Some(rec),
            _ => None,
        }
    }
}
