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
//! Handover        str version, u32 cache format (of the daemon taking over)
//!                                              -> AdminHandover str version, u32 cache format,
//!                                                 u32 length, cache bytes (persisted-cache format)
//! Drain           (empty, on the same connection, after AdminHandover)
//!                                              -> AdminDone   1 draining, 0 kept serving
//! ```
//!
//! `Handover` and `Drain` are the takeover (see the daemon's `handover` module): the running
//! daemon stops publishing and saving, hands its cache over and waits on the connection; once
//! the new daemon has published and renamed its sockets over the old ones it sends `Drain`.
//! They are accepted from uid 0 and from the daemon's own uid. An older daemon answers
//! `Handover` with an unknown-kind error: the new one then refuses to start (stop the old first).
//! Errors come back as the usual `Error` response. Framing, versions and limits are those
//! of [`crate::frame`].

use crate::frame::{Capabilities, DecodeError, MAX_REQUEST_BODY, PROTOCOL_VERSION};
use crate::message::{encode_frame_raw, ResponseRef};
use crate::wire::{Reader, Writer};

pub const KIND_STATUS: u16 = 0x41;
pub const KIND_INVALIDATE: u16 = 0x42;
pub const KIND_DUMP: u16 = 0x43;
pub const KIND_EXPLAIN: u16 = 0x44;
pub const KIND_HANDOVER: u16 = 0x45;
pub const KIND_DRAIN: u16 = 0x46;
pub const KIND_TEXT: u16 = 0xc1;
pub const KIND_DONE: u16 = 0xc2;
pub const KIND_HANDED_OVER: u16 = 0xc3;
/// Largest cache a handover answer carries (the persisted cache's own limit).
pub const MAX_HANDOVER_BODY: u32 = 256 << 20;

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
    /// A new daemon takes over: stop publishing, hand the cache over, wait for `Drain`.
    Handover {
        version: String,
        cache_format: u32,
    },
    /// The new daemon serves now: finish, close and exit.
    Drain,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminResponse {
    Text(String),
    Done(u32),
    /// The running daemon's version, its cache format and its cache in that format.
    HandedOver {
        version: String,
        cache_format: u32,
        cache: Vec<u8>,
    },
}

impl AdminRequest {
    pub fn encode(&self, request_id: u32) -> Vec<u8> {
        let (kind, body): (u16, Vec<u8>) = match self {
            AdminRequest::Status => (KIND_STATUS, vec![]),
            AdminRequest::Dump => (KIND_DUMP, vec![]),
            AdminRequest::Drain => (KIND_DRAIN, vec![]),
            AdminRequest::Handover {
                version,
                cache_format,
            } => {
                let mut b = Vec::new();
                let mut w = Writer { out: &mut b };
                w.str(version.as_bytes());
                w.u32(*cache_format);
                (KIND_HANDOVER, b)
            }
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
            KIND_DRAIN => AdminRequest::Drain,
            KIND_HANDOVER => {
                let version =
                    String::from_utf8(r.str()?.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
                AdminRequest::Handover {
                    version,
                    cache_format: r.u32()?,
                }
            }
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
            AdminResponse::HandedOver {
                version,
                cache_format,
                cache,
            } => {
                let mut b = Vec::with_capacity(12 + version.len() + cache.len());
                let mut w = Writer { out: &mut b };
                w.str(version.as_bytes());
                w.u32(*cache_format);
                w.u32(cache.len() as u32);
                b.extend_from_slice(cache);
                (KIND_HANDED_OVER, b)
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
            KIND_HANDED_OVER => {
                let err = |e: DecodeError| e.to_string();
                let version = String::from_utf8_lossy(r.str().map_err(err)?).into_owned();
                let cache_format = r.u32().map_err(err)?;
                let n = r.u32().map_err(err)? as usize;
                let cache = r.bytes(n).map_err(err)?.to_vec();
                AdminResponse::HandedOver {
                    version,
                    cache_format,
                    cache,
                }
            }
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
    use crate::frame::{Header, HEADER_LEN};
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
            AdminRequest::Handover {
                version: "1.2.3".into(),
                cache_format: 1,
            },
            AdminRequest::Drain,
        ] {
            let f = req.encode(3);
            let h = Header::decode(&f, MAX_REQUEST_BODY).unwrap();
            assert_eq!(AdminRequest::decode(h.kind, &f[HEADER_LEN..]), Ok(req));
        }
        for resp in [
            AdminResponse::Text("uptime: 5s\n".into()),
            AdminResponse::Done(42),
            AdminResponse::HandedOver {
                version: "1.2.3".into(),
                cache_format: 1,
                cache: vec![1, 2, 3, 0, 9],
            },
        ] {
            let f = resp.encode(3);
            let h = Header::decode(&f, MAX_HANDOVER_BODY).unwrap();
            assert_eq!(AdminResponse::decode(h.kind, &f[HEADER_LEN..]), Ok(resp));
        }
    }

    #[test]
    fn lookup_decoding_does_not_know_admin_kinds() {
        for kind in [
            KIND_STATUS,
            KIND_INVALIDATE,
            KIND_DUMP,
            KIND_EXPLAIN,
            KIND_HANDOVER,
            KIND_DRAIN,
        ] {
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
        // A handover answer that claims more cache bytes than it carries.
        assert!(
            AdminResponse::decode(KIND_HANDED_OVER, &[0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1]).is_err()
        );
        assert!(AdminRequest::decode(KIND_DRAIN, &[0]).is_err());
    }
}
