#!/usr/bin/python3
"""Train a small CNN on scikit-learn's digits with every checkpoint in ckptd.

    /usr/bin/python3 examples/train_digits.py [--url http://127.0.0.1:8080] [--epochs 8]

Data: sklearn.datasets.load_digits() (1797 8x8 images, shipped with
scikit-learn: Debian's python3-sklearn, no download), split 80/20 into
training and validation sets.

1. Pre-training: the whole network for --epochs epochs (Adam). After every
   epoch a general checkpoint ({"epoch", "model_state_dict",
   "optimizer_state_dict", "loss"}) is saved with its real validation loss
   and accuracy, run "pretrain".
2. Fine-tuning: the best pre-training epoch is loaded back from the server
   (ref="best", root="/model_state_dict"), the backbone is frozen
   (requires_grad False) and only the head (the last Linear) is trained, with
   plain SGD (no per-parameter optimizer state), for --finetune-epochs epochs,
   each saved as a general checkpoint too, run "finetune".

Because ckptd stores each distinct tensor once, a fine-tuning checkpoint adds
only what changed: the head's weights (plus the file's small non-tensor rest).
The script prints the store's growth from /stats for each phase, next to the
head's and a full checkpoint's size. The last line is "RESULT {json}" for
scripts (tests/integration/test_train_digits.py reads it).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ckptd import Client  # noqa: E402


class DigitsCNN(nn.Module):
    """8x8 greyscale -> 10 classes. backbone: two convs and a hidden layer;
    head: one Linear."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 64 x 4 x 4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.backbone(x))


def load_data(seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_val = len(y) // 5
    return (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])


def train_epoch(model, opt, data, batch, gen):
    x, y = data
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    perm = torch.randperm(len(y), generator=gen)
    for i in range(0, len(y), batch):
        idx = perm[i:i + batch]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(y)


@torch.no_grad()
def evaluate(model, data):
    x, y = data
    model.eval()
    out = model(x)
    return nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="ckptd URL (default $CKPTD_URL or "
                    "http://127.0.0.1:8080)")
    ap.add_argument("--token", default=None, help="bearer token (default $CKPTD_TOKEN)")
    ap.add_argument("--model", default="digits-cnn", help="model name in ckptd")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)

    t_start = time.time()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    client = Client(a.url, token=a.token)
    train, val = load_data(a.seed)
    print("digits: %d training, %d validation images; ckptd at %s"
          % (len(train[1]), len(val[1]), client.url), flush=True)

    model = DigitsCNN()
    head_bytes = nbytes(model.head.parameters())
    model_bytes = nbytes(model.state_dict().values())
    stats0 = client.stats()

    # -- 1. pre-training: everything trains, Adam ------------------------------
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    pre = []
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        train_loss = train_epoch(model, opt, train, a.batch, gen)
        val_loss, acc = evaluate(model, val)
        j = client.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                         "optimizer_state_dict": opt.state_dict(), "loss": val_loss},
                        a.model, epoch=epoch, loss=val_loss, run="pretrain",
                        metrics={"train_loss": train_loss, "acc": acc})
        pre.append(j)
        print("pretrain epoch %2d: train loss %.4f, val loss %.4f, acc %.3f -> checkpoint %d "
              "(%d bytes, %d new tensor bytes) %.1fs"
              % (epoch, train_loss, val_loss, acc, j["id"], j["size"],
                 j["dedup"]["new_bytes"], time.time() - t0), flush=True)
    stats1 = client.stats()
    full_ckpt = pre[-1]["size"]

    # -- 2. fine-tuning: the best epoch, backbone frozen, head only ------------
    best = client.best(a.model, run="pretrain")
    model = DigitsCNN()
    model.load_state_dict(client.load(a.model, ref=best["id"], root="/model_state_dict"))
    best_val, best_acc = evaluate(model, val)
    print("fine-tuning from checkpoint %d (epoch %d, val loss %.4f, reloaded: %.4f, acc %.3f)"
          % (best["id"], best["epoch"], best["loss"], best_val, best_acc), flush=True)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD(model.head.parameters(), lr=a.lr * 5)
    fine = []
    for i in range(1, a.finetune_epochs + 1):
        epoch = best["epoch"] + i
        t0 = time.time()
        train_loss = train_epoch(model, opt, train, a.batch, gen)
        val_loss, acc = evaluate(model, val)
        j = client.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                         "optimizer_state_dict": opt.state_dict(), "loss": val_loss},
                        a.model, epoch=epoch, loss=val_loss, run="finetune",
                        metrics={"train_loss": train_loss, "acc": acc})
        fine.append(j)
        print("finetune epoch %2d: train loss %.4f, val loss %.4f, acc %.3f -> checkpoint %d "
              "(%d bytes, %d new tensor bytes) %.1fs"
              % (epoch, train_loss, val_loss, acc, j["id"], j["size"],
                 j["dedup"]["new_bytes"], time.time() - t0), flush=True)
    stats2 = client.stats()
    frozen = all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone_before.items())

    grew_pre = stats1["unique_bytes"] - stats0["unique_bytes"]
    grew_fine = stats2["unique_bytes"] - stats1["unique_bytes"]
    stored_fine = stats2["stored_bytes"] - stats1["stored_bytes"]
    n = max(1, len(fine))
    print("model: %d bytes of weights, head %d bytes (%.1f%%); a full checkpoint "
          "(weights + Adam state) is %d bytes"
          % (model_bytes, head_bytes, 100.0 * head_bytes / model_bytes, full_ckpt))
    print("store grew by %d bytes over %d pre-training checkpoints (%d bytes uploaded)"
          % (grew_pre, len(pre), sum(j["size"] for j in pre)))
    print("store grew by %d bytes (%d stored) over %d fine-tuning checkpoints "
          "(%d bytes uploaded): %d per checkpoint for a %d-byte head, %.1f%% of a full "
          "checkpoint" % (grew_fine, stored_fine, len(fine), sum(j["size"] for j in fine),
                          grew_fine // n, head_bytes, 100.0 * grew_fine / full_ckpt))
    secs = time.time() - t_start
    print("backbone unchanged by fine-tuning: %s; total %.1fs" % (frozen, secs))
    result = {
        "model": a.model, "epochs": a.epochs, "finetune_epochs": len(fine),
        "head_bytes": head_bytes, "model_bytes": model_bytes, "full_checkpoint_bytes": full_ckpt,
        "pretrain_growth": grew_pre, "finetune_growth": grew_fine,
        "finetune_stored_growth": stored_fine,
        "finetune_new_tensor_bytes": [j["dedup"]["new_bytes"] for j in fine],
        "pretrain_ids": [j["id"] for j in pre], "finetune_ids": [j["id"] for j in fine],
        "val_losses": [j["loss"] for j in pre + fine], "best_id": best["id"],
        "best_acc": best_acc, "final_acc": fine[-1]["metrics"]["acc"] if fine else None,
        "backbone_frozen": frozen, "seconds": secs,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
