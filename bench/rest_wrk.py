"""REST throughput of the embedded server, measured with ``wrk`` (Debian package ``wrk``).

    .venv/bin/python bench/rest_wrk.py --model_base_path=/abs/models/mnist [--duration 5]
        [--concurrency 1,8,32] [--json bench/out/rest.json]

``wrk`` POSTs one fixed body (a 1-image MNIST ``{"instances": [[784 floats]]}`` request) over
keep-alive connections; a Lua ``done`` hook prints throughput and latency percentiles as one
JSON line, so this module never parses wrk's human-readable table. ``wrk`` is a C event loop
that needs about 0.06 of a core here, so it leaves the 2 cores to the server.

Standalone, the script measures the in-process limit (the loaded signature called directly at
batch 32, images/s) and the server with batching off and on, at each concurrency, and prints
throughput, p50, p99 and the ratio to the limit. ``bench/server_bench.py`` may import
``rest_rows`` to put the REST rows next to its gRPC ones. Prints figures only; asserts nothing
about timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LUA_SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "non_2xx": %d, ' ..
    '"timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Batching parameters for the "batching on" rows: TF Serving's CPU advice (threads = cores,
# a short timeout) with batches up to the concurrency the benchmark drives.
BATCHING_PARAMETERS = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 1000 }
"""


@dataclass
class WrkResult:
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + timeouts + non-2xx answers


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str, body: bytes, concurrency: int, duration_s: float, threads: int = 1
) -> WrkResult:
    """POST ``body`` to ``url`` at ``concurrency`` connections for ``duration_s`` seconds."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "post.lua")
        script.write_text(LUA_SCRIPT)
        body_file = Path(tmp, "body.json")
        body_file.write_bytes(body)
        cmd = [
            exe,
            f"-t{max(1, min(threads, concurrency))}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(
            cmd,
            env={**os.environ, "WRK_BODY_FILE": str(body_file)},
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=False,
        )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    data = json.loads(line[len("WRK_JSON ") :])
    errors = sum(
        data[k] for k in ("connect_errors", "read_errors", "write_errors", "non_2xx", "timeouts")
    )
    return WrkResult(
        concurrency=concurrency,
        requests_per_s=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=errors,
    )


def one_image_body(image: list[float]) -> bytes:
    return json.dumps({"instances": [image]}).encode()


def check_once(url: str, body: bytes) -> dict:
    """One request before measuring: the numbers mean nothing if the answer is an error."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = json.loads(resp.read())
    if "predictions" not in doc:
        raise RuntimeError(f"unexpected answer: {doc}")
    return doc


def rest_rows(
    rest_url: str,
    model_name: str,
    body: bytes,
    concurrencies: tuple[int, ...] = (1, 8, 32),
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
) -> list[WrkResult]:
    """wrk at each concurrency against a running server (batching is the server's setting)."""
    url = f"{rest_url}/v1/models/{model_name}:predict"
    check_once(url, body)
    rows = []
    for c in concurrencies:
        if warmup_s > 0:
            run_wrk(url, body, c, warmup_s)
        rows.append(run_wrk(url, body, c, duration_s))
    return rows


def in_process_limit(version_dir: Path, images, batch: int = 32, seconds: float = 3.0) -> float:
    """Images/s of ``serving_default`` called directly at ``batch``, through the Session
    runtime the server itself uses."""
    import numpy as np

    from serving.modelserver.servable import Servable

    servable = Servable.load("bench", 1, str(version_dir))
    (name,) = servable.signatures["serving_default"].inputs
    x = np.asarray(images[:batch], dtype=np.float32)
    for _ in range(5):
        servable.run("serving_default", {name: x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        servable.run("serving_default", {name: x})
        n += batch
    servable.close()
    return n / (time.perf_counter() - start)


def latest_version(base: Path) -> Path:
    versions = [p for p in base.iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def sample_images(count: int):
    import gzip

    import numpy as np

    path = ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:count]
    return pixels.astype(np.float32) / np.float32(255.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", required=True, type=Path)
    parser.add_argument("--model_name", default="mnist")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    from serving.modelserver.process import EmbeddedServerProcess

    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    images = sample_images(64)
    body = one_image_body(images[0].tolist())
    base = args.model_base_path.resolve()
    limit = in_process_limit(latest_version(base), images)
    print(f"in-process limit (serving_default, batch 32): {limit:,.0f} images/s")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batching_file = Path(tmp, "batching.config")
        batching_file.write_text(BATCHING_PARAMETERS)
        for label, extra in [
            ("batching off", []),
            ("batching on", ["--enable_batching", f"--batching_parameters_file={batching_file}"]),
        ]:
            srv = EmbeddedServerProcess(
                args=[f"--model_name={args.model_name}", f"--model_base_path={base}", *extra]
            )
            with srv:
                rows = rest_rows(srv.rest_url, args.model_name, body, concurrencies, args.duration)
            results[label] = [asdict(r) for r in rows]
            for r in rows:
                print(
                    f"REST {label:12s} c={r.concurrency:<3d} {r.requests_per_s:8,.0f} req/s  "
                    f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
                    f"ratio {r.requests_per_s / limit:5.1%}  errors {r.errors}"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"limit_images_per_s": limit, "rest": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
