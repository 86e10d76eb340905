#!/usr/bin/env bash
# Builds the daemon's image (scripts/build-image.sh, offline) and tests it: the files it
# ships, `--version` through a container runtime where one can run here, and the daemon in the
# image's root filesystem starting, dropping privileges and answering (tests/it/daemon_image.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
image=$(./scripts/build-image.sh localhost/toolforge-nssd:test)
echo "image: $image"
if out=$(podman run --rm --network=none "$image" --version 2>&1); then
    echo "podman run: $out"
else
    echo "podman run cannot run a container on this machine ($out); testing the image's root filesystem instead"
fi
TOOLFORGE_NSS_IMAGE=$image cargo test -p toolforge-nss-tests --test it -- daemon_image:: 2>&1 | tee /tmp/toolforge-nss-image-test.txt
grep -q '^test result: ok. 1 passed' /tmp/toolforge-nss-image-test.txt
