//! `setpwent`/`getpwent_r`/`endpwent` and the group equivalents: the module pages through a
//! daemon-side snapshot, one batch at a time. glibc serialises these calls per database; the
//! state sits behind a try-lock (a call that finds it taken answers UNAVAIL, never waits)
//! that records the holder's pid. A child forked while a thread of the parent held it frees
//! it in the fork handler and abandons the state that thread may have been changing; an
//! enumeration the child inherits whole is started again (its `pid` is the parent's).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, Ordering};

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

/// The state of one database's enumeration and its lock.
pub struct Slot<T> {
    /// Pid of the process whose thread holds the lock; 0 when free.
    lock: AtomicI32,
    state: UnsafeCell<Option<State<T>>>,
}

// SAFETY: `state` is only reached through `with`, under `lock`.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> Slot<T> {
    const fn new() -> Slot<T> {
        Slot {
            lock: AtomicI32::new(0),
            state: UnsafeCell::new(None),
        }
    }

    /// In a child just forked (one thread): a lock held by a thread of the parent is freed,
    /// and the state it guarded, perhaps half changed, is abandoned (leaked, not dropped).
    fn after_fork_in_child(&self) {
        if self.lock.load(Ordering::Acquire) != 0 {
            // SAFETY: only this thread exists in the child, and no call is under way in it.
            unsafe { std::ptr::write(self.state.get(), None) };
            self.lock.store(0, Ordering::Release);
        }
    }
}

pub static PASSWD: Slot<Passwd> = Slot::new();
pub static GROUP: Slot<Group> = Slot::new();

/// Frees the lock when the call ends, or unwinds.
struct Unlock<'a>(&'a AtomicI32);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Runs `f` with the state, or returns `None` when the lock is not free.
pub fn with<T, R>(slot: &Slot<T>, f: impl FnOnce(&mut Option<State<T>>) -> R) -> Option<R> {
    crate::mapcache::register_fork_handler();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    slot.lock
        .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    let _unlock = Unlock(&slot.lock);
    // SAFETY: we hold the lock, so no other thread reaches the state.
    Some(f(unsafe { &mut *slot.state.get() }))
}

/// In a child just forked: see [`Slot::after_fork_in_child`].
pub fn after_fork_in_child() {
    PASSWD.after_fork_in_child();
    GROUP.after_fork_in_child();
}
