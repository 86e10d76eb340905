//! Test harness for toolforge-nss: a deterministic directory ([`fixture`]), a throwaway slapd
//! on a loopback port ([`slapd`]), the daemon under test ([`daemon`]), a protocol client for
//! talking to its socket directly ([`client`]), and real `getent`/`id` through the module in a
//! private mount namespace ([`nss`]). Everything started here is stopped on drop, and killed
//! by the kernel if the test process dies first.

pub mod client;
pub mod daemon;
pub mod fixture;
pub mod nss;
pub mod paths;
pub mod process;
pub mod slapd;
pub mod tls;
pub mod toolforge;
