//! The SSSD-compatible socket: `sss_compat_dir/nss`, mode 0666 in a directory every uid may
//! search (libnss_sss has the path compiled in and makes no owner check for NSS), with a large
//! listen backlog (libnss_sss 2.4 and 2.8 retry a full backlog without bound, so a short one
//! would stall clients rather than fail them). Accepted connections count against their own
//! `max_connections` and per-uid caps, set from the same configuration as the lookup
//! socket's; a refused client still gets an error reply to its first request (SSSD's client
//! checks the reply's command, so the reply must echo it).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use toolforge_nss_config::Config;
use toolforge_nss_protocol::sss::{self, status, SssCommand, SSS_SOCKET_NAME};

use crate::connection::Limits;
use crate::directory::Directory;
use crate::peers::PeerLimits;
use crate::resolver::Resolver;
use crate::server::Listener;

/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;
/// How long shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `dir/nss` (creating `dir` 0755 if missing; an existing `dir` gets search permission
/// for all added, because every container uid must reach the socket). `take_over`: replace
/// the socket of a live daemon that agreed to hand over (see `handover`).
pub fn bind(dir: &Path, take_over: bool) -> io::Result<Listener> {
    let listener = if take_over {
        Listener::take_over_at(dir, 0o755, SSS_SOCKET_NAME, 0o666)?
    } else {
        Listener::bind_at(dir, 0o755, SSS_SOCKET_NAME, 0o666)?
    };
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011)).map_err(
            |e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot make {} searchable by all: {e}", dir.display()),
                )
            },
        )?;
    }
    // Listening again on a listening socket only changes its backlog.
    // SAFETY: a valid listening socket owned by `listener`; no memory arguments.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("listen {}: {e}", listener.path().display()),
        ));
    }
    Ok(listener)
}

/// The socket `[daemon] sss_compat_dir` asks for, if any; the directory is given to
/// `run_as_uid` (as `runtime_dir` is) so the unprivileged daemon can remove its socket.
pub fn bind_for(config: &Config, take_over: bool) -> Result<Option<Listener>, String> {
    let Some(dir) = &config.daemon.sss_compat_dir else {
        return Ok(None);
    };
    let listener = bind(dir, take_over).map_err(|e| format!("daemon.sss_compat_dir: {e}"))?;
    if let Some(uid) = config.daemon.run_as_uid {
        let gid = config.daemon.run_as_gid.unwrap_or(uid);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("daemon.sss_compat_dir: chown {}: {e}", dir.display()))?;
        }
    }
    Ok(Some(listener))
}

/// The running SSSD-compatible server; [`SssServer::stop`] ends it.
pub struct SssServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SssServer {
    /// Serves `listener` in the background from `resolver`.
    pub fn start<D: Directory>(
        listener: Listener,
        resolver: Arc<Resolver<D>>,
        config: &Config,
    ) -> SssServer {
        let (stop, stop_rx) = watch::channel(false);
        let limits = Limits {
            idle_timeout: Duration::from_millis(config.daemon.idle_timeout_ms),
            request_timeout: Duration::from_millis(config.daemon.request_timeout_ms),
        };
        let caps = (
            config.daemon.max_connections,
            config.daemon.max_connections_per_uid,
        );
        let task = tokio::spawn(serve(listener, resolver, limits, caps, stop_rx));
        SssServer { stop, task }
    }

    /// Stops accepting, removes the socket, lets connections finish their current request
    /// (at most two seconds).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Answers a refused client with `EBUSY` and closes at once, without reading anything: a
/// refusal must cost no task, no timer and no file descriptor beyond this call, or a uid
/// opening idle connections in a loop would exhaust the daemon's descriptors. libnss_sss
/// always sends `GET_VERSION` first on a new connection and checks that the reply echoes its
/// command, so the reply is written ahead as that answer (a fresh socket's buffer holds it);
/// the client then answers UNAVAIL and the next NSS source is asked.
fn refuse(stream: UnixStream) {
    let _ = stream.try_write(&sss::error_reply(
        SssCommand::GetVersion as u32,
        status::EBUSY,
    ));
}

async fn serve<D: Directory>(
    listener: Listener,
    resolver: Arc<Resolver<D>>,
    limits: Limits,
    (max, per_uid): (usize, usize),
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max));
    let peers = PeerLimits::new(per_uid);
    info!(socket = %listener.path().display(), "serving SSSD's NSS protocol");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "sss: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(uid) = stream.peer_cred().ok().map(|c| c.uid()) else {
            refuse(stream);
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(
                max_connections = max,
                "sss: connection limit reached; refusing a client"
            );
            refuse(stream);
            continue;
        };
        let Some(slot) = peers.admit(uid) else {
            refuse(stream);
            continue;
        };
        let (resolver, stop) = (resolver.clone(), stop.clone());
        tokio::spawn(async move {
            super::connection::serve(stream, uid, resolver, limits, stop).await;
            drop((slot, permit));
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        warn!("sss: connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
}
