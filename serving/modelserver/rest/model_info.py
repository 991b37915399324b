"""GET bodies: model status and model metadata, printed as TF Serving prints them.

TF Serving prints both with protobuf's JSON printer; the metadata answer glues two printer
outputs together (http_rest_api_util.cc), which is reproduced byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from clients.wire import dtype_name
from serving.modelserver.types import ModelMetadata, SignatureInfo, VersionStatus


def format_status(rows: Sequence[VersionStatus]) -> bytes:
    """``{"model_version_status": [...]}``, newest version first."""
    ordered = sorted(rows, key=lambda r: r.version, reverse=True)
    doc = {
        "model_version_status": [
            {
                "version": str(r.version),
                "state": r.state,
                "status": {"error_code": r.error_code, "error_message": r.error_message},
            }
            for r in ordered
        ]
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def signature_def_json(md: ModelMetadata) -> str:
    """The SignatureDefMap as protobuf's JSON printer writes it (slow for big maps: callers
    run it on a worker thread)."""
    if md.signature_def_map is not None:
        return _proto_json(md.signature_def_map)
    return orjson.dumps(
        {"signature_def": {k: _signature_json(v) for k, v in md.signatures.items()}},
        option=orjson.OPT_INDENT_2,
    ).decode()


def format_metadata(md: ModelMetadata, sig_json: str) -> bytes:
    spec = {"name": md.model_name, "signature_name": "", "version": str(md.version)}
    text = (
        '{\n"model_spec":'
        + orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode()
        + ',\n"metadata": {"signature_def": '
        + sig_json
        + "}\n}\n"
    )
    return text.encode()


def _signature_json(sig: SignatureInfo) -> dict[str, Any]:
    """SignatureDef as protobuf's JSON printer writes it (fallback when no proto is given)."""

    def tensor_info(spec: Any) -> dict[str, Any]:
        if spec.shape is None:
            shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
        else:
            shape = {
                "dim": [{"size": str(d), "name": ""} for d in spec.shape],
                "unknown_rank": False,
            }
        return {"dtype": dtype_name(spec.dtype), "tensor_shape": shape, "name": spec.name}

    return {
        "inputs": {k: tensor_info(v) for k, v in sig.inputs.items()},
        "outputs": {k: tensor_info(v) for k, v in sig.outputs.items()},
        "method_name": sig.method_name,
        "defaults": {},
    }


def _proto_json(message: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=1,
        ensure_ascii=False,
    )
