//! A deterministic directory of Toolforge's shape, as LDIF for either schema, together with
//! the answers a correct resolver must give. Developer accounts under `ou=people`, tool
//! accounts under `ou=people,ou=servicegroups` with same-named maintainer groups under
//! `ou=servicegroups`, project groups under `ou=groups` (one with 5,000 members), and hostile
//! entries that must never be served (a `root` user, uid 0, gid 0, negative ids, a duplicate
//! uid, a group claiming `root`).

use std::collections::BTreeMap;
use std::fmt::Write;

pub const BASE: &str = "dc=wikimedia,dc=org";
pub const BIG_GROUP: &str = "project-tools";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Rfc2307,
    Rfc2307bis,
}

impl Schema {
    pub fn config_name(self) -> &'static str {
        match self {
            Schema::Rfc2307 => "rfc2307",
            Schema::Rfc2307bis => "rfc2307bis",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    pub dn: String,
}

impl User {
    /// The line `getent passwd` prints.
    pub fn passwd_line(&self) -> String {
        format!(
            "{}:x:{}:{}:{}:{}:{}",
            self.name, self.uid, self.gid, self.gecos, self.home, self.shell
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// Sorted member names.
    pub members: Vec<String>,
    pub dn: String,
}

impl Group {
    /// The line `getent group` prints.
    pub fn group_line(&self) -> String {
        format!("{}:x:{}:{}", self.name, self.gid, self.members.join(","))
    }
}

/// Sizes of the generated directory.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub developers: usize,
    pub tools: usize,
    pub projects: usize,
    pub big_group: usize,
}

impl Shape {
    /// A small directory for tests that need a server of their own.
    pub fn small() -> Shape {
        Shape {
            developers: 300,
            tools: 10,
            projects: 4,
            big_group: 100,
        }
    }
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            developers: 5200,
            tools: 60,
            projects: 12,
            big_group: 5000,
        }
    }
}

/// The generated directory and its expected answers.
pub struct Fixture {
    pub schema: Schema,
    /// Users a correct resolver serves, by name.
    pub users: BTreeMap<String, User>,
    /// Groups a correct resolver serves (members already filtered), by name.
    pub groups: BTreeMap<String, Group>,
    /// Names present in the directory that must never be served.
    pub hostile_users: Vec<String>,
    pub hostile_groups: Vec<String>,
    pub ldif: String,
}

const SYLLABLES: [&str; 16] = [
    "ka", "ri", "mo", "ne", "lu", "sa", "to", "vi", "de", "an", "el", "or", "us", "ix", "ba", "qu",
];

/// A readable, unique name for `i` (base-16 digits as syllables).
fn name_for(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push_str(SYLLABLES[i % 16]);
        i /= 16;
        if i == 0 {
            break;
        }
    }
    s.push_str("dev");
    s
}

/// A small deterministic generator (no external crates, same data on every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl Fixture {
    pub fn generate(schema: Schema, shape: Shape) -> Fixture {
        let mut rng = Lcg(7);
        let mut ldif = String::new();
        let mut users = BTreeMap::new();
        let mut groups = BTreeMap::new();
        let w = &mut ldif;
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

        let mut dev_names = Vec::new();
        for i in 0..shape.developers {
            let name = name_for(i);
            let uid = 1000 + 10 * i as u32 + (i % 7) as u32;
            let dn = format!("uid={name},ou=people,{BASE}");
            let cn = format!("{} Example", capitalise(&name));
            let _ = writeln!(
                w,
                "dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nobjectClass: shadowAccount\n\
                 uid: {name}\ncn: {cn}\nsn: Example\nuidNumber: {uid}\ngidNumber: 500\n\
                 homeDirectory: /home/{name}\nloginShell: /bin/bash\n"
            );
            users.insert(
                name.clone(),
                User {
                    name: name.clone(),
                    uid,
                    gid: 500,
                    gecos: cn,
                    home: format!("/home/{name}"),
                    shell: "/bin/bash".into(),
                    dn,
                },
            );
            dev_names.push(name);
        }

        let member_lines = |members: &[String]| -> String {
            members
                .iter()
                .map(|m| match schema {
                    Schema::Rfc2307 => format!("memberUid: {m}\n"),
                    Schema::Rfc2307bis => format!("member: uid={m},ou=people,{BASE}\n"),
                })
                .collect()
        };
        let group_classes = match schema {
            Schema::Rfc2307 => "objectClass: posixGroup\n",
            Schema::Rfc2307bis => "objectClass: posixGroup\nobjectClass: extensibleObject\n",
        };
        let mut add_group = |w: &mut String,
                             name: &str,
                             ou: &str,
                             gid: u32,
                             mut members: Vec<String>,
                             extra: &str| {
            members.sort();
            members.dedup();
            let dn = format!("cn={name},{ou},{BASE}");
            let _ = writeln!(
                w,
                "dn: {dn}\n{group_classes}cn: {name}\ngidNumber: {gid}\n{}{extra}",
                member_lines(&members)
            );
            groups.insert(
                name.to_owned(),
                Group {
                    name: name.to_owned(),
                    gid,
                    members,
                    dn,
                },
            );
        };

        add_group(w, "wikidev", "ou=groups", 500, vec![], "");
        let pick = |rng: &mut Lcg, n: usize| -> Vec<String> {
            let mut v: Vec<String> = (0..n)
                .map(|_| dev_names[rng.below(dev_names.len())].clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        // The big project: exactly `big_group` distinct developers.
        let big: Vec<String> = dev_names
            .iter()
            .step_by((dev_names.len() / shape.big_group.max(1)).max(1))
            .take(shape.big_group)
            .cloned()
            .collect();
        add_group(w, BIG_GROUP, "ou=groups", 50000, big, "");
        for j in 0..shape.projects {
            let size = (40 / (j + 1)).max(1);
            let members = pick(&mut rng, size);
            add_group(
                w,
                &format!("project-p{j:03}"),
                "ou=groups",
                50001 + j as u32,
                members,
                "",
            );
        }
        for t in 0..shape.tools {
            let short = format!("{}-{t}", name_for(t * 3 + 1).trim_end_matches("dev"));
            let name = format!("tools.{short}");
            let gid = 51000 + t as u32;
            let maintainers = pick(&mut rng, 1 + t % 5);
            add_group(w, &name, "ou=servicegroups", gid, maintainers, "");
            let dn = format!("uid={name},ou=people,ou=servicegroups,{BASE}");
            let _ = writeln!(
                w,
                "dn: {dn}\nobjectClass: shadowAccount\nobjectClass: posixAccount\nobjectClass: person\n\
                 uid: {name}\ncn: {name}\nsn: {name}\nuidNumber: {gid}\ngidNumber: {gid}\n\
                 homeDirectory: /data/project/{short}\nloginShell: /bin/bash\n"
            );
            users.insert(
                name.clone(),
                User {
                    name: name.clone(),
                    uid: gid,
                    gid,
                    gecos: name.clone(),
                    home: format!("/data/project/{short}"),
                    shell: "/bin/bash".into(),
                    dn,
                },
            );
        }

        // Hostile entries: present in the directory, never served.
        let hostile_user = |w: &mut String, name: &str, uid: &str, gid: &str| {
            let _ = writeln!(
                w,
                "dn: uid={name},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
                 uid: {name}\ncn: {name}\nsn: x\nuidNumber: {uid}\ngidNumber: {gid}\nhomeDirectory: /root\nloginShell: /bin/bash\n"
            );
        };
        hostile_user(w, "root", "4242", "500");
        hostile_user(w, "evil-uid0", "0", "500");
        hostile_user(w, "evil-gid0", "4243", "0");
        hostile_user(w, "evil-negative", "-5", "500");
        // A name that fails validation: found by uid, never served.
        hostile_user(w, "bad*name", "4245", "500");
        // A second entry claiming the uid of the first developer.
        let first = users
            .values()
            .find(|u| u.name == name_for(0))
            .map(|u| u.uid)
            .unwrap_or(1000);
        hostile_user(w, "evil-dupuid", &first.to_string(), "500");
        users.insert(
            "evil-dupuid".into(),
            User {
                name: "evil-dupuid".into(),
                uid: first,
                gid: 500,
                gecos: "evil-dupuid".into(),
                home: "/root".into(),
                shell: "/bin/bash".into(),
                dn: format!("uid=evil-dupuid,ou=people,{BASE}"),
            },
        );
        let hostile_group = |w: &mut String, name: &str, gid: &str, members: &[&str]| {
            let m: Vec<String> = members.iter().map(|s| s.to_string()).collect();
            let _ = writeln!(
                w,
                "dn: cn={name},ou=groups,{BASE}\n{group_classes}cn: {name}\ngidNumber: {gid}\n{}",
                member_lines(&m)
            );
        };
        hostile_group(w, "root", "4244", &[]);
        hostile_group(w, "evil-gid0", "0", &[&dev_names[0]]);
        // A group that lists root among its members: served, without root.
        let claim = vec!["root".to_string(), dev_names[1].clone()];
        add_group(w, "claims-root", "ou=groups", 52000, claim, "");
        if let Some(g) = groups.get_mut("claims-root") {
            g.members.retain(|m| m != "root");
        }

        Fixture {
            schema,
            users,
            groups,
            // evil-dupuid is served by name (its uid is ambiguous, so lookups *by uid* are refused).
            hostile_users: vec![
                "root".into(),
                "evil-uid0".into(),
                "evil-gid0".into(),
                "evil-negative".into(),
            ],
            hostile_groups: vec!["root".into(), "evil-gid0".into()],
            ldif,
        }
    }

    /// The developer whose uid `evil-dupuid` also claims: lookups by that uid are refused.
    pub fn ambiguous_uid(&self) -> u32 {
        self.users[&name_for(0)].uid
    }

    /// The developer accounts (home under `/home/`) whose uid no other entry claims, in name
    /// order.
    pub fn developers(&self) -> impl Iterator<Item = &User> {
        let ambiguous = self.ambiguous_uid();
        self.users
            .values()
            .filter(move |u| u.home.starts_with("/home/") && u.uid != ambiguous)
    }

    /// A developer account (not in the big group unless `in_big`).
    pub fn developer(&self, in_big: bool) -> &User {
        let big = &self.groups[BIG_GROUP].members;
        self.developers()
            .find(|u| big.binary_search(&u.name).is_ok() == in_big)
            .expect("fixture has developers in and out of the big group")
    }

    pub fn tool(&self) -> &User {
        self.users
            .values()
            .find(|u| u.name.starts_with("tools."))
            .expect("fixture has tools")
    }

    /// The gids `getent initgroups NAME` lists after the primary group, sorted.
    pub fn supplementary_gids(&self, user: &str) -> Vec<u32> {
        let primary = self.users.get(user).map(|u| u.gid);
        let mut v: Vec<u32> = self
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == user) && Some(g.gid) != primary)
            .map(|g| g.gid)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&Group> {
        self.groups.values().find(|g| g.gid == gid)
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_has_the_promised_shape() {
        let f = Fixture::generate(Schema::Rfc2307, Shape::default());
        assert_eq!(f.groups[BIG_GROUP].members.len(), 5000);
        assert!(f.tool().home.starts_with("/data/project/"));
        assert!(!f.users.contains_key("root"));
        assert_eq!(f.groups["claims-root"].members.len(), 1);
        let names: std::collections::HashSet<_> = (0..6000).map(name_for).collect();
        assert_eq!(names.len(), 6000, "names are unique");
        assert!(f.ldif.contains("memberUid: "));
        let bis = Fixture::generate(Schema::Rfc2307bis, Shape::default());
        assert!(bis.ldif.contains("member: uid="));
    }
}
