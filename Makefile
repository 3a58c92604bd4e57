# Set-up commands named in the README: `make demo` and `make test`.
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build release test lint fmt clippy demo e2e bench chaos clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p listener-bin

## The listener against the built-in simulator (no cluster, no GitHub): scaling decisions,
## spans and metrics printed as they happen; ends by itself with a summary.
demo:
	$(CARGO) build -p listener-bin -p simulator --bins
	$(TARGET_DIR)/debug/gha-simulator demo --listener $(TARGET_DIR)/debug/ghalistener

## Unit, integration and end-to-end tests: real HTTP against the simulator's fakes.
test:
	$(CARGO) test --workspace --all-targets

## Deployment suites with real programs: Helm's engine, Prometheus, an OTLP collector.
e2e:
	bash .ci/deploy-tests.sh all

## Benchmarks on the simulator: prints a table, writes docs/benchmarks.json and the results
## section of docs/benchmarks.md. BENCH_ARGS=--quick for a short smoke run (CI).
bench:
	$(CARGO) run --release -p bench -- $(BENCH_ARGS)

## Reliability: fault injection against the real binary, secrets scan, property tests,
## cargo-deny and fuzzing; figures in docs/reliability.md.
chaos:
	bash .ci/chaos.sh

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
