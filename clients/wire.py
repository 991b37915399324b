"""The wire vocabulary: the numbers TF Serving's protocols carry and the names they go by.

One table for each, at the bottom of the house: the clients, the embedded server and the
operator's launcher all import these, so a dtype, a status code or a version state is named
in one place only.

- ``DataType``: ``tensorflow/core/framework/types.proto``; ``dtype_name`` (``DT_FLOAT``),
  ``dtype_word`` (TF's ``DataTypeString``: ``float``, used in TF's error messages) and the
  numpy mapping (``numpy_dtype`` / ``data_type_of``).
- ``Code``: canonical error codes (``tensorflow/core/protobuf/error_codes.proto``, numerically
  identical to gRPC status codes) and ``HTTP_STATUS``, TF Serving's code -> HTTP table.
- ``VersionState``: ``tensorflow.serving.ModelVersionStatus.State``.

Imports numpy only (no TensorFlow, no gRPC, no protobuf).
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "HTTP_STATUS",
    "Code",
    "DataType",
    "UnsupportedDTypeError",
    "VersionState",
    "code_name",
    "data_type_of",
    "dtype_name",
    "dtype_word",
    "numpy_dtype",
]


class DataType(enum.IntEnum):
    """tensorflow/core/framework/types.proto enum values."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23
    DT_FLOAT8_E5M2 = 24
    DT_FLOAT8_E4M3FN = 25
    DT_FLOAT8_E4M3FNUZ = 26
    DT_FLOAT8_E4M3B11FNUZ = 27
    DT_FLOAT8_E5M2FNUZ = 28
    DT_INT4 = 29
    DT_UINT4 = 30


class UnsupportedDTypeError(ValueError):
    """A dtype that has no numpy counterpart here (on either side)."""


def dtype_name(data_type: int) -> str:
    """``DT_FLOAT`` for 1, ``DT_<n>`` for values types.proto does not name."""
    try:
        return DataType(data_type).name
    except ValueError:
        return f"DT_{data_type}"


def dtype_word(data_type: int) -> str:
    """TF's ``DataTypeString``: ``float``, ``int32``, ``string``, ... (``INVALID`` for 0,
    ``type_<n>`` for values types.proto does not name)."""
    if data_type == DataType.DT_INVALID:
        return "INVALID"
    try:
        return DataType(data_type).name.removeprefix("DT_").lower()
    except ValueError:
        return f"type_{data_type}"


def _numpy_types() -> dict[DataType, np.dtype]:
    table = {
        DataType.DT_FLOAT: np.dtype(np.float32),
        DataType.DT_DOUBLE: np.dtype(np.float64),
        DataType.DT_INT32: np.dtype(np.int32),
        DataType.DT_UINT8: np.dtype(np.uint8),
        DataType.DT_INT16: np.dtype(np.int16),
        DataType.DT_INT8: np.dtype(np.int8),
        DataType.DT_STRING: np.dtype(object),  # object arrays of bytes
        DataType.DT_COMPLEX64: np.dtype(np.complex64),
        DataType.DT_INT64: np.dtype(np.int64),
        DataType.DT_BOOL: np.dtype(np.bool_),
        DataType.DT_UINT16: np.dtype(np.uint16),
        DataType.DT_COMPLEX128: np.dtype(np.complex128),
        DataType.DT_HALF: np.dtype(np.float16),
        DataType.DT_UINT32: np.dtype(np.uint32),
        DataType.DT_UINT64: np.dtype(np.uint64),
    }
    try:  # optional: bfloat16 exists in numpy only through ml_dtypes (shipped with TF)
        import ml_dtypes

        table[DataType.DT_BFLOAT16] = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return table


NUMPY_TYPES: dict[DataType, np.dtype] = _numpy_types()
_BY_NUMPY: dict[np.dtype, DataType] = {
    dt: data_type for data_type, dt in NUMPY_TYPES.items() if data_type != DataType.DT_STRING
}


def numpy_dtype(data_type: int) -> np.dtype:
    """The numpy dtype for a DataType value (``object`` for DT_STRING)."""
    dt = NUMPY_TYPES.get(data_type)  # type: ignore[call-overload]
    if dt is None:
        raise UnsupportedDTypeError(f"unsupported tensor dtype {dtype_name(data_type)}")
    return dt


def data_type_of(dt: np.dtype | type | str) -> DataType:
    """The DataType for a numpy dtype (object, bytes and str dtypes map to DT_STRING)."""
    dt = np.dtype(dt)
    if dt.kind in "OSU":
        return DataType.DT_STRING
    found = _BY_NUMPY.get(dt.newbyteorder("=") if dt.byteorder not in "=|" else dt)
    if found is None:
        raise UnsupportedDTypeError(f"unsupported numpy dtype {dt} for a TensorProto")
    return found


class Code(enum.IntEnum):
    """Canonical error codes; gRPC status codes carry the same numbers."""

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


def code_name(number: int) -> str:
    """``NOT_FOUND`` for 5; the number itself as text for codes outside the enum."""
    try:
        return Code(number).name
    except ValueError:
        return str(number)


# TF Serving's http_server.cc ToHTTPStatusCode.
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


class VersionState(enum.IntEnum):
    """tensorflow.serving.ModelVersionStatus.State; states travel as these names in JSON and
    in this project's plain data (``"AVAILABLE"``), as numbers in protos."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50
