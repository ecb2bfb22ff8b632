"""Helpers for the integration tests: start/stop a real ckptd daemon, talk to it.

Daemon starts build/ckptd (or $CKPTD_BIN) on a free 127.0.0.1 port with a fresh
temporary data directory, waits for GET /api/v1/healthz, and stops it with
SIGTERM, checking that it exits 0 within a few seconds. Its stdout and stderr go
to a log file that the test runner prints when a test fails.

HTTP is plain http.client (standard library only): Daemon.request() returns a
Response with status, headers and the whole body; Daemon.stream_upload() sends a
file without reading it into memory.
"""

import atexit
import ctypes
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
API = "/api/v1"

_live = weakref.WeakSet()


def binary():
    return os.environ.get("CKPTD_BIN") or os.path.join(REPO, "build", "ckptd")


_own_base = None


def work_dir():
    """A fresh scratch directory: under $CKPTD_IT_WORK (run.sh removes it), else
    under one temporary directory this process removes at exit (unless
    $CKPTD_IT_KEEP is set)."""
    global _own_base
    base = os.environ.get("CKPTD_IT_WORK")
    if base:
        os.makedirs(base, exist_ok=True)
    else:
        if _own_base is None:
            _own_base = tempfile.mkdtemp(prefix="ckptd-it-")
            if not os.environ.get("CKPTD_IT_KEEP"):
                atexit.register(shutil.rmtree, _own_base, True)
        base = _own_base
    return tempfile.mkdtemp(prefix="ckptd-it-", dir=base)


def _psql(url, sql):
    p = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("psql %s: %s" % (sql, p.stderr.strip()))
    return p.stdout.strip()


_made_dbs = set()


def index_args(data_dir):
    """The --index of a daemon or command on data_dir. With $CKPTD_IT_PG (the URL
    of a PostgreSQL server that run.sh started), each data directory gets a
    database of its own there, made on first use, so every test sees a store as
    fresh as a new data directory; without it, [] (SQLite in the data dir)."""
    pg = os.environ.get("CKPTD_IT_PG")
    if not pg:
        return []
    name = "ckptd_" + hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:20]
    if name not in _made_dbs:
        if _psql(pg, "SELECT 1 FROM pg_database WHERE datname = '%s'" % name) != "1":
            _psql(pg, "CREATE DATABASE %s" % name)
        _made_dbs.add(name)
    return ["--index", pg.rsplit("/", 1)[0] + "/" + name]


def s3_prefix(data_dir):
    """The key prefix of a data directory's blobs in the S3 run's bucket."""
    return "it-" + hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:20]


def store_args(data_dir):
    """index_args, and with $CKPTD_IT_S3 (run.sh's PostgreSQL + S3 run) the
    blobs on the run's S3 endpoint under a prefix of the data directory's own:
    the flags a daemon or command on data_dir needs for its store."""
    args = index_args(data_dir)
    if os.environ.get("CKPTD_IT_S3"):
        args += ["--blobs", "s3://%s/%s" % (os.environ["CKPTD_TEST_S3_BUCKET"], s3_prefix(data_dir)),
                 "--s3-endpoint", os.environ["CKPTD_TEST_S3_ENDPOINT"],
                 "--s3-region", os.environ.get("CKPTD_TEST_S3_REGION", "us-east-1")]
    return args


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _die_with_parent():
    # The daemon must not outlive a test process killed by run.sh's timeout.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def quote(s):
    return urllib.parse.quote(s, safe="")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:
            raise AssertionError(
                "response %d is not JSON (%s): %r" % (self.status, e, self.body[:300])
            )

    def __repr__(self):
        return "<HTTP %d %r>" % (self.status, self.body[:300])


class DaemonError(Exception):
    pass


class Daemon:
    """One ckptd serve process. Use as a context manager or start()/stop()."""

    def __init__(self, data_dir=None, args=(), name="ckptd", token=None):
        self.name = name
        self.scratch = work_dir()
        self.data_dir = data_dir or os.path.join(self.scratch, "data")
        self.own_data = data_dir is None
        self.args = list(args)
        self.token = token  # default bearer token for requests
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.scratch, name + ".log")
        self.exit_code = None

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout=20):
        last = None
        for _attempt in range(3):
            self.port = free_port()
            cmd = [
                binary(), "serve",
                "--listen", "127.0.0.1:%d" % self.port,
                "--data", self.data_dir,
            ] + self.args
            extra = store_args(self.data_dir)
            if "--index" in self.args:
                extra = []
            elif "--blobs" in self.args:
                extra = index_args(self.data_dir)
            cmd += extra
            log = open(self.log_path, "ab")
            log.write(("\n$ %s\n" % " ".join(cmd)).encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            log.close()
            _live.add(self)
            deadline = time.time() + timeout
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    last = "ckptd exited with %d during start" % self.proc.returncode
                    break
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    c.request("GET", API + "/healthz")
                    r = c.getresponse()
                    r.read()
                    c.close()
                    # Any HTTP answer means it listens (401 under --auth-read).
                    if r.status == 200 or r.status in (401, 403):
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            else:
                last = "ckptd did not answer /healthz within %ds" % timeout
                self.kill()
                break
            if "in use" not in self.log_tail(5).lower():
                break
        _live.discard(self)
        raise DaemonError("%s\n--- %s ---\n%s" % (last, self.log_path, self.log_tail()))

    def stop(self, timeout=10, sig=signal.SIGTERM):
        """Sends sig and waits; returns the exit code. Raises when it does not
        exit within timeout seconds (then kills it)."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonError(
                    "ckptd did not exit within %ds of %s\n%s"
                    % (timeout, signal.Signals(sig).name, self.log_tail())
                )
        self.exit_code = self.proc.returncode
        self.proc = None
        _live.discard(self)
        return self.exit_code

    def stop_checked(self, timeout=10, sig=signal.SIGTERM):
        code = self.stop(timeout, sig)
        if code != 0:
            raise DaemonError(
                "ckptd exited with %r after %s (want 0)\n%s"
                % (code, signal.Signals(sig).name, self.log_tail())
            )

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.exit_code = self.proc.returncode
        self.proc = None
        _live.discard(self)

    def cleanup(self):
        self.kill()
        if os.environ.get("CKPTD_IT_KEEP"):
            return
        if os.environ.get("CKPTD_IT_S3") and self.own_data:
            # the endpoint keeps objects in memory: give back what this
            # daemon's store held
            from . import s3
            try:
                s3.Client.from_env().delete_prefix(s3_prefix(self.data_dir) + "/")
            except Exception as e:
                print("  (could not empty S3 prefix of %s: %s)" % (self.name, e))
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop_checked()
        finally:
            self.cleanup()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    # -- HTTP -------------------------------------------------------------

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=None, timeout=60):
        """path is below /api/v1 unless it starts with '/!' (then taken as is, minus '!')."""
        if path.startswith("/!"):
            url = path[2:]
            url = url if url.startswith("/") else "/" + url
        else:
            url = API + path
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok:
            h["Authorization"] = "Bearer " + tok
        if body is not None and not isinstance(body, (bytes, bytearray)) and not hasattr(body, "read"):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = self.conn(timeout)
        try:
            c.request(method, url, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.headers, data)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def get_json(self, path, status=200, **kw):
        r = self.get(path, **kw)
        if r.status != status:
            raise AssertionError("GET %s: want %d, got %d %r" % (path, status, r.status, r.body[:500]))
        return r.json()

    def upload(self, model, data, params=None, method="POST", token=None, headers=None):
        """Raw-body upload of bytes (or a path to a file) -> Response."""
        if isinstance(data, str):
            with open(data, "rb") as f:
                data = f.read()
        q = "?" + urllib.parse.urlencode(params, doseq=True) if params else ""
        h = {"Content-Type": "application/octet-stream"}
        h.update(headers or {})
        return self.request(method, "/models/%s/checkpoints%s" % (model, q), body=data,
                            headers=h, token=token)

    def upload_ok(self, model, data, params=None, **kw):
        r = self.upload(model, data, params, **kw)
        if r.status != 201:
            raise AssertionError("upload to %s: want 201, got %d %r" % (model, r.status, r.body[:500]))
        return r.json()

    def stream_upload(self, model, path, params=None, timeout=900):
        """POSTs the file at path without holding it in memory -> Response."""
        q = "?" + urllib.parse.urlencode(params, doseq=True) if params else ""
        size = os.path.getsize(path)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, blocksize=1 << 20)
        try:
            h = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            if self.token:
                h["Authorization"] = "Bearer " + self.token
            with open(path, "rb") as f:
                c.request("POST", API + "/models/%s/checkpoints%s" % (model, q), body=f, headers=h)
                r = c.getresponse()
                return Response(r.status, r.headers, r.read())
        finally:
            c.close()

    def stream_download(self, path, timeout=900):
        """GETs path; returns (status, headers, sha256 hex of the body, body length)."""
        c = self.conn(timeout)
        try:
            h = {}
            if self.token:
                h["Authorization"] = "Bearer " + self.token
            c.request("GET", API + path, headers=h)
            r = c.getresponse()
            hs = hashlib.sha256()
            n = 0
            while True:
                try:
                    b = r.read(1 << 20)
                except (http.client.IncompleteRead, ConnectionError) as e:
                    # cut short by the server: what arrived is counted, the
                    # caller sees fewer bytes than promised
                    b = getattr(e, "partial", b"")
                    hs.update(b)
                    n += len(b)
                    break
                if not b:
                    break
                hs.update(b)
                n += len(b)
            return r.status, r.headers, hs.hexdigest(), n
        finally:
            c.close()

    def stats(self):
        return self.get_json("/stats")


class DaemonCase(unittest.TestCase):
    """Tests sharing one daemon for the class: NAME and daemon_args() make
    it; it is stopped (and checked for a clean exit) after the last test."""

    NAME = "case"
    ARGS = ()

    @classmethod
    def daemon_args(cls):
        return list(cls.ARGS)

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(name=cls.NAME, args=cls.daemon_args()).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop_checked()
        finally:
            cls.d.cleanup()


def multipart(parts):
    """Builds a multipart/form-data body from parts in order: each part is
    ("field", (name, value)) or ("file", (name, filename, bytes)).
    Returns (content_type, body)."""
    boundary = "----ckptdtest%08x" % int(time.time() * 1000 % 0xFFFFFFFF)
    out = []
    for kind, item in parts:
        if kind == "field":
            name, value = item
            out.append(
                ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                 % (boundary, name, value)).encode()
            )
        else:
            name, filename, data = item
            out.append(
                ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name, filename)).encode()
                + data + b"\r\n"
            )
    out.append(("--%s--\r\n" % boundary).encode())
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


def live_daemons():
    return list(_live)


def pick(d, *names):
    """d[name] for the first name d has; AssertionError listing d's keys otherwise."""
    for n in names:
        if n in d:
            return d[n]
    raise AssertionError("none of %s in %s" % (names, sorted(d.keys())))


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)


def reset_hwm(pid):
    """Starts VmHWM again from the current RSS (Linux: 5 into clear_refs),
    so a later vm_hwm_kb measures what came after."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")
