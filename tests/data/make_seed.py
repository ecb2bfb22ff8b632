#!/usr/bin/python3
"""Writes the integration tests' seed checkpoints with real torch (1.13).

Usage: /usr/bin/python3 tests/data/make_seed.py OUTDIR

The "TheModelClass" CNN and the files of the PyTorch tutorial "Saving and
loading models": a state_dict, an SGD(momentum=0.9) optimizer state_dict after
one step, a general checkpoint ({'epoch': 5, ..., 'loss': nn.CrossEntropyLoss()})
and torch.save(model) of the whole module (the class lives in this script's
__main__, so the daemon cannot import it). Plus files for the metadata rules
(epoch/step/loss inside the checkpoint), views and tied weights, JSON Pointer
escaping, dtypes, and a legacy (non-zip) file.

Next to them, OUTDIR/expect.json holds, per file, what torch.load shows: the
tensors as [path, dtype, shape], their strides and
storage offsets, epoch/step/loss per SPEC 2, the bytes of
distinct storages, and whether the file is legacy. This script computes it
because only here can the whole-module file be loaded.
"""

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lib import expect  # noqa: E402


class TheModelClass(nn.Module):
    def __init__(self):
        super(TheModelClass, self).__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = TheModelClass()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    inputs = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([1, 0, 3, 9])
    optimizer.zero_grad()
    loss = criterion(model(inputs), labels)
    loss.backward()
    optimizer.step()
    sd = model.state_dict()

    files = {}
    files["tutorial_state_dict.pt"] = sd
    files["tutorial_optimizer.pt"] = optimizer.state_dict()
    files["tutorial_checkpoint.pt"] = {
        "epoch": 5,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "loss": criterion,
    }
    files["tutorial_model.pt"] = model
    files["meta_tensor_loss.pt"] = {
        "epoch": 3, "step": 300, "loss": torch.tensor(0.25), "model_state_dict": sd,
    }
    files["meta_global_step.pt"] = {
        "epoch": 7, "global_step": 700, "val_loss": 0.375, "state_dict": sd,
    }
    base = torch.arange(12, dtype=torch.float32)
    w = torch.randn(3, 4)
    files["views_and_tied.pt"] = {
        "base": base,
        "slice": base[2:7],
        "grid": base.view(3, 4),
        "column": base.view(3, 4)[:, 1],
        "tied_a": w,
        "tied_b": w,
        "transposed": w.t(),
    }
    t = torch.ones(2, 2)
    files["pointer_escapes.pt"] = {
        "a/b": t,
        "c~d": t * 2,
        "~/": t * 3,
        "list": [t * 4, (t * 5, {"x": t * 6})],
        "plain": 3,
    }
    files["dtypes_113.pt"] = {
        "f16": torch.randn(3).half(),
        "bf16": torch.randn(3).bfloat16(),
        "f64": torch.randn(2, 2).double(),
        "c64": torch.randn(2, dtype=torch.complex64),
        "c128": torch.randn(2, dtype=torch.complex128),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "i16": torch.tensor([-1, 2], dtype=torch.int16),
        "u8": torch.tensor([1, 255], dtype=torch.uint8),
        "b": torch.tensor([True, False]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
    }

    meta = {}
    for name, obj in files.items():
        path = os.path.join(out, name)
        torch.save(obj, path)
    legacy = os.path.join(out, "legacy_113.pt")
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)

    for name in sorted(os.listdir(out)):
        if not name.endswith(".pt"):
            continue
        loaded = torch.load(os.path.join(out, name))
        epoch, step, loss = expect.top_level_meta(loaded)
        meta[name] = {
            "tensors": expect.tensors_of(loaded),
            "layout": expect.layout_of(loaded),
            "epoch": epoch,
            "step": step,
            "loss": loss,
            "storage_bytes": expect.storage_bytes(loaded),
            "legacy": name == "legacy_113.pt",
        }
    with open(os.path.join(out, "expect.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_seed.py OUTDIR")
    main(sys.argv[1])
