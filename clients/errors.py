"""Typed client errors, the same classes for gRPC and REST.

Each error keeps the server's message verbatim, the canonical status code name (``code``:
``"NOT_FOUND"``, ...; for REST it is derived from the HTTP status, as TF Serving maps one to
the other), and the HTTP status where there was one. Catch ``ClientError`` for everything.

Retries are safe only for ``Unavailable`` (the request was not served: connection refused or
reset, gRPC UNAVAILABLE, HTTP 503); ``is_retryable`` says so.
"""

from __future__ import annotations

from clients.wire import HTTP_STATUS, Code

# Canonical codes (gRPC / TensorFlow error codes share these numbers).
CODE_NAMES: dict[int, str] = {int(code): code.name for code in Code}

# TF Serving's http_server.cc table, read backwards. 400, 409 and 500 each stand for several
# codes; the most common one is reported (INVALID_ARGUMENT, ABORTED, INTERNAL).
_HTTP_PREFERRED = (Code.INVALID_ARGUMENT, Code.ABORTED, Code.INTERNAL)
_HTTP_TO_CODE: dict[int, str] = {
    status: code.name for code, status in HTTP_STATUS.items() if code != Code.OK
} | {HTTP_STATUS[code]: code.name for code in _HTTP_PREFERRED}

# The message TF Serving gives for an unknown version label (INVALID_ARGUMENT / 400); it means
# "no such model version", so it is reported as ModelNotFound.
_UNKNOWN_LABEL = "Unrecognized servable version label"


class ClientError(Exception):
    """Base class: something went wrong talking to the model server."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        http_status: int | None = None,
        transport: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.transport = transport

    def __str__(self) -> str:
        where = f"HTTP {self.http_status}" if self.http_status else self.code
        return f"{where}: {self.message}" if self.message else where

    @property
    def is_retryable(self) -> bool:
        return isinstance(self, Unavailable)


class ModelNotFound(ClientError):
    """Unknown model, version not loaded, or unknown version label."""


class InvalidInput(ClientError):
    """The request was rejected: bad tensors, wrong signature, bad arguments."""


class Unavailable(ClientError):
    """The server could not be reached or is not serving (UNAVAILABLE / 503): retryable."""


class DeadlineExceeded(ClientError):
    """The call's deadline passed before an answer came."""


class ResourceExhausted(ClientError):
    """Too much: message size limits, rate limits, full queues that say so."""


class Unimplemented(ClientError):
    """The server (or this transport) does not support the operation."""


class PermissionDenied(ClientError):
    """Authentication or authorization failed."""


class ServerError(ClientError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS, ABORTED, ...)."""


class ProtocolError(ClientError):
    """The server answered something this client cannot read."""


_CODE_TO_CLASS: dict[str, type[ClientError]] = {
    "NOT_FOUND": ModelNotFound,
    "INVALID_ARGUMENT": InvalidInput,
    "FAILED_PRECONDITION": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "ALREADY_EXISTS": InvalidInput,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "UNIMPLEMENTED": Unimplemented,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": PermissionDenied,
}


def error_for_code(
    code: str, message: str, *, http_status: int | None = None, transport: str = ""
) -> ClientError:
    """The typed error for a canonical code name and the server's message."""
    cls = _CODE_TO_CLASS.get(code, ServerError)
    if cls is InvalidInput and message.startswith(_UNKNOWN_LABEL):
        cls = ModelNotFound
    return cls(message, code=code, http_status=http_status, transport=transport)


def error_for_http(status: int, message: str) -> ClientError:
    """The typed error for an HTTP status and the ``error`` field of TF Serving's body."""
    code = _HTTP_TO_CODE.get(status, "UNKNOWN" if status >= 500 else "INVALID_ARGUMENT")
    return error_for_code(code, message, http_status=status, transport="rest")
