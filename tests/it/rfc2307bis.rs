//! RFC 2307bis membership as SSSD resolves it, on the Toolforge-shaped directory: member DNs
//! that are not `uid=NAME,...` (a `cn=` user), a member DN spelled in other case, a DN that
//! names no entry, groups nested three deep (two levels followed, SSSD's default), in member
//! lists and in initgroups; names held by two entries refused and logged with both DNs;
//! search references skipped and logged once per base.
//!
//! The expectations are SSSD 2.8's answers on the same data with a fresh cache, except where
//! tests/src/toolforge.rs says why not
//! ([`toolforge_nss_tests::toolforge::Toolforge::rfc2307bis_cases`]).

use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::query;
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::slapd::Slapd;
use toolforge_nss_tests::toolforge::Toolforge;

use crate::toolforge_env::{config, fixture};

#[test]
fn members_nesting_and_spelling_as_sssd() {
    let slapd = Slapd::start(fixture());
    let uri = slapd.uri();
    let d = Daemon::start_with(|run, cache| config(&uri, run, cache, "", ""));
    let sock = d.socket();
    let cases = Toolforge::rfc2307bis_cases();
    let mut gids = std::collections::HashMap::new();
    for (group, want) in &cases.members {
        match query(&sock, &Request::GetGrNam(group.to_string())) {
            Response::Group(g) => {
                assert_eq!(g.members, *want, "getent group {group}");
                gids.insert(group.to_string(), g.gid);
            }
            other => panic!("{group}: {other:?}\n{}", d.log()),
        }
    }
    for (user, groups) in &cases.groups_of {
        let mut want: Vec<u32> = groups.iter().map(|g| gids[*g]).collect();
        want.sort_unstable();
        assert_eq!(
            query(&sock, &Request::InitGroups(user.to_string())),
            Response::GroupIds(want),
            "id {user}"
        );
    }
    // The user whose DN is `cn=Legacy Person,...` is served under its uid.
    assert!(matches!(
        query(&sock, &Request::GetPwNam("legacyperson".into())),
        Response::Passwd(p) if p.uid == 90_100
    ));
    // Lookups by the shouted spelling are not a different user.
    let shouted = Toolforge::shouted_developer().to_uppercase();
    assert_eq!(
        query(&sock, &Request::GetPwNam(shouted)),
        Response::NotFound
    );
}

#[test]
fn ambiguous_names_are_refused_and_references_logged_once() {
    let f = fixture();
    let slapd = Slapd::start(f);
    let uri = slapd.uri();
    let d = Daemon::start_with(|run, cache| config(&uri, run, cache, "", ""));
    let sock = d.socket();
    assert_eq!(
        query(&sock, &Request::GetPwNam("twinned".into())),
        Response::NotFound
    );
    assert_eq!(
        query(&sock, &Request::GetGrNam("twingroup".into())),
        Response::NotFound
    );
    // Each twin is still served by its own uid (ids are not ambiguous).
    assert!(matches!(
        query(&sock, &Request::GetPwUid(90_301)),
        Response::Passwd(p) if p.name == "twinned"
    ));
    for u in f.users.values().take(5) {
        assert!(matches!(
            query(&sock, &Request::GetPwNam(u.name.clone())),
            Response::Passwd(_)
        ));
    }
    let log = d.log();
    assert!(
        log.contains("several users have this name")
            && log.contains("uid=twinned,ou=people,dc=wikimedia,dc=org")
            && log.contains("uid=twinned,ou=people,ou=servicegroups,dc=wikimedia,dc=org"),
        "both DNs named:\n{log}"
    );
    assert!(
        log.contains("several groups have this name")
            && log.contains("cn=twingroup,ou=groups,")
            && log.contains("cn=twingroup,ou=servicegroups,"),
        "both DNs named:\n{log}"
    );
    assert_eq!(
        log.matches("search references").count(),
        1,
        "one warning for the one base:\n{log}"
    );
}

/// The `config.toml` of deploy/daemonset.yaml's ConfigMap.
fn daemonset_config() -> String {
    let yaml = include_str!("../../deploy/daemonset.yaml");
    let start = yaml
        .find("config.toml: |\n")
        .expect("the ConfigMap holds config.toml")
        + "config.toml: |\n".len();
    yaml[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_daemonset_config_serves_toolforge_groups() {
    let shipped = daemonset_config();
    assert!(shipped.contains("schema = \"rfc2307bis\""), "{shipped}");
    // Its [ldap] part against a Toolforge-shaped directory: groups have their members and
    // initgroups finds them (with the default rfc2307 both would be empty).
    let ldap = &shipped[..shipped.find("[daemon]").unwrap_or(shipped.len())];
    let slapd = Slapd::start(fixture());
    let ldap = ldap
        .lines()
        .map(|l| {
            if l.starts_with("uri = ") {
                format!("uri = [\"{}\"]", slapd.uri())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let d = Daemon::start_with(|run, cache| {
        format!(
            "{ldap}\n[daemon]\nruntime_dir = {:?}\ncache_dir = {:?}\nadmin_dir = {:?}\n",
            run.display().to_string(),
            cache.display().to_string(),
            run.with_file_name("admin").display().to_string(),
        )
    });
    let f = fixture();
    let tool = f
        .users
        .values()
        .find(|u| u.name.starts_with("tools."))
        .unwrap();
    assert_eq!(
        query(&d.socket(), &Request::GetGrNam(tool.name.clone())),
        Response::Group(toolforge_nss_protocol::Group {
            name: tool.name.clone(),
            passwd: "x".into(),
            gid: tool.gid,
            members: f.groups[&tool.name].members.clone(),
        })
    );
    let member = &f.groups[&tool.name].members[0];
    assert_eq!(
        query(&d.socket(), &Request::InitGroups(member.clone())),
        Response::GroupIds(f.supplementary_gids(member))
    );
}
