# SPDX-License-Identifier: BSD-2-Clause
"""FastCGI straight to fcgate's unix socket (no nginx): the protocol details
clients rely on, and malformed input that must cost one connection only."""

import socket
import struct

import harness
from harness import (FCGI_ABORT_REQUEST, FCGI_BEGIN_REQUEST, FCGI_CANT_MPX_CONN,
                     FCGI_END_REQUEST, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_PARAMS,
                     FCGI_REQUEST_COMPLETE, FCGI_STDIN, FCGI_UNKNOWN_ROLE,
                     FCGI_UNKNOWN_TYPE, FcgiConn, fcgi_begin, fcgi_nv, fcgi_record,
                     fcgi_request_bytes, fcgi_stream)

MAX_PARAMS = 4096
WORKERS = 2


def hello_pairs(method="GET", uri="/hello", body=b""):
    return b"".join(fcgi_nv(k, v) for k, v in harness.cgi_params(method, uri, body).items())


class RawFastCgiTest(harness.TestCase):
    def setUp(self):
        self.fc = self.fcgate("bench", workers=WORKERS,
                              limits={"max_params_bytes": MAX_PARAMS})
        self.workers_before = self.fc.wait_workers(WORKERS)
        self.assertEqual(len(self.workers_before), WORKERS)

    def conn(self):
        c = FcgiConn(self.fc.listen)
        self.addCleanup(c.close)
        return c

    def assertHello(self, resp, rid=1):
        self.assertIsNotNone(resp.end, "no END_REQUEST for id %d" % rid)
        self.assertEqual(resp.end[1], FCGI_REQUEST_COMPLETE)
        self.assertTrue(resp.stdout_closed, "STDOUT stream not ended before END_REQUEST")
        status, headers, body = resp.http()
        self.assertEqual(status, 200, resp.stdout[:200])
        self.assertEqual(body, b"hello\n")
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)

    def assertStillServes(self):
        """A fresh connection gets a correct answer; no worker died."""
        for _ in range(WORKERS + 1):
            self.assertHello(harness.fcgi_request(self.fc.listen, "GET", "/hello"))
        self.assertTrue(self.fc.running())
        self.assertEqual(self.fc.worker_pids(), self.workers_before)

    def assertDropped(self, data, reason_words, half_close=False):
        """Sends data; the server must close this connection, log
        "protocol error" with one of reason_words, and go on serving."""
        c = self.conn()
        c.send(data)
        if half_close:
            c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed_by_peer(5.0), "fcgate kept the connection open")
        pattern = r"protocol error.*(%s)" % "|".join(reason_words)
        self.assertIsNotNone(self.fc.wait_log(pattern, 3.0),
                             "no log line matching %r" % pattern)
        self.assertStillServes()

    # ------------------------------------------------------------ good input

    def test_good_request_gets_response_and_close(self):
        c = self.conn()
        c.send(fcgi_request_bytes("GET", "/hello"))
        resp = c.read_response(1)
        self.assertHello(resp)
        self.assertEqual(resp.end[0], 0)
        self.assertEqual(resp.others, [])
        self.assertTrue(c.closed_by_peer(2.0), "no FCGI_KEEP_CONN, but the connection stayed open")

    def test_get_values_answers_real_limits(self):
        c = self.conn()
        names = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]
        c.send(fcgi_record(FCGI_GET_VALUES, 0, b"".join(fcgi_nv(n, b"") for n in names)))
        rec = c.read_record(2.0)  # at once, without waiting for more input
        self.assertIsNotNone(rec)
        self.assertEqual((rec.type, rec.id), (FCGI_GET_VALUES_RESULT, 0))
        got = dict(harness.parse_nv(rec.content))
        self.assertEqual(set(got), set(names))
        self.assertEqual(got[b"FCGI_MPXS_CONNS"], b"0")
        for n in (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS"):
            self.assertRegex(got[n].decode(), r"^[1-9][0-9]*$")
        # The connection still carries a request afterwards.
        c.send(fcgi_request_bytes("GET", "/hello"))
        self.assertHello(c.read_response(1))

    def test_get_values_with_1000_names_is_harmless(self):
        # libfcgi overflows a 64-byte buffer with 4+ names and aborts.
        known = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]
        names = [known[i % 3] if i % 2 else b"X_UNKNOWN_VARIABLE_%d" % i for i in range(1000)]
        content = b"".join(fcgi_nv(n, b"") for n in names)
        self.assertLess(len(content), 65536)
        c = self.conn()
        c.send(fcgi_record(FCGI_GET_VALUES, 0, content))
        rec = c.read_record(3.0)
        if rec is not None:  # answering is optional, dying is not
            self.assertEqual((rec.type, rec.id), (FCGI_GET_VALUES_RESULT, 0))
            for name, value in harness.parse_nv(rec.content):
                self.assertIn(name, known)
        self.assertStillServes()

    def test_unknown_management_type_gets_unknown_type(self):
        c = self.conn()
        c.send(fcgi_record(42, 0, b"whatever"))
        rec = c.read_record(2.0)
        self.assertIsNotNone(rec, "connection closed instead of FCGI_UNKNOWN_TYPE")
        self.assertEqual((rec.type, rec.id), (FCGI_UNKNOWN_TYPE, 0))
        self.assertEqual(rec.content, bytes([42]) + b"\0" * 7)
        c.send(fcgi_request_bytes("GET", "/hello"))
        self.assertHello(c.read_response(1))

    def test_second_begin_on_busy_connection_gets_cant_mpx_conn(self):
        c = self.conn()
        c.send(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 1, hello_pairs()))
        c.send(fcgi_begin(2))
        c.send(fcgi_record(FCGI_PARAMS, 1) + fcgi_stream(FCGI_STDIN, 1, b""))
        first = c.read_response(1)
        ends = {r.id: r.end_request() for r in first.others if r.type == FCGI_END_REQUEST}
        if 2 not in ends:
            rest = c.read_response(2)
            ends[2] = rest.end
        self.assertHello(first, 1)
        self.assertIsNotNone(ends[2], "no END_REQUEST for the second id")
        self.assertEqual(ends[2][1], FCGI_CANT_MPX_CONN)
        self.assertStillServes()

    def test_unknown_role_gets_unknown_role(self):
        c = self.conn()
        c.send(fcgi_begin(1, role=99, flags=harness.FCGI_KEEP_CONN))
        resp = c.read_response(1, 3.0)
        self.assertIsNotNone(resp.end, "no END_REQUEST for a request with role 99")
        self.assertEqual(resp.end[1], FCGI_UNKNOWN_ROLE)
        self.assertEqual(resp.stdout, b"")
        # FCGI_KEEP_CONN was set: the connection takes the next request.
        c.send(fcgi_request_bytes("GET", "/hello", rid=2))
        self.assertHello(c.read_response(2), 2)

    def test_keep_conn_unread_body_then_second_request(self):
        c = self.conn()
        body = bytes(range(256)) * 800  # 200 KiB that /hello never reads
        c.send(fcgi_request_bytes("POST", "/hello", body, rid=1, keep_conn=True))
        self.assertHello(c.read_response(1), 1)
        c.send(fcgi_request_bytes("GET", "/hello", rid=2, keep_conn=True))
        self.assertHello(c.read_response(2), 2)
        c.send(fcgi_request_bytes("GET", "/hello", rid=1))
        self.assertHello(c.read_response(1), 1)
        self.assertTrue(c.closed_by_peer(2.0))

    def test_keep_conn_body_sent_after_response_started(self):
        # The response can come before the whole body went out only if the
        # app ignores it; the rest of the body must still be skipped.
        c = self.conn()
        pairs = hello_pairs("POST", "/hello", b"x" * 100000)
        c.send(fcgi_begin(1, flags=harness.FCGI_KEEP_CONN) + fcgi_stream(FCGI_PARAMS, 1, pairs))
        for i in range(0, 100000, 10000):
            c.send(fcgi_record(FCGI_STDIN, 1, b"x" * 10000))
        c.send(fcgi_record(FCGI_STDIN, 1))
        self.assertHello(c.read_response(1), 1)
        c.send(fcgi_request_bytes("GET", "/hello", rid=1))
        self.assertHello(c.read_response(1), 1)

    def test_abort_mid_params_ends_request(self):
        c = self.conn()
        c.send(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 1, hello_pairs()))
        c.send(fcgi_record(FCGI_ABORT_REQUEST, 1))
        resp = c.read_response(1, 3.0)
        self.assertIsNotNone(resp.end, "no END_REQUEST after FCGI_ABORT_REQUEST")
        self.assertEqual(resp.end[1], FCGI_REQUEST_COMPLETE)
        self.assertNotIn(b"hello", resp.stdout)
        self.assertStillServes()

    def test_padded_records_are_accepted(self):
        for pad in (0, 1, 7, 255):
            with self.subTest(padding=pad):
                body = b"a=1&b=2"
                pairs = hello_pairs("POST", "/hello", body)
                data = (fcgi_record(FCGI_BEGIN_REQUEST, 1, struct.pack(">HB5x", 1, 0), pad)
                        + fcgi_record(FCGI_PARAMS, 1, pairs[:50], pad)
                        + fcgi_record(FCGI_PARAMS, 1, pairs[50:], pad)
                        + fcgi_record(FCGI_PARAMS, 1, b"", pad)
                        + fcgi_record(FCGI_STDIN, 1, body, pad)
                        + fcgi_record(FCGI_STDIN, 1, b"", pad))
                c = self.conn()
                c.send(data)
                self.assertHello(c.read_response(1))

    def test_params_split_across_records_byte_by_byte(self):
        pairs = hello_pairs()
        c = self.conn()
        c.send(fcgi_begin(1) + b"".join(fcgi_record(FCGI_PARAMS, 1, pairs[i:i + 1])
                                        for i in range(len(pairs)))
               + fcgi_record(FCGI_PARAMS, 1) + fcgi_record(FCGI_STDIN, 1))
        self.assertHello(c.read_response(1))

    def test_request_sent_one_byte_at_a_time(self):
        c = self.conn()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for b in fcgi_request_bytes("GET", "/hello"):
            c.send(bytes([b]))
        self.assertHello(c.read_response(1))

    # ------------------------------------------------------- malformed input

    def test_bad_version_drops_connection(self):
        self.assertDropped(fcgi_record(FCGI_BEGIN_REQUEST, 1, struct.pack(">HB5x", 1, 0),
                                       version=2), ["version"])

    def test_name_length_0x7fffffff_drops_connection(self):
        # CVE-2025-23016's shape: a huge declared name length.
        pair = struct.pack(">II", 0x7fffffff | 0x80000000, 1) + b"AB"
        self.assertDropped(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 1, pair)
                           + fcgi_record(FCGI_PARAMS, 1), ["length", "limit", "large", "big"])

    def test_value_length_past_stream_end_drops_connection(self):
        pair = fcgi_nv(b"ABCD", b"")[:1] + struct.pack(">I", 1000 | 0x80000000) + b"ABCDvalue"
        self.assertDropped(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 1, pair)
                           + fcgi_record(FCGI_PARAMS, 1),
                           ["length", "truncat", "short", "incomplete", "overflow"])

    def test_params_over_limit_drops_connection(self):
        pairs = hello_pairs() + b"".join(fcgi_nv("HTTP_X_PAD_%d" % i, "v" * 200)
                                         for i in range(30))
        self.assertGreater(len(pairs), MAX_PARAMS)
        self.assertDropped(fcgi_begin(1) + fcgi_stream(FCGI_PARAMS, 1, pairs, chunk=1000)
                           + fcgi_record(FCGI_STDIN, 1), ["limit", "max_params", "large", "big"])

    def test_params_for_unknown_request_id_drops_connection(self):
        self.assertDropped(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 7, hello_pairs()),
                           ["request id", "unknown"])

    def test_stdin_for_unknown_request_id_drops_connection(self):
        self.assertDropped(fcgi_begin(1) + fcgi_stream(FCGI_PARAMS, 1, hello_pairs())
                           + fcgi_record(FCGI_STDIN, 9, b"data"),
                           ["request id", "unknown"])

    def test_params_without_begin_drops_connection(self):
        self.assertDropped(fcgi_record(FCGI_PARAMS, 1, hello_pairs()),
                           ["request id", "unknown", "BEGIN"])

    def test_stdin_before_params_end_drops_connection(self):
        self.assertDropped(fcgi_begin(1) + fcgi_record(FCGI_PARAMS, 1, hello_pairs())
                           + fcgi_record(FCGI_STDIN, 1, b"early"),
                           ["STDIN", "params"])

    def test_half_header_then_close_is_logged(self):
        self.assertDropped(fcgi_begin(1)[:4], ["truncat", "header", "eof", "end", "closed"],
                           half_close=True)

    def test_record_cut_mid_content_then_close_is_logged(self):
        rec = fcgi_record(FCGI_PARAMS, 1, hello_pairs())
        self.assertDropped(fcgi_begin(1) + rec[:len(rec) // 2],
                           ["truncat", "record", "eof", "end", "closed", "content"],
                           half_close=True)


if __name__ == "__main__":
    harness.main()
