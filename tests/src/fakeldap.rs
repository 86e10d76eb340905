//! A tiny fake LDAP server on loopback, for what a real slapd will not do on demand: answer
//! every search with a chosen result code (busy, unavailable, ...), or never answer some
//! searches while still answering a root DSE read. It speaks just enough BER: binds succeed,
//! searches get a `SearchResultDone`, abandons and unbinds are counted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server answers to one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `SearchResultDone` with this result code.
    Code(u8),
    /// Nothing, ever.
    Silent,
}

/// Decides the answer to a search from its base DN and its raw filter bytes.
pub type Behaviour = Arc<dyn Fn(&str, &[u8]) -> Answer + Send + Sync>;

#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub binds: AtomicU64,
    pub searches: AtomicU64,
    pub abandons: AtomicU64,
}

pub struct FakeLdap {
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

fn read_len(s: &mut impl Read) -> std::io::Result<usize> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b[0] < 0x80 {
        return Ok(b[0] as usize);
    }
    let n = (b[0] & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err(std::io::Error::other("unsupported BER length"));
    }
    let mut v = 0usize;
    for _ in 0..n {
        s.read_exact(&mut b)?;
        v = (v << 8) | b[0] as usize;
    }
    Ok(v)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// An `LDAPResult` of `op_tag` (0x61 bind, 0x65 search done) for message `msgid` (its INTEGER
/// TLV as received).
fn result(msgid_tlv: &[u8], op_tag: u8, rc: u8, text: &str) -> Vec<u8> {
    let mut body = tlv(0x0a, &[rc]);
    body.extend(tlv(0x04, b""));
    body.extend(tlv(0x04, text.as_bytes()));
    let mut msg = msgid_tlv.to_vec();
    msg.extend(tlv(op_tag, &body));
    tlv(0x30, &msg)
}

fn serve(mut s: TcpStream, behaviour: Behaviour, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut tag = [0u8; 1];
        match s.read_exact(&mut tag) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(len) = read_len(&mut s) else { return };
        let mut msg = vec![0u8; len];
        if tag[0] != 0x30 || s.read_exact(&mut msg).is_err() || msg.len() < 3 || msg[0] != 0x02 {
            return;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let id_end = 2 + msg[1] as usize;
        let (msgid, rest) = msg.split_at(id_end.min(msg.len()));
        let Some(&op) = rest.first() else { return };
        let reply = match op {
            0x60 => {
                counters.binds.fetch_add(1, Ordering::Relaxed);
                Some(result(msgid, 0x61, 0, ""))
            }
            0x63 => {
                counters.searches.fetch_add(1, Ordering::Relaxed);
                // The base DN: the first OCTET STRING inside the request.
                let mut r = &rest[1..];
                let _ = read_len(&mut r);
                let base = if r.first() == Some(&0x04) {
                    let mut rr = &r[1..];
                    let n = read_len(&mut rr).unwrap_or(0).min(rr.len());
                    String::from_utf8_lossy(&rr[..n]).into_owned()
                } else {
                    String::new()
                };
                match behaviour(&base, rest) {
                    Answer::Code(rc) => Some(result(msgid, 0x65, rc, "fake server says so")),
                    Answer::Silent => None,
                }
            }
            0x50 => {
                counters.abandons.fetch_add(1, Ordering::Relaxed);
                None
            }
            0x42 => return,
            _ => None,
        };
        if let Some(r) = reply {
            if s.write_all(&r).is_err() {
                return;
            }
        }
    }
}

impl FakeLdap {
    pub fn start(behaviour: impl Fn(&str, &[u8]) -> Answer + Send + Sync + 'static) -> FakeLdap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake ldap");
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Behaviour = Arc::new(behaviour);
        {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let (b, c, st) = (behaviour.clone(), counters.clone(), stop.clone());
                    std::thread::spawn(move || serve(conn, b, c, st));
                }
            });
        }
        FakeLdap {
            port,
            counters,
            stop,
        }
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeLdap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Whether a raw search request carries `needle` (a filter value, say).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
