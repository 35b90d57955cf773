# SPDX-License-Identifier: BSD-2-Clause
"""A private PostgreSQL cluster (and pgbouncer) for integration tests.

Debian's postgresql-15 binaries, run directly (not through pg_ctlcluster
or systemd): initdb into the test's temp dir, then `postgres` as a child
of the test, so it is stopped by its pid like every other process the
tests start. The tests run as root and PostgreSQL refuses to: initdb and
the server run as `nobody`, in a directory that user owns. The server
listens on a unix socket in that directory and on 127.0.0.1 at a free
port, trusts local connections (nothing else can reach it), and runs
with fsync off (a test cluster need not survive a power cut).
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import harness

PG_BIN = "/usr/lib/postgresql/15/bin"
PGBOUNCER = "/usr/sbin/pgbouncer"
USER = "nobody"


def available():
    return os.access(os.path.join(PG_BIN, "postgres"), os.X_OK)


def _as_user():
    pw = pwd.getpwnam(USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class Postgres:
    """Postgres(tmp).start(); .conninfo (unix socket), .tcp_conninfo,
    .psql(sql), .restart(), .stop(). The database is `app`."""

    def __init__(self, tmp, name="pg"):
        self.dir = os.path.join(tmp, name)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = harness.free_port()
        self.proc = None
        os.makedirs(self.dir)
        pw = pwd.getpwnam(USER)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def conninfo(self):
        return "host=%s port=%d dbname=app user=postgres" % (self.dir, self.port)

    @property
    def tcp_conninfo(self):
        return "hostaddr=127.0.0.1 port=%d dbname=app user=postgres" % self.port

    def _run(self, argv, **kw):
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              cwd=self.dir, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                              **_as_user(), **kw)

    def init(self):
        r = self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                       "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        if r.returncode != 0:
            raise AssertionError("initdb failed:\n" + r.stdout + r.stderr)
        return self

    def launch(self):
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.data, "-k", self.dir,
                "-h", "127.0.0.1", "-p", str(self.port),
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                "-c", "logging_collector=off"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir, start_new_session=True,
                                         preexec_fn=harness._die_with_parent,
                                         env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                                         **_as_user())
        return self

    def wait_ready(self, timeout=30.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("postgres exited with %s; log:\n%s"
                                     % (self.proc.returncode, self.log()))
            r = self._run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", self.dir,
                           "-p", str(self.port)])
            return r.returncode == 0
        if not harness.wait_until(ready, timeout, 0.1):
            raise AssertionError("postgres not ready; log:\n" + self.log())

    def start(self):
        """initdb (once), start, create database app."""
        if not os.path.exists(self.data):
            self.init()
        self.launch()
        self.wait_ready()
        if self.psql("SELECT 1 FROM pg_database WHERE datname = 'app'", db="postgres") != "1":
            self.psql("CREATE DATABASE app", db="postgres")
        return self

    def psql(self, sql, db="app"):
        """Runs sql; its output, unaligned and tuples only (errors raise)."""
        r = self._run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-v",
                       "ON_ERROR_STOP=1", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                       "-d", db, "-c", sql])
        if r.returncode != 0:
            raise AssertionError("psql %r failed:\n%s%s" % (sql, r.stdout, r.stderr))
        return r.stdout.strip()

    def stop(self, timeout=20.0):
        """Fast shutdown (SIGINT: connections are told, then closed)."""
        if self.proc is None:
            return None
        status = harness.stop_process(self.proc, signal.SIGINT, timeout)
        self.proc = None
        return status

    def restart(self, down_seconds=0.0):
        """Stops the server by its pid, waits down_seconds, starts it again."""
        self.stop()
        time.sleep(down_seconds)
        self.launch()
        self.wait_ready()

    def log(self):
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return f.read()[-8000:]
        return ""


class Pgbouncer:
    """pgbouncer in transaction pooling mode in front of pg, on 127.0.0.1
    at a free port and a unix socket in its own directory."""

    def __init__(self, tmp, pg, pool_size=4):
        self.dir = os.path.join(tmp, "pgbouncer")
        self.port = harness.free_port()
        self.log_path = os.path.join(self.dir, "pgbouncer.log")
        self.proc = None
        os.makedirs(self.dir)
        pw = pwd.getpwnam(USER)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write('"postgres" ""\n')
        with open(self.ini, "w") as f:
            f.write("""\
[databases]
app = host={pgdir} port={pgport} dbname=app user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {d}
auth_type = trust
auth_file = {d}/userlist.txt
pool_mode = transaction
default_pool_size = {pool}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = {d}/pgbouncer.file.log
""".format(pgdir=pg.dir, pgport=pg.port, port=self.port, d=self.dir, pool=pool_size))

    @property
    def conninfo(self):
        return "hostaddr=127.0.0.1 port=%d dbname=app user=postgres" % self.port

    def start(self, timeout=10.0):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([PGBOUNCER, self.ini], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd=self.dir,
                                         start_new_session=True,
                                         preexec_fn=harness._die_with_parent, **_as_user())

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("pgbouncer exited with %s; log:\n%s"
                                     % (self.proc.returncode, self.log()))
            with contextlib.suppress(OSError):
                harness.socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            return False
        if not harness.wait_until(up, timeout, 0.05):
            raise AssertionError("pgbouncer not listening; log:\n" + self.log())
        return self

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        status = harness.stop_process(self.proc, signal.SIGINT, timeout)
        self.proc = None
        return status

    def log(self):
        out = []
        for p in (self.log_path, os.path.join(self.dir, "pgbouncer.file.log")):
            with contextlib.suppress(OSError), open(p, errors="replace") as f:
                out.append(f.read()[-4000:])
        return "".join(out)


def shared_cluster(prefix):
    """A running cluster in a temp dir of its own, for a whole test file or
    class (initdb takes seconds): (cluster, dir). drop_shared stops it."""
    if not available():
        raise AssertionError("postgresql-15 is not installed (scripts/lib.sh installs it)")
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    try:
        return Postgres(tmp).start(), tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def drop_shared(cluster, tmp):
    if cluster:
        cluster.stop()
    if tmp and os.environ.get("FCGATE_KEEP_TMP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


def start_postgres(test, name="pg"):
    """A running cluster for a harness.TestCase, stopped at its end."""
    if not available():
        raise AssertionError("postgresql-15 is not installed (scripts/lib.sh installs it)")
    p = Postgres(test.tmp, name)
    test.track(p, p.log_path)
    p.start()
    return p


def start_pgbouncer(test, pg, pool_size=4):
    if not os.access(PGBOUNCER, os.X_OK):
        raise AssertionError("pgbouncer is not installed (scripts/lib.sh installs it)")
    b = Pgbouncer(test.tmp, pg, pool_size)
    test.track(b, b.log_path)
    b.start()
    return b

