"""TF Lite: convert one SavedModel signature, check its tensors, run it, compare it.

The interpreter is LiteRT (`ai_edge_litert`), the runtime an Android app links; TensorFlow's
own `tf.lite.Interpreter` is deprecated. Parity runs with batch 1 by default because that is
what an app feeds, and dynamic-range int8 quantises activations per inference, so a batch of
100 can give other answers than 100 single images.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.mobile.report import MobileExportError, ParityThresholds, TFLiteParity

FLOAT32 = "float32"
INT8_DYNAMIC = "dynamic_range_int8"
QUANTIZATIONS = (FLOAT32, INT8_DYNAMIC)

INPUT_WIDTH = 784
NUM_CLASSES = 10
# Softmax rows sum to 1 up to rounding; anything further off is not a probability vector.
ROW_SUM_TOLERANCE = 1e-3


def convert(saved_model_dir: Path, signature: str, quantization: str) -> bytes:
    """Convert only ``signature`` of the SavedModel (a multi-signature model would otherwise
    give a .tflite with several subgraphs, one of them taking PNG bytes LiteRT cannot decode)."""
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[signature]
    )
    if quantization == INT8_DYNAMIC:
        # No representative dataset: weights become int8, activations stay float and are
        # quantised on the fly ("dynamic range"), so inputs and outputs stay float32.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises a zoo of types (ConverterError, ValueError...)
        raise MobileExportError(
            f"TFLite conversion ({quantization}) of signature {signature!r} failed: {exc}"
        ) from exc


@dataclass(frozen=True)
class TFLiteIO:
    input_name: str
    input_shape_signature: list[int]
    output_name: str
    output_shape_signature: list[int]


def _interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    # One thread: the parity run shares the machine, and results do not depend on it.
    return Interpreter(model_content=model, num_threads=1)


def inspect_io(model: bytes, signature: str, artefact: str) -> TFLiteIO:
    """The .tflite must have exactly the app's contract: images float32 [1 or -1, 784] in,
    scores float32 [1 or -1, 10] out. Anything else is refused before parity runs."""
    interpreter = _interpreter(model)
    signatures = interpreter.get_signature_list()
    if signature not in signatures:
        raise MobileExportError(
            f"{artefact}: no signature {signature!r} in the converted model (has {sorted(signatures)})"
        )
    runner = interpreter.get_signature_runner(signature)
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise MobileExportError(
            f"{artefact}: expected 1 input and 1 output, got inputs {sorted(inputs)} "
            f"and outputs {sorted(outputs)}"
        )
    (in_name, in_detail), (out_name, out_detail) = (
        next(iter(inputs.items())),
        next(iter(outputs.items())),
    )
    in_shape = [int(d) for d in in_detail["shape_signature"]]
    out_shape = [int(d) for d in out_detail["shape_signature"]]
    problems = []
    if np.dtype(in_detail["dtype"]) != np.float32:
        problems.append(f"input {in_name!r} is {np.dtype(in_detail['dtype'])}, expected float32")
    if len(in_shape) != 2 or in_shape[0] not in (-1, 1) or in_shape[1] != INPUT_WIDTH:
        problems.append(f"input {in_name!r} has shape {in_shape}, expected [-1, {INPUT_WIDTH}]")
    if np.dtype(out_detail["dtype"]) != np.float32:
        problems.append(f"output {out_name!r} is {np.dtype(out_detail['dtype'])}, expected float32")
    if len(out_shape) != 2 or out_shape[0] not in (-1, 1) or out_shape[1] != NUM_CLASSES:
        problems.append(f"output {out_name!r} has shape {out_shape}, expected [-1, {NUM_CLASSES}]")
    if problems:
        raise MobileExportError(f"{artefact}: wrong tensors: " + "; ".join(problems))
    return TFLiteIO(in_name, in_shape, out_name, out_shape)


def run(
    model: bytes, signature: str, io: TFLiteIO, images: np.ndarray, batch_size: int = 1
) -> np.ndarray:
    """Scores for every image, fed ``batch_size`` at a time (the last batch may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if io.input_shape_signature[0] == 1:
        batch_size = 1  # a fixed-batch model cannot be resized
    runner = _interpreter(model).get_signature_runner(signature)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        # Copy: the runner's output may alias interpreter memory that the next call reuses.
        chunks.append(np.array(runner(**{io.input_name: batch})[io.output_name], copy=True))
    scores = np.concatenate(chunks) if chunks else np.zeros((0, NUM_CLASSES), np.float32)
    if scores.shape != (len(images), NUM_CLASSES):
        raise MobileExportError(
            f"TFLite output has shape {list(scores.shape)} for {len(images)} images, "
            f"expected [{len(images)}, {NUM_CLASSES}]"
        )
    return scores


# A .tflite holds its weights: float32 about as many bytes as the SavedModel's variables,
# dynamic-range int8 about a quarter. Far less than that (allowing for extra tracked variables
# such as optimizer slots) means the weights never made it into the file.
_MIN_WEIGHT_FRACTION = {FLOAT32: 0.25, INT8_DYNAMIC: 0.06}


def saved_model_weight_bytes(saved_model_dir: Path) -> int:
    """Bytes of the SavedModel's variable data (variables/variables.data-*)."""
    return sum(p.stat().st_size for p in (saved_model_dir / "variables").glob("variables.data-*"))


def _weights_missing(model_bytes: int, quantization: str, source_weight_bytes: int | None) -> bool:
    if not source_weight_bytes:
        return False
    return model_bytes < _MIN_WEIGHT_FRACTION[quantization] * source_weight_bytes


def compare(
    *,
    artefact: str,
    quantization: str,
    model: bytes,
    io: TFLiteIO,
    scores: np.ndarray,
    reference_scores: np.ndarray,
    labels: np.ndarray,
    thresholds: ParityThresholds,
    batch_size: int,
    seconds: float,
    source_weight_bytes: int | None = None,
) -> TFLiteParity:
    """Figures of one .tflite against the SavedModel, with the reasons it fails (if any).

    ``source_weight_bytes`` (the SavedModel's variables) only serves to explain a failure."""
    n = len(labels)
    finite_rows = np.isfinite(scores).all(axis=1)
    nonfinite = int(n - finite_rows.sum())
    predictions = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), axis=1)
    reference_predictions = np.argmax(reference_scores, axis=1)
    accuracy = float(np.mean(predictions == labels)) if n else 0.0
    reference_accuracy = float(np.mean(reference_predictions == labels)) if n else 0.0
    diff = np.abs(scores.astype(np.float64) - reference_scores.astype(np.float64))
    max_diff = (
        float(np.nanmax(np.where(np.isfinite(diff), diff, np.nan)))
        if finite_rows.any()
        else float("nan")
    )
    differing = int(np.sum((predictions != reference_predictions) | ~finite_rows))
    row_sum_error = (
        float(np.max(np.abs(scores[finite_rows].sum(axis=1) - 1.0)))
        if finite_rows.any()
        else float("nan")
    )
    delta_points = (accuracy - reference_accuracy) * 100.0

    failures: list[str] = []
    if nonfinite:
        failures.append(f"NaN/Inf scores for {nonfinite} of {n} images")
    if finite_rows.any() and row_sum_error > ROW_SUM_TOLERANCE:
        failures.append(
            f"scores are not probabilities: a row sums to 1 {row_sum_error:+.2e} "
            f"(tolerance {ROW_SUM_TOLERANCE:g})"
        )
    if (
        thresholds.max_differing_predictions is not None
        and differing > thresholds.max_differing_predictions
    ):
        failures.append(
            f"{differing} of {n} predictions differ from the SavedModel "
            f"(allowed {thresholds.max_differing_predictions})"
        )
    # The epsilon absorbs float rounding: 1 image in 1,000 is 0.1 points, not 0.10000000000000009.
    if thresholds.max_accuracy_delta_points is not None and not (
        abs(delta_points) <= thresholds.max_accuracy_delta_points + 1e-9
    ):
        failures.append(
            f"accuracy {accuracy * 100:.2f}% vs SavedModel {reference_accuracy * 100:.2f}% "
            f"({delta_points:+.2f} points, allowed +/-{thresholds.max_accuracy_delta_points:g})"
        )
    if failures and _weights_missing(len(model), quantization, source_weight_bytes):
        failures.append(
            f"the .tflite is {len(model):,} bytes but the SavedModel's variables are "
            f"{source_weight_bytes:,} bytes: the converter dropped the weights, and the model "
            "computes with garbage (NaN or random scores). It does so silently when the "
            "SavedModel's module tracks Keras 3 variables (the Keras model, or model.weights); "
            "track the underlying tf.Variables instead: [w.value for w in model.weights]"
        )
    return TFLiteParity(
        artefact=artefact,
        quantization=quantization,
        size_bytes=len(model),
        sha256=hashlib.sha256(model).hexdigest(),
        input_name=io.input_name,
        input_shape_signature=io.input_shape_signature,
        output_name=io.output_name,
        output_shape_signature=io.output_shape_signature,
        images=n,
        batch_size=batch_size,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        accuracy_delta_points=delta_points,
        max_abs_score_diff=max_diff,
        differing_predictions=differing,
        nonfinite_outputs=nonfinite,
        max_row_sum_error=row_sum_error,
        thresholds=thresholds.describe(),
        seconds=round(seconds, 3),
        failures=failures,
    )


def convert_and_check(
    *,
    saved_model_dir: Path,
    signature: str,
    quantization: str,
    artefact: str,
    images: np.ndarray,
    labels: np.ndarray,
    reference_scores: np.ndarray,
    thresholds: ParityThresholds,
    batch_size: int = 1,
) -> tuple[bytes, TFLiteParity]:
    """Convert, check the tensors, run over every image, compare. Raises MobileExportError
    for a model that cannot be run at all; threshold failures are returned in the result."""
    model = convert(saved_model_dir, signature, quantization)
    io = inspect_io(model, signature, artefact)
    started = time.perf_counter()
    scores = run(model, signature, io, images, batch_size)
    seconds = time.perf_counter() - started
    effective_batch = 1 if io.input_shape_signature[0] == 1 else batch_size
    parity = compare(
        artefact=artefact,
        quantization=quantization,
        model=model,
        io=io,
        scores=scores,
        reference_scores=reference_scores,
        labels=labels,
        thresholds=thresholds,
        batch_size=effective_batch,
        seconds=seconds,
        source_weight_bytes=saved_model_weight_bytes(saved_model_dir),
    )
    return model, parity
