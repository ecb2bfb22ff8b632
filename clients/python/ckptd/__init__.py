"""ckptd: the Python client for the ckptd checkpoint server.

    from ckptd import Client

    with Client("http://127.0.0.1:8080") as c:
        c.save({"epoch": e, "model_state_dict": model.state_dict()}, "resnet",
               epoch=e, loss=val_loss)
        model.load_state_dict(c.load("resnet", "best", root="/model_state_dict"))

Standard library only; save() and load() import torch when called. The
command line is `ckptd-client` (or `python3 -m ckptd`). See ckptd.client for
streaming, retries, connections and TLS; ckptd.errors for the exceptions.

ckptd.CkptdWriter and ckptd.CkptdReader (from ckptd.dcp) are the storage of
torch.distributed.checkpoint; they are loaded on first use, so `import ckptd`
never imports torch.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._version import __version__
from .client import DEFAULT_REF, DEFAULT_URL, Checkpoint, Client, ProgressCallback, SaveHandle
from .errors import (
    AuthError,
    CkptdConnectionError,
    CkptdError,
    InvalidRequest,
    NotFound,
    ServerError,
)
from .progress import TerminalProgress

if _TYPE_CHECKING:
    from .dcp import CkptdReader, CkptdWriter  # noqa: F401  (for type checkers)

__all__ = [
    "__version__",
    "Client",
    "Checkpoint",
    "ProgressCallback",
    "SaveHandle",
    "DEFAULT_REF",
    "DEFAULT_URL",
    "CkptdError",
    "CkptdConnectionError",
    "NotFound",
    "AuthError",
    "InvalidRequest",
    "ServerError",
    "TerminalProgress",
]

# A library logs, the application decides where to: nothing is printed unless
# logging is configured (the command line does).
import logging as _logging

_logging.getLogger("ckptd").addHandler(_logging.NullHandler())


def __getattr__(name: str) -> _Any:
    # CkptdWriter/CkptdReader import ckptd.dcp, hence torch, only when asked for
    if name in ("CkptdWriter", "CkptdReader"):
        from . import dcp

        return getattr(dcp, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
