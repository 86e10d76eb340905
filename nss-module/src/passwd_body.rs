//! The warm path's decoder of a `Passwd` body read from the shared cache file: the same wire
//! format and the same checks as `toolforge_nss_protocol::ResponseRef::decode` (u16-length
//! strings without NUL, little-endian ids, nothing left over, the body within
//! `MAX_RESPONSE_BODY`), without the generic reader's per-field overhead: on a warm lookup
//! decoding was the largest cost. A unit test keeps the two decoders in agreement on valid,
//! truncated and mutated bodies.

use toolforge_nss_protocol::{PasswdRef, MAX_RESPONSE_BODY};

/// Whether `s` holds a NUL byte (branch-free per byte: strings here are short).
#[inline]
pub(crate) fn has_nul(s: &[u8]) -> bool {
    s.iter().fold(false, |acc, &b| acc | (b == 0))
}

/// A cursor over an untrusted body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    }

    #[inline]
    fn str(&mut self) -> Option<&'a [u8]> {
        let b = self.take(2)?;
        let len = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
        let s = self.take(len)?;
        (!has_nul(s)).then_some(s)
    }
}

/// The user a `Passwd` body holds, or `None` wherever the protocol's decoder would refuse it.
#[inline]
pub fn decode(body: &[u8]) -> Option<PasswdRef<'_>> {
    if body.len() > MAX_RESPONSE_BODY as usize {
        return None;
    }
    let mut c = Cursor(body);
    let p = PasswdRef {
        name: c.str()?,
        passwd: c.str()?,
        uid: c.u32()?,
        gid: c.u32()?,
        gecos: c.str()?,
        dir: c.str()?,
        shell: c.str()?,
    };
    c.0.is_empty().then_some(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use toolforge_nss_protocol::{Passwd, Response, ResponseKind, ResponseRef};

    fn protocol(body: &[u8]) -> Option<PasswdRef<'_>> {
        match ResponseRef::decode(ResponseKind::Passwd as u16, body) {
            Ok(ResponseRef::Passwd(p)) => Some(p),
            _ => None,
        }
    }

    fn same(body: &[u8]) {
        let (a, b) = (decode(body), protocol(body));
        assert_eq!(
            a.map(|p| (p.name, p.passwd, p.uid, p.gid, p.gecos, p.dir, p.shell)),
            b.map(|p| (p.name, p.passwd, p.uid, p.gid, p.gecos, p.dir, p.shell)),
            "{body:?}"
        );
    }

    #[test]
    fn agrees_with_the_protocol_decoder() {
        let users = [
            Passwd {
                name: "alice".into(),
                passwd: "x".into(),
                uid: 1000,
                gid: 2000,
                gecos: "Alice A.".into(),
                dir: "/home/alice".into(),
                shell: "/bin/bash".into(),
            },
            Passwd {
                name: "b".into(),
                passwd: String::new(),
                uid: u32::MAX,
                gid: 0,
                gecos: String::new(),
                dir: "/".into(),
                shell: "é".repeat(300),
            },
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for u in users {
            let mut body = Vec::new();
            Response::Passwd(u).encode_body(&mut body);
            assert!(decode(&body).is_some());
            same(&body);
            for cut in 0..body.len() {
                same(&body[..cut]); // truncated
            }
            let mut longer = body.clone();
            longer.push(7);
            same(&longer); // trailing bytes
            for _ in 0..5000 {
                let mut m = body.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % m.len();
                    m[at] = match next() % 4 {
                        0 => 0,
                        1 => 0xff,
                        _ => next() as u8,
                    };
                }
                same(&m);
            }
        }
        same(&[]);
        same(&vec![b'a'; MAX_RESPONSE_BODY as usize + 1]);
    }
}
