//! Administrative messages, spoken only on the admin socket (root-only directory, peer uid
//! checked). The lookup socket does not decode these kinds, so it answers them with
//! `UnknownRequest`: containers can only look up.
//!
//! ```text
//! Status          (empty)                      -> AdminText   str32 text ("key: value" lines)
//! Invalidate      u8 scope (0 all, 1 user, 2 group), str name (empty for all)
//!                                              -> AdminDone   u32 entries removed
//! Dump            (empty)                      -> AdminText   one line per cached entry
//! Explain         u8 map (0 passwd, 1 group, 2 initgroups), str key
//!                                              -> AdminText   "key: value" lines
//! ```
//! Errors come back as the usual `Error` response. Framing, versions and limits are those
//! of [`crate::frame`].

use crate::frame::{Capabilities, DecodeError, MAX_REQUEST_BODY, PROTOCOL_VERSION};
use crate::message::{encode_frame_raw, ResponseRef};
use crate::wire::{Reader, Writer};

pub const KIND_STATUS: u16 = 0x41;
pub const KIND_INVALIDATE: u16 = 0x42;
pub const KIND_DUMP: u16 = 0x43;
pub const KIND_EXPLAIN: u16 = 0x44;
pub const KIND_TEXT: u16 = 0xc1;
pub const KIND_DONE: u16 = 0xc2;

/// What to drop from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    User(String),
    Group(String),
}

/// Which map a lookup to explain goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Passwd,
    Group,
    InitGroups,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    Status,
    Invalidate(Scope),
    Dump,
    /// Look `key` up in `map` and say where the answer came from.
    Explain(Map, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminResponse {
    Text(String),
    Done(u32),
}

impl AdminRequest {
    pub fn encode(&self, request_id: u32) -> Vec<u8> {
        let (kind, body): (u16, Vec<u8>) = match self {
            AdminRequest::Status => (KIND_STATUS, vec![]),
            AdminRequest::Dump => (KIND_DUMP, vec![]),
            AdminRequest::Explain(map, key) => {
                let mut b = Vec::new();
                let mut w = Writer { out: &mut b };
                w.u16(*map as u16);
                w.str(key.as_bytes());
                (KIND_EXPLAIN, b)
            }
            AdminRequest::Invalidate(scope) => {
                let mut b = Vec::new();
                let mut w = Writer { out: &mut b };
                let (tag, name) = match scope {
                    Scope::All => (0u16, ""),
                    Scope::User(n) => (1, n.as_str()),
                    Scope::Group(n) => (2, n.as_str()),
                };
                w.u16(tag);
                w.str(name.as_bytes());
                (KIND_INVALIDATE, b)
            }
        };
        encode_frame_raw(
            kind,
            request_id,
            PROTOCOL_VERSION,
            0,
            Capabilities::ALL,
            &body,
        )
    }

    pub fn decode(kind: u16, body: &[u8]) -> Result<AdminRequest, DecodeError> {
        if body.len() > MAX_REQUEST_BODY as usize {
            return Err(DecodeError::TooLarge(body.len() as u32));
        }
        let mut r = Reader::new(body);
        let req = match kind {
            KIND_STATUS => AdminRequest::Status,
            KIND_DUMP => AdminRequest::Dump,
            KIND_EXPLAIN => {
                let map = match r.u16()? {
                    0 => Map::Passwd,
                    1 => Map::Group,
                    2 => Map::InitGroups,
                    _ => return Err(DecodeError::Invalid("explain map")),
                };
                let key =
                    String::from_utf8(r.str()?.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
                AdminRequest::Explain(map, key)
            }
            KIND_INVALIDATE => {
                let tag = r.u16()?;
                let name =
                    String::from_utf8(r.str()?.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
                AdminRequest::Invalidate(match tag {
                    0 => Scope::All,
                    1 => Scope::User(name),
                    2 => Scope::Group(name),
                    _ => return Err(DecodeError::Invalid("invalidate scope")),
                })
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl AdminResponse {
    pub fn encode(&self, request_id: u32) -> Vec<u8> {
        let (kind, body) = match self {
            AdminResponse::Text(t) => {
                let mut b = Vec::with_capacity(4 + t.len());
                b.extend_from_slice(&(t.len() as u32).to_le_bytes());
                b.extend_from_slice(t.as_bytes());
                (KIND_TEXT, b)
            }
            AdminResponse::Done(n) => (KIND_DONE, n.to_le_bytes().to_vec()),
        };
        encode_frame_raw(
            kind,
            request_id,
            PROTOCOL_VERSION,
            0,
            Capabilities::ALL,
            &body,
        )
    }

    /// Decodes an admin answer; `Err` carries an `Error` response's message or the fault.
    pub fn decode(kind: u16, body: &[u8]) -> Result<AdminResponse, String> {
        let mut r = Reader::new(body);
        let resp = match kind {
            KIND_TEXT => {
                let n = r.u32().map_err(|e| e.to_string())? as usize;
                let t = r.bytes(n).map_err(|e| e.to_string())?;
                AdminResponse::Text(String::from_utf8_lossy(t).into_owned())
            }
            KIND_DONE => AdminResponse::Done(r.u32().map_err(|e| e.to_string())?),
            _ => {
                return match ResponseRef::decode(kind, body) {
                    Ok(ResponseRef::Error { message, .. }) => {
                        Err(String::from_utf8_lossy(message).into_owned())
                    }
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        r.finish().map_err(|e| e.to_string())?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Header, HEADER_LEN, MAX_RESPONSE_BODY};
    use crate::Request;

    #[test]
    fn every_admin_message_round_trips() {
        for req in [
            AdminRequest::Status,
            AdminRequest::Dump,
            AdminRequest::Invalidate(Scope::All),
            AdminRequest::Invalidate(Scope::User("alice".into())),
            AdminRequest::Invalidate(Scope::Group("wikidev".into())),
            AdminRequest::Explain(Map::Passwd, "alice".into()),
            AdminRequest::Explain(Map::InitGroups, "1234".into()),
        ] {
            let f = req.encode(3);
            let h = Header::decode(&f, MAX_REQUEST_BODY).unwrap();
            assert_eq!(AdminRequest::decode(h.kind, &f[HEADER_LEN..]), Ok(req));
        }
        for resp in [
            AdminResponse::Text("uptime: 5s\n".into()),
            AdminResponse::Done(42),
        ] {
            let f = resp.encode(3);
            let h = Header::decode(&f, MAX_RESPONSE_BODY).unwrap();
            assert_eq!(AdminResponse::decode(h.kind, &f[HEADER_LEN..]), Ok(resp));
        }
    }

    #[test]
    fn lookup_decoding_does_not_know_admin_kinds() {
        for kind in [KIND_STATUS, KIND_INVALIDATE, KIND_DUMP, KIND_EXPLAIN] {
            assert_eq!(
                Request::decode(kind, &[]),
                Err(DecodeError::UnknownKind(kind))
            );
        }
    }

    #[test]
    fn bad_admin_bodies_are_refused() {
        assert!(AdminRequest::decode(KIND_INVALIDATE, &[9, 0, 0, 0]).is_err());
        assert!(AdminRequest::decode(KIND_STATUS, &[1]).is_err());
        assert!(AdminResponse::decode(KIND_TEXT, &[200, 0, 0, 0, b'x']).is_err());
    }
}
