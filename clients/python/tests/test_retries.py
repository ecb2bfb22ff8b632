"""Retries, against a small fake server that decodes chunked bodies itself.

Reads are retried on 503; a retried save runs torch.save again and frames its
chunks right; a 503 that outlasts the retries is a ServerError; a kept-alive
connection that the server closed while it sat idle is replaced without
counting as a retry, for reads and for uploads alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch

from ckptd import Client, ServerError
from helpers import torch_bytes


class FakeServer:
    """Answers the first `fail` requests with 503, then a POST with 201 and
    its decoded body's SHA-256, a GET with {}. keep_alive: answers without
    "Connection: close", then closes the connection anyway, as a server whose
    idle timeout has passed."""

    def __init__(self, fail: int, keep_alive: bool = False) -> None:
        self.fail = fail
        self.keep_alive = keep_alive
        self.seen: List[Tuple[str, Dict[str, str]]] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    self.one(conn)
                except (OSError, AssertionError, ValueError):
                    # a request this server does not expect: the client
                    # sees the connection close, not a hang
                    pass

    def one(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        line = f.readline().decode()
        headers = {}
        while True:
            h = f.readline().decode()
            if h in ("\r\n", ""):
                break
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        method = line.split()[0]
        self.seen.append((method, headers))
        body = b'{"error": "unavailable", "message": "busy"}'
        status = b"503 Service Unavailable"
        if method == "POST":
            # read the whole body before answering, so a 503 comes after a
            # complete torch.save and the client has to run it again
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            sha, n = hashlib.sha256(), 0
            assert headers.get("transfer-encoding") == "chunked", headers
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                data = f.read(size)
                sha.update(data)
                n += len(data)
                assert f.read(2) == b"\r\n"
            if len(self.seen) > self.fail:
                body = json.dumps({"id": 1, "sha256": sha.hexdigest(), "size": n}).encode()
                status = b"201 Created"
        elif len(self.seen) > self.fail:
            body, status = b"{}", b"200 OK"
        close = b"" if self.keep_alive else b"Connection: close\r\n"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"%s\r\n%s" % (status, len(body), close, body))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[Any]:
    servers: List[FakeServer] = []

    def make(fail: int, keep_alive: bool = False) -> FakeServer:
        servers.append(FakeServer(fail, keep_alive))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


class Probe:
    """Counts how often torch.save pickles it."""

    calls: List[int] = []

    def __reduce__(self) -> Any:
        Probe.calls.append(1)
        return (dict, ())


def test_503_is_retried_for_reads(fake: Any) -> None:
    fs = fake(fail=2)
    assert Client(fs.url, backoff=0.01).stats() == {}
    assert [m for m, _ in fs.seen] == ["GET"] * 3


def test_a_503_that_outlasts_the_retries_is_a_server_error(fake: Any) -> None:
    fs = fake(fail=10)
    with pytest.raises(ServerError) as e:
        Client(fs.url, retries=2, backoff=0.01).stats()
    assert e.value.status == 503
    assert e.value.code == "unavailable"
    assert len(fs.seen) == 3


def test_a_retried_save_runs_torch_save_again_and_frames_chunks_right(fake: Any) -> None:
    fs = fake(fail=1)
    Probe.calls = []
    # a big storage (sent as its own chunk) and small ones (coalesced)
    obj = {"big": torch.randn(300_000), "small": torch.arange(10), "probe": Probe()}
    # thin=False: this server takes uploads only, not POST /blobs/missing
    j = Client(fs.url, backoff=0.01).save(obj, "m", thin=False)
    assert len(Probe.calls) == 2, "torch.save should have run twice"
    assert [m for m, _ in fs.seen] == ["POST", "POST"]
    # the fake server decoded the chunked body itself: same bytes as torch.save
    want = torch_bytes(obj)
    assert j["size"] == len(want)
    assert j["sha256"] == hashlib.sha256(want).hexdigest()


def test_an_idle_connection_the_server_closed_is_replaced_uncounted(
        fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ckptd")
    fs = fake(fail=0, keep_alive=True)
    with Client(fs.url, retries=0) as c:  # retries=0: a counted retry would raise
        assert c.stats() == {}
        assert c.stats() == {}
        Probe.calls = []
        c.save({"w": torch.ones(3), "probe": Probe()}, "m", thin=False)
        c.save({"w": torch.ones(3), "probe": Probe()}, "m", thin=False)
    # each upload ran torch.save once: the closed connection was noticed
    # before its body was sent
    assert len(Probe.calls) == 2
    assert [m for m, _ in fs.seen] == ["GET", "GET", "POST", "POST"]
    assert fs.connections == 4
    # every call after the first found its kept-alive connection closed
    stale = [r for r in caplog.records if "closed an idle connection" in r.getMessage()]
    assert len(stale) == 3
