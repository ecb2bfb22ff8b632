#!/usr/bin/python3
# backends: sqlite postgresql
"""Hostile uploads cannot make the daemon's memory grow with the file (SPEC 7).

The parsers in formats/ take their memory from a budget (formats/budget.h):
at most 40 MiB per upload and 80 MiB for every upload being parsed at once,
so that the daemon's peak RSS stays under SPEC 7's 64 MB for one upload and
128 MB for four, whatever the file holds. The files below are written here
with plain Python (no torch): each is small on the wire and large once parsed.

- a torch zip whose data.pkl is ']' then N x ']a' (a list of N empty lists):
  63 MB (more than the per-upload budget as bytes) and 16 MB (its bytes fit,
  its object graph does not);
- a safetensors file whose 96 MB header is a __metadata__ map of short keys;
- 200,000 zero-size tensors, as safetensors and as a torch zip (one empty
  storage record, 200,000 tensors on it).

Each case is uploaded alone, then 4 at once (each case, then four different
ones); every answer must be a JSON 413 (naming the budget) or 422, /stats
must not change, and the daemon's peak RSS (VmHWM, reset before each round
through /proc/PID/clear_refs) must stay under 64 MB for one upload and under
128 MB for four. Then real checkpoints of 10,000 tensors (torch.save, and
safetensors) must still be accepted, alone and 4 at once: the budget is
given back after each refusal and a realistic file does not reach it.
"""

import json
import os
import struct
import subprocess
import sys
import threading
import time
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, harness  # noqa: E402

ONE_LIMIT_MB = 64
FOUR_LIMIT_MB = 128
CONCURRENT = 4


def sanitized():
    """True for a daemon built with AddressSanitizer (make sanitize): its
    shadow memory and quarantine are not the daemon's, so the RSS bounds are
    reported but not checked; every other check stands."""
    with open(ckptd.binary(), "rb") as f:
        return b"__asan_init" in f.read()


SANITIZED = sanitized()


def torch_zip(path, pkl, records=()):
    """A torch-style zip: archive/data.pkl, then records (name, bytes), stored."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for name, data in records:
            z.writestr("archive/" + name, data)
        z.writestr("archive/version", b"3\n")


def nested_lists_pickle(n):
    # PROTO 2, EMPTY_LIST, then n x (EMPTY_LIST, APPEND), STOP
    return b"\x80\x02]" + b"]a" * n + b"."


def zero_size_tensors_pickle(n):
    """A dict of n tensors, each a 0-element view of storage record '0'."""
    def short_str(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b

    out = [b"\x80\x02}q\x00("]
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\nq\x01"
    storage = (b"(" + short_str("storage") + b"ctorch\nFloatStorage\nq\x02"
               + short_str("0") + short_str("cpu") + b"K\x00tq\x03")
    odict = b"ccollections\nOrderedDict\nq\x04"
    for i in range(n):
        out.append(short_str("t%d" % i))
        out.append(rebuild if i == 0 else b"h\x01")
        out.append(b"(")
        out.append(storage + b"Q" if i == 0 else b"h\x03Q")
        # offset 0, size (0,), stride (1,), requires_grad False, OrderedDict()
        out.append(b"K\x00K\x00\x85K\x01\x85\x89")
        out.append(odict if i == 0 else b"h\x04")
        out.append(b")RtR")  # OrderedDict(), TUPLE, REDUCE
    out.append(b"u.")
    return b"".join(out)


def safetensors_bytes(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def metadata_header_file(path, size):
    """A safetensors file of no tensors whose header is ~size bytes of
    __metadata__ entries ("k00000000":"")."""
    n = size // 15
    body = ",".join('"k%08d":""' % i for i in range(n))
    h = ('{"__metadata__":{' + body + "}}").encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)


def zero_size_safetensors(path, n):
    entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    h = ("{" + ",".join(entry % i for i in range(n)) + "}").encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)


def many_tensors_safetensors(path, n):
    header, off = {}, 0
    for i in range(n):
        header["model.layers.%d.weight" % i] = {
            "dtype": "F32", "shape": [4, 4], "data_offsets": [off, off + 64]}
        off += 64
    with open(path, "wb") as f:
        f.write(safetensors_bytes(header, bytes(off)))


GEN_TORCH = r"""
import sys, torch
n, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
sd = {"model.layers.%d.weight" % i: torch.randn(4, 4) for i in range(n)}
torch.save({"epoch": 3, "model_state_dict": sd}, out)
"""


def upload_all(d, model, paths):
    """Uploads every path at once; returns the Responses in order."""
    out = [None] * len(paths)

    def run(i, p):
        try:
            out[i] = d.stream_upload(model, p, timeout=300)
        except Exception as e:  # reported by the caller
            out[i] = e

    ts = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(paths)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


class HostileMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = ckptd.work_dir()
        t0 = time.time()
        cls.cases = []

        def add(name, path):
            cls.cases.append((name, path))

        p = os.path.join(cls.scratch, "lists63.pt")
        torch_zip(p, nested_lists_pickle(30_000_000))
        add("torch, data.pkl of 30M nested lists (63 MB)", p)
        p = os.path.join(cls.scratch, "lists16.pt")
        torch_zip(p, nested_lists_pickle(8_000_000))
        add("torch, data.pkl of 8M nested lists (16 MB)", p)
        p = os.path.join(cls.scratch, "metadata.safetensors")
        metadata_header_file(p, 96 << 20)
        add("safetensors, 96 MB header of __metadata__ keys", p)
        p = os.path.join(cls.scratch, "zero200k.safetensors")
        zero_size_safetensors(p, 200_000)
        add("safetensors, 200,000 zero-size tensors", p)
        p = os.path.join(cls.scratch, "zero200k.pt")
        torch_zip(p, zero_size_tensors_pickle(200_000), [("data/0", b"")])
        add("torch, 200,000 zero-size tensors", p)
        print("  generated %d hostile files in %.1fs: %s" % (
            len(cls.cases), time.time() - t0,
            ", ".join("%.1f MB" % (os.path.getsize(p) / 1e6) for _, p in cls.cases)), flush=True)
        cls.d = ckptd.Daemon(name="hostile").start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop_checked(timeout=30)
        finally:
            cls.d.cleanup()

    def hwm_mb(self):
        return ckptd.vm_hwm_kb(self.d.pid) / 1024.0

    def reset_hwm(self):
        # "5" resets the peak RSS (VmHWM) to the current RSS (proc(5))
        with open("/proc/%d/clear_refs" % self.d.pid, "w") as f:
            f.write("5")

    def refusal_problem(self, r, label):
        """None when r is a JSON 413 naming the budget or a JSON 422, else
        what is wrong with it."""
        if isinstance(r, Exception):
            return "%s: %r" % (label, r)
        if r.status not in (413, 422):
            return "%s: %d %r" % (label, r.status, r.body[:200])
        try:
            j = checks.error_json(self, r, (413, 422), label)
        except AssertionError as e:
            return str(e)
        if r.status == 413 and (j["error"] != "too_big" or "budget" not in j["message"]):
            return "%s: the 413 does not name the budget: %r" % (label, j)
        return None

    def run_round(self, label, paths, limit_mb, problems):
        self.reset_hwm()
        t0 = time.time()
        rs = upload_all(self.d, "hostile", paths)
        hwm = self.hwm_mb()
        answers = []
        for r in rs:
            p = self.refusal_problem(r, label)
            if p:
                problems.append(p)
            answers.append(repr(r) if isinstance(r, Exception) else
                           "%d %s" % (r.status, r.json().get("message", "")[:140]
                                      if r.status >= 400 else ""))
        print("  %d x %s: peak RSS %.1f MB, %.1fs; %s"
              % (len(paths), label, hwm, time.time() - t0, answers[0]), flush=True)
        if hwm >= limit_mb and not SANITIZED:
            problems.append("%d x %s: daemon peak RSS %.1f MB, over %d MB"
                            % (len(paths), label, hwm, limit_mb))

    def test_1_each_hostile_upload_alone_stays_under_64mb(self):
        before = self.d.stats()
        problems = []
        for label, path in self.cases:
            self.run_round(label, [path], ONE_LIMIT_MB, problems)
        if self.d.stats() != before:
            problems.append("/stats changed: %r, was %r" % (self.d.stats(), before))
        self.assertEqual(problems, [])

    def test_2_four_hostile_uploads_at_once_stay_under_128mb(self):
        before = self.d.stats()
        problems = []
        for label, path in self.cases:
            self.run_round(label, [path] * CONCURRENT, FOUR_LIMIT_MB, problems)
        self.run_round("different hostile files", [p for _, p in self.cases[:CONCURRENT]],
                       FOUR_LIMIT_MB, problems)
        if self.d.stats() != before:
            problems.append("/stats changed: %r, was %r" % (self.d.stats(), before))
        self.assertEqual(problems, [])

    def test_3_checkpoints_of_10000_tensors_are_still_accepted(self):
        self.reset_hwm()
        pt = os.path.join(self.scratch, "many.pt")
        subprocess.run(["/usr/bin/python3", "-c", GEN_TORCH, "10000", pt], check=True,
                       timeout=300)
        st = os.path.join(self.scratch, "many.safetensors")
        many_tensors_safetensors(st, 10000)
        for path in (pt, st):
            r = self.d.stream_upload("many", path)
            self.assertEqual(r.status, 201, "%s: %r" % (path, r))
            self.assertEqual(r.json()["tensor_count"], 10000)
        # and 4 at once: the process-wide budget holds them all
        rs = upload_all(self.d, "many", [pt, st, pt, st])
        for r in rs:
            self.assertNotIsInstance(r, Exception, r)
            self.assertEqual(r.status, 201, r)
        hwm = self.hwm_mb()
        print("  daemon peak RSS during the 10,000-tensor uploads: %.1f MB" % hwm, flush=True)
        if not SANITIZED:
            self.assertLess(hwm, FOUR_LIMIT_MB, "daemon peak RSS %.1f MB" % hwm)


if __name__ == "__main__":
    harness.main()
