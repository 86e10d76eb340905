//! RFC 2307bis membership as SSSD resolves it. A group's `member` values are DNs; each is
//! resolved to the member entry's own name attribute (`uid=Alice,...` lists the entry's
//! `alice`), in batches (OR filters of many RDN values, matched back by normalised DN), never
//! one search per member. Member DNs that are groups are expanded down to
//! `group_nesting_level` levels (SSSD's `ldap_group_nesting_level`), and initgroups climbs
//! the same number of levels of parent groups. A search that fails fails the whole answer:
//! a member list is never silently truncated. A DN that names no entry under the configured
//! bases is not a member (as in SSSD).

use std::collections::{HashMap, HashSet};
use std::future::Future;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use tracing::debug;

use crate::directory::DirResult;
use crate::filter;
use crate::mapping::{Mapper, RawEntry};
use crate::records::Membership;

/// Values per OR filter: well under slapd's default size limit (500), so a batch normally
/// fits in one plain search; and small, because a server tests each candidate entry against
/// every term (the cost of a batch grows with its square).
pub const BATCH: usize = 100;
/// Batches in flight at once.
const PARALLEL_BATCHES: usize = 4;
/// More member DNs than this to resolve at once: one paged listing of the users is cheaper
/// than batches (enumeration of every group).
const LIST_USERS_ABOVE: usize = 20_000;

/// Complete searches over a set of bases (the LDAP directory, or a test double).
pub trait Searcher: Send + Sync {
    /// Entries matching `filter` under any of `bases`, merged by DN; `listing`: the answer is
    /// expected to be large (page it from the start).
    fn search_all(
        &self,
        bases: &[String],
        filter: &str,
        attrs: &[String],
        listing: bool,
    ) -> impl Future<Output = DirResult<Vec<RawEntry>>> + Send;
}

/// What member resolution needs from the configuration.
pub struct Plan<'a> {
    pub mapper: &'a Mapper,
    pub user_bases: &'a [String],
    pub group_bases: &'a [String],
    pub user_filter: &'a str,
    pub group_filter: &'a str,
    /// Levels of nested groups followed (0: none).
    pub nesting: u32,
}

/// One attribute-value assertion of a DN, unescaped (RFC 4514).
fn parse_rdns(dn: &str) -> Option<Vec<Vec<(String, String)>>> {
    let mut rdns = Vec::new();
    let mut avas = Vec::new();
    let mut chars = dn.trim().bytes().peekable();
    loop {
        let mut attr = String::new();
        for c in chars.by_ref() {
            if c == b'=' {
                break;
            }
            attr.push(c as char);
        }
        let attr = attr.trim().to_ascii_lowercase();
        if attr.is_empty() {
            return None;
        }
        let mut value: Vec<u8> = Vec::new();
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                b'\\' => {
                    let a = chars.next()?;
                    if a.is_ascii_hexdigit() {
                        let b = chars.next()?;
                        let hex = [a, b];
                        let s = std::str::from_utf8(&hex).ok()?;
                        value.push(u8::from_str_radix(s, 16).ok()?);
                    } else {
                        value.push(a);
                    }
                }
                b',' | b';' | b'+' => {
                    end = Some(c);
                    break;
                }
                _ => value.push(c),
            }
        }
        let value = String::from_utf8(value).ok()?;
        if value.starts_with('#') {
            return None; // BER-encoded value: not a name
        }
        avas.push((attr, value.trim().to_lowercase()));
        match end {
            Some(b'+') => continue,
            Some(_) => {
                avas.sort();
                rdns.push(std::mem::take(&mut avas));
            }
            None => {
                avas.sort();
                rdns.push(avas);
                return Some(rdns);
            }
        }
    }
}

/// A DN in a form where two spellings of one DN are equal: attribute names and values folded
/// to lower case (the naming attributes in use, uid, cn, ou and dc, match case-insensitively),
/// spaces around separators and escapes removed. `None`: not a DN.
pub fn normalize_dn(dn: &str) -> Option<String> {
    let rdns = parse_rdns(dn)?;
    let mut out = String::with_capacity(dn.len());
    for (i, rdn) in rdns.iter().enumerate() {
        if i > 0 {
            out.push('\u{1}');
        }
        for (j, (a, v)) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('\u{2}');
            }
            out.push_str(a);
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

/// The first attribute-value assertion of a DN's first RDN (`uid=Alice,...` ->
/// `("uid", "alice")`).
pub fn first_ava(dn: &str) -> Option<(String, String)> {
    parse_rdns(dn)?.into_iter().next()?.into_iter().next()
}

/// What a member DN turned out to be.
#[derive(Clone, Debug)]
enum Found {
    User(String),
    Group(Vec<String>),
}

/// Whether the normalised DN `dn` is `base` or below it.
fn is_under(dn: &str, base: &str) -> bool {
    dn == base
        || dn
            .strip_suffix(base)
            .is_some_and(|head| head.ends_with('\u{1}'))
}

/// OR filters matching the entries the DNs name by their first RDN, grouped by attribute,
/// each with the one base it is searched under: a DN is only looked for under the bases that
/// hold it (a DN under none of them names no entry of this map).
fn batch_filters(map_filter: &str, bases: &[String], dns: &[&String]) -> Vec<(String, String)> {
    let norm_bases: Vec<Option<String>> = bases.iter().map(|b| normalize_dn(b)).collect();
    let mut by_attr: HashMap<(usize, String), Vec<String>> = HashMap::new();
    for dn in dns {
        let (Some((a, v)), Some(norm)) = (first_ava(dn), normalize_dn(dn)) else {
            continue;
        };
        for (i, b) in norm_bases.iter().enumerate() {
            if b.as_deref().is_some_and(|b| is_under(&norm, b)) {
                by_attr.entry((i, a.clone())).or_default().push(v.clone());
            }
        }
    }
    let mut out = Vec::new();
    for ((base, attr), mut values) in by_attr {
        values.sort_unstable();
        values.dedup();
        for chunk in values.chunks(BATCH) {
            let mut f = format!("(&{map_filter}(|");
            for v in chunk {
                f.push_str(&format!("({attr}={})", filter::escape(v)));
            }
            f.push_str("))");
            out.push((bases[base].clone(), f));
        }
    }
    out
}

async fn run_batches<S: Searcher>(
    s: &S,
    filters: Vec<(String, String)>,
    attrs: &[String],
) -> DirResult<Vec<RawEntry>> {
    let results: Vec<Vec<RawEntry>> = stream::iter(filters)
        .map(|(base, f)| async move {
            s.search_all(std::slice::from_ref(&base), &f, attrs, false)
                .await
        })
        .buffer_unordered(PARALLEL_BATCHES)
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

/// Looks the DNs up (users first, then groups when `groups`), returning what each
/// normalised DN is. DNs found nowhere are absent from the answer.
async fn resolve<S: Searcher>(
    s: &S,
    plan: &Plan<'_>,
    dns: &HashMap<String, String>,
    groups: bool,
) -> DirResult<HashMap<String, Found>> {
    let mut found = HashMap::new();
    if dns.is_empty() {
        return Ok(found);
    }
    let name_attr = vec![plan.mapper.attributes().user_name.clone()];
    let users = if dns.len() > LIST_USERS_ABOVE {
        s.search_all(plan.user_bases, plan.user_filter, &name_attr, true)
            .await?
    } else {
        let spelled: Vec<&String> = dns.values().collect();
        let filters = batch_filters(plan.user_filter, plan.user_bases, &spelled);
        run_batches(s, filters, &name_attr).await?
    };
    for e in users {
        let Some(norm) = normalize_dn(&e.dn) else {
            continue;
        };
        if dns.contains_key(&norm) {
            if let Some(name) = plan.mapper.user_name_of(&e) {
                found.insert(norm, Found::User(name));
            }
        }
    }
    if !groups {
        return Ok(found);
    }
    let left: Vec<&String> = dns
        .iter()
        .filter(|(n, _)| !found.contains_key(*n))
        .map(|(_, dn)| dn)
        .collect();
    if left.is_empty() {
        return Ok(found);
    }
    let group_attrs = vec![
        plan.mapper.attributes().group_name.clone(),
        plan.mapper.membership_attr().to_owned(),
    ];
    let filters = batch_filters(plan.group_filter, plan.group_bases, &left);
    for e in run_batches(s, filters, &group_attrs).await? {
        let Some(norm) = normalize_dn(&e.dn) else {
            continue;
        };
        if dns.contains_key(&norm) && !found.contains_key(&norm) {
            found.insert(norm, Found::Group(plan.mapper.member_dns_of(&e)));
        }
    }
    Ok(found)
}

/// The member names of each group in `groups` (their `member` DNs), nested groups expanded
/// to `plan.nesting` levels, sorted and without duplicates. `Err` when any search failed.
pub async fn member_names<S: Searcher>(
    s: &S,
    plan: &Plan<'_>,
    groups: &[Vec<String>],
) -> DirResult<Vec<Vec<String>>> {
    let mut known: HashMap<String, Found> = HashMap::new();
    let mut looked_up: HashSet<String> = HashSet::new();
    let mut frontier: HashMap<String, String> = HashMap::new();
    for dn in groups.iter().flatten() {
        if let Some(n) = normalize_dn(dn) {
            frontier.entry(n).or_insert_with(|| dn.clone());
        }
    }
    // Breadth first: level 1 holds the groups' own members; a group met at level L <=
    // nesting has its members resolved at level L + 1.
    let mut level = 1u32;
    while !frontier.is_empty() {
        frontier.retain(|n, _| !looked_up.contains(n));
        looked_up.extend(frontier.keys().cloned());
        let found = resolve(s, plan, &frontier, level <= plan.nesting).await?;
        let mut next = HashMap::new();
        for (n, f) in found {
            if let Found::Group(members) = &f {
                for dn in members {
                    if let Some(m) = normalize_dn(dn) {
                        if !looked_up.contains(&m) {
                            next.entry(m).or_insert_with(|| dn.clone());
                        }
                    }
                }
            }
            known.insert(n, f);
        }
        if level > plan.nesting {
            break;
        }
        frontier = next;
        level += 1;
    }
    let mut out = Vec::with_capacity(groups.len());
    for dns in groups {
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        let mut missing = 0usize;
        collect(
            &known,
            plan.nesting,
            dns,
            1,
            &mut seen,
            &mut names,
            &mut missing,
        );
        if missing > 0 {
            debug!(
                missing,
                "member DNs name no user or group under the configured bases; not members"
            );
        }
        names.sort_unstable();
        names.dedup();
        out.push(names);
    }
    Ok(out)
}

fn collect(
    known: &HashMap<String, Found>,
    nesting: u32,
    dns: &[String],
    level: u32,
    seen: &mut HashSet<String>,
    names: &mut Vec<String>,
    missing: &mut usize,
) {
    for dn in dns {
        let Some(n) = normalize_dn(dn) else {
            *missing += 1;
            continue;
        };
        match known.get(&n) {
            Some(Found::User(name)) => names.push(name.clone()),
            Some(Found::Group(members)) if level <= nesting => {
                if seen.insert(n) {
                    collect(known, nesting, members, level + 1, seen, names, missing);
                }
            }
            Some(Found::Group(_)) => {}
            None => *missing += 1,
        }
    }
}

/// The groups that hold `user_dn` as a member, and (to `plan.nesting` levels) the groups
/// that hold those: initgroups under RFC 2307bis. `Err` when any search failed.
pub async fn memberships_of<S: Searcher>(
    s: &S,
    plan: &Plan<'_>,
    user_dn: &str,
) -> DirResult<Vec<Membership>> {
    let attr = plan.mapper.membership_attr().to_owned();
    let attrs = plan.mapper.group_attrs(false);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let first = filter::equality(plan.group_filter, &attr, user_dn);
    let mut entries = s
        .search_all(plan.group_bases, &first, &attrs, false)
        .await?;
    let mut level = 0u32;
    loop {
        let mut parents_of = Vec::new();
        for e in entries {
            let Some(norm) = normalize_dn(&e.dn) else {
                continue;
            };
            if !seen.insert(norm) {
                continue;
            }
            match plan.mapper.membership(&e) {
                Ok(m) => out.push(m),
                Err(why) => debug!(dn = %e.dn, reason = %why, "skipped group entry"),
            }
            parents_of.push(e.dn);
        }
        if level >= plan.nesting || parents_of.is_empty() {
            return Ok(out);
        }
        level += 1;
        let mut filters = Vec::new();
        for chunk in parents_of.chunks(BATCH) {
            let mut f = format!("(&{}(|", plan.group_filter);
            for dn in chunk {
                f.push_str(&format!("({attr}={})", filter::escape(dn)));
            }
            f.push_str("))");
            filters.extend(plan.group_bases.iter().map(|b| (b.clone(), f.clone())));
        }
        entries = run_batches(s, filters, &attrs).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DirError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use toolforge_nss_config::{AttributeMap, Schema};

    #[test]
    fn dns_normalise_across_case_spaces_and_escapes() {
        let a = normalize_dn("uid=Alice,ou=People,dc=x").unwrap();
        assert_eq!(Some(a.clone()), normalize_dn("UID=alice, ou=people,DC=X"));
        assert_eq!(Some(a), normalize_dn("uid=\\41lice,ou=people,dc=x"));
        assert_ne!(
            normalize_dn("cn=a\\,b,dc=x"),
            normalize_dn("cn=a,b=c,dc=x"),
            "an escaped comma is part of the value"
        );
        assert_eq!(
            first_ava("cn=Tool Labs\\2c Inc,dc=x"),
            Some(("cn".into(), "tool labs, inc".into()))
        );
        assert_eq!(normalize_dn("=x,dc=y"), None);
        assert_eq!(normalize_dn("cn=#0401,dc=y"), None);
    }

    #[test]
    fn batches_group_by_rdn_attribute_and_base_and_escape_values() {
        let dns: Vec<String> = (0..250)
            .map(|i| format!("uid=u{i},ou=p,dc=x"))
            .chain([
                "cn=a*b,OU=P,dc=x".to_string(),
                "uid=z,ou=elsewhere,dc=y".to_string(),
            ])
            .collect();
        let refs: Vec<&String> = dns.iter().collect();
        let bases = vec!["ou=p,dc=x".to_string(), "ou=q,dc=x".to_string()];
        let f = batch_filters("(objectClass=posixAccount)", &bases, &refs);
        assert_eq!(
            f.len(),
            4,
            "3 batches of uid, one of cn, all under ou=p only"
        );
        assert!(f.iter().all(|(b, _)| b == "ou=p,dc=x"));
        assert!(f.iter().any(|(_, f)| f.contains("(cn=a\\2ab)")));
        assert!(f
            .iter()
            .all(|(_, f)| f.starts_with("(&(objectClass=posixAccount)(|")));
        assert!(is_under("a=b\u{1}dc=x", "dc=x"));
        assert!(!is_under("a=b\u{1}xdc=x", "dc=x"));
    }

    /// A directory in memory: entries by DN; filters are OR lists of `attr=value`.
    struct Mem {
        entries: Vec<RawEntry>,
        searches: AtomicUsize,
        fail: bool,
    }

    impl Searcher for Mem {
        async fn search_all(
            &self,
            _bases: &[String],
            filter: &str,
            _attrs: &[String],
            _listing: bool,
        ) -> DirResult<Vec<RawEntry>> {
            self.searches.fetch_add(1, Ordering::Relaxed);
            if self.fail {
                return Err(DirError::Failed("size limit".into()));
            }
            let class = if filter.contains("posixGroup") {
                "posixgroup"
            } else {
                "posixaccount"
            };
            let terms: Vec<(String, String)> = filter
                .split('(')
                .filter_map(|t| t.trim_end_matches(')').split_once('='))
                .filter(|(a, _)| !a.eq_ignore_ascii_case("objectClass"))
                .map(|(a, v)| {
                    (
                        a.to_ascii_lowercase(),
                        v.replace("\\2c", ",").to_lowercase(),
                    )
                })
                .collect();
            Ok(self
                .entries
                .iter()
                .filter(|e| {
                    e.attrs
                        .get("objectclass")
                        .is_some_and(|c| c.iter().any(|c| c.eq_ignore_ascii_case(class)))
                })
                .filter(|e| {
                    terms.iter().any(|(a, v)| {
                        e.attrs
                            .get(a)
                            .is_some_and(|vals| vals.iter().any(|x| x.to_lowercase() == *v))
                    })
                })
                .cloned()
                .collect())
        }
    }

    fn directory() -> Mem {
        let user = |dn: &str, uid: &str| {
            RawEntry::of(dn, &[("objectClass", &["posixAccount"]), ("uid", &[uid])])
        };
        let group = |dn: &str, cn: &str, members: &[&str]| {
            RawEntry::of(
                dn,
                &[
                    ("objectClass", &["posixGroup"]),
                    ("cn", &[cn]),
                    ("gidNumber", &["7"]),
                    ("member", members),
                ],
            )
        };
        Mem {
            entries: vec![
                user("uid=alice,ou=people,dc=x", "alice"),
                RawEntry::of(
                    "cn=Bob Jones,ou=people,dc=x",
                    &[
                        ("objectClass", &["posixAccount"]),
                        ("uid", &["bob"]),
                        ("cn", &["Bob Jones"]),
                    ],
                ),
                user("uid=carol,ou=people,dc=x", "carol"),
                user("uid=dave,ou=people,dc=x", "dave"),
                group(
                    "cn=top,ou=groups,dc=x",
                    "top",
                    &[
                        "uid=Alice,ou=people,dc=x",
                        "cn=mid,ou=groups,dc=x",
                        "uid=ghost,ou=people,dc=x",
                    ],
                ),
                group(
                    "cn=mid,ou=groups,dc=x",
                    "mid",
                    &["cn=bob jones,ou=people,dc=x", "cn=low,ou=groups,dc=x"],
                ),
                group(
                    "cn=low,ou=groups,dc=x",
                    "low",
                    &["uid=carol,ou=people,dc=x", "cn=deep,ou=groups,dc=x"],
                ),
                group(
                    "cn=deep,ou=groups,dc=x",
                    "deep",
                    &["uid=dave,ou=people,dc=x", "cn=top,ou=groups,dc=x"],
                ),
            ],
            searches: AtomicUsize::new(0),
            fail: false,
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn top_members(dir: &Mem, mapper: &Mapper, nesting: u32) -> DirResult<Vec<String>> {
        let bases = vec!["dc=x".to_string()];
        let plan = Plan {
            mapper,
            user_bases: &bases,
            group_bases: &bases,
            user_filter: "(objectClass=posixAccount)",
            group_filter: "(objectClass=posixGroup)",
            nesting,
        };
        let top = dir.entries[4].attrs["member"].clone();
        run(member_names(dir, &plan, &[top])).map(|mut v| v.remove(0))
    }

    #[test]
    fn members_are_entry_names_nested_to_the_configured_level() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let dir = directory();
        assert_eq!(top_members(&dir, &mapper, 0).unwrap(), vec!["alice"]);
        assert_eq!(top_members(&dir, &mapper, 1).unwrap(), vec!["alice", "bob"]);
        assert_eq!(
            top_members(&dir, &mapper, 2).unwrap(),
            vec!["alice", "bob", "carol"]
        );
        assert_eq!(
            top_members(&dir, &mapper, 9).unwrap(),
            vec!["alice", "bob", "carol", "dave"],
            "a cycle back to the top ends"
        );
    }

    #[test]
    fn a_failed_search_fails_the_member_list() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let mut dir = directory();
        dir.fail = true;
        assert!(top_members(&dir, &mapper, 2).is_err());
    }

    #[test]
    fn initgroups_climbs_parent_groups_to_the_nesting_level() {
        let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
        let dir = directory();
        let bases = vec!["dc=x".to_string()];
        let names = |nesting| {
            let plan = Plan {
                mapper: &mapper,
                user_bases: &bases,
                group_bases: &bases,
                user_filter: "(objectClass=posixAccount)",
                group_filter: "(objectClass=posixGroup)",
                nesting,
            };
            let mut v: Vec<String> = run(memberships_of(&dir, &plan, "uid=carol,ou=people,dc=x"))
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(0), vec!["low"]);
        assert_eq!(names(1), vec!["low", "mid"]);
        assert_eq!(names(2), vec!["low", "mid", "top"]);
        assert_eq!(names(5), vec!["deep", "low", "mid", "top"]);
    }
}
