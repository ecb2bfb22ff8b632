"""Checkpoint files the integration tests upload, and what torch says about them.

seed(): the files tests/data/make_seed.py writes (the PyTorch tutorial's
TheModelClass files and a few more), generated once per run.sh invocation
($CKPTD_IT_SEED) or on demand, with their expect.json.

compat(): every file of tests/data/compat/torch2/ (torch 2.x files from
tracel-ai/burn, see tests/data/compat/README.md; $CKPTD_COMPAT_DIR overrides)
classified as "ok" (a zip checkpoint), "legacy" (the non-zip format) or
"broken", with the expectation for "ok" files computed here with torch.load.

legacy(): every legacy torch file (torch.save(..., _use_new_zipfile_serialization=False)):
the compat corpus's, tests/data/torch/valid/legacy_*.pt (tests/data/torch/make_legacy.py)
and the seed's legacy_113.pt, with their expectations.
"""

import json
import os
import pickle
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


TORCH_DATA = os.path.join(ckptd.REPO, "tests", "data", "torch")


class _Stub:
    """Anything a pickle names, so that a legacy file's pickles can be read
    without torch: only the persistent ids matter."""

    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init__(self, *a, **k):
        pass

    def __setitem__(self, k, v):
        pass

    def __setstate__(self, s):
        pass

    def append(self, v):
        pass

    def extend(self, v):
        pass


def _legacy_storage_bytes(path):
    """Bytes of the storages a legacy file holds: each root key's numel times
    its class's element size, from the pickle itself."""
    import torch

    seen, views = {}, []

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch" and name.endswith("Storage"):
                return getattr(torch, name)
            return _Stub

        def persistent_load(self, pid):
            if pid[0] == "storage":
                size = 1 if pid[1].__name__ == "UntypedStorage" else pid[1]().element_size()
                seen[pid[2]] = pid[4] * size
                views.append(len(pid) > 5 and pid[5] is not None)
                return None
            return _Stub  # ('module', class, file, source): a pickled module's class

    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        U(f).load()
    return sum(seen.values()), any(views)


def _expect_layout(name):
    """{path: [strides, offset]} from tests/data/torch/expect/<name>.txt."""
    out = {}
    with open(os.path.join(TORCH_DATA, "expect", name + ".txt")) as f:
        for line in f:
            p = line.split()
            if p[0] == "t":
                strides = [] if p[4] == "-" else [int(x) for x in p[4].split(",")]
                out[p[1]] = [strides, int(p[5])]
    return out


def legacy():
    """-> list of (name, path, expectation), sorted by name. The expectation is
    torch.load's view (tensors, layout, epoch/step/loss), the storage bytes
    read from the pickle, and "views": whether a persistent id has view
    metadata (then the layout is ckptd's, on the root storages, from
    tests/data/torch/expect/)."""
    import torch

    from . import expect

    # legacy_whole_model.pt pickles make_data.Net
    if TORCH_DATA not in sys.path:
        sys.path.insert(0, TORCH_DATA)
    files = [(n, p) for n, p, k, _ in compat() if k == "legacy"]
    valid = os.path.join(TORCH_DATA, "valid")
    files += [(n, os.path.join(valid, n)) for n in sorted(os.listdir(valid))
              if n.startswith("legacy_") and n.endswith(".pt")]
    files += [(n, os.path.join(seed()[0], n)) for n, m in sorted(seed()[1].items())
              if m.get("legacy")]
    out = []
    for name, path in files:
        obj = torch.load(path, map_location="cpu")
        e, s, l = expect.top_level_meta(obj)
        nbytes, views = _legacy_storage_bytes(path)
        exp = {
            "tensors": expect.tensors_of(obj),
            "layout": expect.layout_of(obj),
            "epoch": e, "step": s, "loss": l,
            "storage_bytes": nbytes,
            "views": views,
        }
        if views:
            exp["layout"] = _expect_layout(name[:-3])
        out.append((name, path, exp))
    return sorted(out)


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
