//! The listening side: prepares `runtime_dir` and its socket (created 0666 under a temporary
//! name, then renamed over the old one, so clients never see it missing; a live daemon on the
//! same socket is refused, a stale socket replaced, and a live one replaced only when taking
//! over from it: see `handover`), accepts connections up to
//! `max_connections` in all and `max_connections_per_uid` per peer uid (beyond, a `Busy`
//! error and close), and shuts down gracefully: stop
//! accepting, let connections finish their current request, remove the socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

use toolforge_nss_config::Config;
use toolforge_nss_protocol::{Capabilities, ErrorCode, Response};

use crate::connection::{self, Limits};
use crate::directory::Directory;
use crate::peers::PeerLimits;
use crate::resolver::Resolver;

/// The lookup socket's file name inside `runtime_dir`.
pub const SOCKET_NAME: &str = "socket";

/// How long shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound lookup socket; removes the socket file on drop if it is still ours.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
    /// Taking over: the socket is bound under this temporary name until
    /// [`Listener::put_in_place`] renames it over the live daemon's.
    staged: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(tmp) = &self.staged {
            // Never put in place: the live daemon's socket was not touched.
            let _ = std::fs::remove_file(tmp);
        } else if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Which socket file a listener put in place, to tell later whether another daemon has
/// renamed its own over it (a takeover).
#[derive(Clone, Debug)]
pub struct SocketId {
    path: PathBuf,
    inode: u64,
}

impl SocketId {
    /// Whether the path now holds another socket (or nothing).
    pub fn replaced(&self) -> bool {
        !std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode)
    }
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket file this listener put in place.
    pub fn id(&self) -> SocketId {
        SocketId {
            path: self.path.clone(),
            inode: self.inode,
        }
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<tokio::net::UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    /// Creates `runtime_dir` if needed and binds `runtime_dir/socket`.
    pub fn bind(runtime_dir: &Path) -> io::Result<Listener> {
        Listener::bind_at(runtime_dir, 0o755, SOCKET_NAME, 0o666)
    }

    /// Binds `dir/name` with mode `socket_mode`, creating `dir` with `dir_mode` if missing.
    pub fn bind_at(
        dir: &Path,
        dir_mode: u32,
        name: &str,
        socket_mode: u32,
    ) -> io::Result<Listener> {
        Listener::bind_inner(dir, dir_mode, name, socket_mode, false)
    }

    /// As [`Listener::bind_at`] for replacing the socket of a live daemon (a takeover: the
    /// caller has the running daemon's agreement, see `handover`), in two steps: this binds
    /// the new socket under a temporary name, [`Listener::put_in_place`] renames it over the
    /// old one. So a daemon taking over prepares all its sockets first and replaces them one
    /// after the other only when each is ready: a failure while preparing leaves the old
    /// daemon's sockets alone (a failure after replacing one is what the handover tells the
    /// old daemon by the lookup socket, which goes last).
    pub fn take_over_at(
        dir: &Path,
        dir_mode: u32,
        name: &str,
        socket_mode: u32,
    ) -> io::Result<Listener> {
        Listener::bind_inner(dir, dir_mode, name, socket_mode, true)
    }

    fn bind_inner(
        dir: &Path,
        dir_mode: u32,
        name: &str,
        socket_mode: u32,
        take_over: bool,
    ) -> io::Result<Listener> {
        let runtime_dir = dir;
        let context = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        if !runtime_dir.exists() {
            std::fs::create_dir_all(runtime_dir)
                .map_err(|e| context("cannot create", runtime_dir, e))?;
            std::fs::set_permissions(runtime_dir, std::fs::Permissions::from_mode(dir_mode))
                .map_err(|e| context("cannot chmod", runtime_dir, e))?;
        }
        let path = runtime_dir.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; refusing to replace it",
                        path.display()
                    ),
                ));
            }
            if take_over {
                info!(socket = %path.display(), "taking over the socket");
            } else if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another daemon is serving {}", path.display()),
                ));
            } else {
                info!(socket = %path.display(), "replacing stale socket");
            }
        }
        let tmp = runtime_dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(|e| context("cannot bind", &tmp, e))?;
        std_listener.set_nonblocking(true)?;
        let mut listener = Listener {
            listener: UnixListener::from_std(std_listener)?,
            path,
            inode: 0,
            staged: Some(tmp.clone()),
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(socket_mode))
            .map_err(|e| context("cannot chmod", &tmp, e))?;
        if !take_over {
            listener.put_in_place()?;
        }
        Ok(listener)
    }

    /// Renames a socket bound by [`Listener::take_over_at`] over the path it is for (a
    /// listener bound otherwise is in place already).
    pub fn put_in_place(&mut self) -> io::Result<()> {
        let Some(tmp) = &self.staged else {
            return Ok(());
        };
        std::fs::rename(tmp, &self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot rename socket to {}: {e}", self.path.display()),
            )
        })?;
        self.staged = None;
        self.inode = std::fs::symlink_metadata(&self.path)?.ino();
        Ok(())
    }
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }
}

/// Answers a refused client with a `Busy` error (bounded in time) and hangs up.
fn refuse(stream: tokio::net::UnixStream, limits: Limits, why: &str) {
    let busy = Response::Error {
        code: ErrorCode::Busy,
        message: why.into(),
    }
    .encode(0, 0, Capabilities::default());
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = stream;
        let _ = tokio::time::timeout(limits.request_timeout, s.write_all(&busy)).await;
    });
}

/// Serves lookups until `shutdown` resolves.
pub async fn serve<D: Directory>(
    listener: Listener,
    resolver: Arc<Resolver<D>>,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = Limits {
        idle_timeout: Duration::from_millis(config.daemon.idle_timeout_ms),
        request_timeout: Duration::from_millis(config.daemon.request_timeout_ms),
    };
    let max = config.daemon.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let peers = PeerLimits::new(config.daemon.max_connections_per_uid);
    let (stop_tx, stop_rx) = watch::channel(false);
    info!(socket = %listener.path().display(), max_connections = max, "serving lookups");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(uid) = stream.peer_cred().ok().map(|c| c.uid()) else {
            refuse(stream, limits, "cannot identify the peer");
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(
                max_connections = max,
                "connection limit reached; refusing a client"
            );
            refuse(stream, limits, "daemon busy");
            continue;
        };
        let Some(slot) = peers.admit(uid) else {
            refuse(stream, limits, "too many connections from this uid");
            continue;
        };
        let (resolver, stop) = (resolver.clone(), stop_rx.clone());
        resolver.stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            connection::serve(stream, uid, resolver.clone(), limits, stop).await;
            resolver.stats.connections.fetch_sub(1, Ordering::Relaxed);
            drop((slot, permit));
        });
    }
    info!("shutting down: no new connections");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon taking over binds first and replaces later: until then, and when it gives up
    /// before, the live daemon's socket stays where it is.
    #[tokio::test]
    async fn a_takeover_replaces_the_socket_only_when_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let live = Listener::bind_at(dir.path(), 0o755, "s", 0o666).unwrap();
        let live_id = live.id();
        let staged = Listener::take_over_at(dir.path(), 0o755, "s", 0o666).unwrap();
        assert!(!live_id.replaced(), "bound, not yet in place");
        drop(staged);
        assert!(
            !live_id.replaced(),
            "given up: the live socket is untouched"
        );
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "the temporary socket is removed");

        let mut next = Listener::take_over_at(dir.path(), 0o755, "s", 0o666).unwrap();
        next.put_in_place().unwrap();
        assert!(live_id.replaced());
        assert!(!next.id().replaced());
        assert!(std::os::unix::net::UnixStream::connect(dir.path().join("s")).is_ok());
        drop(live);
        assert!(
            !next.id().replaced(),
            "the old listener leaves the new socket alone"
        );
    }
}
