"""tf.Example features from plain Python values (for classify / regress).

A value is a scalar or a list/array: str and bytes go to ``bytes_list``, int and bool to
``int64_list``, float to ``float_list`` (numpy arrays by dtype). This mirrors how TF Serving's
REST API maps JSON values, so both transports build the same Example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _values(name: str, value: Any) -> tuple[str, list]:
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        kind = flat.dtype.kind
        if kind == "f":
            return "float", flat.astype(float).tolist()
        if kind in "iub":
            return "int", flat.astype(np.int64).tolist()
        if kind in "OSU":
            return "bytes", [_as_bytes(name, v) for v in flat.tolist()]
        raise ValueError(f"feature {name!r}: unsupported dtype {flat.dtype}")
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"feature {name!r} is empty; its kind cannot be told")
    first = items[0]
    if isinstance(first, (bytes, str, bytearray)):
        return "bytes", [_as_bytes(name, v) for v in items]
    if isinstance(first, (bool, int, np.integer, np.bool_)) and all(
        isinstance(v, (bool, int, np.integer, np.bool_)) for v in items
    ):
        return "int", [int(v) for v in items]
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in items):
        return "float", [float(v) for v in items]
    raise ValueError(f"feature {name!r}: cannot mix or use values like {first!r}")


def _as_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError(f"feature {name!r}: expected bytes or str, got {type(value).__name__}")


def fill_example(example: Any, features: Mapping[str, Any]) -> Any:
    """Fill a tf.Example-shaped message (ours or TensorFlow's) from ``{name: value(s)}``."""
    if not isinstance(features, Mapping):
        raise ValueError(f"an example is a mapping of feature names, got {type(features).__name__}")
    feature_map = example.features.feature
    for name, value in features.items():
        kind, values = _values(name, value)
        feature = feature_map[str(name)]
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        elif kind == "int":
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example


def json_feature_value(name: str, value: Any) -> list:
    """The JSON form TF Serving's REST classify/regress expects for one feature."""
    import base64

    kind, values = _values(name, value)
    if kind == "bytes":
        out = []
        for v in values:
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                out.append({"b64": base64.b64encode(v).decode("ascii")})
        return out
    # Python floats always print with "." or an exponent ("1.0", "1e+16", NaN as NaN), which
    # is what tells TF Serving a float_list from an int64_list.
    return values
