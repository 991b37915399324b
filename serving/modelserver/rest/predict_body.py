"""A ``:predict`` body: ``instances`` (row format) or ``inputs`` (columnar) -> numpy tensors.

``parse_predict_body`` parses and checks the document before the signature is known;
``decode_predict_inputs`` converts it with the signature's input dtypes (steps 3-4 and 8 of
spec 2.4). Errors are TF Serving's, word for word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.modelserver.errors import InvalidArgument
from serving.modelserver.rest.json_parser import debug_string, parse_object, signature_name
from serving.modelserver.rest.tensors import is_named_object, json_to_tensor, row_column
from serving.modelserver.types import TensorSpec


@dataclass
class PredictBody:
    """A parsed ``:predict`` body before the signature is known (steps 3-4 of spec 2.4)."""

    doc: dict[str, Any]
    signature_name: str
    has_bool_tokens: bool

    @property
    def row_format(self) -> bool:
        return "instances" in self.doc


def parse_predict_body(body: bytes) -> PredictBody:
    """JSON parse, top-level object check, ``signature_name`` type check."""
    doc = parse_object(body)
    sig = signature_name(doc)
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
    named = is_named_object(instances[0])
    if len(names) > 1 and not named:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    if not named:
        for i, elem in enumerate(instances):
            if is_named_object(elem):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {i} of input list"
                )
        name = names[0]
        return {
            name: row_column(
                instances,
                specs[name].dtype,
                has_bool,
                lambda i: f"Failed to process element: {i} of 'instances' list",
            )
        }
    wanted = set(names)
    for i, elem in enumerate(instances):
        if not is_named_object(elem):
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
        out[name] = row_column(
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
    if is_named_object(inputs):
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
