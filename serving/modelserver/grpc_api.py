"""gRPC surface: ``tensorflow.serving.PredictionService`` and ``ModelService`` on grpc.aio.

Uses the servicer base classes generated in ``tensorflow-serving-api``; only translates
protos <-> data-plane types and ``errors.ServingError`` -> gRPC status (code = TF code, message
cut at 1024 chars + ``...TRUNCATED`` as grpc_status_util.cc does).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from clients import codec
from serving.modelserver import errors
from serving.modelserver.dataplane import InferenceTask, ServingDataPlane
from serving.modelserver.manager import ModelManager
from serving.modelserver.servable import examples_from_input
from serving.modelserver.types import ClassifyResult, ModelRef, RegressResult

log = logging.getLogger("serving.modelserver")

MAX_MESSAGE_BYTES = 2**31 - 1  # server.cc: INT32_MAX both ways

_GRPC_CODES = {sc.value[0]: sc for sc in grpc.StatusCode}
_STATES = get_model_status_pb2.ModelVersionStatus.State


def model_ref(spec_holder: Any) -> ModelRef:
    """The request's ModelSpec as a ModelRef (get_model_metadata/predict_util checks)."""
    if not spec_holder.HasField("model_spec"):
        raise errors.InvalidArgument("Missing ModelSpec")
    spec = spec_holder.model_spec
    return _spec_ref(spec)


def _spec_ref(spec: Any) -> ModelRef:
    if not spec.name:
        raise errors.InvalidArgument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return ModelRef(spec.name, version, label, spec.signature_name)


def _fill_spec(spec: Any, name: str, version: int, signature_name: str | None) -> None:
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    """No data-plane timeout for gRPC: when the client's deadline passes, grpc.aio cancels the
    handler (the queued batch task is dropped) and the client gets DEADLINE_EXCEEDED, as from
    TF Serving. Saves a wait_for task per request."""
    return None


async def _abort(context: grpc.aio.ServicerContext, exc: errors.ServingError) -> None:
    await context.abort(_GRPC_CODES[int(exc.code)], exc.grpc_message())


def _as_serving_error(exc: Exception) -> errors.ServingError:
    if isinstance(exc, errors.ServingError):
        return exc
    if isinstance(exc, ValueError):  # codec: bad dtype / tensor_content size
        return errors.InvalidArgument(str(exc))
    log.exception("Unexpected error while serving a gRPC request")
    return errors.Unknown(f"{type(exc).__name__}: {exc}")


def _fill_classification(out: Any, result: ClassifyResult) -> None:
    for row in result.classifications:
        classes = out.classifications.add()
        for label, score in row:
            cls = classes.classes.add()
            if label:
                cls.label = label.decode("utf-8", "replace")
            if score is not None:
                cls.score = score


def _fill_regression(out: Any, result: RegressResult) -> None:
    for value in result.values:
        out.regressions.add().value = value


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self, dataplane: ServingDataPlane, metrics: Any = None, tensor_content: bool = False
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.tensor_content = tensor_content

    def _record(self, name: str, api: str, code: errors.Code, start: float) -> None:
        if self.metrics is None:
            return
        self.metrics.record_request(name, api, "GRPC", code)
        if code == errors.Code.OK:
            self.metrics.observe_latency(name, api, "GRPC", time.perf_counter() - start)

    async def Predict(self, request, context):
        start = time.perf_counter()
        name = request.model_spec.name
        try:
            ref = model_ref(request)
            inputs = {k: codec.tensor_proto_to_ndarray(v) for k, v in request.inputs.items()}
            result = await self.dataplane.predict(
                ref, inputs, list(request.output_filter), _timeout(context)
            )
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, result.model_name, result.version, result.signature_name)
            for alias, arr in result.outputs.items():
                codec.fill_tensor_proto(
                    response.outputs[alias], arr, use_tensor_content=self.tensor_content
                )
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            err = _as_serving_error(exc)
            self._record(name, "Predict", err.code, start)
            await _abort(context, err)
        self._record(name, "Predict", errors.Code.OK, start)
        return response

    async def Classify(self, request, context):
        return await self._examples_call(
            request,
            context,
            "Classify",
            self.dataplane.classify,
            classification_pb2.ClassificationResponse,
            _fill_classification,
        )

    async def Regress(self, request, context):
        return await self._examples_call(
            request,
            context,
            "Regress",
            self.dataplane.regress,
            regression_pb2.RegressionResponse,
            _fill_regression,
        )

    async def _examples_call(self, request, context, api, run, response_cls, fill):
        """Classify and Regress: tf.Examples in (``request.input``), one result per example."""
        start = time.perf_counter()
        name = request.model_spec.name
        try:
            ref = model_ref(request)
            examples, ctx = examples_from_input(request.input)
            result = await run(ref, examples, ctx, _timeout(context))
            response = response_cls()
            _fill_spec(response.model_spec, result.model_name, result.version, result.signature_name)
            fill(response.result, result)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            err = _as_serving_error(exc)
            self._record(name, api, err.code, start)
            await _abort(context, err)
        self._record(name, api, errors.Code.OK, start)
        return response

    async def MultiInference(self, request, context):
        try:
            tasks = []
            for task in request.tasks:
                if not task.HasField("model_spec"):
                    raise errors.InvalidArgument("Missing ModelSpec")
                tasks.append(InferenceTask(_spec_ref(task.model_spec), task.method_name))
            examples, ctx = examples_from_input(request.input)
            results = await self.dataplane.multi_inference(tasks, examples, ctx, _timeout(context))
            response = inference_pb2.MultiInferenceResponse()
            for result in results:
                out = response.results.add()
                _fill_spec(out.model_spec, result.model_name, result.version, result.signature_name)
                if isinstance(result, ClassifyResult):
                    _fill_classification(out.classification_result, result)
                else:
                    _fill_regression(out.regression_result, result)
        except Exception as exc:  # noqa: BLE001
            await _abort(context, _as_serving_error(exc))
        return response

    async def GetModelMetadata(self, request, context):
        try:
            ref = model_ref(request)
            if not request.metadata_field:
                raise errors.InvalidArgument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field_name in request.metadata_field:
                if field_name != "signature_def":
                    raise errors.InvalidArgument(f"Metadata field {field_name} is not supported")
            meta = self.dataplane.model_metadata(ref)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_spec(response.model_spec, meta.model_name, meta.version, None)
            response.metadata["signature_def"].Pack(meta.signature_def_map)
        except Exception as exc:  # noqa: BLE001
            await _abort(context, _as_serving_error(exc))
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, dataplane: ServingDataPlane, manager: ModelManager) -> None:
        self.dataplane = dataplane
        self.manager = manager

    async def GetModelStatus(self, request, context):
        try:
            ref = model_ref(request)
            statuses = self.dataplane.model_status(ref.name, ref.version)
            response = get_model_status_pb2.GetModelStatusResponse()
            for st in statuses:
                row = response.model_version_status.add()
                row.version = st.version
                row.state = _STATES.Value(st.state)
                row.status.error_code = st.error_code
                row.status.error_message = st.error_message
        except Exception as exc:  # noqa: BLE001
            await _abort(context, _as_serving_error(exc))
        return response

    async def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            await self.manager.apply_config(request.config)
        except Exception as exc:  # noqa: BLE001
            err = _as_serving_error(exc)
            log.error("ReloadConfig failed: %s", err.message)
            await _abort(context, err)
        response.status.error_code = 0
        return response


def server_options(channel_arguments: list[tuple[str, int | str]]) -> list[tuple[str, Any]]:
    options: dict[str, Any] = {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    }
    options.update(dict(channel_arguments))
    return list(options.items())


def add_services(
    server: grpc.aio.Server,
    dataplane: ServingDataPlane,
    manager: ModelManager,
    metrics: Any = None,
    tensor_content: bool = False,
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(dataplane, metrics, tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(dataplane, manager), server
    )
