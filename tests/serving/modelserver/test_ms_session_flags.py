"""Session flags: one ConfigProto, built in server.cc's order, that reaches TensorFlow.

Thread counts are checked where TensorFlow puts them: a DirectSession's inter-op pool threads
are named ``tf_Compute`` in /proc; the config file is checked through an option whose effect a
client sees (``operation_timeout_in_ms``); bf16 through the numbers it changes."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from ms_models import copy_version
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from clients import codec
from serving.modelserver import session_config
from serving.modelserver.process import EmbeddedServerProcess
from serving.modelserver.session_config import SessionFlags


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "session.config"
    path.write_text(text)
    return str(path)


def test_file_first_then_the_thread_flags_as_server_cc(tmp_path):
    config = write(tmp_path, "intra_op_parallelism_threads: 4\ninter_op_parallelism_threads: 5\n"
                             "operation_timeout_in_ms: 77\nallow_soft_placement: true\n")  # fmt: skip
    # No thread flag: server.cc's last branch sets both from --tensorflow_session_parallelism
    # (0 = TensorFlow's choice), so the file's counts do not survive; the rest of it does.
    proto = session_config.build(SessionFlags(tensorflow_session_config_file=config))
    assert (proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads) == (0, 0)
    assert proto.operation_timeout_in_ms == 77 and proto.allow_soft_placement
    proto = session_config.build(
        SessionFlags(tensorflow_session_config_file=config, tensorflow_inter_op_parallelism=3)
    )
    assert (proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads) == (0, 3)
    proto = session_config.build(SessionFlags(tensorflow_session_parallelism=2))
    assert (proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads) == (2, 2)
    proto = session_config.build(
        SessionFlags(tensorflow_intra_op_parallelism=1, tensorflow_session_parallelism=6)
    )  # intra or inter given: session_parallelism is ignored
    assert (proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads) == (1, 0)
    proto = session_config.build(SessionFlags(per_process_gpu_memory_fraction=0.25))
    assert proto.gpu_options.per_process_gpu_memory_fraction == 0.25


def test_mixed_precision_sets_the_onednn_bf16_rewriter(caplog):
    from tensorflow.core.protobuf import rewriter_config_pb2

    on = rewriter_config_pb2.RewriterConfig.ON
    proto = session_config.build(SessionFlags(mixed_precision="bfloat16"))
    assert proto.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == on
    with caplog.at_level("WARNING", logger="serving.modelserver"):
        proto = session_config.build(SessionFlags(mixed_precision="float16"))
    assert proto.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 != on
    assert "float16 auto mixed precision is not supported. Valid option: bfloat16" in caplog.text


def tf_compute_threads(pid: int) -> int:
    count = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        count += name == "tf_Compute"
    return count


@pytest.fixture(scope="module")
def echo_base(model_store, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("session_flags") / "echo"
    copy_version(model_store, "echo", 1, base)
    return base


def predict(server, signature: str, inputs: dict[str, np.ndarray], timeout: float = 60):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "echo"
    req.model_spec.signature_name = signature
    for key, arr in inputs.items():
        codec.fill_tensor_proto(req.inputs[key], arr)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(req, timeout=timeout)


@pytest.mark.parametrize(
    ("flags", "inter_op_threads"),
    [
        (["--tensorflow_inter_op_parallelism=3", "--tensorflow_intra_op_parallelism=1"], 3),
        (["--tensorflow_session_parallelism=5"], 5),
    ],
)
def test_thread_flags_reach_tensorflow(echo_base, flags, inter_op_threads):
    server = EmbeddedServerProcess(flags, model_name="echo", model_base_path=echo_base).start()
    try:
        predict(server, "double", {"x": np.ones((2, 3), np.float32)})
        assert tf_compute_threads(server.proc.pid) == inter_op_threads
    finally:
        assert server.stop() == 0


def test_the_session_config_file_reaches_tensorflow(echo_base, tmp_path):
    config = write(tmp_path, "operation_timeout_in_ms: 300\n")
    server = EmbeddedServerProcess(
        [f"--tensorflow_session_config_file={config}"], model_name="echo", model_base_path=echo_base
    ).start()
    try:
        assert predict(server, "double", {"x": np.ones((1, 3), np.float32)}).outputs["y"]
        # A loop of 10^10 iterations runs for minutes; the Session's own timeout ends it.
        with pytest.raises(grpc.RpcError) as info:
            predict(server, "spin", {"n": np.array([10**10], np.int64)})
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        assert server.stop() == 0


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_bfloat16_changes_the_numbers_not_the_answers(tiny_mnist_repo):
    """The rewriter runs the MatMul in bf16: scores move by bf16 rounding, classes stay."""
    if not cpu_has_bf16():
        pytest.skip("oneDNN rewrites to bf16 only on CPUs with avx512_bf16 or AMX")
    from serving.modelserver.servable import Servable

    path = str(tiny_mnist_repo.version_path)
    x = tiny_mnist_repo.test_images
    fp32 = Servable.load("m", 1, path, session_config=session_config.build(SessionFlags()))
    bf16 = Servable.load(
        "m", 1, path, session_config=session_config.build(SessionFlags(mixed_precision="bfloat16"))
    )
    try:
        a = fp32.run("predict_images", {"images": x})["scores"]
        b = bf16.run("predict_images", {"images": x})["scores"]
    finally:
        fp32.close()
        bf16.close()
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a, b, atol=0.05)
    assert np.mean(np.argmax(a, 1) == np.argmax(b, 1)) >= 0.95


def test_mixed_precision_flag_is_logged_and_serves(echo_base):
    server = EmbeddedServerProcess(
        ["--mixed_precision=bfloat16"], model_name="echo", model_base_path=echo_base
    ).start()
    try:
        assert "Running inference with bfloat16 auto mixed precision" in server.log_text()
        out = predict(server, "double", {"x": np.ones((1, 3), np.float32)}).outputs["y"]
        assert codec.tensor_proto_to_ndarray(out).tolist() == [[2.0, 2.0, 2.0]]
    finally:
        assert server.stop() == 0
