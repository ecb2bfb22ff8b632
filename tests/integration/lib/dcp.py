#!/usr/bin/python3
"""torch.distributed.checkpoint (DCP) directories for the tests, written by torch.

A DCP checkpoint is a directory: a pickled `.metadata` and data files
`__R_S.distcp` (R: the rank that wrote it, S: its file counter on that rank).
This module makes real ones with several ranks (gloo on CPU, 127.0.0.1) and
reads them back the way torch does, so that tests can compare what ckptd
makes of a directory with what torch itself sees.

    from lib import dcp
    dcp.save_sharded(d, world_size=4, seed=7)          # writes d/.metadata, d/__*_*.distcp
    want = dcp.full_state_dict(seed=7)                 # {fqn: full tensor or object}
    got = dcp.load_sharded(d, world_size=2, seed=7)    # loaded back by torch (resharded)
    dcp.assert_same(want, got)

The model is the same for every world size: `full_state_dict(seed)` is what a
consolidated checkpoint must equal. Some tensors are ShardedTensors split by
rows across the ranks (ChunkShardingSpec, so with 4 ranks and 250 rows the
chunks are 63, 63, 63, 61 rows), the others are plain tensors replicated on
every rank (torch 1.13 writes those from rank 0 only), and two values are not
tensors (an int step and a list of dicts) and are stored as BytesIO items.

`epochs` and `frozen` make a "later epoch": every tensor not frozen gets
`epochs - 1` added, and the step is `10 * epochs` (unless "optim.step" is
frozen); `frozen="half"` freezes every other tensor name (see `frozen_names`).

Processes are started with torch.multiprocessing (start method "spawn" by
default): a `writer_factory`/`reader_factory` must then be picklable (a
module-level function, a class, or functools.partial of one); pass
start_method="fork" to use closures.

Run `/usr/bin/python3 tests/integration/lib/dcp.py` for the self-check.
"""

import dataclasses
import io
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback

import torch

# --------------------------------------------------------------------------
# The shim
# --------------------------------------------------------------------------
#
# torch 1.13's torch/distributed/_shard/sharded_tensor/metadata.py declares
#
#     @dataclass
#     class ShardedTensorMetadata:
#         ...
#         tensor_properties: TensorProperties = field(default=TensorProperties())
#
# TensorProperties is itself a plain @dataclass (eq=True, not frozen), so its
# __hash__ is None. Python 3.11's dataclasses reject an unhashable default as
# "mutable default ... use default_factory" (3.10 only rejected list, dict and
# set), so importing torch.distributed._shard (hence ShardedTensor and DCP)
# raises ValueError. The shim wraps dataclasses._process_class, which
# @dataclass looks up at each use, and gives the class named TensorProperties
# object.__hash__ right after it is made, before ShardedTensorMetadata is
# checked. Nothing in torch hashes TensorProperties, and no other class is
# touched. torch 2.x uses default_factory and needs no shim (it is harmless).

_SHIM_MARK = "_ckptd_tensorproperties_shim"


def _install_shim():
    orig = dataclasses._process_class
    if getattr(orig, _SHIM_MARK, False):
        return

    def _process_class(cls, *args, **kwargs):
        cls = orig(cls, *args, **kwargs)
        if cls.__name__ == "TensorProperties" and cls.__hash__ is None:
            cls.__hash__ = object.__hash__
        return cls

    setattr(_process_class, _SHIM_MARK, True)
    dataclasses._process_class = _process_class


def shim():
    """Installs the shim (idempotent) and returns the DCP module:
    torch.distributed.checkpoint where it exists (torch >= 2.0), else
    torch.distributed._shard.checkpoint (torch 1.13)."""
    _install_shim()
    try:
        import torch.distributed.checkpoint as mod  # torch >= 2.0
        if hasattr(mod, "FileSystemWriter"):
            return mod
    except ImportError:
        pass
    import torch.distributed._shard.checkpoint as mod  # torch 1.13
    return mod


def _st():
    """The ShardedTensor pieces (after the shim)."""
    shim()
    from torch.distributed._shard import sharded_tensor
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
    from torch.distributed._shard.sharding_spec import ChunkShardingSpec
    return sharded_tensor, Shard, ShardedTensor, ChunkShardingSpec


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------
#
# name -> (shape, dtype, sharded). Sharded tensors are split on dim 0.
# Sizes: embed.weight 160 KB, proj.weight 200 KB, their momenta the same.

SPEC = (
    ("embed.weight", (250, 160), torch.float32, True),
    ("proj.weight", (200, 250), torch.float32, True),
    ("proj.bias", (200,), torch.float32, True),
    ("norm.weight", (160,), torch.float32, False),
    ("norm.bias", (160,), torch.float16, False),
    ("pos.ids", (64,), torch.int64, False),
    ("scale", (), torch.float32, False),
    ("optim.momentum.embed.weight", (250, 160), torch.float32, True),
    ("optim.momentum.proj.weight", (200, 250), torch.float32, True),
    ("optim.momentum.norm.weight", (160,), torch.float32, False),
)
# Values that are not tensors (BytesStorageMetadata, torch.save'd into BytesIO).
OBJECTS = ("optim.step", "optim.param_groups")


def tensor_names():
    return [name for name, _, _, _ in SPEC]


def sharded_names():
    return [name for name, _, _, sharded in SPEC if sharded]


def names():
    """Every key of the state_dict, in the order it is saved."""
    return tensor_names() + list(OBJECTS)


def frozen_names(frozen):
    """The set of names `frozen` stands for: None -> empty; "half" -> every
    other tensor name in sorted order (the 1st, 3rd, ...); else its items."""
    if frozen is None:
        return set()
    if isinstance(frozen, str):
        if frozen != "half":
            raise ValueError("frozen: None, 'half' or an iterable of names")
        return set(sorted(tensor_names())[0::2])
    out = set(frozen)
    unknown = out - set(names())
    if unknown:
        raise ValueError("frozen: unknown names %s" % sorted(unknown))
    return out


def _base_tensor(seed, index, shape, dtype):
    g = torch.Generator().manual_seed(seed * 1000 + index)
    if dtype == torch.int64:
        return torch.randint(0, 1 << 40, shape, generator=g, dtype=torch.int64)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)


def full_state_dict(seed, frozen=None, epochs=1):
    """The model's state_dict as plain unsharded tensors (and the two objects),
    in one process: what the consolidated checkpoint must equal."""
    fz = frozen_names(frozen)
    out = {}
    for i, (name, shape, dtype, _) in enumerate(SPEC):
        t = _base_tensor(seed, i, shape, dtype)
        if name not in fz and epochs > 1:
            t = t + (epochs - 1)
            t = t.to(dtype)
        out[name] = t
    out["optim.step"] = 10 * (1 if "optim.step" in fz else epochs)
    out["optim.param_groups"] = [
        {"lr": 0.01 * (seed % 7 + 1), "momentum": 0.9, "weight_decay": 0.0,
         "params": list(range(len(SPEC)))},
    ]
    return out


def chunk_layout(fqn, world_size):
    """[(rank, offsets, sizes)] of a sharded tensor's chunks for world_size
    ranks, as ChunkShardingSpec(dim=0) splits it (torch.distributed.* is not
    needed)."""
    shape = dict((n, s) for n, s, _, _ in SPEC)[fqn]
    rows = shape[0]
    split = (rows + world_size - 1) // world_size
    out = []
    for r in range(world_size):
        start = split * r
        n = max(0, min(split, rows - start))
        if n > 0:
            off = [start] + [0] * (len(shape) - 1)
            out.append((r, tuple(off), (n,) + tuple(shape[1:])))
    return out


def _sharded_state_dict(rank, world_size, full):
    """In a rank: `full`'s tensors as ShardedTensors (sharded names) or plain
    tensors, built from local shards with ChunkShardingSpec's layout."""
    sharded_tensor, Shard, _, ChunkShardingSpec = _st()
    spec = ChunkShardingSpec(
        dim=0, placements=["rank:%d/cpu" % r for r in range(world_size)])
    sd = {}
    for name, shape, dtype, sharded in SPEC:
        t = full[name]
        if not sharded:
            sd[name] = t
            continue
        from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
        md = spec.build_metadata(torch.Size(shape), TensorProperties(dtype=dtype))
        local = []
        for sm in md.shards_metadata:
            if sm.placement.rank() != rank:
                continue
            sl = t.narrow(0, sm.shard_offsets[0], sm.shard_sizes[0]).clone()
            local.append(Shard.from_tensor_and_offsets(sl, list(sm.shard_offsets), rank))
        sd[name] = sharded_tensor.init_from_local_shards(local, list(shape))
    for name in OBJECTS:
        sd[name] = full[name]
    return sd


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_pg(rank, world_size, port, timeout):
    import datetime
    import torch.distributed as dist
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
        world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
    return dist


def _save_fn(dcpmod):
    # torch >= 2.2 deprecates save_state_dict in favour of save
    return getattr(dcpmod, "save", None) or dcpmod.save_state_dict


def _load_fn(dcpmod):
    return getattr(dcpmod, "load", None) or dcpmod.load_state_dict


def _save_worker(rank, world_size, port, directory, seed, frozen, epochs,
                 writer_factory, writer_kwargs, timeout):
    dcpmod = shim()
    dist = _init_pg(rank, world_size, port, timeout)
    try:
        sd = _sharded_state_dict(rank, world_size, full_state_dict(seed, frozen, epochs))
        if writer_factory is not None:
            writer = writer_factory(rank)
        else:
            writer = dcpmod.FileSystemWriter(directory, **(writer_kwargs or {}))
        _save_fn(dcpmod)(sd, storage_writer=writer)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _load_worker(rank, world_size, port, directory, seed, reader_factory,
                 outdir, timeout):
    dcpmod = shim()
    dist = _init_pg(rank, world_size, port, timeout)
    try:
        # A fresh model of zeros (and None objects), sharded for world_size.
        zeros = {n: torch.zeros(s, dtype=d) for n, s, d, _ in SPEC}
        zeros.update({n: None for n in OBJECTS})
        sd = _sharded_state_dict(rank, world_size, zeros)
        reader = (reader_factory(rank) if reader_factory is not None
                  else dcpmod.FileSystemReader(directory))
        _load_fn(dcpmod)(sd, storage_reader=reader)
        _, _, ShardedTensor, _ = _st()
        out = {"shards": {}, "plain": {}, "objects": {}}
        for name, _, _, _ in SPEC:
            v = sd[name]
            if isinstance(v, ShardedTensor):
                out["shards"][name] = [
                    (list(s.metadata.shard_offsets), s.tensor.clone())
                    for s in v.local_shards()]
            elif rank == 0:
                out["plain"][name] = v.clone()
        if rank == 0:
            for name in OBJECTS:
                out["objects"][name] = sd[name]
        torch.save(out, os.path.join(outdir, "rank%d.pt" % rank))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run(fn, world_size, args, timeout, start_method):
    """Starts world_size processes fn(rank, *args); returns when all have
    exited; raises RuntimeError with the failing child's traceback."""
    import torch.multiprocessing as mp
    ctx = mp.start_processes(fn, args=args, nprocs=world_size, join=False,
                             start_method=start_method)
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("dcp: %d processes still running after %ds"
                                   % (world_size, timeout))
    except mp.ProcessRaisedException as e:  # carries the child's traceback
        # join reports the first failure it sees, often a peer's "Connection
        # closed"; the rank that failed first may have its traceback queued.
        msgs = ["rank %d:\n%s" % (e.error_index, e)]
        for i, q in enumerate(ctx.error_queues):
            if i != e.error_index and not q.empty():
                msgs.append("rank %d:\n%s" % (i, q.get()))
        raise RuntimeError("dcp: ranks failed:\n" + "\n".join(msgs)) from None
    except mp.ProcessExitedException as e:
        raise RuntimeError("dcp: a rank died: %s" % e) from None
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
            p.join()


def save_sharded(directory, world_size, seed, frozen=None, writer_factory=None,
                 epochs=1, writer_kwargs=None, timeout=120, start_method="spawn"):
    """Saves the model (see full_state_dict) from world_size ranks with DCP's
    save_state_dict (save on torch >= 2.2). Each rank's storage writer is
    writer_factory(rank), else FileSystemWriter(directory, **writer_kwargs)
    (torch 1.13's default: one file per item, e.g. writer_kwargs=
    {"single_file_per_rank": True} for one file per rank as torch 2.x)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _run(_save_worker, world_size,
         (world_size, _free_port(), directory, seed, frozen, epochs,
          writer_factory, writer_kwargs, timeout),
         timeout, start_method)


def load_sharded(directory, world_size, seed=None, reader_factory=None,
                 timeout=120, start_method="spawn"):
    """Loads a DCP checkpoint with DCP's load_state_dict into a fresh (zeroed)
    sharded model in world_size ranks (world_size may differ from the one that
    saved: DCP reshards), and returns {fqn: full tensor or object} gathered from
    every rank's local shards. `seed` is not needed (the model's shapes do not
    depend on it); it is accepted for symmetry with save_sharded."""
    directory = os.fspath(directory)
    outdir = tempfile.mkdtemp(prefix="dcp-load-")
    try:
        _run(_load_worker, world_size,
             (world_size, _free_port(), directory, seed, reader_factory, outdir,
              timeout),
             timeout, start_method)
        result = {}
        parts = [torch.load(os.path.join(outdir, "rank%d.pt" % r))
                 for r in range(world_size)]
        for name, shape, dtype, sharded in SPEC:
            if not sharded:
                result[name] = parts[0]["plain"][name]
                continue
            full = torch.empty(shape, dtype=dtype)
            filled = torch.zeros(shape[0], dtype=torch.bool)
            for p in parts:
                for offsets, t in p["shards"].get(name, []):
                    full.narrow(0, offsets[0], t.shape[0]).copy_(t)
                    filled[offsets[0]:offsets[0] + t.shape[0]] = True
            if not bool(filled.all()):
                raise RuntimeError("dcp: %s: rows missing after load" % name)
            result[name] = full
        result.update(parts[0]["objects"])
        return result
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Reading a directory
# --------------------------------------------------------------------------

def read_metadata(directory):
    """The unpickled `.metadata` (a DCP Metadata object; needs the shim)."""
    import pickle
    shim()
    with open(os.path.join(os.fspath(directory), ".metadata"), "rb") as f:
        return pickle.load(f)


def items_by_file(directory):
    """{relative_path: [(offset, length, fqn, chunk offsets or None)]}, sorted
    by offset, from `.metadata`'s storage_data."""
    md = read_metadata(directory)
    out = {}
    for idx, info in md.storage_data.items():
        off = tuple(idx.offset) if idx.offset is not None else None
        out.setdefault(info.relative_path, []).append(
            (info.offset, info.length, idx.fqn, off))
    for v in out.values():
        v.sort()
    return out


def metadata_globals(directory):
    """The (module, name) pairs `.metadata` makes pickle look up, in order."""
    import pickle
    shim()
    seen = []

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in seen:
                seen.append((module, name))
            return super().find_class(module, name)

    with open(os.path.join(os.fspath(directory), ".metadata"), "rb") as f:
        Unpickler(f).load()
    return seen


def describe(directory):
    """Lines describing a DCP directory: the pickle protocol and GLOBALs of
    `.metadata`, then per data file its items (offset, length, fqn, chunk
    offsets, storage kind) with the records of each item's zip. Checks on the
    way that items are back to back, that each is a whole zip (local header
    first, end of central directory as its last 22 bytes, central directory
    offset relative to the item) that torch.load reads."""
    import struct
    import zipfile
    directory = os.fspath(directory)
    with open(os.path.join(directory, ".metadata"), "rb") as f:
        raw = f.read()
    md = read_metadata(directory)
    out = [".metadata: %d bytes, pickle protocol %d" % (len(raw), raw[1])]
    out += ["  GLOBAL %s %s" % g for g in metadata_globals(directory)]
    for path, items in sorted(items_by_file(directory).items()):
        with open(os.path.join(directory, path), "rb") as f:
            data = f.read()
        out.append("%s: %d bytes, %d items" % (path, len(data), len(items)))
        pos = 0
        for off, length, fqn, chunk_off in items:
            if off != pos:
                raise AssertionError("%s: gap or overlap at %d (expected %d)" % (path, off, pos))
            blob = data[off:off + length]
            if blob[:4] != b"PK\x03\x04" or blob[-22:-18] != b"PK\x05\x06":
                raise AssertionError("%s: item at %d is not a whole zip" % (path, off))
            cd_off = struct.unpack("<I", blob[-6:-2])[0]
            if blob[cd_off:cd_off + 4] != b"PK\x01\x02":
                raise AssertionError("%s: central directory offset not item-relative" % path)
            obj = torch.load(io.BytesIO(blob))
            kind = type(md.state_dict_metadata[fqn]).__name__
            what = ("%s%s" % (str(obj.dtype).replace("torch.", ""), list(obj.shape))
                    if isinstance(obj, torch.Tensor) else "%s %r" % (type(obj).__name__, obj))
            out.append("  [%d, %d) %s offsets=%s %s -> %s" % (
                off, off + length, fqn, list(chunk_off) if chunk_off is not None else None,
                kind, what))
            recs = []
            for zi in zipfile.ZipFile(io.BytesIO(blob)).infolist():
                h = zi.header_offset
                flag, _, _, _, crc, csz, usz, nlen, xlen = struct.unpack(
                    "<HHHHIIIHH", blob[h + 6:h + 30])
                start = h + 30 + nlen + xlen
                recs.append("%s@%d+%d%s" % (zi.filename, start, zi.file_size,
                                            " dd" if flag & 8 else ""))
            out.append("      " + " ".join(recs))
            pos += length
        if pos != len(data):
            raise AssertionError("%s: %d bytes after the last item" % (path, len(data) - pos))
    return out


def files(directory):
    """[(name, size)] of the directory's files, sorted by name."""
    directory = os.fspath(directory)
    return sorted((n, os.path.getsize(os.path.join(directory, n)))
                  for n in os.listdir(directory))


def _bits(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same(want, got):
    """Asserts two {fqn: tensor or object} dicts are equal, tensors bit for bit
    (same dtype, shape and bytes)."""
    if set(want) != set(got):
        raise AssertionError("keys differ: only in want %s, only in got %s" % (
            sorted(set(want) - set(got)), sorted(set(got) - set(want))))
    for k in want:
        a, b = want[k], got[k]
        if isinstance(a, torch.Tensor):
            if not isinstance(b, torch.Tensor):
                raise AssertionError("%s: got %r, not a tensor" % (k, type(b)))
            if a.dtype != b.dtype or a.shape != b.shape:
                raise AssertionError("%s: %s%s != %s%s" % (
                    k, a.dtype, tuple(a.shape), b.dtype, tuple(b.shape)))
            if not torch.equal(_bits(a), _bits(b)):
                raise AssertionError("%s: bytes differ" % k)
        elif a != b:
            raise AssertionError("%s: %r != %r" % (k, a, b))


# --------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------

def _check_items(directory, seed, frozen=None, epochs=1):
    """Every storage_data item: a tensor item is a whole torch.save zip of its
    chunk; a bytes item is torch.save of the object; items of a file are back
    to back from 0 to the file's end."""
    md = read_metadata(directory)
    want = full_state_dict(seed, frozen, epochs)
    for path, items in items_by_file(directory).items():
        with open(os.path.join(directory, path), "rb") as f:
            data = f.read()
        pos = 0
        for off, length, fqn, chunk_off in items:
            assert off == pos, (path, off, pos)
            blob = data[off:off + length]
            assert blob[:4] == b"PK\x03\x04", (path, fqn)
            obj = torch.load(io.BytesIO(blob))
            smd = md.state_dict_metadata[fqn]
            if hasattr(smd, "chunks"):
                ch = [c for c in smd.chunks if tuple(c.offsets) == chunk_off][0]
                exp = want[fqn]
                for d, (o, s) in enumerate(zip(ch.offsets, ch.sizes)):
                    exp = exp.narrow(d, o, s)
                assert torch.equal(_bits(obj), _bits(exp)) and obj.shape == exp.shape, fqn
            else:
                assert obj == want[fqn], fqn
            pos += length
        assert pos == len(data), (path, pos, len(data))


def _self_check():
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="dcp-selfcheck-")
    try:
        seed = 7
        want = full_state_dict(seed)
        for ws in (2, 4):
            d = os.path.join(tmp, "ws%d" % ws)
            t = time.monotonic()
            save_sharded(d, ws, seed)
            ts = time.monotonic() - t
            print("saved with %d ranks in %.1fs into %s:" % (ws, ts, d))
            for name, size in files(d):
                print("  %-16s %8d" % (name, size))
            _check_items(d, seed)
            for lws in (ws, 6 - ws):
                t = time.monotonic()
                got = load_sharded(d, lws, seed)
                assert_same(want, got)
                print("  loaded back with %d ranks in %.1fs: equal bit for bit"
                      % (lws, time.monotonic() - t))
        # A second epoch with half the tensors frozen: the files of the frozen
        # tensors' items are byte-identical, the others differ.
        d1 = os.path.join(tmp, "ws4")
        d2 = os.path.join(tmp, "ws4-epoch2")
        save_sharded(d2, 4, seed, frozen="half", epochs=2)
        _check_items(d2, seed, "half", 2)
        assert_same(full_state_dict(seed, "half", 2), load_sharded(d2, 4, seed))
        v1, v2 = full_state_dict(seed), full_state_dict(seed, "half", 2)

        def equal(a, b):
            if isinstance(a, torch.Tensor):
                return torch.equal(_bits(a), _bits(b))
            return a == b

        same = changed = 0
        m1, m2 = items_by_file(d1), items_by_file(d2)
        assert sorted(m1) == sorted(m2)
        for path in m1:
            unchanged = all(equal(v1[fqn], v2[fqn]) for _, _, fqn, _ in m1[path])
            with open(os.path.join(d1, path), "rb") as f1, open(os.path.join(d2, path), "rb") as f2:
                eq = f1.read() == f2.read()
            assert eq == unchanged, (path, eq, unchanged)
            if eq:
                same += 1
            else:
                changed += 1
        print("epoch 2 with frozen=half: %d files byte-identical (their values did not change), %d differ"
              % (same, changed))
        print("self-check passed in %.1fs" % (time.monotonic() - t0))
    finally:
        if os.environ.get("DCP_KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # dcp.py                      the self-check
    # dcp.py save DIR WS SEED [single]   save the model (single: one file per rank)
    # dcp.py dump DIR             describe a DCP directory (see describe)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        if len(sys.argv) >= 5 and sys.argv[1] == "save":
            kw = {"single_file_per_rank": True} if sys.argv[5:6] == ["single"] else None
            save_sharded(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), writer_kwargs=kw)
            for n, size in files(sys.argv[2]):
                print("%-16s %8d" % (n, size))
        elif len(sys.argv) == 3 and sys.argv[1] == "dump":
            print("\n".join(describe(sys.argv[2])))
        elif len(sys.argv) == 1:
            _self_check()
        else:
            sys.exit("usage: dcp.py | dcp.py save DIR WS SEED [single] | dcp.py dump DIR")
    except Exception:
        traceback.print_exc()
        sys.exit(1)
