"""Trains a tiny model on synthetic data and uploads a checkpoint each epoch.

Used by the dashboard's browser test (tests/e2e): it needs real files written by
torch.save. Standard library + torch only. Each upload carries the epoch, the
step (batches seen so far), the training loss as `loss`, and the held-out
set's loss and accuracy as metric.val_loss and metric.acc. Prints one JSON
object on stdout:
{"uploads": [{"id", "epoch", "step", "loss", "val_loss", "acc", "sha256",
  "path", "shapes": {path: shape}}], "tiny": PATH}

usage: /usr/bin/python3 train_upload.py BASE_URL MODEL EPOCHS OUTDIR [RUN [LR]]
"""
import hashlib
import io
import json
import os
import sys
import urllib.request

import torch
from torch import nn


def upload(base, model, body, **fields):
    query = "&".join("%s=%s" % (k, v) for k, v in fields.items())
    req = urllib.request.Request(
        "%s/api/v1/models/%s/checkpoints?%s" % (base, model, query),
        data=body,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read())


def main():
    base, model_name, epochs, outdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    run = sys.argv[5] if len(sys.argv) > 5 else "default"
    lr = float(sys.argv[6]) if len(sys.argv) > 6 else 0.01
    torch.manual_seed(0)
    w = torch.randn(8, 1)
    x = torch.randn(256, 8)
    y = (x @ w + 0.1 * torch.randn(256, 1)).squeeze(1)
    x_val = torch.randn(64, 8)
    y_val = (x_val @ w + 0.1 * torch.randn(64, 1)).squeeze(1)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    uploads = []
    step = 0
    for epoch in range(epochs):
        total = 0.0
        for i in range(0, 256, 32):
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x[i : i + 32]).squeeze(1), y[i : i + 32])
            loss.backward()
            opt.step()
            total += float(loss)
            step += 1
        train_loss = total / 8
        with torch.no_grad():
            pred = net(x_val).squeeze(1)
            val = float(nn.functional.mse_loss(pred, y_val))
            # "accuracy" of a regression: the share of predictions within 0.5
            acc = float(((pred - y_val).abs() < 0.5).float().mean())
        buf = io.BytesIO()
        torch.save(
            {
                "epoch": epoch,
                "model_state_dict": net.state_dict(),
                "optimizer_state_dict": opt.state_dict(),
                "loss": train_loss,
            },
            buf,
        )
        body = buf.getvalue()
        path = os.path.join(outdir, "%s-%s-epoch%d.pth" % (model_name, run, epoch))
        with open(path, "wb") as f:
            f.write(body)
        ck = upload(
            base,
            model_name,
            body,
            epoch=epoch,
            step=step,
            loss=repr(train_loss),
            run=run,
            **{"metric.val_loss": repr(val), "metric.acc": repr(acc)},
        )
        shapes = {"/model_state_dict/" + k: list(v.shape) for k, v in net.state_dict().items()}
        uploads.append(
            {
                "id": ck["id"],
                "epoch": epoch,
                "step": step,
                "loss": train_loss,
                "val_loss": val,
                "acc": acc,
                "sha256": hashlib.sha256(body).hexdigest(),
                "path": path,
                "shapes": shapes,
            }
        )
    # A tiny checkpoint for the scale test: one small state_dict.
    tiny = os.path.join(outdir, "tiny.pth")
    torch.save({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8), "b": torch.zeros(8)}, tiny)
    json.dump({"uploads": uploads, "tiny": tiny}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
