"""Command line: classify digit pictures, show model status and metadata.

    python -m clients predict  --target grpc://127.0.0.1:8500 --model mnist [--version N |
                               --label L] [--signature S] [--json] IMAGE...
    python -m clients status   --target http://127.0.0.1:8501 --model mnist [--json]
    python -m clients metadata --target ... --model mnist [--json]

Errors print one line on stderr and exit non-zero (1: the call failed, 2: bad usage), with
no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from clients.errors import ClientError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients", description="Call MNIST models on TensorFlow Serving."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        required=True,
        help="grpc://host:port, grpcs://host:port, dns:///name:port or http(s)://host:port",
    )
    common.add_argument("--model", default="mnist", help="model name (default: mnist)")
    pick = common.add_mutually_exclusive_group()
    pick.add_argument("--version", type=int, help="a specific model version")
    pick.add_argument("--label", help="a version label, e.g. stable or canary")
    common.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
    common.add_argument("--json", action="store_true", help="print JSON for machines")
    common.add_argument("--ca-cert", help="PEM root certificate for grpcs:// / https://")

    predict = sub.add_parser("predict", parents=[common], help="classify digit pictures")
    predict.add_argument("--signature", default="", help="signature (default: serving_default)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    sub.add_parser("status", parents=[common], help="model version status")
    sub.add_parser("metadata", parents=[common], help="model signatures")
    return parser


def _client(args: argparse.Namespace):
    from clients import connect

    kwargs: dict[str, Any] = {"timeout_s": args.timeout}
    if args.ca_cert:
        if args.target.startswith("https://"):
            kwargs["verify"] = args.ca_cert
        else:
            from clients.grpc_client import TlsConfig

            kwargs["tls"] = TlsConfig(root_certificates=args.ca_cert)
    return connect(args.target, args.model, **kwargs)


def _predict(client, args: argparse.Namespace) -> list[dict]:
    from clients.images import load_images

    batch = load_images(args.images)
    result = client.predict_digits(
        batch, version=args.version, label=args.label, signature=args.signature or None
    )
    rows = []
    for path, digit, probs in zip(args.images, result.classes, result.probabilities, strict=True):
        rows.append(
            {
                "file": path,
                "digit": int(digit),
                "probability": float(probs[digit]),
                "probabilities": [round(float(p), 6) for p in probs],
                "version": result.version,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command == "predict":
                rows = _predict(client, args)
                if args.json:
                    print(json.dumps(rows))
                else:
                    for row in rows:
                        print(f"{row['file']}: {row['digit']} (p={row['probability']:.4f})")
            elif args.command == "status":
                statuses = client.model_status(version=args.version, label=args.label)
                if args.json:
                    print(json.dumps([s.__dict__ for s in statuses]))
                else:
                    for s in statuses:
                        error = (
                            "" if s.error_code == "OK" else f" {s.error_code}: {s.error_message}"
                        )
                        print(f"{args.model} version {s.version}: {s.state}{error}")
            else:
                meta = client.model_metadata(version=args.version, label=args.label)
                if args.json:
                    print(json.dumps(_metadata_json(meta)))
                else:
                    print(f"{meta.model_name} version {meta.version}")
                    for name, sig in sorted(meta.signatures.items()):
                        print(f"  {name} ({sig.method_name})")
                        for kind, tensors in (("in ", sig.inputs), ("out", sig.outputs)):
                            for alias, info in sorted(tensors.items()):
                                shape = "?" if info.shape is None else list(info.shape)
                                print(f"    {kind} {alias}: {info.dtype} {shape}")
    except ClientError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # unreadable image, bad target, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def _metadata_json(meta) -> dict:
    def tensors(items):
        return {
            k: {
                "name": v.name,
                "dtype": v.dtype,
                "shape": None if v.shape is None else list(v.shape),
            }
            for k, v in items.items()
        }

    return {
        "model": meta.model_name,
        "version": meta.version,
        "signatures": {
            name: {
                "method_name": sig.method_name,
                "inputs": tensors(sig.inputs),
                "outputs": tensors(sig.outputs),
            }
            for name, sig in meta.signatures.items()
        },
    }
