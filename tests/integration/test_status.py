# SPDX-License-Identifier: BSD-2-Clause
"""The status endpoint: its own socket, served by a process that runs no
application code, so it answers while every worker is stopped; its text,
JSON, OpenMetrics and full forms; counters that follow the traffic; the
listen queue as the kernel counts it (unix and TCP); both generations
while a reload drains; and `fcgate status` as a health check."""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import FCGATE_BIN

# Debian's python3-prometheus-client, which the system interpreter has
# (the tests may run under another one).
SYSTEM_PYTHON = "/usr/bin/python3"
VALIDATE_OPENMETRICS = """
import sys
from prometheus_client.openmetrics import parser
names = [f.name for f in parser.text_string_to_metric_families(sys.stdin.read())]
print(" ".join(names))
"""


def all_stopped(pid):
    """Every thread of pid is stopped (state T)."""
    tasks = os.listdir("/proc/%d/task" % pid)
    for tid in tasks:
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            if f.read().rpartition(")")[2].split()[0] != "T":
                return False
    return True


class StatusTest(harness.TestCase):
    def start(self, app="bench", **over):
        self.status_sock = os.path.join(self.tmp, "status.sock")
        settings = dict(workers=2, status={"listen": "unix:" + self.status_sock,
                                           "listen_mode": "0660"})
        settings.update(over)
        self.fc = self.fcgate(app, **settings)
        self.status_spec = "unix:" + self.status_sock
        # fcgate's children include the status process: wait for the
        # workers themselves.
        want = self.fc.workers
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["workers_ready"] == want, 10), self.status_json())
        return self.fc

    def status(self, query="", params=None, timeout=5.0):
        resp = harness.fcgi_request(self.status_spec, "GET", "/status" + (query and "?" + query),
                                    params=params, timeout=timeout)
        status, headers, body = resp.http()
        self.assertEqual(status, 200)
        return headers, body.decode()

    def status_json(self, query="json"):
        return json.loads(self.status(query)[1])

    def worker_pids(self):
        return [w["pid"] for w in self.status_json()["workers"]]

    def stop_workers(self, pids):
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.addCleanup(self.cont_workers, pids)
        # kill() returns before every thread has stopped: one may still
        # accept a connection.
        self.assertTrue(harness.wait_until(lambda: all(map(all_stopped, pids)), 5))

    def cont_workers(self, pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def cli(self, *args):
        return subprocess.run([FCGATE_BIN, "status"] + list(args), capture_output=True, text=True,
                              timeout=20, stdin=subprocess.DEVNULL)

    def test_answers_within_a_second_while_every_worker_is_stopped(self):
        fc = self.start()
        pids = self.worker_pids()
        self.assertEqual(len(pids), fc.workers)
        self.stop_workers(pids)
        t0 = time.monotonic()
        doc = self.status_json()
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(sorted(w["pid"] for w in doc["workers"]), sorted(pids))
        self.assertEqual(doc["workers_ready"], fc.workers)
        self.assertEqual(sum(doc["workers_by_state"].values()), fc.workers)

    def test_text_json_full_and_openmetrics_forms(self):
        self.start()
        headers, text = self.status()
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        self.assertRegex(text, r"generation 1: 2 of 2 workers ready")
        doc = self.status_json()
        for key in ("requests_total", "workers", "listen"):
            self.assertIn(key, doc)
        self.assertEqual(doc["listen"][0]["address"], self.fc.listen)
        for w in doc["workers"]:
            self.assertEqual(set(w) >= {"pid", "state"}, True)
            self.assertIn(w["state"], ("idle", "busy", "stopping"))
        full = self.status_json("json&full")
        per = harness.THREADS if harness.MODE == "threads" else 1
        self.assertEqual(len(full["slots"]), self.fc.workers * per)
        self.assertGreater(full["slots"][0]["rss_bytes"], 0)
        _, text = self.status("full")
        self.assertIn("RSS_KB", text)
        self.assertOpenMetrics(self.status("openmetrics"))
        # What Prometheus sends, with no query string.
        accept = {"HTTP_ACCEPT": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
        self.assertOpenMetrics(self.status("", params=accept))

    def assertOpenMetrics(self, answer):
        headers, body = answer
        self.assertTrue(headers["content-type"].startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith("# EOF\n"))
        check = subprocess.run([SYSTEM_PYTHON, "-c", "import prometheus_client"],
                               capture_output=True)
        if check.returncode != 0:
            self.skipTest("python3-prometheus-client is not installed")
        out = subprocess.run([SYSTEM_PYTHON, "-c", VALIDATE_OPENMETRICS], input=body,
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        for name in ("fcgate_requests", "fcgate_request_duration_seconds", "fcgate_workers",
                     "fcgate_listen_queue", "fcgate_listen_queue_max", "fcgate_worker_restarts",
                     "fcgate_timeouts", "fcgate_pool", "fcgate_pool_min_workers",
                     "fcgate_pool_max_workers", "fcgate_worker_spawns",
                     "fcgate_worker_retirements", "fcgate_queue_rejections",
                     "fcgate_request_queue_seconds"):
            self.assertIn(name, out.stdout.split())

    def test_pool_and_queue_wait_through_nginx(self):
        """A static pool shows its bounds; the wait before a worker read
        each request comes from nginx's X-Request-Start, and a request
        sent without it is not timed."""
        fc = self.start(queue_timeout=30)
        doc = self.status_json()
        self.assertEqual((doc["pm"], doc["min_workers"], doc["max_workers"]), ("static", 2, 2))
        self.assertEqual(doc["queue_timeout"], 30)
        self.assertEqual(doc["spawns"], {"min_workers": 0, "load": 0, "queue": 0, "memory": 0})
        self.assertEqual(doc["retirements"], {"idle": 0, "bound": 0, "memory": 0})
        self.assertEqual(doc["request_queue"]["count"], 0)
        ngx = self.nginx(fc)
        for _ in range(5):
            self.assertEqual(harness.http_request(ngx.port, "GET", "/hello").status, 200)
        harness.fcgi_request(fc.listen, "GET", "/hello")
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["request_queue"]["count"] == 5, 2), self.status_json())
        doc = self.status_json()
        self.assertEqual(doc["queue_rejections_total"], 0)
        self.assertLess(doc["request_queue"]["sum_seconds"], 5.0)
        _, text = self.status()
        self.assertIn("pool: pm static, 2..2 workers", text)
        self.assertRegex(text, r"queue: 5 requests timed \(mean wait [0-9.]+ ms\), 0 answered 503 "
                               r"\(queue_timeout 30 s\)")

    def test_requests_total_rises_with_traffic(self):
        fc = self.start()
        before = self.status_json()
        for _ in range(7):
            self.assertEqual(harness.fcgi_request(fc.listen, "GET", "/hello").http()[0], 200)
        harness.fcgi_request(fc.listen, "GET", "/no-such-thing")
        # A request is counted just after its last byte went out.
        harness.wait_until(
            lambda: self.status_json()["requests_total"] >= before["requests_total"] + 8, 2)
        after = self.status_json()
        self.assertEqual(after["requests_total"] - before["requests_total"], 8)
        self.assertEqual(after["requests_by_class"]["2xx"] - before["requests_by_class"]["2xx"], 7)
        self.assertEqual(after["requests_by_class"]["4xx"] - before["requests_by_class"]["4xx"], 1)
        _, om = self.status("openmetrics")
        self.assertIn("fcgate_request_duration_seconds_count %d\n" % after["requests_total"], om)

    def test_listen_queue_counts_50_waiting_connections_unix_and_tcp(self):
        port = harness.free_port()
        tcp = "127.0.0.1:%d" % port
        fc = self.start(listen=["unix:" + os.path.join(self.tmp, "fcgate.sock"), tcp])
        self.stop_workers(self.worker_pids())
        conns = []
        self.addCleanup(lambda: [c.close() for c in conns])
        for _ in range(50):
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            u.connect(fc.sock_path)
            conns.append(u)
            conns.append(socket.create_connection(("127.0.0.1", port)))
        queues = {}
        for _ in range(50):  # the TCP handshakes complete asynchronously
            queues = {l["address"]: l for l in self.status_json()["listen"]}
            if queues[tcp]["queue"] == 50:
                break
            time.sleep(0.02)
        self.assertEqual(queues[fc.listen]["queue"], 50)
        self.assertEqual(queues[tcp]["queue"], 50)
        self.assertGreaterEqual(queues[tcp]["max_queue"], 50)
        _, om = self.status("openmetrics")
        self.assertIn('fcgate_listen_queue{listen="%s"} 50\n' % tcp, om)

    def test_both_generations_appear_while_the_old_one_drains(self):
        fc = self.start(workers=1)
        old = self.worker_pids()
        slow = threading.Thread(target=harness.fcgi_request,
                                args=(fc.listen, "GET", "/sleep?ms=4000"), kwargs={"timeout": 20})
        slow.start()
        self.addCleanup(slow.join)
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["workers_by_state"]["busy"] == 1, 5))
        os.kill(fc.pid, signal.SIGHUP)

        def both():
            doc = self.status_json()
            gens = {w["generation"]: w["state"] for w in doc["workers"]}
            return doc if gens.get(1) == "stopping" and gens.get(2) == "idle" else None
        doc = harness.wait_until(both, 4)
        self.assertIsNotNone(doc, self.status_json())
        self.assertEqual(doc["generation"], 2)
        self.assertIn(old[0], [w["pid"] for w in doc["workers"] if w["generation"] == 1])
        slow.join()
        gone = harness.wait_until(
            lambda: [w["generation"] for w in self.status_json()["workers"]] == [2], 8)
        self.assertTrue(gone, self.status_json())
        # Counted when the supervisor reaps it, up to a turn after the
        # status page stops listing it (a zombie is no worker).
        self.assertTrue(harness.wait_until(
            lambda: self.status_json()["restarts"]["reload"] == 1, 2), self.status_json())

    def test_status_socket_is_handed_over_on_upgrade_and_never_goes_dark(self):
        fc = self.start()
        ino = os.stat(self.status_sock).st_ino
        self.assertEqual(self.status_json()["pid"], fc.pid)
        os.kill(fc.pid, signal.SIGUSR2)
        m = fc.wait_log(r"USR2: started the new master, pid (\d+)", 5)
        self.assertIsNotNone(m, "USR2 started no new master")
        new = harness.ForeignProcess(int(m.group(1)), FCGATE_BIN)
        self.track(new)
        failures = 0
        deadline = time.monotonic() + 15
        while fc.running() and time.monotonic() < deadline:
            try:
                self.status_json()
            except (OSError, AssertionError):
                failures += 1
            time.sleep(0.02)
        self.assertEqual(fc.wait(1), 0, "the old master did not stop cleanly")
        self.assertEqual(failures, 0, "the status socket went dark during the upgrade")
        self.assertEqual(os.stat(self.status_sock).st_ino, ino, "the socket was bound anew")
        doc = self.status_json()
        self.assertEqual(doc["pid"], new.pid)
        self.assertEqual(doc["workers_ready"], fc.workers)
        self.assertTrue(new.stop(timeout=10), "the new master did not stop on TERM")

    def test_nginx_serves_it_at_fcgate_status_from_localhost(self):
        # nginx's workers run unprivileged here: the socket must let them in.
        sock = os.path.join(self.tmp, "status.sock")
        fc = self.start(status={"listen": "unix:" + sock, "listen_mode": "0666"})
        ng = self.nginx(fc, status=self.status_spec)
        resp = harness.http_request(ng.port, "GET", "/fcgate-status?json")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["workers_ready"], fc.workers)
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        resp = harness.http_request(ng.port, "GET", "/fcgate-status", headers=accept)
        self.assertTrue(resp.header("Content-Type").startswith("application/openmetrics-text"))
        self.assertTrue(resp.body.endswith(b"# EOF\n"))

    @unittest.skipUnless(shutil.which("chromium"), "needs Debian's chromium")
    def test_html_page_renders_the_live_worker_count_in_a_browser(self):
        sock = os.path.join(self.tmp, "status.sock")
        fc = self.start(workers=3, status={"listen": "unix:" + sock, "listen_mode": "0666"})
        ng = self.nginx(fc, status=self.status_spec)
        resp = harness.http_request(ng.port, "GET", "/fcgate-status?html")
        self.assertTrue(resp.header("Content-Type").startswith("text/html"))
        self.assertNotIn(b"http", resp.body.split(b"<script>")[0])  # no external asset
        # A real browser runs the page: it fetches ?json and draws the
        # workers (3, not the 0 the page starts with).
        profile = os.path.join(self.tmp, "chromium")
        browser = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=" + profile, "--virtual-time-budget=5000", "--dump-dom",
             "http://127.0.0.1:%d/fcgate-status?html" % ng.port],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            dom, err = browser.communicate(timeout=60)
        finally:
            # Its helper processes share its process group (its pid).
            try:
                os.killpg(browser.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            browser.wait()
        self.assertIn('<b id="workers-live">3 workers</b>', dom, dom[-2000:] + err[-2000:])
        self.assertEqual(dom.count('class="w idle"') + dom.count('class="w busy"'), 3)

    def restarts(self, reason, n, timeout=10):
        ok = harness.wait_until(lambda: self.status_json()["restarts"][reason] >= n, timeout)
        self.assertTrue(ok, self.status_json())

    def test_restarts_are_counted_by_reason(self):
        self.allow_sanitizer_reports = True  # UBSan reports the crash on purpose
        fc = self.start("probe", workers=1, max_requests=5, timeout=1, graceful_timeout=2)
        try:
            harness.fcgi_request(fc.listen, "GET", "/segv", timeout=5)
        except OSError:
            pass  # the worker died under it
        self.restarts("crash", 1)
        fc.wait_workers(1)
        for _ in range(5):  # max_requests: the worker leaves after these
            harness.fcgi_request(fc.listen, "GET", "/hello")
        self.restarts("recycle", 1)
        fc.wait_workers(1)
        harness.fcgi_request(fc.listen, "GET", "/block?ms=3000", timeout=10)
        self.restarts("timeout", 1)
        doc = self.status_json()
        self.assertGreaterEqual(doc["timeouts_total"], 1)
        time.sleep(0.5)  # a second count would come now
        doc = self.status_json()
        self.assertEqual(doc["restarts"]["timeout"], 1, doc)
        self.assertEqual(doc["restarts"]["crash"], 1, doc)
        self.assertEqual(doc["restarts"]["reload"], 0, doc)

    def test_fcgate_status_fails_when_no_worker_is_ready(self):
        fc = self.start(workers=1)
        pid = self.worker_pids()[0]
        # A stopped supervisor cannot replace the worker killed under it.
        os.kill(fc.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, fc.pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(harness.wait_until(lambda: self.status_json()["workers"] == [], 5),
                        self.status_json())
        out = self.cli("--status", self.status_spec)
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("no worker ready", out.stderr)
        self.assertIn("generation 1: 0 of 1 workers ready", out.stdout)
        os.kill(fc.pid, signal.SIGCONT)
        self.assertTrue(harness.wait_until(lambda: self.cli("-c", fc.conf_path).returncode == 0,
                                           10))

    def test_worker_count_follows_ttin(self):
        fc = self.start()
        os.kill(fc.pid, signal.SIGTTIN)
        ok = harness.wait_until(lambda: self.status_json()["workers_ready"] == 3, 5)
        doc = self.status_json()
        self.assertTrue(ok, doc)
        self.assertEqual(doc["workers_configured"], 3)
        self.assertEqual(len(doc["workers"]), 3)

    def test_fcgate_status_prints_a_table_and_fails_once_fcgate_stopped(self):
        fc = self.start()
        out = self.cli("-c", fc.conf_path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"(?m)^PID\s+GEN\s+STATE\s+REQUESTS")
        for pid in self.worker_pids():
            self.assertRegex(out.stdout, r"(?m)^%d\s+1\s+idle" % pid)
        out = self.cli("--status", self.status_spec, "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["workers_ready"], fc.workers)
        fc.stop()
        out = self.cli("-c", fc.conf_path)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("no answer", out.stderr)


if __name__ == "__main__":
    harness.main()
