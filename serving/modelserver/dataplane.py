"""The one place that does the work: resolve a request's servable, check it, run it.

Implements ``types.DataPlane`` for REST and gRPC; every failure is an ``errors.ServingError``
with TF Serving's code and message. Lookups, checks and conversions are ``inference``'s (the
same path warmup replays through); this module adds what a live request needs: resolving the
version (labels, latest), running off the event loop (on the batching scheduler when
``--enable_batching`` is on, else on a thread pool) under a deadline, and metrics. Model names
and labels are only ever dictionary keys here, never parts of a path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

import numpy as np

from serving.modelserver import errors, inference
from serving.modelserver.batching import BatchScheduler
from serving.modelserver.inference import Plan
from serving.modelserver.manager import ModelManager
from serving.modelserver.servable import Servable
from serving.modelserver.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    ClassifyResult,
    InferenceTask,
    ModelMetadata,
    ModelRef,
    PredictResult,
    RegressResult,
    SignatureInfo,
    VersionStatus,
)

__all__ = ["InferenceTask", "ServingDataPlane"]

log = logging.getLogger("serving.modelserver")


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
    async def _execute(self, plan: Plan, timeout_s: float | None) -> Any:
        if self.metrics is not None and plan.rows is not None:
            self.metrics.record_example_count(plan.servable.model_name, plan.rows)
        outputs = plan.ready
        if outputs is None:
            outputs = await self._run(plan, timeout_s)
        return plan.finish(outputs)

    async def _run(self, plan: Plan, timeout_s: float | None) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        servable, signature = plan.servable, plan.signature
        if self.batch_scheduler is not None:
            queue = servable.batch_queues.get(signature)
            if queue is None:
                # Tasks of one batch may filter different outputs: a batch fetches them all.
                queue = self.batch_scheduler.queue(partial(servable.run, signature))
                servable.batch_queues[signature] = queue
            work = queue.submit(plan.inputs)
        else:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self.executor, servable.run, signature, plan.inputs, plan.fetch
            )
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
            self.metrics.observe_runtime_latency(
                servable.model_name, plan.api, time.perf_counter() - start
            )
        return outputs

    async def predict(
        self,
        ref: ModelRef,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> PredictResult:
        plan = inference.plan_predict(
            self.servable(ref), ref, inputs, output_filter, method_check=self.method_check
        )
        return await self._execute(plan, timeout_s)

    async def classify(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> ClassifyResult:
        return await self._examples(CLASSIFY_METHOD, ref, examples, context, timeout_s)

    async def regress(
        self,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> RegressResult:
        return await self._examples(REGRESS_METHOD, ref, examples, context, timeout_s)

    async def _examples(
        self,
        method: str,
        ref: ModelRef,
        examples: Sequence[bytes],
        context: bytes | None,
        timeout_s: float | None,
    ) -> Any:
        servable = self.servable(ref)
        plan = inference.plan_examples(
            servable, ref, method, examples, context, method_check=self.method_check
        )
        return await self._execute(plan, timeout_s)

    async def multi_inference(
        self,
        tasks: Sequence[InferenceTask],
        examples: Sequence[bytes],
        context: bytes | None = None,
        timeout_s: float | None = None,
    ) -> list[ClassifyResult | RegressResult]:
        """multi_inference.cc: the version is resolved from the first task."""
        inference.check_tasks(tasks)
        plans = inference.plan_multi_inference(
            self.servable(tasks[0].ref), tasks, examples, context, method_check=self.method_check
        )
        return [await self._execute(plan, timeout_s) for plan in plans]

    # -- configuration ---------------------------------------------------------------------
    async def reload_config(self, config: Any) -> None:
        try:
            await self.manager.apply_config(config)
        except errors.ServingError as exc:
            log.error("ReloadConfig failed: %s", exc.message)
            raise

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
