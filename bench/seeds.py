"""Five-seed accuracy check: train each architecture with seeds 0-4 (the `make export`
recipe) and print a table of official test-set accuracy and training time per seed.

The accuracy is that of the float32 serving graph (the trained weights in a float32 copy of
the model), i.e. what a published version would serve, whatever precision trained it.

    .venv/bin/python bench/seeds.py --arch cnn            # ~1 min per seed on 2 cores
    .venv/bin/python bench/seeds.py --arch both --seeds 0 1 2 3 4

Results also go to bench/out/seeds-<arch>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export.models import DEFAULT_MIN_ACCURACY  # noqa: E402


def run_seed(arch: str, seed: int, epochs: int | None, data) -> dict:
    import keras
    import numpy as np

    from export.mnist_data import to_model_input
    from export.models import float32_copy
    from export.training import TrainConfig, train

    keras.backend.clear_session()
    config = TrainConfig(arch=arch, epochs=epochs, seed=seed, validate_each_epoch=False, progress_every=0)
    started = time.monotonic()
    result = train(config, data, out=io.StringIO())
    served = float32_copy(result.model, arch)
    scores = served.predict(to_model_input(data.test_images), batch_size=1000, verbose=0)
    accuracy = float(np.mean(scores.argmax(axis=1) == data.test_labels))
    return {
        "arch": arch,
        "seed": seed,
        "epochs": config.resolved_epochs,
        "precision": result.precision,
        "test_accuracy": accuracy,
        "train_s": round(result.train_seconds, 1),
        "train_and_eval_s": round(time.monotonic() - started, 1),
    }


def table(rows: list[dict], target: float) -> str:
    lines = [
        "| arch | seed | precision | epochs | test accuracy | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['seed']} | {r['precision']} | {r['epochs']} | "
            f"{r['test_accuracy'] * 100:.2f}% | {r['train_s']:.1f} |"
        )
    accs = [r["test_accuracy"] for r in rows]
    verdict = "PASS" if min(accs) >= target else "FAIL"
    lines.append(
        f"\n{rows[0]['arch']}: min {min(accs) * 100:.2f}%  mean {sum(accs) / len(accs) * 100:.2f}%  "
        f"max {max(accs) * 100:.2f}%  target >= {target * 100:.1f}% on every seed: {verdict}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("softmax", "cnn", "both"), default="cnn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    from export.mnist_data import load_mnist
    from export.training import choose_precision

    data = load_mnist()
    archs = ["softmax", "cnn"] if args.arch == "both" else [args.arch]
    failed = False
    for arch in archs:
        print(f"{arch}: precision {' '.join(choose_precision(arch, 'auto'))}", flush=True)
        rows = []
        for seed in args.seeds:
            row = run_seed(arch, seed, args.epochs, data)
            print(
                f"  seed {seed}: {row['test_accuracy'] * 100:.2f}%  train {row['train_s']:.1f} s",
                flush=True,
            )
            rows.append(row)
        target = DEFAULT_MIN_ACCURACY[arch]
        print(table(rows, target), flush=True)
        failed |= min(r["test_accuracy"] for r in rows) < target
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"seeds-{arch}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
