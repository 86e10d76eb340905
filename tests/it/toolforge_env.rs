//! A Toolforge-shaped RFC 2307bis directory (tests/src/toolforge.rs) generated once per test
//! binary, and daemons configured as Toolforge runs them: `rfc2307bis`, the whole-tree base.

use std::sync::OnceLock;

use toolforge_nss_tests::fixture::Fixture;
use toolforge_nss_tests::toolforge::ToolforgeShape;

/// The directory, generated once.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture::toolforge(ToolforgeShape::test()))
}

pub use toolforge_nss_tests::toolforge::daemon_config as config;
