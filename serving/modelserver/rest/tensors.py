"""JSON value -> tensor, TF Serving's rules (``util/json_tensor.cc``; spec section 3).

Conversion of JSON leaves to the signature's dtypes (range checks, ``{"b64": ...}`` for
strings), shapes from the first entry at each level, row format (one element per batch row)
and columnar (one value per tensor). Numeric tensors are built with one ``np.array`` call and
validated by dtype kind; the per-element walker (which produces TF Serving's exact error
messages) runs only when that fast check fails.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from clients.wire import DataType, dtype_word, numpy_dtype
from serving.modelserver.errors import InvalidArgument, ServingError, Unimplemented
from serving.modelserver.rest.json_parser import debug_string, json_type

DT_FLOAT = DataType.DT_FLOAT
DT_DOUBLE = DataType.DT_DOUBLE
DT_INT32 = DataType.DT_INT32
DT_UINT8 = DataType.DT_UINT8
DT_INT16 = DataType.DT_INT16
DT_INT8 = DataType.DT_INT8
DT_STRING = DataType.DT_STRING
DT_INT64 = DataType.DT_INT64
DT_BOOL = DataType.DT_BOOL
DT_UINT32 = DataType.DT_UINT32
DT_UINT64 = DataType.DT_UINT64

# The dtypes JSON input can be converted to (numpy types from the wire vocabulary).
_NP_INPUT: dict[int, np.dtype] = {
    dt: numpy_dtype(dt)
    for dt in (
        DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING, DT_INT64,
        DT_BOOL, DT_UINT32, DT_UINT64,
    )
}

_INT32_RANGE = (-(2**31), 2**31)
_INT_RANGES: dict[int, tuple[int, int]] = {
    # TF checks IsInt() for every int_val type; narrower types are not range-checked.
    DT_INT32: _INT32_RANGE,
    DT_INT16: _INT32_RANGE,
    DT_INT8: _INT32_RANGE,
    DT_UINT8: _INT32_RANGE,
    DT_INT64: (-(2**63), 2**63),
    DT_UINT32: (0, 2**32),
    DT_UINT64: (0, 2**64),
}


# -- base64 (abseil's standard-alphabet decoder: padding optional, no URL-safe chars) -------

_B64_CHARS = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64_decode(text: str) -> bytes:
    """Decode like ``absl::Base64Unescape``; INVALID_ARGUMENT ``Unable to base64 decode``."""
    if _B64_CHARS.fullmatch(text) is None:
        raise InvalidArgument("Unable to base64 decode")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if (padding and len(text) % 4) or len(body) % 4 == 1:
        raise InvalidArgument("Unable to base64 decode")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def is_named_object(v: Any) -> bool:
    return isinstance(v, dict) and not is_b64(v)


# -- JSON value -> tensor ---------------------------------------------------------------------


def _convert_leaf(v: Any, dtype: int) -> Any:
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if type(v) is float or type(v) is int:
            return v
    elif dtype in _INT_RANGES:
        if type(v) is int:
            lo, hi = _INT_RANGES[dtype]
            if lo <= v < hi:
                return v
    elif dtype == DT_BOOL:
        if type(v) is bool:
            return v
    elif dtype == DT_STRING:
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape")
        if is_b64(v):
            return b64_decode(v["b64"])
    else:
        raise Unimplemented(
            f"Conversion of JSON Value: {debug_string(v)} to type: {dtype_word(dtype)}"
        )
    raise InvalidArgument(
        f"JSON Value: {debug_string(v)} Type: {json_type(v)} is not of expected type: "
        f"{dtype_word(dtype)}"
    )


_MAX_RANK = 64  # numpy's limit; TF's own limit (254) is never reached by real requests


def _walk(value: Any, dtype: int) -> tuple[tuple[int, ...], list[Any]]:
    """Shape from the first entry at each level, then every leaf checked and converted."""
    shape: list[int] = []
    v = value
    while isinstance(v, list):
        shape.append(len(v))
        if len(shape) > _MAX_RANK:
            raise InvalidArgument(f"Tensor rank exceeds the supported {_MAX_RANK}")
        if not v:
            break
        v = v[0]
    rank = len(shape)
    flat: list[Any] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, list):
            if level >= rank:
                raise InvalidArgument(
                    f"Encountered list at unexpected level: {level} expected < {rank}"
                )
            if len(v) != shape[level]:
                raise InvalidArgument(
                    f"Encountered list at unexpected size: {len(v)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            stack.extend((item, level + 1) for item in reversed(v))
        else:
            if level != rank:
                raise InvalidArgument(
                    f"JSON Value: {debug_string(v)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            flat.append(_convert_leaf(v, dtype))
    return tuple(shape), flat


def _to_array(flat: list[Any], shape: tuple[int, ...], dtype: int) -> np.ndarray:
    if len(shape) > _MAX_RANK:
        raise InvalidArgument(f"Tensor rank exceeds the supported {_MAX_RANK}")
    np_type = _NP_INPUT.get(dtype)
    if np_type is None:
        # A dtype JSON cannot carry (half, bfloat16, complex, ...): every leaf fails as
        # UNIMPLEMENTED in _convert_leaf, so only an empty tensor gets here. TF Serving builds
        # it and runs the model, and so do we (numpy knows the dtype even if JSON does not).
        try:
            return np.empty(shape, dtype=numpy_dtype(dtype))
        except Exception:  # a dtype numpy has no type for either
            raise Unimplemented(f"Conversion of an empty JSON list to type: {dtype_word(dtype)}") from None
    if dtype == DT_STRING:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    elif dtype == DT_UINT64:
        arr = np.array(flat, dtype=np.uint64)
    elif dtype in (DT_INT32, DT_INT16, DT_INT8, DT_UINT8, DT_UINT32):
        # TF casts int_val into narrow types without range checks (wraps); so do we.
        arr = np.array(flat, dtype=np.int64).astype(np_type)
    elif dtype == DT_FLOAT:
        with np.errstate(over="ignore"):
            arr = np.array(flat, dtype=np.float64).astype(np.float32)
    else:
        arr = np.array(flat, dtype=np_type)
    return arr.reshape(shape)


def _fast_numeric(value: Any, dtype: int, has_bool: bool) -> np.ndarray | None:
    """One ``np.array`` call plus a dtype-kind check; None means "use the exact walker".

    A JSON bool among numbers would be coerced silently by numpy, so numeric fast paths are
    taken only when the body contains no ``true``/``false`` token at all.
    """
    if dtype not in _NP_INPUT or dtype == DT_STRING:
        return None
    if dtype != DT_BOOL and has_bool:
        return None
    try:
        arr = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if arr.size == 0 or arr.ndim > _MAX_RANK:
        return None
    if dtype == DT_BOOL:
        return arr if kind == "b" else None
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if kind not in "fiu":
            return None
        if dtype == DT_DOUBLE:
            return arr.astype(np.float64, copy=False)
        with np.errstate(over="ignore"):
            return arr.astype(np.float32)
    if kind not in "iu":
        return None
    lo, hi = _INT_RANGES[dtype]
    if kind == "u":
        if dtype != DT_UINT64:
            return None
        return arr.astype(np.uint64, copy=False)
    if int(arr.min()) < lo or int(arr.max()) >= hi:
        return None
    return arr.astype(_NP_INPUT[dtype], copy=False)


def json_to_tensor(value: Any, dtype: int, has_bool: bool = True) -> np.ndarray:
    """A whole tensor from one JSON value (columnar ``inputs`` semantics)."""
    arr = _fast_numeric(value, dtype, has_bool)
    if arr is not None:
        return arr
    shape, flat = _walk(value, dtype)
    return _to_array(flat, shape, dtype)


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _rewrap(err: ServingError, prefix: str) -> InvalidArgument:
    return InvalidArgument(f"{prefix}. Error: {err.code.name}: {err.message}")


def _batch_from_elements(elements: Sequence[Any], dtype: int, prefix_for: Any) -> np.ndarray:
    """Row format: each element is one batch row of identical shape."""
    first_shape: tuple[int, ...] | None = None
    first_size = 0
    flat: list[Any] = []
    for i, elem in enumerate(elements):
        try:
            shape, values = _walk(elem, dtype)
            if first_shape is None:
                first_shape, first_size = shape, len(values)
            elif len(values) != first_size:
                raise InvalidArgument(f"Expecting tensor size: {first_size} but got: {len(values)}")
            elif shape != first_shape:
                raise InvalidArgument(
                    f"Expecting shape {_shape_text(first_shape)} but got: {_shape_text(shape)}"
                )
        except ServingError as e:
            raise _rewrap(e, prefix_for(i)) from None
        flat.extend(values)
    assert first_shape is not None
    return _to_array(flat, (len(elements), *first_shape), dtype)


def row_column(elements: list[Any], dtype: int, has_bool: bool, prefix_for: Any) -> np.ndarray:
    arr = _fast_numeric(elements, dtype, has_bool)
    if arr is not None and arr.ndim >= 1:
        return arr
    return _batch_from_elements(elements, dtype, prefix_for)
