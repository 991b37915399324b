"""Error mapping and TF Serving's JSON tensor rules on the client side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients import errors
from clients.rest_client import encode_json, parse_predict_json, rows_to_json, tensor_to_json
from clients.types import Signature, TensorInfo


@pytest.mark.parametrize(
    "status,cls,code",
    [
        (400, errors.InvalidInput, "INVALID_ARGUMENT"),
        (404, errors.ModelNotFound, "NOT_FOUND"),
        (503, errors.Unavailable, "UNAVAILABLE"),
        (504, errors.DeadlineExceeded, "DEADLINE_EXCEEDED"),
        (429, errors.ResourceExhausted, "RESOURCE_EXHAUSTED"),
        (501, errors.Unimplemented, "UNIMPLEMENTED"),
        (500, errors.ServerError, "INTERNAL"),
        (401, errors.PermissionDenied, "UNAUTHENTICATED"),
        (403, errors.PermissionDenied, "PERMISSION_DENIED"),
        (409, errors.ServerError, "ABORTED"),
        (418, errors.InvalidInput, "INVALID_ARGUMENT"),
        (502, errors.ServerError, "UNKNOWN"),
    ],
)
def test_http_status_mapping(status, cls, code):
    err = errors.error_for_http(status, "the server's words")
    assert type(err) is cls and err.code == code and err.http_status == status
    assert err.message == "the server's words" and "the server's words" in str(err)
    assert err.is_retryable == (cls is errors.Unavailable)


@pytest.mark.parametrize(
    "code,cls",
    [
        ("NOT_FOUND", errors.ModelNotFound),
        ("INVALID_ARGUMENT", errors.InvalidInput),
        ("FAILED_PRECONDITION", errors.InvalidInput),
        ("UNAVAILABLE", errors.Unavailable),
        ("DEADLINE_EXCEEDED", errors.DeadlineExceeded),
        ("INTERNAL", errors.ServerError),
        ("DATA_LOSS", errors.ServerError),
        ("CANCELLED", errors.ServerError),
    ],
)
def test_code_mapping(code, cls):
    err = errors.error_for_code(code, "msg", transport="grpc")
    assert type(err) is cls and err.code == code and isinstance(err, errors.ClientError)


def test_unknown_label_is_model_not_found_on_both_transports():
    msg = "Unrecognized servable version label: beta"
    assert type(errors.error_for_code("INVALID_ARGUMENT", msg)) is errors.ModelNotFound
    assert type(errors.error_for_http(400, msg)) is errors.ModelNotFound


def test_json_encoding_rules():
    body = {"instances": tensor_to_json(np.array([np.nan, np.inf, -np.inf, 0.5], np.float32))}
    text = encode_json(body).decode()
    assert text == '{"instances":[NaN,Infinity,-Infinity,0.5]}'  # TF Serving's tokens
    assert tensor_to_json(np.array([[b"\xff\x00", b"ab"]], dtype=object)) == [
        [{"b64": "/wA="}, {"b64": "YWI="}]
    ]
    assert tensor_to_json(np.array(["text"], dtype=object)) == ["text"]
    assert tensor_to_json(np.array([True, False])) == [True, False]
    rows = rows_to_json({"a": np.array([1, 2]), "b": np.array([[1.5], [2.5]])})
    assert json.loads(encode_json(rows)) == [
        {"a": 1, "b": [1.5]},
        {"a": 2, "b": [2.5]},
    ]
    with pytest.raises(ValueError, match="one batch size"):
        rows_to_json({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="complex"):
        tensor_to_json(np.zeros(2, np.complex64))
    with pytest.raises(ValueError, match="batch dimension"):
        rows_to_json(np.float32(1.0).reshape(()))


SIG = Signature(
    method_name="tensorflow/serving/predict",
    inputs={"images": TensorInfo("x:0", "DT_FLOAT", (-1, 784))},
    outputs={
        "scores": TensorInfo("s:0", "DT_FLOAT", (-1, 10)),
        "classes": TensorInfo("c:0", "DT_INT64", (-1,)),
    },
)
ONE_OUT = Signature("tensorflow/serving/predict", {}, {"out": TensorInfo("o", "DT_DOUBLE", (-1,))})
BYTES_OUT = Signature("m", {}, {"image_bytes": TensorInfo("o", "DT_STRING", (-1,))})


def test_parse_predict_json_shapes_names_and_tokens():
    # TF Serving writes bare NaN / Infinity tokens; json.loads reads them.
    reply = json.loads('{"predictions": [{"scores": [NaN, 1.0], "classes": 3}]}')
    out = parse_predict_json(reply, SIG)
    assert out["classes"].dtype == np.int64 and out["classes"].tolist() == [3]
    assert np.isnan(out["scores"][0, 0]) and out["scores"].dtype == np.float32
    out = parse_predict_json(json.loads('{"predictions": [Infinity, -Infinity]}'), ONE_OUT)
    assert out["out"].tolist() == [np.inf, -np.inf] and out["out"].dtype == np.float64
    out = parse_predict_json({"outputs": {"scores": [[0.5] * 10], "classes": [1]}}, SIG)
    assert out["scores"].shape == (1, 10)
    out = parse_predict_json({"outputs": [1.0, 2.0]}, ONE_OUT)
    assert out["out"].tolist() == [1.0, 2.0]
    out = parse_predict_json({"predictions": [{"b64": "/wA="}, "ab"]}, BYTES_OUT)
    assert out["image_bytes"].tolist() == [b"\xff\x00", b"ab"]
    # An empty batch keeps the inner shape the signature promises.
    out = parse_predict_json({"predictions": []}, SIG)
    assert out["scores"].shape == (0, 10) and out["classes"].shape == (0,)
    with pytest.raises(errors.ProtocolError):
        parse_predict_json({"results": []}, SIG)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_json_gives_back_the_same_values(dtype):
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    exps = rng.integers(info.minexp // 4, info.maxexp // 4, 5000)
    values = (rng.standard_normal(5000) * 2.0**exps).astype(dtype)
    values = np.concatenate(
        [values, np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, 0.0], dtype)]
    ).reshape(-1, 5)
    text = encode_json({"inputs": tensor_to_json(values)})
    # TF Serving reads every number as a double and casts it to the input's dtype.
    back = np.array(json.loads(text)["inputs"], dtype=np.float64).astype(dtype)
    assert back.shape == values.shape and np.array_equal(back, values)
    negative_zero = tensor_to_json(np.array([-0.0, 1.0], dtype))
    assert np.signbit(json.loads(encode_json(negative_zero))[0])


def test_raw_json_splicing_leaves_strings_alone():
    body = {
        "instances": [{"x": tensor_to_json(np.array([0.5, 2.0], np.float32)), "s": "\x00a:0\x00"}]
    }
    assert json.loads(encode_json(body)) == {"instances": [{"x": [0.5, 2], "s": "\x00a:0\x00"}]}
