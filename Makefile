# Set-up commands named in the README: `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build release test lint fmt clippy demo bench chaos e2e clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p listener-bin

## Unit and integration tests: real HTTP against the simulator's fakes.
test:
	$(CARGO) test --workspace --all-targets

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
