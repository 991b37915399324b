"""Helpers for the Docker tests: repository copies, REST/gRPC calls, a bounded client load."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from export.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[2]


def copy_repo(tiny, dest: Path) -> Path:
    shutil.copytree(tiny.repo, dest)
    return dest


def publish_copy(repo: Path, model: str = "mnist", source_version: int = 1) -> int:
    """A new version through the repository's real atomic publish (a copy of version 1)."""
    repository = ModelRepository(repo, model)
    with repository.staging() as staged:
        shutil.copytree(repository.version_path(source_version), staged, dirs_exist_ok=True)
        return repository.publish(staged).version


def rest(url: str, body: dict | None = None, timeout_s: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout_s) as r:
        return json.loads(r.read())


def wait_rest(url: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return rest(url, timeout_s=5)
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def predict_request(images: np.ndarray, label: str | None = None):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    if label is not None:
        request.model_spec.version_label = label
    tensor = request.inputs["images"]
    tensor.dtype = 1  # DT_FLOAT
    for dim in images.shape:
        tensor.tensor_shape.dim.add().size = dim
    tensor.tensor_content = np.ascontiguousarray(images, dtype=np.float32).tobytes()
    return request


def grpc_predict(target: str, request, timeout_s: float = 30.0):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=timeout_s)


@dataclass
class ClientLoad:
    """gRPC and REST clients predicting for the whole of a story, bounded in count and time.

    Every request must succeed; each thread records the versions that answered.
    """

    grpc_target: str
    rest_url: str
    images: np.ndarray
    grpc_threads: int = 3
    rest_threads: int = 2
    max_requests_per_thread: int = 3000
    time_limit_s: float = 300.0
    stop: threading.Event = field(default_factory=threading.Event)
    versions: list[set[int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        total = self.grpc_threads + self.rest_threads
        self.versions = [set() for _ in range(total)]
        self.counts = [0] * total
        for index in range(total):
            target = self._grpc if index < self.grpc_threads else self._rest
            thread = threading.Thread(target=target, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, index: int, call) -> None:
        deadline = time.monotonic() + self.time_limit_s
        while (
            not self.stop.is_set()
            and self.counts[index] < self.max_requests_per_thread
            and time.monotonic() < deadline
        ):
            try:
                self.versions[index].add(call())
            except Exception as exc:  # every failure is a finding: keep its text
                self.failures.append(f"thread {index}: {type(exc).__name__}: {exc}"[:300])
            self.counts[index] += 1
            time.sleep(0.01)

    def _grpc(self, index: int) -> None:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        request = predict_request(self.images[index % len(self.images)][None, :])
        channel = grpc.insecure_channel(self.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call() -> int:
            response = stub.Predict(request, timeout=20)
            assert response.outputs["scores"].tensor_shape.dim[1].size == 10
            return int(response.model_spec.version.value)

        try:
            self._loop(index, call)
        finally:
            channel.close()

    def _rest(self, index: int) -> None:
        body = {"instances": self.images[index % len(self.images)][None, :].tolist()}
        url = f"{self.rest_url}/v1/models/mnist:predict"

        def call() -> int:
            predictions = rest(url, body, timeout_s=20)["predictions"]
            assert len(predictions[0]["scores"]) == 10
            return -1  # REST predict does not say which version answered

        self._loop(index, call)

    def finish(self) -> int:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return sum(self.counts)


def run_make(env: dict, *args: str, timeout_s: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
