//! How the mirror holds its entries compactly: entries in slabs under `u32` ids ([`Slab`]),
//! every string in one buffer ([`Texts`], [`Span`]), entry keys packed ([`Key`]), interned
//! member values ([`Value`]). [`super::State`] keeps the indexes over them.

use toolforge_nss_protocol::Passwd;

use crate::directory::members::normalize_dn;
use crate::records::UserRecord;

/// A DN as the indexes hold it: two spellings of one DN are one key (as in lookup mode).
pub(super) fn norm(dn: &str) -> String {
    normalize_dn(dn).unwrap_or_else(|| dn.trim().to_ascii_lowercase())
}

/// Dead bytes in [`Texts`] worth a repack (when they are also half of it).
pub(super) const REPACK_MIN: usize = 1 << 20;

/// No entry (an id field that points nowhere).
pub(super) const NONE: u32 = u32::MAX;

/// An entry key: a UUID in its canonical text form (lowercase, hyphenated: what `entryUUID`
/// and the sync state give) packed into 16 bytes, any other key as text. [`Key::new`] is
/// deterministic, so one text is always one key, and [`Key::text`] gives the text back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Key {
    pub(super) fn new(s: &str) -> Key {
        match parse_uuid(s) {
            Some(u) => Key::Uuid(u),
            None => Key::Text(s.into()),
        }
    }

    pub(super) fn text(&self) -> String {
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

pub(super) const HEX: &[u8; 16] = b"0123456789abcdef";

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
pub(super) struct Slab<T> {
    pub(super) items: Vec<Option<T>>,
    pub(super) free: Vec<u32>,
    pub(super) len: usize,
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
    pub(super) fn insert(&mut self, t: T) -> u32 {
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

    pub(super) fn remove(&mut self, id: u32) -> Option<T> {
        let t = self.items.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.len -= 1;
        Some(t)
    }

    pub(super) fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.items.get_mut(id as usize)?.as_mut()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i as u32, t.as_ref()?)))
    }

    pub(super) fn shrink(&mut self) {
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
pub(super) struct Span {
    pub(super) at: u32,
    pub(super) len: u32,
}

/// Every string of the mirror one after the other in one buffer: a few large allocations
/// (mapped apart from the heap, given back whole) instead of one small allocation per
/// string scattered among the load's short-lived ones, which kept whole pages resident.
/// A removed string's bytes are dead until [`State::repack`] copies the live ones out.
#[derive(Default)]
pub(super) struct Texts {
    pub(super) buf: String,
    pub(super) dead: usize,
}

impl Texts {
    /// Room for `n` more bytes, growing by an eighth (not doubling: the buffer is most of
    /// the mirror, and a change after the load should not double it).
    pub(super) fn reserve(&mut self, n: usize) {
        if self.buf.capacity() - self.buf.len() < n {
            self.buf.reserve_exact(n.max(self.buf.len() / 8).max(4096));
        }
    }

    pub(super) fn push(&mut self, s: &str) -> Span {
        self.reserve(s.len());
        let at = self.buf.len() as u32;
        self.buf.push_str(s);
        Span {
            at,
            len: s.len() as u32,
        }
    }

    pub(super) fn get(&self, sp: Span) -> &str {
        let at = sp.at as usize;
        self.buf.get(at..at + sp.len as usize).unwrap_or_default()
    }

    pub(super) fn free(&mut self, sp: Span) {
        self.dead += sp.len as usize;
    }
}

/// A user as held: its DN and passwd strings one after the other in [`Texts`].
pub(super) struct User {
    pub(super) key: Key,
    /// DN, name, gecos, home directory, shell.
    pub(super) text: Span,
    /// Where the DN, name, gecos and home directory end in `text`.
    pub(super) ends: [u32; 4],
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The value of its normalised DN (RFC 2307bis), else `NONE`.
    pub(super) ndn: u32,
}

impl User {
    pub(super) fn field<'a>(&self, t: &'a Texts, i: usize) -> &'a str {
        let text = t.get(self.text);
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(text.len(), |&e| e as usize);
        text.get(start..end).unwrap_or_default()
    }
    pub(super) fn dn<'a>(&self, t: &'a Texts) -> &'a str {
        self.field(t, 0)
    }
    pub(super) fn name<'a>(&self, t: &'a Texts) -> &'a str {
        self.field(t, 1)
    }
    pub(super) fn record(&self, t: &Texts) -> UserRecord {
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
pub(super) struct HeldGroup {
    pub(super) key: Key,
    pub(super) dn: Span,
    pub(super) name: Span,
    pub(super) gid: u32,
    /// The value of its normalised DN (RFC 2307bis: what parent groups list), else `NONE`.
    pub(super) ndn: u32,
    /// Member values (names for RFC 2307, normalised DNs for RFC 2307bis), each once.
    pub(super) members: Box<[u32]>,
}

/// An interned member value or normalised entry DN, with the entries whose DN it is.
pub(super) struct Value {
    pub(super) text: Span,
    /// Group member lists and entries that hold it.
    pub(super) refs: u32,
    /// The user (`NONE`: none) and the group whose normalised DN this is (RFC 2307bis).
    pub(super) user: u32,
    pub(super) group: u32,
}
