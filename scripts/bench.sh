#!/usr/bin/env bash
# `make bench`: the performance figures of docs/performance.md, each next to a baseline
# measured in the same run, as a ratio, with its target.
#
# Builds the release binaries (ssm-resync; loadgen, the harness crate's) and the bench
# binaries, starts its own local stack (real kube-apiserver + etcd + moto, fresh etcd, under
# target/bench-stack, ports 26790/19443/17500; ESO left out unless BENCH_ESO=1; the secret,
# secretburst, awscalls and queuesecret steps get a second fresh stack with ESO), runs each
# bench, prints the summary table and writes it to target/bench/summary.md (raw rows:
# target/bench/results.jsonl, service logs: target/bench/*.log). The stack is stopped and
# purged on exit.
#
#   BENCH_HEAVY=1     heavier runs: 150,000 requests closed loop, 30 s at 5,000/s and 5 s
#                     at 20,000/s open loop, 1,000 end-to-end iterations, start-up at
#                     100,000 ExternalSecrets too
#   BENCH_ONLY="a b"  run only these steps: sigverify index confirm startup webhook e2e apicost burst
#                     queuedrain queuecalls secret secretburst awscalls queuesecret (the last
#                     four with ESO, on a second stack of their own)
#   BENCH_ETCD_PORT, BENCH_API_PORT, BENCH_MOTO_PORT   stack ports (etcd uses port + 1 too)
#   BENCH_CONNECTIONS (32), BENCH_WEBHOOK_REQUESTS (60000), BENCH_OPEN_RATE (5000),
#   BENCH_OPEN_SECONDS (10), BENCH_E2E_ITERATIONS (200), BENCH_RUST_LOG (service RUST_LOG),
#   BENCH_SECRET_CHANGES (200), BENCH_AWSCALLS_ES (1000), BENCH_AWSCALLS_WINDOW (120 s),
#   BENCH_CONFIRM_TARGETS (10000), BENCH_QUEUE_BACKLOG (1000: moto's receive and delete walk the
#   whole queue per message), BENCH_QUEUE_RESOURCES (300), BENCH_QUEUE_WINDOW (120 s),
#   BENCH_QUEUE_CHANGES (20),
#   BENCH_SERVICE_ARGS (extra `ssm-resync serve` flags, for experiments: e.g. --events=false)
#   BENCH_SERVICE_BIN  (another ssm-resync executable to measure instead of target/release's,
#                      for experiments: e.g. a build with other profile settings)
#
# Everything runs on loopback. The machine has 2 cores: servers and load generators share
# them, so figures are quoted next to a baseline taken minutes apart in the same run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

log() { printf '==> %s\n' "$*" >&2; }

START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
HEAVY=${BENCH_HEAVY:-0}
export BENCH_HEAVY=$HEAVY
STEPS=${BENCH_ONLY:-sigverify index confirm startup webhook e2e apicost burst queuedrain queuecalls secret secretburst awscalls queuesecret}
export BENCH_OUT=$REPO/target/bench
mkdir -p "$BENCH_OUT"
rm -f "$BENCH_OUT/results.jsonl" "$BENCH_OUT"/*.log "$BENCH_OUT/webhook-bodies.jsonl"

wants() { [[ " $STEPS " == *" $1 "* ]]; }
needs_stack() {
  local s
  for s in startup webhook e2e apicost burst queuedrain queuecalls; do wants "$s" && return 0; done
  return 1
}

# --- build ---------------------------------------------------------------------------
log "building (release profile: the service under test is target/release/ssm-resync)"
t=$SECONDS
cargo build --locked --release --bin ssm-resync
# loadgen is a binary of the harness crate (harness/src/bin/loadgen.rs), so Cargo does not
# name it to the benches: they take target/release/loadgen, next to their own target/release/
# deps/ (ssm_resync_harness::bench::loadgen_bin).
cargo build --locked --release -p ssm-resync-harness --bin loadgen
# The bench executables, run directly so that nothing is rebuilt in the middle of a run.
declare -A BIN
while IFS=$'\t' read -r name exe; do
  BIN[$name]=$exe
done < <(cargo bench --locked --no-run --message-format=json \
  --bench sigverify --bench index_scale --bench confirm --bench service --bench eso 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["target"]["name"] + "\t" + m["executable"])
')
for b in sigverify index_scale confirm service eso; do
  [[ -n ${BIN[$b]:-} ]] || { log "error: no executable for bench $b"; exit 1; }
done
BUILD_SECONDS=$((SECONDS - t))

# --- stack -----------------------------------------------------------------------------
export STACK_DIR=$REPO/target/bench-stack
export STACK_ETCD_PORT=${BENCH_ETCD_PORT:-26790} STACK_API_PORT=${BENCH_API_PORT:-19443}
export STACK_MOTO_PORT=${BENCH_MOTO_PORT:-17500} STACK_ESO_PORT=${BENCH_ESO_PORT:-17600}
export BENCH_STACK_DIR=$STACK_DIR
# A fresh stack (fresh etcd): figures must not depend on what earlier steps left behind.
# with_eso 0: the benches of the service against the API server (ESO reconciling the
# thousands of ExternalSecrets they create would load the same two cores); 1: the benches
# that end at the Secret.
stack_up() {
  scripts/stack.sh down --purge >/dev/null 2>&1 || true
  STACK_ESO=$1 scripts/stack.sh up
}
if needs_stack || wants secret || wants secretburst || wants awscalls || wants queuesecret; then
  scripts/install-deps.sh
  scripts/build-go-tool.sh --all
  # The stack's own logs (ESO's reconciles, moto's requests) are kept next to the service's,
  # to explain an outlier after the run.
  trap 'for c in eso moto kube-apiserver; do cp "$STACK_DIR/$c.log" "$BENCH_OUT/stack-$c.log" 2>/dev/null || true; done; scripts/stack.sh down --purge' EXIT
fi
needs_stack && stack_up "${BENCH_ESO:-0}"

# --- benches ---------------------------------------------------------------------------
FAILED=()
declare -A TOOK
step() {
  local name=$1 t=$SECONDS
  shift
  log "bench: $name"
  if "$@"; then
    TOOK[$name]=$((SECONDS - t))
  else
    TOOK[$name]=$((SECONDS - t))
    log "bench $name FAILED"
    FAILED+=("$name")
    printf '{"id":"%s","figure":"bench %s FAILED (see the output above)","value":null,"unit":"","baseline":null,"baseline_label":"","ratio":null,"target":"","met":false,"note":""}\n' \
      "$name" "$name" >>"$BENCH_OUT/results.jsonl"
  fi
}

wants sigverify && step sigverify "${BIN[sigverify]}"
wants index && step index "${BIN[index_scale]}"
wants confirm && step confirm "${BIN[confirm]}"
wants startup && step startup-1k "${BIN[service]}" startup 1000
wants webhook && step webhook "${BIN[service]}" webhook
wants e2e && step e2e "${BIN[service]}" e2e
wants apicost && step apicost "${BIN[service]}" apicost
wants burst && step burst "${BIN[service]}" burst
# The queue door (figures 11 and 9d-9i): a backlog drained next to moto's bare floor; the SQS
# calls of 1, 2 and 3 replicas over two measured windows.
wants queuedrain && step queuedrain "${BIN[service]}" queue-drain
wants queuecalls && step queuecalls "${BIN[service]}" queue-calls
# Last: the 20,000 ExternalSecrets it creates (~35 s) stay in the cluster.
wants startup && step startup-20k "${BIN[service]}" startup 20000
# Heavy runs only: 80,000 more (about 3 minutes to create), start-up at 100,000.
[[ $HEAVY == 1 ]] && wants startup && step startup-100k "${BIN[service]}" startup 100000
# With ESO, on a stack of their own: change -> Secret, and the AWS calls a set-up makes.
if wants secret || wants secretburst || wants awscalls || wants queuesecret; then
  log "stack with ESO for the benches that end at the Secret"
  stack_up 1
  wants secret && step secret "${BIN[eso]}" secret
  wants secretburst && step secretburst "${BIN[eso]}" secretburst
  wants awscalls && step awscalls "${BIN[eso]}" awscalls
  wants queuesecret && step queuesecret "${BIN[eso]}" queue-secret
fi

# --- summary ---------------------------------------------------------------------------
TOTAL=$((SECONDS - START))
took=""
for k in "${!TOOK[@]}"; do took+="$k ${TOOK[$k]} s, "; done
BENCH_META="date: $(date -u +%FT%TZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- src harness Cargo.toml 2>/dev/null || echo ' (+ uncommitted changes)'); machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); heavy: $HEAVY; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); build ${BUILD_SECONDS} s; steps: ${took%, }; total ${TOTAL} s"
export BENCH_META
python3 - "$BENCH_OUT/results.jsonl" "$BENCH_OUT/summary.md" <<'EOF'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if os.path.exists(sys.argv[1]) else []

def num(v, unit=""):
    if v is None:
        return "n/a"
    a = abs(v)
    s = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"
    return f"{s} {unit}".strip()

out = ["# ssm-resync benchmark summary", "", os.environ.get("BENCH_META", ""), "",
       "| # | figure | value | baseline (same run) | ratio | target | met? |",
       "|---|---|---|---|---|---|---|"]
for r in rows:
    base = f"{num(r['baseline'])} ({r['baseline_label']})" if r.get("baseline") is not None else "n/a"
    ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "n/a"
    met = {True: "yes", False: "**NO**", None: ""}[r.get("met")]
    out.append(f"| {r['id']} | {r['figure']} | {num(r['value'], r['unit'])} | {base} | {ratio} | {r.get('target') or ''} | {met} |")
out += ["", "Notes:", ""]
for r in rows:
    if r.get("note"):
        out.append(f"- {r['id']}: {r['note']}")
text = "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print()
print(text)
EOF
log "summary written to target/bench/summary.md (make bench took ${TOTAL} s)"
if ((${#FAILED[@]})); then
  log "failed: ${FAILED[*]}"
  exit 1
fi
