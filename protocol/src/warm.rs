//! Single-body decoders for the module's warm path: a `Passwd`, a `Group` or a `GroupIds`
//! body read from the shared cache file, decoded in one pass without allocating. Same wire
//! format and same checks as [`ResponseRef::decode`] (u16-length strings without NUL,
//! little-endian ids, a member count the body can hold, non-empty members, nothing left over,
//! the body within `MAX_RESPONSE_BODY`), without the generic reader's per-field overhead, which
//! was the largest cost of a warm lookup. Tests keep the two in agreement on valid, truncated
//! and mutated bodies.

use crate::frame::MAX_RESPONSE_BODY;
use crate::message::PasswdRef;
#[cfg(test)]
use crate::message::ResponseRef;

/// Whether `s` holds a NUL byte (branch-free per byte: strings here are short).
#[inline]
fn has_nul(s: &[u8]) -> bool {
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

/// The user a `Passwd` body holds, or `None` wherever [`ResponseRef::decode`] would refuse it.
#[inline]
pub fn passwd(body: &[u8]) -> Option<PasswdRef<'_>> {
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
    /// How many members it lists.
    pub fn member_count(&self) -> usize {
        self.member_count
    }

    /// The sum of the member names' lengths.
    pub fn member_bytes(&self) -> usize {
        self.member_bytes
    }

    /// The member names, in order.
    pub fn members(&self) -> Members<'a> {
        Members(self.members)
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

/// The group a `Group` body holds, or `None` wherever [`ResponseRef::decode`] would refuse it.
pub fn group(body: &[u8]) -> Option<GroupBody<'_>> {
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
/// nothing more), as its raw bytes; `None` wherever [`ResponseRef::decode`] would refuse it.
pub fn gid_list(body: &[u8]) -> Option<&[u8]> {
    if body.len() > MAX_RESPONSE_BODY as usize {
        return None;
    }
    let (n, ids) = u32_at(body)?;
    (ids.len() / 4 == n as usize && ids.len() % 4 == 0).then_some(ids)
}

/// The gids of an array [`gid_list`] returned.
pub fn gids(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
    raw.chunks_exact(4)
        .filter_map(|c| c.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::message::{Group, Passwd, Response, ResponseKind};

    /// Calls `check` on `body`, on every truncation of it, on it with `trailing` bytes added,
    /// and on 5,000 copies with one to three bytes changed (positions and values from `next`).
    fn for_variants(
        body: &[u8],
        trailing: &[u8],
        next: &mut impl FnMut() -> u64,
        check: impl Fn(&[u8]),
    ) {
        check(body);
        for cut in 0..body.len() {
            check(&body[..cut]);
        }
        check(&[body, trailing].concat());
        for _ in 0..5000 {
            let mut m = body.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % m.len();
                m[at] = match next() % 4 {
                    0 => 0,
                    1 => 0xff,
                    _ => next() as u8,
                };
            }
            check(&m);
        }
    }

    fn generic_passwd(body: &[u8]) -> Option<PasswdRef<'_>> {
        match ResponseRef::decode(ResponseKind::Passwd as u16, body) {
            Ok(ResponseRef::Passwd(p)) => Some(p),
            _ => None,
        }
    }

    fn same(body: &[u8]) {
        let (a, b) = (passwd(body), generic_passwd(body));
        assert_eq!(
            a.map(|p| (p.name, p.passwd, p.uid, p.gid, p.gecos, p.dir, p.shell)),
            b.map(|p| (p.name, p.passwd, p.uid, p.gid, p.gecos, p.dir, p.shell)),
            "{body:?}"
        );
    }

    #[test]
    fn passwd_agrees_with_the_generic_decoder() {
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
            assert!(passwd(&body).is_some());
            for_variants(&body, &[7], &mut next, same);
        }
        same(&[]);
        same(&vec![b'a'; MAX_RESPONSE_BODY as usize + 1]);
    }

    type Seen<'a> = (&'a [u8], &'a [u8], u32, usize, usize, Vec<&'a [u8]>);

    fn ours(body: &[u8]) -> Option<Seen<'_>> {
        group(body).map(|g| {
            (
                g.name,
                g.passwd,
                g.gid,
                g.member_count(),
                g.member_bytes(),
                g.members().collect(),
            )
        })
    }

    fn generic_group(body: &[u8]) -> Option<Seen<'_>> {
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

    fn same_group(body: &[u8]) {
        assert_eq!(ours(body), generic_group(body), "{body:?}");
    }

    #[test]
    fn groups_agree_with_the_generic_decoder() {
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
            assert!(group(&body).is_some());
            for_variants(&body, &[0, 0], &mut next, same_group);
        }
        same_group(&[]);
        same_group(&vec![b'a'; MAX_RESPONSE_BODY as usize + 1]);
    }

    #[test]
    fn gid_lists_agree_with_the_generic_decoder() {
        let protocol = |b: &[u8]| match ResponseRef::decode(ResponseKind::GroupIds as u16, b) {
            Ok(ResponseRef::GroupIds(g)) => Some(g),
            _ => None,
        };
        let ours = |b: &[u8]| gid_list(b).map(|raw| gids(raw).collect::<Vec<u32>>());
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
