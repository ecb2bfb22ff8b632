#!/usr/bin/python3
"""Durability across restarts (SPEC 1, 6).

Upload a mix of checkpoints, stop the daemon with SIGTERM (it must exit 0),
start a new one on the same data directory: every model, list, checkpoint view
and /stats is the same, every file downloads byte for byte, new uploads get new
ids and dedup against the old blobs. SIGINT also stops it cleanly.
"""

import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

FIRST = None  # the daemon that owns the data directory
UPLOADS = []  # (model, id, sha256)


def setUpModule():
    global FIRST
    FIRST = ckptd.Daemon(name="restart-1").start()
    files = [
        ("rs-tutorial", fixtures.seed_path("tutorial_checkpoint.pt"),
         [("run", "a"), ("tag", "t1"), ("metric.acc", "0.5")]),
        ("rs-tutorial", fixtures.seed_path("tutorial_state_dict.pt"),
         [("run", "b"), ("epoch", "1"), ("loss", "0.25"), ("pin", "1")]),
        ("rs-tutorial", fixtures.seed_path("tutorial_model.pt"), [("epoch", "2"), ("loss", "0.5")]),
        ("rs-misc", fixtures.seed_path("dtypes_113.pt"), []),
        ("rs-misc", fixtures.seed_path("views_and_tied.pt"), [("epoch", "1")]),
    ]
    for _name, path, kind, _exp in fixtures.compat():
        if kind == "ok":
            files.append(("rs-compat", path, [("epoch", str(len(files)))]))
    for model, path, params in files:
        j = FIRST.upload_ok(model, path, params)
        UPLOADS.append((model, j["id"], ckptd.sha256_file(path)))


def tearDownModule():
    FIRST.cleanup()


def snapshot(d):
    snap = {"models": d.get_json("/models"), "stats": d.stats(), "lists": {}, "views": {}}
    for model in sorted({m for m, _, _ in UPLOADS}):
        snap["lists"][model] = d.get_json("/models/%s/checkpoints?order=created&limit=1000" % model)
    for model, cid, _ in UPLOADS:
        snap["views"][cid] = d.get_json("/models/%s/checkpoints/%d" % (model, cid))
    return snap


class Restart(unittest.TestCase):
    def test_1_everything_survives_a_sigterm_restart(self):
        before = snapshot(FIRST)
        FIRST.stop_checked(sig=signal.SIGTERM)
        d = ckptd.Daemon(data_dir=FIRST.data_dir, name="restart-2")
        with d:
            after = snapshot(d)
            self.assertEqual(after["models"], before["models"])
            self.assertEqual(after["stats"], before["stats"])
            self.assertEqual(after["lists"], before["lists"])
            for cid in before["views"]:
                self.assertEqual(after["views"][cid], before["views"][cid], "checkpoint %d" % cid)
            for model, cid, sha in UPLOADS:
                status, headers, got, _n = d.stream_download(
                    "/models/%s/checkpoints/%d/file" % (model, cid))
                self.assertEqual(status, 200)
                self.assertEqual(got, sha, "checkpoint %d downloads different bytes" % cid)

    def test_2_new_uploads_after_a_restart_get_new_ids_and_dedup(self):
        d = ckptd.Daemon(data_dir=FIRST.data_dir, name="restart-3")
        with d:
            j = d.upload_ok("rs-tutorial", fixtures.seed_path("tutorial_state_dict.pt"))
            self.assertGreater(j["id"], max(cid for _, cid, _ in UPLOADS))
            checks.dedup_json(self, j)
            self.assertEqual(j["dedup"]["new_bytes"], 0, j["dedup"])
            UPLOADS.append(("rs-tutorial", j["id"], j["sha256"]))
            latest = d.get_json("/models/rs-tutorial/checkpoints/latest")
            self.assertEqual(latest["id"], j["id"])

    def test_3_sigint_stops_cleanly_and_keeps_the_data(self):
        d = ckptd.Daemon(data_dir=FIRST.data_dir, name="restart-4").start()
        try:
            total = d.get_json("/models/rs-tutorial/checkpoints")["total"]
            d.stop_checked(sig=signal.SIGINT)
        finally:
            d.cleanup()
        d = ckptd.Daemon(data_dir=FIRST.data_dir, name="restart-5")
        with d:
            self.assertEqual(d.get_json("/models/rs-tutorial/checkpoints")["total"], total)
            for model, cid, sha in UPLOADS:
                f = d.get("/models/%s/checkpoints/%d/file" % (model, cid))
                self.assertEqual(ckptd.sha256_bytes(f.body), sha)


if __name__ == "__main__":
    harness.main()
