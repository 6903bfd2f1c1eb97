#!/usr/bin/env bash
# `make test`: every check and every test, on a fresh Debian machine.
# Installs what the local stack needs, builds its Go programs once (etcd, kube-apiserver, the
# External Secrets Operator; and helm for tests/stack/helm.rs; cached by version), runs
# fmt and clippy on the whole workspace (the product and harness/; warnings are errors),
# builds the container image (scripts/image.sh, for tests/stack/image.rs), starts two local
# stacks for the integration tests to share, one per ESO release they judge on (tests that
# stop the API server start their own), runs all tests, stops the stacks.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

scripts/install-deps.sh
scripts/build-go-tool.sh --all
# helm, for tests/stack/helm.rs (the chart in charts/ssm-resync); prints its path, not needed
# here.
scripts/build-go-tool.sh helm >/dev/null
# The KES model (tests/kes) runs on Node.js with kubernetes-client from the npm registry.
(cd tests/kes && npm ci --ignore-scripts --no-audit --no-fund --silent)
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# Deploy artefacts: kustomize renders, Terraform/manifest assertions, checkov, promtool (it
# also installs Debian's prometheus, which tests/stack/deploy.rs runs).
scripts/check-deploy.sh
# The container image (`make image`: the release build, fat LTO, then Debian's umoci and
# skopeo; no Docker engine), which tests/stack/image.rs runs under runc against the stack
# below.
scripts/image.sh
# The release build leaves ~1.1 GB of intermediates next to the ~2.6 GB the test build needs;
# on a disk short of space (CI once ran out while building the test binaries) they go, the
# image and the binary stay (`make bench` then rebuilds them).
avail_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if ((avail_kib < 8 * 1024 * 1024)); then
  echo "test: $((avail_kib / 1024)) MiB free: removing target/release's intermediates" >&2
  rm -rf target/release/deps target/release/build target/release/.fingerprint target/release/incremental
fi

# Two shared stacks, one per ESO release the tests judge on (harness/src/stack.rs, `Eso`;
# `scripts/build-go-tool.sh --versions external-secrets`): the default release, which every
# test that ends at a Secret runs on, and v0.16.2, which the version-sensitive tests (the
# ClusterExternalSecret triggers, references, outcomes) run on too. Each has its own STACK_DIR
# and ports (the second's are the first's moved up, clear of `make run`'s and `make bench`'s)
# and is named to the tests by its own variable. They start side by side: most of a start is
# waiting for kube-apiserver and ESO, not CPU.
eso_default=$(scripts/build-go-tool.sh --version external-secrets)
etcd_port=${TEST_STACK_ETCD_PORT:-24790} api_port=${TEST_STACK_API_PORT:-17443}
moto_port=${TEST_STACK_MOTO_PORT:-16000} eso_port=${TEST_STACK_ESO_PORT:-17100}
stack_default() {
  STACK_DIR=$REPO/target/test-stack STACK_ESO_VERSION=$eso_default \
    STACK_ETCD_PORT=$etcd_port STACK_API_PORT=$api_port STACK_MOTO_PORT=$moto_port STACK_ESO_PORT=$eso_port \
    scripts/stack.sh "$@"
}
stack_v016() {
  # ESO takes four ports from its base (webhook, webhook health, metrics, liveness).
  STACK_DIR=$REPO/target/test-stack-eso-v016 STACK_ESO_VERSION=v0.16.2 \
    STACK_ETCD_PORT=$((etcd_port + 1000)) STACK_API_PORT=$((api_port + 1000)) \
    STACK_MOTO_PORT=$((moto_port + 500)) STACK_ESO_PORT=$((eso_port + 100)) \
    scripts/stack.sh "$@"
}
# Both, even when the first fails; fails if either did.
stacks_down() {
  local rc=0
  stack_default down --purge || rc=$?
  stack_v016 down --purge || rc=$?
  return "$rc"
}
trap stacks_down EXIT
stack_v016 up &
v016_up=$!
stack_default up
wait "$v016_up"
# The workspace's libraries, binaries and integration tests (benches run with `make bench`;
# there are no doc tests), every binary even after a failure: the product's unit tests, its
# three integration test binaries (tests/offline, tests/stack, tests/serial, one at a time)
# and the harness's own tests. The last line totals every test binary's result.
mkdir -p target
status=0
SSM_RESYNC_TEST_STACK_DIR=$REPO/target/test-stack SSM_RESYNC_TEST_STACK_DIR_ESO_V016=$REPO/target/test-stack-eso-v016 \
  cargo test --locked --no-fail-fast --workspace --lib --bins --tests 2>&1 | tee target/test.log || status=$?
stacks_down
trap - EXIT
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log
exit "$status"
