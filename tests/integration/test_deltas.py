#!/usr/bin/python3
"""Deltas between epochs (storage/codec.h, blob.h): a floating-point tensor
whose path held a tensor of the same dtype and size in the run's latest
checkpoint is stored as its difference from that blob when that is smaller.

On one daemon, in order: eight epochs of a training-like run (fp32, fp64,
bf16 and fp16 weights moving a little each epoch, Adam-like state, an int64
counter) come back byte for byte, and state_dict gives torch the same values;
the store is smaller than the same uploads made without a previous checkpoint
(each in a run of its own); no delta's chain is longer than three. Deleting
the checkpoints the deltas were made against leaves the others whole, and
`ckptd verify` and `ckptd gc` agree; deleting everything leaves no blob file.
A base removed by hand makes its delta unreadable (an error, never other
bytes) and the next upload of those bytes stores them whole again.

Deltas need a blob store that never replaces a delta's file (a local
directory): on the S3 run there are none, which the test checks too.
"""

import http.client
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness, store  # noqa: E402

EPOCHS = 8
MAX_CHAIN = 3
ON_S3 = bool(os.environ.get("CKPTD_IT_S3"))


def epochs(n, seed=1):
    """n training-like state dicts, each a small step from the previous one,
    saved with torch -> [bytes]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = {
        "fc.weight": torch.randn(256, 256, generator=g) * 0.02,
        "fc.bias": torch.randn(256, generator=g) * 0.02,
        "head.weight": torch.randn(64, 256, generator=g, dtype=torch.float64) * 0.02,
        "emb.weight": (torch.randn(512, 256, generator=g) * 0.02).to(torch.bfloat16),
        "proj.weight": (torch.randn(256, 256, generator=g) * 0.02).to(torch.float16),
    }
    m = {k: torch.zeros_like(v) for k, v in w.items()}
    v2 = {k: torch.zeros_like(v) for k, v in w.items()}
    out = []
    for e in range(1, n + 1):
        for k in w:
            grad = (torch.randn(w[k].shape, generator=g) * 1e-3).to(w[k].dtype)
            m[k] = 0.9 * m[k] + 0.1 * grad
            v2[k] = 0.999 * v2[k] + 0.001 * grad * grad
            w[k] = w[k] - 1e-2 * m[k]
        sd = {"epoch": e, "model": {k: t.clone() for k, t in w.items()},
              "optimizer": {"exp_avg": {k: t.clone() for k, t in m.items()},
                            "exp_avg_sq": {k: t.clone() for k, t in v2.items()},
                            "step": torch.tensor(e * 100, dtype=torch.int64)}}
        out.append(store.save_torch(sd))
    return out


def delta_files(data_dir):
    """{blob hash: chain length} of every delta file of a data directory."""
    out = {}
    root = os.path.join(data_dir, "blobs")
    for shard in os.listdir(root) if os.path.isdir(root) else []:
        p = os.path.join(root, shard)
        if len(shard) != 2 or not os.path.isdir(p):
            continue
        for name in os.listdir(p):
            if name.endswith(".d"):
                with open(os.path.join(p, name), "rb") as f:
                    head = f.read(33)
                out[shard + name[:-2]] = head[32]
    return out


class Deltas(ckptd.DaemonCase):
    NAME = "deltas"

    @classmethod
    def setUpClass(cls):
        cls.files = epochs(EPOCHS)
        super().setUpClass()
        cls.ids = []
        for e, data in enumerate(cls.files, 1):
            j = cls.d.upload_ok("m", data, {"run": "train", "epoch": e})
            cls.ids.append(j["id"])

    def assert_file(self, cid, data, model="m"):
        r = self.d.get("/models/%s/checkpoints/%d/file" % (model, cid))
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(len(r.body), len(data))
        self.assertTrue(r.body == data, "checkpoint %d differs from its upload" % cid)

    def test_1_every_epoch_comes_back_byte_for_byte(self):
        import torch

        for cid, data in zip(self.ids, self.files):
            self.assert_file(cid, data)
        r = self.d.get("/models/m/checkpoints/%d/state_dict?root=/model" % self.ids[-1])
        self.assertEqual(r.status, 200, r.body[:300])
        got = torch.load(io.BytesIO(r.body))
        want = torch.load(io.BytesIO(self.files[-1]))["model"]
        self.assertEqual(sorted(got), sorted(want))
        for k in want:
            self.assertEqual(got[k].dtype, want[k].dtype, k)
            self.assertTrue(torch.equal(got[k].view(-1).view(torch.uint8),
                                        want[k].view(-1).view(torch.uint8)), k)

    def test_2_deltas_make_the_store_smaller_with_bounded_chains(self):
        chains = delta_files(self.d.data_dir)
        stored = self.d.stats()["stored_bytes"]
        with ckptd.Daemon(name="no-deltas") as other:
            for e, data in enumerate(self.files, 1):
                other.upload_ok("m", data, {"run": "epoch-%d" % e, "epoch": e})
            whole = other.stats()["stored_bytes"]
            self.assertEqual(delta_files(other.data_dir), {})
        print("  %d epochs: %d bytes stored with deltas (%d delta files), %d without "
              "(%.3f)" % (EPOCHS, stored, len(chains), whole, stored / whole), flush=True)
        if ON_S3:
            self.assertEqual(chains, {})
            self.assertEqual(stored, whole)
            return
        # 4 float dtypes x (weights, exp_avg, exp_avg_sq) per epoch, every
        # epoch but the first of each key frame group
        self.assertGreaterEqual(len(chains), 8)
        self.assertLessEqual(max(chains.values()), MAX_CHAIN)
        self.assertEqual(min(chains.values()), 1)
        self.assertLess(stored, 0.95 * whole)

    @unittest.skipIf(ON_S3, "no deltas on S3")
    def test_3_deleting_the_bases_leaves_every_other_checkpoint_whole(self):
        keep = {self.ids[3], self.ids[6], self.ids[7]}
        for cid in self.ids:
            if cid not in keep:
                r = self.d.request("DELETE", "/models/m/checkpoints/%d" % cid)
                self.assertEqual(r.status, 204, r.body[:300])
        for cid, data in zip(self.ids, self.files):
            if cid in keep:
                self.assert_file(cid, data)
        self.d.stop_checked()
        try:
            v = store.cli("verify", "--data", self.d.data_dir)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
            self.assertIn(" 0 damaged, 0 missing", v.stdout)
            g = store.cli("gc", "--data", self.d.data_dir)
            self.assertEqual(g.returncode, 0, g.stdout + g.stderr)
            self.assertIn("removed 0 ", g.stdout)
        finally:
            self.d.start()
        for cid, data in zip(self.ids, self.files):
            if cid in keep:
                self.assert_file(cid, data)

    def test_4_deleting_everything_leaves_no_blob(self):
        for cid in self.ids:
            r = self.d.request("DELETE", "/models/m/checkpoints/%d" % cid)
            self.assertIn(r.status, (204, 404), r.body[:300])
        self.assertEqual(self.d.stats()["blobs"], 0)
        hashes, strays = store.blob_files(self.d.data_dir)
        self.assertEqual((hashes, strays), (set(), []))

    @unittest.skipIf(ON_S3, "no deltas on S3")
    def test_5_a_lost_base_is_an_error_and_the_next_upload_heals_it(self):
        files = epochs(2, seed=7)
        a = self.d.upload_ok("lost", files[0], {"run": "r", "epoch": 1})["id"]
        b = self.d.upload_ok("lost", files[1], {"run": "r", "epoch": 2})["id"]
        chains = delta_files(self.d.data_dir)
        self.assertTrue(chains, "epoch 2 should hold deltas")
        # remove by hand the whole blob epoch 1 holds under a delta of epoch 2
        delta = sorted(chains)[0]
        with open(os.path.join(self.d.data_dir, "blobs", delta[:2], delta[2:] + ".d"),
                  "rb") as f:
            base = f.read(68)[36:68].hex()
        gone = 0
        for suffix in ("", ".z"):
            p = os.path.join(self.d.data_dir, "blobs", base[:2], base[2:] + suffix)
            if os.path.exists(p):
                os.unlink(p)
                gone += 1
        self.assertEqual(gone, 1)
        for cid, data in ((a, files[0]), (b, files[1])):
            try:
                r = self.d.get("/models/lost/checkpoints/%d/file" % cid)
            except http.client.IncompleteRead:
                continue  # cut off once it reached the lost blob
            self.assertTrue(r.status != 200 or len(r.body) < len(data),
                            "checkpoint %d: %d, %d bytes of %d" % (cid, r.status, len(r.body),
                                                                   len(data)))
        # the same bytes again: stored whole, and epoch 2 reads again
        self.d.upload_ok("lost", files[1], {"run": "r", "epoch": 3})
        self.assert_file(b, files[1], "lost")


if __name__ == "__main__":
    harness.main()
