"""The exceptions the ckptd client raises.

Every error answer from the server and every connection failure is a
CkptdError, with .status (the HTTP status, None for a connection failure),
.code (the server's JSON "error" field), .message (its "message") and the
request (.method, .path). The subclasses are also the builtin exceptions that
fit, so callers can catch what they already know:

    NotFound              404                 also a LookupError
    AuthError             401, 403            also a PermissionError
    InvalidRequest        400, 411, 413, 415, 422: a bad parameter or a file
                          ckptd does not accept    also a ValueError
    ServerError           5xx (after the retries for 503)
    CkptdConnectionError  the server could not be reached, the connection
                          broke, or TLS failed    also a ConnectionError
"""

from __future__ import annotations

import http.client
import json
from typing import Optional, Type

__all__ = [
    "CkptdError",
    "CkptdConnectionError",
    "NotFound",
    "AuthError",
    "InvalidRequest",
    "ServerError",
    "error_for_status",
    "error_from_body",
]


class CkptdError(Exception):
    """An error from ckptd or on the way to it: .status (HTTP status or None),
    .code, .message, .method and .path of the request."""

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: str = "error",
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        where = "%s %s: " % (method, path) if method else ""
        if status is None:
            text = "%s%s" % (where, message)
        else:
            text = "%sHTTP %d %s: %s" % (where, status, code, message)
        super().__init__(text)


class CkptdConnectionError(CkptdError, ConnectionError):
    """The server could not be reached (after the retries), the connection
    broke, or the TLS handshake failed; .status is None."""

    def __init__(
        self, message: str, *, method: Optional[str] = None, path: Optional[str] = None
    ) -> None:
        super().__init__(message, status=None, code="connection", method=method, path=path)


class NotFound(CkptdError, LookupError):
    """404: no such model, checkpoint, tensor or path."""


class AuthError(CkptdError, PermissionError):
    """401 (no or unknown token) or 403 (the token's scope does not allow it)."""


class InvalidRequest(CkptdError, ValueError):
    """400, 411, 413, 415 or 422: a bad parameter, an upload over the size
    limit, or a file that is not a checkpoint ckptd reads (or is damaged)."""


class ServerError(CkptdError):
    """5xx: ckptd's own fault or its store's (507: out of disk space)."""


def error_for_status(
    status: int,
    code: str,
    message: str,
    *,
    method: Optional[str] = None,
    path: Optional[str] = None,
) -> CkptdError:
    """The exception for an error answer, of the class that fits status."""
    cls: Type[CkptdError] = CkptdError
    if status == 404:
        cls = NotFound
    elif status in (401, 403):
        cls = AuthError
    elif status in (400, 411, 413, 415, 422):
        cls = InvalidRequest
    elif status >= 500:
        cls = ServerError
    return cls(message, status=status, code=code, method=method, path=path)


def error_from_body(
    status: int, body: bytes, *, method: Optional[str] = None, path: Optional[str] = None
) -> CkptdError:
    """The exception for an error answer whose body is ckptd's JSON
    {"error", "message"} (or anything else: then its first 500 bytes)."""
    code, message = "http_%d" % status, ""
    try:
        j = json.loads(body.decode("utf-8"))
        if isinstance(j, dict):
            code = str(j.get("error") or code)
            message = str(j.get("message") or "")
    except ValueError:
        message = body[:500].decode("utf-8", "replace").strip()
    if not message:
        message = http.client.responses.get(status, "")
    return error_for_status(status, code, message, method=method, path=path)
