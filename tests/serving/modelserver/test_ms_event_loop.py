"""The event loop a server runs on (uvloop by default) and the batching share of each worker.

Which loop a running process uses is read from the kernel: uvloop's extension module is mapped
into the process (/proc/<pid>/maps) only when the server imported it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
import uvloop
from ms_models import copy_version

from serving.modelserver import event_loop
from serving.modelserver.batching import BatchingOptions
from serving.modelserver.process import EmbeddedServerProcess
from serving.modelserver.workers import procinfo
from serving.modelserver.workers.control_plane import worker_batching


def _maps_uvloop(pid: int) -> bool:
    return "uvloop" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("value", "uses_uvloop"),
    [("", True), ("uvloop", True), ("UVLoop ", True), ("asyncio", False), ("ASYNCIO", False)],
)
def test_the_loop_factory_follows_the_environment(monkeypatch, value, uses_uvloop):
    monkeypatch.setenv(event_loop.ENV, value)
    factory = event_loop.loop_factory()
    assert (factory is uvloop.new_event_loop) == uses_uvloop
    assert (factory is None) == (not uses_uvloop)


def test_run_returns_the_coroutines_result_on_the_chosen_loop(monkeypatch):
    async def which() -> int:
        return 1 if isinstance(asyncio.get_running_loop(), uvloop.Loop) else 0

    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.run(which()) == 1
    monkeypatch.setenv(event_loop.ENV, "asyncio")
    assert event_loop.run(which()) == 0


@pytest.mark.parametrize(
    ("threads", "workers", "share"), [(2, 2, 1), (4, 2, 2), (1, 2, 1), (5, 2, 2), (8, 3, 2)]
)
def test_each_worker_gets_its_share_of_the_batch_threads(threads, workers, share):
    options = BatchingOptions(max_batch_size=32, num_batch_threads=threads)
    per_worker = worker_batching(options, workers)
    assert per_worker is not None
    assert per_worker["num_batch_threads"] == share
    assert {k: v for k, v in per_worker.items() if k != "num_batch_threads"} == {
        k: v for k, v in vars(options).items() if k != "num_batch_threads"
    }
    assert options.num_batch_threads == threads  # the server's own options stay as read
    assert worker_batching(None, workers) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "expect_uvloop"), [({}, True), ({event_loop.ENV: "asyncio"}, False)]
)
def test_every_server_process_runs_the_chosen_loop(model_store, tmp_path, env, expect_uvloop):
    base = tmp_path / "echo"
    copy_version(model_store, "echo", 1, base)
    server = EmbeddedServerProcess(
        ["--model_name=echo", f"--model_base_path={base}", "--num_workers=2"],
        env=env,
        startup_timeout_s=240,
    ).start()
    try:
        pids = [server.proc.pid, *procinfo.children(server.proc.pid)]
        assert len(pids) == 3
        assert [_maps_uvloop(pid) for pid in pids] == [expect_uvloop] * 3
        # And it serves on that loop: a real predict over REST.
        body = json.dumps({"signature_name": "double", "instances": [[1.0, 2.0, 3.0]]}).encode()
        req = urllib.request.Request(f"{server.rest_url}/v1/models/echo:predict", data=body)
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read()) == {"predictions": [[2.0, 4.0, 6.0]]}
    finally:
        assert server.stop() == 0, server.log_text()[-3000:]
