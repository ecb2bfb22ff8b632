#!/usr/bin/python3
"""ckptd against its peers (SPEC 7), every figure measured in this run.

Called by bench/run.sh (which installs nginx, wrk, curl, zstd and sklearn when
missing and builds build/codec_bench); see bench/README.md for how to read the
table. Standard library only: torch runs in child processes (bench/gen.py).

Peers: nginx from Debian with `dav_methods PUT` as the plain HTTP file store
(started here from a config in the scratch directory, on a free 127.0.0.1
port), and zstd -1 on the same raw bytes (inside build/codec_bench).

Environment:
  BENCH_QUICK=1      256 MB checkpoints instead of 1 GB
  BENCH_INDEX_N=N    checkpoints in the index-scale test (default 10000)
  BENCH_REPS=N       repetitions of each upload/download timing (default 3)
  BENCH_WRK_SECS=N   duration of each wrk run (default 10)
  BENCH_KEEP=1       keep the scratch directory and the daemon logs
  CKPTD_BIN          the daemon (default build/ckptd)
  TMPDIR             where the scratch directory goes (same disk for both peers)
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = "/usr/bin/python3"  # Debian's, with torch
API = "/api/v1"

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZE_MB = 256 if QUICK else 1024
INDEX_N = int(os.environ.get("BENCH_INDEX_N", "10000"))
REPS = max(1, int(os.environ.get("BENCH_REPS", "3")))
WRK_SECS = max(1, int(os.environ.get("BENCH_WRK_SECS", "10")))
KEEP = os.environ.get("BENCH_KEEP") == "1"
BIN = os.environ.get("CKPTD_BIN") or os.path.join(REPO, "build", "ckptd")
CODEC_BENCH = os.path.join(REPO, "build", "codec_bench")
MLP_EPOCHS = 4

T_START = time.time()


def log(msg):
    print("[%6.1fs] %s" % (time.time() - T_START, msg), file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def median(xs):
    return statistics.median(xs)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


def sync_time():
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def curl(args, want, body="/dev/null"):
    """Runs curl -s with args, the answer to body; returns (seconds, http
    code), checking the code."""
    out = run(["curl", "-s", "-o", body, "-w", "%{http_code} %{time_total}"] + args).stdout
    code, secs = out.split()
    if int(code) not in want:
        raise RuntimeError("curl %s answered %s" % (" ".join(args), code))
    return float(secs), int(code)


LIVE = []  # every daemon started, stopped at the end whatever happens


class Ckptd:
    """One daemon on a free port with its own data directory."""

    def __init__(self, scratch, name, compress="auto"):
        LIVE.append(self)
        self.data = os.path.join(scratch, "data-" + name)
        self.logpath = os.path.join(scratch, "ckptd-%s.log" % name)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        shutil.rmtree(self.data, ignore_errors=True)
        self.logf = open(self.logpath, "w")
        self.proc = None
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data", self.data,
             "--compress", compress], stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.time() + 15
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", API + "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("ckptd did not start; see %s" % self.logpath)
            time.sleep(0.05)

    def ckpt_url(self, model, rest=""):
        return "%s%s/models/%s/checkpoints%s" % (self.url, API, model, rest)

    def hwm_mb(self):
        return hwm_kb(self.pid) / 1024.0

    def stop(self, remove=True):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        if remove:
            shutil.rmtree(self.data, ignore_errors=True)


class Nginx:
    """Debian's nginx with a config of its own in scratch/nginx (runs as root)."""

    def __init__(self, scratch):
        self.dir = os.path.join(scratch, "nginx")
        self.www = os.path.join(self.dir, "www")
        for d in ("www", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        conf = os.path.join(self.dir, "nginx.conf")
        d = self.dir
        with open(conf, "w") as f:
            f.write("""user root;
worker_processes auto;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        root %(d)s/www;
        location / {
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }
    }
}
""" % {"d": d, "port": self.port})
        self.proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", d + "/error.log"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("nginx did not start; see %s/error.log" % d)
                time.sleep(0.05)

    def worker_hwm_mb(self):
        """The largest VmHWM among the master's children (the workers)."""
        best = 0
        try:
            kids = open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read()
        except OSError:
            return 0.0
        for pid in kids.split():
            try:
                best = max(best, hwm_kb(int(pid)))
            except OSError:
                pass
        return best / 1024.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- the table

ROWS = []


def row(figure, ours, peer, ratio, goal, ok):
    verdict = "-" if ok is None else ("ok" if ok else "MISS")
    ROWS.append((figure, ours, peer, ratio, goal, verdict))


def section(title):
    ROWS.append((title,))


def print_table(out):
    heads = ("figure", "ours", "peer", "ratio", "goal", "verdict")
    body = [r for r in ROWS if len(r) == 6]
    w = [max(len(heads[i]), *(len(r[i]) for r in body)) for i in range(6)]
    line = "  ".join("%-*s" % (w[i], heads[i]) for i in range(6))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in ROWS:
        if len(r) == 1:
            print("[%s]" % r[0], file=out)
        else:
            print("  ".join(("%-*s" if i == 0 else "%*s") % (w[i], r[i]) for i in range(6)),
                  file=out)


# ---------------------------------------------------------------- machine

def machine_facts():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    curl_v = run(["curl", "--version"]).stdout.split("\n")[0].split(" (")[0]
    ckptd_v = run([BIN, "--version"]).stdout.strip()
    fs = "?"
    try:
        fs = run(["df", "-T", tempfile.gettempdir()]).stdout.split("\n")[1].split()[1]
    except (subprocess.CalledProcessError, IndexError):
        pass
    return [
        "nproc %d, CPU %s, RAM %.1f GiB, kernel %s" % (os.cpu_count(), cpu, mem, os.uname().release),
        "%s; %s; %s; scratch on %s (%s)" % (ckptd_v, nginx_v.replace("nginx version: ", ""),
                                              curl_v, tempfile.gettempdir(), fs),
    ]


def loadavg():
    return open("/proc/loadavg").read().split()[0]


# ---------------------------------------------------------------- figures

def bench_files(scratch):
    """Generates the upload files: the main checkpoint and three others (distinct
    data, for the concurrent uploads), the 200-tensor file and the MLP run."""
    files = []
    t0 = time.time()
    for seed in range(4):
        p = os.path.join(scratch, "ckpt%d.pt" % seed)
        run([PY, os.path.join(HERE, "gen.py"), "big", p, str(seed + 1), str(SIZE_MB)])
        files.append(p)
    log("generated 4 checkpoints of %.1f MB in %.0fs" % (os.path.getsize(files[0]) / 1e6,
                                                          time.time() - t0))
    small = os.path.join(scratch, "index.pt")
    run([PY, os.path.join(HERE, "gen.py"), "index", small])
    mlpdir = os.path.join(scratch, "mlp")
    os.makedirs(mlpdir)
    t0 = time.time()
    info = json.loads(run([PY, os.path.join(HERE, "gen.py"), "mlp", mlpdir,
                           str(MLP_EPOCHS)]).stdout.strip().split("\n")[-1])
    log("trained the MLP in %.0fs: %s" % (time.time() - t0, info))
    return files, small, mlpdir, info


def bench_uploads(scratch, ngx, big):
    """New uploads (fresh store each time, compression off) interleaved with
    nginx PUTs of the same file; then the same file under a second model (all
    tensors stored). Leaves the last daemon running for the downloads."""
    size = os.path.getsize(big)
    ours_new, ours_dup, ours_hwm = [], [], []
    put, put_sync = [], []
    d = None
    for rep in range(REPS):
        # nginx: a new file each time (no rename over an old one)
        target = os.path.join(ngx.www, "ckpt.pt")
        if os.path.exists(target):
            os.unlink(target)
        sync_time()
        t, _ = curl(["-T", big, ngx.url + "/ckpt.pt"], (201, 204))
        s = sync_time()
        put.append(t)
        put_sync.append(t + s)
        log("nginx PUT %.2fs (+ sync %.2fs)" % (t, s))

        if d:
            d.stop()
        d = Ckptd(scratch, "up%d" % rep, compress="off")
        sync_time()
        t, _ = curl(["-T", big, d.ckpt_url("m1", "?epoch=1&loss=0.5")], (201,))
        ours_new.append(t)
        ours_hwm.append(d.hwm_mb())
        sync_time()
        answer = os.path.join(scratch, "answer.json")
        t2, _ = curl(["-T", big, d.ckpt_url("m2", "?epoch=1&loss=0.5")], (201,), answer)
        ours_dup.append(t2)
        new_bytes = json.load(open(answer))["dedup"]["new_bytes"]
        if new_bytes != 0:
            raise RuntimeError("the second upload added %d bytes" % new_bytes)
        log("ckptd new upload %.2fs, all-stored upload %.2fs, VmHWM %.1f MB"
            % (t, t2, ours_hwm[-1]))
    mb = size / 1e6
    on, pp, ps, od = median(ours_new), median(put), median(put_sync), median(ours_dup)
    section("upload, %.0f MB torch checkpoint, curl -T, loopback, median of %d" % (mb, REPS))
    row("new checkpoint (--compress off) vs nginx PUT", "%.2f s" % on, "%.2f s" % pp,
        "%.2fx" % (on / pp), "<= 1.5x", on / pp <= 1.5)
    row("  same, vs nginx PUT + sync (ckptd fsyncs)", "%.2f s" % on, "%.2f s" % ps,
        "%.2fx" % (on / ps), "<= 1.5x", on / ps <= 1.5)
    row("all tensors stored already vs nginx PUT", "%.2f s" % od, "%.2f s" % pp,
        "%.2fx" % (od / pp), "<= 1.0x", od / pp <= 1.0)
    return d, max(ours_hwm), ngx.worker_hwm_mb()


def bench_downloads(d, ngx, big):
    size = os.path.getsize(big)
    ours, peer = [], []
    for rep in range(REPS):
        ours.append(curl([d.ckpt_url("m1", "/best/file")], (200,))[0])
        peer.append(curl([ngx.url + "/ckpt.pt"], (200,))[0])
        log("GET ckptd %.2fs, nginx %.2fs" % (ours[-1], peer[-1]))
    o, p = size / 1e6 / median(ours), size / 1e6 / median(peer)
    section("download, same file, curl -o /dev/null, median of %d" % REPS)
    row("full GET throughput vs nginx GET", "%.0f MB/s" % o, "%.0f MB/s" % p, "%.2fx" % (o / p),
        ">= 0.7x", o / p >= 0.7)

    # one 1 MiB tensor out of the checkpoint, on a keep-alive connection
    # (curl per request would add its own start-up to a few-ms figure)
    path = API + "/models/m1/checkpoints/best/tensors/probe.3?format=raw"
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    times = []
    for i in range(21):
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200 or len(body) != 1 << 20:
            raise RuntimeError("tensor GET: %d, %d bytes" % (r.status, len(body)))
        if i:
            times.append(dt)
    c.close()
    t, full = median(times), median(ours)
    row("one 1 MiB tensor (format=raw) vs full download", "%.1f ms" % (t * 1e3),
        "%.0f ms" % (full * 1e3), "%.2f%%" % (100 * t / full), "< 2%", t / full < 0.02)
    return median(peer)


def bench_memory(scratch, files, off_hwm, ngx_hwm, ngx_get):
    d = Ckptd(scratch, "mem1")
    curl(["-T", files[0], d.ckpt_url("mem", "?epoch=1")], (201,))
    one = d.hwm_mb()
    log("VmHWM after one upload (auto): %.1f MB" % one)
    # the same download from a compressed store (the default): decoding costs
    gets = []
    for rep in range(REPS):
        gets.append(curl([d.ckpt_url("mem", "/latest/file")], (200,))[0])
    stored = json.loads(run(["curl", "-s", "-f", d.url + API + "/stats"]).stdout)
    d.stop()
    size = os.path.getsize(files[0])
    o, p = size / 1e6 / median(gets), size / 1e6 / ngx_get
    log("GET from a compressed store: %s s; stats %s" % (gets, stored))
    ROWS.append(("download, same file from a --compress auto store (the default), median of %d"
                 % REPS,))
    row("full GET throughput vs nginx GET (above)", "%.0f MB/s" % o, "%.0f MB/s" % p,
        "%.2fx" % (o / p), ">= 0.7x", o / p >= 0.7)
    section("memory: daemon peak RSS (VmHWM), fresh daemon each, --compress auto")
    d = Ckptd(scratch, "mem4")
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", f,
                               d.ckpt_url("mem%d" % i, "?epoch=1")],
                              stdout=subprocess.PIPE, text=True)
             for i, f in enumerate(files)]
    codes = [p.communicate()[0] for p in procs]
    four = d.hwm_mb()
    d.stop()
    if codes != ["201"] * 4:
        raise RuntimeError("concurrent uploads answered %s" % codes)
    log("VmHWM after four concurrent uploads (auto): %.1f MB" % four)
    mb = os.path.getsize(files[0]) / 1e6
    row("one %.0f MB upload" % mb, "%.1f MB" % one, "-", "-", "< 64 MB", one < 64)
    row("  same, --compress off (upload runs above)", "%.1f MB" % off_hwm,
        "%.1f MB" % ngx_hwm, "%.2fx" % (off_hwm / ngx_hwm) if ngx_hwm else "-", "< 64 MB",
        off_hwm < 64)
    row("4 uploads of %.0f MB at once (distinct data)" % mb, "%.1f MB" % four, "-", "-",
        "< 128 MB", four < 128)


CODEC_RE = re.compile(r"codec (\S+)\s+ratio ([\d.]+)\s+enc\s+([\d.]+) MB/s\s+dec\s+([\d.]+) MB/s")
ZSTD_RE = re.compile(r"zstd -1\s+ratio ([\d.]+)\s+enc\s+([\d.]+) MB/s\s+dec\s+([\d.]+) MB/s")


def codec_bench(args):
    out = run([CODEC_BENCH] + args).stdout
    res = []
    lines = out.split("\n")
    for i, line in enumerate(lines):
        m = CODEC_RE.search(line)
        if m:
            z = ZSTD_RE.search(lines[i + 1])
            res.append({"codec": m.group(1), "ratio": float(m.group(2)),
                        "enc": float(m.group(3)), "dec": float(m.group(4)),
                        "zratio": float(z.group(1)), "zenc": float(z.group(2)),
                        "zdec": float(z.group(3)), "mb": float(line.split()[1])})
    return res


def codec_rows(label, fp32, bf16):
    goals = {"float32": 0.84, "bfloat16": 0.68}
    for name, r in (("float32", fp32), ("bfloat16", bf16)):
        g = goals[name]
        row("%s %s (%.1f MB): ratio, codec %s vs zstd -1" % (label, name, r["mb"], r["codec"]),
            "%.4f" % r["ratio"], "%.4f" % r["zratio"], "%.3fx" % (r["ratio"] / r["zratio"]),
            "<= %.2f" % g, r["ratio"] <= g)
    for name, r in (("float32", fp32), ("bfloat16", bf16)):
        row("%s %s: compression speed" % (label, name), "%.0f MB/s" % r["enc"],
            "%.0f MB/s" % r["zenc"], "%.2fx" % (r["enc"] / r["zenc"]), ">= 1x",
            r["enc"] >= r["zenc"])
    for name, r in (("float32", fp32), ("bfloat16", bf16)):
        row("%s %s: decompression, 1 thread" % (label, name), "%.2f GB/s" % (r["dec"] / 1e3),
            "%.2f GB/s" % (r["zdec"] / 1e3), "%.2fx" % (r["dec"] / r["zdec"]), ">= 1 GB/s",
            r["dec"] >= 1000)


def bench_codec(mlpdir, info):
    t = codec_bench([os.path.join(mlpdir, "weights.f32"), "float32"])
    t += codec_bench([os.path.join(mlpdir, "weights.bf16"), "bfloat16"])
    s = codec_bench([])
    log("codec_bench: trained %s, synthetic %s" % (t, s))
    section("codec (storage/codec.c) vs zstd -1 on the same bytes, best of 5 "
            "(build/codec_bench)")
    codec_rows("trained", t[0], t[1])
    codec_rows("synthetic", s[0], s[1])
    return ("trained = all %d parameters of an MLP 64-%d-%d-%d-10 trained here for %d epochs "
            "(Adam) on sklearn's digits (val. accuracy %.3f); bfloat16 = the same weights "
            "rounded; synthetic = random normal, std 0.02, 64 MiB fp32 / 32 MiB bf16 "
            "(no pretrained weights can be downloaded on this machine)"
            % (info["params"], info["hidden"], info["hidden"], info["hidden"], info["epochs"],
               info["val_accuracy"]))


WRK_RE = re.compile(r"Requests/sec:\s+([\d.]+)")


def wrk(url):
    out = run(["wrk", "-t2", "-c32", "-d%ds" % WRK_SECS, "--latency", url]).stdout
    m = WRK_RE.search(out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or errs:
        raise RuntimeError("wrk %s:\n%s" % (url, out))
    return float(m.group(1))


def upload_many(port, model, path, n, threads=4):
    """n uploads of the file at path through keep-alive connections; returns
    seconds. Epoch i, a random loss, a metric."""
    body = open(path, "rb").read()
    rnd = random.Random(5)
    losses = [round(rnd.uniform(0.05, 3.0), 6) for _ in range(n)]
    counter = iter(range(n))
    lock = threading.Lock()
    errors = []

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None or errors:
                break
            q = urllib.parse.urlencode({"epoch": i, "step": i * 100, "loss": losses[i],
                                        "metric.acc": 1 - losses[i] / 3})
            c.request("POST", "%s/models/%s/checkpoints?%s" % (API, model, q), body=body,
                      headers={"Content-Type": "application/octet-stream"})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                errors.append(r.status)
        c.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("index uploads answered %s" % errors[:5])
    return time.perf_counter() - t0


def timed_gets(port, path, n=20):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, size = [], 0
    for i in range(n + 1):
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError("GET %s: %d" % (path, r.status))
        size = len(body)
        if i:
            times.append(dt)
    c.close()
    return median(times), size


def bench_metadata_and_index(scratch, ngx, mlpdir, small):
    d = Ckptd(scratch, "meta")
    for e in range(1, MLP_EPOCHS + 1):
        curl(["-T", os.path.join(mlpdir, "epoch%d.pt" % e), d.ckpt_url("mlp")], (201,))
    best = d.ckpt_url("mlp", "/best")
    body = run(["curl", "-s", "-f", best]).stdout
    with open(os.path.join(ngx.www, "best.json"), "w") as f:
        f.write(body)
    ours = wrk(best)
    peer = wrk(ngx.url + "/best.json")
    log("wrk /best: ckptd %.0f req/s, nginx static copy %.0f req/s" % (ours, peer))
    section("metadata: wrk -t2 -c32 -d%ds, on this machine (wrk shares the cores)" % WRK_SECS)
    row("GET .../mlp/checkpoints/best (%d checkpoints, %d B JSON) vs nginx static copy"
        % (MLP_EPOCHS, len(body)), "%.0f req/s" % ours, "%.0f req/s" % peer,
        "%.2fx" % (ours / peer), ">= 10000 req/s", ours >= 10000)

    t = upload_many(d.port, "idx", small, INDEX_N)
    log("index: %d uploads of a 200-tensor checkpoint in %.1fs (%.0f/s)"
        % (INDEX_N, t, INDEX_N / t))
    section("index scale: %d checkpoints x 200 tensors in one model, keep-alive, median of 20"
            % INDEX_N)
    base = API + "/models/idx/checkpoints"
    for label, path in (("list ?limit=100", base + "?limit=100"),
                        ("list ?order=loss&limit=100", base + "?order=loss&limit=100"),
                        ("best (JSON with its 200 tensors)", base + "/best")):
        secs, size = timed_gets(d.port, path)
        goal = label != "list ?order=loss&limit=100"
        row("%s (%d B)" % (label, size), "%.1f ms" % (secs * 1e3), "-", "-",
            "< 50 ms" if goal else "(info)", secs < 0.05 if goal else None)
    ours = wrk(d.url + base + "/best")
    row("  wrk on that best", "%.0f req/s" % ours, "-", "-", "(info)", None)
    row("  %d uploads, 4 keep-alive clients" % INDEX_N, "%.1f s" % t, "-", "-",
        "(%.0f uploads/s)" % (INDEX_N / t), None)
    d.stop()


def main():
    if not os.access(BIN, os.X_OK):
        print("bench: %s is missing; run make first" % BIN, file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="ckptd-bench.")
    log("scratch %s, %s, load average %s" % (scratch, "QUICK (256 MB)" if QUICK else "1 GB",
                                           loadavg()))
    facts = machine_facts()
    load0 = loadavg()
    ngx = None
    note = ""
    ok = False
    try:
        files, small, mlpdir, info = bench_files(scratch)
        ngx = Nginx(scratch)
        d, off_hwm, ngx_hwm = bench_uploads(scratch, ngx, files[0])
        ngx_get = bench_downloads(d, ngx, files[0])
        d.stop()
        os.unlink(os.path.join(ngx.www, "ckpt.pt"))
        bench_memory(scratch, files, off_hwm, ngx_hwm, ngx_get)
        note = bench_codec(mlpdir, info)
        bench_metadata_and_index(scratch, ngx, mlpdir, small)
        ok = True
    except Exception:  # print what was measured, then the failure
        traceback.print_exc()
    finally:
        if ngx:
            ngx.stop()
        for d in LIVE:
            d.stop(remove=False)
        if KEEP:
            log("kept %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    out = sys.stdout
    print("", file=out)
    print("ckptd bench: all figures are ratios against peers measured in this run", file=out)
    for f in facts:
        print("  " + f, file=out)
    print("  load average %s at start, %s at end; %s; run took %.0f s"
          % (load0, loadavg(), time.strftime("%Y-%m-%d %H:%M %Z"), time.time() - T_START),
          file=out)
    print("", file=out)
    print_table(out)
    print("", file=out)
    print("codec data: " + note, file=out)
    misses = sum(1 for r in ROWS if len(r) == 6 and r[5] == "MISS")
    goals = sum(1 for r in ROWS if len(r) == 6 and r[5] in ("ok", "MISS"))
    print("%d of %d goals met%s" % (goals - misses, goals, "" if ok else
                                    "; THE RUN FAILED before the end (see above)"), file=out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
