# SPDX-License-Identifier: BSD-2-Clause
"""What each worker mode is for, shown: async overlaps waiting requests,
threads run CPU work in parallel, a coroutine's stack overflow costs one
worker, waiting calls yield, idle kept-alive connections never hold the
pool. Tests that only make sense in one mode skip in the others."""

import os
import re
import selectors
import socket
import threading
import time
import unittest

import harness

MODE = harness.MODE


def concurrent_fcgi(spec, n, uri, timeout=20.0):
    """n requests at once, each on its own connection, driven by one
    selector: (wall seconds, list of (status, body) or exception text)."""
    payload = harness.fcgi_request_bytes("GET", uri)
    sel = selectors.DefaultSelector()
    results = {}
    t0 = time.monotonic()
    for i in range(n):
        s = harness.connect(spec, timeout=5.0)
        s.sendall(payload)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (i, bytearray()))
    deadline = t0 + timeout
    while len(results) < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            i, buf = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                chunk, results[i] = b"", repr(e)
            if chunk:
                buf.extend(chunk)
                continue
            sel.unregister(key.fileobj)
            key.fileobj.close()
            if i not in results:
                results[i] = parse_whole(bytes(buf))
    wall = time.monotonic() - t0
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return wall, [results.get(i, "no answer") for i in range(n)]


def parse_whole(data):
    """Records of a complete response -> (http status, body)."""
    resp = harness.FcgiResponse()
    i = 0
    while i + 8 <= len(data):
        rtype, clen, plen = data[i + 1], (data[i + 4] << 8) | data[i + 5], data[i + 6]
        content = data[i + 8:i + 8 + clen]
        if rtype == harness.FCGI_STDOUT:
            resp.stdout += content
        elif rtype == harness.FCGI_END_REQUEST:
            resp.end = (int.from_bytes(content[:4], "big"), content[4])
        i += 8 + clen + plen
    if resp.end is None:
        return "no END_REQUEST in %d bytes" % len(data)
    status, _, body = resp.http()
    return status, body


def only(*modes):
    return unittest.skipUnless(MODE in modes, "not a %s-mode test" % "/".join(modes))


class ModesTest(harness.TestCase):
    @only("async")
    def test_async_one_worker_overlaps_500_sleeping_requests(self):
        fc = self.fcgate("bench", workers=1, worker_connections=1000)
        wall, results = concurrent_fcgi(fc.listen, 500, "/sleep")
        bad = [r for r in results if r != (200, b"ok\n")]
        self.assertEqual(bad, [], "%d of 500 failed, e.g. %s" % (len(bad), bad[:3]))
        # One after another: 500 x 20 ms = 10 s. Overlapped: tens of ms plus
        # the cost of 500 connections; a second is a very wide margin.
        self.assertLess(wall, 1.0, "500 concurrent 20 ms sleeps took %.2f s" % wall)

    @only("async")
    def test_async_worker_connections_caps_without_dropping(self):
        fc = self.fcgate("bench", workers=1, worker_connections=2)
        wall, results = concurrent_fcgi(fc.listen, 20, "/sleep?ms=100")
        bad = [r for r in results if r != (200, b"ok\n")]
        self.assertEqual(bad, [], "dropped or failed: %s" % bad[:3])
        # 2 at a time: 10 rounds of 100 ms. Uncapped it would take ~0.1 s.
        self.assertGreater(wall, 0.5, "the cap of 2 connections did not hold (%.2f s)" % wall)

    @only("async")
    def test_async_blocking_handler_is_logged_with_method_and_path(self):
        fc = self.fcgate("probe", workers=1)
        r = harness.fcgi_request(fc.listen, "GET", "/block?ms=250")
        self.assertEqual(r.http()[2], b"blocked\n")
        line = fc.wait_log(r"event loop blocked for \d+ ms by GET /block", timeout=3.0)
        self.assertIsNotNone(line, "no blocked-loop warning in the log")

    @only("threads")
    def test_threads_run_two_cpu_bound_handlers_at_once(self):
        # Each request burns 300 ms of its own thread's CPU time and says
        # when it ran. A lock anywhere on the request path would make the
        # two intervals disjoint; threads running in parallel (or at worst
        # time-sliced on a busy machine) make them overlap almost fully.
        fc = self.fcgate("probe", workers=1, threads=2)
        _, results = concurrent_fcgi(fc.listen, 2, "/spin?ms=300", timeout=60.0)
        self.assertTrue(all(isinstance(r, tuple) and r[0] == 200 for r in results), results)
        (s1, e1), (s2, e2) = [tuple(map(int, r[1].split())) for r in results]
        overlap = min(e1, e2) - max(s1, s2)
        shorter = min(e1 - s1, e2 - s2)
        self.assertGreater(overlap, shorter // 2,
                           "handlers ran one after the other: %s" % [(s1, e1), (s2, e2)])

    def test_stack_overflow_in_a_handler_kills_only_its_worker(self):
        self.allow_sanitizer_reports = True  # ASan reports the overflow itself
        fc = self.fcgate("probe", workers=2)
        before = fc.wait_workers(2)
        try:
            harness.fcgi_request(fc.listen, "GET", "/overflow", timeout=10.0)
        except Exception:
            pass  # the connection dies with the worker
        # async: the fault is in the coroutine's guard page, and said so.
        what = (r": stack overflow \(stack_size 262144 bytes\) while serving"
                if harness.MODE == "async" else r".*")
        m = fc.wait_log(r"worker \d+ \(pid (\d+)\) killed by signal \d+[^\n]*%s GET /overflow"
                        % what, timeout=5.0)
        self.assertIsNotNone(m, "no log line blames GET /overflow")
        dead = int(m.group(1))
        self.assertIn(dead, before)
        after = fc.wait_workers(2, timeout=5.0, exclude=[dead])
        self.assertEqual(len(after), 2, after)
        self.assertNotIn(dead, after)
        # The other worker was not touched.
        self.assertEqual(set(before) - {dead}, set(after) & set(before))
        self.assertEqual(harness.fcgi_request(fc.listen, "GET", "/hello").http()[2], b"hello\n")

    def test_wait_fd_times_out_then_sees_the_fd_ready(self):
        fc = self.fcgate("probe", workers=1)
        r = harness.fcgi_request(fc.listen, "GET", "/wait_fd")
        self.assertEqual(r.http()[2], b"timeout ready\n")

    def test_large_response_streams_through_nginx(self):
        fc = self.fcgate("probe", workers=1)
        ng = self.nginx(fc)
        r = harness.http_request(ng.port, "GET", "/stream?kb=4096", timeout=30.0)
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), 4096 * 1024)
        self.assertEqual(r.body[:1024], b"a" * 1024)
        self.assertEqual(r.body[-1024:], bytes([ord("a") + 4095 % 26]) * 1024)

    def test_failing_handler_gets_500_and_a_log_line(self):
        fc = self.fcgate("probe", workers=1)
        status, _, _ = harness.fcgi_request(fc.listen, "GET", "/fail").http()
        self.assertEqual(status, 500)
        self.assertIsNotNone(fc.wait_log(r"GET /fail: handler failed", timeout=2.0))

    def test_idle_keepalive_connections_do_not_starve_the_pool(self):
        # nginx may cache 32 idle connections; the pool serves 2 requests at
        # a time (sync 2 workers, threads 1 x 2, async 1 loop).
        if MODE == "threads":
            fc = self.fcgate("bench", workers=1, threads=2)
        else:
            fc = self.fcgate("bench", workers=2)
        ng = self.nginx(fc, keepalive=32)
        burst = []

        def one():
            try:
                burst.append(harness.http_request(ng.port, "GET", "/sleep?ms=50",
                                                  timeout=20).status)
            except Exception as e:
                burst.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(burst, [200] * 16)
        # nginx now holds idle upstream connections beyond the pool size;
        # new requests must still be served promptly, on any of them.
        for i in range(20):
            t0 = time.monotonic()
            r = harness.http_request(ng.port, "GET", "/hello", timeout=5)
            self.assertEqual((r.status, r.body), (200, b"hello\n"))
            self.assertLess(time.monotonic() - t0, 2.0, "request %d waited" % i)


if __name__ == "__main__":
    harness.main()
