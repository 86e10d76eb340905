//! One client connection: read a frame (bounded in size and time), answer it, repeat until the
//! client closes, idles past `idle_timeout`, misbehaves, or the daemon shuts down. A client that
//! sends half a frame and waits is dropped after `request_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::debug;

use toolforge_nss_protocol::frame::FLAG_STALE;
use toolforge_nss_protocol::{
    Capabilities, DecodeError, ErrorCode, Header, Request, Response, HEADER_LEN, MAX_REQUEST_BODY,
};

use crate::admission::Caller;
use crate::directory::Directory;
use crate::resolver::{Reply, Resolver};

/// Receive buffer: holds the largest request frame.
const READ_BUF: usize = 4096;
const _: () = assert!(HEADER_LEN + MAX_REQUEST_BODY as usize <= READ_BUF);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

/// Why a connection ended early (logged at debug level).
enum End {
    Closed,
    Idle,
    SlowClient,
    Io(std::io::Error),
    Protocol(DecodeError),
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "closed by client"),
            End::Idle => write!(f, "idle timeout"),
            End::SlowClient => write!(f, "request or response timed out"),
            End::Io(e) => write!(f, "I/O error: {e}"),
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::Shutdown => write!(f, "daemon shutting down"),
        }
    }
}

fn error_frame(request_id: u32, code: ErrorCode, message: String) -> Vec<u8> {
    Response::Error { code, message }.encode(request_id, 0, Capabilities::default())
}

/// Reads one whole request frame into `buf` (bytes past it stay buffered for the next call).
/// Returns the header and the frame length; `Ok(None)` when the client closed between frames.
async fn read_frame(
    stream: &mut UnixStream,
    buf: &mut [u8; READ_BUF],
    have: &mut usize,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Header, usize)>, End> {
    if *have == 0 {
        // Between frames: the idle timeout applies.
        let n = tokio::select! {
            r = timeout(limits.idle_timeout, stream.read(&mut buf[..])) => r.map_err(|_| End::Idle)?.map_err(End::Io)?,
            _ = shutdown.changed() => return Err(End::Shutdown),
        };
        if n == 0 {
            return Ok(None);
        }
        *have = n;
    }
    // Inside a frame: the rest must follow within the request timeout.
    let header = timeout(limits.request_timeout, async {
        while *have < HEADER_LEN {
            match stream.read(&mut buf[*have..]).await {
                Ok(0) => return Err(End::Closed),
                Ok(n) => *have += n,
                Err(e) => return Err(End::Io(e)),
            }
        }
        let header = Header::decode(&buf[..HEADER_LEN], MAX_REQUEST_BODY).map_err(End::Protocol)?;
        let len = HEADER_LEN + header.body_len as usize;
        while *have < len {
            match stream.read(&mut buf[*have..]).await {
                Ok(0) => return Err(End::Closed),
                Ok(n) => *have += n,
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok((header, len))
    })
    .await
    .map_err(|_| End::SlowClient)??;
    Ok(Some(header))
}

/// Serves one connection to the end; its requests are charged to `uid` (SO_PEERCRED).
pub async fn serve<D: Directory>(
    mut stream: UnixStream,
    uid: u32,
    resolver: Arc<Resolver<D>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = [0u8; READ_BUF];
    let mut have = 0usize;
    let end = loop {
        let (header, len) =
            match read_frame(&mut stream, &mut buf, &mut have, &limits, &mut shutdown).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break End::Closed,
                Err(End::Protocol(e)) => {
                    let reply = error_frame(0, ErrorCode::BadRequest, e.to_string());
                    let _ = timeout(limits.request_timeout, stream.write_all(&reply)).await;
                    break End::Protocol(e);
                }
                Err(end) => break end,
            };
        let decoded = Request::decode(header.kind, &buf[HEADER_LEN..len]);
        buf.copy_within(len..have, 0);
        have -= len;
        if !header.version_supported() {
            let reply = error_frame(
                header.request_id,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {} is not supported", header.version),
            );
            let _ = timeout(limits.request_timeout, stream.write_all(&reply)).await;
            break End::Protocol(DecodeError::UnsupportedVersion(header.version));
        }
        let request = match decoded {
            Ok(r) => r,
            Err(DecodeError::UnknownKind(k)) => {
                // A newer module asking for something this daemon does not know: say so, keep going.
                let reply = error_frame(
                    header.request_id,
                    ErrorCode::UnknownRequest,
                    format!("unknown request kind {k:#x}"),
                );
                if timeout(limits.request_timeout, stream.write_all(&reply))
                    .await
                    .is_err()
                {
                    break End::SlowClient;
                }
                continue;
            }
            Err(e) => {
                let reply = error_frame(header.request_id, ErrorCode::BadRequest, e.to_string());
                let _ = timeout(limits.request_timeout, stream.write_all(&reply)).await;
                break End::Protocol(e);
            }
        };
        let caps = header.capabilities.intersect(Capabilities::ALL);
        let frame = match resolver.resolve(request, Caller::Peer(uid)).await {
            Reply::Body { kind, body, stale } => {
                let bytes = body.bytes();
                let flags = if stale && caps.contains(Capabilities::STALE_FLAG) {
                    FLAG_STALE
                } else {
                    0
                };
                let h = Header {
                    version: header.version,
                    flags,
                    capabilities: caps,
                    kind: kind as u16,
                    request_id: header.request_id,
                    body_len: bytes.len() as u32,
                };
                let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
                out.extend_from_slice(&h.encode());
                out.extend_from_slice(bytes);
                out
            }
            Reply::Message(m) => m.encode(header.request_id, 0, caps),
        };
        match timeout(limits.request_timeout, stream.write_all(&frame)).await {
            Err(_) => break End::SlowClient,
            Ok(Err(e)) => break End::Io(e),
            Ok(Ok(())) => {}
        }
    };
    if !matches!(end, End::Closed) {
        debug!(reason = %end, "connection ended");
    }
}
