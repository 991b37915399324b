"""Server benchmark: in-process signature throughput (the limit) vs. the embedded server over
gRPC and REST with 1-image MNIST requests at several concurrencies, batching off and on. Load
comes from C generators that leave the cores to the server: ``h2load`` for gRPC (Debian
``nghttp2-client``, see ``grpc_h2load.py``; every answer's grpc-status is checked through the
server's Prometheus request counts) and ``wrk`` for REST (see ``rest_wrk.py``). Without
``h2load`` a Python grpc.aio generator is used instead (it costs the server ~0.2 ms of CPU per
request on shared cores).

    .venv/bin/python bench/server_bench.py [--model-base models/mnist] [--seconds 3]

Prints throughput (requests = images per second), p50 and p99 latency and the ratio to the
in-process limit at batch 32. Bounded: every measurement runs for ``--seconds`` (and at most
``--max-requests`` requests). The load generator shares the machine's cores with the server,
so the figures are a floor. Each part is a separate function so that other transports (REST)
can add their own measurement next to ``grpc_load``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/rest_wrk.py

SIGNATURE = "predict_images"


@dataclass
class Figure:
    label: str
    throughput: float  # images per second
    p50_ms: float
    p99_ms: float
    count: int
    server_cpu_us: float = float("nan")  # server process CPU per request (all its threads)
    client_cpu_us: float = float("nan")  # load generator CPU per request


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def sample_images(n: int = 256) -> np.ndarray:
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
    total = sum(latencies)
    return Figure(
        f"in-process batch {batch}",
        batch * len(latencies) / total,
        1e3 * statistics.median(latencies),
        1e3 * percentile(latencies, 0.99),
        len(latencies),
    )


def predict_request_bytes(model_name: str, image: np.ndarray) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from clients import codec

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = SIGNATURE
    codec.fill_tensor_proto(req.inputs["images"], image.reshape(1, 784))
    return req.SerializeToString()


async def _grpc_load(target: str, payload: bytes, concurrency: int, seconds: float, max_requests: int):
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        # Pre-serialized request, raw response bytes: the client does as little as possible.
        call = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=None,
            response_deserializer=None,
        )
        for _ in range(3):
            await call(payload, timeout=30)
        end = time.perf_counter() + seconds

        async def worker():
            nonlocal errors
            while time.perf_counter() < end and len(latencies) < max_requests:
                t0 = time.perf_counter()
                try:
                    await call(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, errors


def grpc_load(
    target: str,
    model_name: str,
    concurrency: int,
    seconds: float,
    max_requests: int,
    label: str,
    server_pid: int | None = None,
) -> Figure:
    payload = predict_request_bytes(model_name, sample_images(1)[0])
    srv0 = process_cpu_seconds(server_pid) if server_pid else 0.0
    cli0 = time.process_time()
    latencies, elapsed, errors = asyncio.run(
        _grpc_load(target, payload, concurrency, seconds, max_requests)
    )
    n = max(1, len(latencies))
    cli = (time.process_time() - cli0) / n * 1e6
    srv = (process_cpu_seconds(server_pid) - srv0) / n * 1e6 if server_pid else float("nan")
    if errors:
        print(f"  ({errors} failed requests in {label})")
    return Figure(
        label,
        len(latencies) / elapsed,
        1e3 * statistics.median(latencies) if latencies else float("nan"),
        1e3 * percentile(latencies, 0.99),
        len(latencies),
        srv,
        cli,
    )


def h2load_grpc_load(
    target: str,
    rest_url: str,
    model_name: str,
    concurrency: int,
    seconds: float,
    label: str,
    server_pid: int | None = None,
) -> Figure:
    """gRPC with ``h2load`` (bench/grpc_h2load.py); raises unless the server counted every
    answer as OK. h2load's CPU is taken from the children's rusage."""
    import resource

    from grpc_h2load import PROMETHEUS_PATH, request_counts, run_h2load

    payload = predict_request_bytes(model_name, sample_images(1)[0])
    metrics_url = f"{rest_url}{PROMETHEUS_PATH}"

    def counts() -> dict[str, float]:
        return request_counts(metrics_url, model_name)

    srv0 = process_cpu_seconds(server_pid) if server_pid else 0.0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Warm-up inside the run (1 s) is excluded from h2load's figures but not from the CPU
    # counters, so CPU per request divides by every request the server answered.
    ok0 = counts().get("OK", 0)
    result = run_h2load(target, payload, concurrency, seconds, counts, warmup_s=1.0)
    served = max(1.0, counts().get("OK", 0) - ok0)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / served * 1e6
    srv = (process_cpu_seconds(server_pid) - srv0) / served * 1e6 if server_pid else float("nan")
    if result.errors:
        print(f"  ({result.errors} failed requests in {label})")
    return Figure(
        label, result.requests_per_s, result.p50_ms, result.p99_ms, result.requests, srv, cli
    )


def start_server(
    model_base: Path,
    model_name: str,
    batching: bool,
    workdir: Path,
    batch_threads: int = 1,
    rest: bool = False,
    extra_args: tuple[str, ...] = (),
    batch_timeout_micros: int = 0,
):
    from grpc_h2load import MONITORING_CONFIG

    from serving.modelserver.process import EmbeddedServerProcess

    monitoring = workdir / "monitoring.config"
    monitoring.write_text(MONITORING_CONFIG)  # request counts: h2load's answers are checked
    args = [
        f"--model_name={model_name}",
        f"--model_base_path={model_base.resolve()}",
        "--file_system_poll_wait_seconds=0",
        f"--monitoring_config_file={monitoring}",
        *extra_args,
    ]
    if batching:
        params = workdir / "batching.config"
        params.write_text(
            "max_batch_size { value: 32 }\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {batch_threads} }}\n"
            "max_enqueued_batches { value: 1000 }\n"
        )
        args += ["--enable_batching", f"--batching_parameters_file={params}"]
    return EmbeddedServerProcess(args, rest=rest).start()


def rest_load(
    rest_url: str,
    model_name: str,
    concurrency: int,
    seconds: float,
    label: str,
    server_pid: int | None = None,
) -> Figure:
    """REST with ``wrk`` (bench/rest_wrk.py): one fixed 1-image ``instances`` body POSTed over
    keep-alive connections; wrk's own CPU is taken from the children's rusage."""
    import json
    import resource

    from rest_wrk import check_once, run_wrk

    url = f"{rest_url}/v1/models/{model_name}:predict"
    image = sample_images(1)[0].tolist()
    body = json.dumps({"signature_name": SIGNATURE, "instances": [image]}).encode()
    check_once(url, body)
    run_wrk(url, body, concurrency, 1.0)  # warm-up: connections, first batches
    srv0 = process_cpu_seconds(server_pid) if server_pid else 0.0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(url, body, concurrency, seconds)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = max(1, result.requests)
    cli = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / n * 1e6
    srv = (process_cpu_seconds(server_pid) - srv0) / n * 1e6 if server_pid else float("nan")
    if result.errors:
        print(f"  ({result.errors} failed requests in {label})")
    return Figure(
        label, result.requests_per_s, result.p50_ms, result.p99_ms, result.requests, srv, cli
    )


def print_table(limit: Figure, figures: list[Figure]) -> None:
    print(
        f"{'measurement':<30} {'img/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'n':>6} {'of limit':>8}"
        f" {'srv cpu us/req':>14} {'cli cpu us/req':>14}"
    )
    for f in [limit, *figures]:
        ratio = f.throughput / limit.throughput
        print(
            f"{f.label:<30} {f.throughput:>7.0f} {f.p50_ms:>7.2f} {f.p99_ms:>7.2f} "
            f"{f.count:>6} {ratio:>8.0%} {f.server_cpu_us:>14.0f} {f.client_cpu_us:>14.0f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, default=ROOT / "models" / "mnist")
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--batching", default="off,on")
    parser.add_argument("--transports", default="grpc,rest", help="grpc, rest (needs wrk)")
    parser.add_argument("--batch-timeout-micros", type=int, default=0)
    parser.add_argument(
        "--grpc-client",
        choices=("auto", "h2load", "python"),
        default="auto",
        help="gRPC load generator: h2load (nghttp2-client) when installed, else Python grpc.aio",
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra server flag (repeatable)"
    )
    parser.add_argument(
        "--batch-threads", type=int, default=1, help="num_batch_threads (1 suits 2 cores)"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.model_base.exists():
        raise SystemExit(f"{args.model_base} does not exist (run `make export` first)")
    version_dir = latest_version_dir(args.model_base)
    print(f"model: {version_dir} ({SIGNATURE}), {os.cpu_count()} CPUs, {args.seconds} s per point")

    limit = inprocess_limit(version_dir, 32, args.seconds, args.max_requests)
    figures: list[Figure] = []
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.batching.split(","):
            transports = args.transports.split(",")
            use_rest = "rest" in transports
            if use_rest and shutil.which("wrk") is None:
                print("wrk not found (apt-get install -y wrk): REST rows skipped")
                use_rest = False
            use_h2load = args.grpc_client == "h2load" or (
                args.grpc_client == "auto" and shutil.which("h2load") is not None
            )
            if args.grpc_client == "auto" and not use_h2load:
                print("h2load not found (apt-get install -y nghttp2-client): Python gRPC client")
            server = start_server(
                args.model_base,
                args.model_name,
                mode == "on",
                Path(tmp),
                args.batch_threads,
                rest=use_rest or use_h2load,  # h2load's check reads the Prometheus endpoint
                extra_args=tuple(args.server_arg),
                batch_timeout_micros=args.batch_timeout_micros,
            )
            try:
                for c in levels if "grpc" in transports else []:
                    label = f"gRPC batching {mode:<3} conc {c}"
                    if use_h2load:
                        figures.append(
                            h2load_grpc_load(
                                server.grpc_target,
                                server.rest_url,
                                args.model_name,
                                c,
                                args.seconds,
                                label,
                                server.proc.pid,
                            )
                        )
                        continue
                    figures.append(
                        grpc_load(
                            server.grpc_target,
                            args.model_name,
                            c,
                            args.seconds,
                            args.max_requests,
                            label,
                            server.proc.pid,
                        )
                    )
                for c in levels if use_rest else []:
                    label = f"REST batching {mode:<3} conc {c}"
                    figures.append(
                        rest_load(
                            server.rest_url,
                            args.model_name,
                            c,
                            args.seconds,
                            label,
                            server.proc.pid,
                        )
                    )
            finally:
                server.stop()
    print_table(limit, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
