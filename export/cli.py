"""``python -m export <command>``.

Adding a command: write a module with ``register(subparsers)`` that adds its parser and sets
``func`` (a callable taking the parsed args and returning an exit code), then append the
module's import path to :data:`COMMAND_MODULES`. Modules are imported lazily, only to build
the parser, so a command's heavy imports belong inside its ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: list[str] = [
    "export.commands.train",
    "export.commands.list",
    "export.commands.mobile",  # issue 7: TFLite / Core ML artefacts of a version
]


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Train MNIST models and publish them as versioned SavedModels.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules if modules is not None else COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing was published", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m export list | head`: the reader left, not an error
        sys.stderr.close()
        return 0
