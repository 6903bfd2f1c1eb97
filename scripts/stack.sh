#!/usr/bin/env bash
# The local stack, real parts on loopback: etcd and kube-apiserver of a current release, the
# External Secrets Operator (its controller and its validating webhook, out of cluster, ESO's
# own CRD bundle), all built from the Go module proxy by scripts/build-go-tool.sh, and moto
# patched to sign SNS deliveries like AWS (scripts/moto_launcher.py), which ESO reads
# Parameter Store and Secrets Manager from. The ESO release is chosen per stack
# (STACK_ESO_VERSION); etcd and kube-apiserver are the releases of their wrappers in stack/go.
#
# Usage: scripts/stack.sh up | down [--purge] | status | env
#                         | stop COMPONENT | start COMPONENT
#                         | stop-apiserver | start-apiserver
#
#   up               start what is not running (healthy processes are reused), create the
#                    SNS topic, apply ESO's CRDs and k8s/crds/*.yaml, register ESO's webhook,
#                    write the env file
#   down [--purge]   stop this STACK_DIR's processes; --purge also deletes STACK_DIR
#   status           one line per component; exit 1 if any is not healthy
#   env              print the path of the sourceable env file
#   stop COMPONENT   stop one of: kube-apiserver, eso (the controller), eso-webhook
#                    (tests of outages: API server down, ESO down, ESO's webhook down)
#   start COMPONENT  start it again with the same flags and ports
#   stop-apiserver / start-apiserver   the same as stop/start kube-apiserver
#
# Environment (`up` records the ports in STACK_DIR/stack.conf; the other
# commands always use the recorded ones, a later `up` unless the variable is set):
#   STACK_DIR        default <repo>/target/stack
#   STACK_ETCD_PORT  default 23790 (etcd's peer port is this + 1)
#   STACK_API_PORT   default 16443
#   STACK_MOTO_PORT  default 15000
#   STACK_ESO_PORT   default 17000: ESO's webhook; + 1 its health probe, + 2 the
#                    controller's metrics (externalsecret_* and the provider's API calls),
#                    + 3 the controller's liveness probe (ESO v0.20 has one, v0.19.2 not)
#   STACK_ESO_VERSION  the ESO release: its binary and its CRD bundle (default: the one
#                    `scripts/build-go-tool.sh --version external-secrets` prints, v0.20.4;
#                    `--versions external-secrets` lists the others, e.g. v0.16.2). The env
#                    file exports it as SSM_RESYNC_STACK_ESO_VERSION. The CRDs are ESO's even
#                    with STACK_ESO=0, so it applies there too
#   STACK_ESO        1 (default) runs ESO; 0 leaves it out (a stack for tests that
#                    only need the API server)
#   STACK_API_FEATURE_GATES  kube-apiserver --feature-gates (default: none, the release's
#                    defaults), e.g. WatchList=false for a server as 1.33 ships
#   STACK_ESO_LOGLEVEL  ESO's --loglevel (default info; debug shows its requeues)
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
  sed -n '/^# Usage:/,/^#   stop-apiserver \/ start-apiserver/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- configuration --------------------------------------------------------

init_dir() {
  # Absolute and canonical: it is matched against our processes' command lines.
  STACK_DIR=$(realpath -m "${STACK_DIR:-$REPO/target/stack}")
  CONF=$STACK_DIR/stack.conf
  local saved_etcd="" saved_api="" saved_moto="" saved_eso="" saved_with_eso="" saved_gates=""
  local saved_eso_version=""
  if [[ -f $CONF ]]; then
    saved_etcd=$(sed -n 's/^etcd_port=//p' "$CONF")
    saved_api=$(sed -n 's/^api_port=//p' "$CONF")
    saved_moto=$(sed -n 's/^moto_port=//p' "$CONF")
    saved_eso=$(sed -n 's/^eso_port=//p' "$CONF")
    saved_with_eso=$(sed -n 's/^eso=//p' "$CONF")
    saved_gates=$(sed -n 's/^api_feature_gates=//p' "$CONF")
    # None in a stack.conf of before the choice: `up` then takes the default, and refuses
    # (save_conf) while that stack's processes run.
    saved_eso_version=$(sed -n 's/^eso_version=//p' "$CONF")
  fi
  if [[ $1 == up ]]; then
    ETCD_PORT=${STACK_ETCD_PORT:-${saved_etcd:-23790}}
    API_PORT=${STACK_API_PORT:-${saved_api:-16443}}
    MOTO_PORT=${STACK_MOTO_PORT:-${saved_moto:-15000}}
    ESO_PORT=${STACK_ESO_PORT:-${saved_eso:-17000}}
    WITH_ESO=${STACK_ESO:-${saved_with_eso:-1}}
    API_GATES=${STACK_API_FEATURE_GATES-$saved_gates}
    ESO_VERSION=${STACK_ESO_VERSION:-$saved_eso_version}
  else
    # The ports are the stack's own: a sourced env file of another stack
    # must not point status/down/start-apiserver at that stack's ports.
    ETCD_PORT=${saved_etcd:-${STACK_ETCD_PORT:-23790}}
    API_PORT=${saved_api:-${STACK_API_PORT:-16443}}
    MOTO_PORT=${saved_moto:-${STACK_MOTO_PORT:-15000}}
    ESO_PORT=${saved_eso:-${STACK_ESO_PORT:-17000}}
    WITH_ESO=${saved_with_eso:-${STACK_ESO:-1}}
    API_GATES=$saved_gates
    ESO_VERSION=${saved_eso_version:-${STACK_ESO_VERSION:-}}
  fi
  if [[ -z $ESO_VERSION ]]; then
    ESO_VERSION=$("$SCRIPTS/build-go-tool.sh" --version external-secrets) || die "no default ESO version"
  fi
  [[ $ESO_VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "STACK_ESO_VERSION: '$ESO_VERSION' is not vX.Y.Z"
  [[ $API_GATES =~ ^[A-Za-z0-9=,]*$ ]] || die "STACK_API_FEATURE_GATES: '$API_GATES' is not Gate=bool,..."
  [[ $WITH_ESO == [01] ]] || die "STACK_ESO must be 0 or 1, not '$WITH_ESO'"
  local p
  for p in "$ETCD_PORT" "$API_PORT" "$MOTO_PORT" "$ESO_PORT"; do
    if [[ ! $p =~ ^[0-9]+$ ]] || ((p == 0 || p > 65532)); then die "bad port '$p'"; fi
  done
  ETCD_PEER_PORT=$((ETCD_PORT + 1))
  ESO_WEBHOOK_PORT=$ESO_PORT
  ESO_WEBHOOK_HEALTH_PORT=$((ESO_PORT + 1))
  ESO_METRICS_PORT=$((ESO_PORT + 2))
  ESO_LIVE_PORT=$((ESO_PORT + 3))

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
  KUBECONFIG_ESO=$STACK_DIR/kubeconfig-external-secrets
  ESO_CERT_DIR=$STACK_DIR/eso-webhook-certs
}

save_conf() {
  local conf
  conf=$(printf 'etcd_port=%s\napi_port=%s\nmoto_port=%s\neso_port=%s\neso=%s\neso_version=%s' \
    "$ETCD_PORT" "$API_PORT" "$MOTO_PORT" "$ESO_PORT" "$WITH_ESO" "$ESO_VERSION")
  [[ -n $API_GATES ]] && conf+=$'\n'"api_feature_gates=$API_GATES"
  if [[ -f $CONF && $(<"$CONF") != "$conf" ]] && any_alive; then
    die "ports, feature gates or ESO version differ from those in $CONF while this stack runs: run 'scripts/stack.sh down' first"
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
# get reused, so the command must also be the component's (argv[0] for etcd,
# kube-apiserver and ESO, the launcher script for moto) and name this STACK_DIR
# (ESO's controller takes its kubeconfig from the environment, so that is checked).
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
    eso-webhook) [[ ${args[0]##*/} == external-secrets && ${args[1]} == webhook ]] || return 1 ;;
    eso)
      [[ ${args[0]##*/} == external-secrets && ${args[1]} != webhook ]] || return 1
      { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "KUBECONFIG=$KUBECONFIG_ESO" || return 1
      printf '%s\n' "$pid"
      return 0
      ;;
  esac
  [[ ${args[*]} == *"$STACK_DIR/"* ]] || return 1
  printf '%s\n' "$pid"
}

COMPONENTS=(etcd kube-apiserver moto eso-webhook eso)

any_alive() {
  local c
  for c in "${COMPONENTS[@]}"; do
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

# component_exited NAME: true when component NAME is not (or no longer) running. One
# failed live_pid is not enough: start_bg writes the pid file before its exec, and while
# the kernel replaces the program /proc/PID/cmdline reads empty for a moment (the new
# image's arguments are not mapped yet), so a check landing there would call a starting
# process dead ("moto exited during start-up" with nothing in its log). Ask again.
component_exited() {
  local i
  for ((i = 0; i < 3; i++)); do
    live_pid "$1" >/dev/null && return 1
    sleep 0.05
  done
  return 0
}

# wait_healthy NAME CHECK TIMEOUT_S: poll CHECK; on timeout show the log tail.
wait_healthy() {
  local name=$1 check=$2 timeout=$3 deadline
  deadline=$((SECONDS + timeout))
  while ! "$check"; do
    if component_exited "$name"; then
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

# The path of a Go program of the stack, built and cached by scripts/build-go-tool.sh.
go_tool() {
  local bin
  bin=$("$SCRIPTS/build-go-tool.sh" "$1" | tail -n 1) || die "could not get a $1 binary"
  [[ -x $bin ]] || die "build-go-tool.sh $1 printed '$bin', not an executable"
  printf '%s\n' "$bin"
}

# --- health checks ----------------------------------------------------------

etcd_healthy() {
  curl -fsS --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

admin_token() { sed -n 's/^\([^,]*\),admin,.*/\1/p' "$TOKENS"; }
ssm_token() { sed -n 's/^\([^,]*\),ssm-resync,.*/\1/p' "$TOKENS"; }
eso_token() { sed -n 's/^\([^,]*\),external-secrets,.*/\1/p' "$TOKENS"; }

apiserver_healthy() {
  [[ -f $TOKENS ]] || return 1
  [[ $(curl -ksS --max-time 2 -H "Authorization: Bearer $(admin_token)" \
    "$API_URL/readyz" 2>/dev/null) == ok ]]
}

moto_healthy() {
  curl -fsS --max-time 2 -o /dev/null "$MOTO_URL/moto-api/config" 2>/dev/null
}

# The webhook's readiness includes its certificate check.
eso_webhook_healthy() {
  curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$ESO_WEBHOOK_HEALTH_PORT/readyz" 2>/dev/null
}

# The controller's metrics listener opens once the manager runs, and it lists a
# controller's workqueue once that controller has started (a stronger sign than the liveness
# probe of v0.20, a plain ping). The page is read whole before matching: with
# `curl | grep -q` under pipefail, grep exiting at the first match makes curl fail on its next
# write (SIGPIPE) once the page outgrows the pipe's buffer, as v0.20's ~100 KiB does.
eso_healthy() {
  local page
  page=$(curl -fsS --max-time 2 "http://127.0.0.1:$ESO_METRICS_PORT/metrics" 2>/dev/null) || return 1
  grep -q 'controller="externalsecret"' <<<"$page"
}

# --- one-time material --------------------------------------------------------

ensure_material() {
  touch "$STACK_DIR/$MARKER"
  if [[ ! -s $TOKENS ]]; then
    umask 077
    # token,user,uid[,"group1,group2"]; ssm-resync has no group, for RBAC tests. ESO's
    # controller and webhook run as their own user (its chart grants it a ClusterRole about
    # as wide; masters keeps the stack simple).
    printf '%s,admin,admin,"system:masters"\n%s,ssm-resync,ssm-resync\n%s,external-secrets,external-secrets,"system:masters"\n' \
      "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$TOKENS.tmp"
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
  ensure_eso_webhook_certs
}

# ESO's webhook reads ca.crt, tls.crt and tls.key from its --cert-dir and checks that the
# serving certificate chains to the CA for --dns-name (what its cert-controller would
# write in a cluster); the API server trusts the CA through the webhook configuration.
ensure_eso_webhook_certs() {
  local d=$ESO_CERT_DIR
  if [[ -s $d/ca.crt && -s $d/tls.crt && -s $d/tls.key ]] \
    && openssl x509 -checkend 86400 -noout -in "$d/tls.crt" >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj /CN=ssm-resync-stack-eso-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null || die "openssl: ESO webhook CA failed"
  openssl req -newkey rsa:2048 -nodes -sha256 -subj /CN=localhost \
    -keyout "$d/tls.key.tmp" -out "$d/tls.csr" 2>/dev/null || die "openssl: ESO webhook key failed"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$d/ext.cnf" -out "$d/tls.crt.tmp" 2>/dev/null \
    || die "openssl: ESO webhook certificate failed"
  mv "$d/tls.key.tmp" "$d/tls.key"
  mv "$d/tls.crt.tmp" "$d/tls.crt"
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
  local bin
  bin=$(go_tool etcd)
  start_bg etcd "$bin" \
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
  bin=$(go_tool kube-apiserver)
  mkdir -p "$CERT_DIR"
  # The apiserver self-signs for one year; have it mint a fresh pair if ours expires.
  if [[ -f $CERT_DIR/apiserver.crt ]] && ! openssl x509 -checkend 86400 -noout -in "$CERT_DIR/apiserver.crt" >/dev/null 2>&1; then
    rm -f "$CERT_DIR/apiserver.crt" "$CERT_DIR/apiserver.key"
  fi
  # --endpoint-reconciler-type=none: no kube-apiserver writes the `kubernetes` Service's
  # endpoints here (nothing in the stack reads them), and from 1.37 the default (lease)
  # reconciler refuses a loopback --advertise-address ("cannot use public IP 127.0.0.1 with
  # endpoint reconciler"), where 1.35 took it.
  start_bg kube-apiserver "$bin" \
    --etcd-servers="$ETCD_URL" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --cert-dir="$CERT_DIR" \
    --token-auth-file="$TOKENS" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$SA_KEY" \
    --service-account-signing-key-file="$SA_KEY" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    --enable-priority-and-fairness=false \
    --profiling=false \
    ${API_GATES:+--feature-gates="$API_GATES"}
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
  write_kubeconfig "$KUBECONFIG_ESO" external-secrets "$(eso_token)" "$ca"
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

# ESO's validating webhook, out of cluster: the API server calls it at a URL on loopback
# (in a cluster, through its Service). Registered with the chart's rules and failurePolicy
# Fail, so while it is down every write of an ExternalSecret or store fails, as in a cluster.
ensure_eso_webhook() {
  if live_pid eso-webhook >/dev/null; then
    eso_webhook_healthy || wait_healthy eso-webhook eso_webhook_healthy 60
    log "eso-webhook: running (pid $(live_pid eso-webhook)), reused"
    return 0
  fi
  rm -f "$(pid_file eso-webhook)"
  port_busy "$ESO_WEBHOOK_PORT" && die "port $ESO_WEBHOOK_PORT (STACK_ESO_PORT) is in use by another process"
  port_busy "$ESO_WEBHOOK_HEALTH_PORT" && die "port $ESO_WEBHOOK_HEALTH_PORT (STACK_ESO_PORT + 1) is in use by another process"
  local bin t0=$SECONDS
  bin=$(go_tool "external-secrets@$ESO_VERSION")
  start_bg eso-webhook env KUBECONFIG="$KUBECONFIG_ESO" "$bin" webhook \
    --port="$ESO_WEBHOOK_PORT" \
    --cert-dir="$ESO_CERT_DIR" \
    --dns-name=localhost \
    --healthz-addr="127.0.0.1:$ESO_WEBHOOK_HEALTH_PORT" \
    --metrics-addr=0 \
    --zap-time-encoding=iso8601
  wait_healthy eso-webhook eso_webhook_healthy 60
  log "eso-webhook: started (pid $(live_pid eso-webhook), ESO $ESO_VERSION, https://localhost:$ESO_WEBHOOK_PORT, ready in $((SECONDS - t0)) s)"
}

register_eso_webhook() {
  local ca url out
  ca=$(base64 -w0 "$ESO_CERT_DIR/ca.crt")
  url=https://localhost:$ESO_WEBHOOK_PORT
  out=$(kubectl_admin apply --server-side --force-conflicts --field-manager=ssm-resync-stack -f - 2>&1 <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: secretstore-validate
webhooks:
- name: validate.secretstore.external-secrets.io
  rules:
  - {apiGroups: [external-secrets.io], apiVersions: [v1], operations: [CREATE, UPDATE, DELETE], resources: [secretstores], scope: Namespaced}
  clientConfig: {url: "$url/validate-external-secrets-io-v1-secretstore", caBundle: "$ca"}
  admissionReviewVersions: [v1, v1beta1]
  sideEffects: None
  timeoutSeconds: 5
  failurePolicy: Fail
- name: validate.clustersecretstore.external-secrets.io
  rules:
  - {apiGroups: [external-secrets.io], apiVersions: [v1], operations: [CREATE, UPDATE, DELETE], resources: [clustersecretstores], scope: Cluster}
  clientConfig: {url: "$url/validate-external-secrets-io-v1-clustersecretstore", caBundle: "$ca"}
  admissionReviewVersions: [v1, v1beta1]
  sideEffects: None
  timeoutSeconds: 5
  failurePolicy: Fail
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: externalsecret-validate
webhooks:
- name: validate.externalsecret.external-secrets.io
  rules:
  - {apiGroups: [external-secrets.io], apiVersions: [v1], operations: [CREATE, UPDATE, DELETE], resources: [externalsecrets], scope: Namespaced}
  clientConfig: {url: "$url/validate-external-secrets-io-v1-externalsecret", caBundle: "$ca"}
  admissionReviewVersions: [v1, v1beta1]
  sideEffects: None
  timeoutSeconds: 5
  failurePolicy: Fail
EOF
  ) || die "registering ESO's validating webhooks failed: $out"
  log "eso-webhook: registered (ValidatingWebhookConfigurations externalsecret-validate, secretstore-validate; failurePolicy Fail)"
}

# ESO's controller, out of cluster, reading AWS from moto: AWS_SSM_ENDPOINT,
# AWS_SECRETSMANAGER_ENDPOINT and AWS_STS_ENDPOINT are its provider's endpoint overrides, the
# same names in both releases the stack runs (v0.16.2: pkg/provider/aws/auth/resolver.go, AWS
# SDK v1; v0.20.4: pkg/provider/aws/{parameterstore,secretsmanager,auth}/resolver.go, AWS SDK
# v2); stores without `auth` use these static credentials through the SDK's default chain.
# Leader election is off (one replica). From v0.20 the controller also serves a liveness probe,
# --live-addr, by default on :8082 of every interface, which two stacks would both take: it is
# put on loopback at STACK_ESO_PORT + 3 where the release has the flag (asked of its --help).
start_eso() {
  if live_pid eso >/dev/null; then
    eso_healthy || wait_healthy eso eso_healthy 60
    log "eso: running (pid $(live_pid eso)), reused"
    return 0
  fi
  rm -f "$(pid_file eso)"
  port_busy "$ESO_METRICS_PORT" && die "port $ESO_METRICS_PORT (STACK_ESO_PORT + 2) is in use by another process"
  local bin t0=$SECONDS flags=()
  bin=$(go_tool "external-secrets@$ESO_VERSION")
  if eso_has_flag "$bin" --live-addr; then
    port_busy "$ESO_LIVE_PORT" && die "port $ESO_LIVE_PORT (STACK_ESO_PORT + 3) is in use by another process"
    flags+=(--live-addr="127.0.0.1:$ESO_LIVE_PORT")
  fi
  start_bg eso env \
    KUBECONFIG="$KUBECONFIG_ESO" \
    AWS_SSM_ENDPOINT="$MOTO_URL" \
    AWS_SECRETSMANAGER_ENDPOINT="$MOTO_URL" \
    AWS_STS_ENDPOINT="$MOTO_URL" \
    AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing \
    AWS_EC2_METADATA_DISABLED=true \
    "$bin" \
    --metrics-addr="127.0.0.1:$ESO_METRICS_PORT" \
    --enable-leader-election=false \
    --concurrent=4 \
    --loglevel="${STACK_ESO_LOGLEVEL:-info}" \
    --zap-time-encoding=iso8601 \
    "${flags[@]}"
  wait_healthy eso eso_healthy 60
  log "eso: started (pid $(live_pid eso), ESO $ESO_VERSION, metrics http://127.0.0.1:$ESO_METRICS_PORT/metrics, ready in $((SECONDS - t0)) s)"
}

# eso_has_flag BIN --FLAG: the controller (ESO's root command) of this release takes --FLAG.
eso_has_flag() {
  local help
  help=$("$1" --help 2>&1) || die "$1 --help failed: $help"
  grep -q -- "^ *$2 " <<<"$help"
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

# kubectl (the machine's, 1.32) against the stack's server: apply/wait output (server
# warnings included) is captured and shown only on failure.
kubectl_admin() { KUBECONFIG=$KUBECONFIG_ADMIN kubectl "$@"; }

# ESO's own CRD bundle, from the module of the release the stack runs (copied next to the
# binary by build-go-tool.sh), and the project's copy of the KES CRD (KES is not on any
# registry this project can use).
apply_crds() {
  local dir=$REPO/k8s/crds files=() bundle
  bundle=$(dirname "$(go_tool "external-secrets@$ESO_VERSION")")/bundle.yaml
  [[ -s $bundle ]] || die "ESO's CRD bundle $bundle is missing"
  files=("$bundle")
  shopt -s nullglob
  files+=("$dir"/*.yaml)
  shopt -u nullglob
  local args=() f out
  for f in "${files[@]}"; do args+=(-f "$f"); done
  # Server-side apply: ESO's CRDs overflow the client-side last-applied annotation.
  out=$(kubectl_admin apply --server-side --force-conflicts --field-manager=ssm-resync-stack "${args[@]}" 2>&1) \
    || die "kubectl apply of $dir failed: $out"
  out=$(kubectl_admin wait --for=condition=Established crd --all --timeout=30s 2>&1) \
    || die "CRDs not Established: $out"
  log "crds: applied ESO $ESO_VERSION's bundle and ${#files[@]} file(s) in all, Established"
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
# curl tests of the plain format work against the local stack (off in the shipped manifests).
export SSM_RESYNC_ACCEPT_PLAIN_FORMAT=true
export SSM_RESYNC_SAMPLE_CERT_URL=$CERT_URL
export STACK_DIR=$STACK_DIR
export STACK_API_PORT=$API_PORT
export STACK_MOTO_PORT=$MOTO_PORT
export STACK_ETCD_PORT=$ETCD_PORT
export STACK_ESO_PORT=$ESO_PORT
export STACK_ESO=$WITH_ESO
export STACK_ESO_VERSION=$ESO_VERSION
# The ESO release whose CRDs (and, with STACK_ESO=1, controller and webhook) this stack runs.
export SSM_RESYNC_STACK_ESO_VERSION=$ESO_VERSION
export STACK_ESO_METRICS_URL=http://127.0.0.1:$ESO_METRICS_PORT/metrics
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- commands -------------------------------------------------------------------

cmd_up() {
  local t0=$SECONDS
  "$SCRIPTS/build-go-tool.sh" --version "external-secrets@$ESO_VERSION" >/dev/null \
    || die "STACK_ESO_VERSION=$ESO_VERSION: no such ESO wrapper (scripts/build-go-tool.sh --versions external-secrets lists them)"
  lock_dir
  save_conf
  ensure_material
  ensure_etcd
  start_apiserver
  write_kubeconfigs
  ensure_moto
  ensure_topic
  apply_crds
  if ((WITH_ESO)); then
    ensure_eso_webhook
    register_eso_webhook
    start_eso
  fi
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
  stop_component eso
  stop_component eso-webhook
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
  if ((WITH_ESO)); then
    pid=""
    if pid=$(live_pid eso-webhook) && eso_webhook_healthy; then
      echo "eso-webhook: up (pid $pid, ESO $ESO_VERSION, https://localhost:$ESO_WEBHOOK_PORT)"
    else
      echo "eso-webhook: down${pid:+ (pid $pid not ready)}"
      bad=1
    fi
    pid=""
    if pid=$(live_pid eso) && eso_healthy; then
      echo "eso: up (pid $pid, ESO $ESO_VERSION, metrics http://127.0.0.1:$ESO_METRICS_PORT/metrics)"
    else
      echo "eso: down${pid:+ (pid $pid not ready)}"
      bad=1
    fi
  else
    echo "eso: not part of this stack (STACK_ESO=0; CRDs of ESO $ESO_VERSION)"
  fi
  return "$bad"
}

cmd_start() {
  lock_dir
  [[ -s $TOKENS && -s $SA_KEY ]] || die "$STACK_DIR has no stack: run 'scripts/stack.sh up' first"
  case $1 in
    kube-apiserver) start_apiserver ;;
    eso-webhook) ((WITH_ESO)) || die "this stack runs without ESO"; ensure_eso_webhook ;;
    eso) ((WITH_ESO)) || die "this stack runs without ESO"; start_eso ;;
    *) usage ;;
  esac
}

cmd_stop() {
  case $1 in
    kube-apiserver | eso-webhook | eso) lock_dir; stop_component "$1" ;;
    *) usage ;;
  esac
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
    stop) (($# == 1)) || usage; cmd_stop "$1" ;;
    start) (($# == 1)) || usage; cmd_start "$1" ;;
    stop-apiserver) cmd_stop kube-apiserver ;;
    start-apiserver) cmd_start kube-apiserver ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
