# SPDX-License-Identifier: BSD-2-Clause
"""Idle kept-alive connections survive every way a worker retires.

With nginx's upstream keepalive (fastcgi_keep_conn on), a worker that
closes an idle connection races with nginx writing the next request on
it; nginx retries that request only when it is idempotent, so a POST gets
a 502. fcgate's retiring workers hand their idle connections over to the
workers that stay (daemon/handoff.h) instead of closing them. Each test
here sends POSTs through nginx with upstream keepalive, on kept-alive
client connections, while workers retire, and counts failures: there must
be none, and the log must show connections were handed over (the proof
that they were not merely lucky).
"""

import os
import re
import signal
import sys
import time

import harness

MODE = harness.MODE
OTHER_MODE = {"sync": "async", "threads": "sync", "async": "threads"}[MODE]
POST = dict(method="POST", body=b"x" * 200, keep_alive=True)


def report(what, load):
    sys.stderr.write("HANDOFF %s %s: %d requests, %d failed\n"
                     % (MODE, what, load.total(), load.failed()))
    sys.stderr.flush()


RAW = 16  # idle kept-alive FastCGI connections held open across each event


class Idle:
    """RAW raw FastCGI connections to fcgate (no nginx), each with one
    request answered and FCGI_KEEP_CONN set: idle in whichever worker
    accepted them. check() sends another request on every one: a closed
    connection fails it."""

    def __init__(self, fc):
        self.conns = [harness.FcgiConn(fc.listen) for _ in range(RAW)]
        self.check()

    def check(self):
        for i, c in enumerate(self.conns):
            c.send(harness.fcgi_request_bytes("POST", "/hello", b"y" * 50, keep_conn=True))
            r = c.read_response()
            assert r.end is not None and r.http()[2] == b"hello\n", \
                "idle connection %d of %d: %r" % (i, RAW, r.stdout[:100])

    def close(self):
        for c in self.conns:
            c.close()


class HandoffTest(harness.TestCase):

    def start(self, idle=True, **overrides):
        """fcgate (2 workers) behind nginx with keepalive 16; with idle,
        also RAW idle connections (closed at the end). Returns fcgate,
        nginx, the workers and the Idle connections."""
        fc = self.fcgate("bench", workers=2, **overrides)
        ng = self.nginx(fc, keepalive=16)
        workers = fc.wait_workers(2)
        raw = None
        if idle:
            raw = Idle(fc)
            self.addCleanup(raw.close)
        return fc, ng, workers, raw

    def post_load(self, ng, paths=("/hello",) * 4, **kw):
        """A POST load on kept-alive client connections through ng."""
        return harness.Load(ng.port, paths=paths, **POST, **kw)

    def assertNoFailures(self, load, least=100):
        self.assertGreaterEqual(load.total(), least, "the load loop barely ran: " + load.summary())
        self.assertEqual(load.failed(), 0, load.summary())

    def handed_over(self, fc):
        return sum(int(n) for n in re.findall(r"handed (\d+) idle connections? over", fc.log()))

    def test_ten_hups_with_upstream_keepalive_fail_no_post(self):
        fc, ng, first, idle = self.start()
        with self.post_load(ng, paths=["/hello"] * 4 + ["/sleep?ms=5"] * 2) as load:
            self.assertTrue(load.wait_requests(100), "no load before the reloads")
            # One reload at a time: each generation takes every idle
            # connection over from the one before (a HUP sent while the
            # previous generation still boots would skip one, as it should).
            for gen in range(2, 12):
                os.kill(fc.pid, signal.SIGHUP)
                self.assertIsNotNone(
                    fc.wait_log(r"generation %d ready; retiring generation" % gen, 10),
                    "reload %d never completed" % (gen - 1))
                time.sleep(0.1)
            self.assertTrue(load.wait_requests(100))
        report("reload (10 x HUP)", load)
        self.assertNoFailures(load, least=500)
        self.assertAllGone(first)
        idle.check()  # every idle connection moved with every generation
        self.assertGreaterEqual(self.handed_over(fc), RAW * 10)
        self.assertEqual(fc.stop(), 0)

    def test_max_requests_with_upstream_keepalive_fails_no_post(self):
        fc, ng, _, _ = self.start(idle=False, max_requests=50, max_requests_jitter=10)
        with self.post_load(ng, max_requests=1000, max_seconds=30) as load:
            while any(t.is_alive() for t in load.threads):
                time.sleep(0.05)
        report("recycling (max_requests 50+10)", load)
        self.assertNoFailures(load, least=1000)
        self.assertGreaterEqual(len(re.findall(r"max_requests\)?; recycling", fc.log())), 10)
        self.assertGreater(self.handed_over(fc), 0, "no connection was handed over")
        self.assertEqual(fc.stop(), 0)

    def test_ttou_with_upstream_keepalive_fails_no_post(self):
        fc, ng, two, idle = self.start()
        with self.post_load(ng) as load:
            self.assertTrue(load.wait_requests(100))
            held = harness.pids_holding_connections(two, fc.sock_path)
            os.kill(fc.pid, signal.SIGTTOU)
            one = harness.wait_until(lambda: len(fc.worker_pids()) == 1 and fc.worker_pids(), 10)
            self.assertTrue(one, "TTOU left %s" % fc.worker_pids())
            self.assertTrue(load.wait_requests(200))
        report("TTOU", load)
        self.assertNoFailures(load)
        gone = set(two) - set(one)
        self.assertEqual(len(gone), 1)
        self.assertAllGone(gone)
        idle.check()
        # Which worker accepted what is the kernel's choice: the one that
        # left had connections to hand over if it held any.
        if gone & set(held):
            self.assertGreater(self.handed_over(fc), 0, "no connection was handed over")
        self.assertEqual(fc.stop(), 0)

    def test_hup_into_another_mode_moves_the_connections_across(self):
        fc, ng, first, idle = self.start()
        with self.post_load(ng) as load:
            self.assertTrue(load.wait_requests(100))
            fc.settings["mode"] = OTHER_MODE
            fc.write_config()
            os.kill(fc.pid, signal.SIGHUP)
            self.assertIsNotNone(fc.wait_log(r"generation 2 ready; retiring generation 1", 10))
            self.assertAllGone(first)
            self.assertTrue(load.wait_requests(300))
        report("HUP %s -> %s" % (MODE, OTHER_MODE), load)
        self.assertNoFailures(load)
        idle.check()
        self.assertGreaterEqual(self.handed_over(fc), RAW)
        self.assertEqual(fc.stop(), 0)

    def test_usr2_with_upstream_keepalive_fails_no_post(self):
        fc, ng, old_workers, idle = self.start()
        with self.post_load(ng) as load:
            self.assertTrue(load.wait_requests(100))
            os.kill(fc.pid, signal.SIGUSR2)
            m = fc.wait_log(r"USR2: started the new master, pid (\d+)", 5)
            self.assertIsNotNone(m, "USR2 started no new master")
            new = harness.ForeignProcess(int(m.group(1)), harness.FCGATE_BIN)
            self.track(new)
            self.assertEqual(fc.wait(15), 0, "the old master did not stop cleanly")
            self.assertAllGone(old_workers)
            self.assertTrue(load.wait_requests(300))
        report("upgrade (USR2)", load)
        self.assertNoFailures(load)
        idle.check()  # now served by the new master's workers
        self.assertGreaterEqual(self.handed_over(fc), RAW)
        self.assertTrue(new.stop(timeout=10), "the new master did not stop on TERM")

    def test_stop_closes_kept_connections_instead_of_handing_them_to_nobody(self):
        fc, ng, workers, idle = self.start(graceful_timeout=20)
        with self.post_load(ng) as load:
            self.assertTrue(load.wait_requests(100))
        t0 = time.monotonic()
        self.assertEqual(fc.stop(), 0)
        # Idle connections are closed at once, not left for graceful_timeout.
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(self.handed_over(fc), 0)
        self.assertAllGone(workers)
        for c in idle.conns:
            self.assertIsNone(c.read_record(timeout=2), "an idle connection is still open")


if __name__ == "__main__":
    harness.main()
