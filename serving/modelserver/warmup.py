"""Warmup replay: ``<version>/assets.extra/tf_serving_warmup_requests`` (TFRecord of
``tensorflow.serving.PredictionLog``), run during load, before the version is AVAILABLE.

Rules from saved_model_warmup_util.cc: at most 1000 records; ``predict_log``, ``classify_log``,
``regress_log`` and ``multi_inference_log`` are replayed (``request`` only); other kinds fail the
load (UNIMPLEMENTED); any failing record fails the load; each record is replayed
``num_request_iterations`` times.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from serving.modelserver import errors
from serving.modelserver.servable import (
    Servable,
    check_classify_signature,
    check_regress_signature,
    example_tensor,
    examples_from_input,
    to_classifications,
    to_regressions,
)
from serving.modelserver.types import DEFAULT_SIGNATURE

log = logging.getLogger("serving.modelserver")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


@dataclass
class WarmupReport:
    path: str
    records: int
    seconds: float


def _iter_records(path: str):
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.OpError as exc:
        raise errors.DataLoss(
            f"{exc.message}. Please verify your warmup data is in TFRecord format."
        ) from None


def _replay_one(servable: Servable, record: bytes) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    log_msg = prediction_log_pb2.PredictionLog()
    try:
        log_msg.ParseFromString(record)
    except Exception as exc:
        raise errors.InvalidArgument(f"Failed to parse warmup record: {exc}") from None
    kind = log_msg.WhichOneof("log_type")
    if kind == "predict_log":
        _predict(servable, log_msg.predict_log.request)
    elif kind == "classify_log":
        req = log_msg.classify_log.request
        _classify(servable, req.model_spec.signature_name, req.input)
    elif kind == "regress_log":
        req = log_msg.regress_log.request
        _regress(servable, req.model_spec.signature_name, req.input)
    elif kind == "multi_inference_log":
        req = log_msg.multi_inference_log.request
        for task in req.tasks:
            if task.method_name.endswith("classify"):
                _classify(servable, task.model_spec.signature_name, req.input)
            else:
                _regress(servable, task.model_spec.signature_name, req.input)
    else:
        raise errors.Unimplemented(f"Unsupported log_type for warmup: {kind}")


def _signature(servable: Servable, name: str) -> str:
    name = name or DEFAULT_SIGNATURE
    if name not in servable.signatures:
        raise errors.FailedPrecondition(f'Serving signature key "{name}" not found.')
    return name


def _predict(servable: Servable, request) -> None:
    import tensorflow as tf

    sig = _signature(servable, request.model_spec.signature_name)
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    servable.check_inputs(sig, inputs)
    empty = any(a.ndim and a.shape[0] == 0 for a in inputs.values())
    if empty and servable.empty_outputs(sig) is not None:
        return
    servable.run(sig, inputs)


def _classify(servable: Servable, signature_name: str, input_proto) -> None:
    sig = _signature(servable, signature_name)
    check_classify_signature(servable.signatures[sig])
    examples, context = examples_from_input(input_proto)
    alias = next(iter(servable.signatures[sig].inputs))
    out = servable.run(sig, {alias: example_tensor(examples, context)})
    to_classifications(out, len(examples))


def _regress(servable: Servable, signature_name: str, input_proto) -> None:
    sig = _signature(servable, signature_name)
    check_regress_signature(servable.signatures[sig])
    examples, context = examples_from_input(input_proto)
    alias = next(iter(servable.signatures[sig].inputs))
    out = servable.run(sig, {alias: example_tensor(examples, context)})
    to_regressions(out, len(examples))


def run_warmup(servable: Servable, iterations: int = 1) -> WarmupReport | None:
    """Replay the warmup file of ``servable`` (None if there is none). Raises on failure."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return None
    start = time.monotonic()
    count = 0
    for record in _iter_records(path):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise errors.InvalidArgument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        for _ in range(max(1, iterations)):
            _replay_one(servable, record)
    elapsed = time.monotonic() - start
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        int(elapsed * 1e6),
    )
    return WarmupReport(path, count, elapsed)
