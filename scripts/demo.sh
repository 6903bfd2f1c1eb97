#!/usr/bin/env bash
# `make run`: the whole loop on the local stack, from a fresh machine, ending at the Secret.
#   1. install what the stack needs; build etcd, kube-apiserver and the External Secrets
#      Operator from the Go module proxy (once, cached by version) and ssm-resync
#   2. start the local stack: etcd, kube-apiserver, moto, ESO (controller + webhook)
#   3. put /demo/db/password in SSM and apply the demo SecretStore + ExternalSecret
#      (k8s/demo/demo.yaml, refreshInterval 1h: only ssm-resync can make it re-sync in time);
#      wait for ESO's first sync to write the Secret
#   4. start `ssm-resync serve` and subscribe it to the local SNS topic
#   5. change /demo/db/password in SSM and publish the Parameter Store Change event, as the
#      EventBridge rule would
#   6. wait for the Kubernetes Secret to hold the new value; print the time from PutParameter
#      to Secret updated, and the value
# Then it keeps serving in the foreground (Ctrl-C stops ssm-resync; `make stack-down`
# stops the stack). DEMO_EXIT=1 exits after step 6 instead.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
LISTEN=${DEMO_LISTEN:-127.0.0.1:8080}
ADMIN=${DEMO_ADMIN_LISTEN:-127.0.0.1:9090}
NS=demo
ES=db-credentials
PARAM=/demo/db/password
T0=$(date +%s.%N)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

say "installing dependencies (idempotent)"
scripts/install-deps.sh
say "etcd, kube-apiserver, External Secrets Operator from the Go module proxy (built once, then cached)"
scripts/build-go-tool.sh --all
say "building ssm-resync"
cargo build --locked --bin ssm-resync
BIN=$REPO/target/debug/ssm-resync

say "starting the local stack"
scripts/stack.sh up
# shellcheck disable=SC1091
. target/stack/env

# The Secret's value of one key, decoded; empty when the Secret or the key is absent.
secret_value() {
  kubectl get secret "$ES" -n "$NS" -o "jsonpath={.data.$1}" 2>/dev/null | base64 -d 2>/dev/null || true
}

# wait_secret KEY VALUE SECONDS: polls until the Secret holds VALUE under KEY.
wait_secret() {
  local key=$1 want=$2 deadline
  deadline=$(awk -v n="$(date +%s.%N)" -v s="$3" 'BEGIN { printf "%.0f", n + s }')
  while [[ $(secret_value "$key") != "$want" ]]; do
    if (($(date +%s) > deadline)); then
      kubectl get externalsecrets.external-secrets.io "$ES" -n "$NS" -o yaml | sed -n '/^status:/,$p' >&2
      tail -n 20 target/stack/eso.log >&2
      return 1
    fi
    sleep 0.05
  done
}

say "demo parameters in SSM, then the SecretStore + ExternalSecret (namespace $NS)"
initial="initial-$(date +%s)"
python3 scripts/aws_local.py put-parameter "$PARAM" "$initial"
python3 scripts/aws_local.py put-parameter /demo/app/config '{"log_level":"info","feature_x":"on"}'
# A stack kept from an earlier run still has the demo objects: start them afresh (the stack
# has no garbage collector to delete the Secret with its ExternalSecret).
kubectl delete externalsecrets.external-secrets.io "$ES" -n "$NS" --ignore-not-found --wait=false >/dev/null
kubectl delete secret "$ES" -n "$NS" --ignore-not-found >/dev/null
kubectl apply --server-side --force-conflicts -f k8s/demo/demo.yaml
wait_secret password "$initial" 60 || die "ESO did not write the Secret $NS/$ES (its first sync) within 60 s"
echo "ESO's first sync wrote Secret $NS/$ES (password=$initial)"

say "starting ssm-resync serve on $LISTEN (admin $ADMIN)"
LOG=target/stack/ssm-resync.log
# The catch-up sweep is off here so that what re-syncs the Secret is the event.
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
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; die "ssm-resync exited"; }
  sleep 0.1
done
curl -fsS "http://$ADMIN/readyz"
python3 scripts/aws_local.py subscribe "http://$LISTEN/sns"

say "changing $PARAM in SSM and publishing the Parameter Store Change event"
rotated="rotated-$(date +%s)"
python3 scripts/aws_local.py put-parameter "$PARAM" "$rotated"
# From the moment SSM holds the new value (what EventBridge would report).
T_PUT=$(date +%s.%N)
"$BIN" sample --parameter "$PARAM" --event-only | python3 scripts/aws_local.py publish -
wait_secret password "$rotated" 30 \
  || die "the Secret $NS/$ES still holds '$(secret_value password)' 30 s after the change (ssm-resync log: $LOG)"
took=$(since "$T_PUT")
say "Secret $NS/$ES re-synced: it holds the new value $took s after PutParameter ($(since "$T0") s after \`make run\` started)"
printf 'password=%s\n' "$(secret_value password)"
kubectl get externalsecrets.external-secrets.io "$ES" -n "$NS" \
  -o custom-columns='EXTERNALSECRET:.metadata.name,FORCE-SYNC:.metadata.annotations.force-sync,REFRESHED:.status.refreshTime,READY:.status.conditions[0].reason'
grep -E 'matched|force-sync' "$LOG" | tail -2

if [[ ${DEMO_EXIT:-0} == 1 ]]; then
  exit 0
fi
cat <<MSG

ssm-resync keeps serving (log: $LOG). In another shell:
  . target/stack/env
  python3 scripts/aws_local.py put-parameter $PARAM my-new-value
  target/debug/ssm-resync sample --parameter $PARAM | curl -sS -d @- http://$LISTEN/sns
  kubectl get secret $ES -n $NS -o jsonpath='{.data.password}' | base64 -d
  curl -s http://$ADMIN/metrics | grep ssm_resync_patches
Ctrl-C stops ssm-resync; \`make stack-down\` stops the stack.
MSG
wait "$PID"
