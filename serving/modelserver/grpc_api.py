"""gRPC surface: ``tensorflow.serving.PredictionService`` and ``ModelService`` on grpc.aio.

Uses the servicer base classes generated in ``tensorflow-serving-api``; only translates
protos <-> data-plane types. Depends on the ``types.DataPlane`` protocol alone (config reload
and multi-inference included), never on the manager or the concrete data plane. Every handler
goes through ``_rpc``, the one translation of errors: ``errors.as_serving_error`` then the
status (code = the canonical code's number, message cut at 1024 chars + ``...TRUNCATED`` as
grpc_status_util.cc does).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
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
from clients.wire import Code, VersionState
from serving.modelserver import errors
from serving.modelserver.inference import examples_from_input
from serving.modelserver.types import (
    ClassifyResult,
    DataPlane,
    InferenceTask,
    ModelRef,
    RegressResult,
)

MAX_MESSAGE_BYTES = 2**31 - 1  # server.cc: INT32_MAX both ways

_GRPC_CODES = {sc.value[0]: sc for sc in grpc.StatusCode}


def _rpc(api: str | None = None):
    """Wrap a servicer method: any failure becomes the client's status, through
    ``errors.as_serving_error`` (the codec's ValueError is INVALID_ARGUMENT, bugs UNKNOWN).
    With ``api`` (Predict, Classify, Regress) the request is counted and timed, as TF Serving
    does for those three."""

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def handler(self, request, context):
            start = time.perf_counter()
            try:
                response = await method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                err = errors.as_serving_error(
                    exc, unexpected=errors.Unknown, where="a gRPC request", invalid=(ValueError,)
                )
                if api is not None:
                    self.record(request.model_spec.name, api, err.code, start)
                await context.abort(_GRPC_CODES[int(err.code)], err.grpc_message())
            if api is not None:
                self.record(request.model_spec.name, api, Code.OK, start)
            return response

        return handler

    return wrap


def model_ref(spec_holder: Any) -> ModelRef:
    """The request's ModelSpec as a ModelRef (get_model_metadata/predict_util checks)."""
    if not spec_holder.HasField("model_spec"):
        raise errors.InvalidArgument("Missing ModelSpec")
    return _spec_ref(spec_holder.model_spec)


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
    def __init__(self, dataplane: DataPlane, metrics: Any = None, tensor_content: bool = False):
        self.dataplane = dataplane
        self.metrics = metrics
        self.tensor_content = tensor_content

    def record(self, name: str, api: str, code: Code, start: float) -> None:
        if self.metrics is None:
            return
        self.metrics.record_request(name, api, "GRPC", code)
        if code == Code.OK:
            self.metrics.observe_latency(name, api, "GRPC", time.perf_counter() - start)

    @_rpc("Predict")
    async def Predict(self, request, context):
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
        return response

    @_rpc("Classify")
    async def Classify(self, request, context):
        ref = model_ref(request)
        examples, ctx = examples_from_input(request.input)
        result = await self.dataplane.classify(ref, examples, ctx, _timeout(context))
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, result.model_name, result.version, result.signature_name)
        _fill_classification(response.result, result)
        return response

    @_rpc("Regress")
    async def Regress(self, request, context):
        ref = model_ref(request)
        examples, ctx = examples_from_input(request.input)
        result = await self.dataplane.regress(ref, examples, ctx, _timeout(context))
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, result.model_name, result.version, result.signature_name)
        _fill_regression(response.result, result)
        return response

    @_rpc()
    async def MultiInference(self, request, context):
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
        return response

    @_rpc()
    async def GetModelMetadata(self, request, context):
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
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @_rpc()
    async def GetModelStatus(self, request, context):
        ref = model_ref(request)
        statuses = self.dataplane.model_status(ref.name, ref.version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for st in statuses:
            row = response.model_version_status.add()
            row.version = st.version
            row.state = VersionState[st.state]
            row.status.error_code = Code[st.error_code]
            row.status.error_message = st.error_message
        return response

    @_rpc()
    async def HandleReloadConfigRequest(self, request, context):
        await self.dataplane.reload_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
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
    dataplane: DataPlane,
    metrics: Any = None,
    tensor_content: bool = False,
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(dataplane, metrics, tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(dataplane), server)
