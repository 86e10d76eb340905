//! Takeover: a daemon started while another serves the same runtime directory takes over from
//! it instead of refusing, so that restarts and upgrades leave no gap.
//!
//! The new daemon (`take`, before it listens):
//! 1. finds the lookup socket answering, connects to the admin socket of the same config and
//!    sends `Handover` (its version and cache format);
//! 2. the running daemon stops publishing the cache file and saving its persisted cache (it
//!    waits for a publication or save under way), answers with its whole cache in the
//!    persisted-cache format, and keeps answering lookups from its sockets;
//! 3. the new daemon loads that cache (or, when it cannot read it, its persisted cache),
//!    publishes the cache file, binds its sockets under temporary names and, once all are
//!    bound, renames them over the old ones (the lookup socket last), then sends `Drain` on
//!    the same connection ([`Takeover::finish`]);
//! 4. the old daemon, when the connection brings `Drain` or ends, looks at its lookup socket's
//!    path: `Drain` and replaced by another inode, it drains (stops accepting, finishes the
//!    requests in flight, closes idle connections) and exits without publishing or saving
//!    again; still its own (the new daemon failed or was killed before it took the sockets),
//!    it resumes publishing and saving and carries on; replaced without `Drain` (the new
//!    daemon died after taking the sockets), it stops cleanly and exits 1, so that its
//!    supervisor starts a daemon again.
//!
//! Exactly one daemon publishes at any time: the old one stops before it answers, the new one
//! starts after it got the answer. A running daemon that does not know `Handover` (older
//! versions) answers with an error: the new daemon then refuses to start, as it did before
//! takeovers existed, and the old one keeps serving. If the old daemon dies during the
//! takeover, the new one starts as after a crash (persisted cache, stale socket replaced).
//!
//! Which phase this process is in is process-wide ([`lifecycle`]): publication and
//! persistence ask it before they write.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio::time::timeout;
use tracing::{error, info, warn};

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse, MAX_HANDOVER_BODY};
use toolforge_nss_protocol::{
    Capabilities, ErrorCode, Header, Response, HEADER_LEN, MAX_REQUEST_BODY,
};

use crate::directory::Directory;
use crate::persist;
use crate::resolver::Resolver;
use crate::server::SocketId;

/// How long either side waits for the other during a takeover.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where this daemon stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Publishing, saving, answering: the normal state.
    Serving,
    /// A new daemon asked for the cache and is starting: answer, but write nothing.
    HandingOver,
    /// The new daemon took the sockets: draining, then exiting. Never ready again.
    HandedOver,
    /// The new daemon took the sockets and died before it said it serves: stop cleanly (save
    /// the cache, the last one standing) and exit 1, so that the supervisor starts a daemon
    /// that owns the sockets again.
    Abandoned,
}

/// The process-wide phase, and the gate every publication and save holds while it writes.
pub struct Lifecycle {
    gate: Mutex<()>,
    phase: watch::Sender<Phase>,
}

/// This process's lifecycle.
pub fn lifecycle() -> &'static Lifecycle {
    static L: OnceLock<Lifecycle> = OnceLock::new();
    L.get_or_init(Lifecycle::new)
}

impl Lifecycle {
    fn new() -> Lifecycle {
        Lifecycle {
            gate: Mutex::new(()),
            phase: watch::Sender::new(Phase::Serving),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Permission to publish or save, held for the duration of the write; `None` while a
    /// takeover is under way or done.
    pub async fn may_write(&self) -> Option<MutexGuard<'_, ()>> {
        let guard = self.gate.lock().await;
        matches!(self.phase(), Phase::Serving | Phase::Abandoned).then_some(guard)
    }

    /// Enters `HandingOver` once no write is under way; `false` if not serving (a second
    /// takeover at the same time is refused).
    pub async fn begin_handover(&self) -> bool {
        let _guard = self.gate.lock().await;
        if self.phase() != Phase::Serving {
            return false;
        }
        self.phase.send_replace(Phase::HandingOver);
        true
    }

    /// Ends a takeover in `phase` (not `HandingOver`).
    pub fn end_handover(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Resolves once this daemon must stop serving: handed over, or abandoned.
    pub async fn must_stop(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx
            .wait_for(|p| matches!(p, Phase::HandedOver | Phase::Abandoned))
            .await;
    }

    /// Resolves once no takeover is under way (waits at most [`STEP_TIMEOUT`]).
    pub async fn settled(&self) {
        let mut rx = self.phase.subscribe();
        let _ = tokio::time::timeout(STEP_TIMEOUT, rx.wait_for(|p| *p != Phase::HandingOver)).await;
    }
}

/// A takeover under way on the new daemon's side: the connection to the old daemon.
pub struct Takeover {
    stream: UnixStream,
    /// The old daemon's version.
    pub version: String,
    /// Its cache, when it is in a format this daemon reads.
    pub cache: Option<Vec<u8>>,
    /// Its cache format (for the log when it is not ours).
    pub cache_format: u32,
}

/// What a starting daemon found.
pub enum Start {
    /// No daemon answers on the lookup socket.
    Fresh,
    /// One does, and handed its cache over.
    Takeover(Takeover),
    /// One did, and went away before it handed its cache over (killed during the takeover):
    /// start as after a crash.
    Orphaned,
}

fn io_context(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Starts a takeover if a daemon serves `lookup_socket`; its admin socket must be
/// `admin_socket`. `Err` means: do not start (the running daemon keeps serving).
pub fn take(lookup_socket: &Path, admin_socket: &Path) -> Result<Start, String> {
    if UnixStream::connect(lookup_socket).is_err() {
        return Ok(Start::Fresh);
    }
    info!(socket = %lookup_socket.display(), "a daemon is serving: asking it to hand over");
    match ask_handover(admin_socket) {
        Ok(t) => Ok(Start::Takeover(t)),
        Err(AskError::Refused(why)) => Err(format!(
            "another daemon is serving {} and did not hand over: {why} \
             (a version without takeovers cannot: stop it first)",
            lookup_socket.display()
        )),
        Err(AskError::Io(why)) => {
            // The old daemon may have died during the takeover: then start as after a crash.
            // Its sockets close one by one as it exits: give the lookup socket a moment.
            let gone = (0..20).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                UnixStream::connect(lookup_socket).is_err()
            });
            if gone {
                warn!(
                    error = %why,
                    "the running daemon went away during the takeover; starting as after a crash"
                );
                Ok(Start::Orphaned)
            } else {
                Err(format!(
                    "another daemon is serving {} but the takeover through {} failed: {why}",
                    lookup_socket.display(),
                    admin_socket.display()
                ))
            }
        }
    }
}

enum AskError {
    /// The daemon answered no.
    Refused(String),
    /// The exchange failed.
    Io(String),
}

fn read_frame(s: &mut UnixStream, max_body: u32) -> Result<(Header, Vec<u8>), String> {
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let h = Header::decode(&head, max_body).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((h, body))
}

fn ask_handover(admin_socket: &Path) -> Result<Takeover, AskError> {
    let path: PathBuf = admin_socket.to_owned();
    let mut s = UnixStream::connect(&path)
        .map_err(|e| AskError::Io(io_context("cannot connect to", &path, e)))?;
    let _ = s.set_read_timeout(Some(STEP_TIMEOUT));
    let _ = s.set_write_timeout(Some(STEP_TIMEOUT));
    let req = AdminRequest::Handover {
        version: env!("CARGO_PKG_VERSION").into(),
        cache_format: persist::FORMAT,
    };
    s.write_all(&req.encode(1))
        .map_err(|e| AskError::Io(io_context("cannot write to", &path, e)))?;
    let (h, body) = read_frame(&mut s, MAX_HANDOVER_BODY).map_err(AskError::Io)?;
    match AdminResponse::decode(h.kind, &body) {
        Ok(AdminResponse::HandedOver {
            version,
            cache_format,
            cache,
        }) => Ok(Takeover {
            stream: s,
            version,
            cache: (cache_format == persist::FORMAT).then_some(cache),
            cache_format,
        }),
        Ok(other) => Err(AskError::Refused(format!("unexpected answer {other:?}"))),
        Err(why) => Err(AskError::Refused(why)),
    }
}

impl Takeover {
    /// Tells the old daemon to drain (this daemon owns the sockets now); whether it said it
    /// drains. Blocking, bounded.
    pub fn finish(mut self) -> bool {
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        if self
            .stream
            .write_all(&AdminRequest::Drain.encode(2))
            .is_err()
        {
            return false;
        }
        matches!(
            read_frame(&mut self.stream, 64).map(|(h, b)| AdminResponse::decode(h.kind, &b)),
            Ok(Ok(AdminResponse::Done(1)))
        )
    }
}

/// The running daemon's side, on the admin connection that sent `Handover`: stop writing,
/// hand the cache over, wait for `Drain` (or the end of the connection), then drain if the
/// lookup socket `lookup` was replaced, or resume serving if not.
pub async fn give<D: Directory>(
    mut stream: tokio::net::UnixStream,
    resolver: Arc<Resolver<D>>,
    request_id: u32,
    lookup: &SocketId,
    new_version: String,
    new_format: u32,
) -> std::io::Result<()> {
    let life = lifecycle();
    if !life.begin_handover().await {
        let refused = Response::Error {
            code: ErrorCode::Busy,
            message: "a takeover is already under way".into(),
        }
        .encode(request_id, 0, Capabilities::default());
        return stream.write_all(&refused).await;
    }
    info!(
        new_version,
        new_cache_format = new_format,
        "a new daemon is taking over: handing the cache over; no more publishing or saving"
    );
    let r = resolver.clone();
    let cache = tokio::task::spawn_blocking(move || persist::encode(&r))
        .await
        .unwrap_or_default();
    let answer = AdminResponse::HandedOver {
        version: env!("CARGO_PKG_VERSION").into(),
        cache_format: persist::FORMAT,
        cache,
    }
    .encode(request_id);
    let sent = timeout(STEP_TIMEOUT, stream.write_all(&answer)).await;
    // Wait for `Drain` or the connection's end (the new daemon exited), with no time limit:
    // a new daemon that is merely slow (a slow disk, a stopped process) may still rename the
    // sockets and publish, so resuming on a timer could leave two daemons publishing. While
    // this waits, lookups are answered as usual; only publication and saving wait (a hung new
    // daemon is for its supervisor to kill, and its death ends the wait).
    let mut drain_id = None;
    if matches!(sent, Ok(Ok(()))) {
        let mut head = [0u8; HEADER_LEN];
        if stream.read_exact(&mut head).await.is_ok() {
            if let Ok(h) = Header::decode(&head, MAX_REQUEST_BODY) {
                let mut body = vec![0u8; h.body_len as usize];
                let read = timeout(STEP_TIMEOUT, stream.read_exact(&mut body)).await;
                if matches!(read, Ok(Ok(_)))
                    && AdminRequest::decode(h.kind, &body) == Ok(AdminRequest::Drain)
                {
                    drain_id = Some(h.request_id);
                }
            }
        }
    }
    let replaced = lookup.replaced();
    let phase = match (drain_id.is_some(), replaced) {
        (true, true) => {
            info!("handed over: the new daemon owns the sockets; draining");
            Phase::HandedOver
        }
        (_, false) => {
            warn!(
                asked_to_drain = drain_id.is_some(),
                "the new daemon did not take the sockets over; serving on"
            );
            // Publish what changed meanwhile.
            resolver.stats.change.notify_one();
            Phase::Serving
        }
        (false, true) => {
            error!("the new daemon took the sockets over and went away; stopping so that a daemon is started again");
            Phase::Abandoned
        }
    };
    life.end_handover(phase);
    if let Some(id) = drain_id {
        let _ = timeout(
            Duration::from_secs(2),
            stream
                .write_all(&AdminResponse::Done(u32::from(phase == Phase::HandedOver)).encode(id)),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_written_while_handing_over_and_one_takeover_at_a_time() {
        let life = Lifecycle::new();
        assert!(life.may_write().await.is_some());
        assert!(life.begin_handover().await);
        assert!(!life.begin_handover().await, "a second takeover is refused");
        assert!(life.may_write().await.is_none());
        life.end_handover(Phase::Serving);
        assert_eq!(life.phase(), Phase::Serving);
        assert!(life.may_write().await.is_some(), "resumed");
        // A write under way delays the handover until it is done.
        let guard = life.may_write().await.unwrap();
        let begin = life.begin_handover();
        tokio::pin!(begin);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut begin)
                .await
                .is_err(),
            "waits for the write"
        );
        drop(guard);
        assert!(begin.await);
        life.end_handover(Phase::HandedOver);
        assert_eq!(life.phase(), Phase::HandedOver);
        assert!(life.may_write().await.is_none(), "never again");
        tokio::time::timeout(Duration::from_secs(1), life.must_stop())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), life.settled())
            .await
            .unwrap();
    }

    #[test]
    fn no_daemon_means_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let start = take(&dir.path().join("socket"), &dir.path().join("admin.socket"));
        assert!(matches!(start, Ok(Start::Fresh)));
        // A daemon that answers on the lookup socket but has no admin socket here: refused.
        let _l = std::os::unix::net::UnixListener::bind(dir.path().join("socket")).unwrap();
        let refused = take(&dir.path().join("socket"), &dir.path().join("admin.socket"));
        let Err(why) = refused else {
            panic!("a daemon whose admin socket is elsewhere is not taken over")
        };
        assert!(why.contains("admin.socket"), "{why}");
    }
}
