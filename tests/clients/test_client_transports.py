"""Both clients against real loopback gRPC / HTTP servers that behave like TF Serving."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from client_fakes import Behaviour, FakeGrpcServer, FakeRestServer

from clients import (
    NO_RETRY,
    DeadlineExceeded,
    GrpcClient,
    InvalidInput,
    ModelNotFound,
    ModelSpec,
    ResourceExhausted,
    RestClient,
    RetryPolicy,
    ServerError,
    Unavailable,
    Unimplemented,
    connect,
)

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def behaviour():
    return Behaviour()


@pytest.fixture
def grpc_server(behaviour):
    with FakeGrpcServer(behaviour) as server:
        yield server


@pytest.fixture
def rest_server(behaviour):
    with FakeRestServer(behaviour) as server:
        yield server


@pytest.fixture(params=["grpc", "rest", "rest-columnar"])
def client(request, grpc_server, rest_server):
    if request.param == "grpc":
        c = GrpcClient(grpc_server.target, "mnist", retry=FAST_RETRY, timeout_s=5)
    else:
        c = RestClient(
            rest_server.url,
            "mnist",
            retry=FAST_RETRY,
            timeout_s=5,
            columnar=request.param == "rest-columnar",
        )
    with c:
        yield c


def digits(classes) -> np.ndarray:
    """Fake-MNIST images whose fake class is ``classes[i]``."""
    images = np.zeros((len(classes), 28, 28), np.float32)
    flat = images.reshape(len(classes), -1)
    flat[np.arange(len(classes)), classes] = 1.0
    return images


def test_predict_digits_latest_version_and_labels(client):
    wanted = [3, 0, 9, 5]
    latest = client.predict_digits(digits(wanted))
    assert latest.classes.tolist() == [(c + 1) % 10 for c in wanted]  # version 2
    assert latest.probabilities.shape == (4, 10) and latest.probabilities.dtype == np.float32
    np.testing.assert_allclose(latest.probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert client.predict_digits(digits(wanted), version=1).classes.tolist() == wanted
    assert client.predict_digits(digits(wanted), label="stable").classes.tolist() == wanted
    assert client.predict_digits(digits(wanted), label="canary").classes.tolist() == [
        (c + 1) % 10 for c in wanted
    ]
    # uint8 pictures and a single 28x28 picture work too.
    single = client.predict_digits((digits([7])[0] * 255).astype(np.uint8), version=1)
    assert single.classes.tolist() == [7]
    assert single.confidence.shape == (1,)


def test_predict_named_outputs_have_signature_dtypes(client):
    images = digits([1, 2]).reshape(2, 784)
    result = client.predict({"images": images}, version=1)
    assert set(result.outputs) == {"scores", "classes"}
    assert result["scores"].dtype == np.float32 and result["scores"].shape == (2, 10)
    assert result["classes"].dtype == np.int64 and result["classes"].tolist() == [1, 2]
    assert result.signature_name == "serving_default"
    if client.transport == "grpc":
        assert result.version == 1
    # A bare array for a single-input signature; a signature with one output.
    only = client.predict(images, signature="predict_images", version=1)
    assert list(only.outputs) == ["scores"]
    filtered = client.predict({"images": images}, output_filter=["classes"], version=1)
    assert list(filtered.outputs) == ["classes"]


def test_bytes_round_trip(client):
    data = np.array([b"\x89PNG\x00\xff", b"plain", b""], dtype=object)
    result = client.predict({"data": data}, signature="echo_bytes")
    assert result["data_bytes"].dtype == object
    assert result["data_bytes"].tolist() == data.tolist()


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"model": "nope"}, ModelNotFound, "Servable not found for request: Latest(nope)"),
        ({"version": 9}, ModelNotFound, "Specific(mnist, 9)"),
        ({"label": "beta"}, ModelNotFound, "Unrecognized servable version label: beta"),
    ],
)
def test_missing_models_raise_model_not_found(client, kwargs, error, message):
    with pytest.raises(error) as info:
        client.predict({"images": digits([1]).reshape(1, 784)}, **kwargs)
    assert message in info.value.message


def test_bad_input_and_server_errors_are_typed(client, behaviour):
    with pytest.raises(InvalidInput, match="input size does not match"):
        client.predict({"pixels": np.zeros((1, 784), np.float32)}, signature="predict_images")
    behaviour.abort = ("INTERNAL", "kaboom")
    with pytest.raises(ServerError, match="kaboom"):
        client.predict({"images": np.zeros((1, 784), np.float32)})
    behaviour.abort = ("RESOURCE_EXHAUSTED", "queue is full")
    with pytest.raises(ResourceExhausted, match="queue is full"):
        client.predict({"images": np.zeros((1, 784), np.float32)})


def test_retries_unavailable_then_succeeds(client, behaviour):
    client.signature(version=1)  # metadata first, so only predict calls are counted below
    behaviour.fail_first = 2
    result = client.predict_digits(digits([4]), version=1)
    assert result.classes.tolist() == [4]
    assert behaviour.calls == 3


def test_retries_are_bounded(client, behaviour):
    client.signature()
    behaviour.fail_first = 100
    with pytest.raises(Unavailable, match="warming up"):
        client.predict_digits(digits([4]))
    assert behaviour.calls == FAST_RETRY.max_attempts


def test_no_retry_on_errors_that_are_not_unavailable(client, behaviour):
    client.signature()
    behaviour.abort = ("INVALID_ARGUMENT", "bad")
    with pytest.raises(InvalidInput):
        client.predict_digits(digits([4]))
    assert behaviour.calls == 1


def test_deadline_exceeded(client, behaviour):
    client.signature()
    behaviour.delay_s = 2.0
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.predict_digits(digits([4]), timeout_s=0.3)
    assert time.monotonic() - start < 1.9  # the call gave up before the server answered
    assert behaviour.calls == 1


def test_status_and_metadata(client):
    statuses = client.model_status()
    assert [(s.version, s.state, s.error_code) for s in statuses] == [
        (2, "AVAILABLE", "OK"),
        (1, "AVAILABLE", "OK"),
    ]
    assert [s.version for s in client.model_status(version=1)] == [1]
    with pytest.raises(ModelNotFound, match="Could not find version 5"):
        client.model_status(version=5)
    meta = client.model_metadata(version=1)
    assert meta.model_name == "mnist" and meta.version == 1
    sig = meta.signatures["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["images"].dtype == "DT_FLOAT" and sig.inputs["images"].shape == (-1, 784)
    assert sig.outputs["classes"].dtype == "DT_INT64"
    with pytest.raises(ModelNotFound):
        client.model_metadata(model="other")


def test_classify_and_regress(client):
    examples = [{"pixels": [0.25, 0.5, 0.75]}, {"pixels": np.array([1.0, 0.0, 0.5])}]
    results = client.classify(examples)
    assert results == [
        [("0", 0.25), ("1", 0.5), ("2", 0.75)],
        [("0", 1.0), ("1", 0.0), ("2", 0.5)],
    ]
    assert client.regress([{"x": [1.5, 2.0]}, {"x": 0.5}]) == [3.5, 0.5]


def test_per_call_model_spec_overrides():
    spec = ModelSpec("mnist", label="stable", signature="predict_images")
    assert spec.with_overrides(version=3) == ModelSpec("mnist", 3, None, "predict_images")
    assert spec.with_overrides(signature="") == ModelSpec("mnist", None, "stable", "")
    with pytest.raises(ValueError):
        ModelSpec("mnist", version=1, label="x")
    with pytest.raises(ValueError):
        ModelSpec("")
    with pytest.raises(ValueError, match="no model given"), GrpcClient("127.0.0.1:1") as c:
        c.predict({"x": np.zeros(1)})


# ---------------------------------------------------------------------- server not up yet


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_retries_until_a_late_server_comes_up(transport):
    port = free_port()
    target = f"127.0.0.1:{port}" if transport == "grpc" else f"http://127.0.0.1:{port}"
    retry = RetryPolicy(max_attempts=60, initial_backoff_s=0.05, max_backoff_s=0.2)
    # Nothing listens yet: without retries the call fails at once, as Unavailable.
    with connect(target, "mnist", retry=NO_RETRY, timeout_s=5) as c, pytest.raises(Unavailable):
        c.model_status()
    box = {}

    def later():
        time.sleep(0.6)
        server = FakeGrpcServer(port=port) if transport == "grpc" else FakeRestServer(port=port)
        box["server"] = server.start()

    thread = threading.Thread(target=later)
    thread.start()
    try:
        with connect(target, "mnist", retry=retry, timeout_s=20) as c:
            result = c.predict_digits(digits([6]), version=1)
        assert result.classes.tolist() == [6]
    finally:
        thread.join()
        box["server"].stop()


# ---------------------------------------------------------------------- gRPC specifics


def test_reload_config_grpc_only(grpc_server, rest_server, behaviour):
    with GrpcClient(grpc_server.target, "mnist") as c:
        c.reload_config(
            'model_config_list { config { name: "mnist" base_path: "/models/mnist" '
            'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }'
        )
        cfg = behaviour.reloads[-1].model_config_list.config[0]
        assert (cfg.name, cfg.version_labels["stable"]) == ("mnist", 1)
        twice = (
            'model_config_list { config { name: "mnist" base_path: "/a" } '
            'config { name: "mnist" base_path: "/b" } }'
        )
        with pytest.raises(InvalidInput, match="multiple times"):
            c.reload_config(twice)
    with RestClient(rest_server.url, "mnist") as c, pytest.raises(Unimplemented):
        c.reload_config("model_config_list {}")


def test_large_batches_pass_the_default_message_limit(grpc_server):
    batch = digits(np.arange(2000) % 10)  # 6.3 MB of float32, over gRPC's 4 MiB default
    with GrpcClient(grpc_server.target, "mnist") as c:
        assert (
            c.predict_digits(batch, version=1).classes.tolist() == (np.arange(2000) % 10).tolist()
        )
    with (
        GrpcClient(grpc_server.target, "mnist", max_message_bytes=1 << 20, retry=NO_RETRY) as c,
        pytest.raises(ResourceExhausted),
    ):
        c.predict({"images": batch.reshape(-1, 784)})


def test_custom_channel_options_reach_the_channel(grpc_server):
    with GrpcClient(
        grpc_server.target, "mnist", options={"grpc.primary_user_agent": "mnist-cli-test"}
    ) as c:
        c.model_status()
    assert grpc_server.user_agents[-1].startswith("mnist-cli-test")


def test_round_robin_spreads_calls_over_all_addresses():
    with FakeGrpcServer(server_id="a") as one, FakeGrpcServer(server_id="b") as two:
        target = f"ipv4:127.0.0.1:{one.port},127.0.0.1:{two.port}"
        with GrpcClient(target, "mnist", round_robin=True) as c:
            for _ in range(20):
                c.model_status()
        assert one.hits >= 5 and two.hits >= 5, (one.hits, two.hits)
        one.hits = two.hits = 0
        with GrpcClient(target, "mnist") as c:  # pick_first: one connection, one server
            for _ in range(10):
                c.model_status()
        assert sorted([one.hits, two.hits]) == [0, 10]


def test_dns_target_with_round_robin(grpc_server):
    with GrpcClient(f"dns:///localhost:{grpc_server.port}", "mnist", round_robin=True) as c:
        assert c.predict_digits(digits([2]), version=1).classes.tolist() == [2]


def test_target_parsing():
    from clients.grpc_client import parse_grpc_target

    assert parse_grpc_target("grpc://h:1") == ("h:1", False)
    assert parse_grpc_target("grpcs://h:1/") == ("h:1", True)
    assert parse_grpc_target("dns:///svc.ns:8500") == ("dns:///svc.ns:8500", False)
    with pytest.raises(ValueError):
        parse_grpc_target("ftp://h:1")
    with pytest.raises(ValueError):
        RestClient("127.0.0.1:8501")
    assert isinstance(connect("http://127.0.0.1:1"), RestClient)
    assert isinstance(connect("grpc://127.0.0.1:1"), GrpcClient)


def test_rest_reuses_pooled_connections(rest_server):
    with RestClient(rest_server.url, "mnist") as c:
        for _ in range(10):
            c.model_status()
            c.predict_digits(digits([1]), version=1)
    assert len(rest_server.peers) == 21  # 10 x (status + predict) + one metadata lookup
    assert len(set(rest_server.peers)) == 1  # one keep-alive connection served them all
