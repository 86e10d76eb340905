//! Whom the module believes: the runtime directory, the shared cache data and the socket's
//! peer must belong to root or to the one daemon uid the image names, never to anyone a
//! tenant could be.
//!
//! The daemon uid is read once from `/etc/toolforge-nss/daemon-uid` (a decimal number), only
//! when that file and its directory are root-owned and not writable by group or others, else
//! it is [`DEFAULT_DAEMON_UID`]. Never from the environment: a process could otherwise name
//! its own uid. A runtime directory that is not a directory, belongs to someone else, or is
//! writable by group or others is not used at all (no file, no socket): UNAVAIL, and `files`
//! keeps working.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, Stat};

/// The daemon's fixed system uid (and gid): `toolforge-nss` in the Debian package, the
/// DaemonSet's `run_as_uid`. Outside every id range the directory allocates (Toolforge: users
/// 500-49999 and from 100000, tools 50000-59999) and not `nobody`.
pub const DEFAULT_DAEMON_UID: u32 = 64_100;
/// Where an image may name another daemon uid.
pub const DAEMON_UID_FILE: &CStr = c"/etc/toolforge-nss/daemon-uid";

/// 0: not read yet; else the uid + 1.
static DAEMON_UID: AtomicU64 = AtomicU64::new(0);

fn root_owned_and_private(s: &Stat) -> bool {
    s.uid == 0 && s.mode & 0o022 == 0
}

fn read_daemon_uid() -> u32 {
    let dir_ok = sys::stat(c"/etc/toolforge-nss", false)
        .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFDIR && root_owned_and_private(&s));
    if !dir_ok {
        return DEFAULT_DAEMON_UID;
    }
    // SAFETY: a constant NUL-terminated path; the fd is closed below.
    let fd = unsafe {
        libc::open(
            DAEMON_UID_FILE.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return DEFAULT_DAEMON_UID;
    }
    let ok = sys::fstat(fd)
        .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFREG && root_owned_and_private(&s));
    let mut buf = [0u8; 16];
    // SAFETY: reading into our buffer from our fd.
    let n = if ok {
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
    } else {
        -1
    };
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    let Ok(n) = usize::try_from(n) else {
        return DEFAULT_DAEMON_UID;
    };
    buf.get(..n)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != 0 && u != 65_534 && u != u32::MAX)
        .unwrap_or(DEFAULT_DAEMON_UID)
}

/// The daemon uid this image trusts besides root.
pub fn daemon_uid() -> u32 {
    let v = DAEMON_UID.load(Ordering::Relaxed);
    if v != 0 {
        return (v - 1) as u32;
    }
    let uid = read_daemon_uid();
    DAEMON_UID.store(u64::from(uid) + 1, Ordering::Relaxed);
    uid
}

/// Whether `uid` is root or the daemon.
pub fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == daemon_uid()
}

/// Whether a file (or socket) may be believed: owned by root or the daemon, not writable by
/// group or others.
pub fn trusted_file(s: &Stat) -> bool {
    trusted_uid(s.uid) && s.mode & 0o022 == 0
}

/// Whether the runtime directory may be used: a directory (symlinks followed: pods mount it)
/// owned by root or the daemon, not writable by group or others.
pub fn trusted_dir(path: &CStr) -> bool {
    sys::stat(path, true)
        .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFDIR && trusted_file(&s))
}

/// The uid of the peer of a connected Unix socket (SO_PEERCRED).
pub fn peer_uid(fd: libc::c_int) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred is a writable ucred of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemon_are_trusted_nobody_is_not() {
        assert!(trusted_uid(0));
        assert!(trusted_uid(daemon_uid()));
        assert!(!trusted_uid(65_534));
        assert!(!trusted_uid(12_345));
        let file = |uid, mode| Stat {
            dev: 0,
            ino: 0,
            mode: libc::S_IFREG | mode,
            uid,
            size: 0,
        };
        assert!(trusted_file(&file(0, 0o644)));
        assert!(!trusted_file(&file(0, 0o664)));
        assert!(!trusted_file(&file(0, 0o646)));
        assert!(!trusted_file(&file(65_534, 0o644)));
    }
}
