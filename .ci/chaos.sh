#!/usr/bin/env bash
# Reliability suite (issue 8, docs/reliability.md): property tests of the parsers, the quick
# fault scenarios and the secrets scan, the long chaos scenarios (run concurrently, a few
# minutes: a 90 s session conflict, a minute of 20% faults...), cargo-deny (licenses, bans,
# sources) and, when a nightly toolchain is present, a short libFuzzer run of each fuzz target.
# Installs what it needs once (cargo-deny, cargo-fuzz); figures go to $CHAOS_REPORT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

report_dir="${CHAOS_REPORT_DIR:-${CARGO_TARGET_DIR:-target}/chaos-report}"
mkdir -p "$report_dir"
CHAOS_REPORT_DIR="$(cd "$report_dir" && pwd)"
export CHAOS_REPORT_DIR
rm -f "$CHAOS_REPORT_DIR"/*.json
fuzz_seconds="${CHAOS_FUZZ_SECONDS:-20}"

echo "== property tests (message, config and workflow-ref parsers)"
cargo test -p github-client --test prop_messages
cargo test -p listener-bin --test prop_config
cargo test -p recorders --test prop_workflow_ref

echo "== quick fault scenarios and the secrets scan"
cargo test -p listener-bin --test reliability --test secrets -- --nocapture

echo "== chaos scenarios (concurrent)"
# No repeat on failure: a red run is a finding to investigate. (The 20% scenario, which
# once flaked, now judges its end state by what the fake's statistics dictate.)
cargo test -p listener-bin --test reliability -- --ignored --nocapture --test-threads=8

echo "== cargo deny: licenses, bans, sources (advisories need GitHub, unreachable offline)"
if ! command -v cargo-deny >/dev/null 2>&1; then
    cargo install cargo-deny --locked
fi
cargo deny check licenses bans sources

echo "== fuzz targets"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    # Instrumented builds apart from the workspace's, so neither invalidates the other.
    fuzz_target_dir="$(pwd)/${CARGO_TARGET_DIR:-target}/fuzz"
    case "${CARGO_TARGET_DIR:-}" in /*) fuzz_target_dir="$CARGO_TARGET_DIR/fuzz" ;; esac
    for target in queue_message config workflow_ref; do
        corpus="$(mktemp -d)"
        cp fuzz/corpus/"$target"/* "$corpus"/
        (cd fuzz && CARGO_TARGET_DIR="$fuzz_target_dir" cargo +nightly fuzz run -O "$target" "$corpus" -- \
            -max_total_time="$fuzz_seconds" -max_len=65536 -rss_limit_mb=2048)
        rm -rf "$corpus"
    done
else
    echo "no nightly toolchain: libFuzzer needs -Z sanitizer; checking that the targets compile"
    cargo check --manifest-path fuzz/Cargo.toml
fi

echo "== figures ($CHAOS_REPORT_DIR)"
for f in "$CHAOS_REPORT_DIR"/*.json; do
    [ -e "$f" ] || continue
    printf '%s: %s\n' "$(basename "$f" .json)" \
        "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$f" 2>/dev/null || cat "$f")"
done
