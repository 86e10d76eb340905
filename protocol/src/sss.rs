//! SSSD's NSS client protocol, as `libnss_sss.so.2` speaks it on `/var/lib/sss/pipes/nss`
//! (the protocol of SSSD 2.4 to 2.10; checked against their `src/sss_client/` and
//! `src/responder/nss/`). The daemon answers it so that images with `libnss-sss` resolve
//! through toolforge-nssd unchanged. Only the commands `libnss_sss` sends for users and
//! groups are understood; everything else decodes to [`SssDecodeError::UnknownCommand`].
//!
//! ```text
//! header (16 bytes, four u32 in HOST byte order)
//!   0  total length (header included)
//!   4  command          a reply echoes the request's; the client checks it
//!   8  status           0 = OK; an errno otherwise (the client closes, EAGAIN -> TRYAGAIN,
//!                       anything else -> UNAVAIL), and the body is then ignored
//!  12  reserved         0
//!
//! requests                       body
//!   GET_VERSION      0x0001      u32 version (1)          reply: u32 1
//!   GETPWNAM/GETGRNAM/INITGR     name + NUL
//!   GETPWUID/GETGRGID            u32 id
//!   SETPWENT/ENDPWENT/SETGRENT/ENDGRENT   (empty)         reply: status 0, empty body
//!   GETPWENT/GETGRENT            u32 most entries wanted (libnss_sss asks for 256)
//!
//! replies to lookups: u32 count, u32 reserved (0), then count entries
//!   passwd     u32 uid, u32 gid, name\0 passwd\0 gecos\0 dir\0 shell\0
//!   group      u32 gid, u32 member count, name\0 passwd\0 member\0 ...
//!   initgroups count x u32 gid
//! ```
//! Not found is status 0 with the body `0, 0`: a status-0 lookup reply must never be empty
//! (the client reads the count without checking the length). The client does not check the
//! initgroups body's length either, so `count` must be exact; SSSD 2.8's own reply ends with
//! one extra zero word when it has no "original primary gid" to add, which the client never
//! reads and this encoder does not send.
//!
//! Every decoder treats its input as hostile and never panics; requests are bounded by
//! [`SSS_MAX_REQUEST_BODY`] and replies by [`MAX_RESPONSE_BODY`].

use std::fmt;

use crate::frame::MAX_RESPONSE_BODY;

/// The socket's file name; the client has `/var/lib/sss/pipes/nss` compiled in.
pub const SSS_SOCKET_NAME: &str = "nss";
/// The NSS protocol version the client asks for and requires back.
pub const SSS_NSS_PROTOCOL_VERSION: u32 = 1;
/// Size of the fixed header.
pub const SSS_HEADER_LEN: usize = 16;
/// Largest request body accepted (names are at most 255 bytes plus NUL).
pub const SSS_MAX_REQUEST_BODY: u32 = 1024;
/// The most entries one `GETPWENT`/`GETGRENT` reply carries, whatever the client asks.
pub const SSS_MAX_ENUM_ENTRIES: u32 = 256;
/// Byte budget of one enumeration reply (entries beyond it go into the next reply).
pub const SSS_ENUM_REPLY_BYTES: usize = 1 << 20;

/// errno values sent as a reply status (Linux numbering, which the client compares against).
pub mod status {
    pub const OK: u32 = 0;
    /// The client answers `NSS_STATUS_TRYAGAIN`.
    pub const EAGAIN: u32 = 11;
    pub const EINVAL: u32 = 22;
    /// Unknown command.
    pub const ENOSYS: u32 = 38;
    pub const EBADMSG: u32 = 74;
    /// Too many connections.
    pub const EBUSY: u32 = 16;
    /// The directory is unreachable and nothing is cached.
    pub const EHOSTUNREACH: u32 = 113;
    pub const EIO: u32 = 5;
}

/// The commands libnss_sss sends for users and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SssCommand {
    GetVersion = 0x0001,
    GetPwNam = 0x0011,
    GetPwUid = 0x0012,
    SetPwEnt = 0x0013,
    GetPwEnt = 0x0014,
    EndPwEnt = 0x0015,
    GetGrNam = 0x0021,
    GetGrGid = 0x0022,
    SetGrEnt = 0x0023,
    GetGrEnt = 0x0024,
    EndGrEnt = 0x0025,
    InitGr = 0x0026,
}

impl SssCommand {
    pub const ALL: [SssCommand; 12] = [
        SssCommand::GetVersion,
        SssCommand::GetPwNam,
        SssCommand::GetPwUid,
        SssCommand::SetPwEnt,
        SssCommand::GetPwEnt,
        SssCommand::EndPwEnt,
        SssCommand::GetGrNam,
        SssCommand::GetGrGid,
        SssCommand::SetGrEnt,
        SssCommand::GetGrEnt,
        SssCommand::EndGrEnt,
        SssCommand::InitGr,
    ];

    pub fn from_u32(v: u32) -> Option<SssCommand> {
        SssCommand::ALL.into_iter().find(|c| *c as u32 == v)
    }
}

/// Why a frame or body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SssDecodeError {
    Truncated,
    /// The header's length is below the header or the body above the limit.
    BadLength(u32),
    UnknownCommand(u32),
    /// A known command with a body of the wrong shape.
    BadBody(SssCommand, &'static str),
    TrailingBytes,
}

impl fmt::Display for SssDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SssDecodeError::Truncated => write!(f, "frame truncated"),
            SssDecodeError::BadLength(n) => write!(f, "frame length {n} out of bounds"),
            SssDecodeError::UnknownCommand(c) => write!(f, "unknown SSSD command {c:#x}"),
            SssDecodeError::BadBody(c, why) => write!(f, "bad {c:?} body: {why}"),
            SssDecodeError::TrailingBytes => write!(f, "trailing bytes"),
        }
    }
}

impl std::error::Error for SssDecodeError {}

/// The fixed 16-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SssHeader {
    /// Total frame length, header included.
    pub len: u32,
    pub command: u32,
    pub status: u32,
    pub reserved: u32,
}

impl SssHeader {
    pub fn encode(&self) -> [u8; SSS_HEADER_LEN] {
        let mut b = [0u8; SSS_HEADER_LEN];
        for (i, v) in [self.len, self.command, self.status, self.reserved]
            .into_iter()
            .enumerate()
        {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Decodes a header; the body (`len - 16`) must not exceed `max_body`.
    pub fn decode(buf: &[u8], max_body: u32) -> Result<SssHeader, SssDecodeError> {
        if buf.len() < SSS_HEADER_LEN {
            return Err(SssDecodeError::Truncated);
        }
        let h = SssHeader {
            len: u32_at(buf, 0),
            command: u32_at(buf, 4),
            status: u32_at(buf, 8),
            reserved: u32_at(buf, 12),
        };
        if (h.len as usize) < SSS_HEADER_LEN || h.len - SSS_HEADER_LEN as u32 > max_body {
            return Err(SssDecodeError::BadLength(h.len));
        }
        Ok(h)
    }

    /// Bytes of body that follow the header.
    pub fn body_len(&self) -> usize {
        (self.len as usize).saturating_sub(SSS_HEADER_LEN)
    }
}

fn u32_at(buf: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]])
}

/// A decoded request. Names are raw bytes (without their NUL): the daemon decides what a
/// name that is not UTF-8 or not a valid name means (not found).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SssRequest {
    GetVersion(u32),
    GetPwNam(Vec<u8>),
    GetPwUid(u32),
    SetPwEnt,
    GetPwEnt(u32),
    EndPwEnt,
    GetGrNam(Vec<u8>),
    GetGrGid(u32),
    SetGrEnt,
    GetGrEnt(u32),
    EndGrEnt,
    InitGr(Vec<u8>),
}

impl SssRequest {
    pub fn command(&self) -> SssCommand {
        match self {
            SssRequest::GetVersion(_) => SssCommand::GetVersion,
            SssRequest::GetPwNam(_) => SssCommand::GetPwNam,
            SssRequest::GetPwUid(_) => SssCommand::GetPwUid,
            SssRequest::SetPwEnt => SssCommand::SetPwEnt,
            SssRequest::GetPwEnt(_) => SssCommand::GetPwEnt,
            SssRequest::EndPwEnt => SssCommand::EndPwEnt,
            SssRequest::GetGrNam(_) => SssCommand::GetGrNam,
            SssRequest::GetGrGid(_) => SssCommand::GetGrGid,
            SssRequest::SetGrEnt => SssCommand::SetGrEnt,
            SssRequest::GetGrEnt(_) => SssCommand::GetGrEnt,
            SssRequest::EndGrEnt => SssCommand::EndGrEnt,
            SssRequest::InitGr(_) => SssCommand::InitGr,
        }
    }

    /// Decodes the body of a request with the given command.
    pub fn decode(command: u32, body: &[u8]) -> Result<SssRequest, SssDecodeError> {
        if body.len() > SSS_MAX_REQUEST_BODY as usize {
            return Err(SssDecodeError::BadLength(
                body.len().saturating_add(SSS_HEADER_LEN) as u32,
            ));
        }
        let cmd = SssCommand::from_u32(command).ok_or(SssDecodeError::UnknownCommand(command))?;
        let u32_body = || -> Result<u32, SssDecodeError> {
            match body.len() {
                4 => Ok(u32_at(body, 0)),
                n if n < 4 => Err(SssDecodeError::BadBody(cmd, "expected a u32")),
                _ => Err(SssDecodeError::TrailingBytes),
            }
        };
        let empty = || -> Result<(), SssDecodeError> {
            if body.is_empty() {
                Ok(())
            } else {
                Err(SssDecodeError::TrailingBytes)
            }
        };
        let name = || -> Result<Vec<u8>, SssDecodeError> {
            match body.split_last() {
                Some((0, [])) => Err(SssDecodeError::BadBody(cmd, "empty name")),
                Some((0, name)) if !name.contains(&0) => Ok(name.to_vec()),
                Some((0, _)) => Err(SssDecodeError::BadBody(cmd, "NUL inside the name")),
                _ => Err(SssDecodeError::BadBody(cmd, "name without its NUL")),
            }
        };
        Ok(match cmd {
            // SSSD accepts a version request without a body (as version 1).
            SssCommand::GetVersion if body.is_empty() => SssRequest::GetVersion(1),
            SssCommand::GetVersion => SssRequest::GetVersion(u32_body()?),
            SssCommand::GetPwNam => SssRequest::GetPwNam(name()?),
            SssCommand::GetGrNam => SssRequest::GetGrNam(name()?),
            SssCommand::InitGr => SssRequest::InitGr(name()?),
            SssCommand::GetPwUid => SssRequest::GetPwUid(u32_body()?),
            SssCommand::GetGrGid => SssRequest::GetGrGid(u32_body()?),
            SssCommand::GetPwEnt => SssRequest::GetPwEnt(u32_body()?),
            SssCommand::GetGrEnt => SssRequest::GetGrEnt(u32_body()?),
            SssCommand::SetPwEnt => empty().map(|()| SssRequest::SetPwEnt)?,
            SssCommand::EndPwEnt => empty().map(|()| SssRequest::EndPwEnt)?,
            SssCommand::SetGrEnt => empty().map(|()| SssRequest::SetGrEnt)?,
            SssCommand::EndGrEnt => empty().map(|()| SssRequest::EndGrEnt)?,
        })
    }

    /// Encodes a whole request frame, as libnss_sss sends it (tests and the benchmark).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            SssRequest::GetVersion(v)
            | SssRequest::GetPwUid(v)
            | SssRequest::GetGrGid(v)
            | SssRequest::GetPwEnt(v)
            | SssRequest::GetGrEnt(v) => body.extend_from_slice(&v.to_ne_bytes()),
            SssRequest::GetPwNam(n) | SssRequest::GetGrNam(n) | SssRequest::InitGr(n) => {
                body.extend_from_slice(n);
                body.push(0);
            }
            SssRequest::SetPwEnt
            | SssRequest::EndPwEnt
            | SssRequest::SetGrEnt
            | SssRequest::EndGrEnt => {}
        }
        frame(self.command() as u32, status::OK, &body)
    }
}

/// A whole frame: header and body.
pub fn frame(command: u32, status: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SSS_HEADER_LEN + body.len());
    out.extend_from_slice(
        &SssHeader {
            len: (SSS_HEADER_LEN + body.len()) as u32,
            command,
            status,
            reserved: 0,
        }
        .encode(),
    );
    out.extend_from_slice(body);
    out
}

/// An error reply: the status alone, no body (the client ignores it and closes).
pub fn error_reply(command: u32, errno: u32) -> Vec<u8> {
    frame(command, errno, &[])
}

/// The reply to `GET_VERSION`.
pub fn version_reply() -> Vec<u8> {
    frame(
        SssCommand::GetVersion as u32,
        status::OK,
        &SSS_NSS_PROTOCOL_VERSION.to_ne_bytes(),
    )
}

/// The reply to the SET/END enumeration commands: success, no body (the client passes no
/// reply buffer for them, as SSSD's own reply has none).
pub fn empty_reply(command: SssCommand) -> Vec<u8> {
    frame(command as u32, status::OK, &[])
}

/// "Not found" (or "no more entries"): success with count 0.
pub fn not_found_reply(command: SssCommand) -> Vec<u8> {
    frame(command as u32, status::OK, &[0; 8])
}

/// A user as the reply carries it (strings without NUL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SssPasswd<'a> {
    pub uid: u32,
    pub gid: u32,
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub gecos: &'a [u8],
    pub dir: &'a [u8],
    pub shell: &'a [u8],
}

/// A group as the reply carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SssGroup<'a> {
    pub gid: u32,
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub members: Vec<&'a [u8]>,
}

/// Builds a lookup or enumeration reply body: `count, 0`, then the entries. The count is
/// written when the reply is finished, so it always equals the entries added.
pub struct ReplyBuilder {
    command: SssCommand,
    count: u32,
    out: Vec<u8>,
}

impl ReplyBuilder {
    pub fn new(command: SssCommand) -> ReplyBuilder {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[0u8; SSS_HEADER_LEN + 8]);
        ReplyBuilder {
            command,
            count: 0,
            out,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Body bytes so far.
    pub fn body_len(&self) -> usize {
        self.out.len() - SSS_HEADER_LEN
    }

    /// A string with its NUL; a NUL inside (which decoders upstream refuse) ends it there,
    /// so the entry's field count stays right whatever the input.
    fn string(&mut self, s: &[u8]) {
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        self.out.extend_from_slice(&s[..end]);
        self.out.push(0);
    }

    /// Bytes [`Self::passwd`] adds for `p`.
    pub fn passwd_len(p: &SssPasswd) -> usize {
        8 + p.name.len() + p.passwd.len() + p.gecos.len() + p.dir.len() + p.shell.len() + 5
    }

    /// Bytes [`Self::group`] adds for `g`.
    pub fn group_len(g: &SssGroup) -> usize {
        8 + g.name.len() + g.passwd.len() + 2 + g.members.iter().map(|m| m.len() + 1).sum::<usize>()
    }

    pub fn passwd(&mut self, p: &SssPasswd) {
        self.out.extend_from_slice(&p.uid.to_ne_bytes());
        self.out.extend_from_slice(&p.gid.to_ne_bytes());
        for s in [p.name, p.passwd, p.gecos, p.dir, p.shell] {
            self.string(s);
        }
        self.count += 1;
    }

    pub fn group(&mut self, g: &SssGroup) {
        self.out.extend_from_slice(&g.gid.to_ne_bytes());
        self.out
            .extend_from_slice(&(g.members.len() as u32).to_ne_bytes());
        self.string(g.name);
        self.string(g.passwd);
        for m in &g.members {
            self.string(m);
        }
        self.count += 1;
    }

    /// One supplementary gid of an initgroups reply.
    pub fn gid(&mut self, gid: u32) {
        self.out.extend_from_slice(&gid.to_ne_bytes());
        self.count += 1;
    }

    /// The whole frame, or `None` when the body would exceed [`MAX_RESPONSE_BODY`].
    pub fn finish(mut self) -> Option<Vec<u8>> {
        let body_len = self.body_len();
        if body_len > MAX_RESPONSE_BODY as usize {
            return None;
        }
        let header = SssHeader {
            len: self.out.len() as u32,
            command: self.command as u32,
            status: status::OK,
            reserved: 0,
        };
        self.out[..SSS_HEADER_LEN].copy_from_slice(&header.encode());
        self.out[SSS_HEADER_LEN..SSS_HEADER_LEN + 4].copy_from_slice(&self.count.to_ne_bytes());
        Some(self.out)
    }
}

/// Reads reply bodies as libnss_sss does, but checked (tests, the benchmark and the fuzzer).
pub mod reply {
    use super::*;

    struct Cursor<'a> {
        buf: &'a [u8],
    }

    impl<'a> Cursor<'a> {
        fn u32(&mut self) -> Result<u32, SssDecodeError> {
            if self.buf.len() < 4 {
                return Err(SssDecodeError::Truncated);
            }
            let v = u32_at(self.buf, 0);
            self.buf = &self.buf[4..];
            Ok(v)
        }
        fn string(&mut self) -> Result<&'a [u8], SssDecodeError> {
            let end = self
                .buf
                .iter()
                .position(|&b| b == 0)
                .ok_or(SssDecodeError::Truncated)?;
            let s = &self.buf[..end];
            self.buf = &self.buf[end + 1..];
            Ok(s)
        }
        /// The count, refused when the rest cannot hold `count` entries of `min_len` bytes.
        fn count(&mut self, min_len: usize) -> Result<u32, SssDecodeError> {
            let n = self.u32()?;
            let _reserved = self.u32()?;
            if n as usize > self.buf.len() / min_len {
                return Err(SssDecodeError::Truncated);
            }
            Ok(n)
        }
        fn finish(&self) -> Result<(), SssDecodeError> {
            if self.buf.is_empty() {
                Ok(())
            } else {
                Err(SssDecodeError::TrailingBytes)
            }
        }
    }

    fn bounded(body: &[u8]) -> Result<Cursor<'_>, SssDecodeError> {
        if body.len() > MAX_RESPONSE_BODY as usize {
            return Err(SssDecodeError::BadLength(body.len() as u32));
        }
        Ok(Cursor { buf: body })
    }

    /// The users of a GETPWNAM/GETPWUID/GETPWENT reply body.
    pub fn passwds(body: &[u8]) -> Result<Vec<SssPasswd<'_>>, SssDecodeError> {
        let mut c = bounded(body)?;
        let n = c.count(13)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(SssPasswd {
                uid: c.u32()?,
                gid: c.u32()?,
                name: c.string()?,
                passwd: c.string()?,
                gecos: c.string()?,
                dir: c.string()?,
                shell: c.string()?,
            });
        }
        c.finish()?;
        Ok(out)
    }

    /// The groups of a GETGRNAM/GETGRGID/GETGRENT reply body.
    pub fn groups(body: &[u8]) -> Result<Vec<SssGroup<'_>>, SssDecodeError> {
        let mut c = bounded(body)?;
        let n = c.count(10)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let gid = c.u32()?;
            let members = c.u32()?;
            let name = c.string()?;
            let passwd = c.string()?;
            if members as usize > c.buf.len() {
                return Err(SssDecodeError::Truncated);
            }
            let mut list = Vec::with_capacity(members as usize);
            for _ in 0..members {
                list.push(c.string()?);
            }
            out.push(SssGroup {
                gid,
                name,
                passwd,
                members: list,
            });
        }
        c.finish()?;
        Ok(out)
    }

    /// The gids of an INITGR reply body.
    pub fn gids(body: &[u8]) -> Result<Vec<u32>, SssDecodeError> {
        let mut c = bounded(body)?;
        let n = c.count(4)?;
        let ids = (0..n).map(|_| c.u32()).collect::<Result<Vec<_>, _>>()?;
        c.finish()?;
        Ok(ids)
    }

    /// The version of a GET_VERSION reply body.
    pub fn version(body: &[u8]) -> Result<u32, SssDecodeError> {
        let mut c = bounded(body)?;
        let v = c.u32()?;
        c.finish()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        let h = SssHeader::decode(frame, MAX_RESPONSE_BODY).unwrap();
        assert_eq!(h.len as usize, frame.len());
        &frame[SSS_HEADER_LEN..]
    }

    #[test]
    fn header_is_host_endian_and_bounded() {
        let f = SssRequest::GetPwUid(5000).encode();
        assert_eq!(f.len(), 20);
        assert_eq!(&f[0..4], &20u32.to_ne_bytes());
        assert_eq!(&f[4..8], &0x12u32.to_ne_bytes());
        assert_eq!(&f[16..20], &5000u32.to_ne_bytes());
        let mut big = f.clone();
        big[0..4].copy_from_slice(&(16 + SSS_MAX_REQUEST_BODY + 1).to_ne_bytes());
        assert!(matches!(
            SssHeader::decode(&big, SSS_MAX_REQUEST_BODY),
            Err(SssDecodeError::BadLength(_))
        ));
        big[0..4].copy_from_slice(&15u32.to_ne_bytes());
        assert!(SssHeader::decode(&big, SSS_MAX_REQUEST_BODY).is_err());
        assert_eq!(
            SssHeader::decode(&f[..15], 1024),
            Err(SssDecodeError::Truncated)
        );
    }

    #[test]
    fn names_need_exactly_one_trailing_nul() {
        let c = SssCommand::GetPwNam as u32;
        assert_eq!(
            SssRequest::decode(c, b"alice\0"),
            Ok(SssRequest::GetPwNam(b"alice".to_vec()))
        );
        assert!(SssRequest::decode(c, b"alice").is_err());
        assert!(SssRequest::decode(c, b"al\0ice\0").is_err());
        assert!(SssRequest::decode(c, b"\0").is_err());
        assert!(SssRequest::decode(c, b"").is_err());
    }

    #[test]
    fn every_request_round_trips() {
        let all = [
            SssRequest::GetVersion(1),
            SssRequest::GetPwNam(b"tools.x".to_vec()),
            SssRequest::GetPwUid(52001),
            SssRequest::SetPwEnt,
            SssRequest::GetPwEnt(256),
            SssRequest::EndPwEnt,
            SssRequest::GetGrNam(b"g".to_vec()),
            SssRequest::GetGrGid(7),
            SssRequest::SetGrEnt,
            SssRequest::GetGrEnt(1),
            SssRequest::EndGrEnt,
            SssRequest::InitGr(b"u".to_vec()),
        ];
        for r in all {
            let f = r.encode();
            let h = SssHeader::decode(&f, SSS_MAX_REQUEST_BODY).unwrap();
            assert_eq!(h.command, r.command() as u32);
            assert_eq!(SssRequest::decode(h.command, &f[16..]), Ok(r));
        }
    }

    #[test]
    fn unknown_commands_and_bad_bodies_are_refused() {
        assert_eq!(
            SssRequest::decode(0x19, b"x\0"),
            Err(SssDecodeError::UnknownCommand(0x19))
        );
        assert!(SssRequest::decode(SssCommand::GetPwUid as u32, &[1, 2]).is_err());
        assert_eq!(
            SssRequest::decode(SssCommand::SetPwEnt as u32, &[1]),
            Err(SssDecodeError::TrailingBytes)
        );
        assert_eq!(
            SssRequest::decode(SssCommand::GetVersion as u32, &[]),
            Ok(SssRequest::GetVersion(1))
        );
    }

    #[test]
    fn replies_decode_to_what_was_built() {
        let p = SssPasswd {
            uid: 1,
            gid: 2,
            name: b"n",
            passwd: b"x",
            gecos: b"",
            dir: b"/h",
            shell: b"/bin/sh",
        };
        let mut b = ReplyBuilder::new(SssCommand::GetPwNam);
        b.passwd(&p);
        assert_eq!(b.body_len(), 8 + ReplyBuilder::passwd_len(&p));
        let f = b.finish().unwrap();
        assert_eq!(reply::passwds(body(&f)).unwrap(), vec![p]);

        let g = SssGroup {
            gid: 9,
            name: b"g",
            passwd: b"*",
            members: vec![b"a", b"bb"],
        };
        let mut b = ReplyBuilder::new(SssCommand::GetGrGid);
        b.group(&g);
        assert_eq!(b.body_len(), 8 + ReplyBuilder::group_len(&g));
        let f = b.finish().unwrap();
        assert_eq!(reply::groups(body(&f)).unwrap(), vec![g]);

        let mut b = ReplyBuilder::new(SssCommand::InitGr);
        b.gid(5);
        b.gid(6);
        let f = b.finish().unwrap();
        assert_eq!(body(&f).len(), 16, "count, reserved and exactly two gids");
        assert_eq!(reply::gids(body(&f)).unwrap(), vec![5, 6]);
    }

    #[test]
    fn not_found_has_the_eight_byte_body() {
        let f = not_found_reply(SssCommand::GetGrNam);
        assert_eq!(body(&f), &[0u8; 8]);
        assert_eq!(reply::groups(body(&f)).unwrap(), vec![]);
        let f = version_reply();
        assert_eq!(reply::version(body(&f)), Ok(1));
        let f = error_reply(0x77, status::ENOSYS);
        let h = SssHeader::decode(&f, 0).unwrap();
        assert_eq!((h.command, h.status, h.len), (0x77, 38, 16));
    }

    #[test]
    fn a_nul_inside_a_field_cannot_shift_the_fields() {
        let mut b = ReplyBuilder::new(SssCommand::GetPwNam);
        b.passwd(&SssPasswd {
            uid: 1,
            gid: 1,
            name: b"a\0b",
            passwd: b"",
            gecos: b"",
            dir: b"",
            shell: b"",
        });
        let f = b.finish().unwrap();
        assert_eq!(reply::passwds(body(&f)).unwrap()[0].name, b"a");
    }
}
