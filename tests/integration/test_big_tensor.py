#!/usr/bin/python3
# backends: sqlite postgresql
"""One 1 MB tensor out of a ~1 GB checkpoint reads about 1 MB (issue 3 item 4, SPEC 7).

A child /usr/bin/python3 writes a dict of 255 random float32 tensors of 4 MiB
and, in the middle, one 1 MiB tensor "probe" with torch.save (the test
process never holds the data), plus the probe's raw bytes beside it. The file
is uploaded streaming. Then GET .../tensors/probe?format=raw and ?format=npy:
the daemon's bytes read (rchar of /proc/<pid>/io: bytes returned by read and
pread, whatever the page cache holds) must grow by less than 8 MB per request,
and the bytes must equal the probe. The full download is timed for comparison.
CKPTD_SKIP_BIG=1 skips this file.
"""

import io
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness  # noqa: E402

NTENSORS = int(os.environ.get("CKPTD_BIG_TENSORS", "255"))
ELEMS = 1 << 20  # float32 elements per big tensor: 4 MiB
PROBE_ELEMS = 1 << 18  # 1 MiB
LIMIT_READ = 8 << 20
SKIP = os.environ.get("CKPTD_SKIP_BIG") == "1"

GEN = r"""
import sys, torch
torch.manual_seed(2)
n, elems, probe_elems, out, probe_out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                         sys.argv[4], sys.argv[5])
sd = {}
for i in range(n):
    if i == n // 2:
        sd["probe"] = torch.randn(probe_elems // 512, 512)
    sd["layers.%d.weight" % i] = torch.randn(elems // 1024, 1024)
torch.save(sd, out)
with open(probe_out, "wb") as f:
    f.write(sd["probe"].numpy().tobytes())
"""


def proc_io(pid):
    out = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


@unittest.skipIf(SKIP, "CKPTD_SKIP_BIG=1")
class BigTensor(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = ckptd.work_dir()
        cls.path = os.path.join(cls.scratch, "big.pt")
        cls.probe_path = os.path.join(cls.scratch, "probe.bin")
        t0 = time.time()
        subprocess.run(["/usr/bin/python3", "-c", GEN, str(NTENSORS), str(ELEMS), str(PROBE_ELEMS),
                        cls.path, cls.probe_path], check=True, timeout=400)
        cls.size = os.path.getsize(cls.path)
        with open(cls.probe_path, "rb") as f:
            cls.probe = f.read()
        print("  generated %s: %.1f MB in %.1fs" % (cls.path, cls.size / 1e6, time.time() - t0),
              flush=True)
        cls.d = ckptd.Daemon(name="bigtensor").start()
        t0 = time.time()
        r = cls.d.stream_upload("bigt", cls.path, {"epoch": 1})
        print("  upload %.1fs" % (time.time() - t0), flush=True)
        cls.upload = r
        cls.ckpt_id = r.json()["id"] if r.status == 201 else None

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop_checked(timeout=30)
        finally:
            cls.d.cleanup()
            for p in (cls.path, cls.probe_path):
                try:
                    os.unlink(p)
                except OSError:
                    pass

    def fetch(self, fmt):
        """GET the probe as fmt -> (body, rchar growth, read_bytes growth, seconds)."""
        url = "/models/bigt/checkpoints/%d/tensors/probe?format=%s" % (self.ckpt_id, fmt)
        before = proc_io(self.d.pid)
        t0 = time.time()
        r = self.d.get(url)
        dt = time.time() - t0
        after = proc_io(self.d.pid)
        self.assertEqual(r.status, 200, "%s: %r" % (url, r))
        return r, after["rchar"] - before["rchar"], after["read_bytes"] - before["read_bytes"], dt

    def test_1_upload(self):
        self.assertEqual(self.upload.status, 201, self.upload)
        self.assertGreater(self.size, 10 ** 9)
        self.assertEqual(self.upload.json()["tensor_count"], NTENSORS + 1)

    def test_2_one_tensor_reads_about_its_own_size(self):
        import numpy

        self.assertIsNotNone(self.ckpt_id, "upload failed")
        raw, raw_rchar, raw_disk, raw_dt = self.fetch("raw")
        self.assertEqual(raw.header("X-Dtype"), "float32")
        self.assertEqual(raw.header("X-Shape"), "[%d,512]" % (PROBE_ELEMS // 512))
        self.assertEqual(raw.body, self.probe, "raw bytes of the probe differ")
        npy, npy_rchar, npy_disk, npy_dt = self.fetch("npy")
        a = numpy.load(io.BytesIO(npy.body), allow_pickle=False)
        self.assertEqual(a.dtype, numpy.float32)
        self.assertEqual(a.shape, (PROBE_ELEMS // 512, 512))
        self.assertEqual(a.tobytes(), self.probe, "npy values of the probe differ")

        t0 = time.time()
        status, _h, sha, n = self.d.stream_download("/models/bigt/checkpoints/%d/file" % self.ckpt_id)
        full_dt = time.time() - t0
        self.assertEqual(status, 200)
        self.assertEqual(n, self.size)
        print("1 MB tensor out of a 1 GB checkpoint: %.2f MB read by the daemon, %.0f ms "
              "(full download: %.0f ms)" % (raw_rchar / 1e6, raw_dt * 1e3, full_dt * 1e3), flush=True)
        print("  raw: rchar %+d B, read_bytes %+d B, %.1f ms; npy: rchar %+d B, read_bytes %+d B, "
              "%.1f ms; tensor/full time %.2f%%"
              % (raw_rchar, raw_disk, raw_dt * 1e3, npy_rchar, npy_disk, npy_dt * 1e3,
                 100.0 * raw_dt / full_dt), flush=True)
        self.assertLess(raw_rchar, LIMIT_READ, "format=raw: the daemon read %d bytes" % raw_rchar)
        self.assertLess(npy_rchar, LIMIT_READ, "format=npy: the daemon read %d bytes" % npy_rchar)


if __name__ == "__main__":
    harness.main()
