# SPDX-License-Identifier: BSD-2-Clause
"""libfcgi's cgi-fcgi (package libfcgi-bin) as an independent FastCGI
client: fcgate must serve a peer whose framing it did not write."""

import json
import os
import shutil
import subprocess

import harness

CGI_FCGI = shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi"


def cgi_env(method, uri, body=b"", content_type=""):
    path, _, query = uri.partition("?")
    env = {
        "PATH": "/usr/bin:/bin",
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "cgi-fcgi", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": method, "REQUEST_URI": uri,
        "SCRIPT_NAME": path, "DOCUMENT_URI": path, "QUERY_STRING": query,
    }
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        env["CONTENT_TYPE"] = content_type
    return env


def split_cgi(out):
    head, _, body = out.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").splitlines():
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(headers.get("status", "200").split()[0]), headers, body


class CgiFcgiTest(harness.TestCase):
    def cgi_fcgi(self, fc, method, uri, body=b"", content_type=""):
        # Not skipped when missing: CI must install libfcgi-bin.
        self.assertTrue(os.access(CGI_FCGI, os.X_OK), "cgi-fcgi (libfcgi-bin) is not installed")
        r = subprocess.run([CGI_FCGI, "-bind", "-connect", fc.sock_path], input=body,
                           env=cgi_env(method, uri, body, content_type),
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        return split_cgi(r.stdout)

    def test_get_hello_through_cgi_fcgi(self):
        fc = self.fcgate("bench")
        status, headers, body = self.cgi_fcgi(fc, "GET", "/hello")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"hello\n")
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)

    def test_get_item_with_query_through_cgi_fcgi(self):
        fc = self.fcgate("bench")
        status, _, body = self.cgi_fcgi(fc, "GET", "/item?id=4242")
        self.assertEqual(status, 200)
        self.assertEqual(body, b'{"id":4242,"name":"item-04242","qty":%d}' % (4242 * 7919 % 1000))

    def test_post_note_through_cgi_fcgi(self):
        fc = self.fcgate("notes")
        text = "via cgi-fcgi \u00e9 \"quoted\""
        payload = json.dumps({"text": text}).encode()
        status, headers, body = self.cgi_fcgi(fc, "POST", "/notes", payload, "application/json")
        self.assertEqual(status, 201, body)
        note = json.loads(body)
        self.assertEqual(note["text"], text)
        self.assertEqual(headers.get("location"), "/notes/%d" % note["id"])
        status, _, body = self.cgi_fcgi(fc, "GET", "/notes/%d" % note["id"])
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), note)


if __name__ == "__main__":
    harness.main()
