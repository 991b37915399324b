"""gRPC transport: TF Serving's PredictionService and ModelService, without TensorFlow.

Requests use the private protos (``clients.protos``) and are routed by method path
(``/tensorflow.serving.PredictionService/Predict``), so no generated stubs and no
``tensorflow-serving-api`` are needed. Tensors go out as ``tensor_content`` (cheapest to
encode and to decode); responses are decoded from whichever field the server filled.

Targets: ``host:port``, ``grpc://host:port``, ``grpcs://host:port`` (TLS with the system
roots unless ``tls`` says otherwise), and any gRPC name such as ``dns:///name:port`` or
``ipv4:10.0.0.1:8500,10.0.0.2:8500``. ``round_robin=True`` spreads calls over every address
the name resolves to (the usual fix for gRPC behind a Kubernetes headless Service, where
pick_first would pin one pod).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from clients import codec, protos
from clients.base import DEFAULT_TIMEOUT_S, PredictionClient, RetryPolicy
from clients.errors import ClientError, ProtocolError, error_for_code
from clients.examples import fill_example
from clients.types import (
    Classifications,
    ModelMetadata,
    ModelSpec,
    PredictResult,
    Signature,
    TensorInfo,
    VersionStatus,
)
from clients.wire import VersionState, code_name

# TF Serving accepts up to 2 GiB; gRPC's client default of 4 MiB caps a batch at about 1,300
# MNIST images, so the client defaults much higher.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings. Paths or PEM bytes; all optional (system roots, no client cert)."""

    root_certificates: bytes | str | os.PathLike | None = None
    private_key: bytes | str | os.PathLike | None = None  # mutual TLS
    certificate_chain: bytes | str | os.PathLike | None = None
    server_name_override: str | None = None  # when the cert's name is not the target's host

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )


def _pem(value: bytes | str | os.PathLike | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def parse_grpc_target(target: str) -> tuple[str, bool]:
    """(gRPC target string, TLS implied by the scheme)."""
    for prefix, tls in (("grpc://", False), ("grpcs://", True)):
        if target.startswith(prefix):
            rest = target[len(prefix) :].rstrip("/")
            if not rest:
                raise ValueError(f"no host in target {target!r}")
            return rest, tls
    if "://" in target and not target.startswith("dns:"):
        raise ValueError(f"not a gRPC target: {target!r}")
    return target, False


class GrpcClient(PredictionClient):
    transport = "grpc"

    def __init__(
        self,
        target: str,
        model: str | ModelSpec | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        tls: TlsConfig | bool | None = None,
        options: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        round_robin: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
        use_tensor_content: bool = True,
    ) -> None:
        super().__init__(model, timeout_s=timeout_s, retry=retry)
        address, scheme_tls = parse_grpc_target(target)
        if tls is None or tls is False:
            tls_config = TlsConfig() if scheme_tls else None
        else:
            tls_config = TlsConfig() if tls is True else tls
        merged: dict[str, Any] = {
            "grpc.max_send_message_length": max_message_bytes,
            "grpc.max_receive_message_length": max_message_bytes,
            # Reconnect quickly after a failure (gRPC's default starts at 1 s and grows to
            # 120 s), so a retried call finds a server that has just come up. Not
            # grpc.min_reconnect_backoff_ms: gRPC core uses it as the minimum *connect timeout*,
            # and at 100 ms a loaded machine fails handshakes ("connection attempt timed out
            # before receiving SETTINGS frame"); gRPC's 20 s default stays, bounded by our deadlines.
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 2000,
        }
        if round_robin:
            merged["grpc.lb_policy_name"] = "round_robin"
        if tls_config is not None and tls_config.server_name_override:
            merged["grpc.ssl_target_name_override"] = tls_config.server_name_override
        merged.update(dict(options))
        channel_options = list(merged.items())
        if tls_config is None:
            self._channel = grpc.insecure_channel(address, options=channel_options)
        else:
            self._channel = grpc.secure_channel(
                address, tls_config.credentials(), options=channel_options
            )
        self.target = address
        self.call_metadata = tuple(metadata)
        self.use_tensor_content = use_tensor_content
        self._stubs: dict[str, Any] = {}

    def close(self) -> None:
        self._channel.close()

    # ------------------------------------------------------------------ rpc
    def _rpc(self, name: str, request: Any, deadline: float) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            path, req_cls, resp_cls = protos.RPCS[name]
            stub = self._channel.unary_unary(
                path,
                request_serializer=req_cls.SerializeToString,
                response_deserializer=resp_cls.FromString,
                _registered_method=True,
            )
            self._stubs[name] = stub
        try:
            timeout = self._time_left(deadline)  # after the request was built
            return stub(request, timeout=timeout, metadata=self.call_metadata or None)
        except grpc.RpcError as exc:
            raise _map_rpc_error(exc) from None

    # ------------------------------------------------------------------ operations
    def _do_predict(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        output_filter: Sequence[str],
        deadline: float,
    ) -> PredictResult:
        if not isinstance(inputs, Mapping):
            sig = self._signature(spec, deadline=deadline)
            if len(sig.inputs) != 1:
                raise ValueError(
                    f"the signature has inputs {sorted(sig.inputs)}; pass a dict of arrays"
                )
            inputs = {next(iter(sig.inputs)): inputs}
        request = protos.PredictRequest()
        fill_model_spec(request.model_spec, spec)
        for name, array in inputs.items():
            codec.fill_tensor_proto(
                request.inputs[name], array, use_tensor_content=self.use_tensor_content
            )
        request.output_filter.extend(output_filter)
        response = self._rpc("Predict", request, deadline)
        outputs = {
            key: codec.tensor_proto_to_ndarray(tensor) for key, tensor in response.outputs.items()
        }
        return PredictResult(
            outputs=outputs,
            model_name=response.model_spec.name or spec.name,
            version=_version_of(response.model_spec),
            signature_name=response.model_spec.signature_name or spec.signature,
        )

    def _input(self, examples: list[Mapping], context: Mapping | None, input_msg: Any) -> None:
        if context is None:
            target = input_msg.example_list
        else:
            target = input_msg.example_list_with_context
            fill_example(target.context, context)
        for features in examples:
            fill_example(target.examples.add(), features)

    def _do_classify(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[Classifications]:
        request = protos.ClassificationRequest()
        fill_model_spec(request.model_spec, spec)
        self._input(examples, context, request.input)
        response = self._rpc("Classify", request, deadline)
        return [
            [(c.label, float(c.score)) for c in item.classes]
            for item in response.result.classifications
        ]

    def _do_regress(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[float]:
        request = protos.RegressionRequest()
        fill_model_spec(request.model_spec, spec)
        self._input(examples, context, request.input)
        response = self._rpc("Regress", request, deadline)
        return [float(r.value) for r in response.result.regressions]

    def _do_status(self, spec: ModelSpec, deadline: float) -> list[VersionStatus]:
        request = protos.GetModelStatusRequest()
        fill_model_spec(request.model_spec, spec)
        response = self._rpc("GetModelStatus", request, deadline)
        return [
            VersionStatus(
                version=row.version,
                state=VersionState(row.state).name,
                error_code=code_name(row.status.error_code),
                error_message=row.status.error_message,
            )
            for row in response.model_version_status
        ]

    def _do_metadata(self, spec: ModelSpec, deadline: float) -> ModelMetadata:
        request = protos.GetModelMetadataRequest()
        fill_model_spec(request.model_spec, ModelSpec(spec.name, spec.version, spec.label))
        request.metadata_field.append("signature_def")
        response = self._rpc("GetModelMetadata", request, deadline)
        packed = response.metadata.get("signature_def")
        if packed is None:
            raise ProtocolError("metadata response has no signature_def", transport="grpc")
        if not packed.type_url.endswith("/" + protos.SIGNATURE_DEF_MAP_TYPE):
            raise ProtocolError(
                f"signature_def metadata has type {packed.type_url!r}", transport="grpc"
            )
        sig_map = protos.SignatureDefMap.FromString(packed.value)
        return ModelMetadata(
            model_name=response.model_spec.name or spec.name,
            version=_version_of(response.model_spec) or 0,
            signatures={k: signature_from_proto(v) for k, v in sig_map.signature_def.items()},
        )

    def _do_reload_config(self, config: Any, deadline: float) -> None:
        request = protos.ReloadConfigRequest()
        request.config.CopyFrom(_model_server_config(config))
        response = self._rpc("HandleReloadConfigRequest", request, deadline)
        if response.status.error_code != 0:
            raise error_for_code(
                code_name(response.status.error_code),
                response.status.error_message,
                transport="grpc",
            )


# ---------------------------------------------------------------------- helpers


def fill_model_spec(msg: Any, spec: ModelSpec) -> None:
    msg.name = spec.name
    if spec.version is not None:
        msg.version.value = spec.version
    elif spec.label is not None:
        msg.version_label = spec.label
    if spec.signature:
        msg.signature_name = spec.signature


def _version_of(model_spec: Any) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


def _map_rpc_error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return error_for_code(name, details or name, transport="grpc")


def tensor_info_from_proto(info: Any) -> TensorInfo:
    encoding = info.WhichOneof("encoding")
    name = info.name if encoding == "name" else (encoding or "")
    return TensorInfo(
        name=name,
        dtype=codec.dtype_name(info.dtype),
        shape=codec.shape_from_proto(info.tensor_shape) if info.HasField("tensor_shape") else None,
    )


def signature_from_proto(sig: Any) -> Signature:
    return Signature(
        method_name=sig.method_name,
        inputs={k: tensor_info_from_proto(v) for k, v in sig.inputs.items()},
        outputs={k: tensor_info_from_proto(v) for k, v in sig.outputs.items()},
    )


def _model_server_config(config: Any) -> Any:
    if isinstance(config, protos.ModelServerConfig):
        return config
    if isinstance(config, str):
        from google.protobuf import text_format

        return text_format.Parse(config, protos.ModelServerConfig())
    if hasattr(config, "SerializeToString"):  # e.g. tensorflow_serving's own class
        return protos.ModelServerConfig.FromString(config.SerializeToString())
    raise TypeError("config must be a ModelServerConfig message or its text form")
