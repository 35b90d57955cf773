# SPDX-License-Identifier: BSD-2-Clause
"""Stopping fcgate with signals: TERM drains, INT is fast, both clean up."""

import signal
import threading
import time

import harness


class InFlight(threading.Thread):
    """One raw FastCGI request, run in the background."""

    def __init__(self, spec, uri):
        super().__init__(daemon=True)
        self.spec, self.uri = spec, uri
        self.resp = None
        self.error = None
        self.sent = threading.Event()

    def run(self):
        try:
            with harness.FcgiConn(self.spec, timeout=15) as c:
                c.send(harness.fcgi_request_bytes("GET", self.uri))
                self.sent.set()
                self.resp = c.read_response(1, 15)
        except Exception as e:
            self.error = e
            self.sent.set()


class SignalsTest(harness.TestCase):
    def start_with_request(self, ms, **overrides):
        fc = self.fcgate("bench", workers=2, **overrides)
        workers = fc.wait_workers(2)
        req = InFlight(fc.listen, "/sleep?ms=%d" % ms)
        req.start()
        self.assertTrue(req.sent.wait(5))
        time.sleep(0.3)  # the worker is inside fcgate_sleep now
        return fc, workers, req

    def assertGone(self, pids):
        dead = harness.wait_until(lambda: not any(harness.pid_alive(p) for p in pids), 2.0)
        self.assertTrue(dead, "workers still alive: %s"
                        % [p for p in pids if harness.pid_alive(p)])

    def test_sigterm_finishes_in_flight_request_then_exits_0(self):
        fc, workers, req = self.start_with_request(1500)
        t = time.monotonic()
        fc.proc.send_signal(signal.SIGTERM)
        req.join(10)
        self.assertIsNone(req.error)
        self.assertIsNotNone(req.resp and req.resp.end, "the in-flight request got no answer")
        status, _, body = req.resp.http()
        self.assertEqual((status, body), (200, b"ok\n"))
        code = fc.wait(10)
        took = time.monotonic() - t
        self.assertEqual(code, 0, fc.log())
        self.assertGreater(took, 0.9, "exited before the request could have finished")
        self.assertGone(workers)

    def test_sigterm_stops_accepting_new_connections(self):
        fc, workers, req = self.start_with_request(1500)
        fc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            resp = harness.fcgi_request(fc.listen, "GET", "/hello", timeout=2)
            served = resp.end is not None
        except OSError:
            served = False
        self.assertFalse(served, "a new connection was served after SIGTERM")
        req.join(10)
        self.assertEqual(req.resp.http()[2], b"ok\n")
        self.assertEqual(fc.wait(10), 0)
        self.assertGone(workers)

    def test_sigterm_when_idle_exits_0_promptly(self):
        fc = self.fcgate("bench", workers=2)
        workers = fc.wait_workers(2)
        t = time.monotonic()
        fc.proc.send_signal(signal.SIGTERM)
        self.assertEqual(fc.wait(5), 0, fc.log())
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertGone(workers)

    def test_sigterm_kills_requests_past_graceful_timeout(self):
        fc, workers, req = self.start_with_request(20000, graceful_timeout=1)
        t = time.monotonic()
        fc.proc.send_signal(signal.SIGTERM)
        code = fc.wait(6)
        self.assertIsNotNone(code, "still running 6 s after TERM with graceful_timeout = 1")
        self.assertLess(time.monotonic() - t, 4.0)
        self.assertGone(workers)
        req.join(5)
        self.assertFalse(req.resp and req.resp.end and b"ok" in req.resp.stdout)

    def test_sigint_stops_fast_with_request_in_flight(self):
        fc, workers, req = self.start_with_request(5000)
        t = time.monotonic()
        fc.proc.send_signal(signal.SIGINT)
        code = fc.wait(2.5)
        took = time.monotonic() - t
        self.assertEqual(code, 0, "status %s after %.1f s" % (code, took))
        self.assertLess(took, 2.0)
        self.assertGone(workers)
        req.join(5)

    def test_sigquit_stops_fast(self):
        fc, workers, req = self.start_with_request(5000)
        t = time.monotonic()
        fc.proc.send_signal(signal.SIGQUIT)
        code = fc.wait(2.5)
        self.assertEqual(code, 0)
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertGone(workers)
        req.join(5)


if __name__ == "__main__":
    harness.main()
