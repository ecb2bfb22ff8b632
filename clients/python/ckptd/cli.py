"""The `ckptd-client` command line (also `python3 -m ckptd`).

    ckptd-client push ckpt.pth -m resnet [--epoch N --step S --loss L --run R
        --metric acc=0.9 --tag nightly --pin --json]
    ckptd-client push --dir DIR -m resnet [the same fields] [--parallel N] [--no-thin]
    ckptd-client pull -m resnet [--ref latest|best|ID] [--root /model_state_dict]
        [--keys 'conv*'] [--format pth|safetensors] [--run R] [-o out.pth]
    ckptd-client pull -m resnet --original [--ref ...] [-o ckpt.pth]
    ckptd-client pull -m resnet --dir DIR [--ref latest|best|ID] [--run R]
    ckptd-client list -m resnet [--run R --epoch N --tag T --order loss --limit N --json]
    ckptd-client info -m resnet [--ref latest|best|ID] [--run R] [--json]
    ckptd-client delete -m resnet ID
    ckptd-client models [--json]

The server is --url, else $CKPTD_URL, else http://127.0.0.1:8080; the token
--token or $CKPTD_TOKEN; an https:// server's CA --cafile or $CKPTD_CAFILE.
These options go before or after the command. --ref defaults to "latest", as
in the library. push and pull draw their progress on stderr when it is a
terminal (-q: never). Errors print the server's message and exit 1; usage
errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._version import __version__
from .client import DEFAULT_REF, DEFAULT_URL, Client
from .errors import CkptdError
from .progress import TerminalProgress, format_size

__all__ = ["main", "parser"]


def _metric(s: str) -> Tuple[str, float]:
    name, sep, v = s.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("a metric is name=value, not %r" % s)
    try:
        return name, float(v)
    except ValueError:
        raise argparse.ArgumentTypeError("metric %r: %r is not a number" % (name, v))


def _connection_options(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--url", default=default,
                   help="server URL (default $CKPTD_URL or %s)" % DEFAULT_URL)
    p.add_argument("--token", default=default, help="bearer token (default $CKPTD_TOKEN)")
    p.add_argument("--cafile", default=default,
                   help="PEM file of the CA an https:// server's certificate is checked "
                   "against (default $CKPTD_CAFILE, else the system's CAs)")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress display")
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log each request")


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    ap = argparse.ArgumentParser(
        prog="ckptd-client",
        description="Push checkpoints to a ckptd server, pull them and their "
        "state_dicts back, list and inspect them.")
    ap.add_argument("--version", action="version", version="%(prog)s " + __version__)
    _connection_options(ap, None)
    # The same options after the command; SUPPRESS keeps the values given first.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, argparse.SUPPRESS)
    model = argparse.ArgumentParser(add_help=False, parents=[common])
    model.add_argument("-m", "--model", required=True, help="model name")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("push", parents=[model],
                       help="upload a checkpoint file, or a directory as one checkpoint")
    p.add_argument("file", nargs="?", help="a torch.save file or a safetensors file")
    p.add_argument("--dir", metavar="DIR",
                   help="upload every file under DIR (recursively) as one checkpoint of "
                   "several files, instead of FILE")
    p.add_argument("--parallel", type=int, default=4, metavar="N",
                   help="with --dir: files uploaded at once (default 4)")
    p.add_argument("--no-thin", dest="thin", action="store_false",
                   help="with --dir: send every file whole, not the tensors the server "
                   "already has as references")
    p.add_argument("--epoch", type=int)
    p.add_argument("--step", type=int)
    p.add_argument("--loss", type=float)
    p.add_argument("--run", help="run name (default: the server's \"default\")")
    p.add_argument("--metric", type=_metric, action="append", default=[],
                   help="name=value (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--pin", action="store_true", help="never removed by retention")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")

    p = sub.add_parser("pull", parents=[model],
                       help="download a checkpoint's state_dict (or its original file, "
                       "or all its files)")
    p.add_argument("--ref", default=DEFAULT_REF,
                   help="latest (default), best or a checkpoint id")
    p.add_argument("--root", help="JSON Pointer of the state_dict, e.g. /model_state_dict")
    p.add_argument("--keys", help="comma-separated globs, e.g. 'conv*,fc.weight'")
    p.add_argument("--run", help="narrows latest/best to one run")
    p.add_argument("--format", choices=("pth", "safetensors"), default="pth")
    p.add_argument("--original", action="store_true",
                   help="the file as it was uploaded, byte for byte")
    p.add_argument("-o", "--output",
                   help="file to write, - for stdout (default MODEL-REF.pth, or "
                   "MODEL-ID.pth with --original)")
    p.add_argument("--dir", metavar="DIR",
                   help="write every file of the checkpoint, as uploaded, into DIR (made "
                   "if missing; a checkpoint of one file gives that file)")

    p = sub.add_parser("list", parents=[model], help="list a model's checkpoints")
    p.add_argument("--run")
    p.add_argument("--epoch", type=int)
    p.add_argument("--tag")
    p.add_argument("--order", help="created (default), epoch, loss, -loss, metric.NAME")
    p.add_argument("--limit", type=int)
    p.add_argument("--offset", type=int)
    p.add_argument("--json", action="store_true", help="print the JSON list")

    p = sub.add_parser("info", parents=[model], help="one checkpoint and its tensors")
    p.add_argument("--ref", default=DEFAULT_REF,
                   help="latest (default), best or a checkpoint id")
    p.add_argument("--run", help="narrows latest/best to one run")
    p.add_argument("--json", action="store_true", help="print the checkpoint's JSON")

    p = sub.add_parser("delete", parents=[model], help="delete one checkpoint")
    p.add_argument("ref", help="the checkpoint's id (or latest, best)")

    p = sub.add_parser("models", parents=[common], help="list the models")
    p.add_argument("--json", action="store_true", help="print the JSON list")
    return ap


def _dash(v: Any, fmt: str = "%s") -> str:
    return "-" if v is None else str(fmt % v)


def _progress(a: argparse.Namespace, label: str) -> Optional[TerminalProgress]:
    return None if a.quiet else TerminalProgress(label)


def _push(c: Client, a: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    if (a.file is None) == (a.dir is None):
        ap.error("push takes a FILE or --dir DIR (one of them)")
    if a.parallel < 1:
        ap.error("--parallel is at least 1")
    if a.dir is not None:
        _push_dir(c, a)
        return
    p = _progress(a, "push %s" % os.path.basename(a.file))
    try:
        j = c.save_file(a.file, a.model, epoch=a.epoch, step=a.step, loss=a.loss, run=a.run,
                        metrics=dict(a.metric), tags=a.tag, pin=a.pin, progress=p)
    finally:
        if p is not None:
            p.finish()
    if a.json:
        print(json.dumps(j, indent=2))
        return
    d = j.get("dedup") or {}
    print("stored %s checkpoint %s (run %s, epoch %s): %s, %s tensors, %s new in the store"
          % (j["model"], j["id"], j["run"], _dash(j.get("epoch")), format_size(j["size"]),
             j["tensor_count"], format_size(d.get("new_bytes", 0))))


def _push_dir(c: Client, a: argparse.Namespace) -> None:
    p = _progress(a, "push %s" % (os.path.basename(os.path.normpath(a.dir)) or a.dir))
    try:
        j = c.push_dir(a.model, a.dir, epoch=a.epoch, step=a.step, loss=a.loss, run=a.run,
                       metrics=dict(a.metric), tags=a.tag, pin=a.pin, parallel=a.parallel,
                       thin=a.thin, progress=p)
    finally:
        if p is not None:
            p.finish()
    if a.json:
        print(json.dumps(j, indent=2))
        return
    d = j.get("dedup") or {}
    print("stored %s checkpoint %s (run %s, epoch %s): %d files, %s, %s tensors, %s sent, "
          "%s new in the store"
          % (j["model"], j["id"], j["run"], _dash(j.get("epoch")), len(j.get("files") or []),
             format_size(j["size"]), j["tensor_count"], format_size(c.last_push_wire or 0),
             format_size(d.get("new_bytes", 0))))


_EXT = {"safetensors": ".safetensors"}


def _pull_dir(c: Client, a: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    if a.original or a.output or a.root or a.keys or a.format != "pth":
        ap.error("pull --dir takes the files as uploaded: no --original, -o, --root, --keys "
                 "or --format")
    p = _progress(a, "pull %s" % (os.path.basename(os.path.normpath(a.dir)) or a.dir))
    sizes: List[int] = []

    def progress(done: int, total: Optional[int]) -> None:
        sizes[:] = [done]
        if p is not None:
            p(done, total)

    try:
        names = c.pull_dir(a.model, a.ref, a.dir, run=a.run, progress=progress)
    finally:
        if p is not None:
            p.finish()
    print("wrote %d files to %s (%s)" % (len(names), a.dir, format_size(sum(sizes))),
          file=sys.stderr)


def _pull(c: Client, a: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    if a.dir is not None:
        _pull_dir(c, a, ap)
        return
    if a.original and (a.root or a.keys or a.format != "pth"):
        ap.error("pull --original takes the file as uploaded: no --root, --keys or --format")
    ref = a.ref
    if a.original:
        # Resolve latest/best once, so the name and the bytes are one checkpoint's.
        ck = c.get(a.model, ref, run=a.run)
        ref = ck["id"]
        out = a.output or "%s-%s%s" % (a.model, ref, _EXT.get(ck.get("format", ""), ".pth"))
    else:
        ext = ".safetensors" if a.format == "safetensors" else ".pth"
        out = a.output or "%s-%s%s" % (a.model, ref, ext)
    dest: Any = sys.stdout.buffer if out == "-" else out
    p = _progress(a, "pull %s" % (os.path.basename(out) if out != "-" else "-"))
    try:
        if a.original:
            n = c.pull_file(a.model, dest, ref=ref, progress=p)
        else:
            n = c.pull_state_dict(a.model, dest, ref=ref, root=a.root, keys=a.keys,
                                  fmt=a.format, run=a.run, progress=p)
    finally:
        if p is not None:
            p.finish()
    if out != "-":
        print("wrote %s (%s)" % (out, format_size(n)), file=sys.stderr)


def _list(c: Client, a: argparse.Namespace) -> None:
    items = c.list(a.model, run=a.run, epoch=a.epoch, tag=a.tag, order=a.order,
                   limit=a.limit, offset=a.offset)
    if a.json:
        print(json.dumps(items, indent=2))
        return
    row = "%6s  %-12s %6s %8s %12s %10s  %-3s %s"
    print(row % ("id", "run", "epoch", "step", "loss", "size", "pin", "created"))
    for j in items:
        print(row % (j["id"], j["run"], _dash(j.get("epoch")), _dash(j.get("step")),
                     _dash(j.get("loss"), "%.6g"), format_size(j.get("size", 0)),
                     "yes" if j.get("pinned") else "", j.get("created_at", "")))


def _info(c: Client, a: argparse.Namespace) -> None:
    j = c.get(a.model, a.ref, run=a.run)
    if a.json:
        print(json.dumps(j, indent=2))
        return
    metrics = ", ".join("%s=%.6g" % kv for kv in sorted((j.get("metrics") or {}).items()))
    lines: List[str] = [
        "checkpoint %s of %s, run %s" % (j["id"], j["model"], j["run"]),
        "  epoch %s, step %s, loss %s" % (_dash(j.get("epoch")), _dash(j.get("step")),
                                          _dash(j.get("loss"), "%.6g")),
        "  metrics  %s" % (metrics or "-"),
        "  tags     %s" % (", ".join(j.get("tags") or []) or "-"),
        "  pinned   %s" % ("yes" if j.get("pinned") else "no"),
        "  format   %s, %s, %s tensors" % (j.get("format"), format_size(j.get("size", 0)),
                                           j.get("tensor_count")),
        "  sha256   %s" % j.get("sha256"),
        "  created  %s" % j.get("created_at"),
    ]
    tensors: List[Dict[str, Any]] = j.get("tensors") or []
    if tensors:
        width = min(60, max(len(t["path"]) for t in tensors))
        lines.append("  %-*s  %-9s %-18s %s" % (width, "tensor", "dtype", "shape", "size"))
        for t in tensors:
            shape = "[%s]" % ", ".join(str(d) for d in t.get("shape", []))
            lines.append("  %-*s  %-9s %-18s %s" % (width, t["path"], t.get("dtype"), shape,
                                                     format_size(t.get("nbytes", 0))))
    print("\n".join(lines))


def _models(c: Client, a: argparse.Namespace) -> None:
    items = c.models()
    if a.json:
        print(json.dumps(items, indent=2))
        return
    for m in items:
        fields = ", ".join("%s %s" % (k, v) for k, v in sorted(m.items())
                           if k != "name" and not isinstance(v, (dict, list)))
        print("%s  %s" % (m.get("name"), fields))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line -> exit status (0, 1 on an error, 2 on usage)."""
    ap = parser()
    a = ap.parse_args(argv)
    logging.basicConfig(format="ckptd-client: %(message)s",
                        level=logging.DEBUG if a.verbose else logging.WARNING)
    try:
        with Client(a.url, token=a.token, cafile=a.cafile) as c:
            if a.cmd == "push":
                _push(c, a, ap)
            elif a.cmd == "pull":
                _pull(c, a, ap)
            elif a.cmd == "list":
                _list(c, a)
            elif a.cmd == "info":
                _info(c, a)
            elif a.cmd == "delete":
                c.delete(a.model, a.ref)
                print("deleted %s checkpoint %s" % (a.model, a.ref), file=sys.stderr)
            elif a.cmd == "models":
                _models(c, a)
    except (CkptdError, OSError, ValueError) as e:
        print("ckptd-client: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ckptd-client: interrupted", file=sys.stderr)
        return 130
    return 0
