#!/usr/bin/python3
"""Train with DistributedDataParallel on 2 CPU processes, saving every epoch
to ckptd through torch.distributed.checkpoint (DCP) and ckptd.dcp.CkptdWriter.

    /usr/bin/python3 examples/train_ddp.py [--url http://127.0.0.1:8080] [--epochs 4]

Data: scikit-learn's digits (1797 8x8 images, shipped with python3-sklearn),
80% for training, split between the ranks, 20% for validation.

What a checkpoint holds (one DCP save, one ckptd checkpoint of several files):

- "model.*": the MLP's parameters. DDP keeps them equal on every rank, so DCP
  stores them once (torch 1.13: from rank 0).
- "optim.momentum.*": SGD's momentum buffers (replicated like the model).
- "optim.step", "epoch": plain values, stored as torch.save'd bytes.
- "data.sample_loss": the last loss of every training example, a
  ShardedTensor: each rank owns the rows of its own examples and writes only
  those (`__1_0.distcp` holds rank 1's rows).

Every epoch all ranks call save_state_dict(..., storage_writer=CkptdWriter(
url, model, epoch=, loss=, metrics=)); rank 0 opens the checkpoint and
commits it once every rank has sent its file. Uploads are thin: a tensor the
store already has goes as a 41-byte reference (here every epoch changes every
weight, so each save sends the whole model; frozen layers would not be sent
again). At the end both ranks load the best
checkpoint back with CkptdReader into a fresh model and check its accuracy,
and the script prints how to fetch the whole model as one file:

    curl -o model.pth $URL/api/v1/models/ddp-digits/checkpoints/best/state_dict

The last line is "RESULT {json}" for scripts. Runs in well under a minute.
"""

import argparse
import dataclasses
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402


# torch 1.13 on Python 3.11: importing torch.distributed._shard (ShardedTensor,
# and 1.13's DCP, torch.distributed._shard.checkpoint) raises "ValueError:
# mutable default <class 'TensorProperties'> for field tensor_properties is
# not allowed". ShardedTensorMetadata declares `tensor_properties:
# TensorProperties = field(default=TensorProperties())`, and Python 3.11
# rejects any unhashable default (TensorProperties is a plain dataclass, so
# its __hash__ is None). The fix: give that one class object.__hash__ as
# @dataclass makes it, before torch.distributed._shard is imported. Nothing
# hashes it. torch 2.x uses default_factory and needs none of this.
def _tensorproperties_shim():
    if sys.version_info < (3, 11) or not torch.__version__.startswith("1."):
        return
    orig = dataclasses._process_class
    if getattr(orig, "_ckptd_shim", False):
        return

    def _process_class(cls, *args, **kwargs):
        cls = orig(cls, *args, **kwargs)
        if cls.__name__ == "TensorProperties" and cls.__hash__ is None:
            cls.__hash__ = object.__hash__
        return cls

    _process_class._ckptd_shim = True
    dataclasses._process_class = _process_class


_tensorproperties_shim()

try:  # torch >= 2.0
    import torch.distributed.checkpoint as dcp
    save_dcp = getattr(dcp, "save", None) or dcp.save_state_dict
    load_dcp = getattr(dcp, "load", None) or dcp.load_state_dict
except ImportError:  # torch 1.13
    import torch.distributed._shard.checkpoint as dcp
    save_dcp, load_dcp = dcp.save_state_dict, dcp.load_state_dict
from torch.distributed._shard import sharded_tensor  # noqa: E402
from torch.distributed._shard.sharded_tensor import Shard  # noqa: E402

from ckptd import Client  # noqa: E402
from ckptd.dcp import CkptdReader, CkptdWriter  # noqa: E402


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


def load_data(seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_val = len(y) // 5
    return (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])


def my_rows(n, rank, world):
    """The training rows [start, start+count) of this rank."""
    per = (n + world - 1) // world
    start = min(n, per * rank)
    return start, max(0, min(per, n - start))


def evaluate(model, data):
    x, y = data
    model.eval()
    with torch.no_grad():
        out = model(x)
    return nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def state_dict(model, opt, sample_loss, n_train, start, rank, epoch, step):
    """The DCP state_dict: flat names, plain tensors for the replicated model
    and optimizer state, a ShardedTensor of the per-example losses."""
    sd = {"model." + k: v for k, v in model.module.state_dict().items()}
    for name, p in model.module.named_parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        sd["optim.momentum." + name] = buf if buf is not None else torch.zeros_like(p)
    shards = [Shard.from_tensor_and_offsets(sample_loss, [start], rank)] if len(sample_loss) else []
    sd["data.sample_loss"] = sharded_tensor.init_from_local_shards(shards, [n_train])
    sd["optim.step"] = step
    sd["epoch"] = epoch
    return sd


def worker(rank, world, port, args, results):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port,
                            rank=rank, world_size=world)
    try:
        train, val = load_data(args.seed)
        n_train = len(train[1])
        start, count = my_rows(n_train, rank, world)
        x, y = train[0][start:start + count], train[1][start:start + count]
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        model = nn.parallel.DistributedDataParallel(MLP())
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sample_loss = torch.zeros(count)
        gen = torch.Generator().manual_seed(args.seed + rank)
        step = 0
        saved = []
        for epoch in range(1, args.epochs + 1):
            model.train()
            perm = torch.randperm(count, generator=gen)
            for i in range(0, count, 32):
                idx = perm[i:i + 32]
                opt.zero_grad()
                losses = nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="none")
                losses.mean().backward()
                opt.step()
                sample_loss[idx] = losses.detach()
                step += 1
            val_loss, acc = evaluate(model, val)  # the same on every rank (same weights)
            writer = CkptdWriter(args.url, args.model, epoch=epoch, step=step, loss=val_loss,
                                 metrics={"acc": acc}, run=args.run)
            t0 = time.monotonic()
            save_dcp(state_dict(model, opt, sample_loss, n_train, start, rank, epoch, step),
                     storage_writer=writer)
            took = time.monotonic() - t0
            sent = torch.tensor([writer.wire_bytes], dtype=torch.int64)
            dist.all_reduce(sent)
            if rank == 0:
                ck = writer.checkpoint
                saved.append({"epoch": epoch, "id": ck["id"], "loss": val_loss, "acc": acc,
                              "size": ck["size"], "sent": int(sent.item()),
                              "new_bytes": ck["dedup"]["new_bytes"]})
                print("epoch %d: val loss %.4f acc %.3f -> checkpoint %d (%d files, %.0f KB; "
                      "%.0f KB sent by the ranks, %.0f KB new in the store; %.2f s)"
                      % (epoch, val_loss, acc, ck["id"], len(ck.get("files") or []),
                         ck["size"] / 1e3, sent.item() / 1e3,
                         ck["dedup"]["new_bytes"] / 1e3, took), flush=True)

        # Load the best checkpoint back into a fresh model, on every rank.
        fresh = nn.parallel.DistributedDataParallel(MLP())
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        for p in fresh.parameters():  # momentum buffers to load into
            fresh_opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        sd = state_dict(fresh, fresh_opt, torch.zeros(count), n_train, start, rank, 0, 0)
        reader = CkptdReader(args.url, args.model, "best", run=args.run)
        load_dcp(sd, storage_reader=reader)
        fresh.module.load_state_dict(
            {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
        for name, p in fresh.module.named_parameters():
            fresh_opt.state[p]["momentum_buffer"].copy_(sd["optim.momentum." + name])
        best_loss, best_acc = evaluate(fresh, val)
        if rank == 0:
            results.put({"saved": saved, "best": reader.checkpoint_number,
                         "best_epoch": sd["epoch"], "best_loss": best_loss, "best_acc": best_acc})
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=os.environ.get("CKPTD_URL") or "http://127.0.0.1:8080")
    ap.add_argument("--model", default="ddp-digits")
    ap.add_argument("--run", default="ddp")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with Client(args.url) as c:  # fail early, with a clear message, if no server answers
        c.stats()
    t0 = time.monotonic()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.world_size, free_port(), args, results),
             nprocs=args.world_size, join=True)
    r = results.get()
    by_id = {s["id"]: s for s in r["saved"]}
    best = by_id[r["best"]]
    print("loaded the best checkpoint %d (epoch %d) back on %d ranks: val loss %.4f acc %.3f "
          "(saved with %.4f / %.3f)" % (r["best"], r["best_epoch"], args.world_size,
                                        r["best_loss"], r["best_acc"], best["loss"], best["acc"]))
    if abs(r["best_loss"] - best["loss"]) > 1e-6 or r["best_epoch"] != best["epoch"]:
        sys.exit("the model loaded back is not the one saved")
    print("checkpoint ids: %s" % ", ".join(str(s["id"]) for s in r["saved"]))
    print("the whole model as one file (the server assembles it from the ranks' files):")
    print("  curl -o model.pth %s/api/v1/models/%s/checkpoints/best/state_dict"
          % (args.url.rstrip("/"), args.model))
    print("done in %.1f s" % (time.monotonic() - t0))
    print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
