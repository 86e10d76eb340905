//! System calls the module makes where glibc's wrapper is newer than the glibc 2.17 baseline
//! (`stat`/`fstat` became real symbols only in glibc 2.33): raw `syscall(2)` into the
//! kernel's `struct stat`, which is glibc's `struct stat` on x86_64 and aarch64.

use std::ffi::CStr;
use std::os::raw::c_int;

/// What the module needs of a `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub size: i64,
}

fn from(st: &libc::stat) -> Stat {
    Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        size: st.st_size,
    }
}

/// `fstat(fd)`.
pub fn fstat(fd: c_int) -> Option<Stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one struct stat; a bad fd gives EBADF.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fstat,
            fd as libc::c_long,
            &mut st as *mut libc::stat,
        )
    };
    (rc == 0).then(|| from(&st))
}

/// `stat(path)` (`follow`) or `lstat(path)`.
pub fn stat(path: &CStr, follow: bool) -> Option<Stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: path is NUL-terminated; the kernel writes one struct stat.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD as libc::c_long,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            flags as libc::c_long,
        )
    };
    (rc == 0).then(|| from(&st))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn raw_stat_agrees_with_std() {
        let m = std::fs::metadata("/").unwrap();
        let s = stat(c"/", true).unwrap();
        assert_eq!(
            (s.dev, s.ino, s.mode, s.uid),
            (m.dev(), m.ino(), m.mode(), m.uid())
        );
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let fs = fstat(std::os::fd::AsRawFd::as_raw_fd(&f)).unwrap();
        let fm = f.metadata().unwrap();
        assert_eq!((fs.ino, fs.size), (fm.ino(), fm.len() as i64));
        assert!(fstat(-1).is_none());
    }
}
