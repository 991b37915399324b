"""The gRPC surface against a real server process: PredictionService and ModelService."""

from __future__ import annotations

import json
import urllib.request

import grpc
import ms_models
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from clients import codec

BIG = 2**31 - 1


@pytest.fixture(scope="module")
def channel(shared_server):
    ch = grpc.insecure_channel(
        shared_server.grpc_target,
        options=[("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)],
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name, inputs, *, signature="", version=None, label=None, content=True):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for key, arr in inputs.items():
        codec.fill_tensor_proto(req.inputs[key], arr, use_tensor_content=content)
    return req


def outputs(resp):
    return {k: codec.tensor_proto_to_ndarray(v) for k, v in resp.outputs.items()}


def rpc_error(fn, *args):
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=30)
    return info.value.code(), info.value.details()


ECHO_INPUTS = {
    "i": np.array([1, -2, 3], np.int32),
    "f": np.array([[0.5, 1.5], [2.5, 3.5], [-1.0, 1e-3]], np.float32),
    "s": np.array([b"a", b"", "\u00e9".encode()], dtype=object),
    "b": np.array([True, False, True]),
}


@pytest.mark.parametrize("content", [True, False], ids=["tensor_content", "typed_fields"])
def test_echo_all_dtypes_in_typed_fields(stub, content):
    resp = stub.Predict(predict_request("echo", ECHO_INPUTS, content=content), timeout=30)
    assert (resp.model_spec.name, resp.model_spec.version.value) == ("echo", 1)
    assert resp.model_spec.signature_name == "serving_default"
    # TF Serving answers in the typed fields, never tensor_content (without the flag).
    assert all(not t.tensor_content for t in resp.outputs.values())
    assert list(resp.outputs["f_out"].float_val) == pytest.approx(ECHO_INPUTS["f"].ravel().tolist())
    out = outputs(resp)
    np.testing.assert_array_equal(out["i_out"], ECHO_INPUTS["i"])
    np.testing.assert_array_equal(out["f_out"], ECHO_INPUTS["f"])
    assert out["s_out"].tolist() == ECHO_INPUTS["s"].tolist()
    np.testing.assert_array_equal(out["b_out"], ~ECHO_INPUTS["b"])
    assert [d.size for d in resp.outputs["f_out"].tensor_shape.dim] == [3, 2]


@pytest.mark.parametrize(
    ("spec", "version"),
    [({}, 2), ({"version": 1}, 1), ({"label": "stable"}, 1), ({"label": "canary"}, 2)],
)
def test_versions_and_labels(stub, spec, version):
    x = np.array([10.0, 20.0], np.float32)
    resp = stub.Predict(predict_request("ver", {"x": x}, **spec), timeout=30)
    assert resp.model_spec.version.value == version
    out = outputs(resp)
    np.testing.assert_array_equal(out["y"], x + version)
    assert out["version"].tolist() == [version, version]


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (
            {"name": "ver", "version": 7},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(ver, 7)",
        ),
        (
            {"name": "ver", "label": "nope"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            {"name": "ver", "signature": "nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        # Names and labels are only ever looked up, never joined into paths.
        (
            {"name": "../ver/1"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(../ver/1)",
        ),
        (
            {"name": "ver", "label": "../../etc"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: ../../etc",
        ),
    ],
)
def test_resolution_errors(stub, request_kwargs, code, message):
    name = request_kwargs.pop("name")
    req = predict_request(name, {"x": np.zeros(1, np.float32)}, **request_kwargs)
    assert rpc_error(stub.Predict, req) == (code, message)


def test_missing_model_spec(stub):
    assert rpc_error(stub.Predict, predict_pb2.PredictRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )


def test_input_errors(stub):
    # As many inputs as the signature but under another name: saved_model/util.cc's
    # GetInputValues answers (the count check of predict_util.cc passes).
    code, message = rpc_error(stub.Predict, predict_request("ver", {"z": np.zeros(1, np.float32)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (
        "Signature input alias: x(feed name: serving_default_x:0) not found in request and no "
        "default value provided. Inputs expected to be in the request {z}, or default input "
        "alias set: "
    )
    two = {"x": np.zeros(1, np.float32), "z": np.zeros(1, np.float32)}
    code, message = rpc_error(stub.Predict, predict_request("ver", two))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}."
    )
    code, message = rpc_error(stub.Predict, predict_request("ver", {"x": np.zeros(2, np.int64)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "Expects arg[0] to be float but int64 is provided"


def test_bad_tensor_content_is_invalid_argument(stub):
    req = predict_request("ver", {"x": np.zeros(4, np.float32)})
    req.inputs["x"].tensor_content = b"\x00" * 7
    assert rpc_error(stub.Predict, req)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_output_filter(stub):
    req = predict_request("ver", {"x": np.ones(2, np.float32)})
    req.output_filter.append("y")
    assert set(stub.Predict(req, timeout=30).outputs) == {"y"}
    req.output_filter.append("y")
    assert rpc_error(stub.Predict, req) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: y",
    )
    del req.output_filter[:]
    req.output_filter.append("nope")
    code, message = rpc_error(stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("output tensor alias not found in signature: nope")


def test_empty_batch_is_answered_without_running_the_model(stub, tiny_mnist_repo):
    resp = stub.Predict(predict_request("ver", {"x": np.zeros(0, np.float32)}), timeout=30)
    assert outputs(resp)["y"].shape == (0,)
    req = predict_request("mnist", {"images": np.zeros((0, 784), np.float32)}, signature="predict_images")
    assert outputs(stub.Predict(req, timeout=30))["scores"].shape == (0, 10)


def test_long_messages_are_truncated(stub):
    name = "m" * 3000
    code, message = rpc_error(stub.Predict, predict_request(name, {"x": np.zeros(1, np.float32)}))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message.endswith("...TRUNCATED")
    assert len(message) == 1024 + len("...TRUNCATED")


def test_mnist_example_client_logic(stub, tiny_mnist_repo):
    """TF Serving's example/mnist_client.py: predict_images, images [1, 784], outputs['scores']."""
    for i in range(8):
        image = tiny_mnist_repo.test_images[i]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.inputs["images"].CopyFrom(
            codec.fill_tensor_proto(predict_pb2.PredictRequest().inputs["images"], image.reshape(1, 784))
        )
        result = stub.Predict(request, 5.0)
        scores = np.array(result.outputs["scores"].float_val)
        assert scores.shape == (10,)
        assert int(np.argmax(scores)) == tiny_mnist_repo.predictions[i]


def test_mnist_rest_instances(shared_server, tiny_mnist_repo):
    body = json.dumps({"instances": tiny_mnist_repo.test_images[:4].tolist()}).encode()
    req = urllib.request.Request(
        f"{shared_server.rest_url}/v1/models/mnist:predict", data=body, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        predictions = json.loads(resp.read())["predictions"]
    assert len(predictions) == 4
    digits = [int(np.argmax(p["scores"] if isinstance(p, dict) else p)) for p in predictions]
    assert digits == tiny_mnist_repo.predictions[:4].tolist()


def _examples_input(target, xs, context_x=None):
    for x in xs:
        target.example_list.examples.add().ParseFromString(ms_models.example(x)) if context_x is None else None
    if context_x is not None:
        lst = target.example_list_with_context
        lst.context.ParseFromString(ms_models.example(context_x))
        for x in xs:
            ex = lst.examples.add()
            if x is not None:
                ex.ParseFromString(ms_models.example(x))


def test_classify_and_regress(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "ver"
    req.model_spec.signature_name = "classify_x"
    req.model_spec.version.value = 1
    _examples_input(req.input, [3.0, 4.0])
    resp = stub.Classify(req, timeout=30)
    assert resp.model_spec.version.value == 1
    rows = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert rows == [[("x", 3.0), ("version", 1.0)], [("x", 4.0), ("version", 1.0)]]

    reg = regression_pb2.RegressionRequest()
    reg.model_spec.name = "ver"
    reg.model_spec.signature_name = "regress_x"
    # The context's feature fills in for an example that lacks it.
    _examples_input(reg.input, [5.0, None], context_x=7.0)
    resp = stub.Regress(reg, timeout=30)
    assert [r.value for r in resp.result.regressions] == [12.0, 16.0]

    reg.model_spec.signature_name = "nope"
    assert rpc_error(stub.Regress, reg) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )


def test_multi_inference(stub):
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x", "tensorflow/serving/classify"), ("regress_x", "tensorflow/serving/regress")):
        task = req.tasks.add()
        task.model_spec.name = "ver"
        task.model_spec.signature_name = sig
        task.method_name = method
    _examples_input(req.input, [1.0])
    resp = stub.MultiInference(req, timeout=30)
    assert resp.results[0].classification_result.classifications[0].classes[1].score == 2.0
    assert resp.results[1].regression_result.regressions[0].value == 4.0
    assert all(r.model_spec.version.value == 2 for r in resp.results)
    req.tasks[1].method_name = "tensorflow/serving/predict"
    assert rpc_error(stub.MultiInference, req)[0] == grpc.StatusCode.UNIMPLEMENTED


def test_metadata(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "ver"
    req.model_spec.version.value = 1
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=30)
    assert (resp.model_spec.name, resp.model_spec.version.value) == ("ver", 1)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sig_map)
    sigs = sig_map.signature_def
    assert sigs["classify_x"].method_name == "tensorflow/serving/classify"
    assert sigs["serving_default"].method_name == "tensorflow/serving/predict"
    assert sigs["serving_default"].inputs["x"].dtype == 1
    assert [d.size for d in sigs["serving_default"].inputs["x"].tensor_shape.dim] == [-1]
    del req.metadata_field[:]
    assert rpc_error(stub.GetModelMetadata, req) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    req.metadata_field.append("other")
    assert rpc_error(stub.GetModelMetadata, req) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field other is not supported",
    )


def test_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "ver"
    resp = model_stub.GetModelStatus(req, timeout=30)
    rows = [(s.version, s.state, s.status.error_code) for s in resp.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert rows == [(2, available, 0), (1, available, 0)]
    req.model_spec.version.value = 9
    assert rpc_error(model_stub.GetModelStatus, req) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model ver",
    )
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    assert rpc_error(model_stub.GetModelStatus, req) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


def test_large_messages(stub):
    """A 256 MiB request (TF Serving accepts ~2 GiB) and a 12 MiB typed-field response."""
    x = np.ones(64 * 2**20, np.float32)
    req = predict_request("echo", {"x": x}, signature="count")
    out = outputs(stub.Predict(req, timeout=120))
    assert out["n"].tolist() == [x.size]
    del req, x
    y = np.arange(2**20 * 3, dtype=np.float32).reshape(-1, 3)
    out = outputs(stub.Predict(predict_request("echo", {"x": y}, signature="double"), timeout=120))
    np.testing.assert_array_equal(out["y"], y * 2)


def test_prometheus_metrics_count_grpc_requests(shared_server, stub):
    stub.Predict(predict_request("ver", {"x": np.ones(1, np.float32)}), timeout=30)
    url = f"{shared_server.rest_url}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    assert ':tensorflow:serving:request_count{model_name="ver",status="OK"}' in text
    assert 'entrypoint="GRPC"' in text
    assert ":tensorflow:cc:saved_model:load_attempt_count" in text


def test_deadline_exceeded_and_server_keeps_serving(stub):
    req = predict_request("echo", {"n": np.array([300_000], np.int64)}, signature="spin")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    resp = stub.Predict(predict_request("ver", {"x": np.ones(1, np.float32)}), timeout=30)
    assert resp.model_spec.version.value == 2
