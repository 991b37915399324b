"""The comparison and its thresholds, on hand-made score arrays (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.mobile.report import (
    FLOAT32_THRESHOLDS,
    INT8_THRESHOLDS,
    CoreMLSummary,
    MobileReport,
    render_table,
)
from export.mobile.tflite import TFLiteIO, compare

IO = TFLiteIO("images", [-1, 784], "scores", [-1, 10])


def _one_hot(classes: np.ndarray, confidence: float = 0.91) -> np.ndarray:
    scores = np.full((len(classes), 10), (1 - confidence) / 9, np.float32)
    scores[np.arange(len(classes)), classes] = confidence
    return scores


def _compare(
    scores: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    thresholds=FLOAT32_THRESHOLDS,
    source_weight_bytes: int | None = None,
):
    return compare(
        source_weight_bytes=source_weight_bytes,
        artefact="m.tflite",
        quantization="float32",
        model=b"tflite",
        io=IO,
        scores=scores,
        reference_scores=reference,
        labels=labels,
        thresholds=thresholds,
        batch_size=1,
        seconds=0.1,
    )


@pytest.fixture
def labels() -> np.ndarray:
    return np.arange(1000) % 10


def test_identical_scores_pass(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    result = _compare(reference.copy(), reference, labels)
    assert result.passed and result.failures == []
    assert (result.accuracy, result.differing_predictions, result.max_abs_score_diff) == (
        1.0,
        0,
        0.0,
    )


def test_one_differing_prediction_fails_float32(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    scores = reference.copy()
    scores[7] = _one_hot(np.array([3]))[0]  # label 7 -> predicted 3
    result = _compare(scores, reference, labels)
    assert result.differing_predictions == 1
    assert result.accuracy_delta_points == pytest.approx(-0.1)
    assert result.failures == ["1 of 1000 predictions differ from the SavedModel (allowed 0)"]


def test_int8_threshold_is_a_tenth_of_a_point(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    one_off = reference.copy()
    one_off[7] = _one_hot(np.array([3]))[0]  # -0.1 points: allowed
    assert _compare(one_off, reference, labels, INT8_THRESHOLDS).passed
    two_off = one_off.copy()
    two_off[8] = _one_hot(np.array([3]))[0]  # -0.2 points: refused
    result = _compare(two_off, reference, labels, INT8_THRESHOLDS)
    assert result.failures == [
        "accuracy 99.80% vs SavedModel 100.00% (-0.20 points, allowed +/-0.1)"
    ]


def test_nan_rows_fail_and_count_as_differing(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    scores = reference.copy()
    scores[:3] = np.nan
    result = _compare(scores, reference, labels, INT8_THRESHOLDS)
    assert result.nonfinite_outputs == 3 and result.differing_predictions == 3
    assert result.failures[0].startswith("NaN/Inf scores for 3 of 1000 images")
    assert np.isfinite(result.max_abs_score_diff)  # computed over the finite rows


def test_scores_that_are_not_probabilities_fail(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    result = _compare(reference * 2, reference, labels)
    assert any(f.startswith("scores are not probabilities") for f in result.failures)


def test_a_failing_tflite_far_smaller_than_its_weights_is_explained(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    broken = reference.copy()
    broken[:5] = np.nan
    result = _compare(broken, reference, labels, source_weight_bytes=13_000_000)  # model: 6 bytes
    assert result.failures[-1].startswith(
        "the .tflite is 6 bytes but the SavedModel's variables are 13,000,000 bytes: "
        "the converter dropped the weights"
    )
    # Only an explanation: a small file that agrees with the SavedModel is not refused.
    assert _compare(reference.copy(), reference, labels, source_weight_bytes=13_000_000).passed


def _report(tflite) -> MobileReport:
    coreml = CoreMLSummary(
        artefact="m.mlpackage",
        model_type="mlProgram",
        specification_version=6,
        minimum_deployment_target="iOS15",
        input_name="images",
        input_shape=[1, 784],
        input_flexible_batch=False,
        input_dtype="FLOAT32",
        outputs=[{"name": "scores", "shape": [1, 10], "dtype": "FLOAT32"}],
        compute_precision="fp16",
        weight_dtypes=["FLOAT16"],
        size_bytes=1 << 20,
        seconds=1.0,
        numerical_parity="not run: needs macOS",
    )
    return MobileReport(
        model_name="m",
        version=3,
        source_saved_model="/r/m/3",
        signature="predict_images",
        dataset="d",
        dataset_sha256={},
        images=1000,
        reference_accuracy=1.0,
        tflite=tflite,
        coreml=coreml,
        versions={},
        created_utc="2026-01-01T00:00:00+00:00",
    )


def test_report_table_and_json_of_a_refusal(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    scores = reference.copy()
    scores[0] = np.nan
    report = _report([_compare(scores, reference, labels)])
    table = render_table(report)
    assert "m.tflite" in table and "FAIL" in table and "result: REFUSED" in table
    assert "numerical parity: not run: needs macOS" in table
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON: no NaN
    assert data["passed"] is False
    assert data["failures"][0].startswith("m.tflite: NaN/Inf scores for 1 of 1000 images")


def test_report_of_a_pass(labels: np.ndarray) -> None:
    reference = _one_hot(labels)
    report = _report([_compare(reference.copy(), reference, labels)])
    assert report.passed and render_table(report).endswith("result: PASS")
