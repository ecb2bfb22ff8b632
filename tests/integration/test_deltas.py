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
bytes) and the next upload of those bytes stores them whole again. A model
saved as safetensors shards (a checkpoint of several files, SPEC 3.2) each
epoch: each shard is stored against the shard of the same name one epoch
earlier, and every file comes back byte for byte after the older epochs
are deleted.

kill -9 while deltas are written (SPEC 8 for the new write path): a 48 MB
model's epochs go into one run (5 rounds; 3 under the sanitizers), each
killed after a random delay and the
daemon restarted on its directory; every checkpoint answered or committed
is there and downloads byte for byte, nothing half-stored is visible, older
epochs (the deltas' bases) are deleted between rounds, and `ckptd verify` and
`ckptd gc` find nothing wrong.

Deltas need a blob store that never replaces a delta's file (a local
directory): on the S3 run there are none, which the test checks too.
"""

import http.client
import io
import json
import os
import random
import sys
import threading
import time
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

    def test_6_files_of_a_sharded_model_against_the_same_files_an_epoch_earlier(self):
        import torch

        g = torch.Generator().manual_seed(11)
        w = {"layer%d.weight" % k: torch.randn(256, 256, generator=g) * 0.02 for k in range(4)}
        shards = {"model-00001-of-00002.safetensors": ["layer0.weight", "layer1.weight"],
                  "model-00002-of-00002.safetensors": ["layer2.weight", "layer3.weight"]}
        ids, files = [], []
        for e in range(1, 4):
            for k in w:
                w[k] = w[k] - 1e-4 * torch.randn(w[k].shape, generator=g)
            out = {}
            for name, keys in shards.items():
                header, data = {}, b""
                for k in keys:
                    b = w[k].numpy().tobytes()
                    header[k] = {"dtype": "F32", "shape": list(w[k].shape),
                                 "data_offsets": [len(data), len(data) + len(b)]}
                    data += b
                h = json.dumps(header).encode()
                h += b" " * (-len(h) % 8)
                out[name] = len(h).to_bytes(8, "little") + h + data
            out["model.safetensors.index.json"] = json.dumps(
                {"weight_map": {k: n for n, ks in shards.items() for k in ks}}).encode()
            before = len(delta_files(self.d.data_dir))
            r = self.d.request("POST", "/models/sh/checkpoints?staged=1&run=r&epoch=%d" % e)
            self.assertEqual(r.status, 201, r.body[:300])
            cid = r.json()["id"]
            for name, data in out.items():
                r = self.d.request("PUT", "/models/sh/checkpoints/%d/files/%s" % (cid, name),
                                   body=data)
                self.assertEqual(r.status, 201, r.body[:300])
            r = self.d.request("POST", "/models/sh/checkpoints/%d/commit" % cid)
            self.assertEqual(r.status, 200, r.body[:300])
            if e > 1 and not ON_S3:  # the four weights, against last epoch's shards
                self.assertEqual(len(delta_files(self.d.data_dir)) - before, 4)
            ids.append(cid)
            files.append(out)
        for cid in ids[:2]:
            r = self.d.request("DELETE", "/models/sh/checkpoints/%d" % cid)
            self.assertEqual(r.status, 204, r.body[:300])
        for name, data in files[2].items():
            r = self.d.get("/models/sh/checkpoints/%d/files/%s" % (ids[2], name))
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertTrue(r.body == data, name)


# the 20 rounds of SPEC 8 are test_reliability's; these add the delta write
# path (fewer under the sanitizers, CKPTD_SOAK_SHORT)
KILL_ROUNDS = int(os.environ.get("CKPTD_DELTA_KILL_ROUNDS") or
                  (3 if os.environ.get("CKPTD_SOAK_SHORT") else 5))


class Trainer:
    """A 48 MB float32 model whose every step moves each weight a little."""

    def __init__(self, seed):
        import torch

        self.g = torch.Generator().manual_seed(seed)
        self.w = {"layer%d.weight" % k: torch.randn(1 << 20, generator=self.g) * 0.02
                  for k in range(12)}
        self.epoch = 0

    def save(self, path):
        import torch

        self.epoch += 1
        for k in self.w:
            self.w[k] = self.w[k] - 1e-5 * torch.randn(self.w[k].shape, generator=self.g)
        torch.save({"epoch": self.epoch, "model_state_dict": self.w}, path)
        return ckptd.sha256_file(path), os.path.getsize(path)


class KillNineWithDeltas(unittest.TestCase):
    def test_kill_9_while_deltas_are_written(self):
        seed = random.SystemRandom().randrange(1 << 31)
        rng = random.Random(seed)
        work = ckptd.work_dir()
        data, path = os.path.join(work, "data"), os.path.join(work, "epoch.pth")
        tr = Trainer(seed)
        known = {}  # id -> (sha256, size)
        d = ckptd.Daemon(data_dir=data, name="dkill-0").start()
        try:
            for _ in range(2):
                sh, n = tr.save(path)
                t0 = time.time()
                r = d.stream_upload("dk", path, {"run": "train", "epoch": tr.epoch})
                took = time.time() - t0
                self.assertEqual(r.status, 201, r)
                known[r.json()["id"]] = (sh, n)
            deltas = len(delta_files(data))
            print("  delta kill: seed %d; a %.0f MB epoch takes %.2fs; %d delta files"
                  % (seed, n / 1e6, took, deltas), flush=True)
            if not ON_S3:
                self.assertGreater(deltas, 0, "the second epoch should be stored as deltas")
            for rnd in range(KILL_ROUNDS):
                sh, n = tr.save(path)
                # an upload after a restart reads its bases from the disk:
                # slower than the measured one
                delay = rng.uniform(0, 3 * took)
                out = {}

                def upload():
                    try:
                        r = d.stream_upload("dk", path, {"run": "train", "epoch": tr.epoch},
                                            timeout=120)
                        out["status"], out["body"] = r.status, r.body
                    except Exception as e:  # the daemon died under it
                        out["error"] = repr(e)

                t = threading.Thread(target=upload, daemon=True)
                t.start()
                time.sleep(delay)
                d.kill()
                t.join(60)
                what = "round %d (seed %d, delay %.3fs of %.2fs)" % (rnd, seed, delay, took)
                d = ckptd.Daemon(data_dir=data, name="dkill-%d" % (rnd + 1)).start()
                self.assertEqual(store.leftovers(data), [], what)
                listed = {c["id"]: c for c in
                          d.get_json("/models/dk/checkpoints?limit=1000")["checkpoints"]}
                if out.get("status") == 201:
                    self.assertIn(ckptd.Response(201, {}, out["body"]).json()["id"], listed, what)
                elif "status" in out:
                    self.fail("%s: answered %d %r" % (what, out["status"], out["body"][:300]))
                new = [cid for cid in listed if cid not in known]
                self.assertLessEqual(len(new), 1, what)
                for cid in new:
                    self.assertEqual((listed[cid]["sha256"], listed[cid]["size"]), (sh, n), what)
                    known[cid] = (sh, n)
                self.assertEqual(sorted(known), sorted(listed), what)
                for cid in set(new) | {rng.choice(sorted(known))}:
                    st, _h, got, glen = d.stream_download("/models/dk/checkpoints/%d/file" % cid)
                    self.assertEqual((st, got, glen), (200,) + known[cid],
                                     "%s: checkpoint %d" % (what, cid))
                v = store.cli("verify", "--data", data)
                self.assertEqual(v.returncode, 0, what + v.stdout + v.stderr)
                self.assertIn(" 0 damaged, 0 missing", v.stdout, what)
                while len(known) > 3:  # the oldest: some deltas' bases
                    old = min(known)
                    r = d.request("DELETE", "/models/dk/checkpoints/%d" % old)
                    self.assertEqual(r.status, 204, r)
                    del known[old]
                print("  delta kill round %d: delay %.3fs: %s; %d delta files" % (
                    rnd, delay, "answered" if "status" in out else
                    ("committed" if new else "not stored"), len(delta_files(data))), flush=True)
            for cid, (sh, n) in sorted(known.items()):
                st, _h, got, glen = d.stream_download("/models/dk/checkpoints/%d/file" % cid)
                self.assertEqual((st, got, glen), (200, sh, n), "checkpoint %d" % cid)
            blobs = d.stats()["blobs"]
            d.stop_checked()
            g = store.cli("gc", "--data", data)
            self.assertEqual(g.returncode, 0, g.stdout + g.stderr)
            self.assertIn("removed 0 unreferenced blobs", g.stdout)
            hashes, strays = store.blob_files(data)
            self.assertEqual((len(hashes), strays), (blobs, []))
        finally:
            d.kill()


if __name__ == "__main__":
    harness.main()
