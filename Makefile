# toolforge-nss: the two commands a new user needs, and a few more.
#   make demo   throwaway slapd + daemon + getent/id through the module, then stop all
#   make test   everything CI runs (unit, property, integration and end-to-end tests)

CARGO ?= cargo

.PHONY: demo test deps build release module image lint bench bench-sss fuzz package package-test

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --all-targets

# The daemon and CLI as `cargo build --release` makes them, and the module as releases ship
# it: against the glibc 2.17 baseline, stripped (scripts/build-module.sh; the plain
# target/release/libnss_toolforge.so is a development build against the host's glibc).
release: deps
	$(CARGO) build --release --workspace
	./scripts/build-module.sh

module: deps
	./scripts/build-module.sh

# The daemon's container image (deploy/Containerfile) from the release binaries, offline.
image: release
	./scripts/build-image.sh

demo: deps release
	./target/release/toolforge-nss-demo

# The integration tests run the built daemon and module, so build them first; the image tests
# load the release module (built as releases are) inside Debian root filesystems.
test: deps build module
	$(CARGO) test --workspace

# Also checks every manifest in deploy/ against the Kubernetes API schema, offline.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	./scripts/validate-manifests.sh

# A .deb with the daemon, the CLI, the module (as libnss_toolforge.so.2), the unit and the
# example config; package-test builds it and checks what it ships, then builds and tests the
# daemon's image.
package: release
	command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) deb -p toolforge-nssd --no-build

package-test: deps
	./scripts/test-deb.sh
	./scripts/test-image.sh

# toolforge-nss beside SSSD, nslcd and nscd (those installed) on one directory, in one run.
bench: deps release
	./bench/run.sh

# libnss_sss (unchanged images) against toolforge-nssd's SSSD socket beside SSSD itself.
bench-sss: deps release
	./bench/sss-compat.sh

load: deps release
	./target/release/toolforge-nss-load --threads 200 --seconds 30

fuzz:
	cd protocol/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode_response -- -max_total_time=60
