"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket

import pytest

from export.tiny import TinyModelRepo

# TensorFlow is chatty on stderr; tests never assert on its noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def tiny_mnist_repo(tmp_path_factory: pytest.TempPathFactory) -> TinyModelRepo:
    """A real, tiny softmax model (trained for seconds on 6,000 digits, ~89% on the test set)
    published by the real export pipeline as ``<repo>/mnist/1/`` in a private temp repository.

    Returns ``TinyModelRepo`` (export/tiny.py): repo, model_name, version, version_path,
    accuracy, and a sample of the official test set (test_images float32 [64, 784],
    test_images_u8, test_labels, and the model's own predictions for them).
    Treat the repository as read-only: other tests share it. Copy it to modify it.
    """
    from export.tiny import publish_tiny_model

    return publish_tiny_model(tmp_path_factory.mktemp("tiny_mnist_repo"))


class ExportRun:
    """``python -m export train ...`` as a child process whose stdout lines are read as they
    come, so a test can act on the export's own progress lines (never on sleeps)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, **popen) -> None:
        import queue
        import subprocess
        import sys
        import threading
        from pathlib import Path

        project = Path(__file__).resolve().parents[1]
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "export", "train", *args],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            **popen,
        )
        self._errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._errors.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._errors)

    def wait_line(self, needle: str, timeout_s: float = 300.0) -> str:
        """The first (new) stdout line containing ``needle``; AssertionError if the export
        ends or ``timeout_s`` passes first."""
        import queue
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
            if needle in line:
                return line
        self.kill()
        raise AssertionError(f"no line with {needle!r}; stdout:\n{self.stdout}\nstderr:\n{self.stderr[-3000:]}")

    def finish(self, timeout_s: float = 300.0) -> int:
        """Wait for the exit (killing it after ``timeout_s``); collects stdout and stderr."""
        import subprocess

        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        for reader in self._readers:
            reader.join(timeout=10)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def export_cli():
    """Start ``python -m export train ARGS`` (an :class:`ExportRun`); killed at teardown."""
    runs: list[ExportRun] = []

    def start(args: list[str], env: dict[str, str] | None = None, **popen) -> ExportRun:
        run = ExportRun(args, env, **popen)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
