#!/usr/bin/python3
"""The Python client's saves against a running ckptd, for bench.py's
"client" section (run in a child process: it needs torch).

    client_bench.py URL MIB REPS   -> one JSON line on stdout

A state_dict of MIB MiB of float32 (4 MiB tensors, seeded) is saved:
- plain: save(thin=False), every byte on the wire;
- thin, unchanged: the same weights again (thin, the default), bytes on the
  wire counted by the client;
- thin, a tenth changed: one tensor in ten changed in place;
- background: after every tensor changed, the time save(background=True)
  blocks the caller, against a synchronous save of a state as new, each rep.
Medians of REPS; the first background save (fresh pages for its snapshot)
is reported apart.
"""

import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients", "python"))

import torch  # noqa: E402

from ckptd import Client  # noqa: E402


def main():
    url, mib, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    g = torch.Generator().manual_seed(7)
    n = max(1, mib // 4)
    sd = {"layer%d.weight" % i: torch.randn(1024, 1024, generator=g) for i in range(n)}
    c = Client(url)
    out = {"tensors": n, "bytes": n * 4 << 20}

    def timed(model, **kw):
        t0 = time.perf_counter()
        j = c.save(sd, model, **kw)
        return time.perf_counter() - t0, c.last_save_wire, j

    plain, thin, tenth = [], [], []
    for r in range(reps):
        for t in sd.values():  # new weights: nothing stored yet
            t.add_(1e-3)
        plain.append(timed("plain", thin=False))
        thin.append(timed("thin"))
        for i, t in enumerate(sd.values()):
            if i % 10 == r % 10:
                t.add_(1e-3)
        tenth.append(timed("thin"))
    out["file_size"] = plain[0][2]["size"]
    out["plain_s"] = statistics.median(p[0] for p in plain)
    out["thin_s"] = statistics.median(p[0] for p in thin)
    out["thin_wire"] = statistics.median(p[1] for p in thin)
    out["tenth_s"] = statistics.median(p[0] for p in tenth)
    out["tenth_wire"] = statistics.median(p[1] for p in tenth)
    out["tenth_changed"] = statistics.median(p[2]["dedup"]["new_bytes"] for p in tenth)

    sync, stall = [], []
    for r in range(reps + 1):
        for t in sd.values():
            t.add_(1e-3)
        t0 = time.perf_counter()
        c.save(sd, "sync")
        sync.append(time.perf_counter() - t0)
        for t in sd.values():
            t.add_(1e-3)
        t0 = time.perf_counter()
        h = c.save(sd, "background", background=True)
        stall.append(time.perf_counter() - t0)
        h.wait()
    out["sync_s"] = statistics.median(sync[1:])
    out["stall_s"] = statistics.median(stall[1:])
    out["first_stall_s"] = stall[0]
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
