//! Test harness for toolforge-nss: a deterministic directory ([`fixture`]), a throwaway slapd
//! on a loopback port ([`slapd`]), the daemon under test ([`daemon`]), a protocol client for
//! talking to its socket directly ([`client`]), and real `getent`/`id` through the module in a
//! private mount namespace ([`nss`]; through SSSD's client: [`sss`]), and programs inside
//! real Debian root filesystems with the base-image recipe applied ([`rootfs`]). Everything
//! started here is stopped on drop, and killed
//! by the kernel if the test process dies first.

pub mod client;
pub mod daemon;
pub mod fakeldap;
pub mod fixture;
pub mod nss;
pub mod paths;
pub mod process;
pub mod rootfs;
pub mod slapd;
pub mod sss;
pub mod tls;
pub mod toolforge;
