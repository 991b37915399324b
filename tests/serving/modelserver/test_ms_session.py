"""The Session runtime against a real server: a TF1 SavedModel written here with tf.compat.v1
(variables, an asset-backed lookup table initialized by main_op, SignatureDef defaults), run
over gRPC on TCP, over gRPC on the Unix socket and over HTTP.

TF Serving checks only the number of inputs (fewer with SignatureDef defaults) and their
aliases; shapes are judged by the Session's kernels, so a [1] input into a [-1, 1] placeholder
answers.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from clients import codec
from serving.modelserver.process import EmbeddedServerProcess

VOCAB = ["a", "b", "c"]
SCALE_DEFAULT = 3.0  # the SignatureDef default; the graph's own default is 1.0


def build_tf1_model(export_dir: str, scratch: str) -> str:
    """y = 0.5 * x + 2 with x [-1, 1]; ``scaled`` = y * scale (scale defaults to 3.0 in the
    SignatureDef); ``matmul`` m [-1, 2] x [[1], [2]]; ``lookup`` maps words through a vocabulary
    asset (the source file is deleted after saving: only the SavedModel's copy remains)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    vocab_path = os.path.join(scratch, "vocab.txt")
    with open(vocab_path, "w") as fh:
        fh.write("\n".join(VOCAB) + "\n")
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        y = tf.add(tf.multiply(a, x), b, name="y")
        scale = v1.placeholder_with_default(tf.constant(1.0), [], name="scale")
        scaled = tf.multiply(y, scale, name="scaled")
        m = v1.placeholder(tf.float32, [None, 2], name="m")
        product = tf.matmul(m, tf.constant([[1.0], [2.0]]), name="product")
        asset = tf.constant(vocab_path, name="vocab_asset")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                asset,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            -1,
        )
        words = v1.placeholder(tf.string, [None], name="words")
        ids = table.lookup(words)

        sig = v1.saved_model.signature_def_utils
        scaled_sig = sig.predict_signature_def({"x": x, "scale": scale}, {"y": scaled})
        scaled_sig.defaults["scale"].CopyFrom(tf.make_tensor_proto(SCALE_DEFAULT, tf.float32))
        signatures = {
            "serving_default": sig.predict_signature_def({"x": x}, {"y": y}),
            "scaled": scaled_sig,
            "matmul": sig.predict_signature_def({"m": m}, {"product": product}),
            "lookup": sig.predict_signature_def({"words": words}, {"ids": ids}),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=v1.tables_initializer(),
            )
            builder.save()
    os.remove(vocab_path)
    return export_dir


@pytest.fixture(scope="module")
def tf1_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf1")
    scratch = tmp_path_factory.mktemp("tf1_scratch")
    build_tf1_model(str(root / "tf1" / "7"), str(scratch))
    socket_path = str(tmp_path_factory.mktemp("sock") / "tf1.sock")
    server = EmbeddedServerProcess(
        [f"--grpc_socket_path={socket_path}"], model_name="tf1", model_base_path=root / "tf1"
    )
    server.start()
    server.socket_path = socket_path
    yield server
    assert server.stop() == 0, server.log_text()[-3000:]


@pytest.fixture(scope="module", params=["tcp", "unix"])
def stub(request, tf1_server):
    target = tf1_server.grpc_target if request.param == "tcp" else f"unix:{tf1_server.socket_path}"
    channel = grpc.insecure_channel(target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict(stub, inputs, signature=""):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "tf1"
    req.model_spec.signature_name = signature
    for key, arr in inputs.items():
        codec.fill_tensor_proto(req.inputs[key], np.asarray(arr))
    resp = stub.Predict(req, timeout=30)
    return {k: codec.tensor_proto_to_ndarray(v) for k, v in resp.outputs.items()}, resp


def rpc_error(stub, inputs, signature=""):
    with pytest.raises(grpc.RpcError) as info:
        predict(stub, inputs, signature)
    return info.value.code(), info.value.details()


def test_a_rank_1_input_into_a_minus1_by_1_placeholder_answers(stub):
    out, resp = predict(stub, {"x": np.array([1.0], np.float32)})
    np.testing.assert_allclose(out["y"], [2.5])
    assert resp.model_spec.version.value == 7
    out, _ = predict(stub, {"x": np.array([[1.0], [4.0]], np.float32)})
    np.testing.assert_allclose(out["y"], [[2.5], [4.0]])


def test_an_input_with_a_signature_default_may_be_left_out(stub):
    out, _ = predict(stub, {"x": np.array([[2.0]], np.float32)}, "scaled")
    np.testing.assert_allclose(out["y"], [[3.0 * SCALE_DEFAULT]])  # the SignatureDef's default
    out, _ = predict(stub, {"x": np.array([[2.0]], np.float32), "scale": np.float32(2.0)}, "scaled")
    np.testing.assert_allclose(out["y"], [[6.0]])


def test_input_count_and_alias_errors(stub):
    assert rpc_error(stub, {}) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    )
    # Fewer than the signature is fine with defaults, but the alias must still be known.
    code, message = rpc_error(stub, {"nope": np.array([[2.0]], np.float32)}, "scaled")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("Signature input alias: x(feed name: x:0) not found in request")
    assert message.endswith("Inputs expected to be in the request {nope}, or default input alias set: scale")
    code, message = rpc_error(
        stub, {"x": np.array([[2.0]], np.float32), "zzz": np.float32(1.0)}, "scaled"
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Inputs contains invalid name. Used request inputs: x, request input: x,zzz",
    )


def test_dtype_is_checked_with_tf_servings_message(stub):
    assert rpc_error(stub, {"x": np.array([1], np.int32)}) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but int32 is provided",
    )


def test_shapes_are_judged_by_the_runtime(stub):
    # A rank-1 tensor cannot go into MatMul: the kernel says so, with TF's INVALID_ARGUMENT.
    code, message = rpc_error(stub, {"m": np.array([1.0, 2.0], np.float32)}, "matmul")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("In[0] ndims must be >= 2")
    out, _ = predict(stub, {"m": np.array([[1.0, 1.0], [0.0, 2.0]], np.float32)}, "matmul")
    np.testing.assert_allclose(out["product"], [[3.0], [4.0]])


def test_asset_backed_table_is_initialized_by_main_op(stub):
    out, _ = predict(stub, {"words": np.array([b"b", b"zzz", b"a"], object)}, "lookup")
    assert out["ids"].tolist() == [1, -1, 0]


def test_empty_batch_answers_without_running(stub):
    out, _ = predict(stub, {"x": np.zeros((0, 1), np.float32)})
    assert out["y"].shape == (0, 1)


def test_model_service_over_the_unix_socket(tf1_server):
    with grpc.insecure_channel(f"unix:{tf1_server.socket_path}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "tf1"
        status = stub.GetModelStatus(req, timeout=30).model_version_status
    assert [(s.version, s.state) for s in status] == [(7, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def rest(server, path, body):
    req = urllib.request.Request(
        server.rest_url + path, data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_rest_predict_runs_in_the_session(tf1_server):
    assert rest(tf1_server, "/v1/models/tf1:predict", {"instances": [[1.0], [4.0]]}) == (
        200,
        {"predictions": [[2.5], [4.0]]},
    )
    # A [1] input into the [-1, 1] placeholder answers over REST too.
    assert rest(tf1_server, "/v1/models/tf1:predict", {"inputs": [1.0]}) == (200, {"outputs": [2.5]})
    # REST names every input of the signature (json_tensor.cc), defaults or not: as in TF
    # Serving, SignatureDef defaults are a gRPC-only convenience.
    status, body = rest(tf1_server, "/v1/models/tf1:predict", {"signature_name": "scaled", "inputs": {"x": [[2.0]]}})
    assert (status, body) == (400, {"error": "Missing named input: scale in 'inputs' object."})
    body = {"signature_name": "scaled", "inputs": {"x": [[2.0]], "scale": 2.0}}
    assert rest(tf1_server, "/v1/models/tf1:predict", body) == (200, {"outputs": [[6.0]]})
    status, body = rest(tf1_server, "/v1/models/tf1:predict", {"signature_name": "lookup", "instances": ["c", "q"]})
    assert (status, body) == (200, {"predictions": [2, -1]})
