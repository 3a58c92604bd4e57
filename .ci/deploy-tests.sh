#!/usr/bin/env bash
# Deployment checks (issue 6): the Helm chart, and, when asked, Prometheus and an
# OpenTelemetry collector against the listener running on the simulator.
#
#   .ci/deploy-tests.sh            # helm (always cheap: ~5 s once the venv exists)
#   .ci/deploy-tests.sh all        # helm + prometheus + otel (builds the binaries)
#   .ci/deploy-tests.sh prometheus otel
#
# Python packages go into a venv (idempotent), DEPLOY_VENV, default .e2e/venv-deploy.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${DEPLOY_VENV:-.e2e/venv-deploy}"
export DEPLOY_VENV="$VENV"

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$(dirname "$VENV")"
        python3 -m venv "$VENV"
    fi
    local reqs=(-r tests/helm/requirements.txt)
    if [ "${1:-}" = e2e ]; then
        reqs+=(-r tests/e2e-deploy/requirements.txt)
    fi
    # pip is a no-op when the pinned versions are already there.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${reqs[@]}"
}

run_helm() {
    echo "== deploy: helm chart (render, lint, schema, Kubernetes validation)"
    ensure_venv
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/helm
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=(helm)
elif [ "${steps[0]}" = all ]; then
    steps=(helm prometheus otel)
fi

for step in "${steps[@]}"; do
    case "$step" in
        helm) run_helm ;;
        prometheus)
            echo "== deploy: prometheus scrapes the listener"
            ensure_venv e2e
            tests/e2e-deploy/prometheus.sh
            ;;
        otel)
            echo "== deploy: rotel receives the listener's spans"
            ensure_venv e2e
            tests/e2e-deploy/otel.sh
            ;;
        *)
            echo "unknown step: $step (helm, prometheus, otel, all)" >&2
            exit 2
            ;;
    esac
done
