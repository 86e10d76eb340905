//! Gapless upgrades on hosts run by systemd: the service manager's readiness protocol
//! (`sd_notify`, for `Type=notify`) and `SIGUSR2`, which starts a successor from the binary
//! now installed at the daemon's path (`argv[0]`, so a package upgrade's new binary) with the
//! same arguments and environment. The successor takes over from this daemon (`handover`)
//! and, once it owns the sockets, tells systemd that it is the service's main process
//! (`MAINPID=`), so the unit stays active throughout. A successor that fails to start (say,
//! the new version refuses the config) exits; this daemon logs it and keeps serving.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use tracing::{error, info, warn};

/// Sends `state` (e.g. `READY=1`) to systemd when it asked for notifications
/// (`NOTIFY_SOCKET`); silently nothing otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// Tells systemd that this process serves now: ready, and (after a takeover) the main one.
pub fn notify_ready(took_over: bool) {
    if took_over {
        notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify("READY=1");
    }
}

/// Starts a successor (same path, arguments and environment) that takes over from this
/// daemon; a thread reaps it if it exits while this daemon still runs.
pub fn start_successor() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.is_empty() {
        error!("SIGUSR2: cannot tell this daemon's path (no argv[0])");
        return;
    }
    let path = args.remove(0);
    info!(path = ?path, "SIGUSR2: starting a successor to take over");
    let child = Command::new(&path).args(&args).stdin(Stdio::null()).spawn();
    match child {
        Ok(mut c) => {
            let pid = c.id();
            std::thread::spawn(move || {
                if let Ok(status) = c.wait() {
                    warn!(pid, %status, "the successor exited; this daemon serves on");
                }
            });
        }
        Err(e) => error!(path = ?path, error = %e, "SIGUSR2: cannot start a successor"),
    }
}
