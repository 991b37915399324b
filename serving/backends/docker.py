"""The docker backend: the pinned tensorflow/serving image, driven through the Docker SDK.

The model repository is mounted read-only at ``/models`` and the rendered config dir at
``/config``; the image's entrypoint supplies ``--port=8500 --rest_api_port=8501`` and we
append the shared flags, so the container reads exactly the files the embedded server reads
(rendered with ``/models`` as the models root).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.backends.record import BackendError, RunDir, ServerRecord
from serving.config import (
    CONTAINER_CONFIG_DIR,
    CONTAINER_MODELS_ROOT,
    GRPC_PORT,
    REST_PORT,
    TF_SERVING_IMAGE,
    server_flags,
)

NAME = "docker"
CONTAINER_LABEL = "mnist-serving.model"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``docker run`` needs, as data (unit-tested without an engine)."""

    image: str
    name: str
    command: list[str]
    ports: dict[str, tuple[str, int]]
    volumes: dict[str, dict[str, str]]
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient.containers.run``."""
        return {
            "image": self.image,
            "name": self.name,
            "command": list(self.command),
            "ports": dict(self.ports),
            "volumes": {k: dict(v) for k, v in self.volumes.items()},
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "detach": True,
        }


def container_spec(record: ServerRecord, image: str = TF_SERVING_IMAGE) -> ContainerSpec:
    return ContainerSpec(
        image=image,
        name=f"mnist-serving-{record.model_name}",
        command=server_flags(CONTAINER_CONFIG_DIR),
        ports={
            f"{GRPC_PORT}/tcp": (record.host, record.grpc_port),
            f"{REST_PORT}/tcp": (record.host, record.rest_port),
        },
        volumes={
            str(Path(record.repo).resolve()): {"bind": CONTAINER_MODELS_ROOT, "mode": "ro"},
            str(Path(record.config_dir).resolve()): {"bind": CONTAINER_CONFIG_DIR, "mode": "ro"},
        },
        # MODEL_NAME only feeds the entrypoint's --model_name, which --model_config_file
        # overrides; set it anyway so `docker inspect` names what is served.
        environment={"MODEL_NAME": record.model_name},
        labels={CONTAINER_LABEL: record.model_name},
    )


def engine_problem(timeout_s: float = 3.0) -> str | None:
    """None when a Docker engine answers a ping, else the reason it does not."""
    try:
        import docker
    except ImportError:
        return "the docker Python SDK is not installed (pip install '.[serving]')"
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})"
    return None


class DockerBackend:
    name = NAME

    def __init__(self, image: str = TF_SERVING_IMAGE) -> None:
        self.image = image
        self._client = None

    def client(self):
        if self._client is None:
            problem = engine_problem()
            if problem:
                raise BackendError(f"docker backend unavailable: {problem}")
            import docker

            self._client = docker.from_env()
        return self._client

    def models_root(self, repo: Path) -> str:
        return CONTAINER_MODELS_ROOT

    def server_config_dir(self, run_dir: RunDir) -> str:
        return CONTAINER_CONFIG_DIR

    def ensure_image(self) -> None:
        import docker

        client = self.client()
        try:
            client.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            pass
        repository, _, tag = self.image.rpartition(":")
        print(f"pulling {self.image} (not present locally) ...", flush=True)
        try:
            client.images.pull(repository, tag=tag)
        except docker.errors.APIError as exc:
            raise BackendError(
                f"image {self.image} is not present and could not be pulled: {exc}"
            ) from exc

    def start(self, record: ServerRecord, run_dir: RunDir) -> None:
        import docker

        client = self.client()
        self.ensure_image()
        spec = container_spec(record, self.image)
        try:
            stale = client.containers.get(spec.name)
        except docker.errors.NotFound:
            stale = None
        if stale is not None:
            if stale.status == "running":
                raise BackendError(
                    f"container {spec.name} is already running (not started by this run dir); "
                    f"stop it with: docker rm -f {spec.name}"
                )
            stale.remove(force=True)
        try:
            container = client.containers.run(**spec.run_kwargs())
        except docker.errors.APIError as exc:
            raise BackendError(f"docker could not start {self.image}: {exc}") from exc
        record.container_id = container.id

    def _container(self, record: ServerRecord):
        import docker

        if not record.container_id:
            return None
        try:
            return self.client().containers.get(record.container_id)
        except docker.errors.NotFound:
            return None

    def wait_listening(self, record: ServerRecord, timeout_s: float) -> None:
        # TF Serving opens its listeners only after the models are AVAILABLE; the caller
        # then waits on gRPC status, which is the real readiness signal.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reason = self.exit_reason(record)
            if reason:
                raise BackendError(f"{reason}\n{self.log_tail(record)}")
            if "Exporting HTTP/REST API at" in self.log_tail(record, 200_000):
                return
            time.sleep(0.5)
        raise BackendError(f"container not ready after {timeout_s:.0f} s\n{self.log_tail(record)}")

    def exit_reason(self, record: ServerRecord) -> str | None:
        container = self._container(record)
        if container is None:
            return "the container is gone"
        container.reload()
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            return f"the container exited with code {code}"
        return None

    def alive(self, record: ServerRecord) -> bool:
        container = self._container(record)  # BackendError when the engine is unreachable
        if container is None:
            return False
        container.reload()
        return container.status == "running"

    def stop(self, record: ServerRecord, timeout_s: float = 30.0) -> None:
        container = self._container(record)
        if container is None:
            return
        container.stop(timeout=int(timeout_s))
        container.remove(force=True)

    def log_tail(self, record: ServerRecord, chars: int = 3000) -> str:
        try:
            container = self._container(record)
        except BackendError:
            return ""
        if container is None:
            return ""
        return container.logs(tail=200).decode(errors="replace")[-chars:]
