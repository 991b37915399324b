"""The embedded backend: ``python -m serving.modelserver`` as a detached background process.

The server gets the same flags and config files as the tensorflow/serving container; only
the models root differs (the repository's absolute host path instead of ``/models``). It runs
in its own session, so it outlives ``make serve`` and a closed terminal; its pid goes to
``server.pid`` and its output to ``server.log`` under the run dir. It runs one worker process
per CPU (``--num_workers``; ``EMBEDDED_NUM_WORKERS`` overrides); the pid is the control plane's,
and the workers die with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serving.backends.record import BackendError, RunDir, ServerRecord
from serving.config import server_flags
from serving.config.files import atomic_write_text
from serving.modelserver.process import GRPC_READY, REST_READY, EmbeddedServerProcess

NAME = "embedded"


def pid_state(pid: int) -> str:
    """'running', 'gone', or 'other' (the pid now belongs to something else)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our own child (tests run `up` in-process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "other"
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "gone"
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return "gone"
        return "running" if "serving.modelserver" in cmdline else "other"
    return "running"  # no /proc (macOS): trust the signal probe


def default_num_workers() -> int:
    """One worker process per CPU (``EMBEDDED_NUM_WORKERS`` overrides it)."""
    raw = os.environ.get("EMBEDDED_NUM_WORKERS", "")
    if raw.strip():
        try:
            return max(1, int(raw))
        except ValueError:
            raise BackendError(f"EMBEDDED_NUM_WORKERS must be an integer, got {raw!r}") from None
    return os.cpu_count() or 1


class EmbeddedBackend:
    name = NAME

    def models_root(self, repo: Path) -> str:
        return str(repo)

    def server_config_dir(self, run_dir: RunDir) -> str:
        return str(run_dir.config_dir)

    def command(self, record: ServerRecord) -> list[str]:
        launcher = EmbeddedServerProcess(
            args=[*server_flags(record.config_dir), f"--num_workers={default_num_workers()}"],
            grpc_port=record.grpc_port,
            rest_port=record.rest_port,
            host=record.host,
        )
        return launcher.command()

    def start(self, record: ServerRecord, run_dir: RunDir) -> None:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(run_dir.log_file, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(record),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # survives the terminal and `make` that started it
                executable=sys.executable,
            )
        record.pid = self._proc.pid
        record.log_path = str(run_dir.log_file)
        atomic_write_text(run_dir.pid_file, f"{self._proc.pid}\n")

    def wait_listening(self, record: ServerRecord, timeout_s: float) -> None:
        """Wait for the ready log lines (printed after every model has a version AVAILABLE)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_tail(record, 1_000_000)
            if GRPC_READY in text and REST_READY in text:
                return
            reason = self.exit_reason(record)
            if reason:
                raise BackendError(f"{reason}\n{self.log_tail(record)}")
            if time.monotonic() > deadline:
                raise BackendError(
                    f"embedded server not ready after {timeout_s:.0f} s\n{self.log_tail(record)}"
                )
            time.sleep(0.1)

    def exit_reason(self, record: ServerRecord) -> str | None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == record.pid:
            code = proc.poll()
            return None if code is None else f"the embedded server exited with code {code}"
        if record.pid is None or pid_state(record.pid) != "running":
            return f"the embedded server (pid {record.pid}) is not running"
        return None

    def alive(self, record: ServerRecord) -> bool:
        return record.pid is not None and pid_state(record.pid) == "running"

    def stop(self, record: ServerRecord, timeout_s: float = 30.0) -> None:
        pid = record.pid
        if pid is None or pid_state(pid) != "running":
            return
        # The server leads its own session (start_new_session), so the group is just it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_state(pid) == "running":
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
                break
            time.sleep(0.1)
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def log_tail(self, record: ServerRecord, chars: int = 3000) -> str:
        if not record.log_path:
            return ""
        try:
            with open(record.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - chars))
                return log.read().decode(errors="replace")
        except OSError:
            return ""
