# SPDX-License-Identifier: BSD-2-Clause
"""The command line: --version, --help, -t, overrides without a config file,
TCP listeners, and a module that cannot start."""

import os
import re
import socket
import unittest

import harness
from harness import MODE, app_path


def lines_with_location(text, path):
    """stderr lines of the form 'PATH:LINE: message' -> {line: message}."""
    out = {}
    for ln in text.splitlines():
        m = re.match(re.escape(path) + r":(\d+): (.+)$", ln.strip())
        if m:
            out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out


def test_module(name):
    """A module tests/CMakeLists.txt builds for the loader tests."""
    return os.path.join(harness.FCGATE_APPS, "tests", "mod_%s.so" % name)


class CliTest(harness.TestCase):
    def test_version_exits_0(self):
        r = harness.run_fcgate(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout + r.stderr, r"\d+\.\d+\.\d+")

    def test_help_exits_0_and_lists_options(self):
        r = harness.run_fcgate(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        text = r.stdout + r.stderr
        for opt in ("-c", "-t", "--listen", "--app", "--mode", "--workers", "--threads",
                    "--database", "--version"):
            self.assertIn(opt, text)

    def test_unknown_option_exits_nonzero(self):
        r = harness.run_fcgate(["--no-such-option"])
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())

    def test_check_good_config_says_ok(self):
        f = self.fcgate("notes", start=False)
        r = harness.run_fcgate(["-t", "-c", f.conf_path])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout + r.stderr)
        self.assertFalse(os.path.exists(f.sock_path), "-t must not open the listen socket")

    def test_check_reports_every_error_with_file_and_line(self):
        conf = os.path.join(self.tmp, "bad.conf")
        sock = os.path.join(self.tmp, "ok.sock")
        text = "\n".join([
            'listen = [ "unix:%s", "999.1.2.3:99999" ];' % sock,  # 1: bad address
            "bogus_key = 1;",                                       # 2: unknown key
            'workers = "four";',                                    # 3: wrong type
            "threads = 5000;",                                      # 4: out of range
            'mode = "%s";' % MODE,                                  # 5: fine
            'app = { module = "%s/missing.so"; };' % self.tmp,      # 6: no such module
            "",
        ])
        with open(conf, "w") as f:
            f.write(text)
        r = harness.run_fcgate(["-t", "-c", conf])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("configuration ok", r.stdout + r.stderr)
        errs = lines_with_location(r.stderr, conf)
        self.assertEqual(sorted(errs), [1, 2, 3, 4, 6], r.stderr)
        self.assertEqual(sum(len(v) for v in errs.values()), 5, r.stderr)
        self.assertIn("bogus_key", " ".join(errs[2]))
        self.assertIn("missing.so", " ".join(errs[6]))
        self.assertIn("999.1.2.3", " ".join(errs[1]))

    def test_check_syntax_error_names_line(self):
        conf = os.path.join(self.tmp, "syntax.conf")
        with open(conf, "w") as f:
            f.write('mode = "sync";\nworkers = 2;\nthreads = ;\n')
        r = harness.run_fcgate(["-t", "-c", conf])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(3, lines_with_location(r.stderr, conf), r.stderr)

    def test_check_syntax_error_is_reported_alone(self):
        # The file sets no module and no user: checks of those defaults
        # would only be noise after a syntax error.
        conf = os.path.join(self.tmp, "syntax.conf")
        with open(conf, "w") as f:
            f.write('mode = "sync";\nworkers = 2;\nthreads = ;\n')
        for argv in (["-t", "-c", conf], ["-c", conf]):
            with self.subTest(argv=argv):
                r = harness.run_fcgate(argv)
                self.assertEqual(r.returncode, 1, r.stderr)
                lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
                self.assertEqual(list(lines_with_location(r.stderr, conf)), [3], r.stderr)
                located = [ln for ln in lines if ln.startswith(conf + ":")]
                self.assertEqual(len(located), 1, r.stderr)
                self.assertNotRegex(r.stderr, "app module|would run as root", r.stderr)
                if "-t" not in argv:
                    self.assertRegex(r.stderr, r"\b1 error in the configuration")

    def test_check_missing_file_names_it(self):
        conf = os.path.join(self.tmp, "absent.conf")
        r = harness.run_fcgate(["-t", "-c", conf])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(conf, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_failing_app_init_stops_fcgate(self):
        f = self.fcgate("notes", start=False, app={"database": "/nonexistent-dir/x.db"})
        f.launch()
        status = f.wait(10.0)
        self.assertIsNotNone(status, "fcgate still running 10 s after its app failed to start")
        self.assertNotEqual(status, 0)
        self.assertGreater(status, 0, "killed by signal %d" % -status)
        log = f.log()
        self.assertIn("/nonexistent-dir/x.db", log, "the cause is not named")
        self.assertLess(len(log.splitlines()), 200, "respawn storm in the log")

    def test_overrides_without_config_file(self):
        port = harness.free_port()
        db = os.path.join(self.tmp, "cli.db")
        f = self.fcgate("bench", start=False, listen=["127.0.0.1:%d" % port])
        argv = ["--app", app_path("bench"), "--listen", "127.0.0.1:%d" % port,
                "--mode", MODE, "--workers", "2", "--database", db]
        if MODE == "threads":
            argv += ["--threads", str(harness.THREADS)]
        if os.geteuid() == 0:
            argv += ["--user", "root"]
        f.start(argv=argv)
        self.assertEqual(len(f.worker_pids()), 2)
        resp = harness.fcgi_request("127.0.0.1:%d" % port, "GET", "/item?id=7")
        self.assertEqual(resp.http()[:1], (200,))
        self.assertEqual(resp.http()[2], b'{"id":7,"name":"item-00007","qty":%d}' % (7 * 7919 % 1000))
        self.assertEqual(f.stop(), 0)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_supervisor_refuses_to_serve_as_root_unless_told(self):
        f = self.fcgate("probe", start=False, user=None, app={"database": ""})
        f.launch()
        status = f.wait(10.0)
        self.assertIsNotNone(status, "fcgate kept running with root workers")
        self.assertNotEqual(status, 0)
        self.assertRegex(f.log(), "workers would run as root|refusing to serve as root")

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_workers_drop_to_user_and_socket_belongs_to_them(self):
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        f = self.fcgate("probe", user="nobody", group=group, umask="0027",
                        app={"database": ""}, pidfile=os.path.join(self.tmp, "f.pid"))
        st = os.stat(f.sock_path)
        self.assertEqual((st.st_uid, st.st_gid), (nobody.pw_uid, nobody.pw_gid))
        self.assertEqual(os.stat(os.path.join(self.tmp, "f.pid")).st_mode & 0o777, 0o640)
        # A worker is forked as root and drops before it loads the app, so
        # one forked a moment ago may not have dropped yet: wait for that,
        # bounded, and require every id (real, effective, saved, fs) to move.
        def uids(pid):
            with open("/proc/%d/status" % pid) as fh:
                return [ln for ln in fh if ln.startswith("Uid:")][0]
        for pid in f.worker_pids():
            want = [nobody.pw_uid] * 4
            dropped = harness.wait_until(
                lambda: [int(x) for x in uids(pid).split()[1:]] == want, 5.0)
            self.assertTrue(dropped, uids(pid))
        r = harness.fcgi_request(f.listen, "GET", "/hello")
        self.assertEqual(r.http()[2], b"hello\n")

    def check_module(self, module, **overrides):
        """Runs -t on a config whose app.module (line 2) is module; returns
        (result, {line: [messages]})."""
        conf = os.path.join(self.tmp, "mod.conf")
        lines = ['mode = "%s";' % MODE,
                 'app = { module = "%s"; database = ""; };' % module]
        if os.geteuid() == 0:
            lines.append('user = "root";')
        for k, v in overrides.items():
            lines.append("%s = %s;" % (k, v))
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = harness.run_fcgate(["-t", "-c", conf])
        return r, lines_with_location(r.stderr, conf)

    def test_check_loads_module_and_reports_wrong_abi_at_its_line(self):
        r, errs = self.check_module(test_module("bad_abi"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(sorted(errs), [2], r.stderr)
        self.assertRegex(" ".join(errs[2]), r"mod_bad_abi\.so.*ABI %d\.0" % 2)

    def test_check_reports_module_without_fcgate_app_module_at_its_line(self):
        r, errs = self.check_module(test_module("no_symbol"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(sorted(errs), [2], r.stderr)
        self.assertIn("fcgate_app_module", " ".join(errs[2]))

    def test_check_reports_failing_dlopen_at_its_line(self):
        r, errs = self.check_module(test_module("unresolved"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(sorted(errs), [2], r.stderr)
        self.assertIn("no_such_function_anywhere", " ".join(errs[2]))

    def test_check_loads_good_module(self):
        r, errs = self.check_module(test_module("good"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_command_line_overrides_config_file(self):
        f = self.fcgate("bench", start=False, workers=1)
        f.settings["workers"] = 3
        f.start(argv=["-c", f.conf_path, "--workers", "3"])
        self.assertEqual(len(f.wait_workers(3)), 3)

    def test_tcp_ipv4_listener_serves(self):
        port = harness.free_port()
        f = self.fcgate("bench", listen=["127.0.0.1:%d" % port])
        resp = harness.fcgi_request("127.0.0.1:%d" % port, "GET", "/hello")
        self.assertEqual(resp.http()[2], b"hello\n")
        ng = self.nginx(f)
        r = harness.http_request(ng.port, "GET", "/hello")
        self.assertEqual((r.status, r.body), (200, b"hello\n"))

    @unittest.skipUnless(harness.has_ipv6_loopback(), "no ::1 on this machine")
    def test_tcp_ipv6_and_ipv4_listeners_both_serve(self):
        p4 = harness.free_port()
        p6 = harness.free_port(socket.AF_INET6, "::1")
        self.fcgate("bench", listen=["127.0.0.1:%d" % p4, "[::1]:%d" % p6])
        for spec in ("127.0.0.1:%d" % p4, "[::1]:%d" % p6):
            with self.subTest(listen=spec):
                resp = harness.fcgi_request(spec, "GET", "/hello")
                self.assertEqual(resp.http()[2], b"hello\n")


if __name__ == "__main__":
    harness.main()
