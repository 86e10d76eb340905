//! The cache on disk, so a daemon restarted while the directory is down still answers.
//!
//! `cache_dir/cache` is written atomically (a temporary file, fsync, rename, fsync of the
//! directory) and loaded at start. Entries keep their expiry (as wall-clock time), so a
//! loaded entry is fresh, or expired and served only while the directory is unreachable.
//! Policy is applied again on load (the config may have changed). A file that is truncated,
//! corrupted, too large or of another format is renamed `cache.corrupt` with a warning.
//!
//! ```text
//! file    = magic "TFNSCACH" | format u32 (1) | written_unix_ms u64 | count u64
//!           | count x record | fnv1a64 u64 (of every byte before it)
//! record  = tag u8 | expires_unix_ms u64 | fields by tag:
//!   1 user        flags u8 (1: by name, 2: by uid) | dn | body (Passwd response body)
//!   2 no user     name          3 no uid   u32
//!   4 group       flags u8 (1: by name, 2: by gid) | dn | body (Group response body)
//!   5 no group    name          6 no gid   u32
//!   7 initgroups  name | body (GroupIds response body)
//!   8 no groups   name
//! strings and bodies: u32 length, bytes; integers little-endian
//! ```

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toolforge_nss_protocol::{ResponseKind, ResponseRef};

use crate::cache::{Row, RowList};
use crate::cached::{Cached, Entry, GroupKind, User};
use crate::directory::Directory;
use crate::records::{GroupRecord, UserRecord};
use crate::resolver::Resolver;
use crate::wallclock::Clock;

const MAGIC: &[u8; 8] = b"TFNSCACH";
/// The format this daemon writes and reads (a takeover hands the cache over in it).
pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "cache";
/// Largest file written or read.
pub const MAX_FILE_BYTES: usize = 256 << 20;

const USER: u8 = 1;
const NO_USER: u8 = 2;
const NO_UID: u8 = 3;
const GROUP: u8 = 4;
const NO_GROUP: u8 = 5;
const NO_GID: u8 = 6;
const INITGROUPS: u8 = 7;
const NO_GROUPS: u8 = 8;
const BY_NAME: u8 = 1;
const BY_ID: u8 = 2;

pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Out {
    buf: Vec<u8>,
    count: u64,
}

impl Out {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    fn record(&mut self, tag: u8, expires: u64) -> bool {
        if self.buf.len() > MAX_FILE_BYTES - 4096 {
            return false;
        }
        self.count += 1;
        self.u8(tag);
        self.u64(expires);
        true
    }
}

/// Serialises every servable cache entry.
pub fn encode<D: Directory>(r: &Resolver<D>) -> Vec<u8> {
    let clock = Clock::new();
    let m = &r.maps;
    let mut o = Out {
        buf: Vec::with_capacity(1 << 16),
        count: 0,
    };
    o.buf.extend_from_slice(MAGIC);
    o.u32(FORMAT);
    o.u64(clock.unix_ms);
    o.u64(0); // count, patched below

    // Users, then groups: see `write_entries`. Each map's rows are taken under its lock
    // (cheap: shared values), the file is written after.
    let by_name = m.users_by_name.stored(clock.now);
    let by_uid = m.users_by_uid.stored(clock.now);
    write_entries(
        &mut o,
        &clock,
        &by_name,
        &by_uid,
        Cached::<User>::dn,
        [USER, NO_USER, NO_UID],
    );
    let by_name = m.groups_by_name.stored(clock.now);
    let by_gid = m.groups_by_gid.stored(clock.now);
    write_entries(
        &mut o,
        &clock,
        &by_name,
        &by_gid,
        Cached::<GroupKind>::dn,
        [GROUP, NO_GROUP, NO_GID],
    );
    for (row, expires) in m.initgroups.stored(clock.now) {
        let exp = clock.to_unix(expires);
        match row {
            Row::Found(e) if o.record(INITGROUPS, exp) => {
                o.bytes(e.name().as_bytes());
                o.bytes(e.body());
            }
            Row::Absent(name) if o.record(NO_GROUPS, exp) => o.bytes(name.as_bytes()),
            _ => {}
        }
    }
    let count = o.count;
    o.buf[20..28].copy_from_slice(&count.to_le_bytes());
    let sum = fnv1a64(&o.buf);
    o.u64(sum);
    o.buf
}

/// Writes one kind's two maps: every entry once, flagged with the maps that hold it (the
/// same `Arc` by name and by id), then what only the id map holds; known absences by name
/// and by id. `tags`: the record tags of a found entry, an absent name, an absent id.
fn write_entries<T>(
    o: &mut Out,
    clock: &Clock,
    by_name: &RowList<String, Entry<T>>,
    by_id: &RowList<u32, Entry<T>>,
    dn: fn(&Cached<T>) -> &str,
    [found, no_name, no_id]: [u8; 3],
) {
    let id_ptrs = ptrs(by_id);
    let name_ptrs = ptrs(by_name);
    for (row, expires) in by_name {
        let exp = clock.to_unix(*expires);
        match row {
            Row::Found(e) if o.record(found, exp) => {
                let id = if id_ptrs.contains(&Arc::as_ptr(e)) {
                    BY_ID
                } else {
                    0
                };
                o.u8(BY_NAME | id);
                o.bytes(dn(e).as_bytes());
                o.bytes(e.body());
            }
            Row::Absent(name) if o.record(no_name, exp) => o.bytes(name.as_bytes()),
            _ => {}
        }
    }
    for (row, expires) in by_id {
        let exp = clock.to_unix(*expires);
        match row {
            Row::Found(e) if !name_ptrs.contains(&Arc::as_ptr(e)) && o.record(found, exp) => {
                o.u8(BY_ID);
                o.bytes(dn(e).as_bytes());
                o.bytes(e.body());
            }
            Row::Absent(id) if o.record(no_id, exp) => o.u32(*id),
            _ => {}
        }
    }
}

/// The entries (by address) that rows hold a value of.
fn ptrs<K, T>(rows: &RowList<K, Entry<T>>) -> HashSet<*const Cached<T>> {
    rows.iter()
        .filter_map(|(row, _)| match row {
            Row::Found(e) => Some(Arc::as_ptr(e)),
            Row::Absent(_) => None,
        })
        .collect()
}

/// Writes the cache atomically to `dir/cache`.
pub fn save(bytes: &[u8], dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Bounds-checked reading of an untrusted file.
struct In<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated record")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "u32")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "u64")?,
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

/// What loading restored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub records: u64,
    pub refused: u64,
}

/// Checks the envelope (magic, format, size, checksum) and restores every record.
pub fn decode<D: Directory>(r: &Resolver<D>, data: &[u8]) -> Result<Loaded, String> {
    if data.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes is over the {MAX_FILE_BYTES}-byte limit",
            data.len()
        ));
    }
    if data.len() < 36 || &data[..8] != MAGIC {
        return Err("not a toolforge-nss cache file".into());
    }
    let (body, sum) = data.split_at(data.len() - 8);
    if fnv1a64(body) != u64::from_le_bytes(sum.try_into().map_err(|_| "checksum")?) {
        return Err("checksum mismatch (truncated or corrupted)".into());
    }
    let mut i = In { buf: body, pos: 8 };
    let format = i.u32()?;
    if format != FORMAT {
        return Err(format!("format {format}, this daemon reads {FORMAT}"));
    }
    let _written = i.u64()?;
    let count = i.u64()?;
    let clock = Clock::new();
    let mut loaded = Loaded::default();
    for _ in 0..count {
        let tag = i.u8()?;
        let expires = clock.to_instant(i.u64()?);
        let ok = match tag {
            USER => {
                let flags = i.u8()?;
                let dn = i.string()?;
                let body = i.bytes()?;
                let passwd = match ResponseRef::decode(ResponseKind::Passwd as u16, body)
                    .map_err(|e| e.to_string())?
                {
                    ResponseRef::Passwd(p) => p.to_owned().map_err(|e| e.to_string())?,
                    _ => return Err("user record without a passwd body".into()),
                };
                r.restore_user(
                    UserRecord { dn, passwd },
                    flags & BY_NAME != 0,
                    flags & BY_ID != 0,
                    expires,
                )
            }
            GROUP => {
                let flags = i.u8()?;
                let dn = i.string()?;
                let body = i.bytes()?;
                let group = match ResponseRef::decode(ResponseKind::Group as u16, body)
                    .map_err(|e| e.to_string())?
                {
                    ResponseRef::Group(g) => g.to_owned().map_err(|e| e.to_string())?,
                    _ => return Err("group record without a group body".into()),
                };
                r.restore_group(
                    GroupRecord { dn, group },
                    flags & BY_NAME != 0,
                    flags & BY_ID != 0,
                    expires,
                )
            }
            INITGROUPS => {
                let name = i.string()?;
                let gids = match ResponseRef::decode(ResponseKind::GroupIds as u16, i.bytes()?)
                    .map_err(|e| e.to_string())?
                {
                    ResponseRef::GroupIds(g) => g,
                    _ => return Err("initgroups record without gids".into()),
                };
                r.restore_groups_of(name, Some(gids), expires)
            }
            NO_USER => {
                r.maps.users_by_name.restore(i.string()?, None, expires);
                true
            }
            NO_UID => {
                r.maps.users_by_uid.restore(i.u32()?, None, expires);
                true
            }
            NO_GROUP => {
                r.maps.groups_by_name.restore(i.string()?, None, expires);
                true
            }
            NO_GID => {
                r.maps.groups_by_gid.restore(i.u32()?, None, expires);
                true
            }
            NO_GROUPS => r.restore_groups_of(i.string()?, None, expires),
            other => return Err(format!("unknown record tag {other}")),
        };
        loaded.records += 1;
        if !ok {
            loaded.refused += 1;
        }
    }
    if i.pos != body.len() {
        return Err("trailing bytes after the last record".into());
    }
    Ok(loaded)
}

/// Loads `dir/cache` if present. A bad file is renamed `cache.corrupt` and reported.
pub fn load<D: Directory>(r: &Resolver<D>, dir: &Path) -> Result<Option<Loaded>, String> {
    let path: PathBuf = dir.join(FILE_NAME);
    let data = match std::fs::metadata(&path) {
        Err(_) => return Ok(None),
        Ok(m) if m.len() as usize > MAX_FILE_BYTES => {
            Err(format!("{} bytes is over the limit", m.len()))
        }
        Ok(_) => std::fs::read(&path).map_err(|e| e.to_string()),
    };
    match data.and_then(|d| decode(r, &d)) {
        Ok(l) => Ok(Some(l)),
        Err(why) => {
            let aside = dir.join(format!("{FILE_NAME}.corrupt"));
            let _ = std::fs::rename(&path, &aside);
            r.maps_clear();
            Err(format!(
                "{}: {why}; set aside as {}",
                path.display(),
                aside.display()
            ))
        }
    }
}
