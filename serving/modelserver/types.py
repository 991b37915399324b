"""Plain data that crosses the seam between the data plane and its transports.

REST (``rest/``) and gRPC (``grpc_api.py``) translate wire formats into these types and call
the data plane through the ``DataPlane`` protocol; neither knows how models are loaded or run.
Tensors cross as numpy arrays; string tensors are numpy object arrays of ``bytes``. Version
rows are the clients' ``VersionStatus`` (one vocabulary: state and code *names*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clients.types import VersionStatus

__all__ = [
    "CLASSIFY_METHOD",
    "DEFAULT_SIGNATURE",
    "PREDICT_METHOD",
    "REGRESS_METHOD",
    "ClassifyResult",
    "DataPlane",
    "InferenceTask",
    "ModelMetadata",
    "ModelRef",
    "PredictResult",
    "RegressResult",
    "SignatureInfo",
    "TensorSpec",
    "VersionStatus",
]

DEFAULT_SIGNATURE = "serving_default"

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class ModelRef:
    """What a request names: a model, at most one of version/label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""  # empty means DEFAULT_SIGNATURE, as in TF Serving

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature, as in the SignatureDef's TensorInfo."""

    name: str  # graph tensor name, e.g. "serving_default_images:0"
    dtype: int  # tensorflow.DataType enum value (DT_FLOAT = 1, ...)
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


@dataclass
class PredictResult:
    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass
class ClassifyResult:
    model_name: str
    version: int
    signature_name: str
    # One list per example of (label, score) pairs; label is b"" where the model has no classes
    # output, score is None where it has no scores output (TF Serving's ClassificationResult).
    classifications: list[list[tuple[bytes, float | None]]]


@dataclass
class RegressResult:
    model_name: str
    version: int
    signature_name: str
    values: list[float]


@dataclass(frozen=True)
class InferenceTask:
    """One task of a MultiInference request: which signature, run as which method."""

    ref: ModelRef
    method_name: str


@dataclass
class ModelMetadata:
    model_name: str
    version: int
    # tensorflow_serving.apis.get_model_metadata_pb2.SignatureDefMap, ready to pack into Any
    # (gRPC) or to print as JSON (REST).
    signature_def_map: Any
    signatures: Mapping[str, SignatureInfo] = field(default_factory=dict)


class DataPlane(Protocol):
    """Protocol-agnostic operations; every failure is an ``errors.ServingError``."""

    def resolve_signature(self, ref: ModelRef) -> tuple[int, SignatureInfo]:
        """The version a request would hit and its signature (REST needs the input dtypes)."""

    async def predict(
        self,
        ref: ModelRef,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> PredictResult: ...

    async def classify(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> ClassifyResult: ...

    async def regress(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> RegressResult: ...

    async def multi_inference(
        self,
        tasks: Sequence[InferenceTask],
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> list[ClassifyResult | RegressResult]: ...

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]: ...

    def model_metadata(self, ref: ModelRef) -> ModelMetadata: ...

    async def reload_config(self, config: Any) -> None:
        """Apply a ModelServerConfig (HandleReloadConfigRequest); returns once it is in force."""
