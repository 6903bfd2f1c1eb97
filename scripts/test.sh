#!/usr/bin/env bash
# `make test`: every check and every test, on a fresh Debian machine.
# Installs what the local stack needs, builds its Go programs once (etcd, kube-apiserver, the
# External Secrets Operator; and helm for tests/stack/helm.rs; cached by version), runs
# fmt and clippy on the whole workspace (the product and harness/; warnings are errors),
# builds the container image (scripts/image.sh, for tests/stack/image.rs), starts one local
# stack for the integration tests to share (tests that stop the API server start their own),
# runs all tests, stops the stack.
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

export STACK_DIR=$REPO/target/test-stack
export STACK_ETCD_PORT=${TEST_STACK_ETCD_PORT:-24790} STACK_API_PORT=${TEST_STACK_API_PORT:-17443} STACK_MOTO_PORT=${TEST_STACK_MOTO_PORT:-16000} STACK_ESO_PORT=${TEST_STACK_ESO_PORT:-17100}
scripts/stack.sh up
trap 'scripts/stack.sh down --purge' EXIT
# The workspace's libraries, binaries and integration tests (benches run with `make bench`;
# there are no doc tests), every binary even after a failure: the product's unit tests, its
# three integration test binaries (tests/offline, tests/stack, tests/serial, one at a time)
# and the harness's own tests. The last line totals every test binary's result.
mkdir -p target
status=0
SSM_RESYNC_TEST_STACK_DIR=$STACK_DIR cargo test --locked --no-fail-fast --workspace --lib --bins --tests 2>&1 | tee target/test.log || status=$?
scripts/stack.sh down --purge
trap - EXIT
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log
exit "$status"
