//! Running with as little privilege as possible: the admin directory must be private, and
//! after binding its sockets the daemon can switch to an unprivileged uid/gid (numeric: it
//! never asks NSS), keeping ownership of the directories it still writes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Refuses an admin directory that anyone but its owner (the daemon's uid) may enter.
pub fn check_private_dir(dir: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    }; // created 0700 on bind
       // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || meta.uid() != euid || mode & 0o077 != 0 {
        return Err(format!(
            "daemon.admin_dir: {} is mode {mode:04o} owned by uid {}; it must be a directory of mode 0700 owned by uid {euid}",
            dir.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// Switches to `uid`/`gid` for good, after handing `own` (directories the daemon writes
/// later) to them. A daemon already running as `uid` has nothing to do.
pub fn drop_to(uid: u32, gid: u32, own: &[&Path]) -> Result<(), String> {
    // SAFETY: plain libc calls without memory arguments, or with a NULL list of length 0.
    unsafe {
        let euid = libc::geteuid();
        if euid == uid {
            return Ok(());
        }
        if euid != 0 {
            return Err(format!(
                "daemon.run_as_uid = {uid}: started as uid {euid}, which cannot switch uids"
            ));
        }
        for dir in own {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let _ = std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid));
                }
            }
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!(
                "setgid({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!(
                "setuid({uid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setuid(0) == 0 || libc::geteuid() != uid {
            return Err("privileges were not dropped for good".into());
        }
    }
    Ok(())
}
