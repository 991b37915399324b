"""numpy <-> TensorProto without TensorFlow.

The codec is duck-typed on the message: it reads and writes TensorProto's fields by name
(``dtype``, ``tensor_shape``, ``tensor_content``, ``float_val``, ...), so the same functions
work on the clients' private proto classes (``clients.protos``) and on TensorFlow's own
``tensorflow.core.framework.tensor_pb2.TensorProto`` (which the embedded server uses).

Stable public API (names will not change):

``tensor_proto_to_ndarray(msg) -> np.ndarray``
    Decode any TensorProto-shaped message. ``tensor_content`` is decoded with
    ``np.frombuffer`` (no copy beyond the one protobuf makes when handing out ``bytes``), so
    the result may be **read-only**; call ``.copy()`` if you must write to it. Typed fields
    (``float_val``, ``int_val``, ``string_val``, ``half_val``, ``scomplex_val``, ...) follow
    TensorFlow's C++ rule (``tensor.cc`` FromProtoField): no values -> zeros (``b""`` for
    strings); fewer values than elements -> the last value is repeated ("splat"; one value
    fills the whole shape); more values than elements -> the first ones are used.
    String tensors come back as numpy object arrays of ``bytes``.

``fill_tensor_proto(msg, arr, *, use_tensor_content=True, dtype=None) -> msg``
    Clear ``msg`` and write ``arr`` into it. Numeric arrays go to ``tensor_content``
    (little-endian bytes) unless ``use_tensor_content=False``, which writes the typed field
    TF Serving itself uses in responses. String arrays (object arrays of bytes/str, or numpy
    ``S``/``U`` arrays) always go to ``string_val``. ``dtype`` optionally casts first
    (numpy dtype or ``DataType``).

``ndarray_to_tensor_proto(arr, out=None, *, use_tensor_content=True, proto_cls=None, dtype=None)``
    Like ``fill_tensor_proto`` into ``out``, or into a new ``proto_cls()`` (default: the
    clients' private ``TensorProto``).

Decoding refuses to expand a few values into more than ``MAX_EXPANDED_ELEMENTS`` elements
(a guard for servers that decode untrusted requests).

``DataType``, ``numpy_dtype(data_type)``, ``data_type_of(np_dtype)``, ``dtype_name(data_type)``
and ``UnsupportedDTypeError`` (re-exported from ``clients.wire``, the one dtype vocabulary),
``shape_from_proto(shape_msg)``, ``fill_shape_proto(shape_msg, shape)`` and
``TensorProtoError`` (both errors are ``ValueError`` subclasses).

Supported dtypes: float16 (DT_HALF), float32, float64, int8, int16, int32, int64, uint8,
uint16, uint32, uint64, bool, complex64, complex128, string; bfloat16 too when the optional
``ml_dtypes`` package is importable (it ships with TensorFlow). Quantized, resource, variant
and 4/8-bit float types raise ``UnsupportedDTypeError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients import wire
from clients.wire import (
    DataType,
    UnsupportedDTypeError,
    data_type_of,
    dtype_name,
    numpy_dtype,
)

__all__ = [
    "DataType",
    "TensorProtoError",
    "UnsupportedDTypeError",
    "data_type_of",
    "dtype_name",
    "fill_shape_proto",
    "fill_tensor_proto",
    "ndarray_to_tensor_proto",
    "numpy_dtype",
    "shape_from_proto",
    "tensor_proto_to_ndarray",
]


class TensorProtoError(ValueError):
    """A TensorProto that does not describe a valid tensor (bad shape, wrong byte count...)."""


@dataclass(frozen=True)
class _DTypeInfo:
    data_type: DataType
    np_dtype: np.dtype
    field: str  # the typed repeated field TF uses for this dtype
    # How values sit in the typed field: "plain", "bits16" (half_val holds uint16 bit
    # patterns), "complex" (real/imag pairs).
    layout: str = "plain"


# Where each dtype's values sit in TensorProto: the typed repeated field TF uses, and how.
_FIELDS: dict[DataType, tuple[str, str]] = {
    DataType.DT_FLOAT: ("float_val", "plain"),
    DataType.DT_DOUBLE: ("double_val", "plain"),
    DataType.DT_INT32: ("int_val", "plain"),
    DataType.DT_UINT8: ("int_val", "plain"),
    DataType.DT_INT16: ("int_val", "plain"),
    DataType.DT_INT8: ("int_val", "plain"),
    DataType.DT_STRING: ("string_val", "plain"),
    DataType.DT_COMPLEX64: ("scomplex_val", "complex"),
    DataType.DT_INT64: ("int64_val", "plain"),
    DataType.DT_BOOL: ("bool_val", "plain"),
    DataType.DT_UINT16: ("int_val", "plain"),
    DataType.DT_COMPLEX128: ("dcomplex_val", "complex"),
    DataType.DT_HALF: ("half_val", "bits16"),
    DataType.DT_UINT32: ("uint32_val", "plain"),
    DataType.DT_UINT64: ("uint64_val", "plain"),
    DataType.DT_BFLOAT16: ("half_val", "bits16"),
}


def _build_table() -> list[_DTypeInfo]:
    # The numpy side comes from the wire vocabulary (bfloat16 only when ml_dtypes exists).
    return [
        _DTypeInfo(data_type, np_dtype, *_FIELDS[data_type])
        for data_type, np_dtype in wire.NUMPY_TYPES.items()
    ]


_TABLE = _build_table()
_BY_ENUM: dict[int, _DTypeInfo] = {info.data_type: info for info in _TABLE}
_STRING = _BY_ENUM[DataType.DT_STRING]
_LITTLE = {info.data_type: info.np_dtype.newbyteorder("<") for info in _TABLE}


def _info_for_enum(data_type: int) -> _DTypeInfo:
    info = _BY_ENUM.get(data_type)
    if info is None:
        raise UnsupportedDTypeError(f"unsupported tensor dtype {dtype_name(data_type)}")
    return info


def _info_for_numpy(dt: np.dtype) -> _DTypeInfo:
    return _BY_ENUM[data_type_of(dt)]


# --------------------------------------------------------------------------- shapes


def shape_from_proto(shape_msg: Any) -> tuple[int, ...] | None:
    """Dims of a TensorShapeProto-shaped message; None when ``unknown_rank`` is set."""
    if shape_msg.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape_msg.dim)


def fill_shape_proto(shape_msg: Any, shape: Sequence[int] | None) -> None:
    """Write dims (``-1`` allowed, for signatures) or unknown rank (``None``)."""
    shape_msg.Clear()
    if shape is None:
        shape_msg.unknown_rank = True
        return
    dims = shape_msg.dim
    for size in shape:
        dims.add().size = int(size)


# --------------------------------------------------------------------------- decode


def _concrete_shape(msg: Any) -> tuple[tuple[int, ...], int]:
    shape_msg = msg.tensor_shape
    shape = tuple([d.size for d in shape_msg.dim])
    if shape_msg.unknown_rank:
        raise TensorProtoError("TensorProto has an unknown rank; a tensor needs a full shape")
    if shape and min(shape) < 0:
        raise TensorProtoError(f"TensorProto has a negative dimension in shape {list(shape)}")
    return shape, math.prod(shape)


# A few bytes of typed values can describe a huge tensor (zeros or a repeated last value).
# Decoding is done on untrusted requests by the server, so expansion is capped: 2**27
# elements is 512 MiB of float32, far beyond any MNIST batch.
MAX_EXPANDED_ELEMENTS = 1 << 27


def _check_expansion(k: int, n: int) -> None:
    if n > k and n > MAX_EXPANDED_ELEMENTS:
        raise TensorProtoError(
            f"TensorProto has {k} values for {n} elements; expanding beyond "
            f"{MAX_EXPANDED_ELEMENTS} elements is refused"
        )


def _splat(values: np.ndarray, n: int, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    """TF's FromProtoField: zeros, truncation or repeat-the-last-value."""
    k = values.shape[0]
    if k == n:
        return values.reshape(shape)
    _check_expansion(k, n)
    if k == 0:
        return np.zeros(shape, dtype=dt)
    if k > n:
        return values[:n].reshape(shape)
    out = np.empty(n, dtype=dt)
    out[:k] = values
    out[k:] = values[k - 1]
    return out.reshape(shape)


def _decode_string_content(content: bytes, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """TF's string tensor_content encoding: n varint32 lengths, then the bytes back to back."""
    lengths = []
    pos = 0
    for _ in range(n):
        value = shift = 0
        while True:
            if pos >= len(content) or shift > 28:
                raise TensorProtoError("malformed tensor_content for a DT_STRING tensor")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(value)
    if pos + sum(lengths) != len(content):
        raise TensorProtoError("malformed tensor_content for a DT_STRING tensor")
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = content[pos : pos + length]
        pos += length
    return out.reshape(shape)


def tensor_proto_to_ndarray(msg: Any) -> np.ndarray:
    """Decode a TensorProto-shaped message into a numpy array (see module docstring)."""
    info = _info_for_enum(msg.dtype)
    shape, n = _concrete_shape(msg)
    dt = info.np_dtype
    content = msg.tensor_content
    if content:
        if info is _STRING:
            return _decode_string_content(content, n, shape)
        expected = n * dt.itemsize
        if len(content) != expected:
            raise TensorProtoError(
                f"tensor_content has {len(content)} bytes, shape {list(shape)} of "
                f"{dtype_name(info.data_type)} needs {expected}"
            )
        # Zero-copy view of the bytes protobuf handed us; TF's wire order is little-endian.
        return np.frombuffer(content, dtype=_LITTLE[info.data_type]).reshape(shape)

    field = getattr(msg, info.field)
    if info is _STRING:
        values = np.empty(len(field), dtype=object)
        values[:] = list(field)
        if len(field) == 0 and n:
            _check_expansion(0, n)
            return np.full(shape, b"", dtype=object)
        return _splat(values, n, shape, dt)
    if info.layout == "bits16":
        values = np.array(field, dtype=np.uint32).astype(np.uint16).view(dt)
    elif info.layout == "complex":
        parts = np.array(field, dtype=dt.type(0).real.dtype)
        values = parts[: (parts.shape[0] // 2) * 2].view(dt)
    else:
        values = np.array(field, dtype=dt)
    return _splat(values, n, shape, dt)


# --------------------------------------------------------------------------- encode


def _as_string_array(arr: np.ndarray) -> np.ndarray:
    """Object array of bytes; str is UTF-8 encoded; anything else is an error."""
    flat = arr.ravel()
    if arr.dtype.kind == "S":
        return np.array([bytes(v) for v in flat], dtype=object)
    out = np.empty(flat.shape[0], dtype=object)
    for i, value in enumerate(flat):
        if isinstance(value, bytes):
            out[i] = value
        elif isinstance(value, str):
            out[i] = value.encode("utf-8")
        elif isinstance(value, (bytearray, memoryview, np.bytes_)):
            out[i] = bytes(value)
        else:
            raise UnsupportedDTypeError(
                f"string tensors hold bytes or str, got {type(value).__name__} at index {i}"
            )
    return out


def fill_tensor_proto(
    msg: Any,
    arr: Any,
    *,
    use_tensor_content: bool = True,
    dtype: Any = None,
) -> Any:
    """Clear ``msg`` and write ``arr`` into it; returns ``msg`` (see module docstring)."""
    if dtype is not None:
        target = numpy_dtype(dtype) if isinstance(dtype, int) else np.dtype(dtype)
        arr = np.asarray(arr, dtype=target)
    elif not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    info = _info_for_numpy(arr.dtype)
    msg.Clear()
    msg.dtype = int(info.data_type)
    dims = msg.tensor_shape.dim
    for size in arr.shape:
        dims.add().size = size

    if info is _STRING:
        msg.string_val.extend(_as_string_array(arr).tolist())
        return msg
    if use_tensor_content:
        little = arr.dtype.newbyteorder("<")
        # tobytes() on a C-contiguous array is a single memcpy.
        msg.tensor_content = np.ascontiguousarray(arr, dtype=little).tobytes()
        return msg

    flat = np.ascontiguousarray(arr, dtype=info.np_dtype).reshape(-1)
    if flat.size:
        # Append the packed field as wire bytes: protobuf parses them in C, which is 10-30x
        # faster than extending the repeated field from a Python list.
        msg.MergeFromString(_packed_field(info, flat))
    return msg


# TensorProto field numbers of the typed repeated fields (all packed in proto3).
_FIELD_NUMBERS = {
    "float_val": 5,
    "double_val": 6,
    "int_val": 7,
    "scomplex_val": 9,
    "int64_val": 10,
    "bool_val": 11,
    "dcomplex_val": 12,
    "half_val": 13,
    "uint32_val": 16,
    "uint64_val": 17,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of uint64 values, vectorized (negative ints arrive as their uint64)."""
    if int(values.max()) < 0x80:
        return values.astype(np.uint8).tobytes()
    groups = np.empty((values.size, 10), dtype=np.uint8)
    rest = values.copy()
    for k in range(10):
        groups[:, k] = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest >>= np.uint64(7)
    nonzero = groups != 0
    lengths = np.where(nonzero.any(axis=1), 10 - np.argmax(nonzero[:, ::-1], axis=1), 1)
    columns = np.arange(10)
    groups[columns < (lengths[:, None] - 1)] |= 0x80  # continuation bits
    return groups[columns < lengths[:, None]].tobytes()


def _packed_field(info: _DTypeInfo, flat: np.ndarray) -> bytes:
    if info.field in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
        # Fixed-width little-endian values: the packed payload is the array's own bytes.
        payload = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    elif info.layout == "bits16":
        payload = _varints(flat.view(np.uint16).astype(np.uint64))
    elif info.data_type in (DataType.DT_UINT32, DataType.DT_UINT64, DataType.DT_BOOL):
        payload = _varints(flat.astype(np.uint64))
    else:  # int8/16/32/64, uint8/16: sign-extended to 64 bits, as protobuf encodes int32
        payload = _varints(flat.astype(np.int64).view(np.uint64))
    tag = _varint(_FIELD_NUMBERS[info.field] << 3 | 2)
    return tag + _varint(len(payload)) + payload


def ndarray_to_tensor_proto(
    arr: Any,
    out: Any = None,
    *,
    use_tensor_content: bool = True,
    proto_cls: type | None = None,
    dtype: Any = None,
) -> Any:
    """Encode ``arr`` into ``out`` or a new ``proto_cls()`` (default: the private TensorProto)."""
    if out is None:
        if proto_cls is None:
            from clients.protos import TensorProto as proto_cls  # lazy: avoids an import cycle
        out = proto_cls()
    return fill_tensor_proto(out, arr, use_tensor_content=use_tensor_content, dtype=dtype)
