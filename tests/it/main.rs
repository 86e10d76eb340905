//! The integration and end-to-end tests: one binary, one small harness (`toolforge_nss_tests`).
//! Each module owns one area; `env` holds the slapd + daemon pairs shared by read-only tests.

mod admin;
mod admission;
mod cache_file;
mod cache_policy;
mod cli;
mod daemon_image;
mod directory_limits;
mod directory_pool;
mod e2e;
mod enumerate;
mod env;
mod images;
mod lifecycle;
mod maps;
mod mirror;
mod module_abi;
mod ops;
mod protocol_abuse;
mod release_module;
mod resilience;
mod rfc2307bis;
mod security;
mod singleflight;
mod sss_compat;
mod takeover;
mod tenancy;
mod tls;
mod toolforge_env;
