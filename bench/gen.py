#!/usr/bin/python3
"""Input files for bench/bench.py, written with torch (run under /usr/bin/python3).

  gen.py big OUT SEED MB       a state_dict of random-normal float32 tensors of
                               about MB megabytes: 4 MiB layers plus eight
                               1 MiB tensors named probe.0 .. probe.7
  gen.py index OUT             a state_dict of 200 tensors of 16 float32 each
  gen.py mlp OUTDIR EPOCHS     trains an MLP on sklearn's digits for EPOCHS
                               epochs (Adam), saving a training checkpoint per
                               epoch (epochN.pt: epoch, model and optimizer
                               state, loss) and the final weights' raw bytes
                               (weights.f32, weights.bf16); prints one JSON
                               line with the accuracy and the losses

No trained weights can be downloaded on this machine (torchvision's pretrained
weights come from the internet), so the codec is measured on weights this
script trains itself. Everything is seeded: two runs write the same bytes.
"""

import json
import os
import sys

import torch


def big(out, seed, mb):
    torch.manual_seed(seed)
    sd = {}
    nlayers = max(1, (mb - 8) // 4)
    for i in range(nlayers):
        sd["layers.%d.weight" % i] = torch.randn(1024, 1024)
    for i in range(8):
        sd["probe.%d" % i] = torch.randn(256, 1024)
    torch.save(sd, out)


def index(out):
    torch.manual_seed(7)
    sd = {"block.%d.weight" % i: torch.randn(16) for i in range(200)}
    torch.save(sd, out)


def mlp(outdir, epochs):
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x))
    x, y = x[perm], y[perm]
    ntrain = int(len(x) * 0.8)
    xt, yt, xv, yv = x[:ntrain], y[:ntrain], x[ntrain:], y[ntrain:]
    hidden = 1024
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    losses = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(ntrain)
        for i in range(0, ntrain, 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss = lossf(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            vloss = float(lossf(out, yv))
            acc = float((out.argmax(1) == yv).float().mean())
        losses.append(round(vloss, 5))
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": opt.state_dict(), "loss": vloss,
                    "accuracy": acc},
                   os.path.join(outdir, "epoch%d.pt" % epoch))
    params = [p.detach().contiguous() for p in model.state_dict().values()]
    with open(os.path.join(outdir, "weights.f32"), "wb") as f:
        for p in params:
            f.write(p.float().numpy().tobytes())
    with open(os.path.join(outdir, "weights.bf16"), "wb") as f:
        for p in params:
            f.write(p.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    nparams = sum(p.numel() for p in params)
    print(json.dumps({"params": nparams, "hidden": hidden, "epochs": epochs,
                      "val_accuracy": round(acc, 4), "val_losses": losses}))


def main(argv):
    if len(argv) == 5 and argv[1] == "big":
        big(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 3 and argv[1] == "index":
        index(argv[2])
    elif len(argv) == 4 and argv[1] == "mlp":
        mlp(argv[2], int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
