#!/usr/bin/python3
"""Thin uploads and POST /blobs/missing (SPEC 3.1), frames built by hand.

For every file of the format tests (the seed files written by torch 1.13 at
test time, legacy included; tests/data/torch/valid; the torch 2.x compat
corpus; the safetensors files), a thin upload whose storages all go as R
frames is the same checkpoint as the plain upload of the file: /file gives
the same bytes, sha256, tensors and dedup are the same. Frames cut small and
empty L frames decode the same. A referenced blob the store lacks answers
409 missing_blobs naming exactly those blobs; an R frame that is not one
storage, an E hash that is not the file's, a stream without E, an unknown
frame kind, bytes after E answer 422/400; none of them stores anything.

Resuming: the storages of an upload cut off at 90% stay (--resume-grace),
invisible but for /blobs/missing, so its thin retry sends about a tenth of
the file; after the grace period they are gone; with --resume-grace 0
nothing is kept.
"""

import glob
import hashlib
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness, store, thin  # noqa: E402

THIN = {"Content-Type": "application/x-ckptd-thin"}


def format_files():
    """-> [(name, path)] of every parseable file of the format tests."""
    out = []
    d, meta = fixtures.seed()
    out += [("seed-" + n, os.path.join(d, n)) for n in sorted(meta)]
    out += [("valid-" + os.path.basename(p), p)
            for p in sorted(glob.glob(os.path.join(fixtures.TORCH_DATA, "valid", "*.pt")))]
    out += [("compat-" + n, p) for n, p, kind, _e in fixtures.compat() if kind != "broken"]
    st = os.path.join(ckptd.REPO, "tests", "data", "safetensors", "valid")
    out += [("st-" + os.path.basename(p), p)
            for p in sorted(glob.glob(os.path.join(st, "*.safetensors")))]
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def model_of(name):
    return fixtures.model_name(name)[:60]


class EveryFormatFile(ckptd.DaemonCase):
    NAME = "thin"

    def same_checkpoint(self, name, path, split=None):
        data = read(path)
        ranges = thin.storage_ranges(path)
        m = model_of(name) + ("-s" if split else "")
        a = self.d.upload_ok(m + "-a", data)
        r = self.d.upload(m + "-b", thin.frames(data, ranges, split=split), headers=THIN)
        self.assertEqual(r.status, 201, "%s: %r" % (name, r.body[:400]))
        b = r.json()
        c = self.d.upload_ok(m + "-c", data)
        self.assertEqual(b["sha256"], hashlib.sha256(data).hexdigest(), name)
        self.assertEqual((b["size"], b["format"]), (len(data), a["format"]), name)
        self.assertEqual(b["dedup"], c["dedup"], "%s: dedup as a plain upload's" % name)
        f = self.d.get("/models/%s/checkpoints/%d/file" % (m + "-b", b["id"]))
        self.assertEqual((f.status, hashlib.sha256(f.body).hexdigest()),
                         (200, a["sha256"]), name)
        ta = self.d.get_json("/models/%s/checkpoints/%d" % (m + "-a", a["id"]))["tensors"]
        tb = self.d.get_json("/models/%s/checkpoints/%d" % (m + "-b", b["id"]))["tensors"]
        self.assertEqual(ta, tb, name)
        return len(ranges)

    def test_a_thin_upload_is_the_same_checkpoint_as_the_plain_one(self):
        files = format_files()
        self.assertGreater(len(files), 30, "the format tests' files are all here")
        refs = 0
        for name, path in files:
            with self.subTest(name):
                refs += self.same_checkpoint(name, path)
        self.assertGreater(refs, 100, "R frames were sent")

    def test_frames_cut_small_decode_the_same(self):
        for name, path in format_files()[:6]:
            with self.subTest(name):
                self.same_checkpoint(name, path, split=7)


def sd_file(tmp, name, tensors):
    """A torch zip of tensors {name: tensor} -> path."""
    import torch

    p = os.path.join(tmp, name)
    torch.save(tensors, p)
    return p


class Refusals(ckptd.DaemonCase):
    NAME = "thin-bad"

    @classmethod
    def setUpClass(cls):
        import torch

        super().setUpClass()
        torch.manual_seed(7)
        cls.tmp = ckptd.work_dir()
        cls.w = {"a": torch.randn(64, 64), "b": torch.randn(32, 64), "c": torch.randn(100)}
        cls.path = sd_file(cls.tmp, "thin-base.pt", cls.w)
        cls.data = read(cls.path)
        cls.ranges = thin.storage_ranges(cls.path)
        cls.d.upload_ok("base", cls.data)

    def unchanged(self, before, what):
        self.assertEqual(self.d.stats(), before, "%s changed the store" % what)
        checks.error_json(self, self.d.get("/models/bad/checkpoints"), 404, what)

    def refused(self, body, status, what):
        before = self.d.stats()
        r = self.d.upload("bad", body, headers=THIN)
        j = checks.error_json(self, r, status, what)
        self.unchanged(before, what)
        return j

    def test_blobs_the_store_lacks_answer_409_naming_them(self):
        import torch

        w = dict(self.w, b=torch.randn(32, 64), d=torch.randn(50, 50))
        p = sd_file(self.tmp, "thin-new.pt", w)
        data, ranges = read(p), thin.storage_ranges(p)
        want = sorted(hashlib.sha256(data[o:o + n]).hexdigest() for o, n in ranges
                      if hashlib.sha256(data[o:o + n]).hexdigest()
                      not in {hashlib.sha256(self.data[a:a + m]).hexdigest()
                              for a, m in self.ranges})
        self.assertEqual(len(want), 2)
        j = self.refused(thin.frames(data, ranges), 409, "references to new blobs")
        self.assertEqual(j["error"], "missing_blobs")
        self.assertEqual(sorted(j["missing"]), want)
        # sending those as literal bytes works
        have = lambda i: hashlib.sha256(data[ranges[i][0]:sum(ranges[i])]).hexdigest() not in want
        r = self.d.upload("bad2", thin.frames(data, ranges, refer=have), headers=THIN)
        self.assertEqual(r.status, 201, r.body[:300])
        self.assertEqual(r.json()["sha256"], hashlib.sha256(data).hexdigest())
        self.d.request("DELETE", "/models/bad2")

    def test_an_r_frame_of_the_wrong_size_is_a_missing_blob(self):
        off, n = self.ranges[0]
        body = (thin.frame(b"L", off, self.data[:off]) +
                thin.frame(b"R", n - 4, hashlib.sha256(self.data[off:off + n]).digest()) +
                thin.frame(b"L", len(self.data) - off - n + 4, self.data[off + n - 4:]) +
                thin.frame(b"E", 32, hashlib.sha256(self.data).digest()))
        j = self.refused(body, 409, "an R frame with the wrong size")
        self.assertEqual(j["missing"], [hashlib.sha256(self.data[off:off + n]).hexdigest()])

    def test_an_r_frame_that_is_not_one_storage_is_422(self):
        # blob X = the bytes of two neighbouring records' data plus what
        # lies between them; stored by a file whose one tensor holds them
        import torch

        (o1, n1), (o2, n2) = self.ranges[0], self.ranges[1]
        span = self.data[o1:o2 + n2]
        self.assertEqual(len(span) % 4, 0)
        t = torch.frombuffer(bytearray(span), dtype=torch.float32)
        self.d.upload_ok("span", read(sd_file(self.tmp, "thin-span.pt", {"x": t})))
        body = (thin.frame(b"L", o1, self.data[:o1]) +
                thin.frame(b"R", len(span), hashlib.sha256(span).digest()) +
                thin.frame(b"L", len(self.data) - o2 - n2, self.data[o2 + n2:]) +
                thin.frame(b"E", 32, hashlib.sha256(self.data).digest()))
        j = self.refused(body, 422, "an R frame over two storages")
        self.assertIn("not one storage", j["message"])

    def test_an_e_hash_that_is_not_the_files_is_422(self):
        j = self.refused(thin.frames(self.data, self.ranges, end=bytes(32)), 422, "a wrong E hash")
        self.assertIn("SHA-256", j["message"])

    def test_malformed_streams_are_400_saying_where(self):
        full = thin.frames(self.data, self.ranges)
        cases = [
            ("no E frame", full[:-41], "without its E frame"),
            ("cut inside a frame", full[:-20], "inside a frame"),
            ("an unknown kind", b"Z" + full[1:], "none of"),
            ("bytes after E", full + b"L", "after the E frame"),
            ("an E frame of length 31", full[:-41] + thin.frame(b"E", 31, bytes(31)), "32"),
            ("an empty body", b"", None),
        ]
        for what, body, needle in cases:
            with self.subTest(what):
                j = self.refused(body, 400, what)
                if needle:
                    self.assertIn(needle, j["message"])


@unittest.skipIf(os.environ.get("CKPTD_IT_S3"), "removes a blob file by hand")
class LostBlob(ckptd.DaemonCase):
    """A thin upload's referenced storages are not written to the server's
    spool: their bytes are read from the store once, for the file's
    SHA-256. A blob the index names but the blob directory lost (damage
    from outside) answers 409 missing_blobs, nothing is stored under its
    name from the upload, and a plain upload of the file puts it back."""

    NAME = "thin-lost"
    ARGS = ("--compress", "off")

    def test_a_blob_lost_from_the_directory_is_missing_not_rewritten(self):
        import torch

        torch.manual_seed(11)
        path = sd_file(ckptd.work_dir(), "thin-lost.pt",
                       {"a": torch.randn(128, 64), "b": torch.randn(64, 64)})
        data, ranges = read(path), thin.storage_ranges(path)
        self.d.upload_ok("lost", data)
        off, n = ranges[0]
        h = hashlib.sha256(data[off:off + n]).hexdigest()
        blob = os.path.join(self.d.data_dir, "blobs", h[:2], h[2:])
        os.unlink(blob)
        r = self.d.upload("lost", thin.frames(data, ranges), headers=THIN)
        j = checks.error_json(self, r, 409, "a reference to a lost blob")
        self.assertEqual((j["error"], j["missing"]), ("missing_blobs", [h]))
        self.assertFalse(os.path.exists(blob), "the lost blob was written from the upload")
        self.assertEqual(len(self.d.get_json("/models/lost/checkpoints")["checkpoints"]), 1)
        again = self.d.upload_ok("lost", data)
        self.assertEqual(again["sha256"], hashlib.sha256(data).hexdigest())
        with open(blob, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), h)


class BlobsMissing(ckptd.DaemonCase):
    NAME = "blobs-missing"

    def ask(self, body, status=200):
        r = self.d.request("POST", "/blobs/missing", body=body,
                           headers={"Content-Type": "application/json"})
        if status != 200:
            return checks.error_json(self, r, status, "POST /blobs/missing")
        self.assertEqual(r.status, 200, r.body[:300])
        return r.json()

    def test_it_names_exactly_the_blobs_the_store_lacks(self):
        import json

        import torch

        torch.manual_seed(3)
        p = sd_file(ckptd.work_dir(), "bm.pt", {"w": torch.randn(40, 40), "v": torch.randn(7)})
        data = read(p)
        self.d.upload_ok("bm", data)
        have = [(hashlib.sha256(data[o:o + n]).hexdigest(), n) for o, n in thin.storage_ranges(p)]
        absent = hashlib.sha256(b"never stored").hexdigest()
        blobs = [{"sha256": h, "size": n} for h, n in have]
        blobs += [{"sha256": absent, "size": 12},
                  {"sha256": have[0][0], "size": have[0][1] + 1}]  # wrong size: missing
        j = self.ask(json.dumps({"blobs": blobs}).encode())
        self.assertEqual(j, {"missing": [absent, have[0][0]]})
        self.assertEqual(self.ask(b'{"blobs": []}'), {"missing": []})

    def test_a_long_question_is_answered_in_order_across_batches(self):
        import json

        import torch

        torch.manual_seed(4)
        p = sd_file(ckptd.work_dir(), "bm-long.pt", {"w%d" % i: torch.randn(30, 30) for i in range(3)})
        data = read(p)
        self.d.upload_ok("bm-long", data)
        have = [(hashlib.sha256(data[o:o + n]).hexdigest(), n) for o, n in thin.storage_ranges(p)]
        # 25,000 hashes (PostgreSQL asks 10,000 at a time), the stored ones
        # at both ends and across the batch boundaries, twice each
        blobs = [{"sha256": "%064x" % i, "size": 4} for i in range(25000)]
        for k, pos in enumerate((0, 9999, 10000, 19999, 24999, 17)):
            h, n = have[k % len(have)]
            blobs[pos] = {"sha256": h, "size": n}
        want = [b["sha256"] for b in blobs if b["sha256"] not in {h for h, _ in have}]
        j = self.ask(json.dumps({"blobs": blobs}).encode())
        self.assertEqual(len(j["missing"]), 25000 - 6)
        self.assertEqual(j["missing"], want)

    def test_bad_requests_are_400(self):
        import json

        for what, body in [("not JSON", b"{"), ("no list", b'{"blobs": 3}'),
                           ("short hash", b'{"blobs": [{"sha256": "ab", "size": 1}]}'),
                           ("negative size",
                            json.dumps({"blobs": [{"sha256": "a" * 64, "size": -1}]}).encode()),
                           ("too many", json.dumps(
                               {"blobs": [{"sha256": "%064x" % i, "size": 1}
                                          for i in range(100001)]}).encode())]:
            with self.subTest(what):
                self.ask(body, 400)


class Resume(ckptd.DaemonCase):
    NAME = "thin-resume"
    ARGS = ("--resume-grace", "4")

    @classmethod
    def setUpClass(cls):
        import torch

        super().setUpClass()
        cls.tmp = ckptd.work_dir()
        torch.manual_seed(11)
        # 40 storages of 128 KiB (the scanner follows records of 64 KiB and up)
        cls.w = {"layer%d.weight" % i: torch.randn(128, 256) for i in range(40)}
        cls.path = sd_file(cls.tmp, "resume.pt", cls.w)
        cls.data = read(cls.path)
        cls.ranges = thin.storage_ranges(cls.path)
        cls.blobs = [{"sha256": hashlib.sha256(cls.data[o:o + n]).hexdigest(), "size": n}
                     for o, n in cls.ranges]

    def missing(self):
        r = self.d.request("POST", "/blobs/missing", body=json.dumps({"blobs": self.blobs}).encode(),
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r.body[:300])
        return set(r.json()["missing"])

    def wait_missing(self, most, what, timeout=20):
        """Waits for the cut upload to be taken care of (the server does it
        when it sees the connection closed): at most `most` blobs missing."""
        deadline = time.time() + timeout
        while True:
            m = self.missing()
            if len(m) <= most or time.time() > deadline:
                self.assertLessEqual(len(m), most, "%s: %d of %d missing" % (what, len(m), len(self.blobs)))
                return m
            time.sleep(0.1)

    def test_1_a_retry_after_a_cut_at_90_percent_sends_about_a_tenth(self):
        before = self.d.stats()
        self.assertEqual(len(self.missing()), 40)
        thin.cut_upload(self.d, "resume", self.data, 0.9)
        # what arrived whole: storages ending below 90% of the file
        whole = sum(1 for o, n in self.ranges if o + n <= 0.9 * len(self.data))
        self.assertGreaterEqual(whole, 35)
        missing = self.wait_missing(40 - whole, "after the cut")
        self.assertEqual(self.d.stats(), before, "a cut upload is no checkpoint, counts no blob")
        checks.error_json(self, self.d.get("/models/resume/checkpoints"), 404, "no model")
        # the retry: the kept storages as R frames, the rest as bytes
        body = thin.frames(self.data, self.ranges, refer=lambda i: self.blobs[i]["sha256"] not in missing)
        self.assertLessEqual(len(body), 0.15 * len(self.data), "the retry sends at most 15%")
        r = self.d.upload("resume", body, headers=THIN)
        self.assertEqual(r.status, 201, r.body[:300])
        b = r.json()
        self.assertEqual(b["sha256"], hashlib.sha256(self.data).hexdigest())
        plain = self.d.upload_ok("resume-plain", self.data)
        self.assertEqual(b["dedup"]["new_tensors"], 40, "the kept blobs were new to the store")
        self.assertEqual(plain["dedup"]["new_tensors"], 0)
        f = self.d.get("/models/resume/checkpoints/%d/file" % b["id"])
        self.assertEqual(hashlib.sha256(f.body).hexdigest(), b["sha256"])

    def test_2_what_no_retry_takes_up_goes_when_the_grace_ends(self):
        import torch

        w = {k: v + 1 for k, v in self.w.items()}
        p = sd_file(self.tmp, "resume2.pt", w)
        data = read(p)
        mine = {hashlib.sha256(data[o:o + n]).hexdigest() for o, n in thin.storage_ranges(p)}
        files_before, _ = store.blob_files(self.d.data_dir)
        thin.cut_upload(self.d, "resume2", data, 0.9)
        deadline = time.time() + 20
        while len(mine & store.blob_files(self.d.data_dir)[0]) < 35 and time.time() < deadline:
            time.sleep(0.1)
        kept = mine & store.blob_files(self.d.data_dir)[0]
        self.assertGreaterEqual(len(kept), 35, "the cut upload's storages are kept")
        time.sleep(4.5)  # --resume-grace 4
        # the next write ends what is due
        self.d.upload_ok("other", sd_file(self.tmp, "small.pt", {"x": torch.randn(3)}))
        files_after, _ = store.blob_files(self.d.data_dir)
        self.assertEqual(mine & files_after, set(), "kept blobs nobody took up are gone")
        self.assertTrue(files_before <= files_after, "nothing else went")


class NoResume(ckptd.DaemonCase):
    NAME = "thin-no-resume"
    ARGS = ("--resume-grace", "0")

    def test_with_no_grace_a_cut_upload_keeps_nothing(self):
        import torch

        torch.manual_seed(12)
        p = sd_file(ckptd.work_dir(), "nr.pt", {"w%d" % i: torch.randn(256, 256) for i in range(8)})
        data = read(p)
        thin.cut_upload(self.d, "nr", data, 0.9)
        time.sleep(1.0)
        blobs = [{"sha256": hashlib.sha256(data[o:o + n]).hexdigest(), "size": n}
                 for o, n in thin.storage_ranges(p)]
        r = self.d.request("POST", "/blobs/missing", body=json.dumps({"blobs": blobs}).encode(),
                           headers={"Content-Type": "application/json"})
        self.assertEqual(len(r.json()["missing"]), 8)
        self.assertEqual(store.blob_files(self.d.data_dir)[0], set())


if __name__ == "__main__":
    harness.main()
