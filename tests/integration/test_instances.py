#!/usr/bin/python3
# backends: postgresql postgresql+s3
"""Several ckptd instances on one store (SPEC 9): two daemons, each with its
own --data directory, sharing a PostgreSQL index and one blob store (a
directory, or on the S3 run one bucket prefix on Ceph RGW), with nginx from
Debian as the load balancer in front (lib/balancer.py).

Each scenario of the issue is a test: an upload through A is listed,
downloaded, diffed and deleted through B (and through the balancer); the
same tensors uploaded through A and B at once make one blob with the right
reference counts; deletes through A while B uploads checkpoints sharing their
tensors lose nothing; retention applied by A while B serves downloads; A
killed with kill -9 mid-upload while B keeps serving, nothing half-visible,
and A's claims expiring; A restarting while B uploads removes nothing of B's;
B's cache of rendered JSON sees a change made through A; an upload cut off
through A is resumed through B, sending only the rest; PostgreSQL stopped
and started: 503 with a clear message meanwhile, nothing half-stored, full
service after.

Runs only where the suite runs on PostgreSQL (run.sh reads the "backends"
line above): it uses that run's server (CKPTD_IT_PG, CKPTD_IT_PGDIR).
"""

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, harness, store, thin  # noqa: E402
from lib.balancer import Balancer  # noqa: E402

SEED = int(os.environ.get("CKPTD_RANDOM_SEED") or random.randrange(1 << 30))
LEASE = 4  # seconds: A's claims must expire within a test


class Shared:
    """The shared store's parts and the instances on it."""

    def __init__(self):
        self.root = ckptd.work_dir()
        self.index = ckptd.index_args(os.path.join(self.root, "index"))[1]
        self.s3 = bool(os.environ.get("CKPTD_IT_S3"))
        if self.s3:
            blob_args = ckptd.store_args(os.path.join(self.root, "blobs"))[2:]
        else:
            blob_args = ["--blobs", os.path.join(self.root, "blobs")]
        self.blobs = blob_args[1]
        self.args = ["--index", self.index] + blob_args + ["--claim-lease", str(LEASE)]

    def blob_hashes(self):
        if self.s3:
            return store.blob_objects(ckptd.s3_prefix(os.path.join(self.root, "blobs")))[0]
        return store.blob_files_in(self.blobs)[0]

    def instance(self, name, data_dir=None):
        return ckptd.Daemon(data_dir=data_dir, name=name, args=self.args).start()

    def psql(self, sql):
        return ckptd._psql(self.index, sql)


S = A = B = LB = None


def setUpModule():
    global S, A, B, LB
    if not os.environ.get("CKPTD_IT_PG"):
        raise RuntimeError("test_instances needs the PostgreSQL run (CKPTD_IT_PG)")
    print("  seed %d" % SEED)
    S = Shared()
    A = S.instance("A")
    B = S.instance("B")
    LB = Balancer([A.port, B.port]).start()


def tearDownModule():
    for d in (LB, A, B):
        if d is None:
            continue
        try:
            d.stop()
        finally:
            d.cleanup()


def ckpt(seed, n=4, floats=64 * 1024, shared=None):
    """A state_dict file: n tensors of its own, plus shared ones (name -> seed)."""
    import torch
    sd = {"own%d" % i: store.randn(seed * 100 + i, floats) for i in range(n)}
    for name, s in (shared or {}).items():
        sd[name] = store.randn(s, floats)
    return store.save_torch(sd)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def assert_download(tc, d, model, cid, data):
    st, _h, got, n = d.stream_download("/models/%s/checkpoints/%d/file" % (model, cid))
    tc.assertEqual((st, got, n), (200, sha(data), len(data)),
                   "checkpoint %d through %s" % (cid, d.name))


def consistent(tc, what):
    """Every blob row has its file; no file lacks a row once claims are gone."""
    p = store.cli("verify", "--data", A.data_dir, *S.args)
    tc.assertEqual(p.returncode, 0, "%s: verify: %s%s" % (what, p.stdout[-800:], p.stderr))
    tc.assertIn(" 0 damaged, 0 missing", p.stdout, what)


class AcrossInstances(unittest.TestCase):
    def test_an_upload_through_a_is_listed_downloaded_diffed_and_deleted_through_b(self):
        d1, d2 = ckpt(1), ckpt(2, shared={"own0": 100})
        j1 = A.upload_ok("x-one", d1, {"epoch": 1, "loss": 0.5})
        j2 = A.upload_ok("x-one", d2, {"epoch": 2, "loss": 0.4})
        ids = [c["id"] for c in B.get_json("/models/x-one/checkpoints")["checkpoints"]]
        self.assertEqual(ids, [j1["id"], j2["id"]])
        self.assertEqual(B.get_json("/models/x-one/checkpoints/best")["id"], j2["id"])
        assert_download(self, B, "x-one", j1["id"], d1)
        diff = B.get_json("/models/x-one/checkpoints/%d/diff/%d" % (j1["id"], j2["id"]))
        self.assertEqual(diff["summary"]["changed"] + diff["summary"]["added"]
                         + diff["summary"]["same"] + diff["summary"]["removed"],
                         len(diff["tensors"]))
        r = B.request("DELETE", "/models/x-one/checkpoints/%d" % j1["id"])
        self.assertEqual(r.status, 204, r)
        checks.error_json(self, A.get("/models/x-one/checkpoints/%d" % j1["id"]), 404, "gone")
        # through the balancer, each request to either instance
        for i in range(6):
            self.assertEqual(LB.get_json("/models/x-one/checkpoints/latest")["id"], j2["id"])
        assert_download(self, LB, "x-one", j2["id"], d2)
        consistent(self, "after a delete through B")

    def test_a_cached_checkpoint_sees_a_change_made_through_the_other_instance(self):
        j = A.upload_ok("x-cache", ckpt(3), {"loss": 1.0})
        url = "/models/x-cache/checkpoints/%d" % j["id"]
        self.assertEqual(B.get_json(url)["tags"], [])  # rendered and cached by B
        self.assertEqual(B.get_json(url)["tags"], [])
        r = A.request("PATCH", url, body={"tags": ["through-a"], "pinned": True})
        self.assertEqual(r.status, 200, r)
        got = B.get_json(url)
        self.assertEqual((got["tags"], got["pinned"]), (["through-a"], True))
        # and a new upload sharing its tensors changes their reference count
        before = {t["path"]: t["refs"] for t in B.get_json(url)["tensors"]}
        A.upload_ok("x-cache2", ckpt(3))
        after = {t["path"]: t["refs"] for t in B.get_json(url)["tensors"]}
        self.assertEqual(after, {p: n + 1 for p, n in before.items()})

    def test_the_same_tensors_through_a_and_b_at_once_are_one_blob_counted_right(self):
        data = ckpt(4, n=8)
        stats0 = A.stats()
        results, errors = [], []

        def up(d, k):
            for _ in range(k):
                r = d.upload("x-same", data)
                (results if r.status == 201 else errors).append(r)

        threads = [threading.Thread(target=up, args=(d, 5)) for d in (A, B, A, B)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 20)
        new = sum(r.json()["dedup"]["new_tensors"] for r in results)
        self.assertEqual(new, 8, "each tensor must be new exactly once")
        stats = B.stats()
        self.assertEqual(stats["blobs"] - stats0["blobs"], 9)  # 8 tensors + one skeleton
        j = A.get_json("/models/x-same/checkpoints/latest")
        self.assertEqual({t["refs"] for t in j["tensors"]}, {20})
        consistent(self, "after concurrent identical uploads")

    def test_deletes_through_a_while_b_uploads_shared_tensors_lose_nothing(self):
        rnd = random.Random(SEED)
        kept = []
        for i in range(12):
            shared = {"s%d" % k: 5000 + i * 10 + k for k in range(3)}
            old = ckpt(600 + i, n=1, shared=shared)
            j = A.upload_ok("x-race", old)
            new = ckpt(700 + i, n=1, shared=shared)
            out = {}

            def upload_b():
                out["r"] = B.upload("x-race", new)

            t = threading.Thread(target=upload_b)
            t.start()
            time.sleep(rnd.uniform(0, 0.05))
            r = A.request("DELETE", "/models/x-race/checkpoints/%d" % j["id"])
            self.assertEqual(r.status, 204, r)
            t.join()
            self.assertEqual(out["r"].status, 201, out["r"])
            kept.append((out["r"].json()["id"], new))
        for cid, data in kept:
            assert_download(self, A, "x-race", cid, data)
            assert_download(self, B, "x-race", cid, data)
        consistent(self, "after deletes racing uploads")

    def test_an_upload_cut_off_through_a_resumes_through_b(self):
        import json

        path = os.path.join(S.root, "resume.pt")
        data = ckpt(9, n=20, floats=32 * 1024)  # 20 storages of 128 KiB
        with open(path, "wb") as f:
            f.write(data)
        ranges = thin.storage_ranges(path)
        blobs = [{"sha256": sha(data[o:o + n]), "size": n} for o, n in ranges]
        whole = sum(1 for o, n in ranges if o + n <= 0.9 * len(data))
        self.assertGreaterEqual(whole, 17)
        thin.cut_upload(A, "x-resume", data, 0.9)
        deadline = time.time() + 20
        while True:  # A keeps what arrived whole once it sees the cut
            r = B.request("POST", "/blobs/missing", body=json.dumps({"blobs": blobs}).encode(),
                          headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 200, r.body[:300])
            missing = set(r.json()["missing"])
            if len(missing) <= len(blobs) - whole or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertLessEqual(len(missing), len(blobs) - whole, "B sees what A kept")
        body = thin.frames(data, ranges, refer=lambda i: blobs[i]["sha256"] not in missing)
        self.assertLess(len(body), 0.2 * len(data))
        r = B.upload("x-resume", body, headers={"Content-Type": "application/x-ckptd-thin"})
        self.assertEqual(r.status, 201, r.body[:300])
        self.assertEqual(r.json()["sha256"], sha(data))
        assert_download(self, A, "x-resume", r.json()["id"], data)
        consistent(self, "after a resumed upload")

    def test_retention_applied_by_a_while_b_serves_downloads(self):
        files = {}
        for i in range(8):
            d = ckpt(800 + i, n=8)
            files[A.upload_ok("x-ret", d, {"loss": 1.0 - i / 10})["id"]] = d
        ids = sorted(files)
        stop = threading.Event()
        bad = []

        def download_forever():
            while not stop.is_set():
                for cid in ids:
                    st, _h, got, n = B.stream_download("/models/x-ret/checkpoints/%d/file" % cid)
                    if st == 200 and got != sha(files[cid]):
                        bad.append((cid, "wrong bytes"))
                    elif st not in (200, 404):
                        bad.append((cid, st))

        t = threading.Thread(target=download_forever)
        t.start()
        try:
            time.sleep(0.3)
            r = A.request("PUT", "/models/x-ret/retention", body={"keep_best": 2})
            self.assertEqual(r.status, 200, r)
            time.sleep(0.5)
        finally:
            stop.set()
            t.join()
        self.assertEqual(bad, [])
        left = [c["id"] for c in B.get_json("/models/x-ret/checkpoints")["checkpoints"]]
        self.assertEqual(left, ids[-2:])
        consistent(self, "after retention with downloads")


class Failures(unittest.TestCase):
    def test_a_killed_mid_upload_while_b_serves_leaves_nothing_half_visible(self):
        def big_file(seed):  # 64 MiB of tensors nobody stored yet
            path = os.path.join(S.root, "big%d.pt" % seed)
            with open(path, "wb") as f:
                f.write(ckpt(seed, n=32, floats=512 * 1024))
            return path

        probe = big_file(900)
        t0 = time.time()
        A.stream_upload("x-kill-probe", probe)
        took = time.time() - t0
        answered, wanted = 0, {}
        for k, frac in enumerate((0.3, 0.6, 0.85)):
            path = big_file(901 + k)
            with open(path, "rb") as f:
                wanted[sha(f.read())] = path
            # a fresh instance each round, killed and never restarted: only
            # the expiry of its claims can free what it was writing
            K = S.instance("K%d" % k)
            out = {}

            def up():
                try:
                    out["r"] = K.stream_upload("x-kill", path)
                except Exception as e:  # the connection dies with K
                    out["e"] = e

            t = threading.Thread(target=up)
            t.start()
            time.sleep(took * frac)
            K.proc.send_signal(signal.SIGKILL)
            t.join(60)
            K.kill()
            K.cleanup()
            answered += int(out.get("r") is not None and out["r"].status == 201)
            # B serves throughout, and what it lists is whole
            self.assertEqual(B.get("/healthz").status, 200)
            listed = B.get_json("/models/x-kill/checkpoints", status=200) \
                if B.get("/models/x-kill/checkpoints").status == 200 else {"checkpoints": []}
            self.assertGreaterEqual(len(listed["checkpoints"]), answered)
            for c in listed["checkpoints"]:
                self.assertIn(c["sha256"], wanted)
                with open(wanted[c["sha256"]], "rb") as f:
                    assert_download(self, B, "x-kill", c["id"], f.read())
        claims = int(S.psql("SELECT count(*) FROM claims"))
        time.sleep(LEASE + 1)
        p = store.cli("gc", "--data", B.data_dir, *S.args)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(S.psql("SELECT count(*) FROM claims WHERE expires_at < "
                                "extract(epoch FROM now())::bigint"), "0")
        self.assertEqual(len(S.blob_hashes()), B.stats()["blobs"], "orphan blobs after kill -9")
        if not S.s3:
            tmp = os.path.join(S.blobs, "tmp")
            left = os.listdir(tmp) if os.path.isdir(tmp) else []
            self.assertEqual(left, [], "temporary files of the killed instances (A and B idle)")
        consistent(self, "after kill -9 rounds")
        print("  kill -9 at 30/60/85%% of a 64 MiB upload: %d answered, %d claims left "
              "by the killed, %s" % (answered, claims, p.stdout.strip()))

    def test_a_restarting_while_b_uploads_removes_nothing_of_bs(self):
        global A
        files, errors = {}, []
        stop = threading.Event()

        def uploads():
            i = 0
            while not stop.is_set():
                d = ckpt(1000 + i, n=16)
                r = B.upload("x-restart", d)
                if r.status != 201:
                    errors.append(r)
                else:
                    files[r.json()["id"]] = d
                i += 1

        t = threading.Thread(target=uploads)
        t.start()
        data_dir = A.data_dir
        try:
            for k in range(4):
                A.stop_checked()  # its data directory stays: the same instance again
                A = S.instance("A", data_dir=data_dir)
                time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(files), 0)
        for cid, d in files.items():
            assert_download(self, A, "x-restart", cid, d)
        consistent(self, "after restarts of A during B's uploads")
        LB.upstreams = [A.port, B.port]
        LB.stop()
        LB.start()

    def test_postgresql_stopped_then_started_is_503_meanwhile_and_full_service_after(self):
        pgdir = os.environ["CKPTD_IT_PGDIR"]
        data = ckpt(1200)
        j = A.upload_ok("x-pg", data)
        stats = B.stats()
        subprocess.run(["sh", "tests/services/pg.sh", "stop", pgdir], check=True, cwd=ckptd.REPO)
        try:
            for d in (A, B, LB):
                r = d.upload("x-pg", ckpt(1201))
                checks.error_json(self, r, 503, "an upload through %s without PostgreSQL" % d.name)
                self.assertIn("PostgreSQL", r.json()["message"])
                self.assertTrue(r.header("Retry-After"))
                r = d.get("/models/x-pg/checkpoints/latest")
                checks.error_json(self, r, 503, "a read through %s" % d.name)
            self.assertEqual(A.get("/healthz").status, 200)
        finally:
            subprocess.run(["sh", "tests/services/pg.sh", "start", pgdir], check=True,
                           cwd=ckptd.REPO, stdout=subprocess.DEVNULL)
        self.assertEqual(B.stats(), stats, "a refused upload changed the store")
        assert_download(self, B, "x-pg", j["id"], data)
        j2 = A.upload_ok("x-pg", ckpt(1201))
        assert_download(self, B, "x-pg", j2["id"], ckpt(1201))
        # the cut upload's blobs went (deferred to the next change) or stay
        # claimed until the lease: after it, nothing is left over
        time.sleep(LEASE + 1)
        B.request("DELETE", "/models/x-pg/checkpoints/%d" % j["id"])
        p = store.cli("gc", "--data", B.data_dir, *S.args)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(S.blob_hashes()), B.stats()["blobs"])
        consistent(self, "after PostgreSQL came back")


if __name__ == "__main__":
    harness.main()
