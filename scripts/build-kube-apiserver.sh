#!/usr/bin/env bash
# Prints the absolute path of a kube-apiserver v1.20.2 binary (last stdout
# line: the path only; progress goes to stderr), building it from Debian
# bookworm's `kubernetes` source package when the cache lacks it.
#
# Cache: ${SSM_RESYNC_CACHE:-$HOME/.cache/ssm-resync}/kube-apiserver-<debian
# source version>/kube-apiserver. Cold build ~3.5 min on 2 cores, ~1.3 GB of
# build tree, removed afterwards. Concurrent callers serialise on a flock; the
# binary is moved into place atomically, so a reader never sees half a file.
#
# Why the build looks like this (see shared/DESIGN.md, "The local stack"):
# - GOPATH mode with src/k8s.io/kubernetes -> tree and `make WHAT=...`:
#   plain `go build -mod=vendor` fails on this tree.
# - Vendored reflect2 and json-iterator are replaced by Debian's newer
#   copies: with the vendored ones (built by go 1.19) the server crashes on
#   the first custom-resource write.
# - apt-get runs with a private source list, lists dir and cache, so the
#   system's apt configuration and state are left untouched.
set -euo pipefail

DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
KUBE_GIT_VERSION=v1.20.2
GO_BIN=/usr/lib/go-1.19/bin
GOCODE=/usr/share/gocode/src

CACHE_ROOT=${SSM_RESYNC_CACHE:-$HOME/.cache/ssm-resync}
CACHE_DIR=$CACHE_ROOT/kube-apiserver-$DEB_VERSION
BINARY=$CACHE_DIR/kube-apiserver
LOCK=$CACHE_DIR.lock
LOG=$CACHE_DIR.build.log

log() { printf 'build-kube-apiserver: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

binary_ok() {
  [[ -x $1 ]] && "$1" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_GIT_VERSION"
}

# Fast path: no lock needed to read a binary that was moved in atomically.
if binary_ok "$BINARY"; then
  printf '%s\n' "$BINARY"
  exit 0
fi

command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)"
mkdir -p "$CACHE_ROOT"
exec 9>"$LOCK"
if ! flock -n 9; then
  log "another build holds $LOCK; waiting for it"
  flock 9
fi
# Someone else may have built it while we waited.
if binary_ok "$BINARY"; then
  printf '%s\n' "$BINARY"
  exit 0
fi

missing=()
[[ -x $GO_BIN/go ]] || missing+=(golang-1.19-go)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v dpkg-source >/dev/null 2>&1 || missing+=(dpkg-dev)
[[ -d $GOCODE/github.com/modern-go/reflect2 ]] || missing+=(golang-github-modern-go-reflect2-dev)
[[ -d $GOCODE/github.com/json-iterator/go ]] || missing+=(golang-github-json-iterator-go-dev)
((${#missing[@]} == 0)) || die "missing ${missing[*]}: run scripts/install-deps.sh first"

# We hold the lock, so any build dir left here was abandoned by a killed run.
rm -rf "$CACHE_DIR".build.*
WORK=$(mktemp -d "$CACHE_DIR.build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

: >"$LOG"
log "building kube-apiserver $KUBE_GIT_VERSION from Debian source $DEB_VERSION (log: $LOG)"
start=$SECONDS

fail() {
  log "error: $*; last lines of $LOG:"
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

# --- fetch the source with a private apt configuration -------------------
APT_DIR=$WORK/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
cat >"$APT_DIR/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SRC
APT_OPTS=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  -o APT::Sandbox::User=root
  -o Acquire::Retries=3
)
export DEBIAN_FRONTEND=noninteractive

log "apt-get update (private lists)"
apt-get "${APT_OPTS[@]}" update >>"$LOG" 2>&1 || fail "apt-get update with the private deb-src list failed"

# Say which suite holds the version (bookworm, -updates or -security).
suite=$(apt-cache "${APT_OPTS[@]}" madison kubernetes 2>>"$LOG" \
  | awk -F'|' -v v="$DEB_VERSION" '{gsub(/ /,"",$2)} $2==v && /Sources/ {print $3; exit}')
[[ -n $suite ]] || fail "no suite in the private deb-src list holds kubernetes $DEB_VERSION"
log "kubernetes $DEB_VERSION found in:$suite"

log "apt-get source kubernetes=$DEB_VERSION"
(cd "$WORK" && apt-get "${APT_OPTS[@]}" source -q "kubernetes=$DEB_VERSION") >>"$LOG" 2>&1 \
  || fail "apt-get source kubernetes=$DEB_VERSION failed"
TREE=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
[[ -n $TREE && -f $TREE/Makefile ]] || fail "no unpacked kubernetes tree in $WORK"
# The tarballs are no longer needed; the build tree is big enough.
rm -f "$WORK"/kubernetes_*

# --- swap in Debian's reflect2 and json-iterator ---------------------------
for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  [[ -d $TREE/vendor/$pkg ]] || fail "vendor/$pkg missing in the source tree"
  rm -rf "${TREE:?}/vendor/$pkg"
  cp -rL "$GOCODE/$pkg" "$TREE/vendor/$pkg"
done

# --- build in GOPATH mode ------------------------------------------------
GOPATH_DIR=$WORK/gopath
mkdir -p "$GOPATH_DIR/src/k8s.io"
ln -s "$TREE" "$GOPATH_DIR/src/k8s.io/kubernetes"
log "make WHAT=cmd/kube-apiserver (takes a few minutes)"
(
  cd "$GOPATH_DIR/src/k8s.io/kubernetes"
  env -u GOFLAGS -u GOROOT -u GOBIN \
    PATH="$GO_BIN:$PATH" \
    GOPATH="$GOPATH_DIR" \
    GOCACHE="$WORK/gocache" \
    GO111MODULE=off \
    GOPROXY=off \
    CGO_ENABLED=0 \
    KUBE_GIT_VERSION="$KUBE_GIT_VERSION" \
    KUBE_GIT_TREE_STATE=clean \
    make WHAT=cmd/kube-apiserver </dev/null
) >>"$LOG" 2>&1 || fail "make WHAT=cmd/kube-apiserver failed"

built=$(find "$TREE/_output" -type f -name kube-apiserver -perm -u+x 2>/dev/null | head -n 1)
[[ -n $built ]] || fail "make succeeded but no kube-apiserver binary under $TREE/_output"
binary_ok "$built" || fail "built binary does not report Kubernetes $KUBE_GIT_VERSION: $("$built" --version 2>&1 || true)"

mkdir -p "$CACHE_DIR"
cp "$built" "$BINARY.tmp.$$"
mv -f "$BINARY.tmp.$$" "$BINARY"
log "built in $((SECONDS - start)) s: $BINARY"
printf '%s\n' "$BINARY"
