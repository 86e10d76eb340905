//! TLS to the directory, against a slapd given certificates the test makes: `ldaps://` and
//! StartTLS with the right CA work; an unknown CA, a certificate for another host name, or a
//! server without StartTLS are refused (no fallback to plain text); a CA file without a
//! certificate is refused at start.

use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::query;
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::slapd::Slapd;
use toolforge_nss_tests::tls::TlsFiles;

fn ca_key(path: &std::path::Path) -> String {
    format!("tls_ca_file = {:?}\n", path.display().to_string())
}

#[test]
fn ldaps_and_starttls_verify_the_certificate_and_host_name() {
    let tls = TlsFiles::generate();
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let (cert, key) = tls.server();
    let slapd = Slapd::start_tls(&f, Some((&tls.ca(), &cert, &key)));
    let user = f.developer(true);
    let ask = |d: &Daemon| query(&d.socket(), &Request::GetPwNam(user.name.clone()));

    let ldaps = Daemon::start_tuned(
        &[slapd.ldaps_uri()],
        Schema::Rfc2307,
        &ca_key(&tls.ca()),
        "",
    );
    assert!(
        matches!(ask(&ldaps), Response::Passwd(_)),
        "ldaps://:\n{}",
        ldaps.log()
    );

    let starttls = Daemon::start_tuned(
        &[slapd.uri()],
        Schema::Rfc2307,
        &format!("{}starttls = true\n", ca_key(&tls.ca())),
        "",
    );
    assert!(
        matches!(ask(&starttls), Response::Passwd(_)),
        "StartTLS:\n{}",
        starttls.log()
    );

    let unknown_ca = Daemon::start_tuned(
        &[slapd.ldaps_uri()],
        Schema::Rfc2307,
        &ca_key(&tls.other_ca()),
        "",
    );
    assert_eq!(ask(&unknown_ca), Response::Unavailable);
    let log = unknown_ca.log();
    assert!(
        log.contains("directory server unusable") && log.contains("UnknownIssuer"),
        "a clear reason:\n{log}"
    );
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let tls = TlsFiles::generate();
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let (cert, key) = tls.wrong_host();
    let slapd = Slapd::start_tls(&f, Some((&tls.ca(), &cert, &key)));
    let d = Daemon::start_tuned(
        &[slapd.ldaps_uri()],
        Schema::Rfc2307,
        &ca_key(&tls.ca()),
        "",
    );
    assert_eq!(
        query(&d.socket(), &Request::GetGrNam("wikidev".into())),
        Response::Unavailable
    );
    assert!(
        d.log()
            .contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        d.log()
    );
}

#[test]
fn starttls_to_a_server_without_tls_fails_instead_of_falling_back() {
    let tls = TlsFiles::generate();
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let plain = Slapd::start(&f);
    let d = Daemon::start_tuned(
        &[plain.uri()],
        Schema::Rfc2307,
        &format!("{}starttls = true\n", ca_key(&tls.ca())),
        "",
    );
    assert_eq!(
        query(&d.socket(), &Request::GetGrNam("wikidev".into())),
        Response::Unavailable
    );
    assert_eq!(
        plain.searches_containing("wikidev"),
        0,
        "nothing was sent in plain text"
    );
}

#[test]
fn a_ca_file_without_certificates_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let (status, out) = Daemon::refuses(
        &["ldaps://127.0.0.1:1".into()],
        Schema::Rfc2307,
        &ca_key(&empty),
    );
    assert!(!status.success());
    assert!(
        out.contains("ldap.tls_ca_file") && out.contains("no PEM certificate"),
        "{out}"
    );
}
