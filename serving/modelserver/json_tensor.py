"""TF Serving's JSON tensor rules (``util/json_tensor.cc``; spec section 3).

Request side: body parsing (rapidjson dialect: ``NaN``/``Infinity``/``Inf`` tokens, trailing
bytes ignored, numbers beyond 64 bits become doubles), row ``instances`` vs columnar ``inputs``,
conversion of JSON leaves to the signature's dtypes, ``{"b64": ...}``, and classify/regress
``examples`` into serialized ``tf.Example`` protos.

Response side: ``predictions``/``outputs``/``results`` with TF Serving's number formatting
(``WriteDecimal``: six significant digits if they round-trip, else 9 (float) / 17 (double);
``.0`` on whole numbers; bare ``NaN``/``Infinity`` tokens).

Speed: bodies are parsed with orjson; only when orjson refuses (NaN tokens, trailing bytes,
deep nesting, invalid UTF-8) does the slower rapidjson-compatible parser below run. Numeric
tensors are built with one ``np.array`` call and validated by dtype kind; the per-element walker
(which produces TF Serving's exact error messages) runs only when that fast check fails.
Responses are assembled as text from vectorised number formatting.

Everything raises ``errors.ServingError`` subclasses with TF Serving's codes and messages.
"""

from __future__ import annotations

import base64
import binascii
import gc
import math
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.modelserver.errors import (
    InvalidArgument,
    ServingError,
    Unimplemented,
)
from serving.modelserver.types import TensorSpec

# --------------------------------------------------------------------------------------------
# dtypes (tensorflow/core/framework/types.proto)

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
DT_BFLOAT16 = 14
DT_UINT16 = 17
DT_COMPLEX128 = 18
DT_HALF = 19
DT_UINT32 = 22
DT_UINT64 = 23

# DataTypeString() names, used in error messages.
DTYPE_NAMES: dict[int, str] = {
    0: "INVALID",
    1: "float",
    2: "double",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    17: "uint16",
    18: "complex128",
    19: "half",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
    29: "int4",
    30: "uint4",
}

# dtypes JSON input can be converted to, with the numpy type that carries them.
_NP_INPUT: dict[int, Any] = {
    DT_FLOAT: np.float32,
    DT_DOUBLE: np.float64,
    DT_INT32: np.int32,
    DT_UINT8: np.uint8,
    DT_INT16: np.int16,
    DT_INT8: np.int8,
    DT_STRING: object,
    DT_INT64: np.int64,
    DT_BOOL: np.bool_,
    DT_UINT32: np.uint32,
    DT_UINT64: np.uint64,
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


def dtype_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"type_{dtype}")


# --------------------------------------------------------------------------------------------
# Body parsing


class _ParseError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


_WS = re.compile(rb"[ \t\n\r]*")
_OPEN_RUN = re.compile(rb"(?:\[[ \t\n\r]*)+")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]*)?")
_PLAIN_STR = re.compile(rb'[^"\\\x00-\x1f]*')
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_UINT64_MAX = 2**64 - 1
_INT64_MIN = -(2**63)


def _parse_string(data: bytes, pos: int) -> tuple[str, int]:
    """``data[pos]`` is the opening quote; returns the decoded string and the position after."""
    pos += 1
    parts: list[str] = []
    n = len(data)
    while True:
        m = _PLAIN_STR.match(data, pos)
        end = m.end()
        if end > pos:
            # rapidjson does not validate UTF-8; keep undecodable bytes via surrogateescape.
            parts.append(data[pos:end].decode("utf-8", "surrogateescape"))
        pos = end
        if pos >= n:
            raise _ParseError("Missing a closing quotation mark in string.", pos)
        c = data[pos]
        if c == 0x22:  # closing quote
            return "".join(parts), pos + 1
        if c == 0x5C:  # backslash
            if pos + 1 >= n:
                raise _ParseError("Missing a closing quotation mark in string.", pos + 1)
            e = data[pos + 1]
            if e in _ESCAPES:
                parts.append(_ESCAPES[e])
                pos += 2
                continue
            if e != ord("u"):
                raise _ParseError("Invalid escape character in string.", pos + 1)
            code, pos = _parse_hex4(data, pos + 2)
            if 0xD800 <= code <= 0xDBFF:
                if data[pos : pos + 2] != b"\\u":
                    raise _ParseError("The surrogate pair in string is invalid.", pos)
                low, pos = _parse_hex4(data, pos + 2)
                if not 0xDC00 <= low <= 0xDFFF:
                    raise _ParseError("The surrogate pair in string is invalid.", pos)
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            elif 0xDC00 <= code <= 0xDFFF:
                raise _ParseError("The surrogate pair in string is invalid.", pos)
            parts.append(chr(code))
            continue
        # A raw control character.
        raise _ParseError("Invalid encoding in string.", pos)


def _parse_hex4(data: bytes, pos: int) -> tuple[int, int]:
    digits = data[pos : pos + 4]
    if len(digits) != 4 or not all(chr(b) in "0123456789abcdefABCDEF" for b in digits):
        raise _ParseError("Incorrect hex digit after \\u escape in string.", pos)
    return int(digits, 16), pos + 4


def _parse_scalar(data: bytes, pos: int) -> tuple[Any, int]:
    """true/false/null, numbers and rapidjson's NaN/Inf extension tokens."""
    c = data[pos : pos + 1]
    if c == b"t":
        if data.startswith(b"true", pos):
            return True, pos + 4
        raise _ParseError("Invalid value.", pos)
    if c == b"f":
        if data.startswith(b"false", pos):
            return False, pos + 5
        raise _ParseError("Invalid value.", pos)
    if c == b"n":
        if data.startswith(b"null", pos):
            return None, pos + 4
        raise _ParseError("Invalid value.", pos)
    start = pos
    negative = c == b"-"
    p = pos + 1 if negative else pos
    if data.startswith(b"NaN", p):
        return math.nan, p + 3
    if data.startswith(b"Inf", p):
        value = -math.inf if negative else math.inf
        if data.startswith(b"inity", p + 3):
            return value, p + 8
        if data[p + 3 : p + 4] == b"i":
            raise _ParseError("Invalid value.", p + 3)
        return value, p + 3
    m = _NUMBER.match(data, start)
    if m is None:
        raise _ParseError("Invalid value.", start)
    frac, exp = m.group(1), m.group(2)
    if frac is not None and len(frac) == 1:
        raise _ParseError("Miss fraction part in number.", m.start(1) + 1)
    if exp is not None and not exp[-1:].isdigit():
        raise _ParseError("Miss exponent in number.", m.end())
    text = m.group(0)
    if frac is None and exp is None:
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value, m.end()
        # rapidjson stores integers beyond 64 bits as doubles.
        try:
            as_float = float(value)
        except OverflowError:
            raise _ParseError("Number too big to be stored in double.", start) from None
        return as_float, m.end()
    value = float(text)
    if math.isinf(value):
        raise _ParseError("Number too big to be stored in double.", start)
    return value, m.end()


def _parse_document(data: bytes) -> Any:
    """Iterative parser for rapidjson's dialect; stops after the first complete value."""
    n = len(data)
    ws = _WS.match
    pos = ws(data, 0).end()
    if pos >= n:
        raise _ParseError("The document is empty.", pos)
    # Stack of [container, pending key (objects only)].
    stack: list[list[Any]] = []
    while True:
        # ---- parse one value starting at pos
        c = data[pos] if pos < n else -1
        if c == 0x7B:  # {
            pos = ws(data, pos + 1).end()
            if pos < n and data[pos] == 0x7D:
                value: Any = {}
                pos += 1
            else:
                key, pos = _parse_member_name(data, pos)
                stack.append([{}, key])
                pos = ws(data, pos).end()
                continue
        elif c == 0x5B:  # [
            # A run of '[' opens several lists at once (deeply nested bodies stay fast).
            run = _OPEN_RUN.match(data, pos)
            depth = run.group().count(b"[")
            pos = run.end()
            stack.extend([[], None] for _ in range(depth - 1))
            if pos < n and data[pos] == 0x5D:
                value = []
                pos += 1
            else:
                stack.append([[], None])
                continue
        elif c == 0x22:
            value, pos = _parse_string(data, pos)
        elif c == -1:
            raise _ParseError("Invalid value.", pos)
        else:
            value, pos = _parse_scalar(data, pos)
        # ---- attach the finished value to its parents
        while True:
            if not stack:
                return value
            top = stack[-1]
            container = top[0]
            pos = ws(data, pos).end()
            c = data[pos] if pos < n else -1
            if isinstance(container, list):
                container.append(value)
                if c == 0x2C:
                    pos = ws(data, pos + 1).end()
                    break
                if c == 0x5D:
                    pos += 1
                    value = container
                    stack.pop()
                    # Close a run of ']' whose parents are lists without re-dispatching.
                    while stack and pos < n and data[pos] == 0x5D:
                        parent = stack[-1][0]
                        if not isinstance(parent, list):
                            break
                        parent.append(value)
                        value = parent
                        stack.pop()
                        pos += 1
                    continue
                raise _ParseError("Missing a comma or ']' after an array element.", pos)
            # rapidjson keeps duplicate members; lookups find the first one.
            container.setdefault(top[1], value)
            if c == 0x2C:
                pos = ws(data, pos + 1).end()
                top[1], pos = _parse_member_name(data, pos)
                pos = ws(data, pos).end()
                break
            if c == 0x7D:
                pos += 1
                value = container
                stack.pop()
                continue
            raise _ParseError("Missing a comma or '}' after an object member.", pos)


def _parse_member_name(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data) or data[pos] != 0x22:
        raise _ParseError("Missing a name for object member.", pos)
    key, pos = _parse_string(data, pos)
    pos = _WS.match(data, pos).end()
    if pos >= len(data) or data[pos] != 0x3A:
        raise _ParseError("Missing a colon after a name of object member.", pos)
    return key, _WS.match(data, pos + 1).end()


def parse_json(body: bytes) -> Any:
    """Parse a request body like TF Serving's rapidjson setup; INVALID_ARGUMENT on failure."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Millions of small containers would trigger the cyclic GC over and over (3x the parse
    # time for a deeply nested body); parsed JSON has no cycles, so pause it meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_document(body)
    except _ParseError as e:
        if e.message == "The document is empty.":
            raise InvalidArgument("JSON Parse error: The document is empty") from None
        raise InvalidArgument(f"JSON Parse error: {e.message} at offset: {e.offset}") from None
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------
# Debug rendering of JSON values inside error messages (rapidjson PrettyWriter, single-line
# arrays, 4-space indent, cut at about 256 bytes).

_DEBUG_LIMIT = 256


def _number_text(v: float | int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = repr(v)
    if "e" in text:
        mant, _, exp = text.partition("e")
        text = f"{mant}e{int(exp)}"
    return text


def _string_text(s: str) -> str:
    return orjson.dumps(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")).decode()


def _debug_pieces(v: Any, level: int) -> Iterator[str]:
    if isinstance(v, dict):
        if not v:
            yield "{}"
            return
        yield "{"
        first = True
        pad = "    " * (level + 1)
        for k, item in v.items():
            yield ("\n" if first else ",\n") + pad + _string_text(k) + ": "
            first = False
            yield from _debug_pieces(item, level + 1)
        yield "\n" + "    " * level + "}"
    elif isinstance(v, list):
        yield "["
        for i, item in enumerate(v):
            if i:
                yield ", "
            yield from _debug_pieces(item, level)
        yield "]"
    elif v is None:
        yield "null"
    elif isinstance(v, str):
        yield _string_text(v)
    else:
        yield _number_text(v)


def debug_string(v: Any) -> str:
    """Render a parsed JSON value for an error message (bounded in time and size)."""
    out: list[str] = []
    size = 0
    for piece in _debug_pieces(v, 0):
        out.append(piece)
        size += len(piece)
        if size >= _DEBUG_LIMIT:
            break
    return "".join(out)[:_DEBUG_LIMIT]


def _json_type(v: Any) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


# --------------------------------------------------------------------------------------------
# Base64 (abseil's standard-alphabet decoder: padding optional, no URL-safe chars)

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


def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _is_named_object(v: Any) -> bool:
    return isinstance(v, dict) and not _is_b64(v)


# --------------------------------------------------------------------------------------------
# JSON value -> tensor


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
        if _is_b64(v):
            return b64_decode(v["b64"])
    else:
        raise Unimplemented(
            f"Conversion of JSON Value: {debug_string(v)} to type: {dtype_name(dtype)}"
        )
    raise InvalidArgument(
        f"JSON Value: {debug_string(v)} Type: {_json_type(v)} is not of expected type: "
        f"{dtype_name(dtype)}"
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
    np_type = _NP_INPUT[dtype]
    if np_type is object:
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


def _row_column(elements: list[Any], dtype: int, has_bool: bool, prefix_for: Any) -> np.ndarray:
    arr = _fast_numeric(elements, dtype, has_bool)
    if arr is not None and arr.ndim >= 1:
        return arr
    return _batch_from_elements(elements, dtype, prefix_for)


# --------------------------------------------------------------------------------------------
# Predict requests


@dataclass
class PredictBody:
    """A parsed ``:predict`` body before the signature is known (steps 3-4 of spec 2.4)."""

    doc: dict[str, Any]
    signature_name: str
    has_bool_tokens: bool

    @property
    def row_format(self) -> bool:
        return "instances" in self.doc


def _signature_name(doc: dict[str, Any]) -> str:
    sig = doc.get("signature_name")
    if sig is None:
        return ""
    if not isinstance(sig, str):
        raise InvalidArgument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return sig


def _parse_object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def parse_predict_body(body: bytes) -> PredictBody:
    """JSON parse, top-level object check, ``signature_name`` type check."""
    doc = _parse_object(body)
    sig = _signature_name(doc)
    has_bool = b"true" in body or b"false" in body
    return PredictBody(doc=doc, signature_name=sig, has_bool_tokens=has_bool)


def decode_predict_inputs(
    req: PredictBody, input_specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    """``instances``/``inputs`` -> numpy tensors typed by the signature's inputs (step 8)."""
    doc = req.doc
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise InvalidArgument(
            f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if not has_instances and not has_inputs:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    if has_instances:
        return _decode_instances(doc["instances"], input_specs, req.has_bool_tokens)
    return _decode_inputs(doc["inputs"], input_specs, req.has_bool_tokens)


def _decode_instances(
    instances: Any, specs: Mapping[str, TensorSpec], has_bool: bool
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise InvalidArgument(
            f"JSON Value: {debug_string(instances)} Expecting 'instances' to be an list/array"
        )
    if not instances:
        raise InvalidArgument(
            f"JSON Value: {debug_string(instances)} No values in 'instances' array"
        )
    names = list(specs)
    named = _is_named_object(instances[0])
    if len(names) > 1 and not named:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    if not named:
        for i, elem in enumerate(instances):
            if _is_named_object(elem):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {i} of input list"
                )
        name = names[0]
        return {
            name: _row_column(
                instances,
                specs[name].dtype,
                has_bool,
                lambda i: f"Failed to process element: {i} of 'instances' list",
            )
        }
    wanted = set(names)
    for i, elem in enumerate(instances):
        if not _is_named_object(elem):
            raise InvalidArgument(f"Expecting object but got list at item {i} of input list")
        if elem.keys() != wanted:
            for key in elem:
                if key not in wanted:
                    raise InvalidArgument(
                        f"Failed to process element: {i} of 'instances' list. Error: "
                        f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                    )
            raise InvalidArgument(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{debug_string(elem)} keys must be equal to: {','.join(sorted(names))}"
            )
    out: dict[str, np.ndarray] = {}
    for name in names:
        column = [elem[name] for elem in instances]
        out[name] = _row_column(
            column,
            specs[name].dtype,
            has_bool,
            lambda i, name=name: f"Failed to process element: {i} key: {name} of 'instances' list",
        )
    return out


def _decode_inputs(
    inputs: Any, specs: Mapping[str, TensorSpec], has_bool: bool
) -> dict[str, np.ndarray]:
    names = list(specs)
    if _is_named_object(inputs):
        out = {}
        for name in names:
            if name not in inputs:
                raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        for name in names:
            out[name] = json_to_tensor(inputs[name], specs[name].dtype, has_bool)
        return out
    if len(names) > 1:
        raise InvalidArgument(
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map"
        )
    return {names[0]: json_to_tensor(inputs, specs[names[0]].dtype, has_bool)}


# --------------------------------------------------------------------------------------------
# Number formatting (WriteDecimal) and response assembly


def _non_finite(v: float) -> str:
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


_F32 = struct.Struct("<f")
# Below this many elements the per-element loop beats numpy's fixed per-call costs.
_SMALL_FLOAT_ARRAY = 256


def _format_floats_small(values: list[float], double: bool) -> list[str]:
    pack, unpack = _F32.pack, _F32.unpack
    long_fmt = "{:.17g}" if double else "{:.9g}"
    out: list[str] = []
    append = out.append
    for v in values:
        if v - v != 0:  # NaN or +-inf
            append(_non_finite(v))
            continue
        s = f"{v:g}"
        back = float(s) if double else unpack(pack(float(s)))[0]
        if back != v:
            s = long_fmt.format(v)
        if "." not in s and "e" not in s:
            s += ".0"
        append(s)
    return out


def format_floats(values: np.ndarray, double: bool = False) -> list[str]:
    """TF Serving's WriteDecimal for every element of a float32 (or float64) array.

    ``%g`` (six significant digits) if that text reads back as the same value, else ``%.9g``
    (float) / ``%.17g`` (double); ``.0`` appended when the text has neither ``.`` nor ``e``.
    For large arrays the read-back check is vectorised (numpy parses all six-digit texts).
    """
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return []
    as_double = flat.astype(np.float64).tolist()
    if flat.size <= _SMALL_FLOAT_ARRAY:
        return _format_floats_small(as_double, double)
    short = [f"{v:g}" for v in as_double]
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.array(short, dtype=np.float64)
        if not double:
            back = back.astype(np.float32)
        redo = (back != flat) | ~np.isfinite(flat)
    long_fmt = "{:.17g}" if double else "{:.9g}"
    out = short
    for i in np.flatnonzero(redo).tolist():
        v = as_double[i]
        if math.isfinite(v):
            out[i] = long_fmt.format(v)
        else:
            out[i] = _non_finite(v)
    for i, s in enumerate(out):
        if "." not in s and "e" not in s and s[-1].isdigit():
            out[i] = s + ".0"
    return out


def format_float(v: float, double: bool = False) -> str:
    return format_floats(np.array([v], dtype=np.float64 if double else np.float32), double)[0]


_OUTPUT_TYPE_NAMES = {
    "float16": "half",
    "bfloat16": "bfloat16",
    "uint16": "uint16",
    "complex64": "complex64",
    "complex128": "complex128",
}


def _string_token(b: Any) -> str:
    if isinstance(b, bytes):
        # TF writes the raw bytes; JSON text must be UTF-8, so undecodable bytes become U+FFFD.
        b = b.decode("utf-8", "replace")
    elif not isinstance(b, str):
        b = str(b)
    return orjson.dumps(b).decode()


def _b64_token(b: Any) -> str:
    if isinstance(b, str):
        b = b.encode("utf-8")
    return '{"b64": "' + base64.b64encode(b).decode("ascii") + '"}'


def tensor_tokens(name: str, arr: np.ndarray) -> list[str]:
    """Every element of ``arr`` as a JSON token, TF Serving style (row-major)."""
    kind = arr.dtype.kind
    if arr.dtype == np.float32:
        return format_floats(arr)
    if arr.dtype == np.float64:
        return format_floats(arr, double=True)
    if kind in "iu" and arr.dtype != np.uint16:
        return [str(v) for v in arr.reshape(-1).tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in arr.reshape(-1).tolist()]
    if kind in "OSU":
        conv = _b64_token if name.endswith("_bytes") else _string_token
        return [conv(v) for v in arr.reshape(-1).tolist()]
    type_name = _OUTPUT_TYPE_NAMES.get(arr.dtype.name, arr.dtype.name)
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {type_name}")


def _empty_nest(shape: Sequence[int]) -> str:
    if not shape:
        raise ValueError("scalar has no empty form")
    if shape[0] == 0:
        return "[]"
    inner = _empty_nest(shape[1:])
    return "[" + ",".join([inner] * shape[0]) + "]"


def _group(tokens: list[str], shape: Sequence[int]) -> list[str]:
    """Nest a row-major token list by ``shape`` (the trailing dims); returns the outer items."""
    items = tokens
    for d in reversed(shape):
        items = ["[" + ",".join(items[i : i + d]) + "]" for i in range(0, len(items), d)]
    return items


def nest_tokens(tokens: list[str], shape: Sequence[int]) -> str:
    """Whole tensor as nested JSON arrays (a rank-0 tensor is a bare value)."""
    if not shape:
        return tokens[0]
    if 0 in shape:
        return _empty_nest(shape)
    return _group(tokens, shape)[0]


def _row_items(tokens: list[str], shape: Sequence[int]) -> list[str]:
    """Per-row JSON text for a tensor of ``shape`` (``shape[0]`` rows)."""
    n, rest = shape[0], shape[1:]
    if n == 0:
        return []
    if 0 in rest:
        return [_empty_nest(rest)] * n
    return _group(tokens, rest)


def _key(name: str) -> str:
    return orjson.dumps(name).decode()


def format_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` (row request) or ``{"outputs": ...}`` (columnar request)."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(a) for name, a in outputs.items()}
    if not row_format:
        parts = {name: nest_tokens(tensor_tokens(name, a), a.shape) for name, a in arrays.items()}
        if len(parts) == 1:
            body = next(iter(parts.values()))
        else:
            body = "{" + ",".join(f"{_key(k)}: {v}" for k, v in parts.items()) + "}"
        return ('{"outputs": ' + body + "}").encode()
    batch = None
    for name, a in arrays.items():
        if a.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = a.shape[0]
        elif a.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {a.shape[0]} expecting: {batch}"
            )
    rows = {name: _row_items(tensor_tokens(name, a), a.shape) for name, a in arrays.items()}
    if len(rows) == 1:
        items = next(iter(rows.values()))
    else:
        keys = [_key(k) for k in rows]
        cols = list(rows.values())
        items = [
            "{" + ",".join(f"{k}: {col[i]}" for k, col in zip(keys, cols, strict=True)) + "}"
            for i in range(batch or 0)
        ]
    return ('{"predictions": [' + ",".join(items) + "]}").encode()


def format_error(message: str) -> bytes:
    """TF Serving's error body (rapidjson pretty writer: 4-space indent, no newline at end)."""
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return b'{\n    "error": ' + orjson.dumps(text) + b"\n}"


# --------------------------------------------------------------------------------------------
# Classify / regress


@dataclass
class ExamplesRequest:
    """A parsed ``:classify``/``:regress`` body: serialized tf.Example protos."""

    signature_name: str
    examples: list[bytes]
    context: bytes | None
    # The decoded features, for tests and debugging: name -> (kind, values).
    example_features: list[dict[str, tuple[str, list[Any]]]]
    context_features: dict[str, tuple[str, list[Any]]] | None


_KIND_BYTES = "bytes"
_KIND_INT64 = "int64"
_KIND_FLOAT = "float"


def _feature_values(name: str, value: Any) -> tuple[str, list[Any]]:
    items = value if isinstance(value, list) else [value]
    kind: str | None = None
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            this, converted = _KIND_BYTES, item.encode("utf-8", "surrogateescape")
        elif _is_b64(item):
            this, converted = _KIND_BYTES, b64_decode(item["b64"])
        elif type(item) is bool:
            this, converted = _KIND_INT64, int(item)
        elif type(item) is int:
            if item > 2**63 - 1:
                raise InvalidArgument(
                    f"Feature: {name} has uint64_t element. Only int64_t is supported."
                )
            this, converted = _KIND_INT64, item
        elif type(item) is float:
            this, converted = _KIND_FLOAT, item
        else:
            raise InvalidArgument(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}"
            )
        if kind is None:
            kind = this
        elif kind != this:
            raise InvalidArgument(
                f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        out.append(converted)
    return kind or _KIND_FLOAT, out


def _example_features(v: Any) -> dict[str, tuple[str, list[Any]]]:
    if not isinstance(v, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(v)}")
    return {name: _feature_values(name, value) for name, value in v.items()}


def parse_examples_body(body: bytes, method: str = "classify") -> ExamplesRequest:
    """``{"signature_name", "context", "examples"}`` -> serialized tf.Example protos.

    TF Serving's missing-``examples`` message names ``classify`` for both methods.
    """
    doc = _parse_object(body)
    sig = _signature_name(doc)
    context_features = None
    if "context" in doc:
        context_features = _example_features(doc["context"])
    if "examples" not in doc:
        raise InvalidArgument(
            f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise InvalidArgument(
            f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    feats = [_example_features(e) for e in examples]
    return ExamplesRequest(
        signature_name=sig,
        examples=[encode_example(f) for f in feats],
        context=None if context_features is None else encode_example(context_features),
        example_features=feats,
        context_features=context_features,
    )


# tf.Example wire format, written directly (no TensorFlow import needed):
#   Example { Features features = 1; }  Features { map<string, Feature> feature = 1; }
#   Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
#   *List { repeated ... value = 1 [packed for numbers]; }


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _encode_feature(kind: str, values: list[Any]) -> bytes:
    if kind == _KIND_BYTES:
        inner = b"".join(_field(1, v) for v in values)
        return _field(1, inner)
    if kind == _KIND_FLOAT:
        packed = np.array(values, dtype="<f4").tobytes() if values else b""
        return _field(2, _field(1, packed) if values else b"")
    packed = b"".join(_varint(v) for v in values)
    return _field(3, _field(1, packed) if values else b"")


def encode_example(features: Mapping[str, tuple[str, list[Any]]]) -> bytes:
    """Serialize a ``tf.train.Example`` from decoded features."""
    entries = b"".join(
        _field(
            1, _field(1, name.encode("utf-8", "surrogateescape")) + _field(2, _encode_feature(k, v))
        )
        for name, (k, v) in features.items()
    )
    return _field(1, entries) if features else b""


def format_classify_response(
    classifications: Sequence[Sequence[tuple[bytes, float | None]]],
) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``."""
    if not classifications:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    scores = [0.0 if s is None else s for per in classifications for _, s in per]
    tokens = iter(format_floats(np.array(scores, dtype=np.float32)))
    rows = []
    for per in classifications:
        pairs = [f"[{_string_token(label)}, {next(tokens)}]" for label, _ in per]
        rows.append("[" + ", ".join(pairs) + "]")
    return ('{"results": [' + ", ".join(rows) + "]}").encode()


def format_regress_response(values: Sequence[float]) -> bytes:
    """``{"results": [value per example]}`` (values are float32 in TF's RegressionResult)."""
    if not values:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    tokens = format_floats(np.array(values, dtype=np.float32))
    return ('{"results": [' + ", ".join(tokens) + "]}").encode()


__all__ = [
    "ExamplesRequest",
    "PredictBody",
    "b64_decode",
    "debug_string",
    "decode_predict_inputs",
    "dtype_name",
    "encode_example",
    "format_classify_response",
    "format_error",
    "format_float",
    "format_floats",
    "format_predict_response",
    "format_regress_response",
    "json_to_tensor",
    "parse_examples_body",
    "parse_json",
    "parse_predict_body",
]
