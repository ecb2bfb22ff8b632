"""The client as a package: `pip install --no-build-isolation ./clients/python`
into a fresh venv (Debian's python3 -m venv --system-site-packages, with
Debian's setuptools and wheel, no package index) gives `import ckptd`, its
py.typed marker and the `ckptd-client` console script, which works against a
real ckptd; importing ckptd imports no torch; mypy --strict passes on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import torch

from helpers import CLIENT_DIR


def run(cmd: List[str], **kw: Any) -> "subprocess.CompletedProcess[str]":
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, "%s: %s\n%s" % (cmd, p.stdout[-3000:], p.stderr[-3000:])
    return p


def test_pip_installs_the_package_and_its_console_script_into_a_fresh_venv(
        tmp_path: Path, url: str) -> None:
    # A copy of the tree, so that the build's own files (build/, *.egg-info)
    # land in it and not in the repository.
    shutil.copytree(CLIENT_DIR, tmp_path / "clients" / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    venv = tmp_path / "venv"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)])
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "./clients/python"],
        cwd=tmp_path, env=env)

    py = str(venv / "bin" / "python")
    p = run([py, "-c", "import ckptd, os, sys; print(os.path.dirname(ckptd.__file__)); "
             "print(ckptd.__version__); print('torch' in sys.modules)"], cwd=tmp_path, env=env)
    where, version, imported_torch = p.stdout.split()
    assert Path(where).is_relative_to(venv), where
    assert (Path(where) / "py.typed").is_file()
    assert imported_torch == "False"

    script = str(venv / "bin" / "ckptd-client")
    p = run([script, "--help"], cwd=tmp_path, env=env)
    for cmd in ("push", "pull", "list", "info", "delete", "models"):
        assert cmd in p.stdout
    assert run([script, "--version"], cwd=tmp_path, env=env).stdout.strip() == \
        "ckptd-client " + version

    # the installed script against the daemon (the venv sees Debian's torch)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"w": torch.arange(10.0)}, ckpt)
    p = run([script, "push", str(ckpt), "-m", "cl-venv", "--epoch", "1", "--url", url],
            cwd=tmp_path, env=env)
    assert "stored cl-venv checkpoint" in p.stdout
    run([py, "-c", "import sys, torch; from ckptd import Client; "
         "assert torch.equal(Client(sys.argv[1]).load('cl-venv')['w'], torch.arange(10.0))",
         url], cwd=tmp_path, env=env)


def test_importing_ckptd_imports_no_torch() -> None:
    p = run([sys.executable, "-c", "import sys, ckptd, ckptd.cli; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"],
            cwd=CLIENT_DIR)
    assert p.stdout.strip() == "[]"


def test_the_package_passes_mypy_strict() -> None:
    if subprocess.run([sys.executable, "-c", "import mypy"], capture_output=True).returncode:
        raise AssertionError("mypy is missing: apt-get install python3-mypy (make deps)")
    p = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", os.devnull],
                       capture_output=True, text=True, cwd=CLIENT_DIR, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
