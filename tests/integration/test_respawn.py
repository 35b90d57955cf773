# SPDX-License-Identifier: BSD-2-Clause
"""A worker killed under load is replaced, and the load barely notices."""

import os
import re
import signal
import time

import harness

WORKERS = 4


class RespawnTest(harness.TestCase):
    def test_killed_worker_is_replaced_under_load(self):
        fc = self.fcgate("bench", workers=WORKERS)
        ng = self.nginx(fc)
        old = fc.wait_workers(WORKERS)
        self.assertEqual(len(old), WORKERS, old)

        with harness.Load(ng.port, paths=["/hello"]) as load:
            time.sleep(1.0)
            victim = old[1]
            kill_time = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            new = fc.wait_workers(WORKERS, timeout=5.0, exclude=[victim])
            respawned = time.monotonic()
            time.sleep(max(0.0, 2.0 - (respawned - kill_time)))

        self.assertEqual(len(new), WORKERS, "workers after the kill: %s" % new)
        self.assertNotIn(victim, new)
        self.assertEqual(len(set(new) - set(old)), 1, "old %s, new %s" % (old, new))
        self.assertTrue(fc.running())

        # The supervisor says who died and how.
        line = fc.wait_log(r"^.*\b%d\b.*$" % victim, timeout=2.0, flags=re.M)
        self.assertIsNotNone(line, "no log line names the killed pid %d" % victim)
        lines = [ln for ln in fc.log().splitlines() if re.search(r"\b%d\b" % victim, ln)]
        self.assertTrue(any(re.search(r"KILL|signal 9\b", ln, re.I) for ln in lines),
                        "no line names pid %d and SIGKILL: %s" % (victim, lines))

        total = load.total()
        self.assertGreater(total, 100, "the load loop barely ran")
        # One load thread: at most the request in flight on the victim fails.
        self.assertLessEqual(load.failed(), 1, load.summary())
        after = [r for r in load.results if r[2] and r[0] > respawned]
        self.assertGreater(len(after), 10, "requests stopped succeeding after the kill")

    def test_every_worker_killed_is_replaced(self):
        fc = self.fcgate("bench", workers=WORKERS)
        old = fc.wait_workers(WORKERS)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        new = fc.wait_workers(WORKERS, timeout=5.0, exclude=old)
        self.assertEqual(len(new), WORKERS, new)
        self.assertFalse(set(new) & set(old))
        self.assertTrue(fc.running())
        r = harness.fcgi_request(fc.listen, "GET", "/hello")
        self.assertEqual(r.http()[2], b"hello\n")
        self.assertEqual(fc.stop(), 0)


if __name__ == "__main__":
    harness.main()
