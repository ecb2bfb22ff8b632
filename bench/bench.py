#!/usr/bin/python3
"""ckptd against its peers (SPEC 7), every figure measured in this run.

Called by bench/run.sh (which installs nginx, wrk, curl, zstd and sklearn when
missing and builds build/codec_bench); see bench/README.md for how to read the
table. Standard library only: torch runs in child processes (bench/gen.py).

Peers: nginx from Debian with `dav_methods PUT` as the plain HTTP file store
(started here from a config in the scratch directory, on a free 127.0.0.1
port), zstd -1 on the same raw bytes (inside build/codec_bench), the SQLite
index for the PostgreSQL one, and the S3 endpoint itself (Ceph RGW, direct
SigV4 requests with curl) for the S3 blob store. PostgreSQL and RGW are
started with the project's own tests/services/pg.sh and rgw.sh.

Environment:
  BENCH_QUICK=1      256 MB checkpoints instead of 1 GB
  BENCH_ONLY=a,b     only these sections: nginx, memory, codec, index, s3, client,
                     dcp, run (default all)
  BENCH_INDEX_N=N    checkpoints in the index-scale test (default 10000)
  BENCH_REPS=N       repetitions of each upload/download timing (default 3)
  BENCH_WRK_SECS=N   duration of each wrk run (default 10)
  BENCH_KEEP=1       keep the scratch directory and the daemon logs
  CKPTD_BIN          the daemon (default build/ckptd)
  TMPDIR             where the scratch directory goes (same disk for both peers)
"""

import glob
import hashlib
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
# sections to run (comma-separated: files, nginx, memory, codec, index, s3, client, dcp,
# run);
# all when unset
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))


def wanted(name):
    return not ONLY or name in ONLY
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


def run_service(cmd):
    """run() for the service scripts: a failure names the script's stderr."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode,
                                                   p.stderr.strip()[-2000:]))
    return p.stdout


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

    def __init__(self, scratch, name, compress="auto", extra=(), env=None):
        LIVE.append(self)
        self.name = name
        self.data = os.path.join(scratch, "data-" + name)
        self.logpath = os.path.join(scratch, "ckptd-%s.log" % name)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        shutil.rmtree(self.data, ignore_errors=True)
        self.logf = open(self.logpath, "w")
        self.proc = None
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data", self.data,
             "--compress", compress] + list(extra), stdout=self.logf, stderr=subprocess.STDOUT,
            env=env)
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


SERVICES = []  # PostgreSQL and RGW, stopped at the end whatever happens
PG_SH = os.path.join(REPO, "tests", "services", "pg.sh")
RGW_SH = os.path.join(REPO, "tests", "services", "rgw.sh")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class Postgres:
    """A PostgreSQL server of its own (tests/services/pg.sh) in a directory
    under /tmp that the postgres user can traverse (the scratch directory is
    root's, mode 0700)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ckptd-bench-pg.", dir="/tmp")
        SERVICES.append(self)
        self.url = run_service(["sh", PG_SH, "start", self.dir]).strip().split("\n")[-1]

    def stop(self):
        if self.dir:
            subprocess.run(["sh", PG_SH, "stop", self.dir], stdout=subprocess.DEVNULL)
            if KEEP:
                log("kept %s" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class Rgw:
    """Ceph RGW (tests/services/rgw.sh: one mon, one memstore OSD, one
    gateway), with direct SigV4 requests to it through curl, which streams
    the file from disk exactly as `curl -T` does for ckptd."""

    def __init__(self):
        SERVICES.append(self)
        self.dir = None
        out = run_service(["sh", RGW_SH, "start"])
        env = dict(re.findall(r"^export (\w+)='([^']*)'$", out, re.M))
        self.dir = env["CKPTD_RGW_DIR"]
        self.endpoint = env["CKPTD_TEST_S3_ENDPOINT"]
        self.bucket = env["CKPTD_TEST_S3_BUCKET"]
        self.region = env["CKPTD_TEST_S3_REGION"]
        self.key, self.secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=self.key,
                        AWS_SECRET_ACCESS_KEY=self.secret)
        sys.path.insert(0, os.path.join(REPO, "tests", "integration", "lib"))
        import s3  # the tests' standard-library SigV4 client: listing, deleting
        self.client = s3.Client(self.endpoint, self.bucket, self.region, self.key, self.secret)

    def url(self, key):
        return "%s/%s/%s" % (self.endpoint, self.bucket, key)

    def sigv4(self, payload_sha256):
        return ["--aws-sigv4", "aws:amz:%s:s3" % self.region, "--user",
                "%s:%s" % (self.key, self.secret), "-H", "x-amz-content-sha256: " + payload_sha256]

    def put(self, path, key, payload_sha256):
        """curl -T of the file to key; returns curl's time_total."""
        return curl(self.sigv4(payload_sha256) + ["-T", path, self.url(key)], (200,))[0]

    def get(self, key):
        return curl(self.sigv4(EMPTY_SHA256) + [self.url(key)], (200,))[0]

    def put_pieces(self, pieces, prefix, parallel):
        """PUTs each (path, payload SHA-256) of pieces as an object under
        prefix, `parallel` at once, through one curl (its --parallel: one
        process, connections reused, as ckptd's PUT workers do); returns the
        wall time, checking every answer."""
        cfg = os.path.join(os.path.dirname(pieces[0][0]), "put.curlrc")
        with open(cfg, "w") as f:
            for i, (path, sha) in enumerate(pieces):
                if i:
                    f.write("next\n")
                f.write('aws-sigv4 = "aws:amz:%s:s3"\nuser = "%s:%s"\n'
                        'header = "x-amz-content-sha256: %s"\nupload-file = "%s"\n'
                        'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nurl = "%s"\n'
                        % (self.region, self.key, self.secret, sha, path,
                           self.url("%s%s" % (prefix, os.path.basename(path)))))
        t0 = time.perf_counter()
        out = run(["curl", "-s", "--parallel", "--parallel-max", str(parallel), "-K", cfg]).stdout
        secs = time.perf_counter() - t0
        codes = out.split()
        if len(codes) != len(pieces) or set(codes) != {"200"}:
            raise RuntimeError("PUTs of %d pieces answered %s" % (len(pieces), sorted(set(codes))))
        return secs

    def blob_args(self, prefix):
        return ["--blobs", "s3://%s/%s" % (self.bucket, prefix), "--s3-endpoint", self.endpoint,
                "--s3-region", self.region]

    def clear(self, prefix):
        """Deletes every object under prefix and has RGW's garbage collector
        free their data now (the memstore OSD holds it in RAM, capped at 4 GiB;
        RGW frees deleted data only after hours by default)."""
        self.client.delete_prefix(prefix)
        run(["radosgw-admin", "gc", "process", "--include-all"],
            env=dict(os.environ, CEPH_CONF=os.path.join(self.dir, "ceph.conf")))

    def stop(self):
        if self.dir:
            subprocess.run(["sh", RGW_SH, "stop", self.dir], stdout=subprocess.DEVNULL)
            self.dir = None


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
    pg_v = rgw_v = "?"
    pgs = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                 key=lambda b: [int(x) for x in re.findall(r"\d+", b)])
    if pgs:
        m = re.search(r"PostgreSQL\) (\S+)", run([pgs[-1], "--version"]).stdout)
        pg_v = "PostgreSQL " + (m.group(1) if m else "?")
    if shutil.which("radosgw"):
        m = re.search(r"ceph version (\S+)", run(["radosgw", "--version"]).stdout)
        rgw_v = "Ceph RGW " + (m.group(1) if m else "?")
    fs = "?"
    try:
        fs = run(["df", "-T", tempfile.gettempdir()]).stdout.split("\n")[1].split()[1]
    except (subprocess.CalledProcessError, IndexError):
        pass
    return [
        "nproc %d, CPU %s, RAM %.1f GiB, kernel %s" % (os.cpu_count(), cpu, mem, os.uname().release),
        "%s; %s; %s; %s; %s; scratch on %s (%s)"
        % (ckptd_v, nginx_v.replace("nginx version: ", ""), curl_v, pg_v, rgw_v,
           tempfile.gettempdir(), fs),
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
    # Round 0 is a warm-up, not counted: on a virtual machine the first
    # writes into memory the guest has not touched for a while pay a host
    # fault per page (1 GB: 4.8-6.6 s against 0.7-0.9 s into pages just
    # freed, bench/RESULTS.md), and whoever writes most first pays it.
    for rep in range(REPS + 1):
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
        log("ckptd new upload %.2fs, all-stored upload %.2fs, VmHWM %.1f MB%s"
            % (t, t2, ours_hwm[-1], " (warm-up, not counted)" if rep == 0 else ""))
        if rep == 0:
            for v in (ours_new, ours_dup, put, put_sync):
                v.pop()
    mb = size / 1e6
    on, pp, ps, od = median(ours_new), median(put), median(put_sync), median(ours_dup)
    section("upload, %.0f MB torch checkpoint, curl -T, loopback, median of %d" % (mb, REPS))
    row("new checkpoint (--compress off) vs nginx PUT", "%.2f s" % on, "%.2f s" % pp,
        "%.2fx" % (on / pp), "(info)", None)
    row("  same, vs nginx PUT + sync (ckptd fsyncs; SPEC 7's peer)", "%.2f s" % on,
        "%.2f s" % ps, "%.2fx" % (on / ps), "<= 1.2x", on / ps <= 1.2)
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
        ">= 1.0x", o / p >= 1.0)

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
        "%.2fx" % (o / p), ">= 1.0x", o / p >= 1.0)
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


INDEX_GETS = (("list ?limit=100", "?limit=100", True),
              ("list ?order=loss&limit=100", "?order=loss&limit=100", False),
              ("best (JSON with its 200 tensors)", "/best", True))


def index_figures(d, model, small):
    """INDEX_N uploads of the 200-tensor file into model of daemon d, then the
    timed list and best requests and wrk on best."""
    t = upload_many(d.port, model, small, INDEX_N)
    log("index (%s): %d uploads of a 200-tensor checkpoint in %.1fs (%.0f/s)"
        % (d.name, INDEX_N, t, INDEX_N / t))
    base = "%s/models/%s/checkpoints" % (API, model)
    gets = [timed_gets(d.port, base + q) for _label, q, _goal in INDEX_GETS]
    req = wrk(d.url + base + "/best")
    log("index (%s): list/list by loss/best %s ms, wrk best %.0f req/s"
        % (d.name, ["%.1f" % (g[0] * 1e3) for g in gets], req))
    return {"upload_s": t, "gets": gets, "wrk": req}


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

    sq = index_figures(d, "idx", small)
    d.stop()

    # the same on a PostgreSQL index (a server of its own, on the same cores;
    # the blobs stay in the daemon's data directory)
    pg = Postgres()
    d = Ckptd(scratch, "pgindex", extra=["--index", pg.url])
    try:
        pq = index_figures(d, "idx", small)
    finally:
        d.stop()
        pg.stop()

    section("index scale: %d checkpoints x 200 tensors in one model, keep-alive, median of 20;"
            " each figure on SQLite, then on PostgreSQL (its peer column: SQLite's figure)"
            % INDEX_N)
    for (label, _q, goal), (s_secs, size), (p_secs, _size) in zip(INDEX_GETS, sq["gets"],
                                                                   pq["gets"]):
        g = "< 50 ms" if goal else "(info)"
        row("%s (%d B), SQLite" % (label, size), "%.1f ms" % (s_secs * 1e3), "-", "-", g,
            s_secs < 0.05 if goal else None)
        row("  same, PostgreSQL", "%.1f ms" % (p_secs * 1e3), "%.1f ms" % (s_secs * 1e3),
            "%.2fx" % (p_secs / s_secs), g, p_secs < 0.05 if goal else None)
    row("wrk on that best, SQLite", "%.0f req/s" % sq["wrk"], "-", "-", "(info)", None)
    row("  same, PostgreSQL", "%.0f req/s" % pq["wrk"], "%.0f req/s" % sq["wrk"],
        "%.2fx" % (pq["wrk"] / sq["wrk"]), "(info)", None)
    s_rate, p_rate = INDEX_N / sq["upload_s"], INDEX_N / pq["upload_s"]
    row("%d uploads, 4 keep-alive clients, SQLite (%.1f s)" % (INDEX_N, sq["upload_s"]),
        "%.0f uploads/s" % s_rate, "-", "-", "(info)", None)
    row("  same, PostgreSQL (%.1f s)" % pq["upload_s"], "%.0f uploads/s" % p_rate,
        "%.0f uploads/s" % s_rate, "%.2fx" % (p_rate / s_rate), "(info)", None)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def bench_s3(scratch, big):
    """ckptd with --blobs s3:// (index: SQLite in its data directory, so that
    only the blob store differs from the nginx rows) against direct SigV4
    PUTs and GETs of the same file to the same RGW, interleaved."""
    rgw = Rgw()
    size = os.path.getsize(big)
    t0 = time.perf_counter()
    sha = sha256_file(big)
    log("RGW at %s; SHA-256 of the file in %.2fs (before the signed PUTs, not timed)"
        % (rgw.endpoint, time.perf_counter() - t0))
    # a fresh RGW answers its first large PUT slowly (about 2 s more for
    # 64 MB here): one untimed PUT and GET first
    rgw.put(big, "peer/warm-up.pt", "UNSIGNED-PAYLOAD")
    rgw.get("peer/warm-up.pt")
    # the file cut into 4 MiB objects, about the blobs ckptd PUTs (the
    # file's tensors are 4 MiB and 1 MiB): what as many objects cost when
    # curl sends them
    pieces = []
    os.makedirs(os.path.join(scratch, "pieces"))
    with open(big, "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                break
            path = os.path.join(scratch, "pieces", "p%04d" % len(pieces))
            with open(path, "wb") as g:
                g.write(b)
            pieces.append((path, hashlib.sha256(b).hexdigest()))
    put_signed, put_unsigned, put_pieces, ours_up = [], [], [], []
    d = None
    for rep in range(REPS):
        rgw.clear("peer/")
        sync_time()
        put_unsigned.append(rgw.put(big, "peer/unsigned.pt", "UNSIGNED-PAYLOAD"))
        rgw.clear("peer/")
        sync_time()
        put_signed.append(rgw.put(big, "peer/ckpt.pt", sha))
        sync_time()
        put_pieces.append(rgw.put_pieces(pieces, "pieces/", 4))
        rgw.clear("pieces/")
        log("direct PUT to RGW: payload hash signed %.2fs, UNSIGNED-PAYLOAD %.2fs; "
            "%d objects of 4 MiB, 4 at once, signed %.2fs"
            % (put_signed[-1], put_unsigned[-1], len(pieces), put_pieces[-1]))

        if d:
            d.stop()
            rgw.clear("ckptd-up%d/" % (rep - 1))
        d = Ckptd(scratch, "s3up%d" % rep, compress="off", extra=rgw.blob_args("ckptd-up%d" % rep),
                  env=rgw.env)
        sync_time()
        ours_up.append(curl(["-T", big, d.ckpt_url("m1", "?epoch=1&loss=0.5")], (201,))[0])
        log("ckptd (S3) new upload %.2fs, VmHWM %.1f MB" % (ours_up[-1], d.hwm_mb()))

    ours_get, peer_get = [], []
    for rep in range(REPS):
        ours_get.append(curl([d.ckpt_url("m1", "/best/file")], (200,))[0])
        peer_get.append(rgw.get("peer/ckpt.pt"))
        log("GET ckptd (S3) %.2fs, direct GET %.2fs" % (ours_get[-1], peer_get[-1]))
    d.stop()
    rgw.clear("ckptd-up%d/" % (REPS - 1))

    # the default --compress auto, for information: one upload, one GET
    d = Ckptd(scratch, "s3z", extra=rgw.blob_args("ckptd-z"), env=rgw.env)
    sync_time()
    z_up = curl(["-T", big, d.ckpt_url("m1", "?epoch=1&loss=0.5")], (201,))[0]
    z_get = curl([d.ckpt_url("m1", "/best/file")], (200,))[0]
    stats = json.loads(run(["curl", "-s", "-f", d.url + API + "/stats"]).stdout)
    log("ckptd (S3, compress auto): upload %.2fs, GET %.2fs, stored %d of %d bytes"
        % (z_up, z_get, stats["stored_bytes"], stats["unique_bytes"]))
    d.stop()
    rgw.clear("ckptd-z/")
    rgw.clear("peer/")

    mb = size / 1e6
    ou, ps, pu = median(ours_up), median(put_signed), median(put_unsigned)
    section("S3 blob store (Ceph RGW on this machine, memstore OSD; ckptd --blobs s3://, index "
            "SQLite): %.0f MB checkpoint, curl, median of %d" % (mb, REPS))
    row("new checkpoint (--compress off) vs direct PUT (SigV4, payload SHA-256)",
        "%.2f s" % ou, "%.2f s" % ps, "%.2fx" % (ou / ps), "<= 1.3x", ou / ps <= 1.3)
    row("  same, vs direct PUT (SigV4, UNSIGNED-PAYLOAD)", "%.2f s" % ou, "%.2f s" % pu,
        "%.2fx" % (ou / pu), "<= 1.3x", ou / pu <= 1.3)
    pp = median(put_pieces)
    row("  same, vs the file as %d objects of 4 MiB, 4 signed PUTs at once (curl)"
        % len(pieces), "%.2f s" % ou, "%.2f s" % pp, "%.2fx" % (ou / pp), "(info)", None)
    o, p = mb / median(ours_get), mb / median(peer_get)
    row("full GET throughput vs direct GET", "%.0f MB/s" % o, "%.0f MB/s" % p,
        "%.2fx" % (o / p), ">= 0.7x", o / p >= 0.7)
    row("new checkpoint, --compress auto (stored %.2f of raw; one run) vs direct PUT (SHA-256)"
        % (stats["stored_bytes"] / stats["unique_bytes"]), "%.2f s" % z_up, "%.2f s" % ps,
        "%.2fx" % (z_up / ps), "(info)", None)
    oz = mb / z_get
    row("  full GET throughput from it (one run) vs direct GET", "%.0f MB/s" % oz,
        "%.0f MB/s" % p, "%.2fx" % (oz / p), "(info)", None)
    rgw.stop()


def torch_child(scratch, name, script, args, timeout):
    """Runs bench/SCRIPT URL ARGS... under the torch interpreter against a
    fresh SQLite daemon -> the JSON object its last stdout line holds."""
    d = Ckptd(scratch, name)
    p = subprocess.run([PY, os.path.join(HERE, script), d.url] + args,
                       capture_output=True, text=True, timeout=timeout)
    d.stop()
    if p.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (script, p.stderr[-3000:]))
    j = json.loads(p.stdout.strip().splitlines()[-1])
    log("%s: %s" % (name, json.dumps(j)))
    return j


def bench_client(scratch):
    """The Python client (bench/client_bench.py, a child with torch): thin
    saves against a plain one, and the stall of a background save against a
    synchronous one, on a SQLite + local-disk ckptd."""
    mib = 64 if QUICK else 256
    j = torch_child(scratch, "client", "client_bench.py", [str(mib), str(REPS)], 1800)
    mb = j["file_size"] / 1e6
    section("Python client (ckptd.Client.save; SQLite, local disk): a %.0f MB state_dict of "
            "%d float32 tensors, median of %d" % (mb, j["tensors"], REPS))
    w = j["thin_wire"] / j["file_size"]
    row("thin save of unchanged weights: bytes on the wire vs the file", "%d B" % j["thin_wire"],
        "%d B" % j["file_size"], "%.4f" % w, "<= 0.01", w <= 0.01)
    row("  its time vs a plain save (thin=False) of new weights", "%.2f s" % j["thin_s"],
        "%.2f s" % j["plain_s"], "%.2fx" % (j["thin_s"] / j["plain_s"]), "<= 0.1x",
        j["thin_s"] / j["plain_s"] <= 0.1)
    w = j["tenth_wire"] / max(1, j["tenth_changed"])
    row("thin save, a tenth of the tensors changed: wire bytes vs the changed bytes",
        "%d B" % j["tenth_wire"], "%d B" % j["tenth_changed"], "%.3f" % w, "(info)", None)
    r = j["stall_s"] / j["sync_s"]
    row("background save: the loop's stall vs a synchronous save", "%.3f s" % j["stall_s"],
        "%.2f s" % j["sync_s"], "%.3f" % r, "<= 0.15", r <= 0.15)
    r = j["first_stall_s"] / j["sync_s"]
    row("  the first one (its snapshot's pages fresh; one run)", "%.3f s" % j["first_stall_s"],
        "%.2f s" % j["sync_s"], "%.3f" % r, "(info)", None)
    if not j["resumed_cut"]:
        raise RuntimeError("client_bench.py: the resumed save was never cut")
    w = j["resumed_wire"] / j["file_size"]
    row("save cut off at 90%, retried by the client: bytes of the retry vs the file (one run)",
        "%d B" % j["resumed_wire"], "%d B" % j["file_size"], "%.3f" % w, "<= 0.15", w <= 0.15)


def bench_dcp(scratch):
    """torch.distributed.checkpoint from 4 gloo ranks (bench/dcp_bench.py, a
    child with torch): CkptdWriter to a SQLite + local-disk ckptd against
    torch's FileSystemWriter to a local directory (fsync on, one file per
    rank), then the wire bytes of a save of unchanged weights."""
    mib = 128 if QUICK else 512
    work = os.path.join(scratch, "dcp")
    os.makedirs(work, exist_ok=True)
    j = torch_child(scratch, "dcp", "dcp_bench.py", [str(mib), str(REPS), work], 3600)
    section("torch.distributed.checkpoint, %d gloo ranks on this machine: a %.0f MB state_dict "
            "(row-sharded float32), new weights each save, median of %d"
            % (j["world"], j["size"] / 1e6, REPS))
    r = j["ckptd_median_s"] / j["fs_median_s"]
    row("save through ckptd.dcp.CkptdWriter vs torch's FileSystemWriter to a local directory",
        "%.2f s" % j["ckptd_median_s"], "%.2f s" % j["fs_median_s"], "%.2fx" % r, "<= 1.5x",
        r <= 1.5)
    w = j["thin_wire"] / j["size"]
    row("a second save of unchanged weights: request bytes vs the checkpoint's bytes",
        "%d B" % j["thin_wire"], "%d B" % j["size"], "%.4f" % w, "<= 0.01", w <= 0.01)


def stats(d):
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
    c.request("GET", API + "/stats")
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError("GET /stats: %d" % r.status)
    return json.loads(body)


def bench_training_run(scratch):
    """The store over examples/train_digits.py's pre-training run (every
    epoch a general checkpoint: fp32 weights and Adam state) with deltas
    between epochs, against the same files stored without a previous
    checkpoint (each in a run of its own: byte planes alone) and zstd -1 on
    each file."""
    d = Ckptd(scratch, "run")
    p = subprocess.run([PY, os.path.join(REPO, "examples", "train_digits.py"), "--url", d.url,
                        "--model", "digits", "--epochs", "8", "--finetune-epochs", "0",
                        "--threads", "2"], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("train_digits.py failed:\n%s" % p.stderr[-3000:])
    ours = stats(d)
    alone = Ckptd(scratch, "run-alone")
    files, zbytes = [], 0
    for i in range(1, 9):
        path = os.path.join(scratch, "epoch-%d.pt" % i)
        curl([d.ckpt_url("digits", "/%d/file" % i)], (200,), body=path)
        curl(["-T", path, alone.ckpt_url("digits", "?run=epoch-%d&epoch=%d" % (i, i))], (201,))
        zbytes += len(subprocess.run(["zstd", "-1", "-c", path], check=True,
                                     stdout=subprocess.PIPE).stdout)
        files.append(path)
    planes = stats(alone)
    d.stop()
    alone.stop()
    raw = ours["logical_bytes"]
    r, rp, rz = ours["stored_bytes"] / raw, planes["stored_bytes"] / planes["logical_bytes"], \
        zbytes / raw
    log("training run: %s; without deltas %s; zstd -1 %d bytes" % (json.dumps(ours),
                                                                   json.dumps(planes), zbytes))
    section("store over a training run: examples/train_digits.py, 8 epochs of a general "
            "checkpoint (%.2f MB each: fp32 weights + Adam state), --compress auto"
            % (raw / 8 / 1e6))
    row("stored vs raw bytes, deltas between epochs vs byte planes alone", "%.4f" % r,
        "%.4f" % rp, "%.3fx" % (r / rp), "<= 0.72", r <= 0.72)
    row("  zstd -1 on each file (for scale)", "%.4f" % r, "%.4f" % rz, "%.3fx" % (r / rz),
        "(info)", None)
    for f in files:
        os.unlink(f)


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
        if wanted("nginx") or wanted("memory"):
            d, off_hwm, ngx_hwm = bench_uploads(scratch, ngx, files[0])
            ngx_get = bench_downloads(d, ngx, files[0])
            d.stop()
            os.unlink(os.path.join(ngx.www, "ckpt.pt"))
            if wanted("memory"):
                bench_memory(scratch, files, off_hwm, ngx_hwm, ngx_get)
        if wanted("codec"):
            note = bench_codec(mlpdir, info)
        if wanted("index"):
            bench_metadata_and_index(scratch, ngx, mlpdir, small)
        if wanted("s3"):
            bench_s3(scratch, files[0])
        if wanted("client"):
            bench_client(scratch)
        if wanted("dcp"):
            bench_dcp(scratch)
        if wanted("run"):
            bench_training_run(scratch)
        ok = True
    except Exception:  # print what was measured, then the failure
        traceback.print_exc()
    finally:
        if ngx:
            ngx.stop()
        for d in LIVE:
            d.stop(remove=False)
        for svc in SERVICES:
            svc.stop()
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
