#!/usr/bin/python3
"""Findings of an attack on ckptd (a hostile user, and a reviewer reading the
code), each checked against a live daemon: the fix of each failed here before.

- PATCH could grow a checkpoint's metrics without bound and held the index's
  write lock for seconds while merging them, so that uploads to other models
  were refused while it merged. Metrics are capped at 256 everywhere and the
  merge is short: uploads beside PATCHes must all answer 201 and the PATCHes
  200, nothing else accepted. Separately, SPEC 3's answer for an index held
  by another writer past the timeout, 503 with Retry-After, is checked by
  holding the lock from outside on purpose.
- best/file and latest/file were cacheable for a year: only id URLs are.
- A download of a checkpoint deleted while it streamed was cut short under
  a 200: a download holds its blobs until it ends.
- PATCH accepted tags with control characters that uploads refuse.
"""

import hashlib
import http.client
import os
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, harness, store  # noqa: E402

D = None


def setUpModule():
    global D
    D = ckptd.Daemon(name="review").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def small(seed):
    return store.save_torch({"w": store.randn(seed, 256)})


class Metrics(unittest.TestCase):
    def test_a_patch_with_60000_metric_names_is_refused_at_once(self):
        j = D.upload_ok("rv-patch", small(1))
        body = {"metrics": {"m%d" % i: 1 for i in range(60000)}}
        t0 = time.time()
        r = D.request("PATCH", "/models/rv-patch/checkpoints/%d" % j["id"], body=body)
        took = time.time() - t0
        checks.error_json(self, r, 400, "60,000 metrics")
        self.assertIn("256", r.json()["message"])
        self.assertLess(took, 5, "refusing took %.1fs" % took)
        self.assertEqual(D.get_json("/models/rv-patch/checkpoints/%d" % j["id"])["metrics"], {})

    def test_patches_never_grow_metrics_past_256(self):
        j = D.upload_ok("rv-grow", small(2), {"metric.acc": 0.5})
        url = "/models/rv-grow/checkpoints/%d" % j["id"]
        r = D.request("PATCH", url, body={"metrics": {"a%d" % i: 1.0 for i in range(255)}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["metrics"]), 256)
        r = D.request("PATCH", url, body={"metrics": {"b0": 1.0}})
        checks.error_json(self, r, 400, "a 257th metric")
        # replacing one and removing one are fine
        r = D.request("PATCH", url, body={"metrics": {"acc": 0.9, "a0": None, "b0": 2.0}})
        self.assertEqual(r.status, 200, r)
        m = r.json()["metrics"]
        self.assertEqual((len(m), m["acc"], m["b0"]), (256, 0.9, 2.0))
        self.assertNotIn("a0", m)

    def test_uploads_to_other_models_go_on_while_big_patches_run(self):
        j = D.upload_ok("rv-busy", small(3))
        url = "/models/rv-busy/checkpoints/%d" % j["id"]
        stop = threading.Event()
        answers = []

        def patcher():
            i = 0
            while not stop.is_set():
                body = {"metrics": {"p%d" % k: float(i) for k in range(256)}}
                answers.append(D.request("PATCH", url, body=body).status)
                i += 1

        threads = [threading.Thread(target=patcher) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            t0 = time.time()
            for i in range(30):
                r = D.upload("rv-other", small(100 + i))
                self.assertEqual(r.status, 201, r)
            took = time.time() - t0
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(set(answers), {200}, answers[:10])
        print("  30 uploads beside %d PATCHes of 256 metrics: %.1fs" % (len(answers), took))

    def test_a_busy_index_answers_503_with_retry_after(self):
        D.upload_ok("rv-locked", small(4))
        pg = os.environ.get("CKPTD_IT_PG")
        if pg:
            # a transaction holding the change counter's row longer than
            # ckptd's lock_timeout (10 s)
            url = ckptd.index_args(D.data_dir)[1]
            holder = subprocess.Popen(
                ["psql", "-X", "-q", url, "-c",
                 "BEGIN; UPDATE meta SET value = value WHERE name = 'generation';"
                 " SELECT pg_sleep(14); COMMIT;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            db = sqlite3.connect(os.path.join(D.data_dir, "index.sqlite"), timeout=30,
                                 isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(0.5)
            t0 = time.time()
            r = D.upload("rv-locked", small(5))
            took = time.time() - t0
            checks.error_json(self, r, 503, "an upload while another writer holds the index")
            self.assertEqual(r.json()["error"], "unavailable")
            self.assertTrue(r.header("Retry-After"), r.headers)
            self.assertLess(took, 13)
        finally:
            if pg:
                holder.wait(30)
            else:
                db.execute("ROLLBACK")
                db.close()
        # nothing of the refused upload is visible, and the next one works
        self.assertEqual(len(D.get_json("/models/rv-locked/checkpoints")["checkpoints"]), 1)
        D.upload_ok("rv-locked", small(5))
        # and the blobs the refused upload wrote went with the next change
        hashes, _strays = store.blob_files(D.data_dir)
        self.assertEqual(len(hashes), D.stats()["blobs"])


class Caching(unittest.TestCase):
    def test_only_id_urls_are_cacheable_for_long(self):
        j = D.upload_ok("rv-cache", small(6), {"loss": 0.5})
        for ref in ("best", "latest"):
            r = D.request("HEAD", "/models/rv-cache/checkpoints/%s/file" % ref)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Cache-Control"), "no-cache", ref)
            etag = r.header("ETag")
            self.assertEqual(etag, '"%s"' % j["sha256"])
            r = D.get("/models/rv-cache/checkpoints/%s/file" % ref,
                      headers={"If-None-Match": etag})
            self.assertEqual(r.status, 304, ref)
        r = D.request("HEAD", "/models/rv-cache/checkpoints/%d/file" % j["id"])
        self.assertIn("immutable", r.header("Cache-Control"))
        # a better checkpoint moves best: the same URL, new bytes
        k = D.upload_ok("rv-cache", small(7), {"loss": 0.1})
        r = D.request("HEAD", "/models/rv-cache/checkpoints/best/file")
        self.assertEqual(r.header("ETag"), '"%s"' % k["sha256"])


class Downloads(unittest.TestCase):
    def test_a_download_of_a_checkpoint_deleted_while_it_streams_completes(self):
        # 16 storages of 4 MiB: a download reads them one blob at a time
        import torch
        sd = {"t%d" % i: torch.full((1 << 20,), float(i)) for i in range(16)}
        data = store.save_torch(sd)
        j = D.upload_ok("rv-del", data)
        c = http.client.HTTPConnection("127.0.0.1", D.port, timeout=60)
        c.request("GET", "/api/v1/models/rv-del/checkpoints/%d/file" % j["id"])
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        h = hashlib.sha256()
        got = r.read(1 << 20)
        h.update(got)
        n = len(got)
        d = D.request("DELETE", "/models/rv-del/checkpoints/%d" % j["id"])
        self.assertEqual(d.status, 204, d)
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        c.close()
        self.assertEqual((n, h.hexdigest()), (len(data), j["sha256"]),
                         "a download cut short by a delete")
        # once it ended, the blobs went
        time.sleep(0.2)
        st = D.stats()
        self.assertEqual(D.get("/models/rv-del/checkpoints/%d" % j["id"]).status, 404)
        hashes, _strays = store.blob_files(D.data_dir)
        self.assertEqual(len(hashes), st["blobs"])


class Tags(unittest.TestCase):
    def test_patch_refuses_tags_that_uploads_refuse(self):
        j = D.upload_ok("rv-tags", small(8), {"tag": "ok"})
        url = "/models/rv-tags/checkpoints/%d" % j["id"]
        for bad in (["a\nb"], ["\x07bell"], ["tab\there"], ["x" * 129], [""], ["del\x7f"]):
            with self.subTest(tags=bad):
                r = D.request("PATCH", url, body={"tags": bad})
                checks.error_json(self, r, 400, "tags %r" % (bad,))
        self.assertEqual(D.get_json(url)["tags"], ["ok"])
        r = D.request("PATCH", url, body={"tags": ["nightly", "été"]})
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    harness.main()
