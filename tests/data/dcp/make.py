"""Writes the .metadata fixtures of tests/unit/test_dcp.c with real torch
1.13 (Debian's, under /usr/bin/python3):

  ws2.metadata   torch 1.13's own: 2 gloo ranks saved the test model of
                 tests/integration/lib/dcp.py (row-sharded ShardedTensors,
                 replicated tensors of float32, float16 and int64, a 0-d
                 tensor, two non-tensor values) with FileSystemWriter.
  small/         a whole directory, small enough for any test: 2 ranks,
                 {"w": 4x6 float32 ShardedTensor, rows 0-1 on rank 0 and
                 2-3 on rank 1 (w[i][j] = 6 i + j), "b": a replicated
                 float32 tensor [0.5, 1.5, 2.5], "step": 5}, written by
                 FileSystemWriter (1.13's default: a file per item).
  v2.metadata    the same Metadata pickled under torch 2.x's module names
                 (torch.distributed.checkpoint.metadata, ...filesystem),
                 with planner_data paths and a StorageMeta holding a
                 PosixPath, as 2.x's FileSystemWriter writes them.

Run from the repository's root: /usr/bin/python3 tests/data/dcp/make.py
"""
import io
import os
import pathlib
import pickle
import sys
import tempfile
import types

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "integration"))
from lib import dcp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _small_worker(rank, port, out):
    dcp.shim()
    dist = dcp._init_pg(rank, 2, port, 60)
    try:
        import torch
        from torch.distributed._shard import sharded_tensor
        from torch.distributed._shard.sharded_tensor import Shard
        from torch.distributed._shard.checkpoint import FileSystemWriter, save_state_dict
        full = torch.arange(24, dtype=torch.float32).reshape(4, 6)
        shard = Shard.from_tensor_and_offsets(full[2 * rank:2 * rank + 2].clone(),
                                              [2 * rank, 0], rank)
        w = sharded_tensor.init_from_local_shards([shard], [4, 6])
        sd = {"w": w, "b": torch.tensor([0.5, 1.5, 2.5]), "step": 5}
        save_state_dict(sd, storage_writer=FileSystemWriter(out))
        dist.barrier()
    finally:
        dist.destroy_process_group()


class StorageMeta:
    """2.x's StorageMeta, pickled under its 2.x name below."""

    def __init__(self, checkpoint_id, save_id):
        self.checkpoint_id = checkpoint_id
        self.save_id = save_id
        self.load_id = None
        self.modules = []


def main():
    dcp.shim()
    with tempfile.TemporaryDirectory() as d:
        dcp.save_sharded(d, 2, 7)
        with open(os.path.join(d, ".metadata"), "rb") as f:
            raw = f.read()
    with open(os.path.join(HERE, "ws2.metadata"), "wb") as f:
        f.write(raw)
    small = os.path.join(HERE, "small")
    if os.path.isdir(small):
        for n in os.listdir(small):
            os.unlink(os.path.join(small, n))
    dcp._run(_small_worker, 2, (dcp._free_port(), small), 120, "spawn")
    md = pickle.loads(raw)
    # 2.x names: the classes pickled under modules of those names
    from torch.distributed._shard.checkpoint import metadata as m13, filesystem as fs13
    new_md = types.ModuleType("torch.distributed.checkpoint.metadata")
    new_fs = types.ModuleType("torch.distributed.checkpoint.filesystem")
    sys.modules[new_md.__name__] = new_md
    sys.modules[new_fs.__name__] = new_fs
    for name in ("Metadata", "TensorStorageMetadata", "ChunkStorageMetadata",
                 "BytesStorageMetadata", "MetadataIndex"):
        cls = getattr(m13, name)
        cls.__module__ = new_md.__name__
        setattr(new_md, name, cls)
    StorageMeta.__module__ = new_md.__name__
    new_md.StorageMeta = StorageMeta
    fs13._StorageInfo.__module__ = new_fs.__name__
    new_fs._StorageInfo = fs13._StorageInfo
    md.planner_data = {k: tuple(k.split(".", 1)) if k.startswith("optim.") else (k,)
                       for k in md.state_dict_metadata}
    md.storage_meta = StorageMeta(pathlib.PosixPath("/ckpt/step_100"),
                                  "00000000-0000-0000-0000-000000000001")
    md.version = None
    buf = io.BytesIO()
    pickle.dump(md, buf, protocol=4)
    with open(os.path.join(HERE, "v2.metadata"), "wb") as f:
        f.write(buf.getvalue())
    for k, v in md.state_dict_metadata.items():
        print(k, type(v).__name__, getattr(v, "size", ""), len(getattr(v, "chunks", [])))


if __name__ == "__main__":
    main()
