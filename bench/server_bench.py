"""Server benchmark: in-process signature throughput (the limit) vs. the embedded server over
gRPC with 1-image MNIST requests at several concurrencies, batching off and on.

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
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIGNATURE = "predict_images"


@dataclass
class Figure:
    label: str
    throughput: float  # images per second
    p50_ms: float
    p99_ms: float
    count: int


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
    """The signature called directly, batch ``batch`` (TensorFlow only, no server)."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    x = tf.constant(sample_images(batch))
    for _ in range(5):
        fn(images=x)
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(latencies) < max_calls:
        t0 = time.perf_counter()
        fn(images=x)["scores"].numpy()
        latencies.append(time.perf_counter() - t0)
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


def grpc_load(target: str, model_name: str, concurrency: int, seconds: float, max_requests: int, label: str) -> Figure:
    payload = predict_request_bytes(model_name, sample_images(1)[0])
    latencies, elapsed, errors = asyncio.run(
        _grpc_load(target, payload, concurrency, seconds, max_requests)
    )
    if errors:
        print(f"  ({errors} failed requests in {label})")
    return Figure(
        label,
        len(latencies) / elapsed,
        1e3 * statistics.median(latencies) if latencies else float("nan"),
        1e3 * percentile(latencies, 0.99),
        len(latencies),
    )


def start_server(model_base: Path, model_name: str, batching: bool, workdir: Path):
    from serving.modelserver.process import EmbeddedServerProcess

    args = [
        f"--model_name={model_name}",
        f"--model_base_path={model_base.resolve()}",
        "--file_system_poll_wait_seconds=0",
    ]
    if batching:
        params = workdir / "batching.config"
        params.write_text(
            "max_batch_size { value: 32 }\n"
            "batch_timeout_micros { value: 0 }\n"
            f"num_batch_threads {{ value: {os.cpu_count() or 1} }}\n"
            "max_enqueued_batches { value: 1000 }\n"
        )
        args += ["--enable_batching", f"--batching_parameters_file={params}"]
    return EmbeddedServerProcess(args, rest=False).start()


def print_table(limit: Figure, figures: list[Figure]) -> None:
    print(f"{'measurement':<34} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'n':>7} {'of limit':>9}")
    for f in [limit, *figures]:
        ratio = f.throughput / limit.throughput
        print(
            f"{f.label:<34} {f.throughput:>9.0f} {f.p50_ms:>8.2f} {f.p99_ms:>8.2f} "
            f"{f.count:>7} {ratio:>8.0%}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, default=ROOT / "models" / "mnist")
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--batching", default="off,on")
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
            server = start_server(args.model_base, args.model_name, mode == "on", Path(tmp))
            try:
                for c in levels:
                    label = f"gRPC batching {mode:<3} conc {c}"
                    figures.append(
                        grpc_load(server.grpc_target, args.model_name, c, args.seconds, args.max_requests, label)
                    )
            finally:
                server.stop()
    print_table(limit, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
