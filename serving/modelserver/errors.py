"""Typed serving errors, and the one place any exception becomes one.

The data plane raises these; REST and gRPC only translate them, both through
``as_serving_error``: a ``ServingError`` carries its canonical code, which *is* its gRPC status
code (TensorFlow's codes and gRPC's share numbers) and gives its HTTP status through TF
Serving's table (``clients.wire.HTTP_STATUS``; ``http_override`` replaces it for the few
answers TF Serving words differently, such as 413 for a body over the limit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from clients.wire import HTTP_STATUS, Code

log = logging.getLogger("serving.modelserver")

# TF Serving cuts longer messages on the gRPC surface (grpc_status_util.cc).
MAX_GRPC_MESSAGE_CHARS = 1024


class ServingError(Exception):
    """An error with a canonical code; the message is what the client sees."""

    code: Code = Code.UNKNOWN
    # The HTTP status when it is not the code's (TF Serving's table); REST reads it.
    http_override: int | None = None
    # REST answers with an empty body instead of the ``{"error": ...}`` document.
    empty_http_body: bool = False

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return self.http_override or HTTP_STATUS[self.code]

    def grpc_message(self) -> str:
        if len(self.message) <= MAX_GRPC_MESSAGE_CHARS:
            return self.message
        return self.message[:MAX_GRPC_MESSAGE_CHARS] + "...TRUNCATED"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"


class InvalidArgument(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    code = Code.FAILED_PRECONDITION


class Unavailable(ServingError):
    code = Code.UNAVAILABLE


class ResourceExhausted(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServingError):
    code = Code.DEADLINE_EXCEEDED


class Unimplemented(ServingError):
    code = Code.UNIMPLEMENTED


class Internal(ServingError):
    code = Code.INTERNAL


class Unknown(ServingError):
    code = Code.UNKNOWN


class DataLoss(ServingError):
    code = Code.DATA_LOSS


class Cancelled(ServingError):
    code = Code.CANCELLED


# What a client sees when the server itself fails (a bug, not bad input). Never the Python
# exception's type or text: they describe this implementation, not the request, and can leak
# internals. The traceback goes to the log.
UNEXPECTED_MESSAGE = "Internal error while processing the request; the server log has the details"


def as_serving_error(
    exc: BaseException,
    *,
    unexpected: Callable[[str], ServingError],
    where: str,
    invalid: tuple[type[BaseException], ...] = (),
) -> ServingError:
    """What a transport reports for ``exc``: itself if it is a ``ServingError``; an instance of
    ``invalid`` (gRPC passes the codec's ``ValueError``: bad dtype, bad tensor_content size) as
    INVALID_ARGUMENT; anything else is a bug, logged with its traceback and reported as
    ``unexpected(UNEXPECTED_MESSAGE)`` (gRPC: UNKNOWN, REST: INTERNAL, as TF Serving does)."""
    if isinstance(exc, ServingError):
        return exc
    if invalid and isinstance(exc, invalid):
        return InvalidArgument(str(exc))
    log.error("Unexpected error while serving %s", where, exc_info=exc)
    return unexpected(UNEXPECTED_MESSAGE)
