# SPDX-License-Identifier: BSD-2-Clause
"""The supervisor's lifecycle under load (issue 4): reloads, upgrades,
recycling, hung and crashing workers, log rotation, pool resizing.

Every scenario runs through a real nginx (no upstream keep-alive: one
FastCGI connection per request, as the shipped site does) while a load
loop in the test sends requests and counts every one that did not get the
right answer. The failure counts of the reload, upgrade and recycling
scenarios are printed on stderr as `LIFECYCLE <mode> <what>: ...` lines.
"""

import os
import re
import shutil
import signal
import sys
import threading
import time

import harness

MODE = harness.MODE


def report(what, load, extra=""):
    sys.stderr.write("LIFECYCLE %s %s: %d requests, %d failed%s\n"
                     % (MODE, what, load.total(), load.failed(), extra))
    sys.stderr.flush()


def send(fc, sig):
    os.kill(fc.pid, sig)


class LifecycleTest(harness.TestCase):

    def start(self, appname="bench", **overrides):
        fc = self.fcgate(appname, **overrides)
        ng = self.nginx(fc)
        return fc, ng

    def assertNoFailures(self, load, least=50):
        self.assertGreaterEqual(load.total(), least, "the load loop barely ran: " + load.summary())
        self.assertEqual(load.failed(), 0, load.summary())

    def assertOnlyLostWithTheWorker(self, load, t0, t1):
        """A worker dies between t0 and t1 (its request sent, its 502 back).
        In sync mode it was serving nothing else: no load request may fail.
        A threads or async worker serves several at once, and those in
        flight when it died die with it (one crash costs one worker): a
        failure must have been in flight between t0 and t1, and there can
        be at most one per load thread."""
        failed = load.failures()
        stray = [f for f in failed if not (f[0] <= t1 and f[1] >= t0)]
        self.assertEqual(stray, [], "failures away from the worker's death: " + load.summary())
        if MODE == "sync":
            self.assertEqual(failed, [], load.summary())
        self.assertLessEqual(len(failed), len(load.paths), load.summary())

    # ------------------------------------------------------------ HUP

    def test_ten_hups_under_load_fail_no_request_and_replace_every_worker(self):
        fc, ng = self.start("bench", workers=2)
        first = fc.wait_workers(2)
        seen = set(first)
        with harness.Load(ng.port) as load:
            self.assertTrue(load.wait_requests(50), "no load before the reloads")
            for i in range(10):
                old = set(seen)  # every worker of the generations up to now
                send(fc, signal.SIGHUP)
                # Signals of one kind do not queue: the next HUP waits until
                # this one was taken (a loaded machine can delay that past
                # 0.4 s), not until its generation is ready.
                harness.wait_until(
                    lambda: fc.log().count("reloading the configuration") > i, 5)
                end = time.monotonic() + 0.4
                while time.monotonic() < end:
                    seen.update(fc.worker_pids())
                    time.sleep(0.02)
            # The last generation (11) takes over and the 10th retires.
            self.assertIsNotNone(fc.wait_log(r"generation 11 ready; retiring generation", 10),
                                 "the last reload never completed")
            final = fc.wait_workers(2, timeout=10, exclude=old)
            self.assertTrue(load.wait_requests(50))
        report("reload (10 x HUP)", load)
        self.assertNoFailures(load, least=100)
        self.assertEqual(fc.log().count("reloading the configuration"), 10)
        self.assertEqual(len(final), 2, final)
        self.assertFalse(set(final) & set(first), "first %s, now %s" % (first, final))
        self.assertAllGone(old)
        self.assertTrue(fc.running())
        self.assertEqual(fc.stop(), 0)

    def test_retiring_worker_serves_a_connection_it_accepted_before_the_request_came(self):
        # The race behind reload 502s, made deterministic: nginx connects,
        # the worker accepts, the worker is retired, and only then do the
        # request's bytes arrive. The connection was accepted, so nobody
        # else can serve it: the retiring worker must (within
        # graceful_timeout), not close it as if it were an idle keep-alive.
        fc = self.fcgate("bench", workers=1)
        old = fc.wait_workers(1)
        with harness.FcgiConn(fc.listen) as c:
            held = harness.wait_until(
                lambda: harness.pids_holding_connections(old, fc.sock_path), 3)
            self.assertEqual(held, old, "the worker did not accept the connection")
            send(fc, signal.SIGHUP)
            self.assertIsNotNone(fc.wait_log(r"generation 2 ready; retiring generation 1", 5))
            time.sleep(0.3)  # the old worker has its TERM now
            try:
                c.send(harness.fcgi_request_bytes("GET", "/hello"))
                resp = c.read_response(1, 5)
            except OSError as e:
                self.fail("the accepted connection was closed unanswered: %r" % e)
        self.assertIsNotNone(resp.end, "the accepted connection was closed unanswered "
                             "(stdout %r)" % resp.stdout)
        self.assertEqual(resp.http()[2], b"hello\n")
        self.assertAllGone(old)
        self.assertEqual(fc.stop(), 0)

    def test_replaced_module_file_and_hup_serve_the_new_code(self):
        app = os.path.join(self.tmp, "app.so")
        shutil.copy(harness.app_path("probe"), app)
        fc, ng = self.start("probe", workers=2, app={"module": app})
        first = fc.wait_workers(2)
        r = harness.http_request(ng.port, "GET", "/pid")
        self.assertEqual(r.status, 200, r)
        self.assertIn(int(r.body), first)  # probe answers its pid
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            self.assertTrue(load.wait_requests(20))
            # As an installer does it: a new file renamed over the old one,
            # so the running workers keep their mapping of the old inode.
            tmp = app + ".new"
            shutil.copy(harness.app_path("bench"), tmp)
            os.rename(tmp, app)
            send(fc, signal.SIGHUP)

            def new_code():
                r = harness.http_request(ng.port, "GET", "/pid")
                return r if r.status == 404 else None
            r = harness.wait_until(new_code, 10, interval=0.1)
            self.assertIsNotNone(r, "still the old module 10 s after the HUP")
            self.assertEqual(r.body, b"not found\n")  # bench's 404
            self.assertIsNotNone(fc.wait_log(r"generation 2 ready; retiring generation 1", 5))
            self.assertTrue(load.wait_requests(20))
        report("module swap + HUP", load)
        self.assertNoFailures(load, least=40)
        now = fc.wait_workers(2, timeout=10, exclude=first)
        self.assertFalse(set(now) & set(first))
        self.assertAllGone(first)
        self.assertEqual(fc.stop(), 0)

    def test_bad_config_on_hup_is_logged_with_file_line_and_the_old_workers_keep_serving(self):
        fc, ng = self.start("bench", workers=2)
        before = fc.wait_workers(2)
        with open(fc.conf_path) as f:
            good = f.read()
        lines = good.count("\n")
        with harness.Load(ng.port) as load:
            self.assertTrue(load.wait_requests(30))
            with open(fc.conf_path, "a") as f:
                f.write("no_such_key = 1;\n")
            send(fc, signal.SIGHUP)
            err = fc.wait_log(r"^.*%s:(\d+): .*no_such_key.*$" % re.escape(fc.conf_path), 5,
                              flags=re.M)
            self.assertIsNotNone(err, "no FILE:LINE error for the bad key")
            self.assertEqual(int(err.group(1)), lines + 1, err.group(0))
            self.assertIsNotNone(fc.wait_log(r"(still|keeps?) serving", 5))
            time.sleep(1.0)  # a new generation, if one were started, would be up by now
            self.assertTrue(load.wait_requests(50))
            self.assertEqual(fc.worker_pids(), before, "the workers changed")
        report("bad config + HUP", load)
        self.assertNoFailures(load)
        self.assertNotRegex(fc.log(), r"generation 2")
        self.assertEqual(fc.stop(), 0)

    # ------------------------------------------------------------ USR2

    def test_usr2_upgrade_under_load_fails_no_request_and_hands_over_the_pidfile(self):
        fc, ng = self.start("bench", workers=2)
        pidfile = fc.settings["pidfile"]
        oldbin = pidfile + ".oldbin"
        old_workers = fc.wait_workers(2)
        self.assertEqual(harness.read_pidfile(pidfile), fc.pid)
        with harness.Load(ng.port) as load:
            self.assertTrue(load.wait_requests(50))
            time.sleep(0.5)
            send(fc, signal.SIGUSR2)
            m = fc.wait_log(r"USR2: started the new master, pid (\d+)", 5)
            self.assertIsNotNone(m, "USR2 started no new master")
            new = harness.ForeignProcess(int(m.group(1)), harness.FCGATE_BIN)
            # Not our child: stopped by pid, even if the test fails below.
            self.track(new)
            self.assertTrue(harness.wait_until(
                lambda: harness.read_pidfile(pidfile) == new.pid, 10),
                "the pidfile names %s, not the new master %d"
                % (harness.read_pidfile(pidfile), new.pid))
            status = fc.wait(15)
            self.assertEqual(status, 0, "the old master did not stop cleanly after the upgrade")
            self.assertTrue(new.running(), "the new master is gone")
            time.sleep(1.0)  # the new master alone serves the load
            self.assertTrue(load.wait_requests(50))
        report("upgrade (USR2)", load)
        self.assertNoFailures(load, least=100)
        self.assertAllGone(old_workers)
        self.assertFalse(os.path.exists(oldbin), "%s is still there" % oldbin)
        self.assertEqual(harness.read_pidfile(pidfile), new.pid)
        workers = harness.wait_until(lambda: len(new.children()) == 2 and new.children(), 5)
        self.assertTrue(workers, "the new master's workers: %s" % new.children())
        r = harness.http_request(ng.port, "GET", "/hello")
        self.assertEqual((r.status, r.body), (200, b"hello\n"))
        self.assertTrue(new.stop(timeout=10), "the new master did not stop on TERM")
        self.assertIsNotNone(fc.wait_log(r"\[main %d\] info: stopped" % new.pid, 2))
        self.assertFalse(os.path.exists(pidfile), "the pidfile outlived the new master")

    # ------------------------------------------------------------ recycling

    def test_max_requests_recycles_workers_without_a_failed_request(self):
        fc, ng = self.start("bench", workers=2, max_requests=50, max_requests_jitter=10)
        first = fc.wait_workers(2)
        seen = set(first)
        with harness.Load(ng.port, paths=("/hello", "/hello", "/sleep?ms=5"),
                  max_requests=1000, max_seconds=30) as load:
            while any(t.is_alive() for t in load.threads):
                seen.update(fc.worker_pids())
                time.sleep(0.02)
        log = fc.log()
        recycled = len(re.findall(r"max_requests\)?; recycling", log))
        report("recycling (max_requests 50+10)", load,
               "; %d recyclings, %d worker pids" % (recycled, len(seen)))
        self.assertNoFailures(load)
        self.assertEqual(load.total(), 1000, "not all sent in 30 s: " + load.summary())
        # ~1000 requests (plus start-up checks) over workers living 50-60
        # requests each: at least 14 recyclings.
        self.assertGreaterEqual(recycled, 14, "recyclings logged: %d" % recycled)
        self.assertGreaterEqual(len(seen), 14, "worker pids seen: %s" % sorted(seen))
        self.assertTrue(fc.running())
        self.assertFalse(set(fc.wait_workers(2)) & set(first))
        self.assertEqual(fc.stop(), 0)

    # ------------------------------------------------------------ timeout

    def long_request(self, port, path, out, stamp=False):
        t0 = time.monotonic()
        try:
            r = harness.http_request(port, "GET", path, timeout=30)
            out.append((r.status, r.body, time.monotonic() - t0))
        except Exception as e:
            out.append((None, repr(e), time.monotonic() - t0))
        if stamp:
            out.append(time.monotonic())

    def test_request_over_timeout_gets_its_worker_killed_and_respawned(self):
        # async: /sleep yields (its timeout is a 504, below); /block holds the loop.
        path = "/block" if MODE == "async" else "/sleep"
        fc, ng = self.start("probe", workers=2, timeout=1)
        before = fc.wait_workers(2)
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            self.assertTrue(load.wait_requests(20))
            out = []
            t0 = time.monotonic()
            req = threading.Thread(target=self.long_request,
                                   args=(ng.port, path + "?ms=5000", out, True), daemon=True)
            req.start()
            # threads: the worker is retired (its siblings' requests finish),
            # the request answered 504; it ends once its sleep is over.
            action = "retiring the worker" if MODE == "threads" else "killing the worker"
            m = fc.wait_log(r"worker \d+ \(pid (\d+)\): GET %s running for (\d+\.\d) s, "
                            r"over timeout 1 s; %s" % (path, action), 5)
            self.assertIsNotNone(m, "no timeout kill logged within 5 s")
            killed_after = time.monotonic() - t0
            victim = int(m.group(1))
            self.assertIn(victim, before)
            self.assertGreaterEqual(float(m.group(2)), 1.0)
            self.assertLessEqual(killed_after, 3.5)
            if MODE != "threads":
                self.assertIsNotNone(fc.wait_log(
                    r"\(pid %d\) killed by signal (6|9)\b.* while serving GET %s; respawning"
                    % (victim, path), 4), "no respawn line for the killed worker")
            now = fc.wait_workers(2, timeout=8, exclude=[victim])
            req.join(10)
            self.assertTrue(load.wait_requests(20))
        self.assertEqual(len(out), 2)
        (status, body, took), t1 = out
        want = 504 if MODE == "threads" else 502
        self.assertEqual(status, want, "the timed-out request got %r" % ((status, body),))
        self.assertLess(took, 4.0)
        self.assertNotIn(victim, now)
        self.assertEqual(len(now), 2)
        self.assertFalse(harness.pid_alive(victim))
        report("timeout kill", load)
        self.assertGreaterEqual(load.total(), 40, load.summary())
        self.assertOnlyLostWithTheWorker(load, t0, t1)
        if MODE == "threads":  # retired, not killed: nothing else was lost
            self.assertEqual(load.failures(), [], load.summary())
        self.assertEqual(fc.stop(), 0)

    def test_sigstopped_worker_with_a_request_in_flight_is_killed_after_timeout(self):
        # Stopped, it cannot take SIGABRT: the supervisor's SIGKILL 1 s later
        # must. In async mode the request sleeps (the loop is idle, then
        # silent): the loop's heartbeat is what must give it away.
        fc, ng = self.start("probe", workers=2, timeout=1)
        before = fc.wait_workers(2)
        out = []
        req = threading.Thread(target=self.long_request,
                               args=(ng.port, "/sleep?ms=3000", out), daemon=True)
        req.start()
        serving = harness.wait_until(
            lambda: harness.pids_holding_connections(before, fc.sock_path), 3)
        self.assertEqual(len(serving or []), 1, "which worker serves /sleep: %s" % serving)
        victim = serving[0]
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()
        self.addCleanup(lambda: harness.pid_alive(victim) and os.kill(victim, signal.SIGCONT))
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            limit = 7.0 if MODE == "async" else 4.0
            dead = harness.wait_until(lambda: not harness.pid_alive(victim), limit)
            took = time.monotonic() - t0
            self.assertTrue(dead, "the stopped worker %d is still there %.0f s later"
                            % (victim, limit))
            # sync, threads: its request is over the timeout. async: the
            # request waits in a timer, so only the silent loop shows.
            why = (r"event loop silent for \d+\.\d s" if MODE == "async" else
                   r"GET /sleep running for \d+\.\d s")
            self.assertIsNotNone(fc.wait_log(
                r"worker \d+ \(pid %d\): %s, over timeout 1 s; killing the worker"
                % (victim, why), 1), "no kill line for the stopped worker")
            self.assertIsNotNone(fc.wait_log(
                r"\(pid %d\) killed by signal 9\b.*; respawning" % victim, 2),
                "no respawn line for the killed worker")
            now = fc.wait_workers(2, timeout=5, exclude=[victim])
            req.join(10)
            self.assertTrue(load.wait_requests(20))
        sys.stderr.write("LIFECYCLE %s stopped worker killed %.1f s after SIGSTOP\n"
                         % (MODE, took))
        self.assertEqual(len(now), 2)
        self.assertNotIn(victim, now)
        self.assertEqual(out and out[0][0], 502, "the stopped request got %r" % (out,))
        self.assertNoFailures(load, least=20)
        self.assertEqual(fc.stop(), 0)

    def test_async_request_over_timeout_is_answered_504_and_its_worker_kept(self):
        if MODE != "async":
            self.skipTest("504 and cancel is the async mode's timeout")
        fc, ng = self.start("probe", workers=2, timeout=1)
        before = fc.wait_workers(2)
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            self.assertTrue(load.wait_requests(20))
            out = []
            self.long_request(ng.port, "/sleep?ms=5000", out)
            self.assertTrue(load.wait_requests(20))
        status, body, took = out[0]
        self.assertEqual(status, 504, "got %r after %.1f s" % (body, took))
        self.assertLess(took, 2.5)
        self.assertGreaterEqual(took, 0.9)
        self.assertRegex(fc.log(), r"GET /sleep running for \d+\.\d s, over timeout 1 s; "
                                   r"cancelled, answered 504")
        self.assertNotRegex(fc.log(), r"killing the worker|killed by signal")
        self.assertEqual(fc.worker_pids(), before)
        self.assertNoFailures(load, least=40)
        self.assertEqual(fc.stop(), 0)

    # ------------------------------------------------------------ crash

    def test_crashing_endpoint_costs_that_request_and_a_respawned_worker_only(self):
        fc, ng = self.start("probe", workers=2)
        before = fc.wait_workers(2)
        with harness.Load(ng.port, paths=("/hello", "/hello")) as load:
            self.assertTrue(load.wait_requests(30))
            t0 = time.monotonic()
            r = harness.http_request(ng.port, "GET", "/segv")
            t1 = time.monotonic()
            m = fc.wait_log(r"worker \d+ \(pid (\d+)\) killed by signal 11 \(Segmentation fault\) "
                            r"while serving GET /segv; respawning", 3)
            self.assertIsNotNone(m, "no crash line naming GET /segv and SIGSEGV")
            victim = int(m.group(1))
            now = fc.wait_workers(2, timeout=5, exclude=[victim])
            self.assertTrue(load.wait_requests(30))
        report("crash (GET /segv)", load)
        self.assertEqual(r.status, 502, r)
        self.assertIn(victim, before)
        self.assertNotIn(victim, now)
        self.assertEqual(len(now), 2)
        self.assertGreaterEqual(load.total(), 50, load.summary())
        self.assertOnlyLostWithTheWorker(load, t0, t1)
        r = harness.http_request(ng.port, "GET", "/hello")
        self.assertEqual((r.status, r.body), (200, b"hello\n"))
        self.assertEqual(fc.stop(), 0)

    # ------------------------------------------------------------ USR1

    def test_usr1_reopens_rotated_error_and_access_logs_in_every_process(self):
        err_log = os.path.join(self.tmp, "error.log")
        acc_log = os.path.join(self.tmp, "access.log")
        self._logs.extend([err_log, acc_log])
        fmt = '"$method $uri" $status pid=$pid'
        fc, ng = self.start("probe", workers=2,
                            log={"error": err_log, "access": acc_log, "access_format": fmt})
        fc.wait_workers(2)

        def read(p):
            try:
                with open(p, errors="replace") as f:
                    return f.read()
            except OSError:
                return ""

        def fail_requests(n):
            for _ in range(n):
                harness.http_request(ng.port, "GET", "/fail")

        with harness.Load(ng.port, paths=("/hello", "/hello", "/sleep?ms=5")) as load:
            self.assertTrue(load.wait_requests(30))
            fail_requests(4)
            self.assertIn("GET /hello", read(acc_log))
            self.assertIn("GET /fail: handler failed", read(err_log))
            for p in (err_log, acc_log):
                os.rename(p, p + ".1")  # logrotate's default: rename, then signal
            self.assertTrue(load.wait_requests(20))  # still written to the renamed files
            send(fc, signal.SIGUSR1)
            self.assertTrue(harness.wait_until(
                lambda: "USR1: log files reopened" in read(err_log), 3),
                "the supervisor did not reopen %s" % err_log)
            # Workers reopen when they next wake; let every one serve.
            self.assertTrue(load.wait_requests(100))
            fail_requests(10)
            time.sleep(0.3)
            sizes = [os.path.getsize(p + ".1") for p in (err_log, acc_log)]
            self.assertTrue(load.wait_requests(100))
            fail_requests(10)
            time.sleep(0.3)
            after = [os.path.getsize(p + ".1") for p in (err_log, acc_log)]
        self.assertNoFailures(load)
        self.assertEqual(sizes, after, "the rotated files still grow")
        new_access = read(acc_log)
        self.assertGreaterEqual(len(re.findall(r'"GET /hello" 200 ', new_access)), 100)
        # Every process holds the new files and none the rotated ones. (The
        # load may not reach every worker: which one accepts is the
        # kernel's choice. An idle worker reopens within a second.)
        def open_logs(pid):
            out = set()
            fd_dir = "/proc/%d/fd" % pid
            for fd in os.listdir(fd_dir):
                try:
                    out.add(os.readlink(os.path.join(fd_dir, fd)))
                except OSError:
                    pass
            return out & {err_log, acc_log, err_log + ".1", acc_log + ".1"}
        procs = [fc.pid] + fc.worker_pids()
        want = {err_log, acc_log}
        self.assertTrue(harness.wait_until(lambda: all(open_logs(p) == want for p in procs), 5),
                        {p: open_logs(p) for p in procs})
        self.assertGreaterEqual(read(err_log).count("GET /fail: handler failed"), 10)
        self.assertEqual(fc.stop(), 0)

    # ------------------------------------------------------------ TTIN/TTOU

    def test_ttin_and_ttou_change_the_worker_count_under_load(self):
        fc, ng = self.start("bench", workers=2)
        two = fc.wait_workers(2)
        with harness.Load(ng.port) as load:
            self.assertTrue(load.wait_requests(30))
            send(fc, signal.SIGTTIN)
            three = fc.wait_workers(3)
            self.assertEqual(len(three), 3, three)
            send(fc, signal.SIGTTIN)
            four = fc.wait_workers(4)
            self.assertEqual(len(four), 4, four)
            self.assertTrue(set(two) < set(four), "%s -> %s" % (two, four))
            self.assertTrue(load.wait_requests(50))
            send(fc, signal.SIGTTOU)
            back = fc.wait_workers(3, timeout=8)
            self.assertEqual(len(back), 3, back)
            self.assertTrue(set(back) < set(four), "%s -> %s" % (four, back))
            time.sleep(0.5)  # no respawn of the one let go
            self.assertEqual(fc.worker_pids(), back)
            self.assertTrue(load.wait_requests(50))
        report("TTIN/TTOU", load)
        self.assertNoFailures(load)
        log = fc.log()
        self.assertIn("TTIN: 3 workers", log)
        self.assertIn("TTIN: 4 workers", log)
        self.assertIn("TTOU: 3 workers", log)
        self.assertEqual(fc.stop(), 0)


if __name__ == "__main__":
    harness.main()
