# SPDX-License-Identifier: BSD-2-Clause
"""The adaptive pool and overload protection, through real nginx under a
load loop that counts failures: pm = "dynamic" grows with a ramp of
clients and shrinks back to min_workers after idle_timeout; pm =
"ondemand" goes to no worker at all and serves the next request (also on
a kept-alive connection it held meanwhile, and across an upgrade); a
dynamic pool refills to
min_workers after a crash and across a reload; queue_timeout answers the
requests that waited in a stopped pool 503 at once and fresh ones 200;
max_memory replaces a worker whose memory grows, with no failed
request."""

import http.client
import json
import os
import re
import signal
import threading
import time
import unittest

import harness

IDLE_TIMEOUT = 2


def all_stopped(pid):
    """Every thread of pid is stopped (state T)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            if f.read().rpartition(")")[2].split()[0] != "T":
                return False
    return True


class Ramp:
    """Up to n client threads, each sending requests through nginx in a
    loop while its number is below `level`; every answer is checked (200
    and the body), every failure counted."""

    def __init__(self, port, n, path="/sleep?ms=20", want=b"ok\n"):
        self.port = port
        self.path = path
        self.want = want
        self.level = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i):
        while not self.halt.is_set():
            if i >= self.level:
                time.sleep(0.02)
                continue
            try:
                r = harness.http_request(self.port, "GET", self.path, timeout=20)
                good = r.status == 200 and r.body == self.want
                detail = "" if good else repr(r)
            except Exception as e:  # refused, reset, timeout: a failed request
                good, detail = False, repr(e)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed.append(detail)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        for t in self.threads:
            t.join(30)


class PoolTest(harness.TestCase):
    def start(self, app="probe", keepalive=None, **over):
        self.status_sock = os.path.join(self.tmp, "status.sock")
        settings = dict(workers=1, idle_timeout=IDLE_TIMEOUT,
                        status={"listen": "unix:" + self.status_sock, "listen_mode": "0660"})
        settings.update(over)
        self.fc = self.fcgate(app, **settings)
        self.ngx = self.nginx(self.fc, keepalive=keepalive)
        return self.fc

    def status_json(self):
        resp = harness.fcgi_request("unix:" + self.status_sock, "GET", "/status?json",
                                    timeout=5.0)
        status, _, body = resp.http()
        self.assertEqual(status, 200)
        return json.loads(body.decode())

    def serving(self):
        """Workers of the pool now, those retiring left out."""
        return [w for w in self.status_json()["workers"] if w["state"] != "stopping"]

    def trace(self, into, halt):
        """Samples the pool's size every 0.2 s into a list until halt."""
        t0 = time.monotonic()
        while not halt.is_set():
            try:
                into.append((round(time.monotonic() - t0, 1), len(self.serving())))
            except (OSError, AssertionError):
                pass
            time.sleep(0.2)

    # ------------------------------------------------------------ dynamic

    def test_dynamic_follows_a_ramp_up_and_back_to_min_workers(self):
        over = dict(pm="dynamic", min_workers=1, max_workers=8)
        if harness.MODE == "async":
            # A coroutine per request: without a small limit one worker
            # takes all 64 sleeping clients and the pool never needs more.
            over["worker_connections"] = 4
        self.start(keepalive=8, **over)
        samples, halt = [], threading.Event()
        tracer = threading.Thread(target=self.trace, args=(samples, halt), daemon=True)
        tracer.start()
        self.addCleanup(halt.set)
        with Ramp(self.ngx.port, 64) as ramp:
            for level in list(range(1, 65, 3)) + [64] * 10 + list(range(64, 0, -4)) + [1] * 5:
                ramp.level = level
                time.sleep(0.15)
            ramp.level = 0
            # Idle: every worker but min_workers retires idle_timeout later.
            shrunk = harness.wait_until(lambda: len(self.serving()) == 1, IDLE_TIMEOUT + 8)
        halt.set()
        tracer.join(5)
        peak = max(n for _, n in samples)
        sys_trace = " ".join("%s:%d" % s for s in samples[::3])
        print("\n  dynamic ramp 1->64->1 (%s): %d served, %d failed, peak %d workers; trace "
              "(s:workers) %s" % (harness.MODE, ramp.ok, len(ramp.failed), peak, sys_trace))
        self.assertEqual(ramp.failed, [], "failed requests")
        self.assertGreater(ramp.ok, 200)
        self.assertGreaterEqual(peak, 4, samples)
        self.assertLessEqual(peak, 8, samples)
        self.assertTrue(shrunk, self.status_json())
        doc = self.status_json()
        self.assertEqual(doc["pm"], "dynamic")
        self.assertEqual((doc["min_workers"], doc["max_workers"]), (1, 8))
        self.assertGreaterEqual(doc["spawns"]["queue"] + doc["spawns"]["load"], 3, doc)
        self.assertGreaterEqual(doc["retirements"]["idle"], 3, doc)
        self.assertRegex(self.fc.log(), r"idle for [0-9.]+ s; retiring it")

    def test_ttin_and_ttou_move_max_workers(self):
        self.start(pm="dynamic", min_workers=2, max_workers=3)
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 2, 10))
        os.kill(self.fc.pid, signal.SIGTTIN)
        self.assertTrue(self.fc.wait_log(r"TTIN: pm dynamic, 2\.\.4 workers"))
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["max_workers"] == 4, 5), self.status_json())
        for _ in range(3):
            os.kill(self.fc.pid, signal.SIGTTOU)
            time.sleep(0.2)
        self.assertTrue(self.fc.wait_log(r"TTOU: pm dynamic, 1\.\.1 workers"))
        # min_workers came down with max; the second worker retires.
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 1, 5),
                        self.status_json())
        doc = self.status_json()
        self.assertEqual((doc["min_workers"], doc["max_workers"]), (1, 1))
        self.assertEqual(doc["retirements"]["bound"], 1, doc)
        self.assertEqual(harness.http_request(self.ngx.port, "GET", "/hello").status, 200)

    def test_dynamic_refills_to_min_workers_after_a_crash_and_a_reload(self):
        self.start(pm="dynamic", min_workers=2, max_workers=4)
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 2, 10))
        self.allow_sanitizer_reports = True  # the crash below, in sanitizer builds
        r = harness.http_request(self.ngx.port, "GET", "/segv")
        self.assertEqual(r.status, 502)
        self.assertTrue(self.fc.wait_log(r"while serving GET /segv; respawning"))
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 2, 10),
                        self.status_json())
        # A reload starts min_workers of the new generation, then retires
        # the old ones; the pool keeps its bounds.
        os.kill(self.fc.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_until(
            lambda: {(w["generation"], w["state"]) for w in self.status_json()["workers"]}
            == {(2, "idle")} and len(self.serving()) == 2, 10), self.status_json())
        doc = self.status_json()
        self.assertEqual((doc["min_workers"], doc["max_workers"]), (2, 4))
        self.assertEqual(doc["restarts"]["crash"], 1, doc)
        self.assertEqual(harness.http_request(self.ngx.port, "GET", "/hello").status, 200)

    # ----------------------------------------------------------- ondemand

    def test_ondemand_goes_to_zero_workers_and_serves_the_next_request(self):
        self.start(pm="ondemand", max_workers=4, idle_timeout=1)
        self.assertTrue(harness.wait_until(lambda: self.serving() == [], 10),
                        self.status_json())
        self.assertTrue(harness.wait_until(lambda: self.status_json()["workers"] == [], 10))
        for _ in range(3):
            t0 = time.monotonic()
            r = harness.http_request(self.ngx.port, "GET", "/hello")
            waited = time.monotonic() - t0
            self.assertEqual((r.status, r.body), (200, b"hello\n"))
            self.assertLess(waited, 5.0)
            print("\n  ondemand (%s): first request after idle answered in %.0f ms"
                  % (harness.MODE, waited * 1000))
            self.assertTrue(harness.wait_until(lambda: self.status_json()["workers"] == [], 10),
                            self.status_json())
        doc = self.status_json()
        self.assertEqual(doc["pm"], "ondemand")
        self.assertGreaterEqual(doc["spawns"]["queue"], 3, doc)
        self.assertGreaterEqual(doc["retirements"]["idle"], 3, doc)
        # Idle with no worker is serving, for `fcgate status` too.
        cli = harness.run_fcgate(["status", "--status", "unix:" + self.status_sock])
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertIn("pool: pm ondemand", cli.stdout)

    def test_ondemand_keeps_nginx_keepalive_connections_while_empty(self):
        self.start(keepalive=4, pm="ondemand", max_workers=2, idle_timeout=1)
        conn = http.client.HTTPConnection("127.0.0.1", self.ngx.port, timeout=20)
        self.addCleanup(conn.close)
        for _ in range(3):
            r = harness.http_request(self.ngx.port, "POST", "/hello", body="x", conn=conn)
            self.assertEqual((r.status, r.body), (200, b"hello\n"))
            self.assertTrue(harness.wait_until(lambda: self.status_json()["workers"] == [], 10),
                            self.status_json())
            # nginx's kept-alive FastCGI connection is still open, held by
            # the supervisor: the next POST goes on it, not on a new one.
            self.assertEqual(len(harness.unix_connections(self.fc.sock_path)), 1)
        self.assertNotIn("upstream prematurely closed", self.ngx.log())

    def test_ondemand_hands_its_held_connections_to_an_upgraded_master(self):
        self.start(keepalive=4, pm="ondemand", max_workers=2, idle_timeout=1)
        conn = http.client.HTTPConnection("127.0.0.1", self.ngx.port, timeout=20)
        self.addCleanup(conn.close)
        r = harness.http_request(self.ngx.port, "POST", "/hello", body="x", conn=conn)
        self.assertEqual(r.status, 200)
        self.assertTrue(harness.wait_until(lambda: self.status_json()["workers"] == [], 10))
        os.kill(self.fc.pid, signal.SIGUSR2)
        m = self.fc.wait_log(r"USR2: started the new master, pid (\d+)", 5)
        self.assertIsNotNone(m, "USR2 started no new master")
        new = harness.ForeignProcess(int(m.group(1)), harness.FCGATE_BIN)
        self.track(new)
        self.assertEqual(self.fc.wait(15), 0, "the old master did not stop cleanly")
        # The same kept-alive FastCGI connection, now held by the new master.
        self.assertEqual(len(harness.unix_connections(self.fc.sock_path)), 1)
        r = harness.http_request(self.ngx.port, "POST", "/hello", body="x", conn=conn)
        self.assertEqual((r.status, r.body), (200, b"hello\n"))
        self.assertNotIn("upstream prematurely closed", self.ngx.log())
        self.assertTrue(new.stop(timeout=10), "the new master did not stop on TERM")

    # ------------------------------------------------------ queue_timeout

    def test_queue_timeout_answers_stale_requests_503_at_once(self):
        access = os.path.join(self.tmp, "access.log")
        self.start(app="probe", workers=2, queue_timeout=1,
                   log={"level": "info", "error": "-", "access": access})
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 2, 10))
        pids = [w["pid"] for w in self.serving()]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: [os.kill(p, signal.SIGCONT) for p in pids if harness.pid_alive(p)])
        self.assertTrue(harness.wait_until(lambda: all(map(all_stopped, pids)), 5))
        results, lock = [], threading.Lock()

        def client(path):
            try:
                r = harness.http_request(self.ngx.port, "GET", path, timeout=30)
            except Exception as e:  # a failed request
                r = e
            with lock:
                results.append((time.monotonic(), path, r))

        stale = [threading.Thread(target=client, args=("/hello",)) for _ in range(8)]
        for t in stale:
            t.start()
        # A request straight to fcgate, without X-Request-Start: never rejected.
        direct = []
        bare = threading.Thread(target=lambda: direct.append(
            harness.fcgi_request(self.fc.listen, "GET", "/hello", timeout=30)))
        bare.start()
        time.sleep(1.6)
        resumed = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        for t in stale:
            t.join(30)
        bare.join(30)
        codes = sorted(r.status for _, _, r in results if isinstance(r, harness.Response))
        self.assertEqual(codes, [503] * 8, results)
        slowest = max(t for t, _, _ in results) - resumed
        self.assertLess(slowest, 1.0, "503s took %.2f s after the workers resumed" % slowest)
        for _, _, r in results:
            self.assertEqual(r.header("Retry-After"), "1")
        self.assertEqual(direct[0].http()[0], 200)
        # Fresh requests are served; a client's own X-Request-Start is
        # replaced by nginx's (fastcgi_param), so it cannot fake a wait.
        for _ in range(4):
            self.assertEqual(harness.http_request(self.ngx.port, "GET", "/hello").status, 200)
        r = harness.http_request(self.ngx.port, "GET", "/hello",
                                 headers={"X-Request-Start": "t=1"})
        self.assertEqual(r.status, 200)
        doc = self.status_json()
        self.assertEqual(doc["queue_rejections_total"], 8, doc)
        self.assertGreaterEqual(doc["request_queue"]["count"], 13, doc)
        self.assertGreater(doc["request_queue"]["sum_seconds"], 8 * 1.0, doc)
        with open(access) as f:
            self.assertEqual(len(re.findall(r'"GET /hello[^"]*" 503 ', f.read())), 8)
        om = harness.fcgi_request("unix:" + self.status_sock, "GET", "/status?openmetrics")
        text = om.http()[2].decode()
        self.assertIn("fcgate_queue_rejections_total 8\n", text)
        self.assertRegex(text, r'fcgate_request_queue_seconds_bucket\{le="\+Inf"\} 1[3-9]')

    # --------------------------------------------------------- max_memory

    def test_max_memory_replaces_a_growing_worker_without_failures(self):
        self.start(app="probe", workers=2)
        self.assertTrue(harness.wait_until(lambda: len(self.serving()) == 2, 10))
        full = json.loads(harness.fcgi_request("unix:" + self.status_sock, "GET",
                                               "/status?json&full").http()[2].decode())
        base = max(s["rss_bytes"] for s in full["slots"])
        limit = base + (24 << 20)
        self.fc.settings["max_memory"] = "%dK" % (limit // 1024)
        self.fc.write_config()
        os.kill(self.fc.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["generation"] == 2 and len(self.serving()) == 2, 10))
        first = {w["pid"] for w in self.serving()}
        with Ramp(self.ngx.port, 4, "/hello", b"hello\n") as load:
            load.level = 4
            grown, failures = 0, []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.status_json()["restarts"]["memory"] >= 1:
                    break
                r = harness.http_request(self.ngx.port, "GET", "/grow?mb=4")
                if r.status == 200:
                    grown += 1
                else:
                    failures.append(r)
                time.sleep(0.05)
            time.sleep(1.0)  # the replacement serves
        doc = self.status_json()
        print("\n  max_memory (%s): %d grow requests, %d + %d served, restarts %s"
              % (harness.MODE, grown, load.ok, grown, doc["restarts"]))
        self.assertEqual(failures, [])
        self.assertEqual(load.failed, [])
        self.assertGreaterEqual(doc["restarts"]["memory"], 1, doc)
        self.assertGreaterEqual(doc["spawns"]["memory"], 1, doc)
        self.assertGreaterEqual(doc["retirements"]["memory"], 1, doc)
        self.assertRegex(self.fc.log(), r"(PSS|RSS) [0-9.]+ MiB, over max_memory [0-9.]+ MiB; "
                                        r"starting its replacement")
        self.assertEqual(len(self.serving()), 2)
        self.assertTrue(first - {w["pid"] for w in self.serving()})


if __name__ == "__main__":
    unittest.main(verbosity=2)
