"""json_tensor and metrics driven by TF Serving's own cases (tfs_rest_cases.jsonl).

Every case whose kind is about JSON parsing/formatting or the Prometheus text runs here, without
a server; the HTTP kinds run through a real server in test_rest_http_conformance.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from rest_cases import DTYPES, bodies, case_id, load_cases, values_equal

from serving.modelserver.errors import HTTP_STATUS, ServingError
from serving.modelserver.metrics import Registry
from serving.modelserver.rest import examples, json_parser, predict_body, responses
from serving.modelserver.types import TensorSpec

NP_TYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    "DT_COMPLEX64": np.complex64,
}


def _specs(signature_inputs: dict[str, str]) -> dict[str, TensorSpec]:
    return {k: TensorSpec(k, DTYPES[v], None) for k, v in signature_inputs.items()}


def _decode(body: str, specs: dict[str, TensorSpec]) -> tuple[predict_body.PredictBody, dict]:
    req = predict_body.parse_predict_body(body.encode())
    return req, predict_body.decode_predict_inputs(req, specs)


def _check_error(err: ServingError, want: dict[str, Any]) -> None:
    assert err.code.name == want["status"], err
    assert HTTP_STATUS[err.code] == want["http_status"]
    if "message" in want:
        assert err.message == want["message"]
    assert want["message_contains"] in err.message


def _check_tensor(arr: np.ndarray, want: dict[str, Any]) -> None:
    if "dtype" in want:
        assert arr.dtype == (object if want["dtype"] == "DT_STRING" else NP_TYPES[want["dtype"]])
    assert list(arr.shape) == want["shape"]
    assert values_equal(arr.reshape(-1).tolist(), want["values"]), arr


# ---------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize("case", load_cases("predict_request_parse"), ids=case_id)
def test_predict_request_parse(case: dict[str, Any]) -> None:
    inp, exp = case["input"], case["expected"]
    specs = _specs(inp["signature_inputs"])
    for i, body in enumerate(bodies(inp)):
        req, tensors = _decode(body, specs)
        assert req.row_format == (exp["format"] == "row")
        if "model_spec.signature_name" in exp:
            assert req.signature_name == exp["model_spec.signature_name"]
        if "tensors" in exp:
            assert set(tensors) == set(exp["tensors"])
            for name, want in exp["tensors"].items():
                _check_tensor(tensors[name], want)
        else:
            (arr,) = tensors.values()
            _check_tensor(arr, exp["results"][i])


@pytest.mark.parametrize("case", load_cases("predict_request_error"), ids=case_id)
def test_predict_request_error(case: dict[str, Any]) -> None:
    inp, exp = case["input"], case["expected"]
    specs = _specs(inp["signature_inputs"])
    wants = exp.get("subcases", [exp])
    for body, want in zip(bodies(inp), wants, strict=True):
        with pytest.raises(ServingError) as info:
            _decode(body, specs)
        _check_error(info.value, want)


def _features(example: dict[str, Any]) -> dict[str, tuple[str, list[Any]]]:
    kinds = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
    out = {}
    for name, feature in example.items():
        ((kind, values),) = feature.items()
        out[name] = (kinds[kind], values)
    return out


def _assert_features(got: dict[str, tuple[str, list[Any]]], want: dict[str, Any]) -> None:
    want_f = _features(want)
    assert set(got) == set(want_f)
    for name, (kind, values) in want_f.items():
        assert got[name][0] == kind, name
        assert values_equal(got[name][1], values), name


def _proto_features(serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    """Parse with TensorFlow's own tf.Example proto: our hand-written encoder must agree."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    out = {}
    for name, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        values = list(getattr(feat, kind).value)
        out[name] = (
            {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}[kind],
            values,
        )
    return out


@pytest.mark.parametrize("case", load_cases("classify_regress_parse"), ids=case_id)
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_regress_parse(case: dict[str, Any], method: str) -> None:
    exp = case["expected"]
    req = examples.parse_examples_body(case["input"]["body"].encode(), method)
    assert req.signature_name == exp.get("model_spec.signature_name", "")
    if "example_list_with_context" in exp["input"]:
        want = exp["input"]["example_list_with_context"]
        assert req.context is not None
        _assert_features(req.context_features, want["context"])
        _assert_features(_proto_features(req.context), want["context"])
    else:
        want = exp["input"]["example_list"]
        assert req.context is None
    assert len(req.examples) == len(want["examples"])
    for feats, serialized, want_ex in zip(
        req.example_features, req.examples, want["examples"], strict=True
    ):
        _assert_features(feats, want_ex)
        _assert_features(_proto_features(serialized), want_ex)


@pytest.mark.parametrize("case", load_cases("classify_regress_error"), ids=case_id)
def test_classify_regress_error(case: dict[str, Any]) -> None:
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        with pytest.raises(ServingError) as info:
            examples.parse_examples_body(sub["body"].encode(), "regress")
        _check_error(info.value, want)


# ---------------------------------------------------------------------------------------------
# Responses


def _array(t: dict[str, Any]) -> np.ndarray:
    if t["dtype"] == "DT_STRING":
        arr = np.empty(len(t["values"]), dtype=object)
        arr[:] = [v.encode() for v in t["values"]]
    elif t["dtype"] == "DT_COMPLEX64":
        return np.zeros(t["shape"], dtype=np.complex64)
    else:
        from rest_cases import expected_value

        arr = np.array([expected_value(v) for v in t["values"]], dtype=NP_TYPES[t["dtype"]])
    if t.get("shape") is None:
        return arr.reshape(())
    return arr.reshape(t["shape"])


def _outputs(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: _array(t) for name, t in spec.items()}


def _parsed(body: bytes) -> Any:
    return json_parser.parse_json(body)


def _token_text(tokens: Any) -> str:
    if isinstance(tokens, list):
        return "[" + ",".join(_token_text(t) for t in tokens) + "]"
    return tokens


RESPONSE_CASES = {c["case_name"]: c for c in load_cases("response_format")}


def _response(name: str) -> dict[str, Any]:
    return RESPONSE_CASES[name]


@pytest.mark.parametrize(
    "name",
    [
        "FromJsonSingleTensor",
        "FromJsonMultipleNamedTensors",
        "FromJsonSingleBytesTensor",
    ],
)
def test_predict_response_json(name: str) -> None:
    case = _response(name)
    outputs = _outputs(case["input"]["outputs"])
    for fmt in ("row", "columnar"):
        if fmt not in case["expected"]:
            continue
        got = _parsed(responses.format_predict_response(outputs, row_format=fmt == "row"))
        assert got == case["expected"][fmt]


@pytest.mark.parametrize(
    "name", ["FromJsonSingleFloatTensorNonFinite", "FromJsonSingleFloatTensorSixDigitPrecision"]
)
def test_predict_response_number_tokens(name: str) -> None:
    case = _response(name)
    outputs = _outputs(case["input"]["outputs"])
    text = responses.format_predict_response(outputs, row_format=True).decode()
    assert text == '{"predictions": ' + _token_text(case["expected"]["row_text_tokens"]) + "}"


def test_predict_response_errors() -> None:
    case = _response("FromJsonSingleTensorErrors")
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        with pytest.raises(ServingError) as info:
            responses.format_predict_response(_outputs(sub["outputs"]), row_format=True)
        _check_error(info.value, want)
    case = _response("FromJsonMultipleNamedTensorsErrors")
    outputs = _outputs(case["input"]["outputs"])
    with pytest.raises(ServingError) as info:
        responses.format_predict_response(outputs, row_format=True)
    _check_error(info.value, case["expected"])
    # Columnar has no batch-size rule.
    assert set(_parsed(responses.format_predict_response(outputs, row_format=False))["outputs"]) == {
        "int_tensor",
        "str_tensor",
    }


def test_classify_and_regress_results() -> None:
    case = _response("ClassifyRegressnResultTest/JsonFromClassificationResult")
    classes = [
        [(label.encode(), score) for label, score in per]
        for per in case["input"]["classification_result"]
    ]
    got = _parsed(responses.format_classify_response(classes))
    want = case["expected"]["json"]
    assert [[lab for lab, _ in per] for per in got["results"]] == [
        [lab for lab, _ in per] for per in want["results"]
    ]
    for got_per, want_per in zip(got["results"], want["results"], strict=True):
        for (_, gs), (_, ws) in zip(got_per, want_per, strict=True):
            assert np.float32(gs) == np.float32(ws)

    case = _response("ClassifyRegressnResultTest/JsonFromRegressionResult")
    got = _parsed(responses.format_regress_response(case["input"]["regression_result"]))
    assert got == case["expected"]["json"]

    case = _response("ClassifyRegressnResultTest/JsonFromResultErrors")
    fns = [lambda: responses.format_classify_response([]), lambda: responses.format_regress_response([])]
    for fn, want in zip(fns, case["expected"]["subcases"], strict=True):
        with pytest.raises(ServingError) as info:
            fn()
        _check_error(info.value, want)


def test_pretty_printed_shapes_parse_equal() -> None:
    """Byte-exact pretty-printing is not a goal (documented); parsed values and the error body
    bytes are."""
    case = _response("PrettyPrintedBytes")
    want = [_parsed(s.encode()) for s in case["expected"]["subcases"]]
    f32 = np.float32
    assert (
        _parsed(responses.format_predict_response({"y": np.array([[2.5, 3], [3.5, 4]], f32)}, True))
        == want[0]
    )
    assert _parsed(responses.format_predict_response({"y": np.array([3.5, 4, 5.5], f32)}, True)) == want[1]
    assert _parsed(responses.format_predict_response({"y": np.array([3, 3.5, 4], f32)}, False)) == want[2]
    assert _parsed(responses.format_regress_response([3.5, 4])) == want[3]
    error = responses.format_error("Servable not found for request: Latest(half)")
    assert error.decode() == case["expected"]["subcases"][4]


# ---------------------------------------------------------------------------------------------
# Prometheus text


def test_prometheus_histogram_case() -> None:
    (case,) = [c for c in load_cases("prometheus_format") if c["case_name"] == "Histogram"]
    metric = case["input"]["metric"]
    reg = Registry()
    hist = reg.histogram(metric["name"], tuple(metric["labels"]), [2.0**i for i in range(10)])
    for v in metric["observations"]:
        hist.observe(*metric["labels"].values(), value=v)
    assert case["expected"]["text_contains"] in reg.render()


def test_prometheus_sanitizing_case() -> None:
    (case,) = [c for c in load_cases("prometheus_format") if c["case_name"].startswith("Sanitize")]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        reg = Registry()
        reg.counter(sub["name"], (sub["label_name"],)).inc(sub["label_value"], amount=2)
        assert want in reg.render().splitlines()


def test_every_parsing_kind_is_covered() -> None:
    """Guard: a new kind in the jsonl must get a runner here or in the HTTP suite."""
    kinds = {c["kind"] for c in load_cases()}
    assert kinds <= {
        "predict_request_parse",
        "predict_request_error",
        "response_format",
        "classify_regress_parse",
        "classify_regress_error",
        "prometheus_format",
        "http_route",
        "http_api",
        "status_response",
        "version_dir_parse",
    }
    covered = {
        "FromJsonSingleTensor",
        "FromJsonMultipleNamedTensors",
        "FromJsonSingleBytesTensor",
        "FromJsonSingleFloatTensorNonFinite",
        "FromJsonSingleFloatTensorSixDigitPrecision",
        "FromJsonSingleTensorErrors",
        "FromJsonMultipleNamedTensorsErrors",
        "ClassifyRegressnResultTest/JsonFromClassificationResult",
        "ClassifyRegressnResultTest/JsonFromRegressionResult",
        "ClassifyRegressnResultTest/JsonFromResultErrors",
        "PrettyPrintedBytes",
    }
    assert set(RESPONSE_CASES) == covered


def test_orjson_and_fallback_agree_on_strict_json() -> None:
    body = b'{"a": [1, 2.5, "x", true, null, {"b": []}], "c": -0.0}'
    assert json_parser._parse_document(body) == orjson.loads(body)
    assert math.copysign(1, json_parser._parse_document(body)["c"]) == -1
