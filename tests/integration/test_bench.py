# SPDX-License-Identifier: BSD-2-Clause
"""The bench example app through nginx: the four benchmark workloads answer
exactly what the peers' implementations answer (../shared/peers); and the
direct load client, tests/bench/fcgi_load, against it."""

import os
import subprocess
import time

import harness

CPU_ITERS = 730000
# Built next to fcgate when the CMake option FCGATE_BENCH is on.
FCGI_LOAD = os.environ.get("FCGATE_FCGI_LOAD") or os.path.join(
    os.path.dirname(harness.FCGATE_BIN), "tests", "bench", "fcgi_load")


def expected_item(n):
    # As peers/run.sh create_db builds the table and make_expectations
    # renders a row: printf('item-%05d', x), (x * 7919) % 1000, json_object.
    return ('{"id":%d,"name":"item-%05d","qty":%d}' % (n, n, (n * 7919) % 1000)).encode()


def expected_cpu():
    h = 2166136261
    for i in range(CPU_ITERS):
        h = ((h ^ (i & 255)) * 16777619) & 0xffffffff
    return ("%08x\n" % h).encode()


class BenchTest(harness.TestCase):
    def setUp(self):
        self.fc = self.fcgate("bench")
        self.ng = self.nginx(self.fc)

    def get(self, path):
        return harness.http_request(self.ng.port, "GET", path)

    def test_hello_is_exactly_hello_newline(self):
        for _ in range(3):
            r = self.get("/hello")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"hello\n")
            self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r.headers)

    def test_item_rows_match_peers_table(self):
        for n in (1, 2, 7, 99, 1000, 4242, 9999, 10000):
            with self.subTest(id=n):
                r = self.get("/item?id=%d" % n)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.header("Content-Type", "").startswith("application/json"),
                                r.headers)
                self.assertEqual(r.body, expected_item(n))

    def test_item_bad_id_is_400(self):
        for q in ("id=abc", "id=", "id=12x", "", "other=5"):
            with self.subTest(query=q):
                self.assertEqual(self.get("/item?" + q).status, 400)

    def test_item_missing_row_is_404(self):
        for n in (0, 10001, 99999999):
            with self.subTest(id=n):
                self.assertEqual(self.get("/item?id=%d" % n).status, 404)

    def test_sleep_waits_20ms_by_default(self):
        t = time.monotonic()
        r = self.get("/sleep")
        took = time.monotonic() - t
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok\n")
        self.assertGreaterEqual(took, 0.019)
        self.assertLess(took, 2.0)

    def test_sleep_ms_overrides_the_wait(self):
        t = time.monotonic()
        r = self.get("/sleep?ms=50")
        took = time.monotonic() - t
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok\n")
        self.assertGreaterEqual(took, 0.050)
        self.assertLess(took, 2.0)

    def test_cpu_hash_matches_python(self):
        want = expected_cpu()
        for _ in range(2):
            r = self.get("/cpu")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r.headers)
            self.assertEqual(r.body, want)


    def test_fcgi_load_runs_a_second_without_errors(self):
        if not os.access(FCGI_LOAD, os.X_OK):
            self.skipTest("no fcgi_load at %s (FCGATE_BENCH off?)" % FCGI_LOAD)
        for keep in ([], ["-k"]):
            with self.subTest(keep=bool(keep)):
                argv = [FCGI_LOAD, "-t", "1", "-c", "8", "-w", "0", "-d", "1", "--tsv",
                        "-P", str(self.fc.pid)] + keep + [self.fc.listen, "/hello"]
                run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                     text=True, timeout=15)
                line = [x for x in run.stdout.splitlines() if x.startswith("FCGI_LOAD ")]
                self.assertEqual(len(line), 1, run.stdout + run.stderr)
                kv = dict(f.split("=", 1) for f in line[0].split()[1:])
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                self.assertGreater(int(kv["requests"]), 0, kv)
                for k in ("err_connect", "err_incomplete", "err_closed", "err_proto",
                          "err_timeout", "stalled", "non200"):
                    self.assertEqual(kv[k], "0", kv)
                self.assertGreater(float(kv["server_cpu_s"]), 0.0, kv)


if __name__ == "__main__":
    harness.main()
