#!/usr/bin/env bash
# `make run`: the whole loop on the local stack, from a fresh machine.
#   1. install what the stack needs, build kube-apiserver (cached) and ssm-resync
#   2. start the local stack (kube-apiserver + etcd, moto), ESO CRDs installed
#   3. apply the demo SecretStore + ExternalSecret (k8s/demo/demo.yaml)
#   4. start `ssm-resync serve` and subscribe it to the local SNS topic
#   5. change /demo/db/password in SSM and publish the Parameter Store Change event
#   6. show the force-sync annotation landing on the ExternalSecret
# Then it keeps serving in the foreground (Ctrl-C stops ssm-resync; `make stack-down`
# stops the stack). DEMO_EXIT=1 exits after step 6 instead.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
LISTEN=${DEMO_LISTEN:-127.0.0.1:8080}
ADMIN=${DEMO_ADMIN_LISTEN:-127.0.0.1:9090}
PARAM=/demo/db/password
T0=$(date +%s.%N)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

say "installing dependencies (idempotent)"
scripts/install-deps.sh
say "kube-apiserver v1.20.2 (built once, then cached)"
scripts/build-kube-apiserver.sh >/dev/null
say "building ssm-resync"
cargo build --locked --bin ssm-resync
BIN=$REPO/target/debug/ssm-resync

say "starting the local stack"
scripts/stack.sh up
# shellcheck disable=SC1091
. target/stack/env

say "demo SecretStore + ExternalSecret (namespace demo)"
kubectl apply --server-side --force-conflicts -f k8s/demo/demo.yaml
python3 scripts/aws_local.py put-parameter "$PARAM" "initial-$(date +%s)"

say "starting ssm-resync serve on $LISTEN (admin $ADMIN)"
LOG=target/stack/ssm-resync.log
# The catch-up sweep is off here so the annotation that lands is the one the event caused.
SSM_RESYNC_LISTEN=$LISTEN SSM_RESYNC_ADMIN_LISTEN=$ADMIN SSM_RESYNC_SWEEP_INTERVAL=0s "$BIN" serve >"$LOG" 2>&1 &
PID=$!
cleanup() {
  python3 scripts/aws_local.py unsubscribe "http://$LISTEN/sns" >/dev/null 2>&1 || true
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; echo "ssm-resync exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://$ADMIN/readyz"
python3 scripts/aws_local.py subscribe "http://$LISTEN/sns"

say "changing $PARAM and publishing the Parameter Store Change event"
before=$(kubectl get externalsecrets.external-secrets.io db-credentials -n demo -o jsonpath='{.metadata.annotations.force-sync}')
python3 scripts/aws_local.py put-parameter "$PARAM" "rotated-$(date +%s)"
"$BIN" sample --parameter "$PARAM" --event-only | python3 scripts/aws_local.py publish -

for _ in $(seq 1 100); do
  now=$(kubectl get externalsecrets.external-secrets.io db-credentials -n demo -o jsonpath='{.metadata.annotations.force-sync}')
  [[ -n $now && $now != "$before" ]] && break
  sleep 0.1
done
[[ -n $now && $now != "$before" ]] || { tail -20 "$LOG"; echo "annotation did not change" >&2; exit 1; }
say "ExternalSecret demo/db-credentials re-synced $(elapsed) s after \`make run\` started"
kubectl get externalsecrets.external-secrets.io db-credentials -n demo \
  -o custom-columns='NAME:.metadata.name,FORCE-SYNC:.metadata.annotations.force-sync'
grep -E 'matched|force-sync' "$LOG" | tail -2

if [[ ${DEMO_EXIT:-0} == 1 ]]; then
  exit 0
fi
cat <<MSG

ssm-resync keeps serving (log: $LOG). In another shell:
  . target/stack/env
  target/debug/ssm-resync sample --parameter $PARAM | curl -sS -d @- http://$LISTEN/sns
  curl -s http://$ADMIN/metrics | grep ssm_resync_patches
Ctrl-C stops ssm-resync; \`make stack-down\` stops the stack.
MSG
wait "$PID"
