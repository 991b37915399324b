"""The gate a built SavedModel passes before it is published.

1. It reloads, and every signature answers on real digits with consistent classes.
2. Its test-set accuracy (computed by the reloaded float32 graph, i.e. what will be served)
   meets the architecture's threshold.
3. It is not worse than the stable version by more than a tolerance, unless forced.
   Stable = the rollout state's ``stable``, else the newest published version.
4. Optionally (``infra_check``), a real model server loads it and answers REST predict
   (see export/infra_check.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.infra_check import InfraResult
from export.metadata import read_metadata
from export.models import DEFAULT_MIN_ACCURACY
from export.repository import ModelRepository
from export.rollout_state import load_state

DEFAULT_TOLERANCE = 0.002  # 0.2 points: more than seed-to-seed noise of the CNN


@dataclass(frozen=True)
class GateConfig:
    min_accuracy: float | None = None  # None: the architecture's default
    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False  # skip the comparison with stable (never the other checks)
    infra_check: bool = False  # also serve the version with a real model server (slower)

    def threshold(self, arch: str) -> float:
        return self.min_accuracy if self.min_accuracy is not None else DEFAULT_MIN_ACCURACY[arch]


@dataclass
class Evaluation:
    """What the reloaded SavedModel did on the test set."""

    accuracy: float
    predictions: np.ndarray
    signature_errors: dict[str, str] = field(default_factory=dict)  # name -> failure
    signatures_checked: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class StableReference:
    version: int
    accuracy: float | None  # None: that version has no readable metadata
    source: str  # "rollout state" | "newest published"


@dataclass
class GateDecision:
    accepted: bool
    reasons: list[str]  # why refused (empty when accepted)
    notes: list[str]  # what was checked
    threshold: float
    stable: StableReference | None

    def as_dict(self) -> dict:
        stable = None
        if self.stable is not None:
            stable = {
                "version": self.stable.version,
                "accuracy": self.stable.accuracy,
                "source": self.stable.source,
            }
        return {
            "accepted": self.accepted,
            "reasons": self.reasons,
            "notes": self.notes,
            "threshold": self.threshold,
            "stable": stable,
        }


def stable_reference(repo: ModelRepository) -> StableReference | None:
    """The version a new one must not be worse than."""
    state = load_state(repo.root, repo.model_name)
    published = repo.versions()
    if state.stable is not None and state.stable in published:
        version, source = state.stable, "rollout state"
    elif published:
        version, source = published[-1], "newest published"
    else:
        return None
    metadata = read_metadata(repo.version_path(version)) or {}
    accuracy = metadata.get("metrics", {}).get("test_accuracy")
    return StableReference(version, float(accuracy) if accuracy is not None else None, source)


def decide(
    evaluation: Evaluation,
    arch: str,
    config: GateConfig,
    stable: StableReference | None,
    infra: InfraResult | None = None,
) -> GateDecision:
    """``infra``: the infra check's result, None when it did not run."""
    reasons: list[str] = []
    notes: list[str] = []
    if infra is not None:
        (notes if infra.ok else reasons).append(f"infra check: {infra.detail}")
    threshold = config.threshold(arch)
    for name, error in evaluation.signature_errors.items():
        reasons.append(f"signature {name!r} failed after reload: {error}")
    if not evaluation.signature_errors:
        notes.append(f"reloaded; signatures answered: {', '.join(evaluation.signatures_checked)}")
    if evaluation.accuracy < threshold:
        reasons.append(
            f"test accuracy {evaluation.accuracy:.4f} is below the {arch} threshold {threshold:.4f}"
        )
    else:
        notes.append(f"test accuracy {evaluation.accuracy:.4f} >= threshold {threshold:.4f}")
    if stable is None:
        notes.append("no published version to compare with")
    elif stable.accuracy is None:
        notes.append(f"stable version {stable.version} has no metrics; comparison skipped")
    else:
        floor = stable.accuracy - config.tolerance
        if evaluation.accuracy < floor:
            text = (
                f"test accuracy {evaluation.accuracy:.4f} is worse than stable version "
                f"{stable.version} ({stable.source}, {stable.accuracy:.4f}) by more than the "
                f"tolerance {config.tolerance:.4f}"
            )
            if config.force:
                notes.append(text + " (forced)")
            else:
                reasons.append(text + "; use --force to publish anyway")
        else:
            notes.append(
                f"not worse than stable version {stable.version} ({stable.accuracy:.4f}) "
                f"beyond tolerance {config.tolerance:.4f}"
            )
    return GateDecision(not reasons, reasons, notes, threshold, stable)


def evaluate_saved_model(
    export_dir: Path, test_images: np.ndarray, test_labels: np.ndarray, batch_size: int = 1000
) -> Evaluation:
    """Reload ``export_dir`` in a Session, as a model server does, and run it: accuracy over
    the whole test set through ``serving_default``, plus every signature on a few digits (PNG
    bytes and tf.Examples built from the same pixels), which must agree with the float path."""
    import time

    from export.session_load import SessionModel

    start = time.monotonic()
    try:
        # The way a model server loads it (a TF1 Session), not tf.saved_model.load: a version
        # that only the latter accepts would pass here and fail to load when served.
        model = SessionModel.load(str(export_dir))
    except Exception as exc:  # a version that does not reload is refused, not a crash
        return Evaluation(
            accuracy=0.0,
            predictions=np.zeros(0, np.int64),
            signature_errors={"(reload)": f"{type(exc).__name__}: {str(exc)[:300]}"},
            seconds=time.monotonic() - start,
        )
    try:
        return _evaluate_loaded(model, export_dir, test_images, test_labels, batch_size, start)
    finally:
        model.close()


def _evaluate_loaded(model, export_dir, test_images, test_labels, batch_size, start) -> Evaluation:
    import time

    import tensorflow as tf

    from export.mnist_data import to_model_input
    from export.signatures import (
        CLASSIFY,
        CLASSIFY_FEATURE_KEY,
        CLASSIFY_METHOD,
        PREDICT_IMAGES,
        PREDICT_PNG,
        SERVING_DEFAULT,
        signature_methods,
    )

    x = to_model_input(test_images)
    keys = set(model.signature_keys)
    errors: dict[str, str] = {}
    if SERVING_DEFAULT not in keys:
        return Evaluation(
            accuracy=0.0,
            predictions=np.zeros(0, np.int64),
            signature_errors={SERVING_DEFAULT: "missing"},
            seconds=time.monotonic() - start,
        )
    try:
        predictions = np.concatenate(
            [
                model.call(SERVING_DEFAULT, images=x[i : i + batch_size])["classes"]
                for i in range(0, len(x), batch_size)
            ]
        )
    except Exception as exc:  # the default signature does not run in a Session
        return Evaluation(
            accuracy=0.0,
            predictions=np.zeros(0, np.int64),
            signature_errors={SERVING_DEFAULT: f"{type(exc).__name__}: {str(exc)[:300]}"},
            seconds=time.monotonic() - start,
        )
    accuracy = float(np.mean(predictions == test_labels))

    sample = x[:8]
    expected = predictions[:8]
    png = np.array(
        [tf.io.encode_png(image[..., None]).numpy() for image in test_images[:8]], dtype=object
    )
    examples = np.array([example_bytes(row, CLASSIFY_FEATURE_KEY) for row in sample], dtype=object)
    calls = {
        SERVING_DEFAULT: lambda: model.call(SERVING_DEFAULT, images=sample)["classes"],
        PREDICT_IMAGES: lambda: np.argmax(model.call(PREDICT_IMAGES, images=sample)["scores"], 1),
        CLASSIFY: lambda: np.argmax(model.call(CLASSIFY, inputs=examples)["scores"], 1),
        PREDICT_PNG: lambda: model.call(PREDICT_PNG, image_bytes=png)["classes"],
    }
    missing = sorted(set(calls) - keys)
    for name in missing:
        errors[name] = "missing"
    method = signature_methods(export_dir).get(CLASSIFY)
    if method != CLASSIFY_METHOD:
        errors[CLASSIFY] = f"method name is {method!r}, expected {CLASSIFY_METHOD!r}"
        missing.append(CLASSIFY)
    for name, call in calls.items():
        if name in missing:
            continue
        try:
            got = call()
        except Exception as exc:  # any failure of a signature refuses the model
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        if not np.array_equal(got, expected):
            errors[name] = f"classes {got.tolist()} differ from serving_default {expected.tolist()}"
    return Evaluation(
        accuracy=accuracy,
        predictions=predictions,
        signature_errors=errors,
        signatures_checked=sorted(calls),
        seconds=time.monotonic() - start,
    )


def example_bytes(pixels: np.ndarray, key: str) -> bytes:
    """A serialized tf.Example carrying 784 floats under ``key`` (what ``classify`` takes)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature[key].float_list.value.extend(np.asarray(pixels, np.float32).tolist())
    return example.SerializeToString()
