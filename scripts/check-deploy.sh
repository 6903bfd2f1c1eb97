#!/usr/bin/env bash
# Checks of everything that deploys ssm-resync: infra/ (Terraform), k8s/ (kustomize),
# k8s/monitoring (Prometheus rules, dashboard) and the Dockerfile. Called by `make test`;
# runs alone too. Non-interactive (CI=true, no stdin); exits non-zero if any check fails.
#
#   1. tools: promtool + prometheus (apt), and two Python venvs (pip): checkov, and
#      python-hcl2 + pytest + PyYAML. Two venvs because checkov depends on bc-python-hcl2,
#      which installs the same `hcl2` module as python-hcl2. Idempotent: nothing is
#      installed when present. Venvs live in $SSM_RESYNC_DEPLOY_TOOLS
#      (default ~/.cache/ssm-resync/deploy-tools), outside the work tree.
#   2. `kubectl kustomize` of k8s/base, every k8s/overlays/*, k8s/monitoring; `helm lint
#      --strict` of charts/ssm-resync (default values and every ci/*-values.yaml) and
#      `helm template` of the same (helm from `scripts/build-go-tool.sh helm`, cached)
#   3. pytest tests/deploy/ (infra assertions on the parsed .tf; rendered-manifest assertions on
#      the kustomize overlays and the chart's renders, with the helm of step 2)
#   4. checkov: terraform on infra/, kubernetes on the rendered manifests (what is applied,
#      not the kustomize or Helm inputs), dockerfile; zero failed checks, every skip justified inline
#   5. promtool check rules + promtool test rules (k8s/monitoring)
#   6. terraform fmt -check, only where terraform happens to be installed (CI has none)
#   7. terraform test of infra/modules/ssm-resync (tests/*.tftest.hcl: what each `delivery`
#      plans, against a mocked AWS provider), only where terraform and a local copy of the AWS
#      provider ($TF_PLUGIN_DIR, default /opt/tf-plugins) are installed: nothing is downloaded
#
# Not here: that every metric used by the alerts and the dashboard is really exposed by the
# binary, that the manifests' args pass `serve --check-config`, RBAC against a real API
# server, and a real Prometheus scraping the binary: those are tests/stack/deploy.rs
# (`cargo test --test stack deploy::`), which needs the local stack.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export ANSI_COLORS_DISABLED=1 NO_COLOR=1 PYTHONDONTWRITEBYTECODE=1

CHECKOV_VERSION=3.3.30
PYTHON_HCL2_VERSION=8.1.4
PYTEST_VERSION=9.1.1
PYYAML_VERSION=6.0.3

PYTHON=${PYTHON:-python3}
TOOLS=${SSM_RESYNC_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ssm-resync/deploy-tools}
CHECKOV_VENV=$TOOLS/checkov-$CHECKOV_VERSION
PYTEST_VENV=$TOOLS/pytest-hcl2-$PYTHON_HCL2_VERSION-pytest-$PYTEST_VERSION-pyyaml-$PYYAML_VERSION
OUT=$REPO/target/check-deploy

log() { printf 'check-deploy: %s\n' "$*" >&2; }
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

T0=$SECONDS
declare -a SUMMARY=()
FAILED=0
summary() { SUMMARY+=("$1"); }
fail() { FAILED=$((FAILED + 1)); summary "FAIL  $1"; log "FAILED: $1"; }

# --- 1. tools ---------------------------------------------------------------------

ensure_prometheus() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    return 0
  fi
  log "apt: installing prometheus (promtool)"
  # The package lists are usually there; refresh them only when the install cannot work.
  if ! as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    as_root apt-get update -qq || log "warning: apt-get update reported errors; trying the install anyway"
    as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || die "apt-get install prometheus failed"
  fi
  command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
}

# ensure_venv DIR CHECK_PY PIP_ARGS...: (re)creates DIR when CHECK_PY fails in it.
ensure_venv() {
  local dir=$1 check=$2
  shift 2
  if [[ -x $dir/bin/python ]] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
    return 0
  fi
  log "pip: installing $* into $dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$PYTHON" -m venv "$dir" || die "$PYTHON -m venv $dir failed (Debian's python3 needs python3-venv)"
  "$dir/bin/python" -m pip install --quiet "$@" >"$dir.pip.log" 2>&1 \
    || { tail -n 20 "$dir.pip.log" >&2; rm -rf "$dir"; die "pip install $* failed"; }
  "$dir/bin/python" -c "$check" || { rm -rf "$dir"; die "$dir: '$check' fails after pip install"; }
}

tools() {
  local t=$SECONDS
  command -v kubectl >/dev/null 2>&1 || die "kubectl not found (it has kustomize built in)"
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
  ensure_prometheus
  ensure_venv "$CHECKOV_VENV" \
    "import importlib.metadata as m; assert m.version('checkov') == '$CHECKOV_VERSION'" \
    "checkov==$CHECKOV_VERSION"
  ensure_venv "$PYTEST_VENV" \
    "import importlib.metadata as m, hcl2, pytest, yaml; assert m.version('python-hcl2') == '$PYTHON_HCL2_VERSION' and m.version('pytest') == '$PYTEST_VERSION'" \
    "python-hcl2==$PYTHON_HCL2_VERSION" "pytest==$PYTEST_VERSION" "pyyaml==$PYYAML_VERSION"
  summary "ok    tools ready in $((SECONDS - t)) s (promtool $(promtool --version 2>&1 | head -n 1 | awk '{print $3}'), checkov $CHECKOV_VERSION, python-hcl2 $PYTHON_HCL2_VERSION)"
}

# --- 2. kustomize ------------------------------------------------------------------

render() {
  rm -rf "$OUT/rendered"
  mkdir -p "$OUT/rendered"
  local dirs=(k8s/base) d name n total=0 bad=0
  for d in k8s/overlays/*/; do dirs+=("${d%/}"); done
  dirs+=(k8s/monitoring)
  for d in "${dirs[@]}"; do
    name=${d#k8s/}
    name=${name//\//-}
    if kubectl kustomize "$d" >"$OUT/rendered/$name.yaml" 2>"$OUT/rendered/$name.err"; then
      n=$(grep -c '^kind:' "$OUT/rendered/$name.yaml" || true)
      total=$((total + n))
      rm -f "$OUT/rendered/$name.err"
    else
      cat "$OUT/rendered/$name.err" >&2
      bad=$((bad + 1))
      fail "kubectl kustomize $d"
    fi
  done
  ((bad == 0)) && summary "ok    kustomize: ${#dirs[@]} directories rendered, $total objects (target/check-deploy/rendered/)"
  return 0
}

# helm lint --strict and helm template of the chart, into the same folder (so checkov scans
# the Helm renders too). The comparison with the kustomize render is tests/stack/helm.rs.
HELM_BIN=
render_helm() {
  local helm f name log=$OUT/helm.log n=0 total=0
  if ! helm=$(scripts/build-go-tool.sh helm 2>"$log" | tail -n 1) || [[ ! -x $helm ]]; then
    cat "$log" >&2
    fail "scripts/build-go-tool.sh helm"
    return 0
  fi
  HELM_BIN=$helm
  for f in "" charts/ssm-resync/ci/*-values.yaml; do
    name=helm-$(basename "${f:-default}" -values.yaml)
    if ! "$helm" lint --strict charts/ssm-resync ${f:+--values "$f"} >"$log" 2>&1; then
      cat "$log" >&2
      fail "helm lint --strict charts/ssm-resync ${f:+--values $f}"
      continue
    fi
    if "$helm" template ssm-resync charts/ssm-resync --namespace ssm-resync ${f:+--values "$f"} \
      >"$OUT/rendered/$name.yaml" 2>"$log"; then
      n=$((n + 1))
      total=$((total + $(grep -c '^kind:' "$OUT/rendered/$name.yaml" || true)))
    else
      cat "$log" >&2
      fail "helm template charts/ssm-resync ${f:+--values $f}"
    fi
  done
  summary "ok    helm $("$helm" version --template '{{.Version}}'): lint --strict and template of $n values sets, $total objects"
}

# --- 3. pytest -----------------------------------------------------------------------

run_pytest() {
  local log=$OUT/pytest.log line
  # The chart's renders (tests/deploy/test_manifests.py) use the helm of step 2.
  if SSM_RESYNC_HELM=$HELM_BIN "$PYTEST_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/deploy >"$log" 2>&1; then
    line=$(tail -n 1 "$log")
    summary "ok    pytest tests/deploy: ${line//=/}"
  else
    cat "$log" >&2
    fail "pytest tests/deploy ($(tail -n 1 "$log" | tr -d '='))"
  fi
}

# --- 4. checkov ------------------------------------------------------------------------

# checkov_run LABEL ARGS...: zero failed checks required; --skip-download keeps it offline.
checkov_run() {
  local label=$1 log counts
  shift
  log=$OUT/checkov-$label.log
  if "$CHECKOV_VENV/bin/checkov" --quiet --compact --skip-download "$@" >"$log" 2>&1; then
    counts=$(grep -h 'Passed checks' "$log" | sed 's/ checks//g' | paste -sd';' -)
    summary "ok    checkov $label: ${counts:-no resources}"
  else
    cat "$log" >&2
    fail "checkov $label ($(grep -h 'Passed checks' "$log" | paste -sd';' -))"
  fi
}

run_checkov() {
  checkov_run terraform -d infra --framework terraform
  if [[ -d $OUT/rendered ]]; then
    checkov_run kubernetes -d "$OUT/rendered" --framework kubernetes
  fi
  checkov_run dockerfile -f Dockerfile --framework dockerfile
}

# --- 5. promtool -------------------------------------------------------------------------

run_promtool() {
  local log=$OUT/promtool.log n
  if promtool check rules k8s/monitoring/rules.yaml >"$log" 2>&1; then
    n=$(grep -o '[0-9]* rules found' "$log" | head -n 1)
    summary "ok    promtool check rules: $n"
  else
    cat "$log" >&2
    fail "promtool check rules k8s/monitoring/rules.yaml"
  fi
  # rule_files in the test file are relative to it.
  if (cd k8s/monitoring && promtool test rules rules_test.yaml) >"$log" 2>&1; then
    n=$(grep -cE '^ *- name:' k8s/monitoring/rules_test.yaml || true)
    summary "ok    promtool test rules: $n test groups, $(grep -c 'alertname:' k8s/monitoring/rules_test.yaml) alert evaluations"
  else
    cat "$log" >&2
    fail "promtool test rules k8s/monitoring/rules_test.yaml"
  fi
}

# --- 6. terraform fmt (optional) ------------------------------------------------------------

run_terraform_fmt() {
  if ! command -v terraform >/dev/null 2>&1; then
    summary "skip  terraform fmt -check (terraform not installed; not required)"
    return 0
  fi
  if terraform fmt -check -recursive infra >"$OUT/terraform-fmt.log" 2>&1; then
    summary "ok    terraform fmt -check infra"
  else
    cat "$OUT/terraform-fmt.log" >&2
    fail "terraform fmt -check infra (run: terraform fmt -recursive infra)"
  fi
}

# --- 7. terraform test (optional) -----------------------------------------------------------

# In a copy of infra/, so `terraform init` leaves nothing in the work tree; the provider comes
# from the local plugin directory only, and the mocked provider makes no AWS call.
run_terraform_test() {
  local plugins=${TF_PLUGIN_DIR:-/opt/tf-plugins} work=$OUT/terraform-test log=$OUT/terraform-test.log line
  if ! command -v terraform >/dev/null 2>&1; then
    summary "skip  terraform test (terraform not installed; not required)"
    return 0
  fi
  if [[ ! -d $plugins/registry.terraform.io/hashicorp/aws ]]; then
    summary "skip  terraform test (no local hashicorp/aws provider in $plugins; not required)"
    return 0
  fi
  rm -rf "$work"
  mkdir -p "$work"
  cp -R infra "$work/"
  if (
    cd "$work/infra/modules/ssm-resync" &&
      CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 terraform init -backend=false -input=false -no-color \
        -plugin-dir="$plugins" &&
      CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 terraform test -no-color
  ) >"$log" 2>&1; then
    line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    summary "ok    terraform test infra/modules/ssm-resync: ${line:-passed}"
  else
    tail -n 40 "$log" >&2
    fail "terraform test infra/modules/ssm-resync (log: target/check-deploy/terraform-test.log)"
  fi
}

mkdir -p "$OUT"
tools
render
render_helm
run_pytest
run_checkov
run_promtool
run_terraform_fmt
run_terraform_test

printf '\ncheck-deploy summary (%d s):\n' "$((SECONDS - T0))"
printf '  %s\n' "${SUMMARY[@]}"
if ((FAILED > 0)); then
  printf 'check-deploy: %d check(s) FAILED\n' "$FAILED"
  exit 1
fi
printf 'check-deploy: all checks passed\n'
