"""Convert, check and publish the mobile artefacts of one published version.

:func:`build_mobile` resolves the version, checks its ``predict_images`` signature, computes the
SavedModel's reference scores on the official test set, converts to TF Lite (float32 and
dynamic-range int8, :mod:`export.mobile.tflite`) and Core ML (:mod:`export.mobile.coreml`),
and publishes ``<repo>/mobile/<model_name>/<N>/`` through the repository's one staging/publish
helper (:class:`export.repository.StagingArea`) only when every check passed.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.mobile.report import (
    FLOAT32_THRESHOLDS,
    INT8_THRESHOLDS,
    MobileExportError,
    MobileReport,
    ParityThresholds,
    render_table,
)
from export.repository import MOBILE_DIR, StagingArea, TargetExists

SIGNATURE = "predict_images"
REFERENCE_BATCH = 500
DATASET_NAME = "the official MNIST test set"


@dataclass(frozen=True)
class MobileOptions:
    repo: Path
    model_name: str = "mnist"
    version: int | None = None  # None: the newest published version
    data_dir: Path | None = None  # None: export.mnist_data's default (data/mnist)
    limit: int | None = None  # evaluate on the first N test images only (a sample)
    batch_size: int = 1  # TFLite parity batch; 1 is what an app feeds
    coreml_precision: str = "fp16"
    force: bool = False  # replace an existing mobile/<model>/<N>/
    float32_thresholds: ParityThresholds = FLOAT32_THRESHOLDS
    int8_thresholds: ParityThresholds = INT8_THRESHOLDS


@dataclass(frozen=True)
class MobileResult:
    report: MobileReport
    path: Path  # the published mobile version directory


def mobile_dir(repo: Path, model_name: str) -> Path:
    return Path(repo) / MOBILE_DIR / model_name


def artefact_names(model_name: str) -> dict[str, str]:
    return {
        "float32": f"{model_name}_float32.tflite",
        "int8": f"{model_name}_int8.tflite",
        "coreml": f"{model_name}.mlpackage",
    }


# ----- inputs ----------------------------------------------------------------------------------


def resolve_version(repo: Path, model_name: str, version: int | None) -> tuple[int, Path]:
    """The SavedModel directory of ``version`` (or the newest one), checked to exist."""
    from export.repository import ModelRepository

    try:
        repository = ModelRepository(repo, model_name)
    except ValueError as exc:  # e.g. a model name with a slash
        raise MobileExportError(str(exc)) from exc
    versions = repository.versions()
    if not versions:
        raise MobileExportError(
            f"{repository.model_dir}: no published versions (run `python -m export train` first)"
        )
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise MobileExportError(
            f"{repository.model_dir}: no version {version} (published: {', '.join(map(str, versions))})"
        )
    path = repository.version_path(version)
    if not (path / "saved_model.pb").is_file():
        raise MobileExportError(f"{path}: no saved_model.pb; not a SavedModel version")
    return version, path


@dataclass(frozen=True)
class TestSet:
    images: np.ndarray  # float32 [N, 784] in [0, 1]
    labels: np.ndarray  # int64 [N]
    description: str
    sha256: dict[str, str]


def load_test_set(data_dir: Path | None, limit: int | None) -> TestSet:
    """The official test set through export's loader, which verifies every checksum."""
    from export import mnist_data

    try:
        data = mnist_data.load_mnist(data_dir or mnist_data.DEFAULT_DATA_DIR)
    except mnist_data.MnistDataError as exc:
        raise MobileExportError(f"test set: {exc}") from exc
    images = mnist_data.to_model_input(data.test_images)
    labels = data.test_labels.astype(np.int64)
    description = DATASET_NAME
    if limit is not None:
        if limit < 1:
            raise MobileExportError(f"--limit must be >= 1, got {limit}")
        if limit < len(labels):
            images, labels = images[:limit], labels[:limit]
            description = f"the first {limit} images of {DATASET_NAME} (a sample)"
    sums = {
        name: data.sha256[name]
        for name in (mnist_data.TEST_IMAGES, mnist_data.TEST_LABELS)
        if name in data.sha256
    }
    return TestSet(images, labels, description, sums)


def check_signature(saved_model_dir: Path) -> None:
    """``predict_images`` must take images float32 [-1, 784] and return scores float32
    [-1, 10]; a wrong graph is refused here, before any converter sees it."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
    if SIGNATURE not in loaded.signatures:
        raise MobileExportError(
            f"{saved_model_dir}: no signature {SIGNATURE!r} (has {sorted(loaded.signatures)})"
        )
    function = loaded.signatures[SIGNATURE]
    _, inputs = function.structured_input_signature
    outputs = function.structured_outputs
    problems = []
    if list(inputs) != ["images"]:
        problems.append(f"inputs are {sorted(inputs)}, expected ['images']")
    else:
        spec = inputs["images"]
        if spec.dtype != tf.float32 or spec.shape.as_list() not in ([None, 784], [1, 784]):
            problems.append(
                f"input 'images' is {spec.dtype.name} {spec.shape.as_list()}, expected float32 [None, 784]"
            )
    if not isinstance(outputs, dict) or "scores" not in outputs:
        problems.append(
            f"outputs are {sorted(outputs) if isinstance(outputs, dict) else outputs}, expected 'scores'"
        )
    else:
        spec = outputs["scores"]
        if spec.dtype != tf.float32 or spec.shape.rank != 2 or spec.shape[-1] != 10:
            problems.append(
                f"output 'scores' is {spec.dtype.name} {spec.shape.as_list()}, expected float32 [None, 10]"
            )
    if problems:
        raise MobileExportError(
            f"{saved_model_dir}: signature {SIGNATURE!r}: " + "; ".join(problems)
        )


def reference_scores(saved_model_dir: Path, images: np.ndarray) -> np.ndarray:
    """The SavedModel's own scores: what every mobile artefact is compared with."""
    import tensorflow as tf

    function = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    chunks = [
        function(images=tf.constant(images[i : i + REFERENCE_BATCH]))["scores"].numpy()
        for i in range(0, len(images), REFERENCE_BATCH)
    ]
    scores = np.concatenate(chunks).astype(np.float32)
    if scores.shape != (len(images), 10):
        raise MobileExportError(
            f"{saved_model_dir}: {SIGNATURE} returned shape {list(scores.shape)} for "
            f"{len(images)} images, expected [{len(images)}, 10]"
        )
    bad = int((~np.isfinite(scores).all(axis=1)).sum())
    if bad:
        raise MobileExportError(
            f"{saved_model_dir}: the SavedModel itself returns NaN/Inf scores for {bad} of "
            f"{len(images)} images; nothing to convert"
        )
    return scores


# ----- the whole export ------------------------------------------------------------------------


def _tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("tensorflow", "ai-edge-litert", "coremltools", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _require_tools() -> None:
    """The converters and LiteRT come with the `mobile` extra; say so instead of a traceback."""
    missing = [
        name
        for name in ("tensorflow", "ai_edge_litert", "coremltools")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise MobileExportError(
            f"missing {', '.join(missing)}: install the export and mobile extras "
            "(pip install -e '.[export,mobile]')"
        )


def _quiet(_message: str) -> None:
    pass


def build_mobile(
    options: MobileOptions,
    log: Callable[[str], None] = _quiet,
    show: Callable[[str], None] = _quiet,
) -> MobileResult:
    """Convert, check and publish; raises MobileExportError (nothing published) on refusal.

    ``log`` gets progress lines, ``show`` the parity table; the table is shown even when a
    threshold fails, so a refusal comes with every figure, not just the first problem.
    """
    _require_tools()
    from export.mobile import coreml as mobile_coreml
    from export.mobile import tflite as mobile_tflite

    version, saved_model_dir = resolve_version(options.repo, options.model_name, options.version)
    target = mobile_dir(options.repo, options.model_name) / str(version)
    if target.exists() and not options.force:
        raise MobileExportError(f"{target} already exists; pass --force to rebuild it")
    names = artefact_names(options.model_name)

    started = time.perf_counter()

    def log_step(message: str) -> None:
        log(f"[{time.perf_counter() - started:6.1f} s] {message}")

    log_step(f"checking {saved_model_dir} signature {SIGNATURE}")
    check_signature(saved_model_dir)
    test_set = load_test_set(options.data_dir, options.limit)
    log_step(f"SavedModel scores for {len(test_set.labels)} images")
    reference = reference_scores(saved_model_dir, test_set.images)
    reference_accuracy = float(np.mean(np.argmax(reference, axis=1) == test_set.labels))

    area = StagingArea(target.parent)
    area.clean_stale_staging()  # debris of exports that died mid-build
    # Created mobile/ and mobile/<model>/ are pruned again if nothing gets published.
    with area.staging(prune_created_parents=2) as staged:
        tflite_results = []
        for key, quantization, thresholds in (
            ("float32", mobile_tflite.FLOAT32, options.float32_thresholds),
            ("int8", mobile_tflite.INT8_DYNAMIC, options.int8_thresholds),
        ):
            log_step(f"converting and running {names[key]} (LiteRT, batch {options.batch_size})")
            model, parity = mobile_tflite.convert_and_check(
                saved_model_dir=saved_model_dir,
                signature=SIGNATURE,
                quantization=quantization,
                artefact=names[key],
                images=test_set.images,
                labels=test_set.labels,
                reference_scores=reference,
                thresholds=thresholds,
                batch_size=options.batch_size,
            )
            (staged / names[key]).write_bytes(model)
            tflite_results.append(parity)

        log_step(f"converting {names['coreml']} (coremltools, {options.coreml_precision})")
        coreml = mobile_coreml.convert_and_check(
            saved_model_dir=saved_model_dir,
            signature=SIGNATURE,
            destination=staged / names["coreml"],
            options=mobile_coreml.CoreMLOptions(precision=options.coreml_precision),
        )

        report = MobileReport(
            model_name=options.model_name,
            version=version,
            source_saved_model=str(saved_model_dir),
            signature=SIGNATURE,
            dataset=test_set.description,
            dataset_sha256=test_set.sha256,
            images=len(test_set.labels),
            reference_accuracy=reference_accuracy,
            tflite=tflite_results,
            coreml=coreml,
            versions=_tool_versions(),
            created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        show(render_table(report))
        if not report.passed:
            raise MobileExportError(
                f"mobile export of {options.model_name} version {version} refused, nothing "
                "published:\n  - " + "\n  - ".join(report.failures)
            )
        report.write(staged)
        _publish(area, staged, target, options.force)
    return MobileResult(report=report, path=target)


def _publish(area: StagingArea, staged: Path, target: Path, force: bool) -> None:
    """rename(2) into place; with ``force`` an existing directory is replaced (renamed to a
    hidden name first, then deleted), without it a racing export cannot be clobbered."""
    try:
        area.publish(staged, target, replace=force)
    except TargetExists:
        raise MobileExportError(f"{target} already exists; pass --force to rebuild it") from None
    except OSError as exc:
        raise MobileExportError(
            f"{target}: could not publish ({exc}); another export won the race?"
        ) from exc
