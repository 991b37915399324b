"""The one place that does the work: resolve a request's servable, check it, run it.

Implements ``types.DataPlane`` for REST and gRPC; every failure is an ``errors.ServingError``
with TF Serving's code and message. Inference runs off the event loop: on the batching
scheduler when ``--enable_batching`` is on, else on a thread pool. Model names and labels are
only ever dictionary keys here, never parts of a path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from serving.modelserver import errors
from serving.modelserver.batching import BatchScheduler
from serving.modelserver.manager import ModelManager
from serving.modelserver.servable import (
    Servable,
    check_classify_signature,
    check_regress_signature,
    example_tensor,
    to_classifications,
    to_regressions,
)
from serving.modelserver.types import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ClassifyResult,
    ModelMetadata,
    ModelRef,
    PredictResult,
    RegressResult,
    SignatureInfo,
    VersionStatus,
)


@dataclass
class InferenceTask:
    """One task of a MultiInference request."""

    ref: ModelRef
    method_name: str


class ServingDataPlane:
    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        *,
        batch_scheduler: BatchScheduler | None = None,
        metrics: Any = None,
        enable_signature_method_name_check: bool = False,
    ) -> None:
        self.manager = manager
        self.executor = executor
        self.batch_scheduler = batch_scheduler
        self.metrics = metrics
        self.method_check = enable_signature_method_name_check

    # -- resolution ------------------------------------------------------------------------
    def servable(self, ref: ModelRef) -> Servable:
        if ref.label is not None and ref.version is not None:
            raise errors.InvalidArgument("ModelSpec has both version and version_label set.")
        if ref.label is not None:
            return self.manager.specific(ref.name, self.manager.label_version(ref.name, ref.label))
        if ref.version is not None:
            return self.manager.specific(ref.name, ref.version)
        return self.manager.latest(ref.name)

    def resolve_signature(self, ref: ModelRef) -> tuple[int, SignatureInfo]:
        """For REST: the version a request would hit and its signature.

        A missing signature raises REST's INVALID_ARGUMENT
        ``Serving signature name: "<sig>" not found in signature def``."""
        servable = self.servable(ref)
        sig = servable.signatures.get(ref.signature)
        if sig is None:
            raise errors.InvalidArgument(
                f'Serving signature name: "{ref.signature}" not found in signature def'
            )
        return servable.version, sig

    # -- running ---------------------------------------------------------------------------
    async def _run(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        timeout_s: float | None,
        api: str,
    ) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        if self.batch_scheduler is not None:
            queue = servable.batch_queues.get(signature)
            if queue is None:
                queue = self.batch_scheduler.queue(partial(servable.run, signature))
                servable.batch_queues[signature] = queue
            work = queue.submit(inputs)
        else:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self.executor, servable.run, signature, dict(inputs))
        if timeout_s is not None and timeout_s > 0:
            # asyncio.timeout cancels this task at its await; unlike wait_for it needs no
            # extra task per request.
            try:
                async with asyncio.timeout(timeout_s):
                    outputs = await work
            except TimeoutError:
                raise errors.DeadlineExceeded("Deadline Exceeded") from None
        else:
            outputs = await work
        if self.metrics is not None:
            self.metrics.observe_runtime_latency(servable.model_name, api, time.perf_counter() - start)
        return outputs

    def _signature(self, servable: Servable, ref: ModelRef) -> SignatureInfo:
        sig = servable.signatures.get(ref.signature)
        if sig is None:
            raise errors.FailedPrecondition(f'Serving signature key "{ref.signature}" not found.')
        return sig

    async def predict(
        self,
        ref: ModelRef,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> PredictResult:
        servable = self.servable(ref)
        sig = self._signature(servable, ref)
        if self.method_check and sig.method_name not in (
            PREDICT_METHOD,
            CLASSIFY_METHOD,
            REGRESS_METHOD,
        ):
            raise errors.FailedPrecondition(
                "Expected prediction signature method_name to be one of "
                f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                f"Was: {sig.method_name}"
            )
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        servable.check_inputs(sig.name, inputs)
        wanted = _check_output_filter(sig, output_filter)
        rows = _batch_rows(inputs)
        if self.metrics is not None and rows is not None:
            self.metrics.record_example_count(servable.model_name, rows)
        outputs = None
        if rows == 0:
            outputs = servable.empty_outputs(sig.name)
        if outputs is None:
            outputs = await self._run(servable, sig.name, inputs, timeout_s, "Predict")
        if wanted:
            outputs = {k: outputs[k] for k in wanted}
        return PredictResult(servable.model_name, servable.version, sig.name, outputs)

    async def _examples_call(
        self,
        servable: Servable,
        sig: SignatureInfo,
        examples: Sequence[bytes],
        context: bytes | None,
        timeout_s: float | None,
        api: str,
    ) -> dict[str, np.ndarray]:
        tensor = example_tensor(examples, context)
        if self.metrics is not None:
            self.metrics.record_example_count(servable.model_name, len(examples))
        alias = next(iter(sig.inputs))
        return await self._run(servable, sig.name, {alias: tensor}, timeout_s, api)

    def _classify_signature(self, servable: Servable, ref: ModelRef) -> SignatureInfo:
        sig = servable.signatures.get(ref.signature)
        if sig is None:
            raise errors.InvalidArgument(f"No signature was found with the name: {ref.signature}")
        if self.method_check and sig.method_name != CLASSIFY_METHOD:
            raise errors.InvalidArgument(
                f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                f"Was: {sig.method_name}"
            )
        check_classify_signature(sig)
        return sig

    def _regress_signature(self, servable: Servable, ref: ModelRef) -> SignatureInfo:
        sig = servable.signatures.get(ref.signature)
        if sig is None:
            raise errors.InvalidArgument(f"No signature was found with the name: {ref.signature}")
        if self.method_check and sig.method_name != REGRESS_METHOD:
            raise errors.InvalidArgument(
                f"Expected regression signature method_name to be {REGRESS_METHOD}. "
                f"Was: {sig.method_name}"
            )
        check_regress_signature(sig)
        return sig

    async def classify(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> ClassifyResult:
        servable = self.servable(ref)
        sig = self._classify_signature(servable, ref)
        out = await self._examples_call(servable, sig, examples, context, timeout_s, "Classify")
        return ClassifyResult(
            servable.model_name, servable.version, sig.name, to_classifications(out, len(examples))
        )

    async def regress(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> RegressResult:
        servable = self.servable(ref)
        sig = self._regress_signature(servable, ref)
        out = await self._examples_call(servable, sig, examples, context, timeout_s, "Regress")
        return RegressResult(
            servable.model_name, servable.version, sig.name, to_regressions(out, len(examples))
        )

    async def multi_inference(
        self,
        tasks: Sequence[InferenceTask],
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> list[ClassifyResult | RegressResult]:
        """multi_inference.cc: one model, distinct signatures, classify/regress only; the
        version is resolved from the first task."""
        if not tasks:
            raise errors.InvalidArgument("Expected at least one task")
        name = tasks[0].ref.name
        seen: set[str] = set()
        for task in tasks:
            if task.ref.name != name:
                raise errors.InvalidArgument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name"
                )
            if task.ref.signature in seen:
                raise errors.InvalidArgument(f"Duplicate evaluation of signature: {task.ref.signature}")
            seen.add(task.ref.signature)
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise errors.Unimplemented(f"Unsupported signature method_name: {task.method_name}")
        servable = self.servable(tasks[0].ref)
        results: list[ClassifyResult | RegressResult] = []
        for task in tasks:
            if task.method_name == CLASSIFY_METHOD:
                sig = self._classify_signature(servable, task.ref)
                out = await self._examples_call(servable, sig, examples, context, timeout_s, "Classify")
                results.append(
                    ClassifyResult(
                        name, servable.version, sig.name, to_classifications(out, len(examples))
                    )
                )
            else:
                sig = self._regress_signature(servable, task.ref)
                out = await self._examples_call(servable, sig, examples, context, timeout_s, "Regress")
                results.append(
                    RegressResult(name, servable.version, sig.name, to_regressions(out, len(examples)))
                )
        return results

    # -- status / metadata -----------------------------------------------------------------
    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        # TF Serving ignores the label here (GetModelStatusWithModelSpec only reads version).
        return self.manager.model_status(name, version)

    def model_metadata(self, ref: ModelRef) -> ModelMetadata:
        servable = self.servable(ref)
        return ModelMetadata(
            model_name=servable.model_name,
            version=servable.version,
            signature_def_map=servable.signature_def_map,
            signatures=servable.signatures,
        )


def _check_output_filter(sig: SignatureInfo, output_filter: Sequence[str]) -> list[str]:
    wanted: list[str] = []
    for alias in output_filter:
        if alias not in sig.outputs:
            raise errors.InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(sig.outputs))}}}."
            )
        if alias in wanted:
            raise errors.InvalidArgument(f"duplicate output tensor alias: {alias}")
        wanted.append(alias)
    return wanted


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The common dim-0 size of the inputs, or None when there is none."""
    sizes = {a.shape[0] for a in inputs.values() if a.ndim >= 1}
    if len(sizes) == 1 and all(a.ndim >= 1 for a in inputs.values()):
        return sizes.pop()
    return None
