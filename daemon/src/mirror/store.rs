//! The mirror on disk: `cache_dir/mirror.bin`, the mapped entries with the sync cookies that
//! describe them and the time of the last successful sync, encoded under the mirror's read
//! lock straight into a temporary file (never whole in memory) and renamed (never
//! half-written). Each mirror writes a temporary file of its own name, and renames it only
//! while in service: a save still running for a mirror that was just replaced or disabled
//! neither writes into the new mirror's temporary file nor replaces its `mirror.bin`. The format is unchanged by the compact in-memory layout of `state.rs`
//! (the same fields, keys as text). Loaded at start, the mirror answers at once, even with the
//! directory unreachable, and a sync resumes from the cookies with a delta. Policy applies
//! when answering, so a changed policy applies to restored entries too; names are checked
//! again at load. The reader bounds every count and length by the bytes left: a damaged file
//! is refused, never trusted. What the entries depend on besides the directory (the schema,
//! the base, the user and group bases and filters, the attribute names) is part of the file:
//! a file written under another configuration is not used, and the mirror loads afresh.
//!
//! Layout (little-endian): `TFMIRR03`, u8 schema (0 rfc2307, 1 rfc2307bis), u64 source
//! (FNV-1a 64 of that configuration, [`source`]), u64 saved-at
//! (Unix seconds), u64 last sync (Unix seconds, 0: never), u32 cookies, each (str id, bytes
//! cookie), u32 users, each (str key, str dn, str name, u32 uid, u32 gid, str gecos, str home,
//! str shell), u32 groups, each (str key, str dn, str name, u32 gid, u32 members, each str).
//! `str`/`bytes`: u32 length then the bytes.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toolforge_nss_config::Schema;
use toolforge_nss_protocol::names::is_valid_name;
use toolforge_nss_protocol::{Group, Passwd};

use crate::mirror::{Mirror, State};
use crate::records::{GroupRecord, UserRecord};

pub const FILE_NAME: &str = "mirror.bin";
const MAGIC: &[u8; 8] = b"TFMIRR03";
/// A file larger than this is refused (a Toolforge-sized mirror is a few tens of MB).
const MAX_FILE: u64 = 2 << 30;

fn path(m: &Mirror) -> PathBuf {
    m.cache_dir.join(FILE_NAME)
}

fn put_bytes(out: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    out.write_all(&(b.len() as u32).to_le_bytes())?;
    out.write_all(b)
}

/// What the mirror's entries depend on besides the directory: the schema, the base, the
/// user and group bases and filters, the attribute names (not the servers: another replica
/// of the same directory resumes with a delta or a reload, by its cookie).
fn source(m: &Mirror) -> u64 {
    let l = &m.ldap;
    let what = format!(
        "{:?}|{}|{:?}|{:?}|{:?}",
        l.schema, l.base, l.users, l.groups, l.attributes
    );
    crate::persist::fnv1a64(what.as_bytes())
}

fn secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    n: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes the mirror (under its read lock) into `out`.
fn encode(m: &Mirror, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&[u8::from(m.ldap.schema == Schema::Rfc2307bis)])?;
    out.write_all(&source(m).to_le_bytes())?;
    out.write_all(&secs(Some(SystemTime::now())).to_le_bytes())?;
    let last_sync = *m.last_sync.lock().unwrap_or_else(|e| e.into_inner());
    out.write_all(&secs(last_sync).to_le_bytes())?;
    // Cookies and entries under one read lock: the cookies describe exactly these entries.
    m.read(|s| {
        let cookies = m.cookies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.write_all(&(cookies.len() as u32).to_le_bytes())?;
        for (id, (c, _)) in &cookies {
            put_bytes(out, id.as_bytes())?;
            put_bytes(out, c)?;
        }
        let (users, groups) = s.counts();
        out.write_all(&(users as u32).to_le_bytes())?;
        for u in s.users() {
            put_bytes(out, u.key.as_bytes())?;
            put_bytes(out, u.dn.as_bytes())?;
            put_bytes(out, u.name.as_bytes())?;
            out.write_all(&u.uid.to_le_bytes())?;
            out.write_all(&u.gid.to_le_bytes())?;
            put_bytes(out, u.gecos.as_bytes())?;
            put_bytes(out, u.dir.as_bytes())?;
            put_bytes(out, u.shell.as_bytes())?;
        }
        out.write_all(&(groups as u32).to_le_bytes())?;
        for g in s.groups() {
            put_bytes(out, g.key.as_bytes())?;
            put_bytes(out, g.dn.as_bytes())?;
            put_bytes(out, g.name.as_bytes())?;
            out.write_all(&g.gid.to_le_bytes())?;
            out.write_all(&(g.members.len() as u32).to_le_bytes())?;
            for mem in &g.members {
                put_bytes(out, mem.as_bytes())?;
            }
        }
        Ok(())
    })
}

/// Encodes the mirror (under its read lock) straight into a temporary file of its own, then
/// renames it over the file (no copy of the whole mirror in memory); returns the size, or
/// `None` when the mirror was out of service by then (the file is left to the one in
/// service, the temporary file removed).
pub fn save(m: &Mirror) -> Result<Option<usize>, String> {
    let p = path(m);
    let tmp = temp_path(m);
    let write = || -> std::io::Result<Option<usize>> {
        use std::os::unix::fs::PermissionsExt;
        if !m.cache_dir.exists() {
            std::fs::create_dir_all(&m.cache_dir)?;
            std::fs::set_permissions(&m.cache_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let f = std::fs::File::create(&tmp)?;
        crate::mirror::gap::at("created");
        let mut out = Counting {
            inner: std::io::BufWriter::with_capacity(64 << 10, f),
            n: 0,
        };
        encode(m, &mut out)?;
        let f = out.inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        match m.if_in_service(|| std::fs::rename(&tmp, &p)) {
            Some(renamed) => renamed.map(|()| Some(out.n)),
            None => {
                std::fs::remove_file(&tmp)?;
                Ok(None)
            }
        }
    };
    write().map_err(|e| {
        // Not left behind (each mirror writes a file of its own name).
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", p.display())
    })
}

/// The temporary file a mirror's save writes: its own (`mirror.PID-N.tmp`), so that a save
/// still running for a mirror just replaced never writes into the one the new mirror writes.
fn temp_path(m: &Mirror) -> PathBuf {
    m.cache_dir
        .join(format!("mirror.{}-{}.tmp", std::process::id(), m.writer))
}

/// Removes temporary files that saves of a daemon that died meanwhile left (older than an
/// hour: a save takes well under a second, and another daemon's save under way is never
/// that old).
fn remove_orphans(m: &Mirror) {
    let Ok(dir) = std::fs::read_dir(&m.cache_dir) else {
        return;
    };
    let hour = Duration::from_secs(3600);
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let orphan = name.starts_with("mirror.")
            && name.ends_with(".tmp")
            && e.metadata()
                .and_then(|md| md.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if orphan {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.b.len() {
            return Err("truncated".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    /// A count of items each at least `min` bytes long: bounded by what is left.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() {
            return Err(format!("count {n} beyond the file"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "not UTF-8".to_string())
    }
}

/// Loads the persisted mirror into `m` (then complete, answering at once); `None` when there
/// is no file.
pub fn load(m: &Mirror) -> Result<Option<usize>, String> {
    remove_orphans(m);
    let p = path(m);
    let meta = match std::fs::metadata(&p) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{}: {} bytes, more than a mirror holds",
            p.display(),
            meta.len()
        ));
    }
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let decoded = decode(m, &bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    let (state, cookies, last_sync) = decoded;
    let n = state.len();
    if n > m.cfg.max_entries {
        return Err(format!("{n} entries, more than mirror.max_entries"));
    }
    for (id, c) in cookies {
        m.set_cookie(&id, c);
    }
    *m.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = last_sync;
    m.swap(state);
    Ok(Some(n))
}

type Decoded = (State, HashMap<String, Vec<u8>>, Option<SystemTime>);

fn decode(m: &Mirror, bytes: &[u8]) -> Result<Decoded, String> {
    let mut r = Reader { b: bytes };
    if r.take(8)? != MAGIC {
        return Err("not a mirror file of this version".into());
    }
    if r.take(1)?[0] != u8::from(m.ldap.schema == Schema::Rfc2307bis) {
        return Err("written for the other ldap.schema".into());
    }
    if r.u64()? != source(m) {
        return Err("written for other ldap bases, filters or attributes".into());
    }
    let _saved = r.u64()?;
    let last = r.u64()?;
    // A time in the future (a damaged file, a clock set back) is not a successful sync.
    let last_sync = (last > 0)
        .then(|| UNIX_EPOCH.checked_add(Duration::from_secs(last)))
        .flatten()
        .filter(|t| *t <= SystemTime::now());
    let mut cookies = HashMap::new();
    for _ in 0..r.count(8)? {
        let id = r.str()?;
        let c = r.bytes()?.to_vec();
        cookies.insert(id, c);
    }
    let mut state = State::new(m.ldap.schema, m.ldap.group_nesting_level);
    for _ in 0..r.count(28)? {
        let key = r.str()?;
        let dn = r.str()?;
        let name = r.str()?;
        let (uid, gid) = (r.u32()?, r.u32()?);
        let (gecos, dir, shell) = (r.str()?, r.str()?, r.str()?);
        if !is_valid_name(name.as_bytes()) {
            return Err(format!("invalid user name {name:?}"));
        }
        let passwd = Passwd {
            name,
            passwd: "x".into(),
            uid,
            gid,
            gecos,
            dir,
            shell,
        };
        // Held: the DN twice (its text and its normalised, interned form) and the fields.
        let size = 2 * dn.len()
            + [&passwd.name, &passwd.gecos, &passwd.dir, &passwd.shell]
                .iter()
                .map(|f| f.len())
                .sum::<usize>();
        if !state.has_room_for(size) {
            return Err("more strings than the mirror can hold".into());
        }
        state.insert_user(&key, UserRecord { dn, passwd });
    }
    for _ in 0..r.count(20)? {
        let key = r.str()?;
        let dn = r.str()?;
        let name = r.str()?;
        let gid = r.u32()?;
        if !is_valid_name(name.as_bytes()) {
            return Err(format!("invalid group name {name:?}"));
        }
        let mut members = Vec::new();
        for _ in 0..r.count(4)? {
            members.push(r.str()?);
        }
        let group = Group {
            name,
            passwd: "x".into(),
            gid,
            members: Vec::new(),
        };
        let size = 2 * dn.len() + group.name.len() + members.iter().map(String::len).sum::<usize>();
        if !state.has_room_for(size) {
            return Err("more strings than the mirror can hold".into());
        }
        state.insert_group(&key, GroupRecord { dn, group }, members);
    }
    if !r.b.is_empty() {
        return Err("trailing bytes".into());
    }
    state.compact();
    Ok((state, cookies, last_sync))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::RawEntry;
    use crate::mirror::{Answer, Kind};
    use crate::policy::Policy;
    use std::sync::Arc;
    use toolforge_nss_config::Config;
    use toolforge_nss_protocol::Request;

    fn mirror(dir: &std::path::Path) -> Arc<Mirror> {
        let text = format!(
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\nschema = \"rfc2307bis\"\n[daemon]\ncache_dir = {:?}\n",
            dir.display().to_string()
        );
        Mirror::new(&Config::parse(&text, std::path::Path::new("t.toml")).unwrap())
    }

    fn entry(dn: &str, kv: &[(&str, &str)]) -> RawEntry {
        let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in kv {
            attrs.entry(k.to_string()).or_default().push(v.to_string());
        }
        RawEntry::new(dn.into(), attrs)
    }

    #[test]
    fn saved_and_loaded_the_mirror_answers_the_same_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        m.apply(|s, mapper| {
            let u = entry(
                "uid=alice,ou=people,dc=x",
                &[
                    ("uid", "alice"),
                    ("uidNumber", "5001"),
                    ("gidNumber", "500"),
                    ("homeDirectory", "/home/alice"),
                ],
            );
            s.upsert(mapper, Kind::User, "u1", u).unwrap();
            let g = entry(
                "cn=tools.x,ou=groups,dc=x",
                &[
                    ("cn", "tools.x"),
                    ("gidNumber", "7001"),
                    ("member", "uid=alice,ou=people,dc=x"),
                ],
            );
            s.upsert(mapper, Kind::Group, "g1", g).unwrap();
        });
        m.set_cookie("users:dc=x@ldap://x", b"rid=000,csn=1".to_vec());
        m.became_complete();
        let size = save(&m).unwrap().unwrap();
        let m2 = mirror(dir.path());
        assert_eq!(load(&m2).unwrap(), Some(2));
        assert!(m2.is_complete());
        let policy = Policy::new(&Default::default());
        for req in [
            Request::GetPwNam("alice".into()),
            Request::GetPwUid(5001),
            Request::GetGrNam("tools.x".into()),
            Request::InitGroups("alice".into()),
        ] {
            assert_eq!(
                m.answer(&req, &policy).unwrap().0,
                m2.answer(&req, &policy).unwrap().0
            );
        }
        assert!(
            matches!(m2.answer(&Request::InitGroups("alice".into()), &policy).unwrap().0, Answer::Ids(g) if g == vec![7001])
        );
        assert_eq!(
            m2.cookie("users:dc=x@ldap://x").as_deref(),
            Some(&b"rid=000,csn=1"[..])
        );
        // Every truncation, and flipped bytes, are refused or decoded without a panic.
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(bytes.len(), size);
        let m3 = mirror(dir.path());
        for cut in 0..bytes.len() {
            assert!(decode(&m3, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xa5;
            let _ = decode(&m3, &b);
        }
    }

    #[test]
    fn a_file_written_under_other_bases_or_filters_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        m.became_complete();
        save(&m).unwrap();
        assert_eq!(
            load(&mirror(dir.path())).unwrap(),
            Some(0),
            "same configuration"
        );
        let text = format!(
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\nschema = \"rfc2307bis\"\n\
             [ldap.users]\nfilter = \"(objectClass=inetOrgPerson)\"\n[daemon]\ncache_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let other = Mirror::new(&Config::parse(&text, std::path::Path::new("t.toml")).unwrap());
        let refused = load(&other);
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("filters")),
            "{refused:?}"
        );
        assert!(!other.is_complete());
    }
}

#[cfg(test)]
mod replaced_tests {
    use super::*;
    use crate::mapping::RawEntry;
    use crate::mirror::Kind;
    use std::sync::Arc;
    use toolforge_nss_config::Config;

    fn mirror_of(dir: &std::path::Path, users: &[&str]) -> Arc<Mirror> {
        let text = format!(
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[daemon]\ncache_dir = {:?}\n",
            dir.display().to_string()
        );
        let m = Mirror::new(&Config::parse(&text, std::path::Path::new("t.toml")).unwrap());
        m.apply(|s, mapper| {
            for (i, name) in users.iter().enumerate() {
                let uid = (5000 + i).to_string();
                let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
                for (k, v) in [
                    ("uid", *name),
                    ("uidNumber", &uid),
                    ("gidNumber", "500"),
                    ("homeDirectory", "/home/x"),
                ] {
                    attrs.insert(k.into(), vec![v.into()]);
                }
                let dn = format!("uid={name},ou=people,dc=x");
                s.upsert(mapper, Kind::User, name, RawEntry::new(dn, attrs))
                    .unwrap();
            }
        });
        m.became_complete();
        m
    }

    fn users_in_file(dir: &std::path::Path) -> Vec<String> {
        let m = mirror_of(dir, &[]);
        load(&m).unwrap().expect("a mirror file");
        let mut names: Vec<String> = m.read(|s| s.users().map(|u| u.name.to_string()).collect());
        names.sort();
        names
    }

    #[test]
    fn a_replaced_mirror_saving_meanwhile_neither_spoils_nor_replaces_the_new_ones_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = mirror_of(dir.path(), &["ann", "carol", "dave"]);
        let new = mirror_of(dir.path(), &["bob"]);
        new.set_in_service(false);
        // The old mirror's save has created its temporary file when the old mirror is
        // replaced and the new one saves, whole.
        let (o, n) = (old.clone(), new.clone());
        let step: Box<dyn FnOnce()> = Box::new(move || {
            o.set_in_service(false);
            n.set_in_service(true);
            save(&n).unwrap();
        });
        crate::mirror::gap::put("created", step);
        let _ = save(&old);
        assert!(crate::mirror::gap::reached(), "the gap was reached");
        assert_eq!(users_in_file(dir.path()), ["bob"], "the new mirror's file");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [FILE_NAME], "no temporary file left");
    }

    #[test]
    fn a_mirror_out_of_service_never_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror_of(dir.path(), &["ann"]);
        m.set_in_service(false);
        let _ = save(&m);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_dead_daemons_temporary_files_go_and_a_fresh_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror_of(dir.path(), &[]);
        let old = dir.path().join("mirror.4242-7.tmp");
        let fresh = dir.path().join("mirror.4243-1.tmp");
        for p in [&old, &fresh] {
            std::fs::write(p, b"partial").unwrap();
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert_eq!(load(&m).unwrap(), None, "no mirror.bin yet");
        assert!(!old.exists(), "an orphan of a dead daemon");
        assert!(fresh.exists(), "maybe another daemon's save under way");
        assert!(m.read(|s| s.has_room_for(1 << 20) && !s.has_room_for(u32::MAX as usize + 1)));
    }
}
