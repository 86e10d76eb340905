#!/bin/sh
# Builds the daemon's image from deploy/Containerfile, offline: imports the cached Debian
# minbase root filesystem of SUITE (scripts/make-rootfs.sh) as the base image
# localhost/toolforge-nss-base:SUITE, stages target/release/{toolforge-nssd,toolforge-nssctl}
# and config/example.toml, and runs `podman build --network=none --pull=never`.
# Prints the image name. Build the release binaries first (`make image` does).
#   usage: scripts/build-image.sh [TAG]   (TOOLFORGE_NSS_IMAGE_SUITE: base suite, default bookworm)
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image=${1:-localhost/toolforge-nssd:$version}
suite=${TOOLFORGE_NSS_IMAGE_SUITE:-bookworm}
command -v podman >/dev/null 2>&1 || { echo "build-image: podman is not installed (scripts/install-deps.sh)" >&2; exit 1; }
for f in target/release/toolforge-nssd target/release/toolforge-nssctl; do
    [ -x "$f" ] || { echo "build-image: $f is missing: cargo build --release --workspace" >&2; exit 1; }
done
base=localhost/toolforge-nss-base:$suite
if ! podman image exists "$base"; then
    root=$(./scripts/make-rootfs.sh "$suite")
    tar -C "$root" --exclude=./.complete -c . | podman import --quiet - "$base" >/dev/null
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp target/release/toolforge-nssd target/release/toolforge-nssctl "$ctx/"
cp config/example.toml "$ctx/config.toml"
podman build --quiet --network=none --pull=never --build-arg "BASE=$base" \
    -f deploy/Containerfile -t "$image" "$ctx" >&2
echo "$image"
