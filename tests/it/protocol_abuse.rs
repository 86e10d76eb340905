//! What a hostile container can send the daemon directly: garbage, oversized frames, unknown
//! versions and kinds, half frames, injection attempts. The daemon answers or hangs up, never
//! builds a query from a bad name, and keeps serving everyone else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::{
    Capabilities, ErrorCode, Header, Request, Response, PROTOCOL_VERSION,
};
use toolforge_nss_tests::client::{query, raw_exchange, read_response};
use toolforge_nss_tests::fixture::Schema;

use crate::env::shared;

fn frame(version: u16, kind: u16, body_len: u32, body: &[u8]) -> Vec<u8> {
    let h = Header {
        version,
        flags: 0,
        capabilities: Capabilities::ALL,
        kind,
        request_id: 9,
        body_len,
    };
    let mut v = h.encode().to_vec();
    v.extend_from_slice(body);
    v
}

fn error_code(bytes: &[u8]) -> Option<ErrorCode> {
    let h = Header::decode(bytes, u32::MAX).ok()?;
    match toolforge_nss_protocol::ResponseRef::decode(h.kind, bytes.get(24..)?).ok()? {
        toolforge_nss_protocol::ResponseRef::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[test]
fn garbage_oversized_and_unknown_frames() {
    let env = shared(Schema::Rfc2307);
    let sock = env.daemon.socket();
    // Garbage: an error frame, then the daemon hangs up.
    assert_eq!(
        error_code(&raw_exchange(&sock, b"GET / HTTP/1.1\r\n\r\n\0\0\0\0\0\0")),
        Some(ErrorCode::BadRequest)
    );
    // A declared body of 1 MiB is refused from the header alone.
    assert_eq!(
        error_code(&raw_exchange(
            &sock,
            &frame(PROTOCOL_VERSION, 1, 1 << 20, b"")
        )),
        Some(ErrorCode::BadRequest)
    );
    // A version from the future gets a clear error.
    assert_eq!(
        error_code(&raw_exchange(&sock, &frame(99, 1, 0, b""))),
        Some(ErrorCode::UnsupportedVersion)
    );
    // An unknown request kind is answered and the connection stays usable.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&frame(PROTOCOL_VERSION, 0x7777, 0, b""))
        .unwrap();
    let (_, resp) = read_response(&mut s);
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::UnknownRequest,
                ..
            }
        ),
        "{resp:?}"
    );
    s.write_all(&Request::GetGrNam("wikidev".into()).encode(10, Capabilities::ALL))
        .unwrap();
    assert!(matches!(read_response(&mut s).1, Response::Group(_)));
    // Everyone else is still served.
    assert!(matches!(
        query(&sock, &Request::GetGrNam("wikidev".into())),
        Response::Group(_)
    ));
}

#[test]
fn a_half_frame_is_dropped_after_the_request_timeout() {
    let env = shared(Schema::Rfc2307);
    let mut s = UnixStream::connect(env.daemon.socket()).unwrap();
    s.write_all(&Request::GetPwNam("someone".into()).encode(1, Capabilities::ALL)[..10])
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "closed after request_timeout (1 s), took {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "not before it: {waited:?}"
    );
}

#[test]
fn injection_names_sent_directly_build_no_query() {
    let env = shared(Schema::Rfc2307);
    let sock = env.daemon.socket();
    let before = env.slapd.search_filters().len();
    let long = "b".repeat(255 + 1);
    for name in [
        "*",
        "*)(uid=*",
        "a\\00b",
        "a\0b",
        "x)(|(objectClass=*)",
        "é",
        long.as_str(),
    ] {
        for req in [
            Request::GetPwNam(name.into()),
            Request::GetGrNam(name.into()),
            Request::InitGroups(name.into()),
        ] {
            let resp = query(&sock, &req);
            assert!(
                resp == Response::NotFound
                    || matches!(
                        resp,
                        Response::Error {
                            code: ErrorCode::BadRequest,
                            ..
                        }
                    ),
                "{req:?} -> {resp:?}"
            );
        }
    }
    assert_eq!(
        env.slapd.search_filters().len(),
        before,
        "no search was sent for any of them"
    );
    // Non-UTF-8 bytes in a name field.
    let body = [2u8, 0, 0xff, 0xfe];
    let bad = frame(PROTOCOL_VERSION, 1, body.len() as u32, &body);
    assert_eq!(
        error_code(&raw_exchange(&sock, &bad)),
        Some(ErrorCode::BadRequest)
    );
}
