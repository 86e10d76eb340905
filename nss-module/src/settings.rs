//! Settings read from the environment once per process and never freed: where the daemon's
//! runtime directory is, the time budget, and the kill switch the daemon sets for itself.
//! The overrides are read with `secure_getenv`, so setuid and setgid programs ignore them; the
//! kill switch with plain `getenv`, since disabling can never raise privileges.
//!
//! * `TOOLFORGE_NSS_DIR`: runtime directory (default `/run/toolforge-nss`). Whatever it names
//!   is believed only if `trust` says so.
//! * `TOOLFORGE_NSS_TIMEOUT_MS`: per-call budget for lookups (default 500, 10 to 60000).
//! * `TOOLFORGE_NSS_DISABLE`: when set (to anything but empty or `0`), answer UNAVAIL.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicPtr, Ordering};

pub const DEFAULT_RUNTIME_DIR: &str = "/run/toolforge-nss";
pub const SOCKET_NAME: &str = "socket";
pub const MAP_FILE_NAME: &str = "cache.map";
pub const DEFAULT_TIMEOUT_MS: u64 = 500;

extern "C" {
    // glibc >= 2.17; the libc crate does not declare it for Linux.
    fn secure_getenv(name: *const c_char) -> *mut c_char;
}

#[derive(Debug)]
pub struct Settings {
    /// `RUNTIME_DIR/socket`, as a `sockaddr_un` path (without NUL), or `None` when too long.
    pub socket_path: Option<Vec<u8>>,
    /// `RUNTIME_DIR/cache.map`, the shared cache file, or `None` when the path is unusable.
    pub map_path: Option<CString>,
    /// `RUNTIME_DIR` itself (checked by `trust` before the file or the socket is used).
    pub dir_path: Option<CString>,
    pub timeout_ms: u64,
    pub disabled: bool,
}

fn env(name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: name is NUL-terminated; the result is NULL or a NUL-terminated string in environ.
    let p = unsafe { secure_getenv(name.as_ptr()) };
    copy(p)
}

/// Plain `getenv`: only for the kill switch, which a setuid program may honour too.
fn plain_env(name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: name is NUL-terminated; the result is NULL or a NUL-terminated string in environ.
    copy(unsafe { libc::getenv(name.as_ptr()) })
}

fn copy(p: *mut c_char) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL pointer to a NUL-terminated string.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
}

impl Settings {
    fn from_env() -> Settings {
        let dir = env(c"TOOLFORGE_NSS_DIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into());
        let mut map = dir.clone();
        map.push(b'/');
        map.extend_from_slice(MAP_FILE_NAME.as_bytes());
        let map_path = CString::new(map).ok();
        let dir_path = CString::new(dir.clone()).ok();
        let mut path = dir;
        path.push(b'/');
        path.extend_from_slice(SOCKET_NAME.as_bytes());
        let socket_path = (path.len() < 108 && !path.contains(&0)).then_some(path);
        let timeout_ms = env(c"TOOLFORGE_NSS_TIMEOUT_MS")
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .map(|v| v.clamp(10, 60_000))
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let disabled =
            plain_env(c"TOOLFORGE_NSS_DISABLE").is_some_and(|v| !v.is_empty() && v != b"0");
        Settings {
            socket_path,
            map_path,
            dir_path,
            timeout_ms,
            disabled,
        }
    }
}

static SETTINGS: AtomicPtr<Settings> = AtomicPtr::new(std::ptr::null_mut());

/// The process's settings. Racing first calls may each build one; one wins, the others are
/// freed. No `Once`: a fork during initialisation must not leave a lock held in the child.
#[inline]
pub fn get() -> &'static Settings {
    let p = SETTINGS.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: published pointers come from Box::into_raw and are never freed.
        return unsafe { &*p };
    }
    init()
}

/// The first call's part of [`get`]: builds and publishes the settings.
#[cold]
#[inline(never)]
fn init() -> &'static Settings {
    let fresh = Box::into_raw(Box::new(Settings::from_env()));
    match SETTINGS.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: we just published it and never free it.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never shared; `winner` is a published, never-freed pointer.
            unsafe {
                drop(Box::from_raw(fresh));
                &*winner
            }
        }
    }
}

/// For tests: a C string of the socket path.
pub fn socket_path_cstring() -> Option<CString> {
    get().socket_path.clone().and_then(|p| CString::new(p).ok())
}
