//! One libnss_sss client: read a frame (16-byte header, body bounded by
//! `SSS_MAX_REQUEST_BODY`, the rest of a frame within `request_timeout`), answer it, repeat
//! until the client closes, idles past `idle_timeout` or the daemon shuts down. Every request
//! gets a reply: an unknown command or a malformed body gets an error status and the
//! connection stays usable; a frame whose length is out of bounds gets an error reply and then
//! the connection is closed (the stream cannot be re-synchronised).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::debug;

use toolforge_nss_protocol::sss::{
    self, status, SssDecodeError, SssHeader, SssRequest, SSS_HEADER_LEN, SSS_MAX_REQUEST_BODY,
};

use super::answer::Session;
use crate::connection::Limits;
use crate::directory::Directory;
use crate::resolver::Resolver;

/// Holds the largest request frame.
const READ_BUF: usize = SSS_HEADER_LEN + SSS_MAX_REQUEST_BODY as usize;

enum End {
    Closed,
    Idle,
    SlowClient,
    Io(std::io::Error),
    Framing(SssDecodeError),
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "closed by client"),
            End::Idle => write!(f, "idle timeout"),
            End::SlowClient => write!(f, "request or response timed out"),
            End::Io(e) => write!(f, "I/O error: {e}"),
            End::Framing(e) => write!(f, "framing error: {e}"),
            End::Shutdown => write!(f, "daemon shutting down"),
        }
    }
}

/// Reads one frame into `buf`; `Ok(None)` when the client closed between frames.
async fn read_frame(
    stream: &mut UnixStream,
    buf: &mut [u8; READ_BUF],
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(SssHeader, usize)>, (End, u32)> {
    // libnss_sss sends one request and waits for its reply: no pipelining to buffer.
    // Biased: a request already sent is read (and answered) even when shutdown has begun.
    let n = tokio::select! {
        biased;
        r = timeout(limits.idle_timeout, stream.read(&mut buf[..SSS_HEADER_LEN])) => {
            r.map_err(|_| (End::Idle, 0))?.map_err(|e| (End::Io(e), 0))?
        }
        _ = shutdown.changed() => return Err((End::Shutdown, 0)),
    };
    if n == 0 {
        return Ok(None);
    }
    let mut have = n;
    timeout(limits.request_timeout, async {
        while have < SSS_HEADER_LEN {
            match stream.read(&mut buf[have..SSS_HEADER_LEN]).await {
                Ok(0) => return Err((End::Closed, 0)),
                Ok(n) => have += n,
                Err(e) => return Err((End::Io(e), 0)),
            }
        }
        let raw_command = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let header = SssHeader::decode(&buf[..SSS_HEADER_LEN], SSS_MAX_REQUEST_BODY)
            .map_err(|e| (End::Framing(e), raw_command))?;
        let len = header.len as usize;
        stream
            .read_exact(&mut buf[SSS_HEADER_LEN..len])
            .await
            .map_err(|e| (End::Io(e), 0))?;
        Ok(Some((header, len)))
    })
    .await
    .map_err(|_| (End::SlowClient, 0))?
}

/// Serves one connection from peer `uid` to the end.
pub async fn serve<D: Directory>(
    mut stream: UnixStream,
    uid: u32,
    resolver: Arc<Resolver<D>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = [0u8; READ_BUF];
    let mut session = Session::new(uid);
    let end = loop {
        let (header, len) = match read_frame(&mut stream, &mut buf, &limits, &mut shutdown).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break End::Closed,
            Err((End::Framing(e), command)) => {
                // Answer before hanging up, so the client fails at once instead of waiting.
                let reply = sss::error_reply(command, status::EBADMSG);
                let _ = timeout(limits.request_timeout, stream.write_all(&reply)).await;
                break End::Framing(e);
            }
            Err((end, _)) => break end,
        };
        let reply = match SssRequest::decode(header.command, &buf[SSS_HEADER_LEN..len]) {
            Ok(request) => session.answer(&resolver, request).await,
            Err(SssDecodeError::UnknownCommand(c)) => {
                debug!(command = c, "sss: unknown command");
                sss::error_reply(c, status::ENOSYS)
            }
            Err(e) => {
                debug!(error = %e, "sss: bad request");
                sss::error_reply(header.command, status::EINVAL)
            }
        };
        match timeout(limits.request_timeout, stream.write_all(&reply)).await {
            Err(_) => break End::SlowClient,
            Ok(Err(e)) => break End::Io(e),
            Ok(Ok(())) => {}
        }
    };
    if !matches!(end, End::Closed) {
        debug!(uid, reason = %end, "sss: connection ended");
    }
}
