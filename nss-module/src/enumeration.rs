//! `setpwent`/`getpwent_r`/`endpwent` and the group equivalents: the module pages through a
//! daemon-side snapshot, one batch at a time. glibc serialises these calls per database; the
//! state sits behind a mutex taken with `try_lock`, so a lock left held by a fork in another
//! thread makes a call answer UNAVAIL instead of hanging.

use std::sync::{Mutex, TryLockError};

use toolforge_nss_protocol::message::END_OF_ENUMERATION;
use toolforge_nss_protocol::{Group, Passwd};

/// One open enumeration.
pub struct State<T> {
    pub pid: libc::pid_t,
    pub generation: u64,
    pub next_cursor: u32,
    pub entries: Vec<T>,
    pub index: usize,
}

impl<T> State<T> {
    /// Whether every batch has been fetched and every entry returned.
    pub fn exhausted(&self) -> bool {
        self.index >= self.entries.len() && self.next_cursor == END_OF_ENUMERATION
    }

    /// Whether the current batch is used up and another must be fetched.
    pub fn needs_batch(&self) -> bool {
        self.index >= self.entries.len() && self.next_cursor != END_OF_ENUMERATION
    }
}

pub static PASSWD: Mutex<Option<State<Passwd>>> = Mutex::new(None);
pub static GROUP: Mutex<Option<State<Group>>> = Mutex::new(None);

/// Runs `f` with the state, or returns `None` when the lock is not free.
pub fn with<T, R>(
    m: &Mutex<Option<State<T>>>,
    f: impl FnOnce(&mut Option<State<T>>) -> R,
) -> Option<R> {
    match m.try_lock() {
        Ok(mut g) => Some(f(&mut g)),
        Err(TryLockError::Poisoned(p)) => Some(f(&mut p.into_inner())),
        Err(TryLockError::WouldBlock) => None,
    }
}
