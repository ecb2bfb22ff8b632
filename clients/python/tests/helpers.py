"""What several of the client's tests share: a small trained model, the bytes
torch.save writes, a state_dict comparison, and running the command line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def trained(seed: int = 0) -> Tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    m = Net()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    return m, opt


def torch_bytes(obj: Any) -> bytes:
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def assert_same_state(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert tuple(got[k].shape) == tuple(v.shape), k
        assert torch.equal(got[k], v), "tensor %s differs" % k


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for `python3 -m ckptd` from the source tree."""
    e = dict(os.environ)
    for k in ("CKPTD_URL", "CKPTD_TOKEN", "CKPTD_CAFILE"):
        e.pop(k, None)
    e["PYTHONPATH"] = CLIENT_DIR + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra or {})
    return e


def run_cli(args: Sequence[str], *, cwd: Any, env: Optional[Dict[str, str]] = None,
            ok: bool = True, text: bool = True, python: str = sys.executable,
            ) -> "subprocess.CompletedProcess[Any]":
    """Runs `python -m ckptd ARGS` and (with ok) checks that it exits 0."""
    p = subprocess.run([python, "-m", "ckptd"] + list(args), capture_output=True, text=text,
                       env=cli_env(env), timeout=300, cwd=str(cwd))
    if ok:
        assert p.returncode == 0, "ckptd-client %s: %s %s" % (list(args), p.stdout, p.stderr)
    return p
