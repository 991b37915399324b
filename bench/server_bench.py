"""Server benchmark matrix: the embedded server against the in-process limit, in one run.

    .venv/bin/python bench/server_bench.py [--quick] [--model-base models/mnist] [--seconds 3]

Closed-loop rows: transport (gRPC with ``h2load``, REST with ``wrk``) x workers (1 / 2) x
batching (off / on) x images per request (1 / 32 / 256) x concurrency (1 / 8 / 32 / 128):
images/s, p50 / p99 per request, server CPU (control plane + workers, in cores and per
image), server RSS (total and the largest worker), how the connections spread over the workers
(SO_REUSEPORT spreads connections, not requests: gRPC opens ``min(concurrency, 8)``
connections, at least as many as workers; wrk opens one per concurrent request), and the ratio
to the in-process batch-32 limit measured in the same run. Then an open-loop row (gRPC, fixed
rate at half the measured 1-image peak, h2load ``--rps``) for the p99 target, and the cost of
many models (10 models x 2 versions: load time, RSS, GetModelStatus latency).

``--quick``: concurrency 1 / 32, images 1 / 32, batching on, 2 s per point (a few minutes).
The load generators run on the same cores as the server, so every figure is a floor; on a
shared machine compare rows of one run, not runs. Every load is bounded in time.
Without ``h2load`` a Python grpc.aio generator is used (it costs the server's cores more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/rest_wrk.py, grpc_h2load.py

from serving.modelserver.workers import procinfo  # noqa: E402

SIGNATURE = "predict_images"
MAX_GRPC_CONNECTIONS = 8


@dataclass
class Figure:
    label: str
    throughput: float  # images per second
    p50_ms: float
    p99_ms: float
    count: int
    server_cores: float = float("nan")
    server_cpu_us: float = float("nan")  # server CPU per image (all processes)
    rss_mb: float = float("nan")  # server total
    worker_rss_mb: float = float("nan")  # largest worker (or the single process)
    spread: str = ""  # established connections per worker, e.g. "5/3"
    errors: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latest_version_dir(base: Path) -> Path:
    versions = [p for p in base.iterdir() if p.name.isdigit()]
    if not versions:
        raise SystemExit(f"no numeric version directory under {base}")
    return max(versions, key=lambda p: int(p.name))


def sample_images(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((n, 784), dtype=np.float32)


def inprocess_limit(version_dir: Path, batch: int, seconds: float, max_calls: int) -> Figure:
    """The signature called directly, batch ``batch`` (no server): through the Session runtime
    the server itself uses (``Servable.run``), so the ratio compares like with like."""
    from serving.modelserver.servable import Servable

    servable = Servable.load("bench", 1, str(version_dir))
    x = sample_images(batch)
    for _ in range(5):
        servable.run(SIGNATURE, {"images": x})
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(latencies) < max_calls:
        t0 = time.perf_counter()
        servable.run(SIGNATURE, {"images": x})["scores"]
        latencies.append(time.perf_counter() - t0)
    servable.close()
    return Figure(
        f"in-process batch {batch}",
        batch * len(latencies) / sum(latencies),
        1e3 * statistics.median(latencies),
        1e3 * percentile(latencies, 0.99),
        len(latencies),
    )


def predict_request_bytes(model_name: str, images: np.ndarray) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from clients import codec

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = SIGNATURE
    codec.fill_tensor_proto(req.inputs["images"], images)
    return req.SerializeToString()


# -- the server's processes ------------------------------------------------------------------
class ServerProbe:
    """CPU, RSS and connection spread of a server and its workers during one load."""

    def __init__(self, pid: int, grpc_port: int, rest_port: int) -> None:
        self.pids = procinfo.server_pids(pid)
        self.workers = procinfo.children(pid) or [pid]
        self.ports = {"grpc": grpc_port, "rest": rest_port}
        self.spread = ""
        self._cpu0 = 0.0
        self._t0 = 0.0

    def cpu(self) -> float:
        return sum(procinfo.cpu_seconds(p) for p in self.pids if procinfo.alive(p))

    def wait_idle(self, limit_s: float = 60.0, cores: float = 0.2) -> float:
        """Wait until the server is idle: an overloaded point (e.g. timed-out 256-image REST
        bodies) leaves a backlog that would otherwise land in the next point."""
        start = time.monotonic()
        while time.monotonic() - start < limit_s:
            c0, t0 = self.cpu(), time.monotonic()
            time.sleep(0.3)
            if (self.cpu() - c0) / (time.monotonic() - t0) < cores:
                break
        return time.monotonic() - start

    def start(self, transport: str, sample_after_s: float) -> None:
        self._cpu0, self._t0 = self.cpu(), time.monotonic()
        self.spread = ""

        def sample() -> None:
            time.sleep(sample_after_s)
            counts = procinfo.connections_by_pid(self.ports[transport], self.workers)
            self.spread = "/".join(str(counts[p]) for p in self.workers)

        threading.Thread(target=sample, daemon=True).start()

    def finish(self, fig: Figure, images_served: float) -> Figure:
        cpu = self.cpu() - self._cpu0
        wall = time.monotonic() - self._t0
        rss = [procinfo.rss_bytes(p) for p in self.pids if procinfo.alive(p)]
        worker_rss = [procinfo.rss_bytes(p) for p in self.workers if procinfo.alive(p)]
        fig.server_cores = cpu / wall
        fig.server_cpu_us = cpu / max(1.0, images_served) * 1e6
        fig.rss_mb = sum(rss) / 2**20
        fig.worker_rss_mb = max(worker_rss, default=0) / 2**20
        fig.spread = self.spread
        return fig


# -- loads -----------------------------------------------------------------------------------
async def _python_grpc_load(target, payload, concurrency, connections, seconds, max_requests):
    import grpc

    latencies: list[float] = []
    errors = 0
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    calls = [
        c.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=None,
            response_deserializer=None,
        )
        for c in channels
    ]
    for call in calls:
        await call(payload, timeout=30)
    end = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        call = calls[i % len(calls)]
        while time.perf_counter() < end and len(latencies) < max_requests:
            t0 = time.perf_counter()
            try:
                await call(payload, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for c in channels:
        await c.close()
    return latencies, elapsed, errors


def grpc_point(server, probe, model_name, images, concurrency, seconds, label, use_h2load,
               max_requests, rate_per_s: float = 0.0) -> Figure:  # fmt: skip
    payload = predict_request_bytes(model_name, sample_images(images))
    connections = max(1, min(concurrency, MAX_GRPC_CONNECTIONS))
    if use_h2load:
        from grpc_h2load import PROMETHEUS_PATH, request_counts, run_h2load

        url = f"{server.rest_url}{PROMETHEUS_PATH}"
        probe.start("grpc", 1.0 + seconds / 2)
        ok0 = request_counts(url, model_name).get("OK", 0)
        result = run_h2load(
            server.grpc_target,
            payload,
            concurrency,
            seconds,
            lambda: request_counts(url, model_name),
            warmup_s=1.0,
            connections=connections,
            rate_per_s=rate_per_s,
        )
        served = request_counts(url, model_name).get("OK", 0) - ok0
        fig = Figure(label, result.requests_per_s * images, result.p50_ms, result.p99_ms,
                     result.requests, errors=result.errors)  # fmt: skip
        return probe.finish(fig, served * images)
    probe.start("grpc", seconds / 2)
    lat, elapsed, errors = asyncio.run(
        _python_grpc_load(server.grpc_target, payload, concurrency, connections, seconds,
                          max_requests)  # fmt: skip
    )
    fig = Figure(label, len(lat) * images / elapsed, 1e3 * statistics.median(lat) if lat else
                 float("nan"), 1e3 * percentile(lat, 0.99), len(lat), errors=errors)  # fmt: skip
    return probe.finish(fig, len(lat) * images)


def rest_point(server, probe, model_name, images, concurrency, seconds, label) -> Figure:
    from rest_wrk import check_once, run_wrk

    url = f"{server.rest_url}/v1/models/{model_name}:predict"
    body = json.dumps(
        {"signature_name": SIGNATURE, "instances": sample_images(images).tolist()}
    ).encode()
    check_once(url, body)
    run_wrk(url, body, concurrency, 1.0)  # warm-up: connections, first batches
    probe.start("rest", seconds / 2)
    result = run_wrk(url, body, concurrency, seconds)
    fig = Figure(label, result.requests_per_s * images, result.p50_ms, result.p99_ms,
                 result.requests, errors=result.errors)  # fmt: skip
    return probe.finish(fig, result.requests * images)


# -- servers ---------------------------------------------------------------------------------
def batching_config(timeout_micros: int, threads: int) -> str:
    # Large enough for a 256-image request in one batch.
    return (
        "max_batch_size { value: 256 }\n"
        f"batch_timeout_micros {{ value: {timeout_micros} }}\n"
        f"num_batch_threads {{ value: {threads} }}\n"
        "max_enqueued_batches { value: 1000 }\n"
    )


def start_server(args, workdir: Path, workers: int, batching: bool, model_args: list[str]):
    from grpc_h2load import MONITORING_CONFIG

    from serving.modelserver.process import EmbeddedServerProcess

    monitoring = workdir / "monitoring.config"
    monitoring.write_text(MONITORING_CONFIG)  # request counts: h2load's answers are checked
    flags = [
        *model_args,
        "--file_system_poll_wait_seconds=0",
        f"--monitoring_config_file={monitoring}",
        f"--num_workers={workers}",
        *args.server_arg,
    ]
    if batching:
        params = workdir / "batching.config"
        params.write_text(batching_config(args.batch_timeout_micros, args.batch_threads))
        flags += ["--enable_batching", f"--batching_parameters_file={params}"]
    return EmbeddedServerProcess(flags, startup_timeout_s=600).start()


def many_models(args, workdir: Path, version_dir: Path, workers: int) -> dict:
    """10 models x 2 versions of the same SavedModel: start-up to ready, RSS, status latency."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from serving.modelserver.process import EmbeddedServerProcess

    repo = workdir / f"many-{workers}"
    entries = []
    for i in range(10):
        for v in (1, 2):
            shutil.copytree(version_dir, repo / f"m{i}" / str(v))
        entries.append(
            f'config {{ name: "m{i}" base_path: "{repo / f"m{i}"}" model_platform: "tensorflow" '
            "model_version_policy { all {} } }"
        )
    config = repo / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    t0 = time.monotonic()
    server = EmbeddedServerProcess(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0",
         f"--num_workers={workers}"], rest=False, startup_timeout_s=900,
    ).start()  # fmt: skip
    load_s = time.monotonic() - t0
    try:
        pids = procinfo.server_pids(server.proc.pid)
        worker_pids = procinfo.children(server.proc.pid) or pids
        rss = sum(procinfo.rss_bytes(p) for p in pids) / 2**20
        worker_rss = max(procinfo.rss_bytes(p) for p in worker_pids) / 2**20
        channels = [
            grpc.insecure_channel(server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(4)
        ]
        stubs = [model_service_pb2_grpc.ModelServiceStub(c) for c in channels]
        lat = []
        for n in range(400):
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = f"m{n % 10}"
            t = time.perf_counter()
            resp = stubs[n % 4].GetModelStatus(req, timeout=30)
            lat.append(time.perf_counter() - t)
            assert len(resp.model_version_status) == 2
        for c in channels:
            c.close()
    finally:
        server.stop()
    return {
        "workers": workers,
        "load_s": load_s,
        "rss_mb": rss,
        "worker_rss_mb": worker_rss,
        "status_p50_ms": 1e3 * statistics.median(lat),
        "status_p99_ms": 1e3 * percentile(lat, 0.99),
    }


# -- output ----------------------------------------------------------------------------------
def print_table(limit: Figure, limits: list[Figure], figures: list[Figure]) -> None:
    print("\n| measurement | img/s | p50 ms | p99 ms | of limit | server cores | server CPU us/img "
          "| RSS MB (largest worker) | connections per worker | errors |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for f in [*limits, *figures]:
        ratio = f.throughput / limit.throughput
        if f.errors < 0:
            print(f"| {f.label} | failed (see the log above) | | | | | | | | |")
            continue
        rss = "" if f.rss_mb != f.rss_mb else f"{f.rss_mb:.0f} ({f.worker_rss_mb:.0f})"
        cores = "" if f.server_cores != f.server_cores else f"{f.server_cores:.2f}"
        cpu = "" if f.server_cpu_us != f.server_cpu_us else f"{f.server_cpu_us:.0f}"
        print(
            f"| {f.label} | {f.throughput:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | {ratio:.0%} "
            f"| {cores} | {cpu} | {rss} | {f.spread} | {f.errors} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, default=ROOT / "models" / "mnist")
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--quick", action="store_true", help="a small subset, 2 s per point")
    parser.add_argument("--seconds", type=float, default=None, help="per point (default 3)")
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--concurrency", default=None, help="default 1,8,32,128")
    parser.add_argument("--images", default=None, help="images per request, default 1,32,256")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batching", default=None, help="default off,on")
    parser.add_argument("--transports", default="grpc,rest", help="grpc (h2load), rest (wrk)")
    parser.add_argument("--batch-timeout-micros", type=int, default=0)
    parser.add_argument(
        "--batch-threads", type=int, default=os.cpu_count() or 1,
        help="num_batch_threads of the server (default: the cores; N workers get 1/N each)",
    )  # fmt: skip
    parser.add_argument("--no-open-loop", action="store_true")
    parser.add_argument("--no-many-models", action="store_true")
    parser.add_argument(
        "--grpc-client", choices=("auto", "h2load", "python"), default="auto",
        help="gRPC load generator: h2load (nghttp2-client) when installed, else Python grpc.aio",
    )  # fmt: skip
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    levels = [int(c) for c in (args.concurrency or ("1,32" if args.quick else "1,8,32,128")).split(",")]
    sizes = [int(c) for c in (args.images or ("1,32" if args.quick else "1,32,256")).split(",")]
    modes = (args.batching or ("on" if args.quick else "off,on")).split(",")
    worker_counts = [int(w) for w in args.workers.split(",")]
    transports = args.transports.split(",")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.model_base.exists():
        raise SystemExit(f"{args.model_base} does not exist (run `make export` first)")
    use_rest = "rest" in transports and shutil.which("wrk") is not None
    if "rest" in transports and not use_rest:
        print("wrk not found (apt-get install -y wrk): REST rows skipped")
    use_h2load = args.grpc_client == "h2load" or (
        args.grpc_client == "auto" and shutil.which("h2load") is not None
    )
    if args.grpc_client == "auto" and not use_h2load:
        print("h2load not found (apt-get install -y nghttp2-client): Python gRPC client")
    version_dir = latest_version_dir(args.model_base)
    print(
        f"model: {version_dir} ({SIGNATURE}), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start, {seconds} s per point"
        + (" (quick)" if args.quick else "")
    )

    limits = [inprocess_limit(version_dir, b, seconds, args.max_requests) for b in (1, 32, 256)]
    limit = limits[1]
    figures: list[Figure] = []
    open_loop: list[Figure] = []
    model_args = [f"--model_name={args.model_name}", f"--model_base_path={args.model_base.resolve()}"]
    with tempfile.TemporaryDirectory() as tmp:
        for workers in worker_counts:
            for mode in modes:
                workdir = Path(tmp, f"w{workers}-{mode}")
                workdir.mkdir()
                server = start_server(args, workdir, workers, mode == "on", model_args)
                probe = ServerProbe(server.proc.pid, server.grpc_port, server.rest_port)
                peak = 0.0
                try:
                    for transport in ("grpc", "rest"):
                        if transport not in transports or (transport == "rest" and not use_rest):
                            continue
                        for images in sizes:
                            for c in levels:
                                label = (f"{'gRPC' if transport == 'grpc' else 'REST'} "
                                         f"w{workers} batch {mode} {images} img c{c}")  # fmt: skip
                                probe.wait_idle()
                                try:
                                    if transport == "grpc":
                                        fig = grpc_point(server, probe, args.model_name, images,
                                                         c, seconds, label, use_h2load,
                                                         args.max_requests)  # fmt: skip
                                        if images == 1:
                                            peak = max(peak, fig.throughput)
                                    else:
                                        fig = rest_point(server, probe, args.model_name, images,
                                                         c, seconds, label)  # fmt: skip
                                except Exception as exc:  # one bad point does not end the run
                                    print(f"  {label}: FAILED {exc}", flush=True)
                                    fig = Figure(label, float("nan"), float("nan"),
                                                 float("nan"), 0, errors=-1)  # fmt: skip
                                figures.append(fig)
                                print(f"  {label}: {fig.throughput:,.0f} img/s, p50 "
                                      f"{fig.p50_ms:.2f} ms, p99 {fig.p99_ms:.2f} ms", flush=True)  # fmt: skip
                        last = workers == worker_counts[-1] and mode == modes[-1]
                        if transport == "grpc" and last and peak > 0 and use_h2load and not args.no_open_loop:
                            # Before the REST rows: nothing else runs on the server meanwhile.
                            rate = peak / 2
                            label = f"gRPC w{workers} batch {mode} 1 img open loop {rate:,.0f}/s"
                            probe.wait_idle()
                            try:
                                open_loop.append(
                                    grpc_point(server, probe, args.model_name, 1, 256,
                                               seconds * 2, label, True, args.max_requests,
                                               rate_per_s=rate)  # fmt: skip
                                )
                            except Exception as exc:
                                print(f"  {label}: FAILED {exc}", flush=True)
                finally:
                    server.stop()
        many = []
        if not args.no_many_models:
            for workers in worker_counts:
                many.append(many_models(args, Path(tmp), version_dir, workers))
    print_table(limit, limits, figures)
    if open_loop:
        print("\nOpen loop (fixed rate at half the 1-image gRPC peak of the same server):")
        print_table(limit, [], open_loop)
        for f in open_loop:
            print(f"p99 / p50 = {f.p99_ms / f.p50_ms:.1f}")
    if many:
        print("\n| 10 models x 2 versions | start-up to ready s | RSS MB total | largest worker MB "
              "| GetModelStatus p50 ms | p99 ms |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for m in many:
            print(f"| {m['workers']} worker(s) | {m['load_s']:.1f} | {m['rss_mb']:.0f} | "
                  f"{m['worker_rss_mb']:.0f} | {m['status_p50_ms']:.2f} | {m['status_p99_ms']:.2f} |")  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
