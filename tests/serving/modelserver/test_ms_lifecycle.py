"""Server process lifecycle: ports open only once models are AVAILABLE, a version swap under
gRPC load, reload by RPC and by polling the config file, batching over gRPC, SIGTERM drain."""

from __future__ import annotations

import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from ms_models import copy_version
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from clients import codec
from serving.modelserver.process import EmbeddedServerProcess, free_port


def model_entry(name, base, extra=""):
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def config_text(*entries):
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def predict(stub, name, inputs, signature="", timeout=30):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    for k, v in inputs.items():
        codec.fill_tensor_proto(req.inputs[k], v)
    return stub.Predict(req, timeout=timeout)


def status(model_stub, name):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    resp = model_stub.GetModelStatus(req, timeout=30)
    names = get_model_status_pb2.ModelVersionStatus.State
    return [(s.version, names.Name(s.state)) for s in resp.model_version_status]


def refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(predicate, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def test_startup_swap_reload_and_sigterm_drain(model_store, tmp_path):
    ver_base = tmp_path / "ver"
    ver_base.mkdir()
    echo_base = tmp_path / "echo"
    copy_version(model_store, "echo", 1, echo_base)
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("ver", ver_base)))
    grpc_port, rest_port = free_port(), free_port()
    server = EmbeddedServerProcess(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"],
        grpc_port=grpc_port,
        rest_port=rest_port,
    )
    starter = threading.Thread(target=server.start)
    starter.start()
    try:
        # No version yet: the server waits, with no listener open.
        wait_until(lambda: "No versions of servable ver found" in server.log_text(), what="warning")
        assert refused(grpc_port) and refused(rest_port)
        copy_version(model_store, "ver", 1, ver_base)
        starter.join(120)
        assert server.running and not refused(grpc_port) and not refused(rest_port)

        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        x = {"x": np.array([1.0], np.float32)}
        assert predict(stub, "ver", x).model_spec.version.value == 1

        # --- swap under load: zero failures, never back to the old version ---------------
        # Each client thread keeps its own answers in order: once a thread has been answered
        # by version 2, no later answer to it may come from version 1.
        seen: list[list[int]] = [[] for _ in range(4)]
        failures: list[Exception] = []
        stop = threading.Event()
        give_up = time.monotonic() + 180

        def client(answers: list[int]) -> None:
            for _ in range(200_000):  # bounded in count and in time
                if stop.is_set() or time.monotonic() > give_up:
                    return
                try:
                    answers.append(predict(stub, "ver", x).model_spec.version.value)
                except Exception as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=client, args=(answers,)) for answers in seen]
        for t in threads:
            t.start()
        copy_version(model_store, "ver", 2, ver_base)
        wait_until(lambda: status(model_stub, "ver") == [(2, "AVAILABLE"), (1, "END")], what="swap")
        # Let every thread get answers from the new version before stopping.
        wait_until(lambda: all(a and a[-1] == 2 for a in seen), what="every client on version 2")
        stop.set()
        for t in threads:
            t.join(30)
        assert failures == []
        assert any(1 in answers for answers in seen)  # the load really spanned the swap
        for answers in seen:
            assert set(answers) <= {1, 2}
            first_new = answers.index(2)
            assert 1 not in answers[first_new:], f"version 1 answered after version 2: {answers}"

        # --- HandleReloadConfigRequest -----------------------------------------------------
        def reload(text):
            req = model_management_pb2.ReloadConfigRequest()
            text_format.Parse(text, req.config)
            return model_stub.HandleReloadConfigRequest(req, timeout=120)

        resp = reload(config_text(model_entry("ver", ver_base), model_entry("echo", echo_base)))
        assert resp.status.error_code == 0
        assert status(model_stub, "echo") == [(1, "AVAILABLE")]  # blocked until available
        with pytest.raises(grpc.RpcError) as info:
            reload(config_text(model_entry("ver", "relative/path")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            reload(
                config_text(
                    model_entry("ver", ver_base, 'version_labels { key: "stable" value: 5 }'),
                    model_entry("echo", echo_base),
                )
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Request to assign label to version 5 of model ver" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            req = model_management_pb2.ReloadConfigRequest()
            req.config.custom_model_config.Pack(model_server_config_pb2.ModelConfig())
            model_stub.HandleReloadConfigRequest(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # --- SIGTERM: in-flight requests finish, then exit 0 -------------------------------
        results: list[object] = []

        def slow():
            try:
                resp = predict(stub, "echo", {"n": np.array([150_000], np.int64)}, "spin", 120)
                results.append(int(codec.tensor_proto_to_ndarray(resp.outputs["done"])[0]))
            except Exception as exc:
                results.append(exc)

        slow_threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in slow_threads:
            t.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        for t in slow_threads:
            t.join(120)
        assert results == [150_000] * 3
        assert server.proc.wait(60) == 0
        assert "draining" in server.log_text()
        channel.close()
    finally:
        starter.join(5)
        server.stop()


def test_batching_tensor_content_and_config_file_polling(model_store, tmp_path):
    copy_version(model_store, "ver", 1, tmp_path / "ver")
    copy_version(model_store, "echo", 1, tmp_path / "echo")
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("ver", tmp_path / "ver")))
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
    )
    with EmbeddedServerProcess(
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
            "--enable_serialization_as_tensor_content",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=60000",
        ],
        rest=False,
    ) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        inputs = [np.arange(i % 4 + 1, dtype=np.float32) * i for i in range(40)]
        answers: list[object] = [None] * len(inputs)

        def call(i):
            answers[i] = predict(stub, "ver", {"x": inputs[i]})

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for x, resp in zip(inputs, answers, strict=True):
            assert resp.outputs["y"].tensor_content  # the flag's wire form
            np.testing.assert_array_equal(codec.tensor_proto_to_ndarray(resp.outputs["y"]), x + 1)
        with pytest.raises(grpc.RpcError) as info:
            predict(stub, "ver", {"x": np.zeros(17, np.float32)})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "Task size 17 is larger than maximum input batch size 16"

        # The config file is re-read every second: adding a model there serves it.
        config.write_text(
            config_text(model_entry("ver", tmp_path / "ver"), model_entry("echo", tmp_path / "echo"))
        )

        def echo_available():
            try:
                return status(model_stub, "echo") == [(1, "AVAILABLE")]
            except grpc.RpcError:
                return False

        wait_until(echo_available, what="echo loaded from the polled config file")
        channel.close()
    assert server.proc.returncode == 0
