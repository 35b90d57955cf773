#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Pool sizing under a burst after idle: fcgate's static, dynamic and
ondemand pools and PHP-FPM's dynamic and ondemand ones, each behind its own
nginx, on the same machine in the same run.

For each target, at rest (after idle_timeout and a margin):
  - memory at rest: PSS of the server's whole process tree;
  - first request after idle: one GET /sleep (20 ms) on a fresh
    connection, the time to its answer (ondemand starts a worker for it);
then a burst: CLIENTS threads released at once, one GET /sleep each on a
fresh connection: time to the first answer, p50 and p99 of all, failed
requests, and the most workers seen (sampled every 20 ms).

  tests/bench/pool_burst.py --fcgate build/fcgate --app build/bench.so \\
      [--clients 256] [--rounds 3] [--out docs/pool.md]

Runs as root (PHP-FPM with -R). PHP-FPM targets need php8.2-fpm; without
it they are skipped and the table says so. Every process it starts it
stops by pid. The client is Python threads: their own start-up spreads the
burst over a few milliseconds, the same for every target.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PHP_APP = os.path.join(HERE, "peers", "apps", "app.php")
MAX = 8
IDLE = 2  # idle_timeout, s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def pss(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def stop(proc):
    if proc.poll() is None:
        kids = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Target:
    def __init__(self, name, args, tmp, rest):
        self.name = name
        self.rest = rest  # workers at rest
        self.args = args
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "app.sock")
        self.port = free_port()
        self.server = self.nginx = None

    # ---- servers

    def start_fcgate(self, pool):
        conf = os.path.join(self.dir, "fcgate.conf")
        with open(conf, "w") as f:
            f.write('listen = [ "unix:%s" ];\nlisten_mode = "0666";\nuser = "root";\n'
                    'mode = "sync";\nworkers = %d;\nidle_timeout = %d;\n'
                    'app = { module = "%s"; database = "%s/bench.db"; };\n'
                    'log = { level = "warn"; };\n%s\n'
                    % (self.sock, MAX, IDLE, self.args.app, self.dir, pool))
        log = open(os.path.join(self.dir, "server.log"), "w")
        self.server = subprocess.Popen([self.args.fcgate, "-c", conf], stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.script = None

    def start_php(self, pm):
        conf = os.path.join(self.dir, "php-fpm.conf")
        with open(conf, "w") as f:
            f.write("[global]\npid = %s/php-fpm.pid\nerror_log = %s/php-fpm.log\n"
                    "daemonize = no\n[pool]\nuser = root\ngroup = root\nlisten = %s\n"
                    "listen.backlog = 1024\nlisten.mode = 0666\n%s\n"
                    "env[PEERS_DB] = %s/peers.db\n" % (self.dir, self.dir, self.sock, pm, self.dir))
        log = open(os.path.join(self.dir, "server.log"), "w")
        self.server = subprocess.Popen([self.args.php, "-F", "-R", "-y", conf, "-p", self.dir],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.script = PHP_APP

    def start_nginx(self):
        d = self.dir
        param = "fastcgi_param SCRIPT_FILENAME %s;" % self.script if self.script else ""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write("""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/cb; fastcgi_temp_path {d}/fc; proxy_temp_path {d}/pr;
    uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param HTTP_X_REQUEST_START "t=${{msec}}";
            {param}
            fastcgi_pass unix:{sock};
        }}
    }}
}}
""".format(d=d, port=self.port, sock=self.sock, param=param))
        self.nginx = subprocess.Popen(["nginx", "-p", d + "/", "-c", d + "/nginx.conf", "-e",
                                       d + "/nginx-error.log"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if get(self.port)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("%s: no answer through nginx" % self.name)

    def stop(self):
        for p in (self.nginx, self.server):
            if p:
                stop(p)

    # ---- readings

    def workers(self):
        """Worker processes now (PHP-FPM and fcgate: the master's children)."""
        return len(children(self.server.pid))

    def memory(self):
        return pss(self.server.pid) + sum(pss(k) for k in children(self.server.pid))


def get(port, path="/sleep"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic()
    finally:
        c.close()


def at_rest(t):
    """Waits until the pool has shrunk as far as it will (PHP-FPM retires
    one idle child a second), then a little more."""
    time.sleep(IDLE + 0.5)
    deadline = time.monotonic() + 30
    while t.workers() > t.rest and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


def burst(t, n):
    go = threading.Barrier(n + 1)
    done, lock = [], threading.Lock()

    def client():
        go.wait()
        t0 = time.monotonic()
        try:
            status, end = get(t.port)
        except OSError:
            status, end = 0, time.monotonic()
        with lock:
            done.append((status, t0, end))

    peak, trace, halt = [0], [], threading.Event()

    released = []

    def sample():
        while not halt.is_set():
            n = t.workers()
            peak[0] = max(peak[0], n)
            if released and (not trace or trace[-1][1] != n):
                trace.append((time.monotonic() - released[0], n))
            time.sleep(0.02)

    # The sampler runs from before the release: its first reading after it
    # does not wait for 256 threads to start.
    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=client) for _ in range(n)]
    for th in threads:
        th.start()
    go.wait()
    start = time.monotonic()
    released.append(start)
    for th in threads:
        th.join()
    halt.set()
    sampler.join()
    lat = sorted(end - t0 for _, t0, end in done)
    return {
        "first": min(end for _, _, end in done) - start,
        "p50": statistics.median(lat),
        "p99": lat[int(len(lat) * 0.99) - 1],
        "failed": sum(1 for s, _, _ in done if s != 200),
        "peak": peak[0],
        "trace": trace,
    }


def run_target(t, args):
    rounds = []
    firsts = []
    rest = []
    for _ in range(args.rounds):
        at_rest(t)
        rest.append((t.workers(), t.memory()))
        t0 = time.monotonic()
        status, end = get(t.port)
        firsts.append(end - t0)
        at_rest(t)
        rounds.append(burst(t, args.clients))
    med = lambda k: statistics.median(r[k] for r in rounds)
    return {
        "rest_workers": statistics.median(w for w, _ in rest),
        "rest_mib": statistics.median(m for _, m in rest) / 1048576,
        "first_idle_ms": statistics.median(firsts) * 1000,
        "first_ms": med("first") * 1000,
        "p50_ms": med("p50") * 1000,
        "p99_ms": med("p99") * 1000,
        "failed": sum(r["failed"] for r in rounds),
        "peak": max(r["peak"] for r in rounds),
        "trace": rounds[-1]["trace"],
    }


TARGETS = [
    ("fcgate static", "fcgate", MAX, "pm = \"static\";"),
    ("fcgate dynamic", "fcgate", 1, "pm = \"dynamic\"; min_workers = 1; max_workers = %d;" % MAX),
    ("fcgate ondemand", "fcgate", 0, "pm = \"ondemand\"; max_workers = %d;" % MAX),
    ("php-fpm dynamic", "php", 1,
     "pm = dynamic\npm.max_children = %d\npm.start_servers = 1\npm.min_spare_servers = 1\n"
     "pm.max_spare_servers = 1\n" % MAX),
    ("php-fpm ondemand", "php", 0,
     "pm = ondemand\npm.max_children = %d\npm.process_idle_timeout = %ds\n" % (MAX, IDLE)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fcgate", required=True)
    ap.add_argument("--app", required=True, help="bench.so")
    ap.add_argument("--php", default=shutil.which("php-fpm8.2") or "")
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pool-burst-")
    os.chmod(tmp, 0o755)
    rows = []
    for name, kind, rest, pool in TARGETS:
        if kind == "php" and not args.php:
            rows.append((name, None))
            continue
        t = Target(name.replace(" ", "-"), args, tmp, rest)
        try:
            if kind == "fcgate":
                t.start_fcgate(pool)
            else:
                t.start_php(pool)
            t.start_nginx()
            rows.append((name, run_target(t, args)))
        finally:
            t.stop()
        print("%s: %s" % (name, rows[-1][1]), file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    print("| pool (max %d workers, idle_timeout %d s) | workers at rest | memory at rest (PSS) "
          "| first request after idle | burst of %d: first answer | p50 | p99 | failed | "
          "peak workers |" % (MAX, IDLE, args.clients))
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        if r is None:
            print("| %s | not installed | | | | | | | |" % name)
            continue
        print("| %s | %d | %.1f MiB | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %d | %d |"
              % (name, r["rest_workers"], r["rest_mib"], r["first_idle_ms"], r["first_ms"],
                 r["p50_ms"], r["p99_ms"], r["failed"], r["peak"]))
    print("\nWorkers during the last round's burst (sampled every 20 ms; ms:workers at each "
          "change, from the release of the clients to the last answer):\n")
    print("| pool | trace |\n|---|---|")
    for name, r in rows:
        if r is not None:
            print("| %s | %s |" % (name, " ".join("%d:%d" % (ms * 1000, n)
                                                  for ms, n in r["trace"])))


if __name__ == "__main__":
    main()
