# SPDX-License-Identifier: BSD-2-Clause
"""Every wait on a peer is bounded: a stalled request and a peer that does
not read its replies cost one connection after io_timeout; an idle
kept-alive connection is closed after keepalive_timeout; a new connection
that never asks anything after io_timeout. Each fires with a log line,
and the worker goes on serving. Also: a worker silent while idle is
replaced after timeout, in every mode."""

import os
import signal
import time

import harness
from harness import (FCGI_GET_VALUES, FcgiConn, fcgi_begin, fcgi_nv, fcgi_record,
                     fcgi_request_bytes)

MODE = harness.MODE


class TimeoutsTest(harness.TestCase):
    def start(self, **over):
        settings = dict(workers=1, io_timeout=1, keepalive_timeout=2)
        settings.update(over)
        self.fc = self.fcgate("bench", **settings)
        self.workers = self.fc.wait_workers(self.fc.workers)
        return self.fc

    def conn(self):
        c = FcgiConn(self.fc.listen)
        self.addCleanup(c.close)
        return c

    def assertServes(self):
        resp = harness.fcgi_request(self.fc.listen, "GET", "/hello", timeout=10)
        self.assertEqual(resp.http()[2], b"hello\n")
        self.assertEqual(self.fc.worker_pids(), self.workers, "a worker was replaced")

    def test_stalled_request_is_closed_after_io_timeout(self):
        fc = self.start()
        c = self.conn()
        c.send(fcgi_begin(1, flags=1))  # and nothing more
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(8.0), "a stalled request held its connection")
        self.assertGreater(time.monotonic() - t0, 0.8)
        self.assertIsNotNone(fc.wait_log(r"a request stalled: nothing more of it for 1 s "
                                         r"\(io_timeout\); closing the connection", 3))
        self.assertServes()

    def test_peer_that_reads_no_replies_is_closed_after_io_timeout(self):
        fc = self.start()
        c = self.conn()
        pair = fcgi_nv("FCGI_MAX_CONNS", "")
        flood = fcgi_record(FCGI_GET_VALUES, 0, pair) * 60000
        c.sock.settimeout(15)
        try:
            c.sock.sendall(flood)  # fcgate stops reading once its replies back up
        except OSError:
            pass  # closed on us mid-flood: what the test wants
        self.assertIsNotNone(fc.wait_log(r"the peer read nothing for 1 s \(io_timeout\); "
                                         r"closing the connection", 8),
                             "the worker still waits on a peer that does not read")
        self.assertServes()

    def test_idle_kept_connection_is_closed_after_keepalive_timeout(self):
        fc = self.start()
        c = self.conn()
        c.send(fcgi_request_bytes("GET", "/hello", keep_conn=True))
        self.assertEqual(c.read_response().http()[2], b"hello\n")
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(8.0), "the idle kept-alive connection stayed open")
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.assertIsNotNone(fc.wait_log(r"closed 1 idle kept-alive connection after "
                                         r"keepalive_timeout 2 s", 3))
        self.assertServes()

    def test_kept_connection_in_use_is_not_closed(self):
        self.start()
        c = self.conn()
        for _ in range(8):  # 4 s of use, twice keepalive_timeout, never 2 s idle
            c.send(fcgi_request_bytes("GET", "/hello", keep_conn=True))
            self.assertEqual(c.read_response().http()[2], b"hello\n")
            time.sleep(0.5)

    def test_new_connection_that_asks_nothing_is_closed_after_io_timeout(self):
        fc = self.start()
        c = self.conn()
        self.assertTrue(c.closed_by_peer(8.0), "a silent new connection stayed open")
        self.assertIsNotNone(fc.wait_log(r"closed 1 new connection that sent no request "
                                         r"within io_timeout 1 s", 3))
        self.assertServes()

    def test_idle_worker_that_stops_beating_is_replaced(self):
        fc = self.start(workers=2, timeout=1)
        time.sleep(1)  # both workers past their boot (a booting one is not watched yet)
        victim = self.workers[0]
        os.kill(victim, signal.SIGSTOP)
        self.addCleanup(lambda: harness.pid_alive(victim) and os.kill(victim, signal.SIGCONT))
        self.assertTrue(harness.wait_until(lambda: not harness.pid_alive(victim), 8),
                        "the stopped idle worker was never replaced")
        beater = "event loop" if MODE == "async" else "serving thread"
        self.assertIsNotNone(fc.wait_log(r"worker \d+ \(pid %d\): %s silent for \d+\.\d s, "
                                         r"over timeout 1 s; killing the worker"
                                         % (victim, beater), 2))
        self.assertEqual(len(fc.wait_workers(2, exclude=[victim])), 2)
        resp = harness.fcgi_request(fc.listen, "GET", "/hello", timeout=10)
        self.assertEqual(resp.http()[2], b"hello\n")

    def test_idle_workers_that_keep_beating_are_left_alone(self):
        fc = self.start(workers=2, timeout=1)
        time.sleep(4)  # idle, well past timeout plus the beat's slack
        self.assertEqual(fc.worker_pids(), self.workers)
        self.assertNotIn("silent for", fc.log())


if __name__ == "__main__":
    harness.main()
