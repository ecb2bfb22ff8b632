#!/usr/bin/python3
"""The outputs that open a checkpoint (SPEC 3 state_dict, tensors, diff; SPEC 4).

For every zip file of tests/data/compat/torch2/ (torch 2.x) and of the seed
(torch 1.13, tests/data/make_seed.py), and every legacy file
(lib/fixtures.legacy(); their state_dict is a new zip file, its tensors equal
torch.load's bit for bit): the default state_dict loads with
torch.load(weights_only=True) and holds exactly the tensors torch.load of the
original shows below the default root (dtype, shape, values with NaN where
NaN, strides, storage offsets, the same names sharing one storage); where no
default root exists the answer is 422 naming the candidates, and each
candidate works as an explicit root=. The format=safetensors output of each
parses with the strict reader of lib/outputs.py and equals torch's tensors.
Then: the tutorial's general checkpoint goes into
TheModelClass().load_state_dict(strict=True); keys= globs; a hand-written
safetensors upload round-trips byte for byte and converts to pth; damaged
safetensors headers answer 4xx JSON and store nothing; one tensor as npy per
dtype numpy has, bfloat16/float8 as raw; JSON Pointer escapes in tensor
URLs; the diff of two epochs.
"""

import io
import json
import os
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, expect, fixtures, harness, outputs  # noqa: E402

import numpy  # noqa: E402
import torch  # noqa: E402

# The seed's whole-module file pickles __main__.TheModelClass: make it findable.
sys.path.insert(0, os.path.join(ckptd.REPO, "tests", "data"))
from make_seed import TheModelClass  # noqa: E402

sys.modules["__main__"].TheModelClass = TheModelClass

D = None
ST_INVALID = os.path.join(ckptd.REPO, "tests", "data", "safetensors", "invalid")
ST_VALID = os.path.join(ckptd.REPO, "tests", "data", "safetensors", "valid")


def setUpModule():
    global D
    D = ckptd.Daemon(name="outputs").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def q(s):
    return urllib.parse.quote(s, safe="")


def load_pth(tc, body, what):
    try:
        sd = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:
        raise AssertionError("%s: torch.load(weights_only=True) failed: %s (%d bytes, starts %r)"
                             % (what, e, len(body), body[:64]))
    tc.assertIsInstance(sd, dict, "%s: loaded a %s, not a dict" % (what, type(sd)))
    return sd


def check_pth(tc, body, want, what, bitwise=False):
    """body is a pth holding exactly want {name: tensor}, views and sharing
    kept; with bitwise, every tensor's bytes equal too (NaN payloads, -0.0)."""
    sd = load_pth(tc, body, what)
    tc.assertEqual(body[:4], b"PK\x03\x04", "%s: not a zip file" % what)
    tc.assertEqual(sorted(sd), sorted(want), "%s: names" % what)
    for name, t in want.items():
        outputs.assert_tensor(tc, sd[name], t, "%s: %s" % (what, name))
        if bitwise:
            tc.assertEqual(outputs.raw_bytes(sd[name]), outputs.raw_bytes(t),
                           "%s: %s bytes" % (what, name))
    tc.assertEqual(outputs.storage_groups(sd), outputs.storage_groups(want),
                   "%s: names sharing one storage" % what)
    return sd


def check_safetensors(tc, body, want, what):
    """body is a safetensors file holding exactly want's tensors' values."""
    try:
        _meta, entries = outputs.read_safetensors(body)
    except outputs.SafetensorsError as e:
        raise AssertionError("%s: not a valid safetensors file: %s" % (what, e))
    tc.assertEqual(sorted(entries), sorted(want), "%s: names" % what)
    for name, t in want.items():
        dt, shape, raw = entries[name]
        tc.assertEqual(dt, outputs.TORCH_TO_ST.get(t.dtype), "%s: %s dtype" % (what, name))
        tc.assertEqual(shape, list(t.shape), "%s: %s shape" % (what, name))
        outputs.assert_tensor(tc, outputs.st_tensor(dt, shape, raw), t, "%s: %s" % (what, name),
                              layout=False)
        tc.assertEqual(raw, outputs.raw_bytes(t), "%s: %s bytes" % (what, name))


def base_url(model, cid):
    return "/models/%s/checkpoints/%d" % (model, cid)


def check_file_outputs(tc, model, path, fmt="torch-zip"):
    """Item 1 and 3 of the issue for one torch file."""
    obj = torch.load(path, map_location="cpu")
    j = D.upload_ok(model, path)
    tc.assertEqual(j["format"], fmt)
    bitwise = fmt == "torch-legacy"
    base = base_url(model, j["id"])
    root = outputs.default_root(obj)
    roots = []
    r = D.get(base + "/state_dict")
    if root is not None:
        tc.assertEqual(r.status, 200, "default state_dict (root %r): %r" % (root, r))
        check_pth(tc, r.body, outputs.tensors_below(obj, root), "default state_dict", bitwise)
        roots.append(root)
    else:
        e = checks.error_json(tc, r, 422, "default state_dict of a checkpoint without a flat root")
        cands = [p for p in outputs.containers_with_tensors(obj) if p.count("/") == 1]
        for c in cands:
            tc.assertIn(c, e["message"], "422 message should list candidate root %s" % c)
        roots = outputs.containers_with_tensors(obj)
        tc.assertTrue(roots)
        for c in roots:
            with tc.subTest(root=c):
                r = D.get(base + "/state_dict?root=" + q(c))
                tc.assertEqual(r.status, 200, "state_dict?root=%s: %r" % (c, r))
                check_pth(tc, r.body, outputs.tensors_below(obj, c), "state_dict?root=" + c,
                          bitwise)
    for c in roots:
        with tc.subTest(root=c, format="safetensors"):
            want = outputs.tensors_below(obj, c)
            url = base + "/state_dict?format=safetensors" + ("&root=" + q(c) if c else "")
            r = D.get(url)
            if any(t.dtype not in outputs.TORCH_TO_ST for t in want.values()):
                # safetensors has no complex128 (nor quantized types)
                checks.error_json(tc, r, 400, url + " holding a dtype safetensors lacks")
                continue
            tc.assertEqual(r.status, 200, "%s: %r" % (url, r))
            check_safetensors(tc, r.body, want, url)


class DefaultStateDict(unittest.TestCase):
    """Issue 3 items 1 and 3: every seed and torch2 file, pth and safetensors."""

    def test_the_torch2_corpus_is_in_the_repository(self):
        ok = [c for c in _compat if c[2] == "ok"]
        self.assertGreaterEqual(len(ok), 26, "corpus at %s" % fixtures.compat_dir())


def _add_file(name, path, fmt="torch-zip"):
    model = "out-" + fixtures.model_name(name)

    def test(self):
        check_file_outputs(self, model, path, fmt)

    test.__name__ = "test_state_dict_of_" + model.replace("-", "_").replace(".", "_")
    setattr(DefaultStateDict, test.__name__, test)


_seed_dir, _seed_meta = fixtures.seed()
for _name in sorted(_seed_meta):
    if not _seed_meta[_name].get("legacy"):
        _add_file("seed-" + _name, os.path.join(_seed_dir, _name))
_compat = fixtures.compat()
for _name, _path, _kind, _exp in _compat:
    if _kind == "ok":
        _add_file("compat-" + _name, _path)
# legacy_whole_model.pt pickles tests/data/torch/make_data.py's Net
sys.path.insert(0, fixtures.TORCH_DATA)
for _name, _path, _exp in fixtures.legacy():
    # views of storages: torch.load puts each tensor on its view, ckptd on the
    # root storage (LegacyStorageViews)
    if not _exp["views"]:
        _add_file("legacy-" + _name, _path, "torch-legacy")


class LegacyStorageViews(unittest.TestCase):
    """A legacy file with views of one storage (as torch before 1.0 saved them):
    the state_dict holds torch.load's values, all on one storage."""

    def test_views_come_back_on_their_root_storage(self):
        path = os.path.join(fixtures.TORCH_DATA, "valid", "legacy_storage_views.pt")
        obj = torch.load(path, map_location="cpu")
        j = D.upload_ok("legacy-storage-views", path)
        self.assertEqual(j["format"], "torch-legacy")
        self.assertEqual(checks.dedup_json(self, j)["bytes"], 48)
        r = D.get(base_url("legacy-storage-views", j["id"]) + "/state_dict")
        self.assertEqual(r.status, 200, r)
        sd = load_pth(self, r.body, "state_dict")
        self.assertEqual(sorted(sd), ["a", "all", "b"])
        for name, t in obj.items():
            outputs.assert_tensor(self, sd[name], t, name, layout=False)
            self.assertEqual(outputs.raw_bytes(sd[name]), outputs.raw_bytes(t), name)
        self.assertEqual({k: sd[k].storage_offset() for k in sd}, {"a": 3, "b": 8, "all": 0})
        self.assertEqual(outputs.storage_groups(sd), [["a", "all", "b"]])


class TutorialCheckpoint(unittest.TestCase):
    """Issue 3 item 2: the tutorial's general checkpoint back into its model."""

    @classmethod
    def setUpClass(cls):
        cls.path = fixtures.seed_path("tutorial_checkpoint.pt")
        cls.obj = torch.load(cls.path, map_location="cpu")
        j = D.upload_ok("tutorial", cls.path)
        cls.base = base_url("tutorial", j["id"])

    def test_model_state_dict_loads_strictly_into_the_model(self):
        r = D.get(self.base + "/state_dict?root=/model_state_dict")
        self.assertEqual(r.status, 200, r)
        sd = load_pth(self, r.body, "root=/model_state_dict")
        model = TheModelClass()
        res = model.load_state_dict(sd, strict=True)
        self.assertEqual((list(res.missing_keys), list(res.unexpected_keys)), ([], []))
        ref = TheModelClass()
        ref.load_state_dict(self.obj["model_state_dict"])
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        model.eval()
        ref.eval()
        with torch.no_grad():
            self.assertTrue(torch.equal(model(x), ref(x)), "the loaded model computes differently")

    def test_keys_globs_pick_exactly_five_tensors(self):
        want = {k: v for k, v in self.obj["model_state_dict"].items()
                if k.startswith("conv") or k == "fc3.bias"}
        self.assertEqual(len(want), 5)
        r = D.get(self.base + "/state_dict?root=/model_state_dict&keys=" + q("conv*,fc3.bias"))
        self.assertEqual(r.status, 200, r)
        sd = check_pth(self, r.body, want, "keys=conv*,fc3.bias")
        self.assertEqual(sorted(sd), ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight",
                                      "fc3.bias"])
        r = D.get(self.base + "/state_dict?root=/model_state_dict&format=safetensors&keys="
                  + q("conv*,fc3.bias"))
        self.assertEqual(r.status, 200, r)
        check_safetensors(self, r.body, want, "keys=conv*,fc3.bias as safetensors")

    def test_default_root_of_the_general_checkpoint_is_model_state_dict(self):
        r = D.get(self.base + "/state_dict")
        self.assertEqual(r.status, 200, r)
        check_pth(self, r.body, self.obj["model_state_dict"], "default root")

    def test_keys_matching_nothing_is_404_json(self):
        r = D.get(self.base + "/state_dict?root=/model_state_dict&keys=nothing*")
        checks.error_json(self, r, 404, "keys matching nothing")

    def test_bad_format_and_root_are_400_json(self):
        checks.error_json(self, D.get(self.base + "/state_dict?format=onnx"), 400, "format=onnx")
        checks.error_json(self, D.get(self.base + "/state_dict?root=model_state_dict"), 400,
                          "root without a leading /")


class ViewsSubset(unittest.TestCase):
    """SPEC 4: a subset picked by keys= keeps views and ties."""

    def test_keys_picking_views_keep_strides_offsets_and_sharing(self):
        path = fixtures.seed_path("views_and_tied.pt")
        obj = torch.load(path, map_location="cpu")
        j = D.upload_ok("views-subset", path)
        base = base_url("views-subset", j["id"])
        want = {k: obj[k] for k in ("column", "slice", "tied_b", "transposed")}
        self.assertEqual(outputs.storage_groups(want), [["column", "slice"], ["tied_b", "transposed"]])
        r = D.get(base + "/state_dict?keys=" + q("column,slice,tied_b,trans*"))
        self.assertEqual(r.status, 200, r)
        sd = check_pth(self, r.body, want, "keys=column,slice,tied_b,trans*")
        self.assertEqual(sd["tied_b"].data_ptr(), sd["transposed"].data_ptr())
        r = D.get(base + "/state_dict?format=safetensors&keys=" + q("column,slice,tied_b,trans*"))
        self.assertEqual(r.status, 200, r)
        check_safetensors(self, r.body, want, "views as safetensors")

    def test_tied_weights_share_one_storage_in_the_default_output(self):
        path = fixtures.seed_path("views_and_tied.pt")
        j = D.upload_ok("views-tied", path)
        r = D.get(base_url("views-tied", j["id"]) + "/state_dict")
        self.assertEqual(r.status, 200, r)
        sd = load_pth(self, r.body, "views_and_tied")
        self.assertEqual(sd["tied_a"].data_ptr(), sd["tied_b"].data_ptr(), "tied weights")
        self.assertEqual(sd["base"].storage().data_ptr(), sd["column"].storage().data_ptr())
        self.assertEqual(sd["column"].stride(), (4,))
        self.assertEqual(sd["column"].storage_offset(), 1)
        self.assertEqual(sd["slice"].storage_offset(), 2)


def _st_sample():
    """Hand-written safetensors tensors (dtypes torch 1.13 has) -> (file bytes,
    {name: torch tensor})."""
    g = torch.Generator().manual_seed(7)
    want = {
        "embed.weight": torch.randn(5, 4, generator=g),
        "half": torch.randn(3, generator=g).half(),
        "brain": torch.randn(2, 3, generator=g).bfloat16(),
        "double": torch.tensor([1.5, float("nan"), -0.0, float("inf")], dtype=torch.float64),
        "cplx": torch.randn(2, dtype=torch.complex64, generator=g),
        "steps": torch.tensor([-7, 1 << 40]),
        "i32": torch.tensor([[1, -2], [3, -4]], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "a/b~c": torch.arange(4, dtype=torch.float32),
        "scalar": torch.tensor(2.5),
        "none": torch.zeros(2, 0),
    }
    entries = [(k, outputs.TORCH_TO_ST[t.dtype], list(t.shape), outputs.raw_bytes(t))
               for k, t in want.items()]
    return outputs.write_safetensors(entries, {"format": "pt"}), want


class SafetensorsUpload(unittest.TestCase):
    """Issue 3 item 3: a hand-written safetensors upload."""

    @classmethod
    def setUpClass(cls):
        cls.data, cls.want = _st_sample()
        cls.j = D.upload_ok("st-upload", cls.data, {"epoch": 1})
        cls.base = base_url("st-upload", cls.j["id"])

    def test_upload_is_listed_as_safetensors_with_its_tensors(self):
        self.assertEqual(self.j["format"], "safetensors")
        self.assertEqual(self.j["tensor_count"], len(self.want))
        v = D.get_json(self.base)
        got = {t["path"]: (t["dtype"], t["shape"]) for t in v["tensors"]}
        self.assertEqual(got, {"/" + expect.ptr_escape(k): (expect.dtype_name(t.dtype), list(t.shape))
                               for k, t in self.want.items()})

    def test_file_round_trips_byte_for_byte(self):
        r = D.get(self.base + "/file")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(ckptd.sha256_bytes(r.body), ckptd.sha256_bytes(self.data))
        self.assertEqual(r.body, self.data)

    def test_default_state_dict_is_a_loadable_pth(self):
        r = D.get(self.base + "/state_dict")
        self.assertEqual(r.status, 200, r)
        check_pth(self, r.body, self.want, "pth of a safetensors upload")

    def test_safetensors_output_has_the_same_tensors(self):
        r = D.get(self.base + "/state_dict?format=safetensors")
        self.assertEqual(r.status, 200, r)
        check_safetensors(self, r.body, self.want, "safetensors of a safetensors upload")

    def test_repo_valid_safetensors_files_round_trip(self):
        for name in sorted(os.listdir(ST_VALID)):
            with self.subTest(file=name):
                with open(os.path.join(ST_VALID, name), "rb") as f:
                    data = f.read()
                j = D.upload_ok("st-valid", data)
                self.assertEqual(j["sha256"], ckptd.sha256_bytes(data))
                _meta, entries = outputs.read_safetensors(data)
                self.assertEqual(j["tensor_count"], len(entries))
                r = D.get(base_url("st-valid", j["id"]) + "/file")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(ckptd.sha256_bytes(r.body), ckptd.sha256_bytes(data))


class DamagedSafetensors(unittest.TestCase):
    """Issue 3 item 5: damaged headers answer 4xx JSON and store nothing."""

    def cases(self):
        out = []
        for name in sorted(os.listdir(ST_INVALID)):
            with open(os.path.join(ST_INVALID, name), "rb") as f:
                out.append((name, f.read()))
        ok = outputs.write_safetensors([("x", "F32", [2], b"\0" * 8)])
        # a few more built here: a length one past the end, a dtype size mismatch
        # (F64 x 2 in 8 bytes), offsets pointing into the header region, 2^64-1
        n = int.from_bytes(ok[:8], "little")
        out.append(("length_one_past_end", (n + 9).to_bytes(8, "little") + ok[8:]))
        out.append(("f64_in_f32_bytes", outputs.write_safetensors([("x", "F64", [2], b"\0" * 8)])))
        out.append(("max_length", b"\xff" * 8 + ok[8:]))
        out.append(("zero_length", b"\0" * 8 + ok[8:]))
        return out

    def test_damaged_headers_answer_4xx_json_and_change_nothing(self):
        D.upload_ok("st-damaged", outputs.write_safetensors([("x", "F32", [2], b"\1" * 8)]))
        for name, data in self.cases():
            with self.subTest(file=name):
                before = D.stats()
                n_before = D.get_json("/models/st-damaged/checkpoints")["total"]
                r = D.upload("st-damaged", data)
                j = checks.error_json(self, r, tuple(range(400, 500)), name)
                self.assertNotEqual(r.status, 404, "%s: %r" % (name, j))
                self.assertEqual(D.stats(), before, "%s changed /stats" % name)
                self.assertEqual(D.get_json("/models/st-damaged/checkpoints")["total"], n_before,
                                 "%s added a checkpoint" % name)
        # and into a model of its own: no model appears
        r = D.upload("st-damaged-new", dict(self.cases())["overlapping_offsets.safetensors"])
        checks.error_json(self, r, tuple(range(400, 500)), "overlapping offsets, new model")
        names = [m.get("name") for m in D.get_json("/models")["models"]]
        self.assertNotIn("st-damaged-new", names)


class OneTensor(unittest.TestCase):
    """GET .../tensors/{path}: npy per numpy dtype, raw for bfloat16/float8."""

    def check_npy(self, url, want):
        r = D.get(url)
        self.assertEqual(r.status, 200, "%s: %r" % (url, r))
        a = numpy.load(io.BytesIO(r.body), allow_pickle=False)
        w = want.detach().numpy()
        self.assertEqual(a.dtype, w.dtype, url)
        self.assertEqual(a.shape, w.shape, url)
        self.assertTrue(numpy.array_equal(a, w, equal_nan=a.dtype.kind in "fc"),
                        "%s: got %r want %r" % (url, a, w))

    def check_raw(self, url, dtype_name, shape, raw):
        r = D.get(url + "?format=raw")
        self.assertEqual(r.status, 200, "%s: %r" % (url, r))
        self.assertEqual(r.header("X-Dtype"), dtype_name, url)
        self.assertEqual(json.loads(r.header("X-Shape", "null")), list(shape), url)
        self.assertEqual(r.body, raw, url)

    def torch_file_tensors(self, model, path):
        obj = torch.load(path, map_location="cpu")
        j = D.upload_ok(model, path)
        base = base_url(model, j["id"]) + "/tensors/"
        return base, {p: t for p, t in outputs.tensors_below(obj).items()}

    def test_npy_of_every_numpy_dtype_equals_torch(self):
        files = [("t-dtypes", fixtures.seed_path("dtypes_113.pt")),
                 ("t-views", fixtures.seed_path("views_and_tied.pt"))]
        files += [("t-" + fixtures.model_name(n), p) for n, p, k, _ in fixtures.compat()
                  if k == "ok" and n.split(".")[0] in (
                      "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                      "bool", "scalar", "empty", "special_values", "extreme_values",
                      "tensor_4d", "parameter")]
        seen = set()
        for model, path in files:
            base, tensors = self.torch_file_tensors(model, path)
            for name, t in tensors.items():
                url = base + "/".join(urllib.parse.quote(expect.ptr_escape(s), safe="~")
                                      for s in name.split("/"))
                with self.subTest(file=os.path.basename(path), tensor=name):
                    if t.dtype == torch.bfloat16:
                        continue
                    self.check_npy(url, t)
                    self.check_raw(url, expect.dtype_name(t.dtype), t.shape, outputs.raw_bytes(t))
                    seen.add(t.dtype)
        self.assertTrue({torch.float16, torch.float32, torch.float64, torch.int8, torch.int16,
                         torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
                         torch.complex128} <= seen, seen)

    def test_bfloat16_is_raw_and_npy_says_use_raw(self):
        for model, path, name in (("t-bf16-seed", fixtures.seed_path("dtypes_113.pt"), "bf16"),
                                  ("t-bf16-compat", os.path.join(fixtures.compat_dir(), "bfloat16.pt"),
                                   "tensor")):
            base, tensors = self.torch_file_tensors(model, path)
            t = tensors[name]
            self.assertEqual(t.dtype, torch.bfloat16)
            self.check_raw(base + name, "bfloat16", t.shape, outputs.raw_bytes(t))
            for url in (base + name, base + name + "?format=npy"):
                e = checks.error_json(self, D.get(url), 400, "npy of bfloat16")
                self.assertIn("format=raw", e["message"], "400 should tell to use format=raw")

    def test_safetensors_all_dtypes_npy_and_raw(self):
        with open(os.path.join(ST_VALID, "all_dtypes.safetensors"), "rb") as f:
            data = f.read()
        _meta, entries = outputs.read_safetensors(data)
        j = D.upload_ok("t-st-dtypes", data)
        base = base_url("t-st-dtypes", j["id"]) + "/tensors/"
        for name, (dt, shape, raw) in entries.items():
            with self.subTest(tensor=name):
                url = base + q(name)
                self.check_raw(url, outputs.ST_TO_NAME[dt], shape, raw)
                np_dt = outputs.ST_DTYPES[dt][1]
                if np_dt is None:
                    e = checks.error_json(self, D.get(url), 400, "npy of " + dt)
                    self.assertIn("format=raw", e["message"])
                    continue
                r = D.get(url + "?format=npy")
                self.assertEqual(r.status, 200, r)
                a = numpy.load(io.BytesIO(r.body), allow_pickle=False)
                w = numpy.frombuffer(raw, dtype=np_dt).reshape(shape)
                self.assertEqual(a.dtype, w.dtype)
                self.assertEqual(a.shape, w.shape)
                self.assertEqual(a.tobytes(), w.tobytes())

    def test_bad_format_is_400_json(self):
        base, _ = self.torch_file_tensors("t-fmt", fixtures.seed_path("tutorial_state_dict.pt"))
        checks.error_json(self, D.get(base + "fc3.bias?format=csv"), 400, "format=csv")


class PointerEscapes(unittest.TestCase):
    """A key containing '/' is ~1 in the URL, '~' is ~0; lists are indices."""

    @classmethod
    def setUpClass(cls):
        path = fixtures.seed_path("pointer_escapes.pt")
        cls.obj = torch.load(path, map_location="cpu")
        j = D.upload_ok("escapes", path)
        cls.base = base_url("escapes", j["id"]) + "/tensors/"

    def get_tensor(self, url_path):
        r = D.get(self.base + url_path + "?format=raw")
        self.assertEqual(r.status, 200, "%s: %r" % (url_path, r))
        return r.body

    def test_escaped_keys_fetch_their_tensors(self):
        o = self.obj
        cases = {
            "a~1b": o["a/b"], "c~0d": o["c~d"], "~0~1": o["~/"],
            "list/0": o["list"][0], "list/1/0": o["list"][1][0], "list/1/1/x": o["list"][1][1]["x"],
            # the same pointers percent-encoded
            "a%7E1b": o["a/b"], "c%7e0d": o["c~d"], "%7E0%7E1": o["~/"], "list%2F1%2F1%2Fx": None,
        }
        for u, t in cases.items():
            with self.subTest(url=u):
                if t is None:
                    # %2F inside a segment: either the pointer list/1/1/x or a 404, never another tensor
                    r = D.get(self.base + u + "?format=raw")
                    if r.status == 200:
                        self.assertEqual(r.body, outputs.raw_bytes(o["list"][1][1]["x"]))
                    else:
                        checks.error_json(self, r, 404, u)
                    continue
                self.assertEqual(self.get_tensor(u), outputs.raw_bytes(t))

    def test_unescaped_slash_is_not_the_key(self):
        checks.error_json(self, D.get(self.base + "a/b"), 404, "tensors/a/b (key 'a/b' unescaped)")
        checks.error_json(self, D.get(self.base + "c~d"), 404, "tensors/c~d (key 'c~d' unescaped)")

    def test_root_with_escapes_in_state_dict(self):
        r = D.get(self.base.replace("/tensors/", "/state_dict") + "?root=" + q("/list/1/1"))
        self.assertEqual(r.status, 200, r)
        check_pth(self, r.body, {"x": self.obj["list"][1][1]["x"]}, "root=/list/1/1")

    def test_safetensors_name_with_slash_and_tilde(self):
        with open(os.path.join(ST_VALID, "escaped_out_of_order.safetensors"), "rb") as f:
            data = f.read()
        j = D.upload_ok("escapes-st", data)
        base = base_url("escapes-st", j["id"])
        paths = sorted(t["path"] for t in D.get_json(base)["tensors"])
        self.assertEqual(paths, ["/a~1b~0c", "/b"])
        r = D.get(base + "/tensors/a~1b~0c?format=raw")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"\x01\x02")
        r = D.get(base + "/state_dict")
        self.assertEqual(r.status, 200, r)
        sd = load_pth(self, r.body, "state_dict of escaped names")
        self.assertEqual(sorted(sd), ["a/b~c", "b"])
        self.assertEqual(sd["a/b~c"].tolist(), [1, 2])


class Diff(unittest.TestCase):
    """GET .../diff/{b}: same, changed, added, removed, with byte counts."""

    def test_diff_of_two_epochs(self):
        g = torch.Generator().manual_seed(11)
        w, b, gone = torch.randn(8, 4, generator=g), torch.randn(8, generator=g), torch.randn(3, generator=g)
        e1 = {"w": w, "b": b, "gone": gone, "a/b": torch.ones(2)}
        e2 = {"w": w + 1, "b": b.clone(), "new": torch.zeros(5, dtype=torch.float64),
              "a/b": torch.ones(2)}
        ids = []
        with tempfile.TemporaryDirectory(dir=ckptd.work_dir()) as tmp:
            for i, sd in enumerate((e1, e2), 1):
                p = os.path.join(tmp, "e%d.pt" % i)
                torch.save(sd, p)
                ids.append(D.upload_ok("diffm", p, {"epoch": i})["id"])
        j = D.get_json("/models/diffm/checkpoints/%d/diff/%d" % tuple(ids))
        self.assertIsInstance(j.get("tensors"), list, j)
        got = {t["path"]: t["status"] for t in j["tensors"]}
        self.assertEqual(got, {"/w": "changed", "/b": "same", "/gone": "removed", "/new": "added",
                               "/a~1b": "same"})
        by = {t["path"]: t for t in j["tensors"]}
        self.assertEqual(by["/w"]["bytes"], 8 * 4 * 4)
        self.assertEqual(by["/new"]["bytes"], 5 * 8)
        self.assertEqual(by["/gone"]["bytes"], 3 * 4)
        s = j.get("summary", {})
        self.assertEqual((s.get("same"), s.get("changed"), s.get("added"), s.get("removed")),
                         (2, 1, 1, 1), j)
        # the other way round, and by refs
        k = D.get_json("/models/diffm/checkpoints/latest/diff/%d" % ids[0])
        got = {t["path"]: t["status"] for t in k["tensors"]}
        self.assertEqual(got, {"/w": "changed", "/b": "same", "/gone": "added", "/new": "removed",
                               "/a~1b": "same"})
        checks.error_json(self, D.get("/models/diffm/checkpoints/%d/diff/999999" % ids[0]), 404,
                          "diff against a missing checkpoint")


if __name__ == "__main__":
    harness.main()
