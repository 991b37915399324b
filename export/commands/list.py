"""``python -m export list``: the published versions with their metrics and rollout roles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="show the published versions with their metrics")
    p.add_argument("--repo", type=Path, default=Path("models"))
    p.add_argument("--model-name", default="mnist")
    p.add_argument("--json", action="store_true", help="one JSON object per version")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.metadata import read_metadata
    from export.repository import ModelRepository
    from export.rollout_state import load_state

    repo = ModelRepository(args.repo, args.model_name)
    state = load_state(repo.root, repo.model_name)
    roles = {}
    for role in ("stable", "previous_stable", "canary"):
        version = getattr(state, role)
        if version is not None:
            roles.setdefault(version, []).append(role)
    rows = []
    for version in repo.versions():
        meta = read_metadata(repo.version_path(version)) or {}
        metrics = meta.get("metrics", {})
        rows.append(
            {
                "version": version,
                "architecture": meta.get("architecture"),
                "test_accuracy": metrics.get("test_accuracy"),
                "seed": meta.get("parameters", {}).get("seed"),
                "precision": meta.get("precision", {}).get("trained"),
                "train_s": meta.get("timings_s", {}).get("train_s"),
                "created_utc": meta.get("created_utc"),
                "roles": roles.get(version, []),
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no versions in {repo.model_dir}")
        return 0
    print(f"{repo.model_dir}:")
    print(
        f"{'version':>7}  {'arch':<8} {'accuracy':>8}  {'seed':>4}  {'precision':<15} {'train s':>7}  {'created (UTC)':<25} roles"
    )
    for r in rows:
        acc = f"{r['test_accuracy'] * 100:.2f}%" if r["test_accuracy"] is not None else "-"
        train_s = f"{r['train_s']:.1f}" if r["train_s"] is not None else "-"
        print(
            f"{r['version']:>7}  {r['architecture'] or '-':<8} {acc:>8}  {r['seed'] if r['seed'] is not None else '-':>4}  "
            f"{r['precision'] or '-':<15} {train_s:>7}  {r['created_utc'] or '-':<25} {','.join(r['roles'])}"
        )
    return 0
