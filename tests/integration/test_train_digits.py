#!/usr/bin/python3
"""examples/train_digits.py end to end against a live daemon (needs python3-sklearn).

The example trains a small CNN on scikit-learn's digits, saves a general
checkpoint every epoch through the Python client, then fine-tunes only the
head with the backbone frozen. It must finish within two minutes, and its
fine-tuning phase must grow the store by little more than the head's bytes:
below 25% of one full checkpoint, and each fine-tuning checkpoint adds
exactly the head's tensor bytes, its backbone tensors sharing the blobs of the
checkpoint it started from.
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness  # noqa: E402

EXAMPLE = os.path.join(ckptd.REPO, "examples", "train_digits.py")
LIMIT = 120  # seconds, on 2 cores
EPOCHS, FINETUNE = 6, 3


def have_sklearn():
    return subprocess.run(["/usr/bin/python3", "-c", "import sklearn.datasets"],
                          capture_output=True).returncode == 0


@unittest.skipUnless(have_sklearn(), "python3-sklearn is not installed (tools/deps.sh)")
class TrainDigits(ckptd.DaemonCase):
    @classmethod
    def setUpClass(cls):
        cls.d = ckptd.Daemon(name="digits").start()
        t0 = time.time()
        cls.p = subprocess.run(
            ["/usr/bin/python3", EXAMPLE, "--url", "http://127.0.0.1:%d" % cls.d.port,
             "--model", "digits", "--epochs", str(EPOCHS), "--finetune-epochs", str(FINETUNE),
             "--threads", "2"],
            capture_output=True, text=True, timeout=LIMIT + 30)
        cls.secs = time.time() - t0
        cls.r = None
        for line in cls.p.stdout.splitlines():
            if line.startswith("RESULT "):
                cls.r = json.loads(line[len("RESULT "):])

    def test_1_runs_within_two_minutes(self):
        self.assertEqual(self.p.returncode, 0, self.p.stdout[-2000:] + self.p.stderr[-3000:])
        self.assertIsNotNone(self.r, self.p.stdout[-2000:])
        for line in self.p.stdout.splitlines():
            if not line.startswith("RESULT"):
                print("  | " + line)
        print("  example took %.1fs wall clock (limit %ds)" % (self.secs, LIMIT), flush=True)
        self.assertLess(self.secs, LIMIT)

    def test_2_finetuning_grows_the_store_by_little_more_than_the_head(self):
        r = self.r
        self.assertIsNotNone(r, "the example printed no RESULT line")
        growth, full, head = r["finetune_growth"], r["full_checkpoint_bytes"], r["head_bytes"]
        print("  fine-tuning: %d checkpoints grew the store by %d bytes (%d stored); head %d bytes;"
              " full checkpoint %d bytes; growth = %.1f%% of a full checkpoint (limit 25%%)"
              % (r["finetune_epochs"], growth, r["finetune_stored_growth"], head, full,
                 100.0 * growth / full), flush=True)
        self.assertEqual(r["finetune_epochs"], FINETUNE)
        self.assertEqual(r["finetune_new_tensor_bytes"], [head] * FINETUNE)
        self.assertGreaterEqual(growth, head * FINETUNE)
        self.assertLess(growth, 0.25 * full)
        self.assertTrue(r["backbone_frozen"])
        # the example's figures are the store's
        self.assertEqual(self.d.stats()["unique_bytes"],
                         r["pretrain_growth"] + r["finetune_growth"])

    def test_3_checkpoints_carry_real_losses_and_share_the_backbone(self):
        r = self.r
        self.assertIsNotNone(r, "the example printed no RESULT line")
        lst = self.d.get_json("/models/digits/checkpoints")["checkpoints"]
        self.assertEqual([c["id"] for c in lst], r["pretrain_ids"] + r["finetune_ids"])
        self.assertEqual([c["run"] for c in lst], ["pretrain"] * EPOCHS + ["finetune"] * FINETUNE)
        losses = [c["loss"] for c in lst]
        self.assertEqual(losses, r["val_losses"])
        self.assertLess(losses[EPOCHS - 1], losses[0], "validation loss should fall")
        pre = lst[:EPOCHS]
        best = min(pre, key=lambda c: (c["loss"], -c["id"]))
        self.assertEqual(best["id"], r["best_id"])
        self.assertGreater(r["best_acc"], 0.8)

        def blobs(cid):
            j = self.d.get_json("/models/digits/checkpoints/%d" % cid)
            return {t["path"]: t["blob"] for t in j["tensors"]}

        base = blobs(best["id"])
        ft = blobs(r["finetune_ids"][0])
        weights = [p for p in base if p.startswith("/model_state_dict/")]
        self.assertTrue(weights)
        for p in weights:
            if p.startswith("/model_state_dict/backbone."):
                self.assertEqual(ft[p], base[p], "%s should be shared" % p)
            else:
                self.assertTrue(p.startswith("/model_state_dict/head."), p)
                self.assertNotEqual(ft[p], base[p], "%s should have changed" % p)


if __name__ == "__main__":
    harness.main()
