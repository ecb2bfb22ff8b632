#!/usr/bin/env python3
"""ckptd_client: the training-side client for a ckptd checkpoint server.

Standard library only; torch is imported when a method needs it (save, load),
so `push`, `pull` and `list` from the command line work under any python3.

    from ckptd_client import Client
    c = Client("http://127.0.0.1:8080", token=None)
    ck = c.save({"epoch": 3, "model_state_dict": model.state_dict(),
                 "optimizer_state_dict": opt.state_dict()},
                "resnet", epoch=3, loss=0.41, metrics={"acc": 0.87})
    model.load_state_dict(c.load("resnet", ref="best", root="/model_state_dict"))

Streaming. save() hands torch.save a file-like writer that sends each write as
one HTTP/1.1 chunk (Transfer-Encoding: chunked) on the open connection. torch's
zip writer calls write() strictly in file order, with a memoryview on the
tensor's own storage, so the file is never built in memory: the client's
memory grows by a 1 MiB coalescing buffer for the small records, not by the
checkpoint's size. The SHA-256 of the bytes sent is checked against the one
the server reports.

Retries. Connection errors and 503 answers are retried with exponential
backoff (retries=4: waits of 0.5, 1, 2, 4 s). A streamed save cannot be
replayed from a buffer, so a retried save runs torch.save(obj) again into a
new request. An upload is retried only when the server cannot have stored it:
the connection failed before the whole body was sent, or the server answered
503. When the body was sent whole and the connection broke before the answer,
the upload may have been stored; retrying could make a duplicate checkpoint,
so CkptdConnectionError is raised instead (check with list()). Reads are
retried on any connection error.

Errors. Every non-2xx answer raises CkptdError with .status (HTTP status),
.code and .message (the server's JSON {"error", "message"}). Connection
failures that outlast the retries raise CkptdConnectionError (status None).

load() streams the state_dict into an anonymous temporary file (in $TMPDIR)
and torch.load()s it from there with weights_only=True, so memory holds the
loaded tensors only, never a second copy of the file.

Command line (URL from --url, $CKPTD_URL or http://127.0.0.1:8080; token from
--token or $CKPTD_TOKEN):

    python3 ckptd_client.py push ckpt.pth --model M [--epoch N --step S --loss L
        --run R --metric acc=0.9 --tag nightly --pin]
    python3 ckptd_client.py pull --model M [--ref best] [--root /model_state_dict]
        [--keys 'conv*'] [-o out.pth] [--format pth|safetensors] [--run R]
    python3 ckptd_client.py list --model M [--run R] [--order loss] [--limit N]
"""

import argparse
import hashlib
import http.client
import json
import os
import select
import socket
import sys
import tempfile
import time
import urllib.parse

__all__ = ["Client", "CkptdError", "CkptdConnectionError"]

API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8080"
_COALESCE = 1 << 20  # small writes are gathered into chunks of up to 1 MiB
_DIRECT = 256 << 10  # writes this large are sent as their own chunk, uncopied
_READ = 1 << 20


class CkptdError(Exception):
    """An error answer from ckptd: .status (HTTP), .code, .message."""

    def __init__(self, status, code, message, method=None, path=None):
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        where = "%s %s: " % (method, path) if method else ""
        if status is None:
            super().__init__("%s%s" % (where, message))
        else:
            super().__init__("%sHTTP %s %s: %s" % (where, status, code, message))


class CkptdConnectionError(CkptdError):
    """The server could not be reached (after the retries) or the connection
    broke; .status is None."""

    def __init__(self, message, method=None, path=None):
        super().__init__(None, "connection", message, method, path)


class _Retry(Exception):
    """Internal: this attempt failed in a way that is safe to retry."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why


def _error_from(status, body, method, path):
    code, message = "http_%d" % status, ""
    try:
        j = json.loads(body.decode("utf-8"))
        code = j.get("error") or code
        message = j.get("message") or ""
    except Exception:
        message = body[:500].decode("utf-8", "replace").strip()
    return CkptdError(status, code, message or http.client.responses.get(status, ""),
                      method, path)


class _ChunkedWriter:
    """A write-only file for torch.save: each write() goes out as HTTP chunks.

    Writes below _DIRECT bytes are coalesced; larger ones are sent straight
    from the caller's buffer (torch passes a memoryview on the storage). A
    send failure is remembered and re-raised, since torch would otherwise
    report it as its own error."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.sent = 0
        self.sha = hashlib.sha256()
        self.error = None

    def _send_chunk(self, data, n):
        self.sock.sendall(b"%x\r\n" % n)
        self.sock.sendall(data)
        self.sock.sendall(b"\r\n")

    def _flush_buf(self):
        if self.buf:
            self._send_chunk(self.buf, len(self.buf))
            self.buf = bytearray()

    def write(self, data):
        if self.error is not None:
            raise self.error
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = mv.nbytes
        if n == 0:
            return 0
        try:
            self.sha.update(mv)
            if n >= _DIRECT:
                self._flush_buf()
                self._send_chunk(mv, n)
            else:
                self.buf += mv
                if len(self.buf) >= _COALESCE:
                    self._flush_buf()
        except OSError as e:
            self.error = e
            raise
        finally:
            mv.release()
        self.sent += n
        return n

    def flush(self):
        # torch calls flush() when its zip is complete; the terminating chunk
        # is sent by finish() so that a failed torch.save never ends a body.
        pass

    def finish(self):
        self._flush_buf()
        self.sock.sendall(b"0\r\n\r\n")

    def writable(self):
        return True

    def seekable(self):
        return False


class Client:
    """A ckptd client. url: "http://host:port" (a path prefix is kept; a
    trailing /api/v1 is accepted). token: a bearer token for writes (and reads
    under --auth-read). timeout: seconds per socket operation. retries: how
    many times a connection error or 503 is retried. Not thread-safe to share
    across threads only in the sense that each call opens its own connection:
    calls from several threads are fine."""

    def __init__(self, url=None, token=None, timeout=600, retries=4, backoff=0.5):
        url = url or os.environ.get("CKPTD_URL") or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError("ckptd url must be http:// or https://, not %r" % url)
        self.url = url
        self.scheme = u.scheme
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        prefix = u.path.rstrip("/")
        if prefix.endswith(API):
            prefix = prefix[: -len(API)]
        self.prefix = prefix + API
        self.token = token if token is not None else os.environ.get("CKPTD_TOKEN") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    # -- plumbing ---------------------------------------------------------

    def _conn(self):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def _path(self, path, params=None):
        q = ""
        if params:
            items = []
            for k, v in params.items():
                if v is None:
                    continue
                if isinstance(v, (list, tuple)):
                    items.extend((k, str(x)) for x in v)
                else:
                    items.append((k, str(v)))
            if items:
                q = "?" + urllib.parse.urlencode(items)
        return self.prefix + path + q

    def _headers(self, extra=None):
        h = {"User-Agent": "ckptd-client/1", "Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        h.update(extra or {})
        return h

    def _with_retries(self, method, path, attempt):
        """Runs attempt() until it returns, retrying on _Retry with backoff."""
        delay = self.backoff
        for i in range(self.retries + 1):
            try:
                return attempt()
            except _Retry as r:
                if i == self.retries:
                    raise CkptdConnectionError(
                        "%s (gave up after %d attempts)" % (r.why, i + 1), method, path)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _check(r, body, method, path):
        if r.status == 503:
            raise _Retry("HTTP 503: %s" % body[:200].decode("utf-8", "replace"))
        if r.status >= 300:
            raise _error_from(r.status, body, method, path)

    def _request(self, method, path, params=None, body=None, headers=None):
        """A small request with retries -> (status, headers, body bytes)."""
        url = self._path(path, params)
        h = self._headers(headers)
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"

        def attempt():
            c = self._conn()
            try:
                c.request(method, url, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as e:
                raise _Retry("%s: %s" % (type(e).__name__, e))
            finally:
                c.close()
            self._check(r, data, method, url)
            return r.status, r.headers, data

        return self._with_retries(method, url, attempt)

    def _json(self, method, path, params=None, body=None):
        status, _h, data = self._request(method, path, params, body)
        if status == 204 or not data:
            return None
        return json.loads(data.decode("utf-8"))

    def _download(self, path, params, out):
        """GETs path streaming into the binary file out -> (headers, bytes
        written). A retry after bytes were written rewinds out when it is
        seekable, else raises CkptdConnectionError."""
        url = self._path(path, params)
        h = self._headers({"Accept": "*/*"})

        start = out.tell() if _seekable(out) else None
        dirty = [False]

        def attempt():
            if dirty[0]:
                if start is None:
                    raise CkptdConnectionError("the download broke and %r cannot be "
                                               "rewound to retry" % out, "GET", url)
                out.seek(start)
                out.truncate()
            c = self._conn()
            try:
                try:
                    c.request("GET", url, headers=h)
                    r = c.getresponse()
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry("%s: %s" % (type(e).__name__, e))
                if r.status >= 300:
                    self._check(r, r.read(), "GET", url)
                n = 0
                try:
                    while True:
                        b = r.read(_READ)
                        if not b:
                            break
                        dirty[0] = True
                        out.write(b)
                        n += len(b)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry("download broke after %d bytes: %s: %s"
                                 % (n, type(e).__name__, e))
                want = r.getheader("Content-Length")
                if want is not None and int(want) != n:
                    raise _Retry("download ended after %d of %s bytes" % (n, want))
                return r.headers, n
            finally:
                c.close()

        return self._with_retries("GET", url, attempt)

    @staticmethod
    def _meta(epoch, step, loss, run, metrics, tags, pin):
        p = {"epoch": epoch, "step": step, "run": run}
        if loss is not None:
            p["loss"] = repr(float(loss))
        for k, v in (metrics or {}).items():
            p["metric." + k] = repr(float(v))
        if tags:
            p["tag"] = [tags] if isinstance(tags, str) else list(tags)
        if pin:
            p["pin"] = 1
        return p

    def _wait_continue(self, c, wait):
        """After sending headers with Expect: 100-continue, waits up to wait
        seconds for the server's interim answer. Returns None to go on sending
        (100 Continue seen, or no answer in time, as curl does) or the early
        final response (e.g. 401, 404) when the server refused the request."""
        sock = c.sock
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return None
        head = b""
        deadline = time.monotonic() + max(wait, 5.0)
        while b"\r\n" not in head and len(head) < 64:  # the whole status line
            head = sock.recv(64, socket.MSG_PEEK)
            if not head:
                raise _Retry("the server closed the connection before the body")
            if b"\r\n" not in head and time.monotonic() > deadline:
                break
            if b"\r\n" not in head:
                time.sleep(0.005)
        parts = head.split(None, 2)
        if len(parts) >= 2 and parts[1] == b"100":
            # consume "HTTP/1.1 100 Continue\r\n...\r\n" exactly
            buf = b""
            while not buf.endswith(b"\r\n\r\n"):
                b = sock.recv(1)
                if not b:
                    raise _Retry("the server closed the connection after 100")
                buf += b
            return None
        return c.getresponse()

    def _upload(self, model, params, send_body, headers):
        """One streamed upload with retries. send_body(sock) sends the body
        and returns the hex SHA-256 of what it sent (or None)."""
        url = self._path("/models/%s/checkpoints" % _q(model), params)
        h = self._headers(headers)
        h["Expect"] = "100-continue"

        def attempt():
            c = self._conn()
            try:
                try:
                    c.putrequest("POST", url, skip_accept_encoding=True)
                    for k, v in h.items():
                        c.putheader(k, v)
                    c.endheaders()
                    early = self._wait_continue(c, 1.0)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry("%s: %s" % (type(e).__name__, e))
                if early is not None:
                    self._check(early, early.read(), "POST", url)
                    raise CkptdError(early.status, "unexpected",
                                     "the server answered before the body", "POST", url)
                try:
                    sha = send_body(c.sock)
                except (OSError, http.client.HTTPException) as e:
                    # The server may have refused mid-body (413, 422): read its answer.
                    try:
                        r = c.getresponse()
                        data = r.read()
                    except Exception:
                        raise _Retry("upload broke while sending: %s: %s"
                                     % (type(e).__name__, e))
                    self._check(r, data, "POST", url)
                    raise _Retry("upload broke while sending: %s" % e)
                try:
                    r = c.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException) as e:
                    raise CkptdConnectionError(
                        "the whole checkpoint was sent but the connection broke before "
                        "the answer (%s: %s); it may have been stored: check list() "
                        "before saving it again" % (type(e).__name__, e), "POST", url)
            finally:
                c.close()
            self._check(r, data, "POST", url)
            j = json.loads(data.decode("utf-8"))
            if sha and j.get("sha256") and j["sha256"] != sha:
                raise CkptdError(r.status, "sha256_mismatch",
                                 "the server stored SHA-256 %s but %s was sent"
                                 % (j["sha256"], sha), "POST", url)
            return j

        return self._with_retries("POST", url, attempt)

    # -- checkpoints ------------------------------------------------------

    def save(self, obj, model, epoch=None, step=None, loss=None, run=None, metrics=None,
             tags=None, pin=False):
        """torch.save(obj) streamed to the server as a new checkpoint of model.

        epoch/step (int), loss (float), run (name), metrics ({name: float}),
        tags (list of str), pin (never removed by retention). Returns the
        server's checkpoint JSON (dict: id, sha256, dedup, ...). The file is
        never held in memory (see the module docstring); on a retry torch.save
        runs again. Raises CkptdError on an error answer."""
        import torch

        params = self._meta(epoch, step, loss, run, metrics, tags, pin)

        def send_body(sock):
            w = _ChunkedWriter(sock)
            try:
                torch.save(obj, w)
            except Exception:
                if w.error is not None:
                    raise w.error
                raise
            w.finish()
            return w.sha.hexdigest()

        return self._upload(model, params, send_body, {
            "Content-Type": "application/octet-stream",
            "Transfer-Encoding": "chunked",
        })

    def save_file(self, path, model, epoch=None, step=None, loss=None, run=None,
                  metrics=None, tags=None, pin=False):
        """Uploads an existing checkpoint file (torch zip or safetensors),
        streamed from disk with a Content-Length. Same fields and answer as
        save()."""
        params = self._meta(epoch, step, loss, run, metrics, tags, pin)
        size = os.path.getsize(path)

        def send_body(sock):
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                while True:
                    b = f.read(_READ)
                    if not b:
                        break
                    sha.update(b)
                    sock.sendall(b)
            return sha.hexdigest()

        return self._upload(model, params, send_body, {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        })

    def load(self, model, ref="best", root=None, keys=None, map_location="cpu", run=None):
        """A state_dict (dict name -> tensor) from checkpoint ref ("best",
        "latest" or an id) of model, built by the server's /state_dict:
        root is a JSON Pointer into the checkpoint ("/model_state_dict"; by
        default the server picks the state_dict), keys a list of globs or a
        comma-separated string ("conv*,fc.weight"), run narrows best/latest.
        The file is streamed to a temporary file, then loaded with
        torch.load(weights_only=True, map_location=map_location)."""
        import torch

        with tempfile.TemporaryFile(prefix="ckptd-") as f:
            self.pull_state_dict(model, f, ref=ref, root=root, keys=keys, run=run)
            f.seek(0)
            return torch.load(f, map_location=map_location, weights_only=True)

    def pull_state_dict(self, model, out, ref="best", root=None, keys=None, fmt="pth",
                        run=None):
        """Streams /state_dict into out (a path or a binary file object) ->
        bytes written. fmt "pth" or "safetensors". A path is written to a
        temporary name and renamed when complete."""
        if keys is not None and not isinstance(keys, str):
            keys = ",".join(keys)
        params = {"root": root, "keys": keys, "run": run,
                  "format": None if fmt in (None, "pth") else fmt}
        path = "/models/%s/checkpoints/%s/state_dict" % (_q(model), _q(str(ref)))
        return self._to(out, path, params)

    def pull_file(self, model, out, ref="best", run=None):
        """Streams the checkpoint's original upload (byte for byte) into out
        (path or binary file) -> bytes written."""
        path = "/models/%s/checkpoints/%s/file" % (_q(model), _q(str(ref)))
        return self._to(out, path, {"run": run})

    def _to(self, out, path, params):
        if hasattr(out, "write"):
            return self._download(path, params, out)[1]
        d = os.path.dirname(os.path.abspath(out))
        fd, tmp = tempfile.mkstemp(prefix=".ckptd-", dir=d)
        try:
            with os.fdopen(fd, "w+b") as f:
                n = self._download(path, params, f)[1]
            os.replace(tmp, out)
            tmp = None
            return n
        finally:
            if tmp:
                os.unlink(tmp)

    def list(self, model, run=None, epoch=None, tag=None, order=None, limit=None, offset=None):
        """The model's checkpoints (a list of dicts), filtered and ordered as
        the server's list (order: created, epoch, loss, -loss, metric.NAME)."""
        j = self._json("GET", "/models/%s/checkpoints" % _q(model),
                       {"run": run, "epoch": epoch, "tag": tag, "order": order,
                        "limit": limit, "offset": offset})
        return j["checkpoints"]

    def get(self, model, ref="latest", run=None, metric=None, mode=None):
        """One checkpoint's JSON, with its tensor list."""
        return self._json("GET", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))),
                          {"run": run, "metric": metric, "mode": mode})

    def best(self, model, metric=None, mode=None, run=None):
        """The best checkpoint's JSON: lowest loss, or by metric with mode
        "min"/"max"."""
        return self.get(model, "best", run=run, metric=metric, mode=mode)

    def delete(self, model, ref):
        """Deletes checkpoint ref; blobs nothing else uses are freed."""
        self._json("DELETE", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))))

    def update(self, model, ref, loss=None, metrics=None, tags=None, pinned=None):
        """PATCH: sets loss, metrics, tags or pinned -> the checkpoint's JSON."""
        body = {k: v for k, v in (("loss", loss), ("metrics", metrics), ("tags", tags),
                                  ("pinned", pinned)) if v is not None}
        return self._json("PATCH", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))),
                          body=body)

    # -- models and the store ---------------------------------------------

    def models(self):
        return self._json("GET", "/models")["models"]

    def delete_model(self, model):
        self._json("DELETE", "/models/%s" % _q(model))

    def set_retention(self, model, keep_best=0, keep_last=0, metric="loss", mode="min"):
        """Sets the model's retention policy (applied now and after every
        upload; pinned checkpoints survive) -> the stored policy."""
        return self._json("PUT", "/models/%s/retention" % _q(model),
                          body={"keep_best": keep_best, "keep_last": keep_last,
                                "metric": metric, "mode": mode})

    def retention(self, model):
        return self._json("GET", "/models/%s/retention" % _q(model))

    def stats(self):
        return self._json("GET", "/stats")


def _seekable(f):
    try:
        return f.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def _q(s):
    return urllib.parse.quote(s, safe="")


# -- command line -------------------------------------------------------------


def _metric(s):
    name, sep, v = s.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("a metric is name=value, not %r" % s)
    try:
        return name, float(v)
    except ValueError:
        raise argparse.ArgumentTypeError("metric %r: %r is not a number" % (name, v))


def _fmt_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1000.0


def _cli(argv=None):
    ap = argparse.ArgumentParser(
        prog="ckptd_client.py", description="Push checkpoints to and pull state_dicts "
        "from a ckptd server.")
    ap.add_argument("--url", default=None,
                    help="server URL (default $CKPTD_URL or %s)" % DEFAULT_URL)
    ap.add_argument("--token", default=None, help="bearer token (default $CKPTD_TOKEN)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="server URL (default $CKPTD_URL or %s)" % DEFAULT_URL)
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (default $CKPTD_TOKEN)")
    common.add_argument("--model", "-m", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("push", parents=[common], help="upload a checkpoint file")
    p.add_argument("file")
    p.add_argument("--epoch", type=int)
    p.add_argument("--step", type=int)
    p.add_argument("--loss", type=float)
    p.add_argument("--run")
    p.add_argument("--metric", type=_metric, action="append", default=[],
                   help="name=value (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="repeatable")
    p.add_argument("--pin", action="store_true", help="never removed by retention")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")

    p = sub.add_parser("pull", parents=[common], help="download a state_dict")
    p.add_argument("--ref", default="best", help="best (default), latest or an id")
    p.add_argument("--root", help="JSON Pointer of the state_dict, e.g. /model_state_dict")
    p.add_argument("--keys", help="comma-separated globs, e.g. 'conv*,fc.weight'")
    p.add_argument("--run")
    p.add_argument("--format", choices=("pth", "safetensors"), default="pth")
    p.add_argument("-o", "--output", help="file to write (default MODEL-REF.pth)")

    p = sub.add_parser("list", parents=[common], help="list a model's checkpoints")
    p.add_argument("--run")
    p.add_argument("--order", help="created, epoch, loss, -loss, metric.NAME")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true", help="print the JSON list")

    a = ap.parse_args(argv)
    c = Client(a.url, token=a.token)
    try:
        if a.cmd == "push":
            j = c.save_file(a.file, a.model, epoch=a.epoch, step=a.step, loss=a.loss,
                            run=a.run, metrics=dict(a.metric), tags=a.tag, pin=a.pin)
            if a.json:
                print(json.dumps(j, indent=2))
            else:
                d = j.get("dedup") or {}
                print("stored %s checkpoint %s (run %s, epoch %s): %s, %s tensors, "
                      "%s new in the store"
                      % (j["model"], j["id"], j["run"], j["epoch"], _fmt_size(j["size"]),
                         j["tensor_count"], _fmt_size(d.get("new_bytes", 0))))
        elif a.cmd == "pull":
            ext = ".safetensors" if a.format == "safetensors" else ".pth"
            out = a.output or "%s-%s%s" % (a.model, a.ref, ext)
            n = c.pull_state_dict(a.model, out if out != "-" else sys.stdout.buffer,
                                  ref=a.ref, root=a.root, keys=a.keys, fmt=a.format,
                                  run=a.run)
            if out != "-":
                print("wrote %s (%s)" % (out, _fmt_size(n)), file=sys.stderr)
        elif a.cmd == "list":
            items = c.list(a.model, run=a.run, order=a.order, limit=a.limit)
            if a.json:
                print(json.dumps(items, indent=2))
            else:
                print("%6s  %-12s %6s %8s %12s %10s  %-3s %s"
                      % ("id", "run", "epoch", "step", "loss", "size", "pin", "created"))
                for j in items:
                    print("%6s  %-12s %6s %8s %12s %10s  %-3s %s"
                          % (j["id"], j["run"], _dash(j.get("epoch")), _dash(j.get("step")),
                             _dash(j.get("loss"), "%.6g"), _fmt_size(j.get("size", 0)),
                             "yes" if j.get("pinned") else "", j.get("created_at", "")))
    except CkptdError as e:
        print("ckptd: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("ckptd: %s" % e, file=sys.stderr)
        return 1
    return 0


def _dash(v, fmt="%s"):
    return "-" if v is None else fmt % v


if __name__ == "__main__":
    sys.exit(_cli())
