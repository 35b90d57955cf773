#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/direct.sh - FastCGI servers loaded directly, no nginx in the
# way: fcgi_load talks to each target's socket, so the numbers are the
# server's alone, and its CPU per request can be set against the floor of
# a FastCGI responder on this machine (null-fcgi).
#
#   tests/bench/direct.sh                          # every direct target
#   tests/bench/direct.sh null-fcgi fcgate-async   # only these
#
# Targets are the harness's own (peers/targets/*.sh, started the same way,
# without the nginx): null-fcgi, libfcgi-c, fcgate-sync, fcgate-threads,
# fcgate-async. For each round, each target in turn is started, every
# workload is loaded with `fcgi_load -P <its pids>` (a warm-up, then the
# measured period), and the target is stopped; the rounds interleave the
# targets, so slow drifts of the machine hit them alike. Per row: req/s,
# latency percentiles, errors, the client's and the server's CPU per
# request (the server's: utime + stime of its whole process tree from
# /proc, over the measured period).
#
# Knobs (environment):
#   DURATION=8 WARMUP=2   seconds of each measured / warm-up period
#   REPEAT=1              rounds over all targets
#   THREADS=2 CONNS=64    fcgi_load -t / -c
#   BODY=1024             bytes of body for the post workloads
#   DIRECT_TARGETS="null-fcgi libfcgi-c fcgate-sync fcgate-threads fcgate-async"
#   DIRECT_WORKLOADS="hello hello-k item item-k post"
#                         hello: GET /hello; item: GET /item?id=N, N random in
#                         1..ITEM_ROWS; post: POST /hello with BODY bytes;
#                         -k: FCGI_KEEP_CONN (else a new connection each)
#   FCGI_LOAD=<repo>/build-bench/tests/bench/fcgi_load
#   FCGATE_BIN, FCGATE_APP as for the harness (default: build-bench/)
#   OUT_DIR=/tmp/fcgate-direct.<time>   results (direct.tsv) and logs
#   NO_SUMMARY=1          do not print the table at the end
#
# Only unix sockets are used. Every server is started in its own session,
# recorded by PID and stopped by PID (also on Ctrl-C / TERM).
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$BENCH_DIR/../.." && pwd)
PEERS_DIR=$BENCH_DIR/peers
APPS_DIR=$PEERS_DIR/apps
export PEERS_DIR APPS_DIR
# shellcheck source=peers/lib/common.sh
source "$PEERS_DIR/lib/common.sh"

: "${DURATION:=8}" "${WARMUP:=2}" "${REPEAT:=1}" "${THREADS:=2}" "${CONNS:=64}" "${BODY:=1024}"
: "${DIRECT_TARGETS:=null-fcgi libfcgi-c fcgate-sync fcgate-threads fcgate-async}"
: "${DIRECT_WORKLOADS:=hello hello-k item item-k post}"
: "${FCGI_LOAD:=$TOP/build-bench/tests/bench/fcgi_load}"
: "${CPU_ITERS:=730000}" "${ITEM_ROWS:=10000}" "${NO_SUMMARY:=0}"
: "${OUT_DIR:=/tmp/fcgate-direct.$(date -u +%Y%m%dT%H%M%SZ)}"
export CPU_ITERS ITEM_ROWS

# wl_base WORKLOAD -> the harness workload a target must serve for it
wl_base() { case ${1%-k} in hello | post) echo hello ;; item) echo item ;; esac; }

# wl_args WORKLOAD -> WL_OPTS (fcgi_load's options) and WL_URI for it
wl_args() {
  WL_OPTS=()
  [[ $1 == *-k ]] && WL_OPTS+=(-k)
  case ${1%-k} in
    hello) WL_URI=/hello ;;
    item) WL_OPTS+=(-r "$ITEM_ROWS") WL_URI='/item?id=%r' ;;
    post) WL_OPTS+=(-b "$BODY") WL_URI=/hello ;;
  esac
}

# The C app and the sqlite db, as peers/run.sh makes them, in this run's
# own dir.
setup_run_root() {
  build_c_app
  create_db
}

# wait_answers: until the target answers GET /hello with 200 (30 s), failing
# early when a tracked process dies.
wait_answers() {
  local i pid name rest
  for ((i = 0; i < 300; i++)); do
    "$FCGI_LOAD" -t 1 -c 1 -w 0 -d 1 -n 1 -T 1 "$TARGET_UPSTREAM" /hello > /dev/null 2>&1 && return 0
    while read -r pid name rest; do
      pid_alive "$pid" || { log "  $name (pid $pid) exited during start-up"; return 1; }
    done < "$RUN_DIR/pids"
    sleep 0.1
  done
  return 1
}

# row ROUND WORKLOAD STATUS [FCGI_LOAD line] [NOTE] -> one line of direct.tsv
row() {
  local round=$1 w=$2 status=$3 res=${4:-} note=${5:-} kv k
  local -A r=()
  for kv in $res; do k=${kv%%=*}; r[$k]=${kv#*=}; done
  local cols=("$round" "$TARGET" "$w" "$status")
  for k in requests rps p50_us p90_us p99_us max_us err_connect err_incomplete err_closed \
    err_proto err_timeout stalled non200 reconnects client_us_per_req server_us_per_req; do
    cols+=("${r[$k]:-}")
  done
  cols+=("$(tr '\t\n' '  ' <<< "$note")")
  (IFS=$'\t'; echo "${cols[*]}") >> "$RESULTS"
}

# One workload against the running target; the server is every tracked PID
# and its descendants.
load_one() {
  local round=$1 w=$2 pids=() pid rest res foreign
  local out=$RUN_DIR/load-$w.txt
  while read -r pid rest; do pids+=(-P "$pid"); done < "$RUN_DIR/pids"
  wl_args "$w"
  local cmd=("$FCGI_LOAD" -t "$THREADS" -c "$CONNS" -w "$WARMUP" -d "$DURATION" "${WL_OPTS[@]}"
    --tsv "${pids[@]}" "$TARGET_UPSTREAM" "$WL_URI")
  printf '%s: %s\n' "$TARGET" "${cmd[*]}" >> "$OUT_DIR/direct-commands.txt"
  cpu_snapshot > "$RUN_DIR/cpu.before"
  local t0=$SECONDS
  "${cmd[@]}" > "$out" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID"
  LOAD_PID=""
  cpu_snapshot > "$RUN_DIR/cpu.after"
  # CPU of processes outside this run (other users of the machine): a note.
  # shellcheck disable=SC2046
  foreign=$(foreign_cpu "$RUN_DIR/cpu.before" "$RUN_DIR/cpu.after" $((SECONDS - t0)) \
    "$(awk '{print $6}' /proc/$$/stat)" $(awk '{print $1}' "$RUN_DIR/pids"))
  res=$(sed -n 's/^FCGI_LOAD //p' "$out")
  if [[ -z $res ]]; then
    row "$round" "$w" FAIL "" "fcgi_load gave no result: $(tail -n 2 "$out")"
    return
  fi
  row "$round" "$w" ok "$res" "other procs ${foreign%% *}% of a core"
  log "  $w: $(awk '{for(i=1;i<=NF;i++){split($i,a,"="); v[a[1]]=a[2]}
    printf "%.0f req/s p50 %.2f ms p99 %.2f ms server %s us/req client %s us/req errors %d non200 %d",
      v["rps"], v["p50_us"]/1000, v["p99_us"]/1000, v["server_us_per_req"], v["client_us_per_req"],
      v["err_connect"]+v["err_incomplete"]+v["err_closed"]+v["err_proto"]+v["err_timeout"]+v["stalled"], v["non200"]}' <<< "$res")"
}

# Runs in a subshell per target and round: start, load each workload, stop.
target_body() {
  local round=$1 w pid name rest
  TARGET_KIND="" TARGET_WORKLOADS="hello item sleep sleep256 cpu"
  # shellcheck disable=SC1090
  source "$PEERS_DIR/targets/$TARGET.sh" || die "cannot source targets/$TARGET.sh"
  LOAD_PID=""
  trap 'exit 143' TERM
  trap '[[ -n $LOAD_PID ]] && pid_alive "$LOAD_PID" && kill "$LOAD_PID" 2> /dev/null
        declare -F target_stop > /dev/null && target_stop; stop_tracked "$RUN_DIR/pids"' EXIT
  fail() {
    log "  $TARGET FAILED: $*"
    for w in $DIRECT_WORKLOADS; do [[ -e $RUN_DIR/done.$w ]] || row "$round" "$w" FAIL "" "$*"; done
    exit 1
  }
  target_start || fail "target_start failed"
  [[ $TARGET_UPSTREAM == unix:* ]] || fail "not a unix socket: $TARGET_UPSTREAM"
  wait_answers || fail "GET /hello never answered 200"
  for w in $DIRECT_WORKLOADS; do
    if [[ " $TARGET_WORKLOADS " != *" $(wl_base "$w") "* ]]; then
      row "$round" "$w" n/a
    else
      load_one "$round" "$w"
    fi
    touch "$RUN_DIR/done.$w"
    while read -r pid name rest; do
      pid_alive "$pid" || fail "$name (pid $pid) died during the $w run"
    done < "$RUN_DIR/pids"
  done
}

run_target() {
  local round=$1
  TARGET=$2
  RUN_DIR=$RUN_ROOT/$TARGET-r$round
  mkdir -p "$RUN_DIR" && chmod 755 "$RUN_DIR" && : > "$RUN_DIR/pids"
  export TARGET RUN_DIR
  log "== $TARGET (round $round of $REPEAT)"
  (target_body "$round") &
  SUB_PID=$!
  wait "$SUB_PID"
  SUB_PID=""
  stop_tracked "$RUN_DIR/pids"
}

cleanup() {
  local f
  for f in "$RUN_ROOT"/*/pids; do [[ -f $f ]] && stop_tracked "$f"; done
  rm -rf "$RUN_ROOT"
}

main() {
  local targets=("$@") t w round
  ((${#targets[@]})) || read -ra targets <<< "$DIRECT_TARGETS"
  for t in "${targets[@]}"; do
    [[ -f $PEERS_DIR/targets/$t.sh ]] || die "no such target: $t"
  done
  for w in $DIRECT_WORKLOADS; do
    [[ -n $(wl_base "$w") && $w =~ ^(hello|item|post)(-k)?$ ]] || die "unknown workload: $w"
  done
  [[ -x $FCGI_LOAD ]] || die "no fcgi_load at $FCGI_LOAD (build the fcgi_load target, or set FCGI_LOAD)"
  mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
  RESULTS=$OUT_DIR/direct.tsv
  RUN_ROOT=$(mktemp -d /tmp/direct-run.XXXXXX)
  chmod 755 "$RUN_ROOT"
  export RUN_ROOT RESULTS OUT_DIR
  SUB_PID=""
  trap cleanup EXIT
  trap on_signal INT TERM
  setup_run_root
  printf 'round\ttarget\tworkload\tstatus\trequests\trps\tp50_us\tp90_us\tp99_us\tmax_us\terr_connect\terr_incomplete\terr_closed\terr_proto\terr_timeout\tstalled\tnon200\treconnects\tclient_us_per_req\tserver_us_per_req\tnote\n' > "$RESULTS"
  log "direct: ${targets[*]}; workloads: $DIRECT_WORKLOADS; $REPEAT round(s); results in $RESULTS"
  for ((round = 1; round <= REPEAT; round++)); do
    for t in "${targets[@]}"; do run_target "$round" "$t"; done
  done
  [[ $NO_SUMMARY == 1 ]] || /usr/bin/python3 "$BENCH_DIR/direct_report.py" "$RESULTS"
  ! grep -q $'\tFAIL\t' "$RESULTS"
}

main "$@"
