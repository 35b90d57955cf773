#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# peers/run.sh - side-by-side benchmark of FastCGI/WSGI app servers behind nginx.
#
#   ./peers/run.sh                 # every target in peers/targets/
#   ./peers/run.sh php-fpm uwsgi   # only these
#   ./peers/run.sh --list          # list targets
#   ./peers/run.sh --calibrate     # time the /cpu loop in C for CPU_ITERS
#
# Knobs (environment): DURATION=8 WARMUP=2 THREADS=2 CONNS=64 CONNS_HIGH=256
#   WRK_TIMEOUT=10 CPU_ITERS=730000 ITEM_ROWS=10000 DRAIN_MS=50
#   NGINX_PORT_BASE=18080 BACKEND_PORT_BASE=18090 NO_INSTALL=1 KEEP_RUN_DIR=1
#   WORKLOADS="hello item sleep sleep256 cpu" (a subset runs only those;
#   "pg-item pg-sleep" are opt-in: they start a private PostgreSQL)
#   PG_SLEEP_CONNS=$CONNS_HIGH PG_SLEEP_MS=20 PG_POOL=64 PG_MAX_CONNECTIONS=300
#
# All traffic goes to 127.0.0.1 or unix sockets. Every process started is
# tracked by PID and stopped by PID (also on Ctrl-C / errors).
set -uo pipefail

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APPS_DIR=$PEERS_DIR/apps
export PEERS_DIR APPS_DIR
# shellcheck source=lib/common.sh
source "$PEERS_DIR/lib/common.sh"
# shellcheck source=lib/pg.sh
source "$PEERS_DIR/lib/pg.sh"

: "${DURATION:=8}" "${WARMUP:=2}" "${THREADS:=2}" "${CONNS:=64}" "${CONNS_HIGH:=256}"
: "${WRK_TIMEOUT:=10}" "${CPU_ITERS:=730000}" "${ITEM_ROWS:=10000}" "${DRAIN_MS:=50}"
: "${NGINX_PORT_BASE:=18080}" "${BACKEND_PORT_BASE:=18090}"
: "${PG_SLEEP_MS:=20}" "${PG_SLEEP_CONNS:=$CONNS_HIGH}" "${PG_POOL:=64}"
: "${NO_INSTALL:=0}" "${KEEP_RUN_DIR:=0}" "${RESULTS_DIR:=${TMPDIR:-/tmp}/peers-results}"
export CPU_ITERS ITEM_ROWS DRAIN_MS PG_POOL
export PYTHONDONTWRITEBYTECODE=1 # keep apps/ free of __pycache__
C_CFLAGS="-O2"
export C_CFLAGS

# The workloads: name, path, connections. Identical for every target.
# The PostgreSQL ones are not in the default set: they need the private
# cluster (lib/pg.sh) and apps that speak to it.
DEFAULT_WORKLOADS="hello item sleep sleep256 cpu"
ALL_WORKLOADS="$DEFAULT_WORKLOADS pg-item pg-sleep"
read -ra WORKLOADS <<< "${WORKLOADS:-$DEFAULT_WORKLOADS}"
PG_WANTED=0
for w in "${WORKLOADS[@]}"; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || { echo "unknown workload: $w (one of: $ALL_WORKLOADS)" >&2; exit 2; }
  [[ $w == pg-* ]] && PG_WANTED=1
done
wl_path() {
  case $1 in
    hello) echo /hello ;; item) echo /item ;; sleep | sleep256) echo /sleep ;; cpu) echo /cpu ;;
    pg-item) echo /pg-item ;; pg-sleep) echo "/pg-sleep?ms=$PG_SLEEP_MS" ;;
  esac
}
wl_conns() { case $1 in sleep256) echo "$CONNS_HIGH" ;; pg-sleep) echo "$PG_SLEEP_CONNS" ;; *) echo "$CONNS" ;; esac; }

# Preferred order; any other targets/*.sh is appended alphabetically.
ORDER=(nginx-static null-fcgi libfcgi-c php-fpm uwsgi uwsgi-gevent gunicorn-sync gunicorn-gthread gunicorn-gevent fcgate-sync fcgate-threads fcgate-async null-fcgi-keepalive fcgate-sync-keepalive fcgate-threads-keepalive fcgate-async-keepalive)
BASE_PACKAGES="nginx wrk curl sqlite3 libsqlite3-dev gcc libc6-dev perl iproute2 python3"
PG_PACKAGES="postgresql-15 util-linux"

all_targets() {
  local t f seen=" "
  for t in "${ORDER[@]}"; do
    [[ -f $PEERS_DIR/targets/$t.sh ]] && { echo "$t"; seen+="$t "; }
  done
  for f in "$PEERS_DIR"/targets/*.sh; do
    t=$(basename "$f" .sh)
    [[ $seen == *" $t "* ]] || echo "$t"
  done
}

target_var() { # target_var TARGET VAR -> value of VAR set by the target file
  (APPS_DIR=$APPS_DIR RUN_DIR=/nonexistent; source "$PEERS_DIR/targets/$1.sh" > /dev/null 2>&1; eval "echo \"\${$2:-}\"")
}

# ---------------------------------------------------------------- install

ensure_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing: ${missing[*]}"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}")
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" > "$RUN_ROOT/apt.log" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update >> "$RUN_ROOT/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" >> "$RUN_ROOT/apt.log" 2>&1 ||
      { tail -20 "$RUN_ROOT/apt.log" >&2; die "apt-get install failed"; }
  fi
}

# ---------------------------------------------------------------- setup

make_expectations() {
  local e=$RUN_ROOT/expect
  mkdir -p "$e"
  printf 'hello\n' > "$e/hello"
  printf 'ok\n' > "$e/sleep"
  sqlite3 "$PEERS_DB" "SELECT json_object('id', id, 'name', name, 'qty', qty) FROM items WHERE id = 4242" |
    tr -d '\n' > "$e/item"
  # /pg-item must give /item's bytes: the same rows in both databases
  if ((PG_WANTED)); then
    [[ $(pg_expect_item 4242) == "$(cat "$e/item")" ]] || die "PostgreSQL row 4242 differs from sqlite's"
  fi
  CALIBRATION=$("$C_APP" --calibrate "$CPU_ITERS")
  printf '%s\n' "$(sed -n 's/.* hash=\([0-9a-f]*\) .*/\1/p' <<< "$CALIBRATION")" > "$e/cpu"
  log "C /cpu loop: $CALIBRATION"
}

# ---------------------------------------------------------------- per target

median_ms() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p" | awk '{printf "%.2f\n", $1 * 1000}'; }

# smoke WORKLOAD -> 0 if the target answers with the expected semantics;
# sets SMOKE_MSG (failure reason or notes).
smoke() {
  local w=$1 out code ctype t e=$RUN_ROOT/expect
  SMOKE_MSG=""
  case $w in
    hello)
      local i times=()
      for i in 1 2 3 4 5; do
        read -r code t ctype <<< "$(http_get /hello)"
        [[ $code == 200 && $ctype == text/plain* ]] && cmp -s "$RUN_DIR/body" "$e/hello" ||
          { SMOKE_MSG="/hello -> $code $ctype $(head -c 80 "$RUN_DIR/body" | tr '\n' ' ')"; return 1; }
        times+=("$t")
      done
      median_ms "${times[@]}" > "$RUN_DIR/hello_1req_ms"
      ;;
    item | pg-item)
      local p
      p=$(wl_path "$w")
      read -r code t ctype <<< "$(http_get "$p?id=4242")"
      [[ $code == 200 && $ctype == application/json* ]] && cmp -s "$RUN_DIR/body" "$e/item" ||
        { SMOKE_MSG="$p?id=4242 -> $code $ctype $(head -c 80 "$RUN_DIR/body")"; return 1; }
      read -r code t ctype <<< "$(http_get "$p?id=99999999")"
      [[ $code == 404 ]] || SMOKE_MSG+="warning: missing id gave $code, want 404; "
      read -r code t ctype <<< "$(http_get "$p?id=abc")"
      [[ $code == 400 ]] || SMOKE_MSG+="warning: bad id gave $code, want 400; "
      ;;
    sleep | sleep256 | pg-sleep)
      local p min
      p=$(wl_path "$w")
      min=$(awk -v ms="${p##*ms=}" 'BEGIN{printf "%.3f", (ms ~ /^[0-9]+$/ ? ms : 20) / 1000 - 0.001}')
      read -r code t ctype <<< "$(http_get "$p")"
      [[ $code == 200 ]] && cmp -s "$RUN_DIR/body" "$e/sleep" &&
        awk -v t="$t" -v min="$min" 'BEGIN{exit !(t >= min)}' ||
        { SMOKE_MSG="$p -> $code in ${t}s $(head -c 80 "$RUN_DIR/body")"; return 1; }
      ;;
    cpu)
      local i times=()
      for i in 1 2 3 4 5; do
        read -r code t ctype <<< "$(http_get /cpu)"
        [[ $code == 200 ]] && cmp -s "$RUN_DIR/body" "$e/cpu" ||
          { SMOKE_MSG="/cpu -> $code $(head -c 80 "$RUN_DIR/body" | tr '\n' ' ') want $(cat "$e/cpu")"; return 1; }
        times+=("$t")
      done
      # median single-request latency through nginx, recorded in the report
      median_ms "${times[@]}" > "$RUN_DIR/cpu_1req_ms"
      ;;
  esac
  return 0
}

row() { # row WORKLOAD STATUS [PEERS_RESULT line] [NOTE]
  local w=$1 status=$2 res=${3:-} note=${4:-} k v
  local -A r=([requests]= [rps]= [p50_us]= [p90_us]= [p99_us]= [max_us]= [err_connect]= [err_read]= [err_write]= [err_status]= [err_timeout]=)
  for kv in $res; do k=${kv%%=*}; v=${kv#*=}; [[ -v r[$k] ]] && r[$k]=$v; done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$TARGET" "$w" "$(wl_path "$w")" "$(wl_conns "$w")" "$status" \
    "${r[requests]}" "${r[rps]}" "${r[p50_us]}" "${r[p90_us]}" "${r[p99_us]}" "${r[max_us]}" \
    "${r[err_connect]}" "${r[err_read]}" "${r[err_write]}" "${r[err_status]}" "${r[err_timeout]}" \
    "$(tr '\t\n' '  ' <<< "$note")" >> "$RUN_ROOT/results.tsv"
}

target_body() { # runs inside a subshell per target
  local w conns url res pid name rest
  TARGET_KIND="" TARGET_WORKLOADS="${WORKLOADS[*]}" TARGET_DESC=""
  # shellcheck disable=SC1090
  source "$PEERS_DIR/targets/$TARGET.sh" || { echo "cannot source targets/$TARGET.sh" > "$RUN_DIR/failure"; return 1; }
  WRK_PID=""
  trap 'exit 143' TERM
  trap '[[ -n $WRK_PID ]] && pid_alive "$WRK_PID" && kill "$WRK_PID" 2> /dev/null
        declare -F target_stop > /dev/null && target_stop; stop_tracked "$RUN_DIR/pids"' EXIT
  echo "$TARGET_DESC" > "$RUN_DIR/desc"
  fail() {
    log "  $TARGET FAILED: $*"
    { echo "$*"; for f in "$RUN_DIR"/*.log "$RUN_DIR"/nginx/error.log; do
        [[ -s $f ]] && { echo "--- tail ${f#$RUN_DIR/}"; tail -n 15 "$f"; }
      done; } > "$RUN_DIR/failure"
    for w in "${WORKLOADS[@]}"; do
      [[ -e $RUN_DIR/done.$w ]] || row "$w" FAIL "" "$1"
    done
    exit 1
  }
  [[ -n $TARGET_KIND ]] || fail "target file sets no TARGET_KIND"
  declare -F target_start > /dev/null || fail "target file defines no target_start"
  target_start || fail "target_start failed"
  start_nginx || fail "nginx did not start"
  wait_ready || fail "not ready: GET /hello never answered 200 hello"
  { declare -F target_versions > /dev/null && target_versions; nginx -v 2>&1; } > "$RUN_DIR/versions" 2>&1
  cpu_snapshot > "$RUN_DIR/cpu.before"
  local t_start=$SECONDS
  for w in "${WORKLOADS[@]}"; do
    if [[ " $TARGET_WORKLOADS " != *" $w "* ]]; then
      row "$w" "n/a"; touch "$RUN_DIR/done.$w"; continue
    fi
    if ! smoke "$w"; then
      log "  $w: smoke test FAILED: $SMOKE_MSG"
      row "$w" FAIL "" "smoke: $SMOKE_MSG"; touch "$RUN_DIR/done.$w"; continue
    fi
    [[ -n $SMOKE_MSG ]] && log "  $w: $SMOKE_MSG"
    conns=$(wl_conns "$w")
    url="http://127.0.0.1:$NGINX_PORT$(wl_path "$w")"
    local wrk_args=(-t"$THREADS" -c"$conns" --timeout "${WRK_TIMEOUT}s" -s "$APPS_DIR/wrk/bench.lua")
    echo "wrk ${wrk_args[*]} -d${DURATION}s --latency $url" >> "$RUN_DIR/wrk-commands"
    run_wrk "$RUN_DIR/wrk-$w-warmup.txt" "${wrk_args[@]}" -d"${WARMUP}s" "$url"
    drain
    run_wrk "$RUN_DIR/wrk-$w.txt" "${wrk_args[@]}" -d"${DURATION}s" --latency "$url"
    res=$(sed -n 's/^PEERS_RESULT //p' "$RUN_DIR/wrk-$w.txt")
    if [[ -z $res ]]; then
      row "$w" FAIL "" "wrk gave no result: $(tail -n 3 "$RUN_DIR/wrk-$w.txt")"
    else
      row "$w" ok "$res" "$SMOKE_MSG"
      log "  $w c$conns: $(awk '{for(i=1;i<=NF;i++){split($i,a,"="); v[a[1]]=a[2]} printf "%.0f req/s p50 %.2f ms p99 %.2f ms non2xx %d sockerr %d", v["rps"], v["p50_us"]/1000, v["p99_us"]/1000, v["err_status"], v["err_connect"]+v["err_read"]+v["err_write"]+v["err_timeout"]}' <<< "$res")"
    fi
    touch "$RUN_DIR/done.$w"
    while read -r pid name rest; do
      pid_alive "$pid" || fail "$name (pid $pid) died during the $w run"
    done < "$RUN_DIR/pids"
  done
  # CPU taken by processes that are not part of this run (other users of the
  # machine): recorded per target, shown in the report.
  cpu_snapshot > "$RUN_DIR/cpu.after"
  local sids
  sids="$(awk '{print $6}' "/proc/$RUN_SID/stat") $(awk '{print $1}' "$RUN_DIR/pids" | tr '\n' ' ') $(pg_pids | tr '\n' ' ')"
  foreign_cpu "$RUN_DIR/cpu.before" "$RUN_DIR/cpu.after" $((SECONDS - t_start)) $sids > "$RUN_DIR/foreign_cpu"
}

# run_wrk OUTFILE ARGS... - wrk in the background + wait, so that a TERM to
# this subshell interrupts it at once and the EXIT trap can kill wrk by PID.
run_wrk() {
  local out=$1; shift
  wrk "$@" > "$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID"
  WRK_PID=""
}

run_target() {
  TARGET=$1
  RUN_DIR=$RUN_ROOT/$TARGET
  mkdir -p "$RUN_DIR" && chmod 755 "$RUN_DIR" && : > "$RUN_DIR/pids"
  NGINX_PORT=$(pick_port "$NGINX_PORT_BASE")
  BACKEND_PORT=$(pick_port "$BACKEND_PORT_BASE")
  export TARGET RUN_DIR NGINX_PORT BACKEND_PORT
  log "== $TARGET (nginx 127.0.0.1:$NGINX_PORT)"
  local t0=$SECONDS
  # In the background + wait, so INT/TERM reach run.sh's trap at once.
  (target_body) &
  SUB_PID=$!
  wait "$SUB_PID"
  SUB_PID=""
  stop_tracked "$RUN_DIR/pids" # whatever the subshell left behind
  echo $((SECONDS - t0)) > "$RUN_DIR/seconds"
}

cleanup() {
  local f
  for f in "$RUN_ROOT"/*/pids; do [[ -f $f ]] && stop_tracked "$f"; done
  if [[ $KEEP_RUN_DIR == 1 || -n $(ls "$RUN_ROOT"/*/failure 2> /dev/null) ]]; then
    log "run dir kept: $RUN_ROOT"
  else
    rm -rf "$RUN_ROOT"
  fi
}

# ---------------------------------------------------------------- main

main() {
  local targets=() t
  case ${1:-} in
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --list)
      for t in $(all_targets); do printf '%-18s %s\n' "$t" "$(target_var "$t" TARGET_DESC)"; done
      exit 0 ;;
  esac

  RUN_ROOT=$(mktemp -d /tmp/peers-run.XXXXXX)
  chmod 755 "$RUN_ROOT"
  export RUN_ROOT
  SUB_PID=""
  trap cleanup EXIT
  trap on_signal INT TERM

  if [[ ${1:-} == --calibrate ]]; then
    [[ $NO_INSTALL == 1 ]] || ensure_packages gcc libc6-dev libfcgi-dev libsqlite3-dev
    build_c_app
    for t in 1 2 3; do "$C_APP" --calibrate "$CPU_ITERS"; done
    exit 0
  fi

  if (($#)); then targets=("$@"); else mapfile -t targets < <(all_targets); fi
  for t in "${targets[@]}"; do
    [[ -f $PEERS_DIR/targets/$t.sh ]] || die "no such target: $t (see --list)"
  done

  local start_epoch=$SECONDS started_utc stamp pkgs
  started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
  pkgs="$BASE_PACKAGES"
  ((PG_WANTED)) && pkgs+=" $PG_PACKAGES"
  for t in "${targets[@]}"; do ((PG_WANTED)) && pkgs+=" $(target_var "$t" TARGET_PG_PACKAGES)"; done
  for t in "${targets[@]}"; do pkgs+=" $(target_var "$t" TARGET_PACKAGES)"; done
  pkgs=$(tr ' ' '\n' <<< "$pkgs" | sed '/^$/d' | sort -u | tr '\n' ' ')
  [[ $NO_INSTALL == 1 ]] || ensure_packages $pkgs

  log "run dir $RUN_ROOT; targets: ${targets[*]}"
  RUN_SID=$$
  export RUN_SID
  BUSY_BEFORE=$(machine_busy_pct)
  ((BUSY_BEFORE > 10)) && log "WARNING: the machine is already ${BUSY_BEFORE}% busy before the run; numbers will be noisy"
  build_c_app
  create_db
  ((PG_WANTED)) && pg_start
  make_expectations
  printf 'target\tworkload\tpath\tconns\tstatus\trequests\trps\tp50_us\tp90_us\tp99_us\tmax_us\terr_connect\terr_read\terr_write\terr_status\terr_timeout\tnote\n' \
    > "$RUN_ROOT/results.tsv"

  [[ " ${WORKLOADS[*]} " == *" pg-sleep "* ]] && pg_ceiling
  for t in "${targets[@]}"; do run_target "$t"; done

  # versions of every package used, for the report
  dpkg-query -W -f='${Package}\t${Version}\n' $pkgs libfcgi0ldbl libsqlite3-0 php8.2-opcache php8.2-cli uwsgi-core 2> /dev/null |
    sort -u > "$RUN_ROOT/packages.tsv"

  mkdir -p "$RESULTS_DIR"
  local out=$RESULTS_DIR/$stamp.md
  cp "$RUN_ROOT/results.tsv" "$RESULTS_DIR/$stamp.tsv"
  [[ -f $RUN_ROOT/pg-ceiling.tsv ]] && cp "$RUN_ROOT/pg-ceiling.tsv" "$RESULTS_DIR/$stamp.pg-ceiling"
  STARTED_UTC=$started_utc ELAPSED=$((SECONDS - start_epoch)) CALIBRATION=$CALIBRATION \
    DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS CONNS=$CONNS CONNS_HIGH=$CONNS_HIGH \
    WRK_TIMEOUT=$WRK_TIMEOUT TARGETS="${targets[*]}" BUSY_BEFORE=$BUSY_BEFORE \
    WORKLOADS="${WORKLOADS[*]}" PG_SLEEP_CONNS=$PG_SLEEP_CONNS \
    "$PY" "$PEERS_DIR/lib/report.py" "$RUN_ROOT" > "$out" || die "report failed"
  log "results: $out ($((SECONDS - start_epoch)) s)"
}

main "$@"
