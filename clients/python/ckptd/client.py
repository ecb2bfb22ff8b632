"""The training-side client for a ckptd checkpoint server.

Standard library only; torch is imported by the methods that need it (save,
load), so pushing, pulling and listing work under any python3.

    from ckptd import Client

    with Client("http://127.0.0.1:8080") as c:
        ck = c.save({"epoch": 3, "model_state_dict": model.state_dict(),
                     "optimizer_state_dict": opt.state_dict()},
                    "resnet", epoch=3, loss=0.41, metrics={"acc": 0.87})
        model.load_state_dict(c.load("resnet", "best", root="/model_state_dict"))

Defaults. Every method that reads one checkpoint (load, pull_state_dict,
pull_file, get, and the command line's pull and info) takes ref="latest" (the
most recent upload) unless told otherwise: "best" (lowest loss, or by metric),
or a checkpoint id. delete and update take no default: the caller names the
checkpoint.

Streaming. save() hands torch.save a file-like writer that sends each write as
one HTTP/1.1 chunk (Transfer-Encoding: chunked) on the open connection. torch's
zip writer calls write() strictly in file order, with a memoryview on the
tensor's own storage, so the file is never built in memory: the client's
memory grows by a 1 MiB coalescing buffer for the small records, not by the
checkpoint's size. The SHA-256 of the bytes sent is checked against the one
the server reports.

Directories. push_dir(model, path) uploads every file under path as one
checkpoint of several files (SPEC 3.2: a staged checkpoint, its files PUT by
up to `parallel` threads, each streamed from disk and thin when it is a torch
zip or safetensors file, then one commit); pull_dir(model, ref, path) writes
them back, each checked against its SHA-256 and renamed into place.

Uploads send "Expect: 100-continue" and wait up to a second for the server's
interim answer, so a refused write (401, 403, 404) costs no upload. The
interim answer is read from the connection byte by byte with plain recv()
calls, never recv(MSG_PEEK) or select() on the raw socket: both misbehave on
TLS sockets (an SSLSocket refuses recv flags, and its decrypted bytes may wait
in OpenSSL's buffer where select() does not see them).

Retries. Connection errors and 503 answers are retried with exponential
backoff (retries=4: waits of 0.5, 1, 2, 4 s); TLS errors (an untrusted
certificate) are not. A streamed save cannot be replayed from a buffer, so a
retried save runs torch.save(obj) again into a new request. An upload is
retried only when the server cannot have stored it: the connection failed
before the whole body was sent, or the server answered 503. When the body was
sent whole and the connection broke before the answer, the upload may have
been stored; retrying could make a duplicate checkpoint, so
CkptdConnectionError is raised instead (check with list()). The files of
push_dir are the exception: a file PUT again replaces the first, so they are
retried in that case too. Reads are retried on any connection error.

Connections. A Client keeps up to four idle keep-alive connections and reuses
them; close() (or leaving a with block) closes them. A connection the server
closed while it sat idle is replaced at once, without counting as a retry. A
Client may be shared by threads: each call takes its own connection.

TLS. https:// URLs verify the server's certificate against the system's CAs,
or against cafile= (a PEM file; also $CKPTD_CAFILE), or through an
ssl.SSLContext passed as ssl_context=.

Errors. Every non-2xx answer raises a CkptdError (see ckptd.errors for the
subclasses: NotFound, AuthError, InvalidRequest, ServerError) with .status,
.code and .message from the server's JSON. Connection failures that outlast
the retries raise CkptdConnectionError (status None), also a ConnectionError.

Logging. The logger "ckptd" reports retries (WARNING) and each request
(DEBUG); the library never prints.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import socket
import copy
import stat
import ssl
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
import tempfile
import threading
import time
import urllib.parse
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
    overload,
)

from ._version import __version__
from .errors import CkptdConnectionError, CkptdError, NotFound, error_from_body

if TYPE_CHECKING:
    import torch

__all__ = ["Client", "DEFAULT_URL", "DEFAULT_REF", "Checkpoint", "ProgressCallback",
           "SaveHandle"]

log = logging.getLogger("ckptd")

API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_REF = "latest"

Checkpoint = Dict[str, Any]
"""A checkpoint's JSON as the server answers it (id, model, run, epoch, ...)."""

ProgressCallback = Callable[[int, Optional[int]], None]
"""progress(bytes done, total bytes or None when unknown), called as a
transfer goes; ckptd.progress.TerminalProgress draws one on a terminal."""

Ref = Union[int, str]
PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]
T = TypeVar("T")

_COALESCE = 1 << 20  # small writes are gathered into chunks of up to 1 MiB
_DIRECT = 256 << 10  # writes this large are sent as their own chunk, uncopied
_READ = 1 << 20
_MAX_IDLE = 4  # idle keep-alive connections kept per Client
_CONTINUE_WAIT = 1.0  # seconds to wait for "100 Continue", as curl does
_MAX_LINE = 65536  # longest status or header line read by hand
_THIN_MIN = 4096  # storages smaller than this always go as literal bytes
_THIN_SHARE = 16  # a thin upload only when references stand for >= 1/16 of the storages' bytes
_MISSING_BATCH = 100000  # hashes per POST /blobs/missing (the server's limit)
_SAMPLE_RUN = 64  # a storage's sample: runs of 64 bytes ...
_SAMPLE_RUNS = 64  # ... spread evenly over it (4 KiB in all)
_SAMPLES_MAX = 1 << 16  # storages whose sample a process remembers


class _Retry(Exception):
    """Internal: this attempt failed in a way that is safe to retry.

    stale: it failed before any answer came, so on a reused keep-alive
    connection the server had just closed it (retried at once, uncounted).
    final: retrying cannot help (a TLS failure); raise at once.
    error: the answer to raise when the retries run out (a 503)."""

    def __init__(
        self,
        why: str,
        *,
        stale: bool = False,
        final: bool = False,
        error: Optional[CkptdError] = None,
    ) -> None:
        super().__init__(why)
        self.why = why
        self.stale = stale
        self.final = final
        self.error = error


def _retry_for(e: BaseException, *, stale: bool = False, what: str = "") -> _Retry:
    final = isinstance(e, ssl.SSLError) and not isinstance(
        e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
    )
    why = "%s%s: %s" % (what, type(e).__name__, e)
    r = _Retry(why, stale=stale, final=final)
    r.__cause__ = e
    return r


# An answer arriving as EOF or a reset on a reused connection means the server
# closed it while it sat idle.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _ChunkedWriter:
    """A write-only file for torch.save: each write() goes out as HTTP chunks.

    Writes below _DIRECT bytes are coalesced; larger ones are sent straight
    from the caller's buffer (torch passes a memoryview on the storage). A
    send failure is remembered and re-raised, since torch would otherwise
    report it as its own error."""

    def __init__(self, sock: socket.socket, progress: Optional[ProgressCallback]) -> None:
        self.sock = sock
        self.progress = progress
        self.buf = bytearray()
        self.sent = 0
        self.sha = hashlib.sha256()
        self.error: Optional[OSError] = None

    def _send_chunk(self, data: Union[bytes, bytearray, memoryview], n: int) -> None:
        self.sock.sendall(b"%x\r\n" % n)
        self.sock.sendall(data)
        self.sock.sendall(b"\r\n")

    def _flush_buf(self) -> None:
        if self.buf:
            self._send_chunk(self.buf, len(self.buf))
            self.buf = bytearray()

    def write(self, data: Any) -> int:
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
            self._put(mv, n)
        except OSError as e:
            self.error = e
            raise
        finally:
            mv.release()
        self.sent += n
        if self.progress is not None:
            self.progress(self.sent, None)
        return n

    def _put(self, mv: memoryview, n: int) -> None:
        """Sends n bytes of the file (coalesced when small)."""
        if n >= _DIRECT:
            self._flush_buf()
            self._send_chunk(mv, n)
        else:
            self.buf += mv
            if len(self.buf) >= _COALESCE:
                self._flush_buf()

    def flush(self) -> None:
        # torch calls flush() when its zip is complete; the terminating chunk
        # is sent by finish() so that a failed torch.save never ends a body.
        pass

    def finish(self) -> None:
        self._flush_buf()
        self.sock.sendall(b"0\r\n\r\n")

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def save(self, obj: Any) -> None:
        """torch.save(obj) into this writer; a failed send is raised as
        itself, not as the error torch makes of it."""
        import torch

        try:
            torch.save(obj, cast(BinaryIO, self))
        except Exception:
            if self.error is not None:
                raise self.error
            raise

    @property
    def body_bytes(self) -> int:
        """The bytes of the request body so far (the file's, for this writer)."""
        return self.sent


class _ThinWriter(_ChunkedWriter):
    """torch.save's output as thin-upload frames (SPEC 3.1), sent as HTTP
    chunks: a write that is exactly a storage the server already has (refs
    maps (address, nbytes) of the storage's memory to its SHA-256) goes as an
    R frame of 41 bytes; every other byte goes in L frames; finish() ends
    with E and the SHA-256 of the whole file. torch writes each storage's
    data as one write() of a memoryview on the storage itself, which is what
    makes the address a key. self.sent counts the file's bytes, self.wire
    the bytes of frames."""

    def __init__(self, sock: socket.socket, progress: Optional[ProgressCallback],
                 refs: Mapping[Tuple[int, int], bytes]) -> None:
        super().__init__(sock, progress)
        self.refs = refs
        self.sizes = {n for _a, n in refs}
        self.lit = bytearray()
        self.wire = 0

    def _emit(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Sends frame bytes as the plain writer sends file bytes."""
        mv = memoryview(data)
        self.wire += mv.nbytes
        _ChunkedWriter._put(self, mv, mv.nbytes)

    def _flush_lit(self) -> None:
        if self.lit:
            self._emit(b"L" + struct.pack("<Q", len(self.lit)))
            self._emit(self.lit)
            self.lit = bytearray()

    def _ref_of(self, mv: memoryview) -> Optional[bytes]:
        n = mv.nbytes
        if n < _THIN_MIN or n not in self.sizes:
            return None
        import numpy
        addr = int(numpy.frombuffer(mv, dtype=numpy.uint8).ctypes.data)
        return self.refs.get((addr, n))

    def _put(self, mv: memoryview, n: int) -> None:
        h = self._ref_of(mv)
        if h is not None:
            self._flush_lit()
            self._emit(b"R" + struct.pack("<Q", n) + h)
        elif n >= _DIRECT:
            self._flush_lit()
            self._emit(b"L" + struct.pack("<Q", n))
            self._emit(mv)
        else:
            self.lit += mv
            if len(self.lit) >= _COALESCE:
                self._flush_lit()

    def finish(self) -> None:
        self._flush_lit()
        self._emit(b"E" + struct.pack("<Q", 32) + self.sha.digest())
        super().finish()

    @property
    def body_bytes(self) -> int:
        return self.wire


def _body_writer(sock: socket.socket, progress: Optional[ProgressCallback],
                 refs: Mapping[Tuple[int, int], bytes]) -> _ChunkedWriter:
    """The writer torch.save streams a request body into: thin frames when
    some storages are stored (refs), else the plain file."""
    return _ThinWriter(sock, progress, refs) if refs else _ChunkedWriter(sock, progress)


def _storages(obj: Any, names: Optional[Dict[Tuple[int, int], str]] = None,
              ) -> List[Tuple[int, int, Any]]:
    """(address, nbytes, uint8 tensor on it) of the CPU storages of the
    tensors in obj's dicts, lists and tuples (a state_dict, a checkpoint dict
    with model and optimizer state), each once. Other objects are not looked
    into (an nn.Module saved whole, say): their storages go as literal bytes,
    and no __reduce__ of theirs runs an extra time. Storages on other
    devices are left out (torch.save copies them to host memory first, at an
    address not known here). names, when given, gets each storage's name:
    the path of keys and indices to the first tensor met on it."""
    import torch

    found: Dict[Tuple[int, int], Any] = {}
    seen = set()
    todo: List[Tuple[Any, str]] = [(obj, "")]
    while todo:
        x, path = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            if x.layout != torch.strided or x.is_quantized:
                continue
            u = x.untyped_storage() if hasattr(x, "untyped_storage") else x.storage().untyped()
            if u.device.type == "cpu" and u.nbytes() >= _THIN_MIN:
                key = (u.data_ptr(), u.nbytes())
                found[key] = torch.empty(0, dtype=torch.uint8).set_(u)
                if names is not None:
                    names.setdefault(key, path)
        elif isinstance(x, dict):
            todo.extend((v, "%s/%s" % (path, k)) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            todo.extend((v, "%s/%d" % (path, i)) for i, v in enumerate(x))
    return [(a, n, t) for (a, n), t in found.items()]


class _Samples:
    """What each storage a save sent looked like: a digest of 4 KiB spread
    over its bytes, by a name that follows it from save to save (the server,
    the model and the tensor's path), and the set of digests of everything
    this process sent to each server. A storage whose digest differs from
    its name's last one, and that this process never sent to the server
    otherwise, has changed into bytes the server is unlikely to hold: a thin
    save sends it without hashing it whole and asking about it first. In
    training, where every weight moves between checkpoints, that hashing (a
    pass over the whole state_dict on the training's own cores) bought
    nothing. A storage whose digest is its name's last one, or one sent
    before under any name, or one never seen, is hashed and asked about. A
    changed storage the server holds from another process is then sent once
    more, and deduplicated on arrival. Bounded; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: Dict[Tuple[str, str, str], bytes] = {}
        self.sent: Set[Tuple[str, bytes]] = set()

    def changed(self, server: str, model: str, name: str, t: Any) -> bool:
        """Records the digest of t (a uint8 tensor on a storage) as sent to
        server under model and name -> True when t has changed since that
        name's last save into bytes not sent to server before."""
        import numpy

        a = t.numpy()
        n = int(a.size)
        h = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16)
        if n <= 2 * _SAMPLE_RUN * _SAMPLE_RUNS:
            h.update(a)
        else:
            at = numpy.linspace(0, n - _SAMPLE_RUN, _SAMPLE_RUNS, dtype=numpy.int64)
            h.update(a[at[:, None] + numpy.arange(_SAMPLE_RUN)])
        now = h.digest()
        with self.lock:
            before = self.last.get((server, model, name))
            known = (server, now) in self.sent
            if len(self.last) >= _SAMPLES_MAX:
                self.last.clear()
            if len(self.sent) >= _SAMPLES_MAX:
                self.sent.clear()
            self.last[(server, model, name)] = now
            self.sent.add((server, now))
        return before is not None and before != now and not known


_SAMPLES = _Samples()


def _hashes_to_ask(found: List[Tuple[int, int, Any]], names: Mapping[Tuple[int, int], str],
                   server: str, model: str, thin: bool = True,
                   ) -> Tuple[List[Tuple[int, int, Any]], List[bytes]]:
    """The storages of found a thin save asks the server about, and their
    SHA-256: all but those that changed since they were last saved into
    bytes not sent before (_Samples). thin=False: none (the digests are
    recorded all the same)."""
    ask: List[Tuple[int, int, Any]] = []
    hashes: List[bytes] = []
    for a, n, t in found:
        name = names.get((a, n))
        skip = name is not None and _SAMPLES.changed(server, model, name, t)
        if thin and not skip:
            ask.append((a, n, t))
            hashes.append(hashlib.sha256(t.numpy()).digest())
    return ask, hashes


def _worth_thin(refs: Dict[Tuple[int, int], bytes],
                found: List[Tuple[int, int, Any]]) -> Dict[Tuple[int, int], bytes]:
    """refs, or none (send the plain file) when the storages they name hold
    less than a sixteenth of the bytes of all storages found. The server
    hashes a plain upload while it arrives, and stores its tensors then; a
    thin one only once it has ended, in one more pass over the file the
    frames stand for: when nearly all of it goes as bytes anyway (a DCP
    rank's file of new weights but one small tensor stored before), the
    plain upload ends sooner for about as many bytes on the wire."""
    if not refs:
        return refs
    total = sum(n for _a, n, _t in found)
    if sum(n for _a, n in refs) * _THIN_SHARE < total:
        return {}
    return refs


def _all_hashes(found: List[Tuple[int, int, Any]], ask: List[Tuple[int, int, Any]],
                hashes: List[bytes]) -> List[bytes]:
    """The SHA-256 of every storage of found, reusing those of ask (a retry
    asks about all of them: the server keeps what a cut upload sent whole)."""
    known = {(a, n): h for (a, n, _t), h in zip(ask, hashes)}
    return [known.get((a, n)) or hashlib.sha256(t.numpy()).digest() for a, n, t in found]


def _readline(sock: socket.socket) -> bytes:
    """One line from sock, "\\n" included, read a byte at a time so that
    nothing after it is taken from the connection. Shorter at EOF."""
    line = bytearray()
    while len(line) < _MAX_LINE:
        b = sock.recv(1)
        if not b:
            break
        line += b
        if b == b"\n":
            break
    return bytes(line)


class _ReplayRaw(io.RawIOBase):
    """The bytes already read from a connection, then the connection."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        super().__init__()
        self.head = head
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.sock.recv_into(b)


class _Replay:
    """A socket stand-in for http.client.HTTPResponse, whose makefile()
    replays the status line read while waiting for "100 Continue"."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self.head = head
        self.sock = sock

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_ReplayRaw(self.head, self.sock))


_Pool = Dict[Tuple[int, bool], List[Any]]


def _snapshot(obj: Any, pool: _Pool, used: List[Any]) -> Any:
    """A copy of obj whose tensors own copies of their storages in host
    memory (pinned when they come from a GPU), for a save that runs while
    training goes on. Tensors sharing a storage (tied weights, views) share
    its copy, with their offsets, sizes and strides, so torch.save writes the
    same file of the copy as of obj at this instant, and an object met twice
    (a tensor under two keys) is one object in the copy. Dicts keep their
    type and attributes (a state_dict's _metadata); anything else that is
    not a plain value is deep-copied.

    The copies go into buffers taken from pool ((nbytes, pinned) -> free
    uint8 tensors) when one fits, else new ones; every buffer used is
    appended to used, for the pool once the save is over."""
    import torch

    copies: Dict[Tuple[str, int, int], Any] = {}
    memo: Dict[int, Any] = {}

    def storage_copy(t: "torch.Tensor") -> Any:
        u = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage().untyped()
        key = (str(u.device), u.data_ptr(), u.nbytes())
        c = copies.get(key)
        if c is None:
            src = torch.empty(0, dtype=torch.uint8, device=u.device).set_(u)
            pin = u.device.type == "cuda"
            free = pool.get((u.nbytes(), pin))
            dst = free.pop() if free else torch.empty(u.nbytes(), dtype=torch.uint8,
                                                      pin_memory=pin)
            used.append(dst)
            dst.copy_(src)
            c = dst.untyped_storage() if hasattr(dst, "untyped_storage") else dst.storage().untyped()
            copies[key] = c
        return c

    def walk(x: Any) -> Any:
        if isinstance(x, (str, bytes, int, float, bool, type(None))):
            return x
        if id(x) in memo:  # an object met before is one object in the copy too
            return memo[id(x)]
        memo[id(x)] = y = copy_of(x)
        return y

    def copy_of(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if x.layout != torch.strided or x.is_quantized or type(x) not in (
                    torch.Tensor, torch.nn.Parameter):
                return copy.deepcopy(x, memo)
            t = torch.empty(0, dtype=x.dtype).set_(
                storage_copy(x), x.storage_offset(), x.size(), x.stride())
            if isinstance(x, torch.nn.Parameter):
                return torch.nn.Parameter(t, requires_grad=x.requires_grad)
            return t.requires_grad_(x.requires_grad) if x.is_leaf else t
        if isinstance(x, dict):  # known before its items, for cycles
            d = memo[id(x)] = copy.copy(x)
            for k, v in x.items():
                d[k] = walk(v)
            return d
        if type(x) is list:
            out: List[Any] = []
            memo[id(x)] = out
            out.extend(walk(v) for v in x)
            return out
        if type(x) is tuple:
            return tuple(walk(v) for v in x)
        return copy.deepcopy(x, memo)

    return walk(obj)


class SaveHandle:
    """A save(..., background=True) in progress on its own thread.

    done() tells whether it ended; wait() waits and returns the server's
    checkpoint JSON, or raises the save's error. An error nobody took with
    wait() is raised by the client's next save() (or by close()), so a
    failed checkpoint never goes unnoticed."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._done = threading.Event()
        self._result: Optional[Checkpoint] = None
        self._error: Optional[BaseException] = None
        self._reported = False
        self.thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        state = "running" if not self.done() else "failed" if self._error else "done"
        return "<ckptd.SaveHandle %s %s>" % (self.model, state)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> Checkpoint:
        """The checkpoint JSON once the save ended; raises its error, or
        TimeoutError when timeout seconds passed first."""
        if not self._done.wait(timeout):
            raise TimeoutError("the background save of %s is still running" % self.model)
        self._reported = True
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _unreported_error(self) -> Optional[BaseException]:
        if self.done() and self._error is not None and not self._reported:
            self._reported = True
            return self._error
        return None


class Client:
    """A ckptd client.

    url: "http://host:port" or "https://host:port" (a path prefix is kept; a
    trailing /api/v1 is accepted); default $CKPTD_URL, else
    http://127.0.0.1:8080. token: a bearer token for writes (and reads under
    --auth-read); default $CKPTD_TOKEN. timeout: seconds per socket
    operation. retries: how many times a connection error or 503 is retried,
    with waits of backoff, 2*backoff, ... seconds. cafile: a PEM file of CAs
    that https:// trusts instead of the system's (default $CKPTD_CAFILE);
    ssl_context: an ssl.SSLContext to use instead (not both).
    max_background: how many save(..., background=True) may run at once; a
    further one first waits for the oldest.

    Use it as a context manager, or call close(), to close its kept-alive
    connections."""

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: Optional[float] = 600.0,
        retries: int = 4,
        backoff: float = 0.5,
        cafile: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_background: int = 1,
    ) -> None:
        url = url or os.environ.get("CKPTD_URL") or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError("a ckptd URL is http:// or https://, not %r" % url)
        if cafile is not None and ssl_context is not None:
            raise ValueError("give cafile= or ssl_context=, not both")
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
        self.ssl_context: Optional[ssl.SSLContext] = None
        if self.scheme == "https":
            if ssl_context is None:
                cafile = cafile or os.environ.get("CKPTD_CAFILE") or None
                ssl_context = ssl.create_default_context(cafile=cafile)
            self.ssl_context = ssl_context
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        # model -> the id of the checkpoint last loaded from it: a later
        # save() of that model records it as resumed_from, so retention
        # keeps the checkpoint a run resumed from
        self.resumed_from: Dict[str, int] = {}
        # bytes the last save() put on the wire (frames or file), for
        # callers that count what a thin save spared
        self.last_save_wire: Optional[int] = None
        # the request bodies the last push_dir() sent, all files together
        self.last_push_wire: Optional[int] = None
        if max_background < 1:
            raise ValueError("max_background must be at least 1")
        self.max_background = max_background
        self._background: List[SaveHandle] = []
        # host buffers of the last background save's snapshot, reused
        self._snap_pool: _Pool = {}

    def __repr__(self) -> str:
        return "Client(%r)" % self.url

    # -- connections ------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # an exception is on its way: do not hide it behind a save's
            self.close()
        except Exception as e:
            log.warning("a background save failed: %s", e)

    def close(self) -> None:
        """Waits for the background saves still running, closes the idle
        kept-alive connections, then raises the error of a background save
        nobody took with wait(). The Client stays usable: a later call opens
        a new connection."""
        for h in list(self._background):
            h._done.wait()
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        self._raise_background_error()

    def _raise_background_error(self) -> None:
        """Raises the first error of an ended background save that nobody
        took with wait(), and forgets the ended ones."""
        with self._lock:
            ended = [h for h in self._background if h.done()]
            self._background = [h for h in self._background if not h.done()]
        for h in ended:
            e = h._unreported_error()
            if e is not None:
                raise e

    def _connect(self) -> http.client.HTTPConnection:
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _take(self) -> Tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused True) or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        """Keeps conn for the next call. Its answer must have been read whole;
        a connection the answer closed (Connection: close) is dropped."""
        if conn.sock is None:
            return
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    # -- plumbing ---------------------------------------------------------

    def _url(self, path: str, params: Optional[Mapping[str, Any]] = None) -> str:
        q = ""
        if params:
            items: List[Tuple[str, str]] = []
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

    def _headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        h = {"User-Agent": "ckptd-client/" + __version__, "Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        h.update(extra or {})
        return h

    def _with_retries(
        self,
        method: str,
        url: str,
        attempt: Callable[[http.client.HTTPConnection], T],
    ) -> T:
        """Runs attempt(conn) on a pooled connection until it returns,
        retrying on _Retry with backoff. attempt must read its answer whole
        before it returns; any exception closes the connection."""
        delay = self.backoff
        failures = 0
        stale_budget = _MAX_IDLE + 1
        while True:
            conn, reused = self._take()
            try:
                value = attempt(conn)
            except _Retry as r:
                conn.close()
                if r.stale and reused and stale_budget > 0:
                    stale_budget -= 1
                    log.debug("%s %s: the server closed an idle connection (%s); "
                              "reconnecting", method, url, r.why)
                    continue
                failures += 1
                if r.final:
                    raise CkptdConnectionError(r.why, method=method, path=url) from r.__cause__
                if failures > self.retries:
                    if r.error is not None:
                        raise r.error
                    raise CkptdConnectionError(
                        "%s (gave up after %d attempts)" % (r.why, failures),
                        method=method, path=url) from r.__cause__
                log.warning("%s %s: %s; retrying in %.1f s (%d of %d)", method, url, r.why,
                            delay, failures, self.retries)
                time.sleep(delay)
                delay *= 2
                continue
            except BaseException:
                conn.close()
                raise
            self._give(conn)
            return value

    @staticmethod
    def _check(status: int, body: bytes, method: str, url: str) -> None:
        if status == 503:
            raise _Retry("HTTP 503: %s" % body[:200].decode("utf-8", "replace"),
                         error=error_from_body(status, body, method=method, path=url))
        if status >= 300:
            raise error_from_body(status, body, method=method, path=url)

    @staticmethod
    def _answer(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        """conn.getresponse(); a failure before any answer is stale on a
        reused connection."""
        try:
            return conn.getresponse()
        except _STALE as e:
            raise _retry_for(e, stale=True)
        except (OSError, http.client.HTTPException) as e:
            raise _retry_for(e)

    def _request(
        self, method: str, path: str, params: Optional[Mapping[str, Any]] = None,
        body: Any = None, headers_out: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, bytes]:
        """A small request with retries -> (status, body bytes). headers_out,
        when given, receives the answer's headers."""
        url = self._url(path, params)
        headers = self._headers()
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"

        def attempt(conn: http.client.HTTPConnection) -> Tuple[int, bytes]:
            log.debug("%s %s", method, url)
            try:
                conn.request(method, url, body=data, headers=headers)
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e, stale=True)
            r = self._answer(conn)
            try:
                payload = r.read()
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e)
            self._check(r.status, payload, method, url)
            if headers_out is not None:
                headers_out.clear()
                headers_out.update(r.getheaders())
            return r.status, payload

        return self._with_retries(method, url, attempt)

    def _json(
        self, method: str, path: str, params: Optional[Mapping[str, Any]] = None,
        body: Any = None, headers_out: Optional[Dict[str, str]] = None,
    ) -> Any:
        status, data = self._request(method, path, params, body, headers_out)
        if status == 204 or not data:
            return None
        return json.loads(data.decode("utf-8"))

    def _download(
        self, path: str, params: Optional[Mapping[str, Any]], out: BinaryIO,
        progress: Optional[ProgressCallback],
    ) -> int:
        """GETs path streaming into the binary file out -> bytes written. A
        retry after bytes were written rewinds out when it is seekable, else
        raises CkptdConnectionError."""
        url = self._url(path, params)
        headers = self._headers({"Accept": "*/*"})
        start = out.tell() if _seekable(out) else None
        dirty = False

        def attempt(conn: http.client.HTTPConnection) -> int:
            nonlocal dirty
            if dirty:
                if start is None:
                    raise CkptdConnectionError(
                        "the download broke and %r cannot be rewound to retry" % (out,),
                        method="GET", path=url)
                out.seek(start)
                out.truncate()
                dirty = False
            log.debug("GET %s", url)
            try:
                conn.request("GET", url, headers=headers)
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e, stale=True)
            r = self._answer(conn)
            if r.status >= 300:
                try:
                    payload = r.read()
                except (OSError, http.client.HTTPException) as e:
                    raise _retry_for(e)
                self._check(r.status, payload, "GET", url)
            got_id = r.getheader("X-Checkpoint-Id")
            if got_id and got_id.isdigit() and path.startswith("/models/"):
                model = urllib.parse.unquote(path.split("/")[2])
                with self._lock:
                    self.resumed_from[model] = int(got_id)
            length = r.getheader("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            n = 0
            if progress is not None:
                progress(0, total)
            while True:
                try:
                    b = r.read(_READ)
                except (OSError, http.client.HTTPException) as e:
                    raise _retry_for(e, what="download broke after %d bytes: " % n)
                if not b:
                    break
                dirty = True
                out.write(b)
                n += len(b)
                if progress is not None:
                    progress(n, total)
            if total is not None and n != total:
                raise _Retry("download ended after %d of %d bytes" % (n, total))
            return n

        return self._with_retries("GET", url, attempt)

    def _to(
        self, out: PathOrFile, path: str, params: Mapping[str, Any],
        progress: Optional[ProgressCallback],
    ) -> int:
        if not isinstance(out, (str, os.PathLike)):
            return self._download(path, params, out, progress)
        dest = os.fspath(out)
        fd, tmp = tempfile.mkstemp(prefix=".ckptd-", dir=os.path.dirname(os.path.abspath(dest)))
        done = False
        try:
            with os.fdopen(fd, "w+b") as f:
                n = self._download(path, params, f, progress)
            os.replace(tmp, dest)
            done = True
            return n
        finally:
            if not done:
                os.unlink(tmp)

    def _resumed(self, model: str, given: Optional[int]) -> Optional[int]:
        if given is not None:
            return int(given)
        with self._lock:
            return self.resumed_from.get(model)

    @staticmethod
    def _meta(
        epoch: Optional[int], step: Optional[int], loss: Optional[float], run: Optional[str],
        metrics: Optional[Mapping[str, float]], tags: Union[str, Iterable[str], None],
        pin: bool,
    ) -> Dict[str, Any]:
        p: Dict[str, Any] = {"epoch": epoch, "step": step, "run": run}
        if loss is not None:
            p["loss"] = repr(float(loss))
        for k, v in (metrics or {}).items():
            p["metric." + k] = repr(float(v))
        if tags:
            p["tag"] = [tags] if isinstance(tags, str) else [str(t) for t in tags]
        if pin:
            p["pin"] = 1
        return p

    def _wait_continue(self, conn: http.client.HTTPConnection) -> Optional[http.client.HTTPResponse]:
        """After the headers of a request with "Expect: 100-continue", waits up
        to _CONTINUE_WAIT seconds for the server's interim answer. Returns None
        to go on sending (100 Continue seen, or no answer in time, as curl
        does) or the final answer the server gave instead (401, 404, ...).

        Reads with plain recv() on the connection's socket, byte by byte, so
        that it works the same on TLS sockets and takes nothing beyond the
        interim answer from the connection."""
        sock = conn.sock
        if sock is None:
            raise _Retry("the connection closed before the body", stale=True)
        sock.settimeout(_CONTINUE_WAIT)
        try:
            first = sock.recv(1)
        except socket.timeout:
            return None
        except OSError as e:
            raise _retry_for(e, stale=True)
        finally:
            sock.settimeout(self.timeout)
        if not first:
            raise _Retry("the server closed the connection before the body", stale=True)
        try:
            line = first + _readline(sock)
            parts = line.split(None, 2)
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].startswith(b"1"):
                # an interim answer (100 Continue): its headers end at an empty line
                while True:
                    h = _readline(sock)
                    if h in (b"\r\n", b"\n"):
                        return None
                    if not h.endswith(b"\n"):
                        raise _Retry("the server closed the connection after %r"
                                     % line.strip().decode("latin-1"))
            r = http.client.HTTPResponse(cast(socket.socket, _Replay(line, sock)), method="POST")
            r.begin()
            return r
        except (OSError, http.client.HTTPException) as e:
            raise _retry_for(e, what="while waiting for 100 Continue: ")

    def _upload(
        self, model: str, params: Mapping[str, Any],
        send_body: Callable[[socket.socket], Optional[str]], headers: Mapping[str, str],
        before: Optional[Callable[[], None]] = None,
    ) -> Checkpoint:
        """One streamed upload with retries. send_body(sock) sends the body
        and returns the hex SHA-256 of what it sent (or None). before(), when
        given, runs ahead of each attempt and may change headers."""
        url = self._url("/models/%s/checkpoints" % _q(model), params)
        return self._stream("POST", url, send_body, headers, before)

    def _stream(
        self, method: str, url: str,
        send_body: Callable[[socket.socket], Optional[str]], headers: Mapping[str, str],
        before: Optional[Callable[[], None]] = None, *, replaces: bool = False,
    ) -> Dict[str, Any]:
        """_upload's request to any URL. replaces: the request stores the same
        thing however often it is made (a file of a staged checkpoint, PUT
        again, replaces the first), so it is retried even when the body was
        sent whole and the connection broke before the answer."""

        def attempt(conn: http.client.HTTPConnection) -> Dict[str, Any]:
            if before is not None:
                before()
            h = self._headers(headers)
            h["Expect"] = "100-continue"
            log.debug("%s %s", method, url)
            try:
                conn.putrequest(method, url, skip_accept_encoding=True)
                for k, v in h.items():
                    conn.putheader(k, v)
                conn.endheaders()
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e, stale=True)
            early = self._wait_continue(conn)
            if early is not None:
                try:
                    payload = early.read()
                except (OSError, http.client.HTTPException) as e:
                    raise _retry_for(e)
                self._check(early.status, payload, method, url)
                raise CkptdError("the server answered %d before the body" % early.status,
                                 status=early.status, code="unexpected", method=method,
                                 path=url)
            assert conn.sock is not None
            try:
                sha = send_body(conn.sock)
            except (OSError, http.client.HTTPException) as e:
                # The server may have refused mid-body (413, 422): read its answer.
                try:
                    r = conn.getresponse()
                    payload = r.read()
                except (OSError, http.client.HTTPException):
                    raise _retry_for(e, what="upload broke while sending: ")
                self._check(r.status, payload, method, url)
                raise _retry_for(e, what="upload broke while sending: ")
            try:
                r = conn.getresponse()
                payload = r.read()
            except (OSError, http.client.HTTPException) as e:
                if replaces:
                    raise _retry_for(e, what="the connection broke before the answer: ")
                raise CkptdConnectionError(
                    "the whole checkpoint was sent but the connection broke before the "
                    "answer (%s: %s); it may have been stored: check list() before saving "
                    "it again" % (type(e).__name__, e), method=method, path=url) from e
            self._check(r.status, payload, method, url)
            j = cast(Dict[str, Any], json.loads(payload.decode("utf-8")))
            if sha and j.get("sha256") and j["sha256"] != sha:
                raise CkptdError("the server stored SHA-256 %s but %s was sent"
                                 % (j["sha256"], sha), status=r.status,
                                 code="sha256_mismatch", method=method, path=url)
            return j

        return self._with_retries(method, url, attempt)

    # -- checkpoints ------------------------------------------------------

    @overload
    def save(
        self,
        obj: Any,
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        thin: bool = True,
        background: Literal[False] = False,
    ) -> Checkpoint: ...

    @overload
    def save(
        self,
        obj: Any,
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        thin: bool = True,
        background: Literal[True],
    ) -> SaveHandle: ...

    def save(
        self,
        obj: Any,
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        thin: bool = True,
        background: bool = False,
    ) -> Union[Checkpoint, SaveHandle]:
        """torch.save(obj) streamed to the server as a new checkpoint of model
        (needs torch).

        epoch/step (int), loss (float), run (name; the server's "default"
        when None), metrics ({name: float}), tags (str or strings), pin
        (never removed by retention), resumed_from (the id of the checkpoint
        this training resumed from; by default the one this client last
        loaded of model, if any: retention never removes it), progress
        (called with bytes sent and None). Returns the server's checkpoint
        JSON (id, sha256, dedup, ...). The file is never held in memory (see
        the module's docstring); on a retry torch.save runs again.

        thin (default True): first hash obj's storages in host memory, ask the
        server which it lacks (POST /blobs/missing), and send the stored ones
        as references (SPEC 3.1): an epoch that changed a tenth of the
        weights sends about a tenth of the bytes. The server rebuilds the
        file and checks its SHA-256, so a reference can never store other
        bytes than torch.save wrote. A storage deleted from the server in
        between makes the save go again whole. Storages on a GPU are sent
        whole. A storage this process saved before to the same model under
        the same path, and whose sample of 4 KiB spread over it has changed
        since into one this process never sent, is sent without being
        hashed and asked about (asking cannot pay); a retry after a cut
        asks about all.

        background=True: returns at once with a SaveHandle (wait(), done())
        after taking a snapshot of obj (its tensors' storages copied to host
        memory; from a GPU into pinned memory), so training may change the
        model while the copy is sent; the save runs on its own thread. At most
        max_background (the Client's, default 1) run at once: another one
        first waits for the oldest. An error comes from wait(), or else from
        the next save() or close(). The snapshot costs a memory copy of the
        tensors; the client keeps the last snapshot's buffers for the next
        one (copying into memory already mapped is several times faster than
        into fresh pages), so background saves hold about one copy of the
        tensors between saves."""
        self._raise_background_error()
        kw: Dict[str, Any] = dict(epoch=epoch, step=step, loss=loss, run=run, metrics=metrics,
                                  tags=tags, pin=pin, resumed_from=resumed_from,
                                  progress=progress, thin=thin)
        if not background:
            return self._save_now(obj, model, **kw)
        while True:
            with self._lock:
                running = [h for h in self._background if not h.done()]
            if len(running) < self.max_background:
                break
            running[0]._done.wait()
            self._raise_background_error()
        with self._lock:
            pool, self._snap_pool = self._snap_pool, {}
        used: List[Any] = []
        snap = _snapshot(obj, pool, used)
        h = SaveHandle(model)

        def body() -> None:
            nonlocal snap
            try:
                h._result = self._save_now(snap, model, **kw)
            except BaseException as e:  # handed to wait() or the next save
                h._error = e
            finally:
                # the next snapshot copies into these, already mapped
                snap = None
                fresh: _Pool = {}
                for b in used:
                    fresh.setdefault((b.numel(), b.is_pinned()), []).append(b)
                with self._lock:
                    self._snap_pool = fresh
                h._done.set()

        h.thread = threading.Thread(target=body, name="ckptd-save-" + model)
        with self._lock:
            self._background.append(h)
        h.thread.start()
        return h

    def _save_now(
        self,
        obj: Any,
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        thin: bool = True,
    ) -> Checkpoint:
        """save() on this thread."""
        import torch

        params = self._meta(epoch, step, loss, run, metrics, tags, pin)
        params["resumed_from"] = self._resumed(model, resumed_from)
        names: Dict[Tuple[int, int], str] = {}
        found = _storages(obj, names)
        ask, hashes = _hashes_to_ask(found, names, self.url, model, thin)
        if not thin:
            found = []
        refs = _worth_thin(self._stored_refs(ask, hashes), found)
        self.last_save_wire = None
        attempts = 0

        def send_body(sock: socket.socket) -> Optional[str]:
            w = _body_writer(sock, progress, refs)
            if progress is not None:
                progress(0, None)
            w.save(obj)
            w.finish()
            self.last_save_wire = w.body_bytes
            return w.sha.hexdigest()

        headers = {"Content-Type": "application/x-ckptd-thin" if refs
                   else "application/octet-stream", "Transfer-Encoding": "chunked"}

        def before() -> None:
            # A retry after the upload broke off: the server keeps the
            # storages that arrived whole (SPEC 3.1, resuming), so ask again
            # and send only the rest.
            nonlocal attempts
            attempts += 1
            if attempts > 1 and found:
                refs.clear()
                refs.update(_worth_thin(self._stored_refs(found, _all_hashes(found, ask, hashes)),
                                        found))
                headers["Content-Type"] = ("application/x-ckptd-thin" if refs
                                           else "application/octet-stream")

        try:
            return self._upload(model, params, send_body, headers, before)
        except CkptdError as e:
            if not refs or e.code != "missing_blobs":
                raise
            # a blob the server had when asked was deleted since: send it all
            log.warning("thin save of %s: %s; sending the whole file", model, e.message)
            refs.clear()
            headers["Content-Type"] = "application/octet-stream"
            return self._upload(model, params, send_body, headers)

    def _stored_refs(
        self, found: List[Tuple[int, int, Any]], hashes: List[bytes],
    ) -> Dict[Tuple[int, int], bytes]:
        """(address, nbytes) -> SHA-256 of each storage found (with its hash)
        that the server already has (POST /blobs/missing), for a thin save."""
        if not found:
            return {}
        missing = set()
        for i in range(0, len(found), _MISSING_BATCH):
            part = range(i, min(i + _MISSING_BATCH, len(found)))
            j = self._json("POST", "/blobs/missing", body={"blobs": [
                {"sha256": hashes[k].hex(), "size": found[k][1]} for k in part]})
            missing.update(j["missing"])
        return {(a, n): h for (a, n, _t), h in zip(found, hashes) if h.hex() not in missing}

    def save_file(
        self,
        path: Union[str, "os.PathLike[str]"],
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> Checkpoint:
        """Uploads an existing checkpoint file (torch zip or safetensors),
        streamed from disk with a Content-Length. Same options and answer as
        save(); needs no torch."""
        params = self._meta(epoch, step, loss, run, metrics, tags, pin)
        params["resumed_from"] = self._resumed(model, resumed_from)
        size = os.path.getsize(path)

        def send_body(sock: socket.socket) -> Optional[str]:
            sha = hashlib.sha256()
            n = 0
            if progress is not None:
                progress(0, size)
            with open(path, "rb") as f:
                while True:
                    b = f.read(_READ)
                    if not b:
                        break
                    sha.update(b)
                    sock.sendall(b)
                    n += len(b)
                    if progress is not None:
                        progress(n, size)
            return sha.hexdigest()

        return self._upload(model, params, send_body, {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        })

    def push_dir(
        self,
        model: str,
        path: Union[str, "os.PathLike[str]"],
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        parallel: int = 4,
        thin: bool = True,
        progress: Optional[ProgressCallback] = None,
    ) -> Checkpoint:
        """Uploads the directory at path as one checkpoint of several files
        (SPEC 3.2): a sharded safetensors save with its index, a
        torch.distributed.checkpoint directory, a tokenizer next to the
        weights. Needs no torch. Same options as save(); returns the
        committed checkpoint's JSON (its "files" listed, "format" "dcp",
        "safetensors-sharded" or "files", "sha256" the SHA-256 of the file
        list in sha256sum's format), after checking that sha256 against the
        files sent.

        The files: every regular file under path, recursively, named by its
        path relative to path with '/' between directories. A symbolic link
        to a file is uploaded as that file's bytes under the link's name,
        wherever it points (a Hugging Face cache's snapshot links into its
        blobs directory); a link to a directory, a dangling link, a FIFO, a
        socket or a device raises ValueError, as does a name the server
        refuses (control characters, '\\', over 1024 bytes), all before
        anything is sent. Empty files are uploaded (0 bytes); empty
        directories are not kept, and a directory without files is a
        ValueError.

        How: opens a staged checkpoint (POST ?staged=1 with the fields),
        PUTs the files, up to `parallel` at once (threads, each on its own
        connection; the largest first), each streamed from disk, then commits.
        With thin (the default), a torch zip or safetensors file is first
        read once to hash its storages of 4 KiB and more, the server is asked
        which it lacks (POST /blobs/missing), and the stored ones are sent as
        references (SPEC 3.1): a second push of unchanged weights sends a
        few kilobytes per file. Other files (and *.distcp, which the server
        keeps as bytes) go raw, as does a file whose thin upload the server
        refuses (a storage it no longer has, or a file it parses otherwise).
        self.last_push_wire is the body bytes the last push_dir sent.

        Retries: a file is retried like save() on a connection error or a
        503; a PUT replaces the file of the same name, so it is retried even
        when the connection broke after the whole file was sent. If a file
        fails for good, the error is raised once the uploads under way end
        and the checkpoint is never committed: the server removes the staged
        checkpoint and its files after its --stage-timeout. progress, if
        given, is called with (bytes done of all files, their total size),
        one call at a time, from the upload threads."""
        root = os.fspath(path)
        files = _dir_files(root)
        if not files:
            raise ValueError("%s holds no files to push" % root)
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        params = self._meta(epoch, step, loss, run, metrics, tags, pin)
        params["resumed_from"] = self._resumed(model, resumed_from)
        params["staged"] = 1
        opened = self._json("POST", "/models/%s/checkpoints" % _q(model), params)
        cid = int(opened["id"])

        self.last_push_wire = None
        total = sum(size for _n, _p, size in files)
        lock = threading.Lock()
        done: Dict[str, int] = {}
        done_all = 0
        wire: Dict[str, int] = {}
        stop = threading.Event()
        errors: List[BaseException] = []

        def moved(name: str, n: int) -> None:
            nonlocal done_all
            if progress is None:
                return
            with lock:
                done_all += n - done.get(name, 0)
                done[name] = n
                progress(done_all, total)

        def one(item: Tuple[str, str, int]) -> Optional[Dict[str, Any]]:
            if stop.is_set():
                return None
            name, fpath, size = item
            try:
                j, sent = self._put_file(model, cid, name, fpath, size, thin,
                                         lambda n: moved(name, n))
            except BaseException as e:
                stop.set()
                with lock:
                    errors.append(e)
                raise
            with lock:
                wire[name] = sent
            return j

        if progress is not None:
            progress(0, total)
        order = sorted(files, key=lambda x: -x[2])  # the largest first
        answers: Dict[str, Dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=min(parallel, len(files)),
                                thread_name_prefix="ckptd-push") as ex:
            futures = [(item[0], ex.submit(one, item)) for item in order]
            try:
                for name, fut in futures:
                    try:
                        j = fut.result()
                    except BaseException:
                        continue  # in errors
                    if j is not None:
                        answers[name] = j
            except BaseException:  # interrupted: start no further file
                stop.set()
                raise
        if errors:
            raise errors[0]
        self.last_push_wire = sum(wire.values())
        sent = [(name, str(answers[name]["sha256"])) for name, _p, _s in files]
        ck = self._commit(model, cid, dict(sent))
        want = _list_sha256(sent)
        if ck.get("sha256") != want:
            raise CkptdError("checkpoint %d was committed with SHA-256 %s but its files "
                             "sent make %s" % (cid, ck.get("sha256"), want),
                             code="sha256_mismatch", method="POST",
                             path=self._url("/models/%s/checkpoints/%d/commit"
                                            % (_q(model), cid)))
        return ck

    def _put_file(
        self, model: str, cid: int, name: str, path: str, size: int, thin: bool,
        moved: Callable[[int], None],
    ) -> Tuple[Dict[str, Any], int]:
        """PUTs one file of staged checkpoint cid, streamed from path, thin
        when it can -> (the server's answer, the body bytes sent)."""
        url = self._url("/models/%s/checkpoints/%d/files/%s" % (_q(model), cid, _q_name(name)))
        ranges: List[Tuple[int, int]] = []
        if thin and not name.endswith(".distcp"):
            ranges = [r for r in _file_storages(path, size) if r[1] >= _THIN_MIN]
        whole = b""
        hashes: List[bytes] = []
        if ranges:
            whole, hashes = _hash_file(path, ranges)
        refs: Dict[int, bytes] = {}
        headers: Dict[str, str] = {}
        wire = 0
        attempts = 0

        def ask() -> None:
            refs.clear()
            if ranges:
                refs.update(self._stored_ranges(ranges, hashes))
            if refs:
                headers["Content-Type"] = "application/x-ckptd-thin"
                headers["Content-Length"] = str(_thin_length(size, ranges, refs))
            else:
                headers["Content-Type"] = "application/octet-stream"
                headers["Content-Length"] = str(size)

        def before() -> None:
            # as save(): a retry asks again, since the server keeps the
            # storages of a broken-off upload that arrived whole
            nonlocal attempts
            attempts += 1
            if attempts > 1 and ranges:
                ask()

        def send_body(sock: socket.socket) -> Optional[str]:
            nonlocal wire
            out = _Sender(sock)
            n = 0

            def step(k: int) -> None:
                nonlocal n
                n += k
                moved(n)

            moved(0)
            with open(path, "rb") as f:
                if not refs:
                    sha = hashlib.sha256()
                    _copy_range(out, cast(BinaryIO, f), size, path, sha, step)
                    out.flush()
                    wire = out.sent
                    return sha.hexdigest()
                pos = 0
                for i, (off, length) in enumerate(ranges):
                    h = refs.get(i)
                    if h is None:
                        continue
                    if off > pos:
                        out.put(b"L" + struct.pack("<Q", off - pos))
                        _copy_range(out, cast(BinaryIO, f), off - pos, path, None, step)
                    out.put(b"R" + struct.pack("<Q", length) + h)
                    f.seek(off + length)
                    step(length)
                    pos = off + length
                if size > pos:
                    out.put(b"L" + struct.pack("<Q", size - pos))
                    _copy_range(out, cast(BinaryIO, f), size - pos, path, None, step)
            out.put(b"E" + struct.pack("<Q", 32) + whole)
            out.flush()
            wire = out.sent
            return whole.hex()

        ask()
        try:
            j = self._stream("PUT", url, send_body, headers, before, replaces=True)
        except CkptdError as e:
            if not refs or (e.code != "missing_blobs" and e.status != 422):
                raise
            # a storage deleted since it was asked for, or a file the server
            # parses otherwise than _file_storages: send it as it is
            log.warning("thin upload of %s: %s; sending the whole file", name, e.message)
            ranges = []
            ask()
            j = self._stream("PUT", url, send_body, headers, before, replaces=True)
        if j.get("size") != size:
            raise CkptdError("the server stored %s bytes of %s, which has %d"
                             % (j.get("size"), name, size), code="size_mismatch",
                             method="PUT", path=url)
        return j, wire

    def _stored_ranges(
        self, ranges: List[Tuple[int, int]], hashes: List[bytes],
    ) -> Dict[int, bytes]:
        """index -> SHA-256 of each range of a file (with its hash) that the
        server already has (POST /blobs/missing), for a thin file."""
        missing = set()
        for i in range(0, len(ranges), _MISSING_BATCH):
            part = range(i, min(i + _MISSING_BATCH, len(ranges)))
            j = self._json("POST", "/blobs/missing", body={"blobs": [
                {"sha256": hashes[k].hex(), "size": ranges[k][1]} for k in part]})
            missing.update(j["missing"])
        return {i: h for i, h in enumerate(hashes) if h.hex() not in missing}

    def _commit(self, model: str, cid: int, files: Mapping[str, str]) -> Checkpoint:
        """Commits staged checkpoint cid, whose files are files (name ->
        SHA-256) -> its JSON. A 409 is looked into: a commit whose answer was
        lost and was retried finds the checkpoint committed (with these
        files: it is the answer); one that finds it still staged (a file
        whose broken-off attempt the server still writes) is retried with
        backoff."""
        path = "/models/%s/checkpoints/%d" % (_q(model), cid)
        delay = self.backoff
        for tries in range(self.retries + 1):
            try:
                return cast(Checkpoint, self._json("POST", path + "/commit"))
            except CkptdError as e:
                if e.status != 409:
                    raise
                try:
                    ck: Optional[Checkpoint] = cast(Checkpoint, self._json("GET", path))
                except NotFound:
                    ck = None  # still staged: hidden until committed
                if ck is None or ck.get("state") == "staged":
                    if tries == self.retries:
                        raise e
                    log.warning("POST %s/commit: %s; retrying in %.1f s", path, e.message,
                                delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                got = {f["name"]: f["sha256"] for f in ck.get("files") or []}
                if got != dict(files):
                    raise e
                ck.pop("tensors", None)
                ck["state"] = "committed"
                return ck
        raise AssertionError("unreachable")

    def load(
        self,
        model: str,
        ref: Ref = DEFAULT_REF,
        *,
        root: Optional[str] = None,
        keys: Union[str, Iterable[str], None] = None,
        run: Optional[str] = None,
        map_location: Any = "cpu",
    ) -> Dict[str, "torch.Tensor"]:
        """A state_dict (name -> tensor) from checkpoint ref ("latest" by
        default, "best" or an id) of model, built by the server's /state_dict
        (needs torch). root: a JSON Pointer into the checkpoint
        ("/model_state_dict"; by default the server picks the state_dict);
        keys: globs, as a list or comma-separated ("conv*,fc.weight"); run
        narrows best/latest. The file streams to an anonymous temporary file,
        then torch.load(weights_only=True, map_location=map_location) reads
        it: memory holds the tensors once."""
        import torch

        with tempfile.TemporaryFile(prefix="ckptd-") as f:
            self.pull_state_dict(model, cast(BinaryIO, f), ref=ref, root=root, keys=keys,
                                 run=run)
            f.seek(0)
            sd = torch.load(f, map_location=map_location, weights_only=True)
        return cast(Dict[str, "torch.Tensor"], sd)

    def pull_state_dict(
        self,
        model: str,
        out: PathOrFile,
        *,
        ref: Ref = DEFAULT_REF,
        root: Optional[str] = None,
        keys: Union[str, Iterable[str], None] = None,
        fmt: str = "pth",
        run: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> int:
        """Streams checkpoint ref's /state_dict into out (a path or a binary
        file) -> bytes written. fmt: "pth" or "safetensors"; root, keys, run
        as for load(). A path is written under a temporary name and renamed
        when complete. Needs no torch."""
        if keys is not None and not isinstance(keys, str):
            keys = ",".join(keys)
        params = {"root": root, "keys": keys, "run": run,
                  "format": None if fmt == "pth" else fmt}
        path = "/models/%s/checkpoints/%s/state_dict" % (_q(model), _q(str(ref)))
        return self._to(out, path, params, progress)

    def pull_file(
        self,
        model: str,
        out: PathOrFile,
        *,
        ref: Ref = DEFAULT_REF,
        run: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> int:
        """Streams checkpoint ref's original upload, byte for byte, into out
        (a path or a binary file) -> bytes written."""
        path = "/models/%s/checkpoints/%s/file" % (_q(model), _q(str(ref)))
        return self._to(out, path, {"run": run}, progress)

    def pull_dir(
        self,
        model: str,
        ref: Ref,
        path: Union[str, "os.PathLike[str]"],
        *,
        run: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> List[str]:
        """Downloads every file of checkpoint ref ("latest", "best" or an id;
        run narrows latest/best) into the directory path (made if missing,
        subdirectories too) -> the names written, in the server's order. A
        checkpoint of one file (a save()) gives its one file, named like its
        /file download (MODEL-epochN.pth). ref is resolved once, so every
        file comes from the same checkpoint. Needs no torch.

        Each file streams into a temporary file next to its target, its
        SHA-256 and size are checked against the server's list (CkptdError
        "sha256_mismatch" otherwise, and the target is left as it was), and
        it is renamed into place: no file is ever seen half written. Files
        already in path with other names are left alone; one with the same
        name is replaced. Every name is checked before anything is written:
        one that would leave path ('..', an absolute path, a backslash, a
        control character), or that goes through a symbolic link in path to
        somewhere outside it, raises ValueError. progress, if given, is
        called with (bytes done of all files, their total size)."""
        hdrs: Dict[str, str] = {}
        j = self._json("GET", "/models/%s/checkpoints/%s/files" % (_q(model), _q(str(ref))),
                       {"run": run}, headers_out=hdrs)
        got_id = {k.lower(): v for k, v in hdrs.items()}.get("x-checkpoint-id", "")
        cid = got_id if got_id.isdigit() else str(ref)
        files: List[Dict[str, Any]] = list(j["files"])
        dirs: Set[str] = set()
        for f in files:
            parts = _name_parts(str(f["name"]))
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        clash = sorted(dirs.intersection(str(f["name"]) for f in files))
        if clash:
            raise ValueError("checkpoint %s of %s names %r both as a file and as a directory"
                             % (cid, model, clash[0]))
        root = os.path.abspath(os.fspath(path))
        os.makedirs(root, exist_ok=True)
        real_root = os.path.realpath(root)
        total = sum(int(f["size"]) for f in files)
        base = 0
        if progress is not None:
            progress(0, total)
        written: List[str] = []
        for f in files:
            name, size, want = str(f["name"]), int(f["size"]), str(f["sha256"])
            dest = os.path.join(root, *_name_parts(name))
            parent = os.path.dirname(dest)
            os.makedirs(parent, exist_ok=True)
            real = os.path.realpath(parent)
            if os.path.commonpath([real_root, real]) != real_root:
                raise ValueError("%r of checkpoint %s would be written to %s, outside %s "
                                 "(a symbolic link)" % (name, cid, real, root))
            url = "/models/%s/checkpoints/%s/files/%s" % (_q(model), _q(cid), _q_name(name))
            each = None if progress is None else _offset_progress(progress, base, total)
            fd, tmp = tempfile.mkstemp(prefix=".ckptd-", dir=parent)
            ok = False
            try:
                with os.fdopen(fd, "w+b") as out:
                    hf = _HashingFile(cast(BinaryIO, out))
                    n = self._download(url, None, cast(BinaryIO, hf), each)
                    digest = hf.sha.hexdigest()
                if n != size or digest != want:
                    raise CkptdError(
                        "%s of checkpoint %s: %d bytes with SHA-256 %s were downloaded, but "
                        "the file list says %d bytes with SHA-256 %s"
                        % (name, cid, n, digest, size, want),
                        code="sha256_mismatch", method="GET", path=self._url(url))
                os.replace(tmp, dest)
                ok = True
            finally:
                if not ok:
                    os.unlink(tmp)
            base += size
            written.append(name)
        return written

    def list(
        self,
        model: str,
        *,
        run: Optional[str] = None,
        epoch: Optional[int] = None,
        tag: Optional[str] = None,
        order: Optional[str] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> List[Checkpoint]:
        """The model's checkpoints, filtered and ordered as the server's list
        (order: created (default), epoch, loss, -loss, metric.NAME)."""
        j = self._json("GET", "/models/%s/checkpoints" % _q(model),
                       {"run": run, "epoch": epoch, "tag": tag, "order": order,
                        "limit": limit, "offset": offset})
        return cast(List[Checkpoint], j["checkpoints"])

    def get(
        self,
        model: str,
        ref: Ref = DEFAULT_REF,
        *,
        run: Optional[str] = None,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
    ) -> Checkpoint:
        """One checkpoint's JSON, its tensor list included. metric and mode
        ("min"/"max") choose what "best" means."""
        return cast(Checkpoint, self._json(
            "GET", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))),
            {"run": run, "metric": metric, "mode": mode}))

    def best(
        self,
        model: str,
        *,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        run: Optional[str] = None,
    ) -> Checkpoint:
        """The best checkpoint's JSON: lowest loss, or by metric with mode
        "min"/"max"."""
        return self.get(model, "best", run=run, metric=metric, mode=mode)

    def delete(self, model: str, ref: Ref) -> None:
        """Deletes checkpoint ref (no default: name it); blobs nothing else
        uses are freed."""
        self._json("DELETE", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))))

    def update(
        self,
        model: str,
        ref: Ref,
        *,
        loss: Optional[float] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Optional[Iterable[str]] = None,
        pinned: Optional[bool] = None,
    ) -> Checkpoint:
        """Sets loss, metrics, tags or pinned of checkpoint ref -> its JSON."""
        body: Dict[str, Any] = {}
        if loss is not None:
            body["loss"] = float(loss)
        if metrics is not None:
            body["metrics"] = {k: float(v) for k, v in metrics.items()}
        if tags is not None:
            body["tags"] = [str(t) for t in tags]
        if pinned is not None:
            body["pinned"] = bool(pinned)
        return cast(Checkpoint, self._json(
            "PATCH", "/models/%s/checkpoints/%s" % (_q(model), _q(str(ref))), body=body))

    # -- models and the store ---------------------------------------------

    def models(self) -> List[Dict[str, Any]]:
        """Every model: checkpoint count, runs, best and latest, bytes."""
        return cast(List[Dict[str, Any]], self._json("GET", "/models")["models"])

    def delete_model(self, model: str) -> None:
        """Deletes the model and all its checkpoints."""
        self._json("DELETE", "/models/%s" % _q(model))

    def set_retention(
        self,
        model: str,
        *,
        keep_best: int = 0,
        keep_last: int = 0,
        metric: str = "loss",
        mode: str = "min",
    ) -> Dict[str, Any]:
        """Sets the model's retention policy (applied now and after every
        upload; pinned checkpoints survive) -> the stored policy."""
        return cast(Dict[str, Any], self._json(
            "PUT", "/models/%s/retention" % _q(model),
            body={"keep_best": keep_best, "keep_last": keep_last, "metric": metric,
                  "mode": mode}))

    def retention(self, model: str) -> Dict[str, Any]:
        """The model's retention policy."""
        return cast(Dict[str, Any], self._json("GET", "/models/%s/retention" % _q(model)))

    def stats(self) -> Dict[str, Any]:
        """The store's sizes: logical, unique and stored bytes, ratios."""
        return cast(Dict[str, Any], self._json("GET", "/stats"))


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


# -- directories (SPEC 3.2) -------------------------------------------------

_MAX_NAME = 1024  # bytes in the name of a checkpoint's file (the server's limit)
_MAX_ST_HEADER = 100 << 20  # a longer safetensors header is not parsed for thin


def _name_parts(name: str) -> List[str]:
    """The '/'-separated segments of the name of a checkpoint's file, checked
    as the server checks it (SPEC 3.2: 1 to 1024 bytes of UTF-8, relative, no
    empty, "." or ".." segment, no backslash, no control character) and so
    that joined under a directory it stays inside it. Raises ValueError."""
    try:
        n = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("%r: the name of a checkpoint's file must be UTF-8 text" % name)
    if not 1 <= n <= _MAX_NAME:
        raise ValueError("%r: the name of a checkpoint's file has 1 to %d bytes"
                         % (name[:80], _MAX_NAME))
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in name):
        raise ValueError("%r: the name of a checkpoint's file must not hold control "
                         "characters or '\\'" % name)
    parts = name.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise ValueError("%r: the name of a checkpoint's file is a relative path with no "
                             "empty, '.' or '..' segment" % name)
        if os.path.isabs(p) or os.path.splitdrive(p)[0] or (os.altsep and os.altsep in p):
            raise ValueError("%r: the name of a checkpoint's file would leave the "
                             "directory" % name)
    return parts


def _offset_progress(progress: ProgressCallback, base: int, total: int) -> ProgressCallback:
    """progress for one file of several: its bytes after base of total."""

    def each(n: int, _size: Optional[int]) -> None:
        progress(base + n, total)

    return each


def _q_name(name: str) -> str:
    """A file name in a URL: each segment percent-encoded, the '/' kept."""
    return "/".join(_q(p) for p in name.split("/"))


def _list_sha256(files: Iterable[Tuple[str, str]]) -> str:
    """The SHA-256 of (name, hex SHA-256) pairs in sha256sum's format, names
    in byte order: a committed checkpoint's "sha256" (SPEC 3.2)."""
    lines = sorted(((n.encode("utf-8"), h) for n, h in files), key=lambda x: x[0])
    sha = hashlib.sha256()
    for n, h in lines:
        sha.update(h.encode("ascii") + b"  " + n + b"\n")
    return sha.hexdigest()


def _dir_files(root: str) -> List[Tuple[str, str, int]]:
    """(name, path, size) of each file under root, recursively, names
    relative with '/' between segments, in name order. A symbolic link to a
    file counts as that file, under the link's name, wherever it points; a
    link to a directory, a dangling link and anything that is not a regular
    file (a FIFO, a socket, a device) raise ValueError, as does a name the
    server would refuse. Empty directories give nothing."""
    if not os.path.isdir(root):
        raise ValueError("%s is not a directory" % root)
    out: List[Tuple[str, str, int]] = []
    todo: List[Tuple[str, str]] = [(root, "")]
    while todo:
        d, prefix = todo.pop()
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            name = prefix + e.name
            if e.is_dir(follow_symlinks=False):
                todo.append((e.path, name + "/"))
                continue
            try:
                st = os.stat(e.path)  # through a link
            except FileNotFoundError:
                raise ValueError("%s is a symbolic link to nothing" % e.path)
            if stat.S_ISDIR(st.st_mode):
                raise ValueError("%s is a symbolic link to a directory: push_dir follows "
                                 "links to files only" % e.path)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("%s is not a regular file" % e.path)
            _name_parts(name)
            out.append((name, e.path, st.st_size))
    out.sort(key=lambda x: x[0].encode("utf-8"))
    return out


def _file_storages(path: str, size: int) -> List[Tuple[int, int]]:
    """(offset, nbytes) of the storages of the file at path as the server
    parses them (SPEC 3.1: a torch zip's stored data/ records, a safetensors
    tensor's data_offsets), in file order; [] for any other file, or one
    this reads otherwise than cleanly. Reads the zip directory or the
    safetensors header only."""
    out: List[Tuple[int, int]] = []
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] == b"PK\x03\x04":
                with zipfile.ZipFile(f) as z:
                    infos = z.infolist()
                if not any(zi.filename.endswith("/data.pkl") or zi.filename == "data.pkl"
                           for zi in infos):
                    return []  # a zip that is no torch file
                for zi in infos:
                    parts = zi.filename.split("/")
                    if len(parts) < 2 or parts[-2] != "data" or zi.file_size == 0:
                        continue
                    if zi.compress_type != zipfile.ZIP_STORED:
                        return []  # the server refuses it anyway
                    f.seek(zi.header_offset)
                    local = f.read(30)
                    if len(local) != 30 or local[:4] != b"PK\x03\x04":
                        return []
                    n, e = struct.unpack("<HH", local[26:30])
                    out.append((zi.header_offset + 30 + n + e, zi.file_size))
            elif len(head) == 8:
                (hlen,) = struct.unpack("<Q", head)
                if hlen < 2 or hlen > _MAX_ST_HEADER or 8 + hlen > size:
                    return []
                header = json.loads(f.read(hlen).decode("utf-8"))
                if not isinstance(header, dict):
                    return []
                for k, v in header.items():
                    if k == "__metadata__":
                        continue
                    b, e = v["data_offsets"]
                    if not (isinstance(b, int) and isinstance(e, int) and 0 <= b <= e):
                        return []
                    if e > b:
                        out.append((8 + hlen + b, e - b))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, struct.error):
        return []
    out.sort()
    end = 0
    for off, n in out:
        if off < end or off + n > size:
            return []  # overlapping or past the end: not a file the server takes
        end = off + n
    return out


def _hash_file(path: str, ranges: List[Tuple[int, int]]) -> Tuple[bytes, List[bytes]]:
    """One pass over the file -> (its SHA-256, the SHA-256 of each range);
    ranges sorted and apart. Read in pieces of _READ bytes."""
    whole = hashlib.sha256()
    hashes: List[bytes] = []
    i, cur = 0, hashlib.sha256()
    pos = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(_READ)
            if not b:
                break
            whole.update(b)
            mv = memoryview(b)
            at = 0
            while at < len(mv) and i < len(ranges):
                off, n = ranges[i]
                p = pos + at
                if p < off:  # before range i
                    at += min(off - p, len(mv) - at)
                    continue
                take = min(off + n - p, len(mv) - at)
                cur.update(mv[at:at + take])
                at += take
                if p + take == off + n:
                    hashes.append(cur.digest())
                    i, cur = i + 1, hashlib.sha256()
            pos += len(b)
    if i != len(ranges):
        raise CkptdError("%s changed while it was read: it ends at byte %d" % (path, pos),
                         code="file_changed")
    return whole.digest(), hashes


class _Sender:
    """Sends bytes on a socket, gathering small pieces (frame headers, the
    bytes between storages) into sends of up to _COALESCE bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.sent = 0

    def put(self, data: Union[bytes, memoryview]) -> None:
        self.sent += len(data)
        if len(data) >= _DIRECT:
            self.flush()
            self.sock.sendall(data)
            return
        self.buf += data
        if len(self.buf) >= _COALESCE:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.sock.sendall(self.buf)
            self.buf = bytearray()


def _copy_range(out: _Sender, f: BinaryIO, n: int, path: str,
                sha: Optional[Any], on_bytes: Callable[[int], None]) -> None:
    """Sends the next n bytes of f (hashing them into sha when given)."""
    while n > 0:
        b = f.read(min(n, _READ))
        if not b:
            raise CkptdError("%s changed while it was sent: it ended %d bytes early"
                             % (path, n), code="file_changed")
        if sha is not None:
            sha.update(b)
        out.put(b)
        n -= len(b)
        on_bytes(len(b))


def _thin_length(size: int, ranges: List[Tuple[int, int]], refs: Mapping[int, bytes]) -> int:
    """The bytes of the thin frames of a file of size bytes whose ranges
    with an index in refs go as R frames."""
    total, pos = 0, 0
    for i, (off, n) in enumerate(ranges):
        if i not in refs:
            continue
        if off > pos:
            total += 9 + off - pos
        total += 9 + 32
        pos = off + n
    if size > pos:
        total += 9 + size - pos
    return total + 9 + 32


class _HashingFile:
    """The binary file _download writes to, hashing what it writes; the
    rewind of a retried download starts the hash over."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        if (pos, whence) != (0, 0):
            raise io.UnsupportedOperation("only a rewind to the start")
        self.sha = hashlib.sha256()
        return self.f.seek(0)

    def truncate(self, size: Optional[int] = None) -> int:
        return self.f.truncate(size)

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        return self.f.write(b)
