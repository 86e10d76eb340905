//! A Toolforge-shaped RFC 2307bis directory (see `../shared/TOOLFORGE.md`), with the answers a
//! correct resolver gives: developers under `ou=people` (uids from 1000, and past 100,000 for
//! the newer ones), tool accounts under `ou=people,ou=servicegroups` with uid = gid in
//! 50000-59999, tool groups under `ou=servicegroups` whose `member` DNs name maintainers and
//! other tools' accounts, project groups under `ou=groups` (gids from 40000) with a big
//! `project-tools`, and one maintainer of many tools.
//!
//! It also holds the cases where RFC 2307bis differs from reading names out of DNs: a user
//! whose DN is `cn=...`, a member DN spelled in other case, a member DN that names no entry,
//! groups nested three deep, and two entries per name. [`Toolforge::rfc2307bis_cases`] writes
//! the expected answers out by hand. They were checked against SSSD 2.8 (`ldap_schema =
//! rfc2307bis`, default `ldap_group_nesting_level = 2`) on this directory with
//! `bench/toolforge.sh`, which prints every provider's answers side by side. With a fresh
//! SSSD cache its answers are these for the nested groups (each lookup follows two levels
//! below the group; initgroups climbs two levels) and for `cn=` members; SSSD's answers for
//! intermediate groups depend on what was looked up before (its man page: "nested groups
//! beyond this limit may be returned if previous lookups already resolved the deeper
//! nesting levels"), which this daemon does not reproduce. Two differences are deliberate:
//! SSSD answers `getent group project-spelling` with nothing at all (the whole group fails),
//! where this daemon lists the two members that exist; and SSSD serves one of two entries
//! sharing a name, where this daemon refuses both (issue 10, item 6).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::fixture::{Fixture, Group, Schema, User, BASE, BIG_GROUP};

/// Sizes of the generated directory.
#[derive(Clone, Copy, Debug)]
pub struct ToolforgeShape {
    /// Developer accounts (the first two thirds get uids from 1000, the rest from 100000).
    pub developers: usize,
    /// Tool accounts and their groups.
    pub tools: usize,
    /// Members of `project-tools` (at most `developers`).
    pub big_group: usize,
    /// Tool groups the busiest maintainer (`MANY_GROUPS_USER`) belongs to.
    pub busy_maintainer: usize,
    /// Project groups besides `project-tools` (`project-pNNN`, 3 to 200 members).
    pub projects: usize,
}

impl ToolforgeShape {
    /// For integration tests: the large cases at full size, the rest small.
    pub fn test() -> ToolforgeShape {
        ToolforgeShape {
            developers: 10_500,
            tools: 400,
            big_group: 10_000,
            busy_maintainer: 300,
            projects: 20,
        }
    }

    /// For `make demo`: small.
    pub fn demo() -> ToolforgeShape {
        ToolforgeShape {
            developers: 300,
            tools: 20,
            big_group: 200,
            busy_maintainer: 10,
            projects: 3,
        }
    }

    /// The benchmark's directory: 35,000 users.
    pub fn bench() -> ToolforgeShape {
        ToolforgeShape {
            developers: 30_000,
            tools: 5_000,
            big_group: 10_000,
            busy_maintainer: 300,
            projects: 300,
        }
    }
}

/// The maintainer of `busy_maintainer` tools.
pub const MANY_GROUPS_USER: &str = "busymaintainer";

/// One expectation about RFC 2307bis resolution: what `getent group NAME` lists, or the
/// groups `id USER` shows.
pub struct Rfc2307bisCases {
    /// Group name -> members SSSD lists.
    pub members: Vec<(&'static str, Vec<&'static str>)>,
    /// User name -> supplementary group names SSSD lists (besides the primary group).
    pub groups_of: Vec<(&'static str, Vec<&'static str>)>,
}

struct Gen {
    ldif: String,
    users: BTreeMap<String, User>,
    groups: BTreeMap<String, Group>,
}

impl Gen {
    fn user(&mut self, dn: String, name: &str, uid: u32, gid: u32, home: String, cn: &str) {
        let _ = writeln!(
            self.ldif,
            "dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: {name}\ncn: {cn}\nsn: {name}\nuidNumber: {uid}\ngidNumber: {gid}\n\
             homeDirectory: {home}\nloginShell: /bin/bash\n"
        );
        self.users.insert(
            name.to_owned(),
            User {
                name: name.to_owned(),
                uid,
                gid,
                gecos: cn.to_owned(),
                home,
                shell: "/bin/bash".into(),
                dn,
            },
        );
    }

    /// A group with `member` DNs as written; `names` are the members a resolver lists
    /// (`None`: not recorded, the test states its own expectation).
    fn group(
        &mut self,
        ou: &str,
        name: &str,
        gid: u32,
        dns: &[String],
        names: Option<Vec<String>>,
    ) {
        let dn = format!("cn={name},{ou},{BASE}");
        let _ = write!(
            self.ldif,
            "dn: {dn}\nobjectClass: posixGroup\nobjectClass: extensibleObject\ncn: {name}\ngidNumber: {gid}\n"
        );
        for m in dns {
            let _ = writeln!(self.ldif, "member: {m}");
        }
        self.ldif.push('\n');
        if let Some(mut members) = names {
            members.sort();
            members.dedup();
            self.groups.insert(
                name.to_owned(),
                Group {
                    name: name.to_owned(),
                    gid,
                    members,
                    dn,
                },
            );
        }
    }
}

fn dev_name(i: usize) -> String {
    const S: [&str; 16] = [
        "ka", "ri", "mo", "ne", "lu", "sa", "to", "vi", "de", "an", "el", "or", "us", "ix", "ba",
        "qu",
    ];
    let mut s = String::new();
    let mut n = i;
    loop {
        s.push_str(S[n % 16]);
        n /= 16;
        if n == 0 {
            break;
        }
    }
    s.push_str("wm");
    s
}

fn person_dn(name: &str) -> String {
    format!("uid={name},ou=people,{BASE}")
}

fn tool_dn(name: &str) -> String {
    format!("uid={name},ou=people,ou=servicegroups,{BASE}")
}

/// A daemon config as Toolforge runs it (deploy/daemonset.yaml): `rfc2307bis` and the whole
/// tree as the base of every map; `ldap_extra` goes into `[ldap]`, `extra` after `[daemon]`.
pub fn daemon_config(uri: &str, run: &Path, cache: &Path, ldap_extra: &str, extra: &str) -> String {
    format!(
        "[ldap]\nuri = [\"{uri}\"]\nbase = \"{BASE}\"\nschema = \"rfc2307bis\"\nsearch_timeout_ms = 30000\n{ldap_extra}\
         [daemon]\nruntime_dir = {:?}\ncache_dir = {:?}\nadmin_dir = {:?}\n{extra}",
        run.display().to_string(),
        cache.display().to_string(),
        run.with_file_name("admin").display().to_string(),
    )
}

/// The generated directory and its expectations.
pub struct Toolforge;

impl Fixture {
    /// The Toolforge-shaped RFC 2307bis directory ([`Toolforge::generate`]).
    pub fn toolforge(shape: ToolforgeShape) -> Fixture {
        Toolforge::generate(shape)
    }
}

impl Toolforge {
    /// Generates the directory (always RFC 2307bis, as Toolforge's).
    pub fn generate(shape: ToolforgeShape) -> Fixture {
        let mut g = Gen {
            ldif: String::new(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        let w = &mut g.ldif;
        let _ = writeln!(w, "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: wikimedia\no: Wikimedia\n");
        for ou in ["people", "groups", "servicegroups"] {
            let _ = writeln!(
                w,
                "dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n"
            );
        }
        let _ = writeln!(
            w,
            "dn: ou=people,ou=servicegroups,{BASE}\nobjectClass: organizationalUnit\nou: people\n"
        );
        // A referral below the user base: servers send a search reference for it.
        let _ = writeln!(
            w,
            "dn: ou=elsewhere,ou=people,{BASE}\nobjectClass: referral\nobjectClass: extensibleObject\n\
             ou: elsewhere\nref: ldap://127.0.0.1:9/ou=elsewhere,{BASE}\n"
        );

        let old = shape.developers * 2 / 3;
        let mut devs = Vec::with_capacity(shape.developers + 1);
        for i in 0..shape.developers {
            let name = dev_name(i);
            let uid = if i < old {
                1000 + i as u32 * 2
            } else {
                100_000 + (i - old) as u32
            };
            let cn = format!("{} Example", name.to_uppercase());
            g.user(
                person_dn(&name),
                &name,
                uid,
                500,
                format!("/home/{name}"),
                &cn,
            );
            devs.push(name);
        }
        let busy_uid = 100_000 + (shape.developers - old) as u32 + 7;
        g.user(
            person_dn(MANY_GROUPS_USER),
            MANY_GROUPS_USER,
            busy_uid,
            500,
            format!("/home/{MANY_GROUPS_USER}"),
            "Busy Maintainer",
        );
        g.group("ou=groups", "wikidev", 500, &[], Some(vec![]));

        // project-tools: the first `big_group` developers.
        let big: Vec<String> = devs.iter().take(shape.big_group).cloned().collect();
        let dns: Vec<String> = big.iter().map(|n| person_dn(n)).collect();
        g.group("ou=groups", BIG_GROUP, 40000, &dns, Some(big));

        // Project groups: sizes falling from 200, members spread over the developers.
        for j in 0..shape.projects {
            let size = (200 / (j + 1)).max(3).min(devs.len());
            let members: Vec<String> = (0..size)
                .map(|k| devs[(j * 7919 + k * 104_729) % devs.len()].clone())
                .collect();
            let dns: Vec<String> = members.iter().map(|n| person_dn(n)).collect();
            g.group(
                "ou=groups",
                &format!("project-p{j:03}"),
                41000 + j as u32,
                &dns,
                Some(members),
            );
        }

        // Tools: account + group; maintainers are developers, the busy maintainer for the
        // first `busy_maintainer` tools, and every 7th tool also lists another tool's account.
        let tool_names: Vec<String> = (0..shape.tools)
            .map(|t| format!("tools.{}-{t}", dev_name(t * 5 + 3).trim_end_matches("wm")))
            .collect();
        for (t, name) in tool_names.iter().enumerate() {
            let gid = 50000 + t as u32;
            let short = name.trim_start_matches("tools.");
            g.user(
                tool_dn(name),
                name,
                gid,
                gid,
                format!("/data/project/{short}"),
                name,
            );
            let mut members = vec![
                devs[(t * 31) % devs.len()].clone(),
                devs[(t * 17 + 5) % devs.len()].clone(),
            ];
            let mut dns: Vec<String> = members.iter().map(|n| person_dn(n)).collect();
            if t < shape.busy_maintainer {
                members.push(MANY_GROUPS_USER.into());
                dns.push(person_dn(MANY_GROUPS_USER));
            }
            if t % 7 == 3 {
                let other = &tool_names[(t + 1) % tool_names.len()];
                members.push(other.clone());
                dns.push(tool_dn(other));
            }
            g.group("ou=servicegroups", name, gid, &dns, Some(members));
        }

        // The RFC 2307bis cases (expectations in `rfc2307bis_cases`).
        g.user(
            format!("cn=Legacy Person,ou=people,{BASE}"),
            "legacyperson",
            90_100,
            500,
            "/home/legacyperson".into(),
            "Legacy Person",
        );
        for (n, uid) in [
            ("nestfirst", 90_201),
            ("nestsecond", 90_202),
            ("nestthird", 90_203),
            ("nestfourth", 90_204),
        ] {
            g.user(person_dn(n), n, uid, 500, format!("/home/{n}"), n);
        }
        let gdn = |n: &str| format!("cn={n},ou=groups,{BASE}");
        g.group(
            "ou=groups",
            "project-spelling",
            40500,
            &[
                format!("cn=legacy person,ou=People,{BASE}"),
                format!(
                    "UID={},OU=people,DC=Wikimedia,DC=org",
                    devs[1].to_uppercase()
                ),
                format!("uid=nosuchperson,ou=people,{BASE}"),
            ],
            None,
        );
        g.group(
            "ou=groups",
            "project-nest-deep",
            40504,
            &[person_dn("nestfourth")],
            None,
        );
        g.group(
            "ou=groups",
            "project-nest-low",
            40503,
            &[person_dn("nestthird"), gdn("project-nest-deep")],
            None,
        );
        g.group(
            "ou=groups",
            "project-nest-mid",
            40502,
            &[person_dn("nestsecond"), gdn("project-nest-low")],
            None,
        );
        g.group(
            "ou=groups",
            "project-nest-top",
            40501,
            &[person_dn("nestfirst"), gdn("project-nest-mid")],
            None,
        );

        // Ambiguous names: one user name and one group name, each held by two entries.
        g.user(
            person_dn("twinned"),
            "twinned",
            90_301,
            500,
            "/home/twinned".into(),
            "Twin A",
        );
        let _ = writeln!(
            g.ldif,
            "dn: uid=twinned,ou=people,ou=servicegroups,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: twinned\ncn: Twin B\nsn: b\nuidNumber: 90302\ngidNumber: 500\nhomeDirectory: /home/twinb\nloginShell: /bin/bash\n"
        );
        g.users.remove("twinned");
        g.group("ou=groups", "twingroup", 40601, &[], None);
        g.group("ou=servicegroups", "twingroup", 40602, &[], None);

        Fixture {
            schema: Schema::Rfc2307bis,
            users: g.users,
            groups: g.groups,
            hostile_users: vec!["twinned".into()],
            hostile_groups: vec!["twingroup".into()],
            ldif: g.ldif,
        }
    }

    /// The second developer, whose DN `project-spelling` spells in capitals.
    pub fn shouted_developer() -> String {
        dev_name(1)
    }

    /// What SSSD 2.8 answers on the special entries (see the module doc).
    pub fn rfc2307bis_cases() -> Rfc2307bisCases {
        Rfc2307bisCases {
            members: vec![
                // `cn=` DN resolved to the entry's uid; the capitalised DN to the entry's own
                // spelling; the DN of no entry left out.
                ("project-spelling", vec!["legacyperson", "riwm"]),
                // Two levels of nesting below the group are followed; the third is not.
                (
                    "project-nest-top",
                    vec!["nestfirst", "nestsecond", "nestthird"],
                ),
                (
                    "project-nest-mid",
                    vec!["nestfourth", "nestsecond", "nestthird"],
                ),
                ("project-nest-low", vec!["nestfourth", "nestthird"]),
                ("project-nest-deep", vec!["nestfourth"]),
            ],
            groups_of: vec![
                (
                    "nestfourth",
                    vec!["project-nest-deep", "project-nest-low", "project-nest-mid"],
                ),
                (
                    "nestthird",
                    vec!["project-nest-low", "project-nest-mid", "project-nest-top"],
                ),
                ("nestfirst", vec!["project-nest-top"]),
                ("legacyperson", vec!["project-spelling"]),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolforge_directory_has_its_shape() {
        let f = Toolforge::generate(ToolforgeShape::test());
        assert_eq!(f.groups[BIG_GROUP].members.len(), 10_000);
        let busy = f
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == MANY_GROUPS_USER))
            .count();
        assert_eq!(busy, 300);
        assert!(f.users.values().any(|u| u.uid > 100_000));
        assert!(f
            .users
            .values()
            .filter(|u| u.name.starts_with("tools."))
            .all(|u| u.uid == u.gid && (50000..60000).contains(&u.uid)));
        assert_eq!(Toolforge::shouted_developer(), "riwm");
        let names: std::collections::HashSet<_> = (0..40_000).map(dev_name).collect();
        assert_eq!(names.len(), 40_000);
    }
}
