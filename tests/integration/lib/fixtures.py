"""Checkpoint files the integration tests upload, and what torch says about them.

seed(): the files tests/data/make_seed.py writes (the PyTorch tutorial's
TheModelClass files and a few more), generated once per run.sh invocation
($CKPTD_IT_SEED) or on demand, with their expect.json.

compat(): every file of tests/data/compat/torch2/ (torch 2.x files from
tracel-ai/burn, see tests/data/compat/README.md; $CKPTD_COMPAT_DIR overrides)
classified as "ok" (a zip checkpoint), "legacy" (the non-zip format) or
"broken", with the expectation for "ok" files computed here with torch.load.
"""

import json
import os
import subprocess
import sys

from . import ckptd

ZIP_MAGIC = b"PK\x03\x04"
_seed_cache = None


def seed():
    """-> (dir, {filename: expectation dict}) for the generated seed files."""
    global _seed_cache
    if _seed_cache:
        return _seed_cache
    d = os.environ.get("CKPTD_IT_SEED")
    if not d or not os.path.exists(os.path.join(d, "expect.json")):
        d = os.path.join(ckptd.work_dir(), "seed")
        subprocess.run(
            ["/usr/bin/python3", os.path.join(ckptd.REPO, "tests", "data", "make_seed.py"), d],
            check=True,
        )
    with open(os.path.join(d, "expect.json")) as f:
        meta = json.load(f)
    _seed_cache = (d, meta)
    return _seed_cache


def seed_path(name):
    return os.path.join(seed()[0], name)


def seed_bytes(name):
    with open(seed_path(name), "rb") as f:
        return f.read()


def compat_dir():
    return os.environ.get("CKPTD_COMPAT_DIR") or os.path.normpath(
        os.path.join(ckptd.REPO, "tests", "data", "compat", "torch2")
    )


def classify(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return "ok"
    if os.path.basename(path) == "broken.pt" or not head.startswith(b"\x80"):
        return "broken"
    return "legacy"


def compat():
    """-> list of (name, path, kind, expectation or None), sorted by name."""
    import torch

    from . import expect

    d = compat_dir()
    if not os.path.isdir(d):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if not name.endswith(".pt") or not os.path.isfile(path):
            continue
        kind = classify(path)
        exp = None
        if kind == "ok":
            obj = torch.load(path, map_location="cpu")
            e, s, l = expect.top_level_meta(obj)
            exp = {
                "tensors": expect.tensors_of(obj),
                "layout": expect.layout_of(obj),
                "epoch": e, "step": s, "loss": l,
                "storage_bytes": expect.storage_bytes(obj),
            }
        out.append((name, path, kind, exp))
    return out


def model_name(s):
    """A model name from a file name (SPEC 2 alphabet)."""
    base = os.path.splitext(os.path.basename(s))[0]
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in base)


def tensor_triples(tensors):
    """Server tensor list -> sorted [(path, dtype, tuple(shape))]."""
    return sorted((t["path"], t["dtype"], tuple(t["shape"])) for t in tensors)


def expected_triples(exp):
    return sorted((p, d, tuple(s)) for p, d, s in exp["tensors"])


if __name__ == "__main__":
    sys.exit("library module")
