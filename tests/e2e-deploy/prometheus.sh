#!/usr/bin/env bash
# Debian's Prometheus scrapes ghalistener running against the simulator; its HTTP API must
# return the gha_* series with the values the listener exposes, and `promtool check metrics`
# must pass on the exposition. The scrape job is deploy/prometheus/prometheus.yaml's, with
# Kubernetes discovery replaced by a static target carrying the same __meta labels a listener
# pod has, so the relabelling rules users deploy are the ones exercised here.
# Prometheus runs with exemplar storage on, so it scrapes OpenMetrics; the job-duration
# buckets' exemplars (trace ids; spans are on, towards a port where nothing listens) must be
# stored and queryable.
source "$(dirname "$0")/common.sh"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    log "installing Debian's prometheus"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # policy-rc.d-less containers: the package may fail to start its service; only the
    # binaries are used here.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi
log "$(prometheus --version 2>&1 | head -n 1)"

promtool check rules deploy/prometheus/alerts.yaml

build_binaries
METRICS_PORT="$(free_port)"
start_simulator prom "127.0.0.1:$METRICS_PORT"
# Spans on (exemplars carry their trace ids); no collector: the exports fail, the ids stay.
start_listener prom "$SIM_DIR/config.json" \
    OTEL_ENDPOINT="127.0.0.1:$(free_port)" OTEL_EXPORTER_OTLP_INSECURE=true
wait_for "listener metrics on 127.0.0.1:$METRICS_PORT" http_ok "http://127.0.0.1:$METRICS_PORT/metrics"

PROM_PORT="$(free_port)"
"$PY" tests/e2e-deploy/prometheus_config.py \
    --deploy-config deploy/prometheus/prometheus.yaml \
    --target "127.0.0.1:$METRICS_PORT" \
    --listener-config "$SIM_DIR/config.json" \
    --out "$WORK/prometheus.yaml"
promtool check config "$WORK/prometheus.yaml"

prometheus \
    --config.file="$WORK/prometheus.yaml" \
    --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" \
    --enable-feature=exemplar-storage \
    --log.level=warn >"$WORK/prometheus.log" 2>&1 &
E2E_PIDS+=($!)
wait_for "prometheus ready" http_ok "http://127.0.0.1:$PROM_PORT/-/ready"
wait_workload_done

"$PY" tests/e2e-deploy/check_prometheus.py \
    --listener "http://127.0.0.1:$METRICS_PORT/metrics" \
    --prometheus "http://127.0.0.1:$PROM_PORT" \
    --listener-config "$SIM_DIR/config.json" \
    --expect-started "$SIM_STARTED" --expect-completed "$SIM_COMPLETED" \
    --expect-exemplars \
    --timeout "$E2E_TIMEOUT"

E2E_OK=1
log "prometheus: OK"
