"""Reference readers for ckptd's generated outputs (SPEC 3 state_dict, tensors).

Independent of the daemon's code: a strict safetensors reader and writer done
by hand (8-byte little-endian header length, JSON header, data; the
`safetensors` package is not installed), the numpy dtype of each safetensors
dtype, JSON Pointer navigation through what torch.load returned, the default
root SPEC 3 describes, and tensor comparisons (dtype, shape, values with NaN
where NaN, strides, storage offsets, storages shared between names).
"""

import json
import struct

import numpy
import torch

from . import expect

# safetensors dtype -> (element size, numpy dtype or None when numpy has none)
ST_DTYPES = {
    "F64": (8, "<f8"), "F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, None),
    "F8_E4M3": (1, None), "F8_E5M2": (1, None),
    "I64": (8, "<i8"), "I32": (4, "<i4"), "I16": (2, "<i2"), "I8": (1, "i1"),
    "U64": (8, "<u8"), "U32": (4, "<u4"), "U16": (2, "<u2"), "U8": (1, "u1"),
    "BOOL": (1, "?"), "C64": (8, "<c8"),
}
TORCH_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
}
# ckptd's dtype names (torch's) for the safetensors dtypes
ST_TO_NAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
    "U8": "uint8", "BOOL": "bool", "C64": "complex64",
}


class SafetensorsError(AssertionError):
    pass


def read_safetensors(data):
    """Parses a whole safetensors file strictly -> (metadata or None,
    {name: (st_dtype, shape list, raw bytes)}). Raises SafetensorsError on
    anything the format forbids (offsets not covering the data exactly,
    overlaps, sizes not matching dtype x shape)."""
    if len(data) < 8:
        raise SafetensorsError("file of %d bytes has no header length" % len(data))
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > len(data) - 8:
        raise SafetensorsError("header length %d past the end (%d bytes)" % (n, len(data)))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except Exception as e:
        raise SafetensorsError("header is not UTF-8 JSON: %s" % e)
    if not isinstance(header, dict):
        raise SafetensorsError("header is not an object")
    body = data[8 + n:]
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict)
                                 and all(isinstance(v, str) for v in meta.values())):
        raise SafetensorsError("__metadata__ is not a map of strings: %r" % meta)
    out = {}
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError("entry %r: %r" % (name, e))
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in ST_DTYPES:
            raise SafetensorsError("entry %r: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError("entry %r: bad shape %r" % (name, shape))
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= len(body)):
            raise SafetensorsError("entry %r: bad data_offsets %r (data is %d bytes)"
                                   % (name, offs, len(body)))
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * ST_DTYPES[dt][0]:
            raise SafetensorsError("entry %r: %d bytes for %s %r" % (name, offs[1] - offs[0], dt, shape))
        spans.append((offs[0], offs[1], name))
        out[name] = (dt, shape, bytes(body[offs[0]:offs[1]]))
    pos = 0
    for lo, hi, name in sorted(spans):
        if lo != pos:
            raise SafetensorsError("entry %r starts at %d, want %d (gap or overlap)" % (name, lo, pos))
        pos = hi
    if pos != len(body):
        raise SafetensorsError("tensors cover %d of %d data bytes" % (pos, len(body)))
    return meta, out


def write_safetensors(tensors, metadata=None):
    """tensors: [(name, st_dtype, shape, raw bytes)] in data order -> file bytes
    (header padded with spaces to a multiple of 8, as the reference writer does)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def raw_bytes(t):
    """A tensor's elements in C order, little-endian, as bytes."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def st_tensor(dt, shape, raw):
    """A torch tensor from a safetensors entry (dtypes torch 1.13 has)."""
    if dt == "BF16":
        a = numpy.frombuffer(raw, dtype="<i2").copy().reshape(shape)
        return torch.from_numpy(a).view(torch.bfloat16)
    np_dt = ST_DTYPES[dt][1]
    if np_dt is None:
        raise SafetensorsError("torch 1.13 has no %s" % dt)
    a = numpy.frombuffer(raw, dtype=np_dt).copy().reshape(shape)
    return torch.from_numpy(a)


def values_equal(a, b):
    """Same dtype, shape and values (NaN where NaN, -0.0 vs 0.0 by bits too)."""
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    if a.numel() == 0:
        return True
    return raw_bytes(a) == raw_bytes(b)


def describe(t):
    return "%s%s" % (expect.dtype_name(t.dtype), list(t.shape))


def assert_tensor(tc, got, want, what, layout=True):
    tc.assertTrue(torch.is_tensor(got), "%s: not a tensor: %r" % (what, type(got)))
    tc.assertEqual(got.dtype, want.dtype, what)
    tc.assertEqual(tuple(got.shape), tuple(want.shape), what)
    if want.numel():
        a, b = got.detach(), want.detach()
        if a.dtype == torch.bfloat16:
            a, b = a.float(), b.float()
        if a.dtype.is_floating_point or a.dtype.is_complex:
            same = numpy.array_equal(a.numpy(), b.numpy(), equal_nan=True)
        else:
            same = torch.equal(a, b)
        tc.assertTrue(same, "%s: values differ:\n got %r\nwant %r" % (what, got, want))
    if layout:
        tc.assertEqual(tuple(got.stride()), tuple(want.stride()), "%s: strides" % what)
        tc.assertEqual(got.storage_offset(), want.storage_offset(), "%s: storage offset" % what)


def storage_groups(tensors):
    """{name: tensor} -> sorted list of sorted name lists sharing one storage
    (only groups of 2+; storages of 0 bytes never count as shared)."""
    by = {}
    for name, t in tensors.items():
        st = t.storage()
        if st.nbytes() == 0:
            continue
        by.setdefault(st.data_ptr(), []).append(name)
    return sorted(sorted(v) for v in by.values() if len(v) > 1)


# ---- JSON Pointers through a loaded checkpoint ----

def _children(obj):
    if isinstance(obj, torch.nn.Module):
        return list(obj.state_dict().items())
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    return []


def unescape(seg):
    return seg.replace("~1", "/").replace("~0", "~")


def navigate(obj, pointer):
    """The object at a JSON Pointer ("" = obj)."""
    if pointer in ("", "/"):
        return obj
    for seg in pointer[1:].split("/"):
        key = unescape(seg)
        for k, v in _children(obj):
            if k == key:
                obj = v
                break
        else:
            raise KeyError("no %r at %s" % (key, pointer))
    return obj


def tensors_below(obj, pointer=""):
    """{name below pointer (decoded segments joined by '/'): tensor}, i.e. what
    state_dict?root=pointer should hold."""
    out = {}

    def walk(o, names):
        if torch.is_tensor(o):
            out["/".join(names)] = o
            return
        for k, v in _children(o):
            walk(v, names + [k])

    walk(navigate(obj, pointer), [])
    return out


def is_flat(obj):
    """A container whose tensors are all direct children, with at least one."""
    if torch.is_tensor(obj):
        return False
    kids = _children(obj)
    tensors = [v for _, v in kids if torch.is_tensor(v)]
    return bool(tensors) and not any(tensors_below(v) for _, v in kids if not torch.is_tensor(v))


def default_root(obj):
    """SPEC 3's default root: the top level when it is a dict of tensors, else
    the first of /state_dict, /model_state_dict, /model that is; None when
    none is (the server then answers 422 listing candidates)."""
    for p in ("", "/state_dict", "/model_state_dict", "/model"):
        try:
            o = navigate(obj, p)
        except KeyError:
            continue
        if is_flat(o):
            return p
    return None


def containers_with_tensors(obj, prefix=""):
    """JSON Pointers of every container (below the top) holding a tensor somewhere."""
    out = []
    for k, v in _children(obj):
        p = prefix + "/" + expect.ptr_escape(k)
        if not torch.is_tensor(v) and tensors_below(v):
            out.append(p)
            out.extend(containers_with_tensors(v, p))
    return out
