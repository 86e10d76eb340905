//! Round trips for every message and "arbitrary bytes never panic" properties for every decoder.

use proptest::prelude::*;
use toolforge_nss_protocol::message::END_OF_ENUMERATION;
use toolforge_nss_protocol::*;

fn decode_response(frame: &[u8]) -> Result<Response, DecodeError> {
    let h = Header::decode(frame, MAX_RESPONSE_BODY)?;
    ResponseRef::decode(h.kind, &frame[HEADER_LEN..])?.to_owned()
}

fn decode_request(frame: &[u8]) -> Result<Request, DecodeError> {
    let h = Header::decode(frame, MAX_REQUEST_BODY)?;
    Request::decode(h.kind, &frame[HEADER_LEN..])
}

fn passwd(name: &str) -> Passwd {
    Passwd {
        name: name.into(),
        passwd: "x".into(),
        uid: 1234,
        gid: 500,
        gecos: "Alice Example".into(),
        dir: format!("/home/{name}"),
        shell: "/bin/bash".into(),
    }
}

fn group(name: &str, members: &[&str]) -> Group {
    Group {
        name: name.into(),
        passwd: "x".into(),
        gid: 50000,
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

#[test]
fn every_request_round_trips() {
    let all = [
        Request::GetPwNam("alice".into()),
        Request::GetPwUid(1234),
        Request::GetGrNam("wikidev".into()),
        Request::GetGrGid(500),
        Request::InitGroups("alice".into()),
        Request::PwEnt {
            generation: 0,
            cursor: 0,
        },
        Request::GrEnt {
            generation: 7,
            cursor: 99,
        },
    ];
    for req in all {
        let frame = req.encode(42, Capabilities::ALL);
        let h = Header::decode(&frame, MAX_REQUEST_BODY).unwrap();
        assert_eq!(h.request_id, 42);
        assert_eq!(h.version, PROTOCOL_VERSION);
        assert_eq!(h.body_len as usize, frame.len() - HEADER_LEN);
        assert_eq!(decode_request(&frame), Ok(req));
    }
}

#[test]
fn every_response_round_trips() {
    let all = [
        Response::Passwd(passwd("alice")),
        Response::Group(group("wikidev", &["alice", "bob"])),
        Response::Group(group("empty", &[])),
        Response::GroupIds(vec![500, 50000, 51000]),
        Response::GroupIds(vec![]),
        Response::NotFound,
        Response::Unavailable,
        Response::PasswdBatch {
            generation: 3,
            next_cursor: 2,
            entries: vec![passwd("a"), passwd("b")],
        },
        Response::GroupBatch {
            generation: 3,
            next_cursor: END_OF_ENUMERATION,
            entries: vec![group("g", &["a"])],
        },
        Response::Error {
            code: ErrorCode::UnsupportedVersion,
            message: "speak version 1".into(),
        },
    ];
    for resp in all {
        let frame = resp.encode(7, 0, Capabilities::default());
        assert_eq!(decode_response(&frame), Ok(resp));
    }
}

#[test]
fn encoded_len_helpers_match_the_encoder() {
    let p = passwd("alice");
    let mut out = Vec::new();
    Response::Passwd(p.clone()).encode_body(&mut out);
    assert_eq!(out.len(), Response::passwd_encoded_len(&p));
    let g = group("wikidev", &["alice", "bob"]);
    out.clear();
    Response::Group(g.clone()).encode_body(&mut out);
    assert_eq!(out.len(), Response::group_encoded_len(&g));
}

#[test]
fn batches_built_from_encoded_entries_equal_encoded_batches() {
    let entries = vec![passwd("a"), passwd("b")];
    let bodies: Vec<Vec<u8>> = entries
        .iter()
        .map(|p| {
            let mut b = Vec::new();
            Response::Passwd(p.clone()).encode_body(&mut b);
            b
        })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let mut built = Vec::new();
    toolforge_nss_protocol::message::encode_batch_body(&mut built, 9, 2, &refs);
    let mut direct = Vec::new();
    Response::PasswdBatch {
        generation: 9,
        next_cursor: 2,
        entries,
    }
    .encode_body(&mut direct);
    assert_eq!(built, direct);
}

#[test]
fn large_group_views_count_members_without_copying() {
    let members: Vec<String> = (0..5000).map(|i| format!("user{i}")).collect();
    let g = Group {
        members,
        ..group("project-big", &[])
    };
    let frame = Response::Group(g.clone()).encode(1, 0, Capabilities::default());
    let h = Header::decode(&frame, MAX_RESPONSE_BODY).unwrap();
    match ResponseRef::decode(h.kind, &frame[HEADER_LEN..]).unwrap() {
        ResponseRef::Group(view) => {
            assert_eq!(view.member_count(), 5000);
            assert_eq!(view.members().count(), 5000);
            assert_eq!(
                view.member_name_bytes(),
                g.members.iter().map(|m| m.len()).sum::<usize>()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hostile_bodies_are_refused() {
    // NUL inside a string.
    let mut body = Vec::new();
    Response::Passwd(passwd("alice")).encode_body(&mut body);
    body[2] = 0;
    assert_eq!(
        ResponseRef::decode(ResponseKind::Passwd as u16, &body),
        Err(DecodeError::NulInString)
    );
    // A member count that the body cannot hold.
    let mut body = Vec::new();
    Response::Group(group("g", &[])).encode_body(&mut body);
    let n = body.len();
    body[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ResponseRef::decode(ResponseKind::Group as u16, &body),
        Err(DecodeError::Truncated)
    );
    // Trailing bytes.
    assert_eq!(
        ResponseRef::decode(ResponseKind::NotFound as u16, &[1]),
        Err(DecodeError::TrailingBytes)
    );
    // Unknown kinds.
    assert_eq!(
        Request::decode(0x55, &[]),
        Err(DecodeError::UnknownKind(0x55))
    );
    // Oversized request bodies.
    assert!(matches!(
        Request::decode(1, &vec![b'a'; 4096]),
        Err(DecodeError::TooLarge(_))
    ));
}

fn arb_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

fn arb_passwd() -> impl Strategy<Value = Passwd> {
    (
        arb_string(),
        arb_string(),
        any::<u32>(),
        any::<u32>(),
        arb_string(),
        arb_string(),
        arb_string(),
    )
        .prop_map(|(name, passwd, uid, gid, gecos, dir, shell)| Passwd {
            name,
            passwd,
            uid,
            gid,
            gecos,
            dir,
            shell,
        })
}

fn arb_group() -> impl Strategy<Value = Group> {
    (
        arb_string(),
        arb_string(),
        any::<u32>(),
        prop::collection::vec("[a-z]{1,12}", 0..30),
    )
        .prop_map(|(name, passwd, gid, members)| Group {
            name,
            passwd,
            gid,
            members,
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        arb_passwd().prop_map(Response::Passwd),
        arb_group().prop_map(Response::Group),
        prop::collection::vec(any::<u32>(), 0..100).prop_map(Response::GroupIds),
        Just(Response::NotFound),
        Just(Response::Unavailable),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(arb_passwd(), 0..8)
        )
            .prop_map(|(generation, next_cursor, entries)| Response::PasswdBatch {
                generation,
                next_cursor,
                entries
            }),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(arb_group(), 0..8)
        )
            .prop_map(|(generation, next_cursor, entries)| Response::GroupBatch {
                generation,
                next_cursor,
                entries
            }),
        arb_string().prop_map(|message| Response::Error {
            code: ErrorCode::Busy,
            message
        }),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        arb_string().prop_map(Request::GetPwNam),
        arb_string().prop_map(Request::GetGrNam),
        arb_string().prop_map(Request::InitGroups),
        any::<u32>().prop_map(Request::GetPwUid),
        any::<u32>().prop_map(Request::GetGrGid),
        (any::<u64>(), any::<u32>())
            .prop_map(|(generation, cursor)| Request::PwEnt { generation, cursor }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(generation, cursor)| Request::GrEnt { generation, cursor }),
    ]
}

proptest! {
    #[test]
    fn responses_round_trip(resp in arb_response(), id in any::<u32>()) {
        let frame = resp.encode(id, 0, Capabilities::ALL);
        prop_assert_eq!(decode_response(&frame), Ok(resp));
    }

    #[test]
    fn requests_round_trip(req in arb_request(), id in any::<u32>()) {
        let frame = req.encode(id, Capabilities::ALL);
        prop_assert_eq!(decode_request(&frame), Ok(req));
    }

    #[test]
    fn arbitrary_bytes_never_panic(kind in any::<u16>(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Header::decode(&body, MAX_RESPONSE_BODY);
        let _ = Request::decode(kind, &body);
        // Whatever decoded must be walkable.
        if let Ok(ResponseRef::Group(g)) = ResponseRef::decode(kind, &body) {
            let _ = g.members().count();
        }
        let _ = ResponseRef::decode(0x80 | (kind & 0x0f), &body);
    }

    #[test]
    fn truncated_frames_are_refused(resp in arb_response(), cut in any::<prop::sample::Index>()) {
        let frame = resp.encode(1, 0, Capabilities::ALL);
        let body = &frame[HEADER_LEN..];
        if !body.is_empty() {
            let at = cut.index(body.len());
            prop_assert!(ResponseRef::decode(resp.kind() as u16, &body[..at]).is_err());
        }
    }
}
