#!/usr/bin/python3
# backends: sqlite postgresql
"""Hostile HTTP clients against the real daemon (server/http.c, api/upload.c).

1. Slow clients: 1,100 connections from 127.0.0.1 that never finish their
   headers do not lock out a client from another address (127.0.0.2: the
   whole 127/8 is loopback), which is answered within 5 s; headers trickled
   past --header-timeout are cut off. A request on a connection whose
   thread another request holds (a PATCH waiting on a locked index) is
   answered once the thread is free; an upload waiting on the locked index
   for its commit holds up no other connection (it ends on a job thread),
   and SIGTERM then answers it before exiting.
2. Requests that used to get no answer (a query of 2,000 arguments,
   Transfer-Encoding: gzip, an upload shorter than its Content-Length then a
   half-close) each get their 4xx JSON error and a closed connection; many of
   them leave no socket in CLOSE-WAIT; SIGTERM with an idle half-closed (or
   stalled) upload pending exits within a few seconds.
3. 1,000 uploads whose headers arrived but no body byte yet do not start
   2,000 threads (hashing runs on a bounded pool), and uploads that then
   send their bodies are stored exactly.
4. Range values that RFC 9110 does not allow are ignored (200, whole file) or
   answered 416, never 206 with other bounds than the RFC's.
5. Every query argument is kept, or the request is refused with 431/400:
   none is dropped silently.

Malformed requests go through raw sockets. The test raises its own
RLIMIT_NOFILE (the daemons it starts inherit it).
"""

import json
import os
import resource
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

API = ckptd.API
D = None
SMALL = None  # a small real checkpoint (torch zip)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def setUpModule():
    global D, SMALL
    raise_nofile()
    SMALL = fixtures.seed_bytes("views_and_tied.pt")
    D = ckptd.Daemon(name="hostile").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


# -- raw HTTP ------------------------------------------------------------------


def connect(port, src="127.0.0.1", timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


class Answer:
    """What came back on a raw socket: the bytes, whether the server closed
    the connection (EOF), and the first response parsed."""

    def __init__(self, data, closed):
        self.data = data
        self.closed = closed
        self.status = None
        self.headers = {}
        self.body = b""
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            self.status = int(parts[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        n = int(self.headers.get("content-length", len(rest)))
        self.body = rest[:n]

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%s closed=%s %r>" % (self.status, self.closed, self.data[:300])


def read_answer(s, timeout=5):
    """Reads until EOF or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    data = b""
    closed = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not b:
            closed = True
            break
        data += b
    return Answer(data, closed)


def raw(port, data, half_close=False, src="127.0.0.1", timeout=5):
    s = connect(port, src)
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        return read_answer(s, timeout)
    finally:
        s.close()


def assert_json_error_and_closed(tc, a, status, what):
    tc.assertEqual(a.status, status, "%s: want %d, got %r" % (what, status, a))
    tc.assertTrue(a.header("Content-Type", "").startswith("application/json"), "%s: %r" % (what, a))
    j = a.json()
    tc.assertIsInstance(j.get("error"), str, "%s: %r" % (what, j))
    tc.assertTrue(j["error"])
    tc.assertIsInstance(j.get("message"), str, "%s: %r" % (what, j))
    tc.assertTrue(j["message"])
    tc.assertTrue(a.closed, "%s: the server kept the connection open after %r" % (what, a))
    return j


def server_sockets_in(port, state_hex):
    """Sockets whose local port is port in the given TCP state (08: CLOSE-WAIT)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, st = fields[1], fields[3]
                    if int(local.rsplit(":", 1)[1], 16) == port and st == state_hex:
                        n += 1
        except OSError:
            pass
    return n


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def spool_fds(pid, data_dir):
    """Open upload spools (O_TMPFILE files in DATA/tmp) of the daemon."""
    tmp = os.path.realpath(os.path.join(data_dir, "tmp")) + "/"
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith(tmp):
                n += 1
        except OSError:
            pass
    return n


def wait_for(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def upload_head(model, length, query="", extra=""):
    return ("POST %s/models/%s/checkpoints%s HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n%s\r\n"
            % (API, model, query, length, extra)).encode()


def short_upload_request(model="short"):
    return upload_head(model, 100000) + b"PK\x03\x04 only part of the body"


def many_args_request(n):
    q = "&".join("a%d=1" % i for i in range(n))
    return ("GET %s/models?%s HTTP/1.1\r\nHost: t\r\n\r\n" % (API, q)).encode()


GZIP_REQUEST = (
    "POST %s/models/gz/checkpoints HTTP/1.1\r\nHost: t\r\n"
    "Transfer-Encoding: gzip\r\nContent-Type: application/octet-stream\r\n\r\n"
    "\x1f\x8b not really gzip" % API
).encode()


# -- 1. slow clients ---------------------------------------------------------


class SlowClients(unittest.TestCase):
    def test_1100_slow_header_connections_do_not_lock_out_another_address(self):
        socks = []
        try:
            for _ in range(1100):
                try:
                    s = connect(D.port, "127.0.0.1", timeout=2)
                    s.sendall(b"GET " + API.encode() + b"/healthz HTTP/1.1\r\nHost: slow\r\n")
                    socks.append(s)
                except OSError:
                    pass  # refused or reset once the server's limit for the address is hit
            time.sleep(0.5)
            t0 = time.monotonic()
            a = raw(D.port, b"GET " + API.encode() + b"/healthz HTTP/1.1\r\nHost: t\r\n"
                    b"Connection: close\r\n\r\n", src="127.0.0.2", timeout=5)
            took = time.monotonic() - t0
            self.assertEqual(a.status, 200, "a request from 127.0.0.2 behind 1,100 slow "
                             "connections from 127.0.0.1: %r after %.1fs" % (a, took))
            self.assertLess(took, 5.0)
        finally:
            for s in socks:
                s.close()
        # the address's connections are counted down again once they close
        self.assertTrue(wait_for(lambda: D.get("/healthz").status == 200, 10))

    def test_headers_trickled_past_the_header_timeout_are_cut_off(self):
        with ckptd.Daemon(name="headers", args=["--header-timeout", "2"]) as d:
            s = connect(d.port)
            try:
                line = b"GET " + API.encode() + b"/healthz HTTP/1.1\r\nHost: trickle\r\nX-Slow: "
                t0 = time.monotonic()
                s.sendall(line)
                cut = None
                # one byte every 0.3 s keeps an idle timeout from ever firing
                while time.monotonic() - t0 < 8:
                    try:
                        s.sendall(b"a")
                    except OSError:
                        cut = time.monotonic() - t0
                        break
                    r, _, _ = select.select([s], [], [], 0.3)
                    if r:
                        try:
                            b = s.recv(4096)
                        except OSError:
                            b = b""
                        if not b:
                            cut = time.monotonic() - t0
                            break
                self.assertIsNotNone(cut, "headers trickled for 8 s were never cut off "
                                     "(--header-timeout 2)")
                self.assertLess(cut, 5.0)
            finally:
                s.close()
            self.assertEqual(d.get("/healthz").status, 200)

    def test_a_head_sent_in_time_waits_for_a_thread_another_request_holds(self):
        """Handlers run on the server's pool threads: while one works for
        seconds (here a PATCH waiting on a locked index), the other
        connections of its thread are not read. A client whose head was sent
        in time must be answered once the thread is free, not cut off by the
        header timeout (one of four 10,000-tensor uploads at once was, in
        the ASan suite, when uploads still ended on the pool threads), nor
        by the idle timeout, which the wait outlasts too."""
        with ckptd.Daemon(name="busy", args=["--threads", "1", "--header-timeout", "1",
                                             "--idle-timeout", "1"]) as d:
            small = fixtures.seed_bytes("views_and_tied.pt")
            self.assertEqual(d.upload("busy", small).status, 201)  # the index exists
            release = hold_index_writes(d, 3.0)
            try:
                b = connect(d.port, timeout=20)  # accepted while the thread is free
                got = {}
                time.sleep(0.2)
                up = threading.Thread(target=lambda: got.update(a=d.request(
                    "PATCH", "/models/busy/checkpoints/latest", {"pinned": True})))
                up.start()
                time.sleep(0.4)  # the PATCH now waits for the index, holding the thread
                t0 = time.monotonic()
                b.sendall(b"GET " + API.encode() + b"/healthz HTTP/1.1\r\nHost: t\r\n"
                          b"Connection: close\r\n\r\n")
                ans = read_answer(b, timeout=20)
                took = time.monotonic() - t0
                b.close()
            finally:
                release()
            up.join(30)
            self.assertEqual(ans.status, 200, "a head sent 0.6 s after the accept, behind a "
                             "PATCH holding the only thread: %r after %.1f s" % (ans, took))
            self.assertGreater(took, 1.5, "the PATCH did not hold the thread: the test "
                               "proves nothing")
            self.assertEqual(got["a"].status, 200, got["a"])

    def test_an_upload_that_ends_holds_up_no_other_connection_of_its_thread(self):
        """The end of an upload (parse, store, commit) runs on a job thread
        of its own while its connection waits: with one pool thread and the
        upload's commit waiting on a locked index, a request on another
        connection is answered meanwhile, and the upload is stored once the
        index is free. On the pool thread, the request waited for the lock
        (and a DCP rank's file waited for another rank's commit)."""
        with ckptd.Daemon(name="jobs", args=["--threads", "1"]) as d:
            small = fixtures.seed_bytes("views_and_tied.pt")
            self.assertEqual(d.upload("jobs", small).status, 201)  # the index exists
            release = hold_index_writes(d, 4.0)
            t0 = time.monotonic()
            try:
                got = {}
                up = threading.Thread(target=lambda: got.update(
                    a=d.upload("jobs", small, params={"epoch": 2}), t=time.monotonic() - t0))
                up.start()
                time.sleep(0.6)  # its body is in; its commit waits for the index
                a = raw(d.port, b"GET " + API.encode() + b"/healthz HTTP/1.1\r\nHost: t\r\n"
                        b"Connection: close\r\n\r\n", timeout=20)
                pending = up.is_alive()
            finally:
                release()
            up.join(30)
            self.assertEqual(got["a"].status, 201, got["a"])
            self.assertEqual(got["a"].json()["epoch"], 2)
            self.assertGreater(got["t"], 3.0, "the upload did not wait for the index: the test "
                               "proves nothing")
            self.assertEqual(a.status, 200, a)
            self.assertTrue(pending, "the request on another connection was answered only "
                            "after the upload, whose commit held the thread")

    def test_sigterm_while_an_upload_ends_on_a_job_thread_answers_it_then_exits(self):
        """A stop waits for the jobs (MHD cannot stop with a connection
        suspended): the upload whose commit waited on the index is answered
        and stored, and the daemon exits 0."""
        d = ckptd.Daemon(name="jobstop", args=["--threads", "1"]).start()
        try:
            small = fixtures.seed_bytes("views_and_tied.pt")
            self.assertEqual(d.upload("jobstop", small).status, 201)
            release = hold_index_writes(d, 3.0)
            got = {}
            try:
                up = threading.Thread(target=lambda: got.update(
                    a=d.upload("jobstop", small, params={"epoch": 3})))
                up.start()
                time.sleep(0.6)
                d.proc.send_signal(signal.SIGTERM)
            finally:
                release()
            up.join(30)
            self.assertEqual(got["a"].status, 201, got.get("a"))
            self.assertEqual(d.stop(timeout=30), 0, d.log_tail())
            d2 = ckptd.Daemon(name="jobstop2", data_dir=d.data_dir).start()
            try:
                self.assertEqual(d2.get("/models/jobstop/checkpoints").json()["total"], 2)
            finally:
                d2.stop_checked()
        finally:
            d.cleanup()


def hold_index_writes(d, seconds):
    """Holds the write lock of d's index for `seconds` (taken when this
    returns): a SQLite write transaction, or on PostgreSQL a lock on the
    checkpoints table that lets reads through. Returns a function that waits
    for the release."""
    pg = ckptd.index_args(d.data_dir)
    if pg:
        p = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", pg[1], "-c",
                              "BEGIN; LOCK TABLE checkpoints IN EXCLUSIVE MODE; "
                              "SELECT pg_sleep(%.1f); COMMIT;" % seconds],
                             stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # connected and locked (pg_sleep outlasts this)
        return lambda: p.wait(seconds + 30)
    con = sqlite3.connect(os.path.join(d.data_dir, "index.sqlite"), timeout=10,
                          isolation_level=None, check_same_thread=False)
    con.execute("BEGIN IMMEDIATE")
    t = threading.Timer(seconds, lambda: (con.execute("COMMIT"), con.close()))
    t.start()
    return t.join


# -- 2. requests that got no answer ------------------------------------------


class RequestsWithNoAnswer(unittest.TestCase):
    def test_a_query_of_2000_arguments_is_431_json_and_closed(self):
        a = raw(D.port, many_args_request(2000))
        assert_json_error_and_closed(self, a, 431, "2,000 query arguments")

    def test_transfer_encoding_gzip_is_501_json_and_closed(self):
        a = raw(D.port, GZIP_REQUEST)
        assert_json_error_and_closed(self, a, 501, "Transfer-Encoding: gzip")

    def test_an_upload_shorter_than_its_length_then_half_closed_is_400_json_and_closed(self):
        a = raw(D.port, short_upload_request(), half_close=True)
        j = assert_json_error_and_closed(self, a, 400, "short upload + half-close")
        self.assertIn("100000", j["message"])
        checks.error_json(self, D.get("/models/short/checkpoints"), 404, "nothing stored")

    def test_a_half_close_after_a_pause_in_the_body_is_400_too(self):
        s = connect(D.port)
        try:
            s.sendall(short_upload_request("pause"))
            time.sleep(0.5)
            s.shutdown(socket.SHUT_WR)
            a = read_answer(s)
        finally:
            s.close()
        assert_json_error_and_closed(self, a, 400, "short upload, pause, half-close")

    def test_300_such_requests_leave_no_socket_in_close_wait(self):
        kinds = [("short upload", short_upload_request(), True),
                 ("gzip", GZIP_REQUEST, False), ("2000 arguments", many_args_request(2000), False)]
        socks = []
        try:
            # 30 source addresses, 10 connections each: no per-address limit is hit
            for i in range(300):
                name, data, half = kinds[i % 3]
                s = connect(D.port, "127.0.4.%d" % (1 + i // 10))
                s.sendall(data)
                if half:
                    s.shutdown(socket.SHUT_WR)
                socks.append((name, s))
            got = {s: b"" for _, s in socks}
            poller = select.poll()  # select() stops at descriptor 1024
            for s in got:
                poller.register(s, select.POLLIN)
            by_fd = {s.fileno(): s for s in got}
            open_ = len(got)
            deadline = time.monotonic() + 10
            while open_ and time.monotonic() < deadline:
                for fd, _ev in poller.poll(500):
                    s = by_fd[fd]
                    try:
                        b = s.recv(65536)
                    except OSError as e:
                        b = b""
                        got[s] += b" <%s>" % type(e).__name__.encode()
                    if b:
                        got[s] += b
                        continue
                    got[s] += b" <EOF>"
                    poller.unregister(s)
                    open_ -= 1
            want = {"short upload": b"HTTP/1.1 400 ", "gzip": b"HTTP/1.1 501 ",
                    "2000 arguments": b"HTTP/1.1 431 "}
            bad = ["%s: %r...%r" % (name, got[s][:12], got[s][-30:]) for name, s in socks
                   if not (got[s].startswith(want[name]) and got[s].endswith(b" <EOF>"))]
            self.assertEqual(bad, [], "%d of 300 without their error and a close" % len(bad))
        finally:
            for _, s in socks:
                s.close()
        ok = wait_for(lambda: server_sockets_in(D.port, "08") == 0, 5)
        self.assertTrue(ok, "%d server sockets in CLOSE-WAIT"
                        % server_sockets_in(D.port, "08"))

    def test_sigterm_with_an_idle_half_closed_upload_pending_exits_within_seconds(self):
        d = ckptd.Daemon(name="term").start()
        socks = []
        try:
            s = connect(d.port)
            s.sendall(short_upload_request("halfclosed"))
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
            # and one that stalls without closing anything
            s = connect(d.port)
            s.sendall(short_upload_request("stalled"))
            socks.append(s)
            time.sleep(0.5)
            t0 = time.monotonic()
            code = d.stop(timeout=8)
            took = time.monotonic() - t0
            self.assertEqual(code, 0, d.log_tail())
            self.assertLess(took, 6.0, "SIGTERM took %.1fs" % took)
        finally:
            for s in socks:
                s.close()
            d.cleanup()

    def test_sigterm_still_lets_an_upload_that_keeps_sending_finish(self):
        # a guard: dropping silent uploads on stop must spare live ones
        d = ckptd.Daemon(name="live").start()
        try:
            s = connect(d.port, timeout=30)
            s.sendall(upload_head("live", len(SMALL), "?epoch=5"))
            pieces = [SMALL[i:i + 100] for i in range(0, len(SMALL), 100)]
            s.sendall(pieces[0])
            # the request is in flight once the daemon has read its head
            # (a slow build, e.g. under ASan, may take a moment)
            time.sleep(0.5)
            d.proc.send_signal(signal.SIGTERM)
            for p in pieces[1:]:  # ~3.5 s in all, never 2 s silent
                time.sleep(0.25)
                s.sendall(p)
            a = read_until_response(s, 30)
            s.close()
            self.assertIsNotNone(a)
            self.assertEqual(a.status, 201, a)
            self.assertEqual(a.json()["sha256"], ckptd.sha256_bytes(SMALL))
            self.assertEqual(d.stop(timeout=10), 0, d.log_tail())
        finally:
            d.cleanup()


# -- 3. threads --------------------------------------------------------------


class PendingUploads(unittest.TestCase):
    def test_1000_pending_uploads_do_not_make_2000_threads(self):
        d = ckptd.Daemon(name="pending").start()
        socks = []
        try:
            base = threads_of(d.pid)
            # 250 source addresses, 4 connections each
            for i in range(1000):
                s = connect(d.port, "127.0.%d.%d" % (10 + i // 250, 1 + i % 250), timeout=10)
                s.sendall(upload_head("pending", len(SMALL), "?epoch=%d" % i))
                socks.append(s)
            got = wait_for(lambda: spool_fds(d.pid, d.data_dir) >= 1000, 30, 0.2)
            self.assertTrue(got, "only %d of 1000 uploads begun" % spool_fds(d.pid, d.data_dir))
            n = threads_of(d.pid)
            self.assertLess(n, base + 64, "1000 pending uploads: %d threads (%d before)"
                            % (n, base))
            # ten of them now send their bodies, all at once: each is stored exactly
            results = [None] * 10

            def finish(k):
                s = socks[k * 97]
                s.settimeout(60)
                s.sendall(SMALL)
                results[k] = read_until_response(s)

            ts = [threading.Thread(target=finish, args=(k,)) for k in range(10)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(90)
            peak = threads_of(d.pid)
            for k, a in enumerate(results):
                self.assertIsNotNone(a, "upload %d: no answer" % k)
                self.assertEqual(a.status, 201, a)
                self.assertEqual(a.json()["sha256"], ckptd.sha256_bytes(SMALL))
                self.assertEqual(a.json()["epoch"], k * 97)
            self.assertLess(peak, base + 64, "%d threads with 1000 uploads" % peak)
        finally:
            for s in socks:
                s.close()
        try:
            self.assertTrue(wait_for(lambda: spool_fds(d.pid, d.data_dir) == 0, 20),
                            "%d spools still open" % spool_fds(d.pid, d.data_dir))
            got = d.get("/models/pending/checkpoints?limit=100")
            self.assertEqual(got.json()["total"], 10)
            d.stop_checked()
        finally:
            d.cleanup()


def read_until_response(s, timeout=60):
    """Reads one whole response (by Content-Length) without waiting for EOF."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            a = Answer(data, False)
            if len(a.body) >= int(a.header("content-length", "0")):
                return a
        b = s.recv(65536)
        if not b:
            return Answer(data, True)
        data += b
    return None


# -- 4. Range ----------------------------------------------------------------


def rfc_range(spec, size):
    """RFC 9110 14.1.2 for one range-spec in "bytes=...": (first, last)
    when valid and satisfiable, "416" when valid and unsatisfiable, None when
    invalid (then the header is to be ignored)."""
    if not spec.lower().startswith("bytes="):
        return None
    s = spec[6:]
    digits = set("0123456789")
    if s.startswith("-"):
        n = s[1:]
        if not n or set(n) - digits:
            return None
        n = int(n)
        if n == 0 or size == 0:
            return "416"
        return (max(0, size - n), size - 1)
    a, sep, b = s.partition("-")
    if not sep or not a or set(a) - digits or set(b) - digits:
        return None
    a = int(a)
    if b and int(b) < a:
        return None
    if a >= size:
        return "416"
    last = min(int(b), size - 1) if b else size - 1
    return (a, last)


class Ranges(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = fixtures.seed_bytes("tutorial_state_dict.pt")
        cls.size = len(cls.data)
        j = D.upload_ok("ranges", cls.data, {"epoch": 1})
        cls.url = "/models/ranges/checkpoints/%d/file" % j["id"]

    def check(self, spec):
        r = D.get(self.url, headers={"Range": spec})
        want = rfc_range(spec, self.size)
        what = "Range %r" % spec
        if r.status == 200:
            self.assertEqual(r.body, self.data, what)
            return r.status
        if r.status == 416:
            self.assertNotIsInstance(want, tuple, "%s: a satisfiable range answered 416" % what)
            checks.error_json(self, r, 416, what)
            self.assertEqual(r.header("Content-Range"), "bytes */%d" % self.size, what)
            return r.status
        self.assertEqual(r.status, 206, "%s: %r" % (what, r))
        self.assertIsInstance(want, tuple, "%s is not a valid range but answered 206 %s"
                              % (what, r.header("Content-Range")))
        a, b = want
        self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (a, b, self.size), what)
        self.assertEqual(r.body, self.data[a:b + 1], what)
        return r.status

    def test_ranges_rfc_9110_does_not_allow_are_ignored_or_416(self):
        n = self.size
        bad = ["bytes=--1", "bytes=-18446744073709551616", "bytes= 0-1", "bytes=+1-2",
               "bytes=0-+1", "bytes=1--2", "bytes=0x10-20", "bytes=-0x5", "bytes=5-3",
               "bytes=-", "bytes=", "bytes=-+5", "bytes=1-2-3", "bytes=18446744073709551616-",
               "bytes=0-18446744073709551616", "bytes=99999999999999999999999-1",
               "bytes=%d-" % n, "bytes=-0", "bytes=1 -2", "bytes=1- 2", "bytes=0-1,",
               "bytes=0-1,5-6", "items=0-1", "bytes=\t1-2"]
        for spec in bad:
            with self.subTest(spec=spec):
                self.check(spec)

    def test_valid_ranges_still_answer_206(self):
        n = self.size
        for spec in ["bytes=0-0", "bytes=0-99", "bytes=-10", "bytes=100-",
                     "bytes=%d-%d" % (n - 1, n + 5), "bytes=-%d" % (n + 10), "Bytes=1-2",
                     "bytes=00-09"]:
            with self.subTest(spec=spec):
                self.assertEqual(self.check(spec), 206, spec)


# -- 5. query arguments --------------------------------------------------------


class QueryArguments(unittest.TestCase):
    def test_500_arguments_are_all_kept(self):
        q = [("x%d" % i, "1") for i in range(499)] + [("epoch", "7")]
        j = D.upload_ok("args-kept", SMALL, q)
        self.assertEqual(j["epoch"], 7)

    def test_arguments_past_the_limit_refuse_the_request_instead_of_being_dropped(self):
        for n in (513, 600, 2000):
            with self.subTest(n=n):
                q = [("x%d" % i, "1") for i in range(n - 1)] + [("epoch", "9")]
                r = D.upload("args-%d" % n, SMALL, q)
                checks.error_json(self, r, (431, 400), "%d query arguments" % n)
                checks.error_json(self, D.get("/models/args-%d/checkpoints" % n), 404,
                                  "nothing stored")

    def test_plus_and_percent_escapes_in_arguments_still_decode(self):
        q = "?tag=a+b&tag=c%2Fd&run=r%2D1&epoch=3&tag=%C3%A9"
        r = D.request("POST", "/models/args-esc/checkpoints" + q, body=SMALL,
                      headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 201, r)
        j = r.json()
        self.assertEqual(sorted(j["tags"]), sorted(["a b", "c/d", "\u00e9"]))
        self.assertEqual(j["run"], "r-1")
        self.assertEqual(j["epoch"], 3)


if __name__ == "__main__":
    harness.main()
