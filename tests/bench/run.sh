#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/run.sh - fcgate's benchmark, in one command:
#
#   1. installs what is missing (apt-get) and builds fcgate in Release
#      (build-bench/: fcgate, bench.so, tests/bench/coro_switch and
#      tests/bench/fcgi_load);
#   2. times the coroutine context switch (coro_switch, median of 5 runs of
#      10^7 round trips; ucontext swapcontext next to it);
#   3. runs the peers harness (tests/bench/peers) on every target - the
#      peer servers and fcgate's three modes - in one run;
#   4. sweeps the connections for fcgate's modes: /sleep and /hello at
#      SWEEP_CONNS connections, wrk through nginx (the same harness);
#   5. loads the FastCGI servers directly, without nginx (direct.sh:
#      fcgi_load against null-fcgi, libfcgi-c and fcgate's modes; req/s,
#      latency, and the server's CPU per request against null-fcgi's);
#   6. writes docs/BENCHMARKS.md and docs/bench-concurrency.png (gnuplot).
#
# Run as root on Debian 12, on an otherwise idle machine. Knobs (environment):
#   DURATION=8 WARMUP=2     seconds of each measured / warm-up wrk run
#   REPEAT=1                rounds of the harness over all targets; with more,
#                           each row is the median round (rounds interleave
#                           the targets, so slow drifts of the machine hit
#                           them alike)
#   TARGETS="..."           a subset of the harness targets (default: all)
#   SWEEP_CONNS="16 64 256 1024"   ("" skips the sweep)
#   DIRECT=1                the direct run (0 skips it), REPEAT rounds too
#   DIRECT_TARGETS="null-fcgi libfcgi-c fcgate-sync fcgate-threads fcgate-async"
#   DIRECT_WORKLOADS="hello hello-k item item-k post"   (see direct.sh)
#   DOCS_DIR=<repo>/docs    where the report and the plot go
#   OUT_DIR=/tmp/fcgate-bench.<time>   logs, raw numbers, the harness's reports
#   NO_INSTALL=1            do not run apt-get
# and the harness's own knobs (THREADS, CONNS, CONNS_HIGH, CPU_ITERS, ...;
# see peers/run.sh), which are passed through.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$BENCH_DIR/../.." && pwd)
PEERS=$BENCH_DIR/peers
BUILD=$TOP/build-bench

ALL_TARGETS="nginx-static null-fcgi libfcgi-c php-fpm uwsgi uwsgi-gevent gunicorn-sync gunicorn-gthread gunicorn-gevent fcgate-sync fcgate-threads fcgate-async null-fcgi-keepalive fcgate-sync-keepalive fcgate-threads-keepalive fcgate-async-keepalive"
: "${DURATION:=8}" "${WARMUP:=2}" "${TARGETS:=$ALL_TARGETS}" "${NO_INSTALL:=0}" "${REPEAT:=1}"
: "${SWEEP_CONNS=16 64 256 1024}" "${DOCS_DIR:=$TOP/docs}" "${DIRECT:=1}"
: "${DIRECT_TARGETS:=null-fcgi libfcgi-c fcgate-sync fcgate-threads fcgate-async}"
: "${DIRECT_WORKLOADS:=hello hello-k item item-k post}"
: "${OUT_DIR:=/tmp/fcgate-bench.$(date -u +%Y%m%dT%H%M%SZ)}"
export DURATION WARMUP NO_INSTALL

BUILD_PACKAGES="build-essential cmake pkg-config libfcgi-dev libconfig-dev libsqlite3-dev"
TOOL_PACKAGES="gnuplot-nox wrk nginx curl sqlite3 perl python3 iproute2 procps spawn-fcgi"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing: ${missing[*]}"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}")
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >> "$OUT_DIR/apt.log" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update >> "$OUT_DIR/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" >> "$OUT_DIR/apt.log" 2>&1 ||
      { tail -20 "$OUT_DIR/apt.log" >&2; die "apt-get install failed"; }
  fi
}

# The commands of the run, in the order they ran, for the report.
note() { printf '%s\n' "$*" >> "$OUT_DIR/commands.txt"; }

# harness RESULTS_SUBDIR [ENV=VALUE...] -- TARGET... : one run of the
# harness in the background (so that INT/TERM reach it at once through
# our trap); its log goes to OUT_DIR/<subdir>.log and to stderr.
STEP_PID="" # the harness or direct.sh while one runs
harness() {
  local sub=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  mkdir -p "$OUT_DIR/$sub"
  local e shown=""
  for e in "${envs[@]}"; do
    [[ $e == *[[:space:]]* ]] && e="${e%%=*}='${e#*=}'"
    shown+="$e "
  done
  note "${shown}DURATION=$DURATION WARMUP=$WARMUP FCGATE_BIN=$BUILD/fcgate FCGATE_APP=$BUILD/bench.so KEEP_RUN_DIR=1 RESULTS_DIR=$OUT_DIR/$sub tests/bench/peers/run.sh $*"
  env "${envs[@]}" KEEP_RUN_DIR=1 RESULTS_DIR="$OUT_DIR/$sub" \
    FCGATE_BIN="$BUILD/fcgate" FCGATE_APP="$BUILD/bench.so" \
    "$PEERS/run.sh" "$@" > >(tee -a "$OUT_DIR/$sub.log" >&2) 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  local rc=$?
  STEP_PID=""
  # The harness keeps its run dir (KEEP_RUN_DIR=1): the report reads the
  # per-target notes there. Remember where it is.
  sed -n 's/.* run dir \(\/tmp\/peers-run\.[A-Za-z0-9]*\);.*/\1/p' "$OUT_DIR/$sub.log" | tail -1 > "$OUT_DIR/$sub/rundir"
  return $rc
}

# direct: direct.sh over DIRECT_TARGETS, REPEAT rounds, in the background
# as the harness; results in OUT_DIR/direct/direct.tsv, log in direct.log.
direct() {
  note "DURATION=$DURATION WARMUP=$WARMUP REPEAT=$REPEAT DIRECT_WORKLOADS='$DIRECT_WORKLOADS' FCGI_LOAD=$BUILD/tests/bench/fcgi_load FCGATE_BIN=$BUILD/fcgate FCGATE_APP=$BUILD/bench.so OUT_DIR=$OUT_DIR/direct tests/bench/direct.sh $DIRECT_TARGETS"
  # shellcheck disable=SC2086
  env REPEAT="$REPEAT" DIRECT_WORKLOADS="$DIRECT_WORKLOADS" OUT_DIR="$OUT_DIR/direct" \
    FCGI_LOAD="$BUILD/tests/bench/fcgi_load" FCGATE_BIN="$BUILD/fcgate" FCGATE_APP="$BUILD/bench.so" \
    "$BENCH_DIR/direct.sh" $DIRECT_TARGETS > >(tee -a "$OUT_DIR/direct.log" >&2) 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  local rc=$?
  STEP_PID=""
  return $rc
}

on_signal() {
  log "interrupted"
  if [[ -n $STEP_PID ]]; then
    kill -TERM "$STEP_PID" 2> /dev/null
    wait "$STEP_PID" 2> /dev/null
  fi
  exit 130
}

main() {
  [[ $(id -u) == 0 ]] || die "run as root (apt-get; nginx and the servers share unix sockets as root)"
  local t fc_targets=() failed=0
  for t in $TARGETS; do
    [[ -f $PEERS/targets/$t.sh ]] || die "no such target: $t (one of: $ALL_TARGETS)"
    [[ $t == fcgate-* ]] && fc_targets+=("$t")
  done
  mkdir -p "$OUT_DIR" "$DOCS_DIR" || die "cannot create $OUT_DIR or $DOCS_DIR"
  : > "$OUT_DIR/commands.txt"
  trap on_signal INT TERM
  local t0=$SECONDS started
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  log "output: $OUT_DIR"

  [[ $NO_INSTALL == 1 ]] || ensure_packages $BUILD_PACKAGES $TOOL_PACKAGES

  log "building fcgate (Release) in $BUILD"
  local cmake_cfg=(cmake -S "$TOP" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFCGATE_TESTS=OFF -DFCGATE_BENCH=ON)
  local cmake_build=(cmake --build "$BUILD" -j"$(nproc)" --target fcgate bench coro_switch fcgi_load)
  note "${cmake_cfg[*]}"
  note "${cmake_build[*]}"
  "${cmake_cfg[@]}" > "$OUT_DIR/build.log" 2>&1 && "${cmake_build[@]}" >> "$OUT_DIR/build.log" 2>&1 ||
    { tail -30 "$OUT_DIR/build.log" >&2; die "build failed (log: $OUT_DIR/build.log)"; }

  log "context switch: $BUILD/tests/bench/coro_switch 10000000 5"
  note "$BUILD/tests/bench/coro_switch 10000000 5"
  "$BUILD/tests/bench/coro_switch" 10000000 5 > "$OUT_DIR/coro_switch.txt" 2>&1 ||
    { cat "$OUT_DIR/coro_switch.txt" >&2; die "coro_switch failed"; }
  cat "$OUT_DIR/coro_switch.txt" >&2

  log "harness: $TARGETS"
  # shellcheck disable=SC2086
  harness main -- $TARGETS || failed=1
  ls "$OUT_DIR"/main/*.tsv > /dev/null 2>&1 || die "the harness wrote no results (log: $OUT_DIR/main.log)"
  local i
  for ((i = 2; i <= REPEAT; i++)); do
    log "harness, round $i of $REPEAT: $TARGETS"
    # shellcheck disable=SC2086
    harness "main-r$i" NO_INSTALL=1 -- $TARGETS || failed=1
  done

  local c
  if ((${#fc_targets[@]})) && [[ -n $SWEEP_CONNS ]]; then
    for c in $SWEEP_CONNS; do
      log "sweep: /hello and /sleep at $c connections: ${fc_targets[*]}"
      harness "sweep-c$c" CONNS="$c" WORKLOADS="hello sleep" NO_INSTALL=1 -- "${fc_targets[@]}" || failed=1
    done
  fi

  if [[ $DIRECT != 0 ]]; then
    log "direct, no nginx: $DIRECT_TARGETS"
    direct || failed=1
  fi

  log "writing $DOCS_DIR/BENCHMARKS.md"
  STARTED_UTC=$started ELAPSED=$((SECONDS - t0)) TARGETS="$TARGETS" SWEEP_CONNS="$SWEEP_CONNS" REPEAT="$REPEAT" \
    FC_TARGETS="${fc_targets[*]}" ALL_TARGETS="$ALL_TARGETS" BUILD_DIR="$BUILD" TOP="$TOP" \
    /usr/bin/python3 "$BENCH_DIR/report.py" "$OUT_DIR" "$DOCS_DIR" ||
    die "report failed"
  if [[ -s $OUT_DIR/concurrency.gp ]]; then
    note "gnuplot $OUT_DIR/concurrency.gp"
    gnuplot "$OUT_DIR/concurrency.gp" 2> "$OUT_DIR/gnuplot.log" ||
      { cat "$OUT_DIR/gnuplot.log" >&2; die "gnuplot failed"; }
  fi

  # The harness's run dirs (logs, rendered configs, raw wrk output) are
  # deleted unless a target failed in them.
  local f d
  for f in "$OUT_DIR"/*/rundir; do
    d=$(cat "$f")
    [[ -n $d && -d $d ]] || continue
    if ls "$d"/*/failure > /dev/null 2>&1; then
      log "run dir kept (a target failed): $d"
      failed=1
    else
      rm -rf "$d"
    fi
  done
  cat "$OUT_DIR/goals.txt" >&2
  log "done in $((SECONDS - t0)) s: $DOCS_DIR/BENCHMARKS.md$([[ -s $OUT_DIR/concurrency.gp ]] && echo " $DOCS_DIR/bench-concurrency.png"); raw data in $OUT_DIR"
  return $failed
}

main "$@"
