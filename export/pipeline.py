"""train -> build the float32 SavedModel -> warmup + report -> gate -> atomic publish ->
retention. The CLI and the tests' tiny-model fixture both go through :func:`run_export`."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from export.gate import GateConfig, GateDecision, decide, evaluate_saved_model, stable_reference
from export.infra_check import infra_check
from export.interrupts import InterruptGuard, check, pause
from export.metadata import git_revision, runtime_versions, write_metadata
from export.mnist_data import DEFAULT_DATA_DIR, MnistData, load_mnist, to_model_input
from export.report import confusion_matrix, write_report_json, write_report_png
from export.repository import ModelRepository
from export.retention import protected_versions
from export.training import TrainConfig, cpu_has_avx512_bf16, train

INPUT_CONTRACT = "784 float32 values in [0, 1], row-major 28x28, white digit on black"


@dataclass(frozen=True)
class ExportRequest:
    repo_root: Path
    model_name: str
    train: TrainConfig
    gate: GateConfig = field(default_factory=GateConfig)
    keep: int | None = None  # retention: newest N (None: keep everything)
    data_dir: Path = DEFAULT_DATA_DIR
    fetch_data: bool = False
    serving_config: Path | None = None  # protects the versions it names from retention
    report_png: bool = True


@dataclass
class ExportOutcome:
    published: bool
    version: int | None
    path: Path | None
    accuracy: float
    decision: GateDecision
    deleted: list[int]
    timings: dict[str, float]
    metadata: dict
    interrupted_after_publish: bool = False  # a Ctrl-C after the rename: published, whole


def _png_digits(images: np.ndarray) -> list[bytes]:
    import tensorflow as tf

    return [tf.io.encode_png(image[..., None]).numpy() for image in images]


def run_export(
    request: ExportRequest,
    out: TextIO = sys.stdout,
    data: MnistData | None = None,
    interrupts: InterruptGuard | None = None,
) -> ExportOutcome:
    """Train, gate and (if accepted) publish one version; returns what happened.

    ``data``: an already verified dataset (else it is loaded from ``request.data_dir``).
    ``interrupts``: the CLI's SIGINT guard (export/interrupts.py): checked at every phase and
    batch end, committed right before the publish rename."""
    from export.signatures import build_serving_module, save_serving_model, signature_methods
    from export.warmup import warmup_records, write_warmup

    timings: dict[str, float] = {}
    started = time.monotonic()
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 3)
        mark = now

    if data is None:
        data = load_mnist(request.data_dir, fetch=request.fetch_data)
    lap("load_data_s")
    check(interrupts)
    result = train(request.train, data, out, on_batch_end=lambda: check(interrupts))
    lap("train_s")
    check(interrupts)

    arch = request.train.arch
    repo = ModelRepository(request.repo_root, request.model_name)
    # Debris of crashed exports first: on a full disk it may be what holds the space.
    removed = repo.clean_stale()
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"repository: removed debris of dead exports: {names}", file=out, flush=True)
    with repo.staging() as staged:
        print(f"export: writing the SavedModel into {staged.name}", file=out, flush=True)
        module = build_serving_module(result.model, arch)
        save_serving_model(module, staged)
        test_x = to_model_input(data.test_images[:8])
        write_warmup(
            staged, warmup_records(request.model_name, test_x, _png_digits(data.test_images[:2]))
        )
        lap("export_s")
        check(interrupts)

        print("evaluate: reloading the SavedModel, scoring the test set", file=out, flush=True)
        pause(interrupts, "evaluate", out)
        evaluation = evaluate_saved_model(staged, data.test_images, data.test_labels)
        check(interrupts)
        print("gate: deciding", file=out, flush=True)
        pause(interrupts, "gate", out)
        infra = None
        if request.gate.infra_check:
            print(
                "gate: infra check: serving the built version with the embedded model server",
                file=out,
                flush=True,
            )
            infra = infra_check(staged, request.model_name, test_x, evaluation.predictions[:8])
        decision = decide(evaluation, arch, request.gate, stable_reference(repo), infra)
        lap("evaluate_s")

        if len(evaluation.predictions) != len(data.test_labels):  # it did not even reload
            for reason in decision.reasons:
                print(f"gate: REFUSED: {reason}", file=out)
                print(f"export refused: {reason}", file=sys.stderr)
            return ExportOutcome(False, None, None, 0.0, decision, [], timings, {})
        confusion = confusion_matrix(data.test_labels, evaluation.predictions)
        per_class = (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).round(4).tolist()
        report = {
            "architecture": arch,
            "test_accuracy": evaluation.accuracy,
            "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist(),
            "training": result.summary(),
            "step_losses": result.step_losses,
            "gate": decision.as_dict(),
        }
        assets = staged / "assets.extra"
        write_report_json(assets, report)
        if request.report_png:
            write_report_png(
                assets,
                f"{request.model_name} {arch} seed {request.train.seed}: "
                f"test accuracy {evaluation.accuracy:.4f}",
                result.history,
                result.step_losses,
                confusion,
            )
        lap("report_s")

        for note in decision.notes:
            print(f"gate: {note}", file=out)
        if not decision.accepted:
            for reason in decision.reasons:
                print(f"gate: REFUSED: {reason}", file=out)
                print(f"export refused: {reason}", file=sys.stderr)
            return ExportOutcome(False, None, None, evaluation.accuracy, decision, [], timings, {})

        metadata = {
            "model_name": request.model_name,
            "architecture": arch,
            "metrics": {
                "test_accuracy": evaluation.accuracy,
                "test_errors": int(np.sum(evaluation.predictions != data.test_labels)),
                "test_images": int(len(data.test_labels)),
                "per_class_accuracy": per_class,
                "final_train_accuracy": (result.history.get("accuracy") or [None])[-1],
                "final_train_loss": (result.history.get("loss") or [None])[-1],
            },
            "gate": decision.as_dict(),
            "data": {
                "dir": str(data.data_dir),
                "sha256_uncompressed": data.sha256,
                "train_images_used": int(request.train.train_limit or len(data.train_labels)),
            },
            "parameters": {
                **asdict(request.train),
                "epochs": request.train.resolved_epochs,
                "learning_rate": request.train.resolved_learning_rate,
                "steps": result.steps,
                "optimizer": "Adam + CosineDecay",
                "loss": "sparse_categorical_crossentropy",
            },
            "precision": {
                "trained": result.precision,
                "reason": result.precision_reason,
                "served": "float32",
            },
            "signatures": signature_methods(staged),
            "input_contract": INPUT_CONTRACT,
            "code": {"git_revision": git_revision()},
            "runtime": runtime_versions(),
            "host": {"cpus": os.cpu_count(), "avx512_bf16": cpu_has_avx512_bf16()},
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        def finalize(path: Path, version: int) -> None:
            metadata["version"] = version
            metadata["timings_s"] = {**timings, "total_s": round(time.monotonic() - started, 3)}
            write_metadata(path, metadata)

        def before_rename(version: int) -> None:
            print(f"publish: renaming into place as version {version}", file=out, flush=True)
            pause(interrupts, "before_rename", out)
            if interrupts is not None:
                interrupts.commit()  # the point of no return: from here on, it publishes

        check(interrupts)
        print("publish: reserving the next version number", file=out, flush=True)
        published = repo.publish(staged, finalize, before_rename=before_rename)
    lap("publish_s")
    print(f"publish: version {published.version} is in place", file=out, flush=True)
    pause(interrupts, "after_rename", out)
    interrupted = interrupts is not None and interrupts.requested

    deleted: list[int] = []
    if request.keep is not None and not interrupted:
        protected = protected_versions(repo.root, repo.model_name, request.serving_config)
        deleted = repo.apply_retention(request.keep, protected)
        if deleted:
            print(
                f"retention: deleted versions {deleted} (keep {request.keep}, protected {sorted(protected)})",
                file=out,
            )
    timings["total_s"] = round(time.monotonic() - started, 3)
    return ExportOutcome(
        True,
        published.version,
        published.path,
        evaluation.accuracy,
        decision,
        deleted,
        timings,
        metadata,
        interrupted_after_publish=interrupted,
    )
