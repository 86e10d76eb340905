//! Keeps the last reply that did not fit the caller's buffer, so the retry with a bigger
//! buffer (glibc doubles it and asks again) is answered without another round trip. One slot,
//! taken and filled with an atomic swap; a reply is reused only by the same process, for the
//! same request, within a second.

use std::sync::atomic::{AtomicPtr, Ordering};

use toolforge_nss_protocol::Request;

use crate::clock::now_ns;

const MAX_AGE_NS: u64 = 1_000_000_000;

struct Saved {
    pid: libc::pid_t,
    request: Request,
    kind: u16,
    body: Vec<u8>,
    at_ns: u64,
}

static SLOT: AtomicPtr<Saved> = AtomicPtr::new(std::ptr::null_mut());

fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Takes the saved reply if it answers `request`; any other saved reply is discarded.
pub fn take(request: &Request) -> Option<(u16, Vec<u8>)> {
    let p = SLOT.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null pointers in SLOT come from Box::into_raw and belong to the slot.
    let saved = unsafe { Box::from_raw(p) };
    let fresh = now_ns().saturating_sub(saved.at_ns) < MAX_AGE_NS;
    (saved.pid == pid() && fresh && &saved.request == request).then_some((saved.kind, saved.body))
}

/// Saves a reply that did not fit.
pub fn save(request: Request, kind: u16, body: Vec<u8>) {
    let saved = Box::new(Saved {
        pid: pid(),
        request,
        kind,
        body,
        at_ns: now_ns(),
    });
    let old = SLOT.swap(Box::into_raw(saved), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: as in `take`.
        drop(unsafe { Box::from_raw(old) });
    }
}
