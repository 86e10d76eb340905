//! One exchange with the daemon: send a request frame, read the response frame, all within a
//! deadline. A reused connection that fails is retried once on a fresh one; then the daemon
//! counts as down. A full listen backlog or a `Busy` answer is retried after a short,
//! growing pause while the budget lasts. Every byte read is checked by the protocol crate
//! before it is used.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU32, Ordering};

use toolforge_nss_protocol::{
    Capabilities, ErrorCode, Header, Request, ResponseRef, HEADER_LEN, MAX_RESPONSE_BODY,
};

use crate::breaker;
use crate::clock::Deadline;
use crate::connection::{self, Conn, ConnectError};
use crate::settings;

/// Why no answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Disabled in this process (the daemon's own environment).
    Disabled,
    /// No daemon (missing socket, refused, or the breaker says so).
    Down,
    /// The budget ran out.
    Timeout,
    /// The connection broke.
    Broken,
    /// The daemon sent something that is not a valid frame.
    Malformed,
}

/// A response frame.
#[derive(Debug)]
pub struct Reply {
    pub header: Header,
    pub body: Vec<u8>,
}

static NEXT_REQUEST_ID: AtomicU32 = AtomicU32::new(1);

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Waits until `fd` is ready for `events` or the deadline passes.
fn wait(fd: c_int, events: libc::c_short, deadline: &Deadline) -> Result<(), Failure> {
    loop {
        let ms = deadline.remaining_ms();
        if ms <= 0 {
            return Err(Failure::Timeout);
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            0 => return Err(Failure::Timeout),
            n if n > 0 => return Ok(()),
            _ if errno() == libc::EINTR => continue,
            _ => return Err(Failure::Broken),
        }
    }
}

fn send_all(fd: c_int, mut data: &[u8], deadline: &Deadline) -> Result<(), Failure> {
    while !data.is_empty() {
        // SAFETY: data is a valid slice; MSG_NOSIGNAL keeps a closed peer from raising SIGPIPE.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            data = data.get(n as usize..).unwrap_or(&[]);
            continue;
        }
        match errno() {
            libc::EINTR => {}
            libc::EAGAIN => wait(fd, libc::POLLOUT, deadline)?,
            _ => return Err(Failure::Broken),
        }
    }
    Ok(())
}

fn recv_exact(fd: c_int, buf: &mut [u8], deadline: &Deadline) -> Result<(), Failure> {
    let mut got = 0;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or(&mut []);
        // SAFETY: rest is a valid writable slice.
        let n = unsafe { libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            got += n as usize;
            continue;
        }
        if n == 0 {
            return Err(Failure::Broken);
        }
        match errno() {
            libc::EINTR => {}
            libc::EAGAIN => wait(fd, libc::POLLIN, deadline)?,
            _ => return Err(Failure::Broken),
        }
    }
    Ok(())
}

/// Bytes read with the first `recv`: most answers fit, so one wakeup and one syscall.
const FIRST_READ: usize = 2048;

fn exchange(
    conn: &Conn,
    frame: &[u8],
    request_id: u32,
    deadline: &Deadline,
) -> Result<Reply, Failure> {
    let fd = conn.fd();
    send_all(fd, frame, deadline)?;
    // The daemon answers one request with one frame and sends nothing unasked, so whatever
    // arrives belongs to this answer.
    let mut first = [0u8; FIRST_READ];
    wait(fd, libc::POLLIN, deadline)?;
    let mut got = 0;
    while got < HEADER_LEN {
        let rest = first.get_mut(got..).unwrap_or(&mut []);
        // SAFETY: rest is a valid writable slice.
        let n = unsafe { libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            0 => return Err(Failure::Broken),
            n if n > 0 => got += n as usize,
            _ => match errno() {
                libc::EINTR => {}
                libc::EAGAIN => wait(fd, libc::POLLIN, deadline)?,
                _ => return Err(Failure::Broken),
            },
        }
    }
    let head = first.get(..HEADER_LEN).ok_or(Failure::Malformed)?;
    let header = Header::decode(head, MAX_RESPONSE_BODY).map_err(|_| Failure::Malformed)?;
    // A frame of a version this module does not speak is not read, whatever it says.
    if !header.version_supported() {
        return Err(Failure::Malformed);
    }
    let total = HEADER_LEN + header.body_len as usize;
    if got > total {
        return Err(Failure::Malformed);
    }
    let mut body = vec![0u8; header.body_len as usize];
    let already = first.get(HEADER_LEN..got).unwrap_or(&[]);
    let (head_part, tail) = body.split_at_mut(already.len());
    head_part.copy_from_slice(already);
    recv_exact(fd, tail, deadline)?;
    // An error frame about our version or request may carry id 0 (sent before decoding).
    if header.request_id != request_id && header.request_id != 0 {
        return Err(Failure::Malformed);
    }
    Ok(Reply { header, body })
}

/// First pause before another try when the daemon is busy; doubled up to [`BACKOFF_MAX_MS`].
const BACKOFF_FIRST_MS: u64 = 2;
const BACKOFF_MAX_MS: u64 = 50;

/// Sends `req` and returns the daemon's answer within `budget_ms`. A full listen backlog
/// (EAGAIN on connect) or a `Busy` answer is tried again after a short pause (2, 4, 8 ...
/// 50 ms) while the budget lasts.
pub fn call(req: &Request, budget_ms: u64) -> Result<Reply, Failure> {
    let s = settings::get();
    if s.disabled {
        return Err(Failure::Disabled);
    }
    let Some(path) = s.socket_path.as_deref() else {
        return Err(Failure::Down);
    };
    if breaker::is_open() {
        return Err(Failure::Down);
    }
    let deadline = Deadline::after_ms(budget_ms);
    let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let frame = req.encode(request_id, Capabilities::ALL);
    let mut pause = BACKOFF_FIRST_MS;
    loop {
        match attempt(path, &frame, request_id, &deadline) {
            Err(Attempt::Busy) => {
                if i64::from(deadline.remaining_ms()) <= pause as i64 {
                    return Err(Failure::Timeout);
                }
                sleep_ms(pause);
                pause = (pause * 2).min(BACKOFF_MAX_MS);
            }
            Err(Attempt::Failed(f)) => return Err(f),
            Ok(reply) => return Ok(reply),
        }
    }
}

enum Attempt {
    /// Backlog full or a `Busy` answer: try again shortly.
    Busy,
    Failed(Failure),
}

fn is_busy(reply: &Reply) -> bool {
    matches!(
        ResponseRef::decode(reply.header.kind, &reply.body),
        Ok(ResponseRef::Error {
            code: ErrorCode::Busy,
            ..
        })
    )
}

/// Whether a `Busy` error frame waits on a connection whose send failed.
fn busy_pending(conn: &Conn) -> bool {
    let mut buf = [0u8; 512];
    // SAFETY: buf is a valid writable buffer; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            conn.fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let Some(got) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else {
        return false;
    };
    let Some(head) = got.get(..HEADER_LEN) else {
        return false;
    };
    let Ok(header) = Header::decode(head, MAX_RESPONSE_BODY) else {
        return false;
    };
    let body = got.get(HEADER_LEN..HEADER_LEN + header.body_len as usize);
    body.is_some_and(|body| {
        is_busy(&Reply {
            header,
            body: body.to_vec(),
        })
    })
}

fn sleep_ms(ms: u64) {
    // poll with no fds: a sleep that is not a cancellation problem (cancellation is disabled
    // in every export) and needs no newer glibc symbol.
    // SAFETY: no fds; only a timeout.
    unsafe { libc::poll(std::ptr::null_mut(), 0, ms.min(i32::MAX as u64) as i32) };
}

/// One try: the cached connection (retried once on a fresh one if it broke), or a fresh one.
fn attempt(
    path: &[u8],
    frame: &[u8],
    request_id: u32,
    deadline: &Deadline,
) -> Result<Reply, Attempt> {
    if let Some(conn) = connection::take() {
        match exchange(&conn, frame, request_id, deadline) {
            Ok(reply) if is_busy(&reply) => return Err(Attempt::Busy),
            Ok(reply) => {
                connection::give_back(conn);
                return Ok(reply);
            }
            // A cached connection the daemon closed (idle timeout, restart): try a fresh one.
            Err(Failure::Broken) => drop(conn),
            Err(e) => return Err(Attempt::Failed(fail(e))),
        }
    }
    let conn = Conn::connect(path).map_err(|e| match e {
        ConnectError::Missing | ConnectError::Refused => {
            breaker::trip(breaker::DOWN_INTERVAL_MS);
            Attempt::Failed(Failure::Down)
        }
        ConnectError::Busy => Attempt::Busy,
        ConnectError::Untrusted | ConnectError::Other(_) => Attempt::Failed(Failure::Down),
    })?;
    match exchange(&conn, frame, request_id, deadline) {
        // The daemon hangs up after a `Busy` answer: `conn` is dropped.
        Ok(reply) if is_busy(&reply) => Err(Attempt::Busy),
        // It may have answered `Busy` and hung up before our request went out.
        Err(Failure::Broken) if busy_pending(&conn) => Err(Attempt::Busy),
        Ok(reply) => {
            breaker::reset();
            connection::give_back(Box::new(conn));
            Ok(reply)
        }
        Err(e) => Err(Attempt::Failed(fail(e))),
    }
}

fn fail(e: Failure) -> Failure {
    match e {
        Failure::Timeout | Failure::Malformed => breaker::trip(breaker::SICK_INTERVAL_MS),
        Failure::Broken => breaker::trip(breaker::DOWN_INTERVAL_MS),
        Failure::Disabled | Failure::Down => {}
    }
    e
}
