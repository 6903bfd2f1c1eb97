#!/usr/bin/env bash
# Installs what the local stack (scripts/stack.sh) needs: etcd, the toolchain
# that builds kube-apiserver v1.20.2 from Debian's source package, and moto.
# Idempotent and quick when everything is present: apt and pip are only
# called for what is missing. Non-interactive (CI=true, no stdin).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# moto is pinned: scripts/moto_launcher.py monkeypatches its SNS internals.
MOTO_VERSION=5.2.1

APT_PACKAGES=(
  etcd-server
  golang-1.19-go
  rsync
  dpkg-dev
  golang-github-modern-go-reflect2-dev
  golang-github-json-iterator-go-dev
  openssl
  curl
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}

apt_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  apt_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  # Another source (unreachable mirror) failing must not stop us: the
  # install below fails clearly if a package really cannot be found.
  as_root apt-get update -qq || log "warning: apt-get update reported errors; trying the install anyway"
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
else
  log "apt: all packages present"
fi

command -v kubectl >/dev/null 2>&1 \
  || die "kubectl not found on PATH (expected /usr/bin/kubectl; it is not installable from apt here)"

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
