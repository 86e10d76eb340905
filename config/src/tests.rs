use super::*;
use std::path::Path;

const MINIMAL: &str = r#"
[ldap]
uri = ["ldap://127.0.0.1:3389"]
base = "dc=wikimedia,dc=org"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/toolforge-nss/config.toml"))
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.ldap.schema, Schema::Rfc2307);
    assert_eq!(c.daemon.runtime_dir, Path::new("/run/toolforge-nss"));
    assert_eq!(c.daemon.cache_dir, Path::new("/var/cache/toolforge-nss"));
    assert_eq!(c.policy.filter_users, vec!["root"]);
    assert_eq!(c.policy.filter_groups, vec!["root"]);
    assert!(!c.cache.enumerate);
    assert_eq!(c.ldap.user_bases(), vec!["dc=wikimedia,dc=org"]);
    assert_eq!(c.ldap.users.filter, "(objectClass=posixAccount)");
    assert_eq!(c.ldap.attributes.member_uid, "memberUid");
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
[ldap]
uri = ["ldap://a:389", "ldaps://b"]
base = "dc=wikimedia,dc=org"
schema = "rfc2307bis"
bind_dn = "cn=proxy,dc=wikimedia,dc=org"
bind_password_file = "/etc/toolforge-nss/bindpw"
[ldap.users]
bases = ["ou=people,dc=wikimedia,dc=org", "ou=people,ou=servicegroups,dc=wikimedia,dc=org"]
filter = "(objectClass=posixAccount)"
[ldap.groups]
bases = ["ou=groups,dc=wikimedia,dc=org", "ou=servicegroups,dc=wikimedia,dc=org"]
filter = "(objectClass=posixGroup)"
[ldap.attributes]
member = "uniqueMember"
[daemon]
runtime_dir = "/tmp/tf"
[cache]
enumerate = true
negative_ttl_secs = 0
[policy]
override_homedir = "/home/%u"
default_shell = "/bin/bash"
min_id = 500
"#,
    )
    .unwrap();
    assert_eq!(c.ldap.schema, Schema::Rfc2307bis);
    assert_eq!(c.ldap.group_bases().len(), 2);
    assert_eq!(c.ldap.attributes.member, "uniqueMember");
    assert_eq!(
        c.policy.override_homedir.unwrap().expand("a", 1, ""),
        "/home/a"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = error_of(&format!("{MINIMAL}\n[cache]\npositive_ttl = 5\n"));
    assert!(e.contains("positive_ttl"), "{e}");
    assert!(e.contains("/etc/toolforge-nss/config.toml"), "{e}");
    let e = error_of(&format!("{MINIMAL}\n[nss]\nx = 1\n"));
    assert!(e.contains("nss"), "{e}");
}

#[test]
fn invalid_values_name_key_value_and_reason() {
    let cases = [
        (
            "[ldap]\nuri = []\nbase = \"dc=x\"",
            "ldap.uri",
            "at least one",
        ),
        (
            "[ldap]\nuri = [\"http://x\"]\nbase = \"dc=x\"",
            "ldap.uri",
            "ldap://",
        ),
        (
            "[ldap]\nuri = [\"ldap://x:0\"]\nbase = \"dc=x\"",
            "ldap.uri",
            "port",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"wikimedia\"",
            "ldap.base",
            "not a DN",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\nbind_dn = \"cn=a,dc=x\"",
            "ldap.bind_dn",
            "bind_password_file",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[ldap.users]\nfilter = \"(uid=*\"",
            "ldap.users.filter",
            "unterminated",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[ldap.groups]\nfilter = \"(objectClass=posixGroup)(cn=x)\"",
            "ldap.groups.filter",
            "after the filter",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[ldap.users]\nfilter = \"(&(objectClass=posixAccount)(uid))\"",
            "ldap.users.filter",
            "comparison",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[ldap.users]\nfilter = \"(cn=a\\\\zz)\"",
            "ldap.users.filter",
            "escape",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\ngroup_nesting_level = 99",
            "ldap.group_nesting_level",
            "between",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[cache]\ngroup_ttl_secs = 0",
            "cache.group_ttl_secs",
            "between",
        ),
        (
            "[ldap]\nuri = [\"ldaps://x\"]\nbase = \"dc=x\"\nstarttls = true",
            "ldap.starttls",
            "already TLS",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[policy]\nmin_id = 0",
            "policy.min_id",
            "id 0",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[policy]\nfilter_users = [\"ro ot\"]",
            "policy.filter_users",
            "\"ro ot\"",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[cache]\nmax_entries = 0",
            "cache.max_entries",
            "between",
        ),
        (
            "[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\n[daemon]\nruntime_dir = \"run\"",
            "daemon.runtime_dir",
            "absolute",
        ),
    ];
    for (text, key, why) in cases {
        let e = error_of(text);
        assert!(e.contains(key) && e.contains(why), "{text:?} gave {e}");
    }
}

#[test]
fn bad_templates_and_schema_are_refused_at_parse_time() {
    let e = error_of(&format!(
        "{MINIMAL}\n[policy]\noverride_homedir = \"/home/%q\"\n"
    ));
    assert!(e.contains("%q"), "{e}");
    let e = error_of("[ldap]\nuri = [\"ldap://x\"]\nbase = \"dc=x\"\nschema = \"ad\"");
    assert!(e.contains("schema") || e.contains("rfc2307"), "{e}");
}

#[test]
fn the_example_config_is_valid_and_documents_every_default() {
    let c = parse(include_str!("../example.toml")).unwrap();
    assert_eq!(c.daemon, DaemonConfig::default());
    assert_eq!(c.cache, CacheConfig::default());
    assert_eq!(c.policy, PolicyConfig::default());
    assert_eq!(c.metrics, MetricsConfig::default());
    assert_eq!(c.mirror, MirrorConfig::default());
    assert_eq!(c.ldap.attributes, AttributeMap::default());
    assert_eq!(c.ldap.connect_timeout_ms, 2000);
    assert_eq!(c.ldap.search_timeout_ms, 5000);
    assert_eq!(c.ldap.bind_timeout_ms, 2000);
    assert_eq!(c.ldap.reconnect_max_ms, 30000);
    assert_eq!(c.ldap.failback_interval_secs, 30);
    assert_eq!(c.ldap.page_size, 500);
    assert_eq!(c.ldap.group_nesting_level, 2);
}

#[test]
fn real_filters_parse() {
    for f in [
        "(objectClass=posixAccount)",
        "(&(objectClass=posixAccount)(!(uid=root))(|(uidNumber>=1000)(cn=a*b*)))",
        "(&(objectClass=posixGroup)(cn=tools.\\2a))",
        "(uid:caseExactMatch:=alice)",
        "(:dn:2.4.6.8.10:=Dino)",
        "(&)",
        "(cn~=bob)",
    ] {
        assert!(crate::validate::parse_filter(f).is_ok(), "{f}");
    }
    for f in ["objectClass=x", "(a=(b))", "((a=b))", "(a>=b*)", "(=x)", ""] {
        assert!(crate::validate::parse_filter(f).is_err(), "{f}");
    }
}

#[test]
fn missing_file_names_the_file() {
    let e = Config::load(Path::new("/nonexistent/tf.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/tf.toml"), "{e}");
}

#[test]
fn load_reads_a_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    assert!(Config::load(&path).is_ok());
}

#[test]
fn sss_compat_dir_is_off_by_default_and_checked_when_set() {
    assert_eq!(parse(MINIMAL).unwrap().daemon.sss_compat_dir, None);
    let with = |v: &str| format!("{MINIMAL}\n[daemon]\nsss_compat_dir = {v:?}\n");
    assert_eq!(
        parse(&with("/run/tf-sss")).unwrap().daemon.sss_compat_dir,
        Some("/run/tf-sss".into())
    );
    for (value, reason) in [
        ("relative/dir", "absolute"),
        ("/run/toolforge-nss", "of its own"),
        ("/run/toolforge-nss-admin", "of its own"),
    ] {
        let e = error_of(&with(value));
        assert!(
            e.contains("daemon.sss_compat_dir") && e.contains(value) && e.contains(reason),
            "{value}: {e}"
        );
    }
    let long = format!("/{}", "d".repeat(110));
    assert!(error_of(&with(&long)).contains("too long"));
}

#[test]
fn mirror_section_parses_and_is_checked() {
    let c = parse(&format!("{MINIMAL}[mirror]\nenabled = true\nmode = \"poll\"\npoll_interval_secs = 2\nfull_refresh_secs = 10\n")).unwrap();
    assert!(c.mirror.enabled);
    assert_eq!(c.mirror.mode, MirrorMode::Poll);
    assert_eq!(c.mirror.poll_interval_secs, 2);
    let e = error_of(&format!(
        "{MINIMAL}[mirror]\npoll_interval_secs = 60\nfull_refresh_secs = 10\n"
    ));
    assert!(e.contains("mirror.full_refresh_secs"), "{e}");
    let e = error_of(&format!("{MINIMAL}[mirror]\nmode = \"push\"\n"));
    assert!(e.contains("mode") || e.contains("syncrepl"), "{e}");
}
