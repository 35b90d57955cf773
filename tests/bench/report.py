# SPDX-License-Identifier: BSD-2-Clause
"""tests/bench/report.py OUT_DIR DOCS_DIR - writes DOCS_DIR/BENCHMARKS.md.

Reads what tests/bench/run.sh left in OUT_DIR: the harness results
(main/*.tsv, one row per target x workload, and the harness's run dir with
the per-target notes), the concurrency sweep (sweep-c<N>/*.tsv), the
direct run without nginx (direct/direct.tsv, through direct_report.py),
coro_switch.txt and commands.txt. Also writes OUT_DIR/concurrency.gp
(run.sh runs gnuplot on it: DOCS_DIR/bench-concurrency.png) and
OUT_DIR/goals.txt (the goals, one line each, for the console).
"""
import csv
import glob
import os
import platform
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import direct_report  # noqa: E402

out_dir, docs_dir = sys.argv[1], sys.argv[2]
env = os.environ
DURATION = int(env.get("DURATION", "8"))
WARMUP = env.get("WARMUP", "2")
CONNS = env.get("CONNS", "64")
CONNS_HIGH = env.get("CONNS_HIGH", "256")
THREADS = env.get("THREADS", "2")
WRK_TIMEOUT = env.get("WRK_TIMEOUT", "10")
TARGETS = env["TARGETS"].split()
FC_TARGETS = env.get("FC_TARGETS", "").split()
SWEEP_CONNS = [int(c) for c in env.get("SWEEP_CONNS", "").split()]
WORKLOADS = [("hello", "/hello"), ("item", "/item"), ("sleep", "/sleep c%s" % CONNS),
             ("sleep256", "/sleep c%s" % CONNS_HIGH), ("cpu", "/cpu")]
MODES = [("fcgate-sync", "sync"), ("fcgate-threads", "threads"), ("fcgate-async", "async")]
BASE, GEVENT = "libfcgi-c", "uwsgi-gevent"
NULL, NULL_KA = "null-fcgi", "null-fcgi-keepalive"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def slurp(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def load_tsv(sub):
    files = sorted(glob.glob(os.path.join(out_dir, sub, "*.tsv")))
    if not files:
        return {}, ""
    with open(files[-1]) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    md = files[-1][:-4] + ".md"
    return {(r["target"], r["workload"]): r for r in rows}, slurp(md)


def ok(r):
    return r is not None and r["status"] == "ok" and r["rps"] not in ("", None)


def load_rounds():
    """main/ and main-r2/, main-r3/... (REPEAT): per target x workload the
    row of the median round by req/s, with every round's req/s in
    row["rounds"]."""
    tables = [load_tsv("main")[0]]
    for d in sorted(glob.glob(os.path.join(out_dir, "main-r*")),
                    key=lambda d: int(d.rsplit("-r", 1)[1]) if d.rsplit("-r", 1)[1].isdigit() else 0):
        if os.path.isdir(d):
            tables.append(load_tsv(os.path.basename(d))[0])
    merged = {}
    for key in set().union(*tables):
        rows = [t[key] for t in tables if key in t]
        good = sorted((r for r in rows if ok(r)), key=lambda r: float(r["rps"]))
        best = dict(good[(len(good) - 1) // 2]) if good else dict(rows[0])
        best["rounds"] = [float(r["rps"]) for r in good]
        merged[key] = best
    return merged, len(tables)


main, ROUNDS = load_rounds()
main_md = load_tsv("main")[1]
run_dir = slurp(os.path.join(out_dir, "main", "rundir"))
sweep = {}  # (target, path, conns) -> row
for c in SWEEP_CONNS:
    rows, _ = load_tsv("sweep-c%d" % c)
    for (t, w), r in rows.items():
        sweep[(t, w, c)] = r


def rps(t, w, table=None):
    r = (table or main).get((t, w))
    return float(r["rps"]) if ok(r) else None


def ms(us):
    v = int(us) / 1000.0
    return "%.2f" % v if v < 10 else "%.1f" % v if v < 100 else "%.0f" % v


def errs(r):
    sock = sum(int(r[k] or 0) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return int(r["err_status"] or 0), sock


def target_note(t, name):
    return slurp(os.path.join(run_dir, t, name)) if run_dir else ""


coro = {}
for line in slurp(os.path.join(out_dir, "coro_switch.txt")).splitlines():
    m = re.match(r"(\S+) ns_per_switch=([0-9.]+) runs=(\S+) n=(\d+)", line)
    if m:
        coro[m.group(1)] = (float(m.group(2)), m.group(3), int(m.group(4)))

busy = re.search(r"machine busy before the run started: (\d+)%", main_md)
busy = busy.group(1) if busy else "?"
calib = re.search(r"C loop alone: `([^`]*)`", main_md)
calib = calib.group(1) if calib else "?"

disturbed = []
for t in TARGETS:
    fc = target_note(t, "foreign_cpu").split(" ", 2)
    if len(fc) >= 2 and fc[0] and int(fc[0]) >= 5:
        disturbed.append((t, fc[0], fc[1], fc[2] if len(fc) > 2 else ""))

# ------------------------------------------------------------------ goals

goals = []  # (id, goal, measured, PASS/MISS/n/a)


def goal(gid, text, value, threshold, fmt="%.0f", unit="", lower_is_better=False):
    if value is None or threshold is None:
        goals.append((gid, text, "not measured", "n/a"))
        return
    passed = value < threshold if lower_is_better else value >= threshold
    goals.append((gid, text, (fmt % value) + unit + " vs " + (fmt % threshold) + unit,
                  "PASS" if passed else "MISS"))


a256, ahello = rps("fcgate-async", "sleep256"), rps("fcgate-async", "hello")
ideal = int(CONNS_HIGH) / 0.020
goal("G1", "async /sleep at %s connections >= 90%% of min(%d req/s = %s x 1 s / 20 ms, async /hello req/s)"
     % (CONNS_HIGH, ideal, CONNS_HIGH), a256, 0.9 * min(ideal, ahello) if ahello else None,
     unit=" req/s")
g = rps(GEVENT, "sleep256")
goal("G2", "async /sleep at %s connections >= 1.3x %s" % (CONNS_HIGH, GEVENT),
     a256 / g if a256 and g else None, 1.3 if a256 and g else None, fmt="%.2f", unit="x")
n = 3
for t, mode in MODES:
    for w, label in (("hello", "/hello"), ("item", "/item")):
        v, b = rps(t, w), rps(BASE, w)
        goal("G%d" % n, "%s %s >= 1.3x %s" % (mode, label, BASE),
             v / b if v and b else None, 1.3 if v and b else None, fmt="%.2f", unit="x")
        n += 1
for t, mode in MODES:
    v, b = rps(t, "cpu"), rps(BASE, "cpu")
    goal("G%d" % n, "%s /cpu within 5%% of %s (>= 0.95x; faster passes)" % (mode, BASE),
         v / b if v and b else None, 0.95 if v and b else None, fmt="%.2f", unit="x")
    n += 1
cs = coro.get("coro_switch")
goal("G%d" % n, "coroutine context switch < 30 ns (median of 5 x 10^7 round trips)",
     cs[0] if cs else None, 30.0, fmt="%.1f", unit=" ns", lower_is_better=True)


direct_tsv = os.path.join(out_dir, "direct", "direct.tsv")
direct = direct_report.load(direct_tsv) if os.path.exists(direct_tsv) else None
if direct:
    n += 1
    for t, w, r, limit, res in direct_report.goals(direct[0], direct[1]):
        goals.append(("G%d" % n, "%s server CPU per request, direct %s, <= %.2fx null-fcgi's"
                      % (t.split("-", 1)[1], dict(direct_report.WORKLOADS)[w], limit),
                      "not measured" if r is None else "%.2fx vs %.2fx" % (r, limit), res))
        n += 1

with open(os.path.join(out_dir, "goals.txt"), "w") as f:
    for gid, text, meas, res in goals:
        f.write("  %-4s %-5s %s: %s\n" % (gid, res, text, meas))

# ------------------------------------------------------------------ plot

plot_modes = [(t, m) for t, m in MODES if t in FC_TARGETS]
if SWEEP_CONNS and plot_modes:
    series = []
    for w, title in (("sleep", "/sleep (20 ms per request)"), ("hello", "/hello")):
        for t, mode in plot_modes:
            dat = os.path.join(out_dir, "sweep-%s-%s.dat" % (mode, w))
            with open(dat, "w") as f:
                f.write("# conns req/s p50_ms p99_ms\n")
                for c in SWEEP_CONNS:
                    r = sweep.get((t, w, c))
                    if ok(r):
                        f.write("%d %.1f %.3f %.3f\n" % (c, float(r["rps"]), int(r["p50_us"]) / 1000,
                                                       int(r["p99_us"]) / 1000))
            series.append((w, mode, dat))
    xt = ", ".join('"%d" %d' % (c, c) for c in SWEEP_CONNS)
    gp = [
        'set terminal pngcairo size 1400,560 font "sans,11"',
        'set output "%s"' % os.path.join(docs_dir, "bench-concurrency.png"),
        "set multiplot layout 1,2 title \"fcgate: throughput vs concurrency (wrk -t%s, %s s per point, through nginx, %s cores shared)\""
        % (THREADS, DURATION, sh("nproc")),
        "set logscale x 2", "set xtics (%s)" % xt, "set grid", "set key top left",
        "set xlabel \"connections\"", "set ylabel \"req/s\"",
        "set xrange [%g:%g]" % (min(SWEEP_CONNS) / 1.3, max(SWEEP_CONNS) * 1.3),
    ]
    styles = {"sync": "lc rgb '#1f77b4' pt 7", "threads": "lc rgb '#2ca02c' pt 5",
              "async": "lc rgb '#d62728' pt 9"}
    for w, title in (("sleep", "/sleep, 20 ms each (log scale)"), ("hello", "/hello")):
        gp.append('set title "%s"' % title)
        if w == "sleep":
            gp.append("set logscale y 10")
        else:
            gp.append("unset logscale y")
            gp.append("set yrange [0:*]")
        parts = ["'%s' using 1:2 with linespoints lw 2 %s title '%s'" % (d, styles[m], m)
                 for ww, m, d in series if ww == w]
        if w == "sleep":
            parts.append("50*x with lines dt 2 lc rgb '#777777' title 'connections / 20 ms'")
        gp.append("plot " + ", ".join(parts))
    gp.append("unset multiplot")
    with open(os.path.join(out_dir, "concurrency.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")

# ------------------------------------------------------------------ markdown

out = []
p = out.append
nproc = sh("nproc")
p("# fcgate benchmarks")
p("")
p("Written by `tests/bench/run.sh` (%s UTC start, %d min %02d s). Every number below comes "
  "from this one run; rerun the script to refresh the page."
  % (env.get("STARTED_UTC", "?"), int(env.get("ELAPSED", "0")) // 60, int(env.get("ELAPSED", "0")) % 60))
p("")
p("What the status endpoint costs (each mode with `status` off and on, and a status request "
  "while every worker is stopped) is measured separately by `tests/bench/status_cost.sh`: "
  "[status-cost.md](status-cost.md).")
p("")
p("How the pool sizes (`pm` static, dynamic, ondemand, against PHP-FPM's dynamic and ondemand) "
  "under a burst of 256 clients after idle, and the ondemand wait for the first request, is "
  "measured separately by `tests/bench/pool_burst.py`: [pool.md](pool.md).")
p("")
p("Database-bound requests (/pg-item, a point read, and /pg-sleep, a 20 ms query, on one "
  "private PostgreSQL, fcgate's three modes beside PHP-FPM with pdo_pgsql and gunicorn gthread / "
  "gevent with psycopg2) are measured separately by `tests/bench/pg-bench.sh`: [pg-bench.md](pg-bench.md).")
p("")
warn = []
if DURATION < 8:
    warn.append("a **short trial run** (DURATION=%d s per point instead of 8)" % DURATION)
if busy != "?" and int(busy) > 10:
    warn.append("the machine was already **%s%% busy** before the run started" % busy)
if disturbed:
    warn.append("**other processes took CPU** while %s ran (see Disturbed rows)"
                % ", ".join(d[0] for d in disturbed))
if set(env.get("ALL_TARGETS", "").split()) - set(TARGETS):
    warn.append("only these targets ran: %s" % ", ".join(TARGETS))
if warn:
    p("> **Not a reference run:** " + "; ".join(warn) + ". Treat the numbers as a pipeline check.")
    p("")

p("## Goals")
p("")
p("Ratios between targets measured in the same run (absolute numbers vary with the machine).")
p("")
p("| id | goal | measured | result |")
p("|---|---|---|---|")
for gid, text, meas, res in goals:
    p("| %s | %s | %s | %s |" % (gid, text, meas, "**%s**" % res if res == "MISS" else res))
p("")

p("## Machine")
p("")
p("- `nproc`: %s; CPU: %s; %s" % (nproc, sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor(),
                                  sh("awk '/MemTotal/{printf \"%.0f GiB RAM\", $2/1048576}' /proc/meminfo")))
p("- kernel %s; Debian %s" % (platform.release(), slurp("/etc/debian_version", "?")))
p("- `%s`, commit %s, built `Release` (`-O3`) by the run" % (
    sh("'%s/fcgate' --version" % env.get("BUILD_DIR", "build-bench")),
    sh("git -C '%s' describe --always --dirty 2>/dev/null" % env.get("TOP", ".")) or "no git"))
p("- machine busy before the harness started: %s%% of all cores" % busy)
p("- nginx, the servers and wrk all share these %s cores, so the absolute numbers are far below "
  "what the servers do on real hardware; compare ratios within one run." % nproc)
p("")
p("Package versions:")
p("")
p("| package | version |")
p("|---|---|")
pkgs = ("nginx wrk libfcgi0ldbl spawn-fcgi php8.2-fpm php8.2-opcache php8.2-sqlite3 uwsgi-core "
        "uwsgi-plugin-python3 uwsgi-plugin-gevent-python3 gunicorn python3-gevent python3 "
        "libsqlite3-0 libconfig9 gcc cmake gnuplot-nox")
for line in sh("dpkg-query -W -f='${Package}\\t${Version}\\n' %s 2>/dev/null" % pkgs).splitlines():
    parts = line.split("\t")
    if len(parts) == 2 and parts[1]:
        p("| %s | %s |" % tuple(parts))
p("")

p("## Method")
p("")
p("- The harness in `tests/bench/peers` starts each target in turn, each behind its own nginx "
  "(`worker_processes 1`, `access_log off`, FastCGI over a unix socket or HTTP proxy for "
  "gunicorn, a new backend connection per request), checks that every workload answers byte for "
  "byte, then loads it with wrk.")
p("- Load per target x workload: `wrk -t%s -c%s -d%ss --timeout %ss --latency -s apps/wrk/bench.lua` "
  "(`-c%s` for the second /sleep row), after a %s s warm-up with the same parameters and a drain "
  "(until /hello answers in < 50 ms twice in a row)." % (THREADS, CONNS, DURATION, WRK_TIMEOUT,
                                                          CONNS_HIGH, WARMUP))
p("- Workloads: `/hello` (gateway overhead), `/item?id=N` (one sqlite row, N random in 1..10000), "
  "`/sleep` (waits 20 ms: slow I/O), `/cpu` (%s; C loop alone: `%s`)."
  % ("CPU_ITERS=" + env.get("CPU_ITERS", "730000") + " rounds of a 32-bit hash", calib))
if SWEEP_CONNS:
    p("- Concurrency sweep: the same harness, fcgate targets only, workloads `/hello` and `/sleep`, "
      "once for each of %s connections (`CONNS=N WORKLOADS=\"hello sleep\"`)."
      % ", ".join(str(c) for c in SWEEP_CONNS))
if direct:
    p("- Direct FastCGI (no nginx): `tests/bench/direct.sh` starts %s one at a time and loads "
      "each with `fcgi_load -t%s -c%s` (epoll, one request in flight per connection) on its "
      "unix socket, %s s warm-up then %s s measured; server CPU per request is utime + stime "
      "of the server's whole process tree (/proc) over the measured period." % (
          ", ".join(direct[1]), THREADS, CONNS, WARMUP, DURATION))
p("- Context switch: `coro_switch` ping-pongs between the main context and one coroutine "
  "10^7 times (two switches per round trip) with `coro_switch()` of `daemon/coro.c`, then with "
  "ucontext `swapcontext()`; the result is the median of 5 runs.")
p("")
p("Exact commands, in order (paths relative to the repository where they are its own):")
p("")
p("```")
top = env.get("TOP", "")
for line in slurp(os.path.join(out_dir, "commands.txt")).splitlines():
    p(line.replace(top + "/", "").replace(top, ".") if top else line)
p("```")
p("")

p("## Results")
p("")
p("req/s, and latency p50 / p99 in ms (wrk's histogram, closed loop)%s." % (
  "; each cell is the median of %d rounds over all targets (the round with the median req/s; "
  "the slower middle one for an even count)"
  % ROUNDS if ROUNDS > 1 else ""))
p("")
hdr = ["target"]
for w, label in WORKLOADS:
    hdr += ["%s req/s" % label, "p50 / p99"]
hdr += ["non-2xx / socket err"]
p("| " + " | ".join(hdr) + " |")
p("|---|" + "---:|" * (len(hdr) - 1))
for t in TARGETS:
    cells = [t]
    n2 = se = 0
    for w, _ in WORKLOADS:
        r = main.get((t, w))
        if r is None:
            cells += ["-", "-"]
        elif ok(r):
            cells += ["%.0f" % float(r["rps"]), "%s / %s" % (ms(r["p50_us"]), ms(r["p99_us"]))]
            a, b = errs(r)
            n2 += a
            se += b
        elif r["status"] == "n/a":
            cells += ["n/a", ""]
        else:
            cells += ["FAIL", ""]
    cells.append("%d / %d" % (n2, se))
    p("| " + " | ".join(cells) + " |")
p("")

p("## Ratios")
p("")
p("req/s of each target over %s's for the same workload, and over %s's for /sleep at %s connections."
  % (BASE, GEVENT, CONNS_HIGH))
p("")
show_null = rps(NULL, "hello") is not None
p("| target | " + " | ".join("%s vs %s" % (label, BASE) for _, label in WORKLOADS)
  + " | /sleep c%s vs %s |" % (CONNS_HIGH, GEVENT)
  + (" /hello vs null-fcgi (-keepalive) |" if show_null else ""))
p("|---|" + "---:|" * (len(WORKLOADS) + 1 + show_null))
for t in TARGETS:
    cells = [t]
    for w, _ in WORKLOADS:
        v, b = rps(t, w), rps(BASE, w)
        cells.append("%.2f" % (v / b) if v and b else "-")
    v, b = rps(t, "sleep256"), rps(GEVENT, "sleep256")
    cells.append("%.2f" % (v / b) if v and b else "-")
    if show_null:
        # The same nginx set-up, with the floor of a FastCGI responder behind it.
        v, b = rps(t, "hello"), rps(NULL_KA if t.endswith("-keepalive") else NULL, "hello")
        cells.append("%.2f" % (v / b) if v and b else "-")
    p("| " + " | ".join(cells) + " |")
p("")
if show_null:
    p("The last column compares /hello with null-fcgi's behind the same nginx set-up (a "
      "new connection per request, or keep-alive for the -keepalive targets): null-fcgi only "
      "parses record headers and answers a canned hello, so the remaining gap is what the "
      "server itself costs on top of nginx.")
    p("")

if direct:
    merged, dtargets, dworkloads, drounds = direct
    p("## Direct FastCGI (no nginx)")
    p("")
    p("`fcgi_load` on each server's unix socket, no nginx in the way: %s s measured after a %s s "
      "warm-up, `-t%s -c%s`, one request in flight per connection (closed loop). \"new conn\": "
      "a new connection per request, as nginx does by default; \"keep-conn\": `FCGI_KEEP_CONN`, "
      "the connection reused (nginx `fastcgi_keep_conn on` + upstream `keepalive`). POST sends a "
      "%s-byte body. Server CPU is utime + stime of the server's process tree over the measured "
      "period, per request; \"vs null-fcgi\" divides it by null-fcgi's for the same workload "
      "(null-fcgi answers /hello only, so /item has no ratio). Goals for fcgate's modes: <= %.2fx "
      "with a new connection, <= %.2fx with keep-conn. Each number is the median over %d round%s "
      "(per column; the rounds interleave the targets); errors and non-200 answers are summed."
      % (DURATION, WARMUP, THREADS, CONNS, env.get("BODY", "1024"), direct_report.GOALS["hello"],
         direct_report.GOALS["hello-k"], drounds, "" if drounds == 1 else "s"))
    p("")
    for line in direct_report.table(merged, dtargets, dworkloads):
        p(line)
    p("")
    p("libfcgi-c serves one connection per process at a time: with keep-conn its 2 processes "
      "keep 2 connections and the others wait in the backlog, counted as errors (\"stalled\": "
      "unanswered through the whole measured period). One fcgi_load command per workload "
      "(PIDs and paths vary per run):")
    p("")
    p("```")
    seen = set()
    for line in slurp(os.path.join(out_dir, "direct", "direct-commands.txt")).splitlines():
        t, _, cmd = line.partition(": ")
        cmd = re.sub(r"( -P \d+)+", " -P <server pids>", cmd)
        cmd = re.sub(r"unix:\S+", "unix:<socket>", cmd)
        cmd = cmd.replace(top + "/", "") if top else cmd
        if cmd not in seen:
            seen.add(cmd)
            p(cmd)
    p("```")
    p("")

if SWEEP_CONNS and plot_modes:
    p("## Concurrency")
    p("")
    p("![throughput vs connections](bench-concurrency.png)")
    p("")
    p("req/s (p50 / p99 ms) through nginx; fcgate-sync has 4 workers, fcgate-threads 2 x 4 threads, "
      "fcgate-async 2 workers x 1000 connections. An ideal server does connections / 20 ms on /sleep.")
    p("")
    for w, title in (("sleep", "/sleep"), ("hello", "/hello")):
        p("| %s | " % title + " | ".join("c%d" % c for c in SWEEP_CONNS) + " |")
        p("|---|" + "---:|" * len(SWEEP_CONNS))
        if w == "sleep":
            p("| ideal | " + " | ".join("%d" % (c / 0.020) for c in SWEEP_CONNS) + " |")
        for t, mode in plot_modes:
            cells = [mode]
            for c in SWEEP_CONNS:
                r = sweep.get((t, w, c))
                if ok(r):
                    a, b = errs(r)
                    e = " err %d/%d" % (a, b) if a or b else ""
                    cells.append("%.0f (%s / %s)%s" % (float(r["rps"]), ms(r["p50_us"]), ms(r["p99_us"]), e))
                else:
                    cells.append("FAIL" if r else "-")
            p("| " + " | ".join(cells) + " |")
        p("")

p("## Context switch")
p("")
if coro:
    p("| method | ns per switch (median) | runs | round trips per run |")
    p("|---|---:|---|---:|")
    for name, label in (("coro_switch", "fcgate `coro_switch` (daemon/coro.c)"),
                        ("swapcontext", "ucontext `swapcontext`")):
        if name in coro:
            v, runs, n_ = coro[name]
            p("| %s | %.2f | %s | %d |" % (label, v, runs.replace(",", ", "), n_))
    p("")
else:
    p("coro_switch did not run.")
    p("")

p("## Single-request latency")
p("")
p("Median of 5 sequential curl requests through nginx (ms), measured by the harness before loading.")
p("")
p("| target | /hello | /cpu |")
p("|---|---:|---:|")
for t in TARGETS:
    p("| %s | %s | %s |" % (t, target_note(t, "hello_1req_ms") or "-", target_note(t, "cpu_1req_ms") or "-"))
p("")

p("## Targets")
p("")
for t in TARGETS:
    p("### %s" % t)
    p("")
    desc = target_note(t, "desc")
    if desc:
        p(desc)
        p("")
    cmds = target_note(t, "commands")
    if cmds:
        p("```")
        p(cmds)
        p("```")
        p("")
    v = target_note(t, "versions")
    if v:
        p("versions: " + "; ".join(line for line in v.splitlines() if line.strip()))
        p("")
    fc = target_note(t, "foreign_cpu").split(" ", 2)
    if fc and fc[0]:
        p("CPU taken by processes outside the run while it was measured: %s%% of one core." % fc[0])
        p("")

if disturbed:
    p("## Disturbed rows")
    p("")
    p("Other processes used CPU while these targets were measured; rerun on an idle machine:")
    p("")
    for t, pct, secs, top in disturbed:
        p("- %s: %s%% of a core, %s CPU-s (%s)" % (t, pct, secs, top))
    p("")

failed = [t for t in TARGETS if target_note(t, "failure")]
if failed:
    p("## Failures")
    p("")
    for t in failed:
        p("### %s" % t)
        p("")
        p("```")
        p(target_note(t, "failure"))
        p("```")
        p("")

p("## Caveats")
p("")
p("- wrk, nginx and the server share the same cores; wrk takes a good share of one. Rerun before "
  "trusting differences of a few percent.")
p("- Worker counts are fixed, not tuned per server (libfcgi-c: 2 processes, php-fpm 4, uwsgi 2 x 2 "
  "threads, gunicorn sync 4, gthread 2 x 4, gevent 2 x 1000; fcgate as above).")
p("- gunicorn targets pay for HTTP proxying over TCP where the others use FastCGI over a unix socket.")
p("- Python's /cpu measures CPython (~150x slower than C for the same loop), not the server.")
p("- Closed-loop latencies under-report queueing when a server stalls (coordinated omission); "
  "requests over %s s count as timeouts." % WRK_TIMEOUT)
p("")

os.makedirs(docs_dir, exist_ok=True)
with open(os.path.join(docs_dir, "BENCHMARKS.md"), "w") as f:
    f.write("\n".join(out))
