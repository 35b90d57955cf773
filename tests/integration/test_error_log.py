# SPDX-License-Identifier: BSD-2-Clause
"""The error log stays one line per message whatever a request carries:
control bytes from a percent-decoded path are escaped, never written raw."""

import re

import harness

# A decoded newline followed by text shaped like a real log line.
FORGED = "FORGED 2026-01-01T00:00:00.000Z [main 1] error: forged line"


def uri(endpoint):
    """/ENDPOINT/x<LF>FORGED...<CR><LF>end, percent-encoded."""
    return "/" + endpoint + "/x%0a" + FORGED.replace(" ", "%20") + "%0d%0aend"


class ErrorLogTest(harness.TestCase):
    def assertNoForgedLine(self, fc, marker):
        self.assertIsNotNone(fc.wait_log(marker), fc.log())
        lines = fc.log().splitlines()
        forged = [ln for ln in lines if ln.startswith("FORGED")]
        self.assertEqual(forged, [], "forged line in the log:\n" + fc.log())
        line = [ln for ln in lines if re.search(marker, ln)][0]
        self.assertIn("x\\x0aFORGED", line)
        self.assertIn("\\x0d\\x0aend", line)

    def test_handler_failure_line_escapes_decoded_newlines(self):
        fc = self.fcgate("probe", app={"database": ""})
        resp = harness.fcgi_request(fc.listen, "GET", uri("fail"))
        self.assertEqual(resp.http()[0], 500)
        self.assertNoForgedLine(fc, "handler failed")

    def test_app_log_line_escapes_decoded_newlines(self):
        fc = self.fcgate("probe", app={"database": ""})
        resp = harness.fcgi_request(fc.listen, "GET", uri("log"))
        self.assertEqual(resp.http()[0], 200)
        self.assertNoForgedLine(fc, "logged for")


if __name__ == "__main__":
    harness.main()
