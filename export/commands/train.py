"""``python -m export train``: train, gate, publish; prints the version and its accuracy."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from export.models import (
    ARCHITECTURES,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MIN_ACCURACY,
)

EXIT_REFUSED = 3
EXIT_DATA = 4
EXIT_DISK_FULL = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model, gate it and publish the next version",
        description="Train, validate (gate) and atomically publish <repo>/<model-name>/<version>/.",
    )
    p.add_argument("--arch", choices=ARCHITECTURES, default="cnn")
    p.add_argument(
        "--repo", type=Path, default=Path("models"), help="repository root (default: models)"
    )
    p.add_argument("--model-name", default="mnist")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default per architecture: {DEFAULT_EPOCHS}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"peak rate of the cosine schedule (default per architecture: {DEFAULT_LEARNING_RATE})",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bfloat16", "float32"),
        default="auto",
        help="auto: bf16 mixed precision for the CNN where the CPU has avx512_bf16",
    )
    p.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training images"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="MNIST IDX directory (default: data/mnist)"
    )
    p.add_argument(
        "--fetch-data",
        action="store_true",
        help="download missing MNIST files from the mirrors (MNIST_MIRRORS)",
    )
    p.add_argument(
        "--mirror",
        action="append",
        default=None,
        metavar="URL",
        help="base URL serving <file>.gz for --fetch-data (repeatable; default: MNIST_MIRRORS, "
        "else the public mirrors)",
    )
    gate = p.add_argument_group("gate")
    gate.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help=f"test accuracy threshold (default per architecture: {DEFAULT_MIN_ACCURACY})",
    )
    gate.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed drop vs the stable version (default 0.002)",
    )
    gate.add_argument(
        "--force", action="store_true", help="publish even if worse than the stable version"
    )
    gate.add_argument(
        "--infra-check",
        action="store_true",
        help="also serve the built version with the embedded model server and check REST "
        "predictions before publishing (adds a server start, ~5-10 s)",
    )
    p.add_argument(
        "--keep",
        type=int,
        default=None,
        help="retention: keep the newest N versions (plus protected ones)",
    )
    p.add_argument(
        "--serving-config",
        type=Path,
        default=None,
        help="ModelServerConfig whose versions retention protects (default: <repo>/models.config and the running server's <run dir>/config/models.config, where present)",
    )
    p.add_argument("--no-report-png", action="store_true", help="skip the PNG training report")
    p.set_defaults(func=run)


def disk_full(exc: BaseException) -> bool:
    """ENOSPC anywhere in the exception chain: an OSError from Python's own writes, or
    TensorFlow's file-system error (RESOURCE_EXHAUSTED carrying strerror's text)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__


def run(args: argparse.Namespace) -> int:
    from export.interrupts import InterruptGuard

    with InterruptGuard().installed() as interrupts:
        return _run(args, interrupts)


def _run(args: argparse.Namespace, interrupts) -> int:
    from export.gate import DEFAULT_TOLERANCE, GateConfig
    from export.mnist_data import DEFAULT_DATA_DIR, MnistDataError, load_mnist

    if args.epochs is not None and args.epochs < 1:
        print("--epochs must be >= 1", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep < 1:
        print("--keep must be >= 1", file=sys.stderr)
        return 2
    # Files the run will read after training are checked first, so a typo costs no training.
    from export.retention import ServingConfigError, protected_versions
    from export.rollout_state import RolloutStateError, load_state

    try:
        load_state(args.repo, args.model_name)
        if args.keep is not None:
            protected_versions(args.repo, args.model_name, args.serving_config)
    except (RolloutStateError, ServingConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Verify the data before TensorFlow loads: a bad file is reported in a fraction of a second.
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    print(f"data: loading {data_dir}", flush=True)
    interrupts.pause("load_data", sys.stdout)
    try:
        data = load_mnist(data_dir, fetch=args.fetch_data, mirrors=args.mirror)
    except MnistDataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return EXIT_DATA
    print(f"data: {data_dir} verified (SHA-256 of the 4 decompressed IDX files)", flush=True)

    from export.pipeline import ExportRequest, run_export
    from export.training import TrainConfig

    request = ExportRequest(
        repo_root=args.repo,
        model_name=args.model_name,
        train=TrainConfig(
            arch=args.arch,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            precision=args.precision,
            train_limit=args.train_limit,
        ),
        gate=GateConfig(
            min_accuracy=args.min_accuracy,
            tolerance=args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE,
            force=args.force,
            infra_check=args.infra_check,
        ),
        keep=args.keep,
        data_dir=data_dir,
        fetch_data=args.fetch_data,
        serving_config=args.serving_config,
        report_png=not args.no_report_png,
    )
    interrupts.check()
    try:
        outcome = run_export(request, data=data, interrupts=interrupts)
    except Exception as exc:
        if not disk_full(exc):
            raise
        print(
            f"error: no space left on device while writing the new version under "
            f"{args.repo / args.model_name} ({_last_line(exc)}); "
            "nothing was published and the staging directory was removed: free space and "
            "export again",
            file=sys.stderr,
        )
        return EXIT_DISK_FULL
    if not outcome.published:
        print(f"not published: {args.model_name} {args.arch} test accuracy {outcome.accuracy:.4f}")
        return EXIT_REFUSED
    times = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in outcome.timings.items())
    print(f"timings: {times}")
    print(
        f"published {args.model_name} version {outcome.version} ({outcome.path}): "
        f"test accuracy {outcome.accuracy:.4f} ({outcome.accuracy * 100:.2f}%)",
        flush=True,
    )
    if outcome.interrupted_after_publish:
        print(
            f"interrupted after version {outcome.version} was published: the version is "
            "whole and stays published; retention was skipped",
            file=sys.stderr,
        )
    return 0
