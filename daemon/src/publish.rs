//! Publishes the shared read-only cache file `runtime_dir/cache.map` (format:
//! `toolforge_nss_protocol::mapfile`) that the NSS module maps to answer warm lookups without
//! a socket round trip.
//!
//! What goes in: every cache entry before its refresh-ahead point, positive or negative, most
//! recently used first until `map_file_max_mib`. An entry's expiry in the file is that point,
//! so a process asks the daemon again exactly when the daemon would refresh it.
//!
//! How it is replaced: the new file is written beside the old one under a temporary name
//! (mode 0644), renamed over it, and only then is the old file flagged `SUPERSEDED` in place
//! (the one byte a published file ever changes). A reader therefore sees a complete old file
//! or a complete new one, and notices the replacement on its next lookup. A clean stop or a
//! handover retires the publisher (the file stays valid until its entries expire, as a
//! killed daemon's does); only an explicit withdrawal flags and removes it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use toolforge_nss_protocol::mapfile::{MapBuilder, MapView, Table, FLAGS_OFFSET, FLAG_SUPERSEDED};
use toolforge_nss_protocol::ResponseKind;

use crate::cache::Publishable;
use crate::directory::Directory;
use crate::resolver::{Encoded, Resolver};
use crate::wallclock::Clock;

/// The file's name inside `runtime_dir` (the module looks for it there).
pub const FILE_NAME: &str = "cache.map";
const TEMP_NAME: &str = ".cache.map.tmp";

/// What one publication wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub generation: u64,
    pub entries: usize,
    /// Entries left out because the size cap was reached.
    pub left_out: usize,
    pub bytes: usize,
}

struct State {
    generation: u64,
    /// Withdrawn (shutdown): nothing is published any more.
    closed: bool,
}

/// Writes `cache.map` for one daemon; publications are serialised.
pub struct Publisher {
    dir: PathBuf,
    max_bytes: usize,
    state: Mutex<State>,
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    // No /dev/urandom: the seed still differs per file and per process.
    let t = Clock::new().unix_ms;
    t.rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Expiry in whole seconds, rounded down (a reader never keeps an entry longer than allowed).
fn secs(clock: &Clock, t: Instant) -> u64 {
    clock.to_unix(t) / 1000
}

impl Publisher {
    /// A publisher for `runtime_dir`; `max_mib` 0 means no file at all. Generations continue
    /// from a file a previous run left behind.
    pub fn new(runtime_dir: &Path, max_mib: u64) -> Option<Publisher> {
        if max_mib == 0 {
            return None;
        }
        let path = runtime_dir.join(FILE_NAME);
        let generation = std::fs::read(&path)
            .ok()
            .and_then(|b| MapView::new(&b).map(|v| v.generation()))
            .unwrap_or(0);
        Some(Publisher {
            dir: runtime_dir.to_owned(),
            max_bytes: usize::try_from(max_mib << 20).unwrap_or(usize::MAX),
            state: Mutex::new(State {
                generation,
                closed: false,
            }),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Builds the file from the cache and puts it in place; `None` once withdrawn. Blocking:
    /// call it from a blocking task.
    pub fn publish<D: Directory>(&self, r: &Resolver<D>) -> std::io::Result<Option<Published>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Ok(None);
        }
        let generation = state.generation + 1;
        let (bytes, entries, left_out) = self.build(r, generation);
        self.replace(&bytes)?;
        state.generation = generation;
        let st = &r.stats;
        st.map_generation.store(generation, Ordering::Relaxed);
        st.map_entries.store(entries as u64, Ordering::Relaxed);
        st.map_bytes.store(bytes.len() as u64, Ordering::Relaxed);
        Ok(Some(Published {
            generation,
            entries,
            left_out,
            bytes: bytes.len(),
        }))
    }

    fn build<D: Directory>(&self, r: &Resolver<D>, generation: u64) -> (Vec<u8>, usize, usize) {
        let clock = Clock::new();
        let now = clock.now;
        let m = &r.maps;
        let mut b = MapBuilder::new(generation, random_seed());
        let (mut added, mut left_out) = (0usize, 0usize);
        let mut add = |b: &mut MapBuilder, table, key: &[u8], until, body: Option<&[u8]>| {
            if b.approximate_len() >= self.max_bytes {
                left_out += 1;
                return;
            }
            let (kind, body) = match body {
                Some(body) => (
                    match table {
                        Table::PasswdByName | Table::PasswdByUid => ResponseKind::Passwd,
                        Table::GroupByName | Table::GroupByGid => ResponseKind::Group,
                        Table::InitGroups => ResponseKind::GroupIds,
                    },
                    body,
                ),
                None => (ResponseKind::NotFound, &[][..]),
            };
            b.add(table, key, secs(&clock, until), kind, body);
            added += 1;
        };
        // Interleave the maps by recency so that a size cap keeps what is used across all of
        // them, rather than filling up with the first map.
        let users = m.users_by_name.publishable(now);
        let uids = m.users_by_uid.publishable(now);
        let groups = m.groups_by_name.publishable(now);
        let gids = m.groups_by_gid.publishable(now);
        let inits = m.initgroups.publishable(now);
        let longest = [
            users.len(),
            uids.len(),
            groups.len(),
            gids.len(),
            inits.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        for i in 0..longest {
            if let Some((k, body, t)) = row(&users, i) {
                add(&mut b, Table::PasswdByName, k.as_bytes(), t, body);
            }
            if let Some((k, body, t)) = row(&uids, i) {
                add(&mut b, Table::PasswdByUid, &k.to_le_bytes(), t, body);
            }
            if let Some((k, body, t)) = row(&groups, i) {
                add(&mut b, Table::GroupByName, k.as_bytes(), t, body);
            }
            if let Some((k, body, t)) = row(&gids, i) {
                add(&mut b, Table::GroupByGid, &k.to_le_bytes(), t, body);
            }
            if let Some((k, body, t)) = row(&inits, i) {
                add(&mut b, Table::InitGroups, k.as_bytes(), t, body);
            }
        }
        (b.build(), added, left_out)
    }

    /// Writes `bytes` under the temporary name, renames it over the file, then flags the file
    /// it replaced.
    fn replace(&self, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path();
        let temp = self.dir.join(TEMP_NAME);
        let _ = std::fs::remove_file(&temp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(bytes)?;
        drop(f);
        let old = open_published(&path);
        std::fs::rename(&temp, &path)?;
        if let Some(old) = old {
            flag_superseded(&old);
        }
        Ok(())
    }

    /// Stops publishing for good and leaves the published file valid (a clean stop, a
    /// handover): readers keep answering from it until its entries expire.
    pub fn retire(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    }

    /// Flags the file and removes it (an explicit withdrawal): readers go back to asking the
    /// socket.
    pub fn withdraw(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        let path = self.path();
        if let Some(f) = open_published(&path) {
            let _ = std::fs::remove_file(&path);
            flag_superseded(&f);
        }
    }
}

/// Entry `i` of a map's publishable list: key, encoded body (`None`: known absent), expiry.
fn row<K, R>(
    list: &[Publishable<K, Arc<Encoded<R>>>],
    i: usize,
) -> Option<(&K, Option<&[u8]>, Instant)> {
    let (k, v, t) = list.get(i)?;
    Some((k, v.as_ref().map(|e| e.body.as_slice()), *t))
}

/// The published file at `path`, opened to set its flag (`None`: there is none).
fn open_published(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .ok()
}

fn flag_superseded(f: &File) {
    // Only this word of a published file ever changes; readers load it atomically.
    let _ = f.write_all_at(&FLAG_SUPERSEDED.to_le_bytes(), FLAGS_OFFSET as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_flags_the_old_file_and_withdraw_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new(dir.path(), 1).unwrap();
        p.replace(&MapBuilder::new(1, 1).build()).unwrap();
        let first = File::open(p.path()).unwrap();
        p.replace(&MapBuilder::new(2, 2).build()).unwrap();
        let mut flags = [0u8; 4];
        first
            .read_exact_at(&mut flags, FLAGS_OFFSET as u64)
            .unwrap();
        assert_eq!(u32::from_le_bytes(flags), FLAG_SUPERSEDED);
        let now = std::fs::read(p.path()).unwrap();
        assert_eq!(MapView::new(&now).unwrap().generation(), 2);
        let meta = std::fs::metadata(p.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let second = File::open(p.path()).unwrap();
        p.withdraw();
        assert!(!p.path().exists());
        assert!(
            p.state.lock().unwrap().closed,
            "nothing is published after withdrawal"
        );
        second
            .read_exact_at(&mut flags, FLAGS_OFFSET as u64)
            .unwrap();
        assert_eq!(u32::from_le_bytes(flags), FLAG_SUPERSEDED);
        assert!(Publisher::new(dir.path(), 0).is_none(), "0 MiB: no file");
    }
}
