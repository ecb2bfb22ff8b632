#!/usr/bin/python3
"""The Python client (clients/python/ckptd_client.py) against a live daemon, with real torch.

save() then load() gives back the state_dict exactly; root= and keys= pass
through; metadata, best, list and delete work; the server's errors arrive as
CkptdError with status, code and message; writes on a token-protected daemon
are refused before the body is sent; connection errors and 503 are retried
(a retried save runs torch.save again, checked against a small fake server
that decodes the chunked body itself); the command line pushes, pulls and
lists; and a ~2 GB save keeps the client's peak RSS flat (a child process
measures VmHWM before and after; CKPTD_SKIP_BIG=1 skips it).
"""

import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness  # noqa: E402

CLIENT_DIR = os.path.join(ckptd.REPO, "clients", "python")
CLIENT = os.path.join(CLIENT_DIR, "ckptd_client.py")
sys.path.insert(0, CLIENT_DIR)
from ckptd_client import CkptdConnectionError, CkptdError, Client  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

SKIP_BIG = os.environ.get("CKPTD_SKIP_BIG") == "1"
D = None


def setUpModule():
    global D
    D = ckptd.Daemon(name="client").start()


def tearDownModule():
    try:
        D.stop_checked()
    finally:
        D.cleanup()


def url(d=None):
    return "http://127.0.0.1:%d" % (d or D).port


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def trained(seed=0):
    torch.manual_seed(seed)
    m = Net()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    return m, opt


def torch_bytes(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def assert_same_state(tc, got, want):
    tc.assertEqual(sorted(got.keys()), sorted(want.keys()))
    for k, v in want.items():
        tc.assertEqual(got[k].dtype, v.dtype, k)
        tc.assertEqual(tuple(got[k].shape), tuple(v.shape), k)
        tc.assertTrue(torch.equal(got[k], v), "tensor %s differs" % k)


class SaveLoad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Client(url())
        cls.model, cls.opt = trained()
        cls.general = {
            "epoch": 3,
            "model_state_dict": cls.model.state_dict(),
            "optimizer_state_dict": cls.opt.state_dict(),
            "loss": 0.25,
        }

    def test_save_then_load_gives_back_the_state_dict(self):
        j = self.c.save(self.general, "cl-general", epoch=3, loss=0.25)
        self.assertIsInstance(j["id"], int)
        # The streamed bytes are exactly what torch.save writes into a buffer.
        self.assertEqual(j["sha256"], hashlib.sha256(torch_bytes(self.general)).hexdigest())
        self.assertEqual(j["epoch"], 3)
        self.assertEqual(j["loss"], 0.25)
        sd = self.c.load("cl-general", ref=j["id"], root="/model_state_dict")
        assert_same_state(self, sd, self.model.state_dict())
        # BatchNorm's int64 counter comes back as int64
        self.assertEqual(sd["bn1.num_batches_tracked"].dtype, torch.int64)
        m2 = Net()
        m2.load_state_dict(sd)  # strict
        x = torch.randn(2, 1, 8, 8)
        self.model.eval()
        m2.eval()
        self.assertTrue(torch.equal(m2(x), self.model(x)))

    def test_plain_state_dict_loads_without_root(self):
        sd = self.model.state_dict()
        j = self.c.save(sd, "cl-plain", loss=1.0)
        got = self.c.load("cl-plain", ref="latest")
        assert_same_state(self, got, sd)
        self.assertEqual(self.c.best("cl-plain")["id"], j["id"])

    def test_keys_and_root_pass_through_the_client(self):
        self.c.save(self.general, "cl-keys", epoch=1, loss=0.5)
        want = self.model.state_dict()
        got = self.c.load("cl-keys", root="/model_state_dict", keys="conv*")
        self.assertEqual(sorted(got), ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"])
        for k in got:
            self.assertTrue(torch.equal(got[k], want[k]), k)
        got = self.c.load("cl-keys", root="/model_state_dict", keys=["fc.weight", "bn1.*"])
        self.assertEqual(sorted(got), sorted(["fc.weight", "bn1.weight", "bn1.bias",
                                              "bn1.running_mean", "bn1.running_var",
                                              "bn1.num_batches_tracked"]))
        # the optimizer's state by root: its tensors are named below /optimizer_state_dict/state
        got = self.c.load("cl-keys", root="/optimizer_state_dict/state/0")
        want_opt = self.opt.state_dict()["state"][0]
        self.assertTrue(torch.equal(got["exp_avg"], want_opt["exp_avg"]))
        self.assertTrue(torch.equal(got["exp_avg_sq"], want_opt["exp_avg_sq"]))

    def test_map_location_and_weights_only_load(self):
        self.c.save(self.model.state_dict(), "cl-map")
        got = self.c.load("cl-map", ref="latest", map_location=torch.device("cpu"))
        self.assertTrue(all(t.device.type == "cpu" for t in got.values()))

    def test_metadata_list_best_and_delete(self):
        m = "cl-meta"
        ids = []
        for i, loss in enumerate([0.9, 0.4, 0.6]):
            j = self.c.save({"w": torch.full((16,), float(i))}, m, epoch=i, step=100 * i,
                            loss=loss, run="r1", metrics={"acc": 0.5 + i / 10},
                            tags=["nightly", "e%d" % i])
            ids.append(j["id"])
            self.assertEqual(j["run"], "r1")
            self.assertEqual(j["step"], 100 * i)
            self.assertAlmostEqual(j["metrics"]["acc"], 0.5 + i / 10)
            self.assertEqual(sorted(j["tags"]), sorted(["nightly", "e%d" % i]))
        j = self.c.save({"w": torch.zeros(4)}, m, loss=0.1, run="r2", pin=True)
        self.assertTrue(j["pinned"])
        self.assertEqual([x["id"] for x in self.c.list(m, run="r1")], ids)
        self.assertEqual([x["id"] for x in self.c.list(m, run="r1", order="loss")],
                         [ids[1], ids[2], ids[0]])
        self.assertEqual(self.c.best(m)["id"], j["id"])
        self.assertEqual(self.c.best(m, run="r1")["id"], ids[1])
        self.assertEqual(self.c.best(m, metric="acc", mode="max", run="r1")["id"], ids[2])
        self.assertEqual(len(self.c.list(m)), 4)
        self.c.delete(m, ids[0])
        self.assertEqual([x["id"] for x in self.c.list(m, run="r1")], ids[1:])
        with self.assertRaises(CkptdError) as cm:
            self.c.get(m, ids[0])
        self.assertEqual(cm.exception.status, 404)


class Errors(unittest.TestCase):
    def test_errors_carry_the_server_status_code_and_message(self):
        c = Client(url())
        with self.assertRaises(CkptdError) as cm:
            c.load("cl-no-such-model")
        e = cm.exception
        self.assertEqual(e.status, 404)
        self.assertTrue(e.code and e.code != "http_404", e.code)
        self.assertIn("cl-no-such-model", e.message)
        self.assertIn(e.message, str(e))
        with self.assertRaises(CkptdError) as cm:
            c.save({"w": torch.ones(2)}, "bad name!")
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("model name", cm.exception.message)
        c.save({"w": torch.ones(2)}, "cl-err")
        with self.assertRaises(CkptdError) as cm:
            c.load("cl-err", root="/nope")
        self.assertIn(cm.exception.status, (404, 422))
        self.assertTrue(cm.exception.message)

    def test_a_write_without_a_token_is_refused_before_the_body(self):
        tok = os.path.join(ckptd.work_dir(), "tokens")
        with open(tok, "w") as f:
            f.write("tok-w write\ntok-r read\n")
        with ckptd.Daemon(name="client-auth", args=["--token-file", tok]) as d:
            sd = {"w": torch.randn(64, 64)}
            c = Client(url(d))
            t0 = time.time()
            with self.assertRaises(CkptdError) as cm:
                c.save(sd, "cl-auth")
            self.assertEqual(cm.exception.status, 401, cm.exception)
            # refused on the headers (Expect: 100-continue), not after a 1 s wait
            self.assertLess(time.time() - t0, 0.9)
            with self.assertRaises(CkptdError) as cm:
                Client(url(d), token="tok-r").save(sd, "cl-auth")
            self.assertEqual(cm.exception.status, 403, cm.exception)
            j = Client(url(d), token="tok-w").save(sd, "cl-auth", epoch=1)
            self.assertEqual(j["epoch"], 1)
            got = Client(url(d)).load("cl-auth", ref="latest")  # reads are open without --auth-read
            self.assertTrue(torch.equal(got["w"], sd["w"]))

    def test_connection_refused_is_retried_then_raised(self):
        c = Client("http://127.0.0.1:%d" % ckptd.free_port(), retries=2, backoff=0.05)
        t0 = time.time()
        with self.assertRaises(CkptdConnectionError) as cm:
            c.list("m")
        self.assertIsNone(cm.exception.status)
        self.assertIn("3 attempts", str(cm.exception))
        self.assertGreaterEqual(time.time() - t0, 0.05 + 0.1)


class FakeServer:
    """Decodes a POST's chunked body itself; answers the first `fail` requests
    with 503, then a POST with 201 and the body's SHA-256, a GET with {}."""

    def __init__(self, fail):
        self.fail = fail
        self.seen = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self.one(conn)
                except OSError:
                    pass

    def one(self, conn):
        f = conn.makefile("rb")
        line = f.readline().decode()
        headers = {}
        while True:
            h = f.readline().decode()
            if h in ("\r\n", ""):
                break
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        method = line.split()[0]
        self.seen.append((method, headers))
        body = b'{"error": "unavailable", "message": "busy"}'
        status = b"503 Service Unavailable"
        if method == "POST":
            # read the whole body before answering, so a 503 comes after a
            # complete torch.save and the client has to run it again
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            sha, n = hashlib.sha256(), 0
            assert headers.get("transfer-encoding") == "chunked", headers
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                data = f.read(size)
                sha.update(data)
                n += len(data)
                assert f.read(2) == b"\r\n"
            if len(self.seen) > self.fail:
                body = json.dumps({"id": 1, "sha256": sha.hexdigest(), "size": n}).encode()
                status = b"201 Created"
        elif len(self.seen) > self.fail:
            body, status = b"{}", b"200 OK"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (status, len(body), body))

    def close(self):
        self.sock.close()


class Retries(unittest.TestCase):
    def test_503_is_retried_for_reads(self):
        fs = FakeServer(fail=2)
        try:
            self.assertEqual(Client("http://127.0.0.1:%d" % fs.port, backoff=0.01).stats(), {})
            self.assertEqual([m for m, _ in fs.seen], ["GET"] * 3)
        finally:
            fs.close()

    def test_a_retried_save_runs_torch_save_again_and_frames_chunks_right(self):
        fs = FakeServer(fail=1)
        try:
            calls = []

            class Probe:
                """Counts how often torch.save pickles it."""

                def __reduce__(self):
                    calls.append(1)
                    return (dict, ())

            # a big storage (sent as its own chunk) and small ones (coalesced)
            obj = {"big": torch.randn(300_000), "small": torch.arange(10), "probe": Probe()}
            j = Client("http://127.0.0.1:%d" % fs.port, backoff=0.01).save(obj, "m")
            self.assertEqual(len(calls), 2, "torch.save should have run twice")
            self.assertEqual([m for m, _ in fs.seen], ["POST", "POST"])
            # the fake server decoded the chunked body itself: same bytes as torch.save
            want = torch_bytes(obj)
            self.assertEqual(j["size"], len(want))
            self.assertEqual(j["sha256"], hashlib.sha256(want).hexdigest())
        finally:
            fs.close()


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = ckptd.work_dir()
        cls.model, cls.opt = trained(1)
        cls.path = os.path.join(cls.dir, "ckpt.pth")
        torch.save({"epoch": 2, "model_state_dict": cls.model.state_dict(),
                    "optimizer_state_dict": cls.opt.state_dict()}, cls.path)

    def run_cli(self, *args, env=None, python="/usr/bin/python3", ok=True):
        e = dict(os.environ)
        e.pop("CKPTD_URL", None)
        e.pop("CKPTD_TOKEN", None)
        e.update(env or {})
        p = subprocess.run([python, CLIENT] + list(args), capture_output=True, text=True,
                           env=e, timeout=120, cwd=self.dir)
        if ok:
            self.assertEqual(p.returncode, 0, "cli %s: %s %s" % (args, p.stdout, p.stderr))
        return p

    def test_push_pull_and_list_from_a_shell(self):
        p = self.run_cli("push", self.path, "--model", "cl-cli", "--epoch", "2", "--loss",
                         "0.31", "--run", "r1", "--metric", "acc=0.91", "--tag", "t1",
                         "--tag", "t2", "--url", url())
        self.assertIn("stored cl-cli checkpoint", p.stdout)
        ck = Client(url()).best("cl-cli")
        self.assertEqual((ck["epoch"], ck["loss"], ck["run"]), (2, 0.31, "r1"))
        self.assertEqual(ck["metrics"], {"acc": 0.91})
        self.assertEqual(sorted(ck["tags"]), ["t1", "t2"])
        self.assertEqual(ck["sha256"], ckptd.sha256_file(self.path))

        # URL from $CKPTD_URL; keys and root
        out = os.path.join(self.dir, "conv.pth")
        self.run_cli("pull", "--model", "cl-cli", "--root", "/model_state_dict", "--keys",
                     "conv*", "-o", out, env={"CKPTD_URL": url()})
        sd = torch.load(out, weights_only=True)
        self.assertEqual(sorted(sd), ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"])
        for k in sd:
            self.assertTrue(torch.equal(sd[k], self.model.state_dict()[k]))

        # the default output name, the whole state_dict
        self.run_cli("pull", "--model", "cl-cli", "--url", url())
        sd = torch.load(os.path.join(self.dir, "cl-cli-best.pth"), weights_only=True)
        assert_same_state(self, sd, self.model.state_dict())

        out = os.path.join(self.dir, "fc.safetensors")
        self.run_cli("pull", "--model", "cl-cli", "--keys", "fc.*", "--format", "safetensors",
                     "-o", out, "--url", url())
        with open(out, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        self.assertEqual(sorted(k for k in header if k != "__metadata__"), ["fc.bias", "fc.weight"])

        # -o - writes the file to stdout
        p = subprocess.run(["/usr/bin/python3", CLIENT, "pull", "--model", "cl-cli", "--keys",
                            "fc.*", "-o", "-", "--url", url()], capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        sd = torch.load(io.BytesIO(p.stdout), weights_only=True)
        self.assertEqual(sorted(sd), ["fc.bias", "fc.weight"])

        p = self.run_cli("list", "--model", "cl-cli", "--url", url())
        lines = p.stdout.strip().splitlines()
        self.assertEqual(len(lines), 2, p.stdout)
        self.assertIn(str(ck["id"]), lines[1])
        self.assertIn("0.31", lines[1])

    def test_cli_needs_no_torch_for_push_and_list(self):
        py = shutil.which("python3")
        if not py or subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0:
            self.skipTest("no python3 without torch on PATH")
        self.run_cli("push", self.path, "--model", "cl-notorch", "--url", url(), python=py)
        p = self.run_cli("list", "--model", "cl-notorch", "--url", url(), python=py)
        self.assertEqual(len(p.stdout.strip().splitlines()), 2, p.stdout)

    def test_cli_errors_print_the_server_message(self):
        p = self.run_cli("pull", "--model", "cl-cli-none", "--url", url(), ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("404", p.stderr)
        self.assertIn("cl-cli-none", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "cl-cli-none-best.pth")))
        p = self.run_cli("push", self.path, "--model", "x", "--metric", "acc", "--url", url(),
                         ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("name=value", p.stderr)


BIG = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[2])
from ckptd_client import Client

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

n, per = 16, 128 << 20  # 16 float32 tensors of 128 MiB: 2 GiB
obj = {"layer%d.weight" % i: torch.full((per // 4,), float(i)) for i in range(n)}
before = hwm()
t0 = time.time()
j = Client(sys.argv[1]).save(obj, "cl-big", epoch=1)
secs = time.time() - t0
after = hwm()
print(json.dumps({"object": n * per, "before": before, "after": after, "secs": secs,
                  "size": j["size"], "id": j["id"], "new_bytes": j["dedup"]["new_bytes"]}))
"""


@unittest.skipIf(SKIP_BIG, "CKPTD_SKIP_BIG=1")
class Big(unittest.TestCase):
    def test_a_2gb_save_keeps_the_client_rss_flat(self):
        p = subprocess.run(["/usr/bin/python3", "-c", BIG, url(), CLIENT_DIR],
                           capture_output=True, text=True, timeout=240)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        growth = r["after"] - r["before"]
        print("  2 GiB save: object %.0f MB, client peak RSS %.0f MB before, %.0f MB after "
              "(growth %.1f MB; buffering the file would add ~%.0f MB), %.1fs, %.0f MB/s"
              % (r["object"] / 2**20, r["before"] / 2**20, r["after"] / 2**20,
                 growth / 2**20, r["size"] / 2**20, r["secs"], r["size"] / 2**20 / r["secs"]),
              flush=True)
        self.assertGreaterEqual(r["before"], r["object"], "the tensors should be in memory")
        self.assertGreater(r["size"], r["object"])
        self.assertEqual(r["new_bytes"], r["object"])
        self.assertLess(growth, 256 << 20)
        ck = D.get_json("/models/cl-big/checkpoints/%d" % r["id"])
        self.assertEqual(ck["size"], r["size"])
        D.request("DELETE", "/models/cl-big")


if __name__ == "__main__":
    harness.main()
