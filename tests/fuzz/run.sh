#!/bin/sh
# Builds tests/fuzz/fuzz_formats.c with libFuzzer + ASan + UBSan and runs it for
# FUZZ_SECONDS (default 60), seeded from tests/data/*/valid (the legacy torch
# files tests/data/torch/valid/legacy_*.pt among them), the damaged legacy files
# of tests/data/torch/invalid, and the torch 2.x compat corpus
# (tests/data/compat/torch2, which must be there; its legacy files too), and
# a thin-upload frame stream for the frame decoder the harness also runs. Run
# from the repo root (make fuzz). Crashes land in build/fuzz/crash-*.
set -eu
out=build/fuzz
mkdir -p "$out/corpus"
for d in tests/data/*/valid; do
	[ -d "$d" ] && cp -f "$d"/* "$out/corpus/" 2>/dev/null || true
done
cp -f tests/data/compat/torch2/*.pt "$out/corpus/"
cp -f tests/data/torch/invalid/legacy_*.pt "$out/corpus/"
# torch.distributed.checkpoint's .metadata pickles and data files
cp -f tests/data/dcp/ws2.metadata tests/data/dcp/v2.metadata "$out/corpus/"
cp -f tests/data/dcp/small/__0_0.distcp "$out/corpus/small__0_0.distcp"
# the pickles alone: fuzz_formats wraps them in a zip (see its header)
python3 - "$out/corpus" <<'PY' || true
import os, sys, zipfile
d = sys.argv[1]
for f in os.listdir(d):
    try:
        z = zipfile.ZipFile(os.path.join(d, f))
        n = [x for x in z.namelist() if x.endswith("/data.pkl")][0]
        open(os.path.join(d, f + ".pkl"), "wb").write(z.read(n))
    except Exception:
        pass
# thin-upload frames (L, R, L, E) for the frame decoder
import hashlib, struct
def fr(kind, n, payload=b""):
    return kind + struct.pack("<Q", n) + payload
body = b"PK\x03\x04 a file's first bytes"
# a .distcp-like file: two torch files back to back with bytes between
ts = sorted(f for f in os.listdir(d) if f.endswith(".pt") and not f.startswith("legacy"))[:2]
if len(ts) == 2:
    parts = [open(os.path.join(d, f), "rb").read() for f in ts]
    open(os.path.join(d, "two.distcp"), "wb").write(parts[0] + b"PK\x05\x06 bytes" + parts[1])
# blob codec containers (storage/codec.h) with raw planes: a delta of 4-byte
# elements with a chain of one, and byte planes of 2-byte ones
import zlib
def container(codec, E, kind, raw, chain=()):
    u32 = lambda v: struct.pack("<I", v)
    hdr = b"CKZ\1" + bytes([codec, E, 0, kind]) + u32(1 << 20) + u32(1) + \
        struct.pack("<Q", len(raw)) + u32(0)
    hdr += u32(zlib.crc32(hdr))
    ext = b""
    if chain:
        ext = bytes([len(chain), 0, 0, 0]) + b"".join(chain)
        ext += u32(zlib.crc32(ext))
    m = len(raw) // E
    table_off = len(hdr) + len(ext)
    ent = struct.pack("<Q", table_off + 12 + 4 * E) + b"".join(
        u32(m | 0x80000000) for _ in range(E))
    ent += u32(zlib.crc32(ent))
    planes = b"".join(bytes(raw[i::E]) for i in range(E))
    return hdr + ext + ent + planes
open(os.path.join(d, "delta.ckz"), "wb").write(
    container(3, 4, 2, bytes(range(256)) * 4, [hashlib.sha256(b"base").digest()]))
open(os.path.join(d, "planes.ckz"), "wb").write(container(2, 2, 0, bytes(range(200)) * 3))
open(os.path.join(d, "thin.frames"), "wb").write(
    fr(b"L", len(body), body) + fr(b"R", 4096, hashlib.sha256(b"x").digest()) +
    fr(b"L", 0) + fr(b"L", 3, b"end") + fr(b"E", 32, hashlib.sha256(body).digest()))
PY
clang -g -O1 -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-o "$out/fuzz_formats" tests/fuzz/fuzz_formats.c \
	formats/budget.c formats/checkpoint.c formats/torch.c formats/torch_walk.c \
	formats/torch_legacy.c formats/zip.c formats/pickle.c \
	formats/tensor.c formats/input.c formats/safetensors.c formats/zip_scan.c formats/sig.c formats/items.c formats/dcp.c \
	common/err.c common/hash.c common/sha256.c common/dtype.c common/vec.c api/thin.c storage/codec.c \
	$(pkg-config --cflags --libs jansson zlib libdeflate libcrypto libzstd 2>/dev/null ||
		echo -ljansson -lz -ldeflate -lcrypto -lzstd)
cd "$out"
# libFuzzer reports every new input; keep that in fuzz.log and show its end
# (the whole log when it finds something).
echo "fuzz: running fuzz_formats for ${FUZZ_SECONDS:-60} s (log: $out/fuzz.log)"
if ./fuzz_formats -max_total_time="${FUZZ_SECONDS:-60}" -max_len=65536 -rss_limit_mb=1024 \
	-artifact_prefix=./ corpus >fuzz.log 2>&1; then
	tail -n 3 fuzz.log
else
	rc=$?
	tail -n 60 fuzz.log
	echo "fuzz: FAILED (exit $rc); the input is in $out/crash-* or $out/leak-*"
	exit "$rc"
fi
