#!/usr/bin/python3
"""Checkpoints of several files (SPEC 3.2), against a live daemon.

A staged checkpoint is opened with ?staged=1, its files (a torch file, a
safetensors file, a pickle of no format ckptd reads kept as bytes, a file in a
subdirectory) are PUT by several processes at once, and it is invisible to
lists, latest, best, models and /stats until its commit makes it visible.
Then: the file list (sizes, SHA-256s, formats), each file byte for byte
(HEAD, Range, ETag, If-None-Match), every file as one tar stream that
Python's tarfile and `tar x` unpack, the checkpoint's sha256 as the
SHA-256 of its list in sha256sum's format, dedup of its tensors against a
plain upload, and a thin (SPEC 3.1) file. A commit while a file is still
being written answers 409; a file that breaks off leaves no mark; bad names,
ids and damaged files are refused with nothing stored; a file PUT again
replaces the first (whose blobs go); a staged checkpoint nobody commits is
removed after --stage-timeout with every blob it took; deleting a checkpoint
of several files or its model frees its blobs. A single upload answers
/files and /archive as a checkpoint of one file.
"""

import concurrent.futures
import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, harness, store, thin  # noqa: E402

JSON = {"Content-Type": "application/json"}


def sha(b):
    return hashlib.sha256(b).hexdigest()


def safetensors_file(tensors):
    """A safetensors file of float32 tensors {name: list of floats}."""
    header, data = {}, b""
    for name, vals in sorted(tensors.items()):
        b = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": [len(vals)],
                        "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def put_file(port, model, cid, name, data, headers=None):
    """PUT one file from its own connection (run in another process)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        h = {"Content-Type": "application/octet-stream"}
        h.update(headers or {})
        c.request("PUT", "%s/models/%s/checkpoints/%s/files/%s" % (ckptd.API, model, cid, name),
                  body=data, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def listing(files):
    """The sha256sum lines of {name: bytes}, names in byte order."""
    return "".join("%s  %s\n" % (sha(files[n]), n)
                   for n in sorted(files, key=lambda s: s.encode())).encode()


class Staged(ckptd.DaemonCase):
    NAME = "staged"

    def open(self, model, params=""):
        r = self.d.request("POST", "/models/%s/checkpoints?staged=1%s" % (model, params))
        self.assertEqual(r.status, 201, r.body[:300])
        j = r.json()
        self.assertEqual(j["state"], "staged")
        return j["id"]

    def put(self, model, cid, name, data, headers=None):
        return put_file(self.d.port, model, cid, name, data, headers)

    def commit(self, model, cid):
        return self.d.request("POST", "/models/%s/checkpoints/%d/commit" % (model, cid))

    def test_1_files_from_several_processes_commit_at_once(self):
        w = {"layer%d.weight" % i: store.randn(100 + i, 4096) for i in range(4)}
        files = {
            "model.pt": store.save_torch(w),
            "shard.safetensors": safetensors_file({"a": [1.0, 2.0, 3.0], "b": [4.0] * 64}),
            "notes.pkl": b"\x80\x04\x95" + os.urandom(300),
            "optim/state.pt": store.save_torch({"step": 7, "m": store.randn(9, 1000)}),
        }
        before = self.d.stats()
        cid = self.open("multi", "&epoch=4&loss=0.25&tag=dcp")
        with concurrent.futures.ProcessPoolExecutor(4) as ex:
            futs = {n: ex.submit(put_file, self.d.port, "multi", cid, n, b)
                    for n, b in files.items()}
            answers = {n: f.result() for n, f in futs.items()}
        for n, (status, body) in answers.items():
            self.assertEqual(status, 201, (n, body[:300]))
            j = json.loads(body)
            self.assertEqual((j["name"], j["size"], j["sha256"]), (n, len(files[n]), sha(files[n])))
        self.assertEqual(json.loads(answers["model.pt"][1])["format"], "torch-zip")
        self.assertEqual(json.loads(answers["shard.safetensors"][1])["format"], "safetensors")
        self.assertEqual(json.loads(answers["notes.pkl"][1])["format"], "raw")
        # invisible until committed
        self.assertEqual(self.d.get("/models/multi/checkpoints").json()["total"], 0)
        for ref in ("latest", "best", str(cid)):
            checks.error_json(self, self.d.get("/models/multi/checkpoints/" + ref), 404, ref)
        checks.error_json(self, self.d.get("/models/multi/checkpoints/%d/files" % cid), 404)
        st = self.d.stats()
        self.assertEqual((st["checkpoints"], st["logical_bytes"]),
                         (before["checkpoints"], before["logical_bytes"]))
        models = {m["name"]: m for m in self.d.get_json("/models")["models"]}
        self.assertEqual(models.get("multi", {"checkpoints": 0})["checkpoints"], 0)

        r = self.commit("multi", cid)
        self.assertEqual(r.status, 200, r.body[:300])
        j = r.json()
        self.assertEqual((j["id"], j["state"], j["format"], j["epoch"], j["loss"], j["tags"]),
                         (cid, "committed", "files", 4, 0.25, ["dcp"]))
        self.assertEqual(j["size"], sum(len(b) for b in files.values()))
        self.assertEqual(j["sha256"], sha(listing(files)))
        self.assertEqual(j["tensor_count"], 4 + 2 + 1)
        self.assertEqual(self.d.get_json("/models/multi/checkpoints/latest")["id"], cid)
        self.assertEqual(self.d.get_json("/models/multi/checkpoints/best")["id"], cid)
        self.assertEqual(self.d.stats()["checkpoints"], before["checkpoints"] + 1)
        got = self.d.get_json("/models/multi/checkpoints/%d/files" % cid)["files"]
        self.assertEqual([f["name"] for f in got], sorted(files, key=lambda s: s.encode()))
        for f in got:
            self.assertEqual((f["size"], f["sha256"]), (len(files[f["name"]]), sha(files[f["name"]])))
        self.assertEqual(self.commit("multi", cid).status, 409, "a second commit")
        checks.error_json(self, self.d.get("/models/multi/checkpoints/%d/file" % cid), 409)
        # a single file: byte for byte, HEAD, Range, ETag, 304
        for n, b in files.items():
            r = self.d.get("/models/multi/checkpoints/%d/files/%s" % (cid, n))
            self.assertEqual(r.status, 200, n)
            self.assertEqual(r.body, b, n)
            self.assertEqual(checks.etag_value(r.headers["ETag"]), sha(b))
            self.assertEqual(checks.disposition_filename(r.headers["Content-Disposition"]), n.split("/")[-1])
        p = "/models/multi/checkpoints/latest/files/model.pt"
        r = self.d.request("HEAD", p)
        self.assertEqual((r.status, int(r.headers["Content-Length"]), r.body),
                         (200, len(files["model.pt"]), b""))
        r = self.d.get(p, headers={"Range": "bytes=100-4195"})
        self.assertEqual((r.status, r.body), (206, files["model.pt"][100:4196]))
        r = self.d.get(p, headers={"If-None-Match": '"%s"' % sha(files["model.pt"])})
        self.assertEqual(r.status, 304)
        checks.error_json(self, self.d.get("/models/multi/checkpoints/%d/files/nope.pt" % cid), 404)
        # every file as one tar stream
        r = self.d.get("/models/multi/checkpoints/%d/archive" % cid)
        self.assertEqual((r.status, r.headers["Content-Type"]), (200, "application/x-tar"))
        with tarfile.open(fileobj=io.BytesIO(r.body)) as tf:
            got = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
        self.assertEqual(got, files)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["tar", "x", "-C", tmp], input=r.body, check=True)
            for n, b in files.items():
                with open(os.path.join(tmp, n), "rb") as f:
                    self.assertEqual(f.read(), b, n)
        whole = r.body
        r = self.d.get("/models/multi/checkpoints/%d/archive" % cid,
                       headers={"Range": "bytes=700-90000"})
        self.assertEqual((r.status, r.body), (206, whole[700:90001]))
        # its tensors dedup against a plain upload of the same file
        j = self.d.upload_ok("multi-plain", files["model.pt"])
        self.assertEqual((j["dedup"]["new_tensors"], j["dedup"]["new_bytes"]), (0, 0))
        # the checkpoint's JSON lists its files
        j = self.d.get_json("/models/multi/checkpoints/%d" % cid)
        self.assertEqual(len(j["files"]), 4)

    def test_2_a_commit_waits_for_files_being_written(self):
        data = store.save_torch({"x": store.randn(21, 300000)})
        cid = self.open("writing")
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            s.sendall(b"PUT %s/models/writing/checkpoints/%d/files/big.pt HTTP/1.1\r\nHost: t\r\n"
                      b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                      % (ckptd.API.encode(), cid, len(data)))
            s.sendall(data[:len(data) // 2])
            time.sleep(0.3)
            r = self.commit("writing", cid)
            checks.error_json(self, r, 409, "commit while a file is written")
            self.assertIn("being written", r.json()["message"])
            s.sendall(data[len(data) // 2:])
            resp = s.recv(65536)
            self.assertIn(b" 201 ", resp.split(b"\r\n")[0])
        finally:
            s.close()
        r = self.commit("writing", cid)
        self.assertEqual(r.status, 200, r.body[:300])
        # a file whose body breaks off leaves no mark: the commit goes through
        cid = self.open("writing")
        self.assertEqual(self.put("writing", cid, "a.pt", data)[0], 201)
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        s.sendall(b"PUT %s/models/writing/checkpoints/%d/files/b.pt HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Length: %d\r\n\r\n" % (ckptd.API.encode(), cid, len(data)))
        s.sendall(data[:1000])
        s.close()
        deadline = time.time() + 10
        while True:
            r = self.commit("writing", cid)
            if r.status != 409 or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual([f["name"] for f in r.json()["files"]], ["a.pt"])

    def test_3_bad_requests_change_nothing(self):
        cid = self.open("bad")
        data = store.save_torch({"x": store.randn(31, 5000)})
        before = store.blob_files(self.d.data_dir)[0]
        for name in ("../x.pt", "a/../x.pt", "a//x.pt", "./x.pt", "a/", "a\\b.pt", "x%01y", "a%2F..%2Fb"):
            st, body = self.put("bad", cid, name, data)
            self.assertEqual(st, 400, (name, body[:200]))
            self.assertEqual(json.loads(body)["error"], "invalid", name)
        st, body = self.put("bad", 999999, "x.pt", data)
        self.assertEqual(st, 404, body[:200])
        st, body = self.put("bad", "abc", "x.pt", data)
        self.assertEqual(st, 400, body[:200])
        st, body = self.put("nosuchmodel", cid, "x.pt", data)
        self.assertEqual(st, 404, body[:200])
        # damaged: a torch zip cut short
        st, body = self.put("bad", cid, "cut.pt", data[:len(data) - 100])
        self.assertEqual(st, 422, body[:200])
        r = self.d.request("POST", "/models/bad/checkpoints?staged=1", body=b"x" * 10,
                           headers={"Content-Type": "application/octet-stream"})
        checks.error_json(self, r, 400, "a staged open with a body")
        checks.error_json(self, self.commit("bad", 999999), 404)
        r = self.commit("bad", cid)
        checks.error_json(self, r, 409, "nothing to commit")
        self.assertEqual(store.blob_files(self.d.data_dir)[0], before, "refused files left blobs")
        self.assertEqual(self.put("bad", cid, "ok.pt", data)[0], 201)
        self.assertEqual(self.commit("bad", cid).status, 200)
        st, body = self.put("bad", cid, "late.pt", data)
        self.assertEqual(st, 409, body[:200])
        self.assertEqual(json.loads(body)["error"], "conflict")

    def test_3b_any_bytes_are_a_file_unless_named_for_a_format(self):
        # a '{' at byte 8 after a length past the file's end (one random
        # file in 256 starts so): named .safetensors, a damaged safetensors
        # file (4xx); named otherwise, a file of a directory, kept as bytes
        cid = self.open("odd")
        odd = struct.pack("<Q", 10829412376824900207) + b"{" + bytes(range(256)) * 11
        st, body = self.put("odd", cid, "odd.safetensors", odd)
        self.assertIn(st, (413, 422), body[:200])
        st, body = self.put("odd", cid, "odd.bin", odd)
        self.assertEqual(st, 201, body[:200])
        self.assertEqual(json.loads(body)["size"], len(odd))
        self.assertEqual(self.commit("odd", cid).status, 200)
        self.assertEqual(self.d.get("/models/odd/checkpoints/%d/files/odd.bin" % cid).body, odd)

    def test_4_a_file_put_again_replaces_the_first(self):
        cid = self.open("replace")
        first = store.save_torch({"x": store.randn(41, 50000)})
        second = store.save_torch({"x": store.randn(42, 50000)})
        blobs0 = self.d.stats()["blobs"]
        self.assertEqual(self.put("replace", cid, "m.pt", first)[0], 201)
        self.assertEqual(self.d.stats()["blobs"], blobs0 + 2)  # its tensor and skeleton
        self.assertEqual(self.put("replace", cid, "m.pt", second)[0], 201)
        self.assertEqual(self.d.stats()["blobs"], blobs0 + 2, "the first file's blobs went")
        self.assertEqual(self.commit("replace", cid).status, 200)
        self.assertEqual(self.d.get("/models/replace/checkpoints/%d/files/m.pt" % cid).body, second)

    def test_5_thin_files_and_single_uploads_as_files(self):
        path = os.path.join(self.d.data_dir, "..", "thin.pt")
        data = store.save_torch({"a": store.randn(51, 70000), "b": store.randn(52, 70000)})
        with open(path, "wb") as f:
            f.write(data)
        j = self.d.upload_ok("single", data, {"epoch": 3})
        got = self.d.get_json("/models/single/checkpoints/%d/files" % j["id"])["files"]
        self.assertEqual([(f["name"], f["size"], f["sha256"]) for f in got],
                         [("single-epoch3.pth", len(data), sha(data))])
        r = self.d.get("/models/single/checkpoints/%d/files/single-epoch3.pth" % j["id"])
        self.assertEqual(r.body, data)
        checks.error_json(self, self.d.get("/models/single/checkpoints/%d/files/x.pt" % j["id"]), 404)
        r = self.d.get("/models/single/checkpoints/latest/archive")
        with tarfile.open(fileobj=io.BytesIO(r.body)) as tf:
            self.assertEqual(tf.extractfile("single-epoch3.pth").read(), data)
        # a file as thin frames: its storages are stored, only the rest is sent
        cid = self.open("single")
        body = thin.frames(data, thin.storage_ranges(path))
        self.assertLess(len(body), len(data) // 10)
        st, resp = self.put("single", cid, "thin.pt", body,
                            {"Content-Type": "application/x-ckptd-thin"})
        self.assertEqual(st, 201, resp[:300])
        self.assertEqual(json.loads(resp)["sha256"], sha(data))
        self.assertEqual(self.commit("single", cid).status, 200)
        self.assertEqual(self.d.get("/models/single/checkpoints/%d/files/thin.pt" % cid).body, data)

    def test_6_deleting_frees_what_the_files_held(self):
        blobs0 = self.d.stats()["blobs"]
        cid = self.open("gone")
        for i in range(3):
            d = store.save_torch({"x": store.randn(600 + i, 30000)})
            self.assertEqual(self.put("gone", cid, "f%d.pt" % i, d)[0], 201)
        self.assertEqual(self.commit("gone", cid).status, 200)
        staged = self.open("gone")
        self.assertEqual(self.put("gone", staged, "s.pt", store.save_torch(
            {"y": store.randn(700, 30000)}))[0], 201)
        self.assertGreater(self.d.stats()["blobs"], blobs0)
        r = self.d.request("DELETE", "/models/gone/checkpoints/%d" % cid)
        self.assertEqual(r.status, 204)
        r = self.d.request("DELETE", "/models/gone")
        self.assertEqual(r.status, 204)
        self.assertEqual(self.d.stats()["blobs"], blobs0, "blobs of deleted files stayed")
        st, _ = self.put("gone", staged, "t.pt", b"x")
        self.assertEqual(st, 404, "a staged checkpoint of a deleted model")


    def test_7_tensors_across_files(self):
        import numpy
        import torch
        # a sharded safetensors model: keys are looked up across the shards
        vals = {"embed": [float(i) for i in range(64)], "head.w": [0.5] * 32,
                "head.b": [-1.0, 2.0], "mid": [3.0] * 16}
        shards = {"model-00001-of-00002.safetensors": safetensors_file(
                      {k: vals[k] for k in ("embed", "mid")}),
                  "model-00002-of-00002.safetensors": safetensors_file(
                      {k: vals[k] for k in ("head.w", "head.b")})}
        index = {"metadata": {}, "weight_map": {"embed": "model-00001-of-00002.safetensors",
                                                "mid": "model-00001-of-00002.safetensors",
                                                "head.w": "model-00002-of-00002.safetensors",
                                                "head.b": "model-00002-of-00002.safetensors"}}
        cid = self.open("hf", "&epoch=1&loss=0.5")
        for n, b in list(shards.items()) + [("model.safetensors.index.json",
                                             json.dumps(index).encode())]:
            self.assertEqual(self.put("hf", cid, n, b)[0], 201, n)
        j = self.commit("hf", cid).json()
        self.assertEqual((j["format"], j["tensor_count"]), ("safetensors-sharded", 4))
        got = self.d.get_json("/models/hf/checkpoints/%d" % cid)
        self.assertEqual(sorted(t["path"] for t in got["tensors"]),
                         ["/embed", "/head.b", "/head.w", "/mid"])
        r = self.d.get("/models/hf/checkpoints/best/state_dict")
        self.assertEqual(r.status, 200, r.body[:300])
        sd = torch.load(io.BytesIO(r.body), weights_only=True)
        self.assertEqual(sorted(sd), sorted(vals))
        for k, v in vals.items():
            self.assertEqual(sd[k].tolist(), v, k)
        r = self.d.get("/models/hf/checkpoints/%d/state_dict?keys=head.*&format=safetensors" % cid)
        self.assertEqual(r.status, 200, r.body[:300])
        r = self.d.get("/models/hf/checkpoints/%d/tensors/head.b" % cid)
        self.assertEqual(numpy.load(io.BytesIO(r.body)).tolist(), [-1.0, 2.0])
        # a second epoch changing one shard: diff across files
        cid2 = self.open("hf", "&epoch=2")
        vals2 = dict(vals, mid=[4.0] * 16)
        shards2 = dict(shards)
        shards2["model-00001-of-00002.safetensors"] = safetensors_file(
            {k: vals2[k] for k in ("embed", "mid")})
        for n, b in list(shards2.items()) + [("model.safetensors.index.json",
                                              json.dumps(index).encode())]:
            self.assertEqual(self.put("hf", cid2, n, b)[0], 201, n)
        self.assertEqual(self.commit("hf", cid2).status, 200)
        d = self.d.get_json("/models/hf/checkpoints/%d/diff/%d" % (cid, cid2))
        states = {t["path"]: t["status"] for t in d["tensors"]}
        self.assertEqual(states, {"/embed": "same", "/mid": "changed", "/head.w": "same",
                                  "/head.b": "same"})
        # other files: tensors under the file's name
        cid3 = self.open("hf-files")
        self.assertEqual(self.put("hf-files", cid3, "sub/m.pt",
                                  store.save_torch({"w": torch.arange(5.0)}))[0], 201)
        self.assertEqual(self.commit("hf-files", cid3).status, 200)
        got = self.d.get_json("/models/hf-files/checkpoints/%d" % cid3)
        self.assertEqual([t["path"] for t in got["tensors"]], ["/sub~1m.pt/w"])
        r = self.d.get("/models/hf-files/checkpoints/%d/tensors/sub~1m.pt/w?format=raw" % cid3)
        self.assertEqual(r.body, torch.arange(5.0).numpy().tobytes())
        r = self.d.get("/models/hf-files/checkpoints/%d/state_dict?root=/sub~1m.pt" % cid3)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(torch.load(io.BytesIO(r.body), weights_only=True)["w"].tolist(),
                         [0.0, 1.0, 2.0, 3.0, 4.0])


class Timeout(ckptd.DaemonCase):
    NAME = "staged-timeout"
    ARGS = ("--stage-timeout", "2")

    def test_a_staged_checkpoint_nobody_commits_goes_with_its_blobs(self):
        d = self.d
        base = d.stats()
        cid = d.request("POST", "/models/t/checkpoints?staged=1").json()["id"]
        # two ranks: one writes its file, the other is killed mid-write
        data = store.save_torch({"x": store.randn(81, 200000)})
        self.assertEqual(put_file(d.port, "t", cid, "__0_0.distcp", data)[0], 201)
        s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        s.sendall(b"PUT %s/models/t/checkpoints/%d/files/__1_0.distcp HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Length: %d\r\n\r\n" % (ckptd.API.encode(), cid, len(data)))
        s.sendall(data[:len(data) // 3])
        s.close()
        self.assertGreater(d.stats()["blobs"], base["blobs"])
        time.sleep(2.5)
        # the next write removes what is due
        d.upload_ok("other", store.save_torch({"z": store.randn(82, 10)}))
        st, body = put_file(d.port, "t", cid, "late.distcp", b"x")
        self.assertEqual(st, 404, body[:200])
        self.assertIn(b"expired", body)
        after = d.stats()
        self.assertEqual(after["blobs"], base["blobs"] + 2, "only the other upload's blobs stay")
        self.assertEqual(after["checkpoints"], base["checkpoints"] + 1)
        checks.error_json(self, d.get("/models/t/checkpoints/latest"), 404)
        self.assertIn("staged checkpoint not committed in time removed", d.log_text())


if __name__ == "__main__":
    harness.main()
