# SPDX-License-Identifier: BSD-2-Clause
"""A root supervisor never follows a link the workers' user could have
planted: log files reopened on USR1 and HUP, and the pidfile. The workers'
user owns the log directory (as /var/log/fcgate is packaged), so it can
replace a log file with a symbolic link to any file; root must neither
write to that file nor give it away. A dummy file in the test's directory
stands in for /etc/passwd."""

import grp
import os
import pwd
import signal
import time
import unittest

import harness

TARGET_TEXT = b"root:x:0:0:root:/root:/bin/sh\n"


def snapshot(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        return (st.st_uid, st.st_gid, st.st_mode, f.read())


@unittest.skipUnless(os.geteuid() == 0, "needs root")
class RootFilesTest(harness.TestCase):
    def setUp(self):
        self.nobody = pwd.getpwnam("nobody")
        self.group = grp.getgrgid(self.nobody.pw_gid).gr_name
        self.target = os.path.join(self.tmp, "passwd")
        with open(self.target, "wb") as f:
            f.write(TARGET_TEXT)
        os.chmod(self.target, 0o644)
        self.before = snapshot(self.target)
        self.logs = os.path.join(self.tmp, "logs")
        os.mkdir(self.logs)
        os.chown(self.logs, self.nobody.pw_uid, self.nobody.pw_gid)

    def start(self):
        return self.fcgate("probe", user="nobody", group=self.group, app={"database": ""},
                           log={"error": os.path.join(self.logs, "error.log"),
                                "access": os.path.join(self.logs, "access.log")})

    def plant(self):
        """Rotates both logs the way logrotate does, then puts links to the
        target where the files were."""
        for name in ("error.log", "access.log"):
            path = os.path.join(self.logs, name)
            os.rename(path, path + ".1")
            os.symlink(self.target, path)

    def assertRefusedAndUntouched(self, fc):
        rotated = os.path.join(self.logs, "error.log.1")

        def said():
            with open(rotated) as f:
                return "symbolic link" in f.read()
        harness.wait_until(lambda: said() or snapshot(self.target) != self.before, 5.0)
        time.sleep(0.3)  # the workers reopen too, a moment later
        self.assertEqual(snapshot(self.target), self.before, "the link's target was changed")
        with open(rotated) as f:
            self.assertTrue(said(), "no error line about the link:\n" + f.read())
        r = harness.fcgi_request(fc.listen, "GET", "/hello")
        self.assertEqual(r.http()[2], b"hello\n")
        self.assertEqual(snapshot(self.target), self.before, "the link's target was changed")

    def test_usr1_does_not_follow_planted_log_links(self):
        fc = self.start()
        self.plant()
        fc.proc.send_signal(signal.SIGUSR1)
        self.assertRefusedAndUntouched(fc)

    def test_hup_does_not_follow_planted_log_links(self):
        fc = self.start()
        self.plant()
        fc.proc.send_signal(signal.SIGHUP)
        self.assertRefusedAndUntouched(fc)

    def test_planted_pidfile_link_is_refused(self):
        pidfile = os.path.join(self.tmp, "fcgate.pid")
        os.symlink(self.target, pidfile)
        fc = self.fcgate("probe", start=False, user="nobody", group=self.group,
                         app={"database": ""}, pidfile=pidfile)
        fc.launch()
        status = fc.wait(10.0)
        self.assertIsNotNone(status, "fcgate started with a linked pidfile")
        self.assertNotEqual(status, 0)
        self.assertRegex(fc.log(), "pidfile .*symbolic link")
        self.assertEqual(snapshot(self.target), self.before, "the link's target was changed")


if __name__ == "__main__":
    harness.main()
