//! Turns directory entries into records: picks the attributes the configuration names,
//! checks that ids are numbers, names are valid and values hold no NUL, and says why an entry
//! was skipped. Policy (filters, id ranges, home and shell rules) is applied later, in
//! [`crate::policy`]; this module only decides whether an entry is well-formed.

use std::collections::HashMap;

use toolforge_nss_config::{AttributeMap, Schema};
use toolforge_nss_protocol::names::is_valid_name;
use toolforge_nss_protocol::{Group, Passwd};

use crate::records::{GroupRecord, Membership, UserRecord};

/// Longest home, shell or gecos value served, in bytes.
pub const MAX_FIELD_LEN: usize = 4096;

/// A directory entry with attribute names folded to lower case (LDAP names are
/// case-insensitive and servers return their own spelling).
#[derive(Clone, Debug, Default)]
pub struct RawEntry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<String>>,
}

impl RawEntry {
    pub fn new(dn: String, attrs: HashMap<String, Vec<String>>) -> RawEntry {
        let attrs = attrs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        RawEntry { dn, attrs }
    }

    fn values(&self, attr: &str) -> &[String] {
        self.attrs.get(attr).map(Vec::as_slice).unwrap_or(&[])
    }

    fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr).first().map(String::as_str)
    }
}

/// Maps entries of one configured schema.
#[derive(Clone, Debug)]
pub struct Mapper {
    schema: Schema,
    a: AttributeMap,
}

fn single_id(e: &RawEntry, attr: &str) -> Result<u32, String> {
    match e.values(attr) {
        [] => Err(format!("no {attr}")),
        [one] => one
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("{attr} {one:?} is not a number between 0 and 4294967295")),
        many => Err(format!("{attr} has {} values", many.len())),
    }
}

/// The value of the first RDN when its attribute is `attr` (`uid=alice,ou=...` -> `alice`).
pub fn rdn_value<'d>(dn: &'d str, attr: &str) -> Option<&'d str> {
    let first = dn.split(',').next()?;
    let (a, v) = first.split_once('=')?;
    (a.trim().eq_ignore_ascii_case(attr) && !v.contains(['\\', '+', '"'])).then(|| v.trim())
}

/// Picks the entry's name: the wanted one when it is among the values (lookups by name are
/// case-sensitive, as nslcd and SSSD's defaults), else the RDN's value, else the first valid.
fn pick_name(e: &RawEntry, attr: &str, wanted: Option<&str>) -> Result<String, String> {
    let values = e.values(attr);
    if let Some(w) = wanted {
        return values
            .iter()
            .find(|v| v.as_str() == w)
            .cloned()
            .ok_or_else(|| format!("{attr} does not hold {w:?} exactly"));
    }
    let rdn = rdn_value(&e.dn, attr).filter(|r| values.iter().any(|v| v == r));
    rdn.map(str::to_owned)
        .or_else(|| values.iter().find(|v| is_valid_name(v.as_bytes())).cloned())
        .filter(|n| is_valid_name(n.as_bytes()))
        .ok_or_else(|| format!("no valid {attr} (values {values:?})"))
}

/// A field that becomes part of a `passwd` line: no control characters, no `:`, bounded.
fn clean_path(v: Option<&str>) -> Option<String> {
    v.filter(|s| s.len() <= MAX_FIELD_LEN && !s.chars().any(|c| c.is_control() || c == ':'))
        .map(str::to_owned)
}

fn clean_gecos(v: Option<&str>) -> String {
    let v = v.unwrap_or("");
    let end = v
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&i| i <= MAX_FIELD_LEN)
        .last()
        .unwrap_or(0);
    v[..end]
        .chars()
        .map(|c| if c.is_control() || c == ':' { ' ' } else { c })
        .collect()
}

/// Outcome of mapping a group: the record (RFC 2307: with its members), plus its member DNs
/// (RFC 2307bis), which [`crate::directory::members`] resolves to the members' own names.
pub struct MappedGroup {
    pub record: GroupRecord,
    pub member_dns: Vec<String>,
}

impl Mapper {
    pub fn new(schema: Schema, attributes: &AttributeMap) -> Mapper {
        let lower = |s: &String| s.to_ascii_lowercase();
        let a = AttributeMap {
            user_name: lower(&attributes.user_name),
            uid_number: lower(&attributes.uid_number),
            gid_number: lower(&attributes.gid_number),
            gecos: lower(&attributes.gecos),
            full_name: lower(&attributes.full_name),
            home_directory: lower(&attributes.home_directory),
            login_shell: lower(&attributes.login_shell),
            group_name: lower(&attributes.group_name),
            group_gid_number: lower(&attributes.group_gid_number),
            member_uid: lower(&attributes.member_uid),
            member: lower(&attributes.member),
        };
        Mapper { schema, a }
    }

    pub fn attributes(&self) -> &AttributeMap {
        &self.a
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Attributes to request for users.
    pub fn user_attrs(&self) -> Vec<String> {
        let a = &self.a;
        vec![
            a.user_name.clone(),
            a.uid_number.clone(),
            a.gid_number.clone(),
            a.gecos.clone(),
            a.full_name.clone(),
            a.home_directory.clone(),
            a.login_shell.clone(),
        ]
    }

    /// The attribute that holds membership in this schema.
    pub fn membership_attr(&self) -> &str {
        match self.schema {
            Schema::Rfc2307 => &self.a.member_uid,
            Schema::Rfc2307bis => &self.a.member,
        }
    }

    /// Attributes to request for groups (with members when `members`).
    pub fn group_attrs(&self, members: bool) -> Vec<String> {
        let mut v = vec![self.a.group_name.clone(), self.a.group_gid_number.clone()];
        if members {
            v.push(self.membership_attr().to_owned());
        }
        v
    }

    /// Maps a user entry; `wanted` is the name looked up, if the lookup was by name.
    pub fn user(&self, e: &RawEntry, wanted: Option<&str>) -> Result<UserRecord, String> {
        let a = &self.a;
        let name = pick_name(e, &a.user_name, wanted)?;
        let uid = single_id(e, &a.uid_number)?;
        let gid = single_id(e, &a.gid_number)?;
        let gecos = clean_gecos(e.first(&a.gecos).or_else(|| e.first(&a.full_name)));
        Ok(UserRecord {
            dn: e.dn.clone(),
            passwd: Passwd {
                name,
                passwd: "x".into(),
                uid,
                gid,
                gecos,
                dir: clean_path(e.first(&a.home_directory)).unwrap_or_default(),
                shell: clean_path(e.first(&a.login_shell)).unwrap_or_default(),
            },
        })
    }

    /// Maps a group entry with its members.
    pub fn group(&self, e: &RawEntry, wanted: Option<&str>) -> Result<MappedGroup, String> {
        let a = &self.a;
        let name = pick_name(e, &a.group_name, wanted)?;
        let gid = single_id(e, &a.group_gid_number)?;
        let mut members = Vec::new();
        let mut member_dns = Vec::new();
        match self.schema {
            Schema::Rfc2307 => members.extend(
                e.values(&a.member_uid)
                    .iter()
                    .filter(|m| is_valid_name(m.as_bytes()))
                    .cloned(),
            ),
            Schema::Rfc2307bis => member_dns.extend(e.values(&a.member).iter().cloned()),
        }
        members.sort_unstable();
        members.dedup();
        Ok(MappedGroup {
            record: GroupRecord {
                dn: e.dn.clone(),
                group: Group {
                    name,
                    passwd: "x".into(),
                    gid,
                    members,
                },
            },
            member_dns,
        })
    }

    /// The user name of an entry found by DN (RFC 2307bis member resolution): the entry's
    /// own name attribute, never the DN's spelling.
    pub fn user_name_of(&self, e: &RawEntry) -> Option<String> {
        pick_name(e, &self.a.user_name, None).ok()
    }

    /// The member DNs of a group entry (RFC 2307bis), for nested groups.
    pub fn member_dns_of(&self, e: &RawEntry) -> Vec<String> {
        e.values(&self.a.member).to_vec()
    }

    /// Maps a group entry to the name and gid initgroups needs.
    pub fn membership(&self, e: &RawEntry) -> Result<Membership, String> {
        Ok(Membership {
            name: pick_name(e, &self.a.group_name, None)?,
            gid: single_id(e, &self.a.group_gid_number)?,
        })
    }
}

#[cfg(test)]
impl RawEntry {
    /// An entry from attribute names and their values (tests).
    pub fn of(dn: &str, kv: &[(&str, &[&str])]) -> RawEntry {
        RawEntry::new(
            dn.into(),
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(schema: Schema) -> Mapper {
        Mapper::new(schema, &AttributeMap::default())
    }

    fn alice() -> RawEntry {
        RawEntry::of(
            "uid=alice,ou=people,dc=x",
            &[
                ("uid", &["alice"]),
                ("uidNumber", &["1001"]),
                ("GIDNUMBER", &["500"]),
                ("cn", &["Alice Example"]),
                ("homeDirectory", &["/home/alice"]),
                ("loginShell", &["/bin/bash"]),
            ],
        )
    }

    #[test]
    fn maps_a_user_with_case_insensitive_attributes_and_cn_as_gecos() {
        let u = mapper(Schema::Rfc2307)
            .user(&alice(), Some("alice"))
            .unwrap();
        assert_eq!(u.passwd.uid, 1001);
        assert_eq!(u.passwd.gid, 500);
        assert_eq!(u.passwd.gecos, "Alice Example");
        assert_eq!(u.passwd.dir, "/home/alice");
        assert_eq!(u.passwd.shell, "/bin/bash");
    }

    #[test]
    fn lookups_by_name_are_case_sensitive() {
        assert!(mapper(Schema::Rfc2307)
            .user(&alice(), Some("ALICE"))
            .is_err());
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        let m = mapper(Schema::Rfc2307);
        for (v, why) in [
            (&["-5"][..], "not a number"),
            (&["abc"], "not a number"),
            (&["1", "2"], "2 values"),
            (&[], "no uidnumber"),
        ] {
            let mut e = alice();
            e.attrs.insert(
                "uidnumber".into(),
                v.iter().map(|s| s.to_string()).collect(),
            );
            if v.is_empty() {
                e.attrs.remove("uidnumber");
            }
            let err = m.user(&e, None).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn hostile_paths_are_dropped_and_gecos_is_sanitised() {
        let mut e = alice();
        e.attrs
            .insert("homedirectory".into(), vec!["/home/x\nroot::0:0".into()]);
        e.attrs.insert("gecos".into(), vec!["A:B\tC".into()]);
        let u = mapper(Schema::Rfc2307).user(&e, None).unwrap();
        assert_eq!(u.passwd.dir, "");
        assert_eq!(u.passwd.gecos, "A B C");
    }

    #[test]
    fn rfc2307_members_are_names_and_invalid_ones_are_dropped() {
        let e = RawEntry::of(
            "cn=g,ou=groups,dc=x",
            &[
                ("cn", &["g"]),
                ("gidNumber", &["50000"]),
                ("memberUid", &["bob", "alice", "*)(x", "bob"]),
            ],
        );
        let g = mapper(Schema::Rfc2307).group(&e, Some("g")).unwrap();
        assert_eq!(g.record.group.members, vec!["alice", "bob"]);
    }

    #[test]
    fn rfc2307bis_members_are_dns_to_resolve() {
        let e = RawEntry::of(
            "cn=g,ou=groups,dc=x",
            &[
                ("cn", &["g", "alias"]),
                ("gidNumber", &["50000"]),
                (
                    "member",
                    &[
                        "uid=alice,ou=people,dc=x",
                        "UID=bob,ou=people,dc=x",
                        "cn=other,ou=x,dc=x",
                    ],
                ),
            ],
        );
        let g = mapper(Schema::Rfc2307bis).group(&e, None).unwrap();
        assert_eq!(g.record.group.name, "g");
        assert!(g.record.group.members.is_empty());
        assert_eq!(
            g.member_dns,
            vec![
                "uid=alice,ou=people,dc=x",
                "UID=bob,ou=people,dc=x",
                "cn=other,ou=x,dc=x"
            ]
        );
    }

    #[test]
    fn rdn_value_handles_case_and_refuses_escapes() {
        assert_eq!(rdn_value("uid=a,dc=x", "uid"), Some("a"));
        assert_eq!(rdn_value("UID=a,dc=x", "uid"), Some("a"));
        assert_eq!(rdn_value("cn=a,dc=x", "uid"), None);
        assert_eq!(rdn_value("uid=a\\2cb,dc=x", "uid"), None);
    }
}
