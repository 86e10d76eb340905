//! The socket to the daemon: connect (close-on-exec, non-blocking, never fd 0-2), and one
//! cached connection per process that is taken and returned with an atomic swap (no lock).
//!
//! A cached fd can go bad behind our back: the process forks (the child must not share the
//! parent's stream), or the program closes "all fds" and reuses the number for a file of its
//! own. So each connection remembers its pid and the socket's device and inode; a connection
//! is used only by the pid that opened it, and closed only while fstat still shows our socket.
//!
//! Trust: a connection is made only in a trusted runtime directory, and kept only when the
//! peer (SO_PEERCRED) is root or the daemon uid (`trust`); anything else is "no daemon".
//! A cached connection idle for [`IDLE_CLOSE_MS`] is closed instead of reused, before the
//! daemon's idle timeout (30 s by default) can close it under a request; a process whose
//! lookups are answered from the cache file closes it then too (`close_if_idle`, from the
//! once-a-second check). One that makes no lookup at all keeps it until the daemon closes
//! its end (the module has no thread or timer of its own).
//!
//! Fork: every socket the module holds (being connected, in use by a thread, or cached) is
//! recorded by fd and inode from just after `socket(2)` until it is closed, so that a child
//! forked at any moment closes its copies (a fork handler) and starts with no connection of
//! the parent's. The fd number alone is not enough: the program may have closed ours and
//! reused the number for a socket of its own, which the child must keep.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::{clock, settings, sys, trust};

/// A cached connection idle this long is closed rather than reused (the daemon's default idle
/// timeout is 30 s; it may be configured down to 1 s, then a reused connection may still be
/// closed under us, which `client` retries once on a fresh one).
pub const IDLE_CLOSE_MS: u64 = 20_000;

/// Why a connection could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// No socket file (daemon not running, or runtime dir not mounted).
    Missing,
    /// Socket file without a listener (daemon stopped uncleanly).
    Refused,
    /// Listen backlog full (EAGAIN): worth another try within the budget.
    Busy,
    /// The directory or the peer is not trusted.
    Untrusted,
    /// Out of fds, or anything else.
    Other(c_int),
}

#[derive(Debug)]
pub struct Conn {
    fd: c_int,
    dev: u64,
    ino: u64,
    pid: libc::pid_t,
    /// Monotonic ns when last returned to the cache.
    idle_since: u64,
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fstat_ids(fd: c_int) -> Option<(u64, u64)> {
    let st = sys::fstat(fd)?;
    (st.mode & libc::S_IFMT == libc::S_IFSOCK).then_some((st.dev, st.ino))
}

/// Moves `fd` to a number above 2 (a process that closed its stdio must not get our socket
/// as its stdout), keeping close-on-exec.
fn above_stdio(fd: c_int) -> Result<c_int, c_int> {
    if fd > 2 {
        return Ok(fd);
    }
    // SAFETY: plain fcntl/close on an fd we own.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    let err = errno();
    // SAFETY: we own fd and no longer need it.
    unsafe { libc::close(fd) };
    if moved < 0 {
        Err(err)
    } else {
        Ok(moved)
    }
}

/// Closes a socket of ours that is not (or no longer) a `Conn`, and forgets it.
fn abandon(fd: c_int, ino: u64) {
    disown(fd, ino);
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
}

impl Conn {
    /// Connects to the Unix socket at `path` (no NUL inside, shorter than `sun_path`).
    pub fn connect(path: &[u8]) -> Result<Conn, ConnectError> {
        // SAFETY: a zeroed sockaddr_un is valid; we fill family and path below.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        if path.len() >= addr.sun_path.len() {
            return Err(ConnectError::Missing);
        }
        let trusted_dir = settings::get()
            .dir_path
            .as_deref()
            .is_some_and(trust::trusted_dir);
        if !trusted_dir {
            return Err(ConnectError::Untrusted);
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(path) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(ConnectError::Other(errno()));
        }
        let fd = above_stdio(fd).map_err(ConnectError::Other)?;
        // Recorded before anything else, so a fork from here on does not leak it.
        crate::mapcache::register_fork_handler();
        let Some((dev, ino)) = fstat_ids(fd) else {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            return Err(ConnectError::Other(libc::EBADF));
        };
        own(fd, ino);
        let len = (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                len,
            )
        };
        if rc != 0 {
            let e = errno();
            abandon(fd, ino);
            return Err(match e {
                libc::ENOENT | libc::ENOTDIR => ConnectError::Missing,
                libc::ECONNREFUSED => ConnectError::Refused,
                libc::EAGAIN => ConnectError::Busy,
                other => ConnectError::Other(other),
            });
        }
        // Whoever bound the socket, only root or the daemon is believed.
        if !trust::peer_uid(fd).is_some_and(trust::trusted_uid) {
            abandon(fd, ino);
            return Err(ConnectError::Untrusted);
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        Ok(Conn {
            fd,
            dev,
            ino,
            pid,
            idle_since: 0,
        })
    }

    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// Whether the fd still is the socket we opened.
    fn still_ours(&self) -> bool {
        fstat_ids(self.fd) == Some((self.dev, self.ino))
    }

    /// Whether this process may use it (same pid, same socket).
    fn usable(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.pid == unsafe { libc::getpid() } && self.still_ours()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Close only what is still our socket: after the program reused the number it
        // leaves the program's file alone.
        disown(self.fd, self.ino);
        if self.still_ours() {
            // SAFETY: the fd is our socket.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Sockets the module holds, as `inode (low 32 bits) << 32 | fd`; [`FREE`] marks a free
/// entry. More at once than this are not recorded (a connection per thread): a child forked
/// then may keep such an fd open (close-on-exec still applies).
static OWNED: [AtomicU64; 16] = [const { AtomicU64::new(FREE) }; 16];
const FREE: u64 = u64::MAX;

fn owned_entry(fd: c_int, ino: u64) -> u64 {
    ((ino & 0xffff_ffff) << 32) | u64::from(fd as u32)
}

fn own(fd: c_int, ino: u64) {
    let e = owned_entry(fd, ino);
    for slot in &OWNED {
        if slot
            .compare_exchange(FREE, e, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

fn disown(fd: c_int, ino: u64) {
    let e = owned_entry(fd, ino);
    for slot in &OWNED {
        if slot
            .compare_exchange(e, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// In a child just forked (one thread): every socket the parent's threads held, connecting,
/// in use or cached, is the parent's stream; close our copies (only while the fd still is
/// that socket).
pub fn after_fork_in_child() {
    for slot in &OWNED {
        let e = slot.swap(FREE, Ordering::AcqRel);
        if e == FREE {
            continue;
        }
        let fd = (e & 0xffff_ffff) as c_int;
        let ino = e >> 32;
        if fd > 2 && fstat_ids(fd).is_some_and(|(_, i)| i & 0xffff_ffff == ino) {
            // SAFETY: the child's copy of a socket the module opened; nothing here uses it.
            unsafe { libc::close(fd) };
        }
    }
    let p = CACHED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: as in `take`. Its fd was closed above (dropping finds it gone), or was not
        // recorded (dropping closes it).
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Sockets recorded as held (for tests).
pub fn owned_count() -> usize {
    OWNED
        .iter()
        .filter(|e| e.load(Ordering::Relaxed) != FREE)
        .count()
}

static CACHED: AtomicPtr<Conn> = AtomicPtr::new(std::ptr::null_mut());

/// Takes the cached connection, if there is one this process may use.
pub fn take() -> Option<Box<Conn>> {
    let p = CACHED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null pointers in CACHED come from Box::into_raw and are owned by the slot.
    let conn = unsafe { Box::from_raw(p) };
    let fresh = clock::now_ns().saturating_sub(conn.idle_since) < IDLE_CLOSE_MS * 1_000_000;
    if !(fresh && conn.usable()) {
        return None;
    }
    Some(conn)
}

/// Returns a connection for the next call to reuse (closing any other one cached meanwhile).
pub fn give_back(mut conn: Box<Conn>) {
    conn.idle_since = clock::now_ns();
    let old = CACHED.swap(Box::into_raw(conn), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: as in `take`.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Closes the cached connection if it has been idle [`IDLE_CLOSE_MS`] (or is not this
/// process's): called about once a second by lookups answered from the cache file, so a
/// process that keeps looking up does not hold a connection the daemon is about to close.
pub fn close_if_idle() {
    let p = CACHED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if p.is_null() {
        return;
    }
    // SAFETY: as in `take`.
    let conn = unsafe { Box::from_raw(p) };
    let fresh = clock::now_ns().saturating_sub(conn.idle_since) < IDLE_CLOSE_MS * 1_000_000;
    if !(fresh && conn.usable()) {
        return; // dropped: closed
    }
    // Still fresh: put it back (or close it if another thread cached one meanwhile).
    let other = CACHED.swap(Box::into_raw(conn), Ordering::AcqRel);
    if !other.is_null() {
        // SAFETY: as in `take`.
        drop(unsafe { Box::from_raw(other) });
    }
}

/// Drops the cached connection (used by tests and after a daemon error).
pub fn forget_cached() {
    drop(take());
}
