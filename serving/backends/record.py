"""What is serving, persisted under the run dir so ``down``/``status``/``rollout`` find it.

Layout of the run dir (default ``.run/``, gitignored)::

    server.json   the ServerRecord below (written once the server is up)
    server.pid    the embedded server's pid (written right after spawn)
    server.log    the embedded server's stdout/stderr
    config/       models.config (rendered for this backend) + batching/monitoring files
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from serving.config.files import MODEL_CONFIG_FILE, atomic_write_text

DEFAULT_RUN_DIR = ".run"


class BackendError(RuntimeError):
    """A clear, user-facing reason why serving could not be started/stopped/changed."""


@dataclass
class ServerRecord:
    backend: str  # "docker" | "embedded"
    model_name: str
    repo: str  # absolute host path of the model repository
    models_root: str  # the repository as the server sees it (/models in a container)
    config_dir: str  # host path of the config dir the server reads
    host: str
    grpc_port: int
    rest_port: int
    pid: int | None = None
    container_id: str | None = None
    image: str | None = None  # docker: the image the container runs
    network: str | None = None  # docker: "host" or "bridge"
    log_path: str | None = None
    started_at: float = 0.0

    @property
    def grpc_target(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.rest_port}"

    @property
    def model_config_path(self) -> Path:
        return Path(self.config_dir) / MODEL_CONFIG_FILE


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> RunDir:
        chosen = path or os.environ.get("SERVING_RUN_DIR") or DEFAULT_RUN_DIR
        return cls(Path(chosen).resolve())

    @property
    def record_file(self) -> Path:
        return self.path / "server.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.path / "server.log"

    @property
    def config_dir(self) -> Path:
        return self.path / "config"

    def read_record(self) -> ServerRecord | None:
        try:
            raw = json.loads(self.record_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"{self.record_file} is unreadable ({exc}); if nothing serves, delete it"
            ) from exc
        known = {f.name for f in fields(ServerRecord)}
        try:
            return ServerRecord(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise BackendError(f"{self.record_file} is incomplete ({exc}); delete it") from exc

    def write_record(self, record: ServerRecord) -> None:
        atomic_write_text(self.record_file, json.dumps(asdict(record), indent=2) + "\n")

    def clear(self) -> None:
        """Forget the server (config files stay for inspection)."""
        for path in (self.record_file, self.pid_file):
            path.unlink(missing_ok=True)
