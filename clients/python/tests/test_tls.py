"""The client over HTTPS: nginx terminates TLS with a self-signed certificate
(made by openssl req -x509 for this session) in front of a real ckptd, and
the client trusts that certificate through cafile= or ssl_context=.

save() streams torch.save through the TLS connection (its 100-continue wait
once called recv(MSG_PEEK), which SSL sockets refuse); files go up and come
back byte for byte; the server's errors arrive as over http, also an answer
given before the body (read from the TLS socket with the status line already
taken); a server that sends no 100 Continue gets the body after the wait; the
command line takes --cafile or $CKPTD_CAFILE; a certificate the client does
not trust is refused at once, not retried.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from ckptd import AuthError, CkptdConnectionError, Client, InvalidRequest
from conftest import Nginx
from helpers import assert_same_state, run_cli, torch_bytes, trained


@pytest.fixture
def client(tls: Nginx) -> Iterator[Client]:
    with Client(tls.url, cafile=str(tls.cafile)) as c:
        yield c


def test_save_over_https_streams_through_nginx_and_loads_back(client: Client) -> None:
    model, opt = trained(2)
    obj = {"epoch": 1, "model_state_dict": model.state_dict(),
           "optimizer_state_dict": opt.state_dict(), "big": torch.randn(1 << 20)}
    j = client.save(obj, "cl-tls", epoch=1, loss=0.5)
    assert j["sha256"] == hashlib.sha256(torch_bytes(obj)).hexdigest()
    assert (j["epoch"], j["loss"]) == (1, 0.5)
    assert_same_state(client.load("cl-tls", j["id"], root="/model_state_dict"),
                      model.state_dict())
    assert [x["id"] for x in client.list("cl-tls")] == [j["id"]]


def test_a_file_pushed_over_https_comes_back_byte_for_byte(client: Client,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pth"
    torch.save({"w": torch.randn(4 << 20), "b": torch.arange(100)}, src)  # 16 MiB
    j = client.save_file(src, "cl-tls-file", epoch=2)
    back = tmp_path / "back.pth"
    n = client.pull_file("cl-tls-file", back, ref=j["id"])
    assert n == src.stat().st_size
    assert back.read_bytes() == src.read_bytes()
    # more saves on the same kept-alive TLS connection
    for i in range(3):
        client.save({"w": torch.full((8,), float(i))}, "cl-tls-file", epoch=3 + i)
    assert len(client.list("cl-tls-file")) == 4


def test_a_refused_upload_over_https_raises_the_server_error(client: Client) -> None:
    with pytest.raises(InvalidRequest) as e:
        client.save({"w": torch.ones(2)}, "bad name!")
    assert e.value.status == 400
    assert "model name" in e.value.message
    # the connection is usable afterwards
    client.save({"w": torch.ones(2)}, "cl-tls-after-error")


def test_an_ssl_context_can_be_given_instead_of_a_cafile(tls: Nginx) -> None:
    ctx = ssl.create_default_context(cafile=str(tls.cafile))
    with Client(tls.url, ssl_context=ctx) as c:
        j = c.save({"w": torch.ones(3)}, "cl-tls-ctx")
        assert c.get("cl-tls-ctx")["id"] == j["id"]
    with pytest.raises(ValueError):
        Client(tls.url, ssl_context=ctx, cafile=str(tls.cafile))


def test_an_untrusted_certificate_is_refused_at_once(tls: Nginx,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTD_CAFILE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    c = Client(tls.url, retries=3, backoff=5.0)  # a retry would wait 5 s
    with pytest.raises(CkptdConnectionError) as e:
        c.stats()
    assert isinstance(e.value.__cause__, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(e.value)
    assert "attempts" not in str(e.value)
    with pytest.raises(CkptdConnectionError):
        c.save({"w": torch.ones(2)}, "cl-tls-untrusted")


class TlsFake:
    """A one-connection-at-a-time TLS server with the session's certificate.
    mode "refuse": answers 401 as soon as the headers are in, before any
    body. mode "silent": sends no 100 Continue, reads the chunked body, then
    answers 201 with its SHA-256."""

    def __init__(self, tls: Nginx, mode: str) -> None:
        self.mode = mode
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(tls.cafile), str(tls.key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = "https://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self.one(conn)
            except (OSError, ValueError):
                pass  # a request it does not expect: closed, not a hang

    def one(self, conn: ssl.SSLSocket) -> None:
        f = conn.makefile("rb")
        while f.readline() not in (b"\r\n", b""):
            pass
        if self.mode == "refuse":
            body = b'{"error": "unauthorized", "message": "a write needs a token"}'
            status = b"401 Unauthorized"
        else:
            sha, n = hashlib.sha256(), 0
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                data = f.read(size)
                sha.update(data)
                n += len(data)
                f.read(2)
            body = json.dumps({"id": 7, "sha256": sha.hexdigest(), "size": n}).encode()
            status = b"201 Created"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (status, len(body), body))

    def close(self) -> None:
        self.sock.close()


def test_an_answer_before_the_body_is_read_over_tls_too(tls: Nginx) -> None:
    fake = TlsFake(tls, "refuse")
    calls = []

    class Probe:
        def __reduce__(self) -> Any:
            calls.append(1)
            return (dict, ())

    try:
        t0 = time.monotonic()
        with pytest.raises(AuthError) as e:
            Client(fake.url, cafile=str(tls.cafile)).save({"p": Probe()}, "m")
        assert e.value.status == 401
        assert e.value.message == "a write needs a token"
        assert time.monotonic() - t0 < 0.9  # not after the 1 s wait
        assert calls == []  # torch.save never ran: no body was sent
    finally:
        fake.close()


def test_a_server_that_sends_no_100_continue_gets_the_body_after_a_second(
        tls: Nginx) -> None:
    fake = TlsFake(tls, "silent")
    try:
        obj = {"w": torch.randn(100_000)}
        t0 = time.monotonic()
        # thin=False: this server takes uploads only, not POST /blobs/missing
        j = Client(fake.url, cafile=str(tls.cafile)).save(obj, "m", thin=False)
        assert time.monotonic() - t0 >= 0.9
        assert j["sha256"] == hashlib.sha256(torch_bytes(obj)).hexdigest()
    finally:
        fake.close()


def test_the_command_line_pushes_and_pulls_over_https(tls: Nginx, tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pth"
    torch.save({"w": torch.randn(1000)}, src)
    p = run_cli(["push", str(src), "-m", "cl-tls-cli", "--url", tls.url, "--cafile",
                 str(tls.cafile)], cwd=tmp_path)
    assert "stored cl-tls-cli checkpoint" in p.stdout
    run_cli(["pull", "-m", "cl-tls-cli", "--original", "-o", str(tmp_path / "back.pth")],
            cwd=tmp_path, env={"CKPTD_URL": tls.url, "CKPTD_CAFILE": str(tls.cafile)})
    assert (tmp_path / "back.pth").read_bytes() == src.read_bytes()
    p = run_cli(["list", "-m", "cl-tls-cli", "--url", tls.url], cwd=tmp_path, ok=False)
    assert p.returncode == 1
    assert "certificate verify failed" in p.stderr
