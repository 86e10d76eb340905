//! The warm path's decoder of a `Group` body read from the shared cache file: the same wire
//! format and the same checks as `toolforge_nss_protocol::ResponseRef::decode` (u16-length
//! strings without NUL, a member count the body can hold, non-empty members, nothing left
//! over, the body within `MAX_RESPONSE_BODY`) in one pass over the members, without the
//! generic reader's per-field overhead; and a `GroupIds` body (a user's groups) without the
//! protocol decoder's allocation. Unit tests keep the decoders in agreement.

use toolforge_nss_protocol::MAX_RESPONSE_BODY;

use crate::pack::GroupParts;
use crate::passwd_body::has_nul;

/// A group as its body holds it; the member region was checked whole.
pub struct GroupBody<'a> {
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub gid: u32,
    member_count: usize,
    /// Sum of the member names' lengths.
    member_bytes: usize,
    /// `member_count` entries of u16 length and name.
    members: &'a [u8],
}

/// The member names of a checked member region.
pub struct Members<'a>(&'a [u8]);

impl<'a> Iterator for Members<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let (name, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some(name)
    }
}

impl<'a> GroupBody<'a> {
    /// What `pack::group` writes.
    pub fn parts(&self) -> GroupParts<'a, Members<'a>> {
        GroupParts {
            name: self.name,
            passwd: self.passwd,
            gid: self.gid,
            member_count: self.member_count,
            member_bytes: self.member_bytes,
            members: Members(self.members),
        }
    }
}

#[inline]
fn str_at(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = b.split_first_chunk::<2>()?;
    let (s, rest) = rest.split_at_checked(u16::from_le_bytes(*len) as usize)?;
    (!has_nul(s)).then_some((s, rest))
}

#[inline]
fn u32_at(b: &[u8]) -> Option<(u32, &[u8])> {
    let (v, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*v), rest))
}

/// The group a `Group` body holds, or `None` wherever the protocol's decoder would refuse it.
pub fn decode(body: &[u8]) -> Option<GroupBody<'_>> {
    if body.len() > MAX_RESPONSE_BODY as usize {
        return None;
    }
    let (name, rest) = str_at(body)?;
    let (passwd, rest) = str_at(rest)?;
    let (gid, rest) = u32_at(rest)?;
    let (count, members) = u32_at(rest)?;
    let member_count = count as usize;
    // Each member takes at least two bytes (as the protocol's decoder checks first).
    if member_count > members.len() / 2 {
        return None;
    }
    let (mut rest, mut member_bytes) = (members, 0usize);
    for _ in 0..member_count {
        let (m, after) = str_at(rest)?;
        if m.is_empty() {
            return None;
        }
        member_bytes += m.len();
        rest = after;
    }
    rest.is_empty().then_some(GroupBody {
        name,
        passwd,
        gid,
        member_count,
        member_bytes,
        members,
    })
}

/// The gid array of a `GroupIds` body (a u32 count, then that many little-endian u32s and
/// nothing more), as its raw bytes; `None` wherever the protocol's decoder would refuse it.
pub fn decode_gids(body: &[u8]) -> Option<&[u8]> {
    if body.len() > MAX_RESPONSE_BODY as usize {
        return None;
    }
    let (n, ids) = u32_at(body)?;
    (ids.len() / 4 == n as usize && ids.len() % 4 == 0).then_some(ids)
}

/// The gids of an array [`decode_gids`] returned.
pub fn gids(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
    raw.chunks_exact(4)
        .filter_map(|c| c.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use toolforge_nss_protocol::{Group, Response, ResponseKind, ResponseRef};

    type Seen<'a> = (&'a [u8], &'a [u8], u32, usize, usize, Vec<&'a [u8]>);

    fn ours(body: &[u8]) -> Option<Seen<'_>> {
        decode(body).map(|g| {
            let p = g.parts();
            (
                p.name,
                p.passwd,
                p.gid,
                p.member_count,
                p.member_bytes,
                p.members.collect(),
            )
        })
    }

    fn protocol(body: &[u8]) -> Option<Seen<'_>> {
        match ResponseRef::decode(ResponseKind::Group as u16, body) {
            Ok(ResponseRef::Group(g)) => Some((
                g.name,
                g.passwd,
                g.gid,
                g.member_count(),
                g.member_name_bytes(),
                g.members().collect(),
            )),
            _ => None,
        }
    }

    fn same(body: &[u8]) {
        assert_eq!(ours(body), protocol(body), "{body:?}");
    }

    #[test]
    fn agrees_with_the_protocol_decoder() {
        let groups = [
            Group {
                name: "project-tools".into(),
                passwd: "x".into(),
                gid: 50_000,
                members: (0..40).map(|i| format!("user{i}")).collect(),
            },
            Group {
                name: "g".into(),
                passwd: String::new(),
                gid: u32::MAX,
                members: vec![],
            },
            Group {
                name: "one".into(),
                passwd: "*".into(),
                gid: 0,
                members: vec!["a".into()],
            },
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for g in groups {
            let mut body = Vec::new();
            Response::Group(g).encode_body(&mut body);
            assert!(decode(&body).is_some());
            same(&body);
            for cut in 0..body.len() {
                same(&body[..cut]);
            }
            let mut longer = body.clone();
            longer.extend_from_slice(&[0, 0]);
            same(&longer);
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

    #[test]
    fn gid_lists_agree_with_the_protocol_decoder() {
        let protocol = |b: &[u8]| match ResponseRef::decode(ResponseKind::GroupIds as u16, b) {
            Ok(ResponseRef::GroupIds(g)) => Some(g),
            _ => None,
        };
        let ours = |b: &[u8]| decode_gids(b).map(|raw| gids(raw).collect::<Vec<u32>>());
        for list in [
            vec![],
            vec![7u32],
            (0..1000).map(|i| i * 3 + u32::MAX / 2).collect(),
        ] {
            let mut body = Vec::new();
            Response::GroupIds(list.clone()).encode_body(&mut body);
            assert_eq!(ours(&body), Some(list));
            for cut in 0..body.len().min(64) {
                assert_eq!(ours(&body[..cut]), protocol(&body[..cut]), "cut {cut}");
            }
            for extra in 1..8 {
                let mut longer = body.clone();
                longer.resize(body.len() + extra, 1);
                assert_eq!(ours(&longer), protocol(&longer), "extra {extra}");
            }
            for n in [0u32, 1, 2, 999, 1000, 1001, u32::MAX] {
                let mut m = body.clone();
                m[..4].copy_from_slice(&n.to_le_bytes());
                assert_eq!(ours(&m), protocol(&m), "count {n}");
            }
        }
    }
}
