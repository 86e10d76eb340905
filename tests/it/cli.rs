//! `toolforge-nssd --check-config` and refusal of a bad config at start.

use std::process::Command;

use toolforge_nss_tests::paths::daemon_bin;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(daemon_bin())
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_accepts_good_and_names_the_fault_in_bad() {
    let good = "[ldap]\nuri = [\"ldap://127.0.0.1:3389\"]\nbase = \"dc=wikimedia,dc=org\"\n";
    let (ok, out) = check(good);
    assert!(ok, "{out}");
    assert!(out.contains("ok"));
    let (ok, out) = check(&format!("{good}[cache]\nnegative_ttl_secs = -1\n"));
    assert!(!ok);
    assert!(
        out.contains("negative_ttl_secs") && out.contains("c.toml"),
        "{out}"
    );
    let (ok, out) = check(&format!("{good}[policy]\nmin_id = 0\n"));
    assert!(!ok);
    assert!(out.contains("policy.min_id") && out.contains('0'), "{out}");
    let (ok, out) = check(&format!("{good}[daemon]\nsocket = \"/x\"\n"));
    assert!(!ok);
    assert!(out.contains("socket"), "{out}");
}

#[test]
fn a_bad_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[ldap]\nuri = [\"http://x\"]\nbase = \"dc=x\"\n").unwrap();
    let out = Command::new(daemon_bin())
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ldap.uri") && err.contains("http://x"),
        "{err}"
    );
}
