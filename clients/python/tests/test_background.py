"""save(..., background=True) against a real ckptd, with real torch.

The save works from a snapshot taken before it returns: changing the model
right after stores the values of the call, in the very file a synchronous
save of them writes (shared storages stay shared). wait() gives the
checkpoint or raises the save's error; an error nobody waited for comes from
the next save; at most max_background saves run at once; close() waits for
those still running.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Dict, Iterator

import pytest
import torch

from ckptd import Client, InvalidRequest, SaveHandle
from helpers import torch_bytes


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


def state(seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(300, 300, generator=g)
    return {"fc.weight": w, "fc.bias": torch.randn(300, generator=g),
            "tied.weight": w,  # the same storage twice
            "rows": w[10:20],  # a view into it
            "half": torch.randn(64, 64, generator=g).to(torch.float16)}


def test_a_background_save_stores_the_values_at_the_call(client: Client) -> None:
    sd = state(1)
    want = torch_bytes(sd)
    before = sd["fc.weight"].clone()
    h = client.save(sd, "bg-a", epoch=1, background=True)
    assert isinstance(h, SaveHandle)
    with torch.no_grad():  # training goes on at once
        sd["fc.weight"].add_(1.0)
        sd["half"].zero_()
    j = h.wait(timeout=120)
    assert h.done()
    assert j["sha256"] == hashlib.sha256(want).hexdigest()
    back = client.load("bg-a", j["id"])
    assert torch.equal(back["fc.bias"], sd["fc.bias"])
    assert torch.equal(back["fc.weight"], before)
    assert not torch.equal(back["fc.weight"], sd["fc.weight"])
    assert not torch.equal(back["half"], sd["half"])
    assert j["dedup"]["tensors"] == 3  # tied and view share one storage


def test_saves_in_a_row_each_store_their_own_values(client: Client) -> None:
    # the second and later snapshots reuse the first one's buffers
    sd = state(4)
    for epoch in range(4):
        want = torch_bytes(sd)
        h = client.save(sd, "bg-row", epoch=epoch, background=True)
        with torch.no_grad():
            for t in sd.values():
                t.add_(1)
        assert h.wait(timeout=120)["sha256"] == hashlib.sha256(want).hexdigest()


def test_an_error_comes_from_wait_or_from_the_next_save(client: Client) -> None:
    sd = state(2)
    h = client.save(sd, "-not-a-name", background=True)
    with pytest.raises(InvalidRequest):
        h.wait(timeout=60)
    client.save(sd, "bg-b")  # taken by wait(): not raised again

    h = client.save(sd, "-not-a-name", background=True)
    h._done.wait(60)
    with pytest.raises(InvalidRequest):
        client.save(sd, "bg-b")
    client.save(sd, "bg-b")  # raised once


def test_at_most_one_runs_unless_asked(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    running = []
    real = Client._save_now

    def slow(self: Client, obj: object, model: str, **kw: object) -> object:
        running.append(model)
        gate.wait(30)
        return real(self, obj, model, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Client, "_save_now", slow)
    sd = state(3)
    with Client(url) as c:
        h1 = c.save(sd, "bg-c1", background=True)
        t = threading.Timer(0.5, gate.set)
        t.start()
        h2 = c.save(sd, "bg-c2", background=True)  # waits for h1 first
        assert h1.done()
        h2.wait(60)
        t.join()
    gate.clear()
    with Client(url, max_background=2) as c:
        h1 = c.save(sd, "bg-c3", background=True)
        h2 = c.save(sd, "bg-c4", background=True)  # does not wait
        assert not h1.done() and not h2.done()
        gate.set()
    assert h1.done() and h2.done()  # close() waited for both
    assert h1.wait()["model"] == "bg-c3" and h2.wait()["model"] == "bg-c4"
