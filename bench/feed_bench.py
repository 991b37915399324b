"""One request-path change at a time, in-process: the cost of ``Servable.run`` with the feed
built by ``tf.convert_to_tensor`` (before) and by ``tf_feed.to_tensor`` (DLPack, after), for
read-only inputs (decoded from gRPC ``tensor_content``) and writable ones (REST JSON, merged
batches), batch 1 / 32 / 256.

    .venv/bin/python bench/feed_bench.py [--model-base models/mnist] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, default=ROOT / "models" / "mnist")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from serving.modelserver.servable import Servable
    from serving.modelserver.tf_feed import to_tensor

    version = max((p for p in args.model_base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    servable = Servable.load("mnist", int(version.name), str(version))
    fn = servable._functions["predict_images"]

    def run_with(convert, arr):
        out = fn(images=convert(arr))
        return {k: v.numpy() for k, v in out.items()}

    convert_old = tf.convert_to_tensor

    def convert_new(a):
        return to_tensor(tf, a)

    print(f"model {version}, {args.calls} calls per cell, median us per call (feed only / whole run)")
    print(f"{'batch':>5} {'input':>9} {'feed before':>12} {'feed after':>11} {'run before':>11} {'run after':>10}")
    rng = np.random.default_rng(0)
    for batch in (1, 32, 256):
        data = rng.random((batch, 784), dtype=np.float32)
        for kind in ("read-only", "writable"):
            arr = np.frombuffer(data.tobytes(), np.float32).reshape(batch, 784) if kind == "read-only" else data.copy()
            converts = (convert_old, convert_new)
            for convert in converts:
                np.testing.assert_allclose(run_with(convert, arr)["scores"], run_with(convert_old, arr)["scores"])
            # Interleaved (before, after, before, ...) so that the shared machine's noise hits
            # both columns alike.
            feed: list[list[float]] = [[], []]
            whole: list[list[float]] = [[], []]
            for _ in range(args.calls):
                for i, convert in enumerate(converts):
                    t0 = time.perf_counter()
                    convert(arr)
                    feed[i].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    run_with(convert, arr)
                    whole[i].append(time.perf_counter() - t0)
            cells = [(statistics.median(feed[i]) * 1e6, statistics.median(whole[i]) * 1e6) for i in (0, 1)]
            print(f"{batch:>5} {kind:>9} {cells[0][0]:>12.1f} {cells[1][0]:>11.1f} {cells[0][1]:>11.0f} {cells[1][1]:>10.0f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
