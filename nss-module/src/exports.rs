//! The `_nss_toolforge_*` functions glibc calls, and the status discipline:
//!
//! | situation                               | status    | `*errnop` |
//! |-----------------------------------------|-----------|-----------|
//! | found                                   | SUCCESS   | 0         |
//! | known absent, or end of enumeration     | NOTFOUND  | ENOENT    |
//! | invalid name (never sent to the daemon) | NOTFOUND  | EINVAL    |
//! | buffer too small or NULL                | TRYAGAIN  | ERANGE    |
//! | daemon absent, hung, busy or disabled   | UNAVAIL   | ENOENT    |
//! | malformed or mismatched reply           | UNAVAIL   | EBADMSG   |
//! | initgroups cannot grow its array        | TRYAGAIN  | ENOMEM    |
//!
//! Every function is wrapped in `catch_unwind` and always writes `*errnop`. Every function
//! disables thread cancellation on entry and restores the caller's state on exit
//! (`pthread_setcancelstate`): a `poll` inside the module is a cancellation point, and
//! glibc's forced unwind meeting `catch_unwind` would abort the process; a cancellation
//! requested meanwhile takes effect at the caller's next cancellation point. A reply that did
//! not fit is kept so the ERANGE retry needs no second round trip; an enumeration does not
//! advance on ERANGE. Enumeration batches, like lookups, get the per-call budget.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_long};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{gid_t, uid_t};
use toolforge_nss_protocol::mapfile::Table;
use toolforge_nss_protocol::names::MAX_NAME_LEN;
use toolforge_nss_protocol::{
    Group, GroupRef, Passwd, PasswdRef, Request, ResponseKind, ResponseRef,
};

use crate::client::{self, Failure};
use crate::enumeration::{self, State};
use crate::pack::{self, GroupParts, TooSmall};
use crate::settings;
use crate::{last_reply, mapcache, NssStatus};
use toolforge_nss_protocol::warm::{self, GroupBody};

type Status = (NssStatus, c_int);

const FOUND: Status = (NssStatus::Success, 0);
const NOT_FOUND: Status = (NssStatus::NotFound, libc::ENOENT);
const INVALID: Status = (NssStatus::NotFound, libc::EINVAL);
const TOO_SMALL: Status = (NssStatus::TryAgain, libc::ERANGE);
const UNAVAILABLE: Status = (NssStatus::Unavail, libc::ENOENT);
const MALFORMED: Status = (NssStatus::Unavail, libc::EBADMSG);

extern "C" {
    // glibc (GLIBC_2.0); the libc crate does not declare it for Linux.
    fn pthread_setcancelstate(state: c_int, oldstate: *mut c_int) -> c_int;
}
/// glibc's `PTHREAD_CANCEL_DISABLE`.
const PTHREAD_CANCEL_DISABLE: c_int = 1;

/// Runs `f` with thread cancellation disabled, catching any panic, and writes `*errnop`.
fn guarded(errnop: *mut c_int, f: impl FnOnce() -> Status) -> NssStatus {
    let mut old: c_int = 0;
    // SAFETY: plain calls on the calling thread's state; `old` is a valid out-parameter.
    let disabled = unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) } == 0;
    let (status, err) = catch_unwind(AssertUnwindSafe(f)).unwrap_or(UNAVAILABLE);
    if disabled {
        let mut ignored: c_int = 0;
        // SAFETY: as above; restores what the caller had.
        unsafe { pthread_setcancelstate(old, &mut ignored) };
    }
    if !errnop.is_null() {
        // SAFETY: glibc passes a valid int pointer; NULL was checked.
        unsafe { *errnop = err };
    }
    status
}

fn failure(f: Failure) -> Status {
    match f {
        Failure::Malformed => MALFORMED,
        Failure::Disabled | Failure::Down | Failure::Timeout | Failure::Broken => UNAVAILABLE,
    }
}

/// A name argument that may be looked up; `None` for NULL, invalid or over-long names.
unsafe fn name_arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    let bytes = CStr::from_ptr(p).to_bytes();
    if !valid_name(bytes) {
        return None;
    }
    // SAFETY: a valid name is ASCII (letters, digits, `_.-$`), so UTF-8.
    Some(std::str::from_utf8_unchecked(bytes))
}

/// Bytes a name may hold after its first ([`NAME_BODY`]) and as its first ([`NAME_FIRST`]).
const NAME_BODY: [bool; 256] = byte_class(b"_.-");
const NAME_FIRST: [bool; 256] = byte_class(b"_.");

// Evaluated at compile time: an index out of range fails the build.
#[allow(clippy::indexing_slicing)]
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// `toolforge_nss_protocol::names::is_valid_name` by table (it is on every lookup's path; a
/// unit test keeps the two in agreement): ASCII letters, digits, `_` and `.` first, then also
/// `-`, a final `$` allowed, at most `MAX_NAME_LEN` bytes, not `.` or `..`.
#[inline]
fn valid_name(name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    if name.len() > MAX_NAME_LEN || name == b"." || name == b".." {
        return false;
    }
    let body = match rest.split_last() {
        Some((&b'$', body)) => body,
        _ => rest,
    };
    let class = |t: &[bool; 256], b: u8| t.get(usize::from(b)).copied().unwrap_or(false);
    class(&NAME_FIRST, first) && body.iter().fold(true, |ok, &c| ok & class(&NAME_BODY, c))
}

enum Filled {
    Done(Status),
    TooSmall,
}

/// An answer to fill in: a decoded response, or a group decoded from the cache file by the
/// module's own decoder.
enum Answer<'a> {
    Resp(ResponseRef<'a>),
    Group(GroupBody<'a>),
    /// A user's gids, as little-endian u32s (see `warm::gids`).
    Gids(&'a [u8]),
}

impl From<Result<(), TooSmall>> for Filled {
    fn from(r: Result<(), TooSmall>) -> Filled {
        match r {
            Ok(()) => Filled::Done(FOUND),
            Err(TooSmall) => Filled::TooSmall,
        }
    }
}

/// Answers from the shared cache file when it holds a valid, unexpired entry for `key` in
/// `table`; `None` sends the caller to the daemon (no file, absent, expired, or anything in
/// the entry that does not decode or does not match the question).
fn from_cache_file(
    table: Table,
    key: &[u8],
    fill: &mut impl FnMut(Answer) -> Filled,
) -> Option<Status> {
    let read = mapcache::with_entry(table, key, |kind, body| {
        // Users and groups, the commonest warm answers, by the module's own decoders (the
        // same checks as the protocol's).
        let decoded = if kind == ResponseKind::Passwd as u16 {
            warm::passwd(body)
                .map(|p| Answer::Resp(ResponseRef::Passwd(p)))
                .ok_or(())
        } else if kind == ResponseKind::Group as u16 {
            warm::group(body).map(Answer::Group).ok_or(())
        } else if kind == ResponseKind::GroupIds as u16 {
            warm::gid_list(body).map(Answer::Gids).ok_or(())
        } else {
            ResponseRef::decode(kind, body)
                .map(Answer::Resp)
                .map_err(drop)
        };
        match decoded {
            Ok(Answer::Resp(ResponseRef::NotFound)) => Some(NOT_FOUND),
            Ok(
                answer @ (Answer::Group(_)
                | Answer::Gids(_)
                | Answer::Resp(
                    ResponseRef::Passwd(_) | ResponseRef::Group(_) | ResponseRef::GroupIds(_),
                )),
            ) => match fill(answer) {
                Filled::Done(s) if s != MALFORMED => Some(s),
                Filled::Done(_) => None,
                // The caller retries with a bigger buffer and finds the entry again.
                Filled::TooSmall => Some(TOO_SMALL),
            },
            _ => None,
        }
    });
    match read {
        Ok(answer) => answer,
        // A complete mirror that does not hold the key: absent, without a round trip.
        Err(mapcache::NoAnswer::Known) => Some(NOT_FOUND),
        Err(_) => None,
    }
}

/// Answers from the shared cache file if it can, else asks the daemon for `req()` (or reuses
/// the reply an ERANGE left behind), decodes it and lets `fill` write the answer. Absent,
/// unavailable and error replies are handled here.
fn lookup(
    (table, key): (Table, &[u8]),
    req: impl FnOnce() -> Request,
    budget_ms: u64,
    mut fill: impl FnMut(Answer) -> Filled,
) -> Status {
    if let Some(status) = from_cache_file(table, key, &mut fill) {
        return status;
    }
    let req = req();
    let (kind, body) = match last_reply::take(&req) {
        Some(saved) => saved,
        None => match client::call(&req, budget_ms) {
            Ok(reply) => (reply.header.kind, reply.body),
            Err(f) => return failure(f),
        },
    };
    let filled = match ResponseRef::decode(kind, &body) {
        Err(_) => return MALFORMED,
        Ok(ResponseRef::NotFound) => return NOT_FOUND,
        Ok(ResponseRef::Unavailable) | Ok(ResponseRef::Error { .. }) => return UNAVAILABLE,
        Ok(resp) => fill(Answer::Resp(resp)),
    };
    match filled {
        Filled::Done(s) => s,
        Filled::TooSmall => {
            last_reply::save(req, kind, body);
            TOO_SMALL
        }
    }
}

fn passwd_ref(p: &Passwd) -> PasswdRef<'_> {
    PasswdRef {
        name: p.name.as_bytes(),
        passwd: p.passwd.as_bytes(),
        uid: p.uid,
        gid: p.gid,
        gecos: p.gecos.as_bytes(),
        dir: p.dir.as_bytes(),
        shell: p.shell.as_bytes(),
    }
}

fn group_view<'a>(g: &GroupRef<'a>) -> GroupParts<'a, impl Iterator<Item = &'a [u8]>> {
    GroupParts {
        name: g.name,
        passwd: g.passwd,
        gid: g.gid,
        member_count: g.member_count(),
        member_bytes: g.member_name_bytes(),
        members: g.members(),
    }
}

fn owned_group_parts(g: &Group) -> GroupParts<'_, impl Iterator<Item = &[u8]>> {
    GroupParts {
        name: g.name.as_bytes(),
        passwd: g.passwd.as_bytes(),
        gid: g.gid,
        member_count: g.members.len(),
        member_bytes: g.members.iter().map(String::len).sum(),
        members: g.members.iter().map(String::as_bytes),
    }
}

fn budget() -> u64 {
    settings::get().timeout_ms
}

/// # Safety
/// Called by glibc with valid pointers (NULL buffers are answered with ERANGE).
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getpwnam_r(
    name: *const c_char,
    pwd: *mut libc::passwd,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        let Some(name) = name_arg(name) else {
            return INVALID;
        };
        lookup(
            (Table::PasswdByName, name.as_bytes()),
            || Request::GetPwNam(name.to_owned()),
            budget(),
            |resp| match resp {
                Answer::Resp(ResponseRef::Passwd(p)) if p.name == name.as_bytes() => {
                    pack::passwd(&p, pwd, buf, buflen).into()
                }
                _ => Filled::Done(MALFORMED),
            },
        )
    })
}

/// # Safety
/// As [`_nss_toolforge_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getpwuid_r(
    uid: uid_t,
    pwd: *mut libc::passwd,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        let key = uid.to_le_bytes();
        lookup(
            (Table::PasswdByUid, &key),
            || Request::GetPwUid(uid),
            budget(),
            |resp| match resp {
                Answer::Resp(ResponseRef::Passwd(p)) if p.uid == uid => {
                    pack::passwd(&p, pwd, buf, buflen).into()
                }
                _ => Filled::Done(MALFORMED),
            },
        )
    })
}

/// # Safety
/// As [`_nss_toolforge_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getgrnam_r(
    name: *const c_char,
    grp: *mut libc::group,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        let Some(name) = name_arg(name) else {
            return INVALID;
        };
        lookup(
            (Table::GroupByName, name.as_bytes()),
            || Request::GetGrNam(name.to_owned()),
            budget(),
            |resp| match resp {
                Answer::Group(g) if g.name == name.as_bytes() => {
                    pack::group(pack::warm_group_parts(&g), grp, buf, buflen).into()
                }
                Answer::Resp(ResponseRef::Group(g)) if g.name == name.as_bytes() => {
                    pack::group(group_view(&g), grp, buf, buflen).into()
                }
                _ => Filled::Done(MALFORMED),
            },
        )
    })
}

/// # Safety
/// As [`_nss_toolforge_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getgrgid_r(
    gid: gid_t,
    grp: *mut libc::group,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        let key = gid.to_le_bytes();
        lookup(
            (Table::GroupByGid, &key),
            || Request::GetGrGid(gid),
            budget(),
            |resp| match resp {
                Answer::Group(g) if g.gid == gid => {
                    pack::group(pack::warm_group_parts(&g), grp, buf, buflen).into()
                }
                Answer::Resp(ResponseRef::Group(g)) if g.gid == gid => {
                    pack::group(group_view(&g), grp, buf, buflen).into()
                }
                _ => Filled::Done(MALFORMED),
            },
        )
    })
}

/// Adds the groups of `user` to `*groupsp[*start..]`, growing it with `realloc` up to `limit`
/// (<= 0: no limit), skipping `skip` (the primary group glibc adds itself) and duplicates.
///
/// # Safety
/// glibc passes valid pointers; `*groupsp` is a malloc'd array of `*size` entries.
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_initgroups_dyn(
    user: *const c_char,
    skip: gid_t,
    start: *mut c_long,
    size: *mut c_long,
    groupsp: *mut *mut gid_t,
    limit: c_long,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        let Some(name) = name_arg(user) else {
            return INVALID;
        };
        if start.is_null() || size.is_null() || groupsp.is_null() || (*groupsp).is_null() {
            return INVALID;
        }
        let key = (Table::InitGroups, name.as_bytes());
        // Copied out first: a read of the cache file may be repeated (a torn read), and
        // adding to the caller's array must happen once.
        let mut found = Gids::default();
        let status = lookup(
            key,
            || Request::InitGroups(name.to_owned()),
            budget(),
            |resp| {
                match resp {
                    Answer::Gids(raw) => found.set_raw(raw),
                    Answer::Resp(ResponseRef::GroupIds(gids)) => found.set(&gids),
                    _ => return Filled::Done(MALFORMED),
                }
                Filled::Done(FOUND)
            },
        );
        if status != FOUND {
            return status;
        }
        add_groups(found.get(), skip, start, size, groupsp, limit)
    })
}

/// A copy of a gid list: on the stack when short (most users are in a few groups).
#[derive(Default)]
struct Gids {
    small: [u32; 32],
    len: usize,
    large: Vec<u32>,
}

impl Gids {
    fn set(&mut self, gids: &[u32]) {
        match self.small.get_mut(..gids.len()) {
            Some(dst) => {
                dst.copy_from_slice(gids);
                self.len = gids.len();
                self.large.clear();
            }
            None => {
                self.large.clear();
                self.large.extend_from_slice(gids);
                self.len = 0;
            }
        }
    }

    /// As [`Gids::set`], from little-endian bytes (`warm::gid_list`).
    fn set_raw(&mut self, raw: &[u8]) {
        let n = raw.len() / 4;
        match self.small.get_mut(..n) {
            Some(dst) => {
                for (d, g) in dst.iter_mut().zip(warm::gids(raw)) {
                    *d = g;
                }
                self.len = n;
                self.large.clear();
            }
            None => {
                self.large.clear();
                self.large.extend(warm::gids(raw));
                self.len = 0;
            }
        }
    }

    fn get(&self) -> &[u32] {
        if self.large.is_empty() {
            self.small.get(..self.len).unwrap_or(&[])
        } else {
            &self.large
        }
    }
}

/// Below this many gids (given and new together), a linear scan beats sorting.
const LINEAR_DEDUP: usize = 64;

/// The gids of `new` to add, in their order: not `skip`, not in `existing`, each once.
/// O(n log n) (sorting), whatever the sizes.
pub fn groups_to_add(existing: &[gid_t], new: &[u32], skip: gid_t) -> Vec<gid_t> {
    let mut have = existing.to_vec();
    have.sort_unstable();
    let mut order: Vec<(u32, usize)> = new.iter().copied().zip(0..).collect();
    order.sort_unstable();
    order.dedup_by_key(|e| e.0);
    order.retain(|&(g, _)| g != skip && have.binary_search(&g).is_err());
    order.sort_unstable_by_key(|e| e.1);
    order.into_iter().map(|e| e.0).collect()
}

unsafe fn add_groups(
    gids: &[u32],
    skip: gid_t,
    start: *mut c_long,
    size: *mut c_long,
    groupsp: *mut *mut gid_t,
    limit: c_long,
) -> Status {
    let n = (*start).clamp(0, (*size).max(0)) as usize;
    // Few gids: each is checked against the array as it grows (no allocation); many: sorted.
    let linear = n + gids.len() <= LINEAR_DEDUP;
    let sorted;
    let list: &[u32] = if linear {
        gids
    } else {
        sorted = groups_to_add(std::slice::from_raw_parts(*groupsp, n), gids, skip);
        &sorted
    };
    for &gid in list {
        if linear
            && (gid == skip
                || std::slice::from_raw_parts(*groupsp, (*start).max(0) as usize).contains(&gid))
        {
            continue;
        }
        if *start >= *size {
            if limit > 0 && *size >= limit {
                break;
            }
            let mut new_size = (*size).max(1).saturating_mul(2);
            if limit > 0 {
                new_size = new_size.min(limit);
            }
            let bytes = (new_size as usize).saturating_mul(std::mem::size_of::<gid_t>());
            let grown = libc::realloc((*groupsp).cast(), bytes).cast::<gid_t>();
            if grown.is_null() {
                return (NssStatus::TryAgain, libc::ENOMEM);
            }
            *groupsp = grown;
            *size = new_size;
        }
        *(*groupsp).add(*start as usize) = gid;
        *start += 1;
    }
    FOUND
}

/// Fetches one enumeration batch and turns it into owned entries.
fn fetch_batch<T>(
    req: Request,
    unpack: impl FnOnce(ResponseRef) -> Option<(u64, u32, Vec<T>)>,
) -> Result<State<T>, Status> {
    let cursor = match &req {
        Request::PwEnt { cursor, .. } | Request::GrEnt { cursor, .. } => *cursor,
        _ => 0,
    };
    let reply = client::call(&req, budget()).map_err(failure)?;
    let resp = ResponseRef::decode(reply.header.kind, &reply.body).map_err(|_| MALFORMED)?;
    let (generation, next_cursor, entries) = match resp {
        ResponseRef::NotFound => (
            0,
            toolforge_nss_protocol::message::END_OF_ENUMERATION,
            Vec::new(),
        ),
        ResponseRef::Unavailable | ResponseRef::Error { .. } => return Err(UNAVAILABLE),
        other => unpack(other).ok_or(MALFORMED)?,
    };
    // A batch must make progress, or a hostile daemon could make `getent passwd` loop forever.
    let end = toolforge_nss_protocol::message::END_OF_ENUMERATION;
    if next_cursor != end && (entries.is_empty() || next_cursor <= cursor) {
        return Err(MALFORMED);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    Ok(State {
        pid,
        generation,
        next_cursor,
        entries,
        index: 0,
    })
}

/// The shared shape of `getpwent_r` and `getgrent_r`.
fn next_entry<T>(
    state: &mut Option<State<T>>,
    request: impl Fn(u64, u32) -> Request,
    unpack: impl Fn(ResponseRef) -> Option<(u64, u32, Vec<T>)>,
    fill: impl FnOnce(&T) -> Result<(), TooSmall>,
) -> Status {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if state.as_ref().is_none_or(|s| s.pid != pid) {
        match fetch_batch(request(0, 0), &unpack) {
            Ok(s) => *state = Some(s),
            Err(e) => return e,
        }
    }
    let Some(st) = state.as_mut() else {
        return UNAVAILABLE;
    };
    if st.needs_batch() {
        match fetch_batch(request(st.generation, st.next_cursor), &unpack) {
            Ok(next) => *st = next,
            Err(e) => {
                *state = None;
                return e;
            }
        }
    }
    if st.exhausted() {
        return NOT_FOUND;
    }
    let Some(entry) = st.entries.get(st.index) else {
        return NOT_FOUND;
    };
    match fill(entry) {
        Ok(()) => {
            st.index += 1;
            FOUND
        }
        Err(TooSmall) => TOO_SMALL,
    }
}

fn unpack_passwd(resp: ResponseRef) -> Option<(u64, u32, Vec<Passwd>)> {
    match resp {
        ResponseRef::PasswdBatch {
            generation,
            next_cursor,
            entries,
        } => {
            let owned = entries
                .iter()
                .map(|p| p.to_owned())
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((generation, next_cursor, owned))
        }
        _ => None,
    }
}

fn unpack_group(resp: ResponseRef) -> Option<(u64, u32, Vec<Group>)> {
    match resp {
        ResponseRef::GroupBatch {
            generation,
            next_cursor,
            entries,
        } => {
            let owned = entries
                .iter()
                .map(|g| g.to_owned())
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((generation, next_cursor, owned))
        }
        _ => None,
    }
}

#[no_mangle]
pub extern "C" fn _nss_toolforge_setpwent(_stayopen: c_int) -> NssStatus {
    guarded(std::ptr::null_mut(), || {
        enumeration::with(&enumeration::PASSWD, |s| *s = None).map_or(UNAVAILABLE, |()| FOUND)
    })
}

#[no_mangle]
pub extern "C" fn _nss_toolforge_endpwent() -> NssStatus {
    _nss_toolforge_setpwent(0)
}

/// # Safety
/// As [`_nss_toolforge_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getpwent_r(
    pwd: *mut libc::passwd,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        enumeration::with(&enumeration::PASSWD, |state| {
            next_entry(
                state,
                |generation, cursor| Request::PwEnt { generation, cursor },
                unpack_passwd,
                |p| pack::passwd(&passwd_ref(p), pwd, buf, buflen),
            )
        })
        .unwrap_or(UNAVAILABLE)
    })
}

#[no_mangle]
pub extern "C" fn _nss_toolforge_setgrent(_stayopen: c_int) -> NssStatus {
    guarded(std::ptr::null_mut(), || {
        enumeration::with(&enumeration::GROUP, |s| *s = None).map_or(UNAVAILABLE, |()| FOUND)
    })
}

#[no_mangle]
pub extern "C" fn _nss_toolforge_endgrent() -> NssStatus {
    _nss_toolforge_setgrent(0)
}

/// # Safety
/// As [`_nss_toolforge_getgrnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_toolforge_getgrent_r(
    grp: *mut libc::group,
    buf: *mut c_char,
    buflen: libc::size_t,
    errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, || {
        enumeration::with(&enumeration::GROUP, |state| {
            next_entry(
                state,
                |generation, cursor| Request::GrEnt { generation, cursor },
                unpack_group,
                |g| pack::group(owned_group_parts(g), grp, buf, buflen),
            )
        })
        .unwrap_or(UNAVAILABLE)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_name_table_agrees_with_the_protocol() {
        use toolforge_nss_protocol::names::is_valid_name;
        let mut names: Vec<Vec<u8>> = vec![vec![], b".".to_vec(), b"..".to_vec(), b"...".to_vec()];
        for a in 0..=255u8 {
            names.push(vec![a]);
            for b in 0..=255u8 {
                names.push(vec![a, b]);
                names.push(vec![b'x', a, b]);
            }
        }
        for len in [254, 255, 256, 300] {
            names.push(vec![b'a'; len]);
            let mut dollar = vec![b'a'; len - 1];
            dollar.push(b'$');
            names.push(dollar);
        }
        for n in &names {
            assert_eq!(valid_name(n), is_valid_name(n), "{n:?}");
        }
    }

    #[test]
    fn group_de_duplication_keeps_order_and_is_fast_on_65536_gids() {
        assert_eq!(
            groups_to_add(&[5, 1], &[7, 1, 9, 7, 3, 5, 42, 9], 42),
            vec![7, 9, 3]
        );
        let existing: Vec<u32> = (0..1000).map(|i| i * 2).collect();
        let new: Vec<u32> = (0..65_536u32).rev().collect();
        let started = std::time::Instant::now();
        let added = groups_to_add(&existing, &new, 70_000);
        let took = started.elapsed();
        eprintln!("65536 gids de-duplicated in {took:?}");
        assert_eq!(added.len(), 65_536 - 1000);
        assert_eq!(added[0], 65_535, "the answer's order");
        // 10 ms is the goal for an optimised build; an unoptimised test build gets 10x.
        let limit = if cfg!(debug_assertions) { 100 } else { 10 };
        assert!(took.as_millis() < limit, "{took:?}");
    }
}
