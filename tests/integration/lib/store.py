"""Helpers for the reliability tests (SPEC 8): a data directory seen from
outside, ckptd's offline commands, checkpoint files built with torch, and
damaged copies of them.

Data directory (README "On-disk format"): blob files live at
DIR/blobs/ab/<62 hex> (raw), <62 hex>.z (compressed) or <62 hex>.d (a
delta against other blobs; a blob may exist under several names), temporary blob files in DIR/blobs/tmp/, upload spools in
DIR/tmp/ (O_TMPFILE, so never visible by name).
"""

import collections
import hashlib
import io
import os
import pickle
import re
import struct
import subprocess
import zipfile
import zlib

from . import ckptd

HEX2 = re.compile(r"^[0-9a-f]{2}$")
BLOB_NAME = re.compile(r"^[0-9a-f]{62}(\.[zd])?$")


# -- the data directory -------------------------------------------------------

def blob_files(data_dir):
    """-> (set of blob hashes named by files under DIR/blobs/??/, list of other
    files found in those shard directories); on the S3 run, the same of the
    objects under the data directory's prefix."""
    if os.environ.get("CKPTD_IT_S3"):
        return blob_objects(ckptd.s3_prefix(data_dir))
    return blob_files_in(os.path.join(data_dir, "blobs"))


BLOB_KEY = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{62})(\.[zd])?$")


def blob_objects(prefix):
    """blob_files of the blobs ckptd keeps on S3 under prefix: keys
    PREFIX/ab/<62 hex>[.z|.d]."""
    from . import s3
    hashes, strays = set(), []
    for k in s3.Client.from_env().list(prefix + "/"):
        m = BLOB_KEY.match(k[len(prefix) + 1:])
        if m:
            hashes.add(m.group(1) + m.group(2))
        else:
            strays.append(k)
    return hashes, strays


def blob_files_in(root):
    """blob_files of a blob directory given itself (--blobs DIR)."""
    hashes, strays = set(), []
    if not os.path.isdir(root):
        return hashes, strays
    for shard in sorted(os.listdir(root)):
        p = os.path.join(root, shard)
        if not HEX2.match(shard) or not os.path.isdir(p):
            continue
        for name in os.listdir(p):
            if BLOB_NAME.match(name):
                hashes.add(shard + name[:62])
            else:
                strays.append(os.path.join("blobs", shard, name))
    return hashes, strays


def leftovers(data_dir):
    """Files in DIR/tmp and DIR/blobs/tmp (both must be empty once a daemon
    has started)."""
    out = []
    for sub in ("tmp", os.path.join("blobs", "tmp")):
        p = os.path.join(data_dir, sub)
        if os.path.isdir(p):
            out += [os.path.join(sub, n) for n in os.listdir(p)]
    return sorted(out)


def tree(root):
    """Every path below root (dirs with a trailing '/'), relative, as a set."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out.add(os.path.normpath(os.path.join(rel, d)) + "/")
        for f in filenames:
            out.add(os.path.normpath(os.path.join(rel, f)))
    return out


def cli(*args, timeout=180):
    """Runs build/ckptd with args -> CompletedProcess (text stdout/stderr). A
    command on a --data directory uses the same store its daemon does."""
    args = list(args)
    if "--data" in args and "--index" not in args:
        data = args[args.index("--data") + 1]
        args += ckptd.index_args(data) if "--blobs" in args else ckptd.store_args(data)
    return subprocess.run([ckptd.binary()] + args, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True, errors="replace")


def assert_intact(tc, d, path, data, model):
    """The checkpoint at path downloads as exactly data, the same bytes
    uploaded again as model add nothing, and `ckptd verify` passes."""
    st, _h, got, n = d.stream_download(path)
    tc.assertEqual((st, got, n), (200, hashlib.sha256(data).hexdigest(), len(data)))
    j = d.upload_ok(model, data)
    tc.assertEqual(j["dedup"]["new_bytes"], 0, j["dedup"])
    p = cli("verify", "--data", d.data_dir)
    tc.assertEqual(p.returncode, 0, p.stdout + p.stderr)


# -- checkpoint files ---------------------------------------------------------

def save_torch(obj):
    """torch.save(obj) -> bytes (the zip format)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def randn(seed, numel):
    """A float32 tensor of numel N(0,1) values determined by seed."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randn(numel, generator=g)


# -- zip surgery ----------------------------------------------------------------

def local_data_range(data, info):
    """(start, length) of the stored bytes of zip entry info in data."""
    off = info.header_offset
    if data[off:off + 4] != b"PK\x03\x04":
        raise AssertionError("no local header for %s at %d" % (info.filename, off))
    n, m = struct.unpack("<HH", data[off + 26:off + 30])
    return off + 30 + n + m, info.compress_size


def records(data):
    """{entry name: (start, length)} of every record in the zip bytes."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    return {i.filename: local_data_range(data, i) for i in zf.infolist()}


def record_named(data, suffix):
    for name, rng in records(data).items():
        if name.endswith(suffix):
            return name, rng
    raise AssertionError("no record ending in %r" % suffix)


def tensor_records(data):
    """[(name, (start, length))] of the tensor data records (.../data/N)."""
    return [(n, r) for n, r in sorted(records(data).items())
            if re.search(r"/data/\d+$", n) and r[1] > 0]


def _eocd(data):
    i = data.rfind(b"PK\x05\x06")
    if i < 0:
        raise AssertionError("no end of central directory record")
    return i


def _cd_offset_fields(data):
    """Positions of the central directory offset fields: [(pos, width)]:
    the EOCD's, and the zip64 EOCD's when there is one."""
    e = _eocd(data)
    out = [(e + 16, 4)]
    z = data.rfind(b"PK\x06\x06", 0, e)
    if z >= 0:
        out.append((z + 48, 8))
    return out


def with_cd_offset(data, value):
    """A copy of the zip whose central directory offset says value."""
    b = bytearray(data)
    for pos, w in _cd_offset_fields(data):
        cur = int.from_bytes(b[pos:pos + w], "little")
        if w == 4 and cur == 0xFFFFFFFF:
            continue  # the zip64 record holds the real one
        b[pos:pos + w] = min(value, (1 << (8 * w)) - 1).to_bytes(w, "little")
    return bytes(b)


def with_entry_count(data, count):
    b = bytearray(data)
    e = _eocd(data)
    b[e + 8:e + 10] = struct.pack("<H", count & 0xFFFF)
    b[e + 10:e + 12] = struct.pack("<H", count & 0xFFFF)
    return bytes(b)


def fix_crc(data, name):
    """A copy of the zip with record name's CRC-32 (local header and central
    directory) recomputed from its current bytes, so damage inside it reaches
    the parser behind the CRC check."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = zf.getinfo(name)
    start, n = local_data_range(data, info)
    crc = zlib.crc32(data[start:start + n]) & 0xFFFFFFFF
    b = bytearray(data)
    b[info.header_offset + 14:info.header_offset + 18] = struct.pack("<I", crc)
    # the central directory entry: scan from the directory's start
    e = _eocd(data)
    pos = struct.unpack("<I", data[e + 16:e + 20])[0]
    if pos == 0xFFFFFFFF:
        z = data.rfind(b"PK\x06\x06", 0, e)
        pos = struct.unpack("<Q", data[z + 48:z + 56])[0]
    while data[pos:pos + 4] == b"PK\x01\x02":
        nl, el, cl = struct.unpack("<HHH", data[pos + 28:pos + 34])
        if data[pos + 46:pos + 46 + nl].decode("utf-8", "replace") == name:
            b[pos + 16:pos + 20] = struct.pack("<I", crc)
            break
        pos += 46 + nl + el + cl
    return bytes(b)


def rebuild_zip(data, replace):
    """A new stored (uncompressed) zip with the entries of data, where
    replace maps an entry-name suffix to new bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    body = new
            dst.writestr(info.filename, body)
    return out.getvalue()


# -- hand-made torch pickles ----------------------------------------------------

class _StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _FakeTensor:
    """Pickles as torch._utils._rebuild_tensor_v2 on a persistent storage,
    with whatever offset/size/stride it is given (valid or not)."""

    def __init__(self, key, numel, offset, size, stride):
        self.args = (_StorageRef(key, numel), offset, tuple(size), tuple(stride))

    def __reduce_ex__(self, proto):
        import torch

        return (torch._utils._rebuild_tensor_v2,
                self.args + (False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        import torch

        if isinstance(obj, _StorageRef):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_zip(obj, storages, archive="archive"):
    """A torch-style zip: archive/data.pkl pickling obj (which may hold
    fake_tensor()s), archive/data/KEY for each {key: bytes} in storages,
    archive/version."""
    pk = io.BytesIO()
    _Pickler(pk, protocol=2).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(archive + "/data.pkl", pk.getvalue())
        for key, b in storages.items():
            z.writestr(archive + "/data/" + key, b)
        z.writestr(archive + "/version", "3\n")
    return out.getvalue()


def fake_tensor(key, numel, offset, size, stride):
    return _FakeTensor(key, numel, offset, size, stride)
