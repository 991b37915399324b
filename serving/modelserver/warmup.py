"""Warmup replay: ``<version>/assets.extra/tf_serving_warmup_requests`` (TFRecord of
``tensorflow.serving.PredictionLog``), run during load, before the version is AVAILABLE.

Rules from saved_model_warmup_util.cc: at most 1000 records; ``predict_log``, ``classify_log``,
``regress_log`` and ``multi_inference_log`` are replayed (``request`` only); other kinds fail the
load (UNIMPLEMENTED); any failing record fails the load; each record is replayed
``num_request_iterations`` times. Records run through ``inference`` (the same lookups, checks
and conversions as live requests, without the method-name check, as in TF Serving's warmup);
TensorProtos are decoded by ``clients.codec``, as gRPC requests are.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from clients import codec
from serving.modelserver import errors, inference
from serving.modelserver.inference import Plan
from serving.modelserver.servable import Servable
from serving.modelserver.types import CLASSIFY_METHOD, REGRESS_METHOD, InferenceTask, ModelRef

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


def _ref(servable: Servable, spec) -> ModelRef:
    # The record's model name and version are the exporter's business; warmup runs on the
    # version being loaded, whatever the record says.
    return ModelRef(servable.model_name, None, None, spec.signature_name)


def _plans(servable: Servable, record: bytes) -> list[Plan]:
    """The record as plans on the inference path (the data plane's lookups and checks)."""
    from tensorflow_serving.apis import prediction_log_pb2

    log_msg = prediction_log_pb2.PredictionLog()
    try:
        log_msg.ParseFromString(record)
    except Exception as exc:
        raise errors.InvalidArgument(f"Failed to parse warmup record: {exc}") from None
    kind = log_msg.WhichOneof("log_type")
    if kind == "predict_log":
        req = log_msg.predict_log.request
        try:
            inputs = {k: codec.tensor_proto_to_ndarray(v) for k, v in req.inputs.items()}
        except ValueError as exc:  # the codec's bad dtype / tensor_content size
            raise errors.InvalidArgument(str(exc)) from None
        ref = _ref(servable, req.model_spec)
        return [inference.plan_predict(servable, ref, inputs, req.output_filter)]
    if kind in ("classify_log", "regress_log"):
        req = getattr(log_msg, kind).request
        method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
        examples, context = inference.examples_from_input(req.input)
        return [
            inference.plan_examples(
                servable, _ref(servable, req.model_spec), method, examples, context
            )
        ]
    if kind == "multi_inference_log":
        req = log_msg.multi_inference_log.request
        tasks = [
            InferenceTask(_ref(servable, task.model_spec), task.method_name) for task in req.tasks
        ]
        inference.check_tasks(tasks)
        examples, context = inference.examples_from_input(req.input)
        return inference.plan_multi_inference(servable, tasks, examples, context)
    raise errors.Unimplemented(f"Unsupported log_type for warmup: {kind}")


def _replay_one(servable: Servable, record: bytes) -> None:
    for plan in _plans(servable, record):
        plan.run_sync()


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
