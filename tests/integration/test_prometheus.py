# SPDX-License-Identifier: BSD-2-Clause
"""A real Prometheus (Debian's) scrapes fcgate's status through nginx's
/fcgate-status every second, as deployed: fcgate_requests_total rises
under load, and fcgate_listen_queue shows a backlog built on purpose."""

import json
import os
import shutil
import signal
import socket
import time
import unittest
import urllib.parse
import urllib.request

import harness
from test_status import all_stopped


class Prometheus:
    """prometheus on a loopback port, its data in tmp, stopped by pid."""

    def __init__(self, tmp, target_port):
        self.dir = os.path.join(tmp, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.port = harness.free_port()
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.conf = os.path.join(self.dir, "prometheus.yml")
        with open(self.conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: fcgate\n    metrics_path: /fcgate-status\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.proc = None

    def start(self):
        self.proc = harness.spawn(
            ["prometheus", "--config.file=" + self.conf,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port], self.log_path)
        return self

    def stop(self, timeout=10.0):
        if self.proc is not None:
            harness.stop_process(self.proc, timeout=timeout)

    def query(self, expr):
        """The value of an instant query's first sample, or None."""
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (self.port, urllib.parse.quote(expr))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                result = json.load(r)["data"]["result"]
        except (OSError, ValueError, KeyError):
            return None
        return float(result[0]["value"][1]) if result else None


@unittest.skipUnless(shutil.which("prometheus"), "needs Debian's prometheus")
class PrometheusTest(harness.TestCase):
    def test_prometheus_sees_requests_rise_and_a_listen_backlog(self):
        status_sock = os.path.join(self.tmp, "status.sock")
        fc = self.fcgate("bench", workers=2,
                         status={"listen": "unix:" + status_sock, "listen_mode": "0666"})
        ng = self.nginx(fc, status="unix:" + status_sock)
        prom = Prometheus(self.tmp, ng.port)
        self.track(prom, prom.log_path)
        prom.start()
        self.assertTrue(harness.wait_until(lambda: prom.query('up{job="fcgate"}') == 1, 30),
                        "Prometheus never scraped fcgate's status successfully")
        before = prom.query("sum(fcgate_requests_total)")
        self.assertIsNotNone(before)
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            self.assertTrue(load.wait_requests(300))
        served = load.total()
        self.assertTrue(harness.wait_until(
            lambda: (prom.query("sum(fcgate_requests_total)") or 0) >= before + served, 15),
            "fcgate_requests_total did not rise by the %d requests served" % served)
        self.assertGreater(prom.query('fcgate_workers{state="idle"}') or 0, 0)

        # A backlog on purpose: every worker stopped, 30 connections waiting.
        doc = json.loads(harness.fcgi_request("unix:" + status_sock, "GET", "/s?json")
                         .http()[2])
        pids = [w["pid"] for w in doc["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: [harness.pid_alive(p) and os.kill(p, signal.SIGCONT)
                                 for p in pids])
        self.assertTrue(harness.wait_until(lambda: all(map(all_stopped, pids)), 5))
        waiting = []
        for _ in range(30):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(fc.sock_path)
            waiting.append(s)
            self.addCleanup(s.close)
        self.assertTrue(harness.wait_until(
            lambda: (prom.query("max(fcgate_listen_queue)") or 0) >= 30, 15),
            "Prometheus never saw the backlog: %s" % prom.query("max(fcgate_listen_queue)"))
        self.assertGreaterEqual(prom.query("max(fcgate_listen_queue_max)") or 0, 30)


if __name__ == "__main__":
    harness.main()
