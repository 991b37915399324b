"""Typed serving errors and the one table that maps them to HTTP status codes.

The data plane raises these; REST and gRPC only translate them. Codes are TensorFlow's
canonical error codes, which are numerically identical to gRPC status codes, so the gRPC
layer can use ``grpc.StatusCode`` values directly.
"""

from __future__ import annotations

import enum

# TF Serving cuts longer messages on the gRPC surface (grpc_status_util.cc).
MAX_GRPC_MESSAGE_CHARS = 1024


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# http_server.cc ToHTTPStatusCode.
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """An error with a canonical code; the message is what the client sees."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

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
