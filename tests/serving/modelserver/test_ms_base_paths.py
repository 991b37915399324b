"""Only local base paths: ``gs://`` and ``s3://`` are refused with UNIMPLEMENTED (docs/
differences.md), at start-up and on a config reload; a refused reload changes nothing that
serves."""

from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest

from serving.modelserver.process import EmbeddedServerProcess, free_port

REMOTE = ["gs://mnist-bucket/models/mnist", "s3://mnist-bucket/models/mnist"]


def _refusal(base: str) -> str:
    return (
        f"UNIMPLEMENTED: File system scheme of {base} is not supported by the embedded server "
        "(local paths only)"
    )


def _run_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.modelserver", f"--port={free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("base", REMOTE)
def test_start_up_refuses_a_remote_model_base_path(base: str) -> None:
    proc = _run_server("--model_name=mnist", f"--model_base_path={base}")
    assert proc.returncode == 255
    assert f"Failed to start server. Error: {_refusal(base)}" in proc.stderr
    assert "Running gRPC ModelServer" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("base", REMOTE)
def test_start_up_refuses_a_remote_base_path_in_the_config_file(base: str, tmp_path) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "mnist" base_path: "{base}" '
        'model_platform: "tensorflow" } }'
    )
    proc = _run_server(f"--model_config_file={config}")
    assert proc.returncode == 255
    assert f"Failed to start server. Error: {_refusal(base)}" in proc.stderr


@pytest.mark.slow
def test_reload_to_remote_base_paths_is_refused_and_serving_goes_on(
    tiny_mnist_repo, tmp_path
) -> None:
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    base = tmp_path / "mnist"
    shutil.copytree(tiny_mnist_repo.version_path, base / "1")
    with EmbeddedServerProcess(model_name="mnist", model_base_path=base) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        try:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            for remote in REMOTE:
                reload = model_management_pb2.ReloadConfigRequest()
                entry = reload.config.model_config_list.config.add()
                entry.name, entry.base_path, entry.model_platform = "mnist", remote, "tensorflow"
                with pytest.raises(grpc.RpcError) as info:
                    models.HandleReloadConfigRequest(reload, timeout=30)
                assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert _refusal(remote).split(": ", 1)[1] in info.value.details()

            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "mnist"
            status = models.GetModelStatus(status_request, timeout=30).model_version_status
            assert [(s.version, s.state) for s in status] == [(1, 30)]  # 30: AVAILABLE

            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            images = np.ascontiguousarray(tiny_mnist_repo.test_images[:3], dtype=np.float32)
            tensor = request.inputs["images"]
            tensor.dtype = 1  # DT_FLOAT
            for dim in images.shape:
                tensor.tensor_shape.dim.add().size = dim
            tensor.tensor_content = images.tobytes()
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, timeout=30)
            classes = np.frombuffer(response.outputs["classes"].tensor_content, np.int64)
            if not classes.size:
                classes = np.array(response.outputs["classes"].int64_val)
            assert classes.tolist() == tiny_mnist_repo.predictions[:3].tolist()
        finally:
            channel.close()
        assert server.stop() == 0  # and it still shuts down cleanly
