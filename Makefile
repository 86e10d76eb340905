# toolforge-nss: the two commands a new user needs, and a few more.
#   make demo   throwaway slapd + daemon + getent/id through the module, then stop all
#   make test   everything CI runs (unit, property, integration and end-to-end tests)

CARGO ?= cargo

.PHONY: demo test deps build release lint bench fuzz

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --workspace

demo: deps release
	./target/release/toolforge-nss-demo

# The integration tests run the built daemon and module, so build them first.
test: deps build
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps release
	./bench/run.sh

fuzz:
	cd protocol/fuzz && $(CARGO) fuzz run decode_response -- -max_total_time=60
