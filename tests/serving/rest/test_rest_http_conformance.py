"""REST conformance through the real HTTP surface.

One real server process (``python -m serving.modelserver`` via ``EmbeddedServerProcess``) on a
free loopback port serves real SavedModels built here: TF Serving's half_plus_two test model
(TF1 builder, same tensor names and signatures), an echo model with int/float/string/bool
inputs, identity models matching every ``signature_inputs`` set of tfs_rest_cases.jsonl, and
the tiny MNIST model from the export pipeline. TF Serving's own cases (http_api, http_route,
status_response, predict_request_*, classify_regress_error) are sent as HTTP requests; then
bad input of every kind, and finally a check that the server still serves.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from rest_cases import bodies, case_id, expected_value, load_cases
from rest_models import build_repo, identity_model_name

from serving.modelserver.process import EmbeddedServerProcess
from serving.modelserver.rest import json_parser

pytestmark = pytest.mark.slow

HP2 = "saved_model_half_plus_two_2_versions"
TIMEOUT_MS = 1500
NP_TYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_STRING": object,
}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json_parser.parse_json(self.body)  # our parser: TF Serving emits NaN tokens

    @property
    def error(self) -> str:
        doc = json.loads(self.body)
        assert list(doc) == ["error"], doc
        return doc["error"]

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        """``path`` goes on the wire exactly as given (no quoting or normalising)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.call("GET", path)

    def post(self, path: str, body: bytes | str | dict) -> Reply:
        if isinstance(body, dict):
            body = json.dumps(body)
        return self.call("POST", path, body)


# Response-format cases that an identity model can reproduce: send the expected output tensors
# as inputs, get them back formatted by the server.
RESPONSE_CASES_OVER_HTTP = (
    "FromJsonSingleTensor",
    "FromJsonMultipleNamedTensors",
    "FromJsonSingleBytesTensor",
    "FromJsonSingleFloatTensorSixDigitPrecision",
    "FromJsonSingleFloatTensorNonFinite",
)
RESPONSE_CASES = {
    c["case_name"]: c
    for c in load_cases("response_format")
    if c["case_name"] in RESPONSE_CASES_OVER_HTTP
}


def _response_case_inputs(case: dict[str, Any]) -> dict[str, str]:
    return {name: t["dtype"] for name, t in case["input"]["outputs"].items()}


IDENTITY_INPUTS: list[dict[str, str]] = []
for _inputs in [
    *(c["input"]["signature_inputs"] for c in load_cases("predict_request_parse")),
    *(c["input"]["signature_inputs"] for c in load_cases("predict_request_error")),
    *(_response_case_inputs(c) for c in RESPONSE_CASES.values()),
]:
    if _inputs not in IDENTITY_INPUTS:
        IDENTITY_INPUTS.append(_inputs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_repo: Any):
    root = tmp_path_factory.mktemp("rest_models")
    config = build_repo(
        str(root), str(tiny_mnist_repo.repo / tiny_mnist_repo.model_name), IDENTITY_INPUTS
    )
    srv = EmbeddedServerProcess(
        args=[
            f"--model_config_file={config}",
            f"--monitoring_config_file={root / 'monitoring.config'}",
            "--allow_version_labels_for_unavailable_models",
            f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
            "--file_system_poll_wait_seconds=0",
            "--rest_api_enable_cors_support",
        ],
        startup_timeout_s=180,
    )
    srv.start()
    yield srv
    code = srv.stop()
    assert code == 0, srv.log_text()[-3000:]


@pytest.fixture(scope="module")
def client(server: EmbeddedServerProcess) -> Client:
    return Client(server.rest_port)


def assert_json_reply(reply: Reply, status: int) -> None:
    assert reply.status == status, reply.body[:500]
    assert reply.content_type == "application/json"


def check_error(reply: Reply, want: dict[str, Any]) -> None:
    assert_json_reply(reply, want["http_status"])
    if want.get("body_is_empty"):
        assert reply.body == b""
        return
    if "message" in want:
        assert reply.error == want["message"]
    if "message_contains" in want:
        assert want["message_contains"] in reply.error


# ---------------------------------------------------------------------------------------------
# TF Serving's cases, over HTTP


def test_case_predict_request_errors(client: Client) -> None:
    (case,) = [c for c in load_cases("http_api") if c["case_name"] == "PredictRequestErrors"]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        reply = client.call(sub["method"], sub["path"], sub["body"])
        check_error(reply, want)


def test_case_regress_and_classify(client: Client) -> None:
    (case,) = [c for c in load_cases("http_api") if c["case_name"] == "Regress+Classify"]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        reply = client.call(sub["method"], sub["path"], sub["body"])
        assert_json_reply(reply, 200)
        assert reply.json == want  # 42.0 == 42, [["", 12.0]] == [["", 12]]


def test_case_model_server_rest(client: Client) -> None:
    (case,) = [c for c in load_cases("http_api") if c["case_name"].startswith("testPredictREST")]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        body = json.dumps(sub["body"]) if "body" in sub else None
        reply = client.call(sub["method"], sub["path"], body)
        assert_json_reply(reply, 200)
        assert reply.json == want


def test_case_model_name_version_errors(client: Client) -> None:
    (case,) = [
        c for c in load_cases("http_api") if c["case_name"] == "PredictModelNameVersionErrors"
    ]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        check_error(client.call(sub["method"], sub["path"], sub["body"]), want)


def test_case_unsupported_api_calls(client: Client) -> None:
    (case,) = [c for c in load_cases("http_route") if c["case_name"] == "UnsupportedApiCalls"]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        check_error(client.call(sub["method"], sub["path"], sub["body"] or None), want)


ROUTE_BODIES = {
    "my model": '{"signature_name": "triple", "instances": [[1, 2, 3]]}',
    "mnist": '{"instances": [[0.0]]}',
}


def test_case_route_edge_cases(client: Client) -> None:
    (case,) = [c for c in load_cases("http_route") if c["case_name"] == "RouteEdgeCases"]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        body = ROUTE_BODIES.get(want.get("model", ""), "{}") if sub["method"] == "POST" else None
        reply = client.call(sub["method"], sub["path"], body)
        if want["route"] == "error":
            check_error(reply, want)
        elif want["route"] == "status":
            if want["model"] == "mnist":
                assert_json_reply(reply, 200)
                assert reply.json["model_version_status"][0]["state"] == "AVAILABLE"
            else:  # a model of that (odd) name does not exist: the name reached the lookup
                assert_json_reply(reply, 404)
                assert reply.error == f"Could not find any versions of model {want['model']}"
        elif want["route"] == "predict" and "version" in want:
            assert_json_reply(reply, 404)
            assert reply.error == (
                f"Servable not found for request: Specific({want['model']}, {want['version']})"
            )
        else:
            assert_json_reply(reply, 200)
            assert reply.json == {"predictions": [[3.0, 6.0, 9.0]]}


def test_case_get_status(client: Client) -> None:
    (case,) = [c for c in load_cases("status_response") if c["case_name"] == "GetStatus"]
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        reply = client.call(sub["method"], sub["path"])
        assert_json_reply(reply, case["expected"]["http_status"])
        assert json.loads(reply.body) == want


def test_case_get_model_metadata(client: Client) -> None:
    (case,) = [c for c in load_cases("status_response") if c["case_name"] == "GetModelMetadata"]
    reply = client.call("GET", case["input"]["path"])
    assert_json_reply(reply, 200)
    got = json.loads(reply.body)
    want = case["expected"]["json_subset"]
    assert got["model_spec"] == want["model_spec"]
    sigs = got["metadata"]["signature_def"]["signature_def"]
    assert (
        sigs["serving_default"]
        == want["metadata"]["signature_def"]["signature_def"]["serving_default"]
    )
    assert set(case["expected"]["other_signature_keys"]) <= set(sigs)
    assert sigs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert sigs["regress_x_to_y"]["inputs"]["inputs"]["tensor_shape"] == {
        "dim": [],
        "unknown_rank": True,
    }


def _reply_tensors(doc: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Identity models echo their inputs: rebuild the decoded tensors from the response."""
    if "predictions" in doc:
        preds = doc["predictions"]
        if len(names) == 1:
            return {names[0]: preds}
        return {n: [row[n] for row in preds] for n in names}
    outs = doc["outputs"]
    return {names[0]: outs} if len(names) == 1 else outs


def _assert_tensor(got: Any, want: dict[str, Any]) -> None:
    np_type = NP_TYPES[want["dtype"]] if "dtype" in want else np.float32
    arr = np.array(got, dtype=object if np_type is object else np.float64)
    assert list(arr.shape) == want["shape"]
    flat = arr.reshape(-1).tolist()
    wanted = [expected_value(v) for v in want["values"]]
    if np_type is object:
        assert flat == wanted
        return
    got_v = np.array(flat, dtype=np.float64).astype(np_type)
    want_v = np.array(wanted, dtype=np.float64).astype(np_type)
    np.testing.assert_array_equal(got_v, want_v)
    assert [math.copysign(1, v) for v in got_v.tolist()] == [
        math.copysign(1, v) for v in want_v.tolist()
    ]


@pytest.mark.parametrize("case", load_cases("predict_request_parse"), ids=case_id)
def test_case_predict_request_parse_over_http(client: Client, case: dict[str, Any]) -> None:
    inp, exp = case["input"], case["expected"]
    model = identity_model_name(inp["signature_inputs"])
    names = list(inp["signature_inputs"])
    for i, body in enumerate(bodies(inp)):
        reply = client.post(f"/v1/models/{model}:predict", body)
        assert_json_reply(reply, 200)
        doc = reply.json
        assert ("predictions" in doc) == (exp["format"] == "row")
        got = _reply_tensors(doc, names)
        wants = exp["tensors"] if "tensors" in exp else {names[0]: exp["results"][i]}
        for name, want in wants.items():
            _assert_tensor(got[name], want)


@pytest.mark.parametrize("case", load_cases("predict_request_error"), ids=case_id)
def test_case_predict_request_error_over_http(client: Client, case: dict[str, Any]) -> None:
    inp, exp = case["input"], case["expected"]
    model = identity_model_name(inp["signature_inputs"])
    wants = exp.get("subcases", [exp])
    for body, want in zip(bodies(inp), wants, strict=True):
        check_error(client.post(f"/v1/models/{model}:predict", body), want)


def _nested(t: dict[str, Any]) -> Any:
    values = [expected_value(v) for v in t["values"]]
    arr = np.array(values, dtype=object).reshape(t["shape"])
    return arr.tolist()


def _json_with_tokens(doc: Any) -> str:
    """json.dumps writes NaN/Infinity as bare tokens, exactly what TF Serving accepts."""
    return json.dumps(doc, allow_nan=True)


def _token_text(tokens: Any) -> str:
    if isinstance(tokens, list):
        return "[" + ",".join(_token_text(t) for t in tokens) + "]"
    return tokens


@pytest.mark.parametrize("name", RESPONSE_CASES_OVER_HTTP)
def test_case_response_format_over_http(client: Client, name: str) -> None:
    case = RESPONSE_CASES[name]
    outputs = case["input"]["outputs"]
    model = identity_model_name(_response_case_inputs(case))
    tensors = {k: _nested(t) for k, t in outputs.items()}
    names = list(tensors)
    batch = outputs[names[0]]["shape"][0]
    if len(names) == 1:
        row_body = {"instances": tensors[names[0]]}
        col_body = {"inputs": tensors[names[0]]}
    else:
        row_body = {"instances": [{k: tensors[k][i] for k in names} for i in range(batch)]}
        col_body = {"inputs": tensors}
    exp = case["expected"]
    row = client.post(f"/v1/models/{model}:predict", _json_with_tokens(row_body))
    assert_json_reply(row, 200)
    if "row_text_tokens" in exp:
        assert row.body.decode() == ('{"predictions": ' + _token_text(exp["row_text_tokens"]) + "}")
    else:
        assert row.json == exp["row"]
    if "columnar" in exp:
        col = client.post(f"/v1/models/{model}:predict", _json_with_tokens(col_body))
        assert_json_reply(col, 200)
        assert col.json == exp["columnar"]


def test_case_pretty_printed_error_body_bytes(client: Client) -> None:
    """PrettyPrintedBytes: only the error body is byte-exact here (see docs/differences.md)."""
    (case,) = [c for c in load_cases("response_format") if c["case_name"] == "PrettyPrintedBytes"]
    reply = client.post("/v1/models/half:predict", '{"instances": [1.0]}')
    assert_json_reply(reply, 404)
    assert reply.body.decode() == case["expected"]["subcases"][4]


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_case_classify_regress_errors_over_http(client: Client, method: str) -> None:
    (case,) = load_cases("classify_regress_error")
    for sub, want in zip(case["input"]["subcases"], case["expected"]["subcases"], strict=True):
        check_error(client.post(f"/v1/models/{HP2}:{method}", sub["body"]), want)


# ---------------------------------------------------------------------------------------------
# Our own cases: every route, status code and bad input


def test_echo_all_dtypes_row_and_columnar(client: Client) -> None:
    row = {
        "instances": [
            {"i": 1, "f": [1.5, -0.0], "s": "hé", "b": True},
            {"i": -2, "f": [1e-7, 3], "s": {"b64": "AP8="}, "b": False},
        ]
    }
    reply = client.post("/v1/models/echo:predict", row)
    assert_json_reply(reply, 200)
    preds = reply.json["predictions"]
    assert [p["i_out"] for p in preds] == [1, -2]
    assert [p["b_out"] for p in preds] == [False, True]
    assert preds[0]["f_out"] == [1.5, -0.0] and preds[1]["f_out"] == [1e-7, 3.0]
    assert preds[0]["s_out"] == "hé"
    assert preds[1]["s_out_bytes"] == {"b64": "AP8="}
    assert b"1e-07" in reply.body  # WriteDecimal six-digit form
    body = '{"inputs": {"i": [7], "f": [[NaN, 2]], "s": ["x"], "b": [true]}}'
    reply = client.post("/v1/models/echo:predict", body)
    assert_json_reply(reply, 200)
    out = reply.json["outputs"]
    assert out["i_out"] == [7] and out["s_out"] == ["x"] and out["b_out"] == [False]
    assert math.isnan(out["f_out"][0][0]) and b"NaN" in reply.body
    reply = client.post(
        "/v1/models/echo:predict",
        '{"signature_name": "wide", "inputs": {"l": [9223372036854775806], "d": [1]}}',
    )
    assert_json_reply(reply, 200)
    assert reply.json["outputs"]["l_out"] == [2**63 - 1]
    assert b"0.33333333333333331" in reply.body  # double: %.17g


def test_signature_errors(client: Client) -> None:
    reply = client.post("/v1/models/echo:predict", '{"signature_name": "nope", "inputs": [1]}')
    assert_json_reply(reply, 400)
    assert reply.error == 'Serving signature name: "nope" not found in signature def'
    reply = client.post("/v1/models/echo:predict", '{"signature_name": "noinput", "inputs": 1}')
    assert_json_reply(reply, 400)
    assert reply.error == "Failed to get input map for signature: noinput"
    reply = client.post("/v1/models/echo:classify", '{"signature_name": "nope", "examples": [{}]}')
    assert_json_reply(reply, 400)
    assert "No signature was found with the name: nope" in reply.error


def test_output_shape_errors_after_inference(client: Client) -> None:
    reply = client.post(
        "/v1/models/echo:predict", '{"signature_name": "total", "instances": [1, 2]}'
    )
    assert_json_reply(reply, 400)
    assert reply.error == "Tensor name: sum has no shape information "
    reply = client.post("/v1/models/echo:predict", '{"signature_name": "total", "inputs": [1, 2]}')
    assert_json_reply(reply, 200)
    assert reply.body == b'{"outputs": 3.0}'


def test_unsupported_input_dtype_columnar_501(client: Client) -> None:
    reply = client.post("/v1/models/echo:predict", '{"signature_name": "half", "inputs": [1.0]}')
    assert_json_reply(reply, 501)
    assert reply.error == "Conversion of JSON Value: 1.0 to type: half"


TRIPLE = '{"signature_name": "triple", '


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (TRIPLE + '"instances": [[1, 2]]', "JSON Parse error: Missing a comma or '}'"),
        (TRIPLE + '"instances": [nan]}', "JSON Parse error: Invalid value."),
        ("[1, 2]", "Is not object"),
        ("", "JSON Parse error: The document is empty"),
        (TRIPLE + '"instances": [[1, 2, 3], [3]]}', "Expecting tensor size: 3 but got: 1"),
        (TRIPLE + '"instances": [[1, 2, "3"]]}', "Type: String is not of expected type: float"),
        (TRIPLE + '"instances": [[1, 2, true]]}', "Type: True is not of expected type: float"),
        (TRIPLE + '"instances": [[1, 2, 1e400]]}', "Number too big to be stored in double."),
        (TRIPLE + '"inputs": {"y": [[1, 2, 3]]}}', "Missing named input: x in 'inputs' object."),
        (TRIPLE + '"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}', "expecting only one of"),
        (TRIPLE + '"instances": []}', "No values in 'instances' array"),
        (TRIPLE + '"instances": [{"x": [1, 2, 3], "z": 1}]}', "does not have named input: z"),
        ('{"signature_name": 3, "instances": [1]}', "'signature_name' key must be a string"),
    ],
)
def test_bad_predict_bodies(client: Client, body: str, phrase: str) -> None:
    reply = client.post("/v1/models/echo:predict", body)
    assert_json_reply(reply, 400)
    assert phrase in reply.error


def test_shapes_are_left_to_the_runtime(client: Client) -> None:
    """TF Serving checks no shape against the signature: a [1, 2] row into triple's [-1, 3]
    input reaches the Session, whose element-wise kernel takes it."""
    reply = client.post("/v1/models/echo:predict", TRIPLE + '"instances": [[1, 2]]}')
    assert_json_reply(reply, 200)
    assert reply.json == {"predictions": [[3.0, 6.0]]}


def test_big_numbers_and_b64(client: Client) -> None:
    reply = client.post(
        "/v1/models/echo:predict",
        '{"signature_name": "wide", "inputs": {"l": [9223372036854775808], "d": [1]}}',
    )
    assert_json_reply(reply, 400)
    assert "is not of expected type: int64" in reply.error
    reply = client.post(
        "/v1/models/echo:predict",
        '{"signature_name": "wide", "inputs": {"l": [1], "d": [1e308, 18446744073709551616]}}',
    )
    assert_json_reply(reply, 200)
    assert reply.json["outputs"]["d_out"][1] == pytest.approx(2**64 / 3)
    bad = {"instances": [{"i": 1, "f": [1, 2], "s": {"b64": "a-_="}, "b": True}]}
    reply = client.post("/v1/models/echo:predict", bad)
    assert_json_reply(reply, 400)
    assert "Unable to base64 decode" in reply.error


def test_unknown_model_version_label(client: Client) -> None:
    body = '{"inputs": [1]}'
    cases = [
        ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/echo/versions/9:predict",
            404,
            "Servable not found for request: Specific(echo, 9)",
        ),
        ("/v1/models/echo/labels/none:predict", 400, "Unrecognized servable version label: none"),
        ("/v1/models/nope:classify", 404, "Servable not found for request: Latest(nope)"),
    ]
    for path, status, message in cases:
        reply = client.post(path, body if "predict" in path else '{"examples": [{}]}')
        assert_json_reply(reply, status)
        assert reply.error == message
    for path, message in [
        ("/v1/models/nope/metadata", "Servable not found for request: Latest(nope)"),
        ("/v1/models/echo/versions/9", "Could not find version 9 of model echo"),
        ("/v1/models/nope", "Could not find any versions of model nope"),
        ("/v1/models/echo/labels/none/metadata", "Unrecognized servable version label: none"),
    ]:
        reply = client.get(path)
        assert_json_reply(reply, 400 if "label" in message else 404)
        assert reply.error == message
    # Bad JSON beats an unknown model (spec 2.4).
    reply = client.post("/v1/models/nope:predict", "{")
    assert_json_reply(reply, 400)


def test_names_cannot_escape_base_paths(client: Client) -> None:
    for raw in ("..%2F..%2Fetc", "%2E%2E", "echo%2F..%2Fecho"):
        reply = client.get(f"/v1/models/{raw}")
        assert_json_reply(reply, 404)
        assert reply.error.startswith("Could not find any versions of model ")


def test_bad_url_escapes_and_versions(client: Client) -> None:
    for method, path in [
        ("POST", "/v1/models/bad%zzname:predict"),
        ("GET", "/v1/models/bad%ffname"),
        ("GET", "/v1/models/echo/labels/x%4"),
        ("POST", "/v1/models/echo/versions/99999999999999999999:predict"),
    ]:
        reply = client.call(method, path, "{}" if method == "POST" else None)
        assert_json_reply(reply, 400)
        assert reply.body == b""
    assert (
        client.get("/v1/models/echo/versions/0001").json["model_version_status"][0]["version"]
        == "1"
    )


def test_methods_and_non_api_paths(client: Client) -> None:
    for method in ("PUT", "DELETE", "PATCH", "TRACE"):
        reply = client.call(method, "/v1/models/echo")
        assert_json_reply(reply, 400)
        assert reply.error == f"Malformed request: {method} /v1/models/echo"
    reply = client.call("HEAD", "/v1/models/echo")
    assert reply.status == 400
    reply = client.get("/v2/models/echo")
    assert reply.status == 404 and "text/html" in (reply.content_type or "")
    reply = client.get("/%3Cscript%3E<b>")
    assert reply.status == 404 and b"<b>" not in reply.body and b"&lt;b&gt;" in reply.body
    reply = client.call("OPTIONS", "/v1/models/echo")
    assert reply.status == 400 and reply.body == b""
    reply = client.call("OPTIONS", "/v1/models/echo", headers={"Origin": "http://example"})
    assert reply.status == 200 and reply.body == b""


def test_cors_headers_with_the_flag(client: Client) -> None:
    """The shared server runs with --rest_api_enable_cors_support (spec 2.9)."""
    cors = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "POST, GET",
        "Access-Control-Allow-Headers": "Content-Type",
    }
    for reply in (
        client.get("/v1/models/echo"),
        client.get("/v1/models/nope"),
        client.call("OPTIONS", "/v1/models/echo", headers={"Origin": "https://example"}),
    ):
        for key, value in cors.items():
            assert reply.headers.get(key) == value


def test_metadata_routes(client: Client) -> None:
    for path in ("/v1/models/echo/metadata", "/v1/models/echo/versions/1/metadata"):
        reply = client.get(path)
        assert_json_reply(reply, 200)
        doc = json.loads(reply.body)
        assert doc["model_spec"] == {"name": "echo", "signature_name": "", "version": "1"}
        sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["f"]["dtype"] == "DT_FLOAT"
        assert sig["inputs"]["f"]["tensor_shape"]["dim"] == [
            {"size": "-1", "name": ""},
            {"size": "2", "name": ""},
        ]
    reply = client.get(f"/v1/models/{HP2}/labels/Version_Label/metadata")
    assert_json_reply(reply, 200)
    assert json.loads(reply.body)["model_spec"]["version"] == "123"


def test_gzip_bodies(client: Client) -> None:
    body = gzip.compress(b'{"inputs": [2.0, 3.0]}')
    reply = client.call(
        "POST", "/v1/models/default:predict", body, headers={"Content-Encoding": "gzip"}
    )
    assert_json_reply(reply, 200)
    assert reply.json == {"outputs": [3.0, 3.5]}
    bomb = gzip.compress(b'{"inputs": [2.0], "pad": "' + b" " * (101 * 1024 * 1024) + b'"}', 1)
    reply = client.call(
        "POST", "/v1/models/default:predict", bomb, headers={"Content-Encoding": "gzip"}
    )
    assert_json_reply(reply, 400)
    assert "exceeds the limit of 104857600 bytes" in reply.error
    reply = client.call(
        "POST",
        "/v1/models/default:predict",
        b"\x1f\x8bnot gzip",
        headers={"Content-Encoding": "gzip"},
    )
    assert_json_reply(reply, 400)


def test_oversized_body_is_refused_before_reading(server: EmbeddedServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/models/echo:predict")
        conn.putheader("Content-Length", str(2**40))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert resp.getheader("Content-Type") == "application/json"
        assert "exceeds the limit" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_timeout_is_504(client: Client) -> None:
    seconds = TIMEOUT_MS / 1000 + 0.5
    reply = client.post(
        "/v1/models/echo:predict", f'{{"signature_name": "busy", "inputs": {seconds}}}'
    )
    assert_json_reply(reply, 504)
    assert "Deadline" in reply.error


def test_mnist_digits_over_rest(client: Client, tiny_mnist_repo: Any) -> None:
    images = tiny_mnist_repo.test_images[:8]
    reply = client.post("/v1/models/mnist:predict", {"instances": images.tolist()})
    assert_json_reply(reply, 200)
    preds = reply.json["predictions"]
    scores = np.array([p["scores"] if isinstance(p, dict) else p for p in preds], np.float32)
    assert scores.shape == (8, 10)
    np.testing.assert_array_equal(scores.argmax(1), tiny_mnist_repo.predictions[:8])
    # TF Serving's mnist example signature, columnar.
    reply = client.post(
        "/v1/models/mnist:predict",
        {"signature_name": "predict_images", "inputs": {"images": images[:2].tolist()}},
    )
    assert_json_reply(reply, 200)
    out = reply.json["outputs"]
    scores = np.array(out["scores"] if isinstance(out, dict) else out, np.float32)
    np.testing.assert_array_equal(scores.argmax(1), tiny_mnist_repo.predictions[:2])


def test_concurrent_requests(client: Client, tiny_mnist_repo: Any) -> None:
    images = tiny_mnist_repo.test_images[:16]

    def one(i: int) -> int:
        reply = client.post("/v1/models/mnist:predict", {"instances": [images[i].tolist()]})
        assert reply.status == 200, reply.body[:300]
        pred = reply.json["predictions"][0]
        return int(np.argmax(pred["scores"] if isinstance(pred, dict) else pred))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(16)))
    assert got == tiny_mnist_repo.predictions[:16].tolist()


def test_z_metrics_scrape_and_still_serving(client: Client) -> None:
    """Runs last in this module (name order): after all the bad input above."""
    reply = client.get("/monitoring/prometheus/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain")
    text = reply.body.decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="echo",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="echo",status="INVALID_ARGUMENT"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="mnist",API="predict",'
        'entrypoint="REST",le="10"}'
    ) in text
    assert (
        ':tensorflow:serving:request_latency_count{model_name="echo",API="",entrypoint="REST"}'
        in text
    )
    assert ":tensorflow:cc:saved_model:load_attempt_count{" in text
    reply = client.get("/monitoring/prometheus/metrics?x=1")
    assert reply.status == 400
    assert reply.body.decode() == (
        "Unexpected path: /monitoring/prometheus/metrics?x=1. Should be "
        "/monitoring/prometheus/metrics"
    )
    reply = client.post("/v1/models/default:predict", '{"instances": [2.0]}')
    assert_json_reply(reply, 200)
    assert reply.json == {"predictions": [3.0]}
