#!/usr/bin/python3
"""The query side of the HTTP API and its errors (SPEC 3).

Listing with filters, ordering and paging; best/latest (by loss or by a metric,
narrowed by run); GET /models; 404/400 JSON errors for unknown things and bad
parameters; Range/HEAD/416 on /file; unknown routes; empty and truncated
uploads; 413 over --max-upload-size.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

D = None
SMALL = None  # bytes of a small real checkpoint
MODEL = "listing"
IDS = {}

# name: (run, epoch, loss, acc, tags) in upload order
ROWS = [
    ("a", "r1", 1, 0.9, 0.5, ["warmup"]),
    ("b", "r1", 2, 0.5, 0.7, []),
    ("c", "r1", 3, 0.7, 0.9, ["final", "keep"]),
    ("d", "r2", 1, 0.3, 0.6, []),
    ("e", "r2", 2, 0.4, 0.65, ["final"]),
]


def setUpModule():
    global D, SMALL
    SMALL = fixtures.seed_bytes("views_and_tied.pt")
    D = ckptd.Daemon(name="api").start()
    for name, run, epoch, loss, acc, tags in ROWS:
        params = [("run", run), ("epoch", epoch), ("loss", loss), ("metric.acc", acc)]
        params += [("tag", t) for t in tags]
        j = D.upload_ok(MODEL, SMALL, params)
        IDS[name] = j["id"]


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def names_of(items):
    inv = {v: k for k, v in IDS.items()}
    return [inv.get(c["id"], "?%s" % c["id"]) for c in items]


class Listing(unittest.TestCase):
    def list(self, query=""):
        j = D.get_json("/models/%s/checkpoints%s" % (MODEL, query))
        self.assertIn("checkpoints", j)
        self.assertIn("total", j)
        for c in j["checkpoints"]:
            checks.checkpoint_json(self, c, MODEL, run=None)
        return j

    def test_list_returns_every_checkpoint_with_total(self):
        j = self.list()
        self.assertEqual(j["total"], 5)
        self.assertEqual(sorted(names_of(j["checkpoints"])), list("abcde"))
        c = [x for x in j["checkpoints"] if x["id"] == IDS["c"]][0]
        self.assertEqual(sorted(c["tags"]), ["final", "keep"])
        self.assertEqual(c["metrics"], {"acc": 0.9})
        self.assertEqual((c["run"], c["epoch"], c["loss"]), ("r1", 3, 0.7))

    def test_filter_by_run(self):
        j = self.list("?run=r1")
        self.assertEqual(sorted(names_of(j["checkpoints"])), ["a", "b", "c"])
        self.assertEqual(j["total"], 3)

    def test_filter_by_epoch(self):
        j = self.list("?epoch=2")
        self.assertEqual(sorted(names_of(j["checkpoints"])), ["b", "e"])
        self.assertEqual(j["total"], 2)

    def test_filter_by_tag(self):
        j = self.list("?tag=final")
        self.assertEqual(sorted(names_of(j["checkpoints"])), ["c", "e"])
        self.assertEqual(j["total"], 2)

    def test_filters_combine(self):
        j = self.list("?tag=final&run=r2")
        self.assertEqual(names_of(j["checkpoints"]), ["e"])

    def test_filter_matching_nothing_is_an_empty_list(self):
        j = self.list("?run=nosuchrun")
        self.assertEqual((j["checkpoints"], j["total"]), ([], 0))

    def test_order_by_loss(self):
        self.assertEqual(names_of(self.list("?order=loss")["checkpoints"]), list("debca"))

    def test_order_by_descending_loss(self):
        self.assertEqual(names_of(self.list("?order=-loss")["checkpoints"]), list("acbed"))

    def test_order_by_created(self):
        self.assertEqual(names_of(self.list("?order=created")["checkpoints"]), list("abcde"))

    def test_order_by_epoch(self):
        epochs = [c["epoch"] for c in self.list("?order=epoch")["checkpoints"]]
        self.assertEqual(epochs, [1, 1, 2, 2, 3])

    def test_order_by_metric(self):
        self.assertEqual(names_of(self.list("?order=metric.acc")["checkpoints"]), list("adebc"))

    def test_limit_and_offset_page_through_and_total_counts_all(self):
        j = self.list("?order=loss&limit=2")
        self.assertEqual(names_of(j["checkpoints"]), ["d", "e"])
        self.assertEqual(j["total"], 5)
        j = self.list("?order=loss&limit=2&offset=2")
        self.assertEqual(names_of(j["checkpoints"]), ["b", "c"])
        self.assertEqual(j["total"], 5)
        j = self.list("?order=loss&limit=2&offset=4")
        self.assertEqual(names_of(j["checkpoints"]), ["a"])
        j = self.list("?order=loss&offset=10")
        self.assertEqual(j["checkpoints"], [])


class BestLatest(unittest.TestCase):
    def ref(self, ref, query=""):
        j = D.get_json("/models/%s/checkpoints/%s%s" % (MODEL, ref, query))
        checks.checkpoint_json(self, j, MODEL, run=None)
        self.assertIn("tensors", j)
        inv = {v: k for k, v in IDS.items()}
        return inv.get(j["id"], j["id"])

    def test_best_is_the_lowest_loss(self):
        self.assertEqual(self.ref("best"), "d")

    def test_best_by_metric_max(self):
        self.assertEqual(self.ref("best", "?metric=acc&mode=max"), "c")

    def test_best_by_metric_min(self):
        self.assertEqual(self.ref("best", "?metric=acc&mode=min"), "a")

    def test_latest_is_the_most_recent_upload(self):
        self.assertEqual(self.ref("latest"), "e")

    def test_run_narrows_best_and_latest(self):
        self.assertEqual(self.ref("best", "?run=r1"), "b")
        self.assertEqual(self.ref("latest", "?run=r1"), "c")
        self.assertEqual(self.ref("best", "?run=r2&metric=acc&mode=max"), "e")

    def test_best_file_downloads(self):
        f = D.get("/models/%s/checkpoints/best/file" % MODEL)
        self.assertEqual(f.status, 200)
        self.assertEqual(f.body, SMALL)

    def test_models_lists_counts_runs_best_and_latest(self):
        j = D.get_json("/models")
        self.assertIn("models", j)
        found = [m for m in j["models"] if ckptd.pick(m, "name", "model") == MODEL]
        self.assertEqual(len(found), 1, j)
        m = found[0]
        self.assertEqual(ckptd.pick(m, "checkpoints", "checkpoint_count", "count"), 5)
        runs = ckptd.pick(m, "runs", "run_count")
        if isinstance(runs, list):
            runs = sorted(r if isinstance(r, str) else ckptd.pick(r, "name", "run") for r in runs)
            self.assertEqual(runs, ["r1", "r2"])
        else:
            self.assertEqual(runs, 2)
        best = ckptd.pick(m, "best", "best_id", "best_checkpoint")
        best_id = best["id"] if isinstance(best, dict) else best
        self.assertEqual(best_id, IDS["d"])
        latest = ckptd.pick(m, "latest", "latest_id", "latest_checkpoint")
        latest_id = latest["id"] if isinstance(latest, dict) else latest
        self.assertEqual(latest_id, IDS["e"])


class NotFound(unittest.TestCase):
    def test_unknown_model_is_404(self):
        for path in ("/models/nosuch/checkpoints", "/models/nosuch/checkpoints/1",
                     "/models/nosuch/checkpoints/best", "/models/nosuch/checkpoints/latest",
                     "/models/nosuch/checkpoints/1/file"):
            with self.subTest(path=path):
                checks.error_json(self, D.get(path), 404, path)

    def test_unknown_checkpoint_is_404(self):
        for path in ("/models/%s/checkpoints/999999" % MODEL,
                     "/models/%s/checkpoints/999999/file" % MODEL):
            with self.subTest(path=path):
                checks.error_json(self, D.get(path), 404, path)
        r = D.request("DELETE", "/models/%s/checkpoints/999999" % MODEL)
        checks.error_json(self, r, 404, "DELETE unknown checkpoint")

    def test_best_by_a_metric_nobody_has_is_404(self):
        r = D.get("/models/%s/checkpoints/best?metric=nosuch&mode=max" % MODEL)
        checks.error_json(self, r, 404, "best by an unknown metric")

    def test_unknown_routes_are_404_json(self):
        for path in ("/!/api/v1/nosuch", "/models/%s/bogus" % MODEL,
                     "/models/%s/checkpoints/%d/bogus" % (MODEL, IDS.get("a", 1))):
            with self.subTest(path=path):
                checks.error_json(self, D.get(path), 404, path)


    def test_wrong_method_is_a_json_error(self):
        for method, path in (("DELETE", "/stats"), ("POST", "/models"), ("PUT", "/healthz")):
            with self.subTest(method=method, path=path):
                r = D.request(method, path, body=b"")
                checks.error_json(self, r, (404, 405), "%s %s" % (method, path))


class BadParameters(unittest.TestCase):
    def test_bad_model_names_are_400(self):
        bad = ["-x", "a" * 129, ".hidden", "_x", "a%20b", "a%3Bb", "%C3%A9t%C3%A9"]
        for name in bad:
            with self.subTest(name=name):
                r = D.upload(name, SMALL)
                checks.error_json(self, r, 400, "upload to model %r" % name)
                r = D.get("/models/%s/checkpoints" % name)
                checks.error_json(self, r, (400, 404), "list of model %r" % name)

    def test_traversal_in_the_model_name_is_refused(self):
        before = D.stats()
        for name in ("..%2Fetc", "..%2F..%2Ftmp", "a%2F..%2F..%2Fx", "%2Fetc", "..", "%2E%2E"):
            with self.subTest(name=name):
                r = D.upload(name, SMALL)
                checks.error_json(self, r, (400, 404), "upload to model %r" % name)
        self.assertEqual(D.stats(), before)
        names = [ckptd.pick(m, "name", "model") for m in D.get_json("/models")["models"]]
        self.assertFalse([n for n in names if "/" in n or n.startswith(".")], names)

    def test_a_percent_encoded_nul_does_not_cut_the_path(self):
        # "/checkpoints/ID%00/file" must not act on "/checkpoints/ID".
        j = D.upload_ok("nul-test", SMALL)
        base = "/models/nul-test/checkpoints/%d" % j["id"]
        for path in (base + "%00/file", base + "%00x", "/models/nul-test%00/checkpoints",
                     "/models/a%00b/checkpoints"):
            with self.subTest(path=path):
                checks.error_json(self, D.get(path), (400, 404), "GET " + path)
        # No DELETE route ends in /file, so 405 is right too; what matters
        # is that checkpoint ID survives.
        r = D.request("DELETE", base + "%00/file")
        checks.error_json(self, r, (400, 404, 405), "DELETE %s%%00/file" % base)
        r = D.request("DELETE", base + "%00")
        checks.error_json(self, r, (400, 404), "DELETE %s%%00" % base)
        self.assertEqual(D.get(base).status, 200, "the checkpoint was deleted")

    def test_a_128_character_model_name_is_fine(self):
        name = "m" + "x" * 127
        j = D.upload_ok(name, SMALL)
        self.assertEqual(j["model"], name)

    def test_bad_run_name_is_400(self):
        r = D.upload(MODEL + "-runs", SMALL, {"run": "../x"})
        checks.error_json(self, r, 400, "run=../x")

    def test_bad_numbers_are_400(self):
        for q in ({"epoch": "abc"}, {"step": "1.5x"}, {"loss": "abc"}, {"metric.acc": "high"},
                  {"epoch": "99999999999999999999999"}):
            with self.subTest(q=q):
                r = D.upload(MODEL + "-bad", SMALL, q)
                checks.error_json(self, r, 400, "upload with %r" % q)
        r = D.get("/models/%s-bad/checkpoints" % MODEL)
        checks.error_json(self, r, 404, "model after only bad uploads")

    def test_bad_list_parameters_are_400(self):
        for q in ("?epoch=abc", "?limit=-1", "?limit=abc", "?offset=x", "?order=nonsense"):
            with self.subTest(q=q):
                r = D.get("/models/%s/checkpoints%s" % (MODEL, q))
                checks.error_json(self, r, 400, q)

    def test_bad_checkpoint_ref_is_400_or_404(self):
        for ref in ("abc", "-1", "1x"):
            with self.subTest(ref=ref):
                r = D.get("/models/%s/checkpoints/%s" % (MODEL, ref))
                checks.error_json(self, r, (400, 404), ref)


class DamagedUploads(unittest.TestCase):
    def test_empty_body_is_refused_and_stores_nothing(self):
        before = D.stats()
        r = D.upload("empty-body", b"")
        checks.error_json(self, r, (400, 411, 422), "empty body")
        self.assertEqual(D.stats(), before)
        checks.error_json(self, D.get("/models/empty-body/checkpoints"), 404, "model")

    def test_truncated_zip_is_422_and_stores_nothing(self):
        data = fixtures.seed_bytes("tutorial_checkpoint.pt")
        before = D.stats()
        r = D.upload("truncated", data[: len(data) // 2])
        checks.error_json(self, r, 422, "first half of a checkpoint")
        self.assertEqual(D.stats(), before, "/stats changed after a truncated upload")
        checks.error_json(self, D.get("/models/truncated/checkpoints"), 404, "model")

    def test_truncated_upload_to_an_existing_model_adds_no_checkpoint(self):
        total = D.get_json("/models/%s/checkpoints" % MODEL)["total"]
        data = fixtures.seed_bytes("tutorial_state_dict.pt")
        r = D.upload(MODEL, data[:-100])
        checks.error_json(self, r, 422, "checkpoint missing its last 100 bytes")
        self.assertEqual(D.get_json("/models/%s/checkpoints" % MODEL)["total"], total)

    def test_garbage_is_415(self):
        r = D.upload("garbage", b"hello, this is not a checkpoint at all\n" * 10)
        checks.error_json(self, r, 415, "text body")

    def test_bad_multipart_without_a_file_part_is_400(self):
        ctype, body = ckptd.multipart([("field", ("epoch", "1"))])
        r = D.request("POST", "/models/nofile/checkpoints", body=body,
                      headers={"Content-Type": ctype})
        checks.error_json(self, r, (400, 422), "multipart without file")


class FileRanges(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = fixtures.seed_bytes("tutorial_state_dict.pt")
        cls.size = len(cls.data)
        j = D.upload_ok("ranges", cls.data, {"epoch": 1})
        cls.url = "/models/ranges/checkpoints/%d/file" % j["id"]
        cls.sha = j["sha256"]

    def range(self, spec):
        return D.get(self.url, headers={"Range": "bytes=" + spec})

    def test_first_100_bytes(self):
        r = self.range("0-99")
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.header("Content-Range"), "bytes 0-99/%d" % self.size)
        self.assertEqual(r.body, self.data[:100])
        self.assertEqual(int(r.header("Content-Length")), 100)

    def test_last_10_bytes(self):
        r = self.range("-10")
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.header("Content-Range"),
                         "bytes %d-%d/%d" % (self.size - 10, self.size - 1, self.size))
        self.assertEqual(r.body, self.data[-10:])

    def test_from_100_to_the_end(self):
        r = self.range("100-")
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.header("Content-Range"),
                         "bytes 100-%d/%d" % (self.size - 1, self.size))
        self.assertEqual(r.body, self.data[100:])

    def test_middle_range_crossing_tensor_data(self):
        lo, hi = self.size // 3, self.size // 3 + 70000
        r = self.range("%d-%d" % (lo, hi))
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, self.data[lo:hi + 1])

    def test_end_past_the_size_is_clamped(self):
        r = self.range("%d-%d" % (self.size - 5, self.size + 1000))
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, self.data[-5:])

    def test_unsatisfiable_range_is_416(self):
        r = self.range("%d-%d" % (self.size, self.size + 10))
        self.assertEqual(r.status, 416, r)
        self.assertEqual(r.header("Content-Range"), "bytes */%d" % self.size)

    def test_head_gives_headers_and_no_body(self):
        r = D.request("HEAD", self.url)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        self.assertEqual(int(r.header("Content-Length")), self.size)
        self.assertEqual(checks.etag_value(r.header("ETag")), self.sha)
        self.assertTrue(checks.disposition_filename(r.header("Content-Disposition")))

    def test_full_get_is_exact(self):
        r = D.get(self.url)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, self.data)


class UploadLimit(ckptd.DaemonCase):
    NAME = "limit"
    ARGS = ("--max-upload-size", "10K")

    def test_upload_over_the_limit_is_413_and_stores_nothing(self):
        data = fixtures.seed_bytes("tutorial_state_dict.pt")  # ~250 KB
        before = self.d.stats()
        r = self.d.upload("big", data)
        checks.error_json(self, r, 413, "250 KB upload with a 10K limit")
        self.assertEqual(self.d.stats(), before)
        checks.error_json(self, self.d.get("/models/big/checkpoints"), 404, "model")

    def test_upload_under_the_limit_is_fine(self):
        data = fixtures.seed_bytes("views_and_tied.pt")
        self.assertLess(len(data), 10 * 1024)
        j = self.d.upload_ok("small", data)
        self.assertEqual(j["size"], len(data))

    def test_multipart_over_the_limit_is_413(self):
        data = fixtures.seed_bytes("tutorial_state_dict.pt")
        ctype, body = ckptd.multipart([("file", ("file", "x.pt", data))])
        r = self.d.request("POST", "/models/bigmp/checkpoints", body=body,
                           headers={"Content-Type": ctype})
        checks.error_json(self, r, 413, "multipart over the limit")


if __name__ == "__main__":
    harness.main()
