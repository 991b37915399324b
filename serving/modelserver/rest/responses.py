"""Response bodies in TF Serving's JSON: predict, classify, regress, errors.

``predictions``/``outputs``/``results`` with TF Serving's number formatting (``WriteDecimal``:
six significant digits if they round-trip, else 9 (float) / 17 (double); ``.0`` on whole
numbers; bare ``NaN``/``Infinity`` tokens). Responses are assembled as text from vectorised
number formatting.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from serving.modelserver.errors import InvalidArgument


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
