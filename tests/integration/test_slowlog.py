# SPDX-License-Identifier: BSD-2-Clause
"""The slow log: a request running past slowlog.timeout is written once,
with its pid, generation, method, URI, duration and the C stack of the
thread running it, the application module's (hidden-visibility) functions
named; taken without stopping the worker's other requests. In async mode
a request that waits is reported by what it waits on. The same stack
goes into the error log when `timeout` gives up on a request. USR1
reopens the file."""

import os
import re
import signal
import threading
import time

import harness

MODE = harness.MODE
ENTRY = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z pid (\d+) generation (\d+) worker (\d+)", re.M)


class SlowLogTest(harness.TestCase):
    def start(self, slow=0.3, **over):
        self.slow = os.path.join(self.tmp, "slow.log")
        settings = dict(workers=2, app={"database": ""},
                        slowlog={"file": self.slow, "timeout": slow})
        settings.update(over)
        self.fc = self.fcgate("probe", **settings)
        return self.fc

    def slow_text(self, path=None):
        try:
            with open(path or self.slow, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def request_bg(self, uri, timeout=30.0):
        """Sends uri in a thread; returns a callable giving its response."""
        box = {}

        def run():
            try:
                box["resp"] = harness.fcgi_request(self.fc.listen, "GET", uri, timeout=timeout)
            except OSError as e:
                box["err"] = e
        t = threading.Thread(target=run)
        t.start()

        def result():
            t.join(timeout + 5)
            if "err" in box:
                raise box["err"]
            return box["resp"]
        return result

    def wait_slow(self, pattern, timeout=8.0):
        return harness.wait_until(lambda: re.search(pattern, self.slow_text(), re.M), timeout)

    def test_slow_request_is_logged_once_with_the_module_stack(self):
        fc = self.start()
        pending = self.request_bg("/stuck?ms=1500&tag=one")
        self.assertIsNotNone(self.wait_slow(r"probe_stuck_in_module"),
                             "no module frame in the slow log:\n" + self.slow_text())
        # Other requests go on meanwhile (another thread or worker).
        hello = harness.fcgi_request(fc.listen, "GET", "/hello", timeout=5)
        self.assertEqual(hello.http()[2], b"hello\n")
        status, _, body = pending().http()
        self.assertEqual((status, body), (200, b"unstuck\n"), "the stack signal broke the request")
        text = self.slow_text()
        entries = ENTRY.findall(text)
        self.assertEqual(len(entries), 1, "want one entry for one slow request:\n" + text)
        pid, generation, _ = entries[0]
        self.assertIn(int(pid), fc.worker_pids())
        self.assertEqual(generation, "1")
        self.assertRegex(text, r"request: GET /stuck\n")
        self.assertRegex(text, r"running: 0\.[3-9]\d* s|running: [1-9][\d.]* s")
        self.assertRegex(text, r"#\d+ 0x[0-9a-f]+ probe_stuck_in_module\+0x[0-9a-f]+ \(probe\.so\)")
        # The frame below the module's function: its request handler.
        self.assertRegex(text, r"handle\+0x[0-9a-f]+ \(probe\.so\)")
        self.assertEqual(fc.worker_pids(), fc.wait_workers(2), "a worker was replaced")

    def test_fast_requests_are_not_logged(self):
        fc = self.start(slow=2.0)
        for _ in range(20):
            harness.fcgi_request(fc.listen, "GET", "/hello", timeout=5)
        harness.fcgi_request(fc.listen, "GET", "/stuck?ms=300", timeout=5)
        time.sleep(0.5)
        self.assertEqual(self.slow_text(), "")

    def test_a_waiting_request_says_what_it_waits_on(self):
        self.start()
        pending = self.request_bg("/sleep?ms=1500")
        if MODE == "async":
            # Not holding the loop: reported by its wait, with no stack.
            m = self.wait_slow(r"waiting on: fcgate_sleep \(\d+\.\d+ s left\), for \d+\.\d+ s")
            self.assertIsNotNone(m, "no wait in the slow log:\n" + self.slow_text())
            self.assertIn("request: GET /sleep\n", self.slow_text())
        else:
            # The thread sleeps inside fcgate's sleep, called from the module.
            m = self.wait_slow(r"(blocking|fcgate)_sleep\+0x[0-9a-f]+ \(fcgate\)\n"
                               r"[^\n]*handle\+0x[0-9a-f]+ \(probe\.so\)")
            self.assertIsNotNone(m, "no fcgate_sleep frame:\n" + self.slow_text())
        self.assertEqual(pending().http()[0], 200)
        self.assertEqual(len(ENTRY.findall(self.slow_text())), 1)

    def test_timeout_puts_the_stack_in_the_error_log(self):
        fc = self.start(slow=30, timeout=1)
        pending = self.request_bg("/stuck?ms=6000")
        m = fc.wait_log(r"stack of GET /stuck[^\n]*:\n(?:[^\n]*\n){0,6}[^\n]*"
                        r"probe_stuck_in_module\+0x[0-9a-f]+ \(probe\.so\)", 10)
        self.assertIsNotNone(m, "no stack in the error log:\n" + fc.log())
        try:
            pending()
        except OSError:
            pass  # the worker was killed under it (sync, async): fine here

    def test_usr1_reopens_the_slow_log(self):
        fc = self.start()
        harness.fcgi_request(fc.listen, "GET", "/stuck?ms=800", timeout=10)
        self.assertIsNotNone(self.wait_slow(r"request: GET /stuck"))
        os.rename(self.slow, self.slow + ".1")
        os.kill(fc.pid, signal.SIGUSR1)
        self.assertIsNotNone(fc.wait_log(r"USR1: log files reopened", 5))
        time.sleep(0.3)  # the workers reopen at their next loop turn
        harness.fcgi_request(fc.listen, "GET", "/stuck?ms=800", timeout=10)
        self.assertIsNotNone(self.wait_slow(r"request: GET /stuck"),
                             "the entry after USR1 is not in the new file")
        self.assertEqual(len(ENTRY.findall(self.slow_text(self.slow + ".1"))), 1)


if __name__ == "__main__":
    harness.main()
