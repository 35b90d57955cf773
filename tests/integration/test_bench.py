"""The bench example app through nginx: the four benchmark workloads answer
exactly what the peers' implementations answer (../shared/peers)."""

import time

import harness

CPU_ITERS = 730000


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


if __name__ == "__main__":
    harness.main()
