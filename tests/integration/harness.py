# SPDX-License-Identifier: BSD-2-Clause
"""Integration-test harness: a real fcgate, a real nginx, a raw FastCGI client.

Python 3 standard library only. Environment (set by tests/CMakeLists.txt):
  FCGATE_BIN     the fcgate binary         (default: $FCGATE_SOURCE/build/fcgate)
  FCGATE_APPS    where notes.so, bench.so are (default: the binary's folder)
  FCGATE_MODE    worker mode for every config: sync | threads | async
  FCGATE_SOURCE  the source tree (for nginx/fcgate.conf)
  FCGATE_KEEP_TMP=1 keeps each test's temp dir (logs, configs) after the run.

Rules every test follows through this module: each test gets its own temp
dir; every process a test starts is stopped by pid (signal, grace period,
then SIGKILL), even when the test fails; nothing is ever killed by name;
traffic goes only to 127.0.0.1, ::1 and unix sockets in the temp dir; a
failing test prints the logs of the processes it started to stderr.
"""

import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("FCGATE_SOURCE") or os.path.dirname(os.path.dirname(HERE))
FCGATE_BIN = os.environ.get("FCGATE_BIN") or os.path.join(SOURCE, "build", "fcgate")
FCGATE_APPS = os.environ.get("FCGATE_APPS") or os.path.dirname(FCGATE_BIN)
MODE = os.environ.get("FCGATE_MODE") or "sync"
NGINX_BIN = "/usr/sbin/nginx"
SITE_CONF = os.path.join(SOURCE, "nginx", "fcgate.conf")
SITE_SOCKET = "unix:/run/fcgate/fcgate.sock"
SITE_STATUS_SOCKET = "unix:/run/fcgate/status.sock"
SITE_LISTEN = "127.0.0.1:8080"

# Threads per worker in threads mode (the suite's fixed choice).
THREADS = 4


def app_path(name):
    """Path of an example module: 'notes' -> $FCGATE_APPS/notes.so."""
    return os.path.join(FCGATE_APPS, name + ".so")


# --------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: if the test runner is killed
    # (ctest timeout), the servers it started do not outlive it.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, log_path, env=None, stdin=subprocess.DEVNULL):
    """Starts argv in its own session (a signal to the test's process group
    does not reach it), stdout and stderr appended to log_path."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=stdin, stdout=log, stderr=log, env=env,
                                start_new_session=True, preexec_fn=_die_with_parent)


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def children_of(pid):
    """Pids of pid's children, from /proc/<pid>/task/<tid>/children of every
    thread (a child is listed under the thread that forked it)."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(set(out))


def pid_exe_is(pid, path):
    """True if pid is still running the binary at path (guards against pid
    reuse before we signal a pid recorded earlier)."""
    try:
        return os.path.samefile(os.readlink("/proc/%d/exe" % pid), path)
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.02):
    """Polls pred() until it returns a true value (returned) or timeout
    seconds pass (returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def stop_process(proc, sig=signal.SIGTERM, timeout=10.0, extra_pids=()):
    """Sends sig to proc by pid, waits up to timeout s, then SIGKILLs it.
    extra_pids (its children, recorded while it ran) that are still alive
    and still the same binary are SIGKILLed by pid afterwards. Returns the
    exit status (negative: killed by that signal), or None if it had to be
    SIGKILLed."""
    status = proc.poll()
    if status is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
    exe = proc.args[0] if isinstance(proc.args, (list, tuple)) else None
    for pid in extra_pids:
        if pid_alive(pid) and (exe is None or pid_exe_is(pid, exe)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return status


# ------------------------------------------------------------------ config

def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A TCP port nobody listens on right now."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _lc_value(v, indent):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) + ("L" if not -2**31 <= v < 2**31 else "")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(_lc_value(x, indent) for x in v) + " ]"
    if isinstance(v, dict):
        pad = "  " * (indent + 1)
        body = "".join("%s%s = %s;\n" % (pad, k, _lc_value(x, indent + 1)) for k, x in v.items())
        return "{\n" + body + "  " * indent + "}"
    raise TypeError("no libconfig form for %r" % (v,))


def libconfig_text(settings):
    """Renders a dict as a libconfig file (nested dicts are groups, lists
    are arrays)."""
    return "".join("%s = %s;\n" % (k, _lc_value(v, 0)) for k, v in settings.items())


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def parse_listen(spec):
    """'unix:/p' -> (AF_UNIX, '/p'); '127.0.0.1:9' -> (AF_INET, (host, 9));
    '[::1]:9' -> (AF_INET6, ('::1', 9))."""
    if spec.startswith("unix:"):
        return socket.AF_UNIX, spec[5:]
    m = re.fullmatch(r"\[(.*)\]:(\d+)", spec)
    if m:
        return socket.AF_INET6, (m.group(1), int(m.group(2)))
    host, port = spec.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def connect(spec, timeout=5.0):
    family, addr = parse_listen(spec)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def unix_connections(path):
    """Inodes of the connected server-side sockets of the unix listener at
    path (from /proc/net/unix: accepted sockets carry the listener's path;
    state 03 is SS_CONNECTED)."""
    out = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                out.add(int(fields[6]))
    return out


def socket_inodes(pid):
    """Inodes of the sockets pid has open (from /proc/<pid>/fd)."""
    out = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in fds:
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m:
            out.add(int(m.group(1)))
    return out


def pids_holding_connections(pids, path):
    """Those of pids that hold an accepted connection of the unix listener
    at path (which worker is serving a request right now)."""
    conns = unix_connections(path)
    return [p for p in pids if socket_inodes(p) & conns]


def read_pidfile(path):
    """The pid in a pidfile, or None if it is missing or not a number yet."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class ForeignProcess:
    """A process the test did not start itself (so it cannot wait() for it),
    e.g. the new master an fcgate USR2 upgrade forks: stop() signals it by
    pid, waits until it is gone, then SIGKILLs it and the children recorded
    while it ran, each only if it still runs exe (no pid-reuse accidents).
    Usable with TestCase.track()."""

    def __init__(self, pid, exe):
        self.pid = pid
        self.exe = exe
        self.known_children = set()

    def running(self):
        return pid_alive(self.pid) and pid_exe_is(self.pid, self.exe)

    def children(self):
        pids = children_of(self.pid)
        self.known_children.update(pids)
        return pids

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Returns True if it went away within timeout after sig."""
        gone = True
        if self.running():
            self.children()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            gone = bool(wait_until(lambda: not pid_alive(self.pid), timeout))
            if not gone and pid_exe_is(self.pid, self.exe):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        for pid in sorted(self.known_children):
            if pid_alive(pid) and pid_exe_is(pid, self.exe):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return gone


# ------------------------------------------------------------------ fcgate

class Fcgate:
    """One fcgate supervisor, configured from keyword overrides.

    Fcgate(tmp, "notes", workers=2, limits={"max_body_bytes": 2 << 20})
    writes tmp/fcgate.conf and, on start(), runs `$FCGATE_BIN -c FILE`
    with stdout and stderr in tmp/fcgate.log. A value of None removes a
    key from the defaults. The unix socket is tmp/fcgate.sock, mode 0666
    so nginx's unprivileged workers can connect.
    """

    def __init__(self, tmp, appname="notes", name="fcgate", **overrides):
        self.tmp = tmp
        self.name = name
        self.app = appname
        self.sock_path = os.path.join(tmp, name + ".sock")
        self.conf_path = os.path.join(tmp, name + ".conf")
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None
        self.known_workers = set()
        settings = {
            "listen": ["unix:" + self.sock_path],
            "listen_mode": "0666",
            "pidfile": os.path.join(tmp, name + ".pid"),
            "mode": MODE,
            "workers": 2,
            "graceful_timeout": 5,
            "app": {"module": app_path(appname),
                    "database": os.path.join(tmp, name + "-" + appname + ".db")},
            "log": {"level": "info", "error": "-"},
        }
        if MODE == "threads":
            settings["threads"] = THREADS
        if os.geteuid() == 0:
            # A root supervisor serves as root only when told so.
            settings["user"] = "root"
        self.settings = _merge(settings, overrides)
        self.write_config()

    def write_config(self):
        """Writes self.settings to the config file (start, or a HUP, reads it)."""
        with open(self.conf_path, "w") as f:
            f.write(libconfig_text(self.settings))

    @property
    def listen(self):
        """The first listen address, e.g. 'unix:/tmp/x/fcgate.sock'."""
        return self.settings["listen"][0]

    @property
    def workers(self):
        return self.settings.get("workers", 1)

    @property
    def pid(self):
        return self.proc.pid

    def ready_request(self):
        """A request every example app answers: bench's /hello, notes' list."""
        return ("GET", "/hello") if self.app == "bench" else ("GET", "/notes")

    def launch(self, argv=None):
        """Starts fcgate without waiting for anything. argv replaces
        ['-c', conf]."""
        args = [FCGATE_BIN] + (argv if argv is not None else ["-c", self.conf_path])
        self.proc = spawn(args, self.log_path)
        return self

    def start(self, timeout=10.0, argv=None):
        """Starts fcgate and waits until every listen address accepts and
        answers a FastCGI request, and all workers are forked. argv replaces
        ['-c', conf]."""
        self.launch(argv)
        deadline = time.monotonic() + timeout
        for spec in self.settings["listen"]:
            last = None
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError("fcgate exited with %s during start-up; log:\n%s"
                                         % (self.proc.returncode, self.log()))
                try:
                    method, uri = self.ready_request()
                    resp = fcgi_request(spec, method, uri, timeout=2.0)
                    if resp.end is not None:
                        break
                    last = "no END_REQUEST"
                except OSError as e:
                    last = e
                if time.monotonic() > deadline:
                    raise AssertionError("fcgate at %s not ready after %.0f s (%s); log:\n%s"
                                         % (spec, timeout, last, self.log()))
                time.sleep(0.02)
        want = self.workers
        ok = wait_until(lambda: len(self.worker_pids()) >= want,
                        max(0.1, deadline - time.monotonic()))
        if not ok:
            raise AssertionError("fcgate has workers %s, want %d; log:\n%s"
                                 % (self.worker_pids(), want, self.log()))
        return self

    def worker_pids(self):
        """The supervisor's children right now (its workers)."""
        pids = children_of(self.proc.pid)
        self.known_workers.update(pids)
        return pids

    def wait_workers(self, n, timeout=5.0, exclude=()):
        """Waits until there are n workers, none of them in exclude;
        returns the list (possibly wrong if the timeout passed)."""
        def check():
            p = self.worker_pids()
            return p if len(p) == n and not set(p) & set(exclude) else None
        return wait_until(check, timeout) or self.worker_pids()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=5.0, flags=re.I):
        """Waits for a regex to match the log; returns the match or None."""
        return wait_until(lambda: re.search(pattern, self.log(), flags), timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout):
        """Waits for fcgate to exit by itself; its status, or None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals the supervisor by pid, waits up to timeout, then SIGKILLs
        it and any worker still alive. Returns the exit status (None if it
        had to be killed)."""
        if self.proc is None:
            return None
        if self.running():
            self.worker_pids()
        return stop_process(self.proc, sig, timeout, sorted(self.known_workers))


def run_fcgate(args, timeout=10.0, cwd=None):
    """Runs `fcgate ARGS` to completion (for -t, --version, ...)."""
    return subprocess.run([FCGATE_BIN] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          start_new_session=True, preexec_fn=_die_with_parent)


# ------------------------------------------------------------------- nginx

class Nginx:
    """An nginx that serves the repo's nginx/fcgate.conf site, pointed at
    one fcgate: the site file is copied with its socket path and listen
    address replaced. keepalive=N turns on upstream keep-alive (an upstream
    `keepalive N;` and `fastcgi_keep_conn on;`). status: the status
    socket its /fcgate-status location passes to."""

    def __init__(self, tmp, upstream, keepalive=None, status=None):
        self.dir = os.path.join(tmp, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.log_path = os.path.join(self.dir, "error.log")
        self.access_path = os.path.join(self.dir, "access.log")
        self.out_path = os.path.join(self.dir, "nginx.out")
        self.proc = None
        self.known_workers = set()
        shutil.copy("/etc/nginx/fastcgi_params", self.dir)
        with open(SITE_CONF) as f:
            site = f.read()
        for needle in (SITE_SOCKET, SITE_LISTEN):
            if needle not in site:
                raise AssertionError("%s does not contain %r" % (SITE_CONF, needle))
        # fcgate's listen syntax is nginx's: "unix:/p", "127.0.0.1:9", "[::1]:9".
        site = site.replace(SITE_SOCKET, upstream)
        site = site.replace(SITE_LISTEN, "127.0.0.1:%d" % self.port)
        if status:
            assert SITE_STATUS_SOCKET in site, "no status location in " + SITE_CONF
            site = site.replace(SITE_STATUS_SOCKET, status)
        if keepalive:
            site, n = re.subn(r"(?m)^upstream fcgate \{\n",
                              "upstream fcgate {\n    keepalive %d;\n" % keepalive, site, count=1)
            assert n == 1, "no active `upstream fcgate {` line in " + SITE_CONF
            site, n = re.subn(r"(?m)^(\s*)fastcgi_pass fcgate;",
                              r"\1fastcgi_pass fcgate;\n\1fastcgi_keep_conn on;", site, count=1)
            assert n == 1, "no active `fastcgi_pass fcgate;` line in " + SITE_CONF
        with open(os.path.join(self.dir, "fcgate-site.conf"), "w") as f:
            f.write(site)
        d = self.dir
        main = """\
# rendered by tests/integration/harness.py
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    proxy_temp_path {d}/proxy_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    include fcgate-site.conf;
}}
""".format(d=d)
        with open(self.conf_path, "w") as f:
            f.write(main)

    def argv(self, *extra):
        return [NGINX_BIN, "-p", self.dir + "/", "-c", self.conf_path, "-e", self.log_path] \
            + list(extra)

    def start(self, timeout=10.0):
        check = subprocess.run(self.argv("-t", "-q"), capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise AssertionError("nginx -t failed:\n" + check.stderr + check.stdout)
        self.proc = spawn(self.argv(), self.out_path)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %s; log:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return children_of(self.proc.pid)
            except OSError:
                return False
        if not wait_until(up, timeout):
            raise AssertionError("nginx not listening on %d; log:\n%s" % (self.port, self.log()))
        self.known_workers.update(children_of(self.proc.pid))
        return self

    def log(self):
        out = []
        for p in (self.out_path, self.log_path):
            with contextlib.suppress(OSError), open(p, errors="replace") as f:
                out.append(f.read())
        return "".join(out)

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.known_workers.update(children_of(self.proc.pid))
        # TERM: nginx's fast shutdown (no waiting for idle keep-alives).
        return stop_process(self.proc, signal.SIGTERM, timeout, sorted(self.known_workers))


# -------------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.reason, self.body[:200])


def http_request(port, method, path, body=None, headers=None, timeout=15.0, conn=None):
    """One HTTP/1.1 request to 127.0.0.1:port. A dict or list body is sent
    as JSON; pass conn (http.client.HTTPConnection) to reuse a connection."""
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode("utf-8")
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.headers, data)
    finally:
        if own:
            conn.close()


class Load:
    """Threads that each send one request through nginx in a loop until
    stopped (or max_seconds / max_requests pass), checking every answer:
    200 and the body the example apps give (/hello -> hello, /sleep -> ok).
    A fresh HTTP connection per request, or with keep_alive one per thread
    (a new one after a failure). method and body apply to every request."""

    BODIES = {"/hello": b"hello\n", "/sleep": b"ok\n"}

    def __init__(self, port, paths=("/hello", "/hello", "/sleep?ms=5"), max_seconds=60.0,
                 max_requests=200000, method="GET", body=None, keep_alive=False):
        self.port = port
        self.paths = list(paths)
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.method = method
        self.body = body
        self.keep_alive = keep_alive
        self.lock = threading.Lock()
        self.results = []  # (start, end, ok, path, detail)
        self.started = 0
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(p,), daemon=True)
                        for p in self.paths]

    def _run(self, path):
        want = self.BODIES[path.split("?")[0]]
        deadline = time.monotonic() + self.max_seconds
        conn = None
        while not self.halt.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.started >= self.max_requests:
                    break
                self.started += 1
            if self.keep_alive and conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            t0 = time.monotonic()
            try:
                r = http_request(self.port, self.method, path, body=self.body, timeout=10,
                                 conn=conn)
                ok = r.status == 200 and r.body == want
                detail = "" if ok else repr(r)
            except Exception as e:  # reset, refused, timeout: a failed request
                ok, detail = False, repr(e)
            if conn is not None and not ok:
                conn.close()
                conn = None
            with self.lock:
                self.results.append((t0, time.monotonic(), ok, path, detail))
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(15)

    def total(self):
        with self.lock:
            return len(self.results)

    def failures(self):
        with self.lock:
            return [r for r in self.results if not r[2]]

    def failed(self):
        return len(self.failures())

    def wait_requests(self, n, timeout=10.0):
        """Waits until n more requests have been answered."""
        goal = self.total() + n
        return wait_until(lambda: self.total() >= goal, timeout)

    def summary(self):
        f = self.failures()
        return "%d of %d failed; first: %s" % (
            len(f), self.total(), ["%s %s" % (r[3], r[4]) for r in f[:5]])


# ----------------------------------------------------------------- FastCGI

FCGI_VERSION_1 = 1
FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_DATA = 8
FCGI_GET_VALUES = 9
FCGI_GET_VALUES_RESULT = 10
FCGI_UNKNOWN_TYPE = 11

FCGI_RESPONDER = 1
FCGI_AUTHORIZER = 2
FCGI_FILTER = 3
FCGI_KEEP_CONN = 1

FCGI_REQUEST_COMPLETE = 0
FCGI_CANT_MPX_CONN = 1
FCGI_OVERLOADED = 2
FCGI_UNKNOWN_ROLE = 3


def fcgi_record(rtype, rid, content=b"", padding=None, version=FCGI_VERSION_1):
    """One record; padding defaults to the spec's 8-byte alignment."""
    if padding is None:
        padding = -len(content) % 8
    return struct.pack(">BBHHBx", version, rtype, rid, len(content), padding) \
        + content + b"\0" * padding


def fcgi_length(n):
    return struct.pack("B", n) if n < 128 else struct.pack(">I", n | 0x80000000)


def fcgi_nv(name, value):
    """A name-value pair (str or bytes)."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return fcgi_length(len(name)) + fcgi_length(len(value)) + name + value


def fcgi_stream(rtype, rid, data, chunk=65535):
    """data as records of one stream, then the empty record that ends it."""
    out = b"".join(fcgi_record(rtype, rid, data[i:i + chunk]) for i in range(0, len(data), chunk))
    return out + fcgi_record(rtype, rid)


def fcgi_begin(rid, role=FCGI_RESPONDER, flags=0):
    return fcgi_record(FCGI_BEGIN_REQUEST, rid, struct.pack(">HB5x", role, flags))


def cgi_params(method, uri, body=b"", extra=None):
    """The params nginx's fastcgi_params would send for this request."""
    path, _, query = uri.partition("?")
    p = {
        "QUERY_STRING": query, "REQUEST_METHOD": method,
        "CONTENT_TYPE": "", "CONTENT_LENGTH": str(len(body)) if body else "",
        "SCRIPT_NAME": path, "REQUEST_URI": uri, "DOCUMENT_URI": path,
        "DOCUMENT_ROOT": "/", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http",
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "fcgate-tests",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80", "SERVER_NAME": "localhost", "PATH_INFO": path,
    }
    p.update(extra or {})
    return p


def fcgi_request_bytes(method, uri, body=b"", rid=1, keep_conn=False, params=None,
                       role=FCGI_RESPONDER):
    """A whole request: BEGIN_REQUEST, PARAMS stream, STDIN stream."""
    pairs = b"".join(fcgi_nv(k, v) for k, v in cgi_params(method, uri, body, params).items())
    return (fcgi_begin(rid, role, FCGI_KEEP_CONN if keep_conn else 0)
            + fcgi_stream(FCGI_PARAMS, rid, pairs) + fcgi_stream(FCGI_STDIN, rid, body))


def parse_nv(data):
    """Name-value pairs -> list of (name, value) bytes."""
    out, i = [], 0
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] & 0x80:
                lens.append(struct.unpack(">I", data[i:i + 4])[0] & 0x7fffffff)
                i += 4
            else:
                lens.append(data[i])
                i += 1
        n, v = lens
        out.append((data[i:i + n], data[i + n:i + n + v]))
        i += n + v
    return out


class Record:
    def __init__(self, version, rtype, rid, content):
        self.version, self.type, self.id, self.content = version, rtype, rid, content

    def end_request(self):
        """(appStatus, protocolStatus) of an END_REQUEST record."""
        return struct.unpack(">IB3x", self.content)

    def __repr__(self):
        return "<record v%d type %d id %d %r>" % (self.version, self.type, self.id,
                                                  self.content[:80])


class FcgiResponse:
    """What a peer answered to one request id: stdout, stderr, end."""

    def __init__(self):
        self.stdout = b""
        self.stderr = b""
        self.end = None  # (appStatus, protocolStatus)
        self.stdout_closed = False
        self.others = []  # records for other ids / management

    @property
    def protocol_status(self):
        return None if self.end is None else self.end[1]

    def http(self):
        """Splits stdout CGI-style: (status, {lowercased header: value}, body)."""
        head, sep, body = self.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = self.stdout.partition(b"\n\n")
        headers = {}
        for line in head.decode("latin-1").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        status = int(headers.get("status", "200").split()[0])
        return status, headers, body


class FcgiConn:
    """A raw FastCGI connection to fcgate (no nginx in between)."""

    def __init__(self, spec, timeout=5.0):
        self.sock = connect(spec, timeout)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for %d bytes (have %d)"
                                     % (n, len(self.buf)))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        return len(self.buf) >= n

    def read_record(self, timeout=5.0):
        """The next record, or None at end of stream. A truncated record at
        the end is an AssertionError."""
        if not self._fill(8, timeout):
            if self.buf:
                raise AssertionError("stream ended inside a header: %r" % self.buf)
            return None
        version, rtype, rid, clen, plen = struct.unpack(">BBHHBx", self.buf[:8])
        if not self._fill(8 + clen + plen, timeout):
            raise AssertionError("stream ended inside a record: %r" % self.buf[:80])
        content = self.buf[8:8 + clen]
        self.buf = self.buf[8 + clen + plen:]
        return Record(version, rtype, rid, content)

    def read_response(self, rid=1, timeout=10.0):
        """Records until END_REQUEST for rid (or the end of the stream)."""
        resp = FcgiResponse()
        deadline = time.monotonic() + timeout
        while True:
            rec = self.read_record(max(0.0, deadline - time.monotonic()))
            if rec is None:
                return resp
            if rec.id != rid:
                resp.others.append(rec)
            elif rec.type == FCGI_STDOUT:
                if rec.content:
                    resp.stdout += rec.content
                else:
                    resp.stdout_closed = True
            elif rec.type == FCGI_STDERR:
                resp.stderr += rec.content
            elif rec.type == FCGI_END_REQUEST:
                resp.end = rec.end_request()
                return resp
            else:
                resp.others.append(rec)

    def closed_by_peer(self, timeout=5.0):
        """True if the server closes the connection within timeout (data
        it still sends before closing is read and dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False


def fcgi_request(spec, method, uri, body=b"", params=None, timeout=10.0):
    """One request on a fresh connection; the FcgiResponse."""
    with FcgiConn(spec, timeout) as c:
        c.send(fcgi_request_bytes(method, uri, body, params=params))
        return c.read_response(1, timeout)


# --------------------------------------------------------------- test base

def _tail(path, limit=200):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return "(no %s)\n" % path
    cut = lines[-limit:]
    head = "" if len(cut) == len(lines) else "... (%d lines cut)\n" % (len(lines) - len(cut))
    return head + "".join(cut)


class TestCase(unittest.TestCase):
    """Base class: self.tmp is this test's own directory; start_fcgate and
    start_nginx register the process for stopping and its log for printing
    if the test fails."""

    def assertAllGone(self, pids, timeout=10.0):
        """Every pid in pids exits within timeout."""
        gone = wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)
        self.assertTrue(gone, "still alive: %s" % [p for p in pids if pid_alive(p)])

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        self.tmp = tempfile.mkdtemp(prefix="fcgate-it-")
        # nginx's workers run unprivileged and must reach the socket inside.
        os.chmod(self.tmp, 0o755)
        self._logs = []
        self._procs = []
        self.allow_sanitizer_reports = False
        try:
            return super().run(result)
        finally:
            for p in self._procs:
                with contextlib.suppress(Exception):
                    p.stop(timeout=2.0)
            self._check_sanitizer_reports(result)
            if len(result.failures) + len(result.errors) > before:
                sys.stderr.write("\n==== logs of %s (%s)\n" % (self.id(), self.tmp))
                for path in self._logs:
                    sys.stderr.write("---- %s\n%s" % (path, _tail(path)))
                sys.stderr.write("==== end of logs\n")
                sys.stderr.flush()
            if os.environ.get("FCGATE_KEEP_TMP") != "1":
                shutil.rmtree(self.tmp, ignore_errors=True)

    # A sanitizer report in a worker's log fails the test even when the
    # request it hit looked fine from outside (the worker is respawned).
    SANITIZER_MARKERS = re.compile(
        r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|WARNING: ThreadSanitizer|"
        r"runtime error: |SUMMARY: (Address|Thread|UndefinedBehavior)Sanitizer")

    def _check_sanitizer_reports(self, result):
        if self.allow_sanitizer_reports:
            return
        for path in self._logs:
            if not path.endswith(".log") and not path.endswith(".out"):
                continue
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            m = self.SANITIZER_MARKERS.search(text)
            if m:
                start = max(0, m.start() - 200)
                err = AssertionError("sanitizer report in %s:\n%s" % (path, text[start:start + 3000]))
                result.addFailure(self, (AssertionError, err, None))
                return

    def track(self, proc_obj, *logs):
        """Registers something with stop() and log files to show on failure."""
        self._procs.append(proc_obj)
        self._logs.extend(logs)
        self.addCleanup(proc_obj.stop)
        return proc_obj

    def fcgate(self, appname="notes", start=True, **overrides):
        """An Fcgate for the example app appname ("notes", "bench"); the
        overrides are config keys (app={"database": ...} merges into the
        app group)."""
        f = Fcgate(self.tmp, appname, **overrides)
        self._logs.append(f.conf_path)
        self.track(f, f.log_path)
        if start:
            f.start()
        return f

    def nginx(self, fcgate, keepalive=None, start=True, status=None):
        n = Nginx(self.tmp, fcgate.listen, keepalive, status)
        self.track(n, n.log_path, n.out_path)
        if start:
            n.start()
        return n


def main():
    # ctest's timeout and Ctrl-C: unwind so every test's cleanups run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.access(FCGATE_BIN, os.X_OK):
        sys.stderr.write("FCGATE_BIN %s is not an executable\n" % FCGATE_BIN)
        sys.exit(2)
    unittest.main(verbosity=2)
