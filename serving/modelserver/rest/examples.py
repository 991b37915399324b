"""``:classify`` / ``:regress`` bodies: JSON examples -> serialized ``tf.train.Example`` protos.

Features follow TF Serving's JSON rules (strings and ``{"b64": ...}`` are bytes, integers
int64, numbers float; one kind per feature); the Example wire format is written directly, so
no TensorFlow import is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.modelserver.errors import InvalidArgument
from serving.modelserver.rest.json_parser import (
    debug_string,
    json_type,
    parse_object,
    signature_name,
)
from serving.modelserver.rest.tensors import b64_decode, is_b64


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
        elif is_b64(item):
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
                f"Feature: {name} has element with unexpected JSON type: {json_type(item)}"
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
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(v)}")
    return {name: _feature_values(name, value) for name, value in v.items()}


def parse_examples_body(body: bytes, method: str = "classify") -> ExamplesRequest:
    """``{"signature_name", "context", "examples"}`` -> serialized tf.Example protos.

    TF Serving's missing-``examples`` message names ``classify`` for both methods.
    """
    doc = parse_object(body)
    sig = signature_name(doc)
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
