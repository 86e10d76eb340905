//! What the daemon will serve, whatever the directory says: never uid or gid 0, never a name in
//! `filter_users`/`filter_groups`, only ids in `min_id..=max_id`; and how entries are shaped
//! (`override_homedir`, `fallback_homedir`, `default_shell`), as SSSD users know them.

use std::collections::HashSet;

use toolforge_nss_config::{HomeTemplate, PolicyConfig};

use crate::records::{GroupRecord, Membership, UserRecord};

#[derive(Clone, Debug)]
pub struct Policy {
    filter_users: HashSet<String>,
    filter_groups: HashSet<String>,
    min_id: u32,
    max_id: u32,
    override_homedir: Option<HomeTemplate>,
    fallback_homedir: Option<HomeTemplate>,
    default_shell: Option<String>,
}

impl Policy {
    pub fn new(c: &PolicyConfig) -> Policy {
        Policy {
            filter_users: c.filter_users.iter().cloned().collect(),
            filter_groups: c.filter_groups.iter().cloned().collect(),
            min_id: c.min_id.max(1),
            max_id: c.max_id,
            override_homedir: c.override_homedir.clone(),
            fallback_homedir: c.fallback_homedir.clone(),
            default_shell: c.default_shell.clone(),
        }
    }

    /// Whether an id may be served (never 0).
    pub fn id_allowed(&self, id: u32) -> bool {
        id != 0 && (self.min_id..=self.max_id).contains(&id)
    }

    /// Whether a user name may be looked up at all (filtered names are answered "not found"
    /// without a query).
    pub fn user_name_allowed(&self, name: &str) -> bool {
        !self.filter_users.contains(name)
    }

    pub fn group_name_allowed(&self, name: &str) -> bool {
        !self.filter_groups.contains(name)
    }

    /// Applies policy to a user; `Err` says why it is not served.
    pub fn user(&self, mut u: UserRecord) -> Result<UserRecord, String> {
        let p = &mut u.passwd;
        if !self.user_name_allowed(&p.name) {
            return Err(format!("user name {:?} is in policy.filter_users", p.name));
        }
        if !self.id_allowed(p.uid) {
            return Err(format!(
                "uid {} is 0 or outside policy.min_id..=max_id",
                p.uid
            ));
        }
        if !self.id_allowed(p.gid) {
            return Err(format!(
                "primary gid {} is 0 or outside policy.min_id..=max_id",
                p.gid
            ));
        }
        if let Some(t) = &self.override_homedir {
            p.dir = t.expand(&p.name, p.uid, &p.dir);
        } else if p.dir.is_empty() {
            if let Some(t) = &self.fallback_homedir {
                p.dir = t.expand(&p.name, p.uid, "");
            }
        }
        if p.shell.is_empty() {
            if let Some(s) = &self.default_shell {
                p.shell = s.clone();
            }
        }
        Ok(u)
    }

    /// Applies policy to a group: refuses filtered names and ids, and drops filtered users from
    /// its members (a group claiming `root` never lists it).
    pub fn group(&self, mut g: GroupRecord) -> Result<GroupRecord, String> {
        let gr = &mut g.group;
        if !self.group_name_allowed(&gr.name) {
            return Err(format!(
                "group name {:?} is in policy.filter_groups",
                gr.name
            ));
        }
        if !self.id_allowed(gr.gid) {
            return Err(format!(
                "gid {} is 0 or outside policy.min_id..=max_id",
                gr.gid
            ));
        }
        gr.members.retain(|m| self.user_name_allowed(m));
        Ok(g)
    }

    pub fn membership_allowed(&self, m: &Membership) -> bool {
        self.group_name_allowed(&m.name) && self.id_allowed(m.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolforge_nss_protocol::{Group, Passwd};

    fn user(name: &str, uid: u32, gid: u32, dir: &str) -> UserRecord {
        UserRecord {
            dn: format!("uid={name},dc=x"),
            passwd: Passwd {
                name: name.into(),
                passwd: "x".into(),
                uid,
                gid,
                gecos: String::new(),
                dir: dir.into(),
                shell: String::new(),
            },
        }
    }

    fn policy(extra: impl FnOnce(&mut PolicyConfig)) -> Policy {
        let mut c = PolicyConfig::default();
        extra(&mut c);
        Policy::new(&c)
    }

    #[test]
    fn never_serves_root_or_id_zero() {
        let p = policy(|_| {});
        assert!(p.user(user("root", 5000, 500, "/root")).is_err());
        assert!(p.user(user("evil", 0, 500, "/")).is_err());
        assert!(p.user(user("evil", 5000, 0, "/")).is_err());
        assert!(p.user(user("alice", 5000, 500, "/home/alice")).is_ok());
        let g = |name: &str, gid| GroupRecord {
            dn: String::new(),
            group: Group {
                name: name.into(),
                passwd: "x".into(),
                gid,
                members: vec!["root".into(), "alice".into()],
            },
        };
        assert!(p.group(g("root", 5)).is_err());
        assert!(p.group(g("wheel", 0)).is_err());
        assert_eq!(p.group(g("ok", 5)).unwrap().group.members, vec!["alice"]);
    }

    #[test]
    fn honours_id_range() {
        let p = policy(|c| {
            c.min_id = 1000;
            c.max_id = 2000;
        });
        assert!(p.user(user("a", 999, 1500, "")).is_err());
        assert!(p.user(user("a", 2001, 1500, "")).is_err());
        assert!(p.user(user("a", 1000, 2000, "")).is_ok());
    }

    #[test]
    fn homedir_and_shell_rules() {
        let p = policy(|c| {
            c.fallback_homedir = Some(HomeTemplate::try_from("/home/%u".to_string()).unwrap());
            c.default_shell = Some("/bin/sh".into());
        });
        let u = p.user(user("a", 1000, 1000, "")).unwrap().passwd;
        assert_eq!((u.dir.as_str(), u.shell.as_str()), ("/home/a", "/bin/sh"));
        let u = p
            .user(user("a", 1000, 1000, "/data/project/a"))
            .unwrap()
            .passwd;
        assert_eq!(u.dir, "/data/project/a");
        let p = policy(|c| {
            c.override_homedir = Some(HomeTemplate::try_from("/srv/%U".to_string()).unwrap())
        });
        assert_eq!(
            p.user(user("a", 1234, 1000, "/home/a")).unwrap().passwd.dir,
            "/srv/1234"
        );
    }
}
