#!/bin/sh
# Builds the NSS module exactly as releases ship it: `cargo zigbuild --profile module` for
# x86_64-unknown-linux-gnu.2.17, i.e. linked against glibc 2.17's symbol versions, so one
# module loads in every glibc image from 2.17 up; stripped, LTO (Cargo.toml [profile.module]).
# Output: target/x86_64-unknown-linux-gnu/module/libnss_toolforge.so (installed as
# libnss_toolforge.so.2). Installs the pinned toolchain first (install-build-tools.sh).
# `cargo build --release` still builds a development module against the host's glibc.
#   ARCH=aarch64 builds for arm64 instead (needs `rustup target add aarch64-unknown-linux-gnu`).
set -eu
cd "$(dirname "$0")/.."
arch=${ARCH:-x86_64}
bin=$(./scripts/install-build-tools.sh)
# cargo-zigbuild finds zig through `python3 -m ziglang`: the venv's python3 first.
PATH=$bin:$PATH cargo-zigbuild zigbuild --profile module -p nss-toolforge \
    --target "$arch-unknown-linux-gnu.2.17" >&2
out=target/$arch-unknown-linux-gnu/module/libnss_toolforge.so
[ -f "$out" ] || { echo "build-module: $out was not built" >&2; exit 1; }
echo "$out"
