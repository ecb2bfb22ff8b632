"""ckptd as the storage of torch.distributed.checkpoint (DCP).

    from ckptd.dcp import CkptdWriter, CkptdReader
    import torch.distributed.checkpoint as dcp  # 1.13: torch.distributed._shard.checkpoint

    # every rank, with the same arguments:
    w = CkptdWriter("http://127.0.0.1:8080", "llm", epoch=3, loss=0.41)
    dcp.save_state_dict(state_dict, storage_writer=w)     # dcp.save(...) on torch >= 2.2
    print(w.checkpoint["id"])                             # on the coordinator (rank 0)

    dcp.load_state_dict(state_dict, storage_reader=CkptdReader(url, "llm", "best"))

One DCP save is one checkpoint of several files (the server's SPEC 3.2),
laid out as torch's FileSystemWriter lays out a directory:

- The coordinator opens a staged checkpoint in prepare_global_plan (POST
  ?staged=1 with epoch, step, loss, run, metrics, tags) and hands its id to
  every rank in its plan's storage_data, with the rank's file prefix
  `__{rank}_`.
- In write_data each rank writes its items as FileSystemWriter does (bytes
  items first, raw; then each tensor with torch.save, after the same trim:
  detached, on the CPU, cloned when it is a view into a larger storage) into
  `__{rank}_0.distcp` (single_file_per_rank, the default, as torch 2.x) or one
  file per item (`__{rank}_{n}.distcp`, torch 1.13's default). Nothing is
  written to disk: torch.save writes into the PUT's body (chunked), as
  Client.save streams. With thin (the default), the tensors' storages of
  4 KiB and more are hashed in memory first, the server is asked which it
  lacks, and the stored ones go as 41-byte references: a save of unchanged
  weights sends a few kilobytes per file. `_StorageInfo(name, offset,
  length)` of each item goes back in its WriteResult, as torch's.
- finish (the coordinator) puts the results' storage_data into the Metadata,
  pickles it as FileSystemWriter does (`pickle.dump(metadata)`), PUTs it as
  `.metadata`, and commits. The server parses `.metadata` and the .distcp
  files; a commit it refuses (422: `.metadata` disagrees with the files)
  raises InvalidRequest.

A rank that fails in write_data makes DCP raise on every rank before
finish, so nothing is committed; the staged checkpoint and the files already
sent stay invisible and the server removes them after its --stage-timeout.

CkptdReader reads a committed checkpoint: read_metadata resolves ref
("latest", "best" or an id) to one id, which the whole load then uses; each
rank puts it into its plan and the coordinator checks that all ranks read
the same checkpoint (a save committed between two ranks' read_metadata would
make "latest" differ: CkptdError "ref_moved", load again or pass an id).
read_data reads only the byte ranges of the items the rank needs (HTTP
Range, adjacent items of a file in one request), loads each tensor item with
torch.load, narrows it to the requested part and copies it into the
planner's tensor.

`.metadata` is a pickle and is unpickled as torch's FileSystemReader does:
read only checkpoints of a server you trust.

Both classes implement torch 1.13's interface (init, prepare_local_plan,
prepare_global_plan, write_data/read_data, finish, read_metadata) and torch
2.x's (reset, set_up_storage_writer/set_up_storage_reader,
validate_checkpoint_id, storage_meta). A 2.x checkpoint_id is a URL of the
model (writer: http://HOST:PORT/api/v1/models/MODEL) or of a checkpoint
(reader: .../models/MODEL/checkpoints/REF).

Processes. A writer or reader holds the server's URL and options; each
process makes its own Client the first time it needs one (a copy pickled to
another process, or inherited through fork, never shares connections). A
Client passed in is used as is in the process that made the writer.

This module imports without torch: the classes are made on first use
(`ckptd.dcp.CkptdWriter`), from torch.distributed.checkpoint (torch 2.x) or
torch.distributed._shard.checkpoint (torch 1.13). When neither imports,
that first use raises ImportError saying why. On torch 1.13 with Python 3.11,
torch.distributed._shard itself fails to import (TensorProperties, a
dataclass default that Python 3.11 rejects); examples/train_ddp.py shows the
few lines that fix it before torch.distributed._shard is imported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import importlib
import io
import logging
import os
import pickle
import re
import socket
import tempfile
import threading
import urllib.parse
import uuid
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
    cast,
)

from .client import (
    API,
    DEFAULT_REF,
    DEFAULT_URL,
    Checkpoint,
    Client,
    _all_hashes,
    _body_writer,
    _hashes_to_ask,
    _Retry,
    _list_sha256,
    _q,
    _q_name,
    _retry_for,
    _storages,
    _worth_thin,
)
from .errors import CkptdError, NotFound

__all__ = ["CkptdWriter", "CkptdReader"]

log = logging.getLogger("ckptd")

_READ = 1 << 20
_GAP = 256 << 10  # items of a file closer than this are read in one request
_SPAN = 256 << 20  # ... while the request stays under this many bytes
_IN_MEMORY = 4 << 20  # spans up to this size are read into memory, larger ones spooled

Ref = Union[int, str]


# -- torch ------------------------------------------------------------------


class _TorchDCP:
    """The pieces of torch's DCP this module uses, from one of its homes."""

    def __init__(self, name: str) -> None:
        import torch
        from torch.futures import Future

        mod = importlib.import_module(name)
        self.name = name
        self.torch: Any = torch
        self.Future: Any = Future
        self.StorageWriter: Any = getattr(mod, "StorageWriter")
        self.StorageReader: Any = getattr(mod, "StorageReader")
        self.WriteResult: Any = importlib.import_module(name + ".storage").WriteResult
        planner = importlib.import_module(name + ".planner")
        self.WriteItemType: Any = planner.WriteItemType
        self.LoadItemType: Any = planner.LoadItemType
        self.StorageInfo: Any = importlib.import_module(name + ".filesystem")._StorageInfo
        self.StorageMeta: Any = getattr(importlib.import_module(name + ".metadata"),
                                        "StorageMeta", None)


_dcp: Optional[_TorchDCP] = None
_dcp_lock = threading.Lock()


def _torch_dcp() -> _TorchDCP:
    """torch's DCP (torch.distributed.checkpoint, else torch 1.13's
    torch.distributed._shard.checkpoint), imported on first use; ImportError
    saying why when neither imports. A failure is not remembered, so a later
    call (after a fix such as the 1.13 shim) tries again."""
    global _dcp
    with _dcp_lock:
        if _dcp is not None:
            return _dcp
        why: List[str] = []
        for name in ("torch.distributed.checkpoint", "torch.distributed._shard.checkpoint"):
            try:
                _dcp = _TorchDCP(name)
                return _dcp
            except Exception as e:  # ImportError, or 1.13's ValueError on Python 3.11
                why.append("%s: %s: %s" % (name, type(e).__name__, e))
        hint = ""
        if any("TensorProperties" in w or "mutable default" in w for w in why):
            hint = ("\n(torch 1.13 on Python 3.11: torch.distributed._shard fails to import "
                    "because Python 3.11 rejects its dataclass default TensorProperties(); "
                    "give TensorProperties object.__hash__ before importing it, as "
                    "examples/train_ddp.py does)")
        raise ImportError("ckptd.dcp needs torch's distributed checkpoint (torch 1.13 or "
                          "later, built with torch.distributed), and none imports here:\n  "
                          + "\n  ".join(why) + hint)


# -- what the plans carry -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SavePlanData:
    """A SavePlan's storage_data from CkptdWriter.prepare_global_plan: the
    staged checkpoint every rank writes into, and this rank's file prefix."""

    checkpoint: int
    prefix: str


@dataclasses.dataclass(frozen=True)
class LoadPlanData:
    """A LoadPlan's storage_data from CkptdReader: the checkpoint id the rank
    resolved its ref to."""

    checkpoint: int


# -- locations (torch 2.x checkpoint_id) --------------------------------------

_LOCATION = re.compile(
    r"^(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/api/v1/models/(?P<model>[^/?#]+)"
    r"(?:/checkpoints/(?P<ref>[^/?#]+))?/?$")


def _parse_location(checkpoint_id: Any) -> Optional[Tuple[str, str, Optional[str]]]:
    """(server URL, model, ref or None) of a ckptd URL naming a model or a
    checkpoint, None for anything else."""
    if not isinstance(checkpoint_id, str):
        return None
    m = _LOCATION.match(checkpoint_id)
    if m is None:
        return None
    ref = m.group("ref")
    return (m.group("base"), urllib.parse.unquote(m.group("model")),
            urllib.parse.unquote(ref) if ref is not None else None)


def _location(url: str, model: str, ref: Optional[Ref] = None) -> str:
    if "://" not in url:
        url = "http://" + url
    base = url.rstrip("/")
    if base.endswith(API):
        base = base[: -len(API)]
    out = "%s%s/models/%s" % (base, API, _q(model))
    if ref is not None:
        out += "/checkpoints/%s" % _q(str(ref))
    return out


# -- the connection ---------------------------------------------------------


class _Remote:
    """The server's URL and options, and this process's Client."""

    def __init__(
        self,
        client_or_url: Union[Client, str, None],
        model: str,
        *,
        token: Optional[str],
        timeout: Optional[float],
        retries: int,
        backoff: float,
        cafile: Optional[str],
    ) -> None:
        if not model:
            raise ValueError("model: a model name is needed")
        self.model = model
        self._client: Optional[Client] = None
        self._client_pid = 0
        if isinstance(client_or_url, Client):
            c = client_or_url
            self.url = c.url
            self.token = token if token is not None else c.token
            self.timeout = c.timeout
            self.retries = c.retries
            self.backoff = c.backoff
            self.cafile = cafile
            self._client, self._client_pid = c, os.getpid()
        elif client_or_url is None or isinstance(client_or_url, str):
            self.url = client_or_url or os.environ.get("CKPTD_URL") or DEFAULT_URL
            self.token = token
            self.timeout = timeout
            self.retries = retries
            self.backoff = backoff
            self.cafile = cafile
            self._new_client()  # checks the URL now, in the process that made it
        else:
            raise TypeError("client_or_url: a ckptd.Client or the server's URL, not %r"
                            % type(client_or_url).__name__)

    def _new_client(self) -> Client:
        self._client = Client(self.url, token=self.token, timeout=self.timeout,
                              retries=self.retries, backoff=self.backoff, cafile=self.cafile)
        self._client_pid = os.getpid()
        return self._client

    def client(self) -> Client:
        """This process's Client: the one given or made here, else a new one
        (after a fork, or in a copy unpickled in another process)."""
        if self._client is not None and self._client_pid == os.getpid():
            return self._client
        return self._new_client()

    def close(self) -> None:
        """Closes the kept-alive connections of the Client this made (a
        Client passed in is left to its owner)."""
        c = self._client
        if c is not None and self._client_pid == os.getpid():
            c.close()

    def _set_url(self, url: str) -> None:
        if url.rstrip("/") != self.url.rstrip("/"):
            self.url = url
            self._client = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None  # a Client holds sockets and locks: each process makes its own
        state["_client_pid"] = 0
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)


# -- the writer ---------------------------------------------------------------


class _Writer(_Remote):
    """A torch.distributed.checkpoint StorageWriter that saves into ckptd.

    client_or_url: a ckptd.Client, or the server's URL (default $CKPTD_URL,
    else http://127.0.0.1:8080). model: the model the checkpoint goes to.
    epoch, step, loss, run, metrics, tags, pin, resumed_from: the
    checkpoint's fields, as for Client.save(); only the coordinator's are
    used. thin: send the storages the server has as references.
    single_file_per_rank: one file per rank (`__R_0.distcp`), else one file
    per item (`__R_N.distcp`). parallel: uploads at once per rank when a
    rank writes several files (each is streamed as torch.save writes it:
    nothing goes to disk; the tensors of up to `parallel` files are held,
    views cloned as FileSystemWriter clones them). token, timeout,
    retries, backoff, cafile: as for Client, for the Client each process
    makes.

    After a save: .checkpoint is the committed checkpoint's JSON (on the
    coordinator; None elsewhere), .staged_id its id (every rank), .files the
    server's answer for each file this rank sent, .wire_bytes the request
    body bytes this rank sent (thin frames or files, .metadata included)."""

    def __init__(
        self,
        client_or_url: Union[Client, str, None],
        model: str,
        *,
        epoch: Optional[int] = None,
        step: Optional[int] = None,
        loss: Optional[float] = None,
        run: Optional[str] = None,
        metrics: Optional[Mapping[str, float]] = None,
        tags: Union[str, Iterable[str], None] = None,
        pin: bool = False,
        resumed_from: Optional[int] = None,
        thin: bool = True,
        single_file_per_rank: bool = True,
        parallel: int = 4,
        token: Optional[str] = None,
        timeout: Optional[float] = 600.0,
        retries: int = 4,
        backoff: float = 0.5,
        cafile: Optional[str] = None,
    ) -> None:
        super().__init__(client_or_url, model, token=token, timeout=timeout,
                         retries=retries, backoff=backoff, cafile=cafile)
        _torch_dcp()  # the clear ImportError now, not halfway through a save
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.run = run
        self.metrics = dict(metrics) if metrics else None
        self.tags: Union[str, List[str], None] = (
            tags if tags is None or isinstance(tags, str) else [str(t) for t in tags])
        self.pin = pin
        self.resumed_from = resumed_from
        self.thin = thin
        self.single_file_per_rank = single_file_per_rank
        self.parallel = parallel
        self.is_coordinator = False
        self.staged_id: Optional[int] = None
        self.checkpoint: Optional[Checkpoint] = None
        self.files: Dict[str, Dict[str, Any]] = {}
        self.wire_bytes = 0
        self._save_id: Optional[str] = None

    def __repr__(self) -> str:
        return "CkptdWriter(%r, %r)" % (self.url, self.model)

    # -- torch 2.x ------------------------------------------------------------

    @property
    def checkpoint_id(self) -> str:
        """Where this writer saves: the model's URL (torch 2.x's checkpoint_id)."""
        return _location(self.url, self.model)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        """True for a model's URL, http(s)://HOST[:PORT]/api/v1/models/MODEL."""
        loc = _parse_location(checkpoint_id)
        return loc is not None and loc[2] is None

    def reset(self, checkpoint_id: Any = None) -> None:
        """A new save begins (torch 2.x). checkpoint_id, when given, is a
        model's URL (see validate_checkpoint_id): the save goes there."""
        if checkpoint_id is not None:
            loc = _parse_location(checkpoint_id)
            if loc is None or loc[2] is not None:
                raise ValueError("CkptdWriter: checkpoint_id %r is not a model's URL "
                                 "(http://HOST:PORT/api/v1/models/MODEL)" % (checkpoint_id,))
            self._set_url(loc[0])
            self.model = loc[1]
        self._begin()
        self._save_id = None

    def storage_meta(self) -> Any:
        """torch 2.x's StorageMeta: the model's URL and this save's id."""
        cls = _torch_dcp().StorageMeta
        if cls is None:
            return None
        if self._save_id is None:
            self._save_id = str(uuid.uuid4())
        return cls(checkpoint_id=self.checkpoint_id, save_id=self._save_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """torch 2.x's name of init()."""
        self.init(is_coordinator)

    # -- torch 1.13 and 2.x ---------------------------------------------------

    def _begin(self) -> None:
        self.staged_id = None
        self.checkpoint = None
        self.files = {}
        self.wire_bytes = 0

    def init(self, is_coordinator: bool) -> None:
        """A save begins on this rank (torch 1.13's name)."""
        self.is_coordinator = is_coordinator
        self._begin()

    def prepare_local_plan(self, plan: Any) -> Any:
        return plan

    def prepare_global_plan(self, plans: List[Any]) -> List[Any]:
        """(the coordinator) Opens the staged checkpoint and hands its id,
        with each rank's file prefix, to every rank's plan."""
        c = self.client()
        params = c._meta(self.epoch, self.step, self.loss, self.run, self.metrics, self.tags,
                         self.pin)
        params["resumed_from"] = c._resumed(self.model, self.resumed_from)
        params["staged"] = 1
        opened = c._json("POST", "/models/%s/checkpoints" % _q(self.model), params)
        cid = int(opened["id"])
        self.staged_id = cid
        log.debug("DCP save into staged checkpoint %d of %s", cid, self.model)
        return [dataclasses.replace(p, storage_data=SavePlanData(cid, "__%d_" % i))
                for i, p in enumerate(plans)]

    def write_data(self, plan: Any, planner: Any) -> Any:
        """Writes this rank's items into its file(s) and sends them ->
        a completed torch Future of the WriteResults."""
        t = _torch_dcp()
        sd = plan.storage_data
        if not isinstance(sd, SavePlanData):
            raise CkptdError("the plan given to CkptdWriter.write_data carries %r, not the "
                             "checkpoint CkptdWriter.prepare_global_plan opens (a cached "
                             "global plan is not supported)" % (sd,), code="no_plan")
        self.staged_id = sd.checkpoint
        c = self.client()
        items = list(plan.items)
        if self.single_file_per_rank:
            groups = [items] if items else []  # a rank with nothing to write sends no file
        else:
            groups = [[it] for it in items]
        results: List[Any] = []
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=self.parallel, thread_name_prefix="ckptd-dcp") as ex:
            pending: List[Tuple[concurrent.futures.Future[Tuple[str, List[Tuple[Any, int, int]]]],
                                str]] = []
            try:
                for n, group in enumerate(groups):
                    # at most `parallel` files' items resolved (and views
                    # cloned) at once
                    running = [f for f, _n in pending if not f.done()]
                    if len(running) >= self.parallel:
                        concurrent.futures.wait(running,
                                                return_when=concurrent.futures.FIRST_COMPLETED)
                    if any(f.done() and f.exception() for f, _n in pending):
                        break
                    name = "%s%d.distcp" % (sd.prefix, n)
                    byte_items = [(wi, planner.resolve_data(wi)) for wi in group
                                  if wi.type == t.WriteItemType.BYTE_IO]
                    tensor_items = [(wi, _trim(planner.resolve_data(wi))) for wi in group
                                    if wi.type != t.WriteItemType.BYTE_IO]
                    pending.append((ex.submit(self._send_items, c, sd.checkpoint, name,
                                              byte_items, tensor_items, t, stop), name))
                for fut, name in pending:
                    sha, written = fut.result()
                    for wi, offset, length in written:
                        wr = t.WriteResult(index=wi.index, size_in_bytes=length,
                                           storage_data=t.StorageInfo(name, offset, length))
                        # for finish(): the file's SHA-256, so the coordinator can
                        # check the committed file list (not part of .metadata)
                        object.__setattr__(wr, "_ckptd_file", (name, sha))
                        results.append(wr)
            except BaseException:
                stop.set()
                raise
        fut_out = t.Future()
        fut_out.set_result(results)
        return fut_out

    def _send_items(self, c: Client, cid: int, name: str, byte_items: List[Tuple[Any, Any]],
                    tensor_items: List[Tuple[Any, Any]], t: _TorchDCP,
                    stop: threading.Event) -> Tuple[str, List[Tuple[Any, int, int]]]:
        """Streams items as file `name` of staged checkpoint cid, laid out as
        FileSystemWriter lays out a file (the bytes items raw, then each
        tensor by torch.save), with no copy on disk: torch.save writes
        straight into the request (chunked), as Client.save does, and with
        thin the storages the server has go as R frames -> (the file's
        SHA-256, (item, offset, length) of each item in it)."""
        if stop.is_set():
            raise CkptdError("not sent: another file of this rank failed", code="stopped")
        # each storage named by its item (fqn and chunk offset), the same
        # from save to save: one whose sample changed since is not asked about
        names: Dict[Tuple[int, int], str] = {}
        found = _storages({"%s@%s" % (wi.index.fqn, tuple(wi.index.offset or ())): x
                           for wi, x in tensor_items}, names)
        ask, hashes = _hashes_to_ask(found, names, c.url, self.model, self.thin)
        if not self.thin:
            found = []
        refs = _worth_thin(c._stored_refs(ask, hashes), found)
        written: List[Tuple[Any, int, int]] = []
        headers = {"Transfer-Encoding": "chunked"}
        wire = 0
        attempts = 0

        def kind() -> None:
            headers["Content-Type"] = ("application/x-ckptd-thin" if refs
                                       else "application/octet-stream")

        def before() -> None:
            # a retry after a cut: ask again (the server may keep what came whole)
            nonlocal attempts
            attempts += 1
            if attempts > 1 and found:
                refs.clear()
                refs.update(_worth_thin(c._stored_refs(found, _all_hashes(found, ask, hashes)),
                                        found))
                kind()

        def send_body(sock: socket.socket) -> Optional[str]:
            nonlocal wire
            w = _body_writer(sock, None, refs)
            written.clear()
            for wi, data in byte_items:
                at = w.sent
                w.write(data.getbuffer())
                written.append((wi, at, w.sent - at))
            for wi, tensor in tensor_items:
                at = w.sent
                w.save(tensor)
                written.append((wi, at, w.sent - at))
            w.finish()
            wire = w.body_bytes
            return w.sha.hexdigest()

        url = _file_url(c, self.model, cid, name)
        kind()
        try:
            j = c._stream("PUT", url, send_body, headers, before, replaces=True)
        except CkptdError as e:
            if not refs or (e.code != "missing_blobs" and e.status != 422):
                raise
            # a blob the server had when asked was deleted since: send it all
            log.warning("thin upload of %s: %s; sending the whole file", name, e.message)
            refs.clear()
            kind()
            j = c._stream("PUT", url, send_body, headers, replaces=True)
        size = written[-1][1] + written[-1][2] if written else 0
        if j.get("size") != size:
            raise CkptdError("the server stored %s bytes of %s, which has %d"
                             % (j.get("size"), name, size), code="size_mismatch",
                             method="PUT", path=url)
        with _stats_lock:
            self.wire_bytes += wire
            self.files[name] = j
        return str(j["sha256"]), list(written)

    def finish(self, metadata: Any, results: List[List[Any]]) -> None:
        """(the coordinator) Puts every item's storage_data into metadata,
        PUTs it pickled as `.metadata`, and commits the checkpoint
        (.checkpoint). Raises InvalidRequest when the server refuses the
        commit (422: `.metadata` disagrees with the data files)."""
        if self.staged_id is None:
            raise CkptdError("CkptdWriter.finish before prepare_global_plan: no checkpoint "
                             "was opened", code="no_plan")
        cid = self.staged_id
        c = self.client()
        storage_md: Dict[Any, Any] = {}
        files: Dict[str, str] = {}
        known = True
        for wr_list in results:
            for wr in wr_list:
                storage_md[wr.index] = wr.storage_data
                info = getattr(wr, "_ckptd_file", None)
                if info is None:
                    known = False
                else:
                    files[info[0]] = info[1]
        metadata.storage_data = storage_md
        if hasattr(metadata, "storage_meta"):
            sm = self.storage_meta()
            if sm is not None:
                metadata.storage_meta = sm
        if known:
            lost = sorted({si.relative_path for si in storage_md.values()} - set(files))
            if lost:
                raise CkptdError("items point into files no rank sent: %s" % ", ".join(lost),
                                 code="missing_files")
        body = pickle.dumps(metadata)  # the bytes FileSystemWriter's pickle.dump writes
        j, sent = _put_bytes(c, self.model, cid, ".metadata", body)
        self.wire_bytes += sent
        self.files[".metadata"] = j
        files[".metadata"] = str(j["sha256"])
        ck = c._commit(self.model, cid, files)
        if known:
            want = _list_sha256(files.items())
            if ck.get("sha256") != want:
                raise CkptdError("checkpoint %d was committed with SHA-256 %s but the files "
                                 "the ranks sent make %s" % (cid, ck.get("sha256"), want),
                                 code="sha256_mismatch", method="POST",
                                 path=c._url("/models/%s/checkpoints/%d/commit"
                                             % (_q(self.model), cid)))
        self.checkpoint = ck
        self._save_id = None
        log.debug("DCP checkpoint %d of %s committed: %d files", cid, self.model, len(files))


_stats_lock = threading.Lock()


def _trim(tensor: Any) -> Any:
    """The tensor as torch's FileSystemWriter saves it: detached, on the CPU,
    cloned when its storage holds more than it (a view), else as it is
    (strides included)."""
    tensor = tensor.detach().cpu()
    nbytes = tensor.numel() * tensor.element_size()
    if hasattr(tensor, "untyped_storage"):
        held = tensor.untyped_storage().nbytes()
    else:  # torch 1.13
        held = tensor.storage().size() * tensor.element_size()
    if held != nbytes:
        tensor = tensor.clone()
    return tensor


class _Slice(io.RawIOBase):
    """Bytes [offset, offset+length) of a seekable binary file, as a file."""

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self.f = f
        self.offset = offset
        self.length = length
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            pos += self.pos
        elif whence == os.SEEK_END:
            pos += self.length
        if pos < 0:
            raise ValueError("negative seek position %d" % pos)
        self.pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.length - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _file_url(c: Client, model: str, cid: Ref, name: str) -> str:
    return c._url("/models/%s/checkpoints/%s/files/%s" % (_q(model), _q(str(cid)), _q_name(name)))


def _put_bytes(c: Client, model: str, cid: int, name: str,
               data: bytes) -> Tuple[Dict[str, Any], int]:
    """PUTs data as file `name` of staged checkpoint cid -> (the answer, bytes sent)."""
    url = _file_url(c, model, cid, name)
    digest = hashlib.sha256(data).hexdigest()

    def send_body(sock: socket.socket) -> Optional[str]:
        sock.sendall(data)
        return digest

    j = c._stream("PUT", url, send_body, {"Content-Type": "application/octet-stream",
                                          "Content-Length": str(len(data))}, replaces=True)
    if j.get("size") != len(data):
        raise CkptdError("the server stored %s bytes of %s, which has %d"
                         % (j.get("size"), name, len(data)), code="size_mismatch",
                         method="PUT", path=url)
    return j, len(data)


# -- the reader ---------------------------------------------------------------


class _Reader(_Remote):
    """A torch.distributed.checkpoint StorageReader that loads from ckptd.

    client_or_url: a ckptd.Client, or the server's URL (default $CKPTD_URL,
    else http://127.0.0.1:8080). model, ref: the checkpoint ("latest", the
    default; "best"; or an id); run, metric, mode narrow and define
    latest/best as for Client.get(). parallel: range requests at once per
    rank. token, timeout, retries, backoff, cafile: as for Client.

    Each load resolves ref once, in read_metadata, and reads that checkpoint
    only (.checkpoint_number; .files is its file list)."""

    def __init__(
        self,
        client_or_url: Union[Client, str, None],
        model: str,
        ref: Ref = DEFAULT_REF,
        *,
        run: Optional[str] = None,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        parallel: int = 4,
        token: Optional[str] = None,
        timeout: Optional[float] = 600.0,
        retries: int = 4,
        backoff: float = 0.5,
        cafile: Optional[str] = None,
    ) -> None:
        super().__init__(client_or_url, model, token=token, timeout=timeout,
                         retries=retries, backoff=backoff, cafile=cafile)
        _torch_dcp()
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.ref: Ref = ref
        self.run = run
        self.metric = metric
        self.mode = mode
        self.parallel = parallel
        self.is_coordinator = False
        self.checkpoint_number: Optional[int] = None
        self.files: Dict[str, Dict[str, Any]] = {}
        self.storage_data: Dict[Any, Any] = {}

    def __repr__(self) -> str:
        return "CkptdReader(%r, %r, %r)" % (self.url, self.model, self.ref)

    # -- torch 2.x ------------------------------------------------------------

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint's URL (torch 2.x's checkpoint_id): its id once read."""
        ref = self.checkpoint_number if self.checkpoint_number is not None else self.ref
        return _location(self.url, self.model, ref)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        """True for a checkpoint's URL, http(s)://HOST[:PORT]/api/v1/models/
        MODEL/checkpoints/REF, or a model's (its latest checkpoint)."""
        return _parse_location(checkpoint_id) is not None

    def reset(self, checkpoint_id: Any = None) -> None:
        """A new load begins (torch 2.x). checkpoint_id, when given, is a
        checkpoint's URL (see validate_checkpoint_id)."""
        if checkpoint_id is not None:
            loc = _parse_location(checkpoint_id)
            if loc is None:
                raise ValueError("CkptdReader: checkpoint_id %r is not a checkpoint's URL "
                                 "(http://HOST:PORT/api/v1/models/MODEL/checkpoints/REF)"
                                 % (checkpoint_id,))
            self._set_url(loc[0])
            self.model = loc[1]
            self.ref = loc[2] if loc[2] is not None else DEFAULT_REF
        self.checkpoint_number = None
        self.files = {}
        self.storage_data = {}

    def set_up_storage_reader(self, metadata: Any, is_coordinator: bool, *args: Any,
                              **kwargs: Any) -> None:
        """torch 2.x's name of init()."""
        self.init(metadata, is_coordinator)

    # -- torch 1.13 and 2.x ---------------------------------------------------

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        """Resolves ref to one checkpoint id (pinned for this load), checks it
        is a DCP checkpoint, and returns its unpickled `.metadata`."""
        c = self.client()
        hdrs: Dict[str, str] = {}
        j = c._json("GET", "/models/%s/checkpoints/%s/files" % (_q(self.model), _q(str(self.ref))),
                    {"run": self.run, "metric": self.metric, "mode": self.mode},
                    headers_out=hdrs)
        got = {k.lower(): v for k, v in hdrs.items()}.get("x-checkpoint-id", "")
        if got.isdigit():
            cid = int(got)
        elif isinstance(self.ref, int) or str(self.ref).isdigit():
            cid = int(self.ref)
        else:
            raise CkptdError("the server did not say which checkpoint %r of %s is (no "
                             "X-Checkpoint-Id)" % (self.ref, self.model), code="unexpected")
        self.files = {str(f["name"]): f for f in j["files"]}
        if ".metadata" not in self.files:
            raise CkptdError("checkpoint %d of %s is not a torch.distributed.checkpoint: it "
                             "has no .metadata (its files: %s)"
                             % (cid, self.model, ", ".join(sorted(self.files)) or "none"),
                             code="not_dcp")
        buf = io.BytesIO()
        n = c._download("/models/%s/checkpoints/%d/files/.metadata" % (_q(self.model), cid),
                        None, cast(BinaryIO, buf), None)
        want = self.files[".metadata"]
        if n != int(want["size"]) or hashlib.sha256(buf.getvalue()).hexdigest() != want["sha256"]:
            raise CkptdError(".metadata of checkpoint %d of %s does not match its file list"
                             % (cid, self.model), code="sha256_mismatch")
        _torch_dcp()  # the classes the pickle names
        metadata = pickle.loads(buf.getvalue())
        self.checkpoint_number = cid
        with c._lock:  # as a download does: a later save records it as resumed_from
            c.resumed_from[self.model] = cid
        return metadata

    def init(self, metadata: Any, is_coordinator: bool) -> None:
        """torch 1.13's name of set_up_storage_reader()."""
        self.is_coordinator = is_coordinator
        if metadata.storage_data is None:
            raise CkptdError("the .metadata of checkpoint %s of %s has no storage_data"
                             % (self.checkpoint_number, self.model), code="not_dcp")
        self.storage_data = dict(metadata.storage_data)

    def prepare_local_plan(self, plan: Any) -> Any:
        if self.checkpoint_number is None:
            raise CkptdError("CkptdReader.prepare_local_plan before read_metadata",
                             code="no_plan")
        return dataclasses.replace(plan, storage_data=LoadPlanData(self.checkpoint_number))

    def prepare_global_plan(self, plans: List[Any]) -> List[Any]:
        """(the coordinator) Checks that every rank read the same checkpoint."""
        ids = sorted({p.storage_data.checkpoint for p in plans
                      if isinstance(p.storage_data, LoadPlanData)})
        if len(ids) > 1:
            raise CkptdError("the ranks resolved %r of %s to different checkpoints (%s): one "
                             "was committed while they read; load again, or name an id"
                             % (self.ref, self.model, ", ".join(map(str, ids))),
                             code="ref_moved")
        return plans

    def read_data(self, plan: Any, planner: Any) -> Any:
        """Reads the items of plan (byte ranges of the files, adjacent ones
        together), loads them into the planner's tensors and values -> a
        completed torch Future."""
        t = _torch_dcp()
        sd = plan.storage_data
        cid = sd.checkpoint if isinstance(sd, LoadPlanData) else self.checkpoint_number
        if cid is None:
            raise CkptdError("CkptdReader.read_data before read_metadata", code="no_plan")
        pinned: int = cid
        # every request, grouped by the stored item it reads (resharding can
        # read several parts of one item), then by file
        by_item: Dict[Tuple[str, int, int], List[Any]] = {}
        for req in plan.items:
            try:
                info = self.storage_data[req.storage_index]
            except KeyError:
                raise CkptdError("checkpoint %d of %s has no item %s" % (cid, self.model,
                                 req.storage_index), code="not_found")
            by_item.setdefault((str(info.relative_path), int(info.offset), int(info.length)),
                               []).append(req)
        spans: List[Tuple[str, int, int, List[Tuple[int, int, List[Any]]]]] = []
        for key in sorted(by_item):
            name, offset, length = key
            last = spans[-1] if spans else None
            if (last is not None and last[0] == name and offset - last[2] <= _GAP
                    and offset + length - last[1] <= _SPAN and offset >= last[2]):
                last[3].append((offset, length, by_item[key]))
                spans[-1] = (name, last[1], max(last[2], offset + length), last[3])
            else:
                spans.append((name, offset, offset + length, [(offset, length, by_item[key])]))
        c = self.client()

        def fetch(span: Tuple[str, int, int, Any]) -> IO[bytes]:
            name, start, end, _items = span
            if name not in self.files:
                raise NotFound("checkpoint %d of %s has no file %s" % (pinned, self.model, name),
                               status=404, code="not_found")
            out: IO[bytes] = (io.BytesIO() if end - start <= _IN_MEMORY
                              else tempfile.TemporaryFile(prefix="ckptd-dcp-"))
            try:
                _get_range(c, "/models/%s/checkpoints/%d/files/%s"
                           % (_q(self.model), pinned, _q_name(name)), start, end - start, out)
            except BaseException:
                out.close()
                raise
            return out

        with concurrent.futures.ThreadPoolExecutor(
                max_workers=self.parallel, thread_name_prefix="ckptd-dcp") as ex:
            window: List[concurrent.futures.Future[IO[bytes]]] = []
            nxt = 0
            try:
                for i, span in enumerate(spans):
                    while nxt < len(spans) and nxt < i + self.parallel:
                        window.append(ex.submit(fetch, spans[nxt]))
                        nxt += 1
                    f = window[i].result()
                    try:
                        self._load_span(f, span, planner, t)
                    finally:
                        f.close()
            except BaseException:
                for fut in window:
                    fut.cancel()
                for fut in window:
                    if not fut.cancelled():
                        try:
                            fut.result().close()
                        except BaseException:
                            pass
                raise
        out = t.Future()
        out.set_result(None)
        return out

    def _load_span(self, f: IO[bytes], span: Tuple[str, int, int, List[Tuple[int, int, List[Any]]]],
                   planner: Any, t: _TorchDCP) -> None:
        name, start, _end, items = span
        for offset, length, reqs in items:
            rel = offset - start
            tensor: Any = None
            for req in reqs:
                if req.type == t.LoadItemType.BYTE_IO:
                    f.seek(rel)
                    data = f.read(length)
                    planner.load_bytes(req, io.BytesIO(data))
                    continue
                if tensor is None:
                    tensor = _load_tensor(t, io.BufferedReader(_Slice(f, rel, length)))
                part = tensor
                for d, (o, n) in enumerate(zip(req.storage_offsets, req.lengths)):
                    part = part.narrow(d, o, n)
                target = planner.resolve_tensor(req).detach()
                if target.size() != part.size():
                    raise CkptdError("%s: item %s of %s at %d is %s, the state_dict's tensor %s"
                                     % (self.model, req.storage_index, name, offset,
                                        tuple(part.size()), tuple(target.size())),
                                     code="shape_mismatch")
                target.copy_(part)
                planner.commit_tensor(req, target)


def _load_tensor(t: _TorchDCP, f: IO[bytes]) -> Any:
    try:
        return t.torch.load(f, map_location="cpu", weights_only=True)
    except TypeError:  # a torch.load without weights_only
        f.seek(0)
        return t.torch.load(f, map_location="cpu")


def _get_range(c: Client, path: str, start: int, length: int, out: IO[bytes]) -> None:
    """GETs bytes [start, start+length) of path (a Range request, 206) into
    out, with the Client's retries (a retry starts out over)."""
    url = c._url(path)
    headers = c._headers({"Accept": "*/*",
                          "Range": "bytes=%d-%d" % (start, start + length - 1)})
    base = out.tell()

    def attempt(conn: http.client.HTTPConnection) -> int:
        out.seek(base)
        out.truncate()
        log.debug("GET %s bytes %d-%d", url, start, start + length - 1)
        try:
            conn.request("GET", url, headers=headers)
        except (OSError, http.client.HTTPException) as e:
            raise _retry_for(e, stale=True)
        r = c._answer(conn)
        if r.status != 206:
            try:
                payload = r.read()
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e)
            c._check(r.status, payload, "GET", url)
            raise CkptdError("bytes %d-%d were asked for, the server answered %d without a "
                             "range" % (start, start + length - 1, r.status), status=r.status,
                             code="unexpected", method="GET", path=url)
        want = "bytes %d-%d/" % (start, start + length - 1)
        got = r.getheader("Content-Range") or ""
        if not got.startswith(want):
            r.close()
            raise CkptdError("bytes %d-%d were asked for, the server sent %r"
                             % (start, start + length - 1, got), status=r.status,
                             code="unexpected", method="GET", path=url)
        n = 0
        while True:
            try:
                b = r.read(min(_READ, length - n) if n < length else _READ)
            except (OSError, http.client.HTTPException) as e:
                raise _retry_for(e, what="range download broke after %d bytes: " % n)
            if not b:
                break
            out.write(b)
            n += len(b)
        if n != length:
            raise _Retry("range download ended after %d of %d bytes" % (n, length))
        return n

    if length > 0:
        c._with_retries("GET", url, attempt)


# -- the classes, made on first use -----------------------------------------

if TYPE_CHECKING:
    CkptdWriter = _Writer
    CkptdReader = _Reader

_made: Dict[str, Type[Any]] = {}


def _make(name: str) -> Type[Any]:
    with _dcp_lock:
        if name in _made:
            return _made[name]
    t = _torch_dcp()
    impl, base = ((_Writer, t.StorageWriter) if name == "CkptdWriter"
                  else (_Reader, t.StorageReader))
    with _dcp_lock:
        if name not in _made:
            cls = type(name, (impl, base), {
                "__module__": __name__, "__qualname__": name, "__doc__": impl.__doc__})
            _made[name] = cls
            globals()[name] = cls  # later lookups (and pickle's) find it directly
        return _made[name]


def __getattr__(name: str) -> Any:
    if name in ("CkptdWriter", "CkptdReader"):
        return _make(name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
