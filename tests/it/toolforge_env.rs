//! A Toolforge-shaped RFC 2307bis directory (tests/src/toolforge.rs) generated once per test
//! binary, and daemons configured as Toolforge runs them: `rfc2307bis`, the whole-tree base.

use std::path::Path;
use std::sync::OnceLock;

use toolforge_nss_tests::fixture::{Fixture, BASE};
use toolforge_nss_tests::toolforge::ToolforgeShape;

/// The directory, generated once.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture::toolforge(ToolforgeShape::test()))
}

/// A daemon config for Toolforge: rfc2307bis and the whole tree as the base of every map.
pub fn config(uri: &str, run: &Path, cache: &Path, ldap_extra: &str, extra: &str) -> String {
    format!(
        "[ldap]\nuri = [\"{uri}\"]\nbase = \"{BASE}\"\nschema = \"rfc2307bis\"\nsearch_timeout_ms = 30000\n{ldap_extra}\
         [daemon]\nruntime_dir = {:?}\ncache_dir = {:?}\nadmin_dir = {:?}\n{extra}",
        run.display().to_string(),
        cache.display().to_string(),
        run.with_file_name("admin").display().to_string(),
    )
}
