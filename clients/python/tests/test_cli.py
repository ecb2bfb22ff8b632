"""The command line (`python3 -m ckptd`, installed as `ckptd-client`) against
a real ckptd: push, pull, list, info, delete and models from a shell; push,
pull and list without torch; the server's errors printed with exit status 1;
progress drawn on a terminal for push and pull, and never into a pipe."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Tuple

import pytest
import torch

from ckptd import Client
from helpers import assert_same_state, cli_env, run_cli, trained


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Any]:
    model, opt = trained(1)
    path = tmp_path_factory.mktemp("cli") / "ckpt.pth"
    torch.save({"epoch": 2, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict()}, path)
    return path, model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_pull_and_list_from_a_shell(url: str, ckpt: Any, tmp_path: Path) -> None:
    path, model = ckpt
    p = run_cli(["push", str(path), "--model", "cl-cli", "--epoch", "2", "--loss", "0.31",
                 "--run", "r1", "--metric", "acc=0.91", "--tag", "t1", "--tag", "t2",
                 "--url", url], cwd=tmp_path)
    assert "stored cl-cli checkpoint" in p.stdout
    ck = Client(url).get("cl-cli")
    assert (ck["epoch"], ck["loss"], ck["run"]) == (2, 0.31, "r1")
    assert ck["metrics"] == {"acc": 0.91}
    assert sorted(ck["tags"]) == ["t1", "t2"]
    assert ck["sha256"] == sha256(path)

    # URL from $CKPTD_URL; keys and root
    out = tmp_path / "conv.pth"
    run_cli(["pull", "--model", "cl-cli", "--root", "/model_state_dict", "--keys", "conv*",
             "-o", str(out)], cwd=tmp_path, env={"CKPTD_URL": url})
    sd = torch.load(out, weights_only=True)
    assert sorted(sd) == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    for k in sd:
        assert torch.equal(sd[k], model.state_dict()[k])

    # the default output name (the default ref is latest), the whole state_dict
    run_cli(["pull", "--model", "cl-cli", "--url", url], cwd=tmp_path)
    sd = torch.load(tmp_path / "cl-cli-latest.pth", weights_only=True)
    assert_same_state(sd, model.state_dict())

    out = tmp_path / "fc.safetensors"
    run_cli(["pull", "--model", "cl-cli", "--keys", "fc.*", "--format", "safetensors",
             "-o", str(out), "--url", url], cwd=tmp_path)
    with open(out, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert sorted(k for k in header if k != "__metadata__") == ["fc.bias", "fc.weight"]

    # -o - writes the file to stdout
    p = run_cli(["pull", "--model", "cl-cli", "--keys", "fc.*", "-o", "-", "--url", url],
                cwd=tmp_path, text=False)
    sd = torch.load(io.BytesIO(p.stdout), weights_only=True)
    assert sorted(sd) == ["fc.bias", "fc.weight"]

    # the original upload, byte for byte, named by its id
    run_cli(["pull", "--model", "cl-cli", "--original", "--url", url], cwd=tmp_path)
    assert sha256(tmp_path / ("cl-cli-%d.pth" % ck["id"])) == ck["sha256"]

    p = run_cli(["list", "--model", "cl-cli", "--url", url], cwd=tmp_path)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2, p.stdout
    assert str(ck["id"]) in lines[1]
    assert "0.31" in lines[1]


def test_info_delete_and_models_from_a_shell(url: str, ckpt: Any, tmp_path: Path) -> None:
    path, _ = ckpt
    c = Client(url)
    first = c.save_file(path, "cl-info", epoch=1, loss=0.5, metrics={"acc": 0.75})
    second = c.save_file(path, "cl-info", epoch=2, loss=0.7)
    p = run_cli(["info", "-m", "cl-info", "--url", url], cwd=tmp_path)
    assert p.stdout.startswith("checkpoint %d of cl-info" % second["id"]), p.stdout
    p = run_cli(["info", "-m", "cl-info", "--ref", "best", "--url", url], cwd=tmp_path)
    assert p.stdout.startswith("checkpoint %d of cl-info" % first["id"]), p.stdout
    assert "acc=0.75" in p.stdout
    assert "/model_state_dict/conv1.weight" in p.stdout
    p = run_cli(["info", "-m", "cl-info", "--ref", str(first["id"]), "--json", "--url", url],
                cwd=tmp_path)
    assert json.loads(p.stdout)["sha256"] == first["sha256"]

    run_cli(["delete", "-m", "cl-info", str(first["id"]), "--url", url], cwd=tmp_path)
    assert [x["id"] for x in c.list("cl-info")] == [second["id"]]

    p = run_cli(["models", "--json", "--url", url], cwd=tmp_path)
    assert "cl-info" in [m["name"] for m in json.loads(p.stdout)]
    p = run_cli(["--url", url, "models"], cwd=tmp_path)
    assert any(line.startswith("cl-info ") for line in p.stdout.splitlines())


NO_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` now fails
from ckptd.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules or sys.modules["torch"] is None
sys.exit(code)
"""


def test_push_pull_and_list_need_no_torch(url: str, ckpt: Any, tmp_path: Path) -> None:
    path, _ = ckpt

    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        p = subprocess.run([sys.executable, "-c", NO_TORCH] + list(args), capture_output=True,
                           text=True, env=cli_env(), cwd=tmp_path, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        return p

    run("push", str(path), "--model", "cl-notorch", "--url", url)
    p = run("list", "--model", "cl-notorch", "--url", url)
    assert len(p.stdout.strip().splitlines()) == 2, p.stdout
    run("pull", "--model", "cl-notorch", "--url", url, "-o", str(tmp_path / "x.pth"))
    run("pull", "--model", "cl-notorch", "--original", "--url", url, "-o",
        str(tmp_path / "y.pth"))
    assert sha256(tmp_path / "y.pth") == sha256(path)


def test_cli_errors_print_the_server_message(url: str, ckpt: Any, tmp_path: Path) -> None:
    p = run_cli(["pull", "--model", "cl-cli-none", "--url", url], cwd=tmp_path, ok=False)
    assert p.returncode == 1
    assert "404" in p.stderr
    assert "cl-cli-none" in p.stderr
    assert not (tmp_path / "cl-cli-none-latest.pth").exists()
    assert [f.name for f in tmp_path.iterdir()] == []  # no temporary file left either
    p = run_cli(["push", str(ckpt[0]), "--model", "x", "--metric", "acc", "--url", url],
                cwd=tmp_path, ok=False)
    assert p.returncode == 2
    assert "name=value" in p.stderr
    p = run_cli(["push", str(tmp_path / "missing.pth"), "--model", "x", "--url", url],
                cwd=tmp_path, ok=False)
    assert p.returncode == 1
    assert "missing.pth" in p.stderr


# a rate as the progress line draws it: a fast loopback pull reaches GB/s
RATE = re.compile(r"[0-9.]+ [kMG]?B/s")


def run_on_a_terminal(args: List[str], cwd: Path) -> Tuple[int, str]:
    """Runs the command line with its stderr on a pseudo-terminal -> (exit
    status, what the terminal received)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "ckptd"] + args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=slave, env=cli_env(), cwd=cwd)
    finally:
        os.close(slave)
    got = b""
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        got += b
    os.close(master)
    return p.wait(timeout=120), got.decode("utf-8", "replace")


def test_push_and_pull_of_a_large_file_show_progress_on_a_terminal(
        url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.pth"
    torch.save({"w": torch.randn(16 << 20)}, big)  # 64 MiB
    rc, term = run_on_a_terminal(["push", str(big), "-m", "cl-progress", "--url", url],
                                 tmp_path)
    assert rc == 0, term
    assert "\rpush big.pth  " in term
    assert RATE.search(term), term
    assert "67.1 MB in " in term  # the last line: the total and the time it took
    rc, term = run_on_a_terminal(["pull", "-m", "cl-progress", "--original", "-o",
                                  str(tmp_path / "back.pth"), "--url", url], tmp_path)
    assert rc == 0, term
    assert "\rpull back.pth  " in term
    assert "%" in term and RATE.search(term), term
    assert sha256(tmp_path / "back.pth") == sha256(big)
    # -q: no progress, only the result
    rc, term = run_on_a_terminal(["pull", "-q", "-m", "cl-progress", "-o",
                                  str(tmp_path / "sd.pth"), "--url", url], tmp_path)
    assert rc == 0, term
    assert "\r" not in term.replace("\r\n", "\n")
    assert "wrote " in term


def test_no_progress_goes_into_a_pipe(url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.pth"
    torch.save({"w": torch.randn(4 << 20)}, big)
    p = run_cli(["push", str(big), "-m", "cl-progress-pipe", "--url", url], cwd=tmp_path)
    assert "\r" not in p.stderr and "MB/s" not in p.stderr, p.stderr
    p = run_cli(["pull", "-m", "cl-progress-pipe", "-o", str(tmp_path / "sd.pth"),
                 "--url", url], cwd=tmp_path)
    assert p.stderr.startswith("wrote "), p.stderr
    assert "\r" not in p.stderr
