"""Thin saves (SPEC 3.1) against a real ckptd, with real torch.

save() asks the server which storages it lacks and sends the others as
references: the stored checkpoint is byte for byte what torch.save writes,
with the same sha256 and dedup as a plain save; a second save of unchanged
weights sends a few kilobytes, one changed tensor sends about its own bytes;
a save whose references the server no longer has goes again whole; one
whose stored storages are under a sixteenth of its bytes goes plain; a save
cut off at 90% retries sending about a tenth of the file (the server keeps
what arrived whole, SPEC 3.1).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Any, Dict, Iterator

import pytest
import torch

from ckptd import Client
from helpers import torch_bytes


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


def weights(seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"enc.weight": torch.randn(256, 256, generator=g),
            "enc.bias": torch.randn(256, generator=g),
            "dec.weight": torch.randn(128, 256, generator=g),
            "head.weight": torch.randn(10, 128, generator=g).to(torch.bfloat16),
            "steps": torch.tensor(5)}


def test_a_thin_save_is_the_file_torch_writes_and_sends_only_what_changed(
        client: Client) -> None:
    sd = weights(1)
    full = client.save(sd, "thin-a", epoch=1)
    assert full["sha256"] == hashlib.sha256(torch_bytes(sd)).hexdigest()
    plain_wire = client.last_save_wire
    assert plain_wire == full["size"]  # nothing stored yet: the plain file

    obj: Dict[str, Any] = {"epoch": 2, "model": sd}
    again = client.save(obj, "thin-a", epoch=2)
    assert again["sha256"] == hashlib.sha256(torch_bytes(obj)).hexdigest()
    assert client.last_save_wire is not None and client.last_save_wire < 8192
    assert again["dedup"]["new_bytes"] == 0

    sd["dec.weight"][3, 4] += 1.0  # one storage of 128 KiB changed
    third = client.save({"epoch": 3, "model": sd}, "thin-a", epoch=3)
    assert third["dedup"]["new_bytes"] == 128 * 256 * 4
    assert client.last_save_wire is not None
    assert 128 * 256 * 4 < client.last_save_wire < 128 * 256 * 4 + 8192

    # the same save without thin: same answer but for the id
    plain = client.save({"epoch": 3, "model": sd}, "thin-b", epoch=3, thin=False)
    assert plain["sha256"] == third["sha256"]
    assert plain["dedup"] == dict(third["dedup"], new_bytes=0, new_tensors=0)
    assert client.last_save_wire == plain["size"]


def test_the_stored_bytes_download_as_written(client: Client, tmp_path: Any) -> None:
    sd = weights(2)
    client.save(sd, "thin-c", epoch=1)
    j = client.save({"w": sd, "note": "second"}, "thin-c", epoch=2)
    out = tmp_path / "c.pt"
    client.pull_file("thin-c", out, ref=j["id"])
    data = out.read_bytes()
    assert hashlib.sha256(data).hexdigest() == j["sha256"]
    back = torch.load(out)
    assert torch.equal(back["w"]["enc.weight"], sd["enc.weight"])


def test_a_reference_the_server_lost_makes_the_save_go_whole(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = weights(3)
    first = client.save(sd, "thin-d", epoch=1)
    # the server forgets the checkpoint (and its blobs) after the client asked
    real = Client._stored_refs

    def asked_then_deleted(self: Client, found: Any, hashes: Any) -> Any:
        refs = real(self, found, hashes)
        assert refs, "the first save's storages are stored"
        self.delete("thin-d", first["id"])
        return refs

    monkeypatch.setattr(Client, "_stored_refs", asked_then_deleted)
    j = client.save(sd, "thin-d", epoch=2)
    assert j["sha256"] == first["sha256"]
    # stored again: all but "steps", whose 8 bytes other tests stored too
    assert j["dedup"]["new_bytes"] >= j["dedup"]["bytes"] - 8
    assert client.last_save_wire == j["size"]


def test_a_storage_changed_since_its_last_save_is_sent_without_asking(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each storage's sample (4 KiB spread over it) is kept from save to
    save under the model and its path: one whose sample changed, into bytes
    this process did not send before, is sent as bytes without being hashed
    and asked about; the rest are asked about."""
    import ckptd.client as cc

    asked = []  # the byte sizes of the storages each save asked about
    real = Client._stored_refs

    def record(self: Client, found: Any, hashes: Any) -> Any:
        asked.append(sorted(n for _a, n, _t in found))
        return real(self, found, hashes)

    monkeypatch.setattr(Client, "_stored_refs", record)
    sizes = {"enc.weight": 256 * 256 * 4, "dec.weight": 128 * 256 * 4}
    sd = weights(4)
    client.save(sd, "thin-e", epoch=1)  # nothing known yet: all asked about
    assert asked[-1] == sorted(sizes.values())

    moved = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    j = client.save(moved, "thin-e", epoch=2)  # every weight moved, in new tensors
    assert asked[-1] == []
    assert client.last_save_wire == j["size"]
    assert j["sha256"] == hashlib.sha256(torch_bytes(moved)).hexdigest()

    j = client.save(moved, "thin-e", epoch=3)  # unchanged: asked, sent as references
    assert asked[-1] == sorted(sizes.values())
    assert client.last_save_wire is not None and client.last_save_wire < 8192

    # one tensor changed, in place, at one element: whether its sample
    # catches that or not, the other one is asked about
    moved["dec.weight"].view(-1)[-1] += 1.0
    j = client.save(moved, "thin-e", epoch=4)
    assert sizes["enc.weight"] in asked[-1]
    assert j["dedup"]["new_bytes"] == sizes["dec.weight"]
    assert j["sha256"] == hashlib.sha256(torch_bytes(moved)).hexdigest()
    # another model's names are its own: asked about
    client.save(moved, "thin-f", epoch=1)
    assert asked[-1] == sorted(sizes.values())
    # new weights sent plain to one model, then thin to another: bytes this
    # process sent before, so asked about, and sent as references
    twice = {k: v * 2 if v.is_floating_point() else v for k, v in moved.items()}
    client.save(twice, "thin-g", epoch=1, thin=False)
    j = client.save(twice, "thin-e", epoch=5)
    assert asked[-1] == sorted(sizes.values())
    assert client.last_save_wire is not None and client.last_save_wire < 8192
    # samples see a change anywhere in a storage that large
    t = torch.zeros(1 << 20, dtype=torch.uint8)
    assert not cc._SAMPLES.changed("test", "m", "t", t)
    assert not cc._SAMPLES.changed("test", "m", "t", t)
    t[(1 << 20) - 1] = 1  # the last byte is always in the sample
    assert cc._SAMPLES.changed("test", "m", "t", t)
    t[(1 << 20) - 1] = 0  # back to bytes sent before: asked about
    assert not cc._SAMPLES.changed("test", "m", "t", t)


def test_a_save_whose_stored_storages_are_a_small_share_goes_plain(client: Client) -> None:
    """References standing for less than a sixteenth of the storages' bytes
    are not worth a thin upload (the server hashes a plain one as it
    arrives): the file goes plain. The same references as most of the file
    go thin."""
    g = torch.Generator().manual_seed(31)
    small = torch.randn(2048, generator=g)  # 8 KiB
    big = torch.randn(256, 256, generator=g)  # 256 KiB
    client.save({"s": small}, "thin-h", epoch=1)
    j = client.save({"s": small, "b": big}, "thin-h", epoch=2)  # "s" stored: 1/33
    assert client.last_save_wire == j["size"]
    assert j["dedup"]["new_bytes"] == 256 * 256 * 4
    assert j["sha256"] == hashlib.sha256(torch_bytes({"s": small, "b": big})).hexdigest()
    j = client.save({"s": small * 2, "b": big}, "thin-h", epoch=3)  # "b" stored: 32/33
    assert client.last_save_wire is not None and client.last_save_wire < 2048 * 4 + 8192
    assert j["dedup"]["new_bytes"] == 2048 * 4
    assert j["sha256"] == hashlib.sha256(torch_bytes({"s": small * 2, "b": big})).hexdigest()


class CutProxy:
    """A TCP proxy in front of the daemon that cuts the first connection
    whose client has sent more than `cut` bytes (both sides closed at once,
    as a lost network does), and counts the bytes clients send after that."""

    def __init__(self, upstream_port: int, cut: int) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.done_cut = False
        self.after = 0  # bytes from clients once the cut was made
        self.lock = threading.Lock()
        self.sock = socket.socket()
        # a small receive buffer (inherited by accepted sockets), so the cut
        # comes while the client is still writing, not after its last byte
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self.up, args=(c, u), daemon=True).start()
            threading.Thread(target=self.down, args=(u, c), daemon=True).start()

    def up(self, c: socket.socket, u: socket.socket) -> None:
        sent = 0
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    u.shutdown(socket.SHUT_WR)
                    return
                with self.lock:
                    if self.done_cut:
                        self.after += len(b)
                    elif sent + len(b) > self.cut:
                        self.done_cut = True
                        u.sendall(b[:self.cut - sent])
                        for s in (c, u):
                            s.shutdown(socket.SHUT_RDWR)
                            s.close()
                        return
                sent += len(b)
                u.sendall(b)
        except OSError:
            return

    def down(self, u: socket.socket, c: socket.socket) -> None:
        try:
            while True:
                b = u.recv(65536)
                if not b:
                    c.shutdown(socket.SHUT_WR)
                    return
                c.sendall(b)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def test_a_save_cut_off_at_90_percent_retries_with_only_the_rest(daemon: Any) -> None:
    g = torch.Generator().manual_seed(21)
    # 80 storages of 1 MiB: a cut at 90% leaves 71 or 72 of them whole, and
    # the last 8 MiB are more than the client's socket buffers hold
    sd = {"layer%d.weight" % i: torch.randn(256, 1024, generator=g) for i in range(80)}
    size = len(torch_bytes(sd))
    proxy = CutProxy(daemon.port, int(size * 0.9))
    try:
        with Client(proxy.url) as c:
            ck = c.save(sd, "thin-cut", epoch=1)
            wire = c.last_save_wire
    finally:
        proxy.close()
    print("a save cut at 90%%: the retry sent %d of %d bytes (%.1f%%), %d after the cut"
          % (wire or 0, size, 100.0 * (wire or 0) / size, proxy.after))
    assert proxy.done_cut, "the first attempt was cut"
    assert ck["sha256"] == hashlib.sha256(torch_bytes(sd)).hexdigest()
    assert wire is not None and wire <= 0.15 * size, (wire, size)
    # everything the client sent after the cut: the question and the rest
    assert proxy.after <= 0.15 * size, (proxy.after, size)
    assert ck["dedup"]["new_tensors"] == 80
