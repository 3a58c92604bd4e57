#!/usr/bin/env bash
# A real OTLP collector (rotel, from PyPI) receives the listener's job spans over OTLP/HTTP on
# loopback; its debug output must show runner.queue, runner.startup and runner.execution with
# the trace, parent and span ids the id scheme derives from each job. Run once per scheme:
# otel-explorer through OTEL_ENDPOINT=host:port, runner-contract through
# OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port (the standard variables), gzip-compressed
# (OTEL_EXPORTER_OTLP_COMPRESSION=gzip): the collector must decompress every export.
source "$(dirname "$0")/common.sh"

ROTEL="$("$PY" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
[ -x "$ROTEL" ] || { log "rotel-agent not found at $ROTEL (pip install rotel)"; exit 1; }
log "rotel $("$ROTEL" version 2>&1 | tail -n 1)"

build_binaries

run_scheme() {
    local scheme="$1" mode="$2"
    local http_port grpc_port out="$WORK/$scheme-rotel.log"
    http_port="$(free_port)"
    grpc_port="$(free_port)"
    # Debug exporter only (blackhole backend): every span received is printed with its ids.
    "$ROTEL" start \
        --otlp-http-endpoint "127.0.0.1:$http_port" \
        --otlp-grpc-endpoint "127.0.0.1:$grpc_port" \
        --exporter blackhole \
        --debug-log traces --debug-log-verbosity detailed \
        --batch-timeout 100ms \
        --pid-file "$WORK/$scheme-rotel.pid" --log-file "$WORK/$scheme-rotel-agent.log" \
        >"$out" 2>&1 &
    local rotel_pid=$!
    E2E_PIDS+=("$rotel_pid")
    wait_for "rotel on 127.0.0.1:$http_port" grep -q "Starting Rotel" "$out"

    local metrics_port
    metrics_port="$(free_port)"
    start_simulator "otel-$scheme" "127.0.0.1:$metrics_port"
    local endpoint_env
    if [ "$mode" = seed ]; then
        endpoint_env=(OTEL_ENDPOINT="127.0.0.1:$http_port" OTEL_EXPORTER_OTLP_INSECURE=true)
    else
        endpoint_env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$http_port"
            OTEL_EXPORTER_OTLP_COMPRESSION=gzip)
    fi
    start_listener "otel-$scheme" "$SIM_DIR/config.json" \
        "${endpoint_env[@]}" GHALISTENER_OTEL_ID_SCHEME="$scheme" OTEL_SERVICE_NAME=ghalistener-e2e

    wait_workload_done
    # Every completed job of the workload must arrive with its three spans.
    "$PY" tests/e2e-deploy/check_otel.py --output "$out" --scheme "$scheme" \
        --min-jobs "$SIM_COMPLETED" --wait "$E2E_TIMEOUT"
    # A clean SIGTERM flushes what is queued; everything received must still check out.
    stop_listener
    sleep 1
    "$PY" tests/e2e-deploy/check_otel.py --output "$out" --scheme "$scheme" --min-jobs "$SIM_COMPLETED"
    grep -q "service.name: Str(ghalistener-e2e)" "$out" || { log "resource service.name not exported"; return 1; }
    if [ "$mode" = standard ]; then
        # The spans above arrived gzip-compressed: the exporter says so when it starts.
        grep -q 'compression=Gzip' "$WORK/otel-$scheme-listener.log" ||
            { log "the exporter did not use gzip"; return 1; }
    fi
    stop_simulator
    kill -TERM "$rotel_pid" 2>/dev/null || true
    wait "$rotel_pid" 2>/dev/null || true
}

run_scheme otel-explorer seed
run_scheme runner-contract standard

E2E_OK=1
log "otel: OK"
