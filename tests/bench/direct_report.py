# SPDX-License-Identifier: BSD-2-Clause
"""tests/bench/direct_report.py DIRECT_TSV - the direct run's table.

Reads what tests/bench/direct.sh wrote (one row per round x target x
workload) and prints a markdown table: per target and workload the median
over the rounds of each column (req/s, p50, p99, server and client CPU per
request; medians per column, so one disturbed round moves none of them),
and each fcgate mode's server CPU per request over null-fcgi's, with the
project's goals for it. tests/bench/report.py imports it for
docs/BENCHMARKS.md.
"""
import csv
import statistics
import sys

NULL = "null-fcgi"
WORKLOADS = [
    ("hello", "/hello new conn"),
    ("hello-k", "/hello keep-conn"),
    ("item", "/item new conn"),
    ("item-k", "/item keep-conn"),
    ("post", "POST /hello new conn"),
    ("post-k", "POST /hello keep-conn"),
]
# Server CPU per request over null-fcgi's, at most (the goal), by workload.
GOALS = {"hello": 1.25, "hello-k": 1.5}
ERR_COLS = ("err_connect", "err_incomplete", "err_closed", "err_proto", "err_timeout", "stalled")


def load(path):
    """{(target, workload): merged row}; a merged row has the median of each
    numeric column over the rounds that ran ("ok"), the rounds' req/s in
    "rounds", errors and non-200 summed, or status FAIL / n/a."""
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by = {}
    for r in rows:
        by.setdefault((r["target"], r["workload"]), []).append(r)
    merged = {}
    for key, rs in by.items():
        good = [r for r in rs if r["status"] == "ok"]
        if not good:
            merged[key] = {"status": rs[0]["status"], "note": rs[0]["note"]}
            continue
        m = {"status": "ok", "rounds": [float(r["rps"]) for r in good], "failed": len(rs) - len(good)}
        for col in ("rps", "p50_us", "p90_us", "p99_us", "max_us", "client_us_per_req",
                    "server_us_per_req"):
            vals = [float(r[col]) for r in good if r[col] not in ("", "-")]
            m[col] = statistics.median(vals) if vals else None
        m["errors"] = sum(int(r[c] or 0) for r in good for c in ERR_COLS)
        m["non200"] = sum(int(r["non200"] or 0) for r in good)
        m["reconnects"] = sum(int(r["reconnects"] or 0) for r in good)
        merged[key] = m
    targets = list(dict.fromkeys(r["target"] for r in rows))
    workloads = [w for w, _ in WORKLOADS if any(r["workload"] == w for r in rows)]
    rounds = max((int(r["round"]) for r in rows), default=0)
    return merged, targets, workloads, rounds


def ratio(merged, target, w):
    """target's server CPU per request over null-fcgi's, or None."""
    a, b = merged.get((target, w)), merged.get((NULL, w))
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return None
    if not a["server_us_per_req"] or not b["server_us_per_req"]:
        return None
    return a["server_us_per_req"] / b["server_us_per_req"]


def goals(merged, targets):
    """[(target, workload, ratio, limit, PASS/MISS/n/a)] for the fcgate modes."""
    out = []
    for t in targets:
        if not t.startswith("fcgate-"):
            continue
        for w, limit in GOALS.items():
            r = ratio(merged, t, w)
            out.append((t, w, r, limit, "n/a" if r is None else "PASS" if r <= limit else "MISS"))
    return out


def ms(us):
    v = us / 1000.0
    return "%.2f" % v if v < 10 else "%.1f" % v if v < 100 else "%.0f" % v


def table(merged, targets, workloads):
    """Markdown lines: one row per target x workload."""
    label = dict(WORKLOADS)
    out = ["| target | workload | req/s | p50 / p99 ms | server CPU us/req | vs null-fcgi | "
           "client CPU us/req | errors / non-200 |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in targets:
        for w in workloads:
            m = merged.get((t, w))
            if m is None:
                continue
            if m["status"] != "ok":
                out.append("| %s | %s | %s | | | | | |" % (t, label[w], m["status"]))
                continue
            r = ratio(merged, t, w)
            srv = m["server_us_per_req"]
            goal = GOALS.get(w) if t.startswith("fcgate-") else None
            rtxt = "-" if r is None else "%.2fx" % r
            if r is not None and goal:
                rtxt += " %s" % ("PASS" if r <= goal else "**MISS**")
            out.append("| %s | %s | %.0f | %s / %s | %s | %s | %.1f | %d / %d |" % (
                t, label[w], m["rps"], ms(m["p50_us"]), ms(m["p99_us"]),
                "-" if srv is None else "%.1f" % srv, rtxt, m["client_us_per_req"],
                m["errors"], m["non200"]))
    return out


def main():
    merged, targets, workloads, rounds = load(sys.argv[1])
    print("Direct FastCGI (no nginx): medians of %d round(s); goals: server CPU/req "
          "<= %sx null-fcgi's (new connection), <= %sx (keep-conn)"
          % (rounds, GOALS["hello"], GOALS["hello-k"]))
    print()
    print("\n".join(table(merged, targets, workloads)))


if __name__ == "__main__":
    main()
