# SPDX-License-Identifier: BSD-2-Clause
"""The notes example app through nginx: its whole JSON API, limits included,
on sqlite (app.database) and on PostgreSQL (app.postgres: a private
postgresql-15 cluster this file starts once and stops by pid), with the
same HTTP behaviour."""

import json
import re
import time
import urllib.parse

import harness
import pg

MIB = 1 << 20


class NotesTest(harness.TestCase):
    def setUp(self):
        self.fc = self.fcgate("notes", limits={"max_body_bytes": 2 * MIB})
        self.ng = self.nginx(self.fc)

    def req(self, method, path, body=None, headers=None):
        return harness.http_request(self.ng.port, method, path, body, headers)

    def create(self, text):
        r = self.req("POST", "/notes", {"text": text})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def assertError(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r.headers)
        body = r.json()
        self.assertIsInstance(body, dict, r)
        self.assertIsInstance(body.get("error"), str, r)
        self.assertTrue(body["error"], r)

    def test_post_json_creates_note_with_location(self):
        r = self.req("POST", "/notes", {"text": "first note"})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r.headers)
        note = r.json()
        self.assertEqual(note["text"], "first note")
        self.assertIsInstance(note["id"], int)
        self.assertEqual(set(note), {"id", "text"})
        self.assertEqual(r.header("Location"), "/notes/%d" % note["id"])
        got = self.req("GET", r.header("Location"))
        self.assertEqual(got.status, 200, got)
        self.assertEqual(got.json(), note)

    def test_post_form_creates_note(self):
        body = urllib.parse.urlencode({"text": "from a form & more = 100%"})
        r = self.req("POST", "/notes", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 201, r)
        note = r.json()
        self.assertEqual(note["text"], "from a form & more = 100%")
        self.assertEqual(r.header("Location"), "/notes/%d" % note["id"])
        self.assertEqual(self.req("GET", "/notes/%d" % note["id"]).json(), note)

    def test_get_one_note(self):
        a = self.create("a")
        b = self.create("b")
        self.assertNotEqual(a["id"], b["id"])
        for n in (a, b):
            r = self.req("GET", "/notes/%d" % n["id"])
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type", "").startswith("application/json"))
            self.assertEqual(r.json(), n)

    def test_list_is_newest_first_with_limit_and_offset(self):
        r = self.req("GET", "/notes")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), [])
        notes = [self.create("note %d" % i) for i in range(5)]
        newest_first = list(reversed(notes))
        self.assertEqual(self.req("GET", "/notes").json(), newest_first)
        self.assertEqual(self.req("GET", "/notes?limit=2").json(), newest_first[:2])
        self.assertEqual(self.req("GET", "/notes?limit=2&offset=1").json(), newest_first[1:3])
        self.assertEqual(self.req("GET", "/notes?offset=3").json(), newest_first[3:])
        self.assertEqual(self.req("GET", "/notes?limit=10&offset=5").json(), [])

    def test_put_replaces_text(self):
        n = self.create("old")
        r = self.req("PUT", "/notes/%d" % n["id"], {"text": "new"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": n["id"], "text": "new"})
        self.assertEqual(self.req("GET", "/notes/%d" % n["id"]).json()["text"], "new")
        r = self.req("PUT", "/notes/%d" % n["id"], "text=newer",
                     {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": n["id"], "text": "newer"})

    def test_put_unknown_id_is_404(self):
        self.assertError(self.req("PUT", "/notes/424242", {"text": "x"}), 404)

    def test_delete_then_gone(self):
        n = self.create("short-lived")
        r = self.req("DELETE", "/notes/%d" % n["id"])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertError(self.req("GET", "/notes/%d" % n["id"]), 404)
        self.assertError(self.req("DELETE", "/notes/%d" % n["id"]), 404)
        self.assertEqual(self.req("GET", "/notes").json(), [])

    def test_bad_json_is_400(self):
        for body in ('{"text": ', '{"text": "unterminated}', "[1, 2", "not json at all",
                     '{"text": "x"} trailing', '{"text": "\\q"}'):
            with self.subTest(body=body):
                self.assertError(self.req("POST", "/notes", body,
                                          {"Content-Type": "application/json"}), 400)
        self.assertEqual(self.req("GET", "/notes").json(), [])

    def test_missing_text_is_400(self):
        for body in ({}, {"txt": "x"}, {"text": None}, {"text": 5}, []):
            with self.subTest(body=body):
                self.assertError(self.req("POST", "/notes", body), 400)
        self.assertError(self.req("POST", "/notes", "other=1",
                                  {"Content-Type": "application/x-www-form-urlencoded"}), 400)
        n = self.create("keep")
        self.assertError(self.req("PUT", "/notes/%d" % n["id"], {"nope": 1}), 400)
        self.assertEqual(self.req("GET", "/notes/%d" % n["id"]).json(), n)

    def test_unknown_path_and_id_are_404(self):
        for path in ("/", "/nope", "/notes/424242", "/notes/1/extra", "/notesx"):
            with self.subTest(path=path):
                self.assertError(self.req("GET", path), 404)

    def test_wrong_method_is_405_with_allow(self):
        n = self.create("x")
        cases = [("DELETE", "/notes", {"GET", "POST"}),
                 ("PUT", "/notes", {"GET", "POST"}),
                 ("POST", "/notes/%d" % n["id"], {"GET", "PUT", "DELETE"}),
                 ("PATCH", "/notes/%d" % n["id"], {"GET", "PUT", "DELETE"})]
        for method, path, allowed in cases:
            with self.subTest(method=method, path=path):
                r = self.req(method, path, {"text": "y"})
                self.assertError(r, 405)
                allow = {m.strip().upper() for m in r.header("Allow", "").split(",") if m.strip()}
                self.assertTrue(allowed <= allow, "Allow: %r" % r.header("Allow"))
                self.assertNotIn(method, allow)
        self.assertEqual(self.req("GET", "/notes/%d" % n["id"]).json(), n)

    def test_text_round_trips_exactly(self):
        text = "h\u00e9llo \"q\" \\ \n \u0000 \U0001F600 \t/\u2028 \x7f end"
        for ensure_ascii in (True, False):
            with self.subTest(ensure_ascii=ensure_ascii):
                body = json.dumps({"text": text}, ensure_ascii=ensure_ascii).encode("utf-8")
                r = self.req("POST", "/notes", body, {"Content-Type": "application/json"})
                self.assertEqual(r.status, 201, r)
                self.assertEqual(r.json()["text"], text)
                got = self.req("GET", r.header("Location"))
                self.assertEqual(got.json()["text"], text)
                listed = self.req("GET", "/notes?limit=1").json()
                self.assertEqual(listed[0]["text"], text)

    def test_one_mib_body_round_trips(self):
        # About 1 MiB of JSON (under limits.max_body_bytes = 2 MiB), with
        # multi-byte characters and escapes spread through it.
        unit = "abcdefghij\u00e9\"\\\n\U0001F600 "
        text = unit * (MIB // (len(json.dumps(unit)) - 2) + 1)
        body = json.dumps({"text": text}).encode()
        self.assertGreater(len(body), 1000 * 1000)
        self.assertLess(len(body), 2 * MIB)
        r = self.req("POST", "/notes", body, {"Content-Type": "application/json"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["text"], text)
        got = self.req("GET", r.header("Location"))
        self.assertEqual(got.status, 200, got)
        self.assertEqual(got.json()["text"], text)

    def test_body_over_limit_is_413(self):
        body = json.dumps({"text": "x" * (3 * MIB)})
        r = self.req("POST", "/notes", body, {"Content-Type": "application/json"})
        self.assertError(r, 413)
        self.assertEqual(self.req("GET", "/notes").json(), [])
        # The worker that refused it still serves.
        for _ in range(2 * self.fc.workers):
            self.assertEqual(self.req("GET", "/notes").status, 200)

    def test_ids_in_location_are_distinct_under_concurrency(self):
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda i: self.req("POST", "/notes", {"text": "c%d" % i}),
                             range(40)))
        self.assertTrue(all(r.status == 201 for r in rs), [r for r in rs if r.status != 201])
        ids = [r.json()["id"] for r in rs]
        self.assertEqual(len(set(ids)), 40)
        for r in rs:
            self.assertTrue(re.fullmatch(r"/notes/\d+", r.header("Location")))
        self.assertEqual(len(self.req("GET", "/notes?limit=100").json()), 40)


class NotesPostgresTest(NotesTest):
    """Every test above again, the notes kept in PostgreSQL; and what only
    a database server can do: go away and come back."""

    cluster = None
    tmp_root = None

    @classmethod
    def setUpClass(cls):
        cls.cluster, cls.tmp_root = pg.shared_cluster("fcgate-notes-pg-")
        cls.addClassCleanup(pg.drop_shared, cls.cluster, cls.tmp_root)

    def setUp(self):
        self.cluster.psql("DROP TABLE IF EXISTS notes")
        self._logs.append(self.cluster.log_path)
        self.fc = self.fcgate("notes", limits={"max_body_bytes": 2 * MIB}, io_timeout=5,
                              app={"database": "", "postgres": self.cluster.conninfo})
        self.ng = self.nginx(self.fc)

    def test_notes_live_in_postgres(self):
        n = self.create("in postgres \u0000 too")
        self.assertEqual(self.cluster.psql("SELECT count(*) FROM notes WHERE id = %d" % n["id"]),
                         "1")

    def test_postgres_restart_gives_json_503_then_recovers(self):
        n = self.create("survives")
        workers = self.fc.worker_pids()
        self.cluster.stop()
        try:
            t0 = time.monotonic()
            r = self.req("GET", "/notes/%d" % n["id"])
            self.assertError(r, 503)
            self.assertEqual(r.json()["error"], "database unavailable")
            self.assertError(self.req("POST", "/notes", {"text": "lost"}), 503)
            self.assertLess(time.monotonic() - t0, 5.0)
        finally:
            self.cluster.launch()
            self.cluster.wait_ready()
        self.assertTrue(harness.wait_until(
            lambda: self.req("GET", "/notes/%d" % n["id"]).status == 200, 10.0, 0.2))
        self.assertEqual(self.req("GET", "/notes").json(), [n])
        self.assertEqual(self.fc.worker_pids(), workers)


if __name__ == "__main__":
    harness.main()
