"""Errors from the client: the server's status, code and message arrive in a
CkptdError whose subclass is also the builtin that fits; a write without a
token is refused on its headers, before the body is sent; a server that is
not there is retried, then raised as a ConnectionError."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from ckptd import (
    AuthError,
    CkptdConnectionError,
    CkptdError,
    Client,
    InvalidRequest,
    NotFound,
)
from conftest import Daemon, free_port


def test_errors_carry_the_server_status_code_and_message(url: str) -> None:
    c = Client(url)
    with pytest.raises(NotFound) as e:
        c.load("cl-no-such-model")
    assert isinstance(e.value, LookupError) and isinstance(e.value, CkptdError)
    assert e.value.status == 404
    assert e.value.code and e.value.code != "http_404"
    assert "cl-no-such-model" in e.value.message
    assert e.value.message in str(e.value)
    with pytest.raises(InvalidRequest) as e2:
        c.save({"w": torch.ones(2)}, "bad name!")
    assert isinstance(e2.value, ValueError)
    assert e2.value.status == 400
    assert "model name" in e2.value.message
    c.save({"w": torch.ones(2)}, "cl-err")
    with pytest.raises(CkptdError) as e3:
        c.load("cl-err", root="/nope")
    assert e3.value.status in (404, 422)
    assert e3.value.message


def test_a_file_that_is_no_checkpoint_is_an_invalid_request(url: str, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"not a checkpoint\n" * 100)
    with pytest.raises(InvalidRequest) as e:
        Client(url).save_file(f, "cl-err")
    assert e.value.status == 415


def test_a_write_without_a_token_is_refused_before_the_body(
        tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    tok = tmp_path / "tokens"
    tok.write_text("tok-w write\ntok-r read\n")
    d = start_daemon(["--token-file", str(tok)], name="auth")
    sd = {"w": torch.randn(64, 64)}
    t0 = time.monotonic()
    with pytest.raises(AuthError) as e:
        Client(d.url).save(sd, "cl-auth")
    assert e.value.status == 401, e.value
    assert isinstance(e.value, PermissionError)
    # refused on the headers (Expect: 100-continue), not after the 1 s wait
    assert time.monotonic() - t0 < 0.9
    with pytest.raises(AuthError) as e:
        Client(d.url, token="tok-r").save(sd, "cl-auth")
    assert e.value.status == 403, e.value
    j = Client(d.url, token="tok-w").save(sd, "cl-auth", epoch=1)
    assert j["epoch"] == 1
    got = Client(d.url).load("cl-auth")  # reads are open without --auth-read
    assert torch.equal(got["w"], sd["w"])


def test_connection_refused_is_retried_then_raised(caplog: pytest.LogCaptureFixture) -> None:
    c = Client("http://127.0.0.1:%d" % free_port(), retries=2, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(CkptdConnectionError) as e:
        c.list("m")
    assert isinstance(e.value, ConnectionError)
    assert e.value.status is None
    assert "3 attempts" in str(e.value)
    assert time.monotonic() - t0 >= 0.05 + 0.1
    # each retry is logged, nothing is printed
    retries = [r for r in caplog.records if r.name == "ckptd" and "retrying" in r.getMessage()]
    assert len(retries) == 2


def test_options_after_the_url_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Client("http://127.0.0.1:1", "token")  # type: ignore[misc]
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1:1")
