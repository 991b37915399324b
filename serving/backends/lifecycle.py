"""up / down / status: start a backend in the background, wait until it serves, stop it.

Every refusal happens before anything is started or written, and a start that fails is
undone, so a bad request never disturbs what was serving.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.backends.control import ControlError, ModelControl, VersionStatus
from serving.backends.docker import (
    AUTO_PULL_TIMEOUT_S,
    DockerBackend,
    engine_problem,
    image_hint,
)
from serving.backends.embedded import EmbeddedBackend, pid_state
from serving.backends.record import BackendError, RunDir, ServerRecord
from serving.backends.repo import (
    check_repo,
    check_state_published,
    published_versions,
    rollout_state,
)
from serving.config import GRPC_PORT, MODEL_NAME, REST_PORT, render_model_config, write_config_dir

Backend = DockerBackend | EmbeddedBackend
Say = Callable[[str], None]


class AlreadyServing(BackendError):
    def __init__(self, record: ServerRecord) -> None:
        super().__init__(
            f"already serving {record.model_name} ({record.backend}) on gRPC "
            f"{record.grpc_target} and REST {record.rest_url}; `make stop` first to restart"
        )
        self.record = record


def make_backend(name: str, image: str | None = None, say: Say | None = None) -> Backend:
    if name == "docker":
        return DockerBackend(image, say=say)
    if name == "embedded":
        return EmbeddedBackend()
    raise BackendError(f"unknown backend {name!r} (choose docker, embedded or auto)")


def choose_backend(requested: str, say: Say = print, image: str | None = None) -> Backend:
    """``auto``: docker when an engine answers and the image is there (or arrives within
    AUTO_PULL_TIMEOUT_S), else embedded, saying why in one line. ``docker``: the same checks,
    but a failed one is an error."""
    if requested not in ("auto", "docker"):
        return make_backend(requested)
    problem = engine_problem()
    if problem is None:
        docker = DockerBackend(image, say=say)
        timeout = AUTO_PULL_TIMEOUT_S if requested == "auto" else None
        image_problem = (
            docker.image_problem(timeout) if timeout is not None else docker.image_problem()
        )
        if image_problem is None:
            return docker
        if requested == "docker":
            raise BackendError(f"SERVER=docker but {image_problem}; {image_hint(docker.image)}")
        say(
            f"using the embedded server: the Docker engine answers but {image_problem}; "
            f"{image_hint(docker.image)}"
        )
        return EmbeddedBackend()
    if requested == "docker":
        raise BackendError(f"SERVER=docker but {problem}")
    say(f"using the embedded server: {problem}")
    return EmbeddedBackend()


def port_problem(host: str, port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"port {port} on {host} is in use ({exc.strerror})"
    return None


@dataclass
class UpOptions:
    repo: Path
    model_name: str = MODEL_NAME
    server: str = "auto"
    image: str | None = None  # docker only; None: the pinned tensorflow/serving image
    host: str = "127.0.0.1"
    grpc_port: int = GRPC_PORT
    rest_port: int = REST_PORT
    run_dir: RunDir | None = None
    export_if_empty: bool = True
    arch: str = "cnn"
    timeout_s: float = 300.0


def running_record(run_dir: RunDir, say: Say = print) -> ServerRecord | None:
    """The live server of this run dir, cleaning up (and saying so) if its record is stale."""
    record = run_dir.read_record()
    if record is None:
        if run_dir.pid_file.exists():
            _clear_orphan_pid_file(run_dir, say)
        return None
    # An engine we cannot reach is an error, not a stale record: forgetting a container that
    # may still serve would leave it running with nothing to stop it.
    backend = make_backend(record.backend)
    if backend.alive(record):
        return record
    if isinstance(backend, DockerBackend):
        # A crashed container keeps its name and log: say how it ended, then remove it.
        say(
            f"the container {record.container_id[:12] if record.container_id else '?'} "
            f"is {backend.state(record)}; its log ends:\n{backend.log_tail(record, 1500)}"
        )
        backend.stop(record)
    say(
        f"removing stale server record {run_dir.record_file} "
        f"({record.backend} server {record.pid or record.container_id} is not running)"
    )
    run_dir.clear()
    return None


def _clear_orphan_pid_file(run_dir: RunDir, say: Say) -> None:
    try:
        pid = int(run_dir.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and pid_state(pid) == "running":
        raise BackendError(
            f"{run_dir.pid_file} names a running model server (pid {pid}) with no server "
            f"record: it was started by an interrupted `serve`; stop it with `kill {pid}`"
        )
    say(f"removing stale pid file {run_dir.pid_file} (pid {pid} is not running)")
    run_dir.pid_file.unlink(missing_ok=True)


def export_first_version(opts: UpOptions, say: Say) -> None:
    command = [
        sys.executable, "-m", "export", "train",
        "--arch", opts.arch, "--repo", str(opts.repo), "--model-name", opts.model_name,
    ]  # fmt: skip
    say(f"no versions of {opts.model_name} under {opts.repo}: exporting one first")
    say("$ python " + " ".join(command[1:]))
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise BackendError(f"export failed with exit code {result.returncode}; nothing started")


def prepare_repo(opts: UpOptions, say: Say) -> list[int]:
    repo = opts.repo
    if not repo.exists():
        if not (opts.export_if_empty and repo.parent.is_dir()):
            raise BackendError(f"model repository {repo} does not exist")
        say(f"model repository {repo} does not exist yet: it will be created")
    else:
        check_repo(repo)
    versions = published_versions(repo, opts.model_name) if repo.exists() else []
    if not versions:
        if not opts.export_if_empty:
            raise BackendError(f"no published versions of {opts.model_name} under {repo}")
        export_first_version(opts, say)
        versions = published_versions(repo, opts.model_name)
        if not versions:
            raise BackendError(f"export finished but {repo / opts.model_name} has no version")
    return versions


def up(opts: UpOptions, say: Say = print) -> ServerRecord:
    run_dir = opts.run_dir or RunDir.resolve()
    opts.repo = opts.repo.resolve()
    existing = running_record(run_dir, say)
    if existing is not None:
        raise AlreadyServing(existing)
    if opts.grpc_port == opts.rest_port:
        raise BackendError("the gRPC and REST ports must differ")
    backend = choose_backend(opts.server, say, opts.image)
    if isinstance(backend, DockerBackend):
        # Before the port check: a container left by a crashed `serve` holds our ports.
        backend.remove_stale(run_dir, say)
    for port in {opts.grpc_port, opts.rest_port}:
        problem = port_problem(opts.host, port)
        if problem:
            raise BackendError(f"cannot serve: {problem}; stop what uses it or pick other ports")
    prepare_repo(opts, say)
    state = rollout_state(opts.repo, opts.model_name)
    check_state_published(opts.repo, opts.model_name, state)

    models_root = backend.models_root(opts.repo)
    write_config_dir(run_dir.config_dir, render_model_config(models_root, state, opts.model_name))
    record = ServerRecord(
        backend=backend.name,
        model_name=opts.model_name,
        repo=str(opts.repo),
        models_root=models_root,
        config_dir=str(run_dir.config_dir),
        host=opts.host,
        grpc_port=opts.grpc_port,
        rest_port=opts.rest_port,
        started_at=time.time(),
    )
    expected = None if state is None else {v for v in (state.stable, state.canary) if v}
    say(f"starting the {backend.name} server for {opts.model_name} from {opts.repo} ...")
    backend.start(record, run_dir)
    try:
        backend.wait_listening(record, opts.timeout_s)
        with ModelControl(record.grpc_target) as control:
            control.wait_available(
                opts.model_name,
                expected,
                opts.timeout_s,
                abort=lambda: backend.exit_reason(record),
            )
        wait_rest(record, opts.timeout_s)
    except (BackendError, ControlError, KeyboardInterrupt) as exc:
        tail = "" if isinstance(exc, BackendError) else backend.log_tail(record, 1500)
        backend.stop(record)
        run_dir.clear()
        if isinstance(exc, KeyboardInterrupt):
            raise
        log = f"\nthe server's log ends:\n{tail}" if tail.strip() else ""
        raise BackendError(f"the server did not come up: {exc}{log}") from exc
    run_dir.write_record(record)
    return record


def wait_rest(record: ServerRecord, timeout_s: float) -> None:
    url = f"{record.rest_url}/v1/models/{record.model_name}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise BackendError(f"REST endpoint {url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def down(run_dir: RunDir | None = None, say: Say = print) -> ServerRecord | None:
    run_dir = run_dir or RunDir.resolve()
    record = running_record(run_dir, say)
    if record is None:
        say("nothing is serving from this run dir")
        return None
    make_backend(record.backend).stop(record)
    run_dir.clear()
    say(f"stopped the {record.backend} server for {record.model_name}")
    return record


@dataclass
class Serving:
    """What a live server serves now, for printing after up/status/rollout steps."""

    record: ServerRecord
    versions: list[VersionStatus]
    labels: dict[str, int | None]
    policy: str


def describe(record: ServerRecord) -> Serving:
    from google.protobuf import text_format

    from clients.protos import ModelServerConfig

    with ModelControl(record.grpc_target) as control:
        versions = control.status(record.model_name)
        try:
            config = text_format.Parse(record.model_config_path.read_text(), ModelServerConfig())
        except (OSError, text_format.ParseError):
            config = None
        policy, labels = "unknown", {}
        if config is not None:
            for model in config.model_config_list.config:
                if model.name == record.model_name:
                    policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
                    labels = {
                        label: control.resolve_label(record.model_name, label)
                        for label in sorted(model.version_labels)
                    }
    return Serving(record, versions, labels, policy)


def format_serving(serving: Serving) -> str:
    record = serving.record
    lines = [
        f"{record.model_name}: {record.backend} server"
        + (f" (pid {record.pid})" if record.pid else "")
        + (
            f" (container {record.container_id[:12]}, image {record.image}, "
            f"{record.network} network)"
            if record.container_id
            else ""
        )
        + f", version policy '{serving.policy}', repository {record.repo}",
    ]
    by_version: dict[int, list[str]] = {}
    for label, version in serving.labels.items():
        if version is not None:
            by_version.setdefault(version, []).append(label)
    for status in serving.versions:
        names = ", ".join(by_version.get(status.version, []))
        extra = f"  labels: {names}" if names else ""
        error = f"  ({status.error_message})" if status.error_message else ""
        lines.append(f"  version {status.version:<4} {status.state:<10}{extra}{error}".rstrip())
    if not serving.versions:
        lines.append("  (no versions known to the server)")
    return "\n".join(lines)


def format_endpoints(record: ServerRecord) -> str:
    rest = f"{record.rest_url}/v1/models/{record.model_name}"
    return "\n".join(
        [
            f"gRPC  {record.grpc_target}   tensorflow.serving.PredictionService "
            f'(model_spec.name="{record.model_name}")',
            f"REST  {rest}",
            "try:",
            f"  curl -s {rest}",
            f"  curl -s -X POST {rest}:predict \\",
            '    -d "{\\"instances\\": [$(python3 -c \'print([0.0] * 784)\')]}"',
            "stop with: make stop   (or python -m serving down)",
        ]
    )
