//! Privilege separation: the lookup socket only looks up; the admin socket (status,
//! invalidate, dump) sits in a 0700 directory, is 0600, and answers uid 0 only; the daemon
//! runs unprivileged after binding; an admin directory others can enter refuses the start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse, Scope};
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{admin, query, raw_exchange};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;

use crate::env::shared;

const NOBODY: u32 = 65534;

fn text(r: Result<AdminResponse, String>) -> String {
    match r {
        Ok(AdminResponse::Text(t)) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_lookup_socket_refuses_admin_requests() {
    let env = shared(Schema::Rfc2307);
    for req in [
        AdminRequest::Status,
        AdminRequest::Invalidate(Scope::All),
        AdminRequest::Dump,
    ] {
        let answer = raw_exchange(&env.daemon.socket(), &req.encode(1));
        let err =
            AdminResponse::decode(u16::from_le_bytes([answer[12], answer[13]]), &answer[24..])
                .unwrap_err();
        assert!(err.contains("unknown request kind"), "{req:?}: {err}");
    }
    assert!(matches!(
        query(&env.daemon.socket(), &Request::GetGrNam("wikidev".into())),
        Response::Group(_)
    ));
}

#[test]
fn status_invalidate_and_dump_for_root() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let (sock, adm) = (d.socket(), d.admin_socket());
    let dir_mode = std::fs::metadata(adm.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let sock_mode = std::fs::metadata(&adm).unwrap().permissions().mode() & 0o777;
    assert_eq!((dir_mode, sock_mode), (0o700, 0o600));

    let user = env.fixture.developer(true);
    let needle = format!("(uid={})", user.name);
    let searches = || env.slapd.searches_containing(&needle);
    query(&sock, &Request::GetPwNam(user.name.clone()));
    query(&sock, &Request::InitGroups(user.name.clone()));
    query(&sock, &Request::GetGrNam("project-p001".into()));
    let status = text(admin(&adm, &AdminRequest::Status));
    for key in [
        "version: ",
        "uptime_secs: ",
        "directory: online",
        "server_in_use: ldap://127.0.0.1",
        "cache_entries: passwd_by_name=1",
        "hit_ratio: ",
    ] {
        assert!(status.contains(key), "{key} in\n{status}");
    }
    let dump = text(admin(&adm, &AdminRequest::Dump));
    assert!(
        dump.contains(&format!("passwd name={} uid={}", user.name, user.uid)),
        "{dump}"
    );

    let before = searches();
    query(&sock, &Request::GetPwNam(user.name.clone()));
    assert_eq!(searches(), before, "cached");
    assert_eq!(
        admin(
            &adm,
            &AdminRequest::Invalidate(Scope::User(user.name.clone()))
        ),
        Ok(AdminResponse::Done(2))
    );
    query(&sock, &Request::GetPwNam(user.name.clone()));
    assert_eq!(
        searches(),
        before + 2,
        "asked again after invalidation (two user bases)"
    );
    assert!(
        matches!(admin(&adm, &AdminRequest::Invalidate(Scope::Group("project-p001".into()))), Ok(AdminResponse::Done(n)) if n >= 1)
    );
    assert!(
        matches!(admin(&adm, &AdminRequest::Invalidate(Scope::All)), Ok(AdminResponse::Done(n)) if n >= 1)
    );
    assert!(text(admin(&adm, &AdminRequest::Status))
        .contains("cache_entries: passwd_by_name=0 passwd_by_uid=0 group_by_name=0"));
}

#[test]
fn non_root_cannot_reach_or_use_the_admin_socket() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let adm = d.admin_socket();
    let as_nobody = |expect: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "admin::child_admin_as_nobody",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("TF_ADMIN", &adm)
            .env("TF_EXPECT", expect)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_nobody("unreachable");
    // Even with the directory and socket opened up by mistake, SO_PEERCRED says no.
    std::fs::set_permissions(
        adm.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&adm, std::fs::Permissions::from_mode(0o666)).unwrap();
    as_nobody("refused");
    assert!(d.log().contains("admin request refused: not root"));
}

#[test]
#[ignore = "runs as uid 65534 in a child process started by non_root_cannot_reach_or_use_the_admin_socket"]
fn child_admin_as_nobody() {
    let adm = std::path::PathBuf::from(std::env::var("TF_ADMIN").unwrap());
    let r = admin(&adm, &AdminRequest::Invalidate(Scope::All));
    match std::env::var("TF_EXPECT").unwrap().as_str() {
        "unreachable" => assert!(
            matches!(&r, Err(e) if e.contains("Permission denied")),
            "{r:?}"
        ),
        _ => assert!(
            matches!(&r, Err(e) if e.contains("admin requests need uid 0")),
            "{r:?}"
        ),
    }
}

#[test]
fn the_daemon_runs_unprivileged_after_binding() {
    let env = shared(Schema::Rfc2307);
    let mut d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "run_as_uid = 65534\n");
    // The socket accepts connections from its bind on; the switch follows a moment later.
    assert!(d.wait_for_log("running unprivileged", Duration::from_secs(5)));
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), ["65534"; 4]);
    assert_eq!(ids("Gid:"), ["65534"; 4]);
    assert_eq!(ids("Groups:"), Vec::<String>::new());
    assert!(matches!(
        query(&d.socket(), &Request::GetGrNam("wikidev".into())),
        Response::Group(_)
    ));
    assert!(
        text(admin(&d.admin_socket(), &AdminRequest::Status)).contains("directory: online"),
        "root still administers it"
    );
    let map = std::fs::metadata(d.runtime_dir().join("cache.map")).unwrap();
    assert_eq!(
        (map.uid(), map.mode() & 0o777),
        (65534, 0o644),
        "the cache file is the unprivileged daemon's, readable by all"
    );
    assert!(d.stop());
    assert!(
        d.log().contains("cache persisted"),
        "the cache dir stayed writable:\n{}",
        d.log()
    );
    assert_eq!(
        std::fs::metadata(d.cache_dir().join("cache"))
            .unwrap()
            .uid(),
        NOBODY
    );
    assert!(
        !d.socket().exists(),
        "the unprivileged daemon removed its socket"
    );
}

#[test]
fn an_admin_dir_others_can_enter_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("admin");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new(toolforge_nss_tests::paths::daemon_bin())
        .arg("--config")
        .arg({
            let p = dir.path().join("c.toml");
            std::fs::write(
                &p,
                format!(
                    "[ldap]\nuri = [\"ldap://127.0.0.1:1\"]\nbase = \"dc=x\"\n[daemon]\nruntime_dir = {:?}\nadmin_dir = {:?}\ncache_dir = {:?}\n",
                    dir.path().join("run").display().to_string(),
                    open.display().to_string(),
                    dir.path().join("cache").display().to_string()
                ),
            )
            .unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!status.status.success());
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        err.contains("daemon.admin_dir") && err.contains("0755") && err.contains("0700"),
        "{err}"
    );
}
