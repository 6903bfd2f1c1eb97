#!/usr/bin/env bash
# Installs what the local stack (scripts/stack.sh) needs besides the Go programs that
# scripts/build-go-tool.sh builds from the Go module proxy (etcd, kube-apiserver, ESO):
# openssl and curl from Debian, moto from PyPI, and checks that Go and kubectl are there.
# Idempotent and quick when everything is present: apt and pip are only
# called for what is missing. Non-interactive (CI=true, no stdin).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# moto is pinned: scripts/moto_launcher.py monkeypatches its SNS internals.
MOTO_VERSION=5.2.1

APT_PACKAGES=(
  openssl
  curl
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

"$(dirname "${BASH_SOURCE[0]}")/apt-ensure.sh" "${APT_PACKAGES[@]}"

command -v kubectl >/dev/null 2>&1 \
  || die "kubectl not found on PATH (expected /usr/bin/kubectl; it is not installable from apt here)"
command -v go >/dev/null 2>&1 \
  || die "go not found on PATH (this machine kind has Go 1.26; scripts/build-go-tool.sh needs it)"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
((${go_minor:-0} >= 26)) || die "Go $(go env GOVERSION) is too old: the stack's modules need Go 1.26"

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"

moto_ok() {
  "$PYTHON" - "$MOTO_VERSION" <<'PY' 2>/dev/null
import sys
import importlib.metadata as md
import boto3, flask, werkzeug, cryptography  # noqa: F401  (flask/werkzeug: moto[server])
import moto.server  # noqa: F401
sys.exit(0 if md.version("moto") == sys.argv[1] else 1)
PY
}

if moto_ok; then
  log "python: moto[server]==$MOTO_VERSION and boto3 present"
else
  log "python: installing moto[server]==$MOTO_VERSION boto3"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" boto3 \
    || die "pip install moto[server]==$MOTO_VERSION boto3 failed"
  moto_ok || die "moto[server]==$MOTO_VERSION still not importable after pip install"
fi
