"""``python -m export mobile``: TF Lite and Core ML artefacts of a version, with parity.

The work is :func:`export.mobile.build.build_mobile`; this module only parses, prints and maps
the outcome to an exit status (0 published, 1 refused, 2 bad usage).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_DESCRIPTION = (
    "Write a float32 and a dynamic-range int8 .tflite and a Core ML .mlpackage of a "
    "published version under <repo>/mobile/<model>/<version>/, after checking them "
    "against the SavedModel on the official test set."
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--repo", type=Path, default=Path("models"), help="model repository root (default: models)"
    )
    parser.add_argument("--model-name", default="mnist", help="model name (default: mnist)")
    parser.add_argument(
        "--version", type=int, default=None, help="published version (default: the newest)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="MNIST IDX directory (default: data/mnist)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate on the first N test images only (a sample; default: all 10,000)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="LiteRT parity batch size (default 1, as an app runs)",
    )
    parser.add_argument("--coreml-precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing mobile/<model>/<version>/"
    )
    parser.set_defaults(func=run)
    return parser


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Hook for `python -m export`'s subcommand parser."""
    parser = subparsers.add_parser(
        "mobile",
        help="TF Lite + Core ML artefacts of a version, with parity against the SavedModel",
        description=_DESCRIPTION,
    )
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from export.mobile.build import MobileOptions, build_mobile
    from export.mobile.report import MobileExportError

    options = MobileOptions(
        repo=args.repo,
        model_name=args.model_name,
        version=args.version,
        data_dir=args.data_dir,
        limit=args.limit,
        batch_size=args.batch_size,
        coreml_precision=args.coreml_precision,
        force=args.force,
    )
    if options.batch_size < 1:
        print(
            f"export mobile: --batch-size must be >= 1, got {options.batch_size}", file=sys.stderr
        )
        return 2

    def log(message: str) -> None:
        print(f"export mobile: {message}", file=sys.stderr, flush=True)

    def show(table: str) -> None:
        print(table, flush=True)  # the figures go to stdout, progress to stderr

    try:
        result = build_mobile(options, log, show)
    except MobileExportError as exc:
        print(f"export mobile: REFUSED: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"published {result.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m export mobile", description=_DESCRIPTION)
    )
    args = parser.parse_args(argv)
    return args.func(args)
