"""--num_workers=2: the consistency rules of the control plane, under real load.

Which worker answers is seen from the kernel, not from the server: the established TCP
connections on the gRPC port (/proc/net/tcp) are matched with each worker's socket fds, so a
test knows that both workers served. Load loops are bounded in count and in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from ms_models import copy_version
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from clients import codec
from serving.modelserver.process import EmbeddedServerProcess, ServerStartError, free_port
from serving.modelserver.workers import procinfo
from serving.modelserver.workers.procinfo import alive, connections_by_pid

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
FRESH_CHANNELS = 16
LOAD_THREADS = 8
MAX_REQUESTS_PER_THREAD = 3000
LOAD_TIME_LIMIT_S = 90.0


# -- helpers ---------------------------------------------------------------------------------
# grpc-python channels to one target share one connection (the global subchannel pool)
# unless each has its own pool: one connection per channel is what spreads over workers.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def channel_to(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=OWN_CONNECTION)


def config_text(*entries: str) -> str:
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def model_entry(name: str, base: Path, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def worker_pids(server: EmbeddedServerProcess) -> list[int]:
    return procinfo.children(server.proc.pid)


def predict_request(name: str, x: list[float], version: int | None = None, label: str = ""):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label:
        req.model_spec.version_label = label
    codec.fill_tensor_proto(req.inputs["x"], np.array(x, np.float32))
    return req


def predicted_version(stub, req, timeout: float = 30) -> int:
    resp = stub.Predict(req, timeout=timeout)
    return int(codec.tensor_proto_to_ndarray(resp.outputs["version"])[0])


def status_rows(model_stub, name: str) -> list[tuple[int, int, int]]:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    resp = model_stub.GetModelStatus(req, timeout=30)
    return [(s.version, s.state, s.status.error_code) for s in resp.model_version_status]


def metadata_bytes(stub, name: str) -> bytes:
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = name
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=30)
    # The packed SignatureDefMap is compared decoded: map entries have no wire order.
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sig_map)
    return resp.model_spec.SerializeToString() + sig_map.SerializeToString(deterministic=True)


class Fresh:
    """``FRESH_CHANNELS`` separate channels = separate TCP connections, spread by the kernel
    over the workers (SO_REUSEPORT hashes connections, not requests)."""

    def __init__(self, target: str, n: int = FRESH_CHANNELS) -> None:
        self.channels = [channel_to(target) for _ in range(n)]
        self.stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in self.channels]
        self.model_stubs = [model_service_pb2_grpc.ModelServiceStub(c) for c in self.channels]

    def close(self) -> None:
        for c in self.channels:
            c.close()


def reload(model_stub, text: str) -> None:
    req = model_management_pb2.ReloadConfigRequest()
    from google.protobuf import text_format

    text_format.Parse(text, req.config)
    model_stub.HandleReloadConfigRequest(req, timeout=120)


class Load:
    """Threads predicting on their own channels until stopped (bounded count and time)."""

    def __init__(self, target: str, make_request, threads: int = LOAD_THREADS) -> None:
        self.target = target
        self.make_request = make_request
        self.stop = threading.Event()
        self.ok: list[list[int]] = [[] for _ in range(threads)]
        self.failed: list[list[str]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        channel = channel_to(self.target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        deadline = time.monotonic() + LOAD_TIME_LIMIT_S
        req = self.make_request(index)
        try:
            while (
                not self.stop.is_set()
                and time.monotonic() < deadline
                and len(self.ok[index]) + len(self.failed[index]) < MAX_REQUESTS_PER_THREAD
            ):
                try:
                    self.ok[index].append(predicted_version(stub, req, timeout=30))
                except grpc.RpcError as exc:
                    self.failed[index].append(f"{exc.code()}: {exc.details()}")
        finally:
            channel.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def served(self) -> int:
        return sum(len(x) for x in self.ok)

    def failures(self) -> list[str]:
        return [f for x in self.failed for f in x]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def start(args: list[str], **kwargs) -> EmbeddedServerProcess:
    return EmbeddedServerProcess(["--num_workers=2", *args], startup_timeout_s=240, **kwargs).start()


# -- tests -----------------------------------------------------------------------------------
def test_new_version_reaches_every_worker_before_it_is_available(model_store, tmp_path):
    base = tmp_path / "ver"
    copy_version(model_store, "ver", 1, base)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    server = start(
        [
            "--model_name=ver",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring}",
        ]
    )
    fresh = Fresh(server.grpc_target)
    try:
        pids = worker_pids(server)
        assert len(pids) == 2 and all(alive(p) for p in pids)
        assert "2 workers serving" in server.log_text()

        # Both workers serve (seen from the kernel), and answer status/metadata identically.
        assert {predicted_version(s, predict_request("ver", [1.0])) for s in fresh.stubs} == {1}
        by_pid = connections_by_pid(server.grpc_port, pids)
        assert all(n > 0 for n in by_pid.values()), by_pid
        assert len({tuple(status_rows(m, "ver")) for m in fresh.model_stubs}) == 1
        assert len({metadata_bytes(s, "ver") for s in fresh.stubs}) == 1

        # v2 appears under load: no request fails while it loads into both workers and v1
        # unloads after both switched; and wherever status says AVAILABLE, v2 answers.
        with Load(server.grpc_target, lambda i: predict_request("ver", [float(i)])) as load:
            time.sleep(0.5)
            copy_version(model_store, "ver", 2, base)

            def v2_seen():
                for m, s in zip(fresh.model_stubs, fresh.stubs, strict=True):
                    rows = dict((v, st) for v, st, _ in status_rows(m, "ver"))
                    if rows.get(2) == AVAILABLE:  # AVAILABLE: this worker must serve it already
                        assert predicted_version(s, predict_request("ver", [0.0], version=2)) == 2
                        return True
                return False

            wait_for(v2_seen, 120, "version 2 AVAILABLE")
            wait_for(
                lambda: all(status_rows(m, "ver")[0][:2] == (2, AVAILABLE) for m in fresh.model_stubs)
                and all(dict((v, st) for v, st, _ in status_rows(m, "ver")).get(1) == END
                        for m in fresh.model_stubs),
                60,
                "v2 AVAILABLE and v1 END on every worker",
            )
            time.sleep(0.5)
        assert load.failures() == []
        assert load.served() > 0
        assert set(v for x in load.ok for v in x) <= {1, 2}
        assert {predicted_version(s, predict_request("ver", [1.0])) for s in fresh.stubs} == {2}
        assert len({tuple(status_rows(m, "ver")) for m in fresh.model_stubs}) == 1

        # Metrics are the sum over the workers on the one monitoring path.
        before = _ok_count(server.rest_url, "ver")
        for s in fresh.stubs:
            predicted_version(s, predict_request("ver", [1.0]))
        assert _ok_count(server.rest_url, "ver") == before + FRESH_CHANNELS
    finally:
        fresh.close()
        code = server.stop()
    assert code == 0, server.log_text()[-3000:]
    assert not any(alive(p) for p in pids)


def _ok_count(rest_url: str, model: str) -> float:
    text = urllib.request.urlopen(f"{rest_url}/monitoring/prometheus/metrics", timeout=30).read()
    for line in text.decode().splitlines():
        if line.startswith(f':tensorflow:serving:request_count{{model_name="{model}",status="OK"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_reload_answers_after_every_worker_applied_it(model_store, tmp_path):
    ver = tmp_path / "ver"
    for v in (1, 2):
        copy_version(model_store, "ver", v, ver)
    echo = tmp_path / "echo"
    copy_version(model_store, "echo", 1, echo)
    config = tmp_path / "models.config"
    policy = "model_version_policy { specific { versions: 1 versions: 2 } }"
    config.write_text(
        config_text(model_entry("ver", ver, policy + ' version_labels { key: "stable" value: 1 }'))
    )
    server = start(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=0",
            "--allow_version_labels_for_unavailable_models",  # the labelled start-up config
        ],
        rest=False,
    )
    fresh = Fresh(server.grpc_target)
    try:
        with Load(server.grpc_target, lambda i: predict_request("ver", [1.0], label="stable")) as load:
            for round_ in range(3):
                for label_version in (2, 1):
                    reload(
                        fresh.model_stubs[round_],
                        config_text(
                            model_entry(
                                "ver",
                                ver,
                                policy
                                + ' version_labels { key: "stable" value: 1 }'
                                + f' version_labels {{ key: "canary" value: {label_version} }}',
                            )
                        ),
                    )
                    # Answered: every worker resolves the label already.
                    got = {
                        predicted_version(s, predict_request("ver", [0.0], label="canary"))
                        for s in fresh.stubs
                    }
                    assert got == {label_version}
        assert load.failures() == []
        assert set(v for x in load.ok for v in x) == {1}

        # A new model added by reload is served by every worker once the reload answers.
        reload(
            fresh.model_stubs[0],
            config_text(model_entry("ver", ver, policy), model_entry("echo", echo)),
        )
        for s in fresh.stubs:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "echo"
            req.model_spec.signature_name = "count"
            codec.fill_tensor_proto(req.inputs["x"], np.array([1.0, 2.0], np.float32))
            assert int(codec.tensor_proto_to_ndarray(s.Predict(req, timeout=30).outputs["n"])[0]) == 2

        # A refused reload keeps its code and message through the worker.
        with pytest.raises(grpc.RpcError) as info:
            reload(
                fresh.model_stubs[1],
                config_text(model_entry("ver", "relative/path", policy)),
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "relative/path" in info.value.details()
        assert len({tuple(status_rows(m, "ver")) for m in fresh.model_stubs}) == 1
    finally:
        fresh.close()
        code = server.stop()
    assert code == 0, server.log_text()[-3000:]


def test_dead_worker_is_restarted_with_every_available_version(model_store, tmp_path):
    base = tmp_path / "ver"
    for v in (1, 2):
        copy_version(model_store, "ver", v, base)
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("ver", base, "model_version_policy { all {} }")))
    server = start([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"], rest=False)
    try:
        victim, survivor = worker_pids(server)
        with Load(server.grpc_target, lambda i: predict_request("ver", [1.0])) as load:
            wait_for(lambda: load.served() > 50, 60, "load running")
            os.kill(victim, signal.SIGKILL)
            new = wait_for(
                lambda: [p for p in worker_pids(server) if p not in (victim, survivor)],
                120,
                "a replacement worker",
            )[0]
            wait_for(
                lambda: f"restarted (pid {new})" in server.log_text(), 120, "the replacement to listen"
            )
            served_after = load.served()
            wait_for(lambda: load.served() > served_after + 50, 60, "load going on")
        assert alive(survivor) and alive(new) and not alive(victim)
        assert server.running
        # Only requests in flight on the killed worker's connections may fail.
        assert all("UNAVAILABLE" in f or "CANCELLED" in f for f in load.failures()), load.failures()[:5]
        fresh = Fresh(server.grpc_target, 24)
        try:
            for s in fresh.stubs:  # both versions on every connection, old and new worker
                for version in (1, 2):
                    req = predict_request("ver", [1.0], version=version)
                    assert predicted_version(s, req) == version
            by_pid = connections_by_pid(server.grpc_port, [survivor, new])
            assert by_pid[new] > 0 and by_pid[survivor] > 0, (by_pid, server.log_text().replace("\n", " | ")[-1500:])
            assert len({tuple(status_rows(m, "ver")) for m in fresh.model_stubs}) == 1
        finally:
            fresh.close()
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-3000:]


def test_sigterm_drains_every_worker(model_store, tmp_path):
    base = tmp_path / "echo"
    copy_version(model_store, "echo", 1, base)
    server = start(
        ["--model_name=echo", f"--model_base_path={base}", "--shutdown_grace_seconds=90"],
        rest=False,
    )
    pids = worker_pids(server)
    results: list[object] = []

    def slow(channel_index: int) -> None:
        channel = channel_to(server.grpc_target)
        try:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "echo"
            req.model_spec.signature_name = "spin"
            codec.fill_tensor_proto(req.inputs["n"], np.array([400_000], np.int64))
            resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=120)
            results.append(int(codec.tensor_proto_to_ndarray(resp.outputs["done"])[0]))
        except Exception as exc:  # recorded and asserted below
            results.append(exc)
        finally:
            channel.close()

    # Connections land on workers by the kernel's hash: add slow requests (own connection
    # each) until both workers hold one in flight (bounded).
    threads: list[threading.Thread] = []
    while len(threads) < 16:
        before = sum(connections_by_pid(server.grpc_port, pids).values())
        t = threading.Thread(target=slow, args=(len(threads),))
        t.start()
        threads.append(t)
        wait_for(
            lambda b=before: sum(connections_by_pid(server.grpc_port, pids).values()) > b,
            30,
            "the request's connection",
        )
        if all(n > 0 for n in connections_by_pid(server.grpc_port, pids).values()):
            break
    assert all(n > 0 for n in connections_by_pid(server.grpc_port, pids).values())
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert results == [400_000] * len(threads)
    assert server.proc.wait(60) == 0
    assert not any(alive(p) for p in pids)


def test_workers_die_with_the_control_plane(model_store, tmp_path):
    base = tmp_path / "ver"
    copy_version(model_store, "ver", 1, base)
    server = start(["--model_name=ver", f"--model_base_path={base}"], rest=False)
    pids = worker_pids(server)
    server.kill()  # SIGKILL: no chance to stop them itself
    wait_for(lambda: not any(alive(p) for p in pids), 60, "workers to exit (PDEATHSIG)")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_held_by_another_process_is_refused(model_store, tmp_path, workers):
    base = tmp_path / "ver"
    copy_version(model_store, "ver", 1, base)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # would let us share silently
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        server = EmbeddedServerProcess(
            ["--model_name=ver", f"--model_base_path={base}", f"--num_workers={workers}"],
            grpc_port=holder.getsockname()[1],
            rest_port=free_port(),
            startup_timeout_s=120,
        )
        with pytest.raises(ServerStartError) as info:
            server.start()
        assert server.proc.returncode == 255
        assert "already in use by another process" in str(info.value)
    finally:
        holder.close()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_workers=2", "--grpc_socket_path=/tmp/x.sock"], "cannot be combined with --num_workers"),
        (["--num_workers=0"], "--num_workers must be at least 1"),
    ],
)
def test_flag_combinations_refused(flags, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "serving.modelserver", f"--port={free_port()}",
         "--model_name=m", f"--model_base_path={tmp_path}", *flags],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 255
    assert message in proc.stderr
    assert "Failed to start server. Error: INVALID_ARGUMENT" in proc.stderr

