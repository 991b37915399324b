"""Shared helpers for the serving ops tests: repository copies, publishing, gRPC predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np

from export.repository import ModelRepository
from export.rollout_state import RolloutState, save_state


def copy_repo(tiny, dest: Path) -> Path:
    """A private, writable copy of the shared tiny repository (version 1)."""
    shutil.copytree(tiny.repo, dest)
    return dest


def publish_copy(repo: Path, model: str = "mnist", source_version: int = 1) -> int:
    """Publish a new version through the repository's real atomic publish (a copy of a
    published tiny SavedModel, so it loads in well under a second)."""
    repository = ModelRepository(repo, model)
    with repository.staging() as staged:
        shutil.copytree(repository.version_path(source_version), staged, dirs_exist_ok=True)
        return repository.publish(staged).version


def write_state(repo: Path, **fields) -> None:
    save_state(repo, "mnist", RolloutState(**fields))


def read_state(repo: Path) -> dict:
    return json.loads((repo / "rollout.json").read_text())["mnist"]


def predict_request(images: np.ndarray, label: str | None = None, version: int | None = None):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    if label is not None:
        request.model_spec.version_label = label
    if version is not None:
        request.model_spec.version.value = version
    tensor = request.inputs["images"]
    tensor.dtype = 1  # DT_FLOAT
    for dim in images.shape:
        tensor.tensor_shape.dim.add().size = dim
    tensor.tensor_content = np.ascontiguousarray(images, dtype=np.float32).tobytes()
    return request


class Predictor:
    """One gRPC channel, Predict by label; returns the version that answered."""

    def __init__(self, target: str) -> None:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        # Its own connection (grpc-python shares one per target otherwise): with several
        # workers, SO_REUSEPORT spreads connections, so each Predictor may reach another one.
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def version_for(self, request, timeout_s: float = 10.0) -> int:
        response = self.stub.Predict(request, timeout=timeout_s)
        assert response.outputs["scores"].tensor_shape.dim[1].size == 10
        return int(response.model_spec.version.value)

    def close(self) -> None:
        self.channel.close()
