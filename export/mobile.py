"""`python -m export mobile`: TF Lite and Core ML artefacts of a published version, with parity.

For version N of ``<repo>/<model_name>/`` this writes, under ``<repo>/mobile/<model_name>/<N>/``
(never inside the numeric version directory: published versions are immutable and TF Serving
reads them):

    <model_name>_float32.tflite   float32, converted from the ``predict_images`` signature
    <model_name>_int8.tflite      dynamic-range int8 (int8 weights, float32 in and out)
    <model_name>.mlpackage        Core ML mlprogram from the same signature's concrete function
    parity.json                   the figures printed by the command

Both .tflite files are run with LiteRT over the official test set and compared with the
SavedModel; Core ML's spec is checked (Core ML predicts only on macOS). Everything is built in a
hidden staging directory and renamed into place only when every check passed, so a refused
export publishes nothing and a reader never sees half a directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.mobile_report import (
    FLOAT32_THRESHOLDS,
    INT8_THRESHOLDS,
    MobileExportError,
    MobileReport,
    ParityThresholds,
    render_table,
)
from export.repository import MOBILE_DIR, fsync_tree

SIGNATURE = "predict_images"
STAGING_RE = re.compile(r"^\.staging-[0-9]+-([0-9]+)-[0-9a-f]+$")
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


# ----- staging and publishing ------------------------------------------------------------------


@contextlib.contextmanager
def staging(target_parent: Path, version: int) -> Iterator[Path]:
    """A hidden, non-numeric build directory beside the target; removed unless renamed away.
    Parent directories this call created are removed again if they end up empty (a refused
    first export leaves no trace in the repository)."""
    created = [p for p in (target_parent.parent, target_parent) if not p.exists()]
    target_parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target_parent)
    path = target_parent / f".staging-{version}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        for directory in reversed(created):
            with contextlib.suppress(OSError):  # not empty: something was published
                directory.rmdir()


def _clean_stale(parent: Path) -> None:
    """Staging directories of processes that died mid-export."""
    from export.repository import pid_alive

    for entry in parent.iterdir():
        match = STAGING_RE.match(entry.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def publish(staged: Path, target: Path, force: bool) -> None:
    """rename(2) the staged directory into place. Without ``force`` an existing target is
    an error (rename onto a non-empty directory fails, so a racing export cannot clobber it);
    with it the old directory is first renamed to a hidden name, then deleted."""
    fsync_tree(staged)  # a crash right after the rename must not expose empty files
    old: Path | None = None
    if target.exists():
        if not force:
            raise MobileExportError(f"{target} already exists; pass --force to rebuild it")
        old = target.parent / f".replaced-{target.name}-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except OSError as exc:
        raise MobileExportError(
            f"{target}: could not publish ({exc}); another export won the race?"
        ) from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


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
    from export import mobile_coreml, mobile_tflite

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

    with staging(target.parent, version) as staged:
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
        publish(staged, target, options.force)
    return MobileResult(report=report, path=target)


# ----- command line ----------------------------------------------------------------------------


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
    parser.set_defaults(func=run_command)
    return parser


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Hook for `python -m export`'s subcommand parser."""
    parser = subparsers.add_parser(
        "mobile",
        help="TF Lite + Core ML artefacts of a version, with parity against the SavedModel",
        description=(
            "Write a float32 and a dynamic-range int8 .tflite and a Core ML .mlpackage of a "
            "published version under <repo>/mobile/<model>/<version>/, after checking them "
            "against the SavedModel on the official test set."
        ),
    )
    return add_arguments(parser)


def run_command(args: argparse.Namespace) -> int:
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
        argparse.ArgumentParser(prog="python -m export mobile", description=__doc__)
    )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
