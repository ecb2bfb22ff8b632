#!/usr/bin/python3
"""torch.distributed.checkpoint (DCP) checkpoints against a live daemon, with
directories real torch 1.13 wrote from gloo ranks on loopback
(lib/dcp.py: ShardedTensors split by rows, replicated tensors of three
dtypes, a 0-d tensor, two non-tensor values).

Uploaded as checkpoints of several files (SPEC 3.2), they serve their full,
unsharded tensors: state_dict equals the unsharded model's state_dict bit
for bit (2 and 4 ranks; a file per item and a file per rank), loads with
weights_only=True into a single-process module, tensors/{name} and diff
work across ranks. Dedup: the same model from 4 ranks adds only the chunks
cut differently; a second epoch with half the tensors unchanged adds
exactly the changed tensors' bytes. Chunks split along other dimensions, in 3
dimensions, uneven and non-contiguous (a directory written here with torch's
own classes) assemble too. Damaged .metadata (cut pickles, chunks that
overlap or leave holes, ranges past a file's end, files that are not there)
answers 422 naming what and where, and nothing becomes visible. A rank
killed mid-write: nothing visible, the staged checkpoint expires with every
blob it took.
"""

import concurrent.futures
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, dcp, harness  # noqa: E402

SEED = 7


def put_file(port, model, cid, name, data):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("PUT", "%s/models/%s/checkpoints/%s/files/%s" % (ckptd.API, model, cid, name),
                  body=data, headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def read_dir(d):
    out = {}
    for n in sorted(os.listdir(d)):
        with open(os.path.join(d, n), "rb") as f:
            out[n] = f.read()
    return out


def bits(t):
    return t.contiguous().view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)


class Dirs:
    """The directories torch writes, once for every class."""
    root = None

    @classmethod
    def get(cls):
        if cls.root is None:
            cls.root = tempfile.mkdtemp(prefix="ckptd-dcp-")
            dcp.save_sharded(os.path.join(cls.root, "ws2"), 2, SEED)
            dcp.save_sharded(os.path.join(cls.root, "ws4"), 4, SEED,
                             writer_kwargs={"single_file_per_rank": True})
            dcp.save_sharded(os.path.join(cls.root, "ws2e2"), 2, SEED, frozen="half",
                             epochs=2)
        return cls.root


class DcpCase(ckptd.DaemonCase):
    def push(self, model, files, params="", expect=200):
        """Opens a staged checkpoint, PUTs {name: bytes} in parallel, commits."""
        r = self.d.request("POST", "/models/%s/checkpoints?staged=1%s" % (model, params))
        self.assertEqual(r.status, 201, r.body[:300])
        cid = r.json()["id"]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            answers = dict(zip(files, ex.map(
                lambda n: put_file(self.d.port, model, cid, n, files[n]), files)))
        for n, (status, body) in answers.items():
            self.assertEqual(status, 201, (n, body[:300]))
        r = self.d.request("POST", "/models/%s/checkpoints/%d/commit" % (model, cid))
        self.assertEqual(r.status, expect, r.body[:400])
        return r.json() if expect == 200 else (cid, r)

    def state_dict(self, model, ref, query=""):
        r = self.d.get("/models/%s/checkpoints/%s/state_dict%s" % (model, ref, query))
        self.assertEqual(r.status, 200, r.body[:300])
        return torch.load(io.BytesIO(r.body), weights_only=True)

    def assert_equal_sd(self, want, got):
        self.assertEqual(sorted(got), sorted(want))
        for k, v in want.items():
            self.assertEqual((got[k].dtype, tuple(got[k].shape)), (v.dtype, tuple(v.shape)), k)
            self.assertTrue(torch.equal(bits(got[k]), bits(v)), k)


class Consolidated(DcpCase):
    NAME = "dcp"

    @classmethod
    def setUpClass(cls):
        cls.root = Dirs.get()
        super().setUpClass()

    def full(self, **kw):
        return {k: v for k, v in dcp.full_state_dict(SEED, **kw).items()
                if isinstance(v, torch.Tensor)}

    def test_1_state_dict_of_2_and_4_ranks_is_the_unsharded_model(self):
        want = self.full()
        for ws in ("ws2", "ws4"):
            files = read_dir(os.path.join(self.root, ws))
            j = self.push("m" + ws, files, "&epoch=1&loss=0.5")
            self.assertEqual((j["format"], j["state"]), ("dcp", "committed"))
            # dedup: from 4 ranks, the replicated tensors (and the 0-d one)
            # are the blobs 2 ranks stored; only the sharded ones, cut in 4
            # instead of 2, are new
            self.assertEqual(j["dedup"]["new_bytes"], sum(
                want[k].numel() * want[k].element_size()
                for k in (want if ws == "ws2" else dcp.sharded_names())))
            self.assert_equal_sd(want, self.state_dict("m" + ws, "best"))
            # the same through safetensors, and one tensor as .npy
            r = self.d.get("/models/m%s/checkpoints/latest/state_dict?format=safetensors" % ws)
            self.assertEqual(r.status, 200, r.body[:300])
            import numpy
            r = self.d.get("/models/m%s/checkpoints/latest/tensors/proj.weight" % ws)
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertTrue(numpy.array_equal(numpy.load(io.BytesIO(r.body)),
                                              want["proj.weight"].numpy()))
            # the tensor list: full tensors, assembled ones marked
            c = self.d.get_json("/models/m%s/checkpoints/latest" % ws)
            by = {t["path"]: t for t in c["tensors"]}
            self.assertEqual(sorted(by), sorted("/" + k for k in want))
            self.assertEqual(by["/embed.weight"]["shape"], [250, 160])
            self.assertIsNone(by["/embed.weight"]["blob"])
            self.assertGreaterEqual(by["/embed.weight"]["pieces"], 2)
            self.assertIsNotNone(by["/norm.weight"]["blob"])  # one chunk: stored as it is
            self.assertEqual(len(c["files"]), len(files))

    def test_2_a_single_process_model_loads_it(self):
        files = read_dir(os.path.join(self.root, "ws2"))
        self.push("single", files)
        sd = self.state_dict("single", "latest", "?keys=embed.*,proj.*")
        m = torch.nn.Module()
        m.embed = torch.nn.Embedding(250, 160)
        m.proj = torch.nn.Linear(250, 200)
        m.load_state_dict(sd, strict=True)
        self.assertTrue(torch.equal(m.proj.weight.detach(), self.full()["proj.weight"]))

    def test_3_second_epoch_adds_only_what_changed(self):
        want1, want2 = self.full(), self.full(frozen="half", epochs=2)
        e1 = self.push("ep", read_dir(os.path.join(self.root, "ws2")), "&epoch=1")
        e2 = self.push("ep", read_dir(os.path.join(self.root, "ws2e2")), "&epoch=2")
        changed = [k for k in want1 if not torch.equal(bits(want1[k]), bits(want2[k]))]
        frozen = dcp.frozen_names("half")
        self.assertEqual(sorted(changed), sorted(set(want1) - frozen))
        self.assertEqual(e2["dedup"]["new_bytes"],
                         sum(want2[k].numel() * want2[k].element_size() for k in changed))
        self.assert_equal_sd(want2, self.state_dict("ep", e2["id"]))
        diff = self.d.get_json("/models/ep/checkpoints/%d/diff/%d" % (e1["id"], e2["id"]))
        status = {t["path"][1:]: t["status"] for t in diff["tensors"]}
        self.assertEqual({k for k, s in status.items() if s == "changed"}, set(changed))
        self.assertEqual({k for k, s in status.items() if s == "same"}, frozen & set(want1))


def handmade_dir(out):
    """A DCP directory written here with torch's own metadata classes:
    chunks split along the last dimension, a 3-D tensor split along two,
    uneven bfloat16 chunks, a chunk stored non-contiguous, and a tensor
    inside a non-tensor value. Returns the full tensors by path."""
    dcp.shim()
    from torch.distributed._shard.checkpoint.filesystem import _StorageInfo
    from torch.distributed._shard.checkpoint.metadata import (
        BytesStorageMetadata, ChunkStorageMetadata, Metadata, MetadataIndex,
        TensorStorageMetadata)
    from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 8, generator=g)
    b = torch.randint(0, 1 << 40, (4, 3, 5), generator=g)
    c = torch.randn(5, 7, generator=g).to(torch.bfloat16)
    t = torch.randn(9, 4, generator=g)
    nested = {"inner": torch.arange(10, dtype=torch.int32)}
    tensors = {
        "a": [((0, 0), a[:, :4]), ((0, 4), a[:, 4:])],
        "b": [((i, 0, k), b[i:i + 2, :, k:k + n]) for i in (0, 2) for k, n in ((0, 2), (2, 3))],
        "c": [((0, 0), c[:, :1]), ((0, 1), c[:, 1:6]), ((0, 6), c[:, 6:])],
        # stored as the transpose of a contiguous tensor: strides (1, 9)
        "t": [((0, 0), t.t().contiguous().t()[:5]), ((5, 0), t[5:])],
    }
    os.makedirs(out, exist_ok=True)
    sdm, storage = {}, {}
    for i, (fqn, chunks) in enumerate(tensors.items()):
        full = {"a": a, "b": b, "c": c, "t": t}[fqn]
        metas = []
        name = "__%d_0.distcp" % i
        with open(os.path.join(out, name), "wb") as f:
            for off, x in chunks:
                if fqn != "t":
                    x = x.clone()
                pos = f.tell()
                torch.save(x, f)
                metas.append(ChunkStorageMetadata(offsets=torch.Size(off), sizes=x.size()))
                storage[MetadataIndex(fqn, off)] = _StorageInfo(name, pos, f.tell() - pos)
        sdm[fqn] = TensorStorageMetadata(TensorProperties(dtype=full.dtype), full.size(), metas)
    with open(os.path.join(out, "__9_0.distcp"), "wb") as f:
        torch.save(nested, f)
        storage[MetadataIndex("opt")] = _StorageInfo("__9_0.distcp", 0, f.tell())
    sdm["opt"] = BytesStorageMetadata()
    md = Metadata(state_dict_metadata=sdm, storage_data=storage)
    with open(os.path.join(out, ".metadata"), "wb") as f:
        pickle.dump(md, f)
    return {"a": a, "b": b, "c": c, "t": t, "opt/inner": nested["inner"]}


class Handmade(DcpCase):
    NAME = "dcp-handmade"

    def test_chunks_along_any_dimension_assemble(self):
        d = tempfile.mkdtemp(prefix="ckptd-dcp-hand-")
        try:
            want = handmade_dir(d)
            files = read_dir(d)
        finally:
            shutil.rmtree(d)
        j = self.push("hand", files)
        c = self.d.get_json("/models/hand/checkpoints/%d" % j["id"])
        self.assertEqual(sorted(t["path"] for t in c["tensors"]), sorted("/" + k for k in want))
        got = self.state_dict("hand", j["id"], "?root=/")
        self.assert_equal_sd(want, got)
        # a Range read inside an assembled tensor
        r = self.d.get("/models/hand/checkpoints/%d/tensors/b?format=raw" % j["id"],
                       headers={"Range": "bytes=100-299"})
        self.assertEqual(r.status, 206, r.body[:200])
        self.assertEqual(r.body, want["b"].numpy().tobytes()[100:300])


class Damaged(DcpCase):
    NAME = "dcp-damaged"

    def setUp(self):
        self.files = read_dir(os.path.join(Dirs.get(), "ws2"))
        dcp.shim()
        self.md = pickle.loads(self.files[".metadata"])

    def nothing_visible(self):
        self.assertEqual(self.d.get_json("/models/bad/checkpoints")["total"], 0)

    def put_metadata(self, md_bytes):
        r = self.d.request("POST", "/models/bad/checkpoints?staged=1")
        cid = r.json()["id"]
        return cid, put_file(self.d.port, "bad", cid, ".metadata", md_bytes)

    def test_a_cut_or_damaged_pickle_answers_422(self):
        raw = self.files[".metadata"]
        for cut in (raw[:40], raw[:len(raw) // 2], raw[:-1], b"\x80\x04N.", b"junk" * 10):
            _, (status, body) = self.put_metadata(cut)
            self.assertEqual(status, 422, body[:300])
            j = json.loads(body)
            self.assertEqual(j["error"], "corrupt")
            self.assertIn(".metadata", j["message"])
        self.nothing_visible()

    def chunks(self, fqn):
        return self.md.state_dict_metadata[fqn].chunks

    def rekey(self, fqn, old, new):
        for k in list(self.md.storage_data):
            if k.fqn == fqn and tuple(k.offset) == tuple(old):
                v = self.md.storage_data.pop(k)
                self.md.storage_data[type(k)(fqn, torch.Size(new), k.index)] = v

    def test_b_overlapping_chunks_and_holes_answer_422(self):
        second = [c for c in self.chunks("embed.weight") if c.offsets[0] > 0][0]
        old = tuple(second.offsets)
        second.offsets = torch.Size((old[0] - 1, 0))
        self.rekey("embed.weight", old, second.offsets)
        _, (status, body) = self.put_metadata(pickle.dumps(self.md))
        self.assertEqual(status, 422, body[:300])
        self.assertIn("'embed.weight'", json.loads(body)["message"])
        self.assertIn("overlaps", json.loads(body)["message"])
        # one row fewer: a hole
        second.offsets = torch.Size(old)
        second.sizes = torch.Size((second.sizes[0] - 1, second.sizes[1]))
        self.rekey("embed.weight", (old[0] - 1, 0), old)
        _, (status, body) = self.put_metadata(pickle.dumps(self.md))
        self.assertEqual(status, 422, body[:300])
        self.assertIn("hole", json.loads(body)["message"])
        self.nothing_visible()

    def test_c_ranges_past_a_file_or_missing_files_refuse_the_commit(self):
        k = [k for k in self.md.storage_data if k.fqn == "proj.weight"][0]
        info = self.md.storage_data[k]
        size = len(self.files[info.relative_path])
        for change, what in ((lambda i: setattr(i, "offset", size - 10), "past the file's end"),
                             (lambda i: setattr(i, "relative_path", "__7_7.distcp"),
                              "does not have"),
                             (lambda i: (setattr(i, "offset", i.offset + 1),
                                         setattr(i, "length", i.length - 1)),
                              "holds no tensor")):
            md = pickle.loads(self.files[".metadata"])
            info = [v for k, v in md.storage_data.items() if k.fqn == "proj.weight"][0]
            change(info)
            files = dict(self.files)
            files[".metadata"] = pickle.dumps(md)
            cid, r = self.push("bad", files, expect=422)
            self.assertIn("'proj.weight'", r.json()["message"])
            self.assertIn(what, r.json()["message"])
            # still staged: not visible, and the right .metadata commits it
            self.nothing_visible()
            self.assertEqual(put_file(self.d.port, "bad", cid, ".metadata",
                                      self.files[".metadata"])[0], 201)
            r = self.d.request("POST", "/models/bad/checkpoints/%d/commit" % cid)
            self.assertEqual(r.status, 200, r.body[:300])
            self.d.request("DELETE", "/models/bad/checkpoints/%d" % cid)
        self.nothing_visible()


SLOW_PUT = r"""
import socket, sys, time
port, path, data = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"PUT %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(data)))
s.sendall(data[:len(data) // 2])
print("half", flush=True)
time.sleep(600)
"""


class KilledRank(DcpCase):
    NAME = "dcp-killed"
    # the tensors of the killed rank's upload are kept for its retry
    # (--resume-grace, SPEC 3.1): here no longer than the staged checkpoint
    ARGS = ("--stage-timeout", "3", "--resume-grace", "3")

    def test_a_rank_killed_mid_write_leaves_nothing(self):
        d = self.d
        before = d.stats()
        files = read_dir(os.path.join(Dirs.get(), "ws4"))
        cid = d.request("POST", "/models/k/checkpoints?staged=1").json()["id"]
        big = max((n for n in files if n.endswith(".distcp")), key=lambda n: len(files[n]))
        for n, b in files.items():
            if n != big:
                self.assertEqual(put_file(d.port, "k", cid, n, b)[0], 201)
        with tempfile.NamedTemporaryFile() as f:
            f.write(files[big])
            f.flush()
            p = subprocess.Popen([sys.executable, "-c", SLOW_PUT, str(d.port),
                                  "%s/models/k/checkpoints/%d/files/%s" % (ckptd.API, cid, big),
                                  f.name], stdout=subprocess.PIPE)
            self.assertEqual(p.stdout.readline().strip(), b"half")
            # a file is being written (once the daemon has its first bytes)
            deadline = time.monotonic() + 10
            while True:
                r = d.request("POST", "/models/k/checkpoints/%d/commit" % cid)
                if r.status == 409 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(r.status, 409, r.body[:300])
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
        # the rank is gone: its file never arrived, the commit says which
        deadline = time.monotonic() + 20
        while True:
            r = d.request("POST", "/models/k/checkpoints/%d/commit" % cid)
            if r.status != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.status, 422, r.body[:300])
        self.assertIn(big, r.json()["message"])
        self.assertEqual(d.get_json("/models/k/checkpoints")["total"], 0)
        # nobody commits: after --stage-timeout the next write removes it
        # with every blob it took
        time.sleep(3.5)
        buf = io.BytesIO()
        torch.save({"z": torch.arange(5.0)}, buf)
        d.upload_ok("other", buf.getvalue())
        st = d.stats()
        # what stays is that upload alone: its storage and the rest of it
        self.assertEqual((st["blobs"], st["unique_bytes"]),
                         (before["blobs"] + 2, before["unique_bytes"] + len(buf.getvalue())))
        checks.error_json(self, d.request("POST", "/models/k/checkpoints/%d/commit" % cid), 404)
        self.assertIn("staged checkpoint not committed in time removed", d.log_text())


def tearDownModule():
    if Dirs.root:
        shutil.rmtree(Dirs.root, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
