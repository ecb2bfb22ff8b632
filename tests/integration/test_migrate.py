#!/usr/bin/python3
# backends: postgresql postgresql+s3
"""ckptd migrate (SPEC 9): a single-machine store (SQLite index, blobs in a
directory) holding the format tests' checkpoints is copied into the run's
PostgreSQL and a new blob store (a directory, or the S3 bucket on the S3
run). A first migration is killed with kill -9 part way; running it again
finishes without copying again what the first one stored; the copy is
verified; and a daemon on the new backends serves every checkpoint byte for
byte under its old id, with the same list, best, retention policy and
tensors.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, fixtures, harness, store  # noqa: E402


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Migrate(unittest.TestCase):
    def test_a_single_machine_store_moves_to_new_backends_resumably(self):
        src_dir = os.path.join(ckptd.work_dir(), "data")
        local = ["--index", "sqlite:%s/index.sqlite" % src_dir, "--blobs",
                 os.path.join(src_dir, "blobs")]
        files = {}
        with ckptd.Daemon(data_dir=src_dir, name="source", args=local) as d:
            for name, path, kind, _exp in fixtures.compat():
                if kind != "ok":
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                j = d.upload_ok(fixtures.model_name(name), data, {"tag": "compat"})
                files[j["id"]] = (j["model"], data)
            # a checkpoint of several files (SPEC 3.2)
            multi_id = d.request("POST", "/models/sharded/checkpoints?staged=1&epoch=2").json()["id"]
            multi = {"model-0001.pt": store.save_torch({"a": store.randn(900, 300000)}),
                     "model-0002.pt": store.save_torch({"b": store.randn(901, 300000)}),
                     "index.json": b'{"weight_map": {"a": "model-0001.pt"}}'}
            for name, data in multi.items():
                r = d.request("PUT", "/models/sharded/checkpoints/%d/files/%s" % (multi_id, name),
                              body=data)
                self.assertEqual(r.status, 201, r.body[:300])
            r = d.request("POST", "/models/sharded/checkpoints/%d/commit" % multi_id)
            self.assertEqual(r.status, 200, r.body[:300])
            multi_json = r.json()
            import torch
            for i in range(24):  # enough bytes that a kill lands part way
                data = store.save_torch({"w%d" % k: store.randn(i * 10 + k, 256 * 1024)
                                         for k in range(4)})
                j = d.upload_ok("big", data, {"epoch": i, "loss": 1.0 / (i + 1),
                                              "metric.acc": i / 30})
                files[j["id"]] = ("big", data)
            r = d.request("PUT", "/models/big/retention", body={"keep_last": 100})
            self.assertEqual(r.status, 200, r)
            src_stats = d.stats()
            src_best = d.get_json("/models/big/checkpoints/best?metric=acc&mode=max")["id"]
            src_list = d.get_json("/models/big/checkpoints")["checkpoints"]

        dst_dir = os.path.join(ckptd.work_dir(), "target")
        target = ckptd.store_args(dst_dir)
        if "--blobs" not in target:
            target += ["--blobs", os.path.join(dst_dir, "blobs")]
        to = ["--to-index", target[target.index("--index") + 1],
              "--to-blobs", target[target.index("--blobs") + 1]]
        s3 = [a for a in target if a.startswith("--s3-")]
        if s3:  # the S3 run: the target's endpoint
            to += ["--to-s3-endpoint", target[target.index("--s3-endpoint") + 1]]
        cmd = [ckptd.binary(), "migrate", "--data", src_dir] + local + to

        # 1. killed part way
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        index_url = to[1]
        deadline = time.time() + 60
        done = 0
        while time.time() < deadline and p.poll() is None:
            try:
                done = int(ckptd._psql(index_url, "SELECT count(*) FROM checkpoints"
                                              " WHERE model_id > 0") or 0)
            except RuntimeError:
                done = 0  # the schema is being made
            if done >= len(files) // 3:
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.assertLess(done, len(files), "the first run finished before it was killed")
        # visible ones: a checkpoint of several files shows once all its files are in
        first = int(ckptd._psql(index_url, "SELECT count(*) FROM checkpoints WHERE model_id > 0"))
        stored_after_kill = int(ckptd._psql(index_url, "SELECT count(*) FROM blobs"))

        # 2. again, to the end
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        print("  " + p.stdout.strip().replace("\n", "\n  "))
        self.assertIn("(%d were there from an earlier run)" % first, p.stdout)
        copied = int(p.stdout.split(" blobs copied")[0].rsplit(" ", 1)[1])
        # what the killed run committed is not copied again (at most the
        # batch it was writing when killed)
        self.assertLessEqual(copied, src_stats["blobs"] - stored_after_kill + 5,
                             "blobs copied twice")
        self.assertIn(": 0 damaged, 0 missing", p.stdout)

        # 3. served from the new backends
        with ckptd.Daemon(name="target", args=target) as t:
            st = t.stats()
            for k in ("checkpoints", "blobs", "logical_bytes", "unique_bytes"):
                self.assertEqual(st[k], src_stats[k], k)
            for cid, (model, data) in files.items():
                got = t.stream_download("/models/%s/checkpoints/%d/file" % (model, cid))
                self.assertEqual((got[0], got[2], got[3]), (200, sha(data), len(data)),
                                 "checkpoint %d of %s" % (cid, model))
            got = t.get_json("/models/sharded/checkpoints/%d" % multi_id)
            self.assertEqual(got["files"], multi_json["files"])
            for k in ("sha256", "size", "created_at", "format", "dedup"):
                self.assertEqual(got[k], multi_json[k], k)
            for name, data in multi.items():
                r = t.get("/models/sharded/checkpoints/%d/files/%s" % (multi_id, name))
                self.assertEqual((r.status, sha(r.body)), (200, sha(data)), name)
            self.assertEqual(
                t.get_json("/models/big/checkpoints/best?metric=acc&mode=max")["id"], src_best)
            self.assertEqual(t.get_json("/models/big/checkpoints")["checkpoints"], src_list)
            self.assertEqual(t.get_json("/models/big/retention")["keep_last"], 100)
            # a new upload gets a new id, past the migrated ones
            j = t.upload_ok("big", store.save_torch({"x": store.randn(999, 64)}))
            self.assertGreater(j["id"], max(files))
        # 4. once more: nothing to do
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("%d were there" % (len(files) + 1), p.stdout)
        self.assertIn(" 0 blobs copied", p.stdout)


if __name__ == "__main__":
    harness.main()
