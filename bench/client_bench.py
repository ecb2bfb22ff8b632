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
  blocks the caller, against a synchronous save of a state as new, each rep;
- resumed: new weights saved through a proxy that cuts the connection once
  90% of the file has gone through; the client retries, and the bytes of
  the retry (counted by the client) are set against the file.
Medians of REPS; the first background save (fresh pages for its snapshot)
is reported apart.
"""

import json
import os
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients", "python"))

import torch  # noqa: E402

from ckptd import Client  # noqa: E402


def cut_proxy(upstream, cut):
    """-> (url, state): a TCP proxy to upstream (host, port) that cuts the
    first connection whose client sent more than `cut` bytes, both ways at
    once, as a lost network does. state["cut"] tells whether it did."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # cut mid-write
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    state = {"cut": False}
    lock = threading.Lock()

    def pump(a, b, counted):
        sent = 0
        try:
            while True:
                buf = a.recv(1 << 16)
                if not buf:
                    b.shutdown(socket.SHUT_WR)
                    return
                if counted:
                    with lock:
                        if not state["cut"] and sent + len(buf) > cut:
                            state["cut"] = True
                            b.sendall(buf[:cut - sent])
                            for s in (a, b):
                                s.shutdown(socket.SHUT_RDWR)
                                s.close()
                            return
                sent += len(buf)
                b.sendall(buf)
        except OSError:
            return

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            u = socket.create_connection(upstream)
            threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=pump, args=(u, c, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return "http://127.0.0.1:%d" % ls.getsockname()[1], state


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

    # resumed: one run (the cut leaves its storages kept for an hour)
    for t in sd.values():
        t.add_(1e-3)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    purl, state = cut_proxy((host, int(port)), int(out["file_size"] * 0.9))
    with Client(purl) as pc:
        t0 = time.perf_counter()
        pc.save(sd, "resumed")
        out["resumed_s"] = time.perf_counter() - t0
        out["resumed_wire"] = pc.last_save_wire
    out["resumed_cut"] = state["cut"]
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
