//! Requests, responses and their body layouts.
//!
//! Requests are small and decoded into owned values (the daemon keeps them). Responses are
//! encoded from owned values by the daemon and decoded by the module into borrowed views
//! ([`ResponseRef`]) so a 5,000-member group costs no allocation per member.
//!
//! Body layouts (all integers little-endian, `str` = u16 length + bytes, never NUL):
//! ```text
//! GetPwNam, GetGrNam, InitGroups   str name
//! GetPwUid, GetGrGid               u32 id
//! PwEnt, GrEnt                     u64 generation (0 = start), u32 cursor
//! Passwd      str name, str passwd, u32 uid, u32 gid, str gecos, str dir, str shell
//! Group       str name, str passwd, u32 gid, u32 count, count x str member
//! GroupIds    u32 count, count x u32 gid
//! NotFound, Unavailable            (empty)
//! PasswdBatch u64 generation, u32 next_cursor (u32::MAX = end), u32 count, count x Passwd
//! GroupBatch  u64 generation, u32 next_cursor (u32::MAX = end), u32 count, count x Group
//! Error       u16 code, u16 min_version, u16 max_version, str message   (frozen layout)
//! ```

use crate::frame::{
    Capabilities, DecodeError, Header, MAX_REQUEST_BODY, MAX_RESPONSE_BODY, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::wire::{Reader, Writer};

/// Cursor value meaning "the enumeration is complete".
pub const END_OF_ENUMERATION: u32 = u32::MAX;

macro_rules! kinds {
    ($name:ident { $($variant:ident = $value:expr),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum $name { $($variant = $value),* }
        impl $name {
            pub fn from_u16(v: u16) -> Option<Self> {
                match v { $($value => Some($name::$variant),)* _ => None }
            }
        }
    };
}

kinds!(RequestKind {
    GetPwNam = 0x01,
    GetPwUid = 0x02,
    GetGrNam = 0x03,
    GetGrGid = 0x04,
    InitGroups = 0x05,
    PwEnt = 0x06,
    GrEnt = 0x07,
});

kinds!(ResponseKind {
    Passwd = 0x81,
    Group = 0x82,
    GroupIds = 0x83,
    NotFound = 0x84,
    PasswdBatch = 0x85,
    GroupBatch = 0x86,
    Unavailable = 0x8e,
    Error = 0x8f,
});

/// A lookup the module asks of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    GetPwNam(String),
    GetPwUid(u32),
    GetGrNam(String),
    GetGrGid(u32),
    InitGroups(String),
    PwEnt { generation: u64, cursor: u32 },
    GrEnt { generation: u64, cursor: u32 },
}

impl Request {
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::GetPwNam(_) => RequestKind::GetPwNam,
            Request::GetPwUid(_) => RequestKind::GetPwUid,
            Request::GetGrNam(_) => RequestKind::GetGrNam,
            Request::GetGrGid(_) => RequestKind::GetGrGid,
            Request::InitGroups(_) => RequestKind::InitGroups,
            Request::PwEnt { .. } => RequestKind::PwEnt,
            Request::GrEnt { .. } => RequestKind::GrEnt,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out };
        match self {
            Request::GetPwNam(n) | Request::GetGrNam(n) | Request::InitGroups(n) => {
                w.str(n.as_bytes())
            }
            Request::GetPwUid(id) | Request::GetGrGid(id) => w.u32(*id),
            Request::PwEnt { generation, cursor } | Request::GrEnt { generation, cursor } => {
                w.u64(*generation);
                w.u32(*cursor);
            }
        }
    }

    /// Encodes a whole frame (header and body) in the current protocol version.
    pub fn encode(&self, request_id: u32, capabilities: Capabilities) -> Vec<u8> {
        encode_frame(
            self.kind() as u16,
            request_id,
            PROTOCOL_VERSION,
            0,
            capabilities,
            |out| self.encode_body(out),
        )
    }

    /// Decodes a request body of the given kind.
    pub fn decode(kind: u16, body: &[u8]) -> Result<Request, DecodeError> {
        if body.len() > MAX_REQUEST_BODY as usize {
            return Err(DecodeError::TooLarge(body.len() as u32));
        }
        let kind = RequestKind::from_u16(kind).ok_or(DecodeError::UnknownKind(kind))?;
        let mut r = Reader::new(body);
        let name = |r: &mut Reader| -> Result<String, DecodeError> {
            let s = r.str()?;
            String::from_utf8(s.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
        };
        let req = match kind {
            RequestKind::GetPwNam => Request::GetPwNam(name(&mut r)?),
            RequestKind::GetGrNam => Request::GetGrNam(name(&mut r)?),
            RequestKind::InitGroups => Request::InitGroups(name(&mut r)?),
            RequestKind::GetPwUid => Request::GetPwUid(r.u32()?),
            RequestKind::GetGrGid => Request::GetGrGid(r.u32()?),
            RequestKind::PwEnt => Request::PwEnt {
                generation: r.u64()?,
                cursor: r.u32()?,
            },
            RequestKind::GrEnt => Request::GrEnt {
                generation: r.u64()?,
                cursor: r.u32()?,
            },
        };
        r.finish()?;
        Ok(req)
    }
}

/// A user as `struct passwd` carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Passwd {
    pub name: String,
    pub passwd: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub dir: String,
    pub shell: String,
}

/// A group as `struct group` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub name: String,
    pub passwd: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Why the daemon refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    BadRequest = 1,
    UnsupportedVersion = 2,
    UnknownRequest = 3,
    Busy = 4,
    Internal = 5,
    EnumerationExpired = 6,
    Other = 0xffff,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::UnknownRequest,
            4 => ErrorCode::Busy,
            5 => ErrorCode::Internal,
            6 => ErrorCode::EnumerationExpired,
            _ => ErrorCode::Other,
        }
    }
}

/// What the daemon answers (owned; the daemon encodes these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Passwd(Passwd),
    Group(Group),
    GroupIds(Vec<u32>),
    NotFound,
    PasswdBatch {
        generation: u64,
        next_cursor: u32,
        entries: Vec<Passwd>,
    },
    GroupBatch {
        generation: u64,
        next_cursor: u32,
        entries: Vec<Group>,
    },
    /// The directory is unreachable and nothing usable is cached.
    Unavailable,
    Error {
        code: ErrorCode,
        message: String,
    },
}

fn encode_passwd(w: &mut Writer, p: &Passwd) {
    w.str(p.name.as_bytes());
    w.str(p.passwd.as_bytes());
    w.u32(p.uid);
    w.u32(p.gid);
    w.str(p.gecos.as_bytes());
    w.str(p.dir.as_bytes());
    w.str(p.shell.as_bytes());
}

fn encode_group(w: &mut Writer, g: &Group) {
    w.str(g.name.as_bytes());
    w.str(g.passwd.as_bytes());
    w.u32(g.gid);
    w.u32(g.members.len() as u32);
    for m in &g.members {
        w.str(m.as_bytes());
    }
}

fn encode_frame(
    kind: u16,
    request_id: u32,
    version: u16,
    flags: u16,
    capabilities: Capabilities,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = vec![0u8; crate::HEADER_LEN];
    body(&mut out);
    let header = Header {
        version,
        flags,
        capabilities,
        kind,
        request_id,
        body_len: (out.len() - crate::HEADER_LEN) as u32,
    };
    out[..crate::HEADER_LEN].copy_from_slice(&header.encode());
    out
}

/// A whole frame around an already-encoded body.
pub(crate) fn encode_frame_raw(
    kind: u16,
    request_id: u32,
    version: u16,
    flags: u16,
    capabilities: Capabilities,
    body: &[u8],
) -> Vec<u8> {
    encode_frame(kind, request_id, version, flags, capabilities, |out| {
        out.extend_from_slice(body)
    })
}

impl Response {
    pub fn kind(&self) -> ResponseKind {
        match self {
            Response::Passwd(_) => ResponseKind::Passwd,
            Response::Group(_) => ResponseKind::Group,
            Response::GroupIds(_) => ResponseKind::GroupIds,
            Response::NotFound => ResponseKind::NotFound,
            Response::PasswdBatch { .. } => ResponseKind::PasswdBatch,
            Response::GroupBatch { .. } => ResponseKind::GroupBatch,
            Response::Unavailable => ResponseKind::Unavailable,
            Response::Error { .. } => ResponseKind::Error,
        }
    }

    /// The encoded body length, without encoding (used to size enumeration batches).
    pub fn passwd_encoded_len(p: &Passwd) -> usize {
        5 * 2 + 8 + p.name.len() + p.passwd.len() + p.gecos.len() + p.dir.len() + p.shell.len()
    }

    /// The encoded body length of a group (used to size enumeration batches).
    pub fn group_encoded_len(g: &Group) -> usize {
        2 * 2
            + 8
            + g.name.len()
            + g.passwd.len()
            + g.members.iter().map(|m| 2 + m.len()).sum::<usize>()
    }

    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out };
        match self {
            Response::Passwd(p) => encode_passwd(&mut w, p),
            Response::Group(g) => encode_group(&mut w, g),
            Response::GroupIds(ids) => {
                w.u32(ids.len() as u32);
                for id in ids {
                    w.u32(*id);
                }
            }
            Response::NotFound | Response::Unavailable => {}
            Response::PasswdBatch {
                generation,
                next_cursor,
                entries,
            } => {
                w.u64(*generation);
                w.u32(*next_cursor);
                w.u32(entries.len() as u32);
                for p in entries {
                    encode_passwd(&mut w, p);
                }
            }
            Response::GroupBatch {
                generation,
                next_cursor,
                entries,
            } => {
                w.u64(*generation);
                w.u32(*next_cursor);
                w.u32(entries.len() as u32);
                for g in entries {
                    encode_group(&mut w, g);
                }
            }
            Response::Error { code, message } => {
                w.u16(*code as u16);
                w.u16(MIN_PROTOCOL_VERSION);
                w.u16(PROTOCOL_VERSION);
                w.str(message.as_bytes());
            }
        }
    }

    /// Encodes a whole frame answering `request_id`.
    pub fn encode(&self, request_id: u32, flags: u16, capabilities: Capabilities) -> Vec<u8> {
        encode_frame(
            self.kind() as u16,
            request_id,
            PROTOCOL_VERSION,
            flags,
            capabilities,
            |out| self.encode_body(out),
        )
    }
}

/// Builds a `PasswdBatch` or `GroupBatch` body from entries that are already encoded as
/// `Passwd` or `Group` bodies (the batch entry layout is the single-entry body layout), so the
/// daemon can list its cache without re-encoding.
pub fn encode_batch_body(out: &mut Vec<u8>, generation: u64, next_cursor: u32, entries: &[&[u8]]) {
    let mut w = Writer { out };
    w.u64(generation);
    w.u32(next_cursor);
    w.u32(entries.len() as u32);
    for e in entries {
        w.out.extend_from_slice(e);
    }
}

/// A decoded `Passwd` borrowing the response buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswdRef<'a> {
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a [u8],
    pub dir: &'a [u8],
    pub shell: &'a [u8],
}

impl PasswdRef<'_> {
    /// Bytes needed for the strings of `struct passwd`, each with its NUL.
    pub fn strings_len(&self) -> usize {
        self.name.len()
            + self.passwd.len()
            + self.gecos.len()
            + self.dir.len()
            + self.shell.len()
            + 5
    }

    pub fn to_owned(&self) -> Result<Passwd, DecodeError> {
        Ok(Passwd {
            name: utf8(self.name)?,
            passwd: utf8(self.passwd)?,
            uid: self.uid,
            gid: self.gid,
            gecos: utf8(self.gecos)?,
            dir: utf8(self.dir)?,
            shell: utf8(self.shell)?,
        })
    }
}

/// A decoded `Group` borrowing the response buffer; members are validated at decode time
/// and iterated lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupRef<'a> {
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub gid: u32,
    member_count: u32,
    member_bytes: &'a [u8],
}

impl<'a> GroupRef<'a> {
    pub fn member_count(&self) -> usize {
        self.member_count as usize
    }

    /// Total bytes of member names, without NULs.
    pub fn member_name_bytes(&self) -> usize {
        self.member_bytes.len() - 2 * self.member_count as usize
    }

    pub fn members(&self) -> MemberIter<'a> {
        MemberIter {
            rest: self.member_bytes,
        }
    }

    pub fn to_owned(&self) -> Result<Group, DecodeError> {
        Ok(Group {
            name: utf8(self.name)?,
            passwd: utf8(self.passwd)?,
            gid: self.gid,
            members: self.members().map(utf8).collect::<Result<_, _>>()?,
        })
    }
}

/// Iterates over the already-validated member names of a [`GroupRef`].
pub struct MemberIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MemberIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.len() < 2 {
            return None;
        }
        let len = u16::from_le_bytes([self.rest[0], self.rest[1]]) as usize;
        let end = (2 + len).min(self.rest.len());
        let name = &self.rest[2..end];
        self.rest = &self.rest[end..];
        Some(name)
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
}

/// A decoded response borrowing the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseRef<'a> {
    Passwd(PasswdRef<'a>),
    Group(GroupRef<'a>),
    GroupIds(Vec<u32>),
    NotFound,
    PasswdBatch {
        generation: u64,
        next_cursor: u32,
        entries: Vec<PasswdRef<'a>>,
    },
    GroupBatch {
        generation: u64,
        next_cursor: u32,
        entries: Vec<GroupRef<'a>>,
    },
    Unavailable,
    Error {
        code: ErrorCode,
        min_version: u16,
        max_version: u16,
        message: &'a [u8],
    },
}

fn decode_passwd<'a>(r: &mut Reader<'a>) -> Result<PasswdRef<'a>, DecodeError> {
    Ok(PasswdRef {
        name: r.str()?,
        passwd: r.str()?,
        uid: r.u32()?,
        gid: r.u32()?,
        gecos: r.str()?,
        dir: r.str()?,
        shell: r.str()?,
    })
}

fn decode_group<'a>(r: &mut Reader<'a>) -> Result<GroupRef<'a>, DecodeError> {
    let name = r.str()?;
    let passwd = r.str()?;
    let gid = r.u32()?;
    let member_count = r.u32()?;
    // Each member takes at least two bytes: refuse counts the body cannot hold before looping.
    if member_count as usize > r.remaining() / 2 {
        return Err(DecodeError::Truncated);
    }
    let before = r.remaining();
    for _ in 0..member_count {
        if r.str()?.is_empty() {
            return Err(DecodeError::Invalid("empty member name"));
        }
    }
    // The member region is the bytes just validated, kept for lazy iteration.
    let member_bytes = r.last(before - r.remaining());
    Ok(GroupRef {
        name,
        passwd,
        gid,
        member_count,
        member_bytes,
    })
}

fn decode_count(r: &mut Reader, min_entry_len: usize) -> Result<u32, DecodeError> {
    let n = r.u32()?;
    if n as usize > r.remaining() / min_entry_len {
        return Err(DecodeError::Truncated);
    }
    Ok(n)
}

impl<'a> ResponseRef<'a> {
    /// Decodes a response body of the given kind. Never panics, whatever the bytes.
    pub fn decode(kind: u16, body: &'a [u8]) -> Result<ResponseRef<'a>, DecodeError> {
        if body.len() > MAX_RESPONSE_BODY as usize {
            return Err(DecodeError::TooLarge(body.len() as u32));
        }
        let kind = ResponseKind::from_u16(kind).ok_or(DecodeError::UnknownKind(kind))?;
        let mut r = Reader::new(body);
        let resp = match kind {
            ResponseKind::Passwd => ResponseRef::Passwd(decode_passwd(&mut r)?),
            ResponseKind::Group => ResponseRef::Group(decode_group(&mut r)?),
            ResponseKind::GroupIds => {
                let n = decode_count(&mut r, 4)?;
                let mut ids = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    ids.push(r.u32()?);
                }
                ResponseRef::GroupIds(ids)
            }
            ResponseKind::NotFound => ResponseRef::NotFound,
            ResponseKind::Unavailable => ResponseRef::Unavailable,
            ResponseKind::PasswdBatch => {
                let generation = r.u64()?;
                let next_cursor = r.u32()?;
                let n = decode_count(&mut r, 18)?;
                let mut entries = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    entries.push(decode_passwd(&mut r)?);
                }
                ResponseRef::PasswdBatch {
                    generation,
                    next_cursor,
                    entries,
                }
            }
            ResponseKind::GroupBatch => {
                let generation = r.u64()?;
                let next_cursor = r.u32()?;
                let n = decode_count(&mut r, 12)?;
                let mut entries = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    entries.push(decode_group(&mut r)?);
                }
                ResponseRef::GroupBatch {
                    generation,
                    next_cursor,
                    entries,
                }
            }
            ResponseKind::Error => ResponseRef::Error {
                code: ErrorCode::from_u16(r.u16()?),
                min_version: r.u16()?,
                max_version: r.u16()?,
                message: r.str()?,
            },
        };
        r.finish()?;
        Ok(resp)
    }

    /// Converts to the owned form (tests and tools; the module uses the borrowed form).
    pub fn to_owned(&self) -> Result<Response, DecodeError> {
        Ok(match self {
            ResponseRef::Passwd(p) => Response::Passwd(p.to_owned()?),
            ResponseRef::Group(g) => Response::Group(g.to_owned()?),
            ResponseRef::GroupIds(ids) => Response::GroupIds(ids.clone()),
            ResponseRef::NotFound => Response::NotFound,
            ResponseRef::Unavailable => Response::Unavailable,
            ResponseRef::PasswdBatch {
                generation,
                next_cursor,
                entries,
            } => Response::PasswdBatch {
                generation: *generation,
                next_cursor: *next_cursor,
                entries: entries
                    .iter()
                    .map(|p| p.to_owned())
                    .collect::<Result<_, _>>()?,
            },
            ResponseRef::GroupBatch {
                generation,
                next_cursor,
                entries,
            } => Response::GroupBatch {
                generation: *generation,
                next_cursor: *next_cursor,
                entries: entries
                    .iter()
                    .map(|g| g.to_owned())
                    .collect::<Result<_, _>>()?,
            },
            ResponseRef::Error { code, message, .. } => Response::Error {
                code: *code,
                message: utf8(message)?,
            },
        })
    }
}
