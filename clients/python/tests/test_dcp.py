"""ckptd.dcp against a real ckptd, real torch and real processes.

Two ranks (torch.multiprocessing, start method spawn, gloo on 127.0.0.1)
save the test model of tests/integration/lib/dcp.py (ShardedTensors split by
rows, replicated tensors, an int and a list of dicts stored as bytes items)
with torch.distributed.checkpoint's save_state_dict through CkptdWriter: one
committed checkpoint of format "dcp" whose files are `.metadata` and one
`__R_0.distcp` per rank, each parsed by the server. Loaded back through
CkptdReader into a fresh process group of zeros, with 2 ranks and resharded
to 3, it equals the model bit for bit, and so does the server's /state_dict
of the checkpoint (the full tensors put together from both ranks' files).
A second save of the same weights sends a few kilobytes (the writer's body
bytes; the server's dedup adds no bytes); an epoch that changed half the
tensors sends about those. A rank that raises in write_data (after sending
its file) leaves no checkpoint: nothing new in the list, and the staged id
is not found; so does a commit the server refuses (.metadata names bytes
past a file's end: 422). Without torch's DCP the module still imports and
says why at first use; a writer pickles without its Client; checkpoint_id
URLs parse; the torch 2.x method names work (driven by hand: no torch 2.x
here); one process without a process group, one file per item, works.

torch is Debian's 1.13 under /usr/bin/python3 (Python 3.11): the test
library's shim() lets torch.distributed._shard import there.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import torch

from ckptd import Client, NotFound
from conftest import REPO, Daemon
from helpers import cli_env

# The test library that writes and reads DCP checkpoints with real torch (and
# holds the 1.13 shim), from this repository's integration tests. Spawned
# ranks get this sys.path too.
sys.path.append(str(REPO / "tests" / "integration"))  # after tests/: its test_dcp.py is not ours
from lib import dcp as dcplib  # noqa: E402

dcplib.shim()

WORLD = 2
TIMEOUT = 120  # seconds for one run of several ranks


# -- what the ranks run (module level: spawn pickles them by name) ---------

def _save_worker(rank: int, world_size: int, port: int, url: str, model: str, seed: int,
                 epochs: int, frozen: Optional[str], fail_rank: Optional[int], tamper: bool,
                 outdir: str, timeout: int) -> None:
    dcpmod = dcplib.shim()
    dist = dcplib._init_pg(rank, world_size, port, timeout)
    try:
        from ckptd.dcp import CkptdWriter

        sd = dcplib._sharded_state_dict(rank, world_size,
                                        dcplib.full_state_dict(seed, frozen, epochs))
        cls: Any = CkptdWriter
        if rank == fail_rank:
            class Failing(CkptdWriter):
                def write_data(self, plan: Any, planner: Any) -> Any:
                    super().write_data(plan, planner)  # this rank's file is sent
                    raise RuntimeError("rank %d fails on purpose after sending its file"
                                       % rank)
            cls = Failing
        if tamper and rank == 0:
            class Tampering(CkptdWriter):
                def finish(self, metadata: Any, results: List[List[Any]]) -> None:
                    # .metadata says rank 1's last item runs 7 bytes past its file's end
                    last = max(range(len(results[1])),
                               key=lambda i: int(results[1][i].storage_data.offset))
                    wr = results[1][last]
                    si = wr.storage_data
                    results[1][last] = dataclasses.replace(wr, storage_data=type(si)(
                        si.relative_path, si.offset, si.length + 7))
                    object.__setattr__(results[1][last], "_ckptd_file", wr._ckptd_file)
                    super().finish(metadata, results)
            cls = Tampering
        w = cls(url, model, epoch=epochs, step=10 * epochs, loss=1.0 / epochs, run="dcp",
                metrics={"acc": 0.5}, tags=["dcp-test"])
        error = None
        try:
            dcplib._save_fn(dcpmod)(sd, storage_writer=w)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # torch's CheckpointException is a BaseException
            error = "%s: %s" % (type(e).__name__, e)
        out = {"rank": rank, "error": error, "wire": w.wire_bytes, "staged_id": w.staged_id,
               "checkpoint": w.checkpoint,
               "files": {n: int(j["size"]) for n, j in w.files.items()}}
        with open(os.path.join(outdir, "rank%d.json" % rank), "w") as f:
            json.dump(out, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _make_reader(url: str, model: str, ref: Any, rank: int) -> Any:
    from ckptd.dcp import CkptdReader

    return CkptdReader(url, model, ref)


def save(url: str, model: str, outdir: Path, *, seed: int = 7, epochs: int = 1,
         frozen: Optional[str] = None, fail_rank: Optional[int] = None,
         tamper: bool = False) -> List[Dict[str, Any]]:
    """Saves the test model from WORLD ranks through CkptdWriter -> each
    rank's report (error, wire bytes, staged id, checkpoint, files)."""
    outdir.mkdir(parents=True, exist_ok=True)
    dcplib._run(_save_worker, WORLD,
                (WORLD, dcplib._free_port(), url, model, seed, epochs, frozen, fail_rank,
                 tamper, str(outdir), TIMEOUT), TIMEOUT, "spawn")
    return [json.loads((outdir / ("rank%d.json" % r)).read_text()) for r in range(WORLD)]


def load(url: str, model: str, ref: Any, world_size: int = WORLD) -> Dict[str, Any]:
    """Loads checkpoint ref through CkptdReader into a fresh model of zeros on
    world_size ranks -> {fqn: full tensor or object} gathered from them."""
    got: Dict[str, Any] = dcplib.load_sharded("unused", world_size,
                                              reader_factory=functools.partial(
                                                  _make_reader, url, model, ref),
                                              timeout=TIMEOUT)
    return got


# -- fixtures -------------------------------------------------------------

@pytest.fixture(scope="module")
def first(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The model saved once into model "dcp-first"."""
    reports = save(daemon.url, "dcp-first", tmp_path_factory.mktemp("dcp-first"))
    for r in reports:
        assert r["error"] is None, "rank %d: %s" % (r["rank"], r["error"])
    return {"url": daemon.url, "model": "dcp-first", "reports": reports}


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


# -- tests ----------------------------------------------------------------

def test_save_commits_one_dcp_checkpoint(first: Dict[str, Any], client: Client) -> None:
    r0, r1 = first["reports"]
    ck = r0["checkpoint"]
    assert ck is not None and r1["checkpoint"] is None  # the coordinator commits
    assert ck["state"] == "committed" and ck["format"] == "dcp"
    assert r0["staged_id"] == r1["staged_id"] == ck["id"]
    assert (ck["epoch"], ck["step"], ck["loss"], ck["run"]) == (1, 10, 1.0, "dcp")
    assert ck["metrics"] == {"acc": 0.5} and ck["tags"] == ["dcp-test"]
    listed = client.list("dcp-first")
    assert [c["id"] for c in listed] == [ck["id"]]
    assert client.get("dcp-first", "latest")["id"] == ck["id"]


def test_files_are_metadata_and_one_distcp_per_rank(first: Dict[str, Any],
                                                     client: Client) -> None:
    r0, r1 = first["reports"]
    cid = r0["checkpoint"]["id"]
    files = client._json("GET", "/models/dcp-first/checkpoints/%d/files" % cid)["files"]
    by_name = {f["name"]: f for f in files}
    assert sorted(by_name) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    for name in ("__0_0.distcp", "__1_0.distcp"):
        assert by_name[name]["format"] == "distcp"
        assert by_name[name]["tensor_count"] > 0
    # what each rank says it sent is what the server lists
    sent = dict(r0["files"], **r1["files"])
    assert {n: f["size"] for n, f in by_name.items()} == sent
    assert r0["checkpoint"]["size"] == sum(sent.values())
    # .metadata is the pickled Metadata, its items inside the data files
    buf = io.BytesIO()
    client._download("/models/dcp-first/checkpoints/%d/files/.metadata" % cid, None, buf, None)
    md = pickle.loads(buf.getvalue())
    assert set(md.state_dict_metadata) == set(dcplib.names())
    for info in md.storage_data.values():
        assert info.relative_path in ("__0_0.distcp", "__1_0.distcp")
        assert 0 <= info.offset and info.offset + info.length <= sent[info.relative_path]
    # rank 1 holds its shards only (torch 1.13 writes replicated values from rank 0)
    fqns1 = {idx.fqn for idx, info in md.storage_data.items()
             if info.relative_path == "__1_0.distcp"}
    assert fqns1 and fqns1 <= set(dcplib.sharded_names())


def test_load_back_equal_bit_for_bit(first: Dict[str, Any]) -> None:
    cid = first["reports"][0]["checkpoint"]["id"]
    want = dcplib.full_state_dict(7)
    dcplib.assert_same(want, load(first["url"], "dcp-first", "latest"))
    dcplib.assert_same(want, load(first["url"], "dcp-first", cid))


def test_load_resharded_to_three_ranks(first: Dict[str, Any]) -> None:
    dcplib.assert_same(dcplib.full_state_dict(7),
                       load(first["url"], "dcp-first", "best", world_size=3))


def test_server_assembles_the_state_dict(first: Dict[str, Any], client: Client,
                                        tmp_path: Path) -> None:
    """The server reads what CkptdWriter wrote as torch does: its /state_dict
    of the checkpoint is the full model (the ShardedTensors put together)."""
    out = tmp_path / "model.pth"
    client.pull_state_dict("dcp-first", str(out), ref="best")
    got = torch.load(out)
    want = dcplib.full_state_dict(7)
    assert sorted(got) == sorted(dcplib.tensor_names())
    dcplib.assert_same({k: want[k] for k in got}, got)


def test_second_save_of_unchanged_weights_sends_few_bytes(url: str, client: Client,
                                                         tmp_path: Path) -> None:
    one = save(url, "dcp-thin", tmp_path / "one", seed=11)
    two = save(url, "dcp-thin", tmp_path / "two", seed=11)
    for r in one + two:
        assert r["error"] is None, "rank %d: %s" % (r["rank"], r["error"])
    size = sum(sum(r["files"].values()) for r in one)
    wire1 = sum(r["wire"] for r in one)
    wire2 = sum(r["wire"] for r in two)
    assert wire1 >= size  # the store had none of it: every byte went
    assert wire2 < min(size // 20, 64 << 10), (wire2, size)
    ck1, ck2 = one[0]["checkpoint"], two[0]["checkpoint"]
    assert ck2["id"] != ck1["id"] and ck2["sha256"] == ck1["sha256"]
    assert ck1["dedup"]["new_bytes"] > 300000
    assert ck2["dedup"]["new_bytes"] == 0 and ck2["dedup"]["bytes"] == ck1["dedup"]["bytes"]
    dcplib.assert_same(dcplib.full_state_dict(11), load(url, "dcp-thin", ck2["id"]))
    # a later epoch that changed half the tensors sends about their bytes
    three = save(url, "dcp-thin", tmp_path / "three", seed=11, epochs=2, frozen="half")
    wire3 = sum(r["wire"] for r in three)
    want = dcplib.full_state_dict(11, "half", 2)
    changed = sum(want[n].numel() * want[n].element_size()
                  for n in dcplib.tensor_names() if n not in dcplib.frozen_names("half"))
    assert changed * 0.9 < wire3 < changed + (64 << 10), (wire3, changed)
    dcplib.assert_same(want, load(url, "dcp-thin", "latest"))


def test_failing_rank_commits_nothing(url: str, client: Client, tmp_path: Path) -> None:
    ok = save(url, "dcp-fail", tmp_path / "ok", seed=3)
    assert all(r["error"] is None for r in ok)
    before = client.list("dcp-fail")
    bad = save(url, "dcp-fail", tmp_path / "bad", seed=3, epochs=2, fail_rank=1)
    for r in bad:  # torch raises on every rank
        assert r["error"] and "fails on purpose" in r["error"], r
        assert r["checkpoint"] is None
    assert bad[1]["files"], "rank 1 sent its file before failing"
    staged = bad[0]["staged_id"]
    assert staged is not None and staged == bad[1]["staged_id"]
    assert client.list("dcp-fail") == before
    assert client.get("dcp-fail", "latest")["id"] == ok[0]["checkpoint"]["id"]
    with pytest.raises(NotFound):
        client.get("dcp-fail", staged)
    # the store is fine for the next save
    again = save(url, "dcp-fail", tmp_path / "again", seed=3, epochs=3)
    assert all(r["error"] is None for r in again)
    assert [c["id"] for c in client.list("dcp-fail")] == [
        ok[0]["checkpoint"]["id"], again[0]["checkpoint"]["id"]]


def test_commit_the_server_refuses_raises_and_commits_nothing(url: str, client: Client,
                                                              tmp_path: Path) -> None:
    """The coordinator's .metadata says an item runs past its file's end: the
    server answers the commit 422, every rank raises (the coordinator's
    InvalidRequest inside torch's CheckpointException), nothing is listed."""
    bad = save(url, "dcp-refused", tmp_path / "bad", seed=9, tamper=True)
    for r in bad:
        assert r["error"] and "InvalidRequest" in r["error"] and "422" in r["error"], r
        assert r["checkpoint"] is None
    assert client.list("dcp-refused") == []
    with pytest.raises(NotFound):
        client.get("dcp-refused", bad[0]["staged_id"])


def test_one_process_one_file_per_item(url: str, client: Client) -> None:
    """no_dist (no process group) and single_file_per_rank=False, torch 1.13's
    FileSystemWriter default: a file per item, each parsed by the server;
    loaded back equal, a tensor that is a view of a larger one included."""
    from ckptd.dcp import CkptdReader, CkptdWriter

    dcpmod = dcplib.shim()
    g = torch.Generator().manual_seed(1)
    big = torch.randn(64, 64, generator=g)
    sd = {"w": torch.randn(100, 50, generator=g), "half": big[:32],  # a view: cloned
          "t": torch.arange(12.0).reshape(3, 4).t(),  # saved with its strides
          "b": torch.randn(7, generator=g).to(torch.bfloat16), "meta": {"lr": 0.1}}
    w = CkptdWriter(client, "dcp-items", epoch=1, single_file_per_rank=False, parallel=2)
    dcpmod.save_state_dict(sd, storage_writer=w, no_dist=True)
    assert w.checkpoint is not None and w.checkpoint["format"] == "dcp"
    names = sorted(f["name"] for f in w.checkpoint["files"])
    assert names == [".metadata"] + ["__0_%d.distcp" % i for i in range(5)]
    out = {"w": torch.zeros(100, 50), "half": torch.zeros(32, 64), "t": torch.zeros(4, 3),
           "b": torch.zeros(7, dtype=torch.bfloat16), "meta": None}
    r = CkptdReader(client, "dcp-items")
    dcpmod.load_state_dict(out, storage_reader=r, no_dist=True)
    assert r.checkpoint_number == w.checkpoint["id"]
    assert client.resumed_from["dcp-items"] == w.checkpoint["id"]
    for k in ("w", "half", "t", "b"):
        assert out[k].dtype == sd[k].dtype and torch.equal(out[k], sd[k]), k
    assert out["meta"] == {"lr": 0.1}


def test_a_reference_the_server_lost_makes_the_file_go_whole(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server deletes the blobs a rank was told it has before the rank
    streams its file: the thin PUT is refused (409 missing_blobs) and the
    writer sends the file again whole, byte for byte the same file."""
    from ckptd.dcp import CkptdWriter

    dcpmod = dcplib.shim()
    g = torch.Generator().manual_seed(5)
    sd = {"w": torch.randn(128, 64, generator=g), "v": torch.randn(4096, generator=g)}
    w1 = CkptdWriter(client, "dcp-lost", epoch=1)
    dcpmod.save_state_dict(sd, storage_writer=w1, no_dist=True)
    assert w1.checkpoint is not None
    first = w1.checkpoint
    real = Client._stored_refs

    def asked_then_deleted(self: Client, found: Any, hashes: Any) -> Any:
        refs = real(self, found, hashes)
        assert refs, "the first save's storages are stored"
        self.delete("dcp-lost", first["id"])
        return refs

    monkeypatch.setattr(Client, "_stored_refs", asked_then_deleted)
    w2 = CkptdWriter(client, "dcp-lost", epoch=2)
    dcpmod.save_state_dict(sd, storage_writer=w2, no_dist=True)
    assert w2.checkpoint is not None
    sizes = {f["name"]: (f["size"], f["sha256"]) for f in first["files"]}
    assert {f["name"]: (f["size"], f["sha256"]) for f in w2.checkpoint["files"]} == sizes
    distcp = sum(n for name, (n, _h) in sizes.items() if name != ".metadata")
    assert w2.wire_bytes >= distcp  # the .distcp file went whole
    assert w2.checkpoint["dedup"]["new_bytes"] >= 128 * 64 * 4 + 4096 * 4


def test_torch2_method_names(url: str, client: Client) -> None:
    """The calls torch 2.x's save/load make (reset with a checkpoint_id,
    storage_meta, set_up_storage_writer/reader with extra arguments), driven
    by hand with the installed torch's default planners, in one process."""
    from ckptd.dcp import CkptdReader, CkptdWriter

    dcplib.shim()
    from torch.distributed._shard.checkpoint.default_planner import (
        DefaultLoadPlanner, DefaultSavePlanner)

    sd = {"w": torch.randn(40, 30), "step": 3}
    w = CkptdWriter("http://127.0.0.1:1", "elsewhere", epoch=2)
    w.reset(url + "/api/v1/models/dcp-torch2")
    w.storage_meta()  # None where torch has no StorageMeta (1.13)
    sp = DefaultSavePlanner()
    sp.init(sd, True)
    w.set_up_storage_writer(True, rank=0, use_collectives=True)
    plans, md = sp.create_global_plan([w.prepare_local_plan(sp.create_local_plan())])
    plans = w.prepare_global_plan(plans)
    fut = w.write_data(sp.finish_plan(plans[0]), sp)
    fut.wait()
    w.finish(md, [fut.value()])
    assert w.checkpoint is not None and w.checkpoint["model"] == "dcp-torch2"

    out: Dict[str, Any] = {"w": torch.zeros(40, 30), "step": None}
    r = CkptdReader("http://127.0.0.1:1", "elsewhere")
    r.reset(url + "/api/v1/models/dcp-torch2/checkpoints/latest")
    md = r.read_metadata()
    lp = DefaultLoadPlanner()
    lp.init(out, md, True)
    r.set_up_storage_reader(md, True, rank=0)
    plans = r.prepare_global_plan(lp.create_global_plan([r.prepare_local_plan(
        lp.create_local_plan())]))
    r.read_data(lp.finish_plan(plans[0]), lp).wait()
    assert torch.equal(out["w"], sd["w"]) and out["step"] == 3
    assert r.checkpoint_id == url + "/api/v1/models/dcp-torch2/checkpoints/%d" % (
        w.checkpoint["id"])


def test_reader_of_a_checkpoint_that_is_not_dcp(url: str, client: Client) -> None:
    from ckptd.dcp import CkptdReader
    from ckptd import CkptdError

    client.save({"w": torch.zeros(3)}, "dcp-plain")
    r = CkptdReader(url, "dcp-plain")
    with pytest.raises(CkptdError, match="no .metadata"):
        r.read_metadata()
    with pytest.raises(NotFound):
        CkptdReader(url, "dcp-no-such-model").read_metadata()


def test_writer_pickles_without_its_client(url: str, client: Client) -> None:
    from ckptd.dcp import CkptdReader, CkptdWriter

    w = CkptdWriter(client, "dcp-pickle", epoch=4, loss=0.5, thin=False)
    assert w.client() is client
    w2 = pickle.loads(pickle.dumps(w))
    assert type(w2) is CkptdWriter and w2._client is None
    assert (w2.url, w2.model, w2.epoch, w2.loss, w2.thin) == (url, "dcp-pickle", 4, 0.5, False)
    assert w2.client() is not client and w2.client().url == url
    r2 = pickle.loads(pickle.dumps(CkptdReader(client, "dcp-pickle", 5)))
    assert (r2.url, r2.model, r2.ref, r2._client) == (url, "dcp-pickle", 5, None)


def test_checkpoint_id_urls(url: str) -> None:
    from ckptd.dcp import CkptdReader, CkptdWriter

    model_url = url + "/api/v1/models/llm%2Fa"
    assert CkptdWriter.validate_checkpoint_id(model_url)
    assert not CkptdWriter.validate_checkpoint_id(model_url + "/checkpoints/3")
    assert not CkptdWriter.validate_checkpoint_id("/tmp/ckpt")
    assert CkptdReader.validate_checkpoint_id(model_url + "/checkpoints/best")
    assert CkptdReader.validate_checkpoint_id(model_url)
    assert not CkptdReader.validate_checkpoint_id(Path("/tmp/ckpt"))
    w = CkptdWriter("http://127.0.0.1:1", "x")
    w.reset(model_url)
    assert (w.url, w.model, w.checkpoint_id) == (url, "llm/a", model_url)
    r = CkptdReader("http://127.0.0.1:1", "x")
    r.reset(model_url + "/checkpoints/best")
    assert (r.url, r.model, r.ref) == (url, "llm/a", "best")
    with pytest.raises(ValueError):
        w.reset("/tmp/ckpt")


def test_import_needs_no_torch_distributed(tmp_path: Path) -> None:
    """import ckptd (and ckptd.dcp) loads no torch; without the 1.13 shim the
    first use of CkptdWriter says why DCP does not import (or works, where
    torch's DCP imports as it is)."""
    code = (
        "import sys, ckptd, ckptd.dcp\n"
        "assert 'torch' not in sys.modules, 'import ckptd loaded torch'\n"
        "try:\n"
        "    ckptd.CkptdWriter\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
        "else:\n"
        "    print('imported')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=cli_env(), timeout=120, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip()
    if out != "imported":
        assert out.startswith("ImportError: ckptd.dcp needs torch's distributed checkpoint"), out
        if sys.version_info >= (3, 11) and torch.__version__.startswith("1.13"):
            assert "TensorProperties" in out, out
