#!/usr/bin/python3
"""Content-addressed dedup and freeing (SPEC 3 `dedup`, SPEC 6), on a fresh store.

The tests run in order on one daemon: a first upload adds every tensor; the
same bytes under a second model add nothing; an identical re-upload is still a
new checkpoint; changing one tensor adds exactly that tensor's bytes; the
tutorial's general checkpoint only adds its optimizer buffers; deleting
everything brings /stats back to zero blobs.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

D = None
STATE = {}


def setUpModule():
    global D
    D = ckptd.Daemon(name="dedup").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def unique_bytes(s):
    return ckptd.pick(s, "unique_bytes")


def blob_count(s):
    return ckptd.pick(s, "blob_count", "blobs")


def logical_bytes(s):
    return ckptd.pick(s, "logical_bytes")


class Dedup(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sd_name = "tutorial_state_dict.pt"
        cls.sd = fixtures.seed_bytes(cls.sd_name)
        cls.meta = fixtures.seed()[1]
        cls.sd_bytes = cls.meta[cls.sd_name]["storage_bytes"]

    def upload(self, model, data, params=None):
        j = D.upload_ok(model, data, params)
        return j, checks.dedup_json(self, j)

    def test_1_store_starts_empty(self):
        s = D.stats()
        self.assertEqual(blob_count(s), 0, s)
        self.assertEqual(unique_bytes(s), 0, s)
        self.assertEqual(logical_bytes(s), 0, s)
        self.assertEqual(D.get_json("/models")["models"], [])

    def test_2_first_upload_adds_every_tensor(self):
        j, d = self.upload("dd-one", self.sd, {"epoch": 1})
        STATE["first"] = j["id"]
        self.assertEqual(d["tensors"], 10)
        self.assertEqual(d["new_tensors"], 10)
        self.assertEqual(d["bytes"], self.sd_bytes)
        self.assertEqual(d["new_bytes"], self.sd_bytes)
        s = D.stats()
        # The store may keep the file's non-tensor rest (zip headers, data.pkl)
        # as a blob too: at most one more blob and the file's size in all.
        self.assertGreaterEqual(unique_bytes(s), self.sd_bytes)
        self.assertLessEqual(unique_bytes(s), len(self.sd))
        self.assertIn(blob_count(s), (10, 11))
        self.assertEqual(logical_bytes(s), len(self.sd))
        STATE["blobs_one"] = blob_count(s)
        STATE["unique_one"] = unique_bytes(s)

    def test_3_same_file_under_a_second_model_adds_no_bytes(self):
        before = D.stats()
        j, d = self.upload("dd-two", self.sd, {"epoch": 1})
        self.assertEqual(d["new_bytes"], 0, d)
        self.assertEqual(d["new_tensors"], 0, d)
        self.assertEqual(d["bytes"], self.sd_bytes)
        self.assertEqual(d["tensors"], 10)
        s = D.stats()
        self.assertEqual(unique_bytes(s), unique_bytes(before))
        self.assertEqual(blob_count(s), blob_count(before))
        self.assertEqual(logical_bytes(s), logical_bytes(before) + len(self.sd))

    def test_4_an_identical_upload_is_a_new_checkpoint(self):
        before = D.stats()
        j, d = self.upload("dd-one", self.sd, {"epoch": 2})
        self.assertNotEqual(j["id"], STATE["first"])
        self.assertEqual(d["new_bytes"], 0)
        lst = D.get_json("/models/dd-one/checkpoints")
        self.assertEqual(lst["total"], 2)
        self.assertEqual(unique_bytes(D.stats()), unique_bytes(before))
        for c in lst["checkpoints"]:
            f = D.get("/models/dd-one/checkpoints/%d/file" % c["id"])
            self.assertEqual(f.body, self.sd)

    def test_5_changing_one_tensor_adds_only_that_tensor(self):
        import torch

        path = os.path.join(ckptd.work_dir(), "changed.pt")
        sd = torch.load(fixtures.seed_path(self.sd_name))
        sd["fc2.weight"] = sd["fc2.weight"] + 1.0
        torch.save(sd, path)
        nbytes = sd["fc2.weight"].numel() * sd["fc2.weight"].element_size()
        self.assertEqual(nbytes, 84 * 120 * 4)
        with open(path, "rb") as f:
            data = f.read()
        before = D.stats()
        j, d = self.upload("dd-one", data, {"epoch": 3})
        STATE["changed"] = j["id"]
        STATE["changed_bytes"] = nbytes
        self.assertEqual(d["new_tensors"], 1, d)
        self.assertEqual(d["new_bytes"], nbytes, d)
        self.assertEqual(d["bytes"], self.sd_bytes)
        s = D.stats()
        # That tensor, plus at most the file's new non-tensor rest (its zip
        # headers carry the changed CRC).
        rest = len(data) - self.sd_bytes
        grew = unique_bytes(s) - unique_bytes(before)
        STATE["changed_grew"] = grew
        self.assertGreaterEqual(grew, nbytes)
        self.assertLessEqual(grew, nbytes + rest)
        self.assertIn(blob_count(s) - blob_count(before), (1, 2))
        STATE["changed_blobs"] = blob_count(s) - blob_count(before)
        f = D.get("/models/dd-one/checkpoints/%d/file" % j["id"])
        self.assertEqual(ckptd.sha256_bytes(f.body), ckptd.sha256_bytes(data))

    def test_6_general_checkpoint_adds_only_its_optimizer_buffers(self):
        m = self.meta["tutorial_checkpoint.pt"]
        j, d = self.upload("dd-general", fixtures.seed_bytes("tutorial_checkpoint.pt"))
        self.assertEqual(d["tensors"], 20)
        self.assertEqual(d["new_tensors"], 10, d)
        self.assertEqual(d["new_bytes"], m["storage_bytes"] - self.sd_bytes, d)
        # The optimizer file alone holds the same momentum buffers.
        j, d = self.upload("dd-opt", fixtures.seed_bytes("tutorial_optimizer.pt"))
        self.assertEqual((d["new_tensors"], d["new_bytes"]), (0, 0), d)

    def test_7_deleting_a_checkpoint_frees_only_its_own_blobs(self):
        before = D.stats()
        r = D.request("DELETE", "/models/dd-one/checkpoints/%d" % STATE["changed"])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        s = D.stats()
        self.assertEqual(blob_count(s), blob_count(before) - STATE["changed_blobs"])
        self.assertEqual(unique_bytes(s), unique_bytes(before) - STATE["changed_grew"])
        checks.error_json(self, D.get("/models/dd-one/checkpoints/%d" % STATE["changed"]), 404,
                          "deleted checkpoint")
        # The others still download.
        for c in D.get_json("/models/dd-one/checkpoints")["checkpoints"]:
            f = D.get("/models/dd-one/checkpoints/%d/file" % c["id"])
            self.assertEqual(f.body, self.sd)

    def test_8_deleting_everything_returns_the_store_to_zero(self):
        for c in D.get_json("/models/dd-one/checkpoints")["checkpoints"]:
            r = D.request("DELETE", "/models/dd-one/checkpoints/%d" % c["id"])
            self.assertEqual(r.status, 204, r)
        for m in ("dd-two", "dd-general", "dd-opt"):
            r = D.request("DELETE", "/models/%s" % m)
            self.assertIn(r.status, (200, 204), r)
            checks.error_json(self, D.get("/models/%s/checkpoints" % m), 404, "deleted model")
        lst = D.get("/models/dd-one/checkpoints")
        if lst.status == 200:
            self.assertEqual(lst.json()["total"], 0)
        s = D.stats()
        self.assertEqual(blob_count(s), 0, s)
        self.assertEqual(unique_bytes(s), 0, s)
        r = D.request("DELETE", "/models/dd-one")
        self.assertIn(r.status, (200, 204, 404), r)
        self.assertEqual(D.get_json("/models")["models"], [])

    def test_9_a_freed_tensor_can_be_stored_again(self):
        j, d = self.upload("dd-again", self.sd)
        self.assertEqual(d["new_bytes"], self.sd_bytes)
        f = D.get("/models/dd-again/checkpoints/%d/file" % j["id"])
        self.assertEqual(f.body, self.sd)
        s = D.stats()
        self.assertEqual(blob_count(s), STATE["blobs_one"])
        self.assertEqual(unique_bytes(s), STATE["unique_one"])


class Compression(unittest.TestCase):
    """--compress auto (the default) shrinks compressible blobs; off stores raw."""

    @classmethod
    def setUpClass(cls):
        import torch

        path = os.path.join(ckptd.work_dir(), "compressible.pt")
        torch.save({"zeros": torch.zeros(512, 1024), "w": torch.randn(256, 256)}, path)
        with open(path, "rb") as f:
            cls.data = f.read()

    def store(self, args):
        with ckptd.Daemon(name="compress", args=args) as d:
            j = d.upload_ok("c", self.data)
            s = d.stats()
            f = d.get("/models/c/checkpoints/%d/file" % j["id"])
            self.assertEqual(ckptd.sha256_bytes(f.body), ckptd.sha256_bytes(self.data))
            raw = (512 * 1024 + 256 * 256) * 4
            self.assertGreaterEqual(unique_bytes(s), raw)
            self.assertLessEqual(unique_bytes(s), len(self.data))
            return s

    def test_compress_off_stores_raw_bytes(self):
        s = self.store(["--compress", "off"])
        self.assertEqual(ckptd.pick(s, "stored_bytes"), unique_bytes(s), s)

    def test_compress_auto_shrinks_compressible_tensors(self):
        s = self.store(["--compress", "auto"])
        # 2 MiB of zeros compress to almost nothing; the random part barely.
        self.assertLess(ckptd.pick(s, "stored_bytes"), len(self.data) - 2 * 1024 * 1024 + 20000, s)


def resident_pages(path):
    """(pages of the file in the page cache, pages of the file), by mincore(2)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    npages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap %s" % path)
        try:
            vec = ctypes.create_string_buffer(npages)
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore %s" % path)
            return sum(b & 1 for b in vec.raw), npages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


@unittest.skipIf(os.environ.get("CKPTD_IT_S3"), "blobs on S3: no blob files here")
class PageCache(unittest.TestCase):
    """A new blob's pages leave the page cache once it is flushed (storage/
    blob_fs.c): an epoch's checkpoint does not evict the training job's
    cached files. Reading it back caches it as usual."""

    def test_new_blobs_are_not_left_in_the_page_cache(self):
        import torch

        path = os.path.join(ckptd.work_dir(), "pagecache.pt")
        torch.save({"w": torch.randn(1024, 1024), "b": torch.randn(4096)}, path)
        with open(path, "rb") as f:
            data = f.read()
        with ckptd.Daemon(name="pagecache", args=["--compress", "off"]) as d:
            j = d.upload_ok("pc", data)
            blobs = os.path.join(d.data_dir, "blobs")
            files = [os.path.join(r, n) for r, _ds, ns in os.walk(blobs) for n in ns
                     if os.path.basename(r) != "tmp"]
            big = [p for p in files if os.path.getsize(p) >= 1024 * 1024 * 4]
            self.assertEqual(len(big), 1, files)
            cached, pages = resident_pages(big[0])
            self.assertEqual(cached, 0, "%d of %d pages of %s cached" % (cached, pages, big[0]))
            f = d.get("/models/pc/checkpoints/%d/file" % j["id"])
            self.assertEqual(ckptd.sha256_bytes(f.body), ckptd.sha256_bytes(data))
            cached, pages = resident_pages(big[0])
            self.assertGreater(cached, pages // 2)


if __name__ == "__main__":
    harness.main()
