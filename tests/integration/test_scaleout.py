# SPDX-License-Identifier: BSD-2-Clause
"""Scale-out as deployed: three fcgate hosts, one nginx with an upstream of
the three (fastcgi_next_upstream error timeout, keep-alive), one
PostgreSQL (a private postgresql-15 cluster, stopped by pid), the notes
app on each host.

Each host is an fcgate supervisor in a network namespace of its own
(`ip netns`), reached over a veth pair at a link-local address
(169.254.N.2, never routed off the machine); PostgreSQL is reached over
its unix socket, which namespaces share. Where namespaces cannot be made
(no CAP_SYS_ADMIN), the hosts are three supervisors on 127.0.0.2, .3 and
.4 instead; the test says on stderr which ran. nginx sees three servers
either way, each killed, restarted or reloaded alone. Every request a
test sends is counted: zero failed means zero."""

import concurrent.futures
import ctypes
import http.client
import os
import signal
import sys
import time

import harness
import pg

MODE = harness.MODE
LOOPBACK_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CLONE_NEWNET = 0x40000000
CLUSTER = None
TMP = None
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args):
    return harness.subprocess.run(["ip"] + list(args), capture_output=True, text=True,
                                  stdin=harness.subprocess.DEVNULL)


class Namespace:
    """A network namespace with a veth pair to this one: the host's end
    169.254.<k>.2/30, ours 169.254.<k>.1/30. Removed (with its veth) by
    delete()."""

    def __init__(self, n):
        tag = "%d-%d" % (os.getpid() % 10000, n)
        self.name = "fcgate-so-" + tag
        self.outer, self.peer, self.inner = "fso" + tag, "fsp" + tag, "eth0"
        # A third octet of this run's own: runs side by side (ctest -j,
        # one per mode) must not share a link-local subnet.
        octet = 1 + (os.getpid() % 84) * 3 + n
        self.address = "169.254.%d.2" % octet
        self.outer_address = "169.254.%d.1/30" % octet
        self.made = False

    def create(self):
        steps = [("netns", "add", self.name),
                 ("link", "add", self.outer, "type", "veth", "peer", "name", self.peer),
                 ("link", "set", self.peer, "netns", self.name, "name", self.inner),
                 ("addr", "add", self.outer_address, "dev", self.outer),
                 ("link", "set", self.outer, "up"),
                 ("-n", self.name, "addr", "add", self.address + "/30", "dev", self.inner),
                 ("-n", self.name, "link", "set", self.inner, "up"),
                 ("-n", self.name, "link", "set", "lo", "up")]
        for i, step in enumerate(steps):
            r = ip(*step)
            if i == 0:
                self.made = r.returncode == 0
            if r.returncode != 0:
                self.delete()
                return False
        return True

    def delete(self):
        if self.made:
            ip("netns", "delete", self.name)  # takes its veth end, and so the pair
            self.made = False
        if ip("link", "show", self.outer).returncode == 0:
            ip("link", "delete", self.outer)

    def enter(self):
        """In a child between fork and exec: joins the namespace."""
        fd = os.open("/var/run/netns/" + self.name, os.O_RDONLY)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)


class NetnsFcgate(harness.Fcgate):
    """An fcgate whose supervisor (and so its workers) runs in ns: the
    process is fcgate itself, so it is stopped by its pid as always."""

    def __init__(self, tmp, appname, ns, **overrides):
        self.ns = ns
        super().__init__(tmp, appname, **overrides)

    def launch(self, argv=None):
        args = [harness.FCGATE_BIN] + (argv if argv is not None else ["-c", self.conf_path])

        def child():
            harness._die_with_parent()
            self.ns.enter()
        with open(self.log_path, "ab") as log:
            self.proc = harness.subprocess.Popen(args, stdin=harness.subprocess.DEVNULL,
                                                 stdout=log, stderr=log, start_new_session=True,
                                                 preexec_fn=child)
        return self


def setUpModule():
    global CLUSTER, TMP
    CLUSTER, TMP = pg.shared_cluster("fcgate-scaleout-pg-")


def tearDownModule():
    pg.drop_shared(CLUSTER, TMP)


def report(what, load, extra=""):
    sys.stderr.write("SCALEOUT %s %s: %d requests, %d failed%s\n"
                     % (MODE, what, load.total(), load.failed(), extra))
    sys.stderr.flush()


class Load(harness.Load):
    """harness.Load with requests of the test's choosing: request(thread,
    n) -> (method, path, body), each answer judged by check(response) ->
    (ok, detail); an exception (reset, timeout) is a failure. Results:
    (start, end, ok, status, detail)."""

    def __init__(self, port, request, check, threads=6, max_seconds=60.0):
        super().__init__(port, paths=list(range(threads)), max_seconds=max_seconds)
        self.request = request
        self.check = check

    def _run(self, i):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self.halt.is_set() and time.monotonic() < deadline:
            method, path, body = self.request(i, n)
            n += 1
            t0 = time.monotonic()
            status = None
            try:
                r = harness.http_request(self.port, method, path, body=body, timeout=15)
                status = r.status
                ok, detail = self.check(r)
            except (OSError, http.client.HTTPException) as e:
                ok, detail = False, repr(e)
            with self.lock:
                self.results.append((t0, time.monotonic(), ok, status, detail))


def status_ok(r):
    return (r.status in (200, 201), "" if r.status in (200, 201) else repr(r))


class ScaleOutTest(harness.TestCase):
    def setUp(self):
        CLUSTER.psql("DROP TABLE IF EXISTS notes")
        self._logs.append(CLUSTER.log_path)
        self.hosts = []
        spaces = self.namespaces()
        for i in range(3):
            settings = dict(
                name="host%d" % i, workers=2, graceful_timeout=10, io_timeout=5, timeout=10,
                app={"database": "", "postgres": CLUSTER.conninfo, "postgres_pool": 4},
                log={"access": os.path.join(self.tmp, "host%d.access" % i)})
            if spaces:
                fc = NetnsFcgate(self.tmp, "notes", spaces[i],
                                 listen=["%s:9000" % spaces[i].address], **settings)
            else:
                addr = LOOPBACK_HOSTS[i]
                fc = harness.Fcgate(self.tmp, "notes",
                                    listen=["%s:%d" % (addr, harness.free_port(host=addr))],
                                    **settings)
            self._logs.append(fc.conf_path)
            self.track(fc, fc.log_path)
            fc.start()
            self.hosts.append(fc)
        self.ng = harness.Nginx(self.tmp, self.hosts[0].listen, keepalive=32)
        site = os.path.join(self.ng.dir, "fcgate-site.conf")
        with open(site) as f:
            text = f.read()
        # The active upstream block comes first; the commented one after.
        servers = "".join("    server %s max_fails=0;\n" % h.listen for h in self.hosts)
        text = text.replace("    server %s;\n" % self.hosts[0].listen, servers, 1)
        # non_idempotent: a POST nginx had sent on a kept-alive connection
        # that a stopping host closed idle (the race no server can avoid:
        # nginx reuses an idle connection as the host lets it go) is sent
        # to the next host. fcgate never closes a connection holding a
        # request it has read (a stop finishes them), so such a POST never
        # ran; the rolling-restart test checks that no POST ran twice.
        text = text.replace("fastcgi_pass fcgate;\n",
                            "fastcgi_pass fcgate;\n"
                            "        fastcgi_next_upstream error timeout non_idempotent;\n"
                            "        fastcgi_connect_timeout 2s;\n", 1)
        with open(site, "w") as f:
            f.write(text)
        self.track(self.ng, self.ng.log_path, self.ng.out_path)
        self.ng.start()

    def namespaces(self):
        """Three namespaces, or [] where they cannot be made."""
        spaces = []
        for n in range(3):
            ns = Namespace(n)
            if not ns.create():
                for made in spaces:
                    made.delete()
                sys.stderr.write("SCALEOUT %s hosts: loopback addresses (no network "
                                 "namespaces here)\n" % MODE)
                return []
            self.addCleanup(ns.delete)
            spaces.append(ns)
        sys.stderr.write("SCALEOUT %s hosts: network namespaces %s\n"
                         % (MODE, [ns.address for ns in spaces]))
        return spaces

    def req(self, method, path, body=None):
        return harness.http_request(self.ng.port, method, path, body)

    def workers(self):
        return {i: set(h.worker_pids()) for i, h in enumerate(self.hosts)}

    def served(self, i):
        path = os.path.join(self.tmp, "host%d.access" % i)
        with open(path) as f:
            return sum(1 for _ in f)

    def test_thousand_concurrent_posts_are_thousand_rows_readable_through_every_host(self):
        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            rs = list(ex.map(lambda k: self.req("POST", "/notes", {"text": "post %d" % k}),
                             range(1000)))
        bad = [r for r in rs if r.status != 201]
        self.assertEqual(bad, [], "%d POSTs failed" % len(bad))
        notes = {r.json()["id"]: r.json()["text"] for r in rs}
        self.assertEqual(len(notes), 1000)
        self.assertEqual(sorted(notes.values()), sorted("post %d" % k for k in range(1000)))
        self.assertEqual(CLUSTER.psql("SELECT count(*) FROM notes"), "1000")
        # Spread: nginx sent each host a share.
        shares = [self.served(i) for i in range(len(self.hosts))]
        self.assertTrue(all(s > 0 for s in shares), shares)
        # Every row through every host, straight to it (not through nginx).
        for h in self.hosts:
            resp = harness.fcgi_request(h.listen, "GET", "/notes?limit=1000")
            status, _, body = resp.http()
            self.assertEqual(status, 200, h.listen)
            listed = {n["id"]: n["text"] for n in harness.json.loads(body)}
            self.assertEqual(listed, notes, h.listen)
            for nid in list(notes)[::97]:
                one = harness.fcgi_request(h.listen, "GET", "/notes/%d" % nid).http()
                self.assertEqual(harness.json.loads(one[2])["text"], notes[nid])
        sys.stderr.write("SCALEOUT %s 1000 POSTs: per host %s\n" % (MODE, shares))

    def test_kill_9_one_host_under_get_load_fails_no_get(self):
        n = self.req("POST", "/notes", {"text": "read me"}).json()
        victim = self.hosts[1]
        with Load(self.ng.port, lambda i, k: ("GET", "/notes/%d" % n["id"], None),
                  status_ok) as load:
            self.assertTrue(load.wait_requests(100), load.summary())
            pids = [victim.pid] + victim.worker_pids()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            victim.proc.wait(10)
            self.assertAllGone(pids)
            self.assertTrue(load.wait_requests(300), load.summary())
        report("kill -9 one host, GET", load)
        self.assertEqual(load.failed(), 0, load.summary())

    def test_rolling_restart_and_hup_of_each_host_under_post_load_fail_nothing(self):
        with Load(self.ng.port, lambda i, k: ("POST", "/notes", {"text": "t%d-%d" % (i, k)}),
                  status_ok) as load:
            self.assertTrue(load.wait_requests(50), load.summary())
            for h in self.hosts:
                self.assertEqual(h.stop(signal.SIGTERM, timeout=20), 0, h.log())
                self.assertTrue(load.wait_requests(30), load.summary())
                h.start()
                self.assertTrue(load.wait_requests(30), load.summary())
            for h in self.hosts:
                old = set(h.worker_pids())
                os.kill(h.pid, signal.SIGHUP)
                self.assertIsNotNone(h.wait_log(r"generation 2 ready; retiring generation", 15))
                h.wait_workers(2, timeout=10, exclude=old)
                self.assertAllGone(old)
                self.assertTrue(load.wait_requests(30), load.summary())
        report("rolling restart + HUP, POST", load)
        self.assertEqual(load.failed(), 0, load.summary())
        # Every POST answered 201 is one row, and none ran twice.
        ok = sum(1 for r in load.results if r[2])
        self.assertEqual(CLUSTER.psql("SELECT count(*), count(DISTINCT text) FROM notes"),
                         "%d|%d" % (ok, ok))

    def test_postgres_restart_under_load_errors_only_while_down(self):
        n = self.req("POST", "/notes", {"text": "steady"}).json()
        before = self.workers()

        def check(r):
            if r.status == 200:
                return True, ""
            try:
                err = r.json().get("error")
            except ValueError:
                err = None
            return False, "%d %s" % (r.status, err if err else repr(r))

        with Load(self.ng.port, lambda i, k: ("GET", "/notes/%d" % n["id"], None), check) as load:
            self.assertTrue(load.wait_requests(100), load.summary())
            down = time.monotonic()
            CLUSTER.stop()
            time.sleep(1.0)
            CLUSTER.launch()
            CLUSTER.wait_ready()
            up = time.monotonic()
            self.assertTrue(load.wait_requests(300), load.summary())
            recovered = harness.wait_until(
                lambda: all(r[2] for r in load.results[-30:]), 10.0, 0.1)
            last_fail = max((r[1] for r in load.failures()), default=up)
            self.assertTrue(load.wait_requests(100), load.summary())
        failures = load.failures()
        report("PostgreSQL restart, GET", load,
               "; down %.1f s, last failure %.1f s after it was back"
               % (up - down, last_fail - up))
        self.assertTrue(recovered, "no recovery after the restart: " + load.summary())
        # Errors only while it was down (and the moment each pooled
        # connection finds out), each a 503 with a JSON body.
        self.assertTrue(all(d.startswith("503 database unavailable") for *_, d in failures),
                        load.summary())
        self.assertTrue(all(down <= f[1] and f[0] <= up + 5.0 for f in failures),
                        load.summary())
        self.assertTrue(all(f[1] - f[0] < 10.0 for f in failures), "a hang: " + load.summary())
        self.assertEqual(self.workers(), before, "workers restarted")


if __name__ == "__main__":
    harness.main()
