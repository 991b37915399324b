"""Plain data of a mobile export: what was checked, the figures, and how they are shown.

Nothing here imports TensorFlow, LiteRT or coremltools, so the report can be read, rendered and
tested on any machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "parity.json"
REPORT_FORMAT = 1


class MobileExportError(RuntimeError):
    """A mobile artefact was refused: the message says which artefact and why."""


@dataclass(frozen=True)
class ParityThresholds:
    """What a .tflite must meet against its SavedModel to be published.

    ``max_differing_predictions`` bounds how many argmax predictions may differ;
    ``max_accuracy_delta_points`` bounds |accuracy(tflite) - accuracy(SavedModel)| in
    percentage points. ``None`` means "not checked".
    """

    max_differing_predictions: int | None = None
    max_accuracy_delta_points: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_differing_predictions is not None:
            if self.max_differing_predictions == 0:
                parts.append("identical predictions")
            else:
                parts.append(f"<= {self.max_differing_predictions} differing predictions")
        if self.max_accuracy_delta_points is not None:
            parts.append(f"accuracy within {self.max_accuracy_delta_points:g} points")
        return ", ".join(parts) or "none"


# The thresholds: float32 must agree exactly on every prediction; dynamic-range int8
# may move accuracy by at most 0.1 points (10 images of the 10,000).
FLOAT32_THRESHOLDS = ParityThresholds(max_differing_predictions=0)
INT8_THRESHOLDS = ParityThresholds(max_accuracy_delta_points=0.1)


@dataclass
class TFLiteParity:
    """One .tflite run over the evaluation images, compared with the SavedModel."""

    artefact: str  # file name inside the mobile version directory
    quantization: str  # "float32" | "dynamic_range_int8"
    size_bytes: int
    sha256: str
    input_name: str
    input_shape_signature: list[int]
    output_name: str
    output_shape_signature: list[int]
    images: int
    batch_size: int
    accuracy: float  # fraction in [0, 1]
    reference_accuracy: float
    accuracy_delta_points: float  # (accuracy - reference_accuracy) * 100
    max_abs_score_diff: float
    differing_predictions: int
    nonfinite_outputs: int  # images whose 10 scores are not all finite
    max_row_sum_error: float  # max |sum(scores) - 1|: the scores must be probabilities
    thresholds: str
    seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class CoreMLSummary:
    """What the converted Core ML spec says (Core ML cannot predict on Linux)."""

    artefact: str
    model_type: str  # "mlProgram" expected
    specification_version: int
    minimum_deployment_target: str
    input_name: str
    input_shape: list[int]
    input_flexible_batch: bool
    input_dtype: str
    outputs: list[dict[str, Any]]  # [{"name", "shape", "dtype"}]
    compute_precision: str  # "fp16" | "fp32" (from the dtypes of the program's ops)
    weight_dtypes: list[str]
    size_bytes: int
    seconds: float
    numerical_parity: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class MobileReport:
    """Everything one `python -m export mobile` run checked, written as parity.json."""

    model_name: str
    version: int
    source_saved_model: str
    signature: str
    dataset: str
    dataset_sha256: dict[str, str]
    images: int
    reference_accuracy: float
    tflite: list[TFLiteParity]
    coreml: CoreMLSummary | None
    versions: dict[str, str]  # tool name -> version
    created_utc: str
    report_format: int = REPORT_FORMAT

    @property
    def failures(self) -> list[str]:
        out = [f"{t.artefact}: {msg}" for t in self.tflite for msg in t.failures]
        if self.coreml is not None:
            out += [f"{self.coreml.artefact}: {msg}" for msg in self.coreml.failures]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = _json_safe(asdict(self))
        data["passed"] = self.passed
        data["failures"] = self.failures
        return data

    def write(self, directory: Path) -> Path:
        path = directory / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path


def render_table(report: MobileReport) -> str:
    """The human summary printed by the command (same figures as parity.json)."""
    lines = [
        f"mobile export of {report.model_name} version {report.version} "
        f"(signature {report.signature}), {report.images:,} images of {report.dataset}",
        f"SavedModel accuracy: {report.reference_accuracy * 100:.2f}%",
        "",
    ]
    header = (
        f"{'artefact':<34} {'size':>9} {'accuracy':>9} {'delta pts':>9} "
        f"{'max |diff|':>10} {'differ':>6} {'NaN':>5}  {'threshold':<30} result"
    )
    lines += [header, "-" * len(header)]
    for t in report.tflite:
        lines.append(
            f"{t.artefact:<34} {_size(t.size_bytes):>9} {t.accuracy * 100:>8.2f}% "
            f"{t.accuracy_delta_points:>+9.2f} {t.max_abs_score_diff:>10.2e} "
            f"{t.differing_predictions:>6} {t.nonfinite_outputs:>5}  {t.thresholds:<30} "
            f"{'PASS' if t.passed else 'FAIL'}"
        )
    if report.coreml is not None:
        c = report.coreml
        shape = "x".join(str(d) for d in c.input_shape) + (
            " (flexible batch)" if c.input_flexible_batch else ""
        )
        outs = ", ".join(
            f"{o['name']} {'x'.join(str(d) for d in o['shape'])} {o['dtype']}" for o in c.outputs
        )
        lines += [
            "",
            f"{c.artefact}: {c.model_type}, spec v{c.specification_version}, "
            f"{c.minimum_deployment_target}+, {_size(c.size_bytes)}, compute {c.compute_precision}, "
            f"weights {'/'.join(c.weight_dtypes) or '-'}",
            f"  input {c.input_name} {shape} {c.input_dtype}; outputs {outs}; "
            f"spec check {'PASS' if c.passed else 'FAIL'}",
            f"  numerical parity: {c.numerical_parity}",
        ]
    failures = report.failures
    lines += ["", "result: " + ("PASS" if not failures else "REFUSED")]
    lines += [f"  - {msg}" for msg in failures]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN and Inf are not JSON: a figure that could not be computed is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.1f} KiB"
