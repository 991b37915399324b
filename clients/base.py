"""One interface for both transports: ``PredictionClient``.

The transports (``GrpcClient``, ``RestClient``) implement a handful of ``_do_*`` methods that
take a resolved ``ModelSpec`` and the call's deadline (``time.monotonic()`` seconds); this class owns what they share: resolving the
model spec from defaults and per-call overrides, the overall deadline of a call, bounded retries
with exponential backoff (only for ``Unavailable``: connection failures, gRPC UNAVAILABLE,
HTTP 503), a small per-model signature cache, and the MNIST helper ``predict_digits``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from clients.errors import DeadlineExceeded, InvalidInput, Unavailable, Unimplemented
from clients.types import (
    Classifications,
    DigitPredictions,
    ModelMetadata,
    ModelSpec,
    PredictResult,
    Signature,
    VersionStatus,
)

T = TypeVar("T")
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, inside the call's deadline."""

    max_attempts: int = 4  # total tries, the first included; 1 disables retries
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +-20% so that many clients do not retry in lockstep

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, retry_number: int) -> float:
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry_number)
        return base * (1.0 + self.jitter * (2.0 * random.random() - 1.0))


NO_RETRY = RetryPolicy(max_attempts=1)


def _as_spec(model: str | ModelSpec | None) -> ModelSpec | None:
    if model is None or isinstance(model, ModelSpec):
        return model
    return ModelSpec(model)


class PredictionClient(ABC):
    """Predict / classify / regress / status / metadata / reload against TF Serving.

    ``model`` is the default model (a name or a ``ModelSpec``); every method also takes
    ``model``, ``version`` or ``label``, and ``signature`` to override it per call, and
    ``timeout_s``: the deadline of the whole call, retries included.
    """

    transport = ""

    def __init__(
        self,
        model: str | ModelSpec | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.default_spec = _as_spec(model)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._signatures: dict[ModelSpec, Signature] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ transport hooks
    @abstractmethod
    def _do_predict(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        output_filter: Sequence[str],
        deadline: float,
    ) -> PredictResult: ...

    @abstractmethod
    def _do_classify(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[Classifications]: ...

    @abstractmethod
    def _do_regress(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[float]: ...

    @abstractmethod
    def _do_status(self, spec: ModelSpec, deadline: float) -> list[VersionStatus]: ...

    @abstractmethod
    def _do_metadata(self, spec: ModelSpec, deadline: float) -> ModelMetadata: ...

    def _do_reload_config(self, config: Any, deadline: float) -> None:
        raise Unimplemented(
            f"reload_config is not available over {self.transport}; TF Serving offers it "
            "only on gRPC (ModelService/HandleReloadConfigRequest)",
            code="UNIMPLEMENTED",
            transport=self.transport,
        )

    def close(self) -> None:  # noqa: B027 - a no-op unless the transport holds connections
        """Release connections; the client is unusable afterwards."""

    # ------------------------------------------------------------------ plumbing
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spec(
        self,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
    ) -> ModelSpec:
        """The effective ModelSpec of a call: defaults, then per-call overrides."""
        base = _as_spec(model) or self.default_spec
        if base is None:
            raise ValueError("no model given: pass model=... here or to the client")
        return base.with_overrides(version=version, label=label, signature=signature)

    def _time_left(self, deadline: float) -> float:
        """Seconds until ``deadline``; DeadlineExceeded when none are left."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(
                "the call's deadline passed", code="DEADLINE_EXCEEDED", transport=self.transport
            )
        return left

    def _deadline(self, timeout_s: float | None) -> float:
        budget = self.timeout_s if timeout_s is None else timeout_s
        if budget is None or budget <= 0:
            raise ValueError("every call needs a positive deadline (timeout_s)")
        return time.monotonic() + budget

    def _call(
        self, fn: Callable[[float], T], timeout_s: float | None, deadline: float | None = None
    ) -> T:
        """Run ``fn(deadline)`` under one deadline, retrying only Unavailable."""
        if deadline is None:
            deadline = self._deadline(timeout_s)
        retry = 0
        while True:
            self._time_left(deadline)
            try:
                return fn(deadline)
            except Unavailable:
                if retry + 1 >= self.retry.max_attempts:
                    raise
                pause = self.retry.backoff(retry)
                if time.monotonic() + pause >= deadline:
                    raise
                retry += 1
                time.sleep(pause)

    # ------------------------------------------------------------------ public API
    def predict(
        self,
        inputs: Mapping[str, Any] | Any,
        *,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> PredictResult:
        """Run a predict signature. ``inputs`` maps input names to arrays; a single array is
        allowed for single-input signatures. Outputs come back as numpy arrays by name."""
        spec = self.spec(model, version, label, signature)
        if isinstance(inputs, Mapping):
            arrays: Mapping[str, np.ndarray] | np.ndarray = {
                str(k): _as_array(v) for k, v in inputs.items()
            }
        else:
            arrays = _as_array(inputs)
        return self._call(
            lambda dl: self._do_predict(spec, arrays, tuple(output_filter), dl), timeout_s
        )

    def classify(
        self,
        examples: Iterable[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> list[Classifications]:
        """Classify tf.Examples given as ``{feature: value(s)}`` dicts (str/bytes -> bytes_list,
        int/bool -> int64_list, float -> float_list). One list of (label, score) per example."""
        spec = self.spec(model, version, label, signature)
        batch = list(examples)
        return self._call(lambda dl: self._do_classify(spec, batch, context, dl), timeout_s)

    def regress(
        self,
        examples: Iterable[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> list[float]:
        spec = self.spec(model, version, label, signature)
        batch = list(examples)
        return self._call(lambda dl: self._do_regress(spec, batch, context, dl), timeout_s)

    def model_status(
        self,
        *,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> list[VersionStatus]:
        """Every version the server knows of (newest first), or the one asked for."""
        spec = self.spec(model, version, label)
        return self._call(lambda dl: self._do_status(spec, dl), timeout_s)

    def model_metadata(
        self,
        *,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> ModelMetadata:
        """The model's signatures (inputs/outputs with dtypes and shapes)."""
        spec = self.spec(model, version, label)
        return self._call(lambda dl: self._do_metadata(spec, dl), timeout_s)

    def reload_config(self, config: Any, *, timeout_s: float | None = None) -> None:
        """Replace the server's model config (gRPC only). ``config``: a ModelServerConfig
        message (ours or TF Serving's) or its text form."""
        return self._call(lambda dl: self._do_reload_config(config, dl), timeout_s)

    def signature(
        self,
        *,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> Signature:
        """One signature of the model, from metadata, cached per ModelSpec."""
        spec = self.spec(model, version, label, signature)
        return self._signature(spec, timeout_s)

    def _signature(
        self, spec: ModelSpec, timeout_s: float | None = None, deadline: float | None = None
    ) -> Signature:
        with self._lock:
            cached = self._signatures.get(spec)
        if cached is not None:
            return cached
        meta_spec = ModelSpec(spec.name, spec.version, spec.label)
        meta = self._call(lambda dl: self._do_metadata(meta_spec, dl), timeout_s, deadline)
        name = spec.signature or DEFAULT_SIGNATURE
        sig = meta.signatures.get(name)
        if sig is None:
            raise InvalidInput(
                f'signature "{name}" not found; the model has {sorted(meta.signatures)}',
                code="INVALID_ARGUMENT",
                transport=self.transport,
            )
        with self._lock:
            self._signatures[spec] = sig
        return sig

    def clear_cache(self) -> None:
        with self._lock:
            self._signatures.clear()

    def predict_digits(
        self,
        images: Any,
        *,
        model: str | ModelSpec | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> DigitPredictions:
        """Classify MNIST-like digits: ``images`` is [n,28,28] / [n,784] / [28,28] floats in
        [0, 1] (uint8 is scaled by 1/255), white on black, or a list of image files."""
        spec = self.spec(model, version, label, signature)
        batch = _digit_batch(images)
        deadline = self._deadline(timeout_s)  # one deadline for the metadata and the predict
        sig = self._signature(spec, deadline=deadline)
        input_name = _pick_input(sig)
        in_shape = sig.inputs[input_name].shape
        if in_shape is not None and len(in_shape) == 3:
            batch = batch.reshape(-1, 28, 28)
        result = self.predict({input_name: batch}, model=spec, timeout_s=self._time_left(deadline))
        probs, classes = _digit_outputs(result.outputs, len(batch))
        return DigitPredictions(classes=classes, probabilities=probs, version=result.version)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bytes, str)):
        return np.array(value, dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":  # lists of bytes/str: keep them as Python objects
        out = np.empty(arr.shape, dtype=object)
        out[...] = value
        return out
    return arr


def _digit_batch(images: Any) -> np.ndarray:
    if isinstance(images, (str, os.PathLike)) or (
        isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike))
    ):
        from clients.images import load_images

        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        return load_images(paths).reshape(-1, 784)
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32, copy=False)
    if arr.shape in ((28, 28), (784,)):
        arr = arr[None]
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        return arr.reshape(-1, 784)
    if arr.ndim == 2 and arr.shape[1] == 784:
        return arr
    raise ValueError(f"digits must be [n,28,28] or [n,784], got shape {list(arr.shape)}")


def _pick_input(sig: Signature) -> str:
    if "images" in sig.inputs:
        return "images"
    if len(sig.inputs) == 1:
        return next(iter(sig.inputs))
    raise ValueError(f"cannot tell which input takes the images: {sorted(sig.inputs)}")


def _digit_outputs(outputs: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    probs = None
    for key in ("scores", "probabilities", "probs"):
        if key in outputs:
            probs = outputs[key]
            break
    if probs is None:
        candidates = [v for v in outputs.values() if v.ndim == 2 and v.shape[-1] == 10]
        if len(candidates) != 1:
            raise ValueError(f"cannot find the [n,10] scores among outputs {sorted(outputs)}")
        probs = candidates[0]
    probs = np.asarray(probs, dtype=np.float32).reshape(n, -1)
    # A model that returns logits still gets probabilities out of this helper.
    if probs.size and (probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)):
        shifted = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    classes = outputs.get("classes")
    if classes is not None and np.asarray(classes).dtype.kind in "iu":
        classes = np.asarray(classes, dtype=np.int64).reshape(n)
    else:
        classes = probs.argmax(axis=1).astype(np.int64)
    return probs, classes
