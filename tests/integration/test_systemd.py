# SPDX-License-Identifier: BSD-2-Clause
"""fcgate under systemd, without systemd: readiness notifications
(sd_notify over $NOTIFY_SOCKET) and socket activation ($LISTEN_FDS),
spoken to by this test the way systemd speaks them."""

import os
import signal
import socket
import subprocess
import time

import harness


def activation_script(fd):
    """sh -c text that moves fd to 3 and runs "$@" as systemd would. When
    the socket is fd 3 already, `exec 3<&3 3<&-` would close it."""
    move = "" if fd == 3 else "exec 3<&%d %d<&-; " % (fd, fd)
    return move + 'LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"'


class Notifications:
    """A $NOTIFY_SOCKET: collects the datagrams fcgate sends."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []

    def wait_for(self, text, timeout=10.0, since=0):
        """True once a message from index `since` on contains text."""
        deadline = time.monotonic() + timeout
        while True:
            if any(text in m for m in self.messages[since:]):
                return True
            if time.monotonic() >= deadline:
                return False
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def close(self):
        self.sock.close()


class SystemdTest(harness.TestCase):
    def test_notify_ready_status_reloading_stopping_and_watchdog(self):
        note = Notifications(os.path.join(self.tmp, "notify.sock"))
        self.addCleanup(note.close)
        fc = self.fcgate("bench", start=False, workers=2)
        os.environ["NOTIFY_SOCKET"] = note.path
        os.environ["WATCHDOG_USEC"] = "400000"
        try:
            fc.start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
            del os.environ["WATCHDOG_USEC"]
        self.assertTrue(note.wait_for("READY=1"), note.messages)
        self.assertTrue(note.wait_for("STATUS=2 of 2 workers ready"), note.messages)
        # The watchdog is kept fed at half its interval.
        before = len(note.messages)
        note.wait_for("never", timeout=1.2)
        self.assertGreaterEqual(sum("WATCHDOG=1" in m for m in note.messages[before:]), 2,
                                note.messages)
        # A reload says so, then says ready again once the new workers are.
        n = len(note.messages)
        os.kill(fc.pid, signal.SIGHUP)
        self.assertTrue(note.wait_for("RELOADING=1", since=n), note.messages)
        reloading = next(i for i in range(n, len(note.messages))
                         if "RELOADING=1" in note.messages[i])
        self.assertTrue(note.wait_for("READY=1", since=reloading + 1), note.messages[n:])
        os.kill(fc.pid, signal.SIGTERM)
        self.assertTrue(note.wait_for("STOPPING=1"), note.messages)
        self.assertEqual(fc.wait(10), 0)

    def activate(self, **settings):
        """systemd's side: a listening socket at fd 3, LISTEN_FDS=1 and
        LISTEN_PID naming the process it is meant for; fcgate started on it
        with settings. The Fcgate and the socket's path."""
        path = os.path.join(self.tmp, "activated.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        os.chmod(path, 0o666)
        lsock.listen(64)
        fc = self.fcgate("bench", start=False, **settings)
        fd = lsock.fileno()
        fc.proc = subprocess.Popen(
            ["/bin/sh", "-c", activation_script(fd), "sh", harness.FCGATE_BIN, "-c",
             fc.conf_path],
            pass_fds=(fd,), stdout=open(fc.log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        lsock.close()
        return fc, path

    def test_socket_activation_serves_the_passed_socket(self):
        unused = os.path.join(self.tmp, "configured.sock")
        fc, path = self.activate(workers=2, listen=["unix:" + unused])
        spec = "unix:" + path
        ok = harness.wait_until(lambda: self._answers(spec), 10.0)
        self.assertTrue(ok, fc.log())
        self.assertIn("from systemd", fc.log())
        self.assertFalse(os.path.exists(unused), "the configured socket was created too")
        ng = self.nginx_for(spec)
        r = harness.http_request(ng.port, "GET", "/item?id=3")
        self.assertEqual(r.status, 200)
        self.assertEqual(fc.stop(), 0)
        # The socket belongs to systemd: fcgate leaves its path alone.
        self.assertTrue(os.path.exists(path))

    def test_socket_activation_with_ondemand_starts_workers_on_connections(self):
        # An ondemand pool on systemd's socket: no worker until a
        # connection arrives on it, none again once idle.
        fc, path = self.activate(pm="ondemand", max_workers=2, idle_timeout=1,
                                 listen=["unix:" + os.path.join(self.tmp, "configured.sock")])
        self.assertTrue(fc.wait_log(r"from systemd"), fc.log())
        time.sleep(0.5)
        self.assertEqual(fc.worker_pids(), [], fc.log())
        ng = self.nginx_for("unix:" + path)
        for _ in range(2):
            r = harness.http_request(ng.port, "GET", "/item?id=3")
            self.assertEqual(r.status, 200)
            self.assertTrue(harness.wait_until(lambda: fc.worker_pids() == [], 10), fc.log())
        self.assertEqual(fc.stop(), 0)

    def _answers(self, spec):
        try:
            return harness.fcgi_request(spec, "GET", "/hello", timeout=1.0).http()[2] == b"hello\n"
        except Exception:
            return False

    def nginx_for(self, spec):
        n = harness.Nginx(self.tmp, spec)
        self.track(n, n.log_path, n.out_path)
        n.start()
        return n


if __name__ == "__main__":
    harness.main()
