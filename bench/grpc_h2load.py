"""gRPC load from ``h2load`` (Debian package ``nghttp2-client``): a C HTTP/2 client that needs a
small fraction of a core, so the 2 shared cores stay with the server.

A unary gRPC call is an HTTP/2 POST to ``/<service>/<method>`` with ``content-type:
application/grpc`` and ``te: trailers`` whose body is one length-prefixed message (1 byte
"compressed" flag 0, 4-byte big-endian length, the serialized request). ``h2load`` sends the same
body on every stream, ``-m`` streams at a time over one connection (one channel, as a gRPC client
would use).

``h2load`` counts an HTTP 200 as success even when the trailers carry ``grpc-status != 0``, so
its own success count proves nothing. Callers pass ``ok_count``, a function reading the server's
``:tensorflow:serving:request_count{...,status="OK"}`` from its Prometheus endpoint: the rise
during the run must equal the number of requests h2load completed, else ``run_h2load`` raises.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
MONITORING_CONFIG = "prometheus_config { enable: true }\n"


@dataclass
class H2LoadResult:
    requests: int  # completed 2xx streams in the measured window
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # failed or non-2xx streams


def h2load_path() -> str | None:
    return shutil.which("h2load")


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: uncompressed flag, big-endian length, payload."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def request_counts(metrics_url: str, model_name: str) -> dict[str, float]:
    """``{status: count}`` of ``:tensorflow:serving:request_count`` for one model."""
    with urllib.request.urlopen(metrics_url, timeout=30) as resp:
        text = resp.read().decode()
    pattern = re.compile(
        r'^:tensorflow:serving:request_count\{model_name="([^"]*)",status="([^"]*)"\} (\S+)$',
        re.MULTILINE,
    )
    return {s: float(v) for name, s, v in pattern.findall(text) if name == model_name}


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def run_h2load(
    target: str,
    message: bytes,
    concurrency: int,
    seconds: float,
    counts: Callable[[], dict[str, float]],
    path: str = PREDICT_PATH,
    warmup_s: float = 1.0,
    connections: int = 1,
    rate_per_s: float = 0.0,
) -> H2LoadResult:
    """``concurrency`` streams over ``connections`` connections to ``target`` (``host:port``)
    for ``seconds``. With several server workers, SO_REUSEPORT spreads *connections*, so the
    caller opens at least as many as there are workers. ``rate_per_s`` > 0 makes the load
    open-loop: h2load starts requests at that fixed total rate (``--rps`` per connection),
    whatever the answers' latency; ``concurrency`` then only caps the streams in flight.

    ``counts`` returns the server's request counts by status; the OK count must rise by exactly
    the number of requests h2load saw completed, and no other status may rise."""
    exe = h2load_path()
    if exe is None:
        raise RuntimeError("h2load not found: apt-get install -y nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp, "request.bin")
        body.write_bytes(grpc_frame(message))
        log = Path(tmp, "requests.tsv")
        connections = max(1, min(connections, concurrency))
        cmd = [
            exe,
            f"-c{connections}",
            "-t1",
            f"-m{max(1, concurrency // connections)}",
            *([f"--rps={max(1, round(rate_per_s / connections))}"] if rate_per_s > 0 else []),
            f"-D{max(1, round(seconds))}",
            f"--warm-up-time={max(0, round(warmup_s))}" if warmup_s > 0 else "--warm-up-time=0",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"--log-file={log}",
            f"http://{target}{path}",
        ]
        before = counts()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + warmup_s + 60, check=False
        )
        after = counts()
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    # h2load's own summary covers the measured window only; the log has every request, so the
    # server-side check uses the log's count and the figures use the summary's window.
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", proc.stdout)
    reqs = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored",
        proc.stdout,
    )
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", proc.stdout)
    if m is None or reqs is None or status is None:
        raise RuntimeError(f"cannot read h2load's summary:\n{proc.stdout}")
    logged_ok = sum(1 for r in rows if len(r) >= 3 and r[1] == "200")
    ok_rise = after.get("OK", 0) - before.get("OK", 0)
    bad_rise = {
        s: after.get(s, 0) - before.get(s, 0)
        for s in after
        if s != "OK" and after.get(s, 0) != before.get(s, 0)
    }
    if bad_rise or ok_rise < logged_ok or logged_ok == 0:
        raise RuntimeError(
            f"gRPC answers were not all OK: h2load logged {logged_ok} HTTP 200 streams, the "
            f"server counted {ok_rise:.0f} OK and {bad_rise or 'no'} other statuses"
        )
    # The log holds the warm-up's requests too: keep those started after it.
    ok_rows = [(int(r[0]), float(r[2])) for r in rows if len(r) >= 3 and r[1] == "200"]
    first = min(t for t, _ in ok_rows)
    cut = first + int(warmup_s * 1e6)
    latencies = sorted(us / 1000.0 for t, us in ok_rows if t >= cut) or sorted(
        us / 1000.0 for _, us in ok_rows
    )
    succeeded = int(reqs.group(4))
    failed = int(reqs.group(5)) + int(reqs.group(6))
    non2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    return H2LoadResult(
        requests=succeeded,
        requests_per_s=float(m.group(3)),
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        errors=failed + non2xx,
    )
