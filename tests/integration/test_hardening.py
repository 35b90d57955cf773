# SPDX-License-Identifier: BSD-2-Clause
"""Hazards a hostile review found, each in every mode: running out of
descriptors, a handler that fails after its response started, a dead
supervisor."""

import http.client
import os
import resource
import signal
import threading
import time
import unittest

import harness


def epoll_targets(pid):
    """The descriptors registered in pid's epoll sets (tfd lines of fdinfo)."""
    n = 0
    for fd in os.listdir("/proc/%d/fdinfo" % pid):
        try:
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                n += sum(1 for line in f if line.startswith("tfd:"))
        except OSError:
            pass
    return n


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HardeningTest(harness.TestCase):
    def test_accepting_resumes_once_descriptors_are_free(self):
        fc = self.fcgate("bench", workers=1)
        worker = fc.wait_workers(1)[0]
        time.sleep(0.5)  # booted: its descriptors are all open
        soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/%d/fd" % worker))
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (used, hard))
        self.addCleanup(lambda: harness.pid_alive(worker) and
                        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard)))
        out = []
        req = threading.Thread(target=lambda: out.append(
            harness.fcgi_request(fc.listen, "GET", "/hello", timeout=20)), daemon=True)
        req.start()
        self.assertIsNotNone(fc.wait_log(r"accept: Too many open files; pausing", 5),
                             "the worker never ran out of descriptors")
        cpu0 = cpu_seconds(worker)
        time.sleep(2)
        self.assertLess(cpu_seconds(worker) - cpu0, 1.0, "the worker spins while out of fds")
        self.assertEqual(out, [], "answered without a descriptor?")
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        t0 = time.monotonic()
        req.join(10)
        self.assertTrue(out, "the worker never accepted again once descriptors were free")
        self.assertEqual(out[0].http()[2], b"hello\n")
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(fc.worker_pids(), [worker])

    def cut_off_through_nginx(self, keepalive):
        fc = self.fcgate("probe", workers=1)
        ng = self.nginx(fc, keepalive=keepalive)
        conn = http.client.HTTPConnection("127.0.0.1", ng.port, timeout=15)
        self.addCleanup(conn.close)
        conn.request("GET", "/stream?kb=300&fail=1")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)  # the head went out with the first 64 KiB
        with self.assertRaises((http.client.IncompleteRead, ConnectionError),
                               msg="a cut response reached the client as a whole one"):
            resp.read()
        self.assertIsNotNone(fc.wait_log(r"GET /stream: handler failed .*response cut short"))
        # The next request, on a new connection, is whole.
        r = harness.http_request(ng.port, "GET", "/stream?kb=100")
        self.assertEqual(len(r.body), 100 * 1024)

    def test_handler_failing_after_its_response_started_cuts_the_client_off(self):
        self.cut_off_through_nginx(None)

    def test_handler_failing_after_its_response_started_cuts_off_with_keepalive(self):
        self.cut_off_through_nginx(8)

    def orphan(self, path, graceful):
        """A root-started fcgate whose workers run as nobody, its
        supervisor killed by SIGKILL while a request runs."""
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        fc = self.fcgate("probe", workers=2, user="nobody",
                         group=grp.getgrgid(nobody.pw_gid).gr_name, graceful_timeout=graceful,
                         timeout=0, app={"database": ""})
        workers = fc.wait_workers(2)
        out = []
        req = threading.Thread(target=lambda: out.append(
            harness.fcgi_request(fc.listen, "GET", path, timeout=30)), daemon=True)
        req.start()
        time.sleep(0.5)  # in flight
        os.kill(fc.pid, signal.SIGKILL)
        fc.wait(5)
        return fc, workers, req, out

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_workers_of_a_killed_supervisor_finish_their_requests_and_exit(self):
        fc, workers, req, out = self.orphan("/sleep?ms=1500", graceful=10)
        req.join(10)
        self.assertTrue(out and out[0].http()[2] == b"ok\n", "the request in flight was lost")
        self.assertTrue(harness.wait_until(
            lambda: not any(harness.pid_alive(p) for p in workers), 5),
            "orphaned workers live on: %s" % [p for p in workers if harness.pid_alive(p)])
        self.assertIsNotNone(fc.wait_log(r"the supervisor is gone; finishing the requests in "
                                         r"flight \(up to graceful_timeout 10 s\) and exiting"))
        # The socket is free: a new fcgate starts on it and serves.
        again = harness.Fcgate(self.tmp, "probe", name="again", listen=[fc.listen],
                               app={"database": ""})
        self.track(again, again.log_path)
        again.start()
        self.assertEqual(harness.fcgi_request(fc.listen, "GET", "/hello").http()[2], b"hello\n")

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_orphaned_worker_with_a_hung_request_exits_after_graceful_timeout(self):
        fc, workers, req, out = self.orphan("/block?ms=60000", graceful=2)
        t0 = time.monotonic()
        self.assertTrue(harness.wait_until(
            lambda: not any(harness.pid_alive(p) for p in workers), 8),
            "an orphaned worker with a hung request never exits")
        self.assertLess(time.monotonic() - t0, 6)

    @unittest.skipUnless(harness.MODE == "threads", "threads mode retires; the others kill or cancel")
    def test_request_over_timeout_retires_its_worker_and_spares_its_siblings(self):
        fc = self.fcgate("probe", workers=1, threads=4, timeout=1, graceful_timeout=6)
        first = fc.wait_workers(1)
        results = {}

        def get(name, path):
            results[name] = harness.fcgi_request(fc.listen, "GET", path, timeout=20)
        stuck = threading.Thread(target=get, args=("stuck", "/block?ms=30000"), daemon=True)
        stuck.start()
        time.sleep(0.3)
        healthy = [threading.Thread(target=get, args=("ok%d" % i, "/sleep?ms=2500"), daemon=True)
                   for i in range(3)]
        for t in healthy:
            t.start()
        for t in healthy + [stuck]:
            t.join(15)
        for i in range(3):
            self.assertIn("ok%d" % i, results, "a healthy sibling got no answer")
            self.assertIsNotNone(results["ok%d" % i].end, "a healthy sibling was cut off")
            self.assertEqual(results["ok%d" % i].http()[2], b"ok\n")
        self.assertIn("stuck", results, "the stuck request's client got no answer")
        self.assertIsNotNone(results["stuck"].end, "the stuck request was cut off")
        self.assertEqual(results["stuck"].http()[:1], (504,))
        self.assertIsNotNone(fc.wait_log(r"GET /block running for \d+\.\d s, over timeout 1 s; "
                                         r"retiring the worker"))
        # A replacement serves meanwhile; the retired worker is killed once
        # graceful_timeout is up, blamed on the stuck request.
        self.assertEqual(harness.fcgi_request(fc.listen, "GET", "/hello").http()[2], b"hello\n")
        self.assertIsNotNone(fc.wait_log(r"\(pid %d\) killed by signal 9 .*still serving GET "
                                         r"/block" % first[0], 10))
        self.assertEqual(len(fc.wait_workers(1, exclude=first)), 1)

    def test_smallest_stack_size_serves_every_example_endpoint(self):
        # Below the floor is refused; at it, every endpoint of both example
        # apps answers (async runs them on coroutine stacks of that size).
        low = self.fcgate("bench", start=False, stack_size=16384)
        r = harness.run_fcgate(["-t", "-c", low.conf_path])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("'stack_size' must be between 32768 and 67108864", r.stdout + r.stderr)
        bench = self.fcgate("bench", name="bench", workers=1, stack_size=32768)
        for path, status in [("/hello", 200), ("/item?id=7", 200), ("/sleep?ms=1", 200),
                             ("/cpu", 200), ("/nope", 404)]:
            self.assertEqual(harness.fcgi_request(bench.listen, "GET", path).http()[0], status,
                             path)
        notes = self.fcgate("notes", name="notes", workers=1, stack_size=32768)
        ctype = {"CONTENT_TYPE": "application/json"}
        big = b'{"text": "' + b"x" * 20000 + b'\\u00e9"}'
        for method, path, body, status in [
                ("POST", "/notes", big, 201), ("POST", "/notes", b'{"text": "a"}', 201),
                ("GET", "/notes?limit=50", b"", 200), ("GET", "/notes/1", b"", 200),
                ("PUT", "/notes/1", b'{"text": "b"}', 200), ("DELETE", "/notes/2", b"", 204),
                ("POST", "/notes", b"{bad", 400), ("PATCH", "/notes/1", b"", 405)]:
            resp = harness.fcgi_request(notes.listen, method, path, body=body, params=ctype)
            self.assertEqual(resp.http()[0], status, (method, path))
        self.assertEqual(len(bench.worker_pids()) + len(notes.worker_pids()), 2)
        self.assertNotIn("signal", bench.log() + notes.log())

    @unittest.skipIf(harness.MODE == "sync", "its one thread hands over after its request")
    def test_handed_over_connections_leave_the_retiring_workers_epoll_set(self):
        # A socket handed over lives on in another process: left in the old
        # worker's epoll set, its events reach a connection freed there.
        fc = self.fcgate("probe", workers=1)
        old = fc.wait_workers(1)[0]
        idle = []
        for _ in range(40):
            c = harness.FcgiConn(fc.listen)
            self.addCleanup(c.close)
            c.send(harness.fcgi_request_bytes("GET", "/hello", keep_conn=True))
            self.assertEqual(c.read_response().http()[2], b"hello\n")
            idle.append(c)
        busy = threading.Thread(target=lambda: harness.fcgi_request(
            fc.listen, "GET", "/sleep?ms=3000", timeout=20), daemon=True)
        busy.start()  # keeps the old worker alive after the reload
        time.sleep(0.3)
        os.kill(fc.pid, signal.SIGHUP)
        self.assertIsNotNone(fc.wait_log(r"generation 2 ready; retiring generation 1", 10))
        time.sleep(0.5)  # TERM taken, idle connections handed over
        for c in idle:  # traffic on them now, served by the new worker
            c.send(harness.fcgi_request_bytes("GET", "/hello", keep_conn=True))
            self.assertEqual(c.read_response().http()[2], b"hello\n")
        # Left registered: the listen socket, stop and pool descriptors and
        # the busy request's connection at most; not the 40 handed over.
        self.assertTrue(harness.pid_alive(old), "the old worker is gone: nothing was checked")
        self.assertLess(epoll_targets(old), 8, "handed-over sockets still in the old epoll set")
        busy.join(10)
        self.assertIsNotNone(fc.wait_log(r"\[worker 0 %d\] info: handed 40 idle connections"
                                         % old, 10), "the idle connections were not handed over")


if __name__ == "__main__":
    harness.main()
