//! The mirror on disk: `cache_dir/mirror.bin`, the raw entries with the sync cookies that
//! describe them and the time of the last successful sync, written to a temporary file and
//! renamed (never half-written). Loaded at start, the mirror answers at once, even with the
//! directory unreachable, and a sync resumes from the cookies with a delta. Entries are
//! stored raw, so mapping and policy apply again at load. The reader bounds every count and
//! length by the bytes left: a damaged file is refused, never trusted.
//!
//! Layout (little-endian): `TFMIRR01`, u64 saved-at (Unix seconds), u64 last sync (Unix
//! seconds, 0: never), u32 cookies, each (str id, bytes cookie), u32 entries, each (u8 kind,
//! str key, str dn, u32 attributes, each (str name, u32 values, each str)). `str`/`bytes`:
//! u32 length then the bytes.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::mapping::RawEntry;
use crate::mirror::{Kind, Mirror, State};

pub const FILE_NAME: &str = "mirror.bin";
const MAGIC: &[u8; 8] = b"TFMIRR01";
/// A file larger than this is refused (a Toolforge-sized mirror is a few tens of MB).
const MAX_FILE: u64 = 2 << 30;

fn path(m: &Mirror) -> PathBuf {
    m.cache_dir.join(FILE_NAME)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Encodes the mirror (under its read lock) and writes it atomically; returns the size.
pub fn save(m: &Mirror) -> Result<usize, String> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&secs(Some(SystemTime::now())).to_le_bytes());
    let last_sync = *m.last_sync.lock().unwrap_or_else(|e| e.into_inner());
    out.extend_from_slice(&secs(last_sync).to_le_bytes());
    // Cookies and entries under one read lock: the cookies describe exactly these entries.
    m.read(|s| {
        let cookies = m.cookies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.extend_from_slice(&(cookies.len() as u32).to_le_bytes());
        for (id, (c, _)) in &cookies {
            put_bytes(&mut out, id.as_bytes());
            put_bytes(&mut out, c);
        }
        out.extend_from_slice(&(s.raw.len() as u32).to_le_bytes());
        for ((kind, key), e) in &s.raw {
            out.push(u8::from(*kind == Kind::Group));
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, e.dn.as_bytes());
            out.extend_from_slice(&(e.attrs.len() as u32).to_le_bytes());
            for (name, values) in &e.attrs {
                put_bytes(&mut out, name.as_bytes());
                out.extend_from_slice(&(values.len() as u32).to_le_bytes());
                for v in values {
                    put_bytes(&mut out, v.as_bytes());
                }
            }
        }
    });
    let p = path(m);
    let tmp = p.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if !m.cache_dir.exists() {
            std::fs::create_dir_all(&m.cache_dir)?;
            std::fs::set_permissions(&m.cache_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    };
    write().map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(out.len())
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
    let _saved = r.u64()?;
    let last = r.u64()?;
    let last_sync = (last > 0).then(|| UNIX_EPOCH + Duration::from_secs(last));
    let mut cookies = HashMap::new();
    for _ in 0..r.count(8)? {
        let id = r.str()?;
        let c = r.bytes()?.to_vec();
        cookies.insert(id, c);
    }
    let mut state = State::new(m.ldap.schema, m.ldap.group_nesting_level);
    for _ in 0..r.count(13)? {
        let kind = match r.take(1)?[0] {
            0 => Kind::User,
            1 => Kind::Group,
            k => return Err(format!("unknown entry kind {k}")),
        };
        let key = r.str()?;
        let dn = r.str()?;
        let mut attrs = HashMap::new();
        for _ in 0..r.count(8)? {
            let name = r.str()?;
            let mut values = Vec::new();
            for _ in 0..r.count(4)? {
                values.push(r.str()?);
            }
            attrs.insert(name, values);
        }
        // Entries the mapping refuses now are simply not served.
        let _ = state.upsert(&m.mapper, kind, &key, RawEntry::new(dn, attrs));
    }
    if !r.b.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok((state, cookies, last_sync))
}
