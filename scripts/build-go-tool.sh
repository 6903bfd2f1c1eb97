#!/usr/bin/env bash
# Prints the absolute path of one Go program of the local stack (last stdout line: the path
# only; progress goes to stderr), building it from the Go module proxy when the cache lacks it.
#
# Usage: scripts/build-go-tool.sh TOOL[@VERSION]   TOOL: etcd | kube-apiserver | external-secrets | helm
#        scripts/build-go-tool.sh --all     (the stack's three, prints nothing but progress)
#        scripts/build-go-tool.sh --version TOOL[@VERSION]
#        scripts/build-go-tool.sh --versions TOOL   (every version there is a wrapper for, default first)
#
# Each tool is built from a small wrapper module under stack/go/ (go.mod + go.sum, committed):
# the upstream modules replace their sibling modules with local folders, which
# `go install MODULE@VERSION` refuses, so the wrapper requires the release and repeats those
# replaces with published versions. The version is read from the wrapper's go.mod, the one
# place to bump it.
#
# Versions: etcd, kube-apiserver and helm have one wrapper each (stack/go/etcd, kubernetes,
# helm). The External Secrets Operator has one wrapper per minor line the stack can run,
# stack/go/external-secrets-vMAJOR.MINOR/ (today v0.20 and v0.16): `external-secrets` alone
# means $STACK_ESO_VERSION when set (an exact version, e.g. v0.16.2), else the default line's
# release (ESO_DEFAULT_LINE below); `external-secrets@v0.16.2` names one. --all builds ESO the
# same way. TOOL@VERSION of another tool must name its wrapper's version.
#
# Cache: ${SSM_RESYNC_CACHE:-$HOME/.cache/ssm-resync}/<tool>-<version>/<tool>, plus what the
# stack needs from the module next to it (ESO's CRD bundle, deploy/crds/bundle.yaml of that
# release). Cold builds take minutes on two cores, many more when other builds share them
# (2026-12-06, load average 6-11 on the 2 cores: etcd v3.7.0 152 s for 561 packages, helm
# v4.3.2 486 s for 1183, ESO v0.20.4 1049 s for 2259, kube-apiserver v1.37.2 1037 s for 2079)
# and several GiB of module cache (Go's, shared) and build cache (per build, deleted after
# it); a progress line is printed every 20 s. Concurrent callers serialise on a flock;
# binaries are moved into place atomically.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname "$SCRIPTS")
GO_DIR=$REPO/stack/go
CACHE_ROOT=${SSM_RESYNC_CACHE:-$HOME/.cache/ssm-resync}
TOOLS=(etcd kube-apiserver external-secrets)
# The ESO line the stack runs unless STACK_ESO_VERSION says otherwise.
ESO_DEFAULT_LINE=v0.20

log() { printf 'build-go-tool: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# tool -> module path, package to build.
spec() {
  case $1 in
    kube-apiserver) echo "k8s.io/kubernetes k8s.io/kubernetes/cmd/kube-apiserver" ;;
    etcd) echo "go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3" ;;
    external-secrets) echo "github.com/external-secrets/external-secrets github.com/external-secrets/external-secrets" ;;
    helm) echo "helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm" ;;
    *) return 1 ;;
  esac
}

# tool -> its wrapper folders under stack/go, the default first.
wrapper_dirs() {
  local d
  case $1 in
    kube-apiserver) echo kubernetes ;;
    etcd) echo etcd ;;
    helm) echo helm ;;
    external-secrets)
      echo "external-secrets-$ESO_DEFAULT_LINE"
      for d in "$GO_DIR"/external-secrets-v*/; do
        d=$(basename "$d")
        [[ $d == "external-secrets-$ESO_DEFAULT_LINE" ]] || echo "$d"
      done
      ;;
    *) return 1 ;;
  esac
}

# The version the wrapper's go.mod requires of the module.
version_of() {
  local dir=$1 module=$2 v
  [[ -f $GO_DIR/$dir/go.mod ]] || die "no wrapper module $GO_DIR/$dir/go.mod"
  v=$(awk -v m="$module" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' \
    "$GO_DIR/$dir/go.mod" | head -n 1)
  [[ -n $v ]] || die "$GO_DIR/$dir/go.mod does not require $module"
  printf '%s\n' "$v"
}

# resolve TOOL[@VERSION]: prints "tool dir module pkg version". Without @VERSION: the default
# wrapper's version (for external-secrets, $STACK_ESO_VERSION when set).
resolve() {
  local tool=${1%%@*} want="" line module pkg dir v dirs have=()
  [[ $1 == *@* ]] && want=${1#*@}
  [[ -z $want && $tool == external-secrets ]] && want=${STACK_ESO_VERSION:-}
  line=$(spec "$tool") || die "unknown tool '$tool' (one of: ${TOOLS[*]} helm)"
  read -r module pkg <<<"$line"
  dirs=$(wrapper_dirs "$tool")
  for dir in $dirs; do
    v=$(version_of "$dir" "$module")
    if [[ -z $want || $v == "$want" ]]; then
      printf '%s %s %s %s %s\n' "$tool" "$dir" "$module" "$pkg" "$v"
      return 0
    fi
    have+=("$v")
  done
  die "no wrapper for $tool $want under $GO_DIR (there are: ${have[*]})"
}

# Version stamping, so `--version` and the API server's /version tell the truth.
ldflags_of() {
  local tool=$1 module=$2 v=$3 minor
  case $tool in
    kube-apiserver)
      minor=${v#v1.}
      minor=${minor%%.*}
      printf -- '-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z' "$v" "$minor"
      ;;
    # Helm 4 keeps it where Helm 3 did, under its own module path (its Makefile's LDFLAGS).
    helm) printf -- '-s -w -X %s/internal/version.version=%s -X %s/internal/version.gitTreeState=clean' "$module" "$v" "$module" ;;
    *) printf -- '-s -w' ;;
  esac
}

# A binary in the cache is complete (moved in atomically) and of the right version.
binary_ok() {
  local tool=$1 bin=$2 v=$3
  [[ -x $bin ]] || return 1
  # The output is read whole before matching: `"$bin" --version | grep -q` under pipefail
  # fails when grep exits at the first match and the binary dies of SIGPIPE on its next line
  # (etcd prints four).
  local out
  case $tool in
    kube-apiserver) out=$("$bin" --version 2>/dev/null) && grep -qx "Kubernetes $v" <<<"$out" ;;
    etcd) out=$("$bin" --version 2>/dev/null) && grep -q "etcd Version: ${v#v}" <<<"$out" ;;
    external-secrets) [[ -s $(dirname "$bin")/bundle.yaml ]] ;;
    helm) out=$("$bin" version --template '{{.Version}}' 2>/dev/null) && [[ $out == "$v" ]] ;;
    *) return 0 ;;
  esac
}

# Prints the cached binary's path, building it first if needed.
build() {
  local tool dir module pkg v cache bin spec_line
  spec_line=$(resolve "$1") || exit 1
  read -r tool dir module pkg v <<<"$spec_line"
  cache=$CACHE_ROOT/$tool-$v
  bin=$cache/$tool
  if binary_ok "$tool" "$bin" "$v"; then
    printf '%s\n' "$bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found on PATH (Go 1.26 is expected on this machine)"
  command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)"
  mkdir -p "$CACHE_ROOT"
  local lock=$cache.lock
  exec 9>"$lock"
  if ! flock -n 9; then
    log "$tool $v: another build holds $lock; waiting for it"
    flock 9
  fi
  if binary_ok "$tool" "$bin" "$v"; then
    exec 9>&-
    printf '%s\n' "$bin"
    return 0
  fi
  mkdir -p "$cache"
  local buildlog=$cache.build.log t0=$SECONDS
  (
    cd "$GO_DIR/$dir"
    export CGO_ENABLED=0 GOFLAGS=-trimpath GOTOOLCHAIN=local
    # A build cache of our own, dropped once the binary is in place: it reaches several GiB
    # for kube-apiserver and is never read again (the binary is cached by version), and CI
    # machines have little disk to spare.
    export GOCACHE=$cache.go-build
    log "$tool $v: downloading modules (go mod download; cached in $(go env GOMODCACHE))"
    go mod download >"$buildlog" 2>&1 || { tail -n 20 "$buildlog" >&2; die "$tool: go mod download failed"; }
    local total
    total=$(go list -deps "$pkg" 2>>"$buildlog" | wc -l)
    log "$tool $v: compiling $total packages (cold: minutes on 2 cores; log: $buildlog)"
    go build -v -ldflags "$(ldflags_of "$tool" "$module" "$v")" -o "$bin.tmp" "$pkg" 2>>"$buildlog" &
    local pid=$! n
    while kill -0 "$pid" 2>/dev/null; do
      sleep 20 &
      wait $! || true
      if kill -0 "$pid" 2>/dev/null; then
        n=$(grep -cv '^go: ' "$buildlog" || true)
        log "$tool $v: $n/$total packages compiled, $((SECONDS - t0)) s"
      fi
    done
    wait "$pid" || { tail -n 30 "$buildlog" >&2; die "$tool: go build failed (full log: $buildlog)"; }
    if [[ $tool == external-secrets ]]; then
      local mdir
      mdir=$(go list -m -f '{{.Dir}}' "$module")
      install -m 0644 "$mdir/deploy/crds/bundle.yaml" "$cache/bundle.yaml.tmp"
      mv "$cache/bundle.yaml.tmp" "$cache/bundle.yaml"
    fi
  )
  mv "$bin.tmp" "$bin"
  chmod -R u+w "$cache.go-build" 2>/dev/null || true
  rm -rf "$cache.go-build"
  binary_ok "$tool" "$bin" "$v" || die "$tool: the built $bin does not report version $v"
  log "$tool $v: built in $((SECONDS - t0)) s -> $bin"
  exec 9>&-
  printf '%s\n' "$bin"
}

case ${1:-} in
  --all)
    for t in "${TOOLS[@]}"; do build "$t" >/dev/null; done
    ;;
  --version)
    line=$(resolve "${2:-}") || exit 1
    read -r _ _ _ _ v <<<"$line"
    printf '%s\n' "$v"
    ;;
  --versions)
    line=$(spec "${2:-}") || die "unknown tool '${2:-}'"
    read -r module _ <<<"$line"
    for dir in $(wrapper_dirs "$2"); do version_of "$dir" "$module"; done
    ;;
  "" | -h | --help)
    sed -n '/^# Usage:/,/^#        scripts\/build-go-tool.sh --versions/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
  *) build "$1" ;;
esac
