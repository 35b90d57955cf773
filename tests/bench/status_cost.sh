#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/status_cost.sh - what the status endpoint costs: each mode
# with `status` off and on, side by side in interleaved rounds (fcgi_load
# straight to fcgate's socket, /hello and /item), and how long a status
# request takes while every worker is SIGSTOPped with a backlog waiting.
# Writes a markdown report (OUT, default docs/status-cost.md).
#
# Knobs: DURATION=3 WARMUP=1 REPEAT=3, FCGATE_BIN, FCGATE_APP, FCGI_LOAD
# (default: build-bench/), OUT. Only unix sockets; every process started
# is stopped by pid.
set -uo pipefail
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${DURATION:=3}" "${WARMUP:=1}" "${REPEAT:=3}"
: "${FCGATE_BIN:=$TOP/build-bench/fcgate}" "${FCGATE_APP:=$TOP/build-bench/bench.so}"
: "${FCGI_LOAD:=$TOP/build-bench/tests/bench/fcgi_load}" "${OUT:=$TOP/docs/status-cost.md}"
WORK=$(mktemp -d /tmp/fcgate-status-cost.XXXXXX)
RAW=$WORK/raw.tsv
FC_PID=""
trap '[[ -n $FC_PID ]] && kill "$FC_PID" 2> /dev/null; wait 2> /dev/null; rm -rf "$WORK"' EXIT

# start MODE STATUS(on|off): fcgate in WORK/run, FC_PID set, ready.
start() {
  local mode=$1 status=$2 d=$WORK/run
  rm -rf "$d" && mkdir -p "$d"
  {
    echo "listen = [ \"unix:$d/app.sock\" ]; mode = \"$mode\"; threads = 4; timeout = 0;"
    echo "workers = $([[ $mode == sync ]] && echo 4 || echo 2);"
    [[ $(id -u) == 0 ]] && echo 'user = "root";'
    echo "app = { module = \"$FCGATE_APP\"; database = \"$WORK/items.db\"; };"
    echo "log = { level = \"warn\"; error = \"$d/fcgate.log\"; };"
    [[ $status == on ]] && echo "status = { listen = \"unix:$d/status.sock\"; };"
  } > "$d/fcgate.conf"
  "$FCGATE_BIN" -c "$d/fcgate.conf" &
  FC_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    "$FCGI_LOAD" -t 1 -c 1 -w 0 -d 1 -n 1 -T 1 "unix:$d/app.sock" /hello > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "fcgate did not come up ($mode, status $status)" >&2
  return 1
}

stop() {
  kill "$FC_PID" 2> /dev/null
  wait "$FC_PID" 2> /dev/null
  FC_PID=""
}

# kv LINE KEY: a key=value field of fcgi_load's --tsv line.
kv() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p"; }

load() { # load ROUND MODE STATUS NAME URI
  local line
  line=$("$FCGI_LOAD" -t 2 -c 64 -w "$WARMUP" -d "$DURATION" -P "$FC_PID" --tsv \
    "unix:$WORK/run/app.sock" "$5" | grep '^FCGI_LOAD')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(kv "$line" rps)" \
    "$(kv "$line" server_us_per_req)" >> "$RAW"
}

sqlite3 "$WORK/items.db" > /dev/null << SQL
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000)
INSERT INTO items SELECT x, printf('item-%05d', x), (x * 7919) % 1000 FROM c;
SQL

for ((round = 1; round <= REPEAT; round++)); do
  for mode in sync threads async; do
    for status in off on; do
      start "$mode" "$status" || exit 1
      load "$round" "$mode" "$status" hello /hello
      load "$round" "$mode" "$status" item "/item?id=%r"
      stop
    done
  done
done

# A status request with every worker stopped and 50 connections waiting.
start async on || exit 1
d=$WORK/run
pids=$("$FCGATE_BIN" status --status "unix:$d/status.sock" --json |
  python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(sys.stdin)["workers"]))')
for p in $pids; do kill -STOP "$p"; done
python3 - "$d/app.sock" << 'PY' &
import socket, sys, time
socks = []
for _ in range(50):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socks.append(s)
time.sleep(30)
PY
holder=$!
sleep 0.5
line=$("$FCGI_LOAD" -t 1 -c 1 -w 0 -d 5 -n 200 --tsv "unix:$d/status.sock" /status | grep '^FCGI_LOAD')
queue=$("$FCGATE_BIN" status --status "unix:$d/status.sock" --json | python3 -c 'import json,sys; print(max(l["queue"] for l in json.load(sys.stdin)["listen"]))')
kill "$holder" 2> /dev/null
wait "$holder" 2> /dev/null
for p in $pids; do kill -CONT "$p"; done
stop

python3 - "$RAW" "$OUT" "$(kv "$line" requests)" "$(kv "$line" p50_us)" "$(kv "$line" p99_us)" \
  "$(kv "$line" max_us)" "$queue" "$REPEAT" "$DURATION" << 'PY'
import collections, statistics, sys, time
raw, out, n, p50, p99, mx, queue, repeat, duration = sys.argv[1:]
rows = collections.defaultdict(lambda: {"rps": [], "us": []})
for line in open(raw):
    _, mode, status, wl, rps, us = line.split("\t")
    rows[(mode, wl, status)]["rps"].append(float(rps))
    rows[(mode, wl, status)]["us"].append(float(us))
med = lambda k, f: statistics.median(rows[k][f])
with open(out, "w") as f:
    f.write("# What the status endpoint costs\n\n")
    f.write("Written by `tests/bench/status_cost.sh` (%s): fcgi_load -t 2 -c 64 straight "
            "to fcgate's unix socket, %s rounds of %s s interleaved over the modes with "
            "`status` off and on; each cell is the median round.\n\n"
            % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), repeat, duration))
    f.write("| mode | workload | req/s off | req/s on | on/off | server µs/req off | on |\n")
    f.write("|---|---|---:|---:|---:|---:|---:|\n")
    for mode in ("sync", "threads", "async"):
        for wl in ("hello", "item"):
            off, on = (mode, wl, "off"), (mode, wl, "on")
            f.write("| %s | /%s | %.0f | %.0f | %.2fx | %.1f | %.1f |\n" % (
                mode, wl, med(off, "rps"), med(on, "rps"), med(on, "rps") / med(off, "rps"),
                med(off, "us"), med(on, "us")))
    f.write("\nA status request while every worker is SIGSTOPped and %s connections wait in "
            "the listen queue (async mode, %s requests one after another): p50 %.2f ms, "
            "p99 %.2f ms, max %.2f ms.\n" % (queue, n, int(p50) / 1e3, int(p99) / 1e3,
                                             int(mx) / 1e3))
print(open(out).read())
PY
