"""Dynamic batching: concurrent calls to one signature merged into one TensorFlow call.

The shape follows TF's SharedBatchScheduler + BatchingSession, re-done on asyncio:

* one ``BatchScheduler`` per server (the shared scheduler): it owns ``num_batch_threads``
  slots and the executor that runs merged batches;
* one ``BatchQueue`` per (model version, signature): tasks (one request each) join the open
  batch while it has room (``max_batch_size`` rows); a batch is processed when a slot is free
  and it is full, or ``batch_timeout_micros`` after it opened (0: at once). While every slot
  is busy, tasks pile up into bigger batches, which is where the throughput comes from;
* at most ``max_enqueued_batches`` batches wait per queue; one more -> UNAVAILABLE;
* a task bigger than ``max_batch_size`` -> INVALID_ARGUMENT (unless large-batch splitting);
* ``allowed_batch_sizes``: the merged batch is padded up to the next allowed size by repeating
  the first row of the last task; padding rows are dropped from the outputs.

Tasks whose non-batch dimensions differ are put in separate batches instead of failing each
other (TF fails the batch); with ``pad_variable_length_inputs`` they share one batch, padded with
each tensor's first element as TF does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.modelserver import errors
from serving.modelserver.tf_feed import aligned_empty

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class BatchingOptions:
    """BatchingParameters with TF's defaults for omitted fields (shared_batch_scheduler.h)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: same as max_batch_size

    def validate(self) -> None:
        if self.max_batch_size <= 0:
            raise errors.InvalidArgument("max_batch_size must be positive")
        if self.num_batch_threads <= 0:
            raise errors.InvalidArgument("num_batch_threads must be positive")
        if self.max_enqueued_batches <= 0:
            raise errors.InvalidArgument("max_enqueued_batches must be positive")
        if self.batch_timeout_micros < 0:
            raise errors.InvalidArgument("batch_timeout_micros must be non-negative")
        sizes = self.allowed_batch_sizes
        if sizes:
            for prev, cur in zip(sizes, sizes[1:], strict=False):
                if cur <= prev:
                    raise errors.InvalidArgument(
                        "allowed_batch_sizes entries must be monotonically increasing"
                    )
            if sizes[0] <= 0:
                raise errors.InvalidArgument("allowed_batch_sizes entries must be positive")
            limit = self.execution_limit
            if sizes[-1] != limit:
                raise errors.InvalidArgument(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last "
                    f"entry was {sizes[-1]}; expected {limit}"
                )

    @property
    def execution_limit(self) -> int:
        """Rows in one merged batch."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size > 0:
            return min(self.max_execution_batch_size, self.max_batch_size)
        return self.max_batch_size


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: asyncio.Future
    enqueued_at: float


@dataclass
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened_at: float = 0.0
    closed: bool = False
    shape_key: tuple | None = None


class BatchScheduler:
    """Shared by every queue of a server: the batch threads and their executor."""

    def __init__(self, options: BatchingOptions, executor: Executor, metrics: Any = None):
        options.validate()
        self.options = options
        self.executor = executor
        self.metrics = metrics
        self._free = options.num_batch_threads
        self._waiting: deque[BatchQueue] = deque()

    def queue(self, run_fn: RunFn, name: str = "batching_session") -> BatchQueue:
        return BatchQueue(self, run_fn, name)

    # Slots are only touched on the event loop thread, so no lock is needed.
    def _try_acquire(self, queue: BatchQueue) -> bool:
        if self._free > 0:
            self._free -= 1
            return True
        if queue not in self._waiting:
            self._waiting.append(queue)
        return False

    def _release(self) -> None:
        self._free += 1
        while self._waiting and self._free > 0:
            self._waiting.popleft()._kick()


class BatchQueue:
    """One signature of one model version."""

    def __init__(self, scheduler: BatchScheduler, run_fn: RunFn, name: str) -> None:
        self.scheduler = scheduler
        self.options = scheduler.options
        self.run_fn = run_fn
        self.name = name
        self._batches: deque[_Batch] = deque()
        self._timer: asyncio.TimerHandle | None = None
        # Batches at the head of ``_batches`` that hold a batch-thread slot but have not been
        # handed to it yet (``_launch`` runs on the loop's next turn): until then the last of
        # them still takes tasks, like a TF batch that waits for its thread to pick it up.
        self._claimed = 0
        self._launch_pending = False

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = _task_size(inputs)
        opts = self.options
        if size > opts.max_batch_size:
            raise errors.InvalidArgument(
                f"Task size {size} is larger than maximum input batch size {opts.max_batch_size}"
            )
        limit = opts.execution_limit
        if size > limit:  # large-batch splitting: run the task as several smaller tasks
            parts = [
                {k: v[start : start + limit] for k, v in inputs.items()}
                for start in range(0, size, limit)
            ]
            results = await asyncio.gather(*(self.submit(p) for p in parts))
            return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        if size == 0:
            raise errors.InvalidArgument("Batching Run() input tensors must have a non-empty batch")
        loop = asyncio.get_running_loop()
        task = _Task(dict(inputs), size, loop.create_future(), time.monotonic())
        self._enqueue(task)
        self._kick()
        return await task.future

    def _enqueue(self, task: _Task) -> None:
        opts = self.options
        key = None if opts.pad_variable_length_inputs else _shape_key(task.inputs)
        last = self._batches[-1] if self._batches else None
        if (
            last is not None
            and not last.closed
            and last.size + task.size <= opts.execution_limit
            and (key is None or last.shape_key == key)
        ):
            last.tasks.append(task)
            last.size += task.size
            if last.size >= opts.execution_limit:
                last.closed = True
            return
        if last is not None:
            last.closed = True
        if len(self._batches) >= opts.max_enqueued_batches:
            raise errors.Unavailable(
                "The batch scheduling queue to which this task was submitted is full"
            )
        batch = _Batch([task], task.size, time.monotonic(), task.size >= opts.execution_limit)
        batch.shape_key = key
        self._batches.append(batch)

    def _ready(self, batch: _Batch, now: float) -> float:
        """0 when the batch should run now, else seconds until it should."""
        if batch.closed or self.options.batch_timeout_micros == 0:
            return 0.0
        return max(0.0, batch.opened_at + self.options.batch_timeout_micros / 1e6 - now)

    def _kick(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._batches) > self._claimed:
            wait = self._ready(self._batches[self._claimed], time.monotonic())
            if wait > 0:
                if self._timer is None:
                    self._timer = loop.call_later(wait, self._on_timer)
                return
            if not self.scheduler._try_acquire(self):
                return
            self._claimed += 1
            if not self._launch_pending:
                # Not at once: the requests that the loop handles in this same turn (one read
                # of an HTTP/2 connection carries several) join the batch instead of queueing
                # behind it; the wait is one loop turn, not a timeout.
                self._launch_pending = True
                loop.call_soon(self._launch)

    def _launch(self) -> None:
        self._launch_pending = False
        loop = asyncio.get_running_loop()
        for _ in range(self._claimed):
            batch = self._batches.popleft()
            batch.closed = True
            loop.create_task(self._process(batch))
        self._claimed = 0

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

    async def _process(self, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        metrics = self.scheduler.metrics
        try:
            tasks = [t for t in batch.tasks if not t.future.done()]  # drop cancelled callers
            if not tasks:
                return
            try:
                # Inside the try: a merge that fails (e.g. padding tensors of different ranks)
                # must answer every waiting caller, not leave them hanging.
                merged, total, padded = _merge(tasks, self.options)
                if metrics is not None:
                    for t in tasks:
                        metrics.observe_queuing_latency(
                            self.options.thread_pool_name, now - t.enqueued_at
                        )
                    metrics.record_batch(self.name, total, padded)
                outputs = await loop.run_in_executor(self.scheduler.executor, self.run_fn, merged)
                parts = _split(outputs, [t.size for t in tasks], padded)
            except Exception as exc:  # one error answers every task of the batch
                for t in tasks:
                    if not t.future.done():
                        t.future.set_exception(exc)
                return
            for t, part in zip(tasks, parts, strict=True):
                if not t.future.done():
                    t.future.set_result(part)
        finally:
            self.scheduler._release()
            self._kick()


def _task_size(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = set()
    for arr in inputs.values():
        if arr.ndim == 0:
            raise errors.InvalidArgument(
                "Batching Run() input tensors must have at least one dimension"
            )
        sizes.add(arr.shape[0])
    if len(sizes) != 1:
        raise errors.InvalidArgument(
            "Batching Run() input tensors must have equal 0th-dimension size"
        )
    return sizes.pop()


def _shape_key(inputs: Mapping[str, np.ndarray]) -> tuple:
    return tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))


def _pad_to(arr: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    if arr.shape[1:] == dims:
        return arr
    out = np.empty((arr.shape[0], *dims), dtype=arr.dtype)
    out[...] = arr.flat[0] if arr.size else np.zeros((), arr.dtype)
    out[(slice(None), *(slice(0, d) for d in arr.shape[1:]))] = arr
    return out


def _merge(tasks: list[_Task], opts: BatchingOptions) -> tuple[dict[str, np.ndarray], int, int]:
    total = sum(t.size for t in tasks)
    padded = total
    for allowed in opts.allowed_batch_sizes:
        if allowed >= total:
            padded = allowed
            break
    merged: dict[str, np.ndarray] = {}
    for name in tasks[0].inputs:
        arrays = [t.inputs[name] for t in tasks]
        if opts.pad_variable_length_inputs:
            ndim = arrays[0].ndim
            if any(a.ndim != ndim for a in arrays):
                raise errors.InvalidArgument(
                    f"Tensors with name '{name}' from different tasks have different ranks"
                )
            dims = tuple(max(a.shape[i] for a in arrays) for i in range(1, ndim))
            arrays = [_pad_to(a, dims) for a in arrays]
        if padded > total:
            last = arrays[-1]
            arrays.append(np.repeat(last[:1], padded - total, axis=0))
        merged[name] = arrays[0] if len(arrays) == 1 else _concatenate(arrays)
    return merged, total, padded


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate into an aligned buffer: TensorFlow takes it as it is (tf_feed, no copy)."""
    first = arrays[0]
    if first.dtype == object:
        return np.concatenate(arrays, axis=0)
    dtype = np.result_type(*arrays)
    shape = (sum(a.shape[0] for a in arrays), *first.shape[1:])
    out = aligned_empty(shape, dtype)
    return np.concatenate(arrays, axis=0, out=out)


def _split(
    outputs: Mapping[str, np.ndarray], sizes: list[int], padded: int
) -> list[dict[str, np.ndarray]]:
    parts: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != padded:
            raise errors.Internal(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                f"dimension sizes of the input tensors (output {name!r})"
            )
        start = 0
        for i, n in enumerate(sizes):
            parts[i][name] = arr[start : start + n]
            start += n
    return parts
