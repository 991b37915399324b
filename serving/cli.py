"""``python -m serving up|down|status|rollout ...``: the operator's front (behind make)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.backends.control import ControlError
from serving.backends.lifecycle import (
    AlreadyServing,
    UpOptions,
    describe,
    down,
    format_endpoints,
    format_serving,
    running_record,
    up,
)
from serving.backends.record import BackendError, RunDir
from serving.config import (
    GRPC_PORT,
    LOCAL_IMAGE_REPOSITORY,
    MODEL_NAME,
    REST_PORT,
    TF_SERVING_IMAGE,
)

EXIT_ERROR = 1
EXIT_NOT_SERVING = 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        default=None,
        help="where the server record, pid file, log and rendered config live "
        "(default: $SERVING_RUN_DIR or .run)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_up = commands.add_parser("up", help="serve the model repository in the background")
    _common(p_up)
    p_up.add_argument("--repo", default="models", help="model repository root (default: models)")
    p_up.add_argument("--model-name", default=MODEL_NAME)
    p_up.add_argument(
        "--server",
        choices=("auto", "docker", "embedded"),
        default=os.environ.get("SERVER", "auto") or "auto",
        help="auto: docker when an engine answers, else the embedded server",
    )
    p_up.add_argument(
        "--image",
        default=None,
        help=f"docker only: a tensorflow/serving-compatible image (default {TF_SERVING_IMAGE}; "
        f"`make image` builds {LOCAL_IMAGE_REPOSITORY}:<version>)",
    )
    p_up.add_argument("--host", default="127.0.0.1", help="address to publish the ports on")
    p_up.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    p_up.add_argument("--rest-port", type=int, default=REST_PORT)
    p_up.add_argument("--arch", default="cnn", help="architecture to export if none is published")
    p_up.add_argument(
        "--no-export", action="store_true", help="fail instead of exporting when empty"
    )
    p_up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for AVAILABLE")

    p_down = commands.add_parser("down", help="stop the background server")
    _common(p_down)
    p_status = commands.add_parser("status", help="print what serves")
    _common(p_status)

    p_roll = commands.add_parser("rollout", help="canary / promote / rollback model versions")
    # Options live on each step so `rollout canary 3 --repo models` parses (as make calls it).
    step_options = argparse.ArgumentParser(add_help=False)
    _common(step_options)
    step_options.add_argument("--repo", default=None, help="must match the served repository")
    step_options.add_argument("--model-name", default=None, help="must match the served model")
    step_options.add_argument("--timeout", type=float, default=180.0)
    steps = p_roll.add_subparsers(dest="step", required=True)
    p_pin = steps.add_parser(
        "pin",
        parents=[step_options],
        help="begin rollouts: serve VERSION (default: what serves now) as stable",
    )
    p_pin.add_argument("version", type=int, nargs="?")
    p_canary = steps.add_parser(
        "canary", parents=[step_options], help="load VERSION beside stable, label it canary"
    )
    p_canary.add_argument("version", type=int)
    steps.add_parser("promote", parents=[step_options], help="make the canary the stable version")
    steps.add_parser(
        "rollback",
        parents=[step_options],
        help="drop the canary, or go back to the previous stable version",
    )
    steps.add_parser("status", parents=[step_options], help="what serves + the rollout state")
    return parser


def cmd_up(args: argparse.Namespace) -> int:
    opts = UpOptions(
        repo=Path(args.repo),
        model_name=args.model_name,
        server=args.server,
        image=args.image,
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        run_dir=RunDir.resolve(args.run_dir),
        export_if_empty=not args.no_export,
        arch=args.arch,
        timeout_s=args.timeout,
    )
    try:
        record = up(opts)
    except AlreadyServing as exc:
        print(exc)
        print(format_serving(describe(exc.record)))
        return 0
    print(format_serving(describe(record)))
    print(format_endpoints(record))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    record = running_record(RunDir.resolve(args.run_dir))
    if record is None:
        print("not serving (start with `make serve`)")
        return EXIT_NOT_SERVING
    print(format_serving(describe(record)))
    print(format_endpoints(record))
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from serving.rollout import Rollout

    run_dir = RunDir.resolve(args.run_dir)
    record = running_record(run_dir)
    if record is None:
        raise BackendError(f"nothing is serving from {run_dir.path}: start it with `make serve`")
    if args.repo is not None and Path(args.repo).resolve() != Path(record.repo):
        raise BackendError(
            f"the running server serves {record.repo}, not {Path(args.repo).resolve()}"
        )
    if args.model_name is not None and args.model_name != record.model_name:
        raise BackendError(f"the running server serves {record.model_name}, not {args.model_name}")
    rollout = Rollout(record, run_dir, timeout_s=args.timeout)
    if args.step == "pin":
        rollout.pin(args.version)
    elif args.step == "canary":
        rollout.canary(args.version)
    elif args.step == "promote":
        rollout.promote()
    elif args.step == "rollback":
        rollout.rollback()
    else:
        print(rollout.show())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "up": cmd_up,
        "down": lambda a: (down(RunDir.resolve(a.run_dir)), 0)[1],
        "status": cmd_status,
        "rollout": cmd_rollout,
    }
    try:
        return handlers[args.command](args)
    except (BackendError, ControlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
