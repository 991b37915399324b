"""The fault suite's server: the embedded server on a private copy of the tiny repository."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fault_load import ClientLoad

from serving.modelserver.process import EmbeddedServerProcess, free_port

CONFIG_POLL_S = 1  # --model_config_file_poll_wait_seconds for the suite (the launcher uses 5)


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # float32 [n, 784]
    expected: np.ndarray  # int64 [n]


def config_text(base_path: Path, policy: str = "", labels: dict[str, int] | None = None) -> str:
    label_text = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in (labels or {}).items()
    )
    return (
        "model_config_list {\n  config {\n"
        f'    name: "mnist"\n    base_path: "{base_path}"\n    model_platform: "tensorflow"\n'
        + (f"    model_version_policy {{ {policy} }}\n" if policy else "")
        + label_text
        + "  }\n}\n"
    )


class FaultServer:
    """The embedded server on a private copy of the tiny repository, polled every second."""

    def __init__(self, root: Path, tiny, *, repo: Path | None = None, extra: tuple = ()) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.repo = repo or root / "models"
        if not (self.repo / "mnist" / "1").exists():
            shutil.copytree(tiny.repo / tiny.model_name, self.repo / "mnist", dirs_exist_ok=True)
        self.base = self.repo / "mnist"
        self.config = root / "models.config"
        if not self.config.exists():
            self.config.write_text(config_text(self.base))
        self.log_path = root / "server.log"
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.extra = extra
        self.process: EmbeddedServerProcess | None = None

    def start(self, startup_timeout_s: float = 120.0) -> FaultServer:
        # Append to one log across restarts, so a case reads the whole story.
        self.process = EmbeddedServerProcess(
            [
                f"--model_config_file={self.config}",
                f"--model_config_file_poll_wait_seconds={CONFIG_POLL_S}",
                "--file_system_poll_wait_seconds=1",
                "--load_retry_interval_micros=1000000",
                *self.extra,
            ],
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            log_path=self._next_log(),
            startup_timeout_s=startup_timeout_s,
        )
        self.process.start()
        return self

    def _next_log(self) -> Path:
        n = len(list(self.root.glob("server*.log")))
        self.log_path = self.root / f"server{n}.log"
        return self.log_path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("server*.log")))

    def log_count(self, needle: str) -> int:
        return self.log_text().count(needle)

    def wait_log(self, needle: str, count: int = 1, timeout_s: float = 30.0) -> bool:
        """True once ``needle`` appears ``count`` times in the log (False after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log_count(needle) >= count:
                return True
            time.sleep(0.05)
        return False

    def notable_log(self) -> str:
        """What the server said about versions and configs (for each case's printout)."""
        keys = ("Loading servable", "Successfully loaded", "Unloading", "failed", "Failed",
                "Cannot transition", "config", "Taking no action", "Received stop", "stopped",
                "Retrying", "No versions")  # fmt: skip
        lines = [
            line.split("] ", 1)[-1] for line in self.log_text().splitlines()
            if any(k in line for k in keys) and "cuInit" not in line
        ]
        return "\n".join(f"  server: {line[:200]}" for line in lines[-25:])

    def stop(self) -> int | None:
        return self.process.stop() if self.process is not None else None

    def load(self, digits: Digits, **kwargs) -> ClientLoad:
        return ClientLoad(self.grpc_target, self.rest_url, digits.images, digits.expected, **kwargs)


def report(case: str, load_report, server: FaultServer | None = None, extra: str = "") -> None:
    """Print what happened in a case (pytest -rP or -s shows it)."""
    print(f"\n=== fault: {case}")
    print(load_report.summary())
    if extra:
        print(extra)
    if server is not None:
        print(server.notable_log())
