"""Thin uploads (SPEC 3.1) built by hand from a checkpoint file, for tests.

storage_ranges(path) finds each storage's byte range the way the formats
define it (a torch zip's data/ records, a safetensors tensor's data_offsets,
a legacy file's storages after the keys list), independently of the server.
frames(data, ranges, ...) encodes the file as L/R/E frames.
cut_upload(d, model, data, fraction) sends part of a plain upload and hangs
up, as a client that dies mid-upload.
"""

import hashlib
import json
import pickle
import socket
import struct
import zipfile

from . import fixtures

ZIP_MAGIC = b"PK\x03\x04"


def _zip_ranges(path):
    out = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for zi in z.infolist():
            parts = zi.filename.split("/")
            if len(parts) < 3 or parts[-2] != "data" or zi.compress_type != 0:
                continue
            f.seek(zi.header_offset)
            head = f.read(30)
            n, e = struct.unpack("<HH", head[26:30])
            out.append((zi.header_offset + 30 + n + e, zi.file_size))
    return out


def _safetensors_ranges(data):
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    out = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out.append((8 + hlen + b, e - b))
    return out


def _legacy_ranges(path):
    """A legacy file: three pickles (magic, protocol, sys info), the object's
    pickle naming storages by key, a pickle of the keys in file order, then
    per storage an 8-byte element count and the bytes."""
    import torch

    elem = {}

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch" and name.endswith("Storage"):
                return getattr(torch, name)
            return fixtures._Stub

        def persistent_load(self, pid):
            if pid[0] == "storage":
                cls = pid[1]
                elem[pid[2]] = 1 if cls.__name__ == "UntypedStorage" else cls().element_size()
                return None
            return fixtures._Stub

    out = []
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        U(f).load()
        keys = pickle.load(f)
        for k in keys:
            (numel,) = struct.unpack("<Q", f.read(8))
            n = numel * elem[k]
            out.append((f.tell(), n))
            f.seek(n, 1)
    return out


def storage_ranges(path):
    """-> sorted [(offset, nbytes)] of the file's storages."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == ZIP_MAGIC:
        r = _zip_ranges(path)
    elif data[:1] == b"\x80":
        r = _legacy_ranges(path)
    else:
        r = _safetensors_ranges(data)
    return sorted(r)


def frame(kind, length, payload=b""):
    return kind + struct.pack("<Q", length) + payload


def frames(data, ranges, refer=lambda i: True, split=None, end=None):
    """data as thin frames: range i as an R frame when refer(i), everything
    else as L frames (cut into pieces of at most split bytes when given, with
    an empty L frame in front of each run). end: the E hash (default: the
    file's SHA-256)."""
    out, pos = [], 0

    def lit(b):
        if split:
            out.append(frame(b"L", 0))
            for i in range(0, len(b), split):
                out.append(frame(b"L", len(b[i:i + split]), b[i:i + split]))
        elif b:
            out.append(frame(b"L", len(b), b))

    for i, (off, n) in enumerate(ranges):
        if n == 0 or not refer(i):
            continue
        lit(data[pos:off])
        out.append(frame(b"R", n, hashlib.sha256(data[off:off + n]).digest()))
        pos = off + n
    lit(data[pos:])
    out.append(frame(b"E", 32, end if end is not None else hashlib.sha256(data).digest()))
    return b"".join(out)


def cut_upload(d, model, data, fraction):
    """Sends the first `fraction` of a plain upload of data, then closes the
    connection, as a client that is killed or loses its network does."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    try:
        s.sendall(b"POST /api/v1/models/%s/checkpoints HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % (model.encode(), len(data)))
        s.sendall(data[:int(len(data) * fraction)])
    finally:
        s.close()
