"""Talk to a running model server (TF Serving or the embedded one) over gRPC.

Only what the operator side needs: version states (ModelService.GetModelStatus), config
reload (ModelService.HandleReloadConfigRequest) and which version a label resolves to
(PredictionService.GetModelMetadata answers with the resolved model_spec.version).
It uses the clients' private copies of TF Serving's messages (same wire format, routed by
method path), so the operator's commands never import TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import text_format

from clients import protos

# tensorflow.serving.ModelVersionStatus.State numbers (get_model_status.proto).
STATE_NAMES = {
    0: "UNKNOWN",
    10: "START",
    20: "LOADING",
    30: "AVAILABLE",
    40: "UNLOADING",
    50: "END",
}
AVAILABLE = "AVAILABLE"


class ControlError(RuntimeError):
    """The server refused or did not answer; the message says which and why."""


class ReloadUnsupported(ControlError):
    """The server has no usable HandleReloadConfigRequest: fall back to the config poll."""


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error: str = ""


class ModelControl:
    def __init__(self, target: str, timeout_s: float = 10.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)

    def close(self) -> None:
        self._channel.close()

    def _call(self, rpc: str, request, timeout_s: float):
        path, request_cls, response_cls = protos.RPCS[rpc]
        method = self._channel.unary_unary(
            path,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        return method(request, timeout=timeout_s)

    def __enter__(self) -> ModelControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -----------------------------------------------------------------------------
    def status(self, model: str) -> list[VersionStatus]:
        """Every version the server knows for ``model`` ([] if it knows none yet)."""
        request = protos.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = self._call("GetModelStatus", request, self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise ControlError(f"GetModelStatus on {self.target}: {_describe(exc)}") from exc
        return sorted(
            (
                VersionStatus(
                    int(s.version),
                    STATE_NAMES.get(int(s.state), str(s.state)),
                    s.status.error_message,
                )
                for s in response.model_version_status
            ),
            key=lambda s: s.version,
        )

    def available(self, model: str) -> set[int]:
        return {s.version for s in self.status(model) if s.state == AVAILABLE}

    def resolve_label(self, model: str, label: str) -> int | None:
        """The version ``label`` resolves to now; None if the server does not know the label."""
        request = protos.GetModelMetadataRequest()
        request.model_spec.name = model
        request.model_spec.version_label = label
        request.metadata_field.append("signature_def")
        try:
            response = self._call("GetModelMetadata", request, self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return None
            raise ControlError(f"GetModelMetadata on {self.target}: {_describe(exc)}") from exc
        return int(response.model_spec.version.value)

    # -- changes -----------------------------------------------------------------------------
    def reload(self, config_text: str) -> None:
        """Apply a ModelServerConfig (text proto) with HandleReloadConfigRequest."""
        config = text_format.Parse(config_text, protos.ModelServerConfig())
        request = protos.ReloadConfigRequest(config=config)
        try:
            response = self._call(
                "HandleReloadConfigRequest", request, max(self.timeout_s, 60.0)
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
                raise ReloadUnsupported(f"config reload over gRPC: {_describe(exc)}") from exc
            raise ControlError(f"the server refused the config: {_describe(exc)}") from exc
        if response.status.error_code != 0:
            raise ControlError(
                "the server refused the config: "
                f"{_code_name(response.status.error_code)}: "
                f"{response.status.error_message}"
            )

    # -- waiting -----------------------------------------------------------------------------
    def wait_until(
        self,
        what: str,
        condition: Callable[[], bool],
        timeout_s: float,
        abort: Callable[[], str | None] = lambda: None,
        interval_s: float = 0.1,
    ) -> None:
        """Poll ``condition`` until true; ``abort`` returns a reason to stop early."""
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while True:
            try:
                if condition():
                    return
            except ControlError as exc:
                last_error = f" (last error: {exc})"
            reason = abort()
            if reason:
                raise ControlError(f"gave up waiting for {what}: {reason}")
            if time.monotonic() > deadline:
                raise ControlError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}{last_error}"
                )
            time.sleep(interval_s)

    def wait_available(
        self,
        model: str,
        versions: Iterable[int] | None,
        timeout_s: float,
        abort: Callable[[], str | None] = lambda: None,
    ) -> set[int]:
        """Wait until the versions (any version, if None) are AVAILABLE; fail fast on a
        version that ended with an error (a failed load keeps the old version serving)."""
        wanted = set(versions) if versions is not None else None
        seen: set[int] = set()

        def failed() -> str | None:
            for s in self._last:
                if wanted and s.version in wanted and s.state == "END" and s.error:
                    return f"version {s.version} of {model} failed to load: {s.error}"
            return abort()

        def ready() -> bool:
            self._last = self.status(model)
            seen.clear()
            seen.update(s.version for s in self._last if s.state == AVAILABLE)
            return bool(seen) if wanted is None else wanted <= seen

        self._last: list[VersionStatus] = []
        try:
            self.wait_until(f"{model} to serve", ready, timeout_s, failed)
        except ControlError as exc:
            if not str(exc).startswith("timed out"):
                raise
            missing = "a version" if wanted is None else f"version(s) {sorted(wanted - seen)}"
            states = ", ".join(f"{s.version} {s.state}" for s in self._last) or "none"
            raise ControlError(
                f"{missing} of {model} did not become AVAILABLE within {timeout_s:.0f} s "
                f"(states now: {states})"
            ) from exc
        return set(seen)


def _code_name(number: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"
