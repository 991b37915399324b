"""Every file the launcher (`serving up`) and the rollout commands write is replaced in one
rename: readers in a tight loop never see a partial or empty file while rollout steps and a
relaunch rewrite them."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from google.protobuf import text_format

from clients.protos import ModelServerConfig
from export.repository import ModelRepository
from serving.backends.lifecycle import UpOptions, down, up
from serving.backends.record import RunDir
from serving.modelserver.process import free_port
from serving.modelserver.protos import BatchingParameters, MonitoringConfig

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MAX_READS_PER_FILE = 2_000_000
MAX_SECONDS = 240.0


def _check_model_config(text: str) -> None:
    config = text_format.Parse(text, ModelServerConfig())
    assert [m.name for m in config.model_config_list.config] == ["mnist"]
    assert text.rstrip().endswith("}")


def _check_json_record(text: str) -> None:
    assert isinstance(json.loads(text)["pid"], int)


def _check_rollout(text: str) -> None:
    assert set(json.loads(text)["mnist"]) == {"stable", "previous_stable", "canary"}


def _check_pid(text: str) -> None:
    assert text.endswith("\n") and int(text) > 0


def _check_batching(text: str) -> None:
    assert text_format.Parse(text, BatchingParameters()).max_batch_size.value > 0


def _check_monitoring(text: str) -> None:
    assert text_format.Parse(text, MonitoringConfig()).prometheus_config.enable


class Reader:
    """Reads one file as fast as it can; counts reads, absences and bad contents."""

    def __init__(self, path: Path, check) -> None:
        self.path, self.check = path, check
        self.reads = self.absent = 0
        self.bad: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and self.reads < MAX_READS_PER_FILE:
            if time.monotonic() > deadline:
                break
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                self.absent += 1  # between `down` and `up`: absent is fine, half is not
                continue
            self.reads += 1
            try:
                if not text:
                    raise AssertionError("empty")
                self.check(text)
            except Exception as exc:  # any parse or content failure is a partial file
                if len(self.bad) < 5:
                    self.bad.append(f"{type(exc).__name__}: {exc}: {text[:80]!r}")


def test_launcher_and_rollout_files_are_never_partial(tiny_mnist_repo, tmp_path) -> None:
    from serving.rollout import Rollout

    repo = tmp_path / "models"
    shutil.copytree(tiny_mnist_repo.repo / "mnist", repo / "mnist")
    repository = ModelRepository(repo, "mnist")
    with repository.staging() as staged:
        shutil.copytree(repository.version_path(1), staged, dirs_exist_ok=True)
        repository.publish(staged)
    run_dir = RunDir(tmp_path / "run")
    opts = UpOptions(
        repo=repo, server="embedded", grpc_port=free_port(), rest_port=free_port(),
        run_dir=run_dir, export_if_empty=False, timeout_s=120,
    )  # fmt: skip
    record = up(opts, say=lambda _: None)
    config = run_dir.config_dir
    readers = [
        Reader(config / "models.config", _check_model_config),
        Reader(config / "batching.config", _check_batching),
        Reader(config / "monitoring.config", _check_monitoring),
        Reader(run_dir.record_file, _check_json_record),
        Reader(run_dir.pid_file, _check_pid),
        Reader(repo / "rollout.json", _check_rollout),
    ]
    steps: list[str] = []
    try:
        for reader in readers:
            reader.thread.start()
        rollout = Rollout(record, run_dir, say=lambda _: None)
        for name, step in [
            ("pin 1", lambda: rollout.pin(1)),
            ("canary 2", lambda: rollout.canary(2)),
            ("promote", rollout.promote),
            ("rollback", rollout.rollback),
            ("canary 2", lambda: rollout.canary(2)),
            ("rollback", rollout.rollback),
        ]:
            step()
            steps.append(name)
        down(run_dir, say=lambda _: None)
        record = up(opts, say=lambda _: None)  # the launcher rewrites its files
        steps.append("down + up")
        rollout = Rollout(record, run_dir, say=lambda _: None)
        rollout.canary(2)
        steps.append("canary 2")
    finally:
        for reader in readers:
            reader.stop.set()
        for reader in readers:
            reader.thread.join(timeout=10)
        down(run_dir, say=lambda _: None)
    print("\n=== files written by `serving up` and `serving rollout`, read in a tight loop")
    print(f"  steps: {', '.join(steps)}")
    for reader in readers:
        print(f"  {reader.path.name}: {reader.reads} reads, {reader.absent} absent, "
              f"{len(reader.bad)} partial or empty {reader.bad}")  # fmt: skip
    for reader in readers:
        assert reader.bad == [], (reader.path, reader.bad)
        assert reader.reads > 0, reader.path
