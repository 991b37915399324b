"""Where the CPU of one request goes: per-thread accounting of the server under load.

    .venv/bin/python bench/request_cost.py [--model-base models/mnist] [--workers 2]
        [--concurrency 32] [--seconds 10] [--py-spy /path/to/py-spy]

Starts the embedded server (batching on, the project's ``serving/config/batching.config``
unless ``--batching-file``), drives 1-image ``predict_images`` requests closed-loop over REST
(``wrk``) and gRPC (``h2load``, ``min(concurrency, 8)`` connections) and reads every server
thread's CPU time from ``/proc/<pid>/task/*/stat`` before and after the timed window. It prints,
per request: the event loop (each worker's main thread: HTTP / HTTP/2, JSON or protobuf,
batching, the response), TensorFlow's threads (``tf_*``: the model itself), the other worker
threads (batch executor, gRPC core), the control plane, and the load generator; then what
2 cores allow per request at the targets' rates.

With ``--py-spy`` (a py-spy binary; not a project dependency) it also samples one worker's
event loop while it holds the GIL and splits the loop's share by the code it was in (aiohttp,
JSON decode, batching, grpc.aio's C core, ...). Every load is bounded in time; only 127.0.0.1
is targeted; figures are printed, never asserted. On a shared machine, compare within a run.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving.modelserver.workers import procinfo  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# py-spy leaf frames, by file, grouped into what a request spends its loop time on.
CATEGORIES = [
    ("aiohttp/", "HTTP/1.1 (aiohttp)"),
    ("rest/json_parser", "JSON decode"),
    ("rest/predict_body", "JSON decode"),
    ("rest/tensors", "JSON -> tensor"),
    ("rest/responses", "JSON encode"),
    ("rest/", "REST handler"),
    ("grpc_api", "gRPC handler"),
    ("clients/codec", "TensorProto codec"),
    ("batching", "batching (merge, split, queue)"),
    ("metrics", "metrics"),
    ("tensorflow/", "TensorFlow's Python"),
    ("modelserver/", "data plane (plan, run)"),
    ("concurrent/futures", "thread hand-off"),
    ("threading", "thread hand-off"),
    ("numpy/", "numpy"),
]


@dataclass
class ThreadCpu:
    """CPU seconds of every thread of the server's processes, keyed by (pid, tid)."""

    names: dict[tuple[int, int], str] = field(default_factory=dict)
    seconds: dict[tuple[int, int], float] = field(default_factory=dict)

    @classmethod
    def read(cls, pids: list[int]) -> ThreadCpu:
        out = cls()
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                try:
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                except FileNotFoundError:
                    continue
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                key = (pid, int(tid))
                out.names[key] = name
                out.seconds[key] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out


def group_of(pid: int, tid: int, name: str, control_plane: int) -> str:
    if pid == control_plane:
        return "control plane"
    if tid == pid:
        return "event loop (main thread)"
    if name.startswith("tf_"):
        return "TensorFlow threads (the model)"
    return "other threads (batch executor, its inline TF ops; gRPC core)"


def cpu_by_group(before: ThreadCpu, after: ThreadCpu, control_plane: int) -> dict[str, float]:
    groups: dict[str, float] = collections.defaultdict(float)
    for key, sec in after.seconds.items():
        delta = sec - before.seconds.get(key, 0.0)
        groups[group_of(*key, after.names[key], control_plane)] += delta
    return dict(groups)


def mean_batch(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the processed batch sizes in a Prometheus page."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if "processed_batch_size_sum" in line:
            total += float(line.rsplit(" ", 1)[1])
        elif "processed_batch_size_count" in line:
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def run_point(args, server, transport: str, tmp: Path) -> None:
    from grpc_h2load import PROMETHEUS_PATH, request_counts, run_h2load
    from rest_wrk import run_wrk
    from server_bench import SIGNATURE, predict_request_bytes, sample_images

    pids = procinfo.server_pids(server.proc.pid)
    workers = procinfo.children(server.proc.pid)
    # One process (--num_workers=1) is its own worker: no thread of it is "control plane".
    control_plane = server.proc.pid if workers else -1
    workers = workers or [server.proc.pid]
    metrics_url = f"{server.rest_url}{PROMETHEUS_PATH}"
    images = sample_images(1)

    def metrics() -> str:
        with urllib.request.urlopen(metrics_url, timeout=30) as resp:
            return resp.read().decode()

    spy: subprocess.Popen | None = None
    spy_out = tmp / f"spy-{transport}.txt"
    result_box: dict[str, float] = {}
    if transport == "rest":
        import json

        url = f"{server.rest_url}/v1/models/{args.model_name}:predict"
        body = json.dumps({"signature_name": SIGNATURE, "instances": images.tolist()}).encode()
        run_wrk(url, body, args.concurrency, 2.0)  # warm-up
        m0, t0, c0 = metrics(), ThreadCpu.read(pids), time.monotonic()
        gen = [0.0]
        if args.py_spy:
            spy = _start_spy(args, workers[0], spy_out)
        r = _timed(lambda: run_wrk(url, body, args.concurrency, args.seconds), gen)
        result_box.update(rps=r.requests_per_s, p50=r.p50_ms, p99=r.p99_ms, errors=r.errors)
    else:
        payload = predict_request_bytes(args.model_name, images)
        connections = max(len(workers), min(args.concurrency, 8))
        counts = lambda: request_counts(metrics_url, args.model_name)  # noqa: E731
        run_h2load(server.grpc_target, payload, args.concurrency, 2.0, counts,
                   warmup_s=0, connections=connections)  # fmt: skip
        m0, t0, c0 = metrics(), ThreadCpu.read(pids), time.monotonic()
        gen = [0.0]
        if args.py_spy:
            spy = _start_spy(args, workers[0], spy_out)
        r = _timed(
            lambda: run_h2load(
                server.grpc_target,
                payload,
                args.concurrency,
                args.seconds,
                counts,
                warmup_s=0,
                connections=connections,
            ),  # fmt: skip
            gen,
        )
        result_box.update(rps=r.requests_per_s, p50=r.p50_ms, p99=r.p99_ms, errors=r.errors)
    t1, c1, m1 = ThreadCpu.read(pids), time.monotonic(), metrics()
    wall = c1 - c0
    requests = result_box["rps"] * args.seconds
    groups = cpu_by_group(t0, t1, control_plane)
    groups["load generator (wrk / h2load)"] = gen[0]
    (s0, n0), (s1, n1) = mean_batch(m0), mean_batch(m1)
    batch = (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan")

    print(f"\n{transport.upper()}: {result_box['rps']:,.0f} req/s at c={args.concurrency}, "
          f"p50 {result_box['p50']:.2f} / p99 {result_box['p99']:.2f} ms, "
          f"{int(result_box['errors'])} errors, mean batch {batch:.1f} images, "
          f"{len(workers)} worker(s)")  # fmt: skip
    print(f"  {'where':58} {'cores':>6} {'us/request':>11}")
    total_cpu = 0.0
    for name, sec in sorted(groups.items(), key=lambda kv: -kv[1]):
        total_cpu += sec
        print(f"  {name:58} {sec / wall:6.2f} {1e6 * sec / requests:11.0f}")
    print(f"  {'total':58} {total_cpu / wall:6.2f} {1e6 * total_cpu / requests:11.0f}")
    cores = os.cpu_count() or 1
    for share, limit_label in ((0.5, "REST target, 50%"), (0.7, "gRPC target, 70%")):
        if args.limit:
            rate = share * args.limit
            print(f"  budget at {limit_label} of {args.limit:,.0f} img/s = {rate:,.0f} req/s: "
                  f"{1e6 * cores / rate:,.0f} us of the {cores} cores per request")  # fmt: skip
    if spy is not None:
        spy.wait(timeout=args.seconds + 60)
        spent = _parse_spy(spy_out)
        per_worker = requests / len(workers)
        loop_total = sum(spent.values())
        print(f"  worker {workers[0]}'s event loop holding the GIL, by code "
              f"({loop_total / args.seconds:.2f} cores, "
              f"{1e6 * loop_total / per_worker:.0f} us/request):")  # fmt: skip
        for name, sec in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"    {name:56} {1e6 * sec / per_worker:11.0f}")


def _timed(fn, gen: list[float]):
    """Run ``fn`` (a load generator run) and put its children's CPU seconds in ``gen[0]``."""
    before = os.times()
    result = fn()
    after = os.times()
    gen[0] = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return result


def _start_spy(args, pid: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [args.py_spy, "record", "-p", str(pid), "-d", str(max(1, int(args.seconds) - 1)),
         "-r", "200", "--gil", "--nonblocking", "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _parse_spy(out: Path) -> dict[str, float]:
    spent: dict[str, float] = collections.defaultdict(float)
    if not out.exists():
        return {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or "_run_module_as_main" not in frames[0]:
            continue  # not the main thread
        leaf = frames[-1]
        label = next((cat for key, cat in CATEGORIES if key in leaf), None)
        if label is None:
            # asyncio's Handle._run or the loop itself: C extension code the sampler cannot
            # see into (grpc.aio's Cython core, uvloop, aiohttp's llhttp parser).
            label = "event loop + C extensions (grpc.aio core, uvloop, llhttp)"
        spent[label] += int(n) / 200
    return dict(spent)


def main() -> int:
    from server_bench import inprocess_limit, latest_version_dir

    from serving.modelserver.process import EmbeddedServerProcess

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-base", default=str(ROOT / "models" / "mnist"))
    ap.add_argument("--model-name", default="mnist")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batching-file", default=str(ROOT / "serving/config/batching.config"))
    ap.add_argument("--transport", choices=["rest", "grpc", "both"], default="both")
    ap.add_argument("--py-spy", default="", help="a py-spy binary: split the event loop's time")
    ap.add_argument(
        "--limit",
        type=float,
        default=0.0,
        help="in-process batch-32 img/s (default: measured here first)",
    )
    ap.add_argument("--server-arg", action="append", default=[])
    args = ap.parse_args()

    base = Path(args.model_base).resolve()
    if not args.limit:
        args.limit = inprocess_limit(latest_version_dir(base), 32, 3.0, 5000).throughput
        print(f"in-process batch-32 limit: {args.limit:,.0f} img/s")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        monitoring = tmp / "monitoring.config"
        monitoring.write_text("prometheus_config { enable: true }\n")
        flags = [
            f"--model_name={args.model_name}",
            f"--model_base_path={base}",
            "--enable_batching",
            f"--batching_parameters_file={args.batching_file}",
            f"--monitoring_config_file={monitoring}",
            f"--num_workers={args.workers}",
            *args.server_arg,
        ]
        server = EmbeddedServerProcess(flags, startup_timeout_s=600).start()
        try:
            loop = os.environ.get("MODELSERVER_EVENT_LOOP", "") or "default (uvloop if installed)"
            print(f"server: {args.workers} worker(s), event loop {loop}, {args.batching_file}")
            for transport in ["rest", "grpc"] if args.transport == "both" else [args.transport]:
                run_point(args, server, transport, tmp)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
