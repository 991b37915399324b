"""Server faults under load: kill -9 and restart, SIGTERM with requests in flight, a ConfigMap
style config update, and `python -m serving up` after the server died by kill -9."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fault_load import ClientLoad
from fault_server import CONFIG_POLL_S, config_text, report

from clients import connect
from clients.base import NO_RETRY
from serving.backends.control import ModelControl
from serving.backends.lifecycle import UpOptions, down, up
from serving.backends.record import RunDir
from serving.modelserver.process import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RECONNECT_S = 2.5  # the clients' longest gRPC reconnect backoff (2 s) and a margin
PROJECT = Path(__file__).resolve().parents[2]


def test_server_killed_and_restarted(fault_server, digits) -> None:
    server = fault_server()
    load = server.load(digits).start()
    load.wait_for_requests(200)
    killed = time.monotonic()
    server.process.kill()  # SIGKILL
    server.start()  # same ports, same config
    ready = time.monotonic()
    load.wait_for_ok(200, after=ready + RECONNECT_S)
    result = load.stop()
    report("kill -9 of the server and a restart", result, server,
           f"  restart took {ready - killed:.2f} s (kill to both ports ready)")  # fmt: skip
    assert result.failures_outside(killed, ready + RECONNECT_S) == [], result.summary()
    assert result.ok_after(ready + RECONNECT_S) > 0


def build_slow_model(export_dir: Path) -> None:
    """serving_default(n int64 [1]) spins n loop iterations: a request that stays in flight."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1], tf.int64, name="n")])
        def spin(self, n):
            done = tf.while_loop(lambda i: i < n[0], lambda i: i + 1, [tf.constant(0, tf.int64)])
            return {"done": tf.reshape(done, [1])}

    module = Slow()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.spin})


def test_sigterm_with_requests_in_flight(fault_server, digits, tmp_path) -> None:
    build_slow_model(tmp_path / "slow" / "1")
    server = fault_server(start=False)
    server.config.write_text(
        config_text(server.base).rstrip()[:-1]
        + f'  config {{ name: "slow" base_path: "{tmp_path / "slow"}" model_platform: "tensorflow" }}\n}}\n'
    )
    server.start()
    with connect(f"grpc://{server.grpc_target}", model="slow", timeout_s=60) as c:
        c.predict({"n": np.array([1000], np.int64)})  # warm
        started = time.monotonic()
        c.predict({"n": np.array([100_000], np.int64)})
        # About 1.5 s per slow request: well in flight at SIGTERM, well inside the 10 s grace.
        spins = int(min(2e7, max(1e5, 100_000 * 1.5 / (time.monotonic() - started))))
        started = time.monotonic()
        c.predict({"n": np.array([spins], np.int64)})
        spin_s = time.monotonic() - started
    load = server.load(digits).start()
    load.wait_for_requests(100)
    slow_results: list[object] = []

    def slow_call(transport: str) -> None:
        target = f"grpc://{server.grpc_target}" if transport == "grpc" else server.rest_url
        with connect(target, model="slow", timeout_s=60, retry=NO_RETRY) as client:
            try:
                out = client.predict({"n": np.array([spins], np.int64)})
                slow_results.append(int(np.asarray(out["done"]).reshape(-1)[0]))
            except Exception as exc:
                slow_results.append(exc)

    # Two slow requests (of the server's 4 inference threads), so digits keep being answered.
    callers = [threading.Thread(target=slow_call, args=(t,)) for t in ("grpc", "rest")]
    for caller in callers:
        caller.start()
    # The slow calls take spin_s (> 1 s) each; a fifth of that in, both are being served.
    time.sleep(min(0.5, spin_s / 5))
    sigterm = time.monotonic()
    server.process.proc.terminate()
    code = server.process.proc.wait(timeout=60)
    exited = time.monotonic()
    for caller in callers:
        caller.join(timeout=60)
    result = load.stop()
    refused = [o for o in result.failures if o.start >= sigterm]
    report("SIGTERM to the server with requests in flight", result, server,
           f"  2 slow requests of {spin_s:.2f} s in flight: {slow_results}\n"
           f"  exit {code} {exited - sigterm:.2f} s after SIGTERM; "
           f"{len(refused)} requests sent after SIGTERM were refused")  # fmt: skip
    assert code == 0, server.log_text()[-3000:]
    assert slow_results == [spins] * 2, slow_results
    admitted_failures = [o for o in result.failures if o.end < sigterm or o.start < sigterm]
    assert admitted_failures == [], result.summary()
    assert all("navailable" in (o.error or "") or "onnect" in (o.error or "") for o in refused)


def _configmap_write(config_dir: Path, text: str, generation: int) -> None:
    """The kubelet's atomic update: a new timestamped dir, then `..data` flipped by rename."""
    stamp = config_dir / f"..2026_12_01_00_00_0{generation}.{os.getpid()}"
    stamp.mkdir()
    (stamp / "models.config").write_text(text)
    tmp_link = config_dir / "..data_tmp"
    tmp_link.symlink_to(stamp.name)
    os.replace(tmp_link, config_dir / "..data")
    if not (config_dir / "models.config").is_symlink():
        (config_dir / "models.config").symlink_to("..data/models.config")


def test_configmap_style_config_update(fault_server, digits, tmp_path) -> None:
    server = fault_server(start=False)
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    _configmap_write(mounted, config_text(server.base), 1)
    server.config = mounted / "models.config"
    server.start()
    load = server.load(digits).start()
    load.wait_for_requests(100)
    old = (mounted / "..data").resolve()
    _configmap_write(mounted, config_text(server.base, "specific { versions: 1 }", {"stable": 1}), 2)
    shutil.rmtree(old)  # the kubelet removes the previous generation
    picked = server.wait_log("Model config file changed; reloading")
    time.sleep(3 * CONFIG_POLL_S)  # three more polls of the unchanged file
    with connect(f"grpc://{server.grpc_target}", model="mnist") as client:
        labelled = client.predict_digits(digits.images[:1], label="stable")
    load.wait_for_requests(100)
    result = load.stop()
    reloads = server.log_count("Model config file changed; reloading")
    report("model config replaced as a Kubernetes ConfigMap volume updates (..data flip)",
           result, server, f"  reloads after the flip: {reloads}")  # fmt: skip
    assert result.failures == [], result.summary()
    assert picked and reloads == 1
    assert server.log_count("Adding/updating models.") == 2  # start-up + the flip
    assert int(labelled.classes[0]) == digits.expected[0] and labelled.version == 1


def _publish_copy(repo: Path) -> int:
    """A second version through the repository's real publish (a copy of version 1)."""
    from export.repository import ModelRepository

    repository = ModelRepository(repo, "mnist")
    with repository.staging() as staged:
        shutil.copytree(repository.version_path(1), staged, dirs_exist_ok=True)
        return repository.publish(staged).version


def _labels(target: str) -> dict[str, int | None]:
    with ModelControl(target) as control:
        return {label: control.resolve_label("mnist", label) for label in ("stable", "canary")}


def test_serving_up_after_kill_9(tiny_mnist_repo, digits, tmp_path) -> None:
    from serving.rollout import Rollout

    repo = tmp_path / "models"
    shutil.copytree(tiny_mnist_repo.repo / "mnist", repo / "mnist")
    assert _publish_copy(repo) == 2
    run_dir = RunDir(tmp_path / "run")
    grpc_port, rest_port = free_port(), free_port()
    opts = UpOptions(
        repo=repo, server="embedded", grpc_port=grpc_port, rest_port=rest_port,
        run_dir=run_dir, export_if_empty=False, timeout_s=120,
    )  # fmt: skip
    record = up(opts, say=lambda _: None)
    try:
        rollout = Rollout(record, run_dir, say=lambda _: None)
        rollout.pin(1)
        rollout.canary(2)
        state_before = (repo / "rollout.json").read_text()
        labels_before = _labels(record.grpc_target)
        load = ClientLoad(record.grpc_target, record.rest_url, digits.images, digits.expected)
        load.start()
        load.wait_for_requests(100)
        killed = time.monotonic()
        os.kill(record.pid, 9)
        again = subprocess.run(
            [sys.executable, "-m", "serving", "up", "--run-dir", str(run_dir.path),
             "--repo", str(repo), "--server", "embedded", "--no-export",
             "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)],
            cwd=PROJECT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        ready = time.monotonic()
        load.wait_for_ok(200, after=ready + RECONNECT_S)
        result = load.stop()
        stale = [line for line in again.stdout.splitlines() if "stale" in line]
        labels_after = _labels(record.grpc_target)
        with ModelControl(record.grpc_target) as control:
            available = control.available("mnist")
        report("`python -m serving up` after the server died by kill -9", result, None,
               f"  up exit {again.returncode}, {ready - killed:.2f} s after the kill; said: {stale}\n"
               f"  labels before {labels_before}, after {labels_after}; AVAILABLE {sorted(available)}")  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(stale) == 1 and "not running" in stale[0], again.stdout
        assert (repo / "rollout.json").read_text() == state_before
        assert json.loads(state_before)["mnist"] == {"stable": 1, "previous_stable": None, "canary": 2}
        assert labels_after == labels_before == {"stable": 1, "canary": 2}
        assert available == {1, 2}
        assert result.failures_outside(killed, ready + RECONNECT_S) == [], result.summary()
        assert result.ok_after(ready + RECONNECT_S) > 0
    finally:
        down(run_dir, say=lambda _: None)
