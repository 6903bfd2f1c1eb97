#!/usr/bin/env bash
# The local stack, real parts on loopback: etcd, kube-apiserver v1.20.2 (built
# by scripts/build-kube-apiserver.sh), and moto patched to sign SNS deliveries
# like AWS (scripts/moto_launcher.py). See shared/DESIGN.md, "The local stack".
#
# Usage: scripts/stack.sh up | down [--purge] | status | env
#                         | stop-apiserver | start-apiserver
#
#   up               start what is not running (healthy processes are reused),
#                    create the SNS topic, apply k8s/crds/*.yaml, write the env file
#   down [--purge]   stop this STACK_DIR's processes; --purge also deletes STACK_DIR
#   status           one line per component; exit 1 if any is not healthy
#   env              print the path of the sourceable env file
#   stop-apiserver   stop only kube-apiserver (tests of API outages)
#   start-apiserver  start it again with the same flags and port
#
# Environment (`up` records the ports in STACK_DIR/stack.conf; the other
# commands always use the recorded ones, a later `up` unless the variable is set):
#   STACK_DIR        default <repo>/target/stack
#   STACK_ETCD_PORT  default 23790 (etcd's peer port is this + 1)
#   STACK_API_PORT   default 16443
#   STACK_MOTO_PORT  default 15000
#   PYTHON           default python3 (needs moto[server]==5.2.1, see install-deps.sh)
#
# Processes run in their own session (setsid), so they outlive the shell that
# ran `up`. Several stacks with distinct STACK_DIR and ports can run at once.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname "$SCRIPTS")
PYTHON=${PYTHON:-python3}

TOPIC_NAME=ssm-resync-local
TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:$TOPIC_NAME
CERT_URL=https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem
MARKER=.ssm-resync-stack

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^#   start-apiserver/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- configuration --------------------------------------------------------

init_dir() {
  # Absolute and canonical: it is matched against our processes' command lines.
  STACK_DIR=$(realpath -m "${STACK_DIR:-$REPO/target/stack}")
  CONF=$STACK_DIR/stack.conf
  local saved_etcd="" saved_api="" saved_moto=""
  if [[ -f $CONF ]]; then
    saved_etcd=$(sed -n 's/^etcd_port=//p' "$CONF")
    saved_api=$(sed -n 's/^api_port=//p' "$CONF")
    saved_moto=$(sed -n 's/^moto_port=//p' "$CONF")
  fi
  if [[ $1 == up ]]; then
    ETCD_PORT=${STACK_ETCD_PORT:-${saved_etcd:-23790}}
    API_PORT=${STACK_API_PORT:-${saved_api:-16443}}
    MOTO_PORT=${STACK_MOTO_PORT:-${saved_moto:-15000}}
  else
    # The ports are the stack's own: a sourced env file of another stack
    # must not point status/down/start-apiserver at that stack's ports.
    ETCD_PORT=${saved_etcd:-${STACK_ETCD_PORT:-23790}}
    API_PORT=${saved_api:-${STACK_API_PORT:-16443}}
    MOTO_PORT=${saved_moto:-${STACK_MOTO_PORT:-15000}}
  fi
  local p
  for p in "$ETCD_PORT" "$API_PORT" "$MOTO_PORT"; do
    if [[ ! $p =~ ^[0-9]+$ ]] || ((p == 0 || p > 65534)); then die "bad port '$p'"; fi
  done
  ETCD_PEER_PORT=$((ETCD_PORT + 1))

  ETCD_URL=http://127.0.0.1:$ETCD_PORT
  API_URL=https://127.0.0.1:$API_PORT
  MOTO_URL=http://127.0.0.1:$MOTO_PORT
  TOKENS=$STACK_DIR/tokens.csv
  SA_KEY=$STACK_DIR/service-account.key
  CERT_DIR=$STACK_DIR/apiserver-certs
  SNS_DIR=$STACK_DIR/sns
  ENV_FILE=$STACK_DIR/env
  KUBECONFIG_ADMIN=$STACK_DIR/kubeconfig
  KUBECONFIG_SSM=$STACK_DIR/kubeconfig-ssm-resync
}

save_conf() {
  local conf
  conf=$(printf 'etcd_port=%s\napi_port=%s\nmoto_port=%s' "$ETCD_PORT" "$API_PORT" "$MOTO_PORT")
  if [[ -f $CONF && $(<"$CONF") != "$conf" ]] && any_alive; then
    die "ports differ from those in $CONF while this stack runs: run 'scripts/stack.sh down' first"
  fi
  printf '%s\n' "$conf" >"$CONF"
}

# Serialise commands on one STACK_DIR (two `up`s at once would race).
lock_dir() {
  mkdir -p "$STACK_DIR"
  exec 8>"$STACK_DIR/.lock"
  if ! flock -n 8; then
    log "waiting for another stack.sh on $STACK_DIR"
    flock -w 900 8 || die "timed out waiting for the lock on $STACK_DIR"
  fi
}

# --- processes ------------------------------------------------------------

pid_file() { printf '%s/%s.pid' "$STACK_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$STACK_DIR" "$1"; }

# Prints the pid of a live process of ours for component $1, or fails. Pids
# get reused, so the command must also be the component's (argv[0] for etcd
# and kube-apiserver, the launcher script for moto) and name this STACK_DIR.
live_pid() {
  local f pid args=()
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1
  ((${#args[@]} > 1)) || return 1
  case $1 in
    etcd | kube-apiserver) [[ ${args[0]##*/} == "$1" ]] || return 1 ;;
    moto) [[ ${args[*]} == *"$SCRIPTS/moto_launcher.py"* ]] || return 1 ;;
  esac
  [[ ${args[*]} == *"$STACK_DIR/"* ]] || return 1
  printf '%s\n' "$pid"
}

any_alive() {
  local c
  for c in etcd kube-apiserver moto; do
    live_pid "$c" >/dev/null && return 0
  done
  return 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_bg NAME CMD...: run CMD in its own session, detached from this shell,
# output to NAME.log; the pid file holds the pid of CMD itself (exec).
start_bg() {
  local name=$1 pidf logf
  shift
  pidf=$(pid_file "$name")
  logf=$(log_file "$name")
  rm -f "$pidf"
  printf '\n=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logf"
  # 8>&-: the daemon must not inherit the STACK_DIR lock (lock_dir), or every
  # later stack.sh on this dir would wait for it forever.
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$@" </dev/null >>"$logf" 2>&1 8>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidf ]] && return 0
    sleep 0.02
  done
  die "$name did not start (no pid file); see $logf"
}

stop_component() {
  local name=$1 pid pidf i
  pidf=$(pid_file "$name")
  if ! pid=$(live_pid "$name"); then
    [[ -f $pidf ]] && log "$name: not running (removing stale $(basename "$pidf"))"
    rm -f "$pidf"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    live_pid "$name" >/dev/null || break
    sleep 0.1
  done
  if live_pid "$name" >/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      [[ -e /proc/$pid ]] || break
      sleep 0.1
    done
  fi
  rm -f "$pidf"
  log "$name: stopped (pid $pid)"
}

# wait_healthy NAME CHECK TIMEOUT_S: poll CHECK; on timeout show the log tail.
wait_healthy() {
  local name=$1 check=$2 timeout=$3 deadline
  deadline=$((SECONDS + timeout))
  while ! "$check"; do
    if ! live_pid "$name" >/dev/null; then
      log "$name exited during start-up; last lines of $(log_file "$name"):"
      tail -n 30 "$(log_file "$name")" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not healthy after ${timeout}s; last lines of $(log_file "$name"):"
      tail -n 30 "$(log_file "$name")" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# --- health checks ----------------------------------------------------------

etcd_healthy() {
  curl -fsS --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

admin_token() { sed -n 's/^\([^,]*\),admin,.*/\1/p' "$TOKENS"; }
ssm_token() { sed -n 's/^\([^,]*\),ssm-resync,.*/\1/p' "$TOKENS"; }

apiserver_healthy() {
  [[ -f $TOKENS ]] || return 1
  [[ $(curl -ksS --max-time 2 -H "Authorization: Bearer $(admin_token)" \
    "$API_URL/readyz" 2>/dev/null) == ok ]]
}

moto_healthy() {
  curl -fsS --max-time 2 -o /dev/null "$MOTO_URL/moto-api/config" 2>/dev/null
}

# --- one-time material --------------------------------------------------------

ensure_material() {
  touch "$STACK_DIR/$MARKER"
  if [[ ! -s $TOKENS ]]; then
    umask 077
    # token,user,uid[,"group1,group2"]; ssm-resync has no group, for RBAC tests.
    printf '%s,admin,admin,"system:masters"\n%s,ssm-resync,ssm-resync\n' \
      "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$TOKENS.tmp"
    mv "$TOKENS.tmp" "$TOKENS"
    umask 022
  fi
  if [[ ! -s $SA_KEY ]]; then
    openssl genrsa -out "$SA_KEY.tmp" 2048 2>/dev/null || die "openssl genrsa failed"
    mv "$SA_KEY.tmp" "$SA_KEY"
  fi
  mkdir -p "$SNS_DIR"
  if [[ ! -s $SNS_DIR/key.pem || ! -s $SNS_DIR/cert.pem ]]; then
    # PKCS#8 key and a self-signed certificate shaped like SNS's signing cert.
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -subj /CN=sns.amazonaws.com \
      -keyout "$SNS_DIR/key.pem.tmp" -out "$SNS_DIR/cert.pem.tmp" 2>/dev/null \
      || die "openssl req (SNS signing certificate) failed"
    mv "$SNS_DIR/key.pem.tmp" "$SNS_DIR/key.pem"
    mv "$SNS_DIR/cert.pem.tmp" "$SNS_DIR/cert.pem"
  fi
}

# --- components ---------------------------------------------------------------

ensure_etcd() {
  if live_pid etcd >/dev/null; then
    if etcd_healthy; then
      log "etcd: running (pid $(live_pid etcd)), reused"
      return 0
    fi
    wait_healthy etcd etcd_healthy 10
    log "etcd: running (pid $(live_pid etcd))"
    return 0
  fi
  rm -f "$(pid_file etcd)"
  port_busy "$ETCD_PORT" && die "port $ETCD_PORT (STACK_ETCD_PORT) is in use by another process"
  port_busy "$ETCD_PEER_PORT" && die "port $ETCD_PEER_PORT (STACK_ETCD_PORT + 1) is in use by another process"
  command -v etcd >/dev/null 2>&1 || die "etcd not found: run scripts/install-deps.sh"
  start_bg etcd etcd \
    --name=ssm-resync-local \
    --data-dir="$STACK_DIR/etcd" \
    --listen-client-urls="$ETCD_URL" \
    --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="ssm-resync-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger=zap --log-outputs=stderr
  wait_healthy etcd etcd_healthy 30
  log "etcd: started (pid $(live_pid etcd), $ETCD_URL)"
}

start_apiserver() {
  if live_pid kube-apiserver >/dev/null; then
    if ! apiserver_healthy; then
      wait_healthy kube-apiserver apiserver_healthy 60
    fi
    log "kube-apiserver: running (pid $(live_pid kube-apiserver)), reused"
    return 0
  fi
  rm -f "$(pid_file kube-apiserver)"
  etcd_healthy || die "etcd of $STACK_DIR is not running: run 'scripts/stack.sh up'"
  port_busy "$API_PORT" && die "port $API_PORT (STACK_API_PORT) is in use by another process"
  local bin
  bin=$("$SCRIPTS/build-kube-apiserver.sh" | tail -n 1) || die "could not get a kube-apiserver binary"
  [[ -x $bin ]] || die "build-kube-apiserver.sh printed '$bin', not an executable"
  mkdir -p "$CERT_DIR"
  # The apiserver self-signs for one year; have it mint a fresh pair if ours expires.
  if [[ -f $CERT_DIR/apiserver.crt ]] && ! openssl x509 -checkend 86400 -noout -in "$CERT_DIR/apiserver.crt" >/dev/null 2>&1; then
    rm -f "$CERT_DIR/apiserver.crt" "$CERT_DIR/apiserver.key"
  fi
  start_bg kube-apiserver "$bin" \
    --etcd-servers="$ETCD_URL" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --insecure-port=0 \
    --cert-dir="$CERT_DIR" \
    --token-auth-file="$TOKENS" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$SA_KEY" \
    --service-account-signing-key-file="$SA_KEY" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --enable-priority-and-fairness=false \
    --profiling=false
  local t0=$SECONDS
  wait_healthy kube-apiserver apiserver_healthy 90
  log "kube-apiserver: started (pid $(live_pid kube-apiserver), $API_URL, ready in $((SECONDS - t0)) s)"
}

# The apiserver's self-signed bundle (cert-dir/apiserver.crt) is leaf + CA;
# the kubeconfigs trust the CA only.
write_kubeconfigs() {
  local crt=$CERT_DIR/apiserver.crt ca
  [[ -s $crt ]] || die "$crt missing after the apiserver started"
  ca=$(awk '/-----BEGIN CERTIFICATE-----/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$crt")
  printf '%s' "$ca" >"$STACK_DIR/apiserver-ca.crt"
  ca=$(base64 -w0 "$STACK_DIR/apiserver-ca.crt")
  write_kubeconfig "$KUBECONFIG_ADMIN" admin "$(admin_token)" "$ca"
  write_kubeconfig "$KUBECONFIG_SSM" ssm-resync "$(ssm_token)" "$ca"
}

write_kubeconfig() {
  local file=$1 user=$2 token=$3 ca=$4
  (
    umask 077
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ssm-resync-local
  cluster:
    server: $API_URL
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@ssm-resync-local
  context:
    cluster: ssm-resync-local
    user: $user
    namespace: default
current-context: $user@ssm-resync-local
EOF
  )
  mv "$file.tmp" "$file"
}

ensure_moto() {
  if live_pid moto >/dev/null; then
    moto_healthy || wait_healthy moto moto_healthy 20
    log "moto: running (pid $(live_pid moto)), reused"
    return 0
  fi
  rm -f "$(pid_file moto)"
  port_busy "$MOTO_PORT" && die "port $MOTO_PORT (STACK_MOTO_PORT) is in use by another process"
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
  start_bg moto "$PYTHON" -u "$SCRIPTS/moto_launcher.py" \
    --host 127.0.0.1 --port "$MOTO_PORT" \
    --sign-key "$SNS_DIR/key.pem" --cert-url "$CERT_URL" --cert-file "$SNS_DIR/cert.pem"
  wait_healthy moto moto_healthy 30
  log "moto: started (pid $(live_pid moto), $MOTO_URL)"
}

# CreateTopic is idempotent. moto routes on the SigV4 credential scope and
# does not check the signature, so a fixed header is enough (no python start).
ensure_topic() {
  local out
  out=$(curl -fsS --max-time 10 "$MOTO_URL/" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0" \
    --data-urlencode Action=CreateTopic --data-urlencode "Name=$TOPIC_NAME" 2>&1) \
    || die "CreateTopic $TOPIC_NAME on moto failed: $out"
  [[ $out == *"<TopicArn>$TOPIC_ARN</TopicArn>"* ]] \
    || die "CreateTopic returned an unexpected answer (wanted $TOPIC_ARN): $out"
  log "sns topic: $TOPIC_ARN"
}

# kubectl 1.32 against a 1.20 server: only `kubectl version` warns about the
# skew, and apply/wait output (server deprecation warnings included) is
# captured and shown only on failure.
kubectl_admin() { KUBECONFIG=$KUBECONFIG_ADMIN kubectl "$@"; }

apply_crds() {
  local dir=$REPO/k8s/crds files=()
  if [[ -d $dir ]]; then
    shopt -s nullglob
    files=("$dir"/*.yaml)
    shopt -u nullglob
  fi
  if ((${#files[@]} == 0)); then
    log "crds: no $dir/*.yaml yet; skipping"
    return 0
  fi
  local args=() f out
  for f in "${files[@]}"; do args+=(-f "$f"); done
  # Server-side apply: ESO's CRDs overflow the client-side last-applied annotation.
  out=$(kubectl_admin apply --server-side --force-conflicts --field-manager=ssm-resync-stack "${args[@]}" 2>&1) \
    || die "kubectl apply of $dir failed: $out"
  out=$(kubectl_admin wait --for=condition=Established crd --all --timeout=30s 2>&1) \
    || die "CRDs not Established: $out"
  log "crds: applied ${#files[@]} file(s) from k8s/crds/, Established"
}

write_env() {
  cat >"$ENV_FILE.tmp" <<EOF
# Written by scripts/stack.sh up; source it: . $ENV_FILE
export KUBECONFIG=$KUBECONFIG_ADMIN
export STACK_KUBECONFIG_SSM_RESYNC=$KUBECONFIG_SSM
export AWS_ENDPOINT_URL=$MOTO_URL
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export SSM_RESYNC_TOPIC_ARN=$TOPIC_ARN
export SSM_RESYNC_SNS_SIGNING_CERT="$CERT_URL=$SNS_DIR/cert.pem"
export SSM_RESYNC_SAMPLE_SIGN_KEY=$SNS_DIR/key.pem
export SSM_RESYNC_SAMPLE_CERT_URL=$CERT_URL
export STACK_DIR=$STACK_DIR
export STACK_API_PORT=$API_PORT
export STACK_MOTO_PORT=$MOTO_PORT
export STACK_ETCD_PORT=$ETCD_PORT
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- commands -------------------------------------------------------------------

cmd_up() {
  local t0=$SECONDS
  lock_dir
  save_conf
  ensure_material
  ensure_etcd
  start_apiserver
  write_kubeconfigs
  ensure_moto
  ensure_topic
  apply_crds
  write_env
  log "up in $((SECONDS - t0)) s; env: $ENV_FILE"
}

cmd_down() {
  local purge=false
  case ${1:-} in
    --purge) purge=true ;;
    "") ;;
    *) usage ;;
  esac
  if [[ ! -d $STACK_DIR ]]; then
    log "no $STACK_DIR: nothing to stop"
    return 0
  fi
  lock_dir
  stop_component moto
  stop_component kube-apiserver
  stop_component etcd
  if $purge; then
    if [[ -f $STACK_DIR/$MARKER || -z $(ls -A "$STACK_DIR") ]]; then
      rm -rf "$STACK_DIR"
      log "purged $STACK_DIR"
    else
      die "refusing to purge $STACK_DIR: no $MARKER in it, not a stack directory"
    fi
  fi
}

cmd_status() {
  local bad=0 pid
  if pid=$(live_pid etcd) && etcd_healthy; then
    echo "etcd: up (pid $pid, $ETCD_URL)"
  else
    echo "etcd: down${pid:+ (pid $pid not healthy)}"
    bad=1
  fi
  pid=""
  if pid=$(live_pid kube-apiserver) && apiserver_healthy; then
    echo "kube-apiserver: up (pid $pid, $API_URL)"
  else
    echo "kube-apiserver: down${pid:+ (pid $pid not ready)}"
    bad=1
  fi
  pid=""
  if pid=$(live_pid moto) && moto_healthy; then
    echo "moto: up (pid $pid, $MOTO_URL)"
  else
    echo "moto: down${pid:+ (pid $pid not answering)}"
    bad=1
  fi
  return "$bad"
}

cmd_start_apiserver() {
  lock_dir
  [[ -s $TOKENS && -s $SA_KEY ]] || die "$STACK_DIR has no stack: run 'scripts/stack.sh up' first"
  start_apiserver
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  init_dir "$cmd"
  case $cmd in
    up) (($# == 0)) || usage; cmd_up ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    env)
      [[ -f $ENV_FILE ]] || die "no $ENV_FILE: run 'scripts/stack.sh up' first"
      printf '%s\n' "$ENV_FILE"
      ;;
    stop-apiserver) lock_dir; stop_component kube-apiserver ;;
    start-apiserver) cmd_start_apiserver ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
