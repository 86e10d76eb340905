//! The socket to the daemon: connect (close-on-exec, non-blocking, never fd 0-2), and one
//! cached connection per process that is taken and returned with an atomic swap (no lock).
//!
//! A cached fd can go bad behind our back: the process forks (the child must not share the
//! parent's stream), or the program closes "all fds" and reuses the number for a file of its
//! own. So each connection remembers its pid and the socket's device and inode; a connection
//! is used only by the pid that opened it, and closed only while fstat still shows our socket.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Why a connection could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// No socket file (daemon not running, or runtime dir not mounted).
    Missing,
    /// Socket file without a listener (daemon stopped uncleanly).
    Refused,
    /// Listen backlog full, out of fds, or anything else.
    Other(c_int),
}

#[derive(Debug)]
pub struct Conn {
    fd: c_int,
    dev: u64,
    ino: u64,
    pid: libc::pid_t,
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fstat_ids(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid out-parameter; fstat only writes to it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any integer is safe; it fails with EBADF for closed fds.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some((st.st_dev, st.st_ino))
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

impl Conn {
    /// Connects to the Unix socket at `path` (no NUL inside, shorter than `sun_path`).
    pub fn connect(path: &[u8]) -> Result<Conn, ConnectError> {
        // SAFETY: a zeroed sockaddr_un is valid; we fill family and path below.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        if path.len() >= addr.sun_path.len() {
            return Err(ConnectError::Missing);
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
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            return Err(match e {
                libc::ENOENT | libc::ENOTDIR => ConnectError::Missing,
                libc::ECONNREFUSED => ConnectError::Refused,
                other => ConnectError::Other(other),
            });
        }
        let Some((dev, ino)) = fstat_ids(fd) else {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            return Err(ConnectError::Other(libc::EBADF));
        };
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        Ok(Conn { fd, dev, ino, pid })
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
        // Close only what is still our socket: after a fork this closes the child's copy,
        // after the program reused the number it leaves the program's file alone.
        if self.still_ours() {
            // SAFETY: the fd is our socket.
            unsafe { libc::close(self.fd) };
        }
    }
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
    conn.usable().then_some(conn)
}

/// Returns a connection for the next call to reuse (closing any other one cached meanwhile).
pub fn give_back(conn: Box<Conn>) {
    let old = CACHED.swap(Box::into_raw(conn), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: as in `take`.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Drops the cached connection (used by tests and after a daemon error).
pub fn forget_cached() {
    drop(take());
}
