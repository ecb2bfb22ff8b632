"""Checkpoints of several files (SPEC 3.2) from the client, against a real
ckptd with real torch: push_dir() of a directory (two torch shards, a
safetensors file written by hand, its index, a file two directories down and
an empty file) and pull_dir() into a fresh directory give every file back
byte for byte; the checkpoint's sha256 is the SHA-256 of its file list in
sha256sum's format, its format "safetensors-sharded" with an index; a
second push of the same directory sends a few kilobytes (bytes counted by
a proxy on the wire, as test_thin.py counts them) and its tensors dedup;
files go up in parallel, a file cut off is retried, a file that fails
leaves no checkpoint; symbolic links, special files and names that would
leave the target directory are handled as documented; pull_dir of a
single-file checkpoint writes its one file; the command line's push --dir
and pull --dir round trip.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import torch

from ckptd import Client, CkptdError, InvalidRequest, NotFound
from ckptd.client import _name_parts
from helpers import CLIENT_DIR, run_cli, torch_bytes


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


# a small torch.distributed.checkpoint directory from the repository's test data
DCP_SMALL = Path(__file__).resolve().parents[3] / "tests" / "data" / "dcp" / "small"

def safetensors_bytes(tensors: Dict[str, torch.Tensor]) -> bytes:
    """A safetensors file by hand: 8-byte little-endian header length, the
    JSON header (padded with spaces to 8 bytes), then the tensors' bytes."""
    header: Dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, t in sorted(tensors.items()):
        b = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def make_dir(root: Path, seed: int) -> Dict[str, bytes]:
    """A sharded checkpoint directory of fresh tensors -> {name: bytes}."""
    g = torch.Generator().manual_seed(seed)
    shard1 = {"enc.weight": torch.randn(256, 256, generator=g),
              "enc.bias": torch.randn(256, generator=g)}
    shard2 = {"dec.weight": torch.randn(128, 256, generator=g)}
    emb = {"embed.weight": torch.randn(64, 128, generator=g)}
    optim = {"step": 7, "exp_avg": torch.randn(100, 100, generator=g)}
    weight_map = {k: "model-00001-of-00002.pt" for k in shard1}
    weight_map.update({k: "model-00002-of-00002.pt" for k in shard2})
    weight_map.update({k: "embed.safetensors" for k in emb})
    files = {
        "model-00001-of-00002.pt": torch_bytes(shard1),
        "model-00002-of-00002.pt": torch_bytes(shard2),
        "embed.safetensors": safetensors_bytes(emb),
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2).encode(),
        "optim/rank0/state.pt": torch_bytes(optim),
        "README.txt": b"",
    }
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def listing_sha256(files: Dict[str, bytes]) -> str:
    """The SHA-256 of `sha256sum` lines ("HEX  NAME\\n"), names in byte order."""
    lines = "".join("%s  %s\n" % (hashlib.sha256(files[n]).hexdigest(), n)
                    for n in sorted(files, key=lambda s: s.encode()))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_tree(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


class CountingProxy:
    """A TCP proxy in front of the daemon counting the bytes clients send
    (all of them: headers, /blobs/missing, bodies). cut: the first
    connection whose client has sent more than cut bytes is closed on both
    sides at once, as a lost network does."""

    def __init__(self, upstream_port: int, cut: Optional[int] = None) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.done_cut = False
        self.up_bytes = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def take(self) -> int:
        """The bytes counted since the last take()."""
        with self.lock:
            n, self.up_bytes = self.up_bytes, 0
        return n

    def serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
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
                    if (self.cut is not None and not self.done_cut
                            and sent + len(b) > self.cut):
                        self.done_cut = True
                        u.sendall(b[:self.cut - sent])
                        for s in (c, u):
                            s.shutdown(socket.SHUT_RDWR)
                            s.close()
                        return
                    self.up_bytes += len(b)
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


def test_push_dir_then_pull_dir_gives_every_file_back(client: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_dir(src, 1000)
    (src / "empty-dir").mkdir()  # not kept: a checkpoint holds files
    ck = client.push_dir("dir-a", src, epoch=3, step=300, loss=0.25, run="r1",
                         metrics={"acc": 0.9}, tags=["sharded", "t2"], pin=True)
    assert ck["state"] == "committed"
    assert (ck["model"], ck["epoch"], ck["step"], ck["loss"], ck["run"]) == \
        ("dir-a", 3, 300, 0.25, "r1")
    assert ck["metrics"] == {"acc": 0.9}
    assert sorted(ck["tags"]) == ["sharded", "t2"]
    assert ck["pinned"] is True
    assert ck["format"] == "safetensors-sharded"
    assert ck["size"] == sum(len(b) for b in files.values())
    assert ck["sha256"] == listing_sha256(files)
    got = {f["name"]: f for f in ck["files"]}
    assert sorted(got) == sorted(files)
    for name, data in files.items():
        assert (got[name]["size"], got[name]["sha256"]) == \
            (len(data), hashlib.sha256(data).hexdigest()), name
    assert got["model-00001-of-00002.pt"]["format"] == "torch-zip"
    assert got["optim/rank0/state.pt"]["format"] == "torch-zip"
    assert got["embed.safetensors"]["format"] == "safetensors"
    assert got["README.txt"]["size"] == 0
    assert ck["tensor_count"] == 2 + 1 + 1 + 1
    # visible as the model's latest, with its files
    assert client.get("dir-a")["id"] == ck["id"]

    out = tmp_path / "fresh" / "out"  # made by pull_dir, parents too
    names = client.pull_dir("dir-a", "latest", out)
    assert sorted(names) == sorted(files)
    assert read_tree(out) == files
    assert not [p for p in out.rglob(".ckptd-*")], "a temporary file was left"

    # by id, into the same directory again: the files are replaced, others kept
    (out / "mine.txt").write_bytes(b"not the checkpoint's")
    (out / "README.txt").write_bytes(b"changed")
    assert sorted(client.pull_dir("dir-a", ck["id"], out)) == sorted(files)
    assert read_tree(out) == dict(files, **{"mine.txt": b"not the checkpoint's"})


def test_format_and_sha256_of_other_directories(client: Client, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_bytes(b"hello\n")
    (plain / "a b%.bin").write_bytes(os.urandom(5000))  # a name to percent-encode
    ck = client.push_dir("dir-fmt", plain)
    assert ck["format"] == "files"
    assert ck["sha256"] == listing_sha256(read_tree(plain))
    # a torch.distributed.checkpoint directory (torch 1.13 wrote it: 2 ranks)
    for f in DCP_SMALL.iterdir():
        (plain / f.name).write_bytes(f.read_bytes())
    ck = client.push_dir("dir-fmt", plain)
    assert ck["format"] == "dcp"
    out = tmp_path / "out"
    client.pull_dir("dir-fmt", "latest", out)
    assert read_tree(out) == read_tree(plain)


def test_a_second_push_sends_only_what_is_new_and_dedups(daemon: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_dir(src, 1001)
    total = sum(len(b) for b in files.values())
    proxy = CountingProxy(daemon.port)
    try:
        with Client(proxy.url) as c:
            first = c.push_dir("dir-thin", src, epoch=1)
            first_wire = proxy.take()
            assert c.last_push_wire == total  # nothing was stored: every file whole
            second = c.push_dir("dir-thin", src, epoch=2)
            second_wire = proxy.take()
            second_body = c.last_push_wire
            # one tensor of one shard changes: about its bytes go again
            g = torch.Generator().manual_seed(1002)
            shard2 = {"dec.weight": torch.randn(128, 256, generator=g)}
            (src / "model-00002-of-00002.pt").write_bytes(torch_bytes(shard2))
            third = c.push_dir("dir-thin", src, epoch=3)
            third_wire = proxy.take()
            plain = c.push_dir("dir-thin", src, epoch=4, thin=False)
            plain_wire = proxy.take()
    finally:
        proxy.close()
    print("push_dir of %d bytes: %d, then %d (thin), %d (one tensor changed), %d (thin=False)"
          " bytes on the wire" % (total, first_wire, second_wire, third_wire, plain_wire))
    assert first_wire >= total
    assert second_wire < total // 20, (second_wire, total)
    assert second_body is not None and second_body < 8192
    assert second["sha256"] == first["sha256"]
    assert first["dedup"]["new_bytes"] == first["dedup"]["bytes"] > 0
    assert second["dedup"]["new_bytes"] == 0
    assert second["dedup"]["new_tensors"] == 0
    assert second["dedup"]["bytes"] == first["dedup"]["bytes"]
    changed = 128 * 256 * 4
    assert third["dedup"]["new_bytes"] == changed
    assert changed < third_wire < changed + 16384, third_wire
    assert plain_wire >= total
    assert plain["sha256"] == third["sha256"]
    assert plain["dedup"]["new_bytes"] == 0


def test_files_go_up_in_parallel(client: Client, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    files = make_dir(src, 1003)
    real = Client._put_file
    lock = threading.Lock()
    calls: List[int] = []
    running = [0, 0]  # now, most at once
    # the first three files wait for each other: a push that sends one file
    # at a time breaks the barrier after its timeout, and fails
    meet = threading.Barrier(3, timeout=30)
    wait = [True]

    def counted(self: Client, *args: Any, **kw: Any) -> Any:
        with lock:
            calls.append(threading.get_ident())
            first = len(calls) <= 3
            running[0] += 1
            running[1] = max(running)
        try:
            if first and wait[0]:
                meet.wait()
            return real(self, *args, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Client, "_put_file", counted)
    ck = client.push_dir("dir-par", src, parallel=3)
    assert len(calls) == len(files)
    assert running[1] == 3 and len(set(calls)) == 3
    assert ck["sha256"] == listing_sha256(files)

    calls.clear()
    running[1] = 0
    wait[0] = False
    client.push_dir("dir-par", src, parallel=1)
    assert running[1] == 1 and len(set(calls)) == 1


def test_a_file_cut_off_is_sent_again(daemon: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    g = torch.Generator().manual_seed(1004)
    big = torch_bytes({"w%d" % i: torch.randn(256, 256, generator=g) for i in range(8)})
    (src / "big").mkdir(parents=True)
    (src / "big" / "weights.pt").write_bytes(big)
    (src / "config.json").write_bytes(b'{"layers": 8}')
    proxy = CountingProxy(daemon.port, cut=len(big) // 2)
    try:
        with Client(proxy.url, backoff=0.05) as c:
            ck = c.push_dir("dir-cut", src)
    finally:
        proxy.close()
    assert proxy.done_cut, "the first attempt was cut"
    assert ck["sha256"] == listing_sha256(read_tree(src))
    out = tmp_path / "out"
    with Client(daemon.url) as c:
        c.pull_dir("dir-cut", ck["id"], out)
    assert read_tree(out) == read_tree(src)


def test_a_file_that_fails_commits_nothing(client: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_dir(src, 1005)
    good = torch_bytes({"x": torch.randn(100, 100)})
    (src / "damaged.pt").write_bytes(good[:len(good) - 100])  # a torch zip cut short
    with pytest.raises(InvalidRequest) as e:
        client.push_dir("dir-fail", src)
    assert e.value.status == 422
    assert client.list("dir-fail") == []


def test_a_commit_whose_answer_was_lost(url: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    files = make_dir(src, 1007)
    real = Client._json
    seen: List[str] = []

    def lost(self: Client, method: str, path: str, *a: Any, **kw: Any) -> Any:
        if path.endswith("/commit") and not seen:
            seen.append("committed, answer lost")
            real(self, method, path, *a, **kw)
            return real(self, method, path, *a, **kw)  # the retry: 409, committed
        return real(self, method, path, *a, **kw)

    with Client(url, backoff=0.01) as c:
        monkeypatch.setattr(Client, "_json", lost)
        ck = c.push_dir("dir-lost", src)
        assert seen
        assert (ck["state"], ck["sha256"]) == ("committed", listing_sha256(files))
        assert sorted(f["name"] for f in ck["files"]) == sorted(files)

        # a commit refused while the staged checkpoint is still open (a
        # broken-off attempt the server still writes) is tried again
        def busy(self: Client, method: str, path: str, *a: Any, **kw: Any) -> Any:
            if path.endswith("/commit") and len(seen) < 2:
                seen.append("busy")
                raise CkptdError("a file is being written", status=409, code="conflict")
            return real(self, method, path, *a, **kw)

        monkeypatch.setattr(Client, "_json", busy)
        ck = c.push_dir("dir-lost", src)
        assert seen == ["committed, answer lost", "busy"]
        assert ck["state"] == "committed" and c.get("dir-lost")["id"] == ck["id"]


def test_links_special_files_and_empty_directories(client: Client, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"the target's bytes")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "real.txt").write_bytes(b"real")
    # a link to a file, pointing outside the directory: its bytes, the link's name
    os.symlink(outside, src / "sub" / "link.bin")
    ck = client.push_dir("dir-links", src)
    out = tmp_path / "out"
    client.pull_dir("dir-links", ck["id"], out)
    assert read_tree(out) == {"real.txt": b"real", "sub/link.bin": b"the target's bytes"}
    assert not (out / "sub" / "link.bin").is_symlink()

    for bad, why in ((lambda d: os.symlink(tmp_path, d / "dirlink"), "directory"),
                     (lambda d: os.symlink(tmp_path / "nothing", d / "dangling"), "nothing"),
                     (lambda d: os.mkfifo(d / "fifo"), "regular file"),
                     (lambda d: (d / "bad\x01name").write_bytes(b"x"), "control")):
        d = tmp_path / ("bad-" + why.replace(" ", "-"))
        d.mkdir()
        (d / "ok.txt").write_bytes(b"ok")
        bad(d)
        with pytest.raises(ValueError, match=why):
            client.push_dir("dir-links-bad", d)
    empty = tmp_path / "empty"
    (empty / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="no files"):
        client.push_dir("dir-links-bad", empty)
    with pytest.raises(ValueError, match="not a directory"):
        client.push_dir("dir-links-bad", outside)
    # refused before anything was opened on the server: not even the model is made
    with pytest.raises(NotFound):
        client.list("dir-links-bad")


def test_pull_dir_of_a_single_file_checkpoint(client: Client, tmp_path: Path) -> None:
    sd = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    ck = client.save(sd, "dir-single", epoch=3)
    out = tmp_path / "out"
    assert client.pull_dir("dir-single", "latest", out) == ["dir-single-epoch3.pth"]
    assert read_tree(out) == {"dir-single-epoch3.pth": torch_bytes(sd)}
    assert hashlib.sha256(torch_bytes(sd)).hexdigest() == ck["sha256"]


def test_names_that_would_leave_the_directory_are_refused() -> None:
    assert _name_parts("a/b/model.pt") == ["a", "b", "model.pt"]
    assert _name_parts("..hidden/x..y") == ["..hidden", "x..y"]
    for bad in ("../x.pt", "a/../../x.pt", "..", ".", "./x", "/etc/passwd", "a//b", "a/",
                "", "a\\..\\b", "x\x00y", "x\ny", "\udcff.pt", "a" * 1025):
        with pytest.raises(ValueError):
            _name_parts(bad)


def test_pull_dir_refuses_a_list_that_would_escape(client: Client, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_bytes(b"x")
    ck = client.push_dir("dir-escape", src)

    # a link in the target directory that leads outside it
    target, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "sub")
    with pytest.raises(ValueError, match="outside"):
        client.pull_dir("dir-escape", ck["id"], target)
    assert list(elsewhere.iterdir()) == []

    # a server whose list names a file outside the target: nothing written
    real = Client._json

    def evil(self: Client, method: str, path: str, *a: Any, **kw: Any) -> Any:
        j = real(self, method, path, *a, **kw)
        if path.endswith("/files"):
            j["files"].append(dict(j["files"][0], name="../escaped.txt"))
        return j

    monkeypatch.setattr(Client, "_json", evil)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'..'"):
        client.pull_dir("dir-escape", ck["id"], out)
    assert not out.exists() and not (tmp_path / "escaped.txt").exists()


def test_pull_dir_checks_each_file_sha256(client: Client, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3000))
    ck = client.push_dir("dir-sha", src)
    real = Client._json

    def lying(self: Client, method: str, path: str, *a: Any, **kw: Any) -> Any:
        j = real(self, method, path, *a, **kw)
        if path.endswith("/files"):
            j["files"][0]["sha256"] = "0" * 64
        return j

    monkeypatch.setattr(Client, "_json", lying)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.bin").write_bytes(b"kept")
    with pytest.raises(CkptdError) as e:
        client.pull_dir("dir-sha", ck["id"], out)
    assert e.value.code == "sha256_mismatch"
    assert read_tree(out) == {"a.bin": b"kept"}  # the target as it was, no temporary file


def test_cli_push_dir_and_pull_dir(url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_dir(src, 1006)
    p = run_cli(["push", "--dir", str(src), "-m", "dir-cli", "--epoch", "4", "--loss", "0.5",
                 "--metric", "acc=0.75", "--tag", "cli", "--parallel", "2", "--url", url],
                cwd=tmp_path)
    assert "stored dir-cli checkpoint" in p.stdout and "6 files" in p.stdout, p.stdout
    ck = Client(url).get("dir-cli")
    assert (ck["epoch"], ck["loss"], ck["metrics"], ck["tags"]) == (4, 0.5, {"acc": 0.75},
                                                                     ["cli"])
    assert ck["sha256"] == listing_sha256(files)
    p = run_cli(["push", "--dir", str(src), "-m", "dir-cli", "--json", "--url", url],
                cwd=tmp_path)
    j = json.loads(p.stdout)
    assert (j["state"], j["dedup"]["new_bytes"], len(j["files"])) == ("committed", 0, 6)

    p = run_cli(["pull", "-m", "dir-cli", "--ref", str(ck["id"]), "--dir", "out", "--url", url],
                cwd=tmp_path)
    assert "wrote 6 files to out" in p.stderr
    assert read_tree(tmp_path / "out") == files
    run_cli(["pull", "-m", "dir-cli", "--dir", str(tmp_path / "out2"), "--url", url],
            cwd=tmp_path)  # latest
    assert read_tree(tmp_path / "out2") == files

    # usage errors exit 2, the server's errors 1
    for args in (["push", "-m", "dir-cli"],
                 ["push", str(src / "README.txt"), "--dir", str(src), "-m", "dir-cli"],
                 ["push", "--dir", str(src), "-m", "dir-cli", "--parallel", "0"],
                 ["pull", "-m", "dir-cli", "--dir", "x", "-o", "y"],
                 ["pull", "-m", "dir-cli", "--dir", "x", "--original"]):
        p = run_cli(args + ["--url", url], cwd=tmp_path, ok=False)
        assert p.returncode == 2, (args, p.stderr)
    p = run_cli(["pull", "-m", "dir-cli-none", "--dir", "x", "--url", url], cwd=tmp_path,
                ok=False)
    assert p.returncode == 1 and "not found" in p.stderr
    assert not (tmp_path / "x").exists()
    p = run_cli(["push", "--dir", str(tmp_path / "missing"), "-m", "dir-cli", "--url", url],
                cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "not a directory" in p.stderr


def test_names_are_sent_percent_encoded(client: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir with space").mkdir(parents=True)
    files = {"dir with space/ü#?%.txt": b"1", "plus+and&.txt": b"2"}
    for n, b in files.items():
        (src / n).write_bytes(b)
    ck = client.push_dir("dir-names", src)
    assert sorted(f["name"] for f in ck["files"]) == sorted(files)
    assert ck["sha256"] == listing_sha256(files)
    out = tmp_path / "out"
    client.pull_dir("dir-names", "latest", out)
    assert read_tree(out) == files


BIG = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from ckptd import Client

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

src, out = sys.argv[3], sys.argv[4]
before = hwm()
with Client(sys.argv[1]) as c:
    first = c.push_dir("dir-big", src, parallel=2)
    first_wire = c.last_push_wire
    second = c.push_dir("dir-big", src, parallel=2)
    second_wire = c.last_push_wire
    c.pull_dir("dir-big", second["id"], out)
print(json.dumps({"before": before, "after": hwm(), "size": first["size"],
                  "wires": [first_wire, second_wire],
                  "sha256": [first["sha256"], second["sha256"]]}))
"""


@pytest.mark.skipif(os.environ.get("CKPTD_SKIP_BIG") == "1", reason="CKPTD_SKIP_BIG=1")
def test_big_files_stream_from_and_to_disk(url: str, tmp_path: Path) -> None:
    """push_dir and pull_dir of 256 MiB of files (a torch file of one 128 MiB
    tensor, 128 MiB of raw bytes) grow the client's peak RSS by far less than
    one file: every file streams (a child process without torch measures its
    VmHWM)."""
    src = tmp_path / "src"
    src.mkdir()
    g = torch.Generator().manual_seed(1010)
    torch.save({"w": torch.randn(32 << 20, generator=g)}, src / "weights.pt")
    with open(src / "raw.bin", "wb") as f:
        for i in range(128):
            f.write(bytes([i]) * (1 << 20))
    p = subprocess.run([sys.executable, "-c", BIG, url, CLIENT_DIR, str(src),
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    growth = r["after"] - r["before"]
    print("push_dir twice and pull_dir of %.0f MB: client peak RSS grew %.1f MB; "
          "%d then %d bytes sent" % (r["size"] / 2**20, growth / 2**20, *r["wires"]))
    assert growth < 48 << 20, growth
    assert r["sha256"][0] == r["sha256"][1]
    assert r["wires"][1] < (128 << 20) + 65536  # the tensor went as a reference
    for name in ("weights.pt", "raw.bin"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    Client(url).delete_model("dir-big")
