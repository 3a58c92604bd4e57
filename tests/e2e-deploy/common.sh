# Shared by prometheus.sh and otel.sh (sourced, not run).
#
# Contract with the rest of the workspace:
# - `gha-simulator serve --dir DIR` (package `simulator`) starts the fake Actions service and
#   the fake Kubernetes API on loopback, writes DIR/config.json (a listener config as ARC's
#   controller would; --metrics-addr sets its metrics_addr) and DIR/kubeconfig, prints
#   `READY ...`, runs a scripted workload of jobs, prints
#   `DONE queued=N started=N completed=N ... timed_out=false` and lingers.
# - `ghalistener` (package `listener-bin`) runs with LISTENER_CONFIG_PATH and KUBECONFIG.
# Everything listens on 127.0.0.1 only.

set -euo pipefail

E2E_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$E2E_ROOT"
VENV="${DEPLOY_VENV:-.e2e/venv-deploy}"
PY="$VENV/bin/python"
TARGET_DIR="${CARGO_TARGET_DIR:-$E2E_ROOT/target}"
BIN_DIR="$TARGET_DIR/debug"
# Generous: a loaded 2-core machine may be slow; these bound waits, they are not asserted.
E2E_TIMEOUT="${E2E_TIMEOUT:-240}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/e2e-deploy.XXXXXX")"
E2E_PIDS=()
E2E_OK=0

log() { printf '[e2e-deploy %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

e2e_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${E2E_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$E2E_OK" = 1 ] && [ -z "${E2E_KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        log "logs kept in $WORK"
        local f
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $f (last 40 lines)" >&2
            tail -n 40 "$f" >&2
        done
    fi
}
trap e2e_cleanup EXIT

# A free TCP port on 127.0.0.1 (asked from the kernel, then released).
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND every second until it succeeds.
wait_for() {
    local what="$1"
    shift
    local deadline=$((SECONDS + E2E_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            log "timed out waiting for $what"
            return 1
        fi
        sleep 1
    done
}

# http_ok URL: a 2xx answer within 5 s (python, so curl is not required).
http_ok() {
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1"
}

# E2E_SKIP_BUILD=1: use the binaries already in $BIN_DIR.
build_binaries() {
    if [ -z "${E2E_SKIP_BUILD:-}" ]; then
        log "building ghalistener and gha-simulator (debug)"
        cargo build --quiet -p listener-bin --bin ghalistener -p simulator --bin gha-simulator
    fi
    [ -x "$BIN_DIR/ghalistener" ] || { log "missing $BIN_DIR/ghalistener"; return 1; }
    [ -x "$BIN_DIR/gha-simulator" ] || { log "missing $BIN_DIR/gha-simulator"; return 1; }
}

# start_simulator NAME METRICS_ADDR [FLAG...]: `gha-simulator serve` into $WORK/NAME, with
# the listener's metrics address written into its config.json; the fakes linger after the
# workload so the listener's final state can be checked. Sets SIM_DIR, SIM_PID, SIM_LOG.
start_simulator() {
    local name="$1" metrics_addr="$2"
    shift 2
    SIM_DIR="$WORK/$name"
    SIM_LOG="$WORK/$name-simulator.log"
    mkdir -p "$SIM_DIR"
    # The simulator would put OTEL_ENDPOINT into config.json; the suites pass it to the
    # listener as the chart does, through the environment.
    env -u OTEL_ENDPOINT "$BIN_DIR/gha-simulator" serve --dir "$SIM_DIR" \
        --metrics-addr "$metrics_addr" --linger-seconds 1800 "$@" >"$SIM_LOG" 2>&1 &
    SIM_PID=$!
    E2E_PIDS+=("$SIM_PID")
    wait_for "simulator READY ($SIM_LOG)" grep -q '^READY ' "$SIM_LOG"
    test -s "$SIM_DIR/config.json" && test -s "$SIM_DIR/kubeconfig"
    log "simulator up: $SIM_DIR"
}

# wait_workload_done: wait for the simulator's DONE line; sets SIM_STARTED, SIM_COMPLETED.
wait_workload_done() {
    wait_for "the simulator's workload to finish ($SIM_LOG)" grep -q '^DONE ' "$SIM_LOG"
    local done_line
    done_line="$(grep '^DONE ' "$SIM_LOG" | tail -n 1)"
    log "simulator: $done_line"
    case "$done_line" in
        *timed_out=true*) log "the simulator's workload timed out"; return 1 ;;
    esac
    SIM_STARTED="$(sed -n 's/.* started=\([0-9]*\).*/\1/p' <<<"$done_line")"
    SIM_COMPLETED="$(sed -n 's/.* completed=\([0-9]*\).*/\1/p' <<<"$done_line")"
}

# start_listener NAME CONFIG [ENV=VALUE...]: run ghalistener in the background.
start_listener() {
    local name="$1" config="$2"
    shift 2
    env LISTENER_CONFIG_PATH="$config" KUBECONFIG="$SIM_DIR/kubeconfig" "$@" \
        "$BIN_DIR/ghalistener" >"$WORK/$name-listener.log" 2>&1 &
    LISTENER_PID=$!
    E2E_PIDS+=("$LISTENER_PID")
    log "listener started (pid $LISTENER_PID)"
}

# stop_listener: SIGTERM, as the kubelet does; the listener must exit 0 within the 60 s
# grace period ARC gives its pod.
stop_listener() {
    kill -TERM "$LISTENER_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 60)) rc=0
    while kill -0 "$LISTENER_PID" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            log "listener did not exit within 60 s of SIGTERM"
            return 1
        fi
        sleep 1
    done
    wait "$LISTENER_PID" 2>/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        log "listener exited with status $rc after SIGTERM"
        return 1
    fi
}

stop_simulator() {
    kill -TERM "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
}
