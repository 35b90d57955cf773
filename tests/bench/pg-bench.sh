#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/pg-bench.sh - the database-bound benchmark of docs/pg-bench.md:
# the peers harness with WORKLOADS="pg-item pg-sleep" (one private
# PostgreSQL per round, lib/pg.sh) over fcgate's three modes and the peers
# that speak PostgreSQL, REPEAT interleaved rounds (every target once per
# round), then a table of medians. Not part of the test suite.
#
#   FCGATE_BIN=/tmp/pgb-rel/fcgate FCGATE_APP=/tmp/pgb-rel/bench.so \
#     REPEAT=3 tests/bench/pg-bench.sh
#
# Knobs: REPEAT=3, TARGETS (default below), OUT_DIR (default
# /tmp/fcgate-pg-bench.<time>), and the harness's own (DURATION, WARMUP,
# CONNS=64 for /pg-item, PG_SLEEP_CONNS=256, PG_SLEEP_MS=20, PG_POOL=64).
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${REPEAT:=3}" "${TARGETS:=fcgate-sync fcgate-threads fcgate-async php-fpm gunicorn-gthread gunicorn-gevent}"
: "${OUT_DIR:=/tmp/fcgate-pg-bench.$(date -u +%Y%m%dT%H%M%SZ)}"
: "${PG_POOL:=64}" "${PG_SLEEP_MS:=20}" "${PG_SLEEP_CONNS:=256}"
export WORKLOADS="pg-item pg-sleep" PG_POOL PG_SLEEP_MS PG_SLEEP_CONNS
mkdir -p "$OUT_DIR"
status=0
for ((round = 1; round <= REPEAT; round++)); do
  echo "[$(date -u +%H:%M:%S)] round $round of $REPEAT; load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/rounds.log" >&2
  # shellcheck disable=SC2086
  RESULTS_DIR=$OUT_DIR/round-$round "$BENCH_DIR/peers/run.sh" $TARGETS 2>&1 | tee -a "$OUT_DIR/rounds.log" || status=1
done
python3 - "$OUT_DIR" "$TARGETS" "$PG_POOL" "$PG_SLEEP_MS" > "$OUT_DIR/pg-bench.md" <<'PY' || status=1
import csv, glob, os, statistics, sys
out, targets, pool, ms = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
runs = {}
for tsv in sorted(glob.glob(os.path.join(out, "round-*", "*.tsv"))):
    for r in csv.DictReader(open(tsv), delimiter="\t"):
        runs.setdefault((r["target"], r["workload"]), []).append(r)
def cell(t, w):
    rs = runs.get((t, w), [])
    ok = [r for r in rs if r["status"] == "ok"]
    if not ok:
        return None, "FAIL" if rs else "-"
    rps = statistics.median(float(r["rps"]) for r in ok)
    p99 = statistics.median(float(r["p99_us"]) / 1000 for r in ok)
    errs = sum(int(r["err_status"] or 0) + sum(int(r[k] or 0) for k in
               ("err_connect", "err_read", "err_write", "err_timeout")) for r in ok)
    each = " / ".join("%.0f" % float(r["rps"]) for r in ok)
    return rps, "%.0f (p99 %.1f ms; rounds %s%s)" % (rps, p99, each, "; %d errors" % errs if errs else "")
print("| target | /pg-item, 64 conns: median req/s | /pg-sleep?ms=%d, 256 conns: median req/s |" % ms)
print("|---|---|---|")
med = {}
for t in targets:
    a, sa = cell(t, "pg-item"); b, sb = cell(t, "pg-sleep")
    med[t] = (a, b)
    print("| %s | %s | %s |" % (t, sa, sb))
print()
peers = [t for t in targets if not t.startswith("fcgate")]
best = max([(med[t][0] or 0, t) for t in peers] or [(0, "none")])
if peers:
    print("Best peer on /pg-item: %s, %.0f req/s." % (best[1], best[0]))
for t in targets:
    if peers and t.startswith("fcgate") and med[t][0]:
        r = med[t][0] / best[0] if best[0] else 0
        print("- %s /pg-item: %.2fx the best peer: %s (goal 1.3x)" % (t, r, "PASS" if r >= 1.3 else "MISS"))
a = med.get("fcgate-async", (None, None))[1]
if a:
    ceil = 2 * pool * 1000.0 / ms  # fcgate-async has 2 workers
    print("- fcgate-async /pg-sleep: %.0f req/s of the %.0f that 2 workers x postgres_pool %d allow "
          "(%d x 1000 / %d ms): %.0f%%: %s (goal 90%%)" % (a, ceil, pool, 2 * pool, ms, 100 * a / ceil,
                                                          "PASS" if a >= 0.9 * ceil else "MISS"))
    # The same round's pgbench (lib/pg.sh pg_ceiling): what PostgreSQL
    # itself delivered to 2 x postgres_pool connections sleeping back to back.
    ratios, tpss = [], []
    for d in sorted(glob.glob(os.path.join(out, "round-*"))):
        ce = glob.glob(os.path.join(d, "*.pg-ceiling"))
        rows = [r for f in glob.glob(os.path.join(d, "*.tsv")) for r in csv.DictReader(open(f), delimiter="\t")
                if r["target"] == "fcgate-async" and r["workload"] == "pg-sleep" and r["status"] == "ok"]
        if ce and rows:
            tps = float(open(ce[0]).read().split()[1])
            tpss.append(tps)
            ratios.append(float(rows[0]["rps"]) / tps)
    if ratios:
        print("- pgbench in the same rounds (%d x pg_sleep back to back, no HTTP): %s tps; "
              "fcgate-async through nginx reached %s of it, median %.0f%%" % (
                  2 * pool, " / ".join("%.0f" % t for t in tpss),
                  " / ".join("%.0f%%" % (100 * r) for r in ratios), 100 * statistics.median(ratios)))
PY
cat "$OUT_DIR/pg-bench.md"
echo "results: $OUT_DIR" >&2
exit $status
