#!/usr/bin/python3
"""Uploads real torch files and checks what ckptd makes of them (SPEC 2, 3, 4).

Every zip checkpoint (the tutorial seed files written by torch 1.13 at test
time, and every file of tests/data/compat/torch2/ written by torch 2.x) and
every legacy one (torch.save(..., _use_new_zipfile_serialization=False): the
compat corpus's, tests/data/torch/valid/legacy_*.pt, the seed's) must upload
with 201 and its format, download byte for byte (SHA-256, ETag,
Content-Disposition) and list exactly the tensors torch.load shows. The zip
and the legacy save of the same tensors share their blobs. Broken files answer
415/422 and damaged legacy files 422 saying where, leaving the store
unchanged. Epoch, step and loss come from the query or form, else from the
checkpoint's top-level dict. Uploads work as raw POST, PUT and
multipart/form-data, also through curl.
"""

import os
import subprocess
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

D = None


def setUpModule():
    global D
    D = ckptd.Daemon(name="formats").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def round_trip(tc, model, path, exp, fmt="torch-zip"):
    with open(path, "rb") as f:
        data = f.read()
    r = D.upload(model, data)
    tc.assertEqual(r.status, 201, "upload %s: %r" % (os.path.basename(path), r))
    j = r.json()
    checks.checkpoint_json(tc, j, model)
    tc.assertEqual(j["format"], fmt)
    tc.assertEqual(j["size"], len(data))
    tc.assertEqual(j["sha256"], ckptd.sha256_bytes(data))
    tc.assertEqual(j["tensor_count"], len(exp["tensors"]))
    d = checks.dedup_json(tc, j)
    tc.assertEqual(d["bytes"], exp["storage_bytes"], "dedup.bytes vs torch's storage bytes")
    loc = r.header("Location")
    tc.assertTrue(loc, "no Location header")
    tc.assertTrue(loc.rstrip("/").endswith("/models/%s/checkpoints/%d" % (model, j["id"])),
                  "Location %r" % loc)
    cid = j["id"]

    f = D.get("/models/%s/checkpoints/%d/file" % (model, cid))
    tc.assertEqual(f.status, 200, f)
    tc.assertEqual(len(f.body), len(data))
    tc.assertEqual(ckptd.sha256_bytes(f.body), ckptd.sha256_bytes(data), "download differs")
    tc.assertEqual(checks.etag_value(f.header("ETag")), j["sha256"], "ETag")
    fname = checks.disposition_filename(f.header("Content-Disposition"))
    tc.assertTrue(fname, "Content-Disposition %r names no file" % f.header("Content-Disposition"))

    v = D.get_json("/models/%s/checkpoints/%d" % (model, cid))
    checks.checkpoint_json(tc, v, model)
    for k in ("id", "size", "sha256", "tensor_count", "format", "created_at"):
        tc.assertEqual(v[k], j[k], "single view's %s differs from the upload answer" % k)
    tc.assertIn("tensors", v)
    for t in v["tensors"]:
        checks.tensor_json(tc, t)
    tc.assertEqual(fixtures.tensor_triples(v["tensors"]), fixtures.expected_triples(exp))
    got = {t["path"]: [t["strides"], t["offset"]] for t in v["tensors"]}
    tc.assertEqual(got, exp["layout"], "strides/storage offsets differ from torch's")
    for k in ("epoch", "step"):
        tc.assertEqual(v[k], exp[k], k)
    if exp["loss"] is None:
        tc.assertIsNone(v["loss"])
    else:
        tc.assertAlmostEqual(v["loss"], exp["loss"], places=6)
    return j


class SeedRoundTrip(unittest.TestCase):
    """Files written by torch 1.13 at test time (tests/data/make_seed.py)."""


class CompatRoundTrip(unittest.TestCase):
    """Files written by torch 2.x (tests/data/compat/torch2)."""

    def test_the_corpus_is_in_the_repository(self):
        kinds = [k for _, _, k, _ in _compat]
        self.assertGreaterEqual(kinds.count("ok"), 26, "corpus at %s" % fixtures.compat_dir())
        self.assertGreaterEqual(len(kinds) - kinds.count("ok"), 5)


class LegacyRoundTrip(unittest.TestCase):
    """Legacy files (torch.save before 1.6, or with _use_new_zipfile_serialization=False)."""

    def test_every_kind_of_legacy_file_is_here(self):
        names = [n for n, _, _ in _legacy]
        self.assertGreaterEqual(len(names), 16)
        for n in ("simple_legacy.pt", "legacy_shared_storage.pt", "legacy_uncloned_views.pt",
                  "legacy_with_offsets.pt", "legacy_113.pt", "legacy_training_checkpoint.pt"):
            self.assertIn(n, names)


class LegacyDedup(unittest.TestCase):
    """The zip save and the legacy save of the same tensors are the same blobs."""

    def save_both(self, obj):
        import tempfile

        import torch

        d = tempfile.mkdtemp(dir=ckptd.work_dir())
        z, l = os.path.join(d, "zip.pt"), os.path.join(d, "legacy.pt")
        torch.save(obj, z)
        torch.save(obj, l, _use_new_zipfile_serialization=False)
        return z, l

    def blobs(self, model, cid):
        v = D.get_json("/models/%s/checkpoints/%d" % (model, cid))
        return {t["path"]: (t["blob"], t["offset"], t["strides"]) for t in v["tensors"]}

    def check(self, model, first, second, first_fmt, second_fmt):
        a = D.upload_ok(model, first)
        b = D.upload_ok(model, second)
        self.assertEqual((a["format"], b["format"]), (first_fmt, second_fmt))
        da, db = checks.dedup_json(self, a), checks.dedup_json(self, b)
        self.assertGreater(da["new_bytes"], 0)
        self.assertEqual(da["new_bytes"], da["bytes"])
        self.assertEqual(db["bytes"], da["bytes"])
        self.assertEqual(db["new_bytes"], 0, "the %s save added bytes: %r" % (second_fmt, db))
        self.assertEqual(db["new_tensors"], 0)
        self.assertEqual(self.blobs(model, a["id"]), self.blobs(model, b["id"]))

    def test_legacy_save_after_the_zip_save_adds_no_bytes(self):
        import torch

        g = torch.Generator().manual_seed(11)
        w = torch.randn(64, 32, generator=g)
        sd = {"w": w, "w_t": w.t(), "b": torch.randn(32, generator=g).double(),
              "steps": torch.arange(10), "half": torch.randn(5, generator=g).half()[1:]}
        z, l = self.save_both(sd)
        self.check("dedup-zip-then-legacy", z, l, "torch-zip", "torch-legacy")

    def test_zip_save_after_the_legacy_save_adds_no_bytes(self):
        import torch

        g = torch.Generator().manual_seed(12)
        sd = {"emb": torch.randn(100, 8, generator=g), "flags": torch.rand(7, generator=g) > 0.5,
              "empty": torch.zeros(0, 3)}
        z, l = self.save_both(sd)
        self.check("dedup-legacy-then-zip", l, z, "torch-legacy", "torch-zip")


class Rejections(unittest.TestCase):
    """Broken and damaged files: 415/422 JSON, nothing stored."""

    def test_rejected_uploads_leave_the_store_unchanged(self):
        files = [p for _, p, k, _ in fixtures.compat() if k == "broken"]
        files += _damaged_legacy
        self.assertGreaterEqual(len(files), 5)
        before = D.stats()
        models_before = D.get_json("/models")
        for p in files:
            r = D.upload("rejected-" + fixtures.model_name(p), p)
            self.assertIn(r.status, (415, 422), "%s: %r" % (p, r))
        self.assertEqual(D.stats(), before, "/stats changed after rejected uploads")
        self.assertEqual(D.get_json("/models"), models_before, "/models changed")
        for p in files:
            r = D.get("/models/rejected-%s/checkpoints" % fixtures.model_name(p))
            checks.error_json(self, r, 404, "model of a rejected upload")

    def test_a_damaged_legacy_file_answers_422_saying_what_and_where(self):
        path = os.path.join(fixtures.TORCH_DATA, "invalid", "legacy_truncated_storage.pt")
        r = D.upload("legacy-cut", path)
        j = checks.error_json(self, r, 422, "a legacy file cut short")
        self.assertIn("storage 2", j["message"])
        self.assertIn("offset 430", j["message"])

    def test_a_pickle_that_is_not_torch_answers_415_naming_the_formats(self):
        import pickle

        r = D.upload("not-torch", pickle.dumps({"a": [1, 2, 3]}, protocol=2))
        j = checks.error_json(self, r, 415, "a plain pickle")
        self.assertIn("legacy", j["message"])
        self.assertIn("safetensors", j["message"])

    def test_unknown_format_message_names_the_formats_ckptd_reads(self):
        r = D.upload("unknown-msg", b"GIF89a" + bytes(200))
        j = checks.error_json(self, r, 415, "a GIF")
        msg = j["message"].lower()
        self.assertIn("safetensors", msg, "415 message should name the formats ckptd reads")
        self.assertTrue("zip" in msg or "torch" in msg, j["message"])


def _add_round_trip(cls, name, path, exp):
    model = fixtures.model_name(name)

    def test(self):
        round_trip(self, model, path, exp)

    test.__name__ = "test_round_trip_" + model.replace("-", "_").replace(".", "_")
    setattr(cls, test.__name__, test)


def _add_rejection(name, path, kind):
    model = "rej-" + fixtures.model_name(name)

    def test(self):
        r = D.upload(model, path)
        want = {"damaged": (422,), "not_torch": (415,)}.get(kind, (415, 422))
        j = checks.error_json(self, r, want, "upload of %s (%s)" % (name, kind))
        if kind == "damaged":
            self.assertIn("offset", j["message"], "a 422 names where")
        r = D.get("/models/%s/checkpoints" % model)
        checks.error_json(self, r, 404, "model after a rejected upload")

    test.__name__ = "test_%s_file_%s_is_rejected" % (kind, model.replace("-", "_").replace(".", "_"))
    setattr(Rejections, test.__name__, test)


def _add_legacy_round_trip(name, path, exp):
    model = "legacy-" + fixtures.model_name(name)

    def test(self):
        round_trip(self, model, path, exp, "torch-legacy")

    test.__name__ = "test_round_trip_" + model.replace("-", "_").replace(".", "_")
    setattr(LegacyRoundTrip, test.__name__, test)


_seed_dir, _seed_meta = fixtures.seed()
for _name in sorted(_seed_meta):
    if not _seed_meta[_name]["legacy"]:
        _add_round_trip(SeedRoundTrip, "seed-" + _name, os.path.join(_seed_dir, _name),
                        _seed_meta[_name])
_compat = fixtures.compat()
for _name, _path, _kind, _exp in _compat:
    if _kind == "ok":
        _add_round_trip(CompatRoundTrip, "compat-" + _name, _path, _exp)
    elif _kind == "broken":
        _add_rejection(_name, _path, _kind)
_legacy = fixtures.legacy()
for _name, _path, _exp in _legacy:
    _add_legacy_round_trip(_name, _path, _exp)
_invalid_dir = os.path.join(fixtures.TORCH_DATA, "invalid")
_damaged_legacy = [os.path.join(_invalid_dir, n) for n in sorted(os.listdir(_invalid_dir))
                   if n.startswith("legacy_")]
for _path in _damaged_legacy:
    _name = os.path.basename(_path)
    _add_rejection(_name, _path, "not_torch" if _name == "legacy_bad_magic.pt" else "damaged")


class TensorValues(unittest.TestCase):
    """GET .../tensors/{path} serves what torch.load shows (raw and npy)."""


def _tensor_bytes(t):
    import torch

    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def check_tensor_values(tc, model, path):
    import io

    import numpy
    import torch

    from lib import expect

    obj = torch.load(path, map_location="cpu")
    j = D.upload_ok(model, path)
    base = "/models/%s/checkpoints/%d/tensors/" % (model, j["id"])
    tensors = {}

    def collect(o, prefix):
        if torch.is_tensor(o):
            tensors[prefix] = o
        elif isinstance(o, dict):
            for k, v in o.items():
                collect(v, prefix + "/" + expect.ptr_escape(k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                collect(v, prefix + "/" + str(i))

    collect(obj, "")
    tc.assertTrue(tensors)
    for p, t in tensors.items():
        url = base + urllib.parse.quote(p[1:], safe="/~")
        with tc.subTest(tensor=p):
            r = D.get(url + "?format=raw")
            tc.assertEqual(r.status, 200, "%s: %r" % (url, r))
            tc.assertEqual(r.body, _tensor_bytes(t), "raw bytes of %s" % p)
            tc.assertEqual(r.header("X-Dtype"), expect.dtype_name(t.dtype))
            if t.dtype == torch.bfloat16:
                continue
            r = D.get(url)
            tc.assertEqual(r.status, 200, "%s: %r" % (url, r))
            a = numpy.load(io.BytesIO(r.body), allow_pickle=False)
            want = t.detach().numpy()
            tc.assertEqual(a.dtype, want.dtype, p)
            tc.assertEqual(a.shape, want.shape, p)
            tc.assertTrue(numpy.array_equal(a, want, equal_nan=a.dtype.kind in "fc"), p)


def _add_values(name, path):
    model = "val-" + fixtures.model_name(name)

    def test(self):
        check_tensor_values(self, model, path)

    test.__name__ = "test_values_" + model.replace("-", "_").replace(".", "_")
    setattr(TensorValues, test.__name__, test)


for _name in ("views_and_tied.pt", "pointer_escapes.pt", "dtypes_113.pt", "tutorial_checkpoint.pt"):
    _add_values("seed-" + _name, os.path.join(_seed_dir, _name))
for _name, _path, _exp in _legacy:
    if not _exp["views"] and _name != "legacy_whole_model.pt":
        _add_values("legacy-" + _name, _path)
for _name, _path, _kind, _exp in _compat:
    if _kind == "ok":
        _add_values("compat-" + _name, _path)


class Metadata(unittest.TestCase):
    """SPEC 2: epoch, step and loss."""

    def meta(self, j):
        return (j["epoch"], j["step"], j["loss"])

    def upload_meta(self, model, name, params=None):
        j = D.upload_ok(model, fixtures.seed_path(name), params)
        v = D.get_json("/models/%s/checkpoints/%d" % (model, j["id"]))
        self.assertEqual(self.meta(v), self.meta(j), "stored metadata differs from upload answer")
        return j

    def test_epoch_step_loss_come_from_the_query_string(self):
        j = self.upload_meta("meta-query", "tutorial_state_dict.pt",
                             {"epoch": 3, "step": 1200, "loss": "0.125"})
        self.assertEqual(self.meta(j), (3, 1200, 0.125))

    def test_query_overrides_the_checkpoints_own_values(self):
        j = self.upload_meta("meta-override", "meta_tensor_loss.pt",
                             {"epoch": 9, "step": 9000, "loss": "1.5"})
        self.assertEqual(self.meta(j), (9, 9000, 1.5))

    def test_general_checkpoint_gives_epoch_5_and_no_loss_for_a_loss_module(self):
        j = self.upload_meta("meta-general", "tutorial_checkpoint.pt")
        self.assertEqual(self.meta(j), (5, None, None))

    def test_loss_from_a_0d_tensor_and_step_from_the_checkpoint(self):
        j = self.upload_meta("meta-tensor-loss", "meta_tensor_loss.pt")
        self.assertEqual(j["epoch"], 3)
        self.assertEqual(j["step"], 300)
        self.assertAlmostEqual(j["loss"], 0.25, places=6)

    def test_global_step_and_val_loss_are_read(self):
        j = self.upload_meta("meta-global-step", "meta_global_step.pt")
        self.assertEqual(self.meta(j), (7, 700, 0.375))

    def test_epoch_step_and_0d_loss_tensor_from_a_legacy_checkpoint(self):
        path = os.path.join(fixtures.TORCH_DATA, "valid", "legacy_training_checkpoint.pt")
        j = D.upload_ok("meta-legacy", path)
        self.assertEqual(j["format"], "torch-legacy")
        self.assertEqual(self.meta(j), (7, 700, 0.375))

    def test_float_loss_from_a_torch2_checkpoint(self):
        path = os.path.join(fixtures.compat_dir(), "checkpoint.pt")
        j = D.upload_ok("meta-compat", path)
        self.assertEqual(j["epoch"], 42)
        self.assertAlmostEqual(j["loss"], 0.123, places=9)

    def test_partial_query_fills_the_rest_from_the_checkpoint(self):
        j = self.upload_meta("meta-partial", "meta_global_step.pt", {"loss": "2.5"})
        self.assertEqual(self.meta(j), (7, 700, 2.5))

    def test_plain_state_dict_has_no_epoch_step_or_loss(self):
        j = self.upload_meta("meta-none", "tutorial_state_dict.pt")
        self.assertEqual(self.meta(j), (None, None, None))

    def test_download_name_carries_model_and_epoch(self):
        j = D.upload_ok("meta-name", fixtures.seed_path("tutorial_checkpoint.pt"))
        f = D.request("HEAD", "/models/meta-name/checkpoints/%d/file" % j["id"])
        self.assertEqual(f.status, 200)
        fname = checks.disposition_filename(f.header("Content-Disposition"))
        self.assertEqual(fname, "meta-name-epoch5.pth")


class UploadMethods(unittest.TestCase):
    """Raw POST, PUT, multipart/form-data; the curl command lines SPEC 3 names."""

    FIELDS = [("epoch", "4"), ("step", "44"), ("loss", "0.75"), ("run", "mp-run"),
              ("tag", "alpha"), ("tag", "beta"), ("metric.acc", "0.5"), ("pin", "1")]

    def check_fields(self, j, model):
        checks.checkpoint_json(self, j, model, run="mp-run")
        self.assertEqual((j["epoch"], j["step"], j["loss"]), (4, 44, 0.75))
        self.assertEqual(sorted(j["tags"]), ["alpha", "beta"])
        self.assertEqual(j["metrics"], {"acc": 0.5})
        self.assertIs(j["pinned"], True)

    def check_download(self, model, cid, data):
        f = D.get("/models/%s/checkpoints/%d/file" % (model, cid))
        self.assertEqual(f.status, 200, f)
        self.assertEqual(ckptd.sha256_bytes(f.body), ckptd.sha256_bytes(data))

    def test_put_raw_body_is_an_upload(self):
        data = fixtures.seed_bytes("tutorial_optimizer.pt")
        r = D.upload("up-put", data, {"epoch": 1}, method="PUT")
        self.assertEqual(r.status, 201, r)
        j = r.json()
        self.assertEqual(j["epoch"], 1)
        self.check_download("up-put", j["id"], data)

    def multipart(self, model, parts):
        ctype, body = ckptd.multipart(parts)
        r = D.request("POST", "/models/%s/checkpoints" % model, body=body,
                      headers={"Content-Type": ctype})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def test_multipart_with_fields_before_the_file(self):
        data = fixtures.seed_bytes("tutorial_state_dict.pt")
        parts = [("field", f) for f in self.FIELDS] + [("file", ("file", "sd.pt", data))]
        j = self.multipart("up-mp1", parts)
        self.check_fields(j, "up-mp1")
        self.assertEqual(j["sha256"], ckptd.sha256_bytes(data))
        self.check_download("up-mp1", j["id"], data)

    def test_multipart_with_fields_after_the_file(self):
        data = fixtures.seed_bytes("tutorial_state_dict.pt")
        parts = [("file", ("file", "sd.pt", data))] + [("field", f) for f in self.FIELDS]
        j = self.multipart("up-mp2", parts)
        self.check_fields(j, "up-mp2")
        self.check_download("up-mp2", j["id"], data)
        v = D.get_json("/models/up-mp2/checkpoints/%d" % j["id"])
        self.check_fields(v, "up-mp2")

    def curl(self, *args):
        url = "http://127.0.0.1:%d/api/v1" % D.port
        cmd = ["curl", "-sS", "-w", "\n%{http_code}"] + [a.replace("URL", url) for a in args]
        p = subprocess.run(cmd, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        body, _, code = p.stdout.rpartition(b"\n")
        return int(code), body

    def test_curl_data_binary_upload(self):
        path = fixtures.seed_path("tutorial_checkpoint.pt")
        code, body = self.curl("--data-binary", "@" + path,
                               "URL/models/up-curl/checkpoints?epoch=6&loss=0.5&run=r1")
        self.assertEqual(code, 201, body)
        r = ckptd.Response(code, {}, body).json()
        self.assertEqual((r["epoch"], r["loss"], r["run"]), (6, 0.5, "r1"))
        self.assertEqual(r["sha256"], ckptd.sha256_file(path))

    def test_curl_upload_file_put(self):
        path = fixtures.seed_path("tutorial_model.pt")
        code, body = self.curl("-T", path, "URL/models/up-curl-t/checkpoints?epoch=2")
        self.assertEqual(code, 201, body)
        r = ckptd.Response(code, {}, body).json()
        self.assertEqual(r["sha256"], ckptd.sha256_file(path))
        self.assertEqual(r["epoch"], 2)

    def test_curl_form_upload(self):
        path = fixtures.seed_path("tutorial_optimizer.pt")
        code, body = self.curl("-F", "file=@" + path, "-F", "epoch=8", "-F", "loss=0.25",
                               "-F", "metric.acc=0.875", "URL/models/up-curl-f/checkpoints")
        self.assertEqual(code, 201, body)
        r = ckptd.Response(code, {}, body).json()
        self.assertEqual((r["epoch"], r["loss"], r["metrics"]), (8, 0.25, {"acc": 0.875}))
        self.assertEqual(r["sha256"], ckptd.sha256_file(path))


if __name__ == "__main__":
    harness.main()
