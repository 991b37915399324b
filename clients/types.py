"""Plain data the clients return; the same for both transports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """Which model to call: a name, at most one of version/label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""  # empty: the server's default, "serving_default"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model name is required")
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")
        if self.version is not None and (isinstance(self.version, bool) or self.version < 0):
            raise ValueError(f"version must be a non-negative integer, got {self.version!r}")

    def with_overrides(
        self,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
    ) -> ModelSpec:
        """A copy with a version or label (each replaces the other) and/or a signature."""
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if version is None and label is None:
            new_version, new_label = self.version, self.label
        else:
            new_version, new_label = version, label
        return ModelSpec(
            self.name,
            new_version,
            new_label,
            self.signature if signature is None else signature,
        )


@dataclass
class PredictResult:
    outputs: dict[str, np.ndarray]
    model_name: str
    version: int | None  # None over REST, which does not report it
    signature_name: str

    def __getitem__(self, key: str) -> np.ndarray:
        return self.outputs[key]


@dataclass
class DigitPredictions:
    classes: np.ndarray  # int64 [n]
    probabilities: np.ndarray  # float32 [n, 10]
    version: int | None = None

    @property
    def confidence(self) -> np.ndarray:
        """The probability of each predicted class, [n]."""
        return self.probabilities[np.arange(len(self.classes)), self.classes]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # "DT_FLOAT", ...
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


@dataclass(frozen=True)
class Signature:
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclass
class ModelMetadata:
    model_name: str
    version: int
    signatures: dict[str, Signature] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: str = "OK"
    error_message: str = ""


# One example's (label, score) pairs; label is "" when the model has no classes output.
Classifications = list[tuple[str, float]]
