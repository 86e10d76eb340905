//! Talks to the daemon's socket directly with the protocol crate (no NSS in between), for
//! checking every map and for sending what the module never would.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use toolforge_nss_protocol::{
    Capabilities, Header, Request, Response, ResponseRef, HEADER_LEN, MAX_RESPONSE_BODY,
};

/// One request on a fresh connection; the decoded response and its header.
pub fn query_with_header(socket: &Path, req: &Request) -> (Header, Response) {
    let mut s = UnixStream::connect(socket).expect("connect to daemon");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(&req.encode(77, Capabilities::ALL))
        .expect("send");
    read_response(&mut s)
}

/// One request on a fresh connection.
pub fn query(socket: &Path, req: &Request) -> Response {
    query_with_header(socket, req).1
}

/// A persistent connection, as a long-running process keeps one.
pub struct Session {
    stream: UnixStream,
    next_id: u32,
}

impl Session {
    pub fn connect(socket: &Path) -> std::io::Result<Session> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Session { stream, next_id: 1 })
    }

    /// One request and its answer; an I/O error means the connection is gone.
    pub fn ask(&mut self, req: &Request) -> std::io::Result<(Header, Response)> {
        self.next_id = self.next_id.wrapping_add(1);
        self.stream
            .write_all(&req.encode(self.next_id, Capabilities::ALL))?;
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head)?;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let h = Header::decode(&head, MAX_RESPONSE_BODY).map_err(|e| bad(e.to_string()))?;
        let mut body = vec![0u8; h.body_len as usize];
        self.stream.read_exact(&mut body)?;
        let resp = ResponseRef::decode(h.kind, &body)
            .and_then(|r| r.to_owned())
            .map_err(|e| bad(e.to_string()))?;
        Ok((h, resp))
    }
}

/// Reads one response frame.
pub fn read_response(s: &mut UnixStream) -> (Header, Response) {
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).expect("response header");
    let h = Header::decode(&head, MAX_RESPONSE_BODY).expect("valid header");
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).expect("response body");
    let resp = ResponseRef::decode(h.kind, &body)
        .expect("valid body")
        .to_owned()
        .expect("utf-8");
    (h, resp)
}

/// Every entry of an enumeration, paging as the module does.
pub fn enumerate(socket: &Path, users: bool) -> Vec<Response> {
    let mut out = Vec::new();
    let (mut generation, mut cursor) = (0u64, 0u32);
    loop {
        let req = if users {
            Request::PwEnt { generation, cursor }
        } else {
            Request::GrEnt { generation, cursor }
        };
        match query(socket, &req) {
            Response::PasswdBatch {
                generation: g,
                next_cursor,
                entries,
            } => {
                out.extend(entries.into_iter().map(Response::Passwd));
                (generation, cursor) = (g, next_cursor);
            }
            Response::GroupBatch {
                generation: g,
                next_cursor,
                entries,
            } => {
                out.extend(entries.into_iter().map(Response::Group));
                (generation, cursor) = (g, next_cursor);
            }
            other => panic!("unexpected enumeration answer {other:?}"),
        }
        if cursor == toolforge_nss_protocol::message::END_OF_ENUMERATION {
            return out;
        }
    }
}

/// One admin request on the admin socket.
pub fn admin(
    socket: &Path,
    req: &toolforge_nss_protocol::admin::AdminRequest,
) -> Result<toolforge_nss_protocol::admin::AdminResponse, String> {
    let mut s =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // A refusing daemon answers and hangs up without reading: read its answer regardless.
    let written = s.write_all(&req.encode(5));
    let mut head = [0u8; HEADER_LEN];
    if s.read_exact(&mut head).is_err() {
        return Err(written.err().map_or("no answer".into(), |e| e.to_string()));
    }
    let h = Header::decode(&head, MAX_RESPONSE_BODY).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    toolforge_nss_protocol::admin::AdminResponse::decode(h.kind, &body)
}

/// Sends raw bytes and returns whatever comes back until the daemon closes or 2 s pass.
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}
