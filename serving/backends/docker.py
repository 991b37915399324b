"""The docker backend: a tensorflow/serving-compatible image, driven through the Docker SDK.

The image is the pinned ``tensorflow/serving`` by default, or any image with its interface
(``make image`` builds the project's own, ``mnist-serving/model-server:<version>``). The model
repository is mounted read-only at ``/models`` and the rendered config dir at ``/config``; the
image's entrypoint supplies ``--port=8500 --rest_api_port=8501`` and we append the shared
flags, so the container reads exactly the files the embedded server reads (rendered with
``/models`` as the models root).

Networking follows what the engine has: with a ``bridge`` network the container ports are
published on the requested host address; an engine started without one (``dockerd
--bridge=none``, as ``make docker-engine`` does) runs the container on the host network, the
ports set by flags (later flags win over the entrypoint's). There tensorflow/serving listens on
every interface (it has no flag for the address); an image labelled
``mnist-serving.bind-address`` gets ``--bind_address`` too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.backends.record import BackendError, RunDir, ServerRecord
from serving.config import (
    CONTAINER_CONFIG_DIR,
    CONTAINER_MODELS_ROOT,
    GRPC_PORT,
    IMAGE_BIND_ADDRESS_LABEL,
    REST_PORT,
    TF_SERVING_IMAGE,
    local_image,
    server_flags,
)

NAME = "docker"
CONTAINER_LABEL = "mnist-serving.model"
RUN_DIR_LABEL = "mnist-serving.run-dir"
NETWORK_HOST = "host"
NETWORK_BRIDGE = "bridge"
# `auto` gives a missing image this long to arrive before it serves embedded instead.
AUTO_PULL_TIMEOUT_S = 30.0
PULL_TIMEOUT_S = 600.0
# Lines the servers print once both listeners are up (TF Serving and the embedded one).
READY_LINE = "Exporting HTTP/REST API at"

Say = Callable[[str], None]


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``docker run`` needs, as data (unit-tested without an engine)."""

    image: str
    name: str
    command: list[str]
    volumes: dict[str, dict[str, str]]
    network: str = NETWORK_BRIDGE
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient.containers.run``."""
        kwargs: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "command": list(self.command),
            "volumes": {k: dict(v) for k, v in self.volumes.items()},
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "detach": True,
        }
        if self.network == NETWORK_HOST:
            kwargs["network_mode"] = NETWORK_HOST
        else:
            kwargs["ports"] = dict(self.ports)
        return kwargs


def container_name(record: ServerRecord, run_dir: RunDir | None = None) -> str:
    """One container per (run dir, model): two checkouts on one engine never collide, and
    a crashed ``serve`` leaves a container that the next one finds by name."""
    if run_dir is None:
        return f"mnist-serving-{record.model_name}"
    digest = hashlib.sha1(str(run_dir.path).encode()).hexdigest()[:10]
    return f"mnist-serving-{record.model_name}-{digest}"


def container_spec(
    record: ServerRecord,
    image: str = TF_SERVING_IMAGE,
    *,
    network: str = NETWORK_BRIDGE,
    bind_address_flag: bool = False,
    run_dir: RunDir | None = None,
) -> ContainerSpec:
    command = server_flags(CONTAINER_CONFIG_DIR)
    ports: dict[str, tuple[str, int]] = {}
    if network == NETWORK_HOST:
        # No port mapping on the host network: the server itself must listen on our ports.
        command += [f"--port={record.grpc_port}", f"--rest_api_port={record.rest_port}"]
    else:
        ports = {
            f"{GRPC_PORT}/tcp": (record.host, record.grpc_port),
            f"{REST_PORT}/tcp": (record.host, record.rest_port),
        }
    if bind_address_flag and network == NETWORK_HOST:
        command.append(f"--bind_address={record.host}")
    labels = {CONTAINER_LABEL: record.model_name}
    if run_dir is not None:
        labels[RUN_DIR_LABEL] = str(run_dir.path)
    return ContainerSpec(
        image=image,
        name=container_name(record, run_dir),
        command=command,
        network=network,
        ports=ports,
        volumes={
            str(Path(record.repo).resolve()): {"bind": CONTAINER_MODELS_ROOT, "mode": "ro"},
            str(Path(record.config_dir).resolve()): {"bind": CONTAINER_CONFIG_DIR, "mode": "ro"},
        },
        # MODEL_NAME only feeds the entrypoint's --model_name, which --model_config_file
        # overrides; set it anyway so `docker inspect` names what is served.
        environment={"MODEL_NAME": record.model_name},
        labels=labels,
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


def image_hint(image: str) -> str:
    local = local_image()
    if image == local:
        return f"build it with `make image` (then: make serve SERVER=docker IMAGE={local})"
    return (
        f"`make image` builds the local drop-in {local} "
        f"(then: make serve SERVER=docker IMAGE={local})"
    )


class DockerBackend:
    name = NAME

    def __init__(self, image: str | None = None, say: Say | None = None) -> None:
        self.image = image or TF_SERVING_IMAGE
        self._say = say or (lambda _line: None)
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

    # --- what the engine has ---

    def network(self) -> str:
        """``bridge`` when the engine has its default bridge network, else ``host``."""
        networks = self.client().networks.list(names=[NETWORK_BRIDGE])
        has_bridge = any(n.name == NETWORK_BRIDGE for n in networks)
        return NETWORK_BRIDGE if has_bridge else NETWORK_HOST

    def image_labels(self) -> dict[str, str]:
        image = self.client().images.get(self.image)
        return dict(image.labels or {})

    def image_problem(self, pull_timeout_s: float = PULL_TIMEOUT_S) -> str | None:
        """None when the image is present (pulling it, within ``pull_timeout_s``, if not)."""
        import docker

        client = self.client()
        try:
            client.images.get(self.image)
            return None
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            return f"the engine cannot inspect image {self.image}: {exc}"
        repository, _, tag = self.image.rpartition(":")
        if not repository or "/" in tag:
            repository, tag = self.image, "latest"
        self._say(f"pulling {self.image} (not present locally; giving it {pull_timeout_s:.0f} s)")
        outcome: list[BaseException | None] = []

        def pull() -> None:
            try:
                client.images.pull(repository, tag=tag)
                outcome.append(None)
            except Exception as exc:  # reported below, with the image name
                outcome.append(exc)

        # The SDK has no overall deadline for a pull; the thread gives it one (a pull that
        # goes on after it only fills the engine's image store).
        worker = threading.Thread(target=pull, name="docker-pull", daemon=True)
        worker.start()
        worker.join(pull_timeout_s)
        if not outcome:
            return f"image {self.image} is not present and no pull finished within {pull_timeout_s:.0f} s"
        if outcome[0] is not None:
            reason = str(outcome[0]).strip().splitlines()[0][:300]
            return f"image {self.image} is not present and could not be pulled ({reason})"
        return None

    def ensure_image(self) -> None:
        problem = self.image_problem()
        if problem:
            raise BackendError(f"{problem}; {image_hint(self.image)}")

    # --- lifecycle ---

    def stale_containers(self, run_dir: RunDir) -> list:
        """Containers this run dir started that no live server record names."""
        return self.client().containers.list(
            all=True, filters={"label": f"{RUN_DIR_LABEL}={run_dir.path}"}
        )

    def remove_stale(self, run_dir: RunDir, say: Say) -> None:
        for container in self.stale_containers(run_dir):
            say(
                f"removing stale container {container.name} ({container.status}; left by a "
                f"crashed or interrupted serve from {run_dir.path})"
            )
            container.remove(force=True)

    def plan(self, record: ServerRecord, run_dir: RunDir) -> tuple[ContainerSpec, list[str]]:
        """The container to run on this engine for this image, and what to tell the operator
        about it (asks the engine; starts nothing)."""
        network = self.network()
        bind_flag = self.image_labels().get(IMAGE_BIND_ADDRESS_LABEL) == "true"
        notes = []
        if network == NETWORK_HOST and not bind_flag:
            notes.append(
                f"note: the engine has no bridge network, so {self.image} runs on the host "
                f"network and listens on every interface (0.0.0.0:{record.grpc_port}, "
                f"0.0.0.0:{record.rest_port}), not only {record.host}: tensorflow/serving has "
                "no flag for the address; firewall those ports or use an engine with a bridge"
            )
        spec = container_spec(
            record, self.image, network=network, bind_address_flag=bind_flag, run_dir=run_dir
        )
        return spec, notes

    def start(self, record: ServerRecord, run_dir: RunDir) -> None:
        import docker

        client = self.client()
        self.ensure_image()
        spec, notes = self.plan(record, run_dir)
        for note in notes:
            self._say(note)
        self.remove_stale(run_dir, self._say)
        try:
            stale = client.containers.get(spec.name)
        except docker.errors.NotFound:
            stale = None
        if stale is not None:  # same name, started elsewhere before run-dir labels existed
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
        record.image = self.image
        record.network = spec.network

    def _container(self, record: ServerRecord):
        import docker

        if not record.container_id:
            return None
        try:
            return self.client().containers.get(record.container_id)
        except docker.errors.NotFound:
            return None

    def wait_listening(self, record: ServerRecord, timeout_s: float) -> None:
        # Both servers open their listeners only after the models are AVAILABLE; the caller
        # then waits on gRPC status, which is the real readiness signal.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reason = self.exit_reason(record)
            if reason:
                raise BackendError(f"{reason}; its log ends:\n{self.log_tail(record)}")
            if READY_LINE in self.log_tail(record, 200_000):
                return
            time.sleep(0.5)
        raise BackendError(
            f"container not ready after {timeout_s:.0f} s; its log ends:\n{self.log_tail(record)}"
        )

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

    def state(self, record: ServerRecord) -> str:
        """``running``, ``exited``, ... or ``gone``: what the engine says of the container."""
        container = self._container(record)
        if container is None:
            return "gone"
        container.reload()
        return str(container.status)

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
