#!/usr/bin/python3
"""Generates the legacy torch files (torch.save(..., _use_new_zipfile_serialization=False),
the only format before torch 1.6) that tests/unit/test_torch_legacy.c and the
integration tests read, with the Debian torch (1.13):

  valid/legacy_*.pt    written by torch itself, and one (legacy_storage_views.pt)
                       by the writer below: views of storages, which torch has
                       not written since 1.0 but still loads
  expect/legacy_*.txt  what torch.load shows, in make_data.py's format
  expect/compat_*legacy*.txt  the same for the legacy files of ../compat/torch2
  invalid/legacy_*.pt  damaged files, each loaded by the writer below with one
                       thing wrong (torch.load refuses or misreads every one)

The storage keys torch writes are memory addresses, so a run writes different
bytes each time: the files are committed, and this script is rerun only to
change them. Run from the repo root: /usr/bin/python3 tests/data/torch/make_legacy.py
(with --invalid, only the damaged files and legacy_small.pt, whose bytes do not vary).

For views, ckptd reports a tensor on its root storage with its offset from
the root's first element; torch.load reports it on the view, so the expectation
of legacy_storage_views.pt is written here from what the writer put in.
"""
import collections
import io
import os
import pickle
import struct
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_data  # noqa: E402

COMPAT = os.path.join(HERE, "..", "compat", "torch2")
MAGIC = 0x1950a86a20f9469cfc6c
SYS_INFO = dict(protocol_version=1001, little_endian=True,
                type_sizes=dict(short=2, int=4, long=4))


def save(name, obj, **kw):
    path = os.path.join(HERE, "valid", name + ".pt")
    torch.save(obj, path, _use_new_zipfile_serialization=False, **kw)
    make_data.write_expect(name, torch.load(path))
    return path


# ---- a writer of the legacy format, to make what torch no longer writes ----

class Storage:
    """A storage persistent id: ('storage', torch.<cls>, key, 'cpu', numel, view)."""

    def __init__(self, cls, key, numel, view=None):
        self.cls, self.key, self.numel, self.view = cls, key, numel, view


class Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False,
                     collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.cls), obj.key, "cpu", obj.numel, obj.view)
        return None


def legacy_bytes(obj, keys, blobs, magic=MAGIC):
    """The five pickles (protocol 2, as torch.save), then (count, data) per blob."""
    f = io.BytesIO()
    pickle.dump(magic, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump(SYS_INFO, f, protocol=2)
    _Pickler(f, protocol=2).dump(obj)
    pickle.dump(keys, f, protocol=2)
    for count, data in blobs:
        f.write(struct.pack("<q", count))
        f.write(data)
    return f.getvalue()


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def storage_views():
    """Two views of one root storage of 12 floats, as torch < 1.0 saved them:
    ckptd reports both tensors on the root, offsets from its first element."""
    root = "140000000000001"
    v1 = Storage("FloatStorage", root, 12, ("140000000000002", 2, 6))
    v2 = Storage("FloatStorage", root, 12, ("140000000000003", 8, 4))
    whole = Storage("FloatStorage", root, 12)
    obj = collections.OrderedDict([
        ("a", Tensor(v1, 1, (2, 2), (2, 1))),   # root elements 3..6
        ("b", Tensor(v2, 0, (4,), (1,))),       # root elements 8..11
        ("all", Tensor(whole, 0, (3, 4), (4, 1))),
    ])
    data = legacy_bytes(obj, [root], [(12, f32([float(i) for i in range(12)]))])
    path = os.path.join(HERE, "valid", "legacy_storage_views.pt")
    with open(path, "wb") as f:
        f.write(data)
    loaded = torch.load(path)
    assert loaded["a"].tolist() == [[3.0, 4.0], [5.0, 6.0]], loaded["a"]
    assert loaded["b"].tolist() == [8.0, 9.0, 10.0, 11.0], loaded["b"]
    with open(os.path.join(HERE, "expect", "legacy_storage_views.txt"), "w") as f:
        f.write("t /a float32 2,2 2,1 3 0\n"
                "t /b float32 4 1 8 0\n"
                "t /all float32 3,4 4,1 0 0\n")


def small():
    """{'w': 3 floats, 'n': 2 int64s} on keys '1', '2': the base of the damaged files."""
    w, n = Storage("FloatStorage", "1", 3), Storage("LongStorage", "2", 2)
    return collections.OrderedDict([("w", Tensor(w, 0, (3,), (1,))),
                                    ("n", Tensor(n, 0, (2,), (1,)))])


SMALL_BLOBS = [(3, f32([1.0, 2.0, 3.0])), (2, struct.pack("<2q", 7, 8))]


def invalid():
    def write(name, data):
        with open(os.path.join(HERE, "invalid", name), "wb") as f:
            f.write(data)

    good = legacy_bytes(small(), ["1", "2"], SMALL_BLOBS)
    with open(os.path.join(HERE, "valid", "legacy_small.pt"), "wb") as f:
        f.write(good)
    make_data.write_expect("legacy_small", torch.load(io.BytesIO(good)))
    # the last storage's data cut short by 4 bytes
    write("legacy_truncated_storage.pt", good[:-4])
    # a count of 2^62 elements for storage "2" (its persistent id says 2)
    write("legacy_huge_count.pt",
          legacy_bytes(small(), ["1", "2"], [SMALL_BLOBS[0], (1 << 62, SMALL_BLOBS[1][1])]))
    # storage "2" declared with 1 << 40 elements in the pickle and the count
    big = small()
    big["n"] = Tensor(Storage("LongStorage", "2", 1 << 40), 0, (2,), (1,))
    write("legacy_count_past_end.pt",
          legacy_bytes(big, ["1", "2"], [SMALL_BLOBS[0], (1 << 40, SMALL_BLOBS[1][1])]))
    # key lists that do not match the persistent ids
    write("legacy_key_missing.pt", legacy_bytes(small(), ["1"], SMALL_BLOBS[:1]))
    write("legacy_key_unused.pt", legacy_bytes(small(), ["1", "2", "3"],
                                               SMALL_BLOBS + [(1, f32([0.0]))]))
    write("legacy_key_twice.pt", legacy_bytes(small(), ["1", "2", "2"],
                                              SMALL_BLOBS + [SMALL_BLOBS[1]]))
    # the count of storage "1" is 4, its persistent id says 3
    write("legacy_count_mismatch.pt",
          legacy_bytes(small(), ["1", "2"], [(4, f32([1.0, 2.0, 3.0, 4.0])), SMALL_BLOBS[1]]))
    # a view past the end of its root storage
    bad_view = small()
    bad_view["w"] = Tensor(Storage("FloatStorage", "1", 3, ("9", 2, 2)), 0, (2,), (1,))
    write("legacy_view_past_root.pt", legacy_bytes(bad_view, ["1", "2"], SMALL_BLOBS))
    # view metadata that is not a (key, offset, size) tuple
    not_view = small()
    not_view["w"] = Tensor(Storage("FloatStorage", "1", 3, True), 0, (3,), (1,))
    write("legacy_view_not_a_tuple.pt", legacy_bytes(not_view, ["1", "2"], SMALL_BLOBS))
    # a tensor past the end of its storage
    past = small()
    past["w"] = Tensor(Storage("FloatStorage", "1", 3), 2, (2,), (1,))
    write("legacy_tensor_past_storage.pt", legacy_bytes(past, ["1", "2"], SMALL_BLOBS))
    # one key, two storage types
    mixed = small()
    mixed["v"] = Tensor(Storage("IntStorage", "1", 3), 0, (3,), (1,))
    write("legacy_two_types.pt", legacy_bytes(mixed, ["1", "2"], SMALL_BLOBS))
    # the object's pickle never STOPs: the scan runs to the end of the file
    cut = io.BytesIO()
    for v in (MAGIC, 1001, SYS_INFO):
        pickle.dump(v, cut, protocol=2)
    write("legacy_no_stop.pt", cut.getvalue() + b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01" * 3)
    # a pickle whose first value is not the magic number: not a torch file (415)
    write("legacy_bad_magic.pt", legacy_bytes(small(), ["1", "2"], SMALL_BLOBS, magic=MAGIC + 1))


def main():
    torch.manual_seed(0)
    net = make_data.Net()
    net(torch.randn(2, 1, 8, 8))
    save("legacy_state_dict", net.state_dict())

    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    save("legacy_training_checkpoint", {
        "epoch": 7, "global_step": 700, "model_state_dict": net.state_dict(),
        "optimizer_state_dict": opt.state_dict(), "loss": torch.tensor(0.375),
        "loss_fn": nn.CrossEntropyLoss(), "note": "legacy"})
    save("legacy_whole_model", net)

    base = torch.arange(100, dtype=torch.float32)
    save("legacy_views", {"base": base, "slice": base[10:30], "t": base.view(10, 10).t(),
                          "every3": base[::3], "narrow": base.view(10, 10)[2:5, 3:7]})
    save("legacy_shared", [make_data.Tied(), (base[1:3], base), {"again": base[50:]}])
    save("legacy_zero_elements", {"a": torch.zeros(0), "b": torch.zeros(3, 0),
                                  "c": torch.ones(2)[2:], "d": torch.zeros(0, dtype=torch.int64)})
    save("legacy_dtypes", collections.OrderedDict(
        (str(dt).split(".")[1], (torch.arange(6).reshape(2, 3) % 3).to(dt))
        for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64,
                   torch.complex128, torch.bool, torch.int8, torch.uint8, torch.int16,
                   torch.int32, torch.int64)))
    save("legacy_protocol4", {"w": torch.randn(4, 4), "nested": {"b": torch.ones(3)}},
         pickle_protocol=4)
    save("legacy_keys", {"a/b": torch.ones(1), "c~d": {1: torch.ones(1), "x.y": [torch.ones(1)]}})
    storage_views()
    invalid()

    for f in sorted(os.listdir(COMPAT)):
        if f.endswith(".pt") and "legacy" in f:
            make_data.write_expect("compat_" + f[:-3], torch.load(os.path.join(COMPAT, f)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--invalid"]:
        invalid()  # the damaged files alone: the valid ones keep their bytes
    else:
        main()
