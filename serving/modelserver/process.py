"""Run the embedded model server as a child process, on free loopback ports.

Stable API (used by tests, the clients' integration tests, the export gate's infra check and
``make serve``)::

    from serving.modelserver.process import EmbeddedServerProcess

    with EmbeddedServerProcess(model_name="mnist", model_base_path="/abs/models/mnist") as srv:
        srv.grpc_target   # "127.0.0.1:<port>"
        srv.rest_url      # "http://127.0.0.1:<port>" (None when rest=False)
        srv.log_text()    # everything the server printed so far

    srv = EmbeddedServerProcess(args=["--model_config_file=/abs/models.config"]).start()
    ...
    exit_code = srv.stop()   # SIGTERM, waits; 0 after a clean drain

``args`` are extra ``tensorflow_model_server`` flags (``--name=value``). Ports: pass
``grpc_port``/``rest_port`` or let the class pick free ones (a lost port race is retried).
``start()`` returns only after the server logged both ready lines, i.e. after every configured
model has an AVAILABLE version; it raises ``ServerStartError`` with the log tail if the
server exits first or ``startup_timeout_s`` passes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

GRPC_READY = "Running gRPC ModelServer at"
REST_READY = "Exporting HTTP/REST API at:"
_BIND_FAILURES = ("Failed to bind", "Failed to start HTTP Server", "ddress already in use")


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedServerProcess:
    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        model_name: str | None = None,
        model_base_path: str | os.PathLike | None = None,
        model_config_file: str | os.PathLike | None = None,
        rest: bool = True,
        grpc_port: int | None = None,
        rest_port: int | None = None,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.extra_args = list(args)
        if model_name is not None:
            self.extra_args.append(f"--model_name={model_name}")
        if model_base_path is not None:
            self.extra_args.append(f"--model_base_path={os.fspath(model_base_path)}")
        if model_config_file is not None:
            self.extra_args.append(f"--model_config_file={os.fspath(model_config_file)}")
        self.rest = rest
        self.host = host
        self._fixed_ports = grpc_port is not None
        self.grpc_port = grpc_port or 0
        self.rest_port = rest_port or 0
        self.python = python
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str | None:
        return f"http://{self.host}:{self.rest_port}" if self.rest else None

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "serving.modelserver",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port if self.rest else 0}",
            f"--bind_address={self.host}",
            *self.extra_args,
        ]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmbeddedServerProcess:
        attempts = 1 if self._fixed_ports else 3
        for attempt in range(attempts):
            if not self._fixed_ports:
                self.grpc_port = free_port(self.host)
                self.rest_port = free_port(self.host) if self.rest else 0
                while self.rest and self.rest_port == self.grpc_port:
                    self.rest_port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ServerStartError as exc:
                lost_race = any(s in str(exc) for s in _BIND_FAILURES)
                if not lost_race or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> None:
        if self._own_log:
            fd, name = tempfile.mkstemp(prefix="modelserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        assert self.log_path is not None
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            text = self.log_text()
            ready = GRPC_READY in text and (not self.rest or REST_READY in text)
            if ready:
                return
            if self.rest and "Failed to start HTTP Server" in text:
                # TF Serving keeps running without REST; for us that is a failed start.
                self.kill()
                raise ServerStartError("REST port could not be bound:\n" + text[-4000:])
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"model server exited with {self.proc.returncode} before it was ready:\n"
                    + text[-4000:]
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"model server not ready after {self.startup_timeout_s} s:\n" + text[-4000:]
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout_s``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> EmbeddedServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
