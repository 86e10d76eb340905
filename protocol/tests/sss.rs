//! SSSD's NSS client protocol: round trips and "arbitrary bytes never panic" properties for
//! every decoder (the daemon decodes requests from untrusted containers).

use proptest::prelude::*;
use toolforge_nss_protocol::sss::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..64)
}

fn arb_request() -> impl Strategy<Value = SssRequest> {
    prop_oneof![
        any::<u32>().prop_map(SssRequest::GetVersion),
        name().prop_map(SssRequest::GetPwNam),
        any::<u32>().prop_map(SssRequest::GetPwUid),
        Just(SssRequest::SetPwEnt),
        any::<u32>().prop_map(SssRequest::GetPwEnt),
        Just(SssRequest::EndPwEnt),
        name().prop_map(SssRequest::GetGrNam),
        any::<u32>().prop_map(SssRequest::GetGrGid),
        Just(SssRequest::SetGrEnt),
        any::<u32>().prop_map(SssRequest::GetGrEnt),
        Just(SssRequest::EndGrEnt),
        name().prop_map(SssRequest::InitGr),
    ]
}

fn field() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..24)
}

proptest! {
    #[test]
    fn requests_round_trip(req in arb_request()) {
        let frame = req.encode();
        let h = SssHeader::decode(&frame, SSS_MAX_REQUEST_BODY).unwrap();
        prop_assert_eq!(h.len as usize, frame.len());
        prop_assert_eq!(SssRequest::decode(h.command, &frame[SSS_HEADER_LEN..]), Ok(req));
    }

    #[test]
    fn request_decoder_never_panics(cmd in prop_oneof![0u32..0x40, any::<u32>()],
                                    body in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = SssRequest::decode(cmd, &body);
    }

    #[test]
    fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(h) = SssHeader::decode(&bytes, SSS_MAX_REQUEST_BODY) {
            prop_assert!(h.body_len() <= SSS_MAX_REQUEST_BODY as usize);
        }
    }

    #[test]
    fn reply_decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = reply::passwds(&body);
        let _ = reply::groups(&body);
        let _ = reply::gids(&body);
        let _ = reply::version(&body);
    }

    #[test]
    fn group_replies_round_trip(gid in any::<u32>(), n in field(), p in field(),
                                members in proptest::collection::vec(
                                    proptest::collection::vec(1u8..=255, 1..12), 0..40)) {
        let g = SssGroup {
            gid,
            name: &n,
            passwd: &p,
            members: members.iter().map(Vec::as_slice).collect(),
        };
        let mut b = ReplyBuilder::new(SssCommand::GetGrEnt);
        b.group(&g);
        b.group(&g);
        let frame = b.finish().unwrap();
        let got = reply::groups(&frame[SSS_HEADER_LEN..]).unwrap();
        prop_assert_eq!(got, vec![g.clone(), g]);
    }

    #[test]
    fn passwd_and_gid_replies_round_trip(uid in any::<u32>(), gid in any::<u32>(),
                                         f in proptest::collection::vec(field(), 5),
                                         gids in proptest::collection::vec(any::<u32>(), 0..50)) {
        let p = SssPasswd { uid, gid, name: &f[0], passwd: &f[1], gecos: &f[2], dir: &f[3], shell: &f[4] };
        let mut b = ReplyBuilder::new(SssCommand::GetPwUid);
        b.passwd(&p);
        let frame = b.finish().unwrap();
        prop_assert_eq!(reply::passwds(&frame[SSS_HEADER_LEN..]).unwrap(), vec![p]);
        let mut b = ReplyBuilder::new(SssCommand::InitGr);
        for g in &gids {
            b.gid(*g);
        }
        let frame = b.finish().unwrap();
        prop_assert_eq!(frame.len(), SSS_HEADER_LEN + 8 + 4 * gids.len());
        prop_assert_eq!(reply::gids(&frame[SSS_HEADER_LEN..]).unwrap(), gids);
    }

    #[test]
    fn truncated_replies_are_refused(gids in proptest::collection::vec(any::<u32>(), 1..20), cut in 1usize..4) {
        let mut b = ReplyBuilder::new(SssCommand::InitGr);
        for g in &gids {
            b.gid(*g);
        }
        let frame = b.finish().unwrap();
        prop_assert!(reply::gids(&frame[SSS_HEADER_LEN..frame.len() - cut]).is_err());
    }
}
