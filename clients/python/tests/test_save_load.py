"""save() and load() against a real ckptd, with real torch.

save() then load() gives back the state_dict exactly; root= and keys= pass
through; metadata, best, list and delete work; ref defaults to "latest"
everywhere; the Client is a context manager that closes its kept-alive
connection.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Iterator

import pytest
import torch

from ckptd import Client, NotFound
from helpers import Net, assert_same_state, torch_bytes, trained


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


@pytest.fixture(scope="module")
def net() -> Any:
    return trained()


@pytest.fixture(scope="module")
def general(net: Any) -> Dict[str, Any]:
    model, opt = net
    return {"epoch": 3, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": 0.25}


def test_save_then_load_gives_back_the_state_dict(client: Client, net: Any,
                                                  general: Dict[str, Any]) -> None:
    model, _ = net
    j = client.save(general, "cl-general", epoch=3, loss=0.25)
    assert isinstance(j["id"], int)
    # The streamed bytes are exactly what torch.save writes into a buffer.
    assert j["sha256"] == hashlib.sha256(torch_bytes(general)).hexdigest()
    assert j["epoch"] == 3
    assert j["loss"] == 0.25
    sd = client.load("cl-general", j["id"], root="/model_state_dict")
    assert_same_state(sd, model.state_dict())
    # BatchNorm's int64 counter comes back as int64
    assert sd["bn1.num_batches_tracked"].dtype == torch.int64
    m2 = Net()
    m2.load_state_dict(sd)  # strict
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    m2.eval()
    assert torch.equal(m2(x), model(x))


def test_plain_state_dict_loads_without_root(client: Client, net: Any) -> None:
    sd = net[0].state_dict()
    j = client.save(sd, "cl-plain", loss=1.0)
    assert_same_state(client.load("cl-plain", "latest"), sd)
    assert client.best("cl-plain")["id"] == j["id"]


def test_keys_and_root_pass_through_the_client(client: Client, net: Any,
                                               general: Dict[str, Any]) -> None:
    model, opt = net
    client.save(general, "cl-keys", epoch=1, loss=0.5)
    want = model.state_dict()
    got = client.load("cl-keys", root="/model_state_dict", keys="conv*")
    assert sorted(got) == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    for k in got:
        assert torch.equal(got[k], want[k]), k
    got = client.load("cl-keys", root="/model_state_dict", keys=["fc.weight", "bn1.*"])
    assert sorted(got) == sorted(["fc.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                  "bn1.running_var", "bn1.num_batches_tracked"])
    # the optimizer's state by root: its tensors are named below /optimizer_state_dict/state
    got = client.load("cl-keys", root="/optimizer_state_dict/state/0")
    want_opt = opt.state_dict()["state"][0]
    assert torch.equal(got["exp_avg"], want_opt["exp_avg"])
    assert torch.equal(got["exp_avg_sq"], want_opt["exp_avg_sq"])


def test_map_location_and_weights_only_load(client: Client, net: Any) -> None:
    client.save(net[0].state_dict(), "cl-map")
    got = client.load("cl-map", "latest", map_location=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in got.values())


def test_metadata_list_best_and_delete(client: Client) -> None:
    m = "cl-meta"
    ids = []
    for i, loss in enumerate([0.9, 0.4, 0.6]):
        j = client.save({"w": torch.full((16,), float(i))}, m, epoch=i, step=100 * i,
                        loss=loss, run="r1", metrics={"acc": 0.5 + i / 10},
                        tags=["nightly", "e%d" % i])
        ids.append(j["id"])
        assert j["run"] == "r1"
        assert j["step"] == 100 * i
        assert j["metrics"]["acc"] == pytest.approx(0.5 + i / 10)
        assert sorted(j["tags"]) == sorted(["nightly", "e%d" % i])
    j = client.save({"w": torch.zeros(4)}, m, loss=0.1, run="r2", pin=True)
    assert j["pinned"]
    assert [x["id"] for x in client.list(m, run="r1")] == ids
    assert [x["id"] for x in client.list(m, run="r1", order="loss")] == [ids[1], ids[2], ids[0]]
    assert client.best(m)["id"] == j["id"]
    assert client.best(m, run="r1")["id"] == ids[1]
    assert client.best(m, metric="acc", mode="max", run="r1")["id"] == ids[2]
    assert len(client.list(m)) == 4
    client.delete(m, ids[0])
    assert [x["id"] for x in client.list(m, run="r1")] == ids[1:]
    with pytest.raises(NotFound) as e:
        client.get(m, ids[0])
    assert e.value.status == 404


def test_update_sets_loss_metrics_tags_and_pinned(client: Client) -> None:
    j = client.save({"w": torch.ones(3)}, "cl-update", loss=0.9)
    got = client.update("cl-update", j["id"], loss=0.3, metrics={"acc": 0.8}, tags=["a", "b"],
                        pinned=True)
    assert (got["loss"], got["metrics"], sorted(got["tags"]), got["pinned"]) == \
        (0.3, {"acc": 0.8}, ["a", "b"], True)
    assert client.get("cl-update", j["id"])["loss"] == 0.3


def test_ref_defaults_to_latest_in_load_get_and_pulls(client: Client, tmp_path: Any) -> None:
    m = "cl-default-ref"
    first = client.save({"w": torch.zeros(8)}, m, loss=0.1)   # the best
    last = client.save({"w": torch.ones(8)}, m, loss=0.9)     # the latest
    assert client.get(m)["id"] == last["id"]
    assert torch.equal(client.load(m)["w"], torch.ones(8))
    out = tmp_path / "file.pth"
    client.pull_file(m, str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == last["sha256"]
    client.pull_state_dict(m, out)
    assert torch.equal(torch.load(out, weights_only=True)["w"], torch.ones(8))
    assert torch.equal(client.load(m, "best")["w"], torch.zeros(8))
    assert client.get(m, first["id"])["id"] == first["id"]


def test_models_stats_and_delete_model(client: Client) -> None:
    client.save({"w": torch.ones(5)}, "cl-gone")
    assert "cl-gone" in [x["name"] for x in client.models()]
    assert client.stats()["logical_bytes"] > 0
    client.delete_model("cl-gone")
    assert "cl-gone" not in [x["name"] for x in client.models()]
    with pytest.raises(NotFound):
        client.list("cl-gone")


def _open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
        except OSError:
            pass
    return n


def test_the_client_keeps_one_connection_and_closes_it_on_exit(url: str) -> None:
    before = _open_sockets()
    with Client(url) as c:
        for _ in range(5):
            c.stats()
        c.save({"w": torch.ones(4)}, "cl-keepalive")
        c.load("cl-keepalive")
        # one kept-alive connection served every call
        assert _open_sockets() == before + 1
    assert _open_sockets() == before
    # a closed Client still works: it connects again
    assert c.stats()["blobs"] >= 1
    c.close()
    assert _open_sockets() == before


def test_a_save_after_a_load_records_what_the_run_resumed_from(client: Client) -> None:
    # Lightning's issue #21813: retention deleted the checkpoint a run had
    # resumed from. The client names it in the next save; the server keeps it.
    m = "cl-resume"
    client.set_retention(m, keep_last=1)
    first = client.save({"w": torch.randn(64)}, m, epoch=1)
    client.load(m)  # a restarted job resumes from the latest: epoch 1
    assert client.resumed_from[m] == first["id"]
    second = client.save({"w": torch.randn(64)}, m, epoch=2)
    assert second["resumed_from"] == first["id"]
    third = client.save({"w": torch.randn(64)}, m, epoch=3)
    ids = [c["id"] for c in client.list(m)]
    assert ids == [first["id"], third["id"]], "the checkpoint the run resumed from went"
    # an explicit id wins; another model's saves name nothing
    fourth = client.save({"w": torch.randn(64)}, m, epoch=4, resumed_from=third["id"])
    assert fourth["resumed_from"] == third["id"]
    k = client.save({"w": torch.randn(64)}, "cl-resume-other")
    assert k["resumed_from"] is None
