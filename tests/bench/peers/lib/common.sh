# SPDX-License-Identifier: BSD-2-Clause
# peers/lib/common.sh - helpers shared by run.sh and the target files.
# Sourced, not executed. Everything here talks only to 127.0.0.1 and to
# unix sockets under $RUN_ROOT; every process it starts is recorded by PID
# and stopped by PID.

PY=/usr/bin/python3   # Debian's python (gunicorn/gevent live there), not a pyenv shim

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes

# pid_alive PID -> true while PID exists and is not a zombie
pid_alive() {
  local pid=$1 line
  [[ -r /proc/$pid/stat ]] || return 1
  { read -r line < "/proc/$pid/stat"; } 2>/dev/null || return 1
  line=${line##*) }
  [[ ${line%% *} != Z ]]
}

# pgrp_members PGID -> PIDs (not zombies) whose process group is PGID
pgrp_members() {
  local want=$1 f line pid
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue   # it may exit meanwhile
    pid=${f#/proc/}; pid=${pid%/stat}
    line=${line##*) }
    # fields after comm: state ppid pgrp ...
    set -- $line
    [[ ${3:-} == "$want" && ${1:-} != Z ]] && echo "$pid"
  done
  return 0
}

# track_pid PID NAME [STOP_SIGNAL] - remember a process of the current target.
# If PID leads its own process group (we start servers under setsid), the
# group is recorded too so forked children left behind can be found by PID.
track_pid() {
  local pid=$1 name=$2 sig=${3:-TERM} pgrp line
  line=$(cat "/proc/$pid/stat" 2>/dev/null) || line=""
  line=${line##*) }
  set -- $line
  pgrp=${3:-0}
  [[ $pgrp == "$pid" ]] || pgrp=0
  echo "$pid $name $sig $pgrp" >> "$RUN_DIR/pids"
}

# spawn NAME CMD... - start a long-running server in the background in its
# own session, stdout/stderr to $RUN_DIR/NAME.log, and track its PID.
# STOP_SIGNAL=INT spawn ... overrides the signal used to stop it.
spawn() {
  local name=$1; shift
  printf '%s: %s\n' "$name" "$*" >> "$RUN_DIR/commands"
  setsid "$@" > "$RUN_DIR/$name.log" 2>&1 < /dev/null &
  local pid=$!
  sleep 0.05
  track_pid "$pid" "$name" "${STOP_SIGNAL:-TERM}"
  log "  started $name pid $pid"
}

# note_cmd NAME CMD... - record a command that was run in the foreground
note_cmd() { local name=$1; shift; printf '%s: %s\n' "$name" "$*" >> "$RUN_DIR/commands"; }

# stop_pid PID SIGNAL PGRP NAME - signal, wait up to 10 s, then SIGKILL;
# then SIGKILL (by PID) any member of its process group still alive.
stop_pid() {
  local pid=$1 sig=$2 pgrp=$3 name=$4 i m
  if pid_alive "$pid"; then
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "  $name ($pid) ignored SIG$sig for 10 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  if [[ $pgrp != 0 ]]; then
    for ((i = 0; i < 50; i++)); do
      m=$(pgrp_members "$pgrp")
      [[ -z $m ]] && break
      sleep 0.1
    done
    for m in $(pgrp_members "$pgrp"); do
      log "  killing leftover pid $m of $name"
      kill -KILL "$m" 2>/dev/null || true
    done
  fi
}

# stop_tracked PIDFILE - stop everything listed, newest first
stop_tracked() {
  local file=$1 pid name sig pgrp
  [[ -s $file ]] || return 0
  while read -r pid name sig pgrp; do
    [[ -n $pid ]] || continue
    stop_pid "$pid" "$sig" "$pgrp" "$name"
    log "  stopped $name pid $pid"
  done < <(tac "$file")
  : > "$file"
}

# ---------------------------------------------------------------- templates

# render TEMPLATE OUT - replace @NAME@ with the value of exported $NAME
render() {
  perl -pe 's/@([A-Z][A-Z0-9_]*)@/exists $ENV{$1} ? $ENV{$1} : die "render: \$$1 is not exported ($ARGV)\n"/ge' \
    "$1" > "$2"
}

# ---------------------------------------------------------------- ports

port_free() { [[ -z $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }

pick_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

# ---------------------------------------------------------------- nginx

# Location blocks for the three standard kinds of target.
nginx_locations_default() {
  case $TARGET_KIND in
    fastcgi)
      cat <<EOF
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME ${TARGET_SCRIPT_FILENAME:-/dev/null};
            fastcgi_param PATH_INFO \$uri;
            fastcgi_pass ${TARGET_UPSTREAM};
        }
EOF
      ;;
    http)
      cat <<EOF
        location / {
            proxy_pass http://${TARGET_UPSTREAM};
        }
EOF
      ;;
    *) die "TARGET_KIND=$TARGET_KIND needs an nginx_locations function" ;;
  esac
}

# nginx_keepalive [N] - called by a fastcgi target file: nginx keeps up to
# N (default 64) idle FastCGI connections to the target and reuses them
# (upstream keepalive + fastcgi_keep_conn on), instead of a new connection
# per request. Defines the target's nginx_upstreams and nginx_locations.
nginx_keepalive() {
  KEEPALIVE_CONNS=${1:-64}
  nginx_upstreams() {
    cat << NGX
    upstream backend {
        server ${TARGET_UPSTREAM};
        keepalive ${KEEPALIVE_CONNS};
    }
NGX
  }
  nginx_locations() {
    cat << NGX
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME ${TARGET_SCRIPT_FILENAME:-/dev/null};
            fastcgi_param PATH_INFO \$uri;
            fastcgi_pass backend;
            fastcgi_keep_conn on;
        }
NGX
  }
}

start_nginx() {
  local prefix=$RUN_DIR/nginx
  mkdir -p "$prefix/tmp"
  export NGINX_PREFIX=$prefix NGINX_PORT
  if declare -F nginx_locations > /dev/null; then
    NGINX_LOCATIONS=$(nginx_locations)
  else
    NGINX_LOCATIONS=$(nginx_locations_default)
  fi
  # A target may define upstream blocks (http context), e.g. for keep-alive.
  NGINX_UPSTREAMS=""
  if declare -F nginx_upstreams > /dev/null; then
    NGINX_UPSTREAMS=$(nginx_upstreams)
  fi
  export NGINX_LOCATIONS NGINX_UPSTREAMS
  render "$PEERS_DIR/conf/nginx.conf.tmpl" "$prefix/nginx.conf"
  nginx -t -q -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" \
    2>> "$RUN_DIR/nginx-test.log" || { cat "$RUN_DIR/nginx-test.log" >&2; return 1; }
  spawn nginx nginx -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log"
}

# ---------------------------------------------------------------- http checks

# http_get PATH -> prints "CODE SECONDS CONTENT-TYPE" and writes the body
# to $RUN_DIR/body
http_get() {
  curl -s -m 30 -o "$RUN_DIR/body" -w '%{http_code} %{time_total} %{content_type}' \
    "http://127.0.0.1:$NGINX_PORT$1" 2>/dev/null || echo "000 0 -"
}

# wait_ready: until GET /hello answers 200 "hello\n" (30 s), failing early if
# a tracked process dies.
wait_ready() {
  local i out pid name rest
  for ((i = 0; i < 300; i++)); do
    out=$(http_get /hello)
    if [[ ${out%% *} == 200 ]] && [[ $(cat "$RUN_DIR/body") == hello ]]; then return 0; fi
    while read -r pid name rest; do
      pid_alive "$pid" || { log "  $name (pid $pid) exited during start-up"; return 1; }
    done < "$RUN_DIR/pids"
    sleep 0.1
  done
  log "  not ready after 30 s (last answer: $out)"
  return 1
}

# drain: let a backend finish requests abandoned by the previous wrk run
# (slow targets keep working through their accept queue after wrk closes
# its connections). Waits until two /hello in a row take < DRAIN_MS.
drain() {
  local ok=0 code t rest start=$SECONDS
  while ((SECONDS - start < 60)); do
    read -r code t rest <<< "$(http_get /hello)"
    if [[ $code == 200 ]] && awk -v t="$t" -v lim="$DRAIN_MS" 'BEGIN{exit !(t*1000 < lim)}'; then
      ok=$((ok + 1))
      if ((ok >= 2)); then
        ((SECONDS - start >= 2)) && log "  drained in $((SECONDS - start)) s"
        return 0
      fi
    else
      ok=0
    fi
    sleep 0.05
  done
  log "  drain: backend still slow after 60 s"
  return 0
}

# ---------------------------------------------------------------- noise check

# cpu_snapshot -> "pid sid cpu_ticks comm" for every process (kernel threads
# included, sid 0). Used to see how much CPU *other* processes on the
# machine took while a target was measured.
cpu_snapshot() {
  cat /proc/[0-9]*/stat 2> /dev/null | awk '{
    r = $0; sub(/^.*\) /, "", r)          # fields after "(comm) "
    c = $0; sub(/^[0-9]+ \(/, "", c); sub(/\) [^)]*$/, "", c); gsub(/[ \t]/, "_", c)
    split(r, f, " ")
    print $1, f[4], f[12] + f[13], c
  }'
}

# foreign_cpu BEFORE AFTER WALL_SECONDS SID... -> one line:
# "<percent of one core> <cpu seconds> <top processes>" for processes whose
# session is none of SID... (run.sh's own session and the tracked servers'
# sessions) and not kernel threads (sid 0).
foreign_cpu() {
  local before=$1 after=$2 wall=$3; shift 3
  awk -v wall="$wall" -v hz="$(getconf CLK_TCK)" -v ours="$*" '
    BEGIN { n = split(ours, o, " "); for (i = 1; i <= n; i++) mine[o[i]] = 1 }
    FNR == NR { t0[$1] = $3; next }
    $2 != 0 && !($2 in mine) {
      d = $3 - (($1 in t0) ? t0[$1] : 0)
      if (d > 0) { tot += d; by[$4] += d }
    }
    END {
      top = ""
      for (k = 0; k < 3; k++) {
        best = ""; bv = 0
        for (c in by) if (by[c] > bv) { bv = by[c]; best = c }
        if (best == "" || bv / hz < 0.5) break
        top = top sprintf("%s%s %.0fs", top == "" ? "" : ", ", best, bv / hz); delete by[best]
      }
      printf "%.0f %.1f %s\n", (wall > 0 ? 100 * tot / hz / wall : 0), tot / hz, top
    }' "$before" "$after"
}

# machine_busy_pct -> % of all cores busy over 1 s (before anything starts)
machine_busy_pct() {
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = 0; idle = 0
    for (i = 2; i <= 11; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%.0f\n", (t > 0 ? 100 * (t - idle) / t : 0) }'
}

# ---------------------------------------------------------------- run set-up
# (peers/run.sh and ../direct.sh: the C app and the sqlite db in RUN_ROOT)

build_c_app() {
  mkdir -p "$RUN_ROOT/bin"
  C_APP=$RUN_ROOT/bin/app_fcgi
  gcc ${C_CFLAGS:--O2} -Wall -o "$C_APP" "$APPS_DIR/app_fcgi.c" -lfcgi -lsqlite3 || die "building app_fcgi.c failed"
  export C_APP
}

create_db() {
  PEERS_DB=$RUN_ROOT/items.db
  export PEERS_DB
  sqlite3 "$PEERS_DB" > /dev/null <<SQL || die "creating $PEERS_DB failed"
PRAGMA journal_mode=WAL;
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $ITEM_ROWS)
INSERT INTO items SELECT x, printf('item-%05d', x), (x * 7919) % 1000 FROM c;
SQL
  [[ $(sqlite3 "$PEERS_DB" 'PRAGMA journal_mode; SELECT count(*) FROM items;' | tr '\n' ' ') == "wal $ITEM_ROWS " ]] ||
    die "db check failed"
}

# INT/TERM: the target running in subshell SUB_PID stops first.
on_signal() {
  log "interrupted: stopping the current target"
  if [[ -n $SUB_PID ]] && pid_alive "$SUB_PID"; then
    kill -TERM "$SUB_PID" 2> /dev/null
    wait "$SUB_PID" 2> /dev/null
  fi
  exit 130
}
