//! The integration and end-to-end tests: one binary, one small harness (`toolforge_nss_tests`).
//! Each module owns one area; `env` holds the slapd + daemon pairs shared by read-only tests.

mod admin;
mod cache_file;
mod cache_policy;
mod cli;
mod directory_limits;
mod e2e;
mod enumerate;
mod env;
mod lifecycle;
mod maps;
mod module_abi;
mod ops;
mod protocol_abuse;
mod resilience;
mod rfc2307bis;
mod security;
mod singleflight;
mod tls;
mod toolforge_env;
