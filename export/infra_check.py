"""The gate's optional infra check: serve the built version with a real model server and ask
it for predictions over REST, before the version is published.

The server is the project's embedded TF Serving stand-in, started as a plain child process,
``python -m serving.modelserver --port=... --rest_api_port=... --model_name=...
--model_base_path=...``, on free loopback ports: export only knows its command line, its two
ready log lines (TF Serving's own) and its REST API, never its code (export must not import
serving, which sits above it). It loads the staged SavedModel through a temporary base path
whose version ``1`` is a symlink to the staging directory, replays the warmup records (a
failing record fails the load, as in TF Serving) and must answer REST predict with the classes
the gate computed in-process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SERVER_MODULE = "serving.modelserver"
HOST = "127.0.0.1"
# The lines TF Serving (and the embedded server) log once every model is AVAILABLE.
GRPC_READY = "Running gRPC ModelServer at"
REST_READY = "Exporting HTTP/REST API at:"
# A lost race for a port that was free a moment ago: pick new ports and try again.
_BIND_FAILURES = ("Failed to bind", "Failed to start HTTP Server", "ddress already in use")
_START_ATTEMPTS = 3
_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class InfraResult:
    ok: bool
    detail: str


class _StartError(RuntimeError):
    """The server exited or did not become ready; the message carries its log tail."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _server_installed() -> bool:
    """Whether ``python -m serving.modelserver`` can run, found on disk without importing
    ``serving`` (find_spec of a dotted name would import its parent package)."""
    spec = importlib.util.find_spec(SERVER_MODULE.split(".", 1)[0])
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(location) / "modelserver" / "__main__.py").is_file()
        for location in spec.submodule_search_locations
    )


@dataclass
class _ChildServer:
    """One model server child process on free loopback ports, its output in ``log_path``."""

    args: list[str]
    log_path: Path
    startup_timeout_s: float
    rest_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def start(self) -> None:
        for attempt in range(_START_ATTEMPTS):
            grpc_port = _free_port()
            self.rest_port = _free_port()
            while self.rest_port == grpc_port:
                self.rest_port = _free_port()
            try:
                self._spawn_and_wait(grpc_port)
                return
            except _StartError as exc:
                lost_race = any(s in str(exc) for s in _BIND_FAILURES)
                if not lost_race or attempt == _START_ATTEMPTS - 1:
                    raise

    def _spawn_and_wait(self, grpc_port: int) -> None:
        command = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            f"--port={grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--bind_address={HOST}",
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            text = self.log_text()
            if GRPC_READY in text and REST_READY in text:
                return
            if "Failed to start HTTP Server" in text:
                # TF Serving keeps running without REST; for the check that is a failed start.
                self.kill()
                raise _StartError("REST port could not be bound:\n" + text[-4000:])
            if self.proc.poll() is not None:
                raise _StartError(
                    f"model server exited with {self.proc.returncode} before it was ready:\n"
                    + text[-4000:]
                )
            if time.monotonic() > deadline:
                self.kill()
                raise _StartError(
                    f"model server not ready after {self.startup_timeout_s} s:\n" + text[-4000:]
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM and wait (the server drains); SIGKILL after the timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def infra_check(
    staged: Path,
    model_name: str,
    images: np.ndarray,
    expected_classes: np.ndarray,
    startup_timeout_s: float = 120.0,
) -> InfraResult:
    """Serve ``staged`` and compare REST predictions for float32 ``images`` [N, 784]."""
    if not _server_installed():
        return InfraResult(
            False,
            f"no model server to run the infra check with (No module named '{SERVER_MODULE}')",
        )

    with tempfile.TemporaryDirectory(prefix="export-infra-") as scratch:
        base = Path(scratch) / "model"  # the log lives beside the base path, not in it
        base.mkdir()
        (base / "1").symlink_to(Path(staged).resolve(), target_is_directory=True)
        server = _ChildServer(
            # No load retries: a version that fails to load once is refused now, not in minutes.
            args=[
                "--max_num_load_retries=0",
                f"--model_name={model_name}",
                f"--model_base_path={base}",
            ],
            log_path=Path(scratch) / "server.log",
            startup_timeout_s=startup_timeout_s,
        )
        try:
            server.start()
        except _StartError as exc:
            return InfraResult(
                False, f"model server did not load the version: {_essence(str(exc))}"
            )
        try:
            body = json.dumps({"instances": images.tolist()}).encode()
            request = urllib.request.Request(
                f"{server.rest_url}/v1/models/{model_name}:predict",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return InfraResult(False, f"REST predict failed: {exc}")
        finally:
            server.stop()
    try:
        classes = [int(row["classes"]) for row in answer["predictions"]]
    except (KeyError, TypeError, ValueError):
        return InfraResult(False, f"unexpected REST predict answer: {str(answer)[:300]}")
    if classes != [int(c) for c in expected_classes]:
        return InfraResult(
            False,
            f"served classes {classes} differ from the reloaded model's {list(expected_classes)}",
        )
    return InfraResult(
        True, f"served by the embedded model server; REST predict on {len(classes)} digits agreed"
    )


def _essence(log_tail: str) -> str:
    """The server's own error lines, without TensorFlow's start-up noise."""
    lines = [
        line.strip()
        for line in log_tail.splitlines()
        if "serving/modelserver" in line or line.startswith(("Failed", "model server"))
    ]
    return " | ".join(lines[-3:]) if lines else log_tail[-500:]
