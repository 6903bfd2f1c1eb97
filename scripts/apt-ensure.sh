#!/usr/bin/env bash
# Installs the named Debian packages that are not installed yet (apt-get update first, and
# only when something is missing); quick when all are present. Run as root, or with
# passwordless sudo. Used by scripts/install-deps.sh and scripts/image.sh.
#
# Usage: scripts/apt-ensure.sh PACKAGE...
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf 'apt-ensure: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

(($#)) || { sed -n 's/^# Usage: //p' "${BASH_SOURCE[0]}" >&2; exit 2; }

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
for pkg in "$@"; do
  apt_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  # Another source (unreachable mirror) failing must not stop us: the
  # install below fails clearly if a package really cannot be found.
  as_root apt-get update -qq || log "warning: apt-get update reported errors; trying the install anyway"
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
else
  log "all present: $*"
fi
