#!/usr/bin/env bash
# rota quick start: a local cluster — three servers and one worker as
# processes on this machine, their data under one folder — with a nightly
# build job and a per-minute job applied, and the nightly build run once now.
#
#   deploy/quickstart.sh          start; Ctrl-C stops everything
#   deploy/quickstart.sh stop     stop a quick start (from another terminal)
#
# Settings (environment):
#   ROTA_QUICKSTART_DIR    where data and logs go (default: .rota-quickstart)
#   ROTA_QUICKSTART_PORT   first gRPC port; servers use it and the next two,
#                          their HTTP endpoints (metrics, health) the same
#                          plus 2000, the worker's the first plus 2003
#                          (default: 7401)
#   ROTA_QUICKSTART_BIN    directory holding already built binaries (default:
#                          build them with cargo into target/debug)
#   ROTA_QUICKSTART_DETACH=1  start, then return (stop with `stop`)
#
# With a Docker engine, the nightly build runs in a container of a small
# image built here (no registry needed); without one it runs as a host
# process, and the script says so. Authentication and TLS are off: this is
# a local playground, not a deployment.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${ROTA_QUICKSTART_DIR:-$ROOT/.rota-quickstart}"
PORT="${ROTA_QUICKSTART_PORT:-7401}"
WORKER_ID="quickstart-worker"

say() { printf '%s\n' "$*"; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

engine_up() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# The pids recorded in $DIR/pids that still run a program of this quick
# start (a stale file, after a reboot, names other processes).
ours() {
  local recorded=() pid
  [ -f "$DIR/pids" ] && read -r -a recorded <"$DIR/pids"
  for pid in "${recorded[@]}"; do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR"; then
      printf '%s ' "$pid"
    fi
  done
}

# Stops what a quick start in $DIR started: SIGTERM first (the worker hands
# back what it runs, servers drain), SIGKILL after 30 s; then removes any
# container its worker left.
stop() {
  local pids=()
  read -r -a pids <<<"$(ours)" || true
  if [ "${#pids[@]}" -eq 0 ]; then
    say "quickstart: nothing runs from $DIR"
  fi
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
      local alive=0
      for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      [ "$alive" = 0 ] && break
      sleep 0.2
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$DIR/pids"
  if engine_up; then
    local left
    left="$(docker ps -aq --filter "label=rota.worker=$WORKER_ID")"
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086
      docker rm -f $left >/dev/null
    fi
  fi
  say "quickstart: stopped (data and logs kept in $DIR; remove it to start afresh)"
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi
[ -z "${1:-}" ] || fail "unknown argument ${1}; use no argument to start, or 'stop'"
[ -n "$(ours)" ] && fail "a quick start already runs from $DIR; stop it first: deploy/quickstart.sh stop"
rm -f "$DIR/pids"

case "$PORT" in
  '' | *[!0-9]*) fail "ROTA_QUICKSTART_PORT=$PORT is not a port number" ;;
esac
[ "$PORT" -ge 1024 ] && [ "$PORT" -le 61000 ] || fail "ROTA_QUICKSTART_PORT=$PORT: use 1024 to 61000"
SERVERS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 2000)) $((PORT + 2001)) $((PORT + 2002)) $((PORT + 2003)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    fail "port $p is in use; choose other ports with ROTA_QUICKSTART_PORT (first of three gRPC ports)"
  fi
done

if [ -n "${ROTA_QUICKSTART_BIN:-}" ]; then
  BIN="$ROTA_QUICKSTART_BIN"
else
  command -v cargo >/dev/null 2>&1 || fail "cargo is needed to build rota (https://rustup.rs)"
  say "quickstart: building rota-server, rota-worker and rotactl (cargo build; a few minutes the first time)"
  (cd "$ROOT" && cargo build --quiet --bins -p rota-server -p rota-worker -p rota-client)
  BIN="$ROOT/target/debug"
fi
for b in rota-server rota-worker rotactl; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing"
done

mkdir -p "$DIR/jobs"
DRIVERS="exec"
if engine_up; then
  say "quickstart: Docker engine found: building the example image (rota-test/busybox:1, no registry)"
  if "$ROOT/chaos-tests/images/build-test-image.sh" >"$DIR/image.log" 2>&1; then
    DRIVERS="docker,exec"
  else
    say "quickstart: could not build the example image (see $DIR/image.log); the nightly build runs as a host process instead"
  fi
else
  say "quickstart: no Docker engine answers: the nightly build runs as a host process (exec driver) instead of a container"
fi

# Each process in a session of its own: Ctrl-C reaches this script only,
# which stops them in order (a second signal would make them exit at once).
pids=()
save_pids() { printf '%s ' "${pids[@]}" >"$DIR/pids"; }
# Whatever ends this script early (an error, Ctrl-C) stops what it started.
cleanup=1
trap 'if [ "$cleanup" = 1 ]; then stop; fi' EXIT
trap 'exit 130' INT TERM

INITIAL="1=127.0.0.1:$PORT,2=127.0.0.1:$((PORT + 1)),3=127.0.0.1:$((PORT + 2))"
for i in 1 2 3; do
  setsid "$BIN/rota-server" --node-id "$i" --listen "127.0.0.1:$((PORT + i - 1))" \
    --http-listen "127.0.0.1:$((PORT + 2000 + i - 1))" \
    --data-dir "$DIR/node-$i" --initial-cluster "$INITIAL" >>"$DIR/node-$i.log" 2>&1 &
  pids+=("$!")
  save_pids
done
export ROTA_SERVERS="$SERVERS"
ROTACTL="$BIN/rotactl"
deadline=$((SECONDS + 60))
until "$ROTACTL" cluster status >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the servers did not elect a leader within 60 s; see $DIR/node-*.log"
  sleep 0.5
done

ROTA_SHUTDOWN_TIMEOUT=10s setsid "$BIN/rota-worker" --servers "$SERVERS" --id "$WORKER_ID" --drivers "$DRIVERS" \
  --http-listen "127.0.0.1:$((PORT + 2003))" --data-dir "$DIR/worker" >>"$DIR/worker.log" 2>&1 &
pids+=("$!")
save_pids

if [ "$DRIVERS" = "docker,exec" ]; then
  TASK='  image: rota-test/busybox:1
  pull: never
  resources: { memory: 64Mi, cpu: 0.5 }'
else
  TASK='  driver: exec'
fi
cat >"$DIR/jobs/quickstart-nightly.yaml" <<EOF
# A nightly build: 02:00 Berlin time, never two at once, retried once.
name: quickstart-nightly
schedule: { cron: "0 2 * * *", timezone: Europe/Berlin }
concurrency: forbid
timeout: 10m
retry: { max_attempts: 2, backoff: 30s }
task:
$TASK
  command: ["sh", "-c", "echo building \$ROTA_JOB for \$ROTA_SCHEDULED_AT; sleep 1; echo build ok"]
EOF
cat >"$DIR/jobs/quickstart-every-minute.yaml" <<'EOF'
# A host process every minute.
name: quickstart-every-minute
schedule: { cron: "* * * * *" }
concurrency: forbid
timeout: 50s
task:
  driver: exec
  command: ["sh", "-c", "date; uptime"]
EOF
"$ROTACTL" apply -f "$DIR/jobs" >/dev/null

registered() {
  local workers
  workers="$("$ROTACTL" worker list 2>/dev/null)" || return 1
  [[ "$workers" == *"$WORKER_ID"* ]]
}
deadline=$((SECONDS + 60))
until registered; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the worker did not register within 60 s; see $DIR/worker.log"
  sleep 0.5
done

say "quickstart: running the nightly build once now:"
if ! timeout --foreground 120 "$ROTACTL" job run quickstart-nightly --wait; then
  say "quickstart: the nightly build did not succeed; see: $ROTACTL run list --job quickstart-nightly"
fi

cat <<EOF

rota is running (data and logs in $DIR):
  servers   gRPC $SERVERS
            HTTP (metrics, health) 127.0.0.1:$((PORT + 2000))-$((PORT + 2002))
  worker    $WORKER_ID (drivers: $DRIVERS), HTTP 127.0.0.1:$((PORT + 2003))
  security  OFF: no TLS, no tokens — a local trial on loopback only. The
            deploy files (compose, Kubernetes, systemd) turn both on; see
            docs/operations.md, "Security".

Watch it:
  export ROTA_SERVERS=$SERVERS
  $ROTACTL cluster status
  $ROTACTL job list
  $ROTACTL job explain quickstart-nightly      # next fire times, Berlin time and UTC
  $ROTACTL run list --watch                    # quickstart-every-minute runs each minute
  $ROTACTL job run quickstart-nightly --follow # another build, its output as it runs
  curl -s 127.0.0.1:$((PORT + 2000))/metrics | grep ^rota_runs

EOF

if [ "${ROTA_QUICKSTART_DETACH:-}" = "1" ]; then
  cleanup=0
  say "Stop it with: deploy/quickstart.sh stop"
  exit 0
fi
say "Ctrl-C stops everything (or, from another terminal: deploy/quickstart.sh stop)."
while [ -f "$DIR/pids" ]; do
  sleep 1
done
# Stopped from elsewhere: nothing left to clean.
cleanup=0
