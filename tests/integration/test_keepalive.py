# SPDX-License-Identifier: BSD-2-Clause
"""nginx upstream keep-alive (fastcgi_keep_conn on, keepalive N = workers,
the shipped variant of nginx/fcgate.conf): many requests travel over a few
reused FastCGI connections and every answer is right."""

import concurrent.futures as cf
import http.client

import harness

WORKERS = 2


class KeepAliveTest(harness.TestCase):
    def setUp(self):
        self.fc = self.fcgate("notes", workers=WORKERS)
        self.ng = self.nginx(self.fc, keepalive=WORKERS)
        self.sock = self.fc.sock_path

    def settled_connections(self):
        """fcgate's open connections once nginx has closed the surplus ones
        (at most WORKERS idle ones stay cached)."""
        harness.wait_until(lambda: len(harness.unix_connections(self.sock)) <= WORKERS, 3.0)
        return harness.unix_connections(self.sock)

    def slots(self):
        return WORKERS * (harness.THREADS if harness.MODE == "threads" else 1)

    def roundtrip(self, i, conn=None):
        """POST a note (JSON or form), GET it back, check both."""
        port = self.ng.port
        text = "note %d \u00e9 %s" % (i, "x" * (i % 7) * 100)
        if i % 2:
            r = harness.http_request(port, "POST", "/notes", {"text": text}, conn=conn)
        else:
            import urllib.parse
            r = harness.http_request(port, "POST", "/notes",
                                     urllib.parse.urlencode({"text": text}),
                                     {"Content-Type": "application/x-www-form-urlencoded"},
                                     conn=conn)
        self.assertEqual(r.status, 201, r)
        note = r.json()
        self.assertEqual(note["text"], text)
        g = harness.http_request(port, "GET", r.header("Location"), conn=conn)
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json(), note)
        return note

    def test_sequential_requests_reuse_one_connection(self):
        self.assertEqual(harness.http_request(self.ng.port, "GET", "/notes").status, 200)
        before = harness.unix_connections(self.sock)
        self.assertTrue(1 <= len(before) <= WORKERS, before)
        conn = http.client.HTTPConnection("127.0.0.1", self.ng.port, timeout=15)
        try:
            for i in range(100):  # 200 requests
                self.roundtrip(i, conn)
        finally:
            conn.close()
        after = self.settled_connections()
        self.assertLessEqual(len(after), WORKERS, after)
        self.assertTrue(before & after, "no FastCGI connection survived the sequence: "
                        "before %s, after %s" % (before, after))

    def test_unread_bodies_do_not_break_the_next_request(self):
        # notes does not read the body of a request it refuses (unknown
        # path, wrong method): fcgate must drain it before the next request
        # on the kept connection.
        port = self.ng.port
        for i in range(20):
            body = ("%d" % i) * (i * 5000 + 1)
            r = harness.http_request(port, "POST", "/nope", body,
                                     {"Content-Type": "text/plain"})
            self.assertEqual(r.status, 404, r)
            r = harness.http_request(port, "DELETE", "/notes", body)
            self.assertEqual(r.status, 405, r)
            self.roundtrip(i)
        self.assertLessEqual(len(self.settled_connections()), WORKERS)

    def test_concurrent_clients_within_the_pool(self):
        clients = self.slots()
        per_client = 120 // clients

        def client(c):
            conn = http.client.HTTPConnection("127.0.0.1", self.ng.port, timeout=15)
            try:
                return [self.roundtrip(c * 1000 + i, conn)["id"] for i in range(per_client)]
            finally:
                conn.close()

        with cf.ThreadPoolExecutor(clients) as ex:
            ids = [i for part in ex.map(client, range(clients)) for i in part]
        self.assertEqual(len(set(ids)), clients * per_client)
        self.assertLessEqual(len(self.settled_connections()), WORKERS)
        listed = harness.http_request(self.ng.port, "GET", "/notes?limit=1000").json()
        self.assertEqual(len(listed), len(ids))

    def test_more_clients_than_slots_do_not_stall(self):
        # Four times as many HTTP clients as serving slots. nginx then opens
        # extra connections that wait in fcgate's listen queue while the
        # slots sit on idle kept connections; they must still be served
        # promptly (well within nginx's 60 s timeouts).
        clients = 4 * self.slots()

        def client(c):
            out = []
            for i in range(10):
                r = harness.http_request(self.ng.port, "GET", "/notes?limit=1", timeout=10)
                out.append(r.status)
            return out

        with cf.ThreadPoolExecutor(clients) as ex:
            statuses = [s for part in ex.map(client, range(clients)) for s in part]
        self.assertEqual(statuses, [200] * len(statuses))


if __name__ == "__main__":
    harness.main()
