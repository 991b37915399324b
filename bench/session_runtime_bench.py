"""Session runtime benchmark: what the embedded server's way of running a SavedModel costs.

1. Per-call overhead, one caller, in-process: ``Servable.run`` (a TF1 Session fed through a
   callable made from CallableOptions, what the server does since it runs every SavedModel the
   way TF Serving does) against the concrete-function path it replaced
   (``tf.saved_model.load(...).signatures[...]`` with ``tf.convert_to_tensor`` in and ``.numpy()``
   out), for every version given, at batch 1 and 32.
2. ``--mixed_precision=bfloat16`` (TF Serving's oneDNN bf16 rewriter in the Session's
   ConfigProto) on a CNN version: images per second at batch 1, 32 and 128, with and without,
   and the accuracy of each on the 10,000 MNIST test digits.

    .venv/bin/python bench/session_runtime_bench.py --version-dir models/mnist/1 \\
        [--version-dir softmax/mnist/1] [--cnn-dir models/mnist/1] [--seconds 2] [--rounds 3]
    .venv/bin/python bench/session_runtime_bench.py --model-base models/mnist   # make bench

Bounded: each measurement runs ``--seconds`` and at most ``--max-calls`` calls; paths are
measured in alternating rounds and the median of the round medians is printed, because the
machine's 2 cores are shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIGNATURE = "predict_images"


def timed_calls(call: Callable[[], object], seconds: float, max_calls: int) -> list[float]:
    for _ in range(5):
        call()
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(latencies) < max_calls:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return latencies


def concrete_function_call(version_dir: Path, x: np.ndarray) -> Callable[[], object]:
    """The path the server used before: eager concrete function, tensors in, numpy out."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]

    def call():
        result = fn(images=tf.convert_to_tensor(x))
        return {k: v.numpy() for k, v in result.items()}

    return call


def session_call(servable, x: np.ndarray) -> Callable[[], object]:
    def call():
        return servable.run(SIGNATURE, {"images": x})

    return call


def overhead(version_dir: Path, seconds: float, max_calls: int, rounds: int) -> None:
    from serving.modelserver.servable import Servable

    servable = Servable.load("bench", 1, str(version_dir))
    rng = np.random.default_rng(0)
    print(f"\n{version_dir}: {SIGNATURE}, one caller, microseconds per call (median, p99)")
    print(f"{'batch':>5}  {'Session callable':>22}  {'concrete function':>22}  ratio")
    for batch in (1, 32):
        x = rng.random((batch, 784), dtype=np.float32)
        paths = {
            "session": session_call(servable, x),
            "concrete": concrete_function_call(version_dir, x),
        }
        medians: dict[str, list[float]] = {k: [] for k in paths}
        p99s: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(rounds):
            for name, call in paths.items():
                lat = sorted(timed_calls(call, seconds, max_calls))
                medians[name].append(statistics.median(lat))
                p99s[name].append(lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))])
        s_med, c_med = statistics.median(medians["session"]), statistics.median(medians["concrete"])
        s_p99, c_p99 = statistics.median(p99s["session"]), statistics.median(p99s["concrete"])
        print(
            f"{batch:>5}  {s_med * 1e6:>10.0f} ({s_p99 * 1e6:>8.0f})  "
            f"{c_med * 1e6:>10.0f} ({c_p99 * 1e6:>8.0f})  {s_med / c_med:5.2f}"
        )
    servable.close()


def bf16(cnn_dir: Path, data_dir: Path, seconds: float, max_calls: int, rounds: int) -> None:
    from export.mnist_data import load_mnist, to_model_input
    from serving.modelserver import session_config
    from serving.modelserver.servable import Servable

    data = load_mnist(data_dir)
    test_x = to_model_input(data.test_images)
    test_y = data.test_labels
    configs = {
        "float32": session_config.build(session_config.SessionFlags()),
        "bfloat16": session_config.build(session_config.SessionFlags(mixed_precision="bfloat16")),
    }
    servables = {k: Servable.load("bench", 1, str(cnn_dir), session_config=c) for k, c in configs.items()}
    print(f"\n{cnn_dir}: --mixed_precision=bfloat16 vs float32, in-process, one caller")
    for name, servable in servables.items():
        classes = np.concatenate(
            [
                np.argmax(servable.run(SIGNATURE, {"images": test_x[i : i + 500]})["scores"], 1)
                for i in range(0, len(test_x), 500)
            ]
        )
        print(f"  {name:>8}: accuracy on {len(test_y)} test digits {np.mean(classes == test_y):.4f}")
    print(f"{'batch':>5}  {'float32 img/s':>14}  {'bfloat16 img/s':>15}  speed-up")
    rng = np.random.default_rng(0)
    for batch in (1, 32, 128):
        x = rng.random((batch, 784), dtype=np.float32)
        rates: dict[str, list[float]] = {k: [] for k in servables}
        for _ in range(rounds):
            for name, servable in servables.items():
                lat = timed_calls(session_call(servable, x), seconds, max_calls)
                rates[name].append(batch / statistics.median(lat))
        f32, b16 = statistics.median(rates["float32"]), statistics.median(rates["bfloat16"])
        print(f"{batch:>5}  {f32:>14,.0f}  {b16:>15,.0f}  {b16 / f32:7.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, action="append", default=[])
    parser.add_argument("--cnn-dir", type=Path, help="a CNN version for the bf16 figures")
    parser.add_argument(
        "--model-base", type=Path, help="use its latest version for both parts (make bench)"
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.model_base is not None:
        versions = [p for p in args.model_base.iterdir() if p.name.isdigit()]
        if not versions:
            parser.error(f"no numeric version directory under {args.model_base}")
        latest = max(versions, key=lambda p: int(p.name))
        args.version_dir.append(latest)
        args.cnn_dir = args.cnn_dir or latest
    if not args.version_dir and args.cnn_dir is None:
        parser.error("give --version-dir and/or --cnn-dir")
    for version_dir in args.version_dir:
        overhead(version_dir, args.seconds, args.max_calls, args.rounds)
    if args.cnn_dir is not None:
        bf16(args.cnn_dir, args.data_dir, args.seconds, args.max_calls, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
