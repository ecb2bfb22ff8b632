#!/usr/bin/python3
"""Generates tests/data/torch/{valid,invalid}/*.pt with the Debian torch (1.13)
and, for those and every zip file in tests/data/compat/torch2, the tensor list
torch.load sees, as tests/data/torch/expect/<name>.txt, which
tests/unit/test_torch.c compares with ckptd's reader.

Run from the repo root: /usr/bin/python3 tests/data/torch/make_data.py
The legacy (non-zip) files and their expectations are make_legacy.py's.

Expectation lines, one per tensor in file order, then the metadata:
  t <path> <dtype> <shape> <strides> <offset> <first tensor sharing its storage>
  epoch N | step N | loss %.6g
"""
import collections
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
COMPAT = os.path.join(HERE, "..", "compat", "torch2")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, bias=False)
        self.layer1 = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.register_buffer("counter", torch.tensor(7))
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.layer1(self.conv2(self.bn(self.conv1(x))).flatten(1)[:, :8])


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight


def esc(s):
    return s.replace("~", "~0").replace("/", "~1")


def walk(obj, path, out):
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif isinstance(obj, nn.Module):
        for k, v in obj.state_dict(keep_vars=True).items():
            out.append((path + "/" + esc(k), v))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, path + "/" + esc(str(k)), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, path + "/" + str(i), out)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        walk(vars(obj), path, out)


def expectation(obj):
    tensors = []
    walk(obj, "", tensors)
    lines, first = [], {}
    for i, (path, t) in enumerate(tensors):
        st = t.storage()
        key = (st.data_ptr(), st.nbytes()) if st.data_ptr() and st.nbytes() else ("self", i)
        share = first.setdefault(key, i)
        lines.append("t %s %s %s %s %d %d" % (
            path or "/", str(t.dtype)[len("torch."):],
            ",".join(map(str, t.shape)) or "-", ",".join(map(str, t.stride())) or "-",
            t.storage_offset(), share))
    if isinstance(obj, dict):
        def num(v):
            return isinstance(v, int) and not isinstance(v, bool)
        if num(obj.get("epoch")):
            lines.append("epoch %d" % obj["epoch"])
        for k in ("step", "global_step"):
            if num(obj.get(k)):
                lines.append("step %d" % obj[k])
                break
        for k in ("loss", "val_loss"):
            v = obj.get(k)
            if isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype in (
                    torch.float32, torch.float64, torch.float16, torch.bfloat16):
                v = v.item()
            if isinstance(v, (float, int)) and not isinstance(v, bool):
                lines.append("loss %.6g" % v)
                break
    return "".join(l + "\n" for l in lines)


def write_expect(name, obj):
    with open(os.path.join(HERE, "expect", name + ".txt"), "w") as f:
        f.write(expectation(obj))


def save(name, obj, **kw):
    path = os.path.join(HERE, "valid", name + ".pt")
    torch.save(obj, path, **kw)
    write_expect(name, torch.load(path))


def main():
    torch.manual_seed(0)
    net = Net()
    net(torch.randn(2, 1, 8, 8))
    save("cnn_state_dict", net.state_dict())

    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    save("sgd_state", opt.state_dict())
    save("general_checkpoint", {"epoch": 5, "model_state_dict": net.state_dict(),
                                "optimizer_state_dict": opt.state_dict(),
                                "loss": nn.CrossEntropyLoss()})
    save("whole_model", net)

    base = torch.arange(100, dtype=torch.float32)
    save("views", {"base": base, "slice": base[10:30], "t": base.view(10, 10).t(),
                   "every3": base[::3], "narrow": base.view(10, 10)[2:5, 3:7]})
    save("tied", Tied().state_dict())
    save("tied_list", [Tied(), (base[1:3], base)])
    save("zero_elements", {"a": torch.zeros(0), "b": torch.zeros(3, 0), "c": torch.ones(2)[2:]})
    save("loss_tensor", {"epoch": 3, "global_step": 1200, "loss": torch.tensor(0.25),
                         "val_loss": 0.5, "w": torch.ones(2)})
    save("loss_bf16", {"step": 9, "val_loss": torch.tensor(1.5, dtype=torch.bfloat16)})
    save("dtypes", collections.OrderedDict(
        (str(dt).split(".")[1], (torch.arange(6).reshape(2, 3) % 2).to(dt))
        for dt in (torch.bfloat16, torch.float16, torch.complex64, torch.complex128, torch.bool,
                   torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64,
                   torch.float64)))
    save("keys", {"a/b": torch.ones(1), "c~d": {1: torch.ones(1), "x.y": [torch.ones(1)]}})

    # zip variants torch.save never writes: data.pkl deflated (readable), a
    # deflated storage (refused), and a plain deflated zip for test_zip.c
    import zipfile
    src = zipfile.ZipFile(os.path.join(HERE, "valid", "tied.pt"))
    for name, which in (("valid/deflated_pkl.pt", "data.pkl"),
                        ("invalid/deflated_storage.pt", "data/0")):
        with zipfile.ZipFile(os.path.join(HERE, name), "w") as z:
            for info in src.infolist():
                z.writestr(info.filename, src.read(info.filename),
                           zipfile.ZIP_DEFLATED if info.filename.endswith(which)
                           else zipfile.ZIP_STORED)
    write_expect("deflated_pkl", torch.load(os.path.join(HERE, "valid", "deflated_pkl.pt")))
    write_frame_past_end()

    for f in sorted(os.listdir(COMPAT)):
        if f.endswith(".pt") and not f.startswith("legacy_") and f not in ("broken.pt",
                                                                           "simple_legacy.pt"):
            write_expect("compat_" + f[:-3], torch.load(os.path.join(COMPAT, f)))


def write_frame_past_end():
    """A data.pkl whose protocol 4 FRAME claims 2^63 bytes: refused with its
    offset before anything is allocated."""
    import zipfile
    with zipfile.ZipFile(os.path.join(HERE, "invalid", "frame_past_end.pt"), "w") as z:
        z.writestr("frame/data.pkl", b"\x80\x04\x95" + (1 << 63).to_bytes(8, "little") + b"}.")
        z.writestr("frame/version", b"3\n")


if __name__ == "__main__":
    main()
