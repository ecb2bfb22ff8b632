#!/usr/bin/python3
"""Reliability (SPEC 8), against the real daemon on 127.0.0.1.

1. kill -9 at random points of large uploads, 20 rounds: after each restart
   every earlier checkpoint downloads byte for byte, every listed checkpoint
   is whole, no temp or orphan blob file is left, `ckptd verify` passes; at
   the end `ckptd gc` refuses while the daemon runs and removes nothing
   after it stops.
2. 8 uploaders and 8 downloaders at once ($CKPTD_SOAK_SECONDS, default 60;
   at most $CKPTD_SOAK_MAX_REQUESTS requests per thread): no error, every
   download exact, the counts add up, gc finds nothing to remove.
3. A full disk (a 64 MB tmpfs, needs root) answers 507 no_space and leaves
   the store consistent; deleting frees room for new uploads.
4. Damaged zips, pickles and safetensors answer 4xx JSON, never 5xx or a cut
   connection, and change nothing.
5. Names and paths with traversal attempts create nothing outside the data
   directory; SQL-looking values are data, not SQL; bytes that are not
   UTF-8 answer 4xx like any other bad name.
6. (SPEC 6) With every blob file damaged on disk, no download answers a
   complete 200 with other bytes than before; verify reports the damage.

Randomness comes from one seed, printed first; CKPTD_RELIABILITY_SEED=N
replays a run. CKPTD_KILL_ROUNDS (default 20) sets test 1's rounds.
"""

import hashlib
import http.client
import os
import io
import zipfile
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness, store  # noqa: E402

SEED = int(os.environ.get("CKPTD_RELIABILITY_SEED") or random.SystemRandom().randrange(1 << 31))
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MB = 1 << 20


def sha(b):
    return hashlib.sha256(b).hexdigest()


def all_checkpoints(d):
    """{id: checkpoint JSON} of every listed checkpoint of every model."""
    out = {}
    for m in d.get_json("/models")["models"]:
        name = m["name"]
        j = d.get_json("/models/%s/checkpoints?limit=100000" % ckptd.quote(name))
        if j["total"] != len(j["checkpoints"]):
            raise AssertionError("model %s: total %d but %d listed" % (name, j["total"],
                                                                     len(j["checkpoints"])))
        for c in j["checkpoints"]:
            out[c["id"]] = c
    return out


def file_url(model, cid):
    return "/models/%s/checkpoints/%d/file" % (model, cid)


def check_store_files(tc, d, what):
    """No temp files; the blob files are exactly as many as /stats counts."""
    tc.assertEqual(store.leftovers(d.data_dir), [], "%s: temporary files left" % what)
    if "--blobs" in d.args:  # a blob directory of the test's choosing
        hashes, strays = store.blob_files_in(d.args[d.args.index("--blobs") + 1])
    else:
        hashes, strays = store.blob_files(d.data_dir)
    tc.assertEqual(strays, [], "%s: unexpected files in blob shards" % what)
    st = d.stats()
    tc.assertEqual(len(hashes), st["blobs"],
                   "%s: %d blob files but /stats counts %d blobs" % (what, len(hashes), st["blobs"]))
    return st


def run_verify(tc, data_dir, what, args=()):
    p = store.cli("verify", "--data", data_dir, *args)
    tc.assertEqual(p.returncode, 0, "%s: ckptd verify exited %d\n%s%s"
                   % (what, p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    tc.assertRegex(p.stdout, r": 0 damaged, 0 missing", what)
    return p.stdout.strip()


def run_gc_expect_nothing(tc, data_dir, what, args=()):
    p = store.cli("gc", "--data", data_dir, *args)
    tc.assertEqual(p.returncode, 0, "%s: ckptd gc exited %d: %s%s"
                   % (what, p.returncode, p.stdout, p.stderr))
    tc.assertIn("removed 0 unreferenced blobs", p.stdout,
                "%s: gc found orphan blobs: %s" % (what, p.stdout.strip()))


# -- 1. kill -9 ---------------------------------------------------------------------

KILL_TENSORS = 16
KILL_TENSOR_FLOATS = 1 << 20  # 4 MB each: 64 MB files
KILL_KEEP = 3  # big checkpoints kept between rounds (older ones are deleted)


def kill_round_file(path, r, all_new=False):
    """Round r's checkpoint: half its tensors shared with the first big
    upload's (so some blobs already exist), half new."""
    import torch

    sd = {}
    for k in range(KILL_TENSORS):
        fresh = all_new or k % 2 == 1
        s = SEED * 7919 + k + (1000 * (r + 2) if fresh else 0)
        sd["layer%d.weight" % k] = store.randn(s & 0x7FFFFFFF, KILL_TENSOR_FLOATS)
    obj = {"epoch": r + 1, "loss": 1.0 / (r + 3), "model_state_dict": sd,
           "note": "round %d" % r}
    torch.save(obj, path)
    return ckptd.sha256_file(path), os.path.getsize(path)


def upload_in_thread(d, model, path, params, out):
    def run():
        t0 = time.time()
        try:
            r = d.stream_upload(model, path, params, timeout=120)
            out["status"] = r.status
            out["body"] = r.body
        except Exception as e:  # the daemon died under it: expected
            out["error"] = "%s: %s" % (type(e).__name__, e)
        out["seconds"] = time.time() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def kill_args(rnd):
    """Even rounds run without compression: on a local store each large tensor is
    then written as it arrives into a blob file of its own, which the commit
    renames into place (writing once, store.h); odd rounds compress (the
    default), encoding at the commit. One store holds blobs of both."""
    return ["--compress", "off"] if rnd % 2 == 0 else []


class KillNine(unittest.TestCase):
    def test_kill_9_during_uploads_leaves_each_checkpoint_whole_or_absent(self):
        """Each round: upload a 64 MB checkpoint, SIGKILL the daemon after a
        random delay in [0, 1.2 x one upload's time], restart on the same
        directory, check. The store keeps 3 small checkpoints for good and the
        newest KILL_KEEP big ones (older ones are deleted, which keeps each
        round's verify and downloads bounded and frees blobs across crashes).
        Each round downloads the small ones, any new one and one random kept
        big one; the last round downloads everything."""
        rng = random.Random(SEED)
        rounds = int(os.environ.get("CKPTD_KILL_ROUNDS") or 20)
        work = ckptd.work_dir()
        data = os.path.join(work, "data")
        path = os.path.join(work, "round.pth")
        base = {}  # id -> (model, sha256, size): kept for good
        big = {}   # id -> (model, sha256, size): the newest big ones
        gone = set()
        d = ckptd.Daemon(data_dir=data, name="kill-0", args=kill_args(0)).start()
        try:
            for i in range(3):
                b = store.save_torch({"epoch": i, "w": store.randn(SEED + i, 256 * 1024),
                                      "b": store.randn(SEED + 100 + i, 1000)})
                j = d.upload_ok("kill-base", b, {"epoch": i})
                base[j["id"]] = ("kill-base", sha(b), len(b))
            s0, n0 = kill_round_file(path, -1, all_new=True)
            r = d.stream_upload("kill-big", path, {"run": "first"})
            self.assertEqual(r.status, 201, r)
            base[r.json()["id"]] = ("kill-big", s0, n0)
            # one upload like the rounds' (half its tensors new) sets the delays
            s1, n1 = kill_round_file(path, rounds)
            t0 = time.time()
            r = d.stream_upload("kill-big", path, {"run": "measure"})
            took = time.time() - t0
            self.assertEqual(r.status, 201, r)
            big[r.json()["id"]] = ("kill-big", s1, n1)
            print("  kill: seed %d; one %.0f MB upload (half its tensors new) takes %.2fs; "
                  "%d rounds" % (SEED, n1 / MB, took, rounds), flush=True)

            tally = {"answered": 0, "committed_unanswered": 0, "absent": 0,
                     "temp_blob_files_seen": 0, "orphans_swept": 0}
            for rnd in range(rounds):
                s, n = kill_round_file(path, rnd)
                delay = rng.uniform(0, 1.2 * took)
                out = {}
                t = upload_in_thread(d, "kill-big", path, {"run": "r%d" % rnd}, out)
                time.sleep(delay)
                d.kill()
                t.join(60)
                self.assertFalse(t.is_alive(), "round %d: upload thread still blocked" % rnd)
                tmp_before = len(store.leftovers(data))
                what = "round %d (seed %d, delay %.3fs of %.2fs)" % (rnd, SEED, delay, took)

                d = ckptd.Daemon(data_dir=data, name="kill-%d" % (rnd + 1),
                                 args=kill_args(rnd + 1)).start()
                swept = re.findall(r"removed (\d+) blobs left by an unfinished upload", d.log_text())
                self.assertEqual(store.leftovers(data), [], "%s: temp files after restart" % what)

                listed = all_checkpoints(d)
                acked = None
                if out.get("status") == 201:
                    acked = ckptd.Response(201, {}, out["body"]).json()["id"]
                    self.assertIn(acked, listed, "%s: upload answered 201 (id %d) but is gone "
                                  "after the restart" % (what, acked))
                elif "status" in out:
                    self.fail("%s: upload answered %d %r" % (what, out["status"], out["body"][:300]))
                known = {**base, **big}
                new = [cid for cid in listed if cid not in known]
                self.assertLessEqual(len(new), 1, "%s: %d new checkpoints: %r"
                                     % (what, len(new), [listed[c] for c in new]))
                for cid in new:
                    c = listed[cid]
                    self.assertNotIn(cid, gone, "%s: deleted checkpoint %d is back" % (what, cid))
                    self.assertEqual((c["model"], c["run"], c["sha256"], c["size"]),
                                     ("kill-big", "r%d" % rnd, s, n),
                                     "%s: unknown checkpoint listed: %r" % (what, c))
                    self.assertEqual(c["tensor_count"], KILL_TENSORS, what)
                    big[cid] = known[cid] = ("kill-big", s, n)
                self.assertEqual(sorted(set(known) - set(listed)), [],
                                 "%s: earlier checkpoints lost" % what)
                for cid, (model, want, size) in known.items():
                    self.assertEqual((listed[cid]["sha256"], listed[cid]["size"]), (want, size),
                                     "%s: checkpoint %d listed with other bytes" % (what, cid))
                fetch = set(base) | set(new)
                fetch.add(rng.choice(sorted(big)))
                if rnd == rounds - 1:
                    fetch = set(known)
                for cid in sorted(fetch):
                    model, want, size = known[cid]
                    st, _h, got, glen = d.stream_download(file_url(model, cid))
                    self.assertEqual((st, got, glen), (200, want, size),
                                     "%s: checkpoint %d does not download byte for byte"
                                     % (what, cid))
                stats = check_store_files(self, d, what)
                self.assertEqual(stats["checkpoints"], len(listed), what)
                self.assertEqual(stats["logical_bytes"], sum(v[2] for v in known.values()), what)
                run_verify(self, data, what)

                if acked is not None:
                    tally["answered"] += 1
                elif new:
                    tally["committed_unanswered"] += 1
                else:
                    tally["absent"] += 1
                tally["temp_blob_files_seen"] += tmp_before > 0
                tally["orphans_swept"] += bool(swept and int(swept[-1]) > 0)
                print("  kill round %2d: delay %.3fs (%3.0f%%): %s%s%s" % (
                    rnd, delay, 100 * delay / took,
                    "answered 201" if acked is not None else
                    ("committed, answer lost" if new else "not stored (%s)" % out.get("error", "?")),
                    ", %d temp blob files" % tmp_before if tmp_before else "",
                    ", swept %s orphan blobs" % swept[-1] if swept else ""), flush=True)
                while len(big) > KILL_KEEP and rnd < rounds - 1:
                    old = min(big)
                    r = d.request("DELETE", "/models/kill-big/checkpoints/%d" % old)
                    self.assertEqual(r.status, 204, r)
                    del big[old]
                    gone.add(old)

            p = store.cli("gc", "--data", data)
            if os.environ.get("CKPTD_IT_PG"):
                # on a shared index gc runs beside the instances: the claims
                # protect what they hold, and here nothing is unreferenced
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("removed 0 unreferenced blobs", p.stdout)
            else:
                # on SQLite gc must refuse while a daemon holds the data directory
                self.assertNotEqual(p.returncode, 0, "gc ran while the daemon holds %s: %s"
                                    % (data, p.stdout))
                self.assertIn("another ckptd", p.stderr)
            final = d.stats()
            d.stop_checked()
            run_gc_expect_nothing(self, data, "after %d kill rounds" % rounds)
            hashes, strays = store.blob_files(data)
            self.assertEqual((len(hashes), strays), (final["blobs"], []),
                             "blob files vs the index after gc")
            self.assertEqual(store.leftovers(data), [])
            run_verify(self, data, "after gc")
            print("  kill: %d rounds: %s; %d deleted between rounds; %d checkpoints, %d blobs"
                  % (rounds, ", ".join("%s %d" % kv for kv in tally.items()), len(gone),
                     final["checkpoints"], final["blobs"]), flush=True)
        finally:
            d.kill()


# -- 2. soak ----------------------------------------------------------------------

class Client:
    """One keep-alive connection; a GET on a connection the server closed
    while idle is retried once on a new one (counted in reconnects)."""

    def __init__(self, port):
        self.port = port
        self.c = None
        self.reconnects = 0

    def request(self, method, url, body=None, headers=None):
        for attempt in (0, 1):
            fresh = self.c is None
            if fresh:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.c.request(method, ckptd.API + url, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                if r.will_close:
                    self.c.close()
                    self.c = None
                return r.status, r.headers, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.c.close()
                self.c = None
                if fresh or attempt or method not in ("GET", "HEAD"):
                    raise
                self.reconnects += 1

    def close(self):
        if self.c:
            self.c.close()


def soak_pools():
    """Files the uploaders cycle through: keepers share 4 tensors among 12
    files; churn files share one tensor among 4."""
    shared = [store.randn(SEED + 500 + i, 64 * 1024) for i in range(4)]
    keep = []
    for i in range(12):
        sd = {"shared.a": shared[i % 4], "shared.b": shared[(i + 1) % 4],
              "own.w": store.randn(SEED + 600 + i, 200 * 1024 + 37 * i),
              "own.b": store.randn(SEED + 700 + i, 100 + i)}
        keep.append(pool_entry({"epoch": i, "model_state_dict": sd}, sd))
    churn_shared = store.randn(SEED + 800, 128 * 1024)
    churn = []
    for i in range(4):
        sd = {"c": churn_shared, "u": store.randn(SEED + 900 + i, 64 * 1024)}
        churn.append(pool_entry({"state_dict": sd}, sd))
    return keep, churn


def pool_entry(obj, sd):
    b = store.save_torch(obj)
    return {"bytes": b, "sha": sha(b), "size": len(b),
            "tensors": {k: sha(v.numpy().tobytes()) for k, v in sd.items()}}


class Soak(unittest.TestCase):
    def test_8_uploaders_and_8_downloaders_at_once(self):
        seconds = float(os.environ.get("CKPTD_SOAK_SECONDS") or 60)
        max_req = int(os.environ.get("CKPTD_SOAK_MAX_REQUESTS") or 5000)
        keep, churn = soak_pools()
        lock = threading.Lock()
        committed = []  # (model, id, pool index)
        errors = []
        counts = {"uploads": 0, "downloads": 0, "tensor_reads": 0, "json_reads": 0,
                  "lists": 0, "churn_cycles": 0, "bytes_up": 0, "bytes_down": 0,
                  "reconnects": 0}

        def err(msg):
            with lock:
                errors.append(msg)

        def add(**kw):
            with lock:
                for k, v in kw.items():
                    counts[k] += v

        d = ckptd.Daemon(name="soak").start()
        deadline = time.time() + seconds
        octet = {"Content-Type": "application/octet-stream"}

        def keeper(k):
            rng = random.Random(SEED * 31 + k)
            c = Client(d.port)
            model = "soak-%d" % (k % 3)
            try:
                for i in range(max_req):
                    if time.time() >= deadline:
                        break
                    idx = rng.randrange(len(keep))
                    f = keep[idx]
                    try:
                        st, _h, body = c.request(
                            "POST", "/models/%s/checkpoints?epoch=%d&metric.k=%d" % (model, i, k),
                            f["bytes"], octet)
                    except Exception as e:
                        err("keeper %d: upload %d: %r" % (k, i, e))
                        continue
                    if st != 201:
                        err("keeper %d: upload answered %d %r" % (k, st, body[:200]))
                        continue
                    j = ckptd.Response(st, {}, body).json()
                    if j["sha256"] != f["sha"] or j["size"] != f["size"]:
                        err("keeper %d: upload %d answered sha %s size %d" % (k, j["id"], j["sha256"],
                                                                             j["size"]))
                    with lock:
                        committed.append((model, j["id"], idx))
                    add(uploads=1, bytes_up=f["size"])
            finally:
                add(reconnects=c.reconnects)
                c.close()

        def churner(k):
            rng = random.Random(SEED * 37 + k)
            c = Client(d.port)
            try:
                for i in range(max_req // 4):
                    if time.time() >= deadline:
                        break
                    f = churn[rng.randrange(len(churn))]
                    try:
                        st, _h, body = c.request("POST", "/models/soak-churn/checkpoints",
                                                 f["bytes"], octet)
                        if st != 201:
                            err("churner %d: upload answered %d %r" % (k, st, body[:200]))
                            continue
                        cid = ckptd.Response(st, {}, body).json()["id"]
                        st, _h, body = c.request("GET", file_url("soak-churn", cid))
                        if st != 200 or sha(body) != f["sha"]:
                            err("churner %d: checkpoint %d downloads %d, sha %s, want %s"
                                % (k, cid, st, sha(body), f["sha"]))
                        st, _h, body = c.request("DELETE", "/models/soak-churn/checkpoints/%d" % cid)
                        if st != 204:
                            err("churner %d: delete %d answered %d %r" % (k, cid, st, body[:200]))
                        st, _h, body = c.request("GET", "/models/soak-churn/checkpoints/%d" % cid)
                        if st != 404:
                            err("churner %d: deleted %d answers %d" % (k, cid, st))
                        add(churn_cycles=1, bytes_up=f["size"], bytes_down=f["size"])
                    except Exception as e:
                        err("churner %d: %r" % (k, e))
            finally:
                add(reconnects=c.reconnects)
                c.close()

        def downloader(k):
            rng = random.Random(SEED * 41 + k)
            c = Client(d.port)
            try:
                for i in range(max_req):
                    if time.time() >= deadline:
                        break
                    with lock:
                        pick = rng.choice(committed) if committed else None
                    if pick is None:
                        time.sleep(0.02)
                        continue
                    model, cid, idx = pick
                    f = keep[idx]
                    op = rng.random()
                    try:
                        if op < 0.6:
                            st, h, body = c.request("GET", file_url(model, cid))
                            if st != 200 or sha(body) != f["sha"]:
                                err("downloader %d: %s/%d/file: %d, %d bytes, sha %s want %s"
                                    % (k, model, cid, st, len(body), sha(body), f["sha"]))
                            add(downloads=1, bytes_down=len(body))
                        elif op < 0.8:
                            name = rng.choice(sorted(f["tensors"]))
                            st, h, body = c.request(
                                "GET", "/models/%s/checkpoints/%d/tensors/model_state_dict/%s"
                                "?format=raw" % (model, cid, name))
                            if st != 200 or sha(body) != f["tensors"][name]:
                                err("downloader %d: tensor %s of %d: %d, sha %s"
                                    % (k, name, cid, st, sha(body)))
                            add(tensor_reads=1, bytes_down=len(body))
                        elif op < 0.95:
                            st, h, body = c.request("GET", "/models/%s/checkpoints/%d" % (model, cid))
                            j = ckptd.Response(st, h, body).json() if st == 200 else {}
                            if st != 200 or j.get("sha256") != f["sha"] or \
                                    len(j.get("tensors", [])) != len(f["tensors"]):
                                err("downloader %d: checkpoint %d JSON: %d %r"
                                    % (k, cid, st, body[:200]))
                            add(json_reads=1)
                        else:
                            st, h, body = c.request(
                                "GET", "/models/%s/checkpoints?order=-created&limit=20" % model)
                            if st != 200 or ckptd.Response(st, h, body).json()["total"] < 1:
                                err("downloader %d: list %s: %d %r" % (k, model, st, body[:200]))
                            add(lists=1)
                    except Exception as e:
                        err("downloader %d: %s %d: %r" % (k, model, cid, e))
            finally:
                add(reconnects=c.reconnects)
                c.close()

        try:
            threads = [threading.Thread(target=keeper, args=(k,)) for k in range(6)]
            threads += [threading.Thread(target=churner, args=(k,)) for k in range(2)]
            threads += [threading.Thread(target=downloader, args=(k,)) for k in range(8)]
            t0 = time.time()
            for t in threads:
                t.daemon = True
                t.start()
            for t in threads:
                t.join(max(1, deadline + 120 - time.time()))
            hung = sum(t.is_alive() for t in threads)
            elapsed = time.time() - t0
            nreq = (counts["uploads"] + counts["downloads"] + counts["tensor_reads"] +
                    counts["json_reads"] + counts["lists"] + 4 * counts["churn_cycles"])
            print("  soak: seed %d, %.0fs, %d requests (%d uploads, %d file downloads, %d tensor "
                  "reads, %d JSON reads, %d lists, %d upload+download+delete cycles), %.0f MB up, "
                  "%.0f MB down, %d keep-alive reconnects, %d errors"
                  % (SEED, elapsed, nreq, counts["uploads"], counts["downloads"],
                     counts["tensor_reads"], counts["json_reads"], counts["lists"],
                     counts["churn_cycles"], counts["bytes_up"] / MB, counts["bytes_down"] / MB,
                     counts["reconnects"], len(errors)), flush=True)
            for e in errors[:10]:
                print("    " + e, flush=True)
            self.assertEqual(hung, 0, "%d client threads still blocked 120s after the end" % hung)
            self.assertEqual(errors, [], "%d errors, first: %s" % (len(errors), errors[:3]))
            self.assertGreater(counts["uploads"], 0)
            self.assertGreater(counts["downloads"], 0)

            listed = all_checkpoints(d)
            want = {cid: (model, keep[idx]) for model, cid, idx in committed}
            self.assertEqual(sorted(listed), sorted(want), "listed ids vs uploaded ones")
            for cid, c in listed.items():
                self.assertEqual((c["model"], c["sha256"]), (want[cid][0], want[cid][1]["sha"]))
            for m in ("soak-0", "soak-1", "soak-2"):
                n = sum(1 for model, _, _ in committed if model == m)
                self.assertEqual(d.get_json("/models/%s/checkpoints" % m)["total"], n, m)
            if counts["churn_cycles"]:
                self.assertEqual(d.get_json("/models/soak-churn/checkpoints")["total"], 0)
            st = check_store_files(self, d, "after the soak")
            self.assertEqual(st["checkpoints"], len(committed))
            self.assertEqual(st["logical_bytes"], sum(keep[i]["size"] for _, _, i in committed))
            # every blob: the 4 shared + 12 own*2 tensors and <= 12 skeletons
            self.assertLessEqual(st["blobs"], 4 + 24 + 12, st)
            c = Client(d.port)
            try:
                for model, cid, idx in random.Random(SEED).sample(committed, min(300, len(committed))):
                    s, _h, body = c.request("GET", file_url(model, cid))
                    self.assertEqual((s, sha(body)), (200, keep[idx]["sha"]), "checkpoint %d" % cid)
            finally:
                c.close()
            run_verify(self, d.data_dir, "after the soak")
            d.stop_checked()
            run_gc_expect_nothing(self, d.data_dir, "after the soak")
        finally:
            d.cleanup()


# -- 3. full disk -------------------------------------------------------------------

class FullDisk(unittest.TestCase):
    def test_a_full_disk_answers_507_and_keeps_the_store_consistent(self):
        rng = random.Random(SEED + 3)
        base = ckptd.work_dir()
        mnt = os.path.join(base, "data")
        os.makedirs(mnt)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            self.skipTest("cannot mount a 64 MB tmpfs (needs root): %s" % p.stdout.strip())
        d = None
        try:
            # blobs on the filled disk too, on every run: this is about a local disk
            local = ["--blobs", os.path.join(mnt, "blobs")]
            d = ckptd.Daemon(data_dir=mnt, name="fulldisk", args=local).start()
            stored = []  # (id, sha, size)
            n507 = 0
            seq = [0]

            def upload(floats):
                seq[0] += 1
                b = store.save_torch({"w": store.randn(SEED * 13 + seq[0], floats // 2),
                                      "v": store.randn(SEED * 17 + seq[0], floats - floats // 2)})
                before = d.stats()
                r = d.upload("disk", b)
                if r.status == 201:
                    j = r.json()
                    self.assertEqual(j["sha256"], sha(b))
                    stored.append((j["id"], sha(b), len(b)))
                    return 201
                what = "upload of %d bytes with %d stored" % (len(b), len(stored))
                j = checks.error_json(self, r, 507, what)
                self.assertEqual(j["error"], "no_space", what)
                self.assertEqual(d.stats(), before, "%s: a failed upload changed /stats" % what)
                check_store_files(self, d, what)
                return 507

            def check_all(what):
                self.assertEqual(d.get("/healthz").status, 200, what)
                for cid, want, size in stored:
                    self.assertEqual(d.stream_download(file_url("disk", cid))[2:], (want, size),
                                     "%s: checkpoint %d" % (what, cid))
                st = check_store_files(self, d, what)
                self.assertEqual(st["checkpoints"], len(stored), what)
                run_verify(self, mnt, what, local)

            # A: ~10 MB checkpoints until one does not fit
            for _ in range(12):
                if upload(10 * MB // 4) == 507:
                    n507 += 1
                    break
            self.assertEqual(n507, 1, "64 MB never filled with 10 MB checkpoints")
            self.assertGreater(len(stored), 2)
            full_a = len(stored)
            check_all("after a 10 MB upload did not fit")
            # deleting frees room: then a 10 MB upload fits again
            drop = rng.sample(stored, (len(stored) + 1) // 2)
            for item in drop:
                r = d.request("DELETE", "/models/disk/checkpoints/%d" % item[0])
                self.assertEqual(r.status, 204, "delete %d after a 507: %r" % (item[0], r))
                stored.remove(item)
            self.assertEqual(upload(10 * MB // 4), 201, "no room after deleting")
            check_all("after deleting and uploading again")

            # B: to the last byte, with smaller and smaller checkpoints
            for floats, tries in ((10 * MB // 4, 12), (2 * MB // 4, 20), (256 * 1024 // 4, 40),
                                  (16 * 1024 // 4, 80), (256, 80)):
                for _ in range(tries):
                    if upload(floats) == 507:
                        n507 += 1
                        break
            df = os.statvfs(mnt)
            check_all("on a disk full to the last byte")
            # Deleting needs an index commit, which needs room in the WAL: the
            # daemon keeps a small reserve for it, so space can always be
            # freed through the API (it answered 507 here before the reserve)
            victim = stored[0]
            r = d.request("DELETE", "/models/disk/checkpoints/%d" % victim[0])
            self.assertEqual(r.status, 204, "a delete on a disk full to the last byte: %r" % r)
            stored.remove(victim)
            delete_b = "204"
            check_all("after a delete on a full disk")
            print("  full disk: A: %d x 10 MB stored, then 507; deleted %d, one more fits. "
                  "B: %d stored, %d answers 507 in all, %.2f MB free; a delete there answers %s"
                  % (full_a, len(drop), len(stored), n507, df.f_bavail * df.f_frsize / MB,
                     delete_b), flush=True)
            # a restart on the full disk keeps everything
            d.stop_checked()
            d = ckptd.Daemon(data_dir=mnt, name="fulldisk-2", args=local).start()
            check_all("after a restart on the full disk")
            d.stop_checked()
            run_gc_expect_nothing(self, mnt, "full disk", local)
            run_verify(self, mnt, "full disk after gc", local)
        finally:
            if d is not None:
                d.kill()
            if subprocess.run(["umount", mnt]).returncode != 0:
                subprocess.run(["umount", "-l", mnt])
            if d is not None:
                d.cleanup()


# -- 4. malformed input ------------------------------------------------------------------

STRICT, LENIENT, DATA_FLIP = "4xx", "201 or 4xx", "201 or 422"


def safetensors_file():
    hdr = (b'{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
           b'"b":{"dtype":"I64","shape":[3],"data_offsets":[16,40]}}')
    hdr += b" " * (-len(hdr) % 8)
    return struct.pack("<Q", len(hdr)) + hdr + struct.pack("<4f", 1, 2, 3, 4) + \
        struct.pack("<3q", 7, 8, 9)


def malformed_cases(rng, marker):
    """[(label, body, rule)] for the malformed-input test."""
    cases = []
    for sub in ("torch", "safetensors"):
        d = os.path.join(ckptd.REPO, "tests", "data", sub, "invalid")
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), "rb") as f:
                cases.append(("%s/invalid/%s" % (sub, name), f.read(), STRICT))
    real = fixtures.seed_bytes("tutorial_checkpoint.pt")
    for off in sorted(rng.sample(range(1, len(real)), 20)):
        cases.append(("truncated at %d of %d" % (off, len(real)), real[:off], STRICT))
    pkl_name, (p0, pn) = store.record_named(real, "/data.pkl")
    for _ in range(20):
        pos = p0 + rng.randrange(pn)
        b = bytearray(real)
        b[pos] ^= 1 << rng.randrange(8)
        # the zip's CRC-32 of data.pkl no longer matches: it must be refused
        cases.append(("data.pkl byte %d flipped" % pos, bytes(b), STRICT))
        # with the CRC made right, the damage reaches the pickle VM
        cases.append(("data.pkl byte %d flipped, CRC fixed" % pos,
                      store.fix_crc(bytes(b), pkl_name), LENIENT))
    trecs = store.tensor_records(real)
    for _ in range(10):
        _n, (t0, tn) = rng.choice(trecs)
        pos = t0 + rng.randrange(tn)
        b = bytearray(real)
        b[pos] ^= 0xFF
        cases.append(("tensor data byte %d flipped" % pos, bytes(b), DATA_FLIP))
    cases.append(("central directory past the end", store.with_cd_offset(real, len(real) + 4096),
                  STRICT))
    cases.append(("central directory at 0xfffffffe", store.with_cd_offset(real, 0xFFFFFFFE), STRICT))
    # torch.load (miniz) reads this one too: the count is not checked
    cases.append(("65535 entries claimed", store.with_entry_count(real, 0xFFFF), LENIENT))
    cases.append(("end record only", real[real.rfind(b"PK\x05\x06"):], STRICT))
    cases.append(("zip magic then garbage", b"PK\x03\x04" + bytes(rng.randrange(256)
                                                                   for _ in range(2000)), STRICT))
    # pickles behind a right CRC
    for label, pk in (
            ("empty data.pkl", b""),
            ("data.pkl of garbage", bytes(rng.randrange(256) for _ in range(500))),
            ("MARK flood", b"\x80\x02" + b"(" * 200000 + b"."),
            ("lists nested 100000 deep", b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b"."),
            ("BINUNICODE of 2 GB", b"\x80\x02X\xff\xff\xff\x7fabc."),
            ("BINBYTES of 4 GB", b"\x80\x03B\xff\xff\xff\xffabc."),
            ("LONG_BINGET of a missing memo", b"\x80\x02j\xff\xff\xff\xff."),
            ("STOP on an empty stack", b"\x80\x02."),
            ("no STOP", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s"),
            ("protocol 99", b"\x80\x63}."),
    ):
        cases.append((label, store.rebuild_zip(real, {"/data.pkl": pk}), STRICT))
    for label, pk in (
            # STOP takes the top and leaves the rest: pickle.loads gives []
            ("200000 lists on the stack", b"\x80\x02" + b"]" * 200000 + b"."),
            ("a dict without tensors", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."),
            ("os.system through REDUCE", b"\x80\x02cos\nsystem\nq\x00X" +
             struct.pack("<I", len("touch /tmp/" + marker)) + ("touch /tmp/" + marker).encode() +
             b"\x85R}q\x01X\x01\x00\x00\x00aq\x02h\x00s\x86."),
    ):
        cases.append((label, store.rebuild_zip(real, {"/data.pkl": pk}), LENIENT))
    # a storage class name that is not UTF-8 (error messages quote it)
    pkl = store.rebuild_zip(real, {})
    _n, (p0, pn) = store.record_named(pkl, "/data.pkl")
    body = pkl[p0:p0 + pn].replace(b"torch\nFloatStorage", b"torch\n\xc6loatStorage")
    cases.append(("storage class name not UTF-8", store.rebuild_zip(real, {"/data.pkl": body}),
                  STRICT))
    # a storage key that has no record
    pk = bytearray(store.rebuild_zip(real, {}))
    name, (p0, pn) = store.record_named(bytes(pk), "/data.pkl")
    body = bytes(pk[p0:p0 + pn]).replace(b"X\x01\x00\x00\x000", b"X\x03\x00\x00\x00999")
    cases.append(("storage key without a record", store.rebuild_zip(real, {"/data.pkl": body}),
                  STRICT))
    # tensors that reach outside their storage, or whose sizes overflow
    four = struct.pack("<4f", 1, 2, 3, 4)
    for label, (numel, off, size, stride) in (
            ("view past its storage", (4, 0, (1000,), (1,))),
            ("offset past its storage", (4, 1 << 40, (1,), (1,))),
            ("stride past its storage", (4, 0, (2, 2), (1 << 40, 1))),
            ("negative size", (4, 0, (-2,), (1,))),
            ("negative stride", (4, 3, (4,), (-1,))),
            ("size product overflows", (4, 0, (1 << 40, 1 << 40, 1 << 40), (1, 1, 1))),
            ("storage numel bigger than its record", (1 << 30, 0, (4,), (1,))),
    ):
        rule = LENIENT if label == "negative stride" else STRICT
        cases.append((label, store.torch_zip({"w": store.fake_tensor("0", numel, off, size, stride)},
                                             {"0": four}), rule))
    cases.append(("64 dims", store.torch_zip(
        {"w": store.fake_tensor("0", 4, 0, (1,) * 64, (1,) * 64)}, {"0": four}), LENIENT))
    # record names that are not UTF-8, damaged so that errors name them
    four = struct.pack("<4f", 1, 2, 3, 4)
    utf8 = store.torch_zip({"w": store.fake_tensor("0", 4, 0, (4,), (1,))}, {"0": four},
                           archive="arch\u00ffve")
    odd = utf8.replace(b"arch\xc3\xbfve", b"arch\xff\xffve")  # same length: same offsets
    cases.append(("record names not UTF-8", odd, LENIENT))
    for suffix in ("/data.pkl", "/data/0"):
        _n, (p0, _pn) = store.record_named(utf8, suffix)
        b = bytearray(odd)
        b[p0] ^= 0x40
        cases.append(("record names not UTF-8, %s damaged" % suffix, bytes(b), STRICT))
    # safetensors
    st = safetensors_file()
    cases.append(("safetensors header length 2^63", struct.pack("<Q", 1 << 63) + st[8:], STRICT))
    cases.append(("safetensors header length 2^64-1", b"\xff" * 8 + st[8:], STRICT))
    cases.append(("safetensors header length one past the end",
                  struct.pack("<Q", len(st) - 7) + st[8:], STRICT))
    for off in sorted(rng.sample(range(1, len(st)), 8)):
        cases.append(("safetensors truncated at %d" % off, st[:off], STRICT))
    cases.append(("safetensors offsets past the data",
                  st.replace(b"[16,40]", b"[16,48]"), STRICT))
    return cases


class Malformed(unittest.TestCase):
    def test_damaged_uploads_answer_4xx_json_and_change_nothing(self):
        rng = random.Random(SEED + 4)
        marker = "ckptd-pwned-%d" % SEED
        with ckptd.Daemon(name="malformed") as d:
            real = fixtures.seed_bytes("tutorial_checkpoint.pt")
            d.upload_ok("mal", real)
            d.upload_ok("mal", safetensors_file())

            def snapshot():
                return (d.stats(), d.get_json("/models"),
                        d.get_json("/models/mal/checkpoints?limit=1000"))

            before = snapshot()
            accepted = []
            statuses = {}
            cases = malformed_cases(rng, marker)
            for label, body, rule in cases:
                with self.subTest(label):
                    try:
                        r = d.upload("mal", body)
                    except (OSError, http.client.HTTPException) as e:
                        self.fail("%s: the connection failed: %r" % (label, e))
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    self.assertLess(r.status, 500, "%s: %d %r" % (label, r.status, r.body[:300]))
                    if r.status == 201 and rule != STRICT:
                        j = r.json()
                        accepted.append((label, j["id"]))
                        got = d.get(file_url("mal", j["id"]))
                        self.assertEqual((got.status, sha(got.body)), (200, sha(body)),
                                         "%s: accepted but downloads other bytes" % label)
                        continue
                    allowed = (422,) if rule == DATA_FLIP else tuple(range(400, 500))
                    checks.error_json(self, r, allowed, label)
            print("  malformed: seed %d, %d bodies: %s; accepted: %s"
                  % (SEED, len(cases), ", ".join("%d x%d" % kv for kv in sorted(statuses.items())),
                     [a for a, _ in accepted] or "none"), flush=True)
            self.assertFalse(os.path.exists("/tmp/" + marker), "a pickle GLOBAL was executed")
            for label, cid in accepted:
                self.assertEqual(d.request("DELETE", "/models/mal/checkpoints/%d" % cid).status, 204)
            after = snapshot()
            self.assertEqual(after[0], before[0], "/stats changed")
            self.assertEqual(after[1], before[1], "/models changed")
            self.assertEqual(after[2], before[2], "the model's list changed")
            self.assertEqual(d.get("/healthz").status, 200)
            check_store_files(self, d, "after malformed input")
            run_verify(self, d.data_dir, "after malformed input")


# -- 6. damaged blobs are never served silently (SPEC 6) ------------------------------------

def fetch(d, url, rng=None):
    """GET url (with a Range header when rng is given) -> (status, body,
    complete): complete is False when the connection ended before
    Content-Length bytes (a cut download)."""
    c = d.conn(60)
    try:
        c.request("GET", ckptd.API + url, headers={"Range": rng} if rng else {})
        r = c.getresponse()
        try:
            body = r.read()
            n = r.getheader("Content-Length")
            return r.status, body, n is None or int(n) == len(body)
        except http.client.IncompleteRead as e:
            return r.status, e.partial, False
    except (OSError, http.client.HTTPException):
        return None, b"", False
    finally:
        c.close()


class DamagedBlobs(unittest.TestCase):
    def test_a_damaged_blob_is_never_served_as_a_good_answer(self):
        """Flip one byte in every blob file on disk: the file, each tensor
        (raw and npy) and the state_dict either fail (an error status or a
        cut connection) or are the exact bytes of before; never a complete
        200 with other bytes."""
        import torch

        with ckptd.Daemon(name="damaged") as d:
            sd = {"f": store.randn(SEED + 41, 64 * 1024),  # compressible: byte planes
                  "i": torch.randint(-2 ** 62, 2 ** 62, (8192,), dtype=torch.int64,
                                     generator=torch.Generator().manual_seed(SEED)),  # raw
                  "u": torch.zeros(4096, dtype=torch.uint8)}  # zstd
            blob = store.save_torch({"state_dict": sd})
            j = d.upload_ok("dmg", blob)
            base = "/models/dmg/checkpoints/%d" % j["id"]
            urls = [base + "/file", base + "/state_dict", base + "/state_dict?format=safetensors"]
            for k in sd:
                urls += [base + "/tensors/state_dict/%s?format=raw" % k,
                         base + "/tensors/state_dict/%s" % k]
            good = {}
            for u in urls:
                st, body, complete = fetch(d, u)
                self.assertEqual((st, complete), (200, True), u)
                good[u] = body
            # Range requests see only part of a blob: they must check it too
            ranges = ["bytes=0-99", "bytes=-64", "bytes=100-"]
            good_ranges = {}
            # and ranges of /file that hold exactly one tensor record each,
            # so no other (compressed, self-checking) blob is read with them
            zf = zipfile.ZipFile(io.BytesIO(blob))
            record_ranges = []
            for zi in zf.infolist():
                if "/data/" in zi.filename:
                    lh = blob[zi.header_offset:zi.header_offset + 30]
                    start = zi.header_offset + 30 + struct.unpack("<H", lh[26:28])[0] + \
                        struct.unpack("<H", lh[28:30])[0]
                    if zi.file_size:
                        record_ranges.append("bytes=%d-%d" % (start, start + zi.file_size - 1))
            self.assertEqual(len(record_ranges), 3, record_ranges)
            for rg in record_ranges:
                st, body, complete = fetch(d, urls[0], rg)
                self.assertEqual((st, complete), (206, True), rg)
                good_ranges[(urls[0], rg)] = body
            for u in urls[:3]:
                for rg in ranges:
                    st, body, complete = fetch(d, u, rg)
                    self.assertEqual((st, complete), (206, True), (u, rg))
                    good_ranges[(u, rg)] = body
            files = damage_blobs(d.data_dir)
            self.assertGreaterEqual(len(files), 4, files)
            served = []
            for u in urls:
                st, body, complete = fetch(d, u)
                if st == 200 and complete and body != good[u]:
                    served.append(u)
            for (u, rg), want in good_ranges.items():
                st, body, complete = fetch(d, u, rg)
                if st == 206 and complete and body != want:
                    served.append("%s [%s]" % (u, rg))
            print("  damaged blobs: %d blob files damaged; served silently: %s"
                  % (len(files), served or "none"), flush=True)
            self.assertEqual(served, [], "answered 200 with damaged bytes (SPEC 6: a download "
                             "never serves bytes that fail their check silently)")
            p = store.cli("verify", "--data", d.data_dir)
            self.assertNotEqual(p.returncode, 0, "verify missed the damage: " + p.stdout)


def damage_blobs(data_dir):
    """Flips the last and the middle byte of every stored blob (files, or
    objects on the S3 run), inside any range that covers most of one; -> the
    names damaged."""
    def flip(b):
        b = bytearray(b)
        for at in sorted({len(b) // 2, len(b) - 1}):
            b[at] ^= 0x10
        return bytes(b)

    if os.environ.get("CKPTD_IT_S3"):
        from lib import s3
        c = s3.Client.from_env()
        prefix = ckptd.s3_prefix(data_dir) + "/"
        keys = [k for k in c.list(prefix) if store.BLOB_KEY.match(k[len(prefix):])]
        for k in keys:
            c.put(k, flip(c.get(k)))
        return keys
    root = os.path.join(data_dir, "blobs")
    files = []
    for shard in os.listdir(root):
        if store.HEX2.match(shard):
            files += [os.path.join(root, shard, n) for n in os.listdir(os.path.join(root, shard))]
    for p in sorted(files):
        os.chmod(p, 0o644)
        with open(p, "rb") as f:
            b = f.read()
        with open(p, "r+b") as f:
            f.write(flip(b))
    return files


# -- 5. names and paths ------------------------------------------------------------------

def raw_request(port, request_bytes, timeout=10):
    """Sends bytes as they are -> (status or None, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request_bytes)
        data = b""
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            data += b
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return (int(m.group(1)) if m else None), data
    finally:
        s.close()


class Names(unittest.TestCase):
    def test_traversal_in_names_and_paths_creates_nothing_outside_the_data_dir(self):
        marker = "ckptdpwn%d" % SEED
        with ckptd.Daemon(name="names") as d:
            small = fixtures.seed_bytes("tutorial_state_dict.pt")
            j0 = d.upload_ok("names-ok", small)
            data = d.data_dir
            parent = os.path.dirname(data)
            grand = os.path.dirname(parent)
            before = (store.tree(data), sorted(os.listdir(parent)), sorted(os.listdir(grand)))
            h = {"Content-Type": "application/octet-stream"}
            segs = [
                "..", ".", "...", "../" + marker, "..%2f" + marker, "%2e%2e", "%2E%2E%2F" + marker,
                "%2e%2e/%2e%2e/" + marker, "..%2f..%2f..%2f..%2ftmp%2f" + marker,
                "%2ftmp%2f" + marker, "/tmp/" + marker, "a%00b", marker + "%00", marker + "%00.x",
                "a%2fb", "a\\..\\" + marker, "%5c..%5c" + marker, "~", "a" * 129, ".hidden", "-x",
                "_x", "a%20b", "%c0%ae%c0%ae", "%ef%bc%8e%ef%bc%8e", "%25%32%65%25%32%65",
                "a'--", "x%22%20OR%201=1", "a%0d%0aX-Evil:%201", "..%252f" + marker,
                "a..b", "CON", marker,
            ]
            created = []
            for seg in segs:
                decoded = urllib.parse.unquote(seg)
                valid = "/" not in seg and NAME_RE.match(decoded) is not None
                for method, path, body in (
                        ("POST", "/models/%s/checkpoints" % seg, small),
                        ("POST", "/models/names-ok/checkpoints?run=%s" % seg, small),
                        ("GET", "/models/%s/checkpoints" % seg, None),
                        ("GET", "/models/%s/checkpoints/latest/file" % seg, None),
                        ("GET", "/models/names-ok/checkpoints/%s/file" % seg, None),
                        ("GET", "/models/names-ok/checkpoints/latest/tensors/%s" % seg, None),
                        ("PUT", "/models/%s/retention" % seg, {"keep_last": 5}),
                        ("DELETE", "/models/%s/checkpoints/%s" % (seg, seg), None),
                ):
                    what = "%s %s" % (method, path)
                    with self.subTest(what):
                        try:
                            r = d.request(method, path, body=body, headers=h if body is small else None)
                        except (OSError, http.client.HTTPException) as e:
                            self.fail("%s: %r" % (what, e))
                        self.assertLess(r.status, 500, "%s: %r" % (what, r))
                        if r.status < 300:
                            # only a name of the SPEC 2 alphabet may be taken
                            self.assertTrue(valid, "%s answered %d" % (what, r.status))
                            if method == "POST" and r.status == 201:
                                j = r.json()
                                self.assertRegex(j["model"], NAME_RE)
                                self.assertRegex(j["run"], NAME_RE)
                                created.append((j["model"], j["id"]))
                        else:
                            checks.error_json(self, r, tuple(range(400, 500)), what)
            # a NUL and a CR byte as they are, in the request line
            for raw in (b"a\x00" + marker.encode(), b"..\x00/" + marker.encode()):
                req = (b"POST /api/v1/models/" + raw + b"/checkpoints HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                       b"Connection: close\r\n\r\n" % len(small)) + small
                status, _ = raw_request(d.port, req)
                self.assertTrue(status is None or 400 <= status < 500,
                                "raw %r answered %r" % (raw, status))
            # bytes that are not UTF-8 in query values (error messages quote them)
            latest = "/models/names-ok/checkpoints/%d" % j0["id"]
            for method, path in (
                    ("GET", latest + "/tensors/conv1.weight?format=%ff"),
                    ("GET", latest + "/state_dict?format=%ff"),
                    ("GET", latest + "/state_dict?keys=%ff"),
                    ("GET", latest + "/diff/%ff"),
                    ("GET", "/models/names-ok/checkpoints/best?mode=%ff"),
                    ("GET", "/models/names-ok/checkpoints/best?metric=%ff"),
                    ("GET", "/models/names-ok/checkpoints?order=%ff"),
                    ("POST", "/models/names-ok/checkpoints?metric.%ff=1"),
                    ("POST", "/models/names-ok/checkpoints?tag=%ff"),
            ):
                what = "%s %s" % (method, path)
                with self.subTest(what):
                    r = d.request(method, path, body=small if method == "POST" else None,
                                  headers=h if method == "POST" else None)
                    self.assertLess(r.status, 500, "%s: %r" % (what, r))
                    if r.status == 201:
                        created.append(("names-ok", r.json()["id"]))
                        self.assertEqual(len(r.json()["tags"]), 1,
                                         "%s: accepted, but the tag was dropped: %r" % (what, r))
                    elif method == "POST" or r.status >= 300:
                        checks.error_json(self, r, tuple(range(400, 500)), what)
            # SQL-looking values are data
            evil = "'; DROP TABLE checkpoints; --"
            j = d.upload_ok("names-ok", small, [("tag", evil), ("epoch", "7")])
            created.append(("names-ok", j["id"]))
            self.assertEqual(j["tags"], [evil])
            q = urllib.parse.quote
            lst = d.get_json("/models/names-ok/checkpoints?tag=" + q(evil))
            self.assertEqual([c["id"] for c in lst["checkpoints"]], [j["id"]])
            lst = d.get_json("/models/names-ok/checkpoints?tag=" + q("' OR '1'='1"))
            self.assertEqual(lst["total"], 0)
            for bad in ("loss;DROP TABLE blobs", "metric.x) --", "epoch DESC, (SELECT 1)",
                        "metric.a'b"):
                r = d.get("/models/names-ok/checkpoints?order=" + q(bad))
                checks.error_json(self, r, 400, "order=%r" % bad)
            r = d.get("/models/names-ok/checkpoints?run=" + q("x' OR '1'='1"))
            self.assertIn(r.status, (200, 400), r)
            if r.status == 200:
                self.assertEqual(r.json()["total"], 0)
            r = d.get("/models/names-ok/checkpoints/best?metric=" + q("x' OR 1=1 --"))
            self.assertIn(r.status, (400, 404), r)
            self.assertGreaterEqual(d.get_json("/models/names-ok/checkpoints")["total"], 2)
            self.assertEqual(d.get_json("/models/names-ok/checkpoints/%d" % j0["id"])["sha256"],
                             j0["sha256"])

            for model, cid in created:
                self.assertEqual(d.request("DELETE", "/models/%s/checkpoints/%d"
                                           % (ckptd.quote(model), cid)).status, 204)
            after = (store.tree(data), sorted(os.listdir(parent)), sorted(os.listdir(grand)))
            self.assertEqual(sorted(after[0] ^ before[0]), [], "the data directory's tree changed")
            self.assertEqual(after[1], before[1], "files appeared next to the data directory")
            self.assertEqual(after[2], before[2], "files appeared two levels up")
            for p in ("/tmp/" + marker, "/" + marker, os.path.join(parent, marker),
                      os.path.join(grand, marker), os.path.join(data, marker)):
                self.assertFalse(os.path.lexists(p), "%s was created" % p)
            print("  names: %d names x 8 routes + 2 raw requests: nothing outside %s; %d valid "
                  "names accepted" % (len(segs), data, len(created) - 1), flush=True)


if __name__ == "__main__":
    print("reliability: seed %d (CKPTD_RELIABILITY_SEED=%d replays it)" % (SEED, SEED), flush=True)
    harness.main()
