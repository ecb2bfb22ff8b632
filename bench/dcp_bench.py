"""torch.distributed.checkpoint saves from 4 gloo ranks (SPEC 7, issue 12):
ckptd's CkptdWriter against torch's own FileSystemWriter to a local
directory, the same state_dict, in the same process group, alternating.

Run by bench.py under /usr/bin/python3 (Debian's torch 1.13):
    dcp_bench.py URL MIB REPS SCRATCH
prints one JSON line: the median seconds of each writer over REPS saves of
new weights (each save's values differ, so nothing dedups), the bytes of a
save, and the request bytes of one more CkptdWriter save of unchanged weights
(thin: stored storages go as references).

The state_dict: 8 float32 matrices of MIB/8 MiB each, split by rows across
the ranks (ShardedTensor), and two small replicated tensors. Torch 1.13 on
Python 3.11 needs the shim below to import torch.distributed._shard.
"""

import dataclasses
import datetime
import json
import os
import shutil
import socket
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients", "python"))

WORLD = 4
NMAT = 8


def shim():
    """TensorProperties() is a dataclass default Python 3.11 rejects as
    unhashable: give the class object.__hash__ as it is created."""
    if getattr(dataclasses, "_ckptd_shim", False):
        return
    orig = dataclasses._process_class

    def process_class(cls, *a, **kw):
        if cls.__name__ == "TensorProperties" and "__hash__" not in cls.__dict__:
            cls.__hash__ = object.__hash__
        return orig(cls, *a, **kw)

    dataclasses._process_class = process_class
    dataclasses._ckptd_shim = True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_dict(rank, mib, rep):
    from torch.distributed._shard import sharded_tensor
    from torch.distributed._shard.sharded_tensor import Shard
    cols = 1024
    rows = (mib << 20) // NMAT // 4 // cols
    per = rows // WORLD
    sd = {}
    g = torch.Generator().manual_seed(rank)
    for i in range(NMAT):
        local = torch.randn(per, cols, generator=g) + rep
        shard = Shard.from_tensor_and_offsets(local, [rank * per, 0], rank)
        sd["layer%d.weight" % i] = sharded_tensor.init_from_local_shards(
            [shard], [per * WORLD, cols])
    sd["norm.weight"] = torch.ones(cols) * (rep + 1)
    sd["norm.bias"] = torch.zeros(cols) + rep
    return sd


def worker(rank, port, url, mib, reps, scratch, out):
    shim()
    import torch.distributed as dist
    from torch.distributed._shard.checkpoint import FileSystemWriter, save_state_dict
    from ckptd.dcp import CkptdWriter
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=600))
    fs_s, ck_s, size = [], [], 0

    def timed(fn):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dist.barrier()
        return time.perf_counter() - t0

    for rep in range(reps):
        sd = state_dict(rank, mib, rep)
        d = os.path.join(scratch, "fs%d" % rep)
        fs_s.append(timed(lambda: save_state_dict(
            sd, storage_writer=FileSystemWriter(d, single_file_per_rank=True))))
        if rank == 0:
            size = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
        dist.barrier()
        if rank == 0:
            shutil.rmtree(d)
        w = CkptdWriter(url, "dcp-bench", epoch=rep)
        ck_s.append(timed(lambda: save_state_dict(sd, storage_writer=w)))
    # the same weights once more: what goes on the wire
    w = CkptdWriter(url, "dcp-bench", epoch=reps)
    timed(lambda: save_state_dict(sd, storage_writer=w))
    wire = torch.tensor([w.wire_bytes], dtype=torch.int64)
    dist.all_reduce(wire)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"fs_s": fs_s, "ckptd_s": ck_s, "size": size,
                       "thin_wire": int(wire.item()), "world": WORLD}, f)
    dist.barrier()
    dist.destroy_process_group()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    url, mib, reps, scratch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    import torch.multiprocessing as mp
    out = os.path.join(scratch, "dcp_bench.json")
    mp.start_processes(worker, args=(free_port(), url, mib, reps, scratch, out), nprocs=WORLD,
                       join=True, start_method="spawn")
    with open(out) as f:
        j = json.load(f)
    j["fs_median_s"] = median(j["fs_s"])
    j["ckptd_median_s"] = median(j["ckptd_s"])
    print(json.dumps(j))


if __name__ == "__main__":
    main()
