# SPDX-License-Identifier: BSD-2-Clause
"""PostgreSQL through the app API against a real server (Debian's
postgresql-15, a private cluster this file starts and stops by pid): a
query, a transaction committed and rolled back, the request timeout
cancelling a query on the server, a server restart survived by the same
workers, pgbouncer in transaction pooling mode, the pool's bound, and the
error when app.postgres is not set. Run once per mode (FCGATE_MODE)."""

import concurrent.futures
import os
import time

import harness
import pg

CLUSTER = None
TMP = None


def setUpModule():
    global CLUSTER, TMP
    CLUSTER, TMP = pg.shared_cluster("fcgate-pg-")
    CLUSTER.psql("CREATE TABLE items(id integer PRIMARY KEY, name text NOT NULL, "
                 "qty integer NOT NULL); "
                 "INSERT INTO items SELECT x, format('item-%s', lpad(x::text, 5, '0')), "
                 "(x * 7919) % 1000 FROM generate_series(1, 10000) x; "
                 "CREATE TABLE probe_rows(id serial PRIMARY KEY, v text NOT NULL)")


def tearDownModule():
    pg.drop_shared(CLUSTER, TMP)


def expected_item(n):
    return ('{"id":%d,"name":"item-%05d","qty":%d}' % (n, n, (n * 7919) % 1000)).encode()


class PostgresTest(harness.TestCase):
    def start(self, appname="probe", conninfo=None, **overrides):
        app_group = {"postgres": conninfo or CLUSTER.conninfo, "database": ""}
        app_group.update(overrides.pop("app", {}))
        self.fc = self.fcgate(appname, workers=1, app=app_group, **overrides)
        self.ng = self.nginx(self.fc)
        self._logs.append(CLUSTER.log_path)
        return self.fc

    def get(self, path, timeout=15.0):
        return harness.http_request(self.ng.port, "GET", path, timeout=timeout)

    def sessions(self):
        return int(CLUSTER.psql("SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = 'fcgate'"))

    def test_query_reads_rows_like_item(self):
        self.start("bench")
        for n in (1, 42, 9999, 10000):
            r = self.get("/pg-item?id=%d" % n)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, expected_item(n))
        self.assertEqual(self.get("/pg-item?id=10001").status, 404)
        self.assertEqual(self.get("/pg-item?id=x").status, 400)
        self.assertEqual(self.get("/pg-sleep?ms=10").body, b"ok\n")
        # application_name names fcgate for the DBA.
        self.assertGreaterEqual(self.sessions(), 1)

    def test_transaction_commits_and_rolls_back(self):
        self.start()
        tag = "tx-%s-%d" % (harness.MODE, os.getpid())
        self.assertEqual(self.get("/pg-tx?v=%s-ok" % tag).status, 200)
        self.assertEqual(self.get("/pg?v=%s-ok" % tag).body, b"1\n")
        r = self.get("/pg-tx?v=%s-bad&fail=1" % tag)
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.json()["error"], "database error")
        self.assertEqual(self.get("/pg?v=%s-bad" % tag).body, b"0\n")
        # An SQL error outside a transaction leaves the connection usable.
        r = self.get("/pg?sql=SELECT%201/0")
        self.assertEqual((r.status, r.json()["sqlstate"]), (500, "22012"), r)
        self.assertEqual(self.get("/pg?sql=SELECT%2042").body, b"42\n")
        self.assertEqual(CLUSTER.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "application_name = 'fcgate' AND state LIKE 'idle in%'"),
                         "0")

    def test_timeout_cancels_the_query_and_the_worker_serves_on(self):
        fc = self.start("probe", timeout=2)
        before = fc.worker_pids()
        tag = "to-%s-%d" % (harness.MODE, os.getpid())
        t0 = time.monotonic()
        r = self.get("/pg-tx?v=%s&ms=20000" % tag, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 504, r)
        self.assertLess(took, 5.0)
        # The next request on that worker, on the same connection, works,
        # and the cancelled transaction left nothing behind.
        self.assertEqual(self.get("/pg?v=%s" % tag).body, b"0\n")
        self.assertEqual(self.get("/pg?sql=SELECT%207").body, b"7\n")
        self.assertEqual(fc.worker_pids(), before)
        # Cancelled on the server, not left running there.
        self.assertTrue(harness.wait_until(lambda: CLUSTER.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
            "AND state = 'active' AND pid <> pg_backend_pid()") == "0", 5.0))
        self.assertIn("cancelled", fc.log())

    def test_server_restart_is_survived_by_the_same_workers(self):
        fc = self.start("probe", io_timeout=5)
        before = fc.worker_pids()
        self.assertEqual(self.get("/pg?sql=SELECT%201").status, 200)
        CLUSTER.stop()
        try:
            for _ in range(3):
                t0 = time.monotonic()
                r = self.get("/pg?sql=SELECT%201")
                self.assertEqual(r.status, 503, r)
                self.assertEqual(r.json()["error"], "database unavailable")
                self.assertLess(time.monotonic() - t0, 5.0)
        finally:
            CLUSTER.launch()
            CLUSTER.wait_ready()
        ok = harness.wait_until(lambda: self.get("/pg?sql=SELECT%202").status == 200, 10.0, 0.2)
        self.assertTrue(ok, "no recovery after the restart")
        for _ in range(5):
            self.assertEqual(self.get("/pg?sql=SELECT%203").body, b"3\n")
        self.assertEqual(fc.worker_pids(), before)

    def test_pgbouncer_transaction_pooling_without_prepared_statements(self):
        bouncer = pg.start_pgbouncer(self, CLUSTER, pool_size=2)
        self.start("probe", conninfo=bouncer.conninfo, app={"postgres_prepare": False})
        tag = "pgb-%s-%d" % (harness.MODE, os.getpid())
        for i in range(20):
            self.assertEqual(self.get("/pg-tx?v=%s" % tag).status, 200)
            self.assertEqual(self.get("/pg?v=%s" % tag).body, b"%d\n" % (i + 1))
        self.assertEqual(self.get("/pg-tx?v=%s&fail=1" % tag).status, 500)
        self.assertEqual(self.get("/pg?v=%s" % tag).body, b"20\n")

    def test_concurrent_requests_share_a_bounded_pool(self):
        self.start("bench", app={"postgres_pool": 2}, worker_connections=64)
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            rs = list(ex.map(lambda i: self.get("/pg-sleep?ms=200"), range(16)))
        self.assertEqual([r.status for r in rs], [200] * 16, rs)
        # Per worker: the pool (async) or a connection per thread.
        limit = {"async": 2, "threads": harness.THREADS, "sync": 1}[harness.MODE]
        self.assertLessEqual(self.sessions(), limit)

    def test_wait_for_a_free_connection_is_bounded(self):
        # One connection per worker, held 1.5 s by each request: the
        # second request in line waits postgres_pool_timeout (1 s) and
        # gets 503; the worker serves on. Only async requests share a
        # pool (sync and threads: a connection per thread), so only async
        # requests can queue for one.
        if harness.MODE != "async":
            self.skipTest("a pool is shared by requests only in async mode")
        self.start("bench", app={"postgres_pool": 1, "postgres_pool_timeout": 1})
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            t0 = time.monotonic()
            rs = list(ex.map(lambda i: self.get("/pg-sleep?ms=1500"), range(3)))
            took = time.monotonic() - t0
        self.assertEqual(sorted(r.status for r in rs), [200, 503, 503], rs)
        self.assertLess(took, 5.0)
        self.fc.wait_log(r"no free connection within postgres_pool_timeout")
        self.assertEqual(self.get("/pg-item?id=3").status, 200)

    def test_queued_requests_get_the_connection_in_arrival_order(self):
        # One connection: the first request holds it 0.6 s; the next
        # three queue for it, 0.1 s apart. Each connection given back goes
        # to the oldest waiter (not to whoever asks next), so they finish
        # in the order they came, and the slow log says what they wait on.
        if harness.MODE != "async":
            self.skipTest("a pool is shared by requests only in async mode")
        slow = os.path.join(self.tmp, "slow.log")
        self.start("bench", app={"postgres_pool": 1, "postgres_pool_timeout": 10},
                   slowlog={"file": slow, "timeout": 0.2})
        done = []

        def one(i, ms):
            time.sleep(0.1 * i)
            r = self.get("/pg-sleep?ms=%d" % ms)
            done.append(i)
            return r.status

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            statuses = list(ex.map(one, range(4), (600, 150, 150, 150)))
        self.assertEqual(statuses, [200] * 4)
        self.assertEqual(done, [0, 1, 2, 3])
        self.assertTrue(harness.wait_until(
            lambda: os.path.exists(slow) and
            "waiting on: a free PostgreSQL connection (postgres_pool)" in open(slow).read(),
            5.0))

    def test_no_postgres_configured_is_a_clear_error(self):
        fc = self.fcgate("probe", workers=1)
        self.ng = self.nginx(fc)
        r = self.get("/pg?sql=SELECT%201")
        self.assertEqual(r.status, 500, r)
        self.assertIn("invalid argument", r.json()["error"])
        fc.wait_log(r"app asked for PostgreSQL, but app.postgres is not set")


if __name__ == "__main__":
    harness.main()
